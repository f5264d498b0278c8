"""Per-rank data feeding shared by the GAN trainer and the diffusion trainer: the device of a rank, the split of a
global batch into per-rank accumulation rounds, and an endless, resumable data iterator over a dataset."""

import torch

from torch_utils import misc


def resolve_device(device: str | torch.device | None, rank: int) -> torch.device:
    """None -> cuda:<rank> when CUDA is available, else cpu; otherwise the given device."""
    if device is not None:
        return torch.device(device)
    return torch.device('cuda', rank % torch.cuda.device_count()) if torch.cuda.is_available() else torch.device('cpu')


def check_batch(batch_size: int, batch_gpu: int, num_gpus: int) -> int:
    """Validate the batch split; return the rounds of gradient accumulation per phase and rank."""
    for name, value in (('batch_size', batch_size), ('batch_gpu', batch_gpu), ('num_gpus', num_gpus)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f'{name} must be an int >= 1, got {value!r}')
    if batch_size % num_gpus != 0 or (batch_size // num_gpus) % batch_gpu != 0:
        raise ValueError(f'batch_size={batch_size} must be a multiple of num_gpus * batch_gpu = {num_gpus} * '
                         f'{batch_gpu}: each rank runs batch_size / num_gpus samples in chunks of batch_gpu')
    return batch_size // num_gpus // batch_gpu


def make_data_iterator(training_set, rank: int, num_gpus: int, random_seed: int, batch_per_rank: int,
                       skip_batches: int, data_loader_kwargs: dict, device: torch.device):
    """Endless iterator of (uint8 images [B, C, H, W], labels [B, c_dim]) batches for this rank.

    The first `skip_batches` batches are skipped by advancing the sampler only (no image is decoded), which puts a
    resumed run at the exact sampler position. The loader has its own torch.Generator so that creating it does
    not consume the global RNG.
    """
    sampler = misc.InfiniteSampler(dataset=training_set, rank=rank, num_replicas=num_gpus, seed=random_seed)
    if skip_batches > 0:
        sampler = _SkippingSampler(sampler, skip_batches * batch_per_rank)
    kwargs = dict(data_loader_kwargs)
    if device.type != 'cuda':
        kwargs['pin_memory'] = False  # Pinned host memory only helps (and only works) with a GPU.
    loader = torch.utils.data.DataLoader(dataset=training_set, sampler=sampler, batch_size=batch_per_rank,
                                         generator=torch.Generator().manual_seed(random_seed), **kwargs)
    return iter(loader)


class _SkippingSampler(torch.utils.data.Sampler):
    """Yields the indices of `sampler` after the first `skip` ones."""

    def __init__(self, sampler, skip: int):
        super().__init__()
        self.sampler, self.skip = sampler, skip

    def __iter__(self):
        it = iter(self.sampler)
        for _ in range(self.skip):
            next(it)
        return it
