"""Tests for torch_utils.ops.bias_act: the activation table, values against closed-form formulas, errors, gradients."""

import math

import numpy as np
import pytest
import torch

from torch_utils.ops import bias_act as ba

SQRT2 = float(np.sqrt(2))
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946

# Independent closed-form activations, in float64: name -> f(x, alpha).
FORMULAS = {
    'linear': lambda x, a: x,
    'relu': lambda x, a: torch.where(x > 0, x, torch.zeros_like(x)),
    'lrelu': lambda x, a: torch.where(x >= 0, x, a * x),
    'tanh': lambda x, a: (torch.exp(2 * x) - 1) / (torch.exp(2 * x) + 1),
    'sigmoid': lambda x, a: 1 / (1 + torch.exp(-x)),
    'elu': lambda x, a: torch.where(x > 0, x, torch.exp(x) - 1),
    'selu': lambda x, a: SELU_SCALE * torch.where(x > 0, x, SELU_ALPHA * (torch.exp(x) - 1)),
    'softplus': lambda x, a: torch.log(1 + torch.exp(x)),
    'swish': lambda x, a: x / (1 + torch.exp(-x)),
}


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _away_from_kinks(shape, seed, kinks=(0.0,), margin=1e-2):
    """Random float64 values at least `margin` away from every kink, so finite differences stay on one side."""
    x = _randn(*shape, seed=seed)
    for k in kinks:
        near = (x - k).abs() < margin
        x = torch.where(near, x + 2 * margin * torch.sign(x - k + 1e-12), x)
    return x


def test_activation_table_matches_spec():
    expected = {
        'linear': (0, 1, 1, '', False), 'relu': (0, SQRT2, 2, 'y', False), 'lrelu': (0.2, SQRT2, 3, 'y', False),
        'tanh': (0, 1, 4, 'y', True), 'sigmoid': (0, 1, 5, 'y', True), 'elu': (0, 1, 6, 'y', True),
        'selu': (0, 1, 7, 'y', True), 'softplus': (0, 1, 8, 'y', True), 'swish': (0, SQRT2, 9, 'x', True),
    }
    assert set(ba.activation_funcs) == set(expected)
    for name, (def_alpha, def_gain, cuda_idx, ref, has_2nd_grad) in expected.items():
        spec = ba.activation_funcs[name]
        assert (spec.def_alpha, spec.def_gain, spec.cuda_idx, spec.ref, spec.has_2nd_grad) == \
               (def_alpha, def_gain, cuda_idx, ref, has_2nd_grad), name
        assert type(spec.def_gain) is float and type(spec.def_alpha) is float
        assert spec['def_gain'] == spec.def_gain  # EasyDict: item and attribute access agree
        x = _randn(5, seed=1)
        torch.testing.assert_close(spec.func(x, spec.def_alpha), FORMULAS[name](x, spec.def_alpha))


@pytest.mark.parametrize('act', sorted(FORMULAS))
def test_defaults_match_formula(act):
    x, b = _randn(2, 3, 4, 5, seed=2), _randn(3, seed=3)
    spec = ba.activation_funcs[act]
    expected = FORMULAS[act](x + b.reshape(1, 3, 1, 1), spec.def_alpha) * spec.def_gain
    torch.testing.assert_close(ba.bias_act(x, b, act=act), expected)
    torch.testing.assert_close(ba.bias_act(x, b, act=act, impl='ref'), expected)


@pytest.mark.parametrize('dim', [0, 2, 3])
def test_bias_broadcasts_along_dim(dim):
    x = _randn(2, 3, 4, 5, seed=4)
    b = _randn(x.shape[dim], seed=5)
    shape = [1, 1, 1, 1]
    shape[dim] = -1
    torch.testing.assert_close(ba.bias_act(x, b, dim=dim), x + b.reshape(shape))


def test_alpha_gain_clamp():
    x, b = _randn(2, 4, 3, 3, seed=6) * 3, _randn(4, seed=7)
    y = x + b.reshape(1, 4, 1, 1)
    expected = (torch.where(y >= 0, y, 0.1 * y) * 2.5).clamp(-1.5, 1.5)
    out = ba.bias_act(x, b, act='lrelu', alpha=0.1, gain=2.5, clamp=1.5)
    torch.testing.assert_close(out, expected)
    assert out.abs().max().item() == 1.5
    # alpha=0 is honoured (not replaced by the default 0.2), and a negative clamp means "no clamp".
    torch.testing.assert_close(ba.bias_act(x, act='lrelu', alpha=0, gain=1, clamp=-1), torch.relu(x))
    torch.testing.assert_close(ba.bias_act(x, clamp=0), torch.zeros_like(x))


def test_no_bias_keeps_shape_and_dtype():
    x = _randn(3, 7, seed=8).float()
    out = ba.bias_act(x, act='relu')
    assert out.shape == (3, 7) and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.relu(x) * math.sqrt(2))


def test_errors():
    x = _randn(2, 3, 4, 4, seed=9)
    with pytest.raises(ValueError, match=r"act must be one of \['elu', 'linear', 'lrelu', 'relu', 'selu', "
                                         r"'sigmoid', 'softplus', 'swish', 'tanh'\], got 'gelu'"):
        ba.bias_act(x, act='gelu')
    with pytest.raises(ValueError, match=r"b must be 1-D of length x.shape\[1\] = 3, got shape \[4\]"):
        ba.bias_act(x, _randn(4, seed=0))
    with pytest.raises(ValueError, match=r"b must be 1-D of length x.shape\[1\] = 3, got shape \[1, 3\]"):
        ba.bias_act(x, _randn(1, 3, seed=0))
    with pytest.raises(ValueError, match=r"dim must be an int in \[0, 4\) for x of shape \[2, 3, 4, 4\], got 4"):
        ba.bias_act(x, _randn(3, seed=0), dim=4)
    with pytest.raises(ValueError, match=r"b must have the dtype of x \(torch.float64\), got torch.float32"):
        ba.bias_act(x, _randn(3, seed=0).float())
    with pytest.raises(ValueError, match=r"impl must be one of \['ref', 'cuda'\], got 'triton'"):
        ba.bias_act(x, impl='triton')
    with pytest.raises(TypeError, match=r"x must be a floating-point torch.Tensor, got Tensor of dtype torch.int64"):
        ba.bias_act(torch.ones(3, dtype=torch.int64))
    with pytest.raises(TypeError, match=r"gain must be a real number or None, got '2'"):
        ba.bias_act(x, gain='2')


@pytest.mark.parametrize('act,clamp', [('linear', None), ('linear', 0.8), ('lrelu', None), ('lrelu', 0.8)])
def test_gradcheck_and_gradgradcheck(act, clamp):
    gain = ba.activation_funcs[act].def_gain
    # Keep x + b away from the lrelu kink at 0 and from the clamp boundaries at +-clamp / gain.
    kinks = (0.0,) if clamp is None else (0.0, clamp / gain, -clamp / gain)
    y = _away_from_kinks((2, 3, 3, 3), seed=10, kinks=kinks)
    b = _randn(3, seed=11).requires_grad_()
    x = (y - b.detach().reshape(1, 3, 1, 1)).requires_grad_()
    fn = lambda x, b: ba.bias_act(x, b, act=act, clamp=clamp)  # noqa: E731
    assert torch.autograd.gradcheck(fn, [x, b])
    assert torch.autograd.gradgradcheck(fn, [x, b])


@pytest.mark.parametrize('act', ['tanh', 'sigmoid', 'elu', 'selu', 'softplus', 'swish'])
def test_smooth_activations_gradgradcheck(act):
    x = _away_from_kinks((2, 3), seed=12).requires_grad_()
    b = _randn(3, seed=13).requires_grad_()
    assert torch.autograd.gradgradcheck(lambda x, b: ba.bias_act(x, b, act=act), [x, b])


def test_float16_on_cpu():
    x, b = _randn(2, 3, 4, 4, seed=14).float(), _randn(3, seed=15).float()
    out = ba.bias_act(x.half(), b.half(), act='lrelu', clamp=1.0)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), ba.bias_act(x, b, act='lrelu', clamp=1.0), atol=2e-3, rtol=2e-3)
