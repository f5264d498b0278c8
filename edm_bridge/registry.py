"""Known released diffusion models that SMaRt can use as frozen score sources: one table of names and URLs.

EDM networks (Karras et al., NeurIPS 2022) are pickles of persistent EDMPrecond objects; "vp"/"ve" in their names
is the DDPM++/NCSN++ architecture, "adm" the ADM UNet. guided-diffusion checkpoints (Dhariwal & Nichol, "Diffusion
Models Beat GANs on Image Synthesis", NeurIPS 2021) are plain state dicts that need an architecture preset
(edm_bridge.adm). NCSNv2 checkpoints (Song & Ermon, NeurIPS 2020) are the release's checkpoint.pth lists; their
entries carry the released config (data and model sections), and since the release is a shared folder without
file URLs they are read from a local copy (NCSNV2_CACHE below). Facts: docs/spec/diffusion.md sections 1-2 and 5.
Nothing here downloads anything; loading.py opens the URLs through dnnlib.util.open_url, which caches them.
"""

import dataclasses
import os

import dnnlib

EDM_URL = 'https://nvlabs-fi-cdn.nvidia.com/edm/pretrained'
ADM_URL = 'https://openaipublic.blob.core.windows.net/diffusion/jul-2021'
EDM_LICENSE = 'CC BY-NC-SA 4.0'
ADM_LICENSE = 'MIT'
NCSNV2_URL = 'https://drive.google.com/drive/folders/1217uhIvLg9ZrYNKOR3XTRFSurt4miQrd'  # From the release README.
NCSNV2_LICENSE = 'see the ermongroup/ncsnv2 release'
FORMATS = ('edm-pickle', 'adm-checkpoint', 'ncsnv2-checkpoint')
SCHEDULES = ('karras', 'ddpm-cosine', 'ddpm-linear')


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """One released model: where it is, what it generates, how to read it and which t -> sigma map SMaRt uses."""
    name: str                   # Registry name, e.g. 'edm-cifar10-32x32-cond-vp'.
    url: str                    # Download URL (cached by dnnlib.util.open_url).
    format: str                 # 'edm-pickle' (dict with 'ema') or 'adm-checkpoint' (plain state dict).
    img_resolution: int         # Square image side in pixels.
    label_dim: int              # Number of classes; 0 = unconditional.
    architecture: str           # 'DDPM++', 'NCSN++' or 'ADM'.
    preconditioning: str        # 'EDMPrecond', or 'ADM' (eps-prediction with learned variance, native DDPM steps).
    schedule: str               # Default SMaRt t -> sigma map: 'karras' (Karras-1000 grid) or the native DDPM one.
    license: str                # Licence of the weights; EDM's forbid redistribution.
    adm_preset: str | None = None  # edm_bridge.adm preset for ADM checkpoints; None for EDM pickles.
    img_channels: int = 3
    ncsnv2_config: dict | None = None  # NCSNv2: the released config (data, model, sampling sections); else None.

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f'{self.name}: format {self.format!r}; expected one of {list(FORMATS)}')
        if self.schedule not in SCHEDULES:
            raise ValueError(f'{self.name}: schedule {self.schedule!r}; expected one of {list(SCHEDULES)}')
        if (self.format == 'adm-checkpoint') != (self.adm_preset is not None):
            raise ValueError(f'{self.name}: an adm_preset is needed exactly for adm-checkpoint entries')
        if (self.format == 'ncsnv2-checkpoint') != (self.ncsnv2_config is not None):
            raise ValueError(f'{self.name}: an ncsnv2_config is needed exactly for ncsnv2-checkpoint entries')

    def local_path(self) -> str:
        """Where a manually downloaded NCSNv2 checkpoint of this entry is looked for (its config.yml beside it)."""
        return dnnlib.util.make_cache_dir_path('ncsnv2', self.name, 'checkpoint.pth')


def _edm(dataset: str, resolution: int, cond: str, arch: str, label_dim: int) -> ModelEntry:
    name = f'edm-{dataset}-{resolution}x{resolution}-{cond}-{arch}'
    return ModelEntry(name=name, url=f'{EDM_URL}/{name}.pkl', format='edm-pickle', img_resolution=resolution,
                      label_dim=label_dim, architecture={'vp': 'DDPM++', 've': 'NCSN++', 'adm': 'ADM'}[arch],
                      preconditioning='EDMPrecond', schedule='karras', license=EDM_LICENSE)


def _adm(name: str, file_name: str, resolution: int, label_dim: int, schedule: str) -> ModelEntry:
    return ModelEntry(name=name, url=f'{ADM_URL}/{file_name}', format='adm-checkpoint', img_resolution=resolution,
                      label_dim=label_dim, architecture='ADM', preconditioning='ADM', schedule=schedule,
                      license=ADM_LICENSE, adm_preset=name)


def _ncsnv2(dataset: str, category: str | None, resolution: int, sigma_begin: float, num_classes: int,
            architecture: str, sampling: dict | None = None) -> ModelEntry:
    """An NCSNv2 release (configs/<name>.yml: data and model sections; sampling where known)."""
    data = dict(dataset=dataset, image_size=resolution, channels=3, logit_transform=False, rescaled=False,
                **({'category': category} if category else {}))
    model = dict(sigma_begin=sigma_begin, sigma_end=0.01, num_classes=num_classes, sigma_dist='geometric', ema=True,
                 ema_rate=0.999, spec_norm=False, normalization='InstanceNorm++', nonlinearity='elu', ngf=128)
    name = f'ncsnv2-{(category or dataset).lower().replace("_outdoor", "")}'
    return ModelEntry(name=name, url=NCSNV2_URL, format='ncsnv2-checkpoint', img_resolution=resolution, label_dim=0,
                      architecture=architecture, preconditioning='NCSNv2', schedule='karras', license=NCSNV2_LICENSE,
                      ncsnv2_config=dict(data=data, model=model, sampling=dict(sampling or {})))


MODELS: dict[str, ModelEntry] = {entry.name: entry for entry in [
    _edm('cifar10', 32, 'cond', 'vp', 10),
    _edm('cifar10', 32, 'uncond', 'vp', 0),
    _edm('cifar10', 32, 'cond', 've', 10),
    _edm('cifar10', 32, 'uncond', 've', 0),
    _edm('ffhq', 64, 'uncond', 'vp', 0),
    _edm('ffhq', 64, 'uncond', 've', 0),
    _edm('afhqv2', 64, 'uncond', 'vp', 0),
    _edm('afhqv2', 64, 'uncond', 've', 0),
    _edm('imagenet', 64, 'cond', 'adm', 1000),
    _adm('adm-imagenet64-cond', '64x64_diffusion.pt', 64, 1000, 'ddpm-cosine'),
    _adm('adm-imagenet128-cond', '128x128_diffusion.pt', 128, 1000, 'ddpm-linear'),
    _adm('adm-lsun-bedroom256', 'lsun_bedroom.pt', 256, 0, 'ddpm-linear'),
    _ncsnv2('CIFAR10', None, 32, 50, 232, 'NCSNv2', dict(step_lr=6.2e-6, n_steps_each=5)),
    _ncsnv2('CELEBA', None, 64, 90, 500, 'NCSNv2'),
    _ncsnv2('LSUN', 'church_outdoor', 64, 140, 788, 'NCSNv2Deeper', dict(step_lr=4.9e-6, n_steps_each=4)),
    _ncsnv2('LSUN', 'bedroom', 128, 190, 1086, 'NCSNv2Deeper'),
    _ncsnv2('LSUN', 'tower', 128, 190, 1086, 'NCSNv2Deeper'),
    _ncsnv2('FFHQ', None, 256, 348, 2311, 'NCSNv2Deepest', dict(step_lr=9e-7, n_steps_each=3)),
]}


def get_entry(name: str) -> ModelEntry:
    """Return the registry entry called `name`; ValueError listing the known names otherwise."""
    if name not in MODELS:
        raise ValueError(f'unknown model name {name!r}; known names: {", ".join(MODELS)}')
    return MODELS[name]


def _entry_for_file(path_or_url: str) -> ModelEntry | None:
    """The entry whose download has the same file name (a manual download of a released model), if any."""
    base = os.path.basename(path_or_url.rstrip('/'))
    matches = [entry for entry in MODELS.values() if os.path.basename(entry.url) == base]
    return matches[0] if len(matches) == 1 else None


def _ncsnv2_local(entry: ModelEntry) -> str:
    """The local copy of an NCSNv2 release; FileNotFoundError saying how to get it (it cannot be downloaded)."""
    path = entry.local_path()
    data = entry.ncsnv2_config['data']
    what = data.get('category', data['dataset'])
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f'{entry.name}: no local copy at {path}. The NCSNv2 checkpoints are published only as a shared folder '
            f'({entry.url}), which cannot be downloaded automatically: fetch the {what} '
            'checkpoint (checkpoint.pth and config.yml of its log folder) and save it there, or pass the path of the '
            'checkpoint.pth file')
    return path


def resolve(name_or_path: str | os.PathLike) -> tuple[ModelEntry | None, str]:
    """Map a registry name, URL or local path to (entry or None, path_or_url); nothing is opened or downloaded.

    A URL or existing file named like a released model's download (e.g. '64x64_diffusion.pt') gets its entry,
    so a manually downloaded ADM checkpoint still finds its architecture preset.
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f'name_or_path is {type(name_or_path).__name__}; expected a model name, path or URL')
    value = os.fspath(name_or_path)
    if value in MODELS and MODELS[value].format == 'ncsnv2-checkpoint':
        return MODELS[value], _ncsnv2_local(MODELS[value])
    if value in MODELS:
        return MODELS[value], MODELS[value].url
    if dnnlib.util.is_url(value, allow_file_urls=True) or os.path.isfile(value):
        return _entry_for_file(value), value
    known = ', '.join(MODELS)
    if os.sep in value or os.path.splitext(value)[1] in ('.pkl', '.pt', '.pth'):
        raise FileNotFoundError(f'model file {value!r} does not exist (nor is it a URL); known model names: {known}')
    raise ValueError(f'unknown model {value!r}: not a known name, an existing file or a URL; known names: {known}')
