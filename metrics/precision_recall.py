"""Improved precision and recall (Kynkäänniemi et al., "Improved Precision and Recall Metric for Assessing
Generative Models", NeurIPS 2019) on VGG16 features, as in StyleGAN2-ADA.

Each set's manifold is the union of balls around its points with radius = distance to the k-th nearest neighbour
(eq. 1-2); precision = share of generated points inside the real manifold, recall = share of real points inside the
generated one (eq. 3-4). Distances by torch.cdist in row/column batches, fp16 on CUDA as officially, fp32 on CPU.
"""

import torch

from metrics import metric_utils


def _pairwise(rows: torch.Tensor, cols: torch.Tensor, col_batch_size: int) -> torch.Tensor:
    """Euclidean distances [len(rows), len(cols)], computed col_batch_size columns at a time."""
    return torch.cat([torch.cdist(rows.unsqueeze(0), part.unsqueeze(0))[0] for part in cols.split(col_batch_size)],
                     dim=1)


def knn_radii(manifold: torch.Tensor, nhood_size: int, row_batch_size: int, col_batch_size: int) -> torch.Tensor:
    """Distance of every point [N, F] to its nhood_size-th nearest other point -> [N] (the point itself is 0th)."""
    if manifold.shape[0] <= nhood_size:
        raise ValueError(f'precision/recall with k={nhood_size} needs more than {nhood_size} items per set, got '
                         f'{manifold.shape[0]}')
    radii = []
    for rows in manifold.split(row_batch_size):
        dist = _pairwise(rows, manifold, col_batch_size).to(torch.float32)  # [rows, N]
        radii.append(dist.kthvalue(nhood_size + 1, dim=1).values.to(manifold.dtype))
    return torch.cat(radii)


def inside_manifold(probes: torch.Tensor, manifold: torch.Tensor, radii: torch.Tensor, row_batch_size: int,
                    col_batch_size: int) -> torch.Tensor:
    """For each probe [P, F]: whether it lies within radii[j] of some manifold point j -> bool [P]."""
    hits = []
    for rows in probes.split(row_batch_size):
        dist = _pairwise(rows, manifold, col_batch_size)  # [rows, N]
        hits.append((dist <= radii.unsqueeze(0)).any(dim=1))
    return torch.cat(hits)


def pr_from_features(real: torch.Tensor, gen: torch.Tensor, nhood_size: int = 3, row_batch_size: int = 10000,
                     col_batch_size: int = 10000) -> tuple[float, float]:
    """(precision, recall) of generated features gen [M, F] against real features real [N, F]."""
    if real.ndim != 2 or gen.ndim != 2 or real.shape[1] != gen.shape[1]:
        raise ValueError(f'PR features must be [N, F] with the same F, got {list(real.shape)} and {list(gen.shape)}')
    results = []
    for manifold, probes in ((real, gen), (gen, real)):  # precision, then recall
        radii = knn_radii(manifold, nhood_size, row_batch_size, col_batch_size)
        results.append(inside_manifold(probes, manifold, radii, row_batch_size, col_batch_size).float().mean().item())
    return results[0], results[1]


def compute_pr(opts: metric_utils.MetricOptions, max_real: int | None, num_gen: int, nhood_size: int,
               row_batch_size: int, col_batch_size: int) -> tuple[float, float]:
    """(precision, recall) of opts.G against the dataset on VGG16 features; rank 0 gets values, others NaN."""
    detector_kwargs = dict(return_features=True)
    real = metric_utils.compute_feature_stats_for_dataset(opts, 'vgg16', detector_kwargs, capture_all=True,
                                                          max_items=max_real).get_all_torch()
    gen = metric_utils.compute_feature_stats_for_generator(opts, 'vgg16', detector_kwargs, capture_all=True,
                                                           max_items=num_gen).get_all_torch()
    if opts.rank != 0:
        return float('nan'), float('nan')
    dtype = torch.float16 if opts.device.type == 'cuda' else torch.float32  # fp16 cdist is slow or absent on CPU.
    real, gen = real.to(opts.device, dtype), gen.to(opts.device, dtype)
    return pr_from_features(real, gen, nhood_size, row_batch_size, col_batch_size)
