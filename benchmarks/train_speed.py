"""Training speed (kimg/s) of the cifar config: reference ops vs CUDA plugins, fp32 vs mixed precision, SMaRt off vs on.

The StyleGAN2-ADA cifar preset (train.py --cfg=cifar: z = w = 512, 2 mapping layers, channel_base 32768, channel_max
512, 'orig' D, minibatch-std group 32, R1 gamma 0.01, no path length, no style mixing; batch 64 in rounds of 32; no
augmentation) is trained with training.training_loop.training_step on a random conditional 32x32 dataset (10 classes)
written to a temp dir. SMaRt (Xia et al., ICML 2024) uses EDM's CIFAR-10 DDPM++ network (SongUNet behind EDMPrecond,
55.7 M parameters with --dpm-channels 128) with random weights: speed does not depend on the weights. Per precision
one training state is built (fp16 layers and conv_clamp 256 as train.py, or --fp32); ops ('ref' = checked_plugin.
reference_only(), 'cuda' = the verified plugins) and SMaRt (lambda 0 = off, or every 8 steps) are swapped on the same
state, taking turns block by block (16 iterations = one lazy-regularization cycle). kimg/s = batch * 16 / median block
seconds / 1000. Rows that need CUDA (plugins, fp16) are skipped on CPU.

    python benchmarks/train_speed.py [--device cpu|cuda] [--batch 64] [--blocks 3] [--json out.json]
    python benchmarks/train_speed.py --device cpu --batch 4 --batch-gpu 4 --cbase 512 --cmax 16 --dpm-channels 16 \
        --blocks 1 --warmup 0                    # tiny CPU smoke run

With --against REV it instead times the whole train.py loop (s/kimg) of the working tree and of commit REV side by
side, alternating, per configuration (digits, mnist, cifar), and prints the ratios (benchmarks/loop_speed.py):

    python benchmarks/train_speed.py --against 219d6d5 --configs digits,mnist --pairs 3 --threads 1
"""

import contextlib
import dataclasses
import io
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

from benchmarks import loop_speed  # noqa: E402
from edm_bridge.edm_networks import EDMPrecond
from smart_plugin import SMaRt, SMaRtOptions
from torch_utils.ops import bias_act, checked_plugin, upfirdn2d
from training import train_state, training_loop

BLOCK = 16  # Iterations per timed block: lcm of the lazy intervals (Greg 4, Dreg 16, SMaRt freq 8).
NUM_CLASSES = 10


def write_dataset(path: str, num: int = 128, res: int = 32, num_classes: int = NUM_CLASSES, channels: int = 3) -> str:
    """A random dataset zip (RGB or grey) in the official format, with labels in dataset.json; returns `path`."""
    rnd = np.random.RandomState(0)
    labels = []
    shape = (res, res, 3) if channels == 3 else (res, res)
    with zipfile.ZipFile(path, 'w') as zf:
        for i in range(num):
            buffer = io.BytesIO()
            PIL.Image.fromarray(rnd.randint(0, 256, size=shape, dtype=np.uint8)).save(buffer, format='PNG')
            zf.writestr(f'img{i:05d}.png', buffer.getvalue())
            labels.append([f'img{i:05d}.png', i % num_classes])
        zf.writestr('dataset.json', json.dumps({'labels': labels}))
    return path


def ddpmpp_denoiser(channels: int = 128, res: int = 32, img_channels: int = 3) -> torch.nn.Module:
    """EDM's conditional CIFAR-10 DDPM++ configuration (edm-cifar10-32x32-cond-vp), random weights."""
    return EDMPrecond(img_resolution=res, img_channels=img_channels, label_dim=NUM_CLASSES, model_type='SongUNet',
                      embedding_type='positional', encoder_type='standard', decoder_type='standard',
                      channel_mult_noise=1, resample_filter=[1, 1], model_channels=channels, channel_mult=[2, 2, 2],
                      augment_dim=9)


def cifar_config(data_path: str, device: str, batch: int, batch_gpu: int, mixed: bool, cbase: int, cmax: int) -> dict:
    """train.py --cfg=cifar --cond on one GPU (without augmentation), as setup_training kwargs."""
    fp16_res, conv_clamp = (4, 256) if mixed else (0, None)
    return dict(
        training_set_kwargs=dict(class_name='training.dataset.ImageFolderDataset', path=data_path, use_labels=True),
        G_kwargs=dict(z_dim=512, w_dim=512, mapping_kwargs=dict(num_layers=2),
                      synthesis_kwargs=dict(channel_base=cbase, channel_max=cmax, num_fp16_res=fp16_res,
                                            conv_clamp=conv_clamp)),
        D_kwargs=dict(architecture='orig', channel_base=cbase, channel_max=cmax, num_fp16_res=fp16_res,
                      conv_clamp=conv_clamp, mapping_kwargs={},
                      epilogue_kwargs=dict(mbstd_group_size=min(32, batch_gpu))),
        G_opt_kwargs=dict(lr=0.0025, betas=[0, 0.99], eps=1e-8), D_opt_kwargs=dict(lr=0.0025, betas=[0, 0.99], eps=1e-8),
        loss_kwargs=dict(r1_gamma=0.01, pl_weight=0, style_mixing_prob=0, pl_no_weight_grad=True),
        batch_size=batch, batch_gpu=batch_gpu, ema_kimg=500 * batch / 32, device=device)


# Presets timed: image shape and the networks' sizes. 'cifar' is train.py --cfg=cifar; 'mnist16' the 16x16 grey
# MNIST-5k configuration of the CPU search (channel base 1024, max 64, 2 mapping layers, resnet D, group 4).
PRESETS = {
    'cifar': dict(res=32, channels=3, z=512, map=2, arch='orig', mbstd=32, cbase=32768, cmax=512, gamma=0.01),
    'mnist16': dict(res=16, channels=1, z=64, map=2, arch='resnet', mbstd=4, cbase=1024, cmax=64, gamma=1.0),
}


def preset_config(preset: str, data_path: str, device: str, batch: int, batch_gpu: int, mixed: bool,
                  cbase: int | None = None, cmax: int | None = None) -> dict:
    """setup_training kwargs of a PRESETS entry (cbase / cmax override the preset's when given)."""
    p = PRESETS[preset]
    if preset == 'cifar':
        return cifar_config(data_path, device, batch, batch_gpu, mixed, cbase or p['cbase'], cmax or p['cmax'])
    fp16_res, conv_clamp = (4, 256) if mixed else (0, None)
    cbase, cmax = cbase or p['cbase'], cmax or p['cmax']
    return dict(
        training_set_kwargs=dict(class_name='training.dataset.ImageFolderDataset', path=data_path, use_labels=True),
        G_kwargs=dict(z_dim=p['z'], w_dim=p['z'], mapping_kwargs=dict(num_layers=p['map']),
                      synthesis_kwargs=dict(channel_base=cbase, channel_max=cmax, num_fp16_res=fp16_res,
                                            conv_clamp=conv_clamp)),
        D_kwargs=dict(architecture=p['arch'], channel_base=cbase, channel_max=cmax, num_fp16_res=fp16_res,
                      conv_clamp=conv_clamp, mapping_kwargs={},
                      epilogue_kwargs=dict(mbstd_group_size=min(p['mbstd'], batch_gpu))),
        G_opt_kwargs=dict(lr=0.0025, betas=[0, 0.99], eps=1e-8),
        D_opt_kwargs=dict(lr=0.0025, betas=[0, 0.99], eps=1e-8),
        loss_kwargs=dict(r1_gamma=p['gamma'], pl_weight=0, style_mixing_prob=0, pl_no_weight_grad=True),
        batch_size=batch, batch_gpu=batch_gpu, ema_kimg=10 * batch / 32, device=device)


def _time_block(state) -> float:
    """Seconds for BLOCK training iterations."""
    if state.device.type == 'cuda':
        torch.cuda.synchronize(state.device)
    start = time.perf_counter()
    for _ in range(BLOCK):
        training_loop.training_step(state)
    if state.device.type == 'cuda':
        torch.cuda.synchronize(state.device)
    return time.perf_counter() - start


def _plugin_status() -> str:
    return ', '.join(f'{p.module_name} {p.status or "unused"}' for p in (bias_act._plugin, upfirdn2d._plugin))


def run_benchmark(device: str, batch: int, batch_gpu: int, blocks: int, warmup: int, cbase: int | None,
                  cmax: int | None, dpm_channels: int, log=print, preset: str = 'cifar') -> list[dict]:
    """One row per (ops, precision, smart): kimg/s or None with the reason it was skipped."""
    cuda = torch.device(device).type == 'cuda'
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        p = PRESETS[preset]
        data = write_dataset(os.path.join(tmp, 'data.zip'), res=p['res'], channels=p['channels'])
        for precision in ('fp32', 'mixed'):
            settings = [(ops, smart) for ops in ('ref', 'cuda') for smart in ('off', 'freq 8')]
            if not cuda:
                for ops, smart in settings:
                    if ops == 'cuda' or precision == 'mixed':
                        rows.append(dict(ops=ops, precision=precision, smart=smart, kimg_per_sec=None,
                                         note='needs CUDA'))
                if precision == 'mixed':
                    continue
                settings = [s for s in settings if s[0] == 'ref']
            options = SMaRtOptions(lam=0.01, freq=8, t_lo=40, t_hi=60, schedule='ddpm-linear',
                                   dpm='edm-cifar10-32x32-cond-vp')
            denoiser = ddpmpp_denoiser(dpm_channels, p['res'], p['channels'])
            params = sum(p.numel() for p in denoiser.parameters())
            plugin = SMaRt(options, denoiser=denoiser)
            config = preset_config(preset, data, device, batch, batch_gpu, precision == 'mixed', cbase, cmax)
            state = train_state.setup_training(**config, plugins=[plugin], log=lambda *args: None)
            times = {setting: [] for setting in settings}
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            for rep in range(warmup + blocks):
                for ops, smart in settings:
                    plugin.options = dataclasses.replace(options, lam=0.0 if smart == 'off' else options.lam)
                    context = checked_plugin.reference_only() if ops == 'ref' else contextlib.nullcontext()
                    with context, training_loop.speed_flags(cudnn_benchmark=True, allow_tf32=False):  # train.py's
                        seconds = _time_block(state)
                    if rep >= warmup:
                        times[(ops, smart)].append(seconds)
            memory = f'; peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB' if cuda else ''
            log(f'{precision}: score source DDPM++ with {params / 1e6:.1f} M parameters; plugins: {_plugin_status()}'
                f'{memory}')
            for (ops, smart), values in times.items():
                note = '' if ops == 'ref' else _plugin_status()
                if ops == 'cuda' and 'ok' not in note:
                    note = f'plugins not in use ({note}): these rows ran the reference ops'
                rows.append(dict(ops=ops, precision=precision, smart=smart,
                                 kimg_per_sec=batch * BLOCK / statistics.median(values) / 1e3,
                                 block_seconds=values, note=note if ops == 'cuda' else ''))
    return rows


def format_table(rows: list[dict]) -> str:
    """Fixed-width table: ops, precision, SMaRt, kimg/s and the ratio to ref / fp32 / SMaRt off."""
    base = {(r['smart']): r['kimg_per_sec'] for r in rows if r['ops'] == 'ref' and r['precision'] == 'fp32'}
    lines = [f"{'ops':<5} {'precision':<9} {'SMaRt':<7} {'kimg/s':>9} {'x ref fp32':>11}  note"]
    for r in sorted(rows, key=lambda r: (r['smart'] != 'off', r['precision'] != 'fp32', r['ops'] != 'ref')):
        speed, ref = r['kimg_per_sec'], base.get(r['smart'])
        text = f'{speed:9.4f}' if speed is not None else f"{'-':>9}"
        ratio = f'{speed / ref:11.2f}' if speed is not None and ref else f"{'-':>11}"
        lines.append(f"{r['ops']:<5} {r['precision']:<9} {r['smart']:<7} {text} {ratio}  {r.get('note', '')}")
    return '\n'.join(lines)


def _write_json(path: str, payload: dict) -> None:
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'w') as f:
        json.dump(payload, f, indent=2)
    os.replace(tmp, path)


@click.command()
@click.option('--device', type=click.Choice(['cpu', 'cuda']), default='cuda', show_default=True, help='Device')
@click.option('--batch', type=click.IntRange(min=1), default=64, show_default=True, help='Batch size')
@click.option('--batch-gpu', type=click.IntRange(min=1), default=32, show_default=True, help='Batch per round')
@click.option('--blocks', type=click.IntRange(min=1), default=3, show_default=True,
              help=f'Timed blocks of {BLOCK} iterations per setting')
@click.option('--warmup', type=click.IntRange(min=0), default=1, show_default=True, help='Untimed blocks per setting')
@click.option('--preset', type=click.Choice(list(PRESETS)), default='cifar', show_default=True,
              help='Networks and image shape')
@click.option('--cbase', type=click.IntRange(min=16), default=None, show_default='preset', help='Channel base')
@click.option('--cmax', type=click.IntRange(min=1), default=None, show_default='preset', help='Max channels')
@click.option('--dpm-channels', type=click.IntRange(min=8), default=128, show_default=True,
              help='DDPM++ model_channels (128 = the 55.7 M CIFAR-10 network)')
@click.option('--json', 'json_path', type=click.Path(dir_okay=False), default=None, help='Write the table here')
@click.option('--against', metavar='REV', default=None,
              help='Instead: time the whole train.py loop of the working tree against commit REV, alternating')
@click.option('--configs', default='digits,mnist,cifar', show_default=True,
              help=f'With --against: configurations, of {",".join(loop_speed.CONFIGS)}')
@click.option('--pairs', type=click.IntRange(min=1), default=3, show_default=True, help='With --against: A B pairs')
@click.option('--threads', type=click.IntRange(min=1), default=1, show_default=True,
              help='With --against: CPU threads of each train.py')
def main(device, batch, batch_gpu, blocks, warmup, preset, cbase, cmax, dpm_channels, json_path, against, configs,
         pairs, threads):
    """Print the kimg/s table and optionally write it to JSON."""
    if against is not None:
        names = [name for name in configs.split(',') if name]
        unknown = [name for name in names if name not in loop_speed.CONFIGS]
        if unknown or not names:
            raise click.ClickException(f'--configs {configs}: expected names from {",".join(loop_speed.CONFIGS)}')
        try:
            rows = loop_speed.compare(against, names, pairs, threads)
        except ValueError as err:
            raise click.ClickException(str(err))
        print(loop_speed.format_rows(rows, against))
        return
    if device == 'cuda' and not torch.cuda.is_available():
        raise click.ClickException('--device cuda: no CUDA device is available (use --device cpu)')
    if batch % batch_gpu != 0:
        raise click.ClickException(f'--batch {batch} is not a multiple of --batch-gpu {batch_gpu}')
    name = torch.cuda.get_device_name() if device == 'cuda' else 'cpu'
    cbase, cmax = cbase or PRESETS[preset]['cbase'], cmax or PRESETS[preset]['cmax']
    print(f'{preset} config, batch {batch} in rounds of {batch_gpu}, cbase {cbase}, cmax {cmax}, on {name}; median of '
          f'{blocks} blocks of {BLOCK} iterations after {warmup} warm-up, settings alternating block by block')
    rows = run_benchmark(device, batch, batch_gpu, blocks, warmup, cbase, cmax, dpm_channels, preset=preset)
    print(format_table(rows))
    if json_path:
        _write_json(json_path, dict(preset=preset, device=name, torch=torch.__version__, batch=batch,
                                    batch_gpu=batch_gpu,
                                    cbase=cbase, cmax=cmax, dpm_channels=dpm_channels, blocks=blocks, rows=rows))
        print(f'wrote {json_path}')


if __name__ == '__main__':
    main()
