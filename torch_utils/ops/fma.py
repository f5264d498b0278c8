"""Fused multiply-add `a * b + c` with broadcasting-aware gradients, the `fma` op of StyleGAN2-ADA (Karras et al. 2020).

StyleGAN2's modulated convolution uses it to apply demodulation coefficients and add noise in one step. The custom
backward sums each gradient back to its input's (broadcast) shape and is built from differentiable ops, so double
backward works. `fma(a, b, c)` is a compatibility contract with NVIDIA network pickles.
"""

import torch


def fma(a, b, c):
    """Return a * b + c (computed with `torch.addcmul`); a, b and c broadcast against each other."""
    for name, value in (('a', a), ('b', b), ('c', c)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return _FusedMultiplyAdd.apply(a, b, c)


class _FusedMultiplyAdd(torch.autograd.Function):
    """a * b + c with gradients reduced to the input shapes."""

    @staticmethod
    def forward(ctx, a, b, c):
        out = torch.addcmul(c, a, b)
        ctx.save_for_backward(a, b)
        ctx.c_shape = c.shape
        return out

    @staticmethod
    def backward(ctx, grad_out):
        a, b = ctx.saved_tensors
        grad_a = grad_b = grad_c = None
        if ctx.needs_input_grad[0]:
            grad_a = _unbroadcast(grad_out * b, a.shape)
        if ctx.needs_input_grad[1]:
            grad_b = _unbroadcast(grad_out * a, b.shape)
        if ctx.needs_input_grad[2]:
            grad_c = _unbroadcast(grad_out, ctx.c_shape)
        return grad_a, grad_b, grad_c


def _unbroadcast(x, shape):
    """Sum `x` over the axes that broadcasting added or expanded, so the result has `shape`."""
    extra = x.ndim - len(shape)
    assert extra >= 0
    # Axes that did not exist in `shape` (leading) or had size 1 there were broadcast.
    dims = [i for i in range(x.ndim) if i < extra or (shape[i - extra] == 1 and x.shape[i] != 1)]
    if dims:
        x = x.sum(dim=dims, keepdim=True)
    # Only size-1 axes remain to drop, so a reshape is exact.
    return x.reshape(shape)
