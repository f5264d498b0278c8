"""Sampling a generator by seed: the latent recipe that reproduces official StyleGAN2-ADA images seed for seed."""

from typing import Iterator, Sequence

import numpy as np
import torch

from torch_utils.image_io import to_uint8


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
    for start in range(0, len(seeds), step):
        batch = list(seeds[start:start + step])
        z = torch.from_numpy(np.concatenate([seed_to_z(seed, G.z_dim) for seed in batch])).float().to(device)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(batch[0])
            img = G(z, c.repeat(len(batch), 1), truncation_psi=truncation_psi, noise_mode=noise_mode)
        yield from zip(batch, to_uint8(img))
