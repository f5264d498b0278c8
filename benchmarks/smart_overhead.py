"""Cost of SMaRt (Xia et al., ICML 2024) per training iteration, side by side with the baseline step.

One run, one set of models: G and D of a configuration (`--config`) are trained with
training.training_loop.training_step, and a single SMaRt plugin with a score source (`--source`) is attached. The
settings only swap its options (lambda 0 = the baseline, then each --freq x --draws x --grad), so they share models,
data and process. After `--warmup` untimed iterations, iterations are timed in blocks of 16 (any 16 consecutive
iterations hold one full lazy-regularization cycle: 4 Greg, 1 Dreg and 16 / freq SMaRt steps for freq dividing
16), the settings take turns block by block, and the reported time per iteration is the median block time / 16.
The ratios to the baseline are what to quote; absolute times depend on the machine and its load. On the CPU the
default clock is the process's CPU time (`--clock cpu`), which other processes on a shared machine disturb far
less than the elapsed time.

`--pairs N` replaces the blocks by a much cheaper paired estimate for slow machines (the cifar config costs ~10 s of
CPU per iteration): single iterations are pinned to positions of the lazy cycle (only the lazy phases read the
iteration counter, which is set for the purpose). The baseline's time per iteration is (T_0 + 3 T_4 + 12 T_plain) / 16
from iterations at positions 0 (Greg + Dreg), 4 (Greg) and plain ones; each setting adds the median over N pairs of
(plain iteration with SMaRt on - plain iteration with SMaRt off), divided by its freq.

Configurations (a random 32x32 RGB dataset of 64 images, written to a temp dir):
  small  G and D with channel_base 8192 / channel_max 128, z = w = 128, 2 mapping layers, lazy R1 / path length,
         no augmentation, unconditional.
  cifar  train.py's --cfg cifar preset (StyleGAN2-ADA's CIFAR-10 networks, ADA, no path length), built by
         training.config.build_plan, class-conditional (10 classes) as in the paper's CIFAR-10 setting.
Score sources:
  gaussian  the closed-form per-pixel Gaussian fitted to the dataset (edm_bridge/gaussian.py).
  ddpmpp    EDM's CIFAR-10 DDPM++ denoiser (EDMPrecond + SongUNet, 55.7 M parameters, the configuration of
            benchmarks/denoiser.py) with random weights: the speed of the real score source; conditional for cifar.
SMaRt runs with lambda 0.1 (eps form) on Karras t 40..60, the paper's CIFAR-10 band. Per SMaRt iteration it costs
draws x the batch in denoiser evaluations (forward + input gradient for grad full, forward only for sds).

    python benchmarks/smart_overhead.py [--config small|cifar] [--source gaussian|ddpmpp] [--batch 8]
        [--freq 8] [--draws 1,4] [--grad full,sds] [--precision fp32,bf16] [--blocks 5 | --pairs N] [--warmup 16]
        [--device cpu|cuda]
        [--threads N] [--clock wall|cpu]
    python benchmarks/smart_overhead.py --config cifar --source ddpmpp --pairs 1 --warmup 2   # the real source
"""

import dataclasses
import inspect
import io
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
import zipfile

import click
import numpy as np
import PIL.Image
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from edm_bridge.denoiser import FrozenDenoiser  # noqa: E402
from edm_bridge.edm_networks import EDMPrecond  # noqa: E402
from smart_plugin import SMaRt, SMaRtOptions  # noqa: E402
from smart_plugin.options import PRECISIONS  # noqa: E402
from training import config as training_config, preflight, train_state, training_loop  # noqa: E402
from training.train_options import TrainOptions  # noqa: E402

BLOCK = 16        # Iterations per timed block: lcm of the lazy intervals (Greg 4, Dreg 16, SMaRt freq 8).
NUM_CLASSES = 10  # Labels of the cifar configuration's dataset (and of the conditional DDPM++ denoiser).
CIFAR_DDPMPP = dict(img_resolution=32, img_channels=3, model_type='SongUNet', embedding_type='positional',
                    encoder_type='standard', decoder_type='standard', channel_mult_noise=1, resample_filter=[1, 1],
                    model_channels=128, channel_mult=[2, 2, 2], augment_dim=9)  # As benchmarks/denoiser.py.


def _write_dataset(path: str, num: int = 64, res: int = 32, num_classes: int | None = None) -> str:
    rnd = np.random.RandomState(0)
    with zipfile.ZipFile(path, 'w') as zf:
        for i in range(num):
            buffer = io.BytesIO()
            PIL.Image.fromarray(rnd.randint(0, 256, size=(res, res, 3), dtype=np.uint8)).save(buffer, format='PNG')
            zf.writestr(f'img{i:05d}.png', buffer.getvalue())
        if num_classes is not None:
            labels = [[f'img{i:05d}.png', i % num_classes] for i in range(num)]
            zf.writestr('dataset.json', json.dumps({'labels': labels}))
    return path


def _small_config(data_path: str, device: str, batch: int) -> dict:
    return dict(
        training_set_kwargs=dict(class_name='training.dataset.ImageFolderDataset', path=data_path),
        G_kwargs=dict(z_dim=128, w_dim=128, mapping_kwargs=dict(num_layers=2),
                      synthesis_kwargs=dict(channel_base=8192, channel_max=128)),
        D_kwargs=dict(channel_base=8192, channel_max=128, epilogue_kwargs=dict(mbstd_group_size=4)),
        G_opt_kwargs=dict(lr=0.0025, betas=[0, 0.99]), D_opt_kwargs=dict(lr=0.0025, betas=[0, 0.99]),
        loss_kwargs=dict(r1_gamma=0.01), batch_size=batch, batch_gpu=batch, device=device)


def _cifar_config(data_path: str, device: str, batch: int, outdir: str) -> dict:
    """setup_training kwargs of `train.py --cfg cifar --cond --batch B` (the preset's networks, loss and ADA)."""
    opts = TrainOptions(outdir=outdir, data=data_path, cfg='cifar', cond=True, batch=batch, workers=0,
                        extra=dict(diffgan=False, diffgan_ada_maxp=None))  # Plugins off (SMaRt is set per setting).
    data = preflight.read_inputs(opts).data
    config = training_config.build_plan(opts, 1, data, None, [], set(), {}).loop_kwargs
    accepted = inspect.signature(train_state.setup_training).parameters
    config = {key: value for key, value in config.items() if key in accepted}
    config.update(device=device, data_loader_kwargs=dict(pin_memory=device == 'cuda'))
    return config


def settings(freqs: list[int], draws: list[int], grads: list[str], precisions: tuple[str, ...] = ('fp32',)) -> dict:
    """{name: SMaRtOptions}: the baseline (lambda 0), then SMaRt for every freq x draws x grad x precision
    combination (a precision other than fp32 is named at the end)."""
    base = SMaRtOptions(lam=0.1, freq=1, t_lo=40, t_hi=60, dpm='gaussian')
    result = {'baseline': dataclasses.replace(base, lam=0.0)}
    for freq, K, grad, precision in itertools.product(freqs, draws, grads, precisions):
        name = f'freq {freq}, draws {K}, {grad}' + ('' if precision == 'fp32' else f', {precision}')
        result[name] = dataclasses.replace(base, freq=freq, draws=K, grad=grad, precision=precision)
    return result


def _time_block(state, clock) -> float:
    """Seconds per iteration over one block of BLOCK iterations, by `clock` (time.perf_counter or process_time)."""
    if state.device.type == 'cuda':
        torch.cuda.synchronize(state.device)
    start = clock()
    for _ in range(BLOCK):
        training_loop.training_step(state)
    if state.device.type == 'cuda':
        torch.cuda.synchronize(state.device)
    return (clock() - start) / BLOCK


def _time_at(state, plugin: SMaRt, options: SMaRtOptions, position: int, clock) -> float:
    """Seconds of one iteration pinned at lazy-cycle position `position` (batch_idx mod BLOCK; 0 runs Greg and Dreg,
    multiples of 4 Greg, the rest Gmain + Dmain only), with SMaRt `options` active on it unless lambda is 0."""
    state.batch_idx = BLOCK * (state.batch_idx // BLOCK + 1) + position  # Only the lazy phases read batch_idx.
    plugin.options, plugin.step = options, 0
    if state.device.type == 'cuda':
        torch.cuda.synchronize(state.device)
    start = clock()
    training_loop.training_step(state)
    if state.device.type == 'cuda':
        torch.cuda.synchronize(state.device)
    return clock() - start


def _paired(state, plugin: SMaRt, options: dict, pairs: int, clock, log) -> dict:
    """Seconds per iteration from pinned iterations: the baseline cycle (position 0, 4 and plain ones) and, per
    setting, the paired difference SMaRt-on minus SMaRt-off on plain positions, spread over freq iterations."""
    baseline, *smart = options
    cycle0, cycle4, plain, extra = [], [], [], {name: [] for name in smart}
    for rep in range(pairs):
        cycle0.append(_time_at(state, plugin, options[baseline], 0, clock))
        cycle4.append(_time_at(state, plugin, options[baseline], 4, clock))
        for name in smart:
            order = (name, baseline) if rep % 2 == 0 else (baseline, name)  # Alternate to cancel drift.
            on_off = {key: _time_at(state, plugin, options[key], 1, clock) for key in order}
            extra[name].append(on_off[name] - on_off[baseline])
            plain.append(on_off[baseline])
            log(f'pair {rep + 1}/{pairs} {name:<26s} SMaRt step {on_off[name] * 1e3:9.1f} ms, '
                f'plain step {on_off[baseline] * 1e3:9.1f} ms')
    base = (statistics.median(cycle0) + 3 * statistics.median(cycle4) + (BLOCK - 4) * statistics.median(plain))
    base /= BLOCK
    return {baseline: base, **{name: base + statistics.median(extra[name]) / options[name].freq for name in smart}}


def run_benchmark(config: str, source: str, device: str, batch: int, blocks: int, warmup: int, options: dict,
                  clock=time.perf_counter, log=lambda line: None, pairs: int = 0) -> tuple[dict, int]:
    """({setting: seconds per iteration}, denoiser parameter count) for the settings `options` (the baseline
    first), after `warmup` untimed iterations: the median of `blocks` blocks per setting, or with pairs > 0 the
    paired estimate (_paired). `log` gets one line per timed block or pair as it finishes."""
    label_dim = NUM_CLASSES if config == 'cifar' else 0
    denoiser = FrozenDenoiser(EDMPrecond(**CIFAR_DDPMPP, label_dim=label_dim)) if source == 'ddpmpp' else None
    with tempfile.TemporaryDirectory() as tmp:
        data = _write_dataset(f'{tmp}/data.zip', num_classes=label_dim or None)
        kwargs = _cifar_config(data, device, batch, tmp) if config == 'cifar' else _small_config(data, device, batch)
        plugin = SMaRt(next(opts for opts in options.values() if opts.enabled), denoiser)
        state = train_state.setup_training(**kwargs, plugins=[plugin], log=lambda *args: None)
        plugin.options = dataclasses.replace(plugin.options, freq=1)  # Warm-up: the denoiser runs on every step.
        for _ in range(warmup):
            training_loop.training_step(state)
        if pairs > 0:
            result = _paired(state, plugin, options, pairs, clock, log)
        else:
            # Any BLOCK consecutive iterations hold the same lazy phases, so the warm-up may have any length.
            times = {name: [] for name in options}
            for rep in range(blocks):
                for name, opts in options.items():
                    plugin.options = opts  # Same plugin, models and data; only lambda / freq / draws / grad change.
                    times[name].append(_time_block(state, clock))
                    log(f'block {rep + 1}/{blocks} {name:<26s} {times[name][-1] * 1e3:9.1f} ms/iteration')
            result = {name: statistics.median(values) for name, values in times.items()}
    return result, sum(p.numel() for p in plugin.denoiser.parameters())


def _int_list(ctx, param, value: str) -> list[int]:
    try:
        values = [int(v) for v in value.split(',')]
    except ValueError:
        raise click.BadParameter(f'{value!r} is not a comma-separated list of integers') from None
    if any(v < 1 for v in values):
        raise click.BadParameter(f'{value!r}: every value must be >= 1')
    if param.name == 'freq' and any(BLOCK % v for v in values):
        raise click.BadParameter(f'{value!r}: every frequency must divide the block of {BLOCK} iterations')
    return values


def _grad_list(ctx, param, value: str) -> list[str]:
    values = value.split(',')
    if any(v not in ('full', 'sds') for v in values):
        raise click.BadParameter(f'{value!r}: expected a comma-separated list of full, sds')
    return values


def _precision_list(ctx, param, value: str) -> list[str]:
    values = value.split(',')
    if any(v not in PRECISIONS for v in values):
        raise click.BadParameter(f'{value!r}: expected a comma-separated list of {", ".join(PRECISIONS)}')
    return values


@click.command()
@click.option('--config', type=click.Choice(['small', 'cifar']), default='small', show_default=True,
              help='Networks: a small StyleGAN2 or train.py --cfg cifar')
@click.option('--source', type=click.Choice(['gaussian', 'ddpmpp']), default='gaussian', show_default=True,
              help='Score source: closed-form Gaussian or the CIFAR-10 DDPM++ denoiser (random weights)')
@click.option('--batch', type=click.IntRange(min=4), default=8, show_default=True, help='Batch size')
@click.option('--freq', default='8', show_default=True, callback=_int_list, help='SMaRt frequencies, e.g. 8,1')
@click.option('--draws', default='1,4', show_default=True, callback=_int_list, help='SMaRt draws per sample')
@click.option('--grad', default='full,sds', show_default=True, callback=_grad_list, help='SMaRt gradient modes')
@click.option('--precision', default='fp32', show_default=True, callback=_precision_list,
              help='Denoiser arithmetic (--smart-precision), e.g. fp32,bf16')
@click.option('--blocks', type=click.IntRange(min=1), default=5, show_default=True,
              help=f'Timed blocks of {BLOCK} iterations per setting')
@click.option('--warmup', type=click.IntRange(min=0), default=BLOCK, show_default=True,
              help='Untimed iterations first (SMaRt on every one of them)')
@click.option('--pairs', type=click.IntRange(min=0), default=0, show_default=True,
              help='> 0: the paired estimate instead of blocks (much cheaper; see the module docstring)')
@click.option('--device', type=click.Choice(['cpu', 'cuda']), default='cpu', show_default=True, help='Device')
@click.option('--threads', type=click.IntRange(min=1), default=None, help='torch.set_num_threads (default: torch)')
@click.option('--clock', type=click.Choice(['wall', 'cpu']), default=None, show_default='cpu on the CPU, else wall',
              help='wall: elapsed time; cpu: this process\'s CPU time (steadier on a machine shared with others)')
def main(config, source, batch, freq, draws, grad, precision, blocks, warmup, pairs, device, threads, clock):
    if device == 'cuda' and not torch.cuda.is_available():
        raise click.ClickException('--device cuda: no CUDA device is available')
    if threads is not None:
        torch.set_num_threads(threads)
    clock = clock or ('cpu' if device == 'cpu' else 'wall')
    options = settings(freq, draws, grad, precision)
    result, num_params = run_benchmark(config, source, device, batch, blocks, warmup, options,
                                       time.process_time if clock == 'cpu' else time.perf_counter,
                                       log=lambda line: print(line, flush=True), pairs=pairs)
    name = 'Gaussian' if source == 'gaussian' else f'DDPM++ (EDMPrecond + SongUNet, {num_params / 1e6:.1f} M params)'
    method = (f'paired estimate from {pairs} pair(s) per setting' if pairs else
              f'median of {blocks} blocks of {BLOCK} iterations')
    print(f'SMaRt overhead on {device} ({torch.get_num_threads()} threads), {config} config, 32x32, batch {batch}, '
          f'{name} score source, t 40..60, lambda 0.1; {method} after {warmup} warm-up iterations, {clock} clock')
    baseline = result['baseline']
    for setting, seconds in result.items():
        line = f'{setting:<26s} {seconds * 1e3:9.1f} ms/iteration   x{seconds / baseline:.3f} vs baseline'
        if setting != 'baseline':
            extra = (seconds - baseline) * options[setting].freq
            line += f'   ({(seconds / baseline - 1) * 100:+.1f}%; {extra * 1e3:.0f} ms per SMaRt iteration)'
        print(line)


if __name__ == '__main__':
    main()
