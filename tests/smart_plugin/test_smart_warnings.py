"""SMaRt settings that cannot wreck training unnoticed: the start-up warning for a sigma band below one
grey level, the first-tick warning when lambda x SMaRt/loss dwarfs G's adversarial loss, and the per-tick line
that puts SMaRt/loss beside the adversarial loss."""

import types

import dnnlib
import numpy as np
import torch

from edm_bridge import schedules
from smart_plugin import GaussianDenoiser, SMaRt, SMaRtOptions
from smart_plugin.gaussian import degenerate_fit_warning
from smart_plugin.regularizer import QUANTISATION_SIGMA, band_warning, dominance_warning


def _stat(mean, num=4):
    return dnnlib.EasyDict(num=num, mean=mean, std=0.0)


def _setup(capsys, **kwargs):
    plugin = SMaRt(SMaRtOptions(lam=0.1, **kwargs), GaussianDenoiser(torch.zeros([1, 2, 2]), torch.ones([1, 2, 2])))
    G = types.SimpleNamespace(img_resolution=2, img_channels=1, c_dim=0)
    plugin.setup(G=G, D=None, training_set=None, device=torch.device('cpu'), rank=0, num_gpus=1)
    return plugin, capsys.readouterr().out


def test_band_below_one_grey_level_warns_with_the_numbers(capsys):
    assert QUANTISATION_SIGMA == 2 / 255
    karras = schedules.get_schedule('karras')
    assert round(karras.sigma_hat(35), 7) == 0.0045377  # The former default band's top, on Karras-1000.
    message = band_warning(karras.sigma_hat(35), 'karras')
    assert message.startswith('WARNING: SMaRt: the sigma band ends at 0.004538, below one grey level of 8-bit data '
                              '(0.007843 in [-1, 1] units)')
    assert '--smart-schedule=ddpm-linear --smart-t=40,60 (sigma 0.144..0.209)' in message
    assert band_warning(schedules.get_schedule('ddpm-linear').sigma_hat(40), 'ddpm-linear') is None
    assert band_warning(QUANTISATION_SIGMA, 'x') is None  # At the step itself: no warning.

    _, out = _setup(capsys, t_lo=25, t_hi=35, schedule='karras')
    assert 'WARNING: SMaRt: the sigma band ends at 0.004538' in out
    _, out = _setup(capsys, t_lo=40, t_hi=60, schedule='ddpm-linear')
    assert 'WARNING' not in out and 'sigma 0.1437..0.2085' in out


def test_dominance_warning_threshold():
    assert dominance_warning(8.7, 0.87, 0.1, 'eps') is None  # 10x exactly: not above.
    message = dominance_warning(1074.0, 0.87, 0.1, 'eps')
    assert message == ("WARNING: SMaRt: lambda x SMaRt/loss = 1074 is 1234x G's adversarial loss (0.87) at the first "
                       'SMaRt tick; the regularizer, not D, now drives G. Lower --smart-lambda (now 0.1, eps form) or '
                       'move --smart-t / --smart-schedule to a larger sigma.')
    assert dominance_warning(-20.0, -1.0, 1.0, 'x0') is not None  # Magnitudes: a negative adversarial loss too.


def test_tick_lines_show_the_loss_and_warn_once(capsys):
    plugin, _ = _setup(capsys, t_lo=40, t_hi=60, schedule='ddpm-linear')
    stats = {'SMaRt/loss': _stat(10740.0), 'Loss/G/loss': _stat(0.87)}
    lines = plugin.end_of_tick(stats)
    assert lines[0] == 'SMaRt: loss 1.074e+04 lambda x loss 1074      G adversarial 0.87'
    assert len(lines) == 2 and lines[1].startswith('WARNING: SMaRt: lambda x SMaRt/loss = 1074 is 1234x')
    assert plugin.end_of_tick(stats) == [lines[0]]  # Only the first tick with SMaRt compares.
    assert plugin.end_of_tick({'Loss/G/loss': _stat(0.9)}) == []  # No SMaRt step this tick: no line.
    assert plugin.end_of_tick({'SMaRt/loss': _stat(1.44), 'Loss/G/loss': _stat(0.87)}) == [
        'SMaRt: loss 1.44      lambda x loss 0.144     G adversarial 0.87']


def test_a_constant_dataset_gaussian_fit_warns(capsys):
    black = [(np.zeros([1, 2, 2], np.uint8), None)] * 3  # An all-black dataset: zero variance everywhere.
    plugin = SMaRt(SMaRtOptions(lam=0.1, dpm='gaussian', t_lo=40, t_hi=60, schedule='ddpm-linear'))
    G = types.SimpleNamespace(img_resolution=2, img_channels=1, c_dim=0)
    plugin.setup(G=G, D=None, training_set=black, device=torch.device('cpu'), rank=0, num_gpus=1)
    assert capsys.readouterr().out.splitlines()[-1] == (
        'WARNING: SMaRt: the gaussian score source has zero variance at 100% of the pixels (the same value in every '
        'one of the 3 images); its score pulls G towards a constant image. Check --data, or use a diffusion model as '
        '--smart-dpm')
    varied = [(np.full([1, 2, 2], i, np.uint8), None) for i in range(3)]
    plugin = SMaRt(SMaRtOptions(lam=0.1, dpm='gaussian', t_lo=40, t_hi=60, schedule='ddpm-linear'))
    plugin.setup(G=G, D=None, training_set=varied, device=torch.device('cpu'), rank=0, num_gpus=1)
    assert 'WARNING' not in capsys.readouterr().out
    assert degenerate_fit_warning(GaussianDenoiser(torch.zeros([1, 2, 2]), torch.full([1, 2, 2], 1e-6))) is not None
