"""Inception Score (Salimans et al., "Improved Techniques for Training GANs", NeurIPS 2016), as in StyleGAN2-ADA.

IS = exp(E_x KL(p(y|x) || p(y))) per split of the generated set, with p(y) the split's mean prediction; reported as
the mean and standard deviation over `num_splits` splits. Probabilities [N, 1008] come from the Inception detector
called with no_output_bias=True.
"""

import numpy as np
import scipy.special

from metrics import metric_utils


def is_from_probs(probs: np.ndarray, num_splits: int) -> tuple[float, float]:
    """(mean, std) of exp(mean KL(p(y|x) || p(y))) over num_splits consecutive splits of probs [N, K]; 0 log 0 = 0."""
    probs = np.asarray(probs, np.float64)
    if probs.ndim != 2 or probs.shape[0] < num_splits:
        raise ValueError(f'IS needs probabilities [N, K] with N >= num_splits={num_splits}, got {list(probs.shape)}')
    n = probs.shape[0]
    scores = []
    for i in range(num_splits):
        part = probs[i * n // num_splits:(i + 1) * n // num_splits]  # [n / splits, K]
        marginal = part.mean(axis=0, keepdims=True)  # p(y), [1, K]
        kl = scipy.special.xlogy(part, part) - scipy.special.xlogy(part, marginal)  # [n / splits, K]
        scores.append(np.exp(kl.sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


def compute_is(opts: metric_utils.MetricOptions, num_gen: int, num_splits: int) -> tuple[float, float]:
    """(mean, std) Inception Score of opts.G; all ranks call it, rank 0 gets values, others NaN."""
    detector_kwargs = dict(no_output_bias=True)  # Softmax probabilities [N, 1008].
    probs = metric_utils.compute_feature_stats_for_generator(opts, 'inception', detector_kwargs, capture_all=True,
                                                             max_items=num_gen).get_all()
    if opts.rank != 0:
        return float('nan'), float('nan')
    return is_from_probs(probs, num_splits)
