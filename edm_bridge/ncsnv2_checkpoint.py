"""Official NCSNv2 checkpoints (Song & Ermon 2020; ermongroup/ncsnv2) as frozen score sources: checkpoint.pth plus
its config.yml -> an edm_bridge Denoiser D(x; sigma) on [-1, 1] images (docs/spec/diffusion.md section 5).

The release's runner saves `checkpoint.pth` as the list [model state_dict (DataParallel, 'module.' prefix),
optimizer state_dict, epoch, step, EMA shadow (parameters only)]; it is read here with torch.load(weights_only=True),
so nothing in the file runs. With `model.ema: true` the EMA shadow replaces the parameters, as the release does for
sampling. The config's data section fixes the data units: [0, 1] by default (the net sees 2x - 1), [-1, 1] with
`rescaled: true`; `logit_transform` data are refused (noise added in logit space is not Gaussian noise on pixels).

With x_m the image and sigma_m the noise level in the model's units (x_m = (x + 1) / 2 and sigma_m = sigma / 2 for
[0, 1] data, u = 2; x_m = x and sigma_m = sigma for [-1, 1] data, u = 1), Tweedie's formula gives

    D(x; sigma) = x + u sigma_m^2 s(x_m, sigma_m) = x + u sigma_m f(x_m),    s = f / sigma_m (NCSNv2 technique 3).

Config files are parsed with PyYAML's safe_load (a declared dependency; it builds plain data only).
"""

import dataclasses
import os
from typing import Any, BinaryIO

import torch

from edm_bridge import ncsnv2_official
from edm_bridge.checks import check_tensors

CHECKPOINT_LENGTH = 5  # [state_dict, optimizer, epoch, step, ema shadow]
DATASET_ARCHITECTURES = {'CIFAR10': 'NCSNv2', 'CELEBA': 'NCSNv2', 'LSUN': 'NCSNv2Deeper', 'FFHQ': 'NCSNv2Deepest'}
CONFIG_NAME = 'config.yml'


@dataclasses.dataclass(frozen=True)
class NCSNv2Config:
    """What the loader needs from an NCSNv2 config.yml (data, model and sampling sections)."""
    dataset: str                    # data.dataset, e.g. 'CIFAR10' (selects the architecture, as released).
    image_size: int                 # data.image_size.
    channels: int                   # data.channels.
    rescaled: bool                  # data.rescaled: True = data in [-1, 1], False = [0, 1].
    ngf: int                        # model.ngf, base width.
    sigma_begin: float              # model.sigma_begin, sigma_1 in data units.
    sigma_end: float                # model.sigma_end, sigma_L in data units.
    num_classes: int                # model.num_classes, L (number of noise levels).
    ema: bool                       # model.ema: sample with the EMA weights.
    nonlinearity: str = 'elu'       # model.nonlinearity.
    step_lr: float | None = None    # sampling.step_lr, Langevin eps in data units; None = not given.
    n_steps_each: int | None = None  # sampling.n_steps_each; None = not given.

    @property
    def data_scale(self) -> float:
        """u: our [-1, 1] units per model data unit (2 for [0, 1] data, 1 for rescaled [-1, 1] data)."""
        return 1.0 if self.rescaled else 2.0


def _field(config: dict, section: str, key: str, types: tuple, source: str, default: Any = KeyError) -> Any:
    value = config.get(section, {}).get(key, default) if isinstance(config.get(section, {}), dict) else default
    if value is KeyError:
        raise ValueError(f'{source}: {section}.{key} is missing; expected an NCSNv2 config.yml with data and model '
                         'sections')
    if value is not None and (not isinstance(value, types) or isinstance(value, bool) and bool not in types):
        raise ValueError(f'{source}: {section}.{key} is {value!r}; expected {" or ".join(t.__name__ for t in types)}')
    return value


def parse_config(config: dict, source: str = 'config') -> NCSNv2Config:
    """Validate the release's config dict (as yaml.safe_load returns it) and keep what the loader uses."""
    if not isinstance(config, dict) or not isinstance(config.get('data'), dict) or \
            not isinstance(config.get('model'), dict):
        raise ValueError(f'{source} holds {type(config).__name__}; expected an NCSNv2 config with data and model '
                         'sections (a mapping)')
    num = (int, float)
    checks = [('data', 'logit_transform', False, 'false (logit-space data cannot take Gaussian pixel noise)'),
              ('model', 'sigma_dist', 'geometric', "'geometric'"),
              ('model', 'normalization', 'InstanceNorm++', "'InstanceNorm++' (the released networks' norm)"),
              ('model', 'spec_norm', False, 'false')]
    for section, key, expected, text in checks:
        value = config[section].get(key, expected)
        if value != expected:
            raise ValueError(f'{source}: {section}.{key} is {value!r}; this loader supports {text}')
    nonlinearity = _field(config, 'model', 'nonlinearity', (str,), source, 'elu')
    if nonlinearity not in ncsnv2_official.ACTIVATIONS:
        raise ValueError(f'{source}: model.nonlinearity is {nonlinearity!r}; expected one of '
                         f'{list(ncsnv2_official.ACTIVATIONS)}')
    return NCSNv2Config(
        dataset=str(_field(config, 'data', 'dataset', (str,), source)),
        image_size=_field(config, 'data', 'image_size', (int,), source),
        channels=_field(config, 'data', 'channels', (int,), source),
        rescaled=bool(_field(config, 'data', 'rescaled', (bool,), source, False)),
        ngf=_field(config, 'model', 'ngf', (int,), source),
        sigma_begin=float(_field(config, 'model', 'sigma_begin', num, source)),
        sigma_end=float(_field(config, 'model', 'sigma_end', num, source)),
        num_classes=_field(config, 'model', 'num_classes', (int,), source),
        ema=bool(_field(config, 'model', 'ema', (bool,), source, False)),
        nonlinearity=nonlinearity,
        step_lr=_field(config, 'sampling', 'step_lr', num, source, None),
        n_steps_each=_field(config, 'sampling', 'n_steps_each', (int,), source, None))


def read_config(path: str | os.PathLike) -> NCSNv2Config:
    """Parse an NCSNv2 config.yml (yaml.safe_load: plain data only)."""
    try:
        import yaml
    except ImportError:
        raise ImportError('reading an NCSNv2 config.yml needs PyYAML (pip install pyyaml)') from None
    if not os.path.isfile(path):
        raise FileNotFoundError(f'NCSNv2 config {os.fspath(path)!r} does not exist; expected the config.yml the '
                                'release saves beside checkpoint.pth (or pass its path)')
    with open(path, encoding='utf-8') as f:
        try:
            config = yaml.safe_load(f)
        except yaml.YAMLError as err:
            raise ValueError(f'{os.fspath(path)} is not valid YAML ({err}); expected an NCSNv2 config.yml') from None
    return parse_config(config, os.fspath(path))


def config_beside(checkpoint: str) -> str:
    """The config.yml in the checkpoint's folder (where the release's runner writes it)."""
    return os.path.join(os.path.dirname(os.path.abspath(checkpoint)), CONFIG_NAME)


def is_ncsnv2_checkpoint(obj: Any) -> bool:
    """True for the release's checkpoint list: [state_dict with begin_conv / refine1 tensors, ..., EMA shadow]."""
    if not isinstance(obj, (list, tuple)) or len(obj) != CHECKPOINT_LENGTH or not isinstance(obj[0], dict):
        return False
    names = {name.removeprefix('module.') for name in obj[0]}
    return {'begin_conv.weight', 'refine1.crp.convs.0.weight', 'sigmas'} <= names


def read_checkpoint(f: BinaryIO | str, source: str) -> list:
    """torch.load(weights_only=True) of checkpoint.pth; ValueError naming what was found if it is not NCSNv2's."""
    ckpt = torch.load(f, map_location='cpu', weights_only=True)
    if not is_ncsnv2_checkpoint(ckpt):
        raise ValueError(f'{source} holds {describe_content(ckpt)}; expected an NCSNv2 checkpoint.pth (a list of '
                         '[model state_dict with begin_conv.* and refine1.*, optimizer, epoch, step, EMA shadow])')
    return list(ckpt)


def describe_content(obj: Any) -> str:
    """A short description of what a torch.load gave, for error messages."""
    if isinstance(obj, dict):
        keys = list(obj)
        return f'a dict of {len(keys)} entries (first keys {[str(k) for k in keys[:3]]})'
    if isinstance(obj, (list, tuple)):
        return f'a {type(obj).__name__} of {len(obj)} items ({[type(v).__name__ for v in obj[:5]]})'
    return f'a {type(obj).__name__}'


def architecture_for(config: NCSNv2Config, state_dict: dict) -> str:
    """The release picks the network by dataset (CIFAR10 / CELEBA, LSUN, FFHQ); other datasets by the tensors."""
    if config.dataset.upper() in DATASET_ARCHITECTURES:
        return DATASET_ARCHITECTURES[config.dataset.upper()]
    return 'NCSNv2Deepest' if any(k.startswith('res31.') for k in state_dict) else \
        'NCSNv2Deeper' if any(k.startswith('res5.') for k in state_dict) else 'NCSNv2'


def model_state(ckpt: list, ema: bool, source: str) -> dict[str, torch.Tensor]:
    """The network's state_dict without 'module.': raw weights, or with the EMA shadow's parameters if ema."""
    state = {name.removeprefix('module.'): value for name, value in ckpt[0].items()}
    if ema:
        shadow = ckpt[-1]
        if not isinstance(shadow, dict) or not shadow:
            raise ValueError(f'{source}: the config asks for EMA weights (model.ema: true) but the checkpoint\'s last '
                             f'entry is {describe_content(shadow)}; expected the EMA shadow (name -> tensor)')
        shadow = {name.removeprefix('module.'): value for name, value in shadow.items()}
        unknown = sorted(set(shadow) - set(state))
        if unknown:
            raise ValueError(f'{source}: the EMA shadow has tensors the model lacks ({unknown[:4]}); expected the '
                             'shadow of this checkpoint\'s model')
        state.update(shadow)
    return state


class NCSNv2CheckpointDenoiser(torch.nn.Module):
    """A released NCSNv2 network as D(x; sigma) on [-1, 1] images (module docstring); unconditional."""

    def __init__(self, net: ncsnv2_official.NCSNv2Net, config: NCSNv2Config):
        super().__init__()
        self.net = net
        self.config = config
        self.u = config.data_scale
        self.img_resolution = config.image_size
        self.img_channels = config.channels
        self.label_dim = 0
        self.num_scales = config.num_classes
        self.sigma_min = self.u * float(net.sigmas.min())  # Trained range, in our [-1, 1] units.
        self.sigma_max = self.u * float(net.sigmas.max())
        # Langevin step in our units: step sizes scale with the square of the data units.
        self.langevin_step_lr = None if config.step_lr is None else self.u ** 2 * config.step_lr
        self.langevin_steps_each = config.n_steps_each

    def sigmas(self) -> torch.Tensor:
        """The training ladder in [-1, 1] units, descending [L] (for annealed Langevin)."""
        return self.u * self.net.sigmas.detach().cpu()

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, labels: torch.Tensor | None = None) -> torch.Tensor:
        """D(x; sigma) [N, C, H, W] for x [N, C, H, W] in [-1, 1] and sigma (scalar or [N]) in [-1, 1] units."""
        sigma_m = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1) / self.u
        x_m = x if self.config.rescaled else (x + 1) / 2
        return x + self.u * sigma_m * self.net.features(x_m)  # = x + u sigma_m^2 s(x_m, sigma_m)


def build_denoiser(ckpt: list, config: NCSNv2Config, source: str, ema: bool | None = None,
                   load_weights: bool = True) -> NCSNv2CheckpointDenoiser:
    """The Denoiser for a read checkpoint: architecture from the config, tensors checked by name and shape."""
    use_ema = config.ema if ema is None else bool(ema)
    state = model_state(ckpt, use_ema, source)
    arch = architecture_for(config, state)
    with torch.device('meta'):
        net = ncsnv2_official.NCSNv2Net(arch, torch.zeros(config.num_classes), config.channels, config.ngf,
                                        config.nonlinearity, centered_input=not config.rescaled)
    check_tensors(net.state_dict(), state, f'{arch} (ngf {config.ngf}, {config.num_classes} noise levels) built '
                  f'from the config', 'pass the config.yml this checkpoint was trained with')
    if load_weights:
        net.load_state_dict(state, strict=True, assign=True)
    else:  # Shapes only (describe): the rest stays on the meta device, the ladder is needed for the sigma range.
        net.sigmas = state['sigmas'].to(torch.float32)
    return NCSNv2CheckpointDenoiser(net.eval().requires_grad_(False), config)
