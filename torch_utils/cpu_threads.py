"""CPU threads for the command-line tools: OpenMP workers that sleep instead of spinning, and a `--threads` option.

torch's CPU ops run on an OpenMP pool with one thread per physical core. By default GNU OpenMP lets idle workers
spin for a while after every parallel region; with small tensors a training step is thousands of short regions, so
on a machine where another process also wants the cores the spinning workers and the real work take turns and a
run gets many times slower (benchmarks/cpu_contention.py; figures in docs/cpu-threads.md). OMP_WAIT_POLICY=PASSIVE
makes idle workers sleep at once, which removes most of that loss while keeping the threads for large tensors.

The OpenMP runtime reads OMP_WAIT_POLICY once, when it is loaded with torch, so this module must be imported
before torch: the CLIs import it first. A value the user set (even an empty one, which means OpenMP's own
default) is left alone.
"""

import ctypes
import ctypes.util
import os

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

# The CLIs' first import: also where Ctrl-C during their (seconds-long) imports becomes one line, not a traceback.
from torch_utils import signals  # noqa: E402  (stdlib only: nothing here loads torch)

signals.quiet_interrupts()


def set_threads(threads: int | None) -> int:
    """Use `threads` intra-op threads (None = torch's default, divided among the processes that torchrun started on
    this machine); return the number in use. Call after argument parsing, before the work starts."""
    import torch  # Not at module level: this module must be importable before torch is.
    if threads is None:
        local_ranks = int(os.environ.get('LOCAL_WORLD_SIZE', '1') or 1)
        if local_ranks > 1 and 'OMP_NUM_THREADS' not in os.environ:
            torch.set_num_threads(max(1, torch.get_num_threads() // local_ranks))
        return torch.get_num_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f'threads must be an int >= 1 or None, got {threads!r}')
    torch.set_num_threads(threads)
    return threads


# glibc mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
KEEP_BYTES = 1 << 30   # Both thresholds: blocks up to 1 GiB come from the heap and freed memory stays there.
_kept = False


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory in the process instead of returning it to the OS; True if it applied.

    glibc serves large blocks with mmap and trims the heap top when it is freed; a loop that allocates the same
    few-MiB tensors at every step then takes a page fault for every 4 KiB page it touches afresh. For the toy's
    batched MLPs that was 1160 faults per step and about 14% of the step time (benchmarks/toy_speed.py; the minor
    fault count of 200 steps fell from 305k to 53k). Not used by the image trainers, whose tensors are large and
    whose memory peak matters. Idempotent; a no-op (False) where the C library has no mallopt.
    """
    global _kept
    if _kept:
        return True
    name = ctypes.util.find_library('c')
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _kept = bool(mallopt(M_MMAP_THRESHOLD, KEEP_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_BYTES))
    return _kept
