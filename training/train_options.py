"""train.py's own options (the plugins' are on SMaRtOptions / DiffGANOptions): each field carries its flag, help and
default once (training/option_fields.py); the click options are generated from them (cli/options.py)."""

import dataclasses

from training.augment import augpipe_specs
from training.config import CONFIG_SPECS, RESUME_SPECS
from training.option_fields import option

# training.resume.HINTS keys -> train.py's words for them (the library returns the keys as data).
RESUME_HINT_FLAGS = {
    'labels': "--cond or --diffgan (the label input; D's mapping exists only with labels)",
    'map_depth': '--map-depth (mapping layers)',
    'd_architecture': '--cfg (D architecture: cifar uses orig, the others resnet)',
    'layers': '--data (resolution) or --cfg / --cbase / --cmax (layers per resolution)',
    'data': '--data and --cond',
}
# Arguments of train_state.setup_training that library errors name (e.g. NonFiniteError.flag) -> train.py's flags.
SETUP_ARG_FLAGS = {'resume_pkl': '--resume'}
_POS = dict(min=1)
_POS_FLOAT = dict(min=0, min_open=True)


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """The parsed command line of train.py, plugin flags excluded (they stay in `extra`)."""

    # General.
    outdir: str = option(None, '--outdir', 'Where to make the run directory', required=True, metavar='DIR')
    gpus: int | None = option(None, '--gpus', "Number of processes, a power of two; started through "
                              "torch.distributed's launcher unless torchrun started them (then it must match)", 'int',
                              show_default='torchrun WORLD_SIZE, else 1', **_POS)
    snap: int = option(50, '--snap', 'Snapshot interval in ticks (images and networks)', 'int', **_POS)
    metrics: str = option('none', '--metrics', 'Metrics at each snapshot, e.g. fid50k_full,kid50k_full (needs the '
                          'detectors; see calc_metrics.py)')
    detector: str | None = option(None, '--detector', 'Inception detector for FID/KID/IS (.pt TorchScript, or a .pkl '
                                  'with --trust-detector)', metavar='PATH|URL', show_default='official Inception-v3')
    detector_vgg16: str | None = option(None, '--detector-vgg16', 'VGG16 detector for precision/recall and PPL',
                                        metavar='PATH|URL', show_default='official VGG16')
    trust_detector: bool = option(False, '--trust-detector', 'Load detectors that are not TorchScript by unpickling '
                                  'them, RUNNING code stored in them', 'flag')
    seed: int = option(0, '--seed', 'Random seed', 'int', min=0)
    dry_run: bool = option(False, '--dry-run', 'Print the training options and exit', 'flag', short='-n')
    # Dataset.
    data: str = option(None, '--data', 'Training data (directory or zip)', required=True, metavar='PATH')
    cond: bool = option(False, '--cond', 'Train a class-conditional model (needs dataset.json labels)', 'bool')
    subset: int | None = option(None, '--subset', 'Train on a subset', 'int', show_default='all', **_POS)
    mirror: bool = option(False, '--mirror', 'Add x-flipped copies of the images', 'bool')
    # Base config.
    cfg: str = option('auto', '--cfg', 'Preset', 'choice', choices=tuple(CONFIG_SPECS))
    gamma: float | None = option(None, '--gamma', 'R1 gamma', 'float', show_default='preset', min=0)
    kimg: float | None = option(None, '--kimg', 'Training length in thousands of images', 'float',
                                show_default='preset', **_POS_FLOAT)
    batch: int | None = option(None, '--batch', 'Total batch size', 'int', show_default='preset', **_POS)
    batch_gpu: int | None = option(None, '--batch-gpu', 'Samples per process and accumulation round', 'int',
                                   show_default='batch / gpus', **_POS)
    cbase: int | None = option(None, '--cbase', 'Channel base (channels at res r = min(cbase / r, cmax))', 'int',
                               show_default='preset', **_POS)
    cmax: int | None = option(None, '--cmax', 'Max channels per layer', 'int', show_default='512; 64 with --cfg=cpu',
                              **_POS)
    map_depth: int | None = option(None, '--map-depth', 'Mapping network depth', 'int', show_default='preset', **_POS)
    mbstd_group: int | None = option(None, '--mbstd-group', 'Minibatch std group size', 'int', show_default='preset',
                                     **_POS)
    glr: float | None = option(None, '--glr', 'G learning rate', 'float', show_default='preset', **_POS_FLOAT)
    dlr: float | None = option(None, '--dlr', 'D learning rate', 'float', show_default='preset', **_POS_FLOAT)
    tick: float = option(4, '--tick', 'Progress interval in kimg', 'float', **_POS_FLOAT)
    # Augmentation.
    aug: str | None = option(None, '--aug', 'Augmentation mode (no = noaug, as Diffusion-GAN spells it; with '
                             '--diffgan, ada follows the diffusion p: see --diffgan-ada-maxp)', 'aug',
                             choices=('ada', 'noaug', 'fixed'), show_default='ada; noaug with --diffgan')
    p: float | None = option(None, '--p', 'Augment probability for --aug=fixed', 'float', min=0, max=1)
    target: float | None = option(None, '--target', 'ADA target; with --diffgan the Diffusion-GAN target (as in its '
                                  'release)', 'float', show_default='0.6', min=0, max=1)
    augpipe: str | None = option(None, '--augpipe', 'Augmentation pipeline', 'choice', choices=tuple(augpipe_specs),
                                 show_default='bgc')
    # Transfer learning and resume.
    resume: str | None = option(None, '--resume', 'Resume from a snapshot: path, URL or one of '
                                f'{", ".join(RESUME_SPECS)}', metavar='PKL', show_default='noresume')
    resume_partial: bool = option(False, '--resume-partial', 'Resume even if the snapshot does not fill the networks '
                                  'one to one (lists what is left out)', 'flag')
    freezed: int = option(0, '--freezed', 'Freeze-D: frozen layers', 'int', min=0)
    # Performance.
    fp32: bool = option(False, '--fp32', 'Disable mixed precision (fp16 runs on CUDA only anyway)', 'bool')
    nhwc: bool = option(False, '--nhwc', 'channels_last memory format with fp16', 'bool')
    nobench: bool = option(False, '--nobench', 'Disable cuDNN benchmarking', 'bool')
    allow_tf32: bool = option(False, '--allow-tf32', 'Allow TF32 on Ampere+ GPUs', 'bool')
    workers: int = option(3, '--workers', 'DataLoader workers', 'int', min=0)
    threads: int | None = option(None, '--threads', 'CPU threads per process', 'int', cli=False)  # cli_common.
    # The plugins' flags, parsed (their fields live on SMaRtOptions / DiffGANOptions).
    extra: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def from_params(cls, params: dict) -> 'TrainOptions':
        """Split click's parsed values into our fields and `extra` (the plugin flags)."""
        names = {field.name for field in dataclasses.fields(cls)} - {'extra'}
        return cls(**{key: value for key, value in params.items() if key in names},
                   extra={key: value for key, value in params.items() if key not in names})

    def __getattr__(self, name: str):
        """A plugin flag's value by its parameter name (opts.diffgan, opts.diffgan_ada_maxp, ...)."""
        extra = self.__dict__.get('extra', {})
        if name in extra:
            return extra[name]
        raise AttributeError(name)
