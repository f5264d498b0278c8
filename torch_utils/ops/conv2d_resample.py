"""2-D convolution fused with FIR up/downsampling, the `conv2d_resample` op of StyleGAN2-ADA (Karras et al. 2020).

The general formulation is: upsample by zero insertion, pad, FIR-filter, convolve with the weight (no padding), then
FIR-filter and downsample. Several cheaper but exactly equivalent orderings are used where they apply: 1x1 kernels
commute with the depthwise filter; downsampling folds into a strided conv; upsampling folds into a strided transposed
conv; plain symmetric padding goes into the conv itself. The signature is a compatibility contract with NVIDIA pickles.
"""

import numbers

import torch

from . import conv2d_gradfix
from . import upfirdn2d
from .upfirdn2d import _get_filter_size, _parse_padding


def _conv2d_wrapper(x, w, stride=1, padding=0, groups=1, transpose=False, flip_weight=True):
    """Conv (or transposed conv) of `x` with `w`; flip_weight=True means correlation, False true convolution.

    For transpose=True, `w` must already be in transposed layout [I, O / groups, kh, kw]. A transposed conv applies
    its kernel as a true convolution (it scatters), so the flag has the opposite effect there.
    """
    if not flip_weight:
        w = w.flip([2, 3])
    if transpose:
        return conv2d_gradfix.conv_transpose2d(input=x, weight=w, stride=stride, padding=padding, groups=groups)
    return conv2d_gradfix.conv2d(input=x, weight=w, stride=stride, padding=padding, groups=groups)


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")


def _check_args(x, w, f, up, down, groups):
    """Validate the tensor arguments and the integer factors of `conv2d_resample`."""
    for name, value in (('x', x), ('w', w)):
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise TypeError(f"{name} must be a floating-point torch.Tensor, got "
                            + (str(value.dtype) if isinstance(value, torch.Tensor) else type(value).__name__))
        if value.ndim != 4:
            raise ValueError(f"{name} must be 4-D, got shape {list(value.shape)}")
    if w.dtype != x.dtype:
        raise ValueError(f"w must have the dtype of x ({x.dtype}), got {w.dtype}")
    if f is not None and (not isinstance(f, torch.Tensor) or f.ndim not in (1, 2) or f.dtype != torch.float32):
        raise ValueError("f must be None or a 1-D/2-D float32 tensor (see upfirdn2d.setup_filter), got "
                         + (f"shape {list(f.shape)}, dtype {f.dtype}" if isinstance(f, torch.Tensor)
                            else type(f).__name__))
    _check_int('up', up, 1)
    _check_int('down', down, 1)
    _check_int('groups', groups, 1)
    if w.shape[0] % groups != 0 or x.shape[1] != w.shape[1] * groups:
        raise ValueError(f"w must be [O, I / groups, kh, kw] with O divisible by groups={groups} and I = "
                         f"x.shape[1] = {x.shape[1]}, got w of shape {list(w.shape)}")


def _check_output_size(x, w, filter_size, up, down, pad, padding):
    """Raise ValueError if any stage of the general formulation would produce an empty image."""
    for axis, (in_size, k, ft, p0, p1) in enumerate([(x.shape[3], w.shape[3], filter_size[0], pad[0], pad[1]),
                                                     (x.shape[2], w.shape[2], filter_size[1], pad[2], pad[3])]):
        size = in_size * up + p0 + p1 - (ft - 1 if up > 1 else 0)  # after upsampling, padding and filtering
        size -= k - 1  # after the valid conv
        if down > 1:
            size = (size - (ft - 1) + (down - 1)) // down if size >= ft else 0
        if size < 1:
            raise ValueError(f"conv2d_resample output would be empty along {'xy'[axis]} for x of shape "
                             f"{list(x.shape)}, w of shape {list(w.shape)}, up={up}, down={down}, padding={padding!r}")


def _transposed_weight(w, groups):
    """Rearrange a conv weight [O, I / g, kh, kw] into the conv_transpose2d layout [I, O / g, kh, kw]."""
    out_channels, in_per_group, kh, kw = w.shape
    w = w.reshape(groups, out_channels // groups, in_per_group, kh, kw)
    w = w.transpose(1, 2)
    return w.reshape(groups * in_per_group, out_channels // groups, kh, kw)


def conv2d_resample(x, w, f=None, up=1, down=1, padding=0, groups=1, flip_weight=True, flip_filter=False):
    """Convolve `x` [N, I, H, W] with `w` [O, I / groups, kh, kw], with optional FIR upsampling and downsampling.

    `f` is the resampling filter (see upfirdn2d.setup_filter; None = no filtering) and `up`/`down` integer factors.
    `padding` (int, [px, py] or [x0, x1, y0, y1]) is applied once, to the upsampled image. flip_weight=True computes
    a correlation like F.conv2d, False a true convolution. Returns [N, O, H', W'].
    """
    _check_args(x, w, f, up, down, groups)
    kh, kw = w.shape[2], w.shape[3]
    fw, fh = _get_filter_size(f)
    px0, px1, py0, py1 = _parse_padding(padding)

    # Extra padding that keeps the resampling filters centred, as in upfirdn2d.upsample2d / downsample2d.
    if up > 1:
        px0, px1 = px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2
        py0, py1 = py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2
    if down > 1:
        px0, px1 = px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2
        py0, py1 = py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2
    pad = [px0, px1, py0, py1]
    _check_output_size(x, w, (fw, fh), up, down, pad, padding)

    # 1x1 kernel: the channel mix commutes with the depthwise filter, so run it at the lower resolution.
    if kw == 1 and kh == 1 and down > 1 and up == 1:
        x = upfirdn2d.upfirdn2d(x=x, f=f, down=down, padding=pad, flip_filter=flip_filter)
        return _conv2d_wrapper(x=x, w=w, groups=groups, flip_weight=flip_weight)
    if kw == 1 and kh == 1 and up > 1 and down == 1:
        x = _conv2d_wrapper(x=x, w=w, groups=groups, flip_weight=flip_weight)
        return upfirdn2d.upfirdn2d(x=x, f=f, up=up, padding=pad, gain=up ** 2, flip_filter=flip_filter)

    # Downsampling only: filter first, then a strided conv does the conv and the decimation at once.
    if down > 1 and up == 1:
        x = upfirdn2d.upfirdn2d(x=x, f=f, padding=pad, flip_filter=flip_filter)
        return _conv2d_wrapper(x=x, w=w, stride=down, groups=groups, flip_weight=flip_weight)

    if up > 1:
        x = _upsample_conv(x, w, f, up, pad, groups, flip_weight, flip_filter)
        if down > 1:
            x = upfirdn2d.upfirdn2d(x=x, f=f, down=down, flip_filter=flip_filter)
        return x

    # Neither up nor down: symmetric non-negative padding can be left to the conv itself.
    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return _conv2d_wrapper(x=x, w=w, padding=[py0, px0], groups=groups, flip_weight=flip_weight)

    # General case (up == down == 1 with asymmetric or negative padding): pad/crop, then a valid conv.
    x = upfirdn2d.upfirdn2d(x=x, f=None, padding=pad, flip_filter=flip_filter)
    return _conv2d_wrapper(x=x, w=w, groups=groups, flip_weight=flip_weight)


def _upsample_conv(x, w, f, up, pad, groups, flip_weight, flip_filter):
    """Zero-insert by `up`, pad by `pad`, filter with `f` (gain up^2) and conv with `w`, via a strided transposed conv.

    A transposed conv with stride `up` zero-inserts (without the trailing zeros) and fully convolves with its kernel,
    which extends the image by kw - 1 on each side. Pad/crop afterwards so the result equals the general formulation:
    the left side has already grown by kw - 1, the right side by kw - 1 minus the up - 1 trailing zeros.
    """
    kh, kw = w.shape[2], w.shape[3]
    px0, px1, py0, py1 = pad[0] - (kw - 1), pad[1] - (kw - up), pad[2] - (kh - 1), pad[3] - (kh - up)
    # Let the transposed conv do any crop shared by both sides of an axis; it then computes fewer pixels.
    pxt = max(min(-px0, -px1), 0)
    pyt = max(min(-py0, -py1), 0)
    x = _conv2d_wrapper(x=x, w=_transposed_weight(w, groups), stride=up, padding=[pyt, pxt], groups=groups,
                        transpose=True, flip_weight=not flip_weight)
    return upfirdn2d.upfirdn2d(x=x, f=f, padding=[px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt], gain=up ** 2,
                               flip_filter=flip_filter)
