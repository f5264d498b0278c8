"""Outputs of a diffusion-model training run: EDM-format network snapshots and exact-resume training states.

network-snapshot-<kimg:06d>.pkl is EDM's format (docs/spec/diffusion.md section 2), a plain pickle of a dict:

  ema             the EMA network: a persistent preconditioner (EDMPrecond / VPPrecond / VEPrecond /
                  NCSNv2Precond) in eval mode without gradients, on the CPU
  loss_fn         the loss as plain data (dpm_losses.*.describe(): class name, sigma distribution, sigma_data,
                  STF) -- EDM stores the loss object, but a plain description keeps the file readable by the safe
                  loader (torch_utils.safe_pickle) and by code that does not have our loss classes
  augment_pipe    the persistent dpm.augment.AugmentPipe, or None
  dataset_kwargs  the ImageFolderDataset arguments
  training_sigma  the training p(sigma) (SigmaDistribution.describe()), e.g. a SMaRt-band mixture
  precond         the preconditioning's class name and constants (sigma_data, sigma_min/max, beta_d, ...)
  training_state  the file name of the training state written (completely) before it, in the same folder

edm_bridge.loading.load_denoiser reads it without running code from it. training-state-<kimg:06d>.pt is a
torch.save of tensors and plain values only (net, ema, optimizer, counters, RNG states), loaded with
torch.load(weights_only=True), so resuming executes nothing from the file either. Both are written atomically, the
state first: a kill between the two leaves a resumable state, and a snapshot always names a complete state (--resume
takes either file). Temporary files that a killed run left behind are removed at the next start.
"""

import copy
import glob
import io
import os
import pickle
import time

import numpy as np
import torch

import dnnlib
from torch_utils import loop_helpers

TRAINING_STATE_VERSION = 1
_PRECOND_CONSTANTS = ('sigma_data', 'sigma_min', 'sigma_max', 'sigma01_min', 'sigma01_max', 'beta_d', 'beta_min', 'M',
                      'epsilon_t', 'C_1', 'C_2', 'num_scales')


def precond_constants(net: torch.nn.Module) -> dict:
    """{'class_name': ..., constant: float} for the preconditioning constants that `net` has."""
    out = dict(class_name=type(net).__name__)
    for name in _PRECOND_CONSTANTS:
        value = getattr(net, name, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def _frozen_cpu_copy(module: torch.nn.Module | None) -> torch.nn.Module | None:
    if module is None:
        return None
    return copy.deepcopy(module).eval().requires_grad_(False).cpu()


def snapshot_data(ema: torch.nn.Module, loss_fn, augment_pipe: torch.nn.Module | None, dataset_kwargs: dict,
                  training_state: str | None = None) -> dict:
    """The network-snapshot dict (see the module docstring); `training_state` = the state's file name."""
    loss = loss_fn.describe()  # Plain data: the safe loader reads it without running code.
    return dict(ema=_frozen_cpu_copy(ema), loss_fn=loss, augment_pipe=_frozen_cpu_copy(augment_pipe),
                dataset_kwargs=dict(dataset_kwargs), training_sigma=loss['sigma_dist'], precond=precond_constants(ema),
                training_state=training_state)


def state_of_snapshot(path: str) -> str:
    """The training-state path that the network snapshot `path` names (read with the safe loader); ValueError if
    it names none (an EDM pickle, or a snapshot from before states were named) or the state file is missing."""
    from torch_utils import safe_pickle  # Deferred: only --resume with a .pkl needs it.
    with open(path, 'rb') as f:
        try:
            data = safe_pickle.safe_load(f)
        except (pickle.UnpicklingError, EOFError, ValueError) as err:
            raise ValueError(f'resume snapshot {path!r} cannot be read safely ({err})') from None
    name = data.get('training_state') if isinstance(data, dict) else None
    if not isinstance(name, str):
        raise ValueError(f'resume snapshot {path!r} names no training state; pass the training-state-*.pt of the '
                         f'same tick (train_dpm.py resumes from its own runs only)')
    state = os.path.join(os.path.dirname(path), os.path.basename(name))
    if not os.path.isfile(state):
        raise ValueError(f'resume snapshot {path!r} names the training state {name!r}, which is missing from '
                         f'{os.path.dirname(path) or "."}')
    return state


STALE_TEMP_SEC = 120  # A temp file not written to for this long belongs to a run that was killed.


def remove_stale_temp_files(run_dir: str, log=print) -> list[str]:
    """Delete the temporary files of atomic writes that a killed run left in `run_dir`: those of dnnlib's
    write_atomically whose writer process is gone (however young), and older versions' tmp_*.part not written to
    within STALE_TEMP_SEC (their writer is unknown). Returns the removed paths."""
    removed = [os.path.join(run_dir, name) for name in dnnlib.util.remove_stale_temp_files(run_dir)]
    now = time.time()
    for path in sorted(glob.glob(os.path.join(glob.escape(run_dir), 'tmp_*.part'))):
        try:
            if os.path.isfile(path) and now - os.path.getmtime(path) > STALE_TEMP_SEC:
                os.remove(path)
                removed.append(path)
        except FileNotFoundError:  # Renamed or removed meanwhile by its owner.
            continue
    removed.sort()
    if removed:
        log(f'Removed {len(removed)} temporary file(s) of an interrupted run in {run_dir}: '
            f'{", ".join(os.path.basename(p) for p in removed)}')
    return removed


def network_snapshot_path(run_dir: str, cur_nimg: int) -> str:
    """<run_dir>/network-snapshot-<kimg:06d>.pkl (kimg rounded down, as EDM)."""
    return os.path.join(run_dir, loop_helpers.kimg_file_name('network-snapshot-', cur_nimg, '.pkl'))


def training_state_path(run_dir: str, cur_nimg: int) -> str:
    """<run_dir>/training-state-<kimg:06d>.pt."""
    return os.path.join(run_dir, loop_helpers.kimg_file_name('training-state-', cur_nimg, '.pt'))


def save_network_snapshot(path: str, data: dict) -> None:
    """Pickle the snapshot dict atomically."""
    dnnlib.util.write_atomically(path, pickle.dumps(data))


def rng_state(device: torch.device) -> dict:
    """The global torch, CUDA and numpy RNG states as tensors and plain values (weights_only-loadable)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return dict(torch=torch.get_rng_state(), cuda=torch.cuda.get_rng_state(device) if device.type == 'cuda' else None,
                numpy=dict(kind=kind, keys=torch.from_numpy(keys.astype(np.int64)), pos=int(pos),
                           has_gauss=int(has_gauss), cached=float(cached)))


def set_rng_state(state: dict, device: torch.device) -> None:
    """Restore what rng_state() returned."""
    torch.set_rng_state(state['torch'])
    if device.type == 'cuda' and state['cuda'] is not None:
        torch.cuda.set_rng_state(state['cuda'], device)
    n = state['numpy']
    np.random.set_state((n['kind'], n['keys'].numpy().astype(np.uint32), n['pos'], n['has_gauss'], n['cached']))


def save_training_state(path: str, state: dict) -> None:
    """torch.save `state` (tensors and plain values only) atomically."""
    buffer = io.BytesIO()
    torch.save(dict(state, version=TRAINING_STATE_VERSION), buffer)
    dnnlib.util.write_atomically(path, buffer.getvalue())


def load_training_state(path: str) -> dict:
    """Load a training-state-*.pt with torch.load(weights_only=True); ValueError naming `path` if it is not one."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'resume state {path!r} does not exist; expected a training-state-*.pt of a run')
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
        raise ValueError(f'resume state {path!r} is not a training-state-*.pt written by train_dpm.py '
                         f'(torch.load(weights_only=True) failed: {str(err).strip().splitlines()[0]})') from None
    if not isinstance(state, dict) or state.get('version') != TRAINING_STATE_VERSION:
        got = state.get('version') if isinstance(state, dict) else type(state).__name__
        raise ValueError(f'resume state {path!r} has version {got!r}; expected a training-state-*.pt of version '
                         f'{TRAINING_STATE_VERSION} written by train_dpm.py')
    return state
