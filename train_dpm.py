"""Train a diffusion model (EDM / VP / VE preconditioning, or NCSNv2) as a score source for SMaRt.

EDM's recipe (Karras et al. 2022) on the same dataset zips as the GAN, with two options aimed at SMaRt:
Stable Target Field targets (--stf, Xu et al. 2023) and extra noise levels in the band a SMaRt run will query
(--band-share with --band-schedule / --band-t). A run goes to <outdir>/<id>-<desc>: training_options.json,
log.txt, stats.jsonl, network-snapshot-<kimg>.pkl (EDM format; `train.py --smart-dpm` loads it without running
code) and training-state-<kimg>.pt (--resume). Examples:

\b
  # Tiny CPU run with STF and half of the draws in SMaRt's default band (DDPM-linear t in [40, 60]).
  python train_dpm.py --outdir=runs --data=ds.zip --preset=tiny --stf --rbatch=64 --band-share=0.5
  # CIFAR-10-like data, DDPM++ with EDM preconditioning, two processes.
  torchrun --standalone --nproc_per_node=2 train_dpm.py --outdir=runs --data=cifar10-32x32.zip --preset=cifar
  # Print the resolved options only; continue a run exactly.
  python train_dpm.py --outdir=runs --data=ds.zip --preset=tiny --dry-run
  python train_dpm.py --outdir=runs --data=ds.zip --preset=tiny --resume=runs/00000-.../training-state-000001.pt
"""

from torch_utils import cpu_threads  # noqa: F401  (first: it sets OpenMP's wait policy before torch loads)

import os

import click
import torch

import dnnlib
from cli.common import (FiniteFloatRange, FlagError, IntPair, create_run_dir, launch_tail, next_run_dir, open_dataset,
                        show_options, threads_option)
from dataset_io.reader import ImageFolderDataset
from dpm import sigma_dist, snapshot as dpm_snapshot, training_loop as dpm_training_loop
from smart_plugin.band import DEFAULT_SCHEDULE, DEFAULT_T
from torch_utils import dataset_classes, distributed, loop_helpers
from torch_utils.finite import NonFiniteError

# --preset: EDM-like settings (EDM's CIFAR-10 and 64x64 FFHQ/AFHQ configs) and a tiny CPU preset.
# net: size overrides per backbone family; duration / tick in kimg, snap in ticks.
PRESETS = {
    'cifar': dict(batch=512, lr=1e-3, lr_rampup_kimg=10000, ema_halflife_kimg=500, ema_rampup_ratio=0.05,
                  dropout=0.13, augment=0.12, duration=200000, tick=50, snap=50,
                  net=dict(song=dict(model_channels=128, channel_mult=[2, 2, 2]), adm={},
                           ncsnv2=dict(ngf=128, sigma_max=50.0, sigma_min=0.01, num_scales=232))),
    '64':    dict(batch=256, lr=2e-4, lr_rampup_kimg=10000, ema_halflife_kimg=500, ema_rampup_ratio=0.05,
                  dropout=0.05, augment=0.15, duration=200000, tick=50, snap=50,
                  net=dict(song=dict(model_channels=128, channel_mult=[1, 2, 2, 2]), adm={},
                           ncsnv2=dict(ngf=128, sigma_max=90.0, sigma_min=0.01, num_scales=500))),
    'tiny':  dict(batch=16, lr=2e-3, lr_rampup_kimg=0.16, ema_halflife_kimg=0.5, ema_rampup_ratio=0.25,
                  dropout=0.0, augment=0.0, duration=3.2, tick=0.32, snap=5,
                  net=dict(song=dict(model_channels=16, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[]),
                           adm=dict(model_channels=16, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[]),
                           ncsnv2=dict(ngf=16, channel_mult=[1, 2], sigma_max=10.0, sigma_min=0.01,
                                       num_scales=50))),
}

# STF and SMaRt-band defaults (the flags default to None so that using them without --stf / --band-share is an error).
DEFAULT_RBATCH, DEFAULT_STF_CHUNK = 1024, 256
DEFAULT_BAND_SCHEDULE, DEFAULT_BAND_T = DEFAULT_SCHEDULE, DEFAULT_T   # SMaRt's default band for such a source.

# --arch: backbone kwargs (EDM's train.py) and the preset family that sizes it.
ARCHS = {
    'ddpmpp': ('song', dict(model_type='SongUNet', embedding_type='positional', encoder_type='standard',
                            decoder_type='standard', channel_mult_noise=1, resample_filter=[1, 1])),
    'ncsnpp': ('song', dict(model_type='SongUNet', embedding_type='fourier', encoder_type='residual',
                            decoder_type='standard', channel_mult_noise=2, resample_filter=[1, 3, 3, 1])),
    'adm':    ('adm', dict(model_type='DhariwalUNet', model_channels=192, channel_mult=[1, 2, 3, 4])),
    'ncsnv2': ('ncsnv2', {}),
}


# Config builder: options -> plain config dict. No click below this line except FlagError.


def _dataset_kwargs(opts) -> tuple[dict, ImageFolderDataset]:
    dataset = open_dataset(opts.data, opts.cond)
    return dict(class_name=dataset_classes.IMAGE_FOLDER_DATASET, path=opts.data, use_labels=bool(opts.cond),
                xflip=False, max_size=len(dataset), resolution=dataset.resolution), dataset


def _value(opts, spec: dict, name: str):
    return spec[name] if opts[name] is None else opts[name]


def _batch(opts, spec: dict, num_gpus: int) -> tuple[int, int]:
    batch = _value(opts, spec, 'batch')
    if batch % num_gpus != 0:
        raise FlagError('--batch', f'{batch} is not divisible by the {num_gpus} processes')
    batch_gpu = batch // num_gpus if opts.batch_gpu is None else opts.batch_gpu
    if (batch // num_gpus) % batch_gpu != 0:
        raise FlagError('--batch-gpu', f'{batch_gpu} does not divide the per-process batch {batch // num_gpus} '
                                       '(--batch / processes)')
    return batch, batch_gpu


def _network(opts, spec: dict, augment: bool) -> tuple[str, dict]:
    """(precond, network_kwargs) from --arch, --precond, --dropout and the preset."""
    family, base = ARCHS[opts.arch]
    if opts.arch == 'ncsnv2':
        if opts.precond is not None:
            raise FlagError('--precond', f'--arch=ncsnv2 has its own score parameterization and loss; drop '
                                         f'--precond={opts.precond}')
        precond = 'ncsnv2'
    else:
        precond = opts.precond or 'edm'
    kwargs = dict(base, **spec['net'][family])
    if precond == 'ncsnv2' and opts.dropout is not None:
        raise FlagError('--dropout', f'{opts.dropout}: the NCSNv2 network has no dropout; drop --dropout')
    if precond != 'ncsnv2':
        kwargs['dropout'] = _value(opts, spec, 'dropout')
    if augment:
        kwargs['augment_dim'] = 9
    return precond, kwargs


def _sigma_dist(opts, precond: str, network_kwargs: dict) -> tuple[dict | None, dict | None]:
    """(p(sigma) description or None for the loss's default, band info) from --p-mean/--p-std and --band-*."""
    base = None
    if opts.p_mean is not None or opts.p_std is not None:
        if precond != 'edm':
            raise FlagError('--p-mean' if opts.p_mean is not None else '--p-std',
                            f'applies to --precond=edm only (got {precond})')
        base = sigma_dist.LogNormalSigma(-1.2 if opts.p_mean is None else opts.p_mean,
                                         1.2 if opts.p_std is None else opts.p_std)
    if precond == 'ncsnv2':
        from edm_bridge import ncsnv2  # Deferred: only NCSNv2 runs need it.
        ladder = ncsnv2.ncsnv2_sigmas(network_kwargs['sigma_max'], network_kwargs['sigma_min'],
                                      network_kwargs['num_scales'])
        base = sigma_dist.LadderSigma((2 * ladder).tolist())  # [-1, 1]-data units.
    if opts.band_share == 0:
        for flag, name in (('--band-schedule', 'band_schedule'), ('--band-t', 'band_t')):
            if opts[name] is not None:
                raise FlagError(flag, 'has no effect without --band-share > 0; add --band-share or drop it')
        return (None if base is None else base.describe()), None
    schedule = DEFAULT_BAND_SCHEDULE if opts.band_schedule is None else opts.band_schedule
    band_t = DEFAULT_BAND_T if opts.band_t is None else opts.band_t
    try:
        lo, hi = sigma_dist.smart_band(schedule, *band_t)
    except ValueError as err:
        flag = '--band-t' if str(err).startswith('t_') else '--band-schedule'
        raise FlagError(flag, str(err)) from None
    if base is None:
        base = dict(edm=sigma_dist.LogNormalSigma, vp=sigma_dist.VPSigma, ve=sigma_dist.LogUniformSigma)[precond]()
    mixture = sigma_dist.BandMixture(base, lo, hi, opts.band_share)
    band = dict(schedule=schedule, t=list(band_t), sigma_lo=lo, sigma_hi=hi, share=opts.band_share,
                base_mass=base.mass(lo, hi), band_mass=mixture.band_mass())
    return mixture.describe(), band


def _stf(opts, precond: str, batch_gpu: int) -> tuple[dict, int | None]:
    """(loss_kwargs, rbatch) from --stf, --rbatch, --stf-chunk."""
    if not opts.stf:
        for flag, name in (('--rbatch', 'rbatch'), ('--stf-chunk', 'stf_chunk')):
            if opts[name] is not None:
                raise FlagError(flag, 'has no effect without --stf; add --stf or drop it')
        return {}, None
    if precond == 'ncsnv2':
        raise FlagError('--stf', 'NCSNv2 trains on its own DSM target; use --arch ddpmpp/ncsnpp/adm for STF')
    rbatch = DEFAULT_RBATCH if opts.rbatch is None else opts.rbatch
    if rbatch < batch_gpu:
        raise FlagError('--rbatch', f'{rbatch} is smaller than the per-round batch {batch_gpu} (--batch-gpu); the '
                                    'reference batch contains the round\'s own images')
    return dict(stf=True, stf_chunk=DEFAULT_STF_CHUNK if opts.stf_chunk is None else opts.stf_chunk), rbatch


def _resume(opts) -> str | None:
    """The training state to resume: --resume itself (a .pt), or the state a network snapshot (.pkl) names."""
    if opts.resume is None:
        return None
    if not os.path.isfile(opts.resume) or not opts.resume.endswith(('.pt', '.pkl')):
        raise FlagError('--resume', f'{opts.resume!r} is not an existing training-state-*.pt or network-snapshot-*.pkl '
                                    'file of a train_dpm.py run')
    if opts.resume.endswith('.pkl'):
        try:
            return dpm_snapshot.state_of_snapshot(opts.resume)
        except (OSError, ValueError) as err:
            raise FlagError('--resume', str(err)) from None
    return opts.resume


def _remove_stale_temp_files(outdir: str, resume_state: str | None) -> None:
    """Temp files of killed runs: in every run dir of --outdir and in the resumed run's dir."""
    run_dirs = sorted(os.path.join(outdir, name) for name in (os.listdir(outdir) if os.path.isdir(outdir) else []))
    for path in loop_helpers.temp_file_folders(run_dirs, resume_state):
        dpm_snapshot.remove_stale_temp_files(path)


def build_config(opts, num_gpus: int) -> tuple[dict, str, dict | None]:
    """(training_loop kwargs, run description, SMaRt band info or None) from the parsed options."""
    if opts.preset not in PRESETS:
        raise FlagError('--preset', f'{opts.preset!r}: expected one of {list(PRESETS)}')
    spec = PRESETS[opts.preset]
    dataset_kwargs, dataset = _dataset_kwargs(opts)
    batch, batch_gpu = _batch(opts, spec, num_gpus)
    augment_p = _value(opts, spec, 'augment')
    precond, network_kwargs = _network(opts, spec, augment_p > 0)
    dist, band = _sigma_dist(opts, precond, network_kwargs)
    loss_kwargs, rbatch = _stf(opts, precond, batch_gpu)
    config = dict(
        dataset_kwargs=dataset_kwargs, precond=precond, network_kwargs=network_kwargs, sigma_dist=dist,
        loss_kwargs=loss_kwargs, rbatch=rbatch, augment_kwargs=dict(p=augment_p) if augment_p > 0 else None,
        optimizer_kwargs=dict(lr=_value(opts, spec, 'lr'), betas=[0.9, 0.999], eps=1e-8),
        data_loader_kwargs=dict(pin_memory=True, num_workers=opts.workers,
                                prefetch_factor=2 if opts.workers > 0 else None),
        batch_size=batch, batch_gpu=batch_gpu, lr_rampup_kimg=_value(opts, spec, 'lr_rampup_kimg'),
        ema_halflife_kimg=_value(opts, spec, 'ema_halflife_kimg'),
        ema_rampup_ratio=_value(opts, spec, 'ema_rampup_ratio'), seed=opts.seed, num_gpus=num_gpus,
        total_kimg=_value(opts, spec, 'duration'), kimg_per_tick=_value(opts, spec, 'tick'),
        snapshot_ticks=_value(opts, spec, 'snap'), resume_state=_resume(opts))
    if config['ema_rampup_ratio'] == 0:
        config['ema_rampup_ratio'] = None  # --ema-rampup-ratio 0 = no ramp.
    desc = (f'{dataset.name}-{"cond" if opts.cond else "uncond"}-{opts.arch}-{precond}-{opts.preset}-batch{batch}'
            + ('-stf' if rbatch is not None else '') + (f'-band{opts.band_share:g}' if band else ''))
    return config, desc, band


def _launch(config: dict, options: dict, run_dir: str, ranks: tuple) -> None:
    """Join the process group, create the run dir (rank 0), train, leave the group."""
    rank, local_rank, world_size = ranks
    with distributed.process_group(rank, world_size, local_rank=local_rank):  # Left synchronised (distributed.py).
        if rank == 0:
            _remove_stale_temp_files(os.path.dirname(run_dir), config['resume_state'])
        run_dir = create_run_dir(run_dir, options, rank)
        device = f'cuda:{local_rank}' if torch.cuda.is_available() else 'cpu'
        try:
            result = dpm_training_loop.training_loop(**config, run_dir=run_dir, rank=rank, device=device)
        except NonFiniteError as err:  # A wholly non-finite update (torch_utils.nonfinite_grads).
            raise FlagError(err.flag or 'training', str(err)) from None
        except (ValueError, FileNotFoundError) as err:
            if config['resume_state'] is not None and 'resume state' in str(err):
                raise FlagError('--resume', str(err)) from None
            raise
    if result.interrupted:
        raise SystemExit(result.exit_code)


@click.command(help=__doc__)
# General.
@click.option('--outdir', required=True, metavar='DIR', help='Where to make the run directory')
@click.option('--data', required=True, metavar='PATH', help='Training data (zip or directory, as for train.py)')
@click.option('--cond', is_flag=True, help='Class-conditional model (needs dataset.json labels)')
@click.option('--arch', type=click.Choice(list(ARCHS)), default='ddpmpp', show_default=True,
              help='Backbone: DDPM++ / NCSN++ (SongUNet), ADM (DhariwalUNet) or NCSNv2 (own score net and loss)')
@click.option('--precond', type=click.Choice(['edm', 'vp', 've']), default=None, show_default='edm',
              help='Preconditioning and loss (not with --arch=ncsnv2)')
@click.option('--preset', type=click.Choice(list(PRESETS)), default='cifar', show_default=True,
              help='Hyper-parameter preset: cifar (32x32), 64 (64x64), tiny (CPU)')
@click.option('--seed', type=click.IntRange(min=0), default=0, show_default=True, help='Random seed')
@click.option('-n', '--dry-run', is_flag=True, help='Print the training options and exit; writes nothing')
# Hyper-parameters (default: the preset's).
@click.option('--duration', type=FiniteFloatRange(min=0, min_open=True), default=None, show_default='preset',
              metavar='KIMG', help='Training length in kimg (thousands of training images)')
@click.option('--batch', type=click.IntRange(min=1), default=None, show_default='preset', help='Total batch size')
@click.option('--batch-gpu', type=click.IntRange(min=1), default=None, show_default='batch / processes',
              help='Images per process and accumulation round')
@click.option('--lr', type=FiniteFloatRange(min=0, min_open=True), default=None, show_default='preset',
              help='Adam learning rate')
@click.option('--lr-rampup-kimg', type=FiniteFloatRange(min=0), default=None, show_default='preset',
              help='Linear learning-rate ramp length in kimg')
@click.option('--ema-halflife-kimg', type=FiniteFloatRange(min=0), default=None, show_default='preset',
              help='EMA half-life in kimg')
@click.option('--ema-rampup-ratio', type=FiniteFloatRange(min=0), default=None, show_default='preset',
              help='EMA half-life is at most this fraction of the images seen; 0 = no ramp')
@click.option('--dropout', type=FiniteFloatRange(min=0, max=1), default=None, show_default='preset',
              help='Dropout probability (not NCSNv2)')
@click.option('--augment', type=FiniteFloatRange(min=0, max=1), default=None, show_default='preset',
              help='Augment probability p (augment labels go to the net); 0 = off')
@click.option('--p-mean', type=FiniteFloatRange(), default=None, show_default='-1.2',
              help='EDM log-normal p(sigma) mean')
@click.option('--p-std', type=FiniteFloatRange(min=0, min_open=True), default=None, show_default='1.2',
              help='EDM log-normal p(sigma) std')
# STF.
@click.option('--stf/--no-stf', default=False, show_default=True, help='Stable Target Field targets')
@click.option('--rbatch', type=click.IntRange(min=1), default=None, show_default=str(DEFAULT_RBATCH),
              help='STF reference batch per process and accumulation round (its first images are the round\'s '
                   'own minibatch, the rest drawn from the dataset on that process; not pooled across processes)')
@click.option('--stf-chunk', type=click.IntRange(min=1), default=None, show_default=str(DEFAULT_STF_CHUNK),
              help='References per chunk of the STF posterior mean (memory O(batch-gpu x chunk))')
# SMaRt band.
@click.option('--band-share', type=FiniteFloatRange(min=0, max=1), default=0, show_default=True,
              help='Extra share of sigma draws in the SMaRt band (in-band mass = share + (1-share) * base mass)')
@click.option('--band-schedule', default=None, show_default=DEFAULT_BAND_SCHEDULE,
              help='t -> sigma schedule of the band (edm_bridge.schedules spec; linear / cosine = DDPM)')
@click.option('--band-t', type=IntPair(), default=None, show_default='{},{}'.format(*DEFAULT_BAND_T),
              help='Band as integer t range LO,HI')
# Progress and performance.
@click.option('--tick', type=FiniteFloatRange(min=0, min_open=True), default=None, show_default='preset',
              help='Progress interval in kimg')
@click.option('--snap', type=click.IntRange(min=1), default=None, show_default='preset',
              help='Snapshot + training-state interval in ticks')
@click.option('--resume', default=None, metavar='PT|PKL',
              help='Continue from a training-state-*.pt, or the network-snapshot-*.pkl that names one')
@click.option('--workers', type=click.IntRange(min=0), default=2, show_default=True, help='DataLoader workers')
@threads_option
def main(**kwargs):
    opts = dnnlib.EasyDict(kwargs)
    try:
        ranks = distributed.env_ranks()
    except ValueError as err:
        raise FlagError('--nproc_per_node (torchrun)', str(err)) from None
    config, desc, band = build_config(opts, ranks[2])
    run_dir = next_run_dir(opts.outdir, desc) if ranks[0] == 0 else None
    options = dict(config, run_dir=run_dir, smart_band=band)
    notes = () if band is None else (
        f'SMaRt band: {band["schedule"]} t {band["t"][0]}..{band["t"][1]} -> sigma {band["sigma_lo"]:.4g}'
        f'..{band["sigma_hi"]:.4g}; P(sigma in band) = {band["band_mass"]:.3f} (base {band["base_mass"]:.3f})',)
    show_options(options, run_dir, ranks[0], notes)
    if opts.dry_run:
        if ranks[0] == 0:
            print('Dry run; exiting.')
        return
    launch_tail(opts.threads, lambda: _launch(config, options, run_dir, ranks))


if __name__ == '__main__':
    main()
