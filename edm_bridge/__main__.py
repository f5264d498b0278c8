"""Command line for edm_bridge: inspect pretrained diffusion models and the t -> sigma maps SMaRt uses.

Examples:

\b
  # What a model is, read without running code from it (registry name, path or URL; downloads are cached).
  python -m edm_bridge info edm-cifar10-32x32-cond-vp
  python -m edm_bridge info ~/models/64x64_diffusion.pt --adm-preset adm-imagenet64-cond
  python -m edm_bridge info exp/logs/cifar10/checkpoint.pth   # NCSNv2, config.yml beside it

\b
  # EDM-equivalent noise levels sigma_hat of the integer steps t = 25..35 of a schedule.
  python -m edm_bridge sigmas --schedule ddpm-linear --t 25,35

\b
  # The released models this package knows.
  python -m edm_bridge models
"""

import json
import pickle

import click

from edm_bridge import adm, loading, registry, schedules


@click.group(help=__doc__)
def cli() -> None:
    pass


def _format_info(info: dict) -> list[str]:
    """The describe() dict as aligned 'key: value' lines."""
    arch = ', '.join(f'{k}={v!r}' for k, v in info['architecture'].items())
    rows = [('source', info['source']), ('name', info['name'] or '-'), ('format', info['format']),
            ('preconditioning', info['preconditioning']), ('backbone', info['backbone']), ('architecture', arch),
            ('resolution', f"{info['img_resolution']}x{info['img_resolution']}"), ('channels', info['img_channels']),
            ('label_dim', info['label_dim']), ('parameters', f"{info['num_params']:,}"),
            ('sigma range', f"[{info['sigma_min']:.4g}, {info['sigma_max']:.4g}]"),
            ('schedule', f"{info['schedule']} (SMaRt's default t -> sigma map)"), ('license', info['license'] or '-')]
    if info.get('loss'):
        rows.append(('training loss', info['loss']))
    bad = info.get('nonfinite_tensors')
    if bad:
        listed = ', '.join(f'{name} ({count})' for name, count in list(bad.items())[:4])
        rows.append(('WARNING', f'{len(bad)} weight tensor(s) hold NaN/Inf: {listed}{", ..." if len(bad) > 4 else ""}'
                                '; the model is damaged and would sample black images'))
    return [f'{key + ":":<17}{value}' for key, value in rows]


@cli.command()
@click.argument('path_or_name', metavar='PATH_OR_NAME')
@click.option('--adm-preset', type=click.Choice(list(adm.ADM_PRESETS)), default=None,
              help='Architecture of an ADM checkpoint  [default: from the registry entry]')
@click.option('--ncsnv2-config', metavar='YML', type=click.Path(exists=True, dir_okay=False), default=None,
              help='config.yml of an NCSNv2 checkpoint  [default: the one beside it, else the registry entry\'s]')
@click.option('--json', 'as_json', is_flag=True, help='Print JSON instead of aligned lines')
def info(path_or_name: str, adm_preset: str | None, ncsnv2_config: str | None, as_json: bool) -> None:
    """Describe a model (format, preconditioning, architecture, resolution, labels, parameters, sigma range)."""
    try:
        summary = loading.describe(path_or_name, adm_preset=adm_preset, ncsnv2_config=ncsnv2_config)
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as err:
        raise click.ClickException(f'PATH_OR_NAME {path_or_name}: {err}')
    if as_json:
        print(json.dumps(summary, indent=2, default=repr))
    else:
        print('\n'.join(_format_info(summary)))


def _parse_t_range(text: str) -> tuple[int, int]:
    parts = text.split(',')
    try:
        lo, hi = (int(part) for part in parts) if len(parts) == 2 else (int(text), int(text))
    except ValueError:
        raise click.ClickException(f'--t {text}: expected LO,HI (two integers, e.g. 25,35) or one integer') from None
    if lo > hi:
        raise click.ClickException(f'--t {text}: LO {lo} is above HI {hi}; expected LO <= HI')
    return lo, hi


@cli.command()
@click.option('--schedule', 'schedule_spec', metavar='NAME[:ARGS]', default='karras', show_default=True,
              help="t -> sigma map: 'ddpm-linear', 'ddpm-cosine', 'karras', 'vp' or 'list:...' "
                   "(e.g. 'karras:1000,0.002,80,7')")
@click.option('--t', 't_range', metavar='LO,HI', default='25,35', show_default=True,
              help='Integer steps, inclusive')
def sigmas(schedule_spec: str, t_range: str) -> None:
    """Print `t sigma_hat` (4 significant digits) for each integer step t in LO..HI."""
    try:
        schedule = schedules.parse_schedule(schedule_spec)
    except (ValueError, TypeError) as err:
        raise click.ClickException(f'--schedule {schedule_spec}: {err}')
    lo, hi = _parse_t_range(t_range)
    try:
        values = schedule.sigma_hat(list(range(lo, hi + 1)))
    except (ValueError, TypeError) as err:
        raise click.ClickException(f'--t {t_range}: {err}')
    for t, sigma in zip(range(lo, hi + 1), values):
        # "#" keeps trailing zeros, so every line shows exactly 4 significant digits (0.09870, not 0.0987).
        print(f'{t} {sigma:#.4g}')


@cli.command()
def models() -> None:
    """List the registry: name, resolution, labels, architecture, default schedule, licence."""
    print(f"{'name':<30} {'res':>4} {'labels':>6}  {'arch':<13} {'schedule':<12} license")
    for entry in registry.MODELS.values():
        print(f'{entry.name:<30} {entry.img_resolution:>4} {entry.label_dim:>6}  {entry.architecture:<13} '
              f'{entry.schedule:<12} {entry.license}')


if __name__ == '__main__':
    cli()
