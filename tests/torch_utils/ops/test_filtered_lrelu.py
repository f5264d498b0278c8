"""Tests for torch_utils.ops.filtered_lrelu against a naive composition, output sizes, gradients and errors."""

import numpy as np
import pytest
import torch

from naive_ops import naive_upfirdn2d
from torch_utils.ops import filtered_lrelu as fl


def _randn(*shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def naive_filtered_lrelu(x, fu, fd, b, up, down, pad, gain, slope, clamp, flip_filter):
    """Oracle: bias, upsample, leaky ReLU * gain, clamp, downsample, written out step by step."""
    if b is not None:
        x = x + b[None, :, None, None]
    x = naive_upfirdn2d(x, fu, up=up, pad=pad, gain=up ** 2, flip_filter=flip_filter)
    x = torch.where(x >= 0, x, x * slope) * gain
    if clamp is not None:
        x = torch.minimum(torch.maximum(x, torch.full_like(x, -clamp)), torch.full_like(x, clamp))
    return naive_upfirdn2d(x, fd, down=down, flip_filter=flip_filter)


FU_SEP = torch.tensor([1., 3., 4., 1.]) / 9
FD_2D = torch.tensor([[1., 2., 0.], [0., 3., 1.]]) / 7  # fh=2, fw=3


@pytest.mark.parametrize('fu,fd,up,down,pad,gain,slope,clamp,flip_filter', [
    (None, None, 1, 1, (0, 0, 0, 0), np.sqrt(2), 0.2, None, False),
    (FU_SEP, FU_SEP, 2, 2, (2, 1, 2, 1), np.sqrt(2), 0.2, None, False),
    (FU_SEP, FD_2D, 2, 1, (3, 0, 1, 2), 1.0, 0.1, 0.5, True),
    (FD_2D, FU_SEP, 1, 2, (1, 2, -1, 3), 2.0, 0.0, 0.7, False),
    (FU_SEP, None, 4, 1, (-2, 1, 0, 0), 1.0, 1.0, None, True),
    (None, FD_2D, 1, 3, (2, 2, 2, 2), np.sqrt(2), 0.2, 1.0, False),
])
def test_matches_naive_composition(fu, fd, up, down, pad, gain, slope, clamp, flip_filter):
    x, b = _randn(2, 3, 6, 5, seed=1), _randn(3, seed=2)
    out = fl.filtered_lrelu(x, fu=fu, fd=fd, b=b, up=up, down=down, padding=list(pad), gain=gain, slope=slope,
                            clamp=clamp, flip_filter=flip_filter)
    expected = naive_filtered_lrelu(x, fu, fd, b, up, down, pad, gain, slope, clamp, flip_filter)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected)
    if clamp is not None:
        # fd has non-negative taps summing to 1 (up to float32 rounding), so the clamp survives it.
        assert out.abs().max().item() <= clamp * (1 + 1e-6)


def test_defaults_are_lrelu_with_sqrt2_gain():
    x = _randn(1, 2, 4, 4, seed=3)
    torch.testing.assert_close(fl.filtered_lrelu(x), torch.where(x >= 0, x, 0.2 * x) * np.sqrt(2))
    torch.testing.assert_close(fl.filtered_lrelu(x, impl='ref'), fl.filtered_lrelu(x))


@pytest.mark.parametrize('in_hw,fu_shape,fd_shape,up,down,padding,out_hw', [
    ((16, 16), (12,), (12,), 2, 2, [11, 11, 11, 11], (16, 16)),   # (16*2 + 22 - 11 - 11 + 1) // 2 = 16
    ((8, 10), (6,), (6,), 4, 2, [4, 5, 3, 2], (14, 20)),         # x: (40 + 9 - 10 + 1) // 2, y: (32 + 5 - 10 + 1) // 2
    ((8, 8), (3, 4), None, 2, 1, [0, 0, 0, 0], (14, 13)),       # fu is fh=3, fw=4
    ((9, 7), None, (2, 5), 1, 3, [1, 2, 3, 0], (4, 2)),          # x: (7 + 3 - 4 + 2) // 3, y: (9 + 3 - 1 + 2) // 3
])
def test_output_size(in_hw, fu_shape, fd_shape, up, down, padding, out_hw):
    x = torch.zeros(1, 2, *in_hw)
    fu = None if fu_shape is None else torch.ones(fu_shape)
    fd = None if fd_shape is None else torch.ones(fd_shape)
    assert fl.filtered_lrelu(x, fu=fu, fd=fd, up=up, down=down, padding=padding).shape == (1, 2, *out_hw)


def test_gradcheck():
    x = _randn(1, 2, 4, 4, seed=4).requires_grad_()
    b = _randn(2, seed=5).requires_grad_()
    fn = lambda x, b: fl.filtered_lrelu(x, fu=FU_SEP, fd=FD_2D, b=b, up=2, down=2, padding=[2, 1, 2, 1],  # noqa: E731
                                        clamp=2.0)
    assert torch.autograd.gradcheck(fn, [x, b])


def test_errors():
    x = torch.zeros(1, 2, 4, 4)
    with pytest.raises(ValueError, match=r"impl must be one of \['ref', 'cuda'\], got 'fast'"):
        fl.filtered_lrelu(x, impl='fast')
    with pytest.raises(ValueError, match=r"b must be None or a 1-D tensor of length x.shape\[1\] = 2 and dtype "
                                         r"torch.float32, got shape \[3\], dtype torch.float32"):
        fl.filtered_lrelu(x, b=torch.zeros(3))
    with pytest.raises(TypeError, match=r"fd must be float32, got torch.float64"):
        fl.filtered_lrelu(x, fd=torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"x must be 4-D \[N, C, H, W\], got shape \[2, 4, 4\]"):
        fl.filtered_lrelu(x[0])
    with pytest.raises(TypeError, match=r"up must be an int, got \[2, 2\]"):
        fl.filtered_lrelu(x, up=[2, 2])
    with pytest.raises(ValueError, match=r"slope must be >= 0, got -0.1"):
        fl.filtered_lrelu(x, slope=-0.1)
    with pytest.raises(ValueError, match=r"clamp must be >= 0, got -1"):
        fl.filtered_lrelu(x, clamp=-1)
    with pytest.raises(ValueError, match=r"filtered_lrelu output would be empty \(0x0\) for input 4x4, up=1, down=1, "
                                         r"padding=0, fu 3x3 and fd 3x3"):
        fl.filtered_lrelu(x, fu=torch.ones(3), fd=torch.ones(3))


def test_float16_on_cpu():
    x, b = _randn(1, 2, 5, 5, seed=6), _randn(2, seed=7)
    expected = naive_filtered_lrelu(x, FU_SEP, FU_SEP, b, 2, 2, (2, 1, 2, 1), np.sqrt(2), 0.2, None, False)
    out = fl.filtered_lrelu(x.half(), fu=FU_SEP, fd=FU_SEP, b=b.half(), up=2, down=2, padding=[2, 1, 2, 1])
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.double(), expected, atol=1e-2, rtol=1e-2)
