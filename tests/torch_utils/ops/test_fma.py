"""Tests for torch_utils.ops.fma: values, unbroadcast gradients against plain autograd, first and second order."""

import pytest
import torch

from torch_utils.ops import fma


def _randn(*shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


SHAPES = [
    ((2, 3, 4), (2, 3, 4), (2, 3, 4)),
    ((2, 3, 1, 4), (3, 5, 1), (1,)),          # every input broadcast differently, c expanded everywhere
    ((4,), (2, 1, 4), (2, 3, 1)),             # missing leading axes
    ((), (2, 3), (3,)),                       # a 0-d tensor
    ((2, 3, 4, 4), (2, 3, 1, 1), (2, 3, 4, 4)),  # the StyleGAN2 use: x * dcoefs + noise
    ((2, 1, 3), (1, 2, 1), (3,)),             # broadcasting to size 2
]


@pytest.mark.parametrize('sa,sb,sc', SHAPES)
def test_values_and_grads_match_plain_autograd(sa, sb, sc):
    a = _randn(*sa, seed=1).requires_grad_()
    b = _randn(*sb, seed=2).requires_grad_()
    c = _randn(*sc, seed=3).requires_grad_()
    out = fma.fma(a, b, c)
    expected = a * b + c
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected)
    g = _randn(*out.shape, seed=4)
    grads = torch.autograd.grad(out, [a, b, c], g)
    expected_grads = torch.autograd.grad(expected, [a, b, c], g)
    for got, want, shape in zip(grads, expected_grads, (sa, sb, sc)):
        assert got.shape == torch.Size(shape)
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize('sa,sb,sc', SHAPES[1:3])
def test_gradcheck_and_gradgradcheck(sa, sb, sc):
    inputs = [_randn(*s, seed=i).requires_grad_() for i, s in enumerate((sa, sb, sc))]
    assert torch.autograd.gradcheck(fma.fma, inputs)
    assert torch.autograd.gradgradcheck(fma.fma, inputs)


def test_second_order_matches_plain_autograd():
    a, b, c = _randn(2, 3, 1, seed=5), _randn(3, 4, seed=6), _randn(1, 4, seed=7)
    for t in (a, b, c):
        t.requires_grad_()

    def second_order(fn):
        grad_a, grad_b = torch.autograd.grad(fn(a, b, c).sin().sum(), [a, b], create_graph=True)
        return torch.autograd.grad(grad_a.square().sum() + (grad_b * b).sum(), [a, b, c], allow_unused=True)

    got = second_order(fma.fma)
    want = second_order(lambda a, b, c: a * b + c)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_only_requested_gradients():
    a, b, c = _randn(2, 3, seed=8).requires_grad_(), _randn(2, 3, seed=9), _randn(2, 3, seed=10)
    fma.fma(a, b, c).sum().backward()
    torch.testing.assert_close(a.grad, b)
    assert b.grad is None and c.grad is None


def test_non_tensor_argument():
    with pytest.raises(TypeError, match="b must be a torch.Tensor, got float"):
        fma.fma(torch.ones(2), 2.0, torch.ones(2))
