"""Accumulated detector features: raw features and/or their mean and covariance in float64 (StyleGAN2-ADA metrics).

FID needs only the first two moments (mu, Sigma), KID / precision-recall / IS need the raw features. `FeatureStats`
keeps whichever is asked for, stops at `max_items`, and with several ranks gathers every batch from all of them in
rank-interleaved order, so that N processes see exactly the items (and order) of a single process. Saved to disk as
an .npz (plain arrays, nothing runs on load), written atomically.
"""

import io
import os

import numpy as np
import torch

import dnnlib
from torch_utils import distributed


class FeatureStats:
    """Raw features [N, F] (capture_all) and/or running sums for mean [F] and covariance [F, F] (capture_mean_cov)."""

    def __init__(self,
                 capture_all: bool = False,         # Keep every feature vector (KID, PR, IS).
                 capture_mean_cov: bool = False,    # Keep float64 sums for mean and covariance (FID).
                 max_items: int | None = None,      # Stop after this many items; None = unbounded.
                 ):
        if max_items is not None and (isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 1):
            raise ValueError(f'FeatureStats: max_items must be an int >= 1 or None, got {max_items!r}')
        self.capture_all = capture_all
        self.capture_mean_cov = capture_mean_cov
        self.max_items = max_items
        self.num_items = 0
        self.num_features = None
        self.all_features = None  # list of float32 [n, F] arrays
        self.raw_mean = None  # float64 [F]: sum of x
        self.raw_cov = None  # float64 [F, F]: sum of x x^T

    def set_num_features(self, num_features: int) -> None:
        """Fix the feature dimension F on the first batch; later batches must match."""
        if self.num_features is not None:
            if num_features != self.num_features:
                raise ValueError(f'FeatureStats: got {num_features} features per item, expected {self.num_features} '
                                 'as in the earlier batches')
            return
        self.num_features = num_features
        self.all_features = []
        self.raw_mean = np.zeros([num_features], dtype=np.float64)
        self.raw_cov = np.zeros([num_features, num_features], dtype=np.float64)

    def is_full(self) -> bool:
        """True once max_items items were appended."""
        return self.max_items is not None and self.num_items >= self.max_items

    def append(self, x: np.ndarray) -> None:
        """Add features [n, F]; items beyond max_items are dropped."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2:
            raise ValueError(f'FeatureStats.append: expected features [N, F], got shape {list(x.shape)}')
        if self.max_items is not None and self.num_items + x.shape[0] > self.max_items:
            if self.num_items >= self.max_items:
                return
            x = x[:self.max_items - self.num_items]
        self.set_num_features(x.shape[1])
        self.num_items += x.shape[0]
        if self.capture_all:
            self.all_features.append(x)
        if self.capture_mean_cov:
            x64 = x.astype(np.float64)
            self.raw_mean += x64.sum(axis=0)
            self.raw_cov += x64.T @ x64

    def append_torch(self, x: torch.Tensor, num_gpus: int = 1, rank: int = 0) -> None:
        """Add features [n, F] of this rank; with num_gpus > 1 (a collective call) add all ranks' interleaved."""
        if not isinstance(x, torch.Tensor) or x.ndim != 2:
            raise ValueError(f'FeatureStats.append_torch: expected a tensor [N, F], got {getattr(x, "shape", x)!r}')
        assert 0 <= rank < num_gpus
        if num_gpus > 1:
            parts = [torch.empty_like(x) for _ in range(num_gpus)]
            torch.distributed.all_gather(parts, x)
            x = torch.stack(parts, dim=1).flatten(0, 1)  # [n * num_gpus, F]: item i of rank r lands at i * G + r.
        self.append(x.detach().cpu().numpy())

    def get_all(self) -> np.ndarray:
        """All features as float32 [N, F] (needs capture_all)."""
        assert self.capture_all
        if not self.all_features:
            return np.zeros([0, self.num_features or 0], dtype=np.float32)
        return np.concatenate(self.all_features, axis=0)

    def get_all_torch(self) -> torch.Tensor:
        """All features as a float32 tensor [N, F] (needs capture_all)."""
        return torch.from_numpy(self.get_all())

    def get_mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """(mu [F], Sigma [F, F]) in float64: the maximum-likelihood covariance E[x x^T] - mu mu^T, as officially."""
        assert self.capture_mean_cov
        if self.num_items == 0:
            raise ValueError('FeatureStats.get_mean_cov: no items were appended (empty dataset or num_gen 0?)')
        mean = self.raw_mean / self.num_items
        cov = self.raw_cov / self.num_items - np.outer(mean, mean)
        return mean, cov

    def save(self, path: str | os.PathLike) -> None:
        """Write the stats to an .npz atomically."""
        arrays = dict(capture_all=self.capture_all, capture_mean_cov=self.capture_mean_cov,
                      max_items=-1 if self.max_items is None else self.max_items, num_items=self.num_items,
                      num_features=-1 if self.num_features is None else self.num_features)
        if self.num_features is not None:
            arrays.update(raw_mean=self.raw_mean, raw_cov=self.raw_cov, all_features=self.get_all()
                          if self.capture_all else np.zeros([0, self.num_features], dtype=np.float32))
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        dnnlib.util.write_atomically(path, buffer.getvalue())

    @staticmethod
    def load(path: str | os.PathLike) -> 'FeatureStats':
        """Read stats written by save() (allow_pickle=False: plain arrays only)."""
        with np.load(path, allow_pickle=False) as data:
            max_items = int(data['max_items'])
            stats = FeatureStats(capture_all=bool(data['capture_all']), capture_mean_cov=bool(data['capture_mean_cov']),
                                 max_items=None if max_items < 0 else max_items)
            if int(data['num_features']) >= 0:
                stats.set_num_features(int(data['num_features']))
                stats.raw_mean, stats.raw_cov = data['raw_mean'], data['raw_cov']
                stats.all_features = [data['all_features']] if stats.capture_all else []
            stats.num_items = int(data['num_items'])
        return stats


def interleaved_indices(num_items: int, num_gpus: int, rank: int) -> list[int]:
    """Dataset indices of `rank`: rank, rank + G, rank + 2G, ... padded (wrapping around) to equal length per rank.

    With FeatureStats.append_torch's interleaving, the gathered order is 0, 1, 2, ...; the wrapped padding items come
    last and are cut by max_items (set to num_items for datasets).
    """
    per_rank = (num_items - 1) // num_gpus + 1
    return [(i * num_gpus + rank) % num_items for i in range(per_rank)]


def broadcast_flag(flag: bool) -> bool:
    """Rank 0's boolean on every rank (no-op with one process)."""
    return bool(distributed.broadcast_object(bool(flag)))
