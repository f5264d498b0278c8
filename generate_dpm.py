"""Sample a diffusion model (train_dpm.py snapshot, EDM pickle, ADM or NCSNv2 checkpoint) to check it by eye or metrics.

Examples:

\b
  # 64 images with EDM's Heun sampler (18 steps = 35 evaluations) and a grid of them.
  python generate_dpm.py --network=dpm-snapshot-000200.pkl --seeds=0-63 --grid --outdir=out

\b
  # An NCSNv2 snapshot: annealed Langevin over its own training ladder (the default for NCSNv2).
  python generate_dpm.py --network=ncsnv2-snapshot.pkl --seeds=0-15 --outdir=out
  # An official NCSNv2 checkpoint (config.yml beside it): Langevin with the config's step size and steps per level.
  python generate_dpm.py --network=exp/logs/cifar10/checkpoint.pth --seeds=0-15 --outdir=out

\b
  # Print the resolved sampler settings and noise levels without sampling.
  python generate_dpm.py --network=dpm-snapshot-000200.pkl --steps=32 --dry-run

Networks are loaded without running code from the file (rebuilt from our classes); --trusted unpickles normally,
which runs the code stored in the pickle. Every image depends only on its seed, whatever --batch is.
"""

from torch_utils import cpu_threads  # First: OpenMP's wait policy must be set before torch loads (see there).

import dataclasses
import json
import os
import pickle

import click
import torch

from edm_bridge import loading, samplers
from generate import SeedList
from torch_utils import image_io


def _load(network: str, trusted: bool, device: torch.device, ncsnv2_config: str | None) -> torch.nn.Module:
    try:
        return loading.load_denoiser(network, trusted=trusted, device=device, ncsnv2_config=ncsnv2_config)
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as err:
        raise click.ClickException(f'--network {network}: {err}') from None


def _config(net: torch.nn.Module, sampler: str, options: dict) -> samplers.SamplerConfig:
    """Resolve the sampler settings; a ValueError names the flag it came from."""
    try:
        return samplers.resolve_config(net, sampler=None if sampler == 'auto' else sampler, **options)
    except ValueError as err:
        flags = [flag for name, flag in (('sigma_min', '--sigma-min/--sigma-max'), ('num_steps', '--steps'),
                                         ('rho', '--rho')) if str(err).startswith(name)]
        raise click.ClickException(f'{flags[0] if flags else "--sampler"}: {err}') from None


def _save_grid(images: list, outdir: str) -> None:
    gw, gh = image_io.save_uint8_grid(images, os.path.join(outdir, 'grid.png'))
    print(f'grid {gw}x{gh} -> grid.png')


@click.command(help=__doc__)
@click.option('--network', metavar='PATH|URL', required=True, help='Model: train_dpm.py snapshot, EDM pickle, ADM')
@click.option('--outdir', type=click.Path(file_okay=False), default=None, help='Where to save the PNGs')
@click.option('--seeds', type=SeedList(), default='0-63', show_default=True, help='Seeds, e.g. 0-63,100')
@click.option('--batch', 'batch_size', type=click.IntRange(min=1), default=16, show_default=True, help='Batch size')
@click.option('--class', 'class_idx', type=click.IntRange(min=0), default=None, show_default='random per seed',
              help='Class index (conditional models)')
@click.option('--sampler', type=click.Choice(['auto', *samplers.SAMPLERS]), default='auto', show_default=True,
              help='auto = langevin for NCSNv2, heun otherwise')
@click.option('--steps', 'num_steps', type=click.IntRange(min=1), default=None,
              show_default='heun 18; langevin: NCSNv2 ladder, else 100', help='Heun steps / Langevin noise levels')
@click.option('--sigma-min', type=click.FloatRange(min=0, min_open=True), default=None,
              show_default='heun 0.002; langevin 0.02 or the NCSNv2 ladder', help='Lowest noise level ([-1, 1] units)')
@click.option('--sigma-max', type=click.FloatRange(min=0, min_open=True), default=None,
              show_default='80 or the NCSNv2 ladder', help='Highest noise level ([-1, 1] units)')
@click.option('--rho', type=click.FloatRange(min=0, min_open=True), default=7, show_default=True,
              help='Heun: Karras grid exponent')
@click.option('--s-churn', 'S_churn', type=click.FloatRange(min=0), default=0, show_default=True,
              help='Heun: stochasticity (0 = deterministic)')
@click.option('--langevin-steps', 'n_steps_each', type=click.IntRange(min=1), default=None,
              show_default="the NCSNv2 config's, else 5", help='Langevin: steps per noise level')
@click.option('--step-lr', type=click.FloatRange(min=0, min_open=True), default=None,
              show_default=f"the NCSNv2 config's (x4), else {samplers.LANGEVIN_STEP_LR:g}",
              help='Langevin: eps in the step size eps sigma_i^2 / sigma_L^2 ([-1, 1] units)')
@click.option('--ncsnv2-config', metavar='YML', type=click.Path(exists=True, dir_okay=False), default=None,
              show_default='config.yml beside the checkpoint', help='config.yml of an official NCSNv2 checkpoint')
@click.option('--grid/--no-grid', default=False, show_default=True, help='Also save grid.png of all images')
@click.option('--device', type=click.Choice(['auto', 'cpu', 'cuda']), default='auto', show_default=True,
              help='Device (auto = cuda when available)')
@click.option('--trusted', is_flag=True, help='Unpickle normally, RUNNING the code stored in the pickle')
@click.option('--dry-run', is_flag=True, help='Print the resolved settings and noise levels, sample nothing')
def main(network, outdir, seeds, batch_size, class_idx, sampler, grid, device, trusted, dry_run, ncsnv2_config,
         **options):
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if device == 'cuda' and not torch.cuda.is_available():
        raise click.ClickException('--device cuda: no CUDA device is available')
    if outdir is None and not dry_run:
        raise click.ClickException('--outdir: required unless --dry-run')
    device = torch.device(device)
    print(f'Loading "{network}"' + (' (trusted: running its code)' if trusted else ''))
    net = _load(network, trusted, device, ncsnv2_config)
    extra = dict(rho=options.pop('rho'), S_churn=options.pop('S_churn'), n_steps_each=options.pop('n_steps_each'),
                 step_lr=options.pop('step_lr'))
    config = _config(net, sampler, dict(options, **extra))
    try:
        samplers.class_labels_for(net, class_idx, samplers.StackedRandomGenerator('cpu', [0]), torch.device('cpu'))
    except ValueError as err:
        raise click.ClickException(f'--class: {err}') from None
    print(json.dumps(dict(dataclasses.asdict(config), network=network, seeds=len(seeds), class_idx=class_idx),
                     indent=2))
    if dry_run:
        print('noise levels: ' + ' '.join(f'{s:.4g}' for s in config.sigmas().tolist()))
        return
    os.makedirs(outdir, exist_ok=True)
    images = []
    for seed, image in samplers.generate_images(net, seeds, config, class_idx=class_idx, batch_size=batch_size,
                                                device=device):
        image = image_io.to_uint8(image[None])[0]  # [H, W, C]
        image_io.save_png(image, os.path.join(outdir, f'seed{seed:04d}.png'))
        images += [image] if grid else []
        print(f'seed {seed:>6d} -> seed{seed:04d}.png')
    if grid:
        _save_grid(images, outdir)


if __name__ == '__main__':
    main()
