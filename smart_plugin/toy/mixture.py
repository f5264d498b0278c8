"""The toy data of SMaRt's Figure 2 (Xia et al., ICML 2024): a 7x7 grid of isotropic Gaussians, and the exact
denoiser of the noised mixture, which stands in for a pretrained diffusion model as SMaRt's score source.

For y ~ sum_k w_k N(mu_k, s^2 I) and x = y + sigma * n (EDM convention, alpha = 1), x ~ sum_k w_k N(mu_k, v I) with
v = s^2 + sigma^2, and the posterior mean (Tweedie) is

    D(x; sigma) = E[y | x] = sum_k r_k(x) (mu_k + s^2 / v (x - mu_k)),   r_k(x) = w_k N(x; mu_k, v I) / p(x),

so the score is (D - x) / sigma^2. On the grid the centres are the pairs (a_i, a_j) of one list of ticks and the
weights are equal, so N(x; mu_k, v I) = N(x_1; a_i, v) N(x_2; a_j, v) and the posterior factorises: each coordinate
is the posterior mean of a 1-D mixture of the ticks, D_c(x) = sum_i r_i(x_c) (a_i + s^2 / v (x_c - a_i)).
MixtureDenoiser evaluates that (2 x grid responsibilities per point instead of grid^2);
`mixture_denoise_reference` sums over all K = grid^2 centres, as the formula above reads. Points are [N, 2, 1, 1] tensors so that the denoiser has the edm_bridge Denoiser
interface (img_resolution 1, img_channels 2) and SMaRt handles them like images.
"""

import math

import torch


class GridMixture:
    """Equal-weight mixture of N(mu_k, std^2 I), centres on a `grid` x `grid` lattice of step `spacing` around 0."""

    def __init__(self, grid: int = 7, spacing: float = 2.0, std: float = 0.05) -> None:
        if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
            raise ValueError(f'grid is {grid!r}; expected an integer >= 1 (modes per side)')
        if not (isinstance(spacing, (int, float)) and math.isfinite(spacing) and spacing > 0):
            raise ValueError(f'spacing is {spacing!r}; expected a finite number > 0')
        if not (isinstance(std, (int, float)) and math.isfinite(std) and std > 0):
            raise ValueError(f'std is {std!r}; expected a finite number > 0')
        self.grid, self.spacing, self.std = grid, float(spacing), float(std)
        ticks = (torch.arange(grid, dtype=torch.float64) - (grid - 1) / 2) * self.spacing   # [grid]
        self.ticks = ticks
        self.centers = torch.cartesian_prod(ticks, ticks)                                   # [K, 2] float64

    @property
    def num_modes(self) -> int:
        return self.centers.shape[0]

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n points [n, 2] float32: a uniformly chosen centre plus std * N(0, I)."""
        k = torch.randint(self.num_modes, [n], generator=generator)
        noise = torch.randn([n, 2], generator=generator, dtype=torch.float64)
        return (self.centers[k] + self.std * noise).float()

    def log_density(self, x: torch.Tensor, sigma: float | torch.Tensor = 0.0) -> torch.Tensor:
        """log p(x; sigma) [N] of the mixture noised by sigma (scalar or [N]), for points x [N, 2]; differentiable."""
        v = self.std ** 2 + torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1) ** 2        # [N or 1, 1]
        d2 = (x[:, None, :] - self.centers.to(x.dtype)[None]).square().sum(-1)               # [N, K]
        log_n = -d2 / (2 * v) - torch.log(2 * math.pi * v)                                   # [N, K] 2-D normal
        return torch.logsumexp(log_n, dim=1) - math.log(self.num_modes)


def mixture_denoise_reference(mixture: GridMixture, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """D(x; sigma) [N, 2] of points x [N, 2] summed over all K centres (the module docstring's first formula), in
    float64: the slow reference of MixtureDenoiser."""
    p = x.double()
    v = mixture.std ** 2 + torch.as_tensor(sigma, dtype=torch.float64).reshape(-1, 1).square()   # [N or 1, 1]
    d2 = (p[:, None, :] - mixture.centers[None]).square().sum(-1)                                  # [N, K]
    r = torch.softmax(-d2 / (2 * v), dim=1)                                                        # [N, K]
    a = mixture.std ** 2 / v
    return a * p + (1 - a) * (r @ mixture.centers)


class MixtureDenoiser(torch.nn.Module):
    """Exact D(x; sigma) of a GridMixture with the edm_bridge Denoiser interface; x is [N, 2, 1, 1]. Evaluated per
    coordinate (the grid's factorised posterior, module docstring)."""

    def __init__(self, mixture: GridMixture) -> None:
        super().__init__()
        self.register_buffer('ticks', mixture.ticks.clone())       # [grid] float64: the centres' coordinates
        self.std = mixture.std
        self.img_resolution = 1
        self.img_channels = 2
        self.label_dim = 0
        self.sigma_min = 0.0
        self.sigma_max = math.inf

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Posterior mean [N, 2, 1, 1] of noisy points x [N, 2, 1, 1] at sigma (scalar or [N]); labels ignored."""
        if x.ndim != 4 or x.shape[1:] != (2, 1, 1):
            raise ValueError(f'x has shape {list(x.shape)}; expected [N, 2, 1, 1] (2-D points as 1x1 images)')
        # float64: responsibilities at std 0.05 and small sigma are ratios of exp(-d^2 / 2v) with d^2 / 2v ~ 1e3.
        p = x.reshape(-1, 2).double()                                                         # [N, 2]
        sigma = torch.as_tensor(sigma, dtype=torch.float64, device=x.device).reshape(-1, 1, 1)  # [N or 1, 1, 1]
        v = self.std ** 2 + sigma.square()                                                    # [N or 1, 1, 1]
        d2 = (p[:, :, None] - self.ticks).square()                                            # [N, 2, grid]
        r = torch.softmax(d2 / (-2 * v), dim=2)                                               # [N, 2, grid]
        a = (self.std ** 2 / v).reshape(-1, 1)                                                # shrink factor
        mean_mu = r @ self.ticks                                                              # [N, 2]
        return (a * p + (1 - a) * mean_mu).to(x.dtype).reshape(x.shape)
