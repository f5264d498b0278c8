"""Train a StyleGAN2-ADA GAN, optionally with the SMaRt score-matching regularizer and Diffusion-GAN noise.

Options follow StyleGAN2-ADA's train.py (spec 3.5-3.6) plus StyleGAN3's --batch-gpu, --cbase, --cmax, --map-depth,
--mbstd-group, --glr, --dlr, --tick. A run goes to <outdir>/<id>-<desc>: training_options.json, log.txt,
stats.jsonl, image grids and network snapshots. Examples:

\b
  # CIFAR-10 with SMaRt at the paper's CIFAR-10 setting and the Gaussian score source.
  python train.py --outdir=runs --data=datasets/cifar10-32x32.zip --cfg=cifar --cond \\
      --smart-lambda=0.01 --smart-schedule=ddpm-linear --smart-t=40,60 --smart-freq=8 --smart-dpm=gaussian
  # Two processes (GPUs, or CPU processes with gloo): started by train.py itself, or by torchrun.
  python train.py --outdir=runs --data=ds.zip --gpus=2 --batch=32
  torchrun --standalone --nproc_per_node=2 train.py --outdir=runs --data=ds.zip --gpus=2 --batch=32
  # FID at every snapshot, the Inception detector from a local file (see calc_metrics.py for the detectors).
  python train.py --outdir=runs --data=ds.zip --metrics=fid50k_full --detector=inception-2015-12-05.pt
  # Print the resolved options only; continue a run exactly from one of its snapshots.
  python train.py --outdir=runs --data=ds.zip --dry-run
  python train.py --outdir=runs --data=ds.zip --resume=runs/00000-ds-auto1/network-snapshot-000200.pkl
"""

from torch_utils import cpu_threads  # First: OpenMP's wait policy must be set before torch loads (see there).

import dataclasses
import json
import os
import pickle
import sys

import click
import torch

import dnnlib
from metrics import detectors, metric_main
from metrics.detectors import DetectorUnavailableError
from smart_plugin import DiffGANOptions, DiffusionGAN, OptionError, SMaRt, SMaRtOptions
from smart_plugin.diffgan_betas import BETA_SCHEDULES
from torch_utils import distributed, safe_pickle, signals
from torch_utils.finite import NonFiniteError
from training import run_outputs, self_launch, train_state, training_loop
from training.augment import augpipe_specs
from training.cli_compat import aug_choice, bool_flag, expand_user_paths, released_aliases, resolve_aliases
from training.cli_common import FlagError, IntPair, create_run_dir, next_run_dir, open_dataset, threads_option
from training.dataset import ImageFolderDataset
from training.dataset_images import ImageFileError

# --cfg presets (spec 3.5); None in 'auto' = derived from the resolution and the number of GPUs (_preset).
PRESET_FIELDS = ('ref_gpus', 'kimg', 'mb', 'mbstd', 'fmaps', 'lrate', 'gamma', 'ema', 'ramp', 'map')
CONFIG_SPECS = {name: dict(zip(PRESET_FIELDS, values)) for name, values in {
    #            ref_gpus  kimg    mb    mbstd fmaps lrate   gamma ema   ramp  map
    'auto':      (None,    25000,  None, None, None, None,   None, None, 0.05, 2),
    'stylegan2': (8,       25000,  32,   4,    1,    0.002,  10,   10,   None, 8),
    'paper256':  (8,       25000,  64,   8,    0.5,  0.0025, 1,    20,   None, 8),
    'paper512':  (8,       25000,  64,   8,    1,    0.0025, 0.5,  20,   None, 8),
    'paper1024': (8,       25000,  32,   4,    1,    0.002,  2,    10,   None, 8),
    'cifar':     (2,       100000, 64,   32,   1,    0.0025, 0.01, 500,  0.05, 2),
    'cpu':       (1,       200,    32,   4,    1/32, 0.002,  1,    10,   0.05, 2),
}.items()}
# --cfg=cpu (benchmarks/cpu_preset_search.py, docs/cpu-preset.md): G learning rate below D's; at most 64 channels, so
# with cbase 1024 every layer of a 16x16 net has 64 channels and a 32x32 net has 32 at 32x32.
CPU_EXTRA = dict(glrate=0.001, cmax=64)

# --resume shortcuts: StyleGAN2-ADA's transfer-learning source networks.
RESUME_URL = 'https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/transfer-learning-source-nets'
RESUME_SPECS = {
    'ffhq256': f'{RESUME_URL}/ffhq-res256-mirror-paper256-noaug.pkl',
    'ffhq512': f'{RESUME_URL}/ffhq-res512-mirror-stylegan2-noaug.pkl',
    'ffhq1024': f'{RESUME_URL}/ffhq-res1024-mirror-stylegan2-noaug.pkl',
    'celebahq256': f'{RESUME_URL}/celebahq-res256-mirror-paper256-kimg100000-ada-target0.5.pkl',
    'lsundog256': f'{RESUME_URL}/lsundog-res256-paper256-kimg100000-noaug.pkl',
}

# Plugin option fields (SMaRtOptions, DiffGANOptions) -> the flag that sets them, for error messages.
PLUGIN_FLAGS = dict(lam='--smart-lambda', freq='--smart-freq', t_lo='--smart-t', t_hi='--smart-t',
                    schedule='--smart-schedule', param='--smart-param', batch='--smart-batch',
                    draws='--smart-draws', antithetic='--smart-antithetic', grad='--smart-grad',
                    diagnostics='--smart-diagnostics',
                    start_kimg='--smart-start-kimg', dpm='--smart-dpm', enabled='--diffgan',
                    noise_sd='--diffgan-noise-sd', t_min='--diffgan-tmin', t_max='--diffgan-tmax',
                    ts_dist='--diffgan-ts-dist', target='--diffgan-target', t_embed='--diffgan-t-embed',
                    ada_kimg='--diffgan-ada-kimg', beta_schedule='--diffgan-beta-schedule',
                    beta_start='--diffgan-beta-start', beta_end='--diffgan-beta-end', ada_augpipe='--augpipe',
                    ada_maxp='--diffgan-ada-maxp')


# Config builder: options -> (plain config dict, desc). No click below this line except FlagError.


def _load_dataset(opts) -> tuple[dict, ImageFolderDataset]:
    """training_set_kwargs and the opened dataset; checks --data, --cond, --subset."""
    dataset = open_dataset(opts.data, opts.cond)
    kwargs = dict(class_name='training.dataset.ImageFolderDataset', path=opts.data, use_labels=bool(opts.cond),
                  max_size=len(dataset), xflip=bool(opts.mirror), resolution=dataset.resolution)
    if opts.subset is not None:
        if opts.subset > len(dataset):
            raise FlagError('--subset', f'{opts.subset} exceeds the {len(dataset)} images of {opts.data}')
        kwargs.update(max_size=opts.subset, random_seed=opts.seed)
    return kwargs, dataset


def _preset(opts, resolution: int, num_gpus: int) -> dnnlib.EasyDict:
    """The --cfg preset with 'auto' resolved for this resolution and GPU count (spec 3.5)."""
    spec = dnnlib.EasyDict(CONFIG_SPECS[opts.cfg])
    if opts.cfg == 'auto':
        spec.ref_gpus = num_gpus
        spec.mb = max(min(num_gpus * min(4096 // resolution, 32), 64), num_gpus)
        spec.mbstd = min(spec.mb // num_gpus, 4)
        spec.fmaps = 1 if resolution >= 512 else 0.5
        spec.lrate = 0.002 if resolution >= 1024 else 0.0025
        spec.gamma = 0.0002 * (resolution ** 2) / spec.mb
        spec.ema = spec.mb * 10 / 32
    if opts.cfg == 'cpu':
        spec.update(CPU_EXTRA)
    return spec


def _batch(opts, spec, num_gpus: int) -> tuple[int, int]:
    """(batch_size, batch_gpu) from the preset, --batch and --batch-gpu; checks divisibility."""
    # batch_gpu = mb // ref_gpus (spec 3.5), at most the per-process batch: the released loop then runs one round.
    batch_size, batch_gpu = spec.mb, min(spec.mb // spec.ref_gpus, max(spec.mb // num_gpus, 1))
    if opts.batch is not None:
        batch_size, batch_gpu = opts.batch, opts.batch // num_gpus
    if opts.batch_gpu is not None:
        batch_gpu = opts.batch_gpu
    flag = '--batch-gpu' if opts.batch_gpu is not None else '--batch'
    if batch_size % num_gpus != 0:
        raise FlagError('--batch', f'{batch_size} is not divisible by the {num_gpus} processes (--gpus)')
    if batch_gpu < 1 or (batch_size // num_gpus) % batch_gpu != 0:
        raise FlagError(flag, f'the per-process batch {batch_size // num_gpus} is not a multiple of the per-round '
                              f'batch {batch_gpu}; choose --batch / --batch-gpu so that it divides')
    return batch_size, batch_gpu


def _network_config(opts, spec, batch_gpu: int) -> dict:
    """G_kwargs, D_kwargs, optimizer and loss kwargs."""
    mbstd = spec.mbstd if opts.mbstd_group is None else opts.mbstd_group
    if batch_gpu > mbstd and batch_gpu % mbstd != 0:
        raise FlagError('--mbstd-group', f'{mbstd} does not divide the per-round batch {batch_gpu} (--batch-gpu)')
    channel_base = int(spec.fmaps * 32768) if opts.cbase is None else opts.cbase
    fp16_res, conv_clamp = (0, None) if opts.fp32 else (4, 256)
    cmax = spec.get('cmax', 512) if opts.cmax is None else opts.cmax
    synthesis = dict(channel_base=channel_base, channel_max=cmax, num_fp16_res=fp16_res, conv_clamp=conv_clamp)
    block = dict(freeze_layers=opts.freezed)
    if opts.nhwc:
        synthesis['fp16_channels_last'] = block['fp16_channels_last'] = True
    G_kwargs = dict(z_dim=512, w_dim=512, synthesis_kwargs=synthesis,
                    mapping_kwargs=dict(num_layers=spec.map if opts.map_depth is None else opts.map_depth))
    D_kwargs = dict(architecture='orig' if opts.cfg == 'cifar' else 'resnet', channel_base=channel_base,
                    channel_max=cmax, num_fp16_res=fp16_res, conv_clamp=conv_clamp, block_kwargs=block,
                    mapping_kwargs={}, epilogue_kwargs=dict(mbstd_group_size=mbstd))
    # pl_no_weight_grad: StyleGAN2-ADA always takes the path-length gradient without conv weight gradients.
    loss_kwargs = dict(r1_gamma=spec.gamma if opts.gamma is None else opts.gamma, pl_no_weight_grad=True)
    if opts.cfg == 'cifar':
        loss_kwargs.update(pl_weight=0, style_mixing_prob=0)
    glr = spec.get('glrate', spec.lrate) if opts.glr is None else opts.glr
    return dict(G_kwargs=G_kwargs, D_kwargs=D_kwargs, loss_kwargs=loss_kwargs,
                G_opt_kwargs=dict(lr=glr, betas=[0, 0.99], eps=1e-8),
                D_opt_kwargs=dict(lr=spec.lrate if opts.dlr is None else opts.dlr, betas=[0, 0.99], eps=1e-8))


def _augment_mode(opts) -> str:
    """--aug as given, else 'ada', or 'noaug' with --diffgan (the released Diffusion-GAN default: no augmentation)."""
    return opts.aug or ('noaug' if opts.diffgan else 'ada')


def _augment_config(opts) -> dict:
    """augment_kwargs, augment_p and ada_target from --aug, --p, --target, --augpipe. With --diffgan, --aug=ada is
    the released coupling instead: the Diffusion-GAN plugin runs the ADA pipeline at min(p, --diffgan-ada-maxp)."""
    aug = _augment_mode(opts)
    coupled = opts.diffgan and aug == 'ada'
    if opts.diffgan_ada_maxp is not None and not coupled:
        raise FlagError('--diffgan-ada-maxp', f'only applies with --diffgan --aug=ada (got --aug={aug}'
                                              f'{"" if opts.diffgan else " without --diffgan"})')
    if coupled and opts.target is not None:
        raise FlagError('--target', 'with --diffgan, --aug=ada follows the diffusion p (p_aug = min(p, '
                                    '--diffgan-ada-maxp)) instead of its own ADA controller; set the target of '
                                    'E[sign D(real)] with --diffgan-target')
    if opts.p is not None and aug != 'fixed':
        raise FlagError('--p', f'only applies with --aug=fixed (got --aug={aug})')
    if aug == 'fixed' and opts.p is None:
        raise FlagError('--aug', '--aug=fixed needs --p (the fixed augmentation probability)')
    if opts.target is not None and aug != 'ada':
        raise FlagError('--target', f'only applies with --aug=ada (got --aug={aug})')
    if opts.augpipe is not None and aug == 'noaug':
        raise FlagError('--augpipe', 'cannot be used with --aug=noaug')
    if aug == 'noaug' or coupled:
        return dict(augment_kwargs=None, augment_p=0, ada_target=None)
    return dict(augment_kwargs=dict(augpipe_specs[opts.augpipe or 'bgc']), augment_p=opts.p if aug == 'fixed' else 0,
                ada_target=(0.6 if opts.target is None else opts.target) if aug == 'ada' else None)


def _resume_config(opts, total_kimg: float) -> dict:
    """resume_pkl; a weights-only resume (official pickles) also sets ada_kimg 100 and no EMA ramp-up, as
    officially, while our snapshots with a training state continue exactly with the configured values."""
    if opts.resume in (None, 'noresume'):
        if opts.resume_partial:
            raise FlagError('--resume-partial', 'only applies with --resume')
        return dict(resume_pkl=None)
    pkl = RESUME_SPECS.get(opts.resume, opts.resume)
    if not dnnlib.util.is_url(pkl, allow_file_urls=True) and not os.path.isfile(pkl):
        raise FlagError('--resume', f'{pkl!r} is neither an existing file, a URL nor one of {list(RESUME_SPECS)}')
    try:
        summary = run_outputs.resume_summary(pkl)
    except (OSError, EOFError, ValueError, pickle.UnpicklingError) as err:
        raise FlagError('--resume', f'cannot read {pkl}: {err}') from None
    if not summary.networks:
        raise FlagError('--resume', f'{pkl} holds no networks (keys {summary.entries}); expected a network snapshot '
                                    f'with G, D and G_ema')
    if summary.cur_nimg is not None and summary.cur_nimg >= round(total_kimg * 1000):
        raise FlagError('--kimg', f'{total_kimg:g}, but the --resume snapshot {pkl} is already at kimg '
                                  f'{summary.cur_nimg / 1000:g}: nothing to train; pass a larger --kimg')
    partial = dict(resume_partial=True) if opts.resume_partial else {}
    return (dict(resume_pkl=pkl, **partial) if summary.exact else
            dict(resume_pkl=pkl, ada_kimg=100, ema_rampup=None, **partial))


def _check_diffgan_resume(pkl: str, diffgan: DiffGANOptions) -> None:
    """Refuse, before the run dir exists, a snapshot whose Diffusion-GAN state does not fit these options (e.g. a D
    trained on t / t_max resumed with raw t). Reads the file with the safe loader."""
    with dnnlib.util.open_url(pkl) as f:
        data = safe_pickle.safe_load(f)
    state = (data.get('plugins') or {}).get(DiffusionGAN.name) if isinstance(data, dict) else None
    if state is None:
        return
    try:
        DiffusionGAN(diffgan).load_state_dict(state)
    except OptionError as err:
        raise FlagError(PLUGIN_FLAGS.get(err.field, '--diffgan-*'), f'--resume={pkl}: {err}') from None
    except (TypeError, ValueError) as err:
        raise FlagError('--resume', f'{pkl}: {err}') from None


def _metric_config(opts) -> dict:
    """metrics (validated names) and metric_kwargs (detector sources, DataLoader workers) for the snapshots."""
    try:
        metrics = metric_main.parse_metric_list(opts.metrics)
    except ValueError as err:
        raise FlagError('--metrics', str(err)) from None
    for flag, source in (('--detector', opts.detector), ('--detector-vgg16', opts.detector_vgg16)):
        if source is not None and not dnnlib.util.is_url(source, allow_file_urls=True) and not os.path.isfile(source):
            raise FlagError(flag, f'{source!r} is neither an existing file nor a URL')
    uses = {'--detector': any(not name.startswith(('pr', 'ppl')) for name in metrics),  # FID, KID, IS: Inception.
            '--detector-vgg16': any(name.startswith(('pr', 'ppl')) for name in metrics)}  # PR, PPL (LPIPS): VGG16.
    for flag, source in (('--detector', opts.detector), ('--detector-vgg16', opts.detector_vgg16)):
        if source is not None and not uses[flag]:
            raise FlagError(flag, f'no metric in --metrics={opts.metrics} uses this detector, so it would be ignored; '
                                  'add the metrics, e.g. --metrics=fid50k_full,pr50k3_full')
    return dict(metrics=metrics, metric_kwargs=dict(detector=opts.detector, detector_vgg16=opts.detector_vgg16,
                                                    trust_detector=opts.trust_detector, num_workers=opts.workers))


def _plugin_options(opts) -> tuple[SMaRtOptions, DiffGANOptions]:
    """SMaRtOptions and DiffGANOptions from the --smart-* / --diffgan-* flags (errors name the flag)."""
    try:
        t_lo, t_hi = opts.smart_t if opts.smart_t is not None else (None, None)  # None: per score source.
        smart = SMaRtOptions(lam=opts.smart_lambda, freq=opts.smart_freq, t_lo=t_lo, t_hi=t_hi,
                             schedule=opts.smart_schedule, param=opts.smart_param, batch=opts.smart_batch,
                             start_kimg=opts.smart_start_kimg, dpm=opts.smart_dpm, draws=opts.smart_draws,
                             antithetic=opts.smart_antithetic, grad=opts.smart_grad,
                             diagnostics=opts.smart_diagnostics)
        coupled = opts.diffgan and _augment_mode(opts) == 'ada'  # Released --aug=ada: ADA inside the plugin.
        augpipe = (opts.augpipe or 'bgc') if coupled else None
        maxp = DiffGANOptions.ada_maxp if opts.diffgan_ada_maxp is None else opts.diffgan_ada_maxp
        diffgan = DiffGANOptions(enabled=opts.diffgan, noise_sd=opts.diffgan_noise_sd, t_min=opts.diffgan_tmin,
                                 t_max=opts.diffgan_tmax, ts_dist=opts.diffgan_ts_dist, t_embed=opts.diffgan_t_embed,
                                 target=opts.diffgan_target, ada_kimg=opts.diffgan_ada_kimg,
                                 beta_schedule=opts.diffgan_beta_schedule, beta_start=opts.diffgan_beta_start,
                                 beta_end=opts.diffgan_beta_end, ada_augpipe=augpipe,
                                 ada_maxp=maxp)
    except OptionError as err:
        raise FlagError(PLUGIN_FLAGS.get(err.field, '--smart-*/--diffgan-*'), str(err)) from None
    return smart, diffgan


def _describe(opts, dataset_name: str, num_gpus: int, smart: SMaRtOptions, diffgan: DiffGANOptions) -> str:
    """Run name after the id: dataset plus a suffix per option given (spec 3.6), then -smart / -diffgan."""
    desc = dataset_name + ('-cond' if opts.cond else '') + (f'-subset{opts.subset}' if opts.subset else '')
    desc += ('-mirror' if opts.mirror else '') + f'-{opts.cfg}' + (str(num_gpus) if opts.cfg == 'auto' else '')
    for flag, fmt in (('gamma', '-gamma{:g}'), ('kimg', '-kimg{:g}'), ('batch', '-batch{}'), ('aug', '-{}'),
                      ('p', '-p{:g}'), ('target', '-target{:g}'), ('augpipe', '-{}')):
        if opts[flag] is not None:
            desc += fmt.format(opts[flag])
    if opts.resume is not None:
        desc += ('-noresume' if opts.resume == 'noresume' else
                 f'-resume{opts.resume}' if opts.resume in RESUME_SPECS else '-resumecustom')
    desc += f'-freezed{opts.freezed}' if opts.freezed else ''
    desc += f'-smart{smart.lam:g}' if smart.enabled else ''
    return desc + ('-diffgan' if diffgan.enabled else '')


def build_config(opts, num_gpus: int) -> tuple[dict, str, dict]:
    """(training_loop kwargs, run description, {plugin name: options dataclass}) from the parsed options."""
    training_set_kwargs, dataset = _load_dataset(opts)
    spec = _preset(opts, dataset.resolution, num_gpus)
    batch_size, batch_gpu = _batch(opts, spec, num_gpus)
    smart, diffgan = _plugin_options(opts)
    config = dict(training_set_kwargs=training_set_kwargs,
                  data_loader_kwargs=dict(pin_memory=True, num_workers=opts.workers,
                                          prefetch_factor=2 if opts.workers > 0 else None),
                  **_network_config(opts, spec, batch_gpu), **_augment_config(opts),
                  total_kimg=spec.kimg if opts.kimg is None else opts.kimg, batch_size=batch_size,
                  batch_gpu=batch_gpu, ema_kimg=spec.ema, ema_rampup=spec.ramp, ada_kimg=500,
                  random_seed=opts.seed, num_gpus=num_gpus, kimg_per_tick=opts.tick,
                  image_snapshot_ticks=opts.snap, network_snapshot_ticks=opts.snap,
                  cudnn_benchmark=not opts.nobench, allow_tf32=opts.allow_tf32, **_metric_config(opts))
    resume = _resume_config(opts, config['total_kimg'])
    config.update(resume)
    if diffgan.enabled and resume['resume_pkl'] is not None and 'ada_kimg' not in resume:  # One of our snapshots.
        _check_diffgan_resume(resume['resume_pkl'], diffgan)
    plugin_options = {}
    if smart.enabled:
        plugin_options[SMaRt.name] = smart
    if diffgan.enabled:
        plugin_options[DiffusionGAN.name] = diffgan
    return config, _describe(opts, dataset.name, num_gpus, smart, diffgan), plugin_options


def build_plugins(plugin_options: dict) -> list:
    """The enabled loss plugins (disabled ones are left out: the run is then the plain baseline)."""
    classes = {SMaRt.name: SMaRt, DiffusionGAN.name: DiffusionGAN}
    return [classes[name](options) for name, options in plugin_options.items()]


# Validation before anything is written: checks that would otherwise fail only after the run dir exists.


def _validate_resume(config: dict, G, D, G_ema) -> None:
    """The resume file fills the configured networks one to one (or --resume-partial) with matching shapes."""
    if config.get('resume_pkl') is None:
        return
    try:
        train_state.load_resume(config['resume_pkl'], G, D, G_ema, partial=config.get('resume_partial', False),
                                log=lambda *args: None)  # With --resume-partial, set-up prints the lists.
    except (OSError, ValueError) as err:
        raise FlagError('--resume', str(err)) from None


def _validate_score_source(plugin_options: dict, G) -> None:
    """A named or local score source fits the generator's resolution, channels and labels (URLs: by their entry)."""
    smart = plugin_options.get(SMaRt.name)
    if smart is None or smart.dpm == 'gaussian':
        return
    from edm_bridge import checks, loading, registry  # Deferred: only a named score source needs them.
    try:
        entry, source = registry.resolve(smart.dpm)
        if entry is None and not dnnlib.util.is_url(source, allow_file_urls=True):
            entry = loading.load_denoiser(source, device='cpu')  # A local file: its own description counts.
        checks.check_compatible(entry, G.img_resolution, G.img_channels, G.c_dim)
    except (OSError, EOFError, ValueError, TypeError, pickle.UnpicklingError) as err:  # Unpickling: the safe loader.
        raise FlagError('--smart-dpm', str(err)) from None


def _validate_detectors(config: dict) -> None:
    """Each detector the metrics need that is given or found locally loads, TorchScript unless --trust-detector
    (nothing is downloaded here: a detector to download is fetched at the first evaluation)."""
    kwargs = config['metric_kwargs']
    kinds = {'inception' if not name.startswith('pr') else 'vgg16' for name in config['metrics']}
    for kind in sorted(kinds):
        try:
            detectors.get_detector(kind, kwargs['detector_vgg16' if kind == 'vgg16' else 'detector'], 'cpu',
                                   trust=kwargs['trust_detector'], download=False)
        except DetectorUnavailableError as err:
            raise FlagError(err.flag, str(err)) from None


def validate_setup(config: dict, plugin_options: dict) -> None:
    """Every check of the data, networks, score source, resume file and detectors that can be made before training,
    on CPU copies of the networks; called before the run dir is made, and by --dry-run. Errors name the flag."""
    training_set = dnnlib.util.construct_class_by_name(**config['training_set_kwargs'])
    extra_c_dim = sum(plugin.extra_c_dim for plugin in build_plugins(plugin_options))
    with torch.random.fork_rng():  # Building networks draws initial weights; leave the global RNG as it was.
        G, D, G_ema = train_state.build_networks(training_set, config['G_kwargs'], config['D_kwargs'], extra_c_dim,
                                                 torch.device('cpu'))
    _validate_resume(config, G, D, G_ema)
    _validate_score_source(plugin_options, G)
    _validate_detectors(config)


def _num_gpus(opts, world_size: int) -> int:
    if opts.gpus is not None and opts.gpus != world_size:
        raise FlagError('--gpus', f'{opts.gpus}, but {world_size} process(es) were started; launch with torchrun '
                                  f'--nproc_per_node={opts.gpus} train.py ...')
    if world_size & (world_size - 1):
        raise FlagError('--gpus', f'{world_size} processes; expected a power of two')
    return world_size


def _self_launch(num_procs: int) -> None:
    """Re-run this command line in num_procs processes through torch's launcher (training/self_launch.py)."""
    if os.path.abspath(sys.argv[0]) != os.path.abspath(__file__):
        raise FlagError('--gpus', f'{num_procs} processes can be started only when train.py runs as a script; '
                                  f'use torchrun --nproc_per_node={num_procs} train.py ...')
    try:
        self_launch.launch(num_procs, __file__, sys.argv[1:])
    except RuntimeError as err:
        raise click.ClickException(f'--gpus={num_procs}: {err}; see the log above') from None


def _launch(config: dict, options: dict, plugin_options: dict, run_dir: str, ranks: tuple) -> None:
    """Join the process group, create the run dir (rank 0), train, leave the group."""
    rank, local_rank, world_size = ranks
    with distributed.process_group(rank, world_size, local_rank=local_rank):  # Left synchronised (distributed.py).
        try:
            run_dir = create_run_dir(run_dir, options, rank)
            device = f'cuda:{local_rank}' if torch.cuda.is_available() else 'cpu'
            result = training_loop.training_loop(**config, run_dir=run_dir, rank=rank, device=device,
                                                 plugins=build_plugins(plugin_options))
        except OptionError as err:  # Plugin options that only fail against the data or model (e.g. --smart-t).
            raise FlagError(PLUGIN_FLAGS.get(err.field, '--smart-*/--diffgan-*'), str(err)) from None
        except DetectorUnavailableError as err:  # Found at the first metric evaluation (tick 0).
            raise FlagError(err.flag, str(err)) from None
        except NonFiniteError as err:  # NaN/Inf policy (README): resume weights, snapshots, the SMaRt score source.
            raise FlagError(err.flag or 'training', str(err)) from None
        except train_state.ResumeError as err:
            raise FlagError('--resume', str(err)) from None
        except ImageFileError as err:  # A damaged image found while training; from a DataLoader worker, the last line.
            raise FlagError('--data', str(err).strip().splitlines()[-1].split('ImageFileError: ')[-1]) from None
    if result.interrupted:
        raise SystemExit(result.exit_code)


@released_aliases
@click.command(help=__doc__)
# General.
@click.option('--outdir', required=True, metavar='DIR', help='Where to make the run directory')
@click.option('--gpus', type=click.IntRange(min=1), default=None, show_default='torchrun WORLD_SIZE, else 1',
              help='Number of processes, a power of two; started through torch.distributed\'s launcher unless '
                   'torchrun started them (then it must match)')
@click.option('--snap', type=click.IntRange(min=1), default=50, show_default=True,
              help='Snapshot interval in ticks (images and networks)')
@click.option('--metrics', default='none', show_default=True,
              help='Metrics at each snapshot, e.g. fid50k_full,kid50k_full (needs the detectors; see calc_metrics.py)')
@click.option('--detector', metavar='PATH|URL', default=None, show_default='official Inception-v3',
              help='Inception detector for FID/KID/IS (.pt TorchScript, or a .pkl with --trust-detector)')
@click.option('--detector-vgg16', metavar='PATH|URL', default=None, show_default='official VGG16',
              help='VGG16 detector for precision/recall and PPL')
@click.option('--trust-detector', is_flag=True,
              help='Load detectors that are not TorchScript by unpickling them, RUNNING code stored in them')
@click.option('--seed', type=click.IntRange(min=0), default=0, show_default=True, help='Random seed')
@click.option('-n', '--dry-run', is_flag=True, help='Print the training options and exit')
# Dataset.
@click.option('--data', required=True, metavar='PATH', help='Training data (directory or zip)')
@bool_flag('--cond', help='Train a class-conditional model (needs dataset.json labels)')
@click.option('--subset', type=click.IntRange(min=1), default=None, show_default='all', help='Train on a subset')
@bool_flag('--mirror', help='Add x-flipped copies of the images')
# Base config.
@click.option('--cfg', type=click.Choice(list(CONFIG_SPECS)), default='auto', show_default=True, help='Preset')
@click.option('--gamma', type=click.FloatRange(min=0), default=None, show_default='preset', help='R1 gamma')
@click.option('--kimg', type=click.FloatRange(min=0, min_open=True), default=None, show_default='preset',
              help='Training length in thousands of images')
@click.option('--batch', type=click.IntRange(min=1), default=None, show_default='preset', help='Total batch size')
@click.option('--batch-gpu', type=click.IntRange(min=1), default=None, show_default='batch / gpus',
              help='Samples per process and accumulation round')
@click.option('--cbase', type=click.IntRange(min=1), default=None, show_default='preset',
              help='Channel base (channels at res r = min(cbase / r, cmax))')
@click.option('--cmax', type=click.IntRange(min=1), default=None, show_default='512; 64 with --cfg=cpu',
              help='Max channels per layer')
@click.option('--map-depth', type=click.IntRange(min=1), default=None, show_default='preset',
              help='Mapping network depth')
@click.option('--mbstd-group', type=click.IntRange(min=1), default=None, show_default='preset',
              help='Minibatch std group size')
@click.option('--glr', type=click.FloatRange(min=0, min_open=True), default=None, show_default='preset',
              help='G learning rate')
@click.option('--dlr', type=click.FloatRange(min=0, min_open=True), default=None, show_default='preset',
              help='D learning rate')
@click.option('--tick', type=click.FloatRange(min=0, min_open=True), default=4, show_default=True,
              help='Progress interval in kimg')
# Augmentation.
@click.option('--aug', type=aug_choice(['ada', 'noaug', 'fixed']), default=None,
              show_default='ada; noaug with --diffgan',
              help='Augmentation mode (no = noaug, as Diffusion-GAN spells it; with --diffgan, ada follows the '
                   'diffusion p: see --diffgan-ada-maxp)')
@click.option('--p', type=click.FloatRange(min=0, max=1), default=None, help='Augment probability for --aug=fixed')
@click.option('--target', type=click.FloatRange(min=0, max=1), default=None, show_default='0.6',
              help='ADA target; with --diffgan the Diffusion-GAN target (as in its release)')
@click.option('--augpipe', type=click.Choice(list(augpipe_specs)), default=None, show_default='bgc',
              help='Augmentation pipeline')
# Transfer learning and resume.
@click.option('--resume', default=None, metavar='PKL', show_default='noresume',
              help=f'Resume from a snapshot: path, URL or one of {", ".join(RESUME_SPECS)}')
@click.option('--resume-partial', is_flag=True,
              help='Resume even if the snapshot does not fill the networks one to one (lists what is left out)')
@click.option('--freezed', type=click.IntRange(min=0), default=0, show_default=True, help='Freeze-D: frozen layers')
# Performance.
@bool_flag('--fp32', help='Disable mixed precision (fp16 runs on CUDA only anyway)')
@bool_flag('--nhwc', help='channels_last memory format with fp16')
@bool_flag('--nobench', help='Disable cuDNN benchmarking')
@bool_flag('--allow-tf32', help='Allow TF32 on Ampere+ GPUs')
@click.option('--workers', type=click.IntRange(min=0), default=3, show_default=True, help='DataLoader workers')
@threads_option
# SMaRt.
@click.option('--smart-lambda', type=float, default=SMaRtOptions.lam, show_default=True,
              help='SMaRt weight lambda (0 = off)')
@click.option('--smart-freq', type=int, default=SMaRtOptions.freq, show_default=True,
              help='Apply SMaRt every N iterations')
@click.option('--smart-t', type=IntPair(), default=None, show_default='per score source',
              help='Integer timestep band LO,HI on --smart-schedule. Unset with --smart-schedule unset: t 25..35 on '
                   "the source's own DDPM steps for ADM checkpoints (the paper), else t 40..60 on ddpm-linear (sigma "
                   '0.144..0.209); unset with --smart-schedule set: the steps of that schedule nearest to the '
                   'default sigma band')
@click.option('--smart-dpm', default=SMaRtOptions.dpm, show_default=True, metavar='PATH|NAME|gaussian',
              help='Score source: diffusion model file, registry name (python -m edm_bridge models) or gaussian')
@click.option('--smart-schedule', default=None, show_default='per score source',
              help="t -> sigma map, e.g. ddpm-linear or karras. Unset with --smart-t set: the source's own (ADM: "
                   'its DDPM steps; EDM pickles, train_dpm.py snapshots, gaussian: karras); both unset: see --smart-t')
@click.option('--smart-param', type=click.Choice(['eps', 'x0']), default=SMaRtOptions.param,
              show_default=True, help='Loss form (lambda means something only with it)')
@click.option('--smart-batch', type=int, default=None, show_default='whole round', help='SMaRt samples per round')
@click.option('--smart-start-kimg', type=float, default=SMaRtOptions.start_kimg, show_default=True,
              help='Start SMaRt after this many kimg')
@click.option('--smart-draws', type=int, default=SMaRtOptions.draws, show_default=True,
              help='(t, eps) draws per scored sample, averaged (costs this many denoiser evaluations per sample)')
@click.option('--smart-antithetic', is_flag=True, help='Draws in pairs (eps, -eps) with the same t (even draws)')
@click.option('--smart-grad', type=click.Choice(['full', 'sds']), default=SMaRtOptions.grad, show_default=True,
              help='full: through the denoiser (paper); sds: denoiser output held constant (no denoiser backward)')
@click.option('--smart-diagnostics', is_flag=True,
              help='Report SMaRt/grad_norm and Loss/G/grad_norm (an extra autograd pass)')
# Diffusion-GAN.
@click.option('--diffgan/--no-diffgan', default=False, show_default=True, help='Diffusion-GAN noise on D inputs')
@click.option('--diffgan-noise-sd', type=float, default=DiffGANOptions.noise_sd, show_default=True,
              help='Diffusion noise scale')
@click.option('--diffgan-tmin', type=int, default=DiffGANOptions.t_min, show_default=True,
              help='Shortest diffusion length T')
@click.option('--diffgan-tmax', type=int, default=DiffGANOptions.t_max, show_default=True,
              help='Longest diffusion length T')
@click.option('--diffgan-ts-dist', type=click.Choice(['priority', 'uniform']),
              default=DiffGANOptions.ts_dist, show_default=True, help='How t is drawn')
@click.option('--diffgan-target', type=float, default=DiffGANOptions.target, show_default=True,
              help='Target of E[sign D(real)] for the adaptive T')
@click.option('--diffgan-ada-kimg', type=click.FloatRange(min=0, min_open=True), default=DiffGANOptions.ada_kimg,
              show_default=True, help='Thousands of images for the diffusion p to go from 0 to 1')
@click.option('--diffgan-t-embed', type=click.Choice(['raw', 'scaled']), default=DiffGANOptions.t_embed,
              show_default=True, help="D's t input: raw integer t (as released) or t / t_max")
@click.option('--diffgan-beta-schedule', type=click.Choice(list(BETA_SCHEDULES)),
              default=DiffGANOptions.beta_schedule, show_default=True, help='Forward-chain beta schedule')
@click.option('--diffgan-beta-start', type=click.FloatRange(min=0, max=1, min_open=True, max_open=True),
              default=DiffGANOptions.beta_start, show_default=True, help='First beta (linear, quad, sigmoid)')
@click.option('--diffgan-beta-end', type=click.FloatRange(min=0, max=1, min_open=True, max_open=True),
              default=DiffGANOptions.beta_end, show_default=True, help='Last beta (linear, quad, sigmoid; const)')
@click.option('--diffgan-ada-maxp', type=click.FloatRange(min=0, max=1, min_open=True), default=None,
              show_default=str(DiffGANOptions.ada_maxp),
              help='With --diffgan --aug=ada: the ADA probability is min(diffusion p, this)')
def main(**kwargs):
    opts = dnnlib.EasyDict(expand_user_paths(resolve_aliases(click.get_current_context(), kwargs), ('outdir', 'data')))
    try:
        _main(opts)
    except KeyboardInterrupt:  # During set-up; once training runs, the loop ends cleanly and exits 130 itself.
        print('Interrupted during set-up; exiting.', file=sys.stderr)
        raise SystemExit(130) from None


def _main(opts: dnnlib.EasyDict) -> None:
    try:
        ranks = distributed.env_ranks()
    except ValueError as err:
        raise FlagError('--gpus', str(err)) from None
    self_launch_procs = opts.gpus if opts.gpus and opts.gpus > 1 and not self_launch.under_launcher() else None
    config, desc, plugin_options = build_config(opts, _num_gpus(opts, self_launch_procs or ranks[2]))
    validate_setup(config, plugin_options)
    if self_launch_procs and not opts.dry_run:  # StyleGAN2-ADA's --gpus=N: start the N processes ourselves.
        _self_launch(self_launch_procs)
        return
    run_dir = next_run_dir(opts.outdir, desc) if ranks[0] == 0 else None
    options = dict(config, run_dir=run_dir,
                   plugins={name: dataclasses.asdict(value) for name, value in plugin_options.items()})
    if ranks[0] == 0:
        print('Training options:')
        print(json.dumps(options, indent=2))
        print(f'Output directory: {run_dir}')
    if opts.dry_run:
        if ranks[0] == 0:
            print('Dry run; exiting.')
        return
    cpu_threads.set_threads(opts.threads)
    try:
        with signals.sigterm_as_interrupt():  # SIGTERM stops like Ctrl-C: clean writes, the last snapshot named.
            _launch(config, options, plugin_options, run_dir, ranks)
    except KeyboardInterrupt as err:  # Before the training loop took over (set-up).
        print(f'Interrupted ({signals.signal_name(err)}) during set-up; no snapshot written', file=sys.stderr)
        raise SystemExit(signals.exit_code(err)) from None


if __name__ == '__main__':
    main()
