"""The toy's closed-form mixture denoiser (SMaRt Figure 2): Monte-Carlo posterior mean, autograd score, interface."""

import math

import pytest
import torch

from edm_bridge.denoiser import FrozenDenoiser
from smart_plugin import score_matching_loss
from smart_plugin.toy.mixture import GridMixture, MixtureDenoiser, mixture_denoise_reference


def reference_log_density(mixture: GridMixture, x: torch.Tensor, sigma: float) -> torch.Tensor:
    """log p(x; sigma) [N] from torch.distributions, independent of GridMixture.log_density."""
    scale = math.sqrt(mixture.std ** 2 + sigma ** 2)
    comp = torch.distributions.Independent(torch.distributions.Normal(mixture.centers, scale), 1)
    weights = torch.distributions.Categorical(torch.full([mixture.num_modes], 1.0 / mixture.num_modes,
                                                         dtype=torch.float64))
    return torch.distributions.MixtureSameFamily(weights, comp).log_prob(x)


def test_grid_centres():
    mixture = GridMixture(7, 2.0, 0.05)
    assert mixture.centers.shape == (49, 2)
    assert torch.equal(mixture.centers[0], torch.tensor([-6.0, -6.0], dtype=torch.float64))
    assert torch.equal(mixture.centers[-1], torch.tensor([6.0, 6.0], dtype=torch.float64))
    assert mixture.centers.mean(0).abs().max().item() == 0.0


def test_samples_stay_near_centres():
    mixture = GridMixture(7, 2.0, 0.05)
    x = mixture.sample(4000, torch.Generator().manual_seed(0)).double()
    d = torch.cdist(x, mixture.centers).min(dim=1).values
    assert x.dtype == torch.float64 or x.shape == (4000, 2)
    assert d.max().item() < 6 * 0.05
    assert abs(d.square().mean().item() - 2 * 0.05 ** 2) < 0.1 * 2 * 0.05 ** 2  # E||y - mu||^2 = 2 std^2


@pytest.mark.parametrize('sigma', [0.3, 1.0])
def test_denoiser_matches_monte_carlo_posterior_mean(sigma):
    mixture = GridMixture(3, 1.0, 0.2)
    denoiser = MixtureDenoiser(mixture)
    gen = torch.Generator().manual_seed(1)
    x = torch.tensor([[0.1, 0.4], [-0.7, 0.2], [1.3, -1.1]], dtype=torch.float64)          # [3, 2]
    y = mixture.sample(400_000, gen).double()                                              # [M, 2] from p(y)
    # E[y | x] = E_y[y N(x; y, sigma^2)] / E_y[N(x; y, sigma^2)] (self-normalised importance weights).
    logw = -(x[:, None, :] - y[None]).square().sum(-1) / (2 * sigma ** 2)                  # [3, M]
    w = torch.softmax(logw, dim=1)
    mc = w @ y                                                                             # [3, 2]
    d = denoiser(x.reshape(3, 2, 1, 1), sigma).reshape(3, 2)
    assert torch.allclose(d, mc, atol=1.5e-2)


@pytest.mark.parametrize('sigma', [0.02, 0.2, 1.5])
def test_score_matches_autograd_of_log_density(sigma):
    mixture = GridMixture(7, 2.0, 0.05)
    gen = torch.Generator().manual_seed(2)
    x = (torch.rand([16, 2], generator=gen, dtype=torch.float64) * 14 - 7).requires_grad_(True)
    score_ref, = torch.autograd.grad(reference_log_density(mixture, x, sigma).sum(), x)
    d = MixtureDenoiser(mixture)(x.detach().reshape(16, 2, 1, 1), sigma).reshape(16, 2)
    score = (d - x.detach()) / sigma ** 2
    assert torch.allclose(score, score_ref, rtol=1e-9, atol=1e-9 / sigma ** 2)
    assert torch.allclose(mixture.log_density(x.detach(), sigma), reference_log_density(mixture, x.detach(), sigma),
                          rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize('grid, sigma', [(7, 0.02), (7, 0.2), (7, 3.0), (4, 0.5), (1, 0.1)])
def test_factorised_denoiser_equals_the_sum_over_all_centres(grid, sigma):
    mixture = GridMixture(grid, 2.0, 0.05)
    gen = torch.Generator().manual_seed(3)
    x = (torch.rand([64, 2], generator=gen, dtype=torch.float64) * 16 - 8).requires_grad_(True)
    sigmas = torch.rand([64], generator=gen, dtype=torch.float64) * sigma + 0.01              # One per point.
    fast = MixtureDenoiser(mixture).double()(x.reshape(64, 2, 1, 1), sigmas).reshape(64, 2)
    ref = mixture_denoise_reference(mixture, x, sigmas)
    assert torch.allclose(fast, ref, rtol=1e-12, atol=1e-12)
    w = torch.randn([64, 2], generator=gen, dtype=torch.float64)
    g_fast, = torch.autograd.grad((fast * w).sum(), x)
    g_ref, = torch.autograd.grad((ref * w).sum(), x)
    assert torch.allclose(g_fast, g_ref, rtol=1e-9, atol=1e-9)
    scalar = MixtureDenoiser(mixture).double()(x.detach().reshape(64, 2, 1, 1), sigma).reshape(64, 2)
    assert torch.allclose(scalar, mixture_denoise_reference(mixture, x.detach(), sigma), rtol=1e-12, atol=1e-12)


def test_denoiser_through_frozen_wrapper_and_smart_loss():
    mixture = GridMixture(7, 2.0, 0.05)
    frozen = FrozenDenoiser(MixtureDenoiser(mixture))
    assert (frozen.img_resolution, frozen.img_channels, frozen.label_dim) == (1, 2, 0)
    x0 = mixture.centers[:4].float().reshape(4, 2, 1, 1).clone().requires_grad_(True)     # exactly on modes
    sigma = torch.full([4], 0.3)
    eps = torch.zeros([4, 2, 1, 1])
    loss = score_matching_loss(frozen, x0, sigma, eps, param='x0')
    assert loss.shape == (4,)
    assert loss.abs().max().item() < 1e-10  # On a centre with eps = 0, D returns the centre: zero error.
    x_off = (x0.detach() + torch.tensor([0.3, 0.0]).reshape(1, 2, 1, 1)).requires_grad_(True)
    grad, = torch.autograd.grad(score_matching_loss(frozen, x_off, sigma, eps, param='x0').sum(), x_off)
    assert (grad[:, 0] > 0).all() and grad[:, 1].abs().max().item() < 1e-6  # Descent pulls back toward the centre.


def test_denoiser_float32_output_and_bad_shape():
    denoiser = MixtureDenoiser(GridMixture())
    out = denoiser(torch.zeros([3, 2, 1, 1]), torch.tensor([0.1, 0.2, 0.3]))
    assert out.dtype == torch.float32 and out.shape == (3, 2, 1, 1)
    with pytest.raises(ValueError, match=r'^x has shape \[3, 2\]; expected \[N, 2, 1, 1\] \(2-D points as 1x1 '
                                         r'images\)$'):
        denoiser(torch.zeros([3, 2]), 0.1)


@pytest.mark.parametrize('kwargs, message', [
    (dict(grid=0), 'grid is 0; expected an integer >= 1 (modes per side)'),
    (dict(spacing=-1.0), 'spacing is -1.0; expected a finite number > 0'),
    (dict(std=0.0), 'std is 0.0; expected a finite number > 0'),
])
def test_mixture_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError) as info:
        GridMixture(**kwargs)
    assert str(info.value) == message
