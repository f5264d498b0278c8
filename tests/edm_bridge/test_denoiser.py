"""Tests for edm_bridge/denoiser.py: parameterization conversions against a Gaussian with closed-form posterior,
and the FrozenDenoiser wrapper (freezing, keyword adaptation, sigma handling, errors)."""

import math
import re

import pytest
import torch

from edm_bridge.denoiser import (Denoiser, FrozenDenoiser, denoised_to_eps, denoised_to_score, eps_to_denoised,
                                 eps_to_score, score_to_eps)

MU, S = 0.3, 0.6  # Data y ~ N(MU, S^2 I).


def gaussian_D(x, sigma):
    """Exact denoiser E[y | x] for y ~ N(MU, S^2 I), x = y + sigma n: shrink x towards MU."""
    sigma = sigma.reshape(-1, 1, 1, 1)
    return MU + S**2 / (S**2 + sigma**2) * (x - MU)


def noisy_batch(seed=0, N=3):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn([N, 2, 8, 8], generator=gen, dtype=torch.float64)
    sigma = torch.tensor([0.05, 0.5, 4.0][:N], dtype=torch.float64)
    return x, sigma


def test_eps_is_posterior_mean_of_noise():
    x, sigma = noisy_batch()
    eps = denoised_to_eps(x, gaussian_D(x, sigma), sigma)
    # E[n | x] = Cov(n, x) / Var(x) * (x - MU) with Cov(n, x) = sigma, Var(x) = S^2 + sigma^2 (jointly Gaussian).
    s = sigma.reshape(-1, 1, 1, 1)
    torch.testing.assert_close(eps, s / (S**2 + s**2) * (x - MU), rtol=1e-12, atol=1e-12)


def test_score_is_gradient_of_log_density():
    x, sigma = noisy_batch(seed=1)
    x = x.requires_grad_(True)
    var = (S**2 + sigma**2).reshape(-1, 1, 1, 1)  # p(x; sigma) = N(MU, (S^2 + sigma^2) I)
    log_p = (-0.5 * (x - MU).square() / var - 0.5 * torch.log(2 * math.pi * var)).sum()
    (grad,) = torch.autograd.grad(log_p, x)
    score = denoised_to_score(x.detach(), gaussian_D(x.detach(), sigma), sigma)
    torch.testing.assert_close(score, grad, rtol=1e-12, atol=1e-12)


def test_round_trips():
    x, sigma = noisy_batch(seed=2)
    D = gaussian_D(x, sigma)
    eps = denoised_to_eps(x, D, sigma)
    score = denoised_to_score(x, D, sigma)
    torch.testing.assert_close(eps_to_denoised(x, eps, sigma), D, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(score_to_eps(score, sigma), eps, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(eps_to_score(eps, sigma), score, rtol=1e-12, atol=1e-12)


def test_sigma_scalar_vector_and_column_agree():
    x, _ = noisy_batch(seed=3)
    D = gaussian_D(x, torch.full([3], 0.7, dtype=torch.float64))
    expected = (x - D) / 0.7
    f64 = dict(dtype=torch.float64)
    for sigma in (0.7, torch.tensor(0.7, **f64), torch.full([3], 0.7, **f64), torch.full([3, 1, 1, 1], 0.7, **f64)):
        torch.testing.assert_close(denoised_to_eps(x, D, sigma), expected, rtol=1e-12, atol=1e-12)


def test_sigma_of_wrong_shape():
    x, _ = noisy_batch()
    with pytest.raises(ValueError, match=re.escape('sigma has shape [2]; expected a scalar, [N] or [N, 1, 1, 1] '
                                                   'with N = 3 (x has shape [3, 2, 8, 8])')):
        denoised_to_eps(x, x, torch.ones([2]))


class GaussianPrecond(torch.nn.Module):
    """Stand-in for an EDM preconditioner: Gaussian denoiser with a dropout, a parameter and a record of its inputs."""

    def __init__(self, label_dim=0):
        super().__init__()
        self.img_resolution, self.img_channels, self.label_dim = 8, 2, label_dim
        self.sigma_min, self.sigma_max = 0, float('inf')
        self.scale = torch.nn.Parameter(torch.ones([]))
        self.dropout = torch.nn.Dropout(0.5)
        self.calls = []

    def forward(self, x, sigma, class_labels=None, force_fp32=False, **model_kwargs):
        self.calls.append((sigma, class_labels))
        return self.dropout(self.scale * gaussian_D(x, sigma.to(x.dtype)))


class LabelsNet(GaussianPrecond):
    """Stand-in for a wrapper that already takes `labels` (like the ADM wrapper)."""

    def forward(self, x, sigma, labels=None):
        return super().forward(x, sigma, class_labels=labels)


def test_frozen_denoiser_freezes_and_keeps_input_gradients():
    net = GaussianPrecond()
    D = FrozenDenoiser(net)
    assert isinstance(D, Denoiser) and not isinstance(object(), Denoiser)
    assert (D.img_resolution, D.img_channels, D.label_dim, D.sigma_min, D.sigma_max) == (8, 2, 0, 0.0, math.inf)
    D.train()  # A parent module switching to training mode must not enable dropout inside the denoiser.
    assert not D.training and not net.training and not net.dropout.training
    assert not net.scale.requires_grad
    x, _ = noisy_batch(seed=4)
    x = x.requires_grad_(True)
    out = D(x, 0.5)
    torch.testing.assert_close(out, gaussian_D(x.detach(), torch.tensor(0.5, dtype=torch.float64)))
    out.sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, S**2 / (S**2 + 0.25)))
    assert net.scale.grad is None


def test_frozen_denoiser_casts_sigma_and_adapts_labels():
    net = GaussianPrecond(label_dim=4)
    D = FrozenDenoiser(net)
    x, _ = noisy_batch(N=2)
    labels = torch.eye(4, dtype=torch.float64)[[1, 3]]
    D(x, torch.tensor(0.5, dtype=torch.float64), labels)
    sigma, class_labels = net.calls[-1]
    assert sigma.dtype == torch.float32 and sigma.tolist() == [0.5, 0.5]
    assert class_labels.dtype == torch.float32 and class_labels.tolist() == labels.tolist()
    D(x, [0.1, 0.2])
    assert net.calls[-1][1] is None and net.calls[-1][0].tolist() == pytest.approx([0.1, 0.2])
    wrapped = LabelsNet(label_dim=4)
    FrozenDenoiser(wrapped)(x, 1.0, labels)
    assert wrapped.calls[-1][1].tolist() == labels.tolist()


def test_unconditional_denoiser_ignores_labels():
    net = GaussianPrecond()
    x, _ = noisy_batch(N=2)
    FrozenDenoiser(net)(x, 1.0, torch.eye(10)[[0, 1]])
    assert net.calls[-1][1] is None


def test_frozen_denoiser_errors():
    class Bare(torch.nn.Module):
        def forward(self, x, sigma):
            return x

    with pytest.raises(TypeError, match=re.escape("net (Bare) lacks the Denoiser attributes ['img_resolution', "
                                                  "'img_channels', 'label_dim', 'sigma_min', 'sigma_max']")):
        FrozenDenoiser(Bare())
    with pytest.raises(TypeError, match='net is function; expected a torch.nn.Module'):
        FrozenDenoiser(gaussian_D)
    bare = Bare()
    bare.img_resolution = bare.img_channels = bare.label_dim = bare.sigma_min = bare.sigma_max = 1
    with pytest.raises(TypeError, match=re.escape('Bare.forward(x, sigma) takes neither `labels` nor `class_labels`')):
        FrozenDenoiser(bare)
    D = FrozenDenoiser(GaussianPrecond(label_dim=4))
    x, _ = noisy_batch(N=2)
    with pytest.raises(ValueError, match=re.escape('x has shape [2, 2, 8]; expected [N, 2, H, W]')):
        D(x[..., 0], 1.0)
    with pytest.raises(ValueError, match=re.escape('sigma has shape [3]; expected a scalar or [2]')):
        D(x, torch.ones([3]))
    with pytest.raises(ValueError, match=re.escape('labels have shape [2, 3]; expected [2, 4] (one-hot class labels)')):
        D(x, 1.0, torch.zeros([2, 3]))
