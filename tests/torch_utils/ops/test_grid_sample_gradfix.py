"""Tests for torch_utils.ops.grid_sample_gradfix against a naive bilinear sampler built from explicit corner gathers."""

import pytest
import torch

from torch_utils.ops import grid_sample_gradfix as gs


def _randn(*shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def naive_grid_sample(image, grid):
    """Oracle: bilinear, zero padding, align_corners=False, written with explicit gathers of the four corners."""
    n, c, h, w = image.shape
    # align_corners=False: -1 and 1 are the outer edges of the border pixels, so pixel centres sit at i + 0.5.
    ix = ((grid[..., 0] + 1) * w - 1) / 2  # [N, Ho, Wo]
    iy = ((grid[..., 1] + 1) * h - 1) / 2
    x0, y0 = torch.floor(ix), torch.floor(iy)
    out = image.new_zeros(n, c, *grid.shape[1:3])
    for dx in (0, 1):
        for dy in (0, 1):
            xc, yc = x0 + dx, y0 + dy
            weight = (1 - (ix - xc).abs()) * (1 - (iy - yc).abs())  # [N, Ho, Wo]
            inside = (xc >= 0) & (xc <= w - 1) & (yc >= 0) & (yc <= h - 1)
            flat = (yc.clamp(0, h - 1) * w + xc.clamp(0, w - 1)).long().reshape(n, 1, -1).expand(n, c, -1)
            corner = image.reshape(n, c, h * w).gather(2, flat).reshape(out.shape)
            out = out + corner * (weight * inside)[:, None]
    return out


def _grid(n, ho, wo, seed, spread=1.3):
    """Random sample points covering the image and a margin outside it, where zero padding applies."""
    u = torch.rand(n, ho, wo, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (u * 2 - 1) * spread


@pytest.fixture(params=[False, True], ids=['flag-off', 'flag-on'])
def enabled(request, monkeypatch):
    monkeypatch.setattr(gs, 'enabled', request.param)
    return request.param


def test_flag_default_off():
    assert gs.enabled is False


def test_matches_naive_sampler(enabled):
    image, grid = _randn(2, 3, 5, 6, seed=1), _grid(2, 4, 7, seed=2)
    out = gs.grid_sample(image, grid)
    assert out.shape == (2, 3, 4, 7)
    torch.testing.assert_close(out, naive_grid_sample(image, grid))


def test_identity_grid_reproduces_image(enabled):
    image = _randn(1, 2, 4, 5, seed=3)
    ys = (torch.arange(4, dtype=torch.float64) + 0.5) / 4 * 2 - 1
    xs = (torch.arange(5, dtype=torch.float64) + 0.5) / 5 * 2 - 1
    grid = torch.stack(torch.meshgrid(xs, ys, indexing='xy'), dim=-1)[None]  # [1, 4, 5, 2] holding (x, y)
    torch.testing.assert_close(gs.grid_sample(image, grid), image)
    # Outside the image the zero padding wins.
    assert gs.grid_sample(image, torch.full((1, 1, 1, 2), 3.0, dtype=torch.float64)).abs().max().item() == 0


def test_gradcheck(enabled):
    image = _randn(1, 2, 4, 4, seed=4).requires_grad_()
    grid = _grid(1, 3, 3, seed=5).requires_grad_()
    assert torch.autograd.gradcheck(gs.grid_sample, [image, grid])


def test_gradgradcheck_wrt_input(enabled):
    image = _randn(1, 2, 4, 4, seed=6).requires_grad_()
    grid = _grid(1, 3, 3, seed=7)
    assert torch.autograd.gradgradcheck(lambda image: gs.grid_sample(image, grid), [image])


def test_gradgradcheck_wrt_input_and_grid():
    image = _randn(1, 2, 4, 4, seed=11).requires_grad_()
    grid = _grid(1, 2, 2, seed=12).requires_grad_()
    assert torch.autograd.gradgradcheck(gs.grid_sample, [image, grid])


def test_r1_style_double_backward_matches_naive(enabled):
    """grad of ||d D(sample(x)) / dx||^2 w.r.t. D's parameter, through the sampler, equals the naive sampler's."""
    image = _randn(2, 2, 5, 5, seed=8).requires_grad_()
    grid = _grid(2, 4, 4, seed=9)
    weight = _randn(2, 4, 4, seed=10).requires_grad_()

    def penalty_grad(sampler):
        logits = (torch.tanh(sampler(image, grid)) * weight).sum()
        grad_image, = torch.autograd.grad(logits, [image], create_graph=True)
        return torch.autograd.grad(grad_image.square().sum(), [weight, image])

    for got, want in zip(penalty_grad(gs.grid_sample), penalty_grad(naive_grid_sample)):
        torch.testing.assert_close(got, want)


def test_errors():
    with pytest.raises(ValueError, match=r"input must be \[N, C, H, W\] and grid \[N, Ho, Wo, 2\] with the same N, "
                                         r"got input \[2, 1, 3, 3\] and grid \[1, 2, 2, 2\]"):
        gs.grid_sample(torch.zeros(2, 1, 3, 3), torch.zeros(1, 2, 2, 2))
    with pytest.raises(TypeError, match="grid must be a torch.Tensor, got list"):
        gs.grid_sample(torch.zeros(1, 1, 3, 3), [[0.0, 0.0]])
