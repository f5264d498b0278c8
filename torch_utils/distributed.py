"""Multi-process training without a DDP wrapper: process-group set-up, parameter broadcast and gradient averaging.

Like StyleGAN3's loop, the networks stay plain modules; after the accumulation rounds of a phase the gradients of
all ranks are flattened into one tensor, all-reduced and divided by the world size. This keeps double backward
(R1, path length) simple and makes every rank take the same optimizer step. Processes are started by torchrun
(env RANK, WORLD_SIZE, LOCAL_RANK) or, in tests, by torch.multiprocessing with an explicit tcp:// address.

Leaving the group (destroy_process_group / the process_group block) is synchronised: gloo runs each collective on
a C++ worker thread that releases the communicated tensors only after the calling thread has moved on. If the
interpreter is already finalising when such a thread drops the last reference to a tensor that has a Python object,
taking the GIL ends the thread inside a noexcept destructor: std::terminate, "terminate called without an active
exception", SIGABRT at exit (seen in about 1 of 10 two-process runs). So every rank first meets the others at a
barrier (all earlier collectives done everywhere), cycles are collected, and the group is destroyed (its worker
threads joined) while the interpreter is fully alive. Callers keep communicated tensors in a function frame that
has returned before the group is left.
"""

import contextlib
import gc
import os
from typing import Iterable

import torch

from torch_utils import misc


def _silent(*_args, **_kwargs) -> None:
    pass


def print0(rank: int):
    """The rank-0 print helper of the training loops: `print` on rank 0, a no-op elsewhere."""
    return print if rank == 0 else _silent


def is_initialized() -> bool:
    """True when torch.distributed has a process group (i.e. we run as one of several ranks)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f'environment variable {name}={value!r}: expected an integer (set by torchrun)') from None


def env_ranks() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun's environment; (0, 0, 1) when not started by torchrun."""
    world_size = _env_int('WORLD_SIZE', 1)
    rank = _env_int('RANK', 0)
    local_rank = _env_int('LOCAL_RANK', rank)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f'RANK={rank}, WORLD_SIZE={world_size}: expected 0 <= RANK < WORLD_SIZE')
    return rank, local_rank, world_size


def init_process_group(rank: int, world_size: int, init_method: str = 'env://', local_rank: int | None = None) -> None:
    """Join the process group: NCCL when CUDA is available (one GPU per local rank), gloo on CPU.

    Does nothing for world_size 1, so single-process runs never touch torch.distributed.
    """
    if world_size <= 1 or is_initialized():
        return
    use_cuda = torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(rank if local_rank is None else local_rank)
    torch.distributed.init_process_group(backend='nccl' if use_cuda else 'gloo', init_method=init_method,
                                         rank=rank, world_size=world_size)


def destroy_process_group(synchronize: bool = True) -> None:
    """Leave the process group if there is one: barrier (when `synchronize`), collect garbage, destroy the group.

    Pass synchronize=False when leaving because of an error: the other ranks may never reach the barrier.
    """
    if not is_initialized():
        return
    try:
        if synchronize:
            torch.distributed.barrier()  # Every rank's earlier collectives have completed (module docstring).
    finally:
        gc.collect()  # Reference cycles can hold communicated tensors; free them while the group still exists.
        torch.distributed.destroy_process_group()


@contextlib.contextmanager
def process_group(rank: int, world_size: int, init_method: str = 'env://', local_rank: int | None = None):
    """Be one rank of a process group for the duration of the block (nothing happens for world_size 1).

    Leaves the group synchronised after a normal exit, without the barrier after an exception.
    """
    init_process_group(rank, world_size, init_method=init_method, local_rank=local_rank)
    try:
        yield
    except BaseException:
        destroy_process_group(synchronize=False)
        raise
    destroy_process_group()


@torch.no_grad()
def broadcast_module(module: torch.nn.Module) -> None:
    """Overwrite every parameter and buffer of `module` with rank 0's, so that all replicas start identical."""
    if not is_initialized():
        return
    for tensor in misc.params_and_buffers(module):
        if tensor.numel() > 0:
            torch.distributed.broadcast(tensor, src=0)


def broadcast_object(obj):
    """Rank 0's `obj` on every rank (pickled); returns `obj` unchanged without a process group."""
    if not is_initialized():
        return obj
    holder = [obj]
    torch.distributed.broadcast_object_list(holder, src=0)
    return holder[0]


def gather_objects(obj) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every rank; [obj] without a process group."""
    if not is_initialized():
        return [obj]
    gathered = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, obj)
    return gathered


# CPU fast path without a process group: the gradients' sum is finite exactly when every element is, so that one
# reduction (a free host sync on the CPU) decides whether the scrub and the copy back into the gradients have anything
# to do; when it is not finite (or overflows), the full path runs. False = the full path every time.
CPU_CHECK_FINITE_FIRST = True


@torch.no_grad()
def reduce_gradients(params: Iterable[torch.nn.Parameter]) -> tuple[torch.Tensor, int]:
    """Average the gradients over ranks (one flat all_reduce) and replace NaN / +-inf by 0 / +-1e5, in place; return
    (number of elements replaced as a 0-dim int64 tensor on the gradients' device, number of gradient elements).

    Only parameters that received a gradient take part; every rank runs the same phase code, so the set is the
    same on all ranks (and so are the counts). Without a process group only the NaN/inf clean-up happens.
    """
    params = [param for param in params if param.grad is not None and param.numel() > 0]
    if len(params) == 0:
        return torch.zeros([], dtype=torch.int64), 0
    flat = torch.cat([param.grad.flatten() for param in params])  # [sum of numel]
    if (CPU_CHECK_FINITE_FIRST and flat.device.type == 'cpu' and not is_initialized()
            and bool(torch.isfinite(flat.sum()))):
        return torch.zeros([], dtype=torch.int64), flat.numel()
    if is_initialized():
        torch.distributed.all_reduce(flat)
        flat /= torch.distributed.get_world_size()
    scrubbed = flat.numel() - torch.isfinite(flat).sum()  # No host sync: callers tally it on the device.
    misc.nan_to_num(flat, nan=0, posinf=1e5, neginf=-1e5, out=flat)
    for param, grad in zip(params, flat.split([param.numel() for param in params])):
        param.grad.copy_(grad.view_as(param.grad))
    return scrubbed, flat.numel()
