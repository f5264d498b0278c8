"""SMaRt's default t band per score source (smart_plugin/band.py): ADM's native DDPM steps keep the paper's
t 25..35, every other source gets t 40..60 on DDPM-linear; the partial overrides (only t, only the schedule); the
start-up line says how the band was chosen; and no default band lies below one grey level."""

import pickle
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import edm_tiny_nets
from edm_bridge import edm_networks, schedules
from edm_bridge.registry import MODELS
from smart_plugin import GaussianDenoiser, SMaRt, SMaRtOptions
from smart_plugin.band import DEFAULT_SCHEDULE, DEFAULT_T, QUANTISATION_SIGMA, default_band, resolve_band
from smart_plugin.regularizer import band_warning

ROOT = Path(__file__).resolve().parents[2]
GAUSSIAN = GaussianDenoiser(torch.zeros([1, 2, 2]), torch.full([1, 2, 2], 0.1))


class NativeSteps(torch.nn.Module):
    """An ADM-like denoiser stub (identity) that carries its own training schedule, as edm_bridge.adm.ADMDenoiser."""

    def __init__(self, schedule):
        super().__init__()
        self.schedule = schedule
        self.img_resolution, self.img_channels, self.label_dim = 2, 1, 0
        self.sigma_min, self.sigma_max = schedule.sigma_min, schedule.sigma_max

    def forward(self, x, sigma, labels=None):
        return x


def setup(denoiser, capsys, G=None, training_set=None, **kwargs):
    """A plugin after setup() on the CPU (lambda 0.1) and its start-up output."""
    plugin = SMaRt(SMaRtOptions(lam=0.1, **kwargs), denoiser)
    G = G or types.SimpleNamespace(img_resolution=2, img_channels=1, c_dim=0)
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # No default band goes below a source's sigma_min either.
        plugin.setup(G=G, D=None, training_set=training_set, device=torch.device('cpu'), rank=0, num_gpus=1)
    return plugin, capsys.readouterr().out


def sigmas(plugin):
    return plugin.schedule.sigma_hat(plugin.t_lo), plugin.schedule.sigma_hat(plugin.t_hi)


def test_adm_like_source_keeps_the_papers_band_on_its_own_steps(capsys):
    for name, lo, hi in (('ddpm-linear', 0.09548, 0.12761), ('ddpm-cosine', 0.05154, 0.06753)):
        native = schedules.get_schedule(name)
        plugin, out = setup(NativeSteps(native), capsys)
        assert plugin.schedule is native and (plugin.t_lo, plugin.t_hi) == (25, 35)
        assert sigmas(plugin) == pytest.approx((lo, hi), abs=1e-4)
        assert out == (f'SMaRt: lambda 0.1 (eps form), every 8 steps, t 25..35 on {name}-1000 -> sigma {lo:.4g}..'
                       f"{hi:.4g} (default for this score source: the paper's band on its own DDPM steps), score "
                       'source NativeSteps (given), 1 draw per sample, grad full\n')
    # A registry ADM checkpoint (not loaded here): its entry names its DDPM schedule.
    band = resolve_band(None, None, None, GAUSSIAN, MODELS['adm-imagenet128-cond'])
    assert (band.schedule.name, band.t_lo, band.t_hi) == ('ddpm-linear', 25, 35)


def test_gaussian_source_gets_ddpm_linear_40_60(capsys):
    images = torch.randint(0, 256, [6, 1, 2, 2], generator=torch.Generator().manual_seed(0)).to(torch.uint8).numpy()
    plugin, out = setup(None, capsys, training_set=[(image, None) for image in images], dpm='gaussian')
    assert (plugin.schedule.name, plugin.schedule.num_steps, plugin.t_lo, plugin.t_hi) == ('ddpm-linear', 1000, 40, 60)
    assert sigmas(plugin) == pytest.approx((0.1437, 0.2085), abs=1e-4)
    assert out == ('SMaRt: lambda 0.1 (eps form), every 8 steps, t 40..60 on ddpm-linear-1000 -> sigma 0.1437..0.2085 '
                   '(default for this score source: its own schedule, karras-1000, is not a DDPM one), score source '
                   'gaussian (per-pixel fit to 6 images), 1 draw per sample, grad full\n')


def test_edm_type_net_gets_ddpm_linear_40_60(tmp_path, capsys):
    net = edm_tiny_nets.tiny(edm_networks.EDMPrecond, res=8)
    path = tmp_path / 'tiny-edm.pkl'
    path.write_bytes(pickle.dumps(dict(ema=net, loss_fn=None, augment_pipe=None, dataset_kwargs={})))
    G = types.SimpleNamespace(img_resolution=8, img_channels=3, c_dim=0)
    plugin, out = setup(None, capsys, G=G, dpm=str(path))
    assert (plugin.schedule.name, plugin.t_lo, plugin.t_hi) == ('ddpm-linear', 40, 60)
    assert sigmas(plugin) == pytest.approx((0.1437, 0.2085), abs=1e-4)
    assert 't 40..60 on ddpm-linear-1000 -> sigma 0.1437..0.2085 (default for this score source: its own ' \
           'schedule, karras-1000, is not a DDPM one)' in out and 'WARNING' not in out
    # The released EDM pickles and NCSNv2 checkpoints, by their registry entries.
    for name in ('edm-cifar10-32x32-cond-vp', 'edm-imagenet-64x64-cond-adm', 'ncsnv2-cifar10'):
        band = resolve_band(None, None, None, GAUSSIAN, MODELS[name])
        assert (band.schedule.name, band.t_lo, band.t_hi) == ('ddpm-linear', 40, 60), name


def test_only_t_given_keeps_the_sources_own_schedule(capsys):
    plugin, out = setup(GAUSSIAN, capsys, t_lo=200, t_hi=260)
    assert (plugin.schedule.name, plugin.t_lo, plugin.t_hi) == ('karras', 200, 260)
    assert "t 200..260 on karras-1000 -> sigma 0.08533..0.194 (schedule not given: the score source's own)" in out
    plugin, out = setup(NativeSteps(schedules.get_schedule('ddpm-cosine')), capsys, t_lo=40, t_hi=60)
    assert (plugin.schedule.name, plugin.t_lo, plugin.t_hi) == ('ddpm-cosine', 40, 60)
    # Both given: used as they are, and the line says nothing about defaults.
    plugin, out = setup(GAUSSIAN, capsys, t_lo=40, t_hi=60, schedule='ddpm-linear')
    assert 'sigma 0.1437..0.2085, score source' in out and 'default' not in out and 'not given' not in out


def nearest_step(schedule, sigma):
    """The step of `schedule` nearest to sigma in log sigma, by brute force."""
    return int(np.argmin(np.abs(np.log(schedule.sigma_grid) - np.log(sigma))))


@pytest.mark.parametrize('spec', ['karras', 'vp', 'ddpm-cosine', 'ddpm-linear', 'karras:500,0.002,80,7'])
def test_only_schedule_given_maps_the_default_sigma_band_onto_it(spec, capsys):
    chosen = schedules.parse_schedule(spec)
    plugin, out = setup(GAUSSIAN, capsys, schedule=spec)
    lo, hi = schedules.get_schedule('ddpm-linear').sigma_hat(40), schedules.get_schedule('ddpm-linear').sigma_hat(60)
    assert (plugin.t_lo, plugin.t_hi) == (nearest_step(chosen, lo), nearest_step(chosen, hi))
    assert sigmas(plugin) == pytest.approx((lo, hi), rel=0.03)  # The nearest steps of a 1000-step (500) grid.
    assert (f'on {chosen.name}-{chosen.num_steps} -> sigma {sigmas(plugin)[0]:.4g}..{sigmas(plugin)[1]:.4g} (t not '
            'given: the steps nearest to sigma 0.1437..0.2085, the default band for this score source)') in out
    if spec == 'ddpm-linear':
        assert (plugin.t_lo, plugin.t_hi) == DEFAULT_T
    if spec == 'karras':
        assert (plugin.t_lo, plugin.t_hi) == (237, 266)


def test_only_schedule_given_to_an_adm_like_source_maps_its_papers_band(capsys):
    adm, out = setup(NativeSteps(schedules.get_schedule('ddpm-linear')), capsys, schedule='karras')
    karras = schedules.get_schedule('karras')
    assert (adm.t_lo, adm.t_hi) == (nearest_step(karras, 0.095484), nearest_step(karras, 0.127613)) == (208, 229)
    assert sigmas(adm) == pytest.approx((0.0955, 0.1276), rel=0.03)
    assert 't not given: the steps nearest to sigma 0.09548..0.1276, the default band for this score source' in out


def test_no_default_band_triggers_the_band_warning():
    sources = [(GAUSSIAN, None)] + [(GAUSSIAN, entry) for entry in MODELS.values()]
    for name in ('ddpm-linear', 'ddpm-cosine'):
        for num_steps in (30, 36, 100, 1000, 4000):  # 30 steps: too few for t 35, so DDPM-linear's 40..60.
            sources.append((NativeSteps(schedules.get_schedule(name, num_steps=num_steps)), None))
    sources += [(NativeSteps(schedules.parse_schedule(spec)), None) for spec in ('karras', 'vp', 'list:0.001,0.002')]
    for denoiser, entry in sources:
        band = resolve_band(None, None, None, denoiser, entry)
        lo, hi = band.schedule.sigma_hat(band.t_lo), band.schedule.sigma_hat(band.t_hi)
        assert band.t_hi < band.schedule.num_steps and QUANTISATION_SIGMA < lo <= hi, (band, entry)
        assert band_warning(hi, band.schedule.name) is None
        for spec in ('karras', 'vp', 'ddpm-cosine', 'ddpm-linear'):  # Only the schedule given.
            band = resolve_band(None, None, spec, denoiser, entry)
            assert QUANTISATION_SIGMA < band.schedule.sigma_hat(band.t_lo), (spec, entry)
    assert (default_band(schedules.get_schedule('ddpm-cosine', num_steps=30)).schedule.name,
            default_band(schedules.get_schedule('ddpm-cosine', num_steps=36)).schedule.name) == ('ddpm-linear',
                                                                                                'ddpm-cosine')


def test_train_dpm_band_sampling_defaults_to_smarts_default_band():
    sys.path.insert(0, str(ROOT))
    import train_dpm
    assert (train_dpm.DEFAULT_BAND_SCHEDULE, train_dpm.DEFAULT_BAND_T) == (DEFAULT_SCHEDULE, DEFAULT_T)
