"""Option fields declared once: a dataclass field that also carries its command-line flag, help text and value kind.

Library option dataclasses (train.py's `TrainOptions`, SMaRt's and Diffusion-GAN's) declare each field with
`option(...)`; the CLI layer (cli/options.py) turns the same fields into click options, and `flag_map`
gives the field -> flag table that error messages use. Nothing here imports click.
"""

import dataclasses
from typing import Any

# Value kinds the CLI layer knows: 'int', 'float', 'str', 'choice' (choices), 'pair' ('LO,HI' integers),
# 'bool' (StyleGAN2-ADA's --flag / --flag=1/0), 'flag' (bare switch), 'switch' (--name/--no-name), 'aug'.
KINDS = ('int', 'float', 'str', 'choice', 'pair', 'bool', 'flag', 'switch', 'aug')


class ConfigError(ValueError):
    """A user error in the options, found by library code; `flag` names the command-line flag to blame."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(message)
        self.flag = flag


def option(default: Any, flag: str, help: str, kind: str = 'str', *, cli: bool = True,  # noqa: A002
           unset: bool = False, part: int | None = None, **spec: Any) -> Any:
    """A dataclass field with default `default` set by `flag` (help `help`, value kind `kind`, see KINDS).

    cli=False: the flag is declared elsewhere (or the field is derived); it still names the field in errors.
    unset=True: the flag's own default is None (shown as `default`), so the builder can tell "not given".
    part=i: the field is item i of the flag's 'LO,HI' pair. spec: min, max, min_open, max_open, choices, metavar,
    show_default, required, short (a one-letter alias such as '-n').
    """
    if kind not in KINDS:
        raise ValueError(f'option kind {kind!r} of {flag}; expected one of {list(KINDS)}')
    metadata = dict(flag=flag, help=help, kind=kind, cli=cli and part in (None, 0), unset=unset, part=part, **spec)
    return dataclasses.field(default=default, metadata=metadata)


def option_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of dataclass `cls` declared with `option`, in declaration order."""
    return [field for field in dataclasses.fields(cls) if 'flag' in field.metadata]


def param_name(flag: str) -> str:
    """'--smart-lambda' -> 'smart_lambda', '--diffgan/--no-diffgan' -> 'diffgan': the click parameter name."""
    return flag.split('/')[0].lstrip('-').replace('-', '_')


def flag_map(*classes: type) -> dict[str, str]:
    """{field name: flag} over the option dataclasses `classes` (for errors naming a field: OptionError.field)."""
    return {field.name: field.metadata['flag'].split('/')[0] for cls in classes for field in option_fields(cls)}


def from_params(cls: type, params: dict, **overrides: Any) -> Any:
    """An instance of option dataclass `cls` from parsed CLI values keyed by param_name (unset -> the field default;
    a 'pair' field takes its part; missing keys -> the default); `overrides` win."""
    kwargs = {}
    for field in option_fields(cls):
        meta = field.metadata
        value = params.get(param_name(meta['flag']), field.default)
        if meta['part'] is not None:
            value = field.default if value is None else value[meta['part']]
        elif value is None and meta['unset']:
            value = field.default
        kwargs[field.name] = value
    kwargs.update(overrides)
    return cls(**kwargs)
