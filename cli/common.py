"""Pieces the CLIs share: flag-named user errors, the 'LO,HI' integer-pair type, the numbered run directory of
StyleGAN2-ADA / EDM (<outdir>/<5-digit id>-<desc>), the --threads option (train.py, train_dpm.py) and the G_ema of a
--network snapshot (projector.py, style_mixing.py)."""

import json
import math
import os
import pickle
import re
import sys
from typing import Callable

import click
import torch

import dnnlib
from dataset_io.reader import ImageFolderDataset
from torch_utils import cpu_threads, distributed, signals
from training import snapshot
from training.option_fields import ConfigError


class FlagError(click.ClickException):
    """A user error, reported as '<flag>: <message>'."""

    def __init__(self, flag: str, message: str):
        super().__init__(f'{flag}: {message}')


threads_option = click.option(
    '--threads', type=click.IntRange(min=1), default=None, show_default="torch's: cores / processes per machine",
    help='CPU threads per process (1 is fastest for tiny models on a busy machine; see docs/cpu-threads.md)')


class FiniteFloatRange(click.FloatRange):
    """click.FloatRange that also refuses NaN and +-inf (a NaN compares False with both bounds, so passes there)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f'{value!r} is not a finite number', param, ctx)
        return number


class IntPair(click.ParamType):
    """'LO,HI' -> (LO, HI), two integers >= 0."""
    name = 'LO,HI'

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        match = re.fullmatch(r'\s*(\d+)\s*,\s*(\d+)\s*', str(value))
        if match is None:
            self.fail(f'{value!r} is not a range LO,HI of two integers >= 0, e.g. 40,60', param, ctx)
        return int(match.group(1)), int(match.group(2))


def next_run_dir(outdir: str, desc: str) -> str:
    """<outdir>/<next 5-digit id>-<desc>; ids continue after the largest existing numbered entry."""
    if os.path.exists(outdir) and not os.path.isdir(outdir):
        raise FlagError('--outdir', f'{outdir!r} exists and is not a directory')
    names = os.listdir(outdir) if os.path.isdir(outdir) else []
    ids = [int(match.group()) for match in (re.match(r'^\d+', name) for name in names) if match is not None]
    return os.path.join(outdir, f'{max(ids, default=-1) + 1:05d}-{desc}')


def create_run_dir(run_dir: str, options: dict, rank: int) -> str:
    """Rank 0 removes the temp files that killed writers left anywhere in --outdir (its run dirs included), creates
    run_dir and writes training_options.json atomically; every rank returns rank 0's run_dir."""
    if rank == 0:
        for folder, names in dnnlib.util.remove_stale_temp_files_below(os.path.dirname(run_dir)).items():
            print(f'Removed {len(names)} stale temp file(s) of interrupted writes in {folder}: {", ".join(names)}')
        try:
            os.makedirs(run_dir)
            dnnlib.util.write_atomically(os.path.join(run_dir, 'training_options.json'),
                                         (json.dumps(options, indent=2) + '\n').encode())
        except OSError as err:  # Read-only or full --outdir: one line, not a traceback.
            raise FlagError('--outdir', f'cannot create the run dir {run_dir}: {err.strerror or err}') from None
    return distributed.broadcast_object(run_dir)


def show_options(options: dict, run_dir: str | None, rank: int, notes: tuple[str, ...] = ()) -> None:
    """Rank 0 prints the resolved options (training_options.json), `notes`, and the run directory."""
    if rank == 0:
        print('Training options:')
        print(json.dumps(options, indent=2))
        for note in notes:
            print(note)
        print(f'Output directory: {run_dir}')


def launch_tail(threads: int | None, launch: Callable[[], None]) -> None:
    """Set --threads, then run `launch` with SIGTERM stopping like Ctrl-C (clean writes, the last snapshot named);
    an interrupt before the training loop took over exits with the signal's code."""
    cpu_threads.set_threads(threads)
    try:
        with signals.sigterm_as_interrupt():
            launch()
    except KeyboardInterrupt as err:  # Before the training loop took over (set-up).
        print(f'Interrupted ({signals.signal_name(err)}) during set-up; no snapshot written', file=sys.stderr)
        raise SystemExit(signals.exit_code(err)) from None


def open_dataset(data: str, cond: bool) -> ImageFolderDataset:
    """The dataset at --data (labels not loaded); FlagError naming --data if it cannot be read, --cond if it has no
    labels but a conditional model was asked for (training.preflight.open_dataset)."""
    from training import preflight  # Deferred: preflight imports the metrics and networks.
    try:
        return preflight.open_dataset(data, cond)
    except ConfigError as err:
        raise FlagError(err.flag, str(err)) from None


def load_G_ema(network_pkl: str, trusted: bool, device: str) -> tuple[torch.nn.Module, torch.device]:
    """(G_ema on the device, the device) of the --network snapshot; --device 'auto' picks CUDA when available.
    Errors name --network."""
    device = torch.device('cuda' if device == 'cuda' or (device == 'auto' and torch.cuda.is_available()) else 'cpu')
    try:
        G = snapshot.load_network_pkl(network_pkl, trusted=trusted)['G_ema']
    except (OSError, EOFError, pickle.UnpicklingError, ValueError) as err:
        raise click.ClickException(f'--network: {network_pkl}: {err}') from None
    if G is None:
        raise click.ClickException(f'--network: {network_pkl}: the snapshot has no G_ema')
    return G.to(device), device
