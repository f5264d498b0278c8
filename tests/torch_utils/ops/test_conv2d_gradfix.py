"""Tests for torch_utils.ops.conv2d_gradfix: flags, the context manager, and the custom Functions vs plain F.conv*."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from torch_utils.ops import conv2d_gradfix as gf


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.fixture
def custom_op(monkeypatch):
    """Route the convs through the custom autograd Functions for the duration of a test."""
    monkeypatch.setattr(gf, 'enabled', True)
    monkeypatch.setattr(gf, 'custom_on_cpu', True)
    monkeypatch.setattr(gf, 'weight_gradients_disabled', False)


# Each case: (input shape, weight shape, kwargs); conv weights are [O, I / groups, kh, kw].
CONV_CASES = [
    ((2, 4, 7, 6), (3, 4, 3, 3), dict()),
    ((2, 4, 7, 6), (6, 2, 3, 2), dict(stride=2, padding=1, groups=2)),
    ((1, 3, 8, 7), (2, 3, 3, 3), dict(stride=(2, 3), padding=(2, 0), dilation=(1, 2))),
    ((1, 4, 6, 6), (4, 1, 1, 1), dict(groups=4)),
]
# Transposed conv weights are [I, O / groups, kh, kw].
CONV_T_CASES = [
    ((2, 4, 5, 4), (4, 3, 3, 3), dict()),
    ((2, 4, 5, 4), (4, 2, 3, 3), dict(stride=2, padding=1, output_padding=1, groups=2)),
    ((1, 2, 4, 5), (2, 3, 3, 2), dict(stride=(3, 2), padding=(0, 1), output_padding=(2, 0), dilation=(1, 2))),
]


def _cases():
    for xs, ws, kw in CONV_CASES:
        yield pytest.param(gf.conv2d, F.conv2d, xs, ws, kw, id=f"conv2d-{kw}")
    for xs, ws, kw in CONV_T_CASES:
        yield pytest.param(gf.conv_transpose2d, F.conv_transpose2d, xs, ws, kw, id=f"conv_transpose2d-{kw}")


def _bias_len(plain_fn, ws, kwargs):
    return ws[0] if plain_fn is F.conv2d else ws[1] * kwargs.get('groups', 1)


def test_flags_default_off():
    assert gf.enabled is False
    assert gf.weight_gradients_disabled is False


def test_no_weight_gradients_sets_and_restores(custom_op):
    with gf.no_weight_gradients():
        assert gf.weight_gradients_disabled is True
        with gf.no_weight_gradients(False):
            assert gf.weight_gradients_disabled is True  # disable=False leaves the current state alone
        assert gf.weight_gradients_disabled is True
    assert gf.weight_gradients_disabled is False
    with gf.no_weight_gradients(disable=False):
        assert gf.weight_gradients_disabled is False
    with pytest.raises(RuntimeError, match='boom'):
        with gf.no_weight_gradients():
            raise RuntimeError('boom')
    assert gf.weight_gradients_disabled is False


@pytest.mark.parametrize('fn,plain_fn,xs,ws,kwargs', list(_cases()))
def test_disabled_is_plain_functional(fn, plain_fn, xs, ws, kwargs):
    x, w = _randn(*xs, seed=1), _randn(*ws, seed=2)
    assert torch.equal(fn(x, w, **kwargs), plain_fn(x, w, **kwargs))


@pytest.mark.parametrize('fn,plain_fn,xs,ws,kwargs', list(_cases()))
def test_custom_values_and_grads_match_plain(custom_op, fn, plain_fn, xs, ws, kwargs):
    x = _randn(*xs, seed=3).requires_grad_()
    w = _randn(*ws, seed=4).requires_grad_()
    b = _randn(_bias_len(plain_fn, ws, kwargs), seed=5).requires_grad_()
    out = fn(input=x, weight=w, bias=b, **kwargs)
    expected = plain_fn(x, w, b, **kwargs)
    torch.testing.assert_close(out, expected)
    g = _randn(*out.shape, seed=6)
    grads = torch.autograd.grad(out, [x, w, b], g)
    expected_grads = torch.autograd.grad(expected, [x, w, b], g)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize('fn,plain_fn,xs,ws,kwargs', list(_cases()))
def test_custom_gradcheck_and_gradgradcheck(custom_op, fn, plain_fn, xs, ws, kwargs):
    # A batch of one keeps the numerical Jacobians small.
    x = _randn(1, *xs[1:], seed=7).requires_grad_()
    w = _randn(*ws, seed=8).requires_grad_()
    b = _randn(_bias_len(plain_fn, ws, kwargs), seed=9).requires_grad_()
    f = lambda x, w, b: fn(x, w, b, **kwargs)  # noqa: E731
    assert torch.autograd.gradcheck(f, [x, w, b])
    assert torch.autograd.gradgradcheck(f, [x, w, b])


@pytest.mark.parametrize('fn,plain_fn,xs,ws,kwargs', list(_cases()))
def test_no_weight_gradients_skips_weight_only(custom_op, fn, plain_fn, xs, ws, kwargs):
    x = _randn(*xs, seed=10).requires_grad_()
    w = _randn(*ws, seed=11).requires_grad_()
    with gf.no_weight_gradients():
        grad_x, grad_w = torch.autograd.grad(fn(x, w, **kwargs).square().sum(), [x, w], allow_unused=True)
    assert grad_w is None
    expected_x, expected_w = torch.autograd.grad(plain_fn(x, w, **kwargs).square().sum(), [x, w])
    torch.testing.assert_close(grad_x, expected_x)
    # Outside the context the weight gradient is back.
    _, grad_w = torch.autograd.grad(fn(x, w, **kwargs).square().sum(), [x, w])
    torch.testing.assert_close(grad_w, expected_w)
    # .backward() under the context leaves w.grad untouched.
    with gf.no_weight_gradients():
        fn(x, w, **kwargs).sum().backward()
    assert w.grad is None and x.grad is not None


def test_r1_style_penalty_reaches_weights(custom_op):
    """Image gradient taken without weight gradients, then the penalty backpropagated to the weight (R1 pattern)."""
    x = _randn(2, 3, 6, 6, seed=12).requires_grad_()
    w1 = _randn(4, 3, 3, 3, seed=13).requires_grad_()
    w2 = _randn(4, 1, 3, 3, seed=14).requires_grad_()  # transposed layout [I, O / groups, kh, kw]

    def disc(conv, conv_t):
        h = torch.tanh(conv(x, w1, padding=1, stride=2))
        return conv_t(h, w2, stride=2, padding=1, output_padding=1, groups=2).square().sum()

    with gf.no_weight_gradients():
        grad_x, = torch.autograd.grad(disc(gf.conv2d, gf.conv_transpose2d), [x], create_graph=True)
    penalty_grads = torch.autograd.grad(grad_x.square().sum(), [w1, w2])
    grad_x_ref, = torch.autograd.grad(disc(F.conv2d, F.conv_transpose2d), [x], create_graph=True)
    expected = torch.autograd.grad(grad_x_ref.square().sum(), [w1, w2])
    torch.testing.assert_close(grad_x, grad_x_ref)
    for got, want in zip(penalty_grads, expected):
        torch.testing.assert_close(got, want)


def test_errors_when_enabled(custom_op):
    x, w = _randn(1, 2, 5, 5, seed=15), _randn(2, 2, 3, 3, seed=16)
    with pytest.raises(TypeError, match=r"padding must be an int or a pair of ints when conv2d_gradfix is enabled, "
                                        r"got 'same'"):
        gf.conv2d(x, w, padding='same')
    with pytest.raises(ValueError, match=r"stride must be >= 1, got \(1, 0\)"):
        gf.conv2d(x, w, stride=(1, 0))
    with pytest.raises(ValueError, match=r"groups must be an int >= 1, got 0"):
        gf.conv2d(x, w, groups=0)
    with pytest.raises(ValueError, match=r"output_padding must be smaller than stride \(2\) when conv2d_gradfix is "
                                         r"enabled, got 2"):
        gf.conv_transpose2d(x, w, stride=2, output_padding=2, dilation=3)


def test_numpy_integer_arguments_when_enabled(custom_op):
    """Pickled network code may compute paddings with numpy; those integers are accepted like Python ints."""
    x, w = _randn(1, 2, 5, 5, seed=17), _randn(4, 1, 3, 3, seed=18)
    out = gf.conv2d(x, w, padding=[np.int64(1), np.int64(0)], stride=np.int32(2), groups=np.int64(2))
    torch.testing.assert_close(out, F.conv2d(x, w, padding=(1, 0), stride=2, groups=2))


def test_enabled_cpu_uses_native_autograd(monkeypatch):
    """With `enabled` but not `custom_on_cpu`, CPU convs are the native ops: native backward node, the same R1 grads."""
    monkeypatch.setattr(gf, 'enabled', True)
    monkeypatch.setattr(gf, 'custom_on_cpu', False)
    x = _randn(2, 3, 6, 6, seed=21).requires_grad_()
    w = _randn(4, 3, 3, 3, seed=22).requires_grad_()
    y = gf.conv2d(x, w, padding=1)
    assert type(y.grad_fn).__name__ == 'ConvolutionBackward0'
    with gf.no_weight_gradients():
        grad_x, = torch.autograd.grad(y.square().sum(), [x], create_graph=True)
    native = torch.autograd.grad(grad_x.square().sum(), [w])[0]
    monkeypatch.setattr(gf, 'custom_on_cpu', True)
    y = gf.conv2d(x, w, padding=1)
    assert type(y.grad_fn).__name__ == '_Conv2dBackward'
    with gf.no_weight_gradients():
        grad_x, = torch.autograd.grad(y.square().sum(), [x], create_graph=True)
    torch.testing.assert_close(native, torch.autograd.grad(grad_x.square().sum(), [w])[0])
