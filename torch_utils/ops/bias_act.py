"""Fused bias + activation + gain + clamp, the `bias_act` op of StyleGAN2-ADA / StyleGAN3 (Karras et al. 2020, 2021).

Every layer of the StyleGAN generator and discriminator ends in `bias_act`. This module holds the pure-PyTorch
reference path, which runs on any device and supports gradients of any order through plain autograd. The names,
signatures and the `activation_funcs` table are a compatibility contract with NVIDIA network pickles, whose stored
source reads e.g. `activation_funcs['lrelu'].def_gain`.
"""

import numbers

import numpy as np
import torch
import torch.nn.functional as F

import dnnlib

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
    # Fast path hook: a fused CUDA kernel (later issue) is dispatched here when impl == 'cuda' and x is on a GPU.
    # Until it exists, every call takes the reference path.
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
