"""How well Diffusion-GAN's per-sample t follows its intended distribution over a stretch of constant T.

The released Diffusion-GAN (Wang et al., ICLR 2023; docs/spec/diffusion.md section 6) draws t from a 64-entry table: 32
entries 0, 32 drawn from {1..T} (uniformly, or with priority weights P(t) ~ t - 1), the table being redrawn every
`interval` (4) iterations. So the t that D sees should follow the mixture

    P(0) = 1/2,   P(t) = w(t) / 2 for t = 1..T,   w uniform 1/T or priority (t - 1) / (T (T - 1) / 2).

This script holds T fixed (t_min = t_max = T), runs the plugin for `--draws` samples of t, `--calls` D evaluations of
`--batch` samples per iteration (3 for Gmain, Dgen and Dreal of the StyleGAN2 loss), and prints the total variation
distance between the histogram of t and that mixture, for both distributions and each T.

    python benchmarks/diffgan_t_histogram.py [--draws 100000] [--batch 32] [--calls 1] [--seed 0] [--T 10,1000]
"""

import click
import numpy as np
import torch

from smart_plugin import DiffGANOptions, DiffusionGAN
from torch_utils import training_stats


def intended_mixture(T: int, ts_dist: str) -> np.ndarray:
    """P(t) for t = 0..T [T + 1]: half at 0, half over 1..T uniformly or with weights t - 1 (as released)."""
    t = np.arange(1, T + 1, dtype=np.float64)
    w = np.full(T, 1 / T) if ts_dist == 'uniform' else (t - 1) / (t - 1).sum()
    return np.concatenate([[0.5], w / 2])


def drawn_t(T: int, ts_dist: str, draws: int, batch: int, calls: int, seed: int) -> np.ndarray:
    """Integer t of `draws` D inputs over consecutive iterations at constant T (the plugin's own RNG use)."""
    torch.manual_seed(seed)
    options = DiffGANOptions(enabled=True, t_min=T, t_max=T, ts_dist=ts_dist)
    plugin = DiffusionGAN(options)
    plugin.setup(G=None, D=None, training_set=None, device=torch.device('cpu'), rank=0, num_gpus=1)
    # Labels hold raw t, or t / t_max (t_embed 'scaled', and the plugin before t_embed existed).
    scale = T if getattr(options, 't_embed', 'scaled') == 'scaled' else 1
    img, c = torch.zeros([batch, 1, 1, 1]), torch.zeros([batch, 0])
    out, total, step = [], 0, 0
    while total < draws:
        for _ in range(calls):
            _, labels = plugin.transform_D_input(img, c)
            out.append((labels[:, -1].double() * scale).round().long())
            total += batch
        training_stats.report('Loss/signs/real', torch.ones([batch]))
        step += 1
        plugin.end_of_step(cur_nimg=step * batch, batch_size=batch)
    return torch.cat(out)[:draws].numpy()


def total_variation(t: np.ndarray, expected: np.ndarray) -> float:
    """1/2 sum |histogram share - expected| over t = 0..T."""
    share = np.bincount(t, minlength=len(expected)) / len(t)
    return float(np.abs(share - expected).sum() / 2)


@click.command()
@click.option('--draws', type=click.IntRange(min=1), default=100_000, show_default=True, help='t values per case')
@click.option('--batch', type=click.IntRange(min=1), default=32, show_default=True, help='Samples per D call')
@click.option('--calls', type=click.IntRange(min=1), default=1, show_default=True, help='D calls per iteration')
@click.option('--seed', type=click.IntRange(min=0), default=0, show_default=True, help='torch seed')
@click.option('--T', 'Ts', default='10,1000', show_default=True, help='Comma-separated chain lengths')
def main(draws: int, batch: int, calls: int, seed: int, Ts: str) -> None:
    print(f'{"ts_dist":<9} {"T":>5} {"TV":>7} {"levels used":>12}   ({draws} draws, {calls} x {batch} per iteration)')
    for ts_dist in ('priority', 'uniform'):
        for T in (int(x) for x in Ts.split(',')):
            t = drawn_t(T, ts_dist, draws, batch, calls, seed)
            tv = total_variation(t, intended_mixture(T, ts_dist))
            print(f'{ts_dist:<9} {T:>5} {tv:>7.4f} {len(np.unique(t)):>6} / {T + 1:<5}')


if __name__ == '__main__':
    main()
