"""Denoising error at the SMaRt band of tiny diffusion models trained with and without STF and band sampling.

One synthetic Gaussian-mixture image dataset (K random RGB templates at res x res plus N(0, noise^2) per pixel,
uint8, written to a temp dir) trains train_dpm.py's `tiny` preset (DDPM++ 16 channels, mult [1, 2], 1 block, no
attention, EDM preconditioning, batch 16, no augmentation) for the same number of steps in four settings:
{plain, STF (--rbatch)} x {no band, band share 0.5}, each over several seeds. Each EMA network is then scored on
held-out images drawn from the same mixture:

    err = E ||D(x + sigma n; sigma) - x||^2 per element,  sigma log-uniform in the SMaRt band (DDPM-linear t 40..60)

reported as err / E[sigma^2] (the identity denoiser's error; lower is better) with mean +- std over seeds, plus the
training time per step (after set-up and the first step). The library is called directly (dpm_training_loop.setup
and training_step: the same steps as training_loop, without ticks or a run directory).

    python benchmarks/dpm_band_error.py [--steps 300] [--seeds 3] [--rbatch 256] [--threads 1]
"""

import io
import os
import statistics
import sys
import tempfile
import time
import zipfile

import click
import numpy as np
import PIL.Image
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import train_dpm  # noqa: E402  (the CLI's config builder: the same tiny preset as `train_dpm.py --preset=tiny`)
from dpm import sigma_dist, training_loop as dpm_training_loop  # noqa: E402


def mixture_images(num: int, seed: int, K: int, res: int, noise: float) -> np.ndarray:
    """uint8 [num, res, res, 3]: template k ~ U{0..K-1} (fixed random templates, values 30..225) + noise."""
    templates = np.random.RandomState(1234).randint(30, 226, size=(K, res, res, 3)).astype(np.float64)
    rnd = np.random.RandomState(seed)
    images = templates[rnd.randint(K, size=num)] + noise * rnd.randn(num, res, res, 3)
    return np.clip(np.rint(images), 0, 255).astype(np.uint8)


def write_zip(path: str, images: np.ndarray) -> str:
    with zipfile.ZipFile(path, 'w') as zf:
        for i, image in enumerate(images):
            buffer = io.BytesIO()
            PIL.Image.fromarray(image).save(buffer, format='PNG')
            zf.writestr(f'img{i:05d}.png', buffer.getvalue())
    return path


def build(data: str, steps: int, seed: int, stf: bool, band: bool, rbatch: int) -> dict:
    """training_loop kwargs from the CLI's own config builder (tiny preset), `steps` steps of batch 16."""
    args = ['--outdir', '-', '--data', data, '--preset', 'tiny', '--workers', '0', '--seed', str(seed),
            '--duration', str(steps * 16 / 1000), '--tick', str(steps * 16 / 1000)]
    args += ['--stf', '--rbatch', str(rbatch)] if stf else []
    args += ['--band-share', '0.5'] if band else []
    ctx = train_dpm.main.make_context('train_dpm.py', args)
    config, _, _ = train_dpm.build_config(train_dpm.dnnlib.EasyDict(ctx.params), num_gpus=1)
    return config


@torch.no_grad()
def band_error_ratio(net: torch.nn.Module, held_out: torch.Tensor, band: tuple[float, float]) -> float:
    """err / E[sigma^2] on held-out images (fixed noise seed, so every network sees the same noisy inputs)."""
    gen = torch.Generator().manual_seed(12345)
    lo, hi = band
    sigma = lo * (hi / lo) ** torch.rand([held_out.shape[0], 1, 1, 1], generator=gen)
    noisy = held_out + sigma * torch.randn(held_out.shape, generator=gen)
    err = (net.eval()(noisy, sigma.flatten()) - held_out).square().mean()
    return float(err / sigma.square().mean())


def run_setting(data: str, held_out: torch.Tensor, steps: int, seeds: int, stf: bool, band: bool,
                rbatch: int, band_sigma: tuple[float, float]) -> tuple[list[float], list[float]]:
    """Band error ratios and sec/step (steps 2.., after set-up and the first step) over the seeds."""
    ratios, sec_per_step = [], []
    for seed in range(seeds):
        config = build(data, steps, seed, stf, band, rbatch)
        for key in ('total_kimg', 'kimg_per_tick', 'snapshot_ticks'):
            del config[key]
        state = dpm_training_loop.setup(**config, log=lambda *args: None)
        dpm_training_loop.training_step(state)
        start = time.perf_counter()
        for _ in range(steps - 1):
            dpm_training_loop.training_step(state)
        sec_per_step.append((time.perf_counter() - start) / max(steps - 1, 1))
        ratios.append(band_error_ratio(state.ema, held_out, band_sigma))
    return ratios, sec_per_step


def _fmt(values: list[float], digits: int = 4) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f'{statistics.mean(values):.{digits}f} +- {std:.{digits}f}'


@click.command()
@click.option('--steps', type=click.IntRange(min=1), default=300, show_default=True, help='Training steps per run')
@click.option('--seeds', type=click.IntRange(min=1), default=3, show_default=True, help='Seeds per setting')
@click.option('--rbatch', type=click.IntRange(min=16), default=256, show_default=True, help='STF reference batch')
@click.option('--templates', type=click.IntRange(min=1), default=16, show_default=True, help='Mixture components K')
@click.option('--res', type=click.IntRange(min=4), default=8, show_default=True, help='Image resolution')
@click.option('--noise', type=click.FloatRange(min=0), default=8.0, show_default=True,
              help='Per-pixel std of each component, in uint8 levels')
@click.option('--num-train', type=click.IntRange(min=16), default=512, show_default=True, help='Training images')
@click.option('--threads', type=click.IntRange(min=1), default=1, show_default=True, help='torch CPU threads')
def main(steps, seeds, rbatch, templates, res, noise, num_train, threads):
    """Print the settings, then one table row per {plain, STF} x {no band, band 0.5} setting."""
    torch.set_num_threads(threads)
    band_sigma = sigma_dist.smart_band('ddpm-linear', 40, 60)
    print(f'Settings: tiny preset, batch 16, {steps} steps x {seeds} seeds per setting, {num_train} training images '
          f'from a {templates}-template {res}x{res} RGB mixture (noise {noise} levels), STF rbatch {rbatch}, band '
          f'DDPM-linear t 40..60 = sigma {band_sigma[0]:.4f}..{band_sigma[1]:.4f}, {threads} thread(s), '
          f'torch {torch.__version__}')
    held_out = torch.from_numpy(mixture_images(512, 1, templates, res, noise)).permute(0, 3, 1, 2).float() / 127.5 - 1
    with tempfile.TemporaryDirectory() as tmp:
        data = write_zip(os.path.join(tmp, 'mixture.zip'), mixture_images(num_train, 0, templates, res, noise))
        print(f'{"setting":<16s} {"err / identity at band (mean +- std)":<38s} sec/step')
        for stf in (False, True):
            for band in (False, True):
                ratios, times = run_setting(data, held_out, steps, seeds, stf, band, rbatch, band_sigma)
                name = ('STF' if stf else 'plain') + (' + band 0.5' if band else '')
                print(f'{name:<16s} {_fmt(ratios):<38s} {_fmt(times, 3)}', flush=True)


if __name__ == '__main__':
    main()
