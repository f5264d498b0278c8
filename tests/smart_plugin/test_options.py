"""Tests for smart_plugin/options.py: defaults, asdict round trip, and every validation message with its field."""

import dataclasses
import json
import re

import pytest

from smart_plugin.options import DiffGANOptions, OptionError, OptionTypeError, SMaRtOptions


def test_smart_defaults_and_asdict_round_trip():
    opts = SMaRtOptions(lam=1, freq=4, start_kimg=2, schedule='karras:1000,0.002,80,7')
    saved = json.loads(json.dumps(dataclasses.asdict(opts)))
    # t_lo / t_hi None: the band is chosen per score source at setup (smart_plugin.band).
    assert saved == dict(lam=1.0, freq=4, t_lo=None, t_hi=None, schedule='karras:1000,0.002,80,7', param='eps',
                         batch=None, start_kimg=2.0, dpm='gaussian', draws=1, antithetic=False, grad='full',
                         diagnostics=False, precision='fp32')
    assert isinstance(saved['lam'], float)  # Ints are normalised to the declared float.
    assert SMaRtOptions(**saved) == opts
    assert opts.enabled and not SMaRtOptions().enabled
    explicit = SMaRtOptions(t_lo=25, t_hi=35)
    assert SMaRtOptions(**json.loads(json.dumps(dataclasses.asdict(explicit)))) == explicit


def test_diffgan_defaults_and_asdict_round_trip():
    opts = DiffGANOptions(enabled=True)
    saved = json.loads(json.dumps(dataclasses.asdict(opts)))
    # The released diffusion-stylegan2 defaults: raw t input, linear betas, no ADA (ada_maxp 0.25 when coupled).
    assert saved == dict(enabled=True, noise_sd=0.05, t_min=10, t_max=1000, ts_dist='priority', t_embed='raw',
                         target=0.6, ada_kimg=100.0, interval=4, beta_schedule='linear', beta_start=1e-4,
                         beta_end=0.02, ada_augpipe=None, ada_maxp=0.25)
    assert DiffGANOptions(**saved) == opts
    coupled = DiffGANOptions(enabled=True, ada_augpipe='bgc', ada_maxp=1, beta_schedule='cosine')
    assert DiffGANOptions(**json.loads(json.dumps(dataclasses.asdict(coupled)))) == coupled
    assert coupled.ada_maxp == 1.0 and isinstance(coupled.ada_maxp, float)


@pytest.mark.parametrize('kwargs, field, message', [
    (dict(lam=-0.5), 'lam', 'SMaRtOptions.lam is -0.5; expected a finite number >= 0 (0 = disabled)'),
    (dict(lam=float('inf')), 'lam', 'SMaRtOptions.lam is inf; expected a finite number >= 0 (0 = disabled)'),
    (dict(freq=0), 'freq', 'SMaRtOptions.freq is 0; expected an integer >= 1'),
    (dict(t_lo=-1), 't_lo', 'SMaRtOptions.t_lo is -1; expected an integer >= 0'),
    (dict(t_lo=40, t_hi=30), 't_hi', 'SMaRtOptions.t_hi is 30; expected an integer >= t_lo (40)'),
    (dict(t_lo=40), 't_hi', 'SMaRtOptions.t_hi is None but t_lo is 40; expected both integers, or both None (the '
                            'default band for the score source)'),
    (dict(t_hi=60), 't_lo', 'SMaRtOptions.t_lo is None but t_hi is 60; expected both integers, or both None (the '
                            'default band for the score source)'),
    (dict(schedule='cosine'), 'schedule', "SMaRtOptions.schedule: schedule='cosine': unknown name 'cosine'; expected "
                                          "one of ['ddpm-linear', 'ddpm-cosine', 'karras', 'vp', 'list']"),
    (dict(param='v'), 'param', "SMaRtOptions.param is 'v'; expected one of ['eps', 'x0']"),
    (dict(batch=0), 'batch', 'SMaRtOptions.batch is 0; expected None (whole round) or an integer >= 1'),
    (dict(start_kimg=-1), 'start_kimg', 'SMaRtOptions.start_kimg is -1.0; expected a finite number >= 0'),
    (dict(dpm=' '), 'dpm', "SMaRtOptions.dpm is ' '; expected a registry name, a path or URL, or 'gaussian'"),
    (dict(draws=0), 'draws', 'SMaRtOptions.draws is 0; expected an integer >= 1 (1 = one draw per sample, the paper)'),
    (dict(draws=3, antithetic=True), 'draws', 'SMaRtOptions.draws is 3; expected an even number with antithetic=True '
                                              '(pairs eps, -eps); use draws=4 or turn antithetic off'),
    (dict(grad='exact'), 'grad', "SMaRtOptions.grad is 'exact'; expected one of ['full', 'sds']"),
    (dict(precision='fp8'), 'precision', "SMaRtOptions.precision is 'fp8'; expected one of ['fp32', 'bf16', 'fp16']"),
    (dict(noise_sd=0), 'noise_sd', 'DiffGANOptions.noise_sd is 0.0; expected a finite number > 0'),
    (dict(t_min=0), 't_min', 'DiffGANOptions.t_min is 0; expected an integer >= 1'),
    (dict(t_min=10, t_max=5), 't_max', 'DiffGANOptions.t_max is 5; expected an integer >= t_min (10)'),
    (dict(ts_dist='linear'), 'ts_dist', "DiffGANOptions.ts_dist is 'linear'; expected one of ['priority', 'uniform']"),
    (dict(target=1.5), 'target', 'DiffGANOptions.target is 1.5; expected a number in [0, 1]'),
    (dict(ada_kimg=0), 'ada_kimg', 'DiffGANOptions.ada_kimg is 0.0; expected a finite number > 0'),
    (dict(interval=0), 'interval', 'DiffGANOptions.interval is 0; expected an integer >= 1'),
    (dict(beta_start=0), 'beta_start', 'DiffGANOptions.beta_start is 0.0; expected a number in (0, 1)'),
    (dict(beta_end=1e-5), 'beta_end', 'DiffGANOptions.beta_end is 1e-05; expected a number in [beta_start '
                                      '(0.0001), 1)'),
    (dict(t_embed='sinusoidal'), 't_embed', "DiffGANOptions.t_embed is 'sinusoidal'; expected one of ['raw', "
                                            "'scaled']"),
    (dict(beta_schedule='cos'), 'beta_schedule', "DiffGANOptions.beta_schedule is 'cos'; expected one of ['linear', "
                                                 "'quad', 'const', 'jsd', 'sigmoid', 'cosine', 'continuous_t']"),
    (dict(ada_augpipe='bgcx'), 'ada_augpipe', "DiffGANOptions.ada_augpipe is 'bgcx'; expected None or one of "
                                              "['blit', 'geom', 'color', 'filter', 'noise', 'cutout', 'bg', 'bgc', "
                                              "'bgcf', 'bgcfn', 'bgcfnc']"),
    (dict(ada_maxp=0), 'ada_maxp', 'DiffGANOptions.ada_maxp is 0.0; expected a number in (0, 1]'),
    (dict(ada_maxp=1.5), 'ada_maxp', 'DiffGANOptions.ada_maxp is 1.5; expected a number in (0, 1]'),
])
def test_value_errors_name_the_field(kwargs, field, message):
    cls = DiffGANOptions if 'DiffGAN' in message else SMaRtOptions
    with pytest.raises(OptionError, match=f'^{re.escape(message)}$') as info:
        cls(**kwargs)
    assert isinstance(info.value, ValueError) and info.value.field == field


@pytest.mark.parametrize('cls, kwargs, field, message', [
    (SMaRtOptions, dict(lam='0.1'), 'lam', "SMaRtOptions.lam is str '0.1'; expected a number"),
    (SMaRtOptions, dict(freq=8.0), 'freq', 'SMaRtOptions.freq is float 8.0; expected an integer'),
    (SMaRtOptions, dict(t_hi=True), 't_hi', 'SMaRtOptions.t_hi is bool True; expected an integer'),
    (SMaRtOptions, dict(schedule=7), 'schedule', 'SMaRtOptions.schedule is int 7; expected None or a string'),
    (SMaRtOptions, dict(dpm=None), 'dpm', "SMaRtOptions.dpm is NoneType None; expected a string: a registry name, "
                                          "a path or URL, or 'gaussian'"),
    (SMaRtOptions, dict(draws=2.0), 'draws', 'SMaRtOptions.draws is float 2.0; expected an integer'),
    (SMaRtOptions, dict(antithetic=1), 'antithetic', 'SMaRtOptions.antithetic is int 1; expected True or False'),
    (SMaRtOptions, dict(diagnostics='on'), 'diagnostics', "SMaRtOptions.diagnostics is str 'on'; expected True or "
                                                          'False'),
    (DiffGANOptions, dict(enabled=1), 'enabled', 'DiffGANOptions.enabled is int 1; expected True or False'),
    (DiffGANOptions, dict(interval='4'), 'interval', "DiffGANOptions.interval is str '4'; expected an integer"),
])
def test_type_errors_name_the_field(cls, kwargs, field, message):
    with pytest.raises(OptionTypeError, match=f'^{re.escape(message)}$') as info:
        cls(**kwargs)
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)
    assert info.value.field == field and info.value.value == kwargs[field]


def test_options_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        SMaRtOptions().lam = 1.0
