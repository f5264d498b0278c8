"""Tests for dpm/augment.py: identity at p = 0, flips that match their labels, integer shifts and quarter
turns against torch.roll / torch.rot90, labels that rebuild the applied transform, determinism, pickling, errors."""

import math
import pickle

import pytest
import torch

from dpm import augment as dpm_augment
from dpm.augment import AugmentPipe

OFF = dict(xflip=0, yflip=0, scale=0, rotate_frac=0, aniso=0, translate_frac=0)


def images(N=8, C=3, H=8, W=8, seed=0):
    return torch.randn([N, C, H, W], generator=torch.Generator().manual_seed(seed))


def test_p0_is_identity_with_zero_labels():
    x = images()
    y, labels = AugmentPipe(p=0)(x)
    assert y is x and labels.shape == (8, 9) and torch.count_nonzero(labels) == 0


def test_xflip_flips_exactly_the_labelled_images():
    x = images(N=64)
    torch.manual_seed(1)
    y, labels = AugmentPipe(p=1, **dict(OFF, xflip=1))(x)
    flipped = labels[:, 0] == 1
    assert labels.shape == (64, 9) and 10 < int(flipped.sum()) < 54  # Half flip on average.
    assert torch.count_nonzero(labels[:, 1:]) == 0
    assert torch.equal(y[flipped], x[flipped].flip(3)) and torch.equal(y[~flipped], x[~flipped])


def test_default_multipliers_give_edm_flip_rate_and_label_dim():
    torch.manual_seed(0)
    _, labels = AugmentPipe()(images(N=2000, C=1, H=4, W=4))
    assert labels.shape == (2000, 9)
    assert abs(float(labels[:, 0].mean()) - 0.5) < 0.05  # xflip = 1e8: every image may flip, half do.
    assert abs(float((labels[:, 1] != 0).float().mean()) - 0.12 / 2) < 0.02  # yflip fires with p, flips half.
    assert abs(float((labels[:, 2] != 0).float().mean()) - 0.12) < 0.025  # scale fires with p = 0.12.


@pytest.mark.parametrize('shift', [(1, 2), (-2, 0), (0, -3)])
def test_integer_translation_equals_roll_in_the_interior(shift):
    dx, dy = shift
    x = images(H=8, W=10)
    M = dpm_augment.translation(torch.full([8], -float(dx)), torch.full([8], -float(dy)))
    y = dpm_augment.affine_transform(x, M)
    expected = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    rows = slice(max(dy, 0), 8 + min(dy, 0))
    cols = slice(max(dx, 0), 10 + min(dx, 0))
    torch.testing.assert_close(y[:, :, rows, cols], expected[:, :, rows, cols], atol=1e-5, rtol=0)


def test_quarter_turn_equals_rot90():
    x = images(H=6, W=6)
    y = dpm_augment.affine_transform(x, dpm_augment.rotation(torch.full([8], -math.pi / 2)))
    # Rotating the image by +90 degrees (x right, y down: clockwise on screen) is rot90 with k = -1 on dims (2, 3).
    torch.testing.assert_close(y, torch.rot90(x, k=-1, dims=(2, 3)), atol=1e-5, rtol=0)


def _matrix_from_labels(labels, H, W):
    """Independent rebuild of the output->input map from the 7 general-transform labels."""
    Ms = []
    for s, c_m1, sn, ax, ay, tx, ty in labels[:, 2:].double().tolist():
        theta = math.atan2(sn, c_m1 + 1)
        a, r = math.hypot(ax, ay), 0.5 * math.atan2(ay, ax)
        rot = lambda t: torch.tensor(  # noqa: E731
            [[math.cos(t), -math.sin(t), 0], [math.sin(t), math.cos(t), 0], [0, 0, 1]], dtype=torch.float64)
        T_scale = torch.diag(torch.tensor([2 ** s, 2 ** s, 1.0], dtype=torch.float64))
        T_aniso = rot(r) @ torch.diag(torch.tensor([2 ** a, 2 ** -a, 1.0], dtype=torch.float64)) @ rot(-r)
        T_trans = torch.tensor([[1, 0, tx * W], [0, 1, ty * H], [0, 0, 1]], dtype=torch.float64)
        Ms.append(torch.linalg.inv(T_trans @ T_aniso @ rot(theta) @ T_scale))
    return torch.stack(Ms).float()


def test_labels_describe_the_applied_transform():
    x = images(N=16, H=8, W=12, seed=3)
    torch.manual_seed(5)
    y, labels = AugmentPipe(p=1, scale=1, rotate_frac=1, aniso=1, translate_frac=1, xflip=1, yflip=1)(x)
    assert torch.count_nonzero(labels[:, 2:6]) == 16 * 4 and int((labels[:, :2] != 0).sum()) > 4
    flipped = torch.where(labels[:, 0:1, None, None] == 1, x.flip(3), x)
    flipped = torch.where(labels[:, 1:2, None, None] == 1, flipped.flip(2), flipped)
    expected = dpm_augment.affine_transform(flipped, _matrix_from_labels(labels, H=8, W=12))
    torch.testing.assert_close(y, expected, atol=1e-4, rtol=0)


def test_translation_keeps_image_statistics():
    # Smooth images: bilinear resampling of white noise at fractional offsets would average pixels and lower the std.
    x = torch.nn.functional.interpolate(images(N=64, C=1, H=4, W=4, seed=2), size=(16, 16), mode='bicubic') * 0.5 + 0.2
    torch.manual_seed(0)
    y, labels = AugmentPipe(p=1, **dict(OFF, translate_frac=1))(x)
    assert torch.count_nonzero(labels[:, 7:]) == 128
    assert abs(float(y.mean() - x.mean())) < 0.02 and abs(float(y.std() / x.std()) - 1) < 0.05
    assert float(y.abs().max()) <= float(x.abs().max()) + 1e-6  # Bilinear with reflection never overshoots.


def test_deterministic_under_manual_seed_and_pickle():
    pipe = AugmentPipe(p=0.5)
    x = images()
    outs = []
    for candidate in (pipe, pickle.loads(pickle.dumps(pipe))):
        torch.manual_seed(7)
        outs.append(candidate(x))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    assert outs[0][1].dtype == torch.float32 and outs[0][0].shape == x.shape


@pytest.mark.parametrize('kwargs, message', [
    (dict(p=1.5), r'AugmentPipe: p=1.5; expected a number in \[0, 1\]'),
    (dict(scale=-1), r'AugmentPipe: scale=-1; expected a number in \[0, 1e\+30\]'),
    (dict(aniso_rotate_prob='x'), r"AugmentPipe: aniso_rotate_prob='x'; expected a number in \[0, 1\]"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AugmentPipe(**kwargs)


def test_bad_images():
    with pytest.raises(TypeError, match=r'images: expected a float tensor \[N, C, H, W\], got torch.uint8 \[2, 8, 8\]'):
        AugmentPipe(p=1)(torch.zeros([2, 8, 8], dtype=torch.uint8))
