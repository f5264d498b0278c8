"""click options generated from option dataclasses (training/option_fields.py): each flag is declared once, on its
field, and becomes a click option here, with a range-checked type, its help and a visible default."""

import click

from cli.common import IntPair
from cli.compat import aug_choice, bool_flag
from training.option_fields import option_fields, param_name


def _range(spec: dict, range_type: type, plain: type):
    bounds = {key: spec[key] for key in ('min', 'max', 'min_open', 'max_open') if key in spec}
    return range_type(**bounds) if bounds else plain


def click_option(field):
    """The click.option decorator of one option field."""
    meta, default = field.metadata, field.default
    kind, flag, help_text = meta['kind'], meta['flag'], meta['help']
    if kind == 'bool':
        return bool_flag(flag, help=help_text, default=default)
    decls = ([meta['short']] if 'short' in meta else []) + [flag]
    kwargs = dict(help=help_text, default=None if meta['unset'] else default)
    show = meta.get('show_default', str(default) if meta['unset'] else True)
    if kind in ('flag',):
        kwargs.update(is_flag=True)
        show = meta.get('show_default', False)
    elif kind == 'switch':
        kwargs.update(show_default=True)
    elif kind == 'int':
        kwargs.update(type=_range(meta, click.IntRange, int))
    elif kind == 'float':
        kwargs.update(type=_range(meta, click.FloatRange, float))
    elif kind == 'choice':
        kwargs.update(type=click.Choice(list(meta['choices'])))
    elif kind == 'aug':
        kwargs.update(type=aug_choice(list(meta['choices'])))
    elif kind == 'pair':
        kwargs.update(type=IntPair())
    if meta.get('required'):
        kwargs.update(required=True, default=None)
        show = False
    kwargs.update(show_default=show, **({'metavar': meta['metavar']} if 'metavar' in meta else {}))
    return click.option(*decls, param_name(flag), **kwargs)


def click_options(*classes: type):
    """Decorator adding the click options of the option dataclasses `classes` (declaration order, in --help too)."""
    fields = [field for cls in classes for field in option_fields(cls) if field.metadata['cli']]

    def decorate(command):
        for field in reversed(fields):  # click lists options in decorator order: the last applied comes first.
            command = click_option(field)(command)
        return command
    return decorate
