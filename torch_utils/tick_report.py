"""Per-tick reporting of the training loop: the fixed-width status line, stats.jsonl and phase timing.

Follows StyleGAN2-ADA's outputs (docs/spec/stylegan2-ada.md section 5): every tick reports Progress/*, Timing/* and
Resources/* into `torch_utils.training_stats`, prints one status line on rank 0, then collects everything
reported since the previous tick (losses included) into one JSON line of stats.jsonl. Unlike the official loop,
CPU runs work: phase times come from CUDA events on CUDA and from time.perf_counter on the CPU.
"""

import json
import os
import time

import psutil
import torch

import dnnlib
from torch_utils import training_stats
from torch_utils import tfevents


class PhaseTimer:
    """Wall time of each training phase in ms, reported as Timing/<phase>.

    On the CPU every phase run is timed with perf_counter and reported at once (the tick mean covers all runs).
    On CUDA the work is asynchronous, so the phase is bracketed by CUDA events and only the tick's last run of each
    phase is reported, at the tick boundary, after one synchronisation (as the official loop does).
    """

    def __init__(self, device: torch.device):
        self.use_events = device.type == 'cuda'
        self._starts: dict[str, object] = {}
        self._events: dict[str, tuple] = {}

    def start(self, name: str) -> None:
        """Start timing phase `name`."""
        if self.use_events:
            event = torch.cuda.Event(enable_timing=True)
            event.record(torch.cuda.current_stream())
            self._starts[name] = event
        else:
            self._starts[name] = time.perf_counter()

    def stop(self, name: str) -> None:
        """Stop timing phase `name`; on the CPU report Timing/<name> in ms at once."""
        start = self._starts.pop(name)
        if self.use_events:
            end = torch.cuda.Event(enable_timing=True)
            end.record(torch.cuda.current_stream())
            self._events[name] = (start, end)
        else:
            training_stats.report0('Timing/' + name, (time.perf_counter() - start) * 1e3)

    def report_events(self) -> None:
        """Report the last CUDA-event timing of each phase (no-op on the CPU, where stop() already reported)."""
        if not self._events:
            return
        torch.cuda.synchronize()
        for name, (start, end) in self._events.items():
            training_stats.report0('Timing/' + name, start.elapsed_time(end))
        self._events.clear()


class TickReporter:
    """Status line and stats.jsonl of one run; `elapsed_sec` carries the time of earlier runs over a resume."""

    def __init__(self, run_dir: str | None, rank: int, device: torch.device, elapsed_sec: float = 0.0):
        self.rank = rank
        self.device = device
        self.collector = training_stats.Collector(regex='.*')
        self.start_time = time.time() - elapsed_sec
        self.tick_start_time = time.time()
        self.tick_end_time = self.tick_start_time
        self.maintenance_sec = 0.0
        self.stats_path = os.path.join(run_dir, 'stats.jsonl') if (run_dir is not None and rank == 0) else None
        self.tfevents = tfevents.open_writer(run_dir if rank == 0 else None)  # None without tensorboard.

    def elapsed_sec(self) -> float:
        """Seconds of training so far, including the runs this one resumed from."""
        return time.time() - self.start_time

    def status_line(self, cur_tick: int, cur_nimg: int, tick_start_nimg: int, augment_p: float | None) -> str:
        """Report Progress/Timing/Resources stats of the tick that just ended and return the status line."""
        report0 = training_stats.report0
        self.tick_end_time = time.time()
        total_sec = self.tick_end_time - self.start_time
        tick_sec = self.tick_end_time - self.tick_start_time
        tick_kimg = (cur_nimg - tick_start_nimg) / 1e3
        sec_per_kimg = tick_sec / tick_kimg if tick_kimg > 0 else 0.0
        cpu_mem_gb = psutil.Process(os.getpid()).memory_info().rss / 2**30
        fields = [
            f'tick {report0("Progress/tick", cur_tick):<5d}',
            f'kimg {report0("Progress/kimg", cur_nimg / 1e3):<9.3f}',
            f'time {dnnlib.util.format_time(report0("Timing/total_sec", total_sec)):<12s}',
            f'sec/tick {report0("Timing/sec_per_tick", tick_sec):<7.1f}',
            f'sec/kimg {report0("Timing/sec_per_kimg", sec_per_kimg):<7.2f}',
            f'maintenance {report0("Timing/maintenance_sec", self.maintenance_sec):<6.1f}',
            f'cpumem {report0("Resources/cpu_mem_gb", cpu_mem_gb):<6.2f}',
            f'gpumem {self._gpu_mem_field()}',
            f'augment {report0("Progress/augment", augment_p if augment_p is not None else 0.0):.3f}',
        ]
        report0('Timing/total_hours', total_sec / (60 * 60))
        report0('Timing/total_days', total_sec / (24 * 60 * 60))
        return ' '.join(fields)

    def _gpu_mem_field(self) -> str:
        if self.device.type != 'cuda':
            return f'{"-":<6s}'  # No GPU: keep the column width, claim nothing.
        peak_gb = torch.cuda.max_memory_allocated(self.device) / 2**30
        reserved_gb = torch.cuda.max_memory_reserved(self.device) / 2**30
        training_stats.report0('Resources/peak_gpu_mem_reserved_gb', reserved_gb)
        torch.cuda.reset_peak_memory_stats(self.device)
        return f'{training_stats.report0("Resources/peak_gpu_mem_gb", peak_gb):<6.2f}'

    def write_stats(self) -> dnnlib.EasyDict:
        """Collect every stat reported since the last tick (all ranks) and append one line to stats.jsonl (rank 0)."""
        self.collector.update()
        stats = self.collector.as_dict()
        timestamp = time.time()
        if self.stats_path is not None:
            line = json.dumps(dict(stats, timestamp=timestamp)) + '\n'
            with open(self.stats_path, 'a', encoding='utf-8') as f:  # One short write per tick: no torn lines.
                f.write(line)
        if self.tfevents is not None:
            tfevents.write_tick(self.tfevents, stats, timestamp, self.start_time)
        return stats

    def close(self) -> None:
        """Close the TensorBoard events file, if any."""
        if self.tfevents is not None:
            self.tfevents.close()
            self.tfevents = None

    def start_next_tick(self) -> None:
        """Begin timing the next tick; the time since the last status line counts as maintenance."""
        self.tick_start_time = time.time()
        self.maintenance_sec = self.tick_start_time - self.tick_end_time
