"""Speed of the 2-D toy of SMaRt (Xia et al., ICML 2024, Figure 2): the batched engine with all runs stacked against
the same engine with one run at a time, on an idle machine and with one CPU-bound busy process that this script
starts itself.

The runs are the fine-tune arms of the default `python -m smart_plugin.toy` (the lambda frontier: 8 arms x 3 seeds,
batch 256, SMaRt on from the first step as after the branch). Each setting trains a few steps after a warm-up; the
figure is seconds per iteration of all 24 runs and, extrapolated, the fine-tune phase of the default command (the
vanilla pretraining, curve evaluations and final metrics excluded). Settings:

- batched: smart_plugin.toy's engine, the runs split over --workers processes of one intra-op thread each;
- one run at a time: the same engine (smart_plugin.toy.engine.BatchedToy) holding one run, run after run, with
  torch's default intra-op threads, as the toy trained before runs were stacked.

The whole default command, `python -m smart_plugin.toy` (pretraining, fine-tuning, curves, final metrics, figures),
is also timed end to end, idle and loaded (`--command`, on by default; `--no-command` skips it): its wall time and
the CPU time of its processes.

    python benchmarks/toy_speed.py [--steps 60] [--old-steps 10] [--workers 2] [--no-command]
"""

import contextlib
import dataclasses
import io
import os
import resource
import subprocess
import sys
import tempfile
import time

import click
import torch

from smart_plugin.toy import workers as pool
from smart_plugin.toy.config import FRONTIER, PRESETS, ToyConfig
from smart_plugin.toy.engine import BatchedToy
from smart_plugin.toy.experiment import plan_runs

SEEDS = (0, 1, 2)
DEFAULT = dataclasses.replace(ToyConfig(**PRESETS['default']), smart_start=0.0)
DEFAULT_STEPS = DEFAULT.steps
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _specs(cfg: ToyConfig) -> list:
    return plan_runs(cfg, list(SEEDS), FRONTIER)


def time_batched(steps: int, num_workers: int) -> float:
    """Seconds per iteration of all runs, batched (warm-up: process start and the first steps, timed apart)."""
    specs = _specs(dataclasses.replace(DEFAULT, eval_every=10 ** 9, num_samples=100))

    def run(n: int) -> float:
        start = time.perf_counter()
        with pool.Progress(n * len(specs), enabled=False) as bar:
            for _ in pool.train(specs, n, bar, num_workers):
                pass
        return time.perf_counter() - start

    short, full = run(2), run(steps + 2)
    return (full - short) / steps


def time_one_at_a_time(steps: int) -> float:
    """Seconds per iteration of all runs, each trained alone by the engine, one after the other."""
    total = 0.0
    for spec in _specs(DEFAULT):
        with contextlib.redirect_stdout(io.StringIO()):   # The plugins' start-up lines.
            toy = BatchedToy([spec])
        toy.step()   # warm-up
        start = time.perf_counter()
        for _ in range(steps):
            toy.step()
        total += (time.perf_counter() - start) / steps
    return total


def time_command(workers: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of its processes) of the default `python -m smart_plugin.toy`, in a temp outdir."""
    with tempfile.TemporaryDirectory() as outdir:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run([sys.executable, '-m', 'smart_plugin.toy', '--outdir', outdir, f'--workers={workers}'],
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env=dict(os.environ, PYTHONPATH=ROOT))
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def measure(steps: int, old_steps: int, num_workers: int, threads: int) -> dict:
    torch.set_num_threads(1)
    batched = time_batched(steps, num_workers)
    torch.set_num_threads(threads)
    old = time_one_at_a_time(old_steps)
    torch.set_num_threads(1)
    return {'batched': batched, 'one run at a time': old}


@click.command()
@click.option('--steps', type=click.IntRange(min=1), default=60, show_default=True, help='Timed steps, batched')
@click.option('--old-steps', type=click.IntRange(min=1), default=10, show_default=True,
              help='Timed steps per run, one run at a time')
@click.option('--workers', type=click.IntRange(min=1), default=min(2, os.cpu_count() or 1), show_default=True,
              help='Processes of the batched engine')
@click.option('--threads', type=click.IntRange(min=1), default=os.cpu_count() or 1, show_default=True,
              help='Intra-op threads of the one-run-at-a-time setting (torch\'s default: one per core)')
@click.option('--command/--no-command', default=True, show_default=True,
              help='Also time the whole default command end to end, idle and loaded')
@click.option('--dry-run', is_flag=True, help='Print what would be timed and exit')
def main(steps, old_steps, workers, threads, command, dry_run):
    """Print idle and loaded timings of the toy side by side."""
    print(f'toy speed: {len(FRONTIER) * len(SEEDS)} runs ({len(FRONTIER)} arms x {len(SEEDS)} seeds), batch 256; '
          f'{os.cpu_count()} CPUs; load average before: {os.getloadavg()[0]:.2f}', flush=True)
    if dry_run:
        print(f'would time {steps} batched steps ({workers} workers x 1 thread) and {old_steps} steps per run one at '
              f'a time ({threads} threads), idle and with one busy process' +
              (f'; then `python -m smart_plugin.toy` ({DEFAULT.finetune_from} + {DEFAULT_STEPS} steps) end to end, '
               f'idle and loaded' if command else ''))
        return
    idle = measure(steps, old_steps, workers, threads)
    idle_cmd = time_command(workers) if command else None
    busy = subprocess.Popen([sys.executable, '-c', 'while True: pass'])
    try:
        time.sleep(1.0)
        loaded = measure(steps, old_steps, workers, threads)
        loaded_cmd = time_command(workers) if command else None
    finally:
        busy.kill()
        busy.wait()
    print(f'{"setting":34s} {"idle s/step":>12s} {"loaded s/step":>14s} {"loaded/idle":>12s} '
          f'{f"{DEFAULT_STEPS} steps idle":>16s} {f"{DEFAULT_STEPS} steps loaded":>18s}   (the fine-tune phase)')
    for name in idle:
        label = f'{name} ({workers} workers x 1 thread)' if name == 'batched' else f'{name} ({threads} threads)'
        print(f'{label:34s} {idle[name]:12.4f} {loaded[name]:14.4f} {loaded[name] / idle[name]:12.2f} '
              f'{idle[name] * DEFAULT_STEPS:15.0f}s {loaded[name] * DEFAULT_STEPS:17.0f}s')
    print(f'batched vs one run at a time: {idle["one run at a time"] / idle["batched"]:.1f}x faster idle, '
          f'{loaded["one run at a time"] / loaded["batched"]:.1f}x loaded; load average after: '
          f'{os.getloadavg()[0]:.2f} (a shared machine inflates every figure)')
    if command:
        print(f'python -m smart_plugin.toy (--workers {workers}, pretraining included): idle {idle_cmd[0]:.1f} s wall '
              f'({idle_cmd[1]:.1f} s CPU), with one busy process {loaded_cmd[0]:.1f} s wall ({loaded_cmd[1]:.1f} s '
              f'CPU): loaded/idle {loaded_cmd[0] / idle_cmd[0]:.2f}')


if __name__ == '__main__':
    main()
