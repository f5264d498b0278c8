"""Kernel Inception Distance (Bińkowski et al., "Demystifying MMD GANs", ICLR 2018), as in StyleGAN2-ADA.

KID is the unbiased estimate of the squared MMD between real and generated Inception features under the cubic
polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged over `num_subsets` random subsets of m items each:
  MMD^2_u = 1/(m(m-1)) sum_{i!=j} [k(x_i, x_j) + k(y_i, y_j)] - 2/m^2 sum_{i,j} k(x_i, y_j)   (Bińkowski et al., eq. 4)
"""

import numpy as np

from metrics import metric_utils


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x_i, y_j) = (x_i . y_j / d + 1)^3 for features x [n, d], y [m, d] -> [n, m], float64."""
    return (x @ y.T / x.shape[1] + 1) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 between equal-size samples x [m, d] and y [m, d] under the polynomial kernel."""
    m = x.shape[0]
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2 * k_xy.sum() / (m * m))


def kid_from_features(real: np.ndarray, gen: np.ndarray, num_subsets: int, max_subset_size: int,
                      seed: int = 0) -> float:
    """KID: mmd2_unbiased averaged over num_subsets pairs of random subsets of min(n_real, n_gen, max) items."""
    real, gen = np.asarray(real, np.float64), np.asarray(gen, np.float64)
    if real.ndim != 2 or gen.ndim != 2 or real.shape[1] != gen.shape[1]:
        raise ValueError(f'KID features must be [N, F] with the same F, got {list(real.shape)} and {list(gen.shape)}')
    m = min(real.shape[0], gen.shape[0], max_subset_size)
    if m < 2:
        raise ValueError(f'KID needs at least 2 real and 2 generated items, got {real.shape[0]} and {gen.shape[0]}')
    rnd = np.random.RandomState(seed)
    total = 0.0
    for _ in range(num_subsets):
        x = gen[rnd.choice(gen.shape[0], m, replace=False)]
        y = real[rnd.choice(real.shape[0], m, replace=False)]
        total += mmd2_unbiased(x, y)
    return total / num_subsets


def compute_kid(opts: metric_utils.MetricOptions, max_real: int | None, num_gen: int, num_subsets: int,
                max_subset_size: int) -> float:
    """KID of opts.G against the dataset; all ranks call it, rank 0 gets the value, others NaN."""
    detector_kwargs = dict(return_features=True)  # Inception pool features [N, 2048].
    real = metric_utils.compute_feature_stats_for_dataset(opts, 'inception', detector_kwargs, capture_all=True,
                                                          max_items=max_real).get_all()
    gen = metric_utils.compute_feature_stats_for_generator(opts, 'inception', detector_kwargs, capture_all=True,
                                                           max_items=num_gen).get_all()
    if opts.rank != 0:
        return float('nan')
    return kid_from_features(real, gen, num_subsets, max_subset_size, seed=opts.random_seed)
