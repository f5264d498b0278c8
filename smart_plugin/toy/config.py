"""Configuration of the 2-D toy of SMaRt (Xia et al., ICML 2024, Figure 2): ToyConfig, the four methods, the arms of
a command (a method and its config overrides; the default command's lambda frontier) and the plugins each method
trains with (the image trainer's own SMaRt and Diffusion-GAN LossPlugins).
"""

import dataclasses

import numpy as np

from smart_plugin import DiffGANOptions, DiffusionGAN, SMaRt, SMaRtOptions
from smart_plugin.toy.mixture import GridMixture, MixtureDenoiser

METHODS = ('vanilla', 'diffgan', 'smart', 'smart_diffgan')   # name -> plugins: see build_plugins.
SIGMA_STEPS = 16   # Geometric sigma grid across SMaRt's band; SMaRt draws t uniformly from its indices.
SHAPE_FIELDS = ('z_dim', 'width', 'depth', 'batch', 'steps', 'eval_every', 'eval_samples', 'num_samples')
# Runs that differ in SHAPE_FIELDS train in separate batched groups (one after the other).
SMART_ESTIMATOR = {'smart_draws': 'draws', 'smart_antithetic': 'antithetic', 'smart_grad': 'grad'}   # -> SMaRtOptions


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    """Everything one toy run depends on (saved into results.json)."""
    grid: int = 7                    # Modes per side.
    spacing: float = 2.0             # Distance between neighbouring centres.
    std: float = 0.05                # Standard deviation of each mode.
    z_dim: int = 8                   # Latent size of G.
    width: int = 128                 # Units per hidden layer of G and D (paper: 128).
    depth: int = 2                   # Hidden layers of G and D (paper: 2).
    batch: int = 256                 # Real and generated points per step.
    steps: int = 2000                # Training iterations (one D and one G step each); after finetune_from if set.
    finetune_from: int = 0           # > 0: train vanilla this many steps first, then branch every method from it.
    lr_G: float = 1e-3               # Adam learning rate of G.
    lr_D: float = 1e-3               # Adam learning rate of D.
    finetune_lr: float | None = None # Adam learning rate of G and D after the branch; None = lr_G and lr_D.
    betas: tuple = (0.5, 0.999)      # Adam betas.
    smart_lam: float = 0.3           # SMaRt lambda (with smart_param's form).
    smart_param: str = 'x0'          # 'eps' (paper) or 'x0' (EDM release) loss form.
    smart_freq: int = 1              # SMaRt on every freq-th iteration.
    smart_sigma: tuple = (0.05, 0.2) # SMaRt sigma band (absolute, data units), geometric grid of SIGMA_STEPS values.
    smart_draws: int = 1             # (t, eps) draws per generated sample, averaged (SMaRtOptions.draws).
    smart_antithetic: bool = False   # Draws in pairs (eps, -eps) with the same t (SMaRtOptions.antithetic).
    smart_grad: str = 'full'         # 'full': through the denoiser (paper); 'sds': denoiser output held constant.
    smart_start: float = 0.5         # Fraction of the steps before SMaRt switches on (plain GAN warm-up).
    diffgan_noise_sd: float = 0.5    # Diffusion-GAN noise scale (data units; the grid spans +-6).
    diffgan_t_max: int = 500         # Longest Diffusion-GAN chain.
    diffgan_target: float = 0.6      # Diffusion-GAN target of E[sign D(real)].
    num_samples: int = 10000         # Points saved and measured per run.
    eval_every: int = 250            # Steps between points of the training curves.
    eval_samples: int = 2000         # Points per curve evaluation (fixed latents: churn follows the same points).

    def __post_init__(self) -> None:
        for name in ('grid', 'z_dim', 'width', 'depth', 'batch', 'steps', 'smart_freq', 'smart_draws', 'num_samples',
                     'eval_every', 'eval_samples', 'diffgan_t_max'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f'{name} is {value!r}; expected an integer >= 1')
        if isinstance(self.finetune_from, bool) or not isinstance(self.finetune_from, int) or self.finetune_from < 0:
            raise ValueError(f'finetune_from is {self.finetune_from!r}; expected an integer >= 0 (0 = off)')
        for name in ('spacing', 'std', 'lr_G', 'lr_D', 'smart_lam', 'diffgan_noise_sd'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0 \
                    or (value == 0 and name != 'smart_lam'):
                raise ValueError(f'{name} is {value!r}; expected a finite number > 0' +
                                 (' (>= 0 for smart_lam)' if name == 'smart_lam' else ''))
        if self.finetune_lr is not None and not (isinstance(self.finetune_lr, (int, float)) and self.finetune_lr > 0):
            raise ValueError(f'finetune_lr is {self.finetune_lr!r}; expected None or a number > 0')
        lo, hi = self.smart_sigma
        if not 0 < lo <= hi:
            raise ValueError(f'smart_sigma is {self.smart_sigma!r}; expected (lo, hi) with 0 < lo <= hi')
        if not 0 <= self.smart_start < 1:
            raise ValueError(f'smart_start is {self.smart_start!r}; expected a fraction in [0, 1)')
        if self.smart_param not in ('eps', 'x0'):
            raise ValueError(f"smart_param is {self.smart_param!r}; expected 'eps' or 'x0'")
        if self.smart_grad not in ('full', 'sds'):
            raise ValueError(f"smart_grad is {self.smart_grad!r}; expected 'full' or 'sds'")
        if self.smart_antithetic and self.smart_draws % 2:
            raise ValueError(f'smart_draws is {self.smart_draws}; expected an even number with smart_antithetic')
        if not 0 <= self.diffgan_target <= 1:
            raise ValueError(f'diffgan_target is {self.diffgan_target!r}; expected a number in [0, 1]')

    @property
    def net_scale(self) -> float:
        """G's output and D's input are in units of this: half the grid's half-width (3 for 7 modes at spacing 2)."""
        return self.spacing * max(self.grid - 1, 1) / 4


# The default command is the fine-tune frontier study: a vanilla GAN per seed trains `finetune_from` steps, then
# every arm of FRONTIER branches from it for `steps` (SMaRt on from the branch, 16 draws unless the arm says 1).
PRESETS = {
    'quick':   dict(finetune_from=3000, steps=1000, smart_draws=16, num_samples=5000, eval_samples=1000),
    'default': dict(finetune_from=6000, steps=2000, smart_draws=16),
}
FRONTIER_LAMS = (1.0, 3.0, 10.0, 30.0, 100.0)   # x0-form lambdas of the default ladder: no effect .. collapse.
PAPER_LAM = 30.0                                 # Where the default also trains the paper's 1-draw estimator.


@dataclasses.dataclass(frozen=True)
class Arm:
    """One branch of a command: a method and the ToyConfig fields it sets on top of the command's config."""
    method: str
    overrides: tuple = ()   # ((field, value), ...), in label order.

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f'method is {self.method!r}; expected one of {list(METHODS)}')

    @property
    def label(self) -> str:
        """Its key in the results: the method, with the overrides in brackets (e.g. smart[smart_lam=10.0])."""
        if not self.overrides:
            return self.method
        return f'{self.method}[' + ','.join(f'{k}={v}' for k, v in self.overrides) + ']'


FRONTIER = (Arm('vanilla'), Arm('diffgan')) + tuple(Arm('smart', (('smart_lam', lam),)) for lam in FRONTIER_LAMS) \
    + (Arm('smart', (('smart_lam', PAPER_LAM), ('smart_draws', 1))),)


def arms_of(methods: tuple, sweep: tuple[str, list] | None = None) -> tuple[Arm, ...]:
    """The arms of --methods x --sweep: every method at every sweep point (sweep = (field, values) or None)."""
    points = [()] if sweep is None else [((sweep[0], v),) for v in sweep[1]]
    return tuple(Arm(m, point) for point in points for m in methods)


def smart_options(cfg: ToyConfig, total_steps: int) -> SMaRtOptions:
    """SMaRt's options for the toy: the sigma band as a geometric list schedule; on after smart_start of the steps."""
    lo, hi = cfg.smart_sigma
    # A list schedule must ascend strictly: a single sigma becomes two that differ in the 7th digit.
    sigmas = np.geomspace(lo, hi, SIGMA_STEPS) if lo < hi else np.array([lo, lo * (1 + 1e-6)])
    extra = {option: getattr(cfg, field) for field, option in SMART_ESTIMATOR.items()}
    return SMaRtOptions(lam=cfg.smart_lam, freq=cfg.smart_freq, t_lo=0, t_hi=len(sigmas) - 1,
                        schedule='list:' + ','.join(f'{s:.9g}' for s in sigmas), param=cfg.smart_param,
                        start_kimg=cfg.smart_start * total_steps * cfg.batch / 1000, **extra)


def build_plugins(method: str, cfg: ToyConfig, mixture: GridMixture) -> list:
    """The LossPlugins of `method`: none, DiffusionGAN, SMaRt with the mixture's exact denoiser, or both."""
    if method not in METHODS:
        raise ValueError(f'method is {method!r}; expected one of {list(METHODS)}')
    plugins = []
    if method in ('diffgan', 'smart_diffgan'):
        # t_embed 'scaled': the toy D is an MLP on [x, c], built for t / t_max (raw t up to 500 would swamp x).
        plugins.append(DiffusionGAN(DiffGANOptions(enabled=True, noise_sd=cfg.diffgan_noise_sd,
                                                   t_max=cfg.diffgan_t_max, target=cfg.diffgan_target,
                                                   t_embed='scaled')))
    if method in ('smart', 'smart_diffgan'):
        plugins.append(SMaRt(smart_options(cfg, cfg.steps), MixtureDenoiser(mixture)))
    return plugins
