"""Upsample, pad, FIR-filter and downsample 2-D images: the `upfirdn2d` op of StyleGAN2-ADA / StyleGAN3.

The resampling filters of StyleGAN2 (Karras et al. 2020) and the alias-free layers of StyleGAN3 (Karras et al. 2021)
are all expressed with this op. This module holds the pure-PyTorch reference path (runs on any device, gradients of
any order), the filter constructor `setup_filter` and the convenience wrappers `filter2d`, `upsample2d` and
`downsample2d`. Names, signatures and keyword names are a compatibility contract with NVIDIA network pickles.

The CUDA kernel (upfirdn2d.cu) takes over on CUDA tensors once it has passed its run-time self-check
(checked_plugin.py). Its gradient is upfirdn2d again (up and down swapped, filter flipped), so gradients of any order
work; a filter that requires grad keeps the reference path.
"""

import collections
import numbers

import torch
import torch.nn.functional as F

from . import checked_plugin
from . import conv2d_gradfix

_VALID_IMPLS = ('ref', 'cuda')


def _check_impl(impl):
    """Raise ValueError unless `impl` is one of the supported implementation names."""
    if impl not in _VALID_IMPLS:
        raise ValueError(f"impl must be one of {list(_VALID_IMPLS)}, got {impl!r}")


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _parse_scaling(s, name='scaling'):
    """Turn an int or an [sx, sy] pair into (sx, sy); each factor must be an int >= 1."""
    pair = [s, s] if _is_int(s) else s
    if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(_is_int(v) for v in pair):
        raise TypeError(f"{name} must be an int or a pair [sx, sy] of ints, got {s!r}")
    sx, sy = int(pair[0]), int(pair[1])
    if sx < 1 or sy < 1:
        raise ValueError(f"{name} must be >= 1 along each axis, got {s!r}")
    return sx, sy


def _parse_padding(p, name='padding'):
    """Turn an int, [px, py] or [x0, x1, y0, y1] into (px0, px1, py0, py1); negative values mean cropping."""
    if _is_int(p):
        p = [p, p]
    if not isinstance(p, (list, tuple)) or len(p) not in (2, 4) or not all(_is_int(v) for v in p):
        raise TypeError(f"{name} must be an int, [px, py] or [x0, x1, y0, y1] of ints, got {p!r}")
    if len(p) == 2:
        p = [p[0], p[0], p[1], p[1]]
    px0, px1, py0, py1 = (int(v) for v in p)
    return px0, px1, py0, py1


def _check_filter(f, name='f'):
    """Raise unless `f` is None or a float32 tensor with 1 (separable) or 2 dimensions."""
    if f is None:
        return
    if not isinstance(f, torch.Tensor):
        raise TypeError(f"{name} must be None or a torch.Tensor (see setup_filter), got {type(f).__name__}")
    if f.dtype != torch.float32:
        raise TypeError(f"{name} must be float32, got {f.dtype}")
    if f.ndim not in (1, 2) or f.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D or 2-D filter, got shape {list(f.shape)}")


def _get_filter_size(f):
    """Return (fw, fh), the filter's width and height in taps; None counts as a 1x1 identity filter."""
    if f is None:
        return 1, 1
    _check_filter(f)
    fw = int(f.shape[-1])
    fh = int(f.shape[0])
    return fw, fh


def setup_filter(f, device=torch.device('cpu'), normalize=True, flip_filter=False, gain=1, separable=None):
    """Build a float32 FIR filter for `upfirdn2d` from a list / array / tensor of taps and return it on `device`.

    A 1-D filter with fewer than 8 taps becomes the 2-D outer product with itself (unless `separable` says otherwise);
    the taps are normalised to sum 1, optionally flipped, and scaled by gain ** (ndim / 2) so the 2-D gain is `gain`.
    """
    if f is None:
        f = 1
    f = torch.as_tensor(f, dtype=torch.float32)
    if f.ndim == 0:
        f = f[None]
    if f.ndim not in (1, 2) or f.numel() == 0:
        raise ValueError(f"f must be a non-empty scalar, 1-D or 2-D filter, got shape {list(f.shape)}")
    if separable is None:
        # Long 1-D filters are cheaper as two 1-D passes; short ones are cheaper as a single 2-D pass.
        separable = f.ndim == 1 and f.numel() >= 8
    if separable and f.ndim != 1:
        raise ValueError(f"separable=True needs a 1-D filter, got f of shape {list(f.shape)}")
    if f.ndim == 1 and not separable:
        f = f[None, :] * f[:, None]
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)


def _check_upfirdn2d_args(x, f, up, down, padding, gain):
    """Validate the arguments of `upfirdn2d` and return (upx, upy, downx, downy, (px0, px1, py0, py1))."""
    if isinstance(gain, bool) or not isinstance(gain, numbers.Real):
        raise TypeError(f"gain must be a real number, got {gain!r}")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point torch.Tensor, got {type(x).__name__}"
                        + (f" of dtype {x.dtype}" if isinstance(x, torch.Tensor) else ''))
    if x.ndim != 4:
        raise ValueError(f"x must be 4-D [N, C, H, W], got shape {list(x.shape)}")
    _check_filter(f)
    upx, upy = _parse_scaling(up, name='up')
    downx, downy = _parse_scaling(down, name='down')
    pad = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    in_h, in_w = x.shape[2], x.shape[3]
    out_w = (in_w * upx + pad[0] + pad[1] - (fw - 1) + (downx - 1)) // downx
    out_h = (in_h * upy + pad[2] + pad[3] - (fh - 1) + (downy - 1)) // downy
    if out_w < 1 or out_h < 1:
        raise ValueError(f"upfirdn2d output would be empty ({out_h}x{out_w}) for input {in_h}x{in_w}, "
                         f"up={up!r}, down={down!r}, padding={padding!r} and a {fh}x{fw} filter")
    return upx, upy, downx, downy, pad


def upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1, impl='cuda'):
    """Upsample `x` [N, C, H, W] by zero insertion, pad (negative = crop), FIR-filter with `f`, keep every down-th px.

    `f` is None (identity), a 1-D separable filter applied along both axes, or a 2-D filter; it is applied as a true
    convolution, or as a correlation when `flip_filter=True`, with total gain `gain`. Returns [N, C, H', W'] with
    W' = (W * upx + px0 + px1 - (fw - 1) + (downx - 1)) // downx and likewise for H'.
    """
    _check_impl(impl)
    upx, upy, downx, downy, pad = _check_upfirdn2d_args(x, f, up, down, padding, gain)
    plugin = _plugin.get(x.device) if impl == 'cuda' and not (f is not None and f.requires_grad) else None
    if plugin is not None:
        return _upfirdn2d_cuda(x, f, (upx, upy), (downx, downy), pad, flip_filter, gain, plugin=plugin)
    if impl == 'cuda' and fast_conv and _fast_conv_applies(f, (upx, upy), (downx, downy)):
        return _upfirdn2d_conv(x, f, (upx, upy), (downx, downy), pad, flip_filter, gain)
    return _upfirdn2d_ref(x, f, up=(upx, upy), down=(downx, downy), padding=pad, flip_filter=flip_filter, gain=gain)


def _upfirdn2d_ref(x, f, up, down, padding, flip_filter=False, gain=1):
    """Reference `upfirdn2d` with parsed arguments (up/down as (sx, sy), padding as 4 ints), built from PyTorch ops."""
    upx, upy = up
    downx, downy = down
    px0, px1, py0, py1 = padding
    batch_size, num_channels, in_h, in_w = x.shape
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)

    # Zero insertion: give every pixel a trailing block of (up - 1) zeros along each axis.
    x = x.reshape([batch_size, num_channels, in_h, 1, in_w, 1])
    x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
    x = x.reshape([batch_size, num_channels, in_h * upy, in_w * upx])

    # Pad first and crop second, so that a crop larger than the image on one side can be offset by padding.
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0): x.shape[2] - max(-py1, 0), max(-px0, 0): x.shape[3] - max(-px1, 0)]

    # F.conv2d computes a correlation, so a true convolution needs the flipped filter.
    f = f.to(device=x.device, dtype=x.dtype) * (gain ** (f.ndim / 2))
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))

    # Depthwise filtering: the same filter for every channel; a 1-D filter runs once along each axis.
    f = f[None, None].repeat([num_channels, 1] + [1] * f.ndim)
    if f.ndim == 4:
        x = conv2d_gradfix.conv2d(input=x, weight=f, groups=num_channels)
    else:
        x = conv2d_gradfix.conv2d(input=x, weight=f.unsqueeze(2), groups=num_channels)  # along W
        x = conv2d_gradfix.conv2d(input=x, weight=f.unsqueeze(3), groups=num_channels)  # along H

    # Decimation keeps pixels 0, down, 2 * down, ...
    return x[:, :, ::downy, ::downx]


# Fast path without a plugin (the CPU): one strided depthwise conv (down) or transposed conv (up) and one pad, instead
# of zero insertion, a full-resolution conv and a strided slice. 1.0x-4x fewer multiply-adds, fewer and cheaper
# autograd nodes; the same result up to float rounding (tests compare it with _upfirdn2d_ref).

fast_conv = True  # False = the reference path everywhere (tests; timing the old path).

# Few channels (<= fold_batch_max_channels): the batch joins the depthwise conv's groups ([N, C, H, W] as
# [1, N * C, H, W]). PyTorch's CPU conv runs a 1-3 channel grouped conv on a slow generic path, 2-10x slower than
# the depthwise kernel it picks for N * C groups (ADA's 12-tap warp filters on grey or RGB images, G's image skips).
# From ~16 channels on, the plain grouped conv is as fast or faster (and keeps channels_last without a copy).
fold_batch = True
fold_batch_max_channels = 8


def _fast_conv_applies(f, up, down) -> bool:
    return (f is None or not f.requires_grad) and (up == (1, 1) or down == (1, 1))


def _upfirdn2d_conv(x, f, up, down, padding, flip_filter=False, gain=1):
    """`upfirdn2d` with parsed arguments, up or down (not both), as F.conv2d / F.conv_transpose2d with groups."""
    (upx, upy), (downx, downy), (px0, px1, py0, py1) = up, down, padding
    batch_size, num_channels = x.shape[0], x.shape[1]
    if fold_batch and num_channels <= fold_batch_max_channels and batch_size > 1:
        x = x.reshape(1, batch_size * num_channels, x.shape[2], x.shape[3])
        y = _upfirdn2d_conv(x, f, up, down, padding, flip_filter, gain)
        return y.reshape(batch_size, num_channels, y.shape[2], y.shape[3])
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    f = f.to(device=x.device, dtype=x.dtype) * (gain ** (f.ndim / 2))
    if f.ndim == 1:  # A separable filter is applied along W, then along H: the 2-D filter is their outer product.
        f = f[None, :] * f[:, None]
    fh, fw = f.shape
    if up != (1, 1):
        # conv_transpose2d zero-inserts without the trailing (up - 1) zeros, pads by taps - 1 and correlates with the
        # flipped kernel, i.e. it convolves with its kernel; crop or pad its output to the requested padding.
        weight = (f if not flip_filter else f.flip([0, 1]))[None, None].expand(num_channels, 1, fh, fw)
        x = F.conv_transpose2d(x, weight.contiguous(), stride=(upy, upx), groups=num_channels)
        return F.pad(x, [px0 - (fw - 1), px1 + upx - 1 - (fw - 1), py0 - (fh - 1), py1 + upy - 1 - (fh - 1)])
    weight = (f.flip([0, 1]) if not flip_filter else f)[None, None].expand(num_channels, 1, fh, fw)
    conv_padding = 0
    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        conv_padding = (py0, px0)
    else:
        x = F.pad(x, [px0, px1, py0, py1])
    # A strided conv keeps outputs 0, down, 2 * down, ...; its output size rounds as the reference's slice does.
    return F.conv2d(x, weight.contiguous(), stride=(downy, downx), padding=conv_padding, groups=num_channels)


# CUDA path: the kernel correlates with g (the filter, flipped unless flip_filter, times the gain) in one pass for a
# 2-D filter, or in two 1-D passes (along W, then H) for a separable one.

_Geometry = collections.namedtuple('_Geometry', 'plugin upx upy downx downy px0 px1 py0 py1')


def _upfirdn2d_cuda(x, f, up, down, padding, flip_filter=False, gain=1, *, plugin):
    """`upfirdn2d` with parsed arguments through the plugin; differentiable to any order in x."""
    (upx, upy), (downx, downy), (px0, px1, py0, py1) = up, down, padding
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32)
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32  # The kernel's arithmetic type.
    g = f.to(device=x.device, dtype=acc) * (gain ** (f.ndim / 2))
    if not flip_filter:
        g = g.flip(list(range(g.ndim)))
    if g.ndim == 1:
        x = _Upfirdn2dCuda.apply(x, g[None, :], _Geometry(plugin, upx, 1, downx, 1, px0, px1, 0, 0))
        return _Upfirdn2dCuda.apply(x, g[:, None], _Geometry(plugin, 1, upy, 1, downy, 0, 0, py0, py1))
    return _Upfirdn2dCuda.apply(x, g, _Geometry(plugin, upx, upy, downx, downy, px0, px1, py0, py1))


def _output_size(in_size, up, down, p0, p1, taps):
    return (in_size * up + p0 + p1 - (taps - 1) + (down - 1)) // down


class _Upfirdn2dCuda(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, g, geom):
        fh, fw = g.shape
        out_h = _output_size(x.shape[2], geom.upy, geom.downy, geom.py0, geom.py1, fh)
        out_w = _output_size(x.shape[3], geom.upx, geom.downx, geom.px0, geom.px1, fw)
        ctx.geom, ctx.in_hw = geom, (x.shape[2], x.shape[3])
        ctx.save_for_backward(g)
        return geom.plugin.upfirdn2d(x, g, geom.upx, geom.upy, geom.downx, geom.downy, geom.px0, geom.py0,
                                     out_h, out_w)

    @staticmethod
    def backward(ctx, dy):
        # dx[i] = sum_o dy[o] g[i * up + p0 - o * down]: upfirdn2d of dy with up and down swapped, the flipped
        # filter, p0' = taps - 1 - p0, and p1' chosen so that the output has the input's size.
        (g,), geom, (in_h, in_w) = ctx.saved_tensors, ctx.geom, ctx.in_hw
        fh, fw = g.shape
        out_h, out_w = dy.shape[2], dy.shape[3]
        px0, py0 = fw - 1 - geom.px0, fh - 1 - geom.py0
        px1 = in_w * geom.upx - out_w * geom.downx + geom.px0 - geom.upx + 1
        py1 = in_h * geom.upy - out_h * geom.downy + geom.py0 - geom.upy + 1
        back = _Geometry(geom.plugin, geom.downx, geom.downy, geom.upx, geom.upy, px0, px1, py0, py1)
        return _Upfirdn2dCuda.apply(dy, g.flip([0, 1]), back), None, None


def _self_check(plugin, device, comparison):
    """Plugin vs reference on small cases (up / down / pad / crop / flip / gain, 2-D and separable, square and
    non-square filters): forward in float64, float32 and float16, gradient in float64 and float32, second order
    (the gradient's gradient in dy, as R1 takes it) in float64 (see checked_plugin for the tolerance)."""
    gen = torch.Generator().manual_seed(4321)
    cases = [  # (filter, up, down, padding, flip_filter, gain)
        (setup_filter([1, 3, 3, 1]), (2, 2), (1, 1), (2, 1, 2, 1), False, 4),
        (setup_filter([1, 3, 3, 1]), (1, 1), (2, 2), (1, 1, 1, 1), True, 1),
        (setup_filter(torch.rand([8], generator=gen) + 0.1), (2, 2), (1, 1), (4, 3, 4, 3), False, 4),
        (torch.randn([3, 5], generator=gen), (2, 1), (1, 3), (1, -1, 2, 0), True, 0.5),
        (None, (3, 2), (2, 3), (0, 1, -1, 2), False, 2),
    ]
    x0 = torch.randn([2, 3, 7, 6], generator=gen, dtype=torch.float64)
    for dtype in (torch.float64, torch.float32, torch.float16):
        x = x0.to(dtype).to(device)
        x64 = x.double().requires_grad_()
        for i, (f, up, down, pad, flip, gain) in enumerate(cases):
            fd = None if f is None else f.to(device)
            case = f'{dtype} case {i} (f {None if f is None else list(f.shape)}, up {up}, down {down}, pad {pad})'
            xk = x.detach().requires_grad_()
            y = _upfirdn2d_cuda(xk, fd, up, down, pad, flip, gain, plugin=plugin)
            y_ref = _upfirdn2d_ref(x64, fd, up, down, pad, flip, gain)
            comparison.check(f'{case} forward', y, y_ref, dtype)
            if dtype == torch.float16:
                continue
            dy = torch.randn(y_ref.shape, generator=gen, dtype=torch.float64).to(dtype).to(device)
            dyk, dy64 = dy.detach().requires_grad_(), dy.double().requires_grad_()
            (gx,) = torch.autograd.grad(y, [xk], dyk, create_graph=True)
            (gx_ref,) = torch.autograd.grad(y_ref, [x64], dy64, create_graph=True)
            comparison.check(f'{case} grad x', gx, gx_ref, dtype)
            if dtype == torch.float64:
                w = torch.randn(x.shape, generator=gen, dtype=torch.float64).to(device)
                (ggy,) = torch.autograd.grad((gx * w).sum(), [dyk])
                (ggy_ref,) = torch.autograd.grad((gx_ref * w).sum(), [dy64])
                comparison.check(f'{case} 2nd-order grad dy', ggy, ggy_ref, dtype)


_plugin = checked_plugin.CheckedPlugin('upfirdn2d_plugin', sources=['upfirdn2d.cpp', 'upfirdn2d.cu'],
                                       headers=['upfirdn2d.h', 'upfirdn2d_kernel.h'], self_check=_self_check)


def filter2d(x, f, padding=0, flip_filter=False, gain=1, impl='cuda'):
    """Filter `x` [N, C, H, W] with `f`, padded so the output has the input's size (plus any extra `padding`)."""
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    pad = [px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=pad, flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(x, f, up=2, padding=0, flip_filter=False, gain=1, impl='cuda'):
    """Upsample `x` [N, C, H, W] by `up` with interpolation filter `f`; returns [N, C, H * upy, W * upx].

    The gain is multiplied by upx * upy to make up for the inserted zeros, so a constant image stays constant.
    """
    upx, upy = _parse_scaling(up, name='up')
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    pad = [px0 + (fw + upx - 1) // 2, px1 + (fw - upx) // 2, py0 + (fh + upy - 1) // 2, py1 + (fh - upy) // 2]
    return upfirdn2d(x, f, up=up, padding=pad, flip_filter=flip_filter, gain=gain * upx * upy, impl=impl)


def downsample2d(x, f, down=2, padding=0, flip_filter=False, gain=1, impl='cuda'):
    """Downsample `x` [N, C, H, W] by `down` with anti-aliasing filter `f`; returns [N, C, H // downy, W // downx]."""
    downx, downy = _parse_scaling(down, name='down')
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    pad = [px0 + (fw - downx + 1) // 2, px1 + (fw - downx) // 2, py0 + (fh - downy + 1) // 2, py1 + (fh - downy) // 2]
    return upfirdn2d(x, f, down=down, padding=pad, flip_filter=flip_filter, gain=gain, impl=impl)
