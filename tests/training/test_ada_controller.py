"""The one ADA-style controller (training/ada_controller.py): bit for bit the formulas it replaced (ADA's
adjust_ada_p, floored at 0, and Diffusion-GAN's end_of_step, clipped to [0, 1]) over long runs of sign means, its
checks, its state, and that both users hold one."""

import numpy as np
import pytest
import torch

import dnnlib
from smart_plugin import DiffGANOptions, DiffusionGAN
from training import train_state
from training.ada_controller import AdaController, next_p


def _old_ada(p, mean, target, batch_size, interval, kimg):
    """training.augment.adjust_ada_p before the controller, written out."""
    step = float(batch_size) * float(interval) / (float(kimg) * 1000)
    return max(float(p) + float(np.sign(float(mean) - float(target))) * step, 0.0)


def _old_diffgan(p, mean, target, batch_size, interval, kimg):
    """DiffusionGAN.end_of_step's update before the controller, written out."""
    adjust = np.sign(mean - target) * batch_size * interval
    return float(np.clip(p + adjust / (kimg * 1000), 0, 1))


def _sign_means(rng, steps, num):
    """Means of `num` signs (-1, 0, 1) as the statistics bus gives them: mostly confident D first (p climbs to its
    upper clamp or beyond), then unsure (p falls to 0), then noise around the target."""
    means = []
    for step in range(steps):
        positive = 0.97 if step < 0.25 * steps else 0.2 if step < 0.7 * steps else 0.6
        signs = np.where(rng.random(num) < positive, 1.0, np.where(rng.random(num) < 0.1, 0.0, -1.0))
        means.append(float(signs.sum()) / num)
    return means + [0.6, 3 / 5, 1.0, -1.0, 0.0]  # On the target exactly: sign 0.


@pytest.mark.parametrize('clamp, old', [('floor', _old_ada), ('unit', _old_diffgan)])
@pytest.mark.parametrize('batch_size, interval, kimg', [(4, 4, 0.1), (64, 4, 5), (32, 1, 1.0), (12, 3, 0.123)])
def test_controller_is_bit_identical_to_the_formula_it_replaced(clamp, old, batch_size, interval, kimg):
    means = _sign_means(np.random.default_rng(batch_size + interval), 1600, 2 * batch_size)
    controller = AdaController(0.6, interval, kimg, clamp=clamp)
    expected, got, seen = 0.0, [], []
    for mean in means:
        expected = old(expected, mean, 0.6, batch_size, interval, kimg)
        seen.append(expected.hex())
        got.append(controller.update(mean, batch_size).hex())
    assert got == seen
    values = [float.fromhex(value) for value in got]
    assert min(values) == 0.0 and max(values) >= 1.0  # Both clamps were reached (the upper one for 'unit').
    assert (max(values) > 1.0) == (clamp == 'floor')  # ADA has no upper clamp.


def test_next_p_by_hand():
    assert next_p(0.1, 0.7, 0.6, 64, 4, 500, 'floor') == 0.1 + 256 / 500_000
    assert next_p(1.0, 0.7, 0.6, 64, 4, 500, 'floor') > 1.0
    assert next_p(1.0, 0.7, 0.6, 64, 4, 500, 'unit') == 1.0
    assert next_p(0.0001, -1.0, 0.6, 64, 4, 500, 'unit') == next_p(0.0001, -1.0, 0.6, 64, 4, 500, 'floor') == 0.0
    assert next_p(0.3, 0.6, 0.6, 64, 4, 500, 'unit') == 0.3


def test_controller_checks_and_state():
    with pytest.raises(ValueError, match=r"^AdaController: interval=0, expected an integer >= 1$"):
        AdaController(0.6, 0, 100)
    with pytest.raises(ValueError, match=r"^AdaController: kimg=0, expected a finite number > 0$"):
        AdaController(0.6, 4, 0)
    with pytest.raises(ValueError, match=r"^AdaController: clamp='ceil', expected one of \['floor', 'unit'\]$"):
        AdaController(0.6, 4, 100, clamp='ceil')
    controller = AdaController(0.6, 4, 0.1, clamp='unit', p=0.5)
    with pytest.raises(ValueError, match=r"signs_real_mean=nan; expected finite numbers"):
        controller.update(float('nan'), 4)
    controller.update(1.0, 4)
    resumed = AdaController(0.6, 4, 0.1, clamp='unit')
    resumed.load_state_dict(controller.state_dict())
    assert controller.state_dict() == {'p': 0.5 + 0.16} and resumed.p == controller.p


def test_ada_and_diffgan_hold_the_one_controller():
    tuner = train_state.AdaTuner(dnnlib.EasyDict(p=torch.tensor(0.5)), target=0.6, interval=4, kimg=0.1,
                                 batch_size=4)
    plugin = DiffusionGAN(DiffGANOptions(enabled=True, ada_kimg=2))
    assert isinstance(tuner.controller, AdaController) and tuner.controller.clamp == 'floor'
    assert isinstance(plugin.ada, AdaController) and plugin.ada.clamp == 'unit'
    plugin.p = 0.25  # p is the controller's.
    assert plugin.ada.p == 0.25 and plugin.state_dict()['p'] == 0.25
