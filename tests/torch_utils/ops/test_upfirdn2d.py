"""Tests for torch_utils.ops.upfirdn2d against a naive zero-insert / pad / tap-loop / slice oracle."""

import itertools

import pytest
import torch

from naive_ops import naive_upfirdn2d
from torch_utils.ops import upfirdn2d as u


def _randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# --- setup_filter and the private helpers -------------------------------------------------------------------------

def test_setup_filter_outer_product_normalised():
    f = u.setup_filter([1, 3, 3, 1])
    taps = torch.tensor([1., 3., 3., 1.])
    assert f.dtype == torch.float32 and f.shape == (4, 4) and f.device.type == 'cpu'
    torch.testing.assert_close(f, taps[:, None] * taps[None, :] / 64)


def test_setup_filter_variants():
    assert torch.equal(u.setup_filter(None), torch.ones(1, 1))
    assert torch.equal(u.setup_filter(3.0), torch.ones(1, 1))
    long = u.setup_filter(torch.arange(1., 9.))  # 8 taps: stays separable
    assert long.shape == (8,)
    torch.testing.assert_close(long, torch.arange(1., 9.) / 36)
    assert u.setup_filter([1, 2], separable=True).shape == (2,)
    assert u.setup_filter(torch.arange(1., 9.), separable=False).shape == (8, 8)
    torch.testing.assert_close(u.setup_filter([1, 2, 3], normalize=False, separable=True), torch.tensor([1., 2, 3]))
    torch.testing.assert_close(u.setup_filter([1, 2, 3], normalize=False, flip_filter=True, separable=True),
                               torch.tensor([3., 2, 1]))
    f2d = torch.tensor([[1., 2.], [3., 4.]])
    torch.testing.assert_close(u.setup_filter(f2d, flip_filter=True), torch.tensor([[4., 3.], [2., 1.]]) / 10)
    # gain ** (ndim / 2): a 2-D filter sums to gain, a separable 1-D one to sqrt(gain) (applied twice).
    assert u.setup_filter([1, 3, 3, 1], gain=4).sum().item() == pytest.approx(4.0)
    assert u.setup_filter(torch.ones(8), gain=4).sum().item() == pytest.approx(2.0)
    with pytest.raises(ValueError, match=r"separable=True needs a 1-D filter, got f of shape \[2, 2\]"):
        u.setup_filter(f2d, separable=True)


def test_private_helpers():
    assert u._parse_scaling(2) == (2, 2)
    assert u._parse_scaling([3, 1]) == (3, 1)
    assert u._parse_padding(1) == (1, 1, 1, 1)
    assert u._parse_padding([1, -2]) == (1, 1, -2, -2)
    assert u._parse_padding([1, 2, 3, 4]) == (1, 2, 3, 4)
    assert u._get_filter_size(None) == (1, 1)
    assert u._get_filter_size(torch.ones(5)) == (5, 5)
    assert u._get_filter_size(torch.ones(3, 4)) == (4, 3)  # (fw, fh)
    with pytest.raises(ValueError, match=r"scaling must be >= 1 along each axis, got \[1, 0\]"):
        u._parse_scaling([1, 0])
    with pytest.raises(TypeError, match=r"padding must be an int, \[px, py\] or \[x0, x1, y0, y1\] of ints, got "
                                        r"\[1, 2, 3\]"):
        u._parse_padding([1, 2, 3])


# --- upfirdn2d against the oracle ---------------------------------------------------------------------------------

FILTERS = {
    'none': None,
    'sep3': torch.tensor([1., 2., 4.]) / 7,          # 1-D, applied along both axes
    'sep8': u.setup_filter(torch.arange(1., 9.)),    # 1-D from setup_filter
    '2d_3x4': torch.tensor([[1., 2., 0., -1.], [3., 1., 2., 5.], [0., -2., 1., 1.]]),  # fh=3, fw=4, asymmetric
}


def _as_2d(f):
    if f is None:
        return torch.ones(1, 1)
    return f[:, None] * f[None, :] if f.ndim == 1 else f


@pytest.mark.parametrize('fname', sorted(FILTERS))
@pytest.mark.parametrize('up,down,padding', [
    (1, 1, 0), (2, 1, 1), (1, 2, [1, 2]), ([2, 1], [1, 3], [2, 0, 1, 3]), (3, 2, [-1, 2, 3, -2]), (2, 2, [-3, 4, 0, 0]),
])
@pytest.mark.parametrize('flip_filter', [False, True])
def test_upfirdn2d_matches_oracle(fname, up, down, padding, flip_filter):
    f = FILTERS[fname]
    x = _randn(2, 3, 9, 10, seed=1)
    out = u.upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=1.5)
    up2 = (up, up) if isinstance(up, int) else tuple(up)
    down2 = (down, down) if isinstance(down, int) else tuple(down)
    pad4 = [padding] * 4 if isinstance(padding, int) else \
        (padding if len(padding) == 4 else [padding[0], padding[0], padding[1], padding[1]])
    expected = naive_upfirdn2d(x, _as_2d(f), up2, down2, pad4, gain=1.5, flip_filter=flip_filter)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize('in_hw,f_shape,up,down,padding,out_hw', [
    ((8, 8), (4, 4), 2, 1, [2, 1, 2, 1], (16, 16)),
    ((8, 8), (4, 4), 1, 2, [1, 1, 1, 1], (4, 4)),
    ((5, 7), (3, 4), [2, 3], [1, 2], [0, 1, -1, 2], (7, 12)),
    ((4, 4), (1, 1), 1, 3, 0, (2, 2)),
])
def test_output_size(in_hw, f_shape, up, down, padding, out_hw):
    x = torch.zeros(1, 2, *in_hw)
    assert u.upfirdn2d(x, torch.ones(f_shape), up=up, down=down, padding=padding).shape == (1, 2, *out_hw)


def test_impulse_response_orientation():
    """A true convolution reproduces the filter around an impulse; flip_filter=True reproduces it rotated."""
    f = torch.tensor([[1., 2., 3.], [4., 5., 6.], [7., 8., 9.]])
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 4] = 1
    assert torch.equal(u.filter2d(x, f)[0, 0, 3:6, 3:6], f)
    assert torch.equal(u.filter2d(x, f, flip_filter=True)[0, 0, 3:6, 3:6], f.flip([0, 1]))


# --- the size-preserving wrappers ---------------------------------------------------------------------------------

def test_wrappers_match_oracle_with_spec_padding():
    x = _randn(2, 2, 6, 5, seed=2)
    f = FILTERS['2d_3x4']
    fw, fh = 4, 3
    out = u.filter2d(x, f, padding=1)
    assert out.shape == (2, 2, 8, 7)
    torch.testing.assert_close(out, naive_upfirdn2d(x, f, pad=(1 + fw // 2, 1 + (fw - 1) // 2,
                                                               1 + fh // 2, 1 + (fh - 1) // 2)))
    out = u.upsample2d(x, f, up=[2, 3], gain=0.5)
    assert out.shape == (2, 2, 18, 10)
    pad = ((fw + 2 - 1) // 2, (fw - 2) // 2, (fh + 3 - 1) // 2, (fh - 3) // 2)
    torch.testing.assert_close(out, naive_upfirdn2d(x, f, up=(2, 3), pad=pad, gain=0.5 * 6))
    out = u.downsample2d(x, f, down=2)
    assert out.shape == (2, 2, 3, 2)  # an even filter on an odd width: (5 + 2 - 3 + 1) // 2 = 2 columns
    pad = ((fw - 2 + 1) // 2, (fw - 2) // 2, (fh - 2 + 1) // 2, (fh - 2) // 2)
    torch.testing.assert_close(out, naive_upfirdn2d(x, f, down=(2, 2), pad=pad))


def test_constant_image_keeps_level_away_from_border():
    f = u.setup_filter([1, 3, 3, 1])
    x = torch.full((1, 1, 8, 8), 0.75, dtype=torch.float64)
    torch.testing.assert_close(u.upsample2d(x, f)[..., 3:-3, 3:-3], torch.full((1, 1, 10, 10), 0.75,
                                                                                 dtype=torch.float64))
    torch.testing.assert_close(u.downsample2d(x, f)[..., 1:-1, 1:-1], torch.full((1, 1, 2, 2), 0.75,
                                                                                   dtype=torch.float64))


# --- errors, gradients, dtypes ------------------------------------------------------------------------------------

def test_errors():
    x = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match=r"x must be 4-D \[N, C, H, W\], got shape \[1, 4, 4\]"):
        u.upfirdn2d(x[0], None)
    with pytest.raises(TypeError, match=r"f must be float32, got torch.float64"):
        u.upfirdn2d(x, torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"f must be a non-empty 1-D or 2-D filter, got shape \[1, 1, 1\]"):
        u.upfirdn2d(x, torch.ones(1, 1, 1))
    with pytest.raises(ValueError, match=r"up must be >= 1 along each axis, got 0"):
        u.upfirdn2d(x, None, up=0)
    with pytest.raises(TypeError, match=r"down must be an int or a pair \[sx, sy\] of ints, got 1.5"):
        u.upfirdn2d(x, None, down=1.5)
    with pytest.raises(ValueError, match=r"upfirdn2d output would be empty \(4x0\) for input 4x4, up=1, down=1, "
                                         r"padding=\[-2, -2, 0, 0\] and a 1x1 filter"):
        u.upfirdn2d(x, None, padding=[-2, -2, 0, 0])
    with pytest.raises(ValueError, match=r"impl must be one of \['ref', 'cuda'\], got None"):
        u.upfirdn2d(x, None, impl=None)


@pytest.mark.parametrize('f,up,down,padding', [(FILTERS['2d_3x4'], 2, 1, [1, 2, 0, 1]), (FILTERS['sep3'], 1, 2, 1)])
def test_gradcheck_and_gradgradcheck(f, up, down, padding):
    x = _randn(1, 2, 4, 4, seed=3).requires_grad_()
    fn = lambda x: u.upfirdn2d(x, f, up=up, down=down, padding=padding, gain=2)  # noqa: E731
    assert torch.autograd.gradcheck(fn, [x])
    assert torch.autograd.gradgradcheck(fn, [x])


def test_float16_and_float32():
    x = _randn(1, 2, 6, 6, seed=4)
    f = u.setup_filter([1, 3, 3, 1])
    ref = naive_upfirdn2d(x, f, up=(2, 2), pad=(2, 1, 2, 1), gain=4)
    for dtype, tol in ((torch.float32, 1e-5), (torch.float16, 5e-3)):
        out = u.upsample2d(x.to(dtype), f)
        assert out.dtype == dtype
        torch.testing.assert_close(out.double(), ref, atol=tol, rtol=tol)


def test_argument_grid_against_oracle():
    """Every combination of small up/down factors and paddings, including crops that empty the output (an error)."""
    x = _randn(1, 1, 3, 4, seed=5)
    f = FILTERS['sep3']
    num_checked = 0
    for up, down, p0, p1 in itertools.product([1, 2], [1, 2, 3], [-2, 0, 1], [-1, 0, 2]):
        pad = [p0, p1, p1, p0]
        if min(4 * up, 3 * up) + p0 + p1 - 2 < 1:
            with pytest.raises(ValueError, match='upfirdn2d output would be empty'):
                u.upfirdn2d(x, f, up=up, down=down, padding=pad)
            continue
        out = u.upfirdn2d(x, f, up=up, down=down, padding=pad)
        expected = naive_upfirdn2d(x, _as_2d(f), (up, up), (down, down), pad)
        torch.testing.assert_close(out, expected, msg=f"up={up} down={down} padding={pad}")
        num_checked += 1
    assert num_checked == 45


@pytest.mark.parametrize('fname', sorted(FILTERS))
@pytest.mark.parametrize('up,down,padding', [
    ((1, 1), (1, 1), (1, 2, 0, 1)), ((2, 2), (1, 1), (2, 1, 2, 1)), ((1, 1), (2, 2), (1, 1, 1, 1)),
    ((3, 2), (1, 1), (-1, 2, 3, -2)), ((1, 1), (2, 3), (2, 3, -1, 2)), ((1, 1), (2, 2), (4, 3, 2, 2)),
])
@pytest.mark.parametrize('flip_filter', [False, True])
@pytest.mark.parametrize('fold_batch', [False, True])
def test_fast_conv_path_matches_reference(fname, up, down, padding, flip_filter, fold_batch, monkeypatch):
    """The CPU fast path (strided / transposed depthwise conv; with fold_batch, 3 channels run as 2 * 3 groups of one
    batch) against _upfirdn2d_ref: values, grads, 2nd order."""
    f = FILTERS[fname]
    assert u._fast_conv_applies(f, up, down)
    monkeypatch.setattr(u, 'fold_batch', fold_batch)
    convs = []
    monkeypatch.setattr(u.F, 'conv2d', lambda x, *args, conv=u.F.conv2d, **kwargs: convs.append(x.shape[0])
                        or conv(x, *args, **kwargs))
    monkeypatch.setattr(u.F, 'conv_transpose2d', lambda x, *args, conv=u.F.conv_transpose2d, **kwargs:
                        convs.append(x.shape[0]) or conv(x, *args, **kwargs))
    x = _randn(2, 3, 7, 6, seed=7).requires_grad_()
    y = u._upfirdn2d_conv(x, f, up, down, padding, flip_filter, gain=2.5)
    assert convs == [1 if fold_batch else 2]  # one conv, over the batch folded into its groups or not
    monkeypatch.undo()
    y_ref = u._upfirdn2d_ref(x, f, up, down, padding, flip_filter, gain=2.5)
    assert y.shape == y_ref.shape
    torch.testing.assert_close(y, y_ref)
    dy = _randn(*y.shape, seed=8).requires_grad_()
    (gx,) = torch.autograd.grad(y, [x], dy, create_graph=True)
    (gx_ref,) = torch.autograd.grad(y_ref, [x], dy, create_graph=True)
    torch.testing.assert_close(gx, gx_ref)
    w = _randn(*x.shape, seed=9)
    torch.testing.assert_close(torch.autograd.grad((gx * w).sum(), [dy])[0],
                               torch.autograd.grad((gx_ref * w).sum(), [dy])[0])


def test_fast_conv_switch(monkeypatch):
    """upfirdn2d takes the fast path unless fast_conv is off, impl='ref', both up and down, or f requires grad."""
    calls = []
    monkeypatch.setattr(u, '_upfirdn2d_conv', lambda *args, **kwargs: calls.append(1) or args[0])
    x, f = _randn(1, 1, 4, 4, seed=10), u.setup_filter([1, 3, 3, 1])
    u.upfirdn2d(x, f, down=2)
    u.upfirdn2d(x, f, down=2, impl='ref')
    u.upfirdn2d(x, f, up=2, down=2)
    u.upfirdn2d(x, f.clone().requires_grad_(), up=2)
    monkeypatch.setattr(u, 'fast_conv', False)
    u.upfirdn2d(x, f, up=2)
    assert len(calls) == 1
