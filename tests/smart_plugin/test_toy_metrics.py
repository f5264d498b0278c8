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
    assert m == {'hq_share': 1.0, 'modes': 10, 'modes10': 10, 'kl': pytest.approx(math.log(49 / 10), abs=1e-12),
                 'kl_hq': pytest.approx(math.log(49 / 10), abs=1e-12)}


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


def test_kl_over_hq_samples_sees_the_imbalance_that_all_sample_kl_hides():
    # 49 balanced off-centre points per mode (not high quality) plus 40 high-quality points on 2 modes (30 + 10).
    off = np.repeat(CENTERS, 49, 0) + np.array([[0.5, 0.0]])
    hq = np.concatenate([np.repeat(CENTERS[:1], 30, 0), np.repeat(CENTERS[1:2], 10, 0)])
    m = metrics.mode_metrics(np.concatenate([off, hq]), CENTERS, STD)
    p = np.array([49 + 30, 49 + 10] + [49] * 47) / (49 * 49 + 40)
    assert m['kl'] == pytest.approx(float((p * np.log(p * 49)).sum()), abs=1e-12)
    assert m['kl'] < 0.01
    assert m['kl_hq'] == pytest.approx(0.75 * math.log(0.75 * 49) + 0.25 * math.log(0.25 * 49), abs=1e-12)
    assert metrics.mode_metrics(off, CENTERS, STD)['kl_hq'] == pytest.approx(math.log(49))   # no hq sample at all


def test_modes10_counts_modes_above_a_tenth_of_the_balanced_share():
    # 490 hq samples: the balanced share is 10 per mode, so a mode needs >= 1 sample; make 44 modes hold 11,
    # 4 modes hold 1 (counted) and one mode 0 (not counted).
    counts = [11] * 44 + [1] * 4 + [0]
    counts[0] += 490 - sum(counts)
    samples = np.repeat(CENTERS, counts, axis=0)
    m = metrics.mode_metrics(samples, CENTERS, STD)
    assert (m['modes10'], m['modes']) == (48, 44)
    # 4900 hq samples on one mode plus 9 on another: balanced share 100, threshold 10, the second mode misses it.
    lopsided = np.concatenate([np.repeat(CENTERS[:1], 4900, 0), np.repeat(CENTERS[1:2], 9, 0)])
    assert metrics.mode_metrics(lopsided, CENTERS, STD)['modes10'] == 1


def test_energy_distance_of_point_masses_and_equal_sets():
    x = np.zeros([3, 2])
    y = np.tile([[3.0, 4.0]], (5, 1))
    assert metrics.energy_distance(x, y) == pytest.approx(2 * 5.0, abs=1e-12)   # 2|x - y| - 0 - 0
    rng = np.random.RandomState(1)
    z = rng.randn(50, 2)
    assert metrics.energy_distance(z, z[::-1]) == pytest.approx(0.0, abs=1e-12)
    # Two points against one: 2 * (1 + 1) / 2 - (0 + 2 + 2 + 0) / 4 - 0 = 1.
    assert metrics.energy_distance(np.array([[-1.0, 0], [1.0, 0]]), np.zeros([1, 2])) == pytest.approx(1.0)


def test_churn_is_the_share_of_changed_assignments():
    assert metrics.churn(np.array([0, 1, 2, 3]), np.array([0, 1, 5, 6])) == 0.5
    assert metrics.churn(np.array([7, 7]), np.array([7, 7])) == 0.0
    with pytest.raises(ValueError, match=r'^prev_k and k have shapes \[2\], \[3\]; expected equal \[N\], N >= 1$'):
        metrics.churn(np.zeros(2), np.zeros(3))


def test_fast_mean_distance_equals_the_reference():
    rng = np.random.RandomState(3)
    x, y = rng.randn(2500, 2) * 3, rng.randn(1100, 2) * 3   # More rows than one block of ENERGY_CHUNK.
    assert metrics.mean_distance(x, y) == pytest.approx(metrics.mean_distance_reference(x, y), rel=1e-12)
    assert metrics.mean_distance(x, x) == pytest.approx(metrics.mean_distance_reference(x, x), rel=1e-12)
    # Exact differences, not the |x|^2 + |y|^2 - 2xy expansion: far from the origin equal points still give 0.
    far = np.full([4, 2], 1e6) + np.arange(8).reshape(4, 2) * 1e-3
    assert metrics.mean_distance(far[:1], far[:1]) == 0.0
    assert metrics.mean_distance(far, far) == pytest.approx(metrics.mean_distance_reference(far, far), rel=1e-9)
