"""Released command-line spellings for our CLIs: StyleGAN2-ADA's `--flag=1/0` booleans and Diffusion-GAN's names.

- `bool_flag`: a boolean option that takes the bare flag (`--mirror`), StyleGAN2-ADA's `--mirror=1` / `--mirror=0`
  and `true/false`, `yes/no`, `on/off`.
- `released_aliases`: a decorator for a click command that adds Diffusion-GAN's own option names (`--noise_sd`,
  `--ts_dist`, `--ada_kimg`, ...) as aliases of our `--diffgan-*` options, for those our command has; each alias says
  in --help what it maps to. `resolve_aliases` folds their values into our options after parsing: a Diffusion-GAN-only
  name turns on --diffgan (Diffusion-GAN's train.py always diffuses), and with --diffgan on, `--target` is the
  Diffusion-GAN target, as in that release (there ADA follows the diffusion p and has no target of its own).
- `--aug no` (Diffusion-GAN's spelling) means `--aug noaug`: `AUG_ALIASES`.
- `expand_user_paths`: `--data="~/cifar10.zip"` (quoted in Diffusion-GAN's README, so the shell leaves the ~).
"""

import os

import click
from click.core import ParameterSource

from cli.common import FlagError

BOOL_HELP = ' (bare flag, or =1/0, =true/false)'

# --aug values of other releases -> ours.
AUG_ALIASES = {'no': 'noaug'}

# Released name -> (our option's parameter name, our flag, whether it implies --diffgan).
DIFFGAN_ALIASES = {
    '--noise_sd': ('diffgan_noise_sd', '--diffgan-noise-sd', True),
    '--ts_dist': ('diffgan_ts_dist', '--diffgan-ts-dist', True),
    '--ada_kimg': ('diffgan_ada_kimg', '--diffgan-ada-kimg', True),
    '--beta_schedule': ('diffgan_beta_schedule', '--diffgan-beta-schedule', True),
    '--beta_start': ('diffgan_beta_start', '--diffgan-beta-start', True),
    '--beta_end': ('diffgan_beta_end', '--diffgan-beta-end', True),
    '--ada_maxp': ('diffgan_ada_maxp', '--diffgan-ada-maxp', True),
}
_PREFIX = 'released_alias__'  # Parameter names of the alias options: never collide with ours.


def bool_flag(*param_decls: str, help: str, default: bool = False):  # noqa: A002 (click's own keyword)
    """click.option for a boolean that accepts `--name`, `--name=1/0` and `--name=true/false` (StyleGAN2-ADA)."""
    return click.option(*param_decls, type=click.BOOL, is_flag=False, flag_value=True, default=default,
                        show_default=True, metavar='[=BOOL]', help=help + BOOL_HELP)


def aug_choice(choices: list[str]) -> click.Choice:
    """The --aug choice list with the released aliases (e.g. Diffusion-GAN's `no`) accepted too."""
    return click.Choice(list(choices) + [alias for alias, ours in AUG_ALIASES.items() if ours in choices])


def released_aliases(command: click.Command) -> click.Command:
    """Add an alias option for each DIFFGAN_ALIASES entry whose target option `command` has; return `command`."""
    params = {param.name: param for param in command.params}
    for alias, (name, flag, implies) in DIFFGAN_ALIASES.items():
        if name not in params:
            continue
        target = params[name]
        note = ' and turns on --diffgan' if implies else ''
        command.params.append(click.Option([alias, _PREFIX + name], type=target.type, default=None,
                                           help=f"Diffusion-GAN's name for {flag}{note}"))
    return command


def resolve_aliases(ctx: click.Context, opts: dict) -> dict:
    """Fold the alias options of `released_aliases` into ours and map --aug / --target; returns `opts` (changed).

    An alias and our flag given with different values is an error naming both.
    """
    for key in [key for key in opts if key.startswith(_PREFIX)]:
        value = opts.pop(key)
        if value is None:
            continue
        name = key[len(_PREFIX):]
        alias = next(a for a, (n, _, _) in DIFFGAN_ALIASES.items() if n == name)
        _, flag, implies = DIFFGAN_ALIASES[alias]
        if ctx.get_parameter_source(name) != ParameterSource.DEFAULT and opts[name] != value:
            raise FlagError(alias, f'{value} conflicts with {flag}={opts[name]} (the same option); give one of them')
        opts[name] = value
        if implies:
            opts['diffgan'] = True
    if opts.get('aug') in AUG_ALIASES:
        opts['aug'] = AUG_ALIASES[opts['aug']]
    if opts.get('diffgan') and opts.get('target') is not None and 'diffgan_target' in opts:
        if ctx.get_parameter_source('diffgan_target') != ParameterSource.DEFAULT and \
                opts['diffgan_target'] != opts['target']:
            raise FlagError('--target', f'{opts["target"]} conflicts with --diffgan-target={opts["diffgan_target"]}; '
                                        'with --diffgan, --target is the Diffusion-GAN target')
        opts['diffgan_target'], opts['target'] = opts['target'], None
    return opts


def expand_user_paths(opts: dict, names: tuple[str, ...]) -> dict:
    """'~/x' -> '/home/me/x' for the path options `names` (released READMEs quote such paths, so no shell expands
    them); returns `opts` (changed)."""
    for name in names:
        if isinstance(opts.get(name), str):
            opts[name] = os.path.expanduser(opts[name])
    return opts


def resolution_from_width_height(width: int | None, height: int | None, resolution: str | None) -> str | None:
    """StyleGAN2-ADA's dataset_tool --width/--height as our --resolution WxH (both or neither; not with it)."""
    if width is None and height is None:
        return resolution
    if resolution is not None:
        given = ' '.join(f'--{name}={value}' for name, value in (('width', width), ('height', height)) if value)
        if width is None or height is None or resolution != f'{width}x{height}':
            raise FlagError('--resolution', f'{resolution} conflicts with {given}; give --resolution=WxH or both '
                                            '--width and --height')
        return resolution
    if width is None or height is None:
        raise FlagError('--width' if width is None else '--height',
                        'missing: --width and --height go together (or use --resolution=WxH)')
    return f'{width}x{height}'
