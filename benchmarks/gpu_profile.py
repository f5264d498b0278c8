"""Where a training step's time goes on a GPU: torch.profiler over whole training steps, per precision.

For each precision (fp32 layers; mixed = fp16 in the top 4 resolutions with conv_clamp 256, as train.py) the
train_speed preset is set up with the CUDA plugins, run for --warmup steps, then profiled over --steps steps (a
multiple of 16 covers every lazy phase), with train.py's speed switches (cuDNN benchmark on, TF32 off). Printed per
precision: wall time per step, kernel time per step as the profiler totals it (well below wall = launch- or
host-bound), kernel launches per step, and the top ops by GPU time and by host time.

    python benchmarks/gpu_profile.py [--preset cifar|mnist16] [--batch 64] [--batch-gpu 32] [--steps 16]
"""

import os
import re
import sys
import tempfile
import time

import click
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_speed  # noqa: E402 (the benchmark folder is not a package)
from training import train_state, training_loop  # noqa: E402


def _sync(device: str) -> None:
    if device == 'cuda':
        torch.cuda.synchronize()


def _steps(state, n: int) -> float:
    _sync(state.device.type)
    start = time.perf_counter()
    for _ in range(n):
        training_loop.training_step(state)
    _sync(state.device.type)
    return time.perf_counter() - start


def _footer_ms(table: str, label: str) -> float:
    """The profiler table's footer total `label` in ms (0 when absent, e.g. on CPU)."""
    match = re.search(label + r': ([0-9.]+)(us|ms|s)\b', table)
    if match is None:
        return 0.0
    return float(match.group(1)) * {'us': 1e-3, 'ms': 1.0, 's': 1e3}[match.group(2)]


def profile_precision(preset: str, data: str, device: str, batch: int, batch_gpu: int, mixed: bool, warmup: int,
                      steps: int, top: int, cbase: int | None = None, cmax: int | None = None) -> None:
    """Set up one training state, warm it up, profile `steps` steps and print the summary and top ops."""
    config = train_speed.preset_config(preset, data, device, batch, batch_gpu, mixed, cbase, cmax)
    state = train_state.setup_training(**config, log=lambda *args: None)
    with training_loop.speed_flags(cudnn_benchmark=True, allow_tf32=False):  # What train.py runs by default.
        _profile(state, warmup, steps, top, f'{preset} {"mixed" if mixed else "fp32"}', batch, batch_gpu)


def _profile(state, warmup: int, steps: int, top: int, name: str, batch: int, batch_gpu: int) -> None:
    _steps(state, warmup)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if state.device.type == 'cuda':
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        seconds = _steps(state, steps)
    events = prof.key_averages()
    by_gpu = events.table(sort_by='self_device_time_total', row_limit=top, max_name_column_width=60)
    device_ms = _footer_ms(by_gpu, 'Self CUDA time total')  # Kernels only, as the profiler sums them.
    launches = sum(e.count for e in events if e.key.startswith(('cudaLaunchKernel', 'cuLaunchKernel')))
    print(f'--- {name}: batch {batch} in rounds of {batch_gpu}: {seconds / steps * 1e3:.1f} ms per step '
          f'(profiled), GPU kernels {device_ms / steps:.1f} ms per step, {launches / steps:.0f} kernel launches '
          f'per step')
    print(by_gpu)
    print(events.table(sort_by='self_cpu_time_total', row_limit=top, max_name_column_width=60))


@click.command()
@click.option('--preset', type=click.Choice(list(train_speed.PRESETS)), default='cifar', show_default=True)
@click.option('--batch', type=click.IntRange(min=1), default=64, show_default=True, help='Batch size')
@click.option('--batch-gpu', type=click.IntRange(min=1), default=32, show_default=True, help='Batch per round')
@click.option('--warmup', type=click.IntRange(min=1), default=16, show_default=True, help='Untimed steps')
@click.option('--steps', type=click.IntRange(min=1), default=16, show_default=True, help='Profiled steps')
@click.option('--top', type=click.IntRange(min=1), default=15, show_default=True, help='Rows per table')
@click.option('--device', type=click.Choice(['cuda', 'cpu']), default='cuda', show_default=True,
              help='cpu: fp32 only, host tables only (checks the script)')
@click.option('--cbase', type=click.IntRange(min=16), default=None, show_default='preset', help='Channel base')
@click.option('--cmax', type=click.IntRange(min=1), default=None, show_default='preset', help='Max channels')
def main(preset, batch, batch_gpu, warmup, steps, top, device, cbase, cmax):
    """Print the per-precision profile summary and tables."""
    if device == 'cuda' and not torch.cuda.is_available():
        raise click.ClickException('--device cuda: no CUDA device is available (use --device cpu)')
    if batch % batch_gpu != 0:
        raise click.ClickException(f'--batch {batch} is not a multiple of --batch-gpu {batch_gpu}')
    with tempfile.TemporaryDirectory() as tmp:
        p = train_speed.PRESETS[preset]
        data = train_speed.write_dataset(os.path.join(tmp, 'data.zip'), res=p['res'], channels=p['channels'])
        for mixed in (False, True) if device == 'cuda' else (False,):
            profile_precision(preset, data, device, batch, batch_gpu, mixed, warmup, steps, top, cbase, cmax)


if __name__ == '__main__':
    main()
