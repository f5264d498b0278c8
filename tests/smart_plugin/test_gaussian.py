"""Tests for smart_plugin/gaussian.py: the closed-form denoiser against Monte Carlo, and the streaming fit."""

import math
import re

import numpy as np
import pytest
import torch

from dataset_io.reader import Dataset
from edm_bridge.denoiser import Denoiser, FrozenDenoiser
from smart_plugin import gaussian
from smart_plugin.gaussian import GaussianDenoiser, fit_gaussian_denoiser


class ArrayDataset(Dataset):
    """The project's Dataset over an in-memory uint8 array [N, C, H, W] (no files)."""

    def __init__(self, images, **kwargs):
        self._images = images
        super().__init__(name='array', raw_shape=images.shape, **kwargs)

    def _load_raw_image(self, raw_idx):
        return self._images[raw_idx]

    def _load_raw_labels(self):
        return None


def test_interface_attributes():
    D = GaussianDenoiser(torch.zeros(3, 8, 8), torch.ones(3, 8, 8))
    assert isinstance(D, Denoiser)
    assert (D.img_resolution, D.img_channels, D.label_dim, D.sigma_min, D.sigma_max) == (8, 3, 0, 0.0, math.inf)
    assert FrozenDenoiser(D).label_dim == 0  # Wraps cleanly: the forward takes `labels`.


def test_closed_form_matches_monte_carlo_posterior_mean():
    # E[y | x] by self-normalised importance sampling from the prior: weights N(x; y_i, sigma^2 I).
    mu = torch.tensor([[[0.3, -0.2], [0.0, 0.5]]], dtype=torch.float64)    # [1, 2, 2]
    var = torch.tensor([[[0.04, 0.25], [0.1, 0.01]]], dtype=torch.float64)
    D = GaussianDenoiser(mu, var)
    gen = torch.Generator().manual_seed(0)
    x = torch.tensor([[[[0.1, 0.4], [-0.3, 0.2]]]], dtype=torch.float64)   # [1, 1, 2, 2]
    sigma = 0.3
    y = mu + var.sqrt() * torch.randn([400_000, 1, 2, 2], generator=gen, dtype=torch.float64)  # [M, 1, 2, 2]
    log_w = -(x - y).square().flatten(1).sum(1) / (2 * sigma**2)                              # [M]
    w = torch.softmax(log_w, dim=0).reshape(-1, 1, 1, 1)
    posterior_mean = (w * y).sum(0, keepdim=True)                                             # [1, 1, 2, 2]
    closed = D(x, torch.tensor([sigma], dtype=torch.float64))
    assert closed.dtype == torch.float64
    torch.testing.assert_close(closed, posterior_mean, atol=2e-3, rtol=0)
    expected = mu + var / (var + sigma**2) * (x - mu)  # The formula, written out independently.
    torch.testing.assert_close(closed, expected, atol=1e-15, rtol=0)


def test_limits_and_per_sample_sigma():
    D = GaussianDenoiser(torch.full([1, 2, 2], 0.5), torch.full([1, 2, 2], 0.2))
    x = torch.randn([2, 1, 2, 2], generator=torch.Generator().manual_seed(1))
    out = D(x, torch.tensor([0.0, 1e6]))
    torch.testing.assert_close(out[0], x[0])                           # sigma 0: the input itself.
    torch.testing.assert_close(out[1], torch.full([1, 2, 2], 0.5))   # sigma huge: the data mean.


def test_bad_inputs():
    with pytest.raises(ValueError, match=re.escape('mu has shape [3, 8, 4]; expected a square [C, H, W] with H == W')):
        GaussianDenoiser(torch.zeros(3, 8, 4), torch.ones(3, 8, 4))
    with pytest.raises(ValueError, match=re.escape('var has shape [3, 4, 4]; expected the shape of mu [1, 4, 4]')):
        GaussianDenoiser(torch.zeros(1, 4, 4), torch.ones(3, 4, 4))
    with pytest.raises(ValueError, match='var must be positive and finite'):
        GaussianDenoiser(torch.zeros(1, 4, 4), torch.zeros(1, 4, 4))
    D = GaussianDenoiser(torch.zeros(1, 4, 4), torch.ones(1, 4, 4))
    with pytest.raises(ValueError, match=re.escape('x has shape [2, 3, 4, 4]; expected [N, 1, 4, 4]')):
        D(torch.zeros(2, 3, 4, 4), 1.0)


def test_fit_matches_numpy_across_chunks(monkeypatch):
    monkeypatch.setattr(gaussian, 'CHUNK_ELEMENTS', 4 * 3 * 4 * 4)  # 6 images in chunks of 4 and 2: the merge.
    images = np.random.RandomState(0).randint(0, 256, size=[6, 3, 4, 4]).astype(np.uint8)
    images[:, 1, 0, 0] = 200  # A constant pixel: variance 0 -> floor.
    D = fit_gaussian_denoiser(ArrayDataset(images))
    ref = images.astype(np.float64) / 127.5 - 1
    np.testing.assert_allclose(D.mu.numpy(), ref.mean(0), rtol=0, atol=1e-7)
    expected_var = np.maximum(ref.var(0), gaussian.VAR_FLOOR)
    np.testing.assert_allclose(D.var.numpy(), expected_var, rtol=1e-6, atol=0)
    assert D.var[1, 0, 0].item() == pytest.approx(1e-6, rel=1e-6)
    assert D.mu.dtype == torch.float32 and (D.img_resolution, D.img_channels) == (4, 3)


def test_fit_max_images_and_xflip():
    images = np.random.RandomState(1).randint(0, 256, size=[5, 1, 4, 4]).astype(np.uint8)
    D = fit_gaussian_denoiser(ArrayDataset(images), max_images=3)
    np.testing.assert_allclose(D.mu.numpy(), (images[:3] / 127.5 - 1).mean(0), rtol=0, atol=1e-7)
    flipped = fit_gaussian_denoiser(ArrayDataset(images, xflip=True))  # 10 items: the originals and their mirrors.
    both = np.concatenate([images, images[..., ::-1]]) / 127.5 - 1
    np.testing.assert_allclose(flipped.var.numpy(), both.var(0), rtol=1e-6, atol=0)


def test_fit_errors():
    with pytest.raises(ValueError, match=re.escape('max_images is 0; expected None (all images) or an integer >= 1')):
        fit_gaussian_denoiser(ArrayDataset(np.zeros([2, 1, 4, 4], np.uint8)), max_images=0)
    with pytest.raises(ValueError, match=re.escape('training_set is empty; a Gaussian score source needs at least '
                                                   'one image')):
        fit_gaussian_denoiser([])
    with pytest.raises(ValueError, match=re.escape('training_set[0] holds a float32 image of shape [1, 4, 4]; '
                                                   'expected uint8 [C, H, W]')):
        fit_gaussian_denoiser([(np.zeros([1, 4, 4], np.float32), None)])
