"""What a StyleGAN2-ADA training run writes besides stats: image grids, network snapshots and metrics
(docs/spec/stylegan2-ada.md section 5).

Grids: reals.png (dataset images, [0, 255]) and fakes_init.png / fakes{kimg:06d}.png (G_ema with noise_mode
'const' on fixed z and c, [-1, 1]); conditional datasets show one class per row. Snapshots:
network-snapshot-{kimg:06d}.pkl with G, D, G_ema (deep copies, eval, no grads, CPU), augment_pipe and
training_set_kwargs like the official format, plus our 'plugins' (each plugin's state by name) and
'training_state' (train_state.capture_training_state) for an exact resume. Names carry the kimg rounded down as
officially; when the run already wrote that name (outputs less than 1 kimg apart: --tick < 1, or a last tick in the
same kimg as the one before), the exact count follows as three decimals of kimg, network-snapshot-000000.012.pkl /
fakes000000.012.png for 12 images, so no output of a run ever replaces an earlier one. All files are written
atomically, so an interrupted run never leaves a truncated image or pickle behind. Metrics evaluated at snapshots are appended to
metric-<name>.jsonl (StyleGAN2-ADA's format, metrics.metric_main.report_metric).
"""

import copy
import errno
import math
import os

import numpy as np
import torch

import dnnlib
from metrics import metric_main
from torch_utils import finite, image_io, loop_helpers, misc, training_stats
from training import snapshot, train_state

DDP_IGNORE_REGEX = r'.*\.[^.]+_(avg|ema)'  # Running averages (w_avg) legitimately differ between ranks.
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # Only writes fail so: whatever the file, an output.
_DENIED_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)  # Outputs when the file lies in the run dir.


class OutputWriteError(RuntimeError):
    """The run dir cannot take the run's outputs (disk full, read-only, no permission); names the last snapshot."""


def output_write_error(err: OSError, run_dir: str | None, last_snapshot: str | None) -> OutputWriteError | None:
    """An OutputWriteError for `err` if it is a failed write of the run's outputs (see above), else None."""
    filename = getattr(err, 'filename', None)
    inside = (run_dir is not None and isinstance(filename, (str, bytes, os.PathLike)) and
              os.path.abspath(os.fsdecode(filename)).startswith(os.path.abspath(run_dir) + os.sep))
    if err.errno not in _FULL_ERRNOS and not (err.errno in _DENIED_ERRNOS and inside):
        return None
    reason = f'{err.strerror or err}' + (f' ({os.fsdecode(filename)})' if filename else '')
    return OutputWriteError(f'cannot write the run\'s outputs in {run_dir}: {reason}; the last good snapshot is '
                            f'{loop_helpers.last_snapshot(last_snapshot)} (free space or fix the permissions, '
                            'then resume from it)')


GRID_CELL_PX = 64  # reals.png / fakes*.png show images smaller than this enlarged (nearest) to at most this size.


def grid_shape(resolution: int, num_images: int) -> tuple[int, int]:
    """(gw, gh): clip(7680 // res, 7, 32) x clip(4320 // res, 4, 32) as officially; smaller for tiny datasets."""
    gw = int(np.clip(7680 // resolution, 7, 32))
    gh = int(np.clip(4320 // resolution, 4, 32))
    if num_images < gw * gh:  # A handful of images repeated a thousand times tells nothing: shrink toward square.
        gw = max(1, min(gw, math.ceil(math.sqrt(num_images))))
        gh = max(1, min(gh, math.ceil(num_images / gw)))
    return gw, gh


def grid_indices(training_set, gw: int, gh: int, random_seed: int = 0) -> list[int]:
    """Dataset indices for a gw x gh grid, row-major: a random order, or one class (label value) per row."""
    rnd = np.random.RandomState(random_seed)
    num = len(training_set)
    if not training_set.has_labels:
        order = rnd.permutation(num)
        return [int(order[i % num]) for i in range(gw * gh)]
    groups: dict[tuple, list[int]] = {}
    for idx in range(num):
        groups.setdefault(tuple(training_set.get_label(idx).tolist()), []).append(idx)
    keys = list(groups)  # Classes in order of first appearance (class 0 first for one-hot labels in index order).
    for key in keys:
        rnd.shuffle(groups[key])
    indices = []
    for row in range(gh):
        group = groups[keys[row % len(keys)]]
        indices += [group[i % len(group)] for i in range(gw)]
    return indices


def prepare_grid(state: train_state.TrainState, run_dir: str, log=print) -> dnnlib.EasyDict:
    """Pick the grid, write reals.png and fakes_init.png, and return the fixed grid (size, z, c) for later fakes."""
    training_set = state.training_set
    gw, gh = grid_shape(training_set.resolution, len(training_set))
    indices = grid_indices(training_set, gw, gh, state.random_seed)
    images = np.stack([training_set[idx][0] for idx in indices])  # [N, C, H, W] uint8
    labels = np.stack([training_set.get_label(idx) for idx in indices]).astype(np.float32)  # [N, c_dim]
    image_io.save_image_grid(images, os.path.join(run_dir, 'reals.png'), drange=(0, 255), grid_size=(gw, gh),
                             min_cell=GRID_CELL_PX)
    # Own generator: drawing the grid must not move the training RNG streams (exact resume).
    z = torch.randn([gw * gh, state.G.z_dim], generator=torch.Generator().manual_seed(state.random_seed))
    grid = dnnlib.EasyDict(size=(gw, gh), z=z, c=torch.from_numpy(labels))
    save_fakes(state, grid, os.path.join(run_dir, 'fakes_init.png'))
    log(f'Image grid {gw}x{gh}: reals.png, fakes_init.png')
    return grid


@torch.no_grad()
def save_fakes(state: train_state.TrainState, grid: dnnlib.EasyDict, path: str) -> None:
    """Render the grid with G_ema (noise_mode 'const') in chunks of batch_gpu and save it; a non-finite G_ema
    raises NonFiniteError instead (NaN would save as black pixels)."""
    finite.check_finite_modules({'G_ema': state.G_ema}, f'{os.path.basename(path)} not written')
    chunks = zip(grid.z.split(state.batch_gpu), grid.c.split(state.batch_gpu))
    images = [state.G_ema(z.to(state.device), c.to(state.device), noise_mode='const').cpu() for z, c in chunks]
    image_io.save_image_grid(torch.cat(images), path, drange=(-1, 1), grid_size=grid.size, min_cell=GRID_CELL_PX)


def snapshot_data(state: train_state.TrainState, next_tick: int) -> dict:
    """The snapshot dict (see the module docstring). Collective with several ranks: all ranks call it.

    With several ranks the networks are first checked to be identical everywhere (misc.check_ddp_consistency),
    so that a diverged replica fails loudly at the snapshot rather than silently later.
    """
    data = dict(training_set_kwargs=dict(state.training_set_kwargs))
    for name in ('G', 'D', 'G_ema', 'augment_pipe'):
        module = getattr(state, name)
        if module is not None:
            if state.num_gpus > 1:
                misc.check_ddp_consistency(module, ignore_regex=DDP_IGNORE_REGEX)
            module = copy.deepcopy(module).eval().requires_grad_(False).cpu()
        data[name] = module
    # NaN/Inf policy: a diverged network is never written, so the last snapshot on disk stays a good one.
    finite.check_finite_modules({name: data[name] for name in ('G', 'D', 'G_ema')},
                                f'snapshot at kimg {state.cur_nimg / 1e3:.3f} not written')
    data['plugins'] = {plugin.name: train_state.to_cpu(plugin.state_dict()) for plugin in state.plugins}
    data['training_state'] = train_state.capture_training_state(state, next_tick)
    return data


def _output_path(run_dir: str, prefix: str, cur_nimg: int, suffix: str) -> str:
    """<prefix><kimg:06d><suffix> (released name) unless taken, else <prefix><kimg:06d>.<nimg % 1000:03d><suffix>."""
    released = os.path.join(run_dir, loop_helpers.kimg_file_name(prefix, cur_nimg, suffix))
    if not os.path.exists(released):
        return released
    return os.path.join(run_dir, loop_helpers.kimg_file_name(prefix, cur_nimg, f'.{cur_nimg % 1000:03d}{suffix}'))


def snapshot_path(run_dir: str, cur_nimg: int) -> str:
    """network-snapshot-{kimg:06d}.pkl in run_dir (kimg rounded down, as officially); if the run already wrote that
    name (snapshots less than 1 kimg apart), network-snapshot-{kimg:06d}.{rest:03d}.pkl: kimg to the image."""
    return _output_path(run_dir, 'network-snapshot-', cur_nimg, '.pkl')


def fakes_path(run_dir: str, cur_nimg: int) -> str:
    """fakes{kimg:06d}.png in run_dir, or fakes{kimg:06d}.{rest:03d}.png when taken (see snapshot_path)."""
    return _output_path(run_dir, 'fakes', cur_nimg, '.png')


def save_snapshot(state: train_state.TrainState, run_dir: str | None, next_tick: int) -> str | None:
    """Build the snapshot on every rank and write it on rank 0 (atomically); return its path there, else None."""
    data = snapshot_data(state, next_tick)
    if state.rank != 0 or run_dir is None:
        return None
    path = snapshot_path(run_dir, state.cur_nimg)
    snapshot.save_network_pkl(path, data)
    return path


def evaluate_metrics(state: train_state.TrainState, metrics: list[str], metric_kwargs: dict, run_dir: str | None,
                     snapshot_pkl: str | None, log=print) -> dict:
    """Evaluate `metrics` on G_ema against the full training set (a collective call: all ranks), append each result
    to <run_dir>/metric-<name>.jsonl on rank 0 and report it as `Metrics/<result key>` for stats.jsonl.

    Returns {result key: value}. Metrics run under a forked RNG, so they leave the training RNG streams untouched.
    """
    values = {}
    for metric in metrics:
        result = metric_main.calc_metric(metric=metric, G=state.G_ema, dataset_kwargs=state.training_set_kwargs,
                                         num_gpus=state.num_gpus, rank=state.rank, device=state.device,
                                         **metric_kwargs)
        if state.rank == 0:
            metric_main.report_metric(result, run_dir=run_dir, snapshot_pkl=snapshot_pkl, print_fn=log)
        for name, value in result.results.items():
            training_stats.report0(f'Metrics/{name}', value)
            values[name] = value
    return values

