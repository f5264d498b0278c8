"""The metric formulas against closed forms and slow references: FID (Gaussians), KID (double loop, unbiasedness),
precision/recall (brute force, identical and shifted sets), Inception Score (uniform and one-hot predictions)."""

import math

import numpy as np
import pytest
import torch

from metrics import frechet_inception_distance as fid_lib
from metrics import inception_score, kernel_inception_distance as kid_lib, precision_recall
from metrics.feature_stats import FeatureStats


# FID.


def test_fid_of_diagonal_gaussians_matches_the_closed_form():
    rnd = np.random.RandomState(0)
    mu_a, mu_b = rnd.randn(6), rnd.randn(6)
    var_a, var_b = rnd.uniform(0.1, 3, 6), rnd.uniform(0.1, 3, 6)
    expected = np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2) + np.sum((mu_a - mu_b) ** 2)
    assert fid_lib.fid_from_stats(mu_a, np.diag(var_a), mu_b, np.diag(var_b)) == pytest.approx(expected, rel=1e-10)


def test_fid_of_rotated_gaussians_matches_the_closed_form():
    # Sigma_g = Q diag(a) Q^T and Sigma_r = Q diag(b) Q^T commute: Tr sqrt(Sigma_g Sigma_r) = sum sqrt(a b).
    rnd = np.random.RandomState(1)
    q, _ = np.linalg.qr(rnd.randn(5, 5))
    a, b = rnd.uniform(0.5, 2, 5), rnd.uniform(0.5, 2, 5)
    fid = fid_lib.fid_from_stats(np.zeros(5), q @ np.diag(b) @ q.T, np.ones(5), q @ np.diag(a) @ q.T)
    assert fid == pytest.approx(5 + np.sum(a + b - 2 * np.sqrt(a * b)), rel=1e-9)


def test_fid_of_a_feature_set_with_itself_is_zero():
    features = np.random.RandomState(2).randn(200, 8) @ np.random.RandomState(3).randn(8, 8)
    stats = FeatureStats(capture_mean_cov=True)
    stats.append(features)
    mu, sigma = stats.get_mean_cov()
    assert abs(fid_lib.fid_from_stats(mu, sigma, mu, sigma)) < 1e-9


def test_fid_rejects_mismatched_statistics():
    with pytest.raises(ValueError, match=r'FID statistics do not match: mu \(3,\) vs \(4,\)'):
        fid_lib.fid_from_stats(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_ref_stats_round_trip_and_bad_file(tmp_path):
    mu, sigma = np.arange(3.0), np.eye(3) * 2
    fid_lib.save_ref_stats(tmp_path / 'ref.npz', mu, sigma)
    loaded = fid_lib.load_ref_stats(str(tmp_path / 'ref.npz'))
    assert np.array_equal(loaded[0], mu) and np.array_equal(loaded[1], sigma)
    np.savez(tmp_path / 'other.npz', mean=mu)
    with pytest.raises(ValueError, match=r"hold \['mean'\]; expected mu and sigma"):
        fid_lib.load_ref_stats(str(tmp_path / 'other.npz'))


# KID.


def _mmd2_double_loop(x, y):
    """Unbiased MMD^2 with the cubic polynomial kernel, written out element by element."""
    m, d = x.shape
    k = lambda a, b: (float(np.dot(a, b)) / d + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_matches_the_double_loop_reference():
    rnd = np.random.RandomState(4)
    x, y = rnd.randn(7, 3), rnd.randn(7, 3) + 0.5
    assert kid_lib.mmd2_unbiased(x, y) == pytest.approx(_mmd2_double_loop(x, y), rel=1e-12)
    # With subsets as large as the sets, every subset is a permutation: KID is exactly the full-set MMD^2.
    assert kid_lib.kid_from_features(y, x, num_subsets=3, max_subset_size=100) == pytest.approx(
        _mmd2_double_loop(x, y), rel=1e-12)


def test_kid_is_unbiased_on_identical_distributions():
    rnd = np.random.RandomState(5)
    draws = np.array([kid_lib.mmd2_unbiased(rnd.randn(10, 4), rnd.randn(10, 4)) for _ in range(400)])
    sem = draws.std() / math.sqrt(len(draws))
    assert abs(draws.mean()) < 3 * sem
    # The biased (V-statistic) version on the same kind of data sits clearly above 0: the test can fail.
    biased = []
    for _ in range(400):
        x, y = rnd.randn(10, 4), rnd.randn(10, 4)
        k = kid_lib.polynomial_kernel
        biased.append(k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean())
    assert np.mean(biased) > 10 * sem


def test_kid_separates_shifted_sets_and_checks_sizes():
    rnd = np.random.RandomState(6)
    real = rnd.randn(50, 4)
    assert kid_lib.kid_from_features(real, rnd.randn(50, 4) + 1, num_subsets=10, max_subset_size=20) > 0.5
    with pytest.raises(ValueError, match='KID needs at least 2 real and 2 generated items, got 50 and 1'):
        kid_lib.kid_from_features(real, real[:1], num_subsets=1, max_subset_size=10)


# Precision and recall.


def _pr_brute_force(real, gen, k):
    def radii(points):
        return [sorted(np.linalg.norm(points - p, axis=1))[k] for p in points]

    def share_inside(probes, points):
        r = radii(points)
        return np.mean([any(np.linalg.norm(q - p) <= rp for p, rp in zip(points, r)) for q in probes])
    return share_inside(gen, real), share_inside(real, gen)


def test_pr_matches_brute_force_with_small_batches():
    rnd = np.random.RandomState(7)
    real, gen = rnd.randn(23, 3), rnd.randn(17, 3) * 0.7 + 0.8
    precision, recall = precision_recall.pr_from_features(torch.from_numpy(real), torch.from_numpy(gen),
                                                          nhood_size=3, row_batch_size=5, col_batch_size=4)
    expected = _pr_brute_force(real, gen, 3)
    assert (precision, recall) == pytest.approx(expected, abs=1e-6)  # shares of 17 and 23: exact up to float32
    assert 0 < expected[0] < 1 and 0 < expected[1] < 1


def test_pr_is_one_on_identical_sets_and_drops_when_shifted():
    real = torch.from_numpy(np.random.RandomState(8).randn(64, 5)).float()
    assert precision_recall.pr_from_features(real, real.clone()) == (1.0, 1.0)
    shifted = [precision_recall.pr_from_features(real, real + shift) for shift in (1, 2, 3)]
    assert shifted == [(0.875, 0.671875), (0.625, 0.046875), (0.078125, 0.0)]  # 56/64, 43/64, ...: falling
    assert precision_recall.pr_from_features(real, real + 100) == (0.0, 0.0)
    with pytest.raises(ValueError, match='needs more than 3 items per set, got 3'):
        precision_recall.pr_from_features(real, real[:3])


# Inception Score.


def test_is_of_uniform_predictions_is_one():
    mean, std = inception_score.is_from_probs(np.full([20, 7], 1 / 7), num_splits=4)
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


def test_is_of_one_hot_distinct_classes_is_the_number_of_classes():
    probs = np.eye(5)[np.arange(20) % 5]  # every split of 10 holds each of the 5 classes twice
    mean, std = inception_score.is_from_probs(probs, num_splits=2)
    assert mean == pytest.approx(5.0, rel=1e-12) and std == pytest.approx(0.0, abs=1e-12)


def test_is_matches_the_entropy_form():
    # exp(E KL(p(y|x) || p(y))) = exp(H(p(y)) - E H(p(y|x))) for each split.
    probs = np.random.RandomState(9).dirichlet(np.ones(6), size=30)
    entropy = lambda p: -np.sum(p * np.log(p), axis=-1)  # noqa: E731
    scores = [np.exp(entropy(part.mean(0)) - entropy(part).mean()) for part in np.split(probs, 3)]
    assert inception_score.is_from_probs(probs, num_splits=3) == pytest.approx((np.mean(scores), np.std(scores)))
