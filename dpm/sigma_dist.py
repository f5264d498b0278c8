"""Training noise-level distributions p(sigma) for the diffusion-model trainer, including SMaRt-band mixtures.

EDM (Karras et al. 2022, section 5 and Table 1) trains each preconditioning with its own p(sigma): log-normal for
EDM, log-uniform for VE, the VP SDE's sigma(t) with t ~ U(eps_t, 1) for VP. NCSNv2 (Song & Ermon 2020) draws
uniformly from a geometric ladder. A score source for SMaRt (Xia et al. 2024) should be trained well where SMaRt
will query it, so `BandMixture` moves a share of the draws into that band [sigma_lo, sigma_hi]:

    p(sigma) = share * p_band(sigma) + (1 - share) * p_base(sigma)

Hence the probability of landing in the band is share + (1 - share) * P_base(band) (`BandMixture.band_mass`): the
requested share is *extra* mass on top of what the base distribution already puts there. `smart_band` maps a
schedule and an integer t range (as given to train.py --smart-t) to the band. Every distribution reports `mass(lo,
hi)` in closed form (used by tests and logs) and `describe()` as JSON-able data stored in snapshots;
`sigma_dist_from_dict` rebuilds it. All sigmas are in EDM units (data in [-1, 1]).
"""

import abc
import math
from typing import Any, Sequence

import torch

from edm_bridge import schedules


def _uniform(n: int, device, generator: torch.Generator | None) -> torch.Tensor:
    """U(0, 1) float64 draws [n] from `generator` (CPU generator draws on the CPU, then moves)."""
    gen_device = generator.device if generator is not None else device
    return torch.rand([n], generator=generator, device=gen_device, dtype=torch.float64).to(device)


def _normal(n: int, device, generator: torch.Generator | None) -> torch.Tensor:
    gen_device = generator.device if generator is not None else device
    return torch.randn([n], generator=generator, device=gen_device, dtype=torch.float64).to(device)


def _check_positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f'{name}={value!r}: expected a finite number > 0')
    return float(value)


def _check_range(lo_name: str, lo: Any, hi_name: str, hi: Any) -> tuple[float, float]:
    lo, hi = _check_positive(lo_name, lo), _check_positive(hi_name, hi)
    if not lo < hi:
        raise ValueError(f'{lo_name}={lo!r}, {hi_name}={hi!r}: expected {lo_name} < {hi_name}')
    return lo, hi


def _normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2))


class SigmaDistribution(abc.ABC):
    """A distribution over noise levels sigma > 0."""

    @abc.abstractmethod
    def sample(self, n: int, device: torch.device | str = 'cpu',
               generator: torch.Generator | None = None) -> torch.Tensor:
        """n float32 noise levels [n] on `device` (global RNG, or `generator`)."""

    @abc.abstractmethod
    def mass(self, lo: float, hi: float) -> float:
        """P(lo <= sigma <= hi), in closed form."""

    @abc.abstractmethod
    def describe(self) -> dict:
        """{'name': ..., parameters}: JSON-able; sigma_dist_from_dict(describe()) rebuilds the distribution."""

    def __repr__(self) -> str:
        params = ', '.join(f'{k}={v!r}' for k, v in self.describe().items() if k != 'name')
        return f'{type(self).__name__}({params})'


class LogNormalSigma(SigmaDistribution):
    """EDM: ln(sigma) ~ N(P_mean, P_std^2) (Karras et al. 2022, Table 1, 'Training')."""

    def __init__(self, P_mean: float = -1.2, P_std: float = 1.2):
        if isinstance(P_mean, bool) or not isinstance(P_mean, (int, float)) or not math.isfinite(P_mean):
            raise ValueError(f'P_mean={P_mean!r}: expected a finite number')
        self.P_mean, self.P_std = float(P_mean), _check_positive('P_std', P_std)

    def sample(self, n, device='cpu', generator=None):
        return (_normal(n, device, generator) * self.P_std + self.P_mean).exp().to(torch.float32)

    def mass(self, lo, hi):
        z = [(math.log(s) - self.P_mean) / self.P_std for s in (lo, hi)]
        return _normal_cdf(z[1]) - _normal_cdf(z[0])

    def describe(self):
        return dict(name='lognormal', P_mean=self.P_mean, P_std=self.P_std)


class LogUniformSigma(SigmaDistribution):
    """VE: ln(sigma) ~ U(ln sigma_min, ln sigma_max) (EDM's VE loss: sigma_min 0.02, sigma_max 100)."""

    def __init__(self, sigma_min: float = 0.02, sigma_max: float = 100.0):
        self.sigma_min, self.sigma_max = _check_range('sigma_min', sigma_min, 'sigma_max', sigma_max)

    def sample(self, n, device='cpu', generator=None):
        u = _uniform(n, device, generator)
        return (self.sigma_min * (self.sigma_max / self.sigma_min) ** u).to(torch.float32)

    def mass(self, lo, hi):
        lo, hi = max(lo, self.sigma_min), min(hi, self.sigma_max)
        return max(0.0, math.log(hi / lo) / math.log(self.sigma_max / self.sigma_min)) if lo < hi else 0.0

    def describe(self):
        return dict(name='loguniform', sigma_min=self.sigma_min, sigma_max=self.sigma_max)


class VPSigma(SigmaDistribution):
    """VP SDE: sigma = sigma(t), sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1), t ~ U(epsilon_t, 1)."""

    def __init__(self, beta_d: float = 19.9, beta_min: float = 0.1, epsilon_t: float = 1e-5):
        self.beta_d, self.beta_min = _check_positive('beta_d', beta_d), _check_positive('beta_min', beta_min)
        self.epsilon_t = _check_positive('epsilon_t', epsilon_t)
        if self.epsilon_t >= 1:
            raise ValueError(f'epsilon_t={epsilon_t!r}: expected a number in (0, 1)')

    def sigma(self, t: torch.Tensor | float) -> torch.Tensor:
        """sigma(t) of the VP SDE, float64."""
        t = torch.as_tensor(t, dtype=torch.float64)
        return ((0.5 * self.beta_d * t ** 2 + self.beta_min * t).exp() - 1).sqrt()

    def t_of(self, sigma: float) -> float:
        """Inverse of sigma(t) (positive root of the quadratic in t)."""
        return (math.sqrt(self.beta_min ** 2 + 2 * self.beta_d * math.log1p(sigma ** 2)) - self.beta_min) / self.beta_d

    def sample(self, n, device='cpu', generator=None):
        t = 1 + _uniform(n, device, generator) * (self.epsilon_t - 1)  # EDM's VPLoss: U(eps_t, 1).
        return self.sigma(t).to(torch.float32)

    def mass(self, lo, hi):
        t_lo, t_hi = max(self.t_of(lo), self.epsilon_t), min(self.t_of(hi), 1.0)
        return max(0.0, (t_hi - t_lo) / (1 - self.epsilon_t))

    def describe(self):
        return dict(name='vp', beta_d=self.beta_d, beta_min=self.beta_min, epsilon_t=self.epsilon_t)


class LadderSigma(SigmaDistribution):
    """Uniform over a discrete ladder of noise levels (NCSNv2's geometric sigmas)."""

    def __init__(self, sigmas: Sequence[float] | torch.Tensor):
        values = [float(s) for s in (sigmas.tolist() if isinstance(sigmas, torch.Tensor) else sigmas)]
        if len(values) == 0 or not all(math.isfinite(s) and s > 0 for s in values):
            raise ValueError(f'sigmas={sigmas!r}: expected a non-empty list of finite numbers > 0')
        self.sigmas = values

    def sample(self, n, device='cpu', generator=None):
        index = (_uniform(n, device, generator) * len(self.sigmas)).long().clamp_max(len(self.sigmas) - 1)
        return torch.tensor(self.sigmas, dtype=torch.float32, device=device)[index]

    def mass(self, lo, hi):
        return sum(lo <= s <= hi for s in self.sigmas) / len(self.sigmas)

    def describe(self):
        return dict(name='ladder', sigmas=list(self.sigmas))


class BandMixture(SigmaDistribution):
    """With probability `share` draw sigma from the band [sigma_lo, sigma_hi] (log-uniform or uniform), else from
    `base`. P(sigma in band) = share + (1 - share) * base.mass(band): `band_mass()`."""

    def __init__(self,
        base: SigmaDistribution,            # The preconditioning's usual p(sigma).
        sigma_lo: float,                    # Lower edge of the band.
        sigma_hi: float,                    # Upper edge of the band.
        share: float,                       # Extra probability put on the band, in [0, 1]; 0 = base only.
        log_uniform: bool = True,           # Band draws uniform in ln(sigma) (True) or in sigma (False).
    ):
        if not isinstance(base, SigmaDistribution):
            raise TypeError(f'base is {type(base).__name__}; expected a SigmaDistribution')
        self.base = base
        self.sigma_lo, self.sigma_hi = _check_range('sigma_lo', sigma_lo, 'sigma_hi', sigma_hi)
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
            raise ValueError(f'share={share!r}: expected a number in [0, 1]')
        self.share, self.log_uniform = float(share), bool(log_uniform)

    def sample(self, n, device='cpu', generator=None):
        in_band = _uniform(n, device, generator) < self.share  # [n] bool
        u = _uniform(n, device, generator)
        if self.log_uniform:
            band = self.sigma_lo * (self.sigma_hi / self.sigma_lo) ** u
        else:
            band = self.sigma_lo + (self.sigma_hi - self.sigma_lo) * u
        base = self.base.sample(n, device, generator).to(torch.float64)
        return torch.where(in_band, band, base).to(torch.float32)

    def mass(self, lo, hi):
        lo_c, hi_c = max(lo, self.sigma_lo), min(hi, self.sigma_hi)
        if lo_c >= hi_c:
            band = 0.0
        elif self.log_uniform:
            band = math.log(hi_c / lo_c) / math.log(self.sigma_hi / self.sigma_lo)
        else:
            band = (hi_c - lo_c) / (self.sigma_hi - self.sigma_lo)
        return self.share * band + (1 - self.share) * self.base.mass(lo, hi)

    def band_mass(self) -> float:
        """P(sigma_lo <= sigma <= sigma_hi) = share + (1 - share) * base.mass(sigma_lo, sigma_hi)."""
        return self.mass(self.sigma_lo, self.sigma_hi)

    def describe(self):
        return dict(name='band', base=self.base.describe(), sigma_lo=self.sigma_lo, sigma_hi=self.sigma_hi,
                    share=self.share, log_uniform=self.log_uniform)


_SCHEDULE_ALIASES = {'linear': 'ddpm-linear', 'cosine': 'ddpm-cosine'}


def smart_band(schedule: str, t_min: int, t_max: int) -> tuple[float, float]:
    """(sigma_lo, sigma_hi) = sigma_hat(t_min), sigma_hat(t_max) of `schedule` (an edm_bridge.schedules spec such as
    'ddpm-linear' or 'karras:1000,0.002,80,7'; 'linear' / 'cosine' mean the DDPM ones), as SMaRt maps its t band."""
    for name, value in (('t_min', t_min), ('t_max', t_max)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f'{name}={value!r}: expected an integer >= 0')
    if t_max <= t_min:
        raise ValueError(f't_min={t_min}, t_max={t_max}: expected t_min < t_max')
    spec = _SCHEDULE_ALIASES.get(schedule, schedule) if isinstance(schedule, str) else schedule
    sched = schedules.parse_schedule(spec)
    if t_max >= sched.num_steps:
        raise ValueError(f't_max={t_max}: expected < {sched.num_steps}, the number of steps of schedule {spec!r}')
    return float(sched.sigma_hat(t_min)), float(sched.sigma_hat(t_max))


def sigma_dist_from_dict(desc: dict) -> SigmaDistribution:
    """Rebuild a distribution from its describe() dict."""
    if not isinstance(desc, dict) or desc.get('name') not in _FROM_DICT:
        raise ValueError(f'sigma distribution {desc!r}: expected a dict with name in {list(_FROM_DICT)}')
    params = {k: v for k, v in desc.items() if k != 'name'}
    if desc['name'] == 'band':
        params['base'] = sigma_dist_from_dict(params.get('base'))
    return _FROM_DICT[desc['name']](**params)


_FROM_DICT = dict(lognormal=LogNormalSigma, loguniform=LogUniformSigma, vp=VPSigma, ladder=LadderSigma,
                  band=BandMixture)
