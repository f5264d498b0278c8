"""Fused bias + activation + gain + clamp, the `bias_act` op of StyleGAN2-ADA / StyleGAN3 (Karras et al. 2020, 2021).

Every layer of the StyleGAN generator and discriminator ends in `bias_act`. This module holds the pure-PyTorch
reference path, which runs on any device and supports gradients of any order through plain autograd. The names,
signatures and the `activation_funcs` table are a compatibility contract with NVIDIA network pickles, whose stored
source reads e.g. `activation_funcs['lrelu'].def_gain`.

The fused CUDA kernel (bias_act.cu, one elementwise pass) takes over on CUDA tensors once it has passed its run-time
self-check (checked_plugin.py); it provides first- and second-order gradients (R1, path length), and asking it for a
third order raises.
"""

import collections
import numbers

import numpy as np
import torch
import torch.nn.functional as F

import dnnlib

from . import checked_plugin

_VALID_IMPLS = ('ref', 'cuda')


# Activation functions. Each takes (x, alpha); alpha is only meaningful for lrelu.

def _linear(x, alpha):
    return x


def _relu(x, alpha):
    return F.relu(x)


def _lrelu(x, alpha):
    return F.leaky_relu(x, alpha)


def _tanh(x, alpha):
    return torch.tanh(x)


def _sigmoid(x, alpha):
    return torch.sigmoid(x)


def _elu(x, alpha):
    return F.elu(x)


def _selu(x, alpha):
    return F.selu(x)


def _softplus(x, alpha):
    return F.softplus(x)


def _swish(x, alpha):
    return x * torch.sigmoid(x)


def _spec(func, def_alpha, def_gain, cuda_idx, ref, has_2nd_grad):
    # `ref` names the tensor the CUDA kernel keeps for its gradient ('x' = input, 'y' = output, '' = none) and
    # `cuda_idx` the kernel's activation index; both are kept for the later CUDA path and for pickle compatibility.
    return dnnlib.EasyDict(func=func, def_alpha=float(def_alpha), def_gain=float(def_gain), cuda_idx=cuda_idx,
                           ref=ref, has_2nd_grad=has_2nd_grad)


# Default gains: sqrt(2) for the rectifiers and swish preserves the signal's second moment (He et al. 2015).
activation_funcs = {
    'linear':   _spec(_linear,   0,   1,          1, '',  False),
    'relu':     _spec(_relu,     0,   np.sqrt(2), 2, 'y', False),
    'lrelu':    _spec(_lrelu,    0.2, np.sqrt(2), 3, 'y', False),
    'tanh':     _spec(_tanh,     0,   1,          4, 'y', True),
    'sigmoid':  _spec(_sigmoid,  0,   1,          5, 'y', True),
    'elu':      _spec(_elu,      0,   1,          6, 'y', True),
    'selu':     _spec(_selu,     0,   1,          7, 'y', True),
    'softplus': _spec(_softplus, 0,   1,          8, 'y', True),
    'swish':    _spec(_swish,    0,   np.sqrt(2), 9, 'x', True),
}


def _check_impl(impl):
    """Raise ValueError unless `impl` is one of the supported implementation names."""
    if impl not in _VALID_IMPLS:
        raise ValueError(f"impl must be one of {list(_VALID_IMPLS)}, got {impl!r}")


def _check_real(name, value, allow_none=True):
    """Raise TypeError unless `value` is a real number (or None when allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        expected = 'a real number or None' if allow_none else 'a real number'
        raise TypeError(f"{name} must be {expected}, got {value!r}")


def _check_args(x, b, dim, act, alpha, gain, clamp):
    """Validate the user-facing arguments of `bias_act`; raise TypeError/ValueError naming the culprit."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point torch.Tensor, got {type(x).__name__}"
                        + (f" of dtype {x.dtype}" if isinstance(x, torch.Tensor) else ''))
    if act not in activation_funcs:
        raise ValueError(f"act must be one of {sorted(activation_funcs)}, got {act!r}")
    for name, value in (('alpha', alpha), ('gain', gain), ('clamp', clamp)):
        _check_real(name, value)
    if b is None:
        return
    if not isinstance(b, torch.Tensor):
        raise TypeError(f"b must be a torch.Tensor or None, got {type(b).__name__}")
    if isinstance(dim, bool) or not isinstance(dim, int) or not 0 <= dim < x.ndim:
        raise ValueError(f"dim must be an int in [0, {x.ndim}) for x of shape {list(x.shape)}, got {dim!r}")
    if b.ndim != 1 or b.shape[0] != x.shape[dim]:
        raise ValueError(f"b must be 1-D of length x.shape[{dim}] = {x.shape[dim]}, got shape {list(b.shape)}")
    if b.dtype != x.dtype:
        raise ValueError(f"b must have the dtype of x ({x.dtype}), got {b.dtype}")


def bias_act(x, b=None, dim=1, act='linear', alpha=None, gain=None, clamp=None, impl='cuda'):
    """Return clamp(act(x + b, alpha) * gain, -clamp, clamp), with `b` broadcast along axis `dim` of `x`.

    `alpha` and `gain` default to the activation's `def_alpha` / `def_gain`; `clamp=None` or a negative clamp means no
    clamping. `impl` is 'cuda' (use a fused kernel where one is available) or 'ref' (always the reference path).
    """
    _check_impl(impl)
    _check_args(x, b, dim, act, alpha, gain, clamp)
    plugin = _plugin.get(x.device) if impl == 'cuda' else None
    if plugin is not None:
        return _bias_act_cuda(x, b=b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp, plugin=plugin)
    return _bias_act_ref(x, b=b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)


def _bias_act_ref(x, b=None, dim=1, act='linear', alpha=None, gain=None, clamp=None):
    """Reference `bias_act` built from standard PyTorch ops; differentiable to any order through autograd."""
    spec = activation_funcs[act]
    alpha = float(alpha if alpha is not None else spec.def_alpha)
    gain = float(gain if gain is not None else spec.def_gain)
    clamp = float(clamp if clamp is not None else -1)

    if b is not None:
        # Reshape b to [1, ..., C, ..., 1] so it broadcasts along `dim` only.
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    x = spec.func(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


# CUDA path. The kernel's three modes (bias_act.h): 0 forward, 1 first-order gradient, 2 second-order gradient.

_CudaConfig = collections.namedtuple('_CudaConfig', 'plugin dim act alpha gain clamp ref_is_y has_2nd_grad')


def _bias_act_cuda(x, b, dim, act, alpha=None, gain=None, clamp=None, *, plugin):
    """`bias_act` through the plugin; gradients of first and second order through the autograd functions below."""
    spec = activation_funcs[act]
    alpha = float(alpha if alpha is not None else spec.def_alpha)
    gain = float(gain if gain is not None else spec.def_gain)
    clamp = float(clamp if clamp is not None else -1)
    if act == 'linear' and b is None and gain == 1 and clamp < 0:
        return x  # Identity, as in the reference path.
    # Linear, ReLU and leaky ReLU have a piecewise-constant slope that the output's sign tells (when gain > 0 and
    # alpha >= 0), so their backward keeps y, which the next layer keeps anyway, instead of x.
    ref_is_y = spec.cuda_idx in (1, 2, 3) and gain > 0 and (act != 'lrelu' or alpha >= 0)
    cfg = _CudaConfig(plugin, dim, spec.cuda_idx, alpha, gain, clamp, ref_is_y, spec.has_2nd_grad)
    return _BiasActCuda.apply(x, b, cfg)


def _empty_like(x):
    return torch.empty([0], dtype=x.dtype, device=x.device)


def _run(cfg, mode, x, b, g1=None, g2=None, ref_is_y=False):
    e = _empty_like(x)
    return cfg.plugin.bias_act(x, e if b is None else b, e if g1 is None else g1, e if g2 is None else g2, mode,
                               cfg.dim, cfg.act, cfg.alpha, cfg.gain, cfg.clamp, ref_is_y)


def _sum_except(t, dim):
    return t.sum([i for i in range(t.ndim) if i != dim])


class _BiasActCuda(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, cfg):
        y = _run(cfg, 0, x, b)
        ctx.cfg = cfg
        ctx.save_for_backward(y if cfg.ref_is_y else x, b)
        return y

    @staticmethod
    def backward(ctx, dy):
        ref, b = ctx.saved_tensors
        dx = _BiasActCudaGrad.apply(dy, ref, b, ctx.cfg)
        db = _sum_except(dx, ctx.cfg.dim) if b is not None and ctx.needs_input_grad[1] else None
        return dx, db, None


class _BiasActCudaGrad(torch.autograd.Function):
    """dx = dy * gain * act'(x + b) * clamp mask; linear in dy, so its own gradient in dy is itself again."""

    @staticmethod
    def forward(ctx, dy, ref, b, cfg):
        ctx.cfg = cfg
        ctx.save_for_backward(dy, ref, b)
        return _run(cfg, 1, ref, b, g1=dy, ref_is_y=cfg.ref_is_y)

    @staticmethod
    def backward(ctx, d_dx):
        dy, ref, b = ctx.saved_tensors
        cfg = ctx.cfg
        d_dy = _BiasActCudaGrad.apply(d_dx, ref, b, cfg)
        d_x = d_b = None
        if cfg.has_2nd_grad and (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]):  # ref is x here.
            d_x = _BiasActCudaGrad2.apply(d_dx, dy, ref, b, cfg)
            d_b = _sum_except(d_x, cfg.dim) if b is not None and ctx.needs_input_grad[2] else None
        return d_dy, d_x, d_b, None


class _BiasActCudaGrad2(torch.autograd.Function):
    """d_x = d_dx * dy * gain * act''(x + b) * clamp mask: the second-order term; no third order."""

    @staticmethod
    def forward(ctx, d_dx, dy, x, b, cfg):
        return _run(cfg, 2, x, b, g1=dy, g2=d_dx)

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("bias_act(impl='cuda') provides gradients up to second order; use impl='ref' for a "
                           "third-order gradient")


def _self_check(plugin, device, comparison):
    """Plugin vs reference on a small case for every activation, with default and with explicit alpha / gain /
    clamp: forward in float64, float32 and float16, first-order gradients of x and b in float64 and float32,
    second-order gradients in float64 (see checked_plugin for the tolerance)."""
    gen = torch.Generator().manual_seed(1234)
    x0, b0, dy0, w0 = (torch.randn(shape, generator=gen, dtype=torch.float64) * 2
                       for shape in ([2, 5, 3, 4], [5], [2, 5, 3, 4], [2, 5, 3, 4]))
    for dtype in (torch.float64, torch.float32, torch.float16):
        x, b, dy, w = (t.to(dtype).to(device) for t in (x0, b0, dy0, w0))
        x64, b64, dy64, w64 = (t.double().requires_grad_() for t in (x, b, dy, w))
        for act in activation_funcs:
            for kwargs in (dict(), dict(alpha=0.3, gain=0.7, clamp=1.0)):
                case = f'{dtype} {act} {kwargs}'
                xk, bk, dyk = (t.detach().requires_grad_() for t in (x, b, dy))
                y = _bias_act_cuda(xk, bk, 1, act, plugin=plugin, **kwargs)
                y_ref = _bias_act_ref(x64, b64, dim=1, act=act, **kwargs)
                comparison.check(f'{case} forward', y, y_ref, dtype)
                if dtype == torch.float16:
                    continue
                gx, gb = torch.autograd.grad(y, [xk, bk], dyk, create_graph=True)
                gx_ref, gb_ref = torch.autograd.grad(y_ref, [x64, b64], dy64, create_graph=True)
                comparison.check(f'{case} grad x', gx, gx_ref, dtype)
                comparison.check(f'{case} grad b', gb, gb_ref, dtype)
                if dtype != torch.float64:
                    continue
                # Second order, as R1 / path length take it: d/d(x, b, dy) of sum(w * dL/dx).
                got = torch.autograd.grad((gx * w).sum(), [xk, bk, dyk], allow_unused=True)
                want = torch.autograd.grad((gx_ref * w64).sum(), [x64, b64, dy64], allow_unused=True)
                for name, inp, g, g_ref in zip(['x', 'b', 'dy'], [x64, b64, dy64], got, want):
                    zero = torch.zeros_like(inp)  # Autograd returns None for a gradient that is zero by structure.
                    comparison.check(f'{case} 2nd-order grad {name}', zero if g is None else g,
                                     zero if g_ref is None else g_ref, dtype)


_plugin = checked_plugin.CheckedPlugin('bias_act_plugin', sources=['bias_act.cpp', 'bias_act.cu'],
                                       headers=['bias_act.h', 'bias_act_kernel.h'], self_check=_self_check)
