"""Shared machinery of the StyleGAN2-ADA metrics (Karras et al., NeurIPS 2020): options, detector features of a
dataset (cached on disk) and of a generator, with rank interleaving across torch.distributed processes.

Reals: the dataset at its stored resolution, uint8, each rank reading every num_gpus-th image; features are gathered
so that the result equals a single-process run. The statistics are cached under
<cache>/gan-metrics/<dataset>-<detector>-<md5>.npz, keyed by the dataset identity (a zip's central directory with
the CRC-32 of every member, i.e. its content; for a folder the names, sizes and modification times of its files),
the dataset options, the detector file's md5 and the statistic options.

Fakes: a deep copy of G in eval mode; z ~ N(0, I) and c drawn from the dataset's labels, from seeds derived from
`random_seed` and the rank, so a run is repeatable (the official code draws new seeds each time); images become
uint8 as clamp(x * 127.5 + 128).
"""

import copy
import hashlib
import os
import zipfile
from typing import Any

import numpy as np
import torch
import tqdm

import dnnlib
from metrics import detectors
from metrics.feature_stats import FeatureStats, broadcast_flag, interleaved_indices
from torch_utils import dataset_classes, image_io

_dataset_identities: dict = {}  # (path, size, mtime_ns) -> identity string


class MetricOptions:
    """What a metric evaluates and how: generator, dataset, ranks, device, progress bars, cache, detectors."""

    def __init__(self,
                 G: torch.nn.Module | None = None,      # Generator (G_ema); None for dataset-only computations.
                 G_kwargs: dict | None = None,          # Extra G arguments, e.g. truncation_psi, noise_mode.
                 dataset_kwargs: dict | None = None,    # ImageFolderDataset kwargs (class_name, path, ...).
                 trust_dataset: bool = False,           # Build any class dataset_kwargs names (by import); False =
                                                        # the known classes only (torch_utils.dataset_classes).
                 num_gpus: int = 1,                     # Number of ranks taking part (a collective call if > 1).
                 rank: int = 0,                         # This process's rank.
                 device: Any = None,                    # None = cuda:rank when CUDA is available, else cpu.
                 progress: bool | None = None,          # tqdm bars on rank 0; None / False = none.
                 cache: bool = True,                    # Cache dataset statistics on disk.
                 detector: str | None = None,           # Inception detector path / URL; None = SMART_DETECTOR_DIR,
                                                        # download cache or official URL (metrics.detectors).
                 detector_vgg16: str | None = None,     # VGG16 detector path / URL, likewise.
                 trust_detector: bool = False,          # Also unpickle detector files that are not TorchScript
                                                        # (RUNS their code; metrics.detectors).
                 fid_ref: str | None = None,            # Reference mu/sigma .npz for FID instead of the dataset.
                 random_seed: int = 0,                  # Seed of the fakes' z and c.
                 num_workers: int = 3,                  # DataLoader workers for the reals.
                 ):
        if not isinstance(num_gpus, int) or num_gpus < 1 or not isinstance(rank, int) or not 0 <= rank < num_gpus:
            raise ValueError(f'num_gpus={num_gpus!r}, rank={rank!r}: expected integers with 0 <= rank < num_gpus')
        self.G = G
        self.G_kwargs = dnnlib.EasyDict(G_kwargs or {})
        self.dataset_kwargs = dnnlib.EasyDict(dataset_kwargs or {})
        self.trust_dataset = bool(trust_dataset)
        self.num_gpus, self.rank = num_gpus, rank
        if device is None:
            device = torch.device('cuda', rank) if torch.cuda.is_available() else torch.device('cpu')
        self.device = torch.device(device)
        self.progress = bool(progress) and rank == 0
        self.cache = cache
        self.detector, self.detector_vgg16, self.fid_ref = detector, detector_vgg16, fid_ref
        self.trust_detector = bool(trust_detector)
        self.random_seed, self.num_workers = random_seed, num_workers

    def detector_source(self, kind: str) -> str | None:
        """The user-given path / URL for detector `kind` ('inception' or 'vgg16'), or None."""
        return self.detector_vgg16 if kind == 'vgg16' else self.detector


def open_dataset(opts: MetricOptions):
    """The dataset of `opts.dataset_kwargs` (errors name dataset_kwargs when it is missing)."""
    if not opts.dataset_kwargs.get('class_name'):
        raise ValueError(f'dataset_kwargs={dict(opts.dataset_kwargs)!r}: this metric needs a dataset (class_name, '
                         'path, ...); pass --data')
    return dataset_classes.open_dataset(opts.dataset_kwargs, trusted=opts.trust_dataset, trust_flag='--trusted')


def dataset_identity(path: str) -> str:
    """Identity of a dataset zip (its members' names, sizes and CRC-32s) or folder (names, sizes, mtimes)."""
    info = os.stat(path)
    key = (os.path.abspath(path), info.st_size, info.st_mtime_ns)
    if key in _dataset_identities:
        return _dataset_identities[key]
    digest = hashlib.md5()
    if os.path.isdir(path):
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                file_info = os.stat(os.path.join(root, name))
                rel = os.path.relpath(os.path.join(root, name), path)
                digest.update(f'{rel}\0{file_info.st_size}\0{file_info.st_mtime_ns}\n'.encode())
    else:
        with zipfile.ZipFile(path) as zf:
            for member in sorted(zf.infolist(), key=lambda m: m.filename):
                digest.update(f'{member.filename}\0{member.file_size}\0{member.CRC}\n'.encode())
    _dataset_identities[key] = digest.hexdigest()
    return _dataset_identities[key]


def dataset_cache_path(opts: MetricOptions, dataset_name: str, detector_id: str, **key_fields) -> str:
    """<cache>/gan-metrics/<dataset>-<detector>-<md5 of the key>.npz; the dataset path itself is not in the key."""
    kwargs = {k: v for k, v in opts.dataset_kwargs.items() if k != 'path'}
    key = dict(dataset_kwargs=kwargs, dataset=dataset_identity(opts.dataset_kwargs.path), detector=detector_id,
               **key_fields)
    md5 = hashlib.md5(repr(sorted(key.items())).encode('utf-8')).hexdigest()
    detector_stem = detector_id.rsplit('-', 1)[0]
    return dnnlib.util.make_cache_dir_path('gan-metrics', f'{dataset_name}-{detector_stem}-{md5}.npz')


def _bar(opts: MetricOptions, total: int, desc: str) -> tqdm.tqdm:
    return tqdm.tqdm(total=total, desc=desc, unit='img', disable=not opts.progress, leave=False, dynamic_ncols=True)


@torch.no_grad()
def compute_feature_stats_for_dataset(opts: MetricOptions, detector_kind: str, detector_kwargs: dict,
                                      batch_size: int = 64, max_items: int | None = None,
                                      **stats_kwargs) -> FeatureStats:
    """Detector features of (up to max_items of) the dataset, from the disk cache when present; all ranks call it."""
    dataset = open_dataset(opts)
    detector, detector_id = detectors.get_detector(detector_kind, opts.detector_source(detector_kind), opts.device,
                                                   trust=opts.trust_detector)
    num_items = len(dataset) if max_items is None else min(len(dataset), max_items)
    cache_file = None
    if opts.cache:
        cache_file = dataset_cache_path(opts, dataset.name, detector_id, detector_kwargs=detector_kwargs,
                                        stats_kwargs=stats_kwargs, max_items=max_items)
        if broadcast_flag(opts.rank == 0 and os.path.isfile(cache_file)):
            return FeatureStats.load(cache_file)

    stats = FeatureStats(max_items=num_items, **stats_kwargs)
    workers = opts.num_workers
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                                         sampler=interleaved_indices(num_items, opts.num_gpus, opts.rank),
                                         pin_memory=opts.device.type == 'cuda',
                                         prefetch_factor=2 if workers > 0 else None)
    # The DataLoader draws its base seed from torch's global RNG; forked, so that the generated images that follow
    # (G's noise) are the same whether or not these statistics came from the cache.
    with _bar(opts, num_items, f'{dataset.name} features') as bar, torch.random.fork_rng(devices=[]):
        for images, _labels in loader:  # uint8 [batch, C, H, W]
            features = detectors.run_detector(detector, images.to(opts.device), **detector_kwargs)  # [batch, F]
            before = stats.num_items
            stats.append_torch(features, num_gpus=opts.num_gpus, rank=opts.rank)
            bar.update(stats.num_items - before)
    if cache_file is not None and opts.rank == 0:
        stats.save(cache_file)
    return stats


def _label_sampler(opts: MetricOptions, c_dim: int):
    """Callable n -> c [n, c_dim] float32 of random dataset labels (zeros [n, 0] for an unconditional G)."""
    if c_dim == 0:
        return lambda n: torch.zeros([n, 0])
    dataset = open_dataset(opts)
    if dataset.label_dim != c_dim:
        raise ValueError(f'G is conditional with c_dim={c_dim}, but the dataset {opts.dataset_kwargs.get("path")!r} '
                         f'gives labels of dim {dataset.label_dim} (use_labels={dataset.has_labels}); expected a '
                         'dataset with matching labels')
    rnd = np.random.RandomState(opts.random_seed * opts.num_gpus + opts.rank)
    return lambda n: torch.from_numpy(np.stack([dataset.get_label(rnd.randint(len(dataset))) for _ in range(n)]))


def generate_uint8(G: torch.nn.Module, z: torch.Tensor, c: torch.Tensor, **G_kwargs) -> torch.Tensor:
    """G(z, c) as uint8 [N, C, H, W] = clamp(x * 127.5 + 128), the metrics' (and official) quantisation."""
    return image_io.quantize(G(z, c, **G_kwargs))  # [N, C, H, W] in [-1, 1] -> uint8


@torch.no_grad()
def compute_feature_stats_for_generator(opts: MetricOptions, detector_kind: str, detector_kwargs: dict,
                                        batch_size: int = 64, batch_gen: int | None = None,
                                        **stats_kwargs) -> FeatureStats:
    """Detector features of generated images until stats_kwargs['max_items'] are collected over all ranks.

    Each rank generates batch_size images per round in chunks of batch_gen (default: 4 at >= 256 px, like the
    official code, else batch_size). All ranks must call it; G's own noise comes from torch's global RNG, which
    metric_main.calc_metric forks and seeds.
    """
    if opts.G is None:
        raise ValueError('G=None: this metric needs a generator (pass --network)')
    G = copy.deepcopy(opts.G).eval().requires_grad_(False).to(opts.device)
    if batch_gen is None:
        batch_gen = 4 if G.img_resolution >= 256 else batch_size
    if batch_size % batch_gen != 0:
        raise ValueError(f'batch_gen={batch_gen} must divide batch_size={batch_size}')
    detector, _ = detectors.get_detector(detector_kind, opts.detector_source(detector_kind), opts.device,
                                         trust=opts.trust_detector)
    sample_c = _label_sampler(opts, G.c_dim)
    z_gen = torch.Generator().manual_seed(opts.random_seed * opts.num_gpus + opts.rank)
    stats = FeatureStats(**stats_kwargs)
    if stats.max_items is None:
        raise ValueError('compute_feature_stats_for_generator: max_items (the number of images) must be given')
    with _bar(opts, stats.max_items, 'generated features') as bar:
        while not stats.is_full():
            images = []
            for _ in range(batch_size // batch_gen):
                z = torch.randn([batch_gen, G.z_dim], generator=z_gen).to(opts.device)  # [batch_gen, z_dim]
                images.append(generate_uint8(G, z, sample_c(batch_gen).to(opts.device), **opts.G_kwargs))
            features = detectors.run_detector(detector, torch.cat(images), **detector_kwargs)  # [batch_size, F]
            before = stats.num_items
            stats.append_torch(features, num_gpus=opts.num_gpus, rank=opts.rank)
            bar.update(stats.num_items - before)
    return stats
