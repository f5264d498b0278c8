"""Samplers for any denoiser D(x; sigma) (images in [-1, 1], EDM convention; score = (D - x) / sigma^2).

- `edm_sampler`: EDM's deterministic/stochastic 2nd-order Heun sampler on the Karras noise grid (Karras et al. 2022,
  "Elucidating the Design Space of Diffusion-Based Generative Models", Algorithm 2 and eq. 5). num_steps noise levels
  cost 2 num_steps - 1 network evaluations (the last step, to sigma = 0, is a plain Euler step).
- `annealed_langevin`: NCSNv2's annealed Langevin dynamics (Song & Ermon 2020, "Improved Techniques for Training
  Score-Based Generative Models", Algorithm 1): n_steps_each Langevin steps per level with step size
  eps sigma_i^2 / sigma_L^2, then one denoising step x + sigma_L^2 score = D(x; sigma_L).
- `StackedRandomGenerator`: one torch.Generator per seed, so that an image depends only on its seed, not on the batch.
- `resolve_config` / `generate_images`: what generate_dpm.py runs.
"""

import dataclasses
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

SAMPLERS = ('heun', 'langevin')
# NCSNv2's CIFAR-10 step size eps = 6.2e-6 is in [0, 1]-data units; Langevin steps scale with the square of the data
# units, so in our [-1, 1] units it is 4x larger. Tuned for sigma_L = 0.02 ([-1, 1] units).
LANGEVIN_STEP_LR = 4 * 6.2e-6


class StackedRandomGenerator:
    """Per-seed random streams: row i of every draw comes from torch.Generator(seed_i), whatever the batch."""

    def __init__(self, device: torch.device | str, seeds: Sequence[int]) -> None:
        self.generators = [torch.Generator(device).manual_seed(int(seed) % (1 << 32)) for seed in seeds]

    def _stack(self, draw: Callable, size: Sequence[int], **kwargs) -> torch.Tensor:
        if size[0] != len(self.generators):
            raise ValueError(f'size {list(size)} has {size[0]} rows; this generator has {len(self.generators)} seeds')
        return torch.stack([draw(list(size[1:]), generator=gen, **kwargs) for gen in self.generators])

    def randn(self, size: Sequence[int], **kwargs) -> torch.Tensor:
        """Standard normal [N, ...], row i from seed i."""
        return self._stack(torch.randn, size, **kwargs)

    def rand(self, size: Sequence[int], **kwargs) -> torch.Tensor:
        """Uniform [0, 1) [N, ...], row i from seed i."""
        return self._stack(torch.rand, size, **kwargs)

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        return self.randn(x.shape, dtype=x.dtype, layout=x.layout, device=x.device)

    def randint(self, high: int, size: Sequence[int], **kwargs) -> torch.Tensor:
        """Integers in [0, high) [N, ...], row i from seed i."""
        return self._stack(lambda shape, **kw: torch.randint(high, shape, **kw), size, **kwargs)


def _round_sigma(net: torch.nn.Module, sigma: torch.Tensor) -> torch.Tensor:
    """The net's own sigma rounding (iDDPM snaps to its grid); FrozenDenoiser forwards to the wrapped net."""
    for candidate in (net, getattr(net, 'net', None)):
        if candidate is not None and callable(getattr(candidate, 'round_sigma', None)):
            return torch.as_tensor(candidate.round_sigma(sigma), dtype=sigma.dtype, device=sigma.device)
    return sigma


def _denoise(net: Callable, x: torch.Tensor, sigma: torch.Tensor, class_labels: torch.Tensor | None) -> torch.Tensor:
    """D(x; sigma) in float64 for x [N, C, H, W] (float64) at one noise level sigma (0-d); the net runs in float32."""
    sigma_n = sigma.to(device=x.device, dtype=torch.float32).reshape(1).expand(x.shape[0])  # [N], on x's device
    return net(x.to(torch.float32), sigma_n, class_labels).to(torch.float64)


def karras_sigmas(num_steps: int, sigma_min: float, sigma_max: float, rho: float = 7) -> torch.Tensor:
    """EDM eq. 5: sigma_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho, i < N,
    followed by sigma_N = 0; [N + 1] float64, descending."""
    if not (isinstance(num_steps, int) and num_steps >= 1):
        raise ValueError(f'num_steps={num_steps!r}; expected an integer >= 1')
    if not 0 < sigma_min <= sigma_max < float('inf') or not rho > 0:
        raise ValueError(f'sigma_min={sigma_min!r}, sigma_max={sigma_max!r}, rho={rho!r}; expected '
                         '0 < sigma_min <= sigma_max < inf and rho > 0')
    i = torch.arange(num_steps, dtype=torch.float64)
    t = (sigma_max ** (1 / rho) + i / max(num_steps - 1, 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([t, torch.zeros([1], dtype=torch.float64)])


def edm_sampler(net: Callable, latents: torch.Tensor, class_labels: torch.Tensor | None = None, num_steps: int = 18,
                sigma_min: float = 0.002, sigma_max: float = 80, rho: float = 7, S_churn: float = 0, S_min: float = 0,
                S_max: float = float('inf'), S_noise: float = 1,
                randn_like: Callable = torch.randn_like) -> torch.Tensor:
    """EDM Algorithm 2 from latents [N, C, H, W] ~ N(0, I) (scaled by sigma_max here) -> images [N, C, H, W] in
    latents' dtype. sigma_min / sigma_max are clipped to the net's range; S_churn = 0 is the deterministic ODE."""
    sigma_min = max(sigma_min, float(getattr(net, 'sigma_min', 0)))
    sigma_max = min(sigma_max, float(getattr(net, 'sigma_max', float('inf'))))
    t_steps = karras_sigmas(num_steps, sigma_min, sigma_max, rho).to(latents.device)
    t_steps = torch.cat([_round_sigma(net, t_steps[:-1]), t_steps[-1:]])  # [N + 1], t_N = 0
    x_next = latents.to(torch.float64) * t_steps[0]
    for i, (t_cur, t_next) in enumerate(zip(t_steps[:-1], t_steps[1:])):
        x_cur = x_next
        # Churn (Algorithm 2): raise the noise level from t_cur to t_hat by adding fresh noise.
        gamma = min(S_churn / num_steps, np.sqrt(2) - 1) if S_min <= float(t_cur) <= S_max else 0
        t_hat = _round_sigma(net, t_cur + gamma * t_cur)
        x_hat = x_cur + (t_hat ** 2 - t_cur ** 2).clamp(min=0).sqrt() * S_noise * randn_like(x_cur)
        d_cur = (x_hat - _denoise(net, x_hat, t_hat, class_labels)) / t_hat  # dx/dsigma = (x - D) / sigma
        x_next = x_hat + (t_next - t_hat) * d_cur  # Euler step.
        if i < num_steps - 1:  # 2nd-order (Heun) correction, except on the last step to sigma = 0.
            d_prime = (x_next - _denoise(net, x_next, t_next, class_labels)) / t_next
            x_next = x_hat + (t_next - t_hat) * (0.5 * d_cur + 0.5 * d_prime)
    return x_next.to(latents.dtype)


def _noise_like(x: torch.Tensor, generator) -> torch.Tensor:
    """N(0, I) like x from the global RNG (None), a torch.Generator, or an object with randn_like."""
    if generator is None:
        return torch.randn_like(x)
    if isinstance(generator, torch.Generator):
        return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return generator.randn_like(x)


def annealed_langevin(net: Callable, x_init: torch.Tensor, sigmas: Sequence[float] | torch.Tensor,
                      n_steps_each: int = 5, step_lr: float = LANGEVIN_STEP_LR, denoise: bool = True,
                      generator=None, class_labels: torch.Tensor | None = None) -> torch.Tensor:
    """NCSNv2 Algorithm 1 from x_init [N, C, H, W] over descending sigmas [L] ([-1, 1] units): per level,
    x <- x + a_i score + sqrt(2 a_i) z with a_i = step_lr sigma_i^2 / sigma_L^2; then x <- D(x; sigma_L) if denoise.
    generator: None (global RNG), a torch.Generator, or a StackedRandomGenerator (per-seed noise)."""
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64).reshape(-1)
    if len(sigmas) < 1 or not (sigmas > 0).all() or not (sigmas[1:] <= sigmas[:-1]).all():
        raise ValueError(f'sigmas={sigmas.tolist()[:8]}...; expected positive noise levels in descending order')
    if not (isinstance(n_steps_each, int) and n_steps_each >= 1) or not step_lr > 0:
        raise ValueError(f'n_steps_each={n_steps_each!r}, step_lr={step_lr!r}; expected an integer >= 1 and a '
                         'step size > 0')
    x = x_init.to(torch.float64)
    sigma_L = sigmas[-1]
    for sigma in sigmas:
        a = step_lr * (sigma / sigma_L) ** 2
        for _ in range(n_steps_each):
            score = (_denoise(net, x, sigma, class_labels) - x) / sigma ** 2  # Tweedie
            x = x + a * score + (2 * a).sqrt() * _noise_like(x, generator)
    if denoise:
        x = _denoise(net, x, sigma_L, class_labels)  # = x + sigma_L^2 score(x; sigma_L)
    return x.to(x_init.dtype)


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """A resolved sampling recipe (noise levels in the denoiser's [-1, 1] units)."""
    sampler: str                        # 'heun' (edm_sampler) or 'langevin' (annealed_langevin).
    num_steps: int                      # heun: Karras grid steps; langevin: number of noise levels L.
    sigma_min: float                    # Smallest noise level.
    sigma_max: float                    # Largest noise level.
    rho: float = 7                      # heun: Karras grid exponent.
    S_churn: float = 0                  # heun: stochasticity (0 = deterministic ODE).
    n_steps_each: int = 5               # langevin: steps per noise level.
    step_lr: float = LANGEVIN_STEP_LR   # langevin: eps of the step size eps sigma_i^2 / sigma_L^2.

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise ValueError(f'sampler={self.sampler!r}; expected one of {list(SAMPLERS)}')
        karras_sigmas(self.num_steps, self.sigma_min, self.sigma_max, self.rho)  # Validates steps, sigmas, rho.
        if self.S_churn < 0 or not (isinstance(self.n_steps_each, int) and self.n_steps_each >= 1) \
                or not self.step_lr > 0:
            raise ValueError(f'S_churn={self.S_churn!r}, n_steps_each={self.n_steps_each!r}, step_lr={self.step_lr!r}; '
                             'expected S_churn >= 0, an integer n_steps_each >= 1 and step_lr > 0')

    def sigmas(self) -> torch.Tensor:
        """The noise levels visited, descending, float64: Karras grid (with the final 0) or the geometric ladder."""
        if self.sampler == 'heun':
            return karras_sigmas(self.num_steps, self.sigma_min, self.sigma_max, self.rho)
        return torch.tensor(np.geomspace(self.sigma_max, self.sigma_min, self.num_steps), dtype=torch.float64)


def _unwrap(net: torch.nn.Module) -> torch.nn.Module:
    """The network inside a FrozenDenoiser (or the net itself)."""
    inner = getattr(net, 'net', None)
    return inner if isinstance(inner, torch.nn.Module) else net


NCSNV2_CLASSES = ('NCSNv2Precond', 'NCSNv2CheckpointDenoiser')  # Ours (train_dpm.py) and the official checkpoints.


def is_ncsnv2(net: torch.nn.Module) -> bool:
    """True for an NCSNv2 denoiser (NCSNV2_CLASSES, also one rebuilt from a pickle's own source), bare or inside a
    FrozenDenoiser."""
    return type(_unwrap(net)).__name__ in NCSNV2_CLASSES


def resolve_config(net: torch.nn.Module, sampler: str | None = None, num_steps: int | None = None,
                   sigma_min: float | None = None, sigma_max: float | None = None, n_steps_each: int | None = None,
                   step_lr: float | None = None, **kwargs) -> SamplerConfig:
    """Fill the unset options from the net: NCSNv2 -> Langevin over its own training ladder (with the step size and
    steps per level of its config, when an official checkpoint has them); otherwise Heun with EDM's 18 steps over
    [0.002, 80] (Langevin: 100 levels over [0.02, 80]), clipped to the net's sigma range."""
    inner = _unwrap(net)
    sampler = sampler or ('langevin' if is_ncsnv2(net) else 'heun')
    if n_steps_each is None:
        n_steps_each = getattr(inner, 'langevin_steps_each', None) or 5
    if step_lr is None:
        step_lr = getattr(inner, 'langevin_step_lr', None) or LANGEVIN_STEP_LR
    kwargs.update(n_steps_each=n_steps_each, step_lr=step_lr)
    if sampler == 'langevin' and is_ncsnv2(net):
        defaults = (inner.num_scales, float(inner.sigma_min), float(inner.sigma_max))
    else:
        defaults = (18, 0.002, 80.0) if sampler == 'heun' else (100, 0.02, 80.0)
    lo, hi = float(getattr(net, 'sigma_min', 0)), float(getattr(net, 'sigma_max', float('inf')))
    return SamplerConfig(sampler=sampler, num_steps=num_steps if num_steps is not None else defaults[0],
                         sigma_min=sigma_min if sigma_min is not None else max(defaults[1], lo),
                         sigma_max=sigma_max if sigma_max is not None else min(defaults[2], hi), **kwargs)


def class_labels_for(net: torch.nn.Module, class_idx: int | None, rnd: StackedRandomGenerator,
                     device: torch.device) -> torch.Tensor | None:
    """One-hot labels [N, label_dim]: class_idx for all, or a per-seed random class; None for unconditional nets."""
    label_dim = int(getattr(net, 'label_dim', 0))
    if label_dim == 0:
        if class_idx is not None:
            raise ValueError(f'class_idx={class_idx} given, but the network is unconditional (label_dim = 0)')
        return None
    if class_idx is not None and not 0 <= class_idx < label_dim:
        raise ValueError(f'class_idx={class_idx} is out of range; expected 0..{label_dim - 1}')
    n = len(rnd.generators)
    if class_idx is not None:
        index = torch.full([n], class_idx)
    else:  # Drawn on the generators' device: a CUDA generator cannot draw a CPU tensor.
        index = rnd.randint(label_dim, [n, 1], device=device).reshape(n)
    return torch.eye(label_dim, device=device)[index.to(device)]


@torch.no_grad()
def generate_images(net: torch.nn.Module, seeds: Sequence[int], config: SamplerConfig, class_idx: int | None = None,
                    batch_size: int = 8, device: torch.device | str = 'cpu') -> Iterator[tuple[int, torch.Tensor]]:
    """Yield (seed, image [C, H, W] float32 in [-1, 1], clipped) per seed, in order, sampling batch_size at a time.
    Heun starts from N(0, I) latents, Langevin from U[-1, 1] (NCSNv2's uniform init); all noise is per seed."""
    device = torch.device(device)
    shape = [int(net.img_channels), int(net.img_resolution), int(net.img_resolution)]
    for start in range(0, len(seeds), batch_size):
        batch = list(seeds[start:start + batch_size])
        rnd = StackedRandomGenerator(device, batch)
        if config.sampler == 'heun':
            latents = rnd.randn([len(batch)] + shape, device=device)
            labels = class_labels_for(net, class_idx, rnd, device)  # After the latents, as EDM's generate.py.
            images = edm_sampler(net, latents, labels, num_steps=config.num_steps, sigma_min=config.sigma_min,
                                 sigma_max=config.sigma_max, rho=config.rho, S_churn=config.S_churn,
                                 randn_like=rnd.randn_like)
        else:
            x_init = rnd.rand([len(batch)] + shape, device=device) * 2 - 1
            labels = class_labels_for(net, class_idx, rnd, device)
            images = annealed_langevin(net, x_init, config.sigmas(), n_steps_each=config.n_steps_each,
                                       step_lr=config.step_lr, generator=rnd, class_labels=labels)
        yield from zip(batch, images.clamp(-1, 1).cpu())
