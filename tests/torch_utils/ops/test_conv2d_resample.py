"""Tests for torch_utils.ops.conv2d_resample: every fast path against a naive general formulation, and gradients
including the double backward of a StyleGAN2 modulated convolution."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from naive_ops import naive_upfirdn2d
from torch_utils.ops import conv2d_gradfix
from torch_utils.ops import conv2d_resample as cr


def _randn(*shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def naive_conv2d_resample(x, w, f, up, down, padding, groups, flip_weight, flip_filter):
    """Oracle for the general formulation: upsample+pad+filter, valid conv, filter+downsample."""
    f2d = torch.ones(1, 1) if f is None else (f[:, None] * f[None, :] if f.ndim == 1 else f)
    fh, fw = f2d.shape
    p = [padding] * 4 if isinstance(padding, int) else list(padding)
    p = [p[0], p[0], p[1], p[1]] if len(p) == 2 else p
    if up > 1:
        p = [p[0] + (fw + up - 1) // 2, p[1] + (fw - up) // 2, p[2] + (fh + up - 1) // 2, p[3] + (fh - up) // 2]
    if down > 1:
        p = [p[0] + (fw - down + 1) // 2, p[1] + (fw - down) // 2, p[2] + (fh - down + 1) // 2, p[3] + (fh - down) // 2]
    x = naive_upfirdn2d(x, f2d if up > 1 else torch.ones(1, 1), up=up, pad=p, gain=up ** 2, flip_filter=flip_filter)
    x = F.conv2d(x, w if flip_weight else w.flip([2, 3]), groups=groups)
    if down > 1:
        x = naive_upfirdn2d(x, f2d, down=down, flip_filter=flip_filter)
    return x


# Asymmetric taps, so that any mix-up of filter flips shows.
F_SEP = torch.tensor([1., 2., 4., 1.]) / 8
F_2D = torch.outer(torch.tensor([1., 3., 2.]), torch.tensor([2., 1., 0., 1.])) / 24  # fh=3, fw=4


def _expand_cases():
    for k, up, down, groups, flip_weight, flip_filter, padding in itertools.product(
            [1, 3], [1, 2], [1, 2], [1, 2], [True, False], [True, False], [0, 1, [2, 0, 1, -1], -1]):
        yield k, up, down, groups, flip_weight, flip_filter, padding


@pytest.mark.parametrize('gradfix', [False, True], ids=['plain_conv', 'gradfix_conv'])
def test_all_paths_match_naive(monkeypatch, gradfix):
    monkeypatch.setattr(conv2d_gradfix, 'enabled', gradfix)
    f = torch.outer(F_SEP, F_SEP)
    num_cases = 0
    for i, (k, up, down, groups, flip_weight, flip_filter, padding) in enumerate(_expand_cases()):
        x = _randn(2, 4, 8, 7, seed=i)
        w = _randn(6, 4 // groups, k, k, seed=1000 + i)
        out = cr.conv2d_resample(x, w, f=f, up=up, down=down, padding=padding, groups=groups,
                                 flip_weight=flip_weight, flip_filter=flip_filter)
        expected = naive_conv2d_resample(x, w, f, up, down, padding, groups, flip_weight, flip_filter)
        msg = f"k={k} up={up} down={down} groups={groups} flip_weight={flip_weight} flip_filter={flip_filter} " \
              f"padding={padding}"
        assert out.shape == expected.shape, msg
        torch.testing.assert_close(out, expected, msg=msg)
        num_cases += 1
    assert num_cases == 256


@pytest.mark.parametrize('f,k,up,down,padding', [
    (F_2D, 3, 2, 1, [1, 0, 2, 1]), (F_2D, 3, 1, 2, 1), (F_2D, 1, 2, 1, 0), (F_2D, 1, 1, 2, [0, 1, 1, 0]),
    (F_2D, 2, 2, 2, [1, 2, 0, -1]), (F_SEP, 3, 2, 1, 1), (F_SEP, 3, 1, 2, 0), (None, 3, 1, 1, [1, 2]),
    (None, 2, 1, 1, [0, 1, 1, 0]), (None, 3, 2, 1, 0), (None, 3, 1, 2, 0),
])
def test_nonsquare_filters_and_kernels(f, k, up, down, padding):
    x = _randn(1, 4, 7, 6, seed=1)
    w = _randn(4, 2, k, k + 1, seed=2)  # a non-square kernel as well
    for flip_weight, flip_filter in itertools.product([True, False], repeat=2):
        out = cr.conv2d_resample(x, w, f=f, up=up, down=down, padding=padding, groups=2,
                                 flip_weight=flip_weight, flip_filter=flip_filter)
        expected = naive_conv2d_resample(x, w, f, up, down, padding, 2, flip_weight, flip_filter)
        torch.testing.assert_close(out, expected)


@pytest.mark.parametrize('k,up,down,padding', [(3, 2, 1, 1), (3, 1, 2, 0), (3, 2, 2, [0, 1, 1, 0]), (1, 2, 1, 0)])
def test_gradcheck(k, up, down, padding):
    x = _randn(1, 2, 4, 4, seed=3).requires_grad_()
    w = _randn(2, 2, k, k, seed=4).requires_grad_()
    fn = lambda x, w: cr.conv2d_resample(x, w, f=torch.outer(F_SEP, F_SEP), up=up, down=down,  # noqa: E731
                                         padding=padding)
    assert torch.autograd.gradcheck(fn, [x, w])


def modulated_conv(x, weight, styles, f, up, demodulate=True):
    """StyleGAN2 modulated conv as one grouped conv: per-sample weights, demodulated, groups = batch size."""
    n, in_channels, h, w = x.shape
    out_channels, _, kh, kw = weight.shape
    wt = weight[None] * styles[:, None, :, None, None]  # [N, O, I, kh, kw]
    if demodulate:
        wt = wt * (wt.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()[:, :, None, None, None]
    x = x.reshape(1, n * in_channels, h, w)
    out = cr.conv2d_resample(x, wt.reshape(n * out_channels, in_channels, kh, kw), f=f, up=up, padding=kw // 2,
                             groups=n, flip_weight=False)
    return out.reshape(n, out_channels, *out.shape[2:])


# PyTorch's own double backward of the grouped transposed conv is slow on CPU (seconds for these shapes), so the plain
# path is checked with gradgradcheck's random-projection fast mode and the conv2d_gradfix path in full.
@pytest.mark.parametrize('gradfix,fast_mode', [(False, True), (True, False)], ids=['plain_conv', 'gradfix_conv'])
def test_modulated_conv_double_backward(monkeypatch, gradfix, fast_mode):
    monkeypatch.setattr(conv2d_gradfix, 'enabled', gradfix)
    f = torch.outer(torch.tensor([1., 3., 3., 1.]), torch.tensor([1., 3., 3., 1.])) / 64
    x = _randn(2, 2, 3, 3, seed=5).requires_grad_()
    styles = (_randn(2, 2, seed=6) + 1.5).requires_grad_()
    weight = _randn(2, 2, 3, 3, seed=7)
    assert modulated_conv(x, weight, styles, f, up=2).shape == (2, 2, 6, 6)
    assert torch.autograd.gradgradcheck(lambda x, s: modulated_conv(x, weight, s, f, up=2), [x, styles],
                                        fast_mode=fast_mode)


def test_modulated_conv_matches_per_sample_loop():
    """The grouped formulation equals running each sample through its own conv."""
    f = torch.outer(torch.tensor([1., 3., 3., 1.]), torch.tensor([1., 3., 3., 1.])) / 64
    x, styles, weight = _randn(2, 2, 4, 4, seed=8), _randn(2, 2, seed=9), _randn(3, 2, 3, 3, seed=10)
    out = modulated_conv(x, weight, styles, f, up=2)
    for i in range(2):
        wi = weight * styles[i][None, :, None, None]
        wi = wi * (wi.square().sum(dim=[1, 2, 3]) + 1e-8).rsqrt()[:, None, None, None]
        expected = naive_conv2d_resample(x[i: i + 1], wi, f, 2, 1, 1, 1, False, False)
        torch.testing.assert_close(out[i: i + 1], expected)


def test_errors():
    x, w = _randn(1, 4, 5, 5, seed=11), _randn(2, 4, 3, 3, seed=12)
    with pytest.raises(ValueError, match=r"w must have the dtype of x \(torch.float64\), got torch.float32"):
        cr.conv2d_resample(x, w.float())
    with pytest.raises(ValueError, match=r"f must be None or a 1-D/2-D float32 tensor \(see upfirdn2d.setup_filter\), "
                                         r"got shape \[4, 4\], dtype torch.float64"):
        cr.conv2d_resample(x, w, f=torch.ones(4, 4, dtype=torch.float64), up=2)
    with pytest.raises(ValueError, match=r"w must be 4-D, got shape \[2, 4, 3\]"):
        cr.conv2d_resample(x, w[..., 0])
    with pytest.raises(TypeError, match=r"x must be a floating-point torch.Tensor, got torch.int64"):
        cr.conv2d_resample(x.long(), w)
    with pytest.raises(ValueError, match=r"up must be >= 1, got 0"):
        cr.conv2d_resample(x, w, up=0)
    with pytest.raises(TypeError, match=r"down must be an int, got 1.5"):
        cr.conv2d_resample(x, w, down=1.5)
    with pytest.raises(ValueError, match=r"w must be \[O, I / groups, kh, kw\] with O divisible by groups=2 and "
                                         r"I = x.shape\[1\] = 4, got w of shape \[2, 4, 3, 3\]"):
        cr.conv2d_resample(x, w, groups=2)
    with pytest.raises(ValueError, match=r"conv2d_resample output would be empty along x"):
        cr.conv2d_resample(x, w, padding=[-2, -1, 0, 0])


def test_float32_and_float16():
    x, w = _randn(1, 2, 6, 6, seed=13), _randn(3, 2, 3, 3, seed=14)
    f = torch.outer(F_SEP, F_SEP)
    expected = naive_conv2d_resample(x, w, f, 2, 1, 1, 1, True, False)
    out = cr.conv2d_resample(x.float(), w.float(), f=f, up=2, padding=1)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)
    out = cr.conv2d_resample(x.half(), w.half(), f=f, up=2, padding=1)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.double(), expected, atol=2e-2, rtol=2e-2)
