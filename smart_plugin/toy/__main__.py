"""CLI of the 2-D toy of SMaRt (Xia et al., ICML 2024, Figure 2): python -m smart_plugin.toy --outdir runs/toy."""

import dataclasses
import json

import click

from smart_plugin.toy.experiment import METHODS, PRESETS, ToyConfig, run_toy

FLAGS = {'lr_G': '--lr', 'lr_D': '--lr'}   # ToyConfig fields whose flag is not --field-name.


def _parse_list(flag: str, text: str, kind: type) -> list:
    try:
        values = [kind(v) for v in text.split(',') if v.strip()]
    except ValueError:
        raise click.ClickException(f'{flag}: {text!r} is not a comma-separated list of {kind.__name__}s') from None
    if not values:
        raise click.ClickException(f'{flag}: {text!r} is empty; expected at least one value')
    return values


def build_config(quick: bool, overrides: dict) -> ToyConfig:
    """The preset (quick or default) with the given non-None overrides; ValueError names the field."""
    fields = dict(PRESETS['quick' if quick else 'default'])
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return ToyConfig(**fields)


@click.command()
@click.option('--outdir', default='runs/toy', show_default=True, metavar='DIR',
              help='Where results.json, the .npz samples and PNGs go')
@click.option('--quick', is_flag=True, help='Short budget (1 seed, 1500 steps): under a minute on 2 CPU cores')
@click.option('--seeds', metavar='LIST', default=None,
              help='Comma-separated seeds  [default: 0 with --quick, else 0,1,2]')
@click.option('--methods', metavar='LIST', default=','.join(METHODS), show_default=True, help='Methods to train')
@click.option('--steps', type=click.IntRange(min=1), default=None, help='Training iterations  [default: preset]')
@click.option('--lr', type=click.FloatRange(min=0, min_open=True), default=None, help='Adam lr of G and D')
@click.option('--smart-lam', type=click.FloatRange(min=0), default=None, help='SMaRt lambda')
@click.option('--smart-param', type=click.Choice(['eps', 'x0']), default=None, help='SMaRt loss form')
@click.option('--smart-freq', type=click.IntRange(min=1), default=None, help='SMaRt every freq-th step')
@click.option('--smart-sigma', metavar='LO,HI', default=None, help='SMaRt sigma band in data units')
@click.option('--smart-eps', type=click.IntRange(min=1), default=None, help='Noise draws per sample in SMaRt')
@click.option('--smart-start', type=click.FloatRange(0, 1, max_open=True), default=None,
              help='Fraction of steps before SMaRt starts')
@click.option('--std', type=click.FloatRange(min=0, min_open=True), default=None, help='Std of each mode')
@click.option('--dry-run', is_flag=True, help='Print the resolved config and exit')
def main(outdir, quick, seeds, methods, steps, lr, smart_lam, smart_param, smart_freq, smart_sigma, smart_eps,
         smart_start, std, dry_run):
    """Train vanilla GAN, Diffusion-GAN, SMaRt and SMaRt + Diffusion-GAN on 49 Gaussians; write metrics and plots."""
    seed_list = _parse_list('--seeds', seeds, int) if seeds is not None else ([0] if quick else [0, 1, 2])
    method_list = _parse_list('--methods', methods, str)
    unknown = [m for m in method_list if m not in METHODS]
    if unknown:
        raise click.ClickException(f'--methods: unknown {unknown}; expected some of {list(METHODS)}')
    overrides = dict(steps=steps, lr_G=lr, lr_D=lr, smart_lam=smart_lam, smart_param=smart_param,
                     smart_freq=smart_freq, smart_eps=smart_eps, smart_start=smart_start, std=std)
    if smart_sigma is not None:
        band = _parse_list('--smart-sigma', smart_sigma, float)
        if len(band) != 2:
            raise click.ClickException(f'--smart-sigma: {smart_sigma!r} has {len(band)} values; expected LO,HI')
        overrides['smart_sigma'] = tuple(band)
    try:
        cfg = build_config(quick, overrides)
    except ValueError as err:
        field = str(err).split(' ')[0]   # ToyConfig's messages start with the field name.
        flag = FLAGS.get(field, '--' + field.replace('_', '-'))
        raise click.ClickException(f'{flag}: {err}') from None
    if dry_run:
        click.echo(json.dumps({**dataclasses.asdict(cfg), 'seeds': seed_list, 'methods': method_list}, indent=1))
        return
    results = run_toy(cfg, outdir, seed_list, tuple(method_list))
    for method, summary in results['summary'].items():
        click.echo(f'{method:14s} ' + '  '.join(f'{k} {v["mean"]:.4g}+-{v["std"]:.2g}' for k, v in summary.items()))


if __name__ == '__main__':
    main()
