"""Metrics of the 2-D toy on hand-built sample sets with known answers."""

import math

import numpy as np
import pytest

from smart_plugin.toy import metrics
from smart_plugin.toy.mixture import GridMixture

CENTERS = GridMixture(7, 2.0, 0.05).centers.numpy()
STD = 0.05


def test_ten_modes_exactly_on_centres():
    samples = np.repeat(CENTERS[:10], 20, axis=0)                     # 10 modes x 20 points
    m = metrics.mode_metrics(samples, CENTERS, STD)
    assert m == {'hq_share': 1.0, 'modes': 10, 'kl': pytest.approx(math.log(49 / 10), abs=1e-12)}


def test_high_quality_radius_and_min_count():
    near = CENTERS[:1] + np.array([[2.9 * STD, 0.0]])                # inside 3 std
    far = CENTERS[1:2] + np.array([[0.0, 3.1 * STD]])                # outside 3 std
    few = CENTERS[2:3]                                               # on a centre but only 9 times
    samples = np.concatenate([np.repeat(near, 10, 0), np.repeat(far, 10, 0), np.repeat(few, 9, 0)])
    m = metrics.mode_metrics(samples, CENTERS, STD)
    assert m['hq_share'] == pytest.approx(19 / 29, abs=1e-12)
    assert m['modes'] == 1
    assert metrics.mode_metrics(samples, CENTERS, STD, min_count=9)['modes'] == 2


def test_kl_uniform_and_single_mode():
    assert metrics.mode_metrics(np.repeat(CENTERS, 3, 0), CENTERS, STD)['kl'] == pytest.approx(0.0, abs=1e-12)
    assert metrics.mode_metrics(np.repeat(CENTERS[5:6], 30, 0), CENTERS, STD)['kl'] == pytest.approx(math.log(49))


def test_sliced_w1_of_a_translation():
    rng = np.random.RandomState(0)
    x = rng.randn(300, 2)
    shift = np.array([0.3, -0.4])
    angles = np.pi * np.arange(metrics.NUM_PROJECTIONS) / metrics.NUM_PROJECTIONS
    expected = np.abs(shift[0] * np.cos(angles) + shift[1] * np.sin(angles)).mean()   # W1 of a shift = |shift . theta|
    assert metrics.sliced_w1(x, x + shift) == pytest.approx(expected, rel=1e-12)
    assert metrics.sliced_w1(x, x[::-1]) == 0.0


def test_sliced_w1_different_sizes():
    x = np.zeros([1, 2])
    y = np.array([[1.0, 0.0], [-1.0, 0.0]])
    angles = np.pi * np.arange(8) / 8
    assert metrics.sliced_w1(x, y, num_projections=8) == pytest.approx(np.abs(np.cos(angles)).mean(), rel=1e-12)


def test_bad_shapes():
    with pytest.raises(ValueError, match=r'^samples has shape \[5, 3\]; expected \[N, 2\] with N >= 1$'):
        metrics.mode_metrics(np.zeros([5, 3]), CENTERS, STD)
    with pytest.raises(ValueError, match=r'^std is -1\.0; expected a finite number > 0$'):
        metrics.mode_metrics(np.zeros([5, 2]), CENTERS, -1.0)
