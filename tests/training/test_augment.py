"""The ADA augmentation pipe (training.augment): filters checked against wavelet identities, each transform against an
exact or analytic reference (pixel copies, numpy reflect padding, affine maps of a linear ramp, colour formulas,
band gains), p = 0 as the identity, gradients of first and second order, presets, the ADA p update and pickles that
load with only torch_utils and dnnlib importable."""

import math
import pickle
import re

import numpy as np
import pytest
import torch
from scipy.special import ndtri

from isolated_load import run_without_repo
from training import augment
from training.augment import AugmentPipe, adjust_ada_p, augpipe_specs



def _images(shape=(2, 3, 16, 16), seed=0, dtype=torch.float32):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _pipe(p=1.0, **kwargs):
    pipe = AugmentPipe(**kwargs)
    pipe.p.fill_(p)
    return pipe


def _centres(size):
    """Pixel centres in pixels from the image centre: [size]."""
    return torch.arange(size, dtype=torch.float64) + 0.5 - size / 2


# ----------------------------------------------------------------------------------------------------------------------
# Buffers and filters.

def test_buffers_of_the_parameter_free_module():
    pipe = AugmentPipe()
    assert [name for name, _ in pipe.named_buffers()] == ['p', 'Hz_geom', 'Hz_fbank']
    assert list(pipe.parameters()) == []
    assert pipe.p.shape == () and float(pipe.p) == 0
    assert pipe.Hz_geom.shape == (12,) and pipe.Hz_fbank.shape == (4, 43)
    assert pipe.Hz_geom.dtype == pipe.Hz_fbank.dtype == torch.float32
    np.testing.assert_allclose(pipe.Hz_geom.numpy(), np.array(augment.SYM6) / np.sqrt(2), rtol=1e-6)


def test_sym6_is_an_orthonormal_wavelet_with_6_vanishing_moments():
    h = np.array(augment.SYM6)
    assert h.sum() == pytest.approx(np.sqrt(2), abs=1e-12)
    shifted_products = [np.dot(h[:len(h) - 2 * m], h[2 * m:]) for m in range(6)]
    np.testing.assert_allclose(shifted_products, [1, 0, 0, 0, 0, 0], atol=1e-11)
    highpass = h[::-1] * (-1.0) ** np.arange(12)
    moments = [(highpass * np.arange(12.0) ** k).sum() / 11 ** k for k in range(6)]
    np.testing.assert_allclose(moments, 0, atol=1e-10)


def test_halfband_is_the_halved_autocorrelation_of_sym2():
    r3 = np.sqrt(3)
    db2 = np.array([1 + r3, 3 + r3, 3 - r3, 1 - r3]) / (4 * np.sqrt(2))  # closed form of Daubechies' 4-tap filter
    np.testing.assert_allclose(np.correlate(db2, db2, mode='full') / 2, augment.SYM2_HALFBAND, atol=1e-15)


def test_filter_bank_splits_the_spectrum_into_octaves():
    bank = augment.filter_bank()
    impulse = np.zeros(43)
    impulse[21] = 1
    np.testing.assert_allclose(bank.sum(axis=0), impulse, atol=1e-15)
    np.testing.assert_array_equal(bank, bank[:, ::-1])  # zero phase

    def response(omega):  # real because the filters are symmetric about tap 21
        return (bank * np.cos(omega * (np.arange(43) - 21))).sum(axis=1)

    def halfband(omega):  # A(w) of the taps [-1, 0, 9, 16, 9, 0, -1] / 32
        return (16 + 18 * np.cos(omega) - 2 * np.cos(3 * omega)) / 32

    for omega in np.linspace(0, np.pi, 17):
        a1, a2, a4 = halfband(omega), halfband(2 * omega), halfband(4 * omega)
        expected = [a1 * a2 * a4, a1 * a2 * (1 - a4), a1 * (1 - a2), 1 - a1]
        np.testing.assert_allclose(response(omega), expected, atol=1e-14)
    np.testing.assert_allclose(response(0), [1, 0, 0, 0], atol=1e-15)
    np.testing.assert_allclose(response(np.pi), [0, 0, 0, 1], atol=1e-15)
    for omega, band in ((np.pi / 8, 0), (np.pi / 4, 1), (np.pi / 2, 2)):  # band edges: neighbours cross over
        assert response(omega)[band] == pytest.approx(response(omega)[band + 1], abs=1e-14)


def test_mirror_pad_matches_numpy_reflect_for_pads_beyond_the_image():
    x = _images((1, 2, 3, 5))
    expected = np.pad(x.numpy(), [(0, 0), (0, 0), (7, 4), (9, 12)], mode='reflect')
    np.testing.assert_array_equal(augment._mirror_pad(x, 9, 12, 7, 4).numpy(), expected)


# ----------------------------------------------------------------------------------------------------------------------
# Identity, shapes and the probability gate.

@pytest.mark.parametrize('name', sorted(augpipe_specs))
def test_p_zero_is_the_identity(name):
    images = _images()
    assert _pipe(0.0, **augpipe_specs[name])(images) is images


def test_no_enabled_transform_is_the_identity():
    images = _images()
    assert torch.equal(_pipe(1.0)(images), images)


@pytest.mark.parametrize('name', ['bgcfnc', 'blit', 'color'])
@pytest.mark.parametrize('shape,dtype', [((2, 3, 16, 16), torch.float32), ((3, 1, 8, 8), torch.float64),
                                         ((2, 3, 8, 16), torch.float32)])
def test_output_shape_and_dtype(name, shape, dtype):
    torch.manual_seed(0)
    out = _pipe(1.0, **augpipe_specs[name])(_images(shape, dtype=dtype))
    assert out.shape == shape and out.dtype == dtype and torch.isfinite(out).all()


@pytest.mark.parametrize('p,multiplier,expected', [(0.5, 1, 0.25), (1.0, 0.5, 0.25), (0.2, 2, 0.2)])
def test_transforms_fire_with_probability_p_times_multiplier(p, multiplier, expected):
    # xflip fires with probability p * multiplier and then flips with probability 1/2.
    torch.manual_seed(0)
    images = torch.tensor([0.0, 1.0]).expand(4000, 1, 1, 2)
    flipped = (_pipe(p, xflip=multiplier)(images)[:, 0, 0, 0] == 1).float().mean()
    assert float(flipped) == pytest.approx(expected, abs=0.02)


# ----------------------------------------------------------------------------------------------------------------------
# Pixel blitting: exact copies.

@pytest.mark.parametrize('q,flipped', [(0.25, False), (0.75, True)])
def test_xflip_flips_exactly(q, flipped):
    images = _images()
    expected = images.flip(3) if flipped else images
    assert torch.equal(_pipe(xflip=1)(images, debug_percentile=q), expected)


@pytest.mark.parametrize('q,k', [(0.1, 0), (0.3, 1), (0.6, 2), (0.9, 3)])
def test_rotate90_rotates_exactly(q, k):
    images = _images()
    assert torch.equal(_pipe(rotate90=1)(images, debug_percentile=q), torch.rot90(images, k, dims=[2, 3]))


@pytest.mark.parametrize('q,shift', [(1.0, 2), (0.0, -2), (0.3, -1), (0.5, 0)])
def test_integer_translation_shifts_and_mirrors_the_border(q, shift):
    # The shift is round(U(-0.125, 0.125) * 16) pixels; the debug quantile gives U = -0.125 + 0.25 q on both axes.
    images = _images()
    padded = np.pad(images.numpy(), [(0, 0), (0, 0), (2, 2), (2, 2)], mode='reflect')
    expected = padded[:, :, 2 - shift: 18 - shift, 2 - shift: 18 - shift]
    np.testing.assert_array_equal(_pipe(xint=1)(images, debug_percentile=q).numpy(), expected)


def test_blit_transforms_apply_in_order_flip_rotate_shift():
    images = _images()
    out = _pipe(**augpipe_specs['blit'])(images, debug_percentile=0.9)  # flip, 3 quarter turns, shift round(1.6) = 2
    moved = torch.rot90(images.flip(3), 3, dims=[2, 3]).numpy()
    expected = np.pad(moved, [(0, 0), (0, 0), (2, 2), (2, 2)], mode='reflect')[:, :, :16, :16]
    np.testing.assert_array_equal(out.numpy(), expected)


# ----------------------------------------------------------------------------------------------------------------------
# General geometric transforms (oversampled warp).

def _ramp():
    """A linear image f(x, y) = 0.05 x - 0.03 y of pixel centres; the warp must reproduce affine maps of it exactly."""
    return lambda x, y: 0.05 * x - 0.03 * y


def _scale_q(q, std=0.2):
    return 2 ** (ndtri(q) * std)


@pytest.mark.parametrize('name,q,inverse', [
    ('scale', 0.9, lambda q: [[1 / _scale_q(q), 0, 0], [0, 1 / _scale_q(q), 0]]),
    ('scale', 0.2, lambda q: [[1 / _scale_q(q), 0, 0], [0, 1 / _scale_q(q), 0]]),
    # Debug mode draws both rotations (before and after aniso) at the same angle: 2 theta in total.
    ('rotate', 0.6, lambda q: [[math.cos(2 * math.pi * (2 * q - 1)), -math.sin(2 * math.pi * (2 * q - 1)), 0],
                               [math.sin(2 * math.pi * (2 * q - 1)), math.cos(2 * math.pi * (2 * q - 1)), 0]]),
    ('aniso', 0.8, lambda q: [[1 / _scale_q(q), 0, 0], [0, _scale_q(q), 0]]),
    ('xfrac', 0.7, lambda q: [[1, 0, -ndtri(q) * 0.125 * 32], [0, 1, -ndtri(q) * 0.125 * 32]]),
    ('xfrac', 0.5, lambda q: [[1, 0, 0], [0, 1, 0]]),
])
def test_geometric_transform_maps_a_linear_image_exactly(name, q, inverse):
    f = _ramp()
    x, y = _centres(32), _centres(32)[:, None]
    images = f(x, y).expand(2, 3, 32, 32).float()
    (a, b, tx), (c, d, ty) = inverse(q)
    sx, sy = a * x + b * y + tx, c * x + d * y + ty  # where output pixels sample the input
    interior = (sx.abs() < 8) & (sy.abs() < 8)  # far from the mirrored border
    assert int(interior.sum()) >= 100
    out = _pipe(**{name: 1})(images, debug_percentile=q).double()
    torch.testing.assert_close(out[:, :, interior], f(sx, sy)[interior].expand(2, 3, -1), atol=2e-6, rtol=0)


def test_quarter_turn_by_rotation_matches_rotate90_on_a_smooth_image():
    x, y = _centres(32) / 32, _centres(32)[:, None] / 32
    images = (torch.cos(2 * math.pi * (x + 0.3)) * torch.sin(2 * math.pi * (2 * y - 0.1)) + x * y).float()
    images = images.expand(1, 1, 32, 32)
    out = _pipe(rotate=1)(images, debug_percentile=0.625)  # 2 theta = pi / 2
    inner = (..., slice(6, 26), slice(6, 26))
    # Bilinear interpolation (at 2x oversampling) leaves a small error on the sinusoid; a wrong turn would be O(1).
    torch.testing.assert_close(out[inner], torch.rot90(images, 1, dims=[2, 3])[inner], atol=6e-3, rtol=0)
    assert float((out - torch.rot90(images, 3, dims=[2, 3]))[inner].abs().max()) > 0.5


@pytest.mark.parametrize('q', [None, 0.02, 0.5, 0.97])
def test_geometric_path_preserves_a_constant_image(q):
    torch.manual_seed(0)
    out = _pipe(**augpipe_specs['bg'])(torch.full([4, 3, 16, 16], 0.3), debug_percentile=q)
    torch.testing.assert_close(out, torch.full_like(out, 0.3), atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------------------------------------------------
# Colour transforms.

def test_brightness_adds_a_constant():
    images = _images()
    out = _pipe(brightness=1)(images, debug_percentile=0.8)
    torch.testing.assert_close(out - images, torch.full_like(images, ndtri(0.8) * 0.2), atol=1e-6, rtol=0)


def test_contrast_scales_about_zero():
    images = _images()
    out = _pipe(contrast=1)(images, debug_percentile=0.3)
    torch.testing.assert_close(out, images * float(2 ** (ndtri(0.3) * 0.5)), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize('q,flip', [(0.2, False), (0.8, True)])
def test_lumaflip_inverts_the_luma_and_keeps_the_chroma(q, flip):
    images = _images()
    mean = images.mean(dim=1, keepdim=True)
    expected = images - 2 * mean if flip else images
    torch.testing.assert_close(_pipe(lumaflip=1)(images, debug_percentile=q), expected, atol=1e-6, rtol=0)


def test_hue_rotation_by_a_third_turn_cycles_the_channels():
    images = _images()
    out = _pipe(hue=1)(images, debug_percentile=5 / 6)  # theta = 2 pi / 3 about (1, 1, 1)
    torch.testing.assert_close(out, images[:, [2, 0, 1]], atol=1e-5, rtol=0)


def test_hue_rotation_keeps_luma_and_chroma_norm():
    images = _images()
    out = _pipe(hue=1)(images, debug_percentile=0.37)
    chroma_in, chroma_out = images - images.mean(1, keepdim=True), out - out.mean(1, keepdim=True)
    torch.testing.assert_close(out.mean(1), images.mean(1), atol=1e-6, rtol=0)
    torch.testing.assert_close(chroma_out.norm(dim=1), chroma_in.norm(dim=1), atol=1e-5, rtol=0)
    assert not torch.allclose(out, images, atol=1e-2)


def test_saturation_scales_the_chroma():
    images = _images()
    mean = images.mean(dim=1, keepdim=True)
    out = _pipe(saturation=1)(images, debug_percentile=0.7)
    torch.testing.assert_close(out, mean + (images - mean) * float(2 ** ndtri(0.7)), atol=1e-5, rtol=0)


def test_one_channel_images_get_the_luma_part_of_the_colour_transforms():
    images = _images((2, 1, 8, 8))
    q = 0.8  # brightness +b, contrast *c, lumaflip inverts; hue and saturation leave gray unchanged
    b, c = ndtri(q) * 0.2, 2 ** (ndtri(q) * 0.5)
    out = _pipe(**augpipe_specs['color'])(images, debug_percentile=q)
    torch.testing.assert_close(out, -(images + b) * c, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------------------------------------------------
# Image-space filter, noise, cutout.

def _band_gains(q, bands=(1, 1, 1, 1), std=1.0):
    """Independent reference: each enabled band in turn gets 2^(z std), then gains keep sum(power * gain^2) = 1."""
    power = np.array([10, 1, 1, 1]) / 13
    gains = np.ones(4)
    for band, multiplier in enumerate(bands):
        if multiplier > 0:
            t = np.ones(4)
            t[band] = 2 ** (ndtri(q) * std)
            gains *= t / np.sqrt((power * t ** 2).sum())
    return gains


def test_imgfilter_at_the_median_is_the_identity():
    images = _images()
    torch.testing.assert_close(_pipe(imgfilter=1)(images, debug_percentile=0.5), images, atol=1e-6, rtol=0)


@pytest.mark.parametrize('bands', [(1, 1, 1, 1), (0, 1, 0, 1)])
def test_imgfilter_scales_dc_and_nyquist_by_their_band_gains(bands):
    # The per-sample 1-D filter runs along both axes, so a band's 2-D gain is the square of its 1-D gain.
    q = 0.8
    gains = _band_gains(q, bands)
    i = torch.arange(16)
    checker = ((-1.0) ** (i[:, None] + i)).expand(2, 3, 16, 16)
    pipe = _pipe(imgfilter=1, imgfilter_bands=bands)
    torch.testing.assert_close(pipe(torch.full([2, 3, 16, 16], 0.5), debug_percentile=q),
                               torch.full([2, 3, 16, 16], 0.5 * gains[0] ** 2), atol=1e-6, rtol=0)
    torch.testing.assert_close(pipe(checker, debug_percentile=q), checker * gains[3] ** 2, atol=1e-5, rtol=0)


def test_noise_adds_gaussian_noise_of_the_drawn_std():
    torch.manual_seed(0)
    images = _images((4, 3, 32, 32))
    residual = _pipe(noise=1)(images, debug_percentile=0.7) - images
    sigma = np.sqrt(2) * float(torch.erfinv(torch.tensor(0.7, dtype=torch.float64))) * 0.1  # half-normal quantile
    assert float(residual.std()) == pytest.approx(sigma, rel=0.03)
    assert abs(float(residual.mean())) < 0.003


@pytest.mark.parametrize('q,rows', [(0.5, slice(4, 12)), (0.1, slice(0, 6))])
def test_cutout_zeroes_a_square(q, rows):
    images = _images()
    expected = images.clone()
    expected[:, :, rows, rows] = 0  # centre q * 16, side 8 pixels
    assert torch.equal(_pipe(cutout=1)(images, debug_percentile=q), expected)


# ----------------------------------------------------------------------------------------------------------------------
# Gradients: D's gradient reaches G through the pipe, and R1 differentiates through it twice.

def test_r1_style_double_backward_through_the_pipe():
    torch.manual_seed(0)
    D = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Softplus(), torch.nn.Conv2d(8, 1, 3))
    real = _images((2, 3, 16, 16)).requires_grad_(True)
    logits = D(_pipe(**augpipe_specs['bgcfnc'])(real)).sum()
    (grad,) = torch.autograd.grad(logits, real, create_graph=True)
    assert grad.shape == real.shape and float(grad.detach().abs().sum()) > 0
    grad.square().sum().backward()
    for name, param in D.named_parameters():  # the output bias does not change the image gradient: no R1 gradient
        if name != '2.bias':
            assert torch.isfinite(param.grad).all() and float(param.grad.abs().sum()) > 0, name


@pytest.mark.parametrize('name', ['bgcf', 'blit'])
def test_gradcheck_and_gradgradcheck(name):
    pipe = _pipe(**augpipe_specs[name])
    images = _images((1, 3, 8, 8), dtype=torch.float64).requires_grad_(True)
    fn = lambda x: pipe(x, debug_percentile=0.7)  # fixed draws: a linear map of the images
    assert torch.autograd.gradcheck(fn, (images,))
    assert torch.autograd.gradgradcheck(fn, (images,))


# ----------------------------------------------------------------------------------------------------------------------
# CPU fast path: transforms whose gates no sample passed are skipped, bit-identically and with the same random stream.

def _run_r1(pipe, images, seed):
    """Augmented images, their gradient through a small D, R1's second-order D gradients and the RNG state after."""
    torch.manual_seed(1)
    D = torch.nn.Sequential(torch.nn.Conv2d(images.shape[1], 4, 3), torch.nn.Softplus(), torch.nn.Conv2d(4, 1, 3))
    real = images.clone().requires_grad_(True)
    torch.manual_seed(seed)
    out = pipe(real)
    state = torch.get_rng_state()
    (grad,) = torch.autograd.grad(D(out).sum(), real, create_graph=True)
    grad.square().sum().backward()
    grads = [param.grad if param.grad is not None else torch.zeros([0]) for param in D.parameters()]  # no grad: bias
    return [out.detach(), grad.detach()] + grads, state


@pytest.mark.parametrize('name', ['blit', 'bgc', 'color', 'filter', 'noise', 'cutout', 'bgcfnc'])
@pytest.mark.parametrize('channels', [1, 3])
def test_skipping_closed_gates_is_bit_identical(name, channels, monkeypatch):
    opened = []
    open_ = augment._Draws.open
    monkeypatch.setattr(augment._Draws, 'open', lambda self, gate: opened.append(open_(self, gate)) or opened[-1])
    pipe = _pipe(**augpipe_specs[name])
    images = _images((6, channels, 12, 12), seed=3)
    for p in [1e-3, 0.05, 0.3, 1.0]:  # all gates closed .. some open .. all open
        pipe.p.fill_(p)
        for seed in range(3):
            results = {}
            for skip in (False, True):
                monkeypatch.setattr(augment, 'SKIP_CLOSED_GATES', skip)
                results[skip] = _run_r1(pipe, images, seed)
            (ref, ref_state), (fast, fast_state) = results[False], results[True]
            assert torch.equal(ref_state, fast_state), (p, seed)  # the same random numbers were drawn
            for i, (a, b) in enumerate(zip(ref, fast)):
                assert torch.equal(a, b), (p, seed, i)
    assert False in opened and True in opened  # some transforms were skipped, some applied


# ----------------------------------------------------------------------------------------------------------------------
# Presets and the ADA update.

def test_presets_expand_to_multipliers_of_one():
    blit, geom = dict(xflip=1, rotate90=1, xint=1), dict(scale=1, rotate=1, aniso=1, xfrac=1)
    color = dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)
    expected = dict(blit=blit, geom=geom, color=color, filter=dict(imgfilter=1), noise=dict(noise=1),
                    cutout=dict(cutout=1), bg=blit | geom, bgc=blit | geom | color,
                    bgcf=blit | geom | color | dict(imgfilter=1),
                    bgcfn=blit | geom | color | dict(imgfilter=1, noise=1),
                    bgcfnc=blit | geom | color | dict(imgfilter=1, noise=1, cutout=1))
    assert augpipe_specs == expected
    pipe = AugmentPipe(**augpipe_specs['bgc'])
    assert (pipe.xflip, pipe.hue, pipe.imgfilter, pipe.noise, pipe.xint_max, pipe.scale_std) == (1, 1, 0, 0, 0.125, 0.2)


@pytest.mark.parametrize('p,mean,expected', [
    (0.1, 0.7, 0.1 + 256 / 500_000),    # above target: up by batch * interval / (ada_kimg * 1000)
    (0.1, 0.5, 0.1 - 256 / 500_000),    # below target: down
    (0.1, 0.6, 0.1),                    # on target: sign 0
    (0.0002, 0.0, 0.0),                 # clamped at 0 from below
    (1.2, 1.0, 1.2 + 256 / 500_000),    # no upper clamp
])
def test_adjust_ada_p(p, mean, expected):
    assert adjust_ada_p(p, mean, target=0.6, batch_size=64, interval=4, ada_kimg=500) == pytest.approx(expected,
                                                                                                       abs=1e-15)


def test_adjust_ada_p_rejects_bad_input():
    with pytest.raises(ValueError, match=r"^adjust_ada_p: ada_kimg=0, expected a number > 0$"):
        adjust_ada_p(0.1, 0.7, 0.6, 64, 4, 0)
    with pytest.raises(ValueError, match=r"^adjust_ada_p: signs_real_mean=nan, expected a finite number$"):
        adjust_ada_p(0.1, float('nan'), 0.6, 64, 4, 500)


# ----------------------------------------------------------------------------------------------------------------------
# User errors.

@pytest.mark.parametrize('kwargs,message', [
    (dict(xflip=-1), "AugmentPipe: xflip=-1, expected a finite number >= 0"),
    (dict(scale_std='0.2'), "AugmentPipe: scale_std='0.2', expected a finite number >= 0"),
    (dict(imgfilter_bands=[1, 1, 1]), "AugmentPipe: imgfilter_bands=[1, 1, 1], expected 4 finite numbers >= 0"),
])
def test_constructor_rejects_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=f'^{re.escape(message)}$'):
        AugmentPipe(**kwargs)


def test_forward_rejects_bad_input():
    with pytest.raises(TypeError, match=r"^images: expected a float tensor \[N, C, H, W\], got torch.uint8 "
                                        r"\[1, 3, 4, 4\]$"):
        _pipe(xflip=1)(torch.zeros([1, 3, 4, 4], dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"^images: colour transforms need 1 or 3 channels, got 2$"):
        _pipe(hue=1)(torch.zeros([1, 2, 4, 4]))
    with pytest.raises(ValueError, match=r"^debug_percentile=1.5, expected None or a number in \[0, 1\]$"):
        _pipe(xflip=1)(torch.zeros([1, 3, 4, 4]), debug_percentile=1.5)


# ----------------------------------------------------------------------------------------------------------------------
# Pickles: the stored source must run with only torch_utils and dnnlib importable.

def test_pickle_round_trip_keeps_options_p_and_outputs():
    pipe = _pipe(0.4, **augpipe_specs['bgcfnc'], xint_max=0.25)
    loaded = pickle.loads(pickle.dumps(pipe))
    assert type(loaded).__name__ == 'AugmentPipe' and loaded.init_kwargs == pipe.init_kwargs
    assert float(loaded.p) == pytest.approx(0.4) and loaded.xint_max == 0.25
    images = _images()
    torch.manual_seed(3)
    expected = pipe(images)
    torch.manual_seed(3)
    assert torch.equal(loaded(images), expected)


def test_pickle_loads_with_only_torch_utils_and_dnnlib(tmp_path):
    pipe = _pipe(0.6, **augpipe_specs['bgcfnc'])
    images = _images((2, 3, 8, 8))
    torch.manual_seed(5)
    expected = dict(random=pipe(images), debug=pipe(images, debug_percentile=0.7))
    out = run_without_repo(tmp_path, dict(augment_pipe=pipe, images=images), """
        pipe = data['augment_pipe']
        assert type(pipe).__module__.startswith('_imported_module_') and type(pipe).__name__ == 'AugmentPipe'
        torch.manual_seed(5)
        out.update(random=pipe(data['images']), debug=pipe(data['images'], debug_percentile=0.7))
    """)
    assert torch.equal(out['random'], expected['random']) and torch.equal(out['debug'], expected['debug'])
