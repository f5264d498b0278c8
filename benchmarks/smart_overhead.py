"""Cost of SMaRt (Xia et al., ICML 2024) per training iteration: baseline vs SMaRt every 8 and every iteration.

One run, one set of models: a small StyleGAN2 setup (random 32x32 RGB dataset written to a temp dir; G and D with
channel_base 8192 / channel_max 128, z = w = 128, 2 mapping layers, batch 8, lazy R1 / path length, no augmentation)
is trained with training.training_loop.training_step. A single SMaRt plugin with the Gaussian score source is
attached; the three settings only swap its options (lambda 0 = off, freq 8, freq 1), so they share models, data and
process. Iterations are timed in blocks of 16 (one full lazy-regularization cycle: Greg every 4, Dreg and SMaRt
freq 8 all land in it), the settings take turns block by block, and the reported time per iteration is the median
block time / 16.

    python benchmarks/smart_overhead.py [--device cpu|cuda] [--blocks 5] [--warmup 1] [--threads N]
"""

import dataclasses
import io
import statistics
import tempfile
import time
import zipfile

import click
import numpy as np
import PIL.Image
import torch

from smart_plugin import SMaRt, SMaRtOptions
from training import train_state, training_loop

BLOCK = 16  # Iterations per timed block: lcm of the lazy intervals (Greg 4, Dreg 16, SMaRt freq 8).


def _write_dataset(path: str, num: int = 64, res: int = 32) -> str:
    rnd = np.random.RandomState(0)
    with zipfile.ZipFile(path, 'w') as zf:
        for i in range(num):
            buffer = io.BytesIO()
            PIL.Image.fromarray(rnd.randint(0, 256, size=(res, res, 3), dtype=np.uint8)).save(buffer, format='PNG')
            zf.writestr(f'img{i:05d}.png', buffer.getvalue())
    return path


def _config(data_path: str, device: str, batch: int) -> dict:
    return dict(
        training_set_kwargs=dict(class_name='training.dataset.ImageFolderDataset', path=data_path),
        G_kwargs=dict(z_dim=128, w_dim=128, mapping_kwargs=dict(num_layers=2),
                      synthesis_kwargs=dict(channel_base=8192, channel_max=128)),
        D_kwargs=dict(channel_base=8192, channel_max=128, epilogue_kwargs=dict(mbstd_group_size=4)),
        G_opt_kwargs=dict(lr=0.0025, betas=[0, 0.99]), D_opt_kwargs=dict(lr=0.0025, betas=[0, 0.99]),
        loss_kwargs=dict(r1_gamma=0.01), batch_size=batch, batch_gpu=batch, device=device)


def _time_block(state) -> float:
    """Seconds per iteration over one block of BLOCK iterations."""
    if state.device.type == 'cuda':
        torch.cuda.synchronize(state.device)
    start = time.perf_counter()
    for _ in range(BLOCK):
        training_loop.training_step(state)
    if state.device.type == 'cuda':
        torch.cuda.synchronize(state.device)
    return (time.perf_counter() - start) / BLOCK


def run_benchmark(device: str, batch: int, blocks: int, warmup: int) -> dict:
    """{setting: median seconds per iteration} for 'baseline', 'smart freq 8', 'smart freq 1'."""
    base = SMaRtOptions(lam=0.1, freq=1, t_lo=25, t_hi=35, dpm='gaussian')
    settings = {'baseline': dataclasses.replace(base, lam=0.0), 'smart freq 8': dataclasses.replace(base, freq=8),
                'smart freq 1': base}
    with tempfile.TemporaryDirectory() as tmp:
        plugin = SMaRt(base)
        state = train_state.setup_training(**_config(_write_dataset(f'{tmp}/data.zip'), device, batch),
                                           plugins=[plugin], log=lambda *args: None)
        times = {name: [] for name in settings}
        for rep in range(warmup + blocks):
            for name, options in settings.items():
                plugin.options = options  # Same plugin, models and data; only lambda / freq change.
                seconds = _time_block(state)
                if rep >= warmup:
                    times[name].append(seconds)
    return {name: statistics.median(values) for name, values in times.items()}


@click.command()
@click.option('--device', type=click.Choice(['cpu', 'cuda']), default='cpu', show_default=True, help='Device')
@click.option('--batch', type=click.IntRange(min=4), default=8, show_default=True, help='Batch size')
@click.option('--blocks', type=click.IntRange(min=1), default=5, show_default=True,
              help=f'Timed blocks of {BLOCK} iterations per setting')
@click.option('--warmup', type=click.IntRange(min=0), default=1, show_default=True, help='Untimed blocks per setting')
@click.option('--threads', type=click.IntRange(min=1), default=None, help='torch.set_num_threads (default: torch)')
def main(device, batch, blocks, warmup, threads):
    if device == 'cuda' and not torch.cuda.is_available():
        raise click.ClickException('--device cuda: no CUDA device is available')
    if threads is not None:
        torch.set_num_threads(threads)
    print(f'SMaRt overhead on {device} ({torch.get_num_threads()} threads), 32x32, batch {batch}, Gaussian score '
          f'source, t 25..35, lambda 0.1; median of {blocks} blocks of {BLOCK} iterations after {warmup} warm-up')
    result = run_benchmark(device, batch, blocks, warmup)
    baseline = result['baseline']
    for name, seconds in result.items():
        print(f'{name:<14s} {seconds * 1e3:9.1f} ms/iteration   x{seconds / baseline:.3f} vs baseline')


if __name__ == '__main__':
    main()
