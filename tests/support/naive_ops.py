"""Naive formulations of the torch_utils ops, shared by the op tests as their oracle.

Written for clarity, not speed, and independently of torch_utils: explicit zero insertion by index assignment,
placement on a zero canvas (which also crops), a Python loop over the 2-D filter taps, and slicing. This directory
is on pytest's `pythonpath` (pyproject.toml), so tests `import naive_ops`.
"""

import torch


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def as_2d_filter(f):
    """None -> 1x1 identity, 1-D taps -> their outer product (separable), 2-D -> unchanged."""
    if f is None:
        return torch.ones(1, 1)
    return torch.outer(f, f) if f.ndim == 1 else f


def naive_upfirdn2d(x, f, up=1, down=1, pad=(0, 0, 0, 0), gain=1.0, flip_filter=False):
    """Zero-insert by `up`, pad/crop by pad=(x0, x1, y0, y1), convolve with `f` (correlate if flip_filter), decimate.

    `f` is None, 1-D (separable) or 2-D; `up` / `down` are ints or (x, y) pairs; `gain` scales the result.
    """
    (upx, upy), (downx, downy), (px0, px1, py0, py1) = _pair(up), _pair(down), pad
    n, c, h, w = x.shape
    z = x.new_zeros(n, c, h * upy, w * upx)
    z[:, :, ::upy, ::upx] = x
    canvas = x.new_zeros(n, c, h * upy + py0 + py1, w * upx + px0 + px1)
    ys = range(max(0, -py0), min(z.shape[2], canvas.shape[2] - py0))
    xs = range(max(0, -px0), min(z.shape[3], canvas.shape[3] - px0))
    canvas[:, :, ys.start + py0: ys.stop + py0, xs.start + px0: xs.stop + px0] = \
        z[:, :, ys.start: ys.stop, xs.start: xs.stop]
    # True convolution == correlation with the filter rotated by 180 degrees.
    k = as_2d_filter(f).to(x.dtype)
    k = k if flip_filter else k.flip([0, 1])
    fh, fw = k.shape
    out_h, out_w = canvas.shape[2] - fh + 1, canvas.shape[3] - fw + 1
    out = x.new_zeros(n, c, out_h, out_w)
    for a in range(fh):
        for b in range(fw):
            out = out + k[a, b] * canvas[:, :, a: a + out_h, b: b + out_w]
    return (out * gain)[:, :, ::downy, ::downx]
