"""Sampling a generator by seed: the latent recipe that reproduces official StyleGAN2-ADA images seed for seed."""

import bisect
import collections.abc
import itertools
import operator
from typing import Iterator, Sequence

import numpy as np
import torch

from torch_utils.finite import NonFiniteError
from torch_utils.image_io import to_uint8


class SeedRanges(collections.abc.Sequence):
    """The seeds of inclusive ranges [(lo, hi), ...] in order, never expanded: len, indexing, slicing and iteration
    cost O(number of ranges) memory, so '--seeds 0-9999999' holds two integers, not ten million."""

    def __init__(self, ranges: Sequence[tuple[int, int]]):
        self.ranges = [(int(lo), int(hi)) for lo, hi in ranges]
        if any(hi < lo for lo, hi in self.ranges):
            raise ValueError(f"seed ranges must have lo <= hi, got {self.ranges}")
        self._ends = list(itertools.accumulate(hi - lo + 1 for lo, hi in self.ranges))  # Cumulative counts.

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return [self[i] for i in range(*idx.indices(len(self)))]
        idx = operator.index(idx)
        idx += len(self) if idx < 0 else 0
        if not 0 <= idx < len(self):
            raise IndexError(f"seed index {idx} out of range for {len(self)} seeds")
        part = bisect.bisect_right(self._ends, idx)
        return self.ranges[part][0] + idx - (self._ends[part - 1] if part > 0 else 0)

    def __iter__(self) -> Iterator[int]:
        for lo, hi in self.ranges:
            yield from range(lo, hi + 1)

    def __repr__(self) -> str:
        return f"SeedRanges({self.ranges})"


def seed_to_z(seed: int, z_dim: int) -> np.ndarray:
    """z for one seed, [1, z_dim] float64: numpy's RandomState(seed).randn, as StyleGAN2-ADA's generate.py draws it."""
    if not 0 <= seed < 2 ** 32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    return np.random.RandomState(seed).randn(1, z_dim)


def class_to_c(class_idx: int | None, c_dim: int) -> torch.Tensor:
    """One-hot label [1, c_dim] for a conditional generator; [1, 0] for an unconditional one."""
    if c_dim == 0:
        if class_idx is not None:
            raise ValueError(f"class {class_idx} given, but the generator is unconditional (c_dim = 0)")
        return torch.zeros([1, 0])
    if class_idx is None:
        raise ValueError(f"the generator is conditional (c_dim = {c_dim}); a class index is needed")
    if not 0 <= class_idx < c_dim:
        raise ValueError(f"class {class_idx} is out of range for c_dim = {c_dim}; expected 0..{c_dim - 1}")
    c = torch.zeros([1, c_dim])
    c[0, class_idx] = 1
    return c


@torch.no_grad()
def generate_images(G: torch.nn.Module, seeds: Sequence[int], class_idx: int | None = None,
                    truncation_psi: float = 1, noise_mode: str = "const", batch_size: int = 8,
                    device: torch.device = torch.device("cpu")) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (seed, [H, W, C] uint8 image) for each seed, in order, running G in batches of `batch_size`.

    z comes from seed_to_z. For noise_mode 'random' the per-layer noise is drawn from torch's RNG seeded with the
    image's seed, one image at a time, so an image never depends on which batch it was generated in.
    """
    c = class_to_c(class_idx, G.c_dim).to(device)
    step = 1 if noise_mode == "random" else batch_size
    seed_iter = iter(seeds)  # Lazy: one batch of seeds at a time (seeds may be a huge SeedRanges).
    while batch := list(itertools.islice(seed_iter, step)):
        z = torch.from_numpy(np.concatenate([seed_to_z(seed, G.z_dim) for seed in batch])).float().to(device)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(batch[0])
            img = G(z, c.repeat(len(batch), 1), truncation_psi=truncation_psi, noise_mode=noise_mode)
        if not bool(torch.isfinite(img).all()):  # to_uint8 would turn NaN into black pixels without a word.
            raise NonFiniteError(f"the generator output holds NaN/Inf for seed(s) {batch}")
        yield from zip(batch, to_uint8(img))
