"""Wall-clock timing for benchmarks: medians of repeated runs, synchronising CUDA so GPU work is counted."""

import statistics
import time
from typing import Callable

import torch


def median_ms(fn: Callable[[], object], reps: int, warmup: int, device: torch.device) -> float:
    """Median wall time of fn() in milliseconds over `reps` runs, after `warmup` untimed runs."""
    if reps < 1 or warmup < 0:
        raise ValueError(f"reps must be >= 1 and warmup >= 0, got reps={reps}, warmup={warmup}")
    times = []
    for i in range(warmup + reps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)
