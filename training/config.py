"""train.py's configuration: the --cfg preset table (docs/spec/stylegan2-ada.md section 3.5) and a pure builder
from the parsed options (training/train_options.py) and what pre-flight read (training/preflight.py) to a typed
`RunPlan`.

No I/O here: the dataset and the resume snapshot are described by `DataFacts` / `ResumeFacts`. User errors are
`ConfigError`s naming the flag.
"""

import dataclasses
from typing import Any

import dnnlib
from torch_utils import dataset_classes
from training.augment import augpipe_specs
from training.option_fields import ConfigError

# --cfg presets (docs/spec/stylegan2-ada.md section 3.5); None in 'auto' = derived from the resolution and the number
# of GPUs (preset()).
PRESET_FIELDS = ('ref_gpus', 'kimg', 'mb', 'mbstd', 'fmaps', 'lrate', 'gamma', 'ema', 'ramp', 'map')
CONFIG_SPECS = {name: dict(zip(PRESET_FIELDS, values)) for name, values in {
    #            ref_gpus  kimg    mb    mbstd fmaps lrate   gamma ema   ramp  map
    'auto':      (None,    25000,  None, None, None, None,   None, None, 0.05, 2),
    'stylegan2': (8,       25000,  32,   4,    1,    0.002,  10,   10,   None, 8),
    'paper256':  (8,       25000,  64,   8,    0.5,  0.0025, 1,    20,   None, 8),
    'paper512':  (8,       25000,  64,   8,    1,    0.0025, 0.5,  20,   None, 8),
    'paper1024': (8,       25000,  32,   4,    1,    0.002,  2,    10,   None, 8),
    'cifar':     (2,       100000, 64,   32,   1,    0.0025, 0.01, 500,  0.05, 2),
    'cpu':       (1,       200,    32,   4,    1/32, 0.002,  10,   10,   0.05, 2),
}.items()}
# --cfg=cpu (benchmarks/cpu_preset_search.py, docs/cpu-preset.md): G learning rate below D's; at most 64 channels, so
# with cbase 1024 every layer of a 16x16 net has 64 channels and a 32x32 net has 32 at 32x32; R1 gamma 10 and, as
# --cfg=cifar, no style mixing and no path-length penalty (the search's best measured regime, 'g10-nomix-nopl').
CPU_EXTRA = dict(glrate=0.001, cmax=64)
# Flag defaults a preset sets (a flag given still wins). --cfg=cpu was measured without augmentation and in float32
# (no fp16 layers, no conv clamp); float32 costs nothing on a CPU, where fp16 layers run in float32 anyway.
PRESET_FLAGS = {'cpu': dict(aug='noaug', fp32=True)}


def preset_flag(opts, name: str):
    """The default the --cfg preset gives flag `name` (PRESET_FLAGS), or None."""
    return PRESET_FLAGS.get(opts.cfg, {}).get(name)

# --resume shortcuts: StyleGAN2-ADA's transfer-learning source networks.
RESUME_URL = 'https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/transfer-learning-source-nets'
RESUME_SPECS = {
    'ffhq256': f'{RESUME_URL}/ffhq-res256-mirror-paper256-noaug.pkl',
    'ffhq512': f'{RESUME_URL}/ffhq-res512-mirror-stylegan2-noaug.pkl',
    'ffhq1024': f'{RESUME_URL}/ffhq-res1024-mirror-stylegan2-noaug.pkl',
    'celebahq256': f'{RESUME_URL}/celebahq-res256-mirror-paper256-kimg100000-ada-target0.5.pkl',
    'lsundog256': f'{RESUME_URL}/lsundog-res256-paper256-kimg100000-noaug.pkl',
}


@dataclasses.dataclass(frozen=True)
class DataFacts:
    """What the builder needs to know of the --data dataset."""
    name: str          # File name without extension (the run name starts with it).
    resolution: int    # Image side.
    num_images: int    # Images in the dataset (before --subset and --mirror).


@dataclasses.dataclass(frozen=True)
class ResumeFacts:
    """What the builder needs to know of the --resume snapshot."""
    pkl: str                  # Path or URL (a RESUME_SPECS name resolved).
    exact: bool               # One of ours with a training state: the run continues exactly.
    cur_nimg: int | None      # Images the snapshot had seen (exact only).


@dataclasses.dataclass
class RunPlan:
    """A run, resolved: training_loop keyword arguments, the run name after the id, the enabled plugins' options."""
    loop_kwargs: dict[str, Any]          # training.training_loop.training_loop(**loop_kwargs, ...).
    desc: str                            # <dataset>-<cfg>... (docs/spec/stylegan2-ada.md section 3.6).
    plugin_options: dict[str, Any]       # {plugin name: SMaRtOptions / DiffGANOptions}, enabled ones only.
    num_gpus: int

    def options_json(self, run_dir: str | None) -> dict:
        """training_options.json: the loop kwargs, the run dir and the plugins' options."""
        return dict(self.loop_kwargs, run_dir=run_dir,
                    plugins={name: dataclasses.asdict(value) for name, value in self.plugin_options.items()})


def resume_pkl(resume: str | None) -> str | None:
    """--resume with its shortcuts resolved; None for none or 'noresume'."""
    return None if resume in (None, 'noresume') else RESUME_SPECS.get(resume, resume)


def dataset_kwargs(opts, data: DataFacts) -> dict:
    """training_set_kwargs (the official snapshot entry); checks --subset."""
    kwargs = dict(class_name=dataset_classes.IMAGE_FOLDER_DATASET, path=opts.data, use_labels=bool(opts.cond),
                  max_size=data.num_images, xflip=bool(opts.mirror), resolution=data.resolution)
    if opts.subset is not None:
        if opts.subset > data.num_images:
            raise ConfigError('--subset', f'{opts.subset} exceeds the {data.num_images} images of {opts.data}')
        kwargs.update(max_size=opts.subset, random_seed=opts.seed)
    return kwargs


def preset(cfg: str, resolution: int, num_gpus: int) -> dnnlib.EasyDict:
    """The --cfg preset with 'auto' resolved for this resolution and GPU count (docs/spec/stylegan2-ada.md 3.5)."""
    spec = dnnlib.EasyDict(CONFIG_SPECS[cfg])
    if cfg == 'auto':
        spec.ref_gpus = num_gpus
        spec.mb = max(min(num_gpus * min(4096 // resolution, 32), 64), num_gpus)
        spec.mbstd = min(spec.mb // num_gpus, 4)
        spec.fmaps = 1 if resolution >= 512 else 0.5
        spec.lrate = 0.002 if resolution >= 1024 else 0.0025
        spec.gamma = 0.0002 * (resolution ** 2) / spec.mb
        spec.ema = spec.mb * 10 / 32
    if cfg == 'cpu':
        spec.update(CPU_EXTRA)
    return spec


def batch_sizes(opts, spec, num_gpus: int) -> tuple[int, int]:
    """(batch_size, batch_gpu) from the preset, --batch and --batch-gpu; checks divisibility."""
    # batch_gpu = mb // ref_gpus (docs/spec/stylegan2-ada.md 3.5), at most the per-process batch: the released loop
    # then runs one round.
    batch_size, batch_gpu = spec.mb, min(spec.mb // spec.ref_gpus, max(spec.mb // num_gpus, 1))
    if opts.batch is not None:
        batch_size, batch_gpu = opts.batch, opts.batch // num_gpus
    if opts.batch_gpu is not None:
        batch_gpu = opts.batch_gpu
    flag = '--batch-gpu' if opts.batch_gpu is not None else '--batch'
    if batch_size % num_gpus != 0:
        raise ConfigError('--batch', f'{batch_size} is not divisible by the {num_gpus} processes (--gpus)')
    if batch_gpu < 1 or (batch_size // num_gpus) % batch_gpu != 0:
        raise ConfigError(flag, f'the per-process batch {batch_size // num_gpus} is not a multiple of the per-round '
                                f'batch {batch_gpu}; choose --batch / --batch-gpu so that it divides')
    return batch_size, batch_gpu


def network_config(opts, spec, batch_gpu: int) -> dict:
    """G_kwargs, D_kwargs, optimizer and loss kwargs."""
    mbstd = spec.mbstd if opts.mbstd_group is None else opts.mbstd_group
    if batch_gpu > mbstd and batch_gpu % mbstd != 0:
        raise ConfigError('--mbstd-group', f'{mbstd} does not divide the per-round batch {batch_gpu} (--batch-gpu)')
    channel_base = int(spec.fmaps * 32768) if opts.cbase is None else opts.cbase
    fp16_res, conv_clamp = (0, None) if opts.fp32 or preset_flag(opts, 'fp32') else (4, 256)
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
    if opts.cfg in ('cifar', 'cpu'):
        loss_kwargs.update(pl_weight=0, style_mixing_prob=0)
    return dict(G_kwargs=G_kwargs, D_kwargs=D_kwargs, loss_kwargs=loss_kwargs,
                G_opt_kwargs=dict(lr=spec.get('glrate', spec.lrate) if opts.glr is None else opts.glr, betas=[0, 0.99],
                                  eps=1e-8),
                D_opt_kwargs=dict(lr=spec.lrate if opts.dlr is None else opts.dlr, betas=[0, 0.99], eps=1e-8))


def augment_mode(opts) -> str:
    """--aug as given, else 'ada'; 'noaug' with --diffgan (the released Diffusion-GAN default: no augmentation) and
    with --cfg=cpu (the preset as measured)."""
    return opts.aug or ('noaug' if opts.diffgan else preset_flag(opts, 'aug') or 'ada')


def diffgan_augpipe(opts) -> str | None:
    """DiffGANOptions.ada_augpipe: with --diffgan --aug=ada the released coupling runs ADA inside the plugin."""
    return (opts.augpipe or 'bgc') if opts.diffgan and augment_mode(opts) == 'ada' else None


def augment_config(opts) -> dict:
    """augment_kwargs, augment_p and ada_target from --aug, --p, --target, --augpipe. With --diffgan, --aug=ada is
    the released coupling instead: the Diffusion-GAN plugin runs the ADA pipeline at min(p, --diffgan-ada-maxp)."""
    aug = augment_mode(opts)
    coupled = opts.diffgan and aug == 'ada'
    if opts.diffgan_ada_maxp is not None and not coupled:
        raise ConfigError('--diffgan-ada-maxp', f'only applies with --diffgan --aug=ada (got --aug={aug}'
                                                f'{"" if opts.diffgan else " without --diffgan"})')
    if coupled and opts.target is not None:
        raise ConfigError('--target', 'with --diffgan, --aug=ada follows the diffusion p (p_aug = min(p, '
                                      '--diffgan-ada-maxp)) instead of its own ADA controller; set the target of '
                                      'E[sign D(real)] with --diffgan-target')
    if opts.p is not None and aug != 'fixed':
        raise ConfigError('--p', f'only applies with --aug=fixed (got --aug={aug})')
    if aug == 'fixed' and opts.p is None:
        raise ConfigError('--aug', '--aug=fixed needs --p (the fixed augmentation probability)')
    if opts.target is not None and aug != 'ada':
        raise ConfigError('--target', f'only applies with --aug=ada (got --aug={aug})')
    if opts.augpipe is not None and aug == 'noaug':
        raise ConfigError('--augpipe', 'cannot be used with --aug=noaug')
    if aug == 'noaug' or coupled:
        return dict(augment_kwargs=None, augment_p=0, ada_target=None)
    return dict(augment_kwargs=dict(augpipe_specs[opts.augpipe or 'bgc']), augment_p=opts.p if aug == 'fixed' else 0,
                ada_target=(0.6 if opts.target is None else opts.target) if aug == 'ada' else None)


def resume_config(opts, resume: ResumeFacts | None, total_kimg: float) -> dict:
    """resume_pkl; a weights-only resume (official pickles) also sets ada_kimg 100 and no EMA ramp-up, as
    officially, while our snapshots with a training state continue exactly with the configured values."""
    if resume is None:
        if opts.resume_partial:
            raise ConfigError('--resume-partial', 'only applies with --resume')
        return dict(resume_pkl=None)
    if resume.cur_nimg is not None and resume.cur_nimg >= round(total_kimg * 1000):
        raise ConfigError('--kimg', f'{total_kimg:g}, but the --resume snapshot {resume.pkl} is already at kimg '
                                    f'{resume.cur_nimg / 1000:g}: nothing to train; pass a larger --kimg')
    partial = dict(resume_partial=True) if opts.resume_partial else {}
    return (dict(resume_pkl=resume.pkl, **partial) if resume.exact else
            dict(resume_pkl=resume.pkl, ada_kimg=100, ema_rampup=None, **partial))


def metric_config(opts, metrics: list[str], detector_kinds: set[str]) -> dict:
    """metrics and metric_kwargs (detector sources, DataLoader workers); `detector_kinds` are those the metrics
    need (metrics.metric_main.detectors_for). A detector flag no metric uses is an error (it would be ignored)."""
    for flag, source, kind in (('--detector', opts.detector, 'inception'),
                               ('--detector-vgg16', opts.detector_vgg16, 'vgg16')):
        if source is not None and kind not in detector_kinds:
            raise ConfigError(flag, f'no metric in --metrics={opts.metrics} uses this detector, so it would be '
                                    'ignored; add the metrics, e.g. --metrics=fid50k_full,pr50k3_full')
    return dict(metrics=metrics, metric_kwargs=dict(detector=opts.detector, detector_vgg16=opts.detector_vgg16,
                                                    trust_detector=opts.trust_detector, num_workers=opts.workers))


def describe(opts, dataset_name: str, num_gpus: int, plugin_options: dict) -> str:
    """Run name after the id: dataset plus a suffix per option given (docs/spec/stylegan2-ada.md 3.6), then -smart /
    -diffgan."""
    desc = dataset_name + ('-cond' if opts.cond else '') + (f'-subset{opts.subset}' if opts.subset else '')
    desc += ('-mirror' if opts.mirror else '') + f'-{opts.cfg}' + (str(num_gpus) if opts.cfg == 'auto' else '')
    for name, fmt in (('gamma', '-gamma{:g}'), ('kimg', '-kimg{:g}'), ('batch', '-batch{}'), ('aug', '-{}'),
                      ('p', '-p{:g}'), ('target', '-target{:g}'), ('augpipe', '-{}')):
        if getattr(opts, name) is not None:
            desc += fmt.format(getattr(opts, name))
    if opts.resume is not None:
        desc += ('-noresume' if opts.resume == 'noresume' else
                 f'-resume{opts.resume}' if opts.resume in RESUME_SPECS else '-resumecustom')
    desc += f'-freezed{opts.freezed}' if opts.freezed else ''
    desc += f'-smart{plugin_options["smart"].lam:g}' if 'smart' in plugin_options else ''
    return desc + ('-diffgan' if 'diffgan' in plugin_options else '')


def build_plan(opts, num_gpus: int, data: DataFacts, resume: ResumeFacts | None, metrics: list[str],
               detector_kinds: set[str], plugin_options: dict) -> RunPlan:
    """The run plan from the parsed options (TrainOptions), the facts pre-flight read, the parsed metric list with
    the detectors it needs and the enabled plugins' options. Pure: reads no file."""
    spec = preset(opts.cfg, data.resolution, num_gpus)
    batch_size, batch_gpu = batch_sizes(opts, spec, num_gpus)
    loop_kwargs = dict(training_set_kwargs=dataset_kwargs(opts, data),
                       data_loader_kwargs=dict(pin_memory=True, num_workers=opts.workers,
                                               prefetch_factor=2 if opts.workers > 0 else None),
                       **network_config(opts, spec, batch_gpu), **augment_config(opts),
                       total_kimg=spec.kimg if opts.kimg is None else opts.kimg, batch_size=batch_size,
                       batch_gpu=batch_gpu, ema_kimg=spec.ema, ema_rampup=spec.ramp, ada_kimg=500,
                       random_seed=opts.seed, num_gpus=num_gpus, kimg_per_tick=opts.tick,
                       image_snapshot_ticks=opts.snap, network_snapshot_ticks=opts.snap,
                       cudnn_benchmark=not opts.nobench, allow_tf32=opts.allow_tf32,
                       **metric_config(opts, metrics, detector_kinds))
    loop_kwargs.update(resume_config(opts, resume, loop_kwargs['total_kimg']))
    return RunPlan(loop_kwargs=loop_kwargs, desc=describe(opts, data.name, num_gpus, plugin_options),
                   plugin_options=dict(plugin_options), num_gpus=num_gpus)
