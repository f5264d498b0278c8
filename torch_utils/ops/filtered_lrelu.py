"""Filtered leaky ReLU, the alias-free nonlinearity of StyleGAN3 (Karras et al. 2021, "Alias-Free GANs", sec. 3.2).

A pointwise nonlinearity creates frequencies above the Nyquist limit, so StyleGAN3 applies it at a higher sampling
rate: add bias, upsample with the filter `fu`, leaky ReLU (with gain and clamp), then low-pass with `fd` and
downsample. This module holds the reference path composed of `bias_act` and `upfirdn2d`; a fused CUDA kernel can slot
in later. The signature is a compatibility contract with NVIDIA network pickles (SG3 `networks_stylegan3`).
"""

import numbers

import numpy as np
import torch

from . import bias_act
from . import upfirdn2d
from .upfirdn2d import _check_filter, _check_impl, _get_filter_size, _parse_padding


def _check_number(name, value, allow_none=False):
    """Raise unless `value` is a non-negative real number (or None when allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number{' or None' if allow_none else ''}, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")


def _check_factor(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")


def _output_size(x, fu, fd, up, down, padding):
    """Return (out_h, out_w) of `filtered_lrelu`; raise ValueError if it would be empty."""
    fu_w, fu_h = _get_filter_size(fu)
    fd_w, fd_h = _get_filter_size(fd)
    px0, px1, py0, py1 = _parse_padding(padding)
    in_h, in_w = x.shape[2], x.shape[3]
    out_w = (in_w * up + px0 + px1 - (fu_w - 1) - (fd_w - 1) + (down - 1)) // down
    out_h = (in_h * up + py0 + py1 - (fu_h - 1) - (fd_h - 1) + (down - 1)) // down
    if out_w < 1 or out_h < 1:
        raise ValueError(f"filtered_lrelu output would be empty ({out_h}x{out_w}) for input {in_h}x{in_w}, up={up}, "
                         f"down={down}, padding={padding!r}, fu {fu_h}x{fu_w} and fd {fd_h}x{fd_w}")
    return out_h, out_w


def _check_args(x, fu, fd, b, up, down, gain, slope, clamp):
    """Validate the arguments of `filtered_lrelu` other than padding and impl."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError("x must be a floating-point torch.Tensor, got "
                        + (str(x.dtype) if isinstance(x, torch.Tensor) else type(x).__name__))
    if x.ndim != 4:
        raise ValueError(f"x must be 4-D [N, C, H, W], got shape {list(x.shape)}")
    _check_filter(fu, name='fu')
    _check_filter(fd, name='fd')
    if b is not None and (not isinstance(b, torch.Tensor) or b.ndim != 1 or b.shape[0] != x.shape[1]
                          or b.dtype != x.dtype):
        raise ValueError(f"b must be None or a 1-D tensor of length x.shape[1] = {x.shape[1]} and dtype {x.dtype}, "
                         f"got " + (f"shape {list(b.shape)}, dtype {b.dtype}" if isinstance(b, torch.Tensor)
                                    else type(b).__name__))
    _check_factor('up', up)
    _check_factor('down', down)
    _check_number('gain', gain)
    _check_number('slope', slope)
    _check_number('clamp', clamp, allow_none=True)


def filtered_lrelu(x, fu=None, fd=None, b=None, up=1, down=1, padding=0, gain=np.sqrt(2), slope=0.2, clamp=None,
                   flip_filter=False, impl='cuda'):
    """Bias, upsample (filter `fu`), leaky ReLU with gain and clamp, then downsample (filter `fd`); x is [N, C, H, W].

    `padding` (int, [px, py] or [x0, x1, y0, y1]) applies to the upsampled image. Returns [N, C, H', W'] with
    W' = (W * up + px0 + px1 - (fu_w - 1) - (fd_w - 1) + (down - 1)) // down and likewise for H'.
    """
    _check_impl(impl)
    _check_args(x, fu, fd, b, up, down, gain, slope, clamp)
    _output_size(x, fu, fd, up, down, padding)
    # Fast path hook: a fused CUDA kernel (later issue) is dispatched here when impl == 'cuda' and x is on a GPU.
    # Until it exists, every call takes the reference path.
    return _filtered_lrelu_ref(x, fu=fu, fd=fd, b=b, up=up, down=down, padding=padding, gain=gain, slope=slope,
                               clamp=clamp, flip_filter=flip_filter)


def _filtered_lrelu_ref(x, fu=None, fd=None, b=None, up=1, down=1, padding=0, gain=np.sqrt(2), slope=0.2, clamp=None,
                        flip_filter=False):
    """Reference `filtered_lrelu` composed of the reference `bias_act` and `upfirdn2d` paths."""
    out_h, out_w = _output_size(x, fu, fd, up, down, padding)
    x = bias_act.bias_act(x=x, b=b, impl='ref')
    # gain=up**2 makes up for the zeros inserted by upsampling, so a constant image keeps its level.
    x = upfirdn2d.upfirdn2d(x=x, f=fu, up=up, padding=padding, flip_filter=flip_filter, gain=up ** 2, impl='ref')
    x = bias_act.bias_act(x=x, act='lrelu', alpha=slope, gain=gain, clamp=clamp, impl='ref')
    x = upfirdn2d.upfirdn2d(x=x, f=fd, down=down, flip_filter=flip_filter, impl='ref')
    assert x.shape[2:] == (out_h, out_w)
    return x
