"""A closed-form score source for SMaRt (Xia et al., ICML 2024): the dataset modelled as a diagonal Gaussian.

With data y ~ N(mu, diag(var)) per pixel and x = y + sigma * n, the posterior mean is (Tweedie / Wiener filter)

    D(x; sigma) = E[y | x] = mu + var / (var + sigma^2) * (x - mu),

so the score (D - x) / sigma^2 is exact for this data model at every sigma. It needs no pretrained network, which
makes it the default score source when no diffusion model fits the data, and an analytic oracle in tests. It pulls
generated images toward the per-pixel data statistics only; it knows nothing about image structure.
"""

import math
from typing import Any

import numpy as np
import torch

VAR_FLOOR = 1e-6   # Keeps var / (var + sigma^2) well defined for constant pixels (e.g. a black border).
CHUNK_ELEMENTS = 1 << 24  # Values per chunk of the streaming mean/variance (128 MB in float64), at least 1 image.


class GaussianDenoiser(torch.nn.Module):
    """Exact denoiser D(x; sigma) of N(mu, diag(var)) data, with the edm_bridge Denoiser interface (unconditional)."""

    def __init__(self, mu: torch.Tensor, var: torch.Tensor) -> None:
        super().__init__()
        mu, var = torch.as_tensor(mu), torch.as_tensor(var)
        if mu.ndim != 3 or mu.shape[1] != mu.shape[2]:
            raise ValueError(f'mu has shape {list(mu.shape)}; expected a square [C, H, W] with H == W')
        if var.shape != mu.shape:
            raise ValueError(f'var has shape {list(var.shape)}; expected the shape of mu {list(mu.shape)}')
        if not bool((var > 0).all()) or not bool(torch.isfinite(var).all()) or not bool(torch.isfinite(mu).all()):
            raise ValueError('var must be positive and finite everywhere and mu finite; floor var (e.g. at 1e-6)')
        self.register_buffer('mu', mu.clone())    # [C, H, W] per-pixel mean, data in [-1, 1].
        self.register_buffer('var', var.clone())  # [C, H, W] per-pixel variance.
        self.img_channels = int(mu.shape[0])
        self.img_resolution = int(mu.shape[2])
        self.label_dim = 0
        self.sigma_min = 0.0
        self.sigma_max = math.inf

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Posterior mean E[y | x] [N, C, H, W] of noisy x [N, C, H, W] at sigma (scalar or [N]); labels ignored."""
        if x.ndim != 4 or x.shape[1:] != self.mu.shape:
            raise ValueError(f'x has shape {list(x.shape)}; expected [N, {", ".join(map(str, self.mu.shape))}]')
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)  # [N or 1, 1, 1, 1]
        mu, var = self.mu.to(x.dtype), self.var.to(x.dtype)
        return mu + var / (var + sigma.square()) * (x - mu)

    def extra_repr(self) -> str:
        return f'img_resolution={self.img_resolution}, img_channels={self.img_channels}'


def _merge(count: int, mean: np.ndarray, m2: np.ndarray, chunk: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """Add a chunk [K, C, H, W] to running (count, mean, sum of squared deviations): Chan et al.'s parallel update."""
    k = chunk.shape[0]
    chunk_mean = chunk.mean(axis=0)
    chunk_m2 = np.square(chunk - chunk_mean).sum(axis=0)
    total = count + k
    delta = chunk_mean - mean
    return total, mean + delta * (k / total), m2 + chunk_m2 + np.square(delta) * (count * k / total)


def fit_gaussian_denoiser(training_set: Any, max_images: int | None = None) -> GaussianDenoiser:
    """Fit per-pixel mean and (population) variance of the images (uint8 -> x / 127.5 - 1) in float64, streaming.

    `training_set[i]` must return (uint8 image [C, H, W], label); uses the first `max_images` items (None = all).
    """
    if max_images is not None and (isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1):
        raise ValueError(f'max_images is {max_images!r}; expected None (all images) or an integer >= 1')
    num = len(training_set) if max_images is None else min(len(training_set), max_images)
    if num == 0:
        raise ValueError('training_set is empty; a Gaussian score source needs at least one image')
    chunk_images = max(1, CHUNK_ELEMENTS // np.asarray(training_set[0][0]).size)
    count, mean, m2 = 0, 0.0, 0.0
    for start in range(0, num, chunk_images):
        images = [np.asarray(training_set[i][0]) for i in range(start, min(start + chunk_images, num))]
        if images[0].dtype != np.uint8 or images[0].ndim != 3:
            raise ValueError(f'training_set[{start}] holds a {images[0].dtype} image of shape '
                             f'{list(images[0].shape)}; expected uint8 [C, H, W]')
        chunk = np.stack(images).astype(np.float64) / 127.5 - 1  # [K, C, H, W] in [-1, 1]
        count, mean, m2 = _merge(count, mean, m2, chunk)
    var = np.maximum(m2 / count, VAR_FLOOR)
    return GaussianDenoiser(torch.from_numpy(mean).float(), torch.from_numpy(var).float())


def degenerate_fit_warning(denoiser: Any, num_images: int | None = None) -> str | None:
    """A warning when at least half of a GaussianDenoiser's pixels have variance at the floor (the same value in
    every image, e.g. an all-black dataset): its score then only pulls G towards that constant. None otherwise (and
    for other denoisers)."""
    net = getattr(denoiser, 'net', denoiser)
    if not isinstance(net, GaussianDenoiser):
        return None
    constant = float((net.var <= VAR_FLOOR).float().mean())
    if constant < 0.5:
        return None
    images = f' of the {num_images} images' if num_images is not None else ''
    return (f'WARNING: SMaRt: the gaussian score source has zero variance at {constant:.0%} of the pixels (the same '
            f'value in every one{images}); its score pulls G towards a constant image. Check --data, or use a '
            'diffusion model as --smart-dpm')
