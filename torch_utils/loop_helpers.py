"""Pieces that the GAN loop (training/training_loop.py) and the diffusion loop (dpm/training_loop.py) share around
their steps: per-rank seeding, the statistics bus and log.txt of a run, the tick schedule, the lines that end an
interrupted or diverged run, the folders a start cleans of killed writes' temp files, and kimg-stamped file names."""

import os
from collections.abc import Iterable

import numpy as np
import torch

import dnnlib
from torch_utils import distributed, signals, training_stats
from torch_utils.finite import NonFiniteError

NO_SNAPSHOT = 'none written by this run'  # Stands for the last snapshot before a run wrote one.


def seed_rngs(seed: int, num_gpus: int, rank: int, numpy: bool = True) -> None:
    """Seed this rank's global torch RNG (and numpy's, unless `numpy` is False) with seed * num_gpus + rank."""
    rank_seed = seed * num_gpus + rank
    if numpy:
        np.random.seed(rank_seed)
    torch.manual_seed(rank_seed)


def init_stats(rank: int) -> None:
    """Start training_stats for this rank: NCCL reduces the statistics on the GPU, gloo and single-process runs on
    the CPU."""
    use_nccl = distributed.is_initialized() and torch.cuda.is_available()
    training_stats.init_multiprocessing(rank, torch.device('cuda', torch.cuda.current_device()) if use_nccl else None)


def open_run_log(run_dir: str | None, rank: int) -> dnnlib.util.Logger | None:
    """On rank 0 of a run that writes (run_dir not None): create run_dir and copy stdout / stderr to its log.txt,
    appended; else None. The caller closes it."""
    if run_dir is None or rank != 0:
        return None
    os.makedirs(run_dir, exist_ok=True)
    return dnnlib.util.Logger(os.path.join(run_dir, 'log.txt'), file_mode='a')


def kimg_to_nimg(kimg: float) -> int:
    """Images in `kimg` thousand, rounded to whole images (0.07 * 1000 is 70.00000000000001 in floating point)."""
    return round(kimg * 1000)


def tick_ends(cur_tick: int, cur_nimg: int, tick_start_nimg: int, tick_nimg: int, done: bool) -> bool:
    """Whether the tick ends after this step: at the end of training, after the first step, and once a tick's
    images have been shown."""
    return done or cur_tick == 0 or cur_nimg >= tick_start_nimg + tick_nimg


def last_snapshot(path: str | None) -> str:
    """The last snapshot's path for a closing line, or NO_SNAPSHOT."""
    return path or NO_SNAPSHOT


def interrupted_line(err: KeyboardInterrupt, cur_nimg: int, snapshot_pkl: str | None) -> str:
    """The line that ends a run stopped by Ctrl-C or SIGTERM (torch_utils.signals)."""
    return (f'\nInterrupted ({signals.signal_name(err)}) at kimg {cur_nimg / 1e3:.3f}; the last snapshot is '
            f'{last_snapshot(snapshot_pkl)}')


def nonfinite_at(err: NonFiniteError, cur_nimg: int, snapshot_pkl: str | None) -> NonFiniteError:
    """`err` (NaN/Inf policy) with the kimg it stopped at and the last good snapshot; the same flag."""
    return NonFiniteError(f'{err} (at kimg {cur_nimg / 1e3:.3f}; the last good snapshot is '
                          f'{last_snapshot(snapshot_pkl)})', err.flag)


def temp_file_folders(run_dirs: Iterable[str], resume_path: str | None) -> list[str]:
    """The folders whose temp files of killed writes a start removes: `run_dirs` (spelled as given) and the folder
    of the file resumed from (absolute; only when it is a file), each once, existing folders only."""
    folders = list(run_dirs)
    if resume_path is not None and os.path.isfile(resume_path):
        folders.append(os.path.dirname(os.path.abspath(resume_path)))
    seen, out = set(), []
    for folder in folders:
        if os.path.abspath(folder) not in seen and os.path.isdir(folder):
            seen.add(os.path.abspath(folder))
            out.append(folder)
    return out


def kimg_file_name(prefix: str, cur_nimg: int, suffix: str) -> str:
    """<prefix><kimg:06d><suffix>, kimg rounded down (the released names, e.g. network-snapshot-000200.pkl)."""
    return f'{prefix}{cur_nimg // 1000:06d}{suffix}'
