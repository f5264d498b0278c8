"""The 2-D toy experiment of SMaRt (Xia et al., ICML 2024, Figure 2): configuration, the four methods, and one call
that trains them for several seeds and writes results.json, samples-<method>-seed<k>.npz and the figures.
"""

import dataclasses
import json
import os
import time

import numpy as np
import torch
import tqdm

from smart_plugin import DiffGANOptions, DiffusionGAN, SMaRt, SMaRtOptions
from smart_plugin.toy import metrics, plots
from smart_plugin.toy.mixture import GridMixture, MixtureDenoiser
from smart_plugin.toy.trainer import build_gan, generate, train_step

METHODS = ('vanilla', 'diffgan', 'smart', 'smart_diffgan')   # name -> plugins: see build_plugins.
SIGMA_STEPS = 16   # Geometric sigma grid across SMaRt's band; SMaRt draws t uniformly from its indices.


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    """Everything one toy run depends on (saved into results.json)."""
    grid: int = 7                    # Modes per side.
    spacing: float = 2.0             # Distance between neighbouring centres.
    std: float = 0.05                # Standard deviation of each mode.
    z_dim: int = 8                   # Latent size of G.
    net_scale: float = 3.0           # G's output and D's input are in units of this (half the grid's half-width).
    batch: int = 256                 # Real and generated points per step.
    steps: int = 6000                # Training iterations (one D and one G step each).
    lr_G: float = 1e-3               # Adam learning rate of G.
    lr_D: float = 1e-3               # Adam learning rate of D.
    betas: tuple = (0.5, 0.999)      # Adam betas.
    smart_lam: float = 0.3           # SMaRt lambda (with smart_param's form).
    smart_param: str = 'x0'          # 'eps' (paper) or 'x0' (EDM release) loss form.
    smart_freq: int = 1              # SMaRt on every freq-th iteration.
    smart_sigma: tuple = (0.05, 0.2) # SMaRt sigma band (absolute, data units), geometric grid of SIGMA_STEPS values.
    smart_eps: int = 1               # Independent noise draws per sample in SMaRt's penalty.
    smart_start: float = 0.5         # Fraction of the steps before SMaRt switches on (plain GAN warm-up).
    diffgan_noise_sd: float = 0.5    # Diffusion-GAN noise scale (data units; the grid spans +-6).
    diffgan_t_max: int = 500         # Longest Diffusion-GAN chain.
    num_samples: int = 10000         # Points saved and measured per run.
    eval_every: int = 250            # Steps between points of the training curves.
    eval_samples: int = 2000         # Points per curve evaluation.

    def __post_init__(self) -> None:
        for name in ('grid', 'z_dim', 'batch', 'steps', 'smart_freq', 'smart_eps', 'num_samples', 'eval_every',
                     'eval_samples', 'diffgan_t_max'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f'{name} is {value!r}; expected an integer >= 1')
        lo, hi = self.smart_sigma
        if not 0 < lo <= hi:
            raise ValueError(f'smart_sigma is {self.smart_sigma!r}; expected (lo, hi) with 0 < lo <= hi')
        if not 0 <= self.smart_start < 1:
            raise ValueError(f'smart_start is {self.smart_start!r}; expected a fraction in [0, 1)')


PRESETS = {
    'quick':   dict(steps=1500, num_samples=5000, eval_every=250, eval_samples=1000),
    'default': dict(),
}


def build_plugins(method: str, cfg: ToyConfig, mixture: GridMixture) -> list:
    """The LossPlugins of `method`: none, DiffusionGAN, SMaRt with the mixture's exact denoiser, or both."""
    if method not in METHODS:
        raise ValueError(f'method is {method!r}; expected one of {list(METHODS)}')
    plugins = []
    if method in ('diffgan', 'smart_diffgan'):
        # t_embed 'scaled': the toy D is an MLP on [x, c], built for t / t_max (raw t up to 500 would swamp x).
        plugins.append(DiffusionGAN(DiffGANOptions(enabled=True, noise_sd=cfg.diffgan_noise_sd,
                                                   t_max=cfg.diffgan_t_max, t_embed='scaled')))
    if method in ('smart', 'smart_diffgan'):
        lo, hi = cfg.smart_sigma
        # A list schedule must ascend strictly: a single sigma becomes two that differ in the 7th digit.
        sigmas = np.geomspace(lo, hi, SIGMA_STEPS) if lo < hi else np.array([lo, lo * (1 + 1e-6)])
        start_kimg = cfg.smart_start * cfg.steps * cfg.batch / 1000
        options = SMaRtOptions(lam=cfg.smart_lam, freq=cfg.smart_freq, t_lo=0, t_hi=len(sigmas) - 1,
                               schedule='list:' + ','.join(f'{s:.9g}' for s in sigmas), param=cfg.smart_param,
                               start_kimg=start_kimg)
        plugins.append(SMaRt(options, MixtureDenoiser(mixture)))
    return plugins


def train_one(cfg: ToyConfig, method: str, seed: int, progress: bool = True) -> dict:
    """Train one method with one seed; return final samples [num_samples, 2], metrics and the curves."""
    torch.manual_seed(seed)
    mixture = GridMixture(cfg.grid, cfg.spacing, cfg.std)
    data_gen = torch.Generator().manual_seed(seed)
    gan = build_gan(build_plugins(method, cfg, mixture), cfg.z_dim, cfg.lr_G, cfg.lr_D, tuple(cfg.betas),
                    None, cfg.smart_eps, cfg.net_scale)
    eval_data = mixture.sample(cfg.eval_samples, torch.Generator().manual_seed(10_000 + seed)).numpy()
    centers = mixture.centers.numpy()
    curves = {'step': [], 'hq_share': [], 'modes': [], 'kl': [], 'w1': []}
    start = time.time()
    for step in tqdm.trange(1, cfg.steps + 1, desc=f'{method} seed{seed}', disable=not progress, leave=False):
        train_step(gan, mixture.sample(cfg.batch, data_gen).reshape(-1, 2, 1, 1))
        if step % cfg.eval_every == 0 or step == cfg.steps:
            m = metrics.all_metrics(generate(gan.G, cfg.eval_samples, 20_000 + seed).numpy(), eval_data, centers,
                                    cfg.std)
            curves['step'].append(step)
            for key in ('hq_share', 'modes', 'kl', 'w1'):
                curves[key].append(m[key])
    train_sec = time.time() - start
    samples = generate(gan.G, cfg.num_samples, 30_000 + seed).numpy().astype(np.float32)
    data = mixture.sample(cfg.num_samples, torch.Generator().manual_seed(40_000 + seed)).numpy()
    return {'samples': samples, 'metrics': metrics.all_metrics(samples, data, centers, cfg.std), 'curves': curves,
            'train_sec': train_sec}


def summarize(runs: dict) -> dict:
    """Per method: mean and standard deviation over seeds of every metric."""
    out = {}
    for method, by_seed in runs.items():
        keys = next(iter(by_seed.values()))['metrics'].keys()
        out[method] = {k: {'mean': float(np.mean([r['metrics'][k] for r in by_seed.values()])),
                           'std': float(np.std([r['metrics'][k] for r in by_seed.values()]))} for k in keys}
    return out


def run_toy(cfg: ToyConfig, outdir: str, seeds: list[int], methods: tuple = METHODS, progress: bool = True) -> dict:
    """Train every method for every seed; write results.json, samples-<method>-seed<k>.npz, figure.png (4 panels)
    and curves.png into outdir; return the results dict."""
    for method in methods:
        if method not in METHODS:
            raise ValueError(f'method is {method!r}; expected one of {list(METHODS)}')
    os.makedirs(outdir, exist_ok=True)
    mixture = GridMixture(cfg.grid, cfg.spacing, cfg.std)
    runs = {method: {} for method in methods}
    for seed in seeds:
        for method in methods:
            run = train_one(cfg, method, seed, progress)
            runs[method][seed] = run
            np.savez(os.path.join(outdir, f'samples-{method}-seed{seed}.npz'), samples=run['samples'],
                     centers=mixture.centers.numpy(), std=np.float64(cfg.std))
            if progress:
                print(f'{method:14s} seed {seed}: ' + ', '.join(f'{k} {v:.4g}' for k, v in run['metrics'].items()) +
                      f' ({run["train_sec"]:.1f} s)')
    results = {'config': dataclasses.asdict(cfg), 'seeds': list(seeds),
               'runs': {m: {str(s): {'metrics': r['metrics'], 'curves': r['curves'], 'train_sec': r['train_sec']}
                            for s, r in by_seed.items()} for m, by_seed in runs.items()},
               'summary': summarize(runs)}
    with open(os.path.join(outdir, 'results.json'), 'w') as f:
        json.dump(results, f, indent=1)
    first = seeds[0]
    real = mixture.sample(cfg.num_samples, torch.Generator().manual_seed(40_000 + first)).numpy()
    panels = [('real data', real)] + [(m, runs[m][first]['samples']) for m in ('vanilla', 'diffgan', 'smart')
                                      if m in runs]
    plots.scatter_panels(panels, cfg.spacing * (cfg.grid + 1) / 2).save(os.path.join(outdir, 'figure.png'))
    plots.curve_panels({m: runs[m][first]['curves'] for m in methods}).save(os.path.join(outdir, 'curves.png'))
    return results
