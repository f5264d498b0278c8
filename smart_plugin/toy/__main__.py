"""CLI of the 2-D toy of SMaRt (Xia et al., ICML 2024, Figure 2): python -m smart_plugin.toy --outdir runs/toy.

Without --methods and --sweep it runs the default study, the lambda frontier (config.FRONTIER); with either, every
method at every sweep point."""

import dataclasses
import json
import os
import typing

import click
import torch

from smart_plugin.toy.config import FRONTIER, FRONTIER_LAMS, METHODS, PRESETS, ToyConfig, arms_of
from smart_plugin.toy.experiment import run_toy
from smart_plugin.toy.frontier import table_lines

# ToyConfig field -> flag, where the flag is not --field-name.
FLAGS = {'lr_G': '--lr-G', 'lr_D': '--lr-D', 'diffgan_t_max': '--diffgan-tmax'}
NOT_SWEPT = ('finetune_from', 'betas', 'grid')   # One value per command.


def flag_of(field: str) -> str:
    return FLAGS.get(field, '--' + field.replace('_', '-'))


def _parse_list(flag: str, text: str, kind: type) -> list:
    try:
        values = [kind(v) for v in text.split(',') if v.strip()]
    except ValueError:
        raise click.ClickException(f'{flag}: {text!r} is not a comma-separated list of {kind.__name__}s') from None
    if not values:
        raise click.ClickException(f'{flag}: {text!r} is empty; expected at least one value')
    return values


def _sweep_value(field: str, text: str):
    """One sweep value of ToyConfig field `field` from text ('LO/HI' for the sigma band, true/false for flags)."""
    kind = typing.get_type_hints(ToyConfig)[field]
    if field == 'smart_sigma':
        lo, hi = text.split('/')
        return (float(lo), float(hi))
    if kind is bool:
        if text.lower() not in ('true', 'false', '1', '0'):
            raise ValueError(text)
        return text.lower() in ('true', '1')
    if kind is int:
        return int(text)
    if kind is str:
        return text
    return float(text)


def parse_sweep(text: str | None) -> tuple[str, list] | None:
    """--sweep NAME=V1,V2,... -> (ToyConfig field, values); NAME is a flag with or without '--' or a field name."""
    if text is None:
        return None
    name, sep, values = text.partition('=')
    fields = {flag_of(f.name).lstrip('-').lower(): f.name for f in dataclasses.fields(ToyConfig)
              if f.name not in NOT_SWEPT}
    field = fields.get(name.strip().lstrip('-').replace('_', '-').lower())
    if not sep or field is None:
        raise click.ClickException(f'--sweep: {text!r} is not NAME=V1,V2,... with NAME one of {sorted(fields)}')
    try:
        swept = [_sweep_value(field, v.strip()) for v in values.split(',') if v.strip()]
    except ValueError:
        raise click.ClickException(f'--sweep: {values!r} are not values of {flag_of(field)}'
                                   + (' (LO/HI pairs)' if field == 'smart_sigma' else '')) from None
    if len(swept) < 1:
        raise click.ClickException(f'--sweep: {text!r} has no values; expected NAME=V1,V2,...')
    return field, swept


def build_config(quick: bool, overrides: dict) -> ToyConfig:
    """The preset (quick or default) with the given non-None overrides; ValueError names the field. SMaRt starts at
    the branch when fine-tuning and after half the steps from scratch, unless smart_start is given."""
    fields = dict(PRESETS['quick' if quick else 'default'])
    fields.update({k: v for k, v in overrides.items() if v is not None})
    if overrides.get('smart_start') is None:
        fields['smart_start'] = 0.0 if fields.get('finetune_from', 0) else 0.5
    return ToyConfig(**fields)


def _error(err: ValueError) -> click.ClickException:
    field = str(err).split(' ')[0]   # ToyConfig's messages start with the field name.
    return click.ClickException(f'{flag_of(field)}: {err}')


POS_FLOAT = click.FloatRange(min=0, min_open=True)
POS_INT = click.IntRange(min=1)


@click.command(context_settings={'show_default': True})
@click.option('--outdir', default='runs/toy', metavar='DIR', help='Where results.json, the .npz samples and PNGs go')
@click.option('--quick', is_flag=True, help='Short budget (1 seed, 3000 steps, then 1000 per arm)')
@click.option('--seeds', metavar='LIST', default=None,
              help='Comma-separated seeds  [default: 0 with --quick, else 0,1,2]')
@click.option('--methods', metavar='LIST', default=None,
              help=f'Methods to train, each at every --sweep point, instead of the lambda frontier (control, '
              f'Diffusion-GAN, SMaRt lambda {",".join(f"{v:g}" for v in FRONTIER_LAMS)}; a 1-draw arm)  '
              f'[default: the frontier; {",".join(METHODS)} with --sweep]')
@click.option('--steps', type=POS_INT, default=None, help='Training iterations (after the branch with --finetune-from) '
              ' [default: 2000; 1000 with --quick]')
@click.option('--finetune-from', type=click.IntRange(min=0), default=None,
              help='Train vanilla this many steps, then branch every arm from it; vanilla is the paired control; 0: '
              'every arm from scratch  [default: 6000; 3000 with --quick]')
@click.option('--lr', type=POS_FLOAT, default=None, help='Adam lr of G and D  [default: 1e-3]')
@click.option('--lr-G', 'lr_G', type=POS_FLOAT, default=None, help='Adam lr of G (overrides --lr)')
@click.option('--lr-D', 'lr_D', type=POS_FLOAT, default=None, help='Adam lr of D (overrides --lr)')
@click.option('--finetune-lr', type=POS_FLOAT, default=None,
              help='Adam lr of G and D after the branch  [default: as before]')
@click.option('--batch', type=POS_INT, default=None, help='Points per step  [default: 256]')
@click.option('--z-dim', type=POS_INT, default=None, help='Latent size  [default: 8]')
@click.option('--width', type=POS_INT, default=None, help='Hidden units per layer  [default: 128]')
@click.option('--depth', type=POS_INT, default=None, help='Hidden layers of G and D  [default: 2]')
@click.option('--spacing', type=POS_FLOAT, default=None, help='Distance between centres  [default: 2]')
@click.option('--std', type=POS_FLOAT, default=None, help='Std of each mode  [default: 0.05]')
@click.option('--smart-lam', type=click.FloatRange(min=0), default=None,
              help='SMaRt lambda, with --methods or --sweep (the frontier sets it per arm)  [default: 0.3]')
@click.option('--smart-param', type=click.Choice(['eps', 'x0']), default=None, help='SMaRt loss form  [default: x0]')
@click.option('--smart-freq', type=POS_INT, default=None, help='SMaRt every freq-th step  [default: 1]')
@click.option('--smart-sigma', metavar='LO,HI', default=None,
              help='SMaRt sigma band in data units  [default: 0.05,0.2]')
@click.option('--smart-draws', type=POS_INT, default=None,
              help='(t, eps) draws per sample, averaged  [default: 16; the frontier\'s paper arm 1]')
@click.option('--smart-antithetic', is_flag=True, default=None, help='Draws in pairs (eps, -eps); even --smart-draws')
@click.option('--smart-grad', type=click.Choice(['full', 'sds']), default=None,
              help='full: through the denoiser; sds: denoiser output constant  [default: full]')
@click.option('--smart-start', type=click.FloatRange(0, 1, max_open=True), default=None,
              help='Fraction of the steps before SMaRt starts  [default: 0 when fine-tuning; 0.5 from scratch]')
@click.option('--diffgan-noise-sd', type=POS_FLOAT, default=None, help='Diffusion-GAN noise scale  [default: 0.5]')
@click.option('--diffgan-tmax', type=POS_INT, default=None, help='Longest Diffusion-GAN chain  [default: 500]')
@click.option('--diffgan-target', type=click.FloatRange(0, 1), default=None,
              help='Diffusion-GAN target of E[sign D(real)]  [default: 0.6]')
@click.option('--sweep', metavar='NAME=V1,V2', default=None,
              help='Train every point of one option in the same command, e.g. smart-lam=0.1,0.3,1 (sigma: LO/HI)')
@click.option('--pretrain-dir', metavar='DIR', default=None,
              help='Where --finetune-from saves and looks up the vanilla starts  [default: --outdir]')
@click.option('--workers', type=POS_INT, default=min(2, os.cpu_count() or 1), help='Processes (1 thread each)')
@click.option('--dry-run', is_flag=True, help='Print the resolved config and exit')
def main(outdir, quick, seeds, methods, sweep, pretrain_dir, workers, dry_run, smart_sigma, lr, **options):
    """The 2-D toy of SMaRt on 49 Gaussians: by default the lambda frontier (a vanilla GAN per seed, then the control,
    Diffusion-GAN and SMaRt at a lambda ladder branch from it); writes metrics, samples and figures."""
    seed_list = _parse_list('--seeds', seeds, int) if seeds is not None else ([0] if quick else [0, 1, 2])
    swept = parse_sweep(sweep)
    if methods is None and swept is None:
        arms = FRONTIER
        if options['smart_lam'] is not None:
            raise click.ClickException(f'--smart-lam: the default study sets lambda per arm ('
                                       f'{",".join(f"{v:g}" for v in FRONTIER_LAMS)}); pass --methods (e.g. '
                                       f'vanilla,smart) to train one lambda')
    else:
        method_list = _parse_list('--methods', methods, str) if methods is not None else list(METHODS)
        unknown = [m for m in method_list if m not in METHODS]
        if unknown:
            raise click.ClickException(f'--methods: unknown {unknown}; expected some of {list(METHODS)}')
        arms = arms_of(tuple(method_list), swept)
    overrides = {k.replace('diffgan_tmax', 'diffgan_t_max'): v for k, v in options.items()}
    for field in ('lr_G', 'lr_D'):
        overrides[field] = overrides[field] if overrides[field] is not None else lr
    if smart_sigma is not None:
        band = _parse_list('--smart-sigma', smart_sigma, float)
        if len(band) != 2:
            raise click.ClickException(f'--smart-sigma: {smart_sigma!r} has {len(band)} values; expected LO,HI')
        overrides['smart_sigma'] = tuple(band)
    try:
        cfg = build_config(quick, overrides)
        for arm in arms:
            dataclasses.replace(cfg, **dict(arm.overrides))
    except ValueError as err:
        raise _error(err) from None
    if dry_run:
        click.echo(json.dumps({**dataclasses.asdict(cfg), 'seeds': seed_list,
                               'arms': [{'label': arm.label, 'method': arm.method, **dict(arm.overrides)}
                                        for arm in arms], 'workers': workers}, indent=1))
        return
    torch.set_num_threads(1)   # These tensors are small: more threads mostly wait on each other (engine docstring).
    where = os.path.abspath(outdir)
    click.echo(f'Writing results.json, samples-*.npz, figure.png, frontier.png and curves.png to {where}')
    try:
        results = run_toy(cfg, outdir, seed_list, arms, workers=workers, pretrain_dir=pretrain_dir)
    except KeyboardInterrupt:
        raise click.ClickException(f'interrupted; the runs that finished are in {where}/results.json') from None
    for line in table_lines(results['summary'], results['frontier'], len(seed_list)):
        click.echo(line)
    click.echo(f'Outputs are in {where} ({results["train_sec"]:.0f} s)')


if __name__ == '__main__':
    main()
