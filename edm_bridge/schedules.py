"""Timestep -> noise-level schedules that map a model's integer step t to an EDM noise level sigma_hat.

Every schedule is a grid of `num_steps` EDM-equivalent noise levels sigma_hat_t = sigma_t / alpha_t (Karras et al.
2022, "Elucidating the Design Space of Diffusion-Based Generative Models", eq. 12 with data in [-1, 1]), ascending in
t. The same integer t means very different noise in different schedules (docs/spec/diffusion.md section 1), so callers
pick one explicitly and print `describe()` at start-up.

  ddpm-linear  Ho et al. 2020: beta = linspace(1e-4, 0.02) * 1000 / num_steps, alpha_bar_t = prod_{s<=t} (1 - beta_s).
  ddpm-cosine  Nichol & Dhariwal 2021: f(u) = cos^2(((u + 0.008) / 1.008) pi/2), beta_s = min(1 - f((s+1)/T)/f(s/T),
               0.999).
  karras       sigma_t = (sigma_min^(1/rho) + t / (N-1) (sigma_max^(1/rho) - sigma_min^(1/rho)))^rho (ascending).
  vp           EDM's continuous VP SDE sigma(u) = sqrt(exp(beta_d u^2 / 2 + beta_min u) - 1) sampled at
               u_t = eps_t + (1 - eps_t) t / (M - 1), so t = 0 is u = eps_t and t = M-1 is u = 1.
  list         An explicit ascending list of sigmas.

For DDPM schedules sigma_hat_t = sqrt((1 - alpha_bar_t) / alpha_bar_t) and alpha_t = 1 / sqrt(1 + sigma_hat_t^2).
"""

import abc
import dataclasses
import math
from typing import Callable, Sequence

import numpy as np
import torch

Steps = int | np.ndarray | torch.Tensor            # Integer timestep(s).
Sigmas = float | np.ndarray | torch.Tensor         # Noise level(s).


@dataclasses.dataclass(frozen=True)
class NoiseSchedule(abc.ABC):
    """Base class: a strictly ascending grid of sigma_hat over the integer steps t = 0..num_steps-1."""

    num_steps: int = 1000                   # Number of integer timesteps.

    def __post_init__(self) -> None:
        if isinstance(self.num_steps, bool) or not isinstance(self.num_steps, (int, np.integer)) or self.num_steps < 2:
            raise ValueError(f'num_steps={self.num_steps!r}: expected an integer >= 2')
        self._validate()
        grid = np.asarray(self._compute_grid(), dtype=np.float64)  # [num_steps]
        assert grid.shape == (self.num_steps,) and np.all(np.diff(grid) > 0), 'schedule grid must ascend strictly'
        object.__setattr__(self, '_grid', grid)
        object.__setattr__(self, '_log_grid_t', torch.from_numpy(np.log(grid)))

    def _validate(self) -> None:
        """Check the subclass parameters; raise ValueError naming the bad one."""

    @abc.abstractmethod
    def _compute_grid(self) -> np.ndarray:
        """The subclass's noise levels sigma_hat_t, t = 0..num_steps-1 (float64, strictly ascending)."""

    @property
    def sigma_grid(self) -> np.ndarray:
        """All noise levels sigma_hat_t, t = 0..num_steps-1, float64 ascending (a copy)."""
        return self._grid.copy()

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """Registry name of this schedule."""

    @property
    def sigma_min(self) -> float:
        """sigma_hat at t = 0."""
        return float(self._grid[0])

    @property
    def sigma_max(self) -> float:
        """sigma_hat at t = num_steps-1."""
        return float(self._grid[-1])

    def sigma_hat(self, t: Steps) -> Sigmas:
        """EDM noise level of integer step(s) t: float for an int, float64 array / tensor (on t's device) otherwise."""
        if isinstance(t, torch.Tensor):
            if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
                raise TypeError(f't has dtype {t.dtype}: expected an integer tensor of timesteps')
            _check_t_range(int(t.min()) if t.numel() else 0, int(t.max()) if t.numel() else 0, self.num_steps)
            return torch.from_numpy(self._grid).to(t.device)[t.long()]
        t_np = np.asarray(t)
        if t_np.dtype.kind not in 'iu':
            raise TypeError(f't={t!r}: expected an integer or an integer array of timesteps')
        if t_np.size:
            _check_t_range(int(t_np.min()), int(t_np.max()), self.num_steps)
        out = self._grid[t_np]
        return float(out) if out.ndim == 0 else out

    def t_for_sigma(self, sigma: Sigmas) -> Steps:
        """Nearest integer step(s) to noise level(s) sigma, nearest in log(sigma): int, int64 array or int64 tensor."""
        if isinstance(sigma, torch.Tensor):
            s = sigma.detach().to(torch.float64)
            if not bool((s >= 0).all()):
                raise ValueError(f'sigma={sigma}: expected non-negative noise levels (no NaN)')
            return _nearest_log(self._log_grid_t.to(s.device), s.log())
        s_np = np.asarray(sigma, dtype=np.float64)
        if not np.all(s_np >= 0):
            raise ValueError(f'sigma={sigma!r}: expected non-negative noise levels (no NaN)')
        with np.errstate(divide='ignore'):  # sigma = 0 -> log = -inf -> step 0, which is wanted.
            t = _nearest_log(self._log_grid_t, torch.from_numpy(np.log(np.atleast_1d(s_np)))).numpy()
        return int(t[0]) if s_np.ndim == 0 else t.reshape(s_np.shape)

    def describe(self) -> str:
        """One line naming the schedule, its parameters and the sigma range (for start-up logs)."""
        params = ', '.join(f'{f.name}={getattr(self, f.name)}' for f in dataclasses.fields(self)
                           if f.name not in ('sigmas', 'beta_schedule'))
        return (f'{self.name}({params}): t in [0, {self.num_steps - 1}] -> sigma_hat in '
                f'[{self.sigma_min:.4g}, {self.sigma_max:.4g}]')


def _check_t_range(t_min: int, t_max: int, num_steps: int) -> None:
    if t_min < 0 or t_max >= num_steps:
        raise ValueError(f't spans [{t_min}, {t_max}]: expected timesteps in [0, {num_steps - 1}]')


def _nearest_log(log_grid: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """Index of the grid point nearest to each log_sigma (ties go to the lower step)."""
    hi = torch.searchsorted(log_grid, log_sigma.contiguous()).clamp(1, log_grid.numel() - 1)  # Upper neighbour.
    lo = hi - 1
    take_hi = (log_grid[hi] - log_sigma) < (log_sigma - log_grid[lo])
    return torch.where(take_hi, hi, lo)


@dataclasses.dataclass(frozen=True)
class DDPMSchedule(NoiseSchedule):
    """Discrete-time DDPM schedule (ADM's native timesteps); `alpha_bar` holds the cumulative signal products."""

    beta_schedule: str = 'linear'           # 'linear' (Ho et al. 2020) or 'cosine' (Nichol & Dhariwal 2021).

    @property
    def name(self) -> str:
        return f'ddpm-{self.beta_schedule}'

    def _validate(self) -> None:
        if self.beta_schedule not in ('linear', 'cosine'):
            raise ValueError(f"beta_schedule={self.beta_schedule!r}: expected 'linear' or 'cosine'")

    @property
    def betas(self) -> np.ndarray:
        """Per-step beta_t, float64 [num_steps]."""
        T = self.num_steps
        if self.beta_schedule == 'linear':
            scale = 1000 / T  # Keeps the 1000-step endpoints' total noise for other step counts (as ADM does).
            return np.linspace(scale * 1e-4, scale * 0.02, T, dtype=np.float64)
        f = lambda u: np.cos((u + 0.008) / 1.008 * np.pi / 2) ** 2
        s = np.arange(T, dtype=np.float64)
        return np.minimum(1 - f((s + 1) / T) / f(s / T), 0.999)  # The clip only bites at the last step.

    @property
    def alpha_bar(self) -> np.ndarray:
        """alpha_bar_t = prod_{s<=t} (1 - beta_s), float64 [num_steps]."""
        return np.cumprod(1 - self.betas)

    def _compute_grid(self) -> np.ndarray:
        alpha_bar = self.alpha_bar
        return np.sqrt((1 - alpha_bar) / alpha_bar)


@dataclasses.dataclass(frozen=True)
class KarrasSchedule(NoiseSchedule):
    """EDM's rho-spaced sigma grid, reversed so t = 0 is sigma_min (SMaRt's t for EDM networks)."""

    # These fields shadow the base class's sigma_min / sigma_max properties; the grid's endpoints equal them exactly.
    sigma_min: float = 0.002                # Lowest noise level (t = 0).
    sigma_max: float = 80.0                 # Highest noise level (t = num_steps-1).
    rho: float = 7.0                        # Spacing exponent; larger packs more steps near sigma_min.

    @property
    def name(self) -> str:
        return 'karras'

    def _validate(self) -> None:
        if not 0 < self.sigma_min < self.sigma_max < math.inf:
            raise ValueError(f'sigma_min={self.sigma_min!r}, sigma_max={self.sigma_max!r}: expected '
                             f'0 < sigma_min < sigma_max < inf')
        if not 0 < self.rho < math.inf:
            raise ValueError(f'rho={self.rho!r}: expected a positive number')

    def _compute_grid(self) -> np.ndarray:
        u = np.arange(self.num_steps, dtype=np.float64) / (self.num_steps - 1)
        lo, hi = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
        grid = (lo + u * (hi - lo)) ** self.rho
        grid[[0, -1]] = self.sigma_min, self.sigma_max  # Undo the last-ulp error of the power round trip.
        return grid


@dataclasses.dataclass(frozen=True)
class VPSchedule(NoiseSchedule):
    """EDM's continuous VP SDE (Song et al. 2021) on a uniform grid of num_steps times in [eps_t, 1]."""

    beta_d: float = 19.9                    # Linear growth of beta(u).
    beta_min: float = 0.1                   # beta(0).
    eps_t: float = 1e-5                     # Smallest continuous time (t = 0 maps here).

    @property
    def name(self) -> str:
        return 'vp'

    def _validate(self) -> None:
        if not (self.beta_d >= 0 and self.beta_min >= 0 and self.beta_d + self.beta_min > 0):
            raise ValueError(f'beta_d={self.beta_d!r}, beta_min={self.beta_min!r}: expected non-negative values, '
                             f'not both zero')
        if not 0 < self.eps_t < 1:
            raise ValueError(f'eps_t={self.eps_t!r}: expected a number in (0, 1)')

    def continuous_time(self, t: np.ndarray) -> np.ndarray:
        """Continuous VP time u_t = eps_t + (1 - eps_t) t / (num_steps - 1) of integer step(s) t."""
        return self.eps_t + (1 - self.eps_t) * np.asarray(t, dtype=np.float64) / (self.num_steps - 1)

    def sigma_continuous(self, u: np.ndarray) -> np.ndarray:
        """sigma(u) = sqrt(exp(beta_d u^2 / 2 + beta_min u) - 1) for continuous time u."""
        u = np.asarray(u, dtype=np.float64)
        return np.sqrt(np.expm1(0.5 * self.beta_d * u ** 2 + self.beta_min * u))

    def _compute_grid(self) -> np.ndarray:
        return self.sigma_continuous(self.continuous_time(np.arange(self.num_steps)))


@dataclasses.dataclass(frozen=True)
class ListSchedule(NoiseSchedule):
    """An explicit strictly ascending list of sigmas; t indexes the list."""

    sigmas: tuple = ()                      # Noise levels, positive and strictly ascending.
    num_steps: int = dataclasses.field(init=False, default=0)

    @property
    def name(self) -> str:
        return 'list'

    def __post_init__(self) -> None:
        sigmas = tuple(float(s) for s in self.sigmas)
        if len(sigmas) < 2 or not all(0 < s < math.inf for s in sigmas) or any(b <= a for a, b in zip(sigmas,
                                                                                                    sigmas[1:])):
            raise ValueError(f'sigmas={list(self.sigmas)}: expected at least two positive, finite, strictly '
                             f'ascending noise levels')
        object.__setattr__(self, 'sigmas', sigmas)
        object.__setattr__(self, 'num_steps', len(sigmas))
        super().__post_init__()

    def _compute_grid(self) -> np.ndarray:
        return np.array(self.sigmas, dtype=np.float64)


def _ddpm_linear(num_steps: int = 1000) -> DDPMSchedule:
    return DDPMSchedule(num_steps=num_steps, beta_schedule='linear')


def _ddpm_cosine(num_steps: int = 1000) -> DDPMSchedule:
    return DDPMSchedule(num_steps=num_steps, beta_schedule='cosine')


def _karras(num_steps: int = 1000, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0
            ) -> KarrasSchedule:
    return KarrasSchedule(num_steps=num_steps, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho)


def _vp(num_steps: int = 1000, beta_d: float = 19.9, beta_min: float = 0.1, eps_t: float = 1e-5) -> VPSchedule:
    return VPSchedule(num_steps=num_steps, beta_d=beta_d, beta_min=beta_min, eps_t=eps_t)


def _list(sigmas: Sequence[float]) -> ListSchedule:
    return ListSchedule(sigmas=tuple(sigmas))


# name -> (factory, parameter names in parse_schedule's positional order, parameter types).
_SCHEDULES: dict[str, tuple[Callable[..., NoiseSchedule], tuple[str, ...], tuple[type, ...]]] = {
    'ddpm-linear': (_ddpm_linear, ('num_steps',), (int,)),
    'ddpm-cosine': (_ddpm_cosine, ('num_steps',), (int,)),
    'karras':      (_karras, ('num_steps', 'sigma_min', 'sigma_max', 'rho'), (int, float, float, float)),
    'vp':          (_vp, ('num_steps', 'beta_d', 'beta_min', 'eps_t'), (int, float, float, float)),
    'list':        (_list, ('sigmas',), (float,)),
}


def get_schedule(name: str, **kwargs) -> NoiseSchedule:
    """Build the schedule registered as `name` ('ddpm-linear', 'ddpm-cosine', 'karras', 'vp', 'list')."""
    if name not in _SCHEDULES:
        raise ValueError(f'schedule name={name!r}: expected one of {list(_SCHEDULES)}')
    factory, params, _ = _SCHEDULES[name]
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise TypeError(f'schedule {name!r} got unknown parameter(s) {unknown}: expected some of {list(params)}')
    if name == 'list' and 'sigmas' not in kwargs:
        raise TypeError("schedule 'list' needs sigmas=[...]")
    return factory(**kwargs)


def parse_schedule(spec: str) -> NoiseSchedule:
    """Parse a CLI string 'name' or 'name:v1,v2,...' (values in the registry's positional order) into a schedule.

    Examples: 'karras', 'karras:1000,0.002,80,7', 'ddpm-cosine', 'vp:1000', 'list:0.01,0.02,0.05'.
    """
    if not isinstance(spec, str):
        raise TypeError(f'schedule={spec!r}: expected a string such as "karras:1000,0.002,80,7"')
    name, _, args = spec.strip().partition(':')
    if name not in _SCHEDULES:
        raise ValueError(f'schedule={spec!r}: unknown name {name!r}; expected one of {list(_SCHEDULES)}')
    _, params, types = _SCHEDULES[name]
    values = [v.strip() for v in args.split(',')] if args.strip() else []
    if name == 'list':
        try:
            return get_schedule('list', sigmas=[float(v) for v in values])
        except ValueError as e:
            raise ValueError(f'schedule={spec!r}: {e}') from None
    if len(values) > len(params):
        raise ValueError(f'schedule={spec!r}: {name!r} takes at most {len(params)} value(s) ({",".join(params)})')
    kwargs = {}
    for param, typ, text in zip(params, types, values):
        try:
            kwargs[param] = typ(text)
        except ValueError:
            raise ValueError(f'schedule={spec!r}: {param}={text!r} is not a valid {typ.__name__}') from None
    return get_schedule(name, **kwargs)
