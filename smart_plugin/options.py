"""Options of the loss plugins: SMaRt (Xia et al., "SMaRt: Improving GANs with Score Matching Regularity", ICML 2024)
and Diffusion-GAN (Wang et al., "Diffusion-GAN: Training GANs with Diffusion", ICLR 2023).

Frozen dataclasses, validated on construction and saved with `dataclasses.asdict` into training_options.json.
Every validation error is an `OptionError` (a ValueError; `OptionTypeError` is also a TypeError) whose `field`
attribute names the offending field, so that train.py can report it under its --smart-* / --diffgan-* flag.
"""

import dataclasses
import math
import numbers
from typing import Any

from edm_bridge import schedules
from smart_plugin.diffgan_betas import BETA_SCHEDULES
from training.option_fields import option

# Help texts of the longer flags (each field below carries its flag, help and default: training/option_fields.py).
SMART_T_HELP = ('Integer timestep band LO,HI on --smart-schedule. Unset with --smart-schedule unset: t 25..35 on '
                "the source's own DDPM steps for ADM checkpoints (the paper), else t 40..60 on ddpm-linear (sigma "
                '0.144..0.209); unset with --smart-schedule set: the steps of that schedule nearest to the '
                'default sigma band')
SMART_SCHEDULE_HELP = ("t -> sigma map, e.g. ddpm-linear or karras. Unset with --smart-t set: the source's own (ADM: "
                       'its DDPM steps; EDM pickles, train_dpm.py snapshots, gaussian: karras); both unset: see '
                       '--smart-t')
SMART_DPM_HELP = 'Score source: diffusion model file, registry name (python -m edm_bridge models) or gaussian'
SMART_DRAWS_HELP = '(t, eps) draws per scored sample, averaged (costs this many denoiser evaluations per sample)'
SMART_GRAD_HELP = 'full: through the denoiser (paper); sds: denoiser output held constant (no denoiser backward)'
SMART_DIAGNOSTICS_HELP = 'Report SMaRt/grad_norm and Loss/G/grad_norm (an extra autograd pass)'
SMART_PRECISION_HELP = ("Arithmetic of the frozen denoiser: fp32, or autocast to bf16 (CPUs with AMX / AVX-512 BF16, "
                        'recent GPUs) or fp16 (CUDA); the loss and the rest of the step stay float32')
# torch dtype names of --smart-precision's autocast choices (fp32 = no autocast).
PRECISIONS = {'fp32': None, 'bf16': 'bfloat16', 'fp16': 'float16'}
_OPEN01 = dict(min=0, max=1, min_open=True, max_open=True)


class OptionError(ValueError):
    """A plugin option has a bad value; `field` is the dataclass field name, `value` what was given."""

    def __init__(self, field: str, value: Any, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.value = value


class OptionTypeError(OptionError, TypeError):
    """A plugin option has the wrong type (catchable as TypeError and as OptionError)."""


def _set(options: Any, field: str, value: Any) -> None:
    object.__setattr__(options, field, value)  # Frozen dataclass: normalise types (int -> float) in place.


def _number(options: Any, field: str) -> float:
    """The field as a float; OptionTypeError unless it is a real number (bool excluded)."""
    value = getattr(options, field)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise OptionTypeError(field, value, f'{type(options).__name__}.{field} is {type(value).__name__} {value!r}; '
                                            'expected a number')
    _set(options, field, float(value))
    return float(value)


def _integer(options: Any, field: str) -> int:
    """The field as an int; OptionTypeError unless it is an integer (bool excluded)."""
    value = getattr(options, field)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise OptionTypeError(field, value, f'{type(options).__name__}.{field} is {type(value).__name__} {value!r}; '
                                            'expected an integer')
    _set(options, field, int(value))
    return int(value)


def _require(options: Any, field: str, ok: bool, expected: str) -> None:
    if not ok:
        value = getattr(options, field)
        raise OptionError(field, value, f'{type(options).__name__}.{field} is {value!r}; expected {expected}')


def _flag(options: Any, field: str) -> None:
    """OptionTypeError unless the field is a bool."""
    value = getattr(options, field)
    if not isinstance(value, bool):
        raise OptionTypeError(field, value, f'{type(options).__name__}.{field} is {type(value).__name__} {value!r}; '
                                            'expected True or False')


def _choice(options: Any, field: str, choices: tuple) -> None:
    _require(options, field, getattr(options, field) in choices, f'one of {list(choices)}')


@dataclasses.dataclass(frozen=True)
class SMaRtOptions:
    """SMaRt score-matching regularizer of G (paper Algorithm 1; lambda 0 = off). The t band and schedule default
    per score source (smart_plugin.band): ADM's native DDPM steps keep the paper's t 25..35, other sources get
    t 40..60 on DDPM-linear."""

    # Weight lambda of the score-matching loss; 0 = plugin disabled.
    lam: float = option(0.0, '--smart-lambda',
                        "SMaRt weight lambda (0 = off; its scale depends on --smart-param). Choose it so that the "
                        "per-tick line's 'lambda x loss' starts at about 0.1-1x its 'G adversarial' (above 10x a "
                        'warning says SMaRt drives G); --dry-run shows the band; see docs/smart-settings.md', 'float')
    # Apply on every freq-th iteration (lazy; not multiplied by freq).
    freq: int = option(8, '--smart-freq', 'Apply SMaRt every N iterations', 'int')
    # The integer timestep band t_lo..t_hi (inclusive); both None = the default band for the score source
    # (smart_plugin.band, resolved at setup).
    t_lo: int | None = option(None, '--smart-t', SMART_T_HELP, 'pair', part=0, show_default='per score source')
    t_hi: int | None = option(None, '--smart-t', SMART_T_HELP, 'pair', part=1)
    # t -> sigma map ('karras', 'ddpm-linear', 'karras:1000,0.002,80,7', ...); None = chosen with the band: with t
    # given, the score source's own (registry / ADM native; karras for EDM, gaussian); with neither, its default.
    schedule: str | None = option(None, '--smart-schedule', SMART_SCHEDULE_HELP, show_default='per score source')
    # 'eps': ||eps_pred - eps||^2 (paper); 'x0': ||D - G(z)||^2 (EDM release).
    param: str = option('eps', '--smart-param', 'Loss form (lambda means something only with it)', 'choice',
                        choices=('eps', 'x0'))
    # Samples per round that get the loss; None = the whole Gmain round.
    batch: int | None = option(None, '--smart-batch', 'SMaRt samples per round', 'int', show_default='whole round')
    # Off until this many thousand images have been shown.
    start_kimg: float = option(0, '--smart-start-kimg', 'Start SMaRt after this many kimg', 'float')
    # Score source: registry name, path or URL, or 'gaussian' (fit to the dataset).
    dpm: str = option('gaussian', '--smart-dpm', SMART_DPM_HELP, metavar='PATH|NAME|gaussian')
    # Independent (t, eps) draws per scored sample, averaged per sample; 1 = paper. Costs draws x the denoiser
    # evaluations (one batched call of draws * batch).
    draws: int = option(1, '--smart-draws', SMART_DRAWS_HELP, 'int')
    # Draws in pairs (eps, -eps) sharing t; draws must then be even.
    antithetic: bool = option(False, '--smart-antithetic', 'Draws in pairs (eps, -eps) with the same t (even draws)',
                              'flag')
    # 'full': gradient through the denoiser (paper); 'sds': denoiser output held constant (score distillation).
    grad: str = option('full', '--smart-grad', SMART_GRAD_HELP, 'choice', choices=('full', 'sds'))
    # Report SMaRt/grad_norm and Loss/G/grad_norm (costs an extra autograd pass).
    diagnostics: bool = option(False, '--smart-diagnostics', SMART_DIAGNOSTICS_HELP, 'flag')
    # Denoiser arithmetic: 'fp32' (paper, exact), or its forward (and so its backward) autocast to bf16 / fp16.
    precision: str = option('fp32', '--smart-precision', SMART_PRECISION_HELP, 'choice', choices=tuple(PRECISIONS))

    def __post_init__(self) -> None:
        lam = _number(self, 'lam')
        _require(self, 'lam', math.isfinite(lam) and lam >= 0, 'a finite number >= 0 (0 = disabled)')
        _require(self, 'freq', _integer(self, 'freq') >= 1, 'an integer >= 1')
        for field in ('t_lo', 't_hi'):
            if getattr(self, field) is not None:
                _require(self, field, _integer(self, field) >= 0, 'an integer >= 0')
        if (self.t_lo is None) != (self.t_hi is None):
            given, missing = ('t_lo', 't_hi') if self.t_hi is None else ('t_hi', 't_lo')
            raise OptionError(missing, None, f'SMaRtOptions.{missing} is None but {given} is '
                              f'{getattr(self, given)!r}; expected both integers, or both None (the default band '
                              'for the score source)')
        if self.t_lo is not None:
            _require(self, 't_hi', self.t_hi >= self.t_lo, f'an integer >= t_lo ({self.t_lo})')
        if self.schedule is not None:
            if not isinstance(self.schedule, str):
                raise OptionTypeError('schedule', self.schedule, f'SMaRtOptions.schedule is '
                                      f'{type(self.schedule).__name__} {self.schedule!r}; expected None or a string')
            try:
                schedules.parse_schedule(self.schedule)
            except (TypeError, ValueError) as err:
                raise OptionError('schedule', self.schedule, f'SMaRtOptions.schedule: {err}') from None
        _choice(self, 'param', ('eps', 'x0'))
        if self.batch is not None:
            _require(self, 'batch', _integer(self, 'batch') >= 1, 'None (whole round) or an integer >= 1')
        start_kimg = _number(self, 'start_kimg')
        _require(self, 'start_kimg', math.isfinite(start_kimg) and start_kimg >= 0, 'a finite number >= 0')
        if not isinstance(self.dpm, str):
            raise OptionTypeError('dpm', self.dpm, f'SMaRtOptions.dpm is {type(self.dpm).__name__} {self.dpm!r}; '
                                  "expected a string: a registry name, a path or URL, or 'gaussian'")
        _require(self, 'dpm', self.dpm.strip() != '', "a registry name, a path or URL, or 'gaussian'")
        _require(self, 'draws', _integer(self, 'draws') >= 1, 'an integer >= 1 (1 = one draw per sample, the paper)')
        for field in ('antithetic', 'diagnostics'):
            _flag(self, field)
        if self.antithetic:
            _require(self, 'draws', self.draws % 2 == 0, 'an even number with antithetic=True (pairs eps, -eps); '
                     f'use draws={self.draws + 1} or turn antithetic off')
        _choice(self, 'grad', ('full', 'sds'))
        _choice(self, 'precision', tuple(PRECISIONS))

    @property
    def enabled(self) -> bool:
        """True when the regularizer does anything (lambda > 0)."""
        return self.lam > 0


@dataclasses.dataclass(frozen=True)
class DiffGANOptions:
    """Diffusion-GAN instance noise on D's inputs with an adaptive diffusion length T (paper section 3); the defaults
    are the released diffusion-stylegan2's (docs/spec/diffusion.md section 6)."""

    # Off = D sees clean images and no t (bit-identical to the baseline).
    enabled: bool = option(False, '--diffgan/--no-diffgan', 'Diffusion-GAN noise on D inputs', 'switch')
    # Scale of the diffusion noise (data in [-1, 1]).
    noise_sd: float = option(0.05, '--diffgan-noise-sd', 'Diffusion noise scale', 'float')
    # Shortest (at p = 0) and longest (at p = 1) diffusion length T.
    t_min: int = option(10, '--diffgan-tmin', 'Shortest diffusion length T', 'int')
    t_max: int = option(1000, '--diffgan-tmax', 'Longest diffusion length T', 'int')
    # How the noised half of the t table is drawn: 'priority' (P(t) ~ t - 1, so P(1) = 0, as released) or 'uniform'.
    ts_dist: str = option('priority', '--diffgan-ts-dist', 'How t is drawn', 'choice', choices=('priority', 'uniform'))
    # D's t input: 'raw' = the integer t (0..T) appended to c, as released; 'scaled' = t / t_max (in [0, 1]).
    t_embed: str = option('raw', '--diffgan-t-embed', "D's t input: raw integer t (as released) or t / t_max",
                          'choice', choices=('raw', 'scaled'))
    # Target of E[sign(D(real))]; above it T grows, below it T shrinks.
    target: float = option(0.6, '--diffgan-target', 'Target of E[sign D(real)] for the adaptive T', 'float')
    # p moves by at most 1 in this many thousand images.
    ada_kimg: float = option(100, '--diffgan-ada-kimg', 'Thousands of images for the diffusion p to go from 0 to 1',
                             'float', min=0, min_open=True)
    interval: int = 4               # Update p and redraw the t table every this many iterations.
    # Forward-chain betas over the current T (smart_plugin.diffgan_betas): schedule, first and last beta.
    beta_schedule: str = option('linear', '--diffgan-beta-schedule', 'Forward-chain beta schedule', 'choice',
                                choices=tuple(BETA_SCHEDULES))
    beta_start: float = option(1e-4, '--diffgan-beta-start', 'First beta (linear, quad, sigmoid)', 'float', **_OPEN01)
    beta_end: float = option(0.02, '--diffgan-beta-end', 'Last beta (linear, quad, sigmoid; const)', 'float',
                             **_OPEN01)
    # ADA pipeline (training.augment.augpipe_specs) run on D's inputs before the diffusion with probability
    # min(p, ada_maxp), as the release's --aug=ada; None = no augmentation inside the plugin. Derived by train.py
    # from --aug and --augpipe.
    ada_augpipe: str | None = option(None, '--augpipe', 'Augmentation pipeline', cli=False)
    # Cap of that ADA probability.
    ada_maxp: float = option(0.25, '--diffgan-ada-maxp', 'With --diffgan --aug=ada: the ADA probability is '
                             'min(diffusion p, this)', 'float', unset=True, min=0, max=1, min_open=True)

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise OptionTypeError('enabled', self.enabled, f'DiffGANOptions.enabled is '
                                  f'{type(self.enabled).__name__} {self.enabled!r}; expected True or False')
        noise_sd = _number(self, 'noise_sd')
        _require(self, 'noise_sd', math.isfinite(noise_sd) and noise_sd > 0, 'a finite number > 0')
        _require(self, 't_min', _integer(self, 't_min') >= 1, 'an integer >= 1')
        _require(self, 't_max', _integer(self, 't_max') >= self.t_min, f'an integer >= t_min ({self.t_min})')
        _choice(self, 'ts_dist', ('priority', 'uniform'))
        _choice(self, 't_embed', ('raw', 'scaled'))
        _require(self, 'target', 0 <= _number(self, 'target') <= 1, 'a number in [0, 1]')
        ada_kimg = _number(self, 'ada_kimg')
        _require(self, 'ada_kimg', math.isfinite(ada_kimg) and ada_kimg > 0, 'a finite number > 0')
        _require(self, 'interval', _integer(self, 'interval') >= 1, 'an integer >= 1')
        _choice(self, 'beta_schedule', BETA_SCHEDULES)
        _require(self, 'beta_start', 0 < _number(self, 'beta_start') < 1, 'a number in (0, 1)')
        _require(self, 'beta_end', self.beta_start <= _number(self, 'beta_end') < 1,
                 f'a number in [beta_start ({self.beta_start:g}), 1)')
        if self.ada_augpipe is not None:
            from training.augment import augpipe_specs  # Deferred: only coupled ADA needs the pipeline table.
            _require(self, 'ada_augpipe', isinstance(self.ada_augpipe, str) and self.ada_augpipe in augpipe_specs,
                     f'None or one of {list(augpipe_specs)}')
        _require(self, 'ada_maxp', 0 < _number(self, 'ada_maxp') <= 1, 'a number in (0, 1]')
