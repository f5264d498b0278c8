"""Known released diffusion models that SMaRt can use as frozen score sources: one table of names and URLs.

EDM networks (Karras et al., NeurIPS 2022) are pickles of persistent EDMPrecond objects; "vp"/"ve" in their names
is the DDPM++/NCSN++ architecture, "adm" the ADM UNet. guided-diffusion checkpoints (Dhariwal & Nichol, "Diffusion
Models Beat GANs on Image Synthesis", NeurIPS 2021) are plain state dicts that need an architecture preset
(edm_bridge.adm). Facts: spec/diffusion.md sections 1-2. Nothing here downloads anything; loading.py opens the URLs
through dnnlib.util.open_url, which caches them.
"""

import dataclasses
import os

import dnnlib

EDM_URL = 'https://nvlabs-fi-cdn.nvidia.com/edm/pretrained'
ADM_URL = 'https://openaipublic.blob.core.windows.net/diffusion/jul-2021'
EDM_LICENSE = 'CC BY-NC-SA 4.0'
ADM_LICENSE = 'MIT'
FORMATS = ('edm-pickle', 'adm-checkpoint')
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

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f'{self.name}: format {self.format!r}; expected one of {list(FORMATS)}')
        if self.schedule not in SCHEDULES:
            raise ValueError(f'{self.name}: schedule {self.schedule!r}; expected one of {list(SCHEDULES)}')
        if (self.format == 'adm-checkpoint') != (self.adm_preset is not None):
            raise ValueError(f'{self.name}: an adm_preset is needed exactly for adm-checkpoint entries')


def _edm(dataset: str, resolution: int, cond: str, arch: str, label_dim: int) -> ModelEntry:
    name = f'edm-{dataset}-{resolution}x{resolution}-{cond}-{arch}'
    return ModelEntry(name=name, url=f'{EDM_URL}/{name}.pkl', format='edm-pickle', img_resolution=resolution,
                      label_dim=label_dim, architecture={'vp': 'DDPM++', 've': 'NCSN++', 'adm': 'ADM'}[arch],
                      preconditioning='EDMPrecond', schedule='karras', license=EDM_LICENSE)


def _adm(name: str, file_name: str, resolution: int, label_dim: int, schedule: str) -> ModelEntry:
    return ModelEntry(name=name, url=f'{ADM_URL}/{file_name}', format='adm-checkpoint', img_resolution=resolution,
                      label_dim=label_dim, architecture='ADM', preconditioning='ADM', schedule=schedule,
                      license=ADM_LICENSE, adm_preset=name)


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


def resolve(name_or_path: str | os.PathLike) -> tuple[ModelEntry | None, str]:
    """Map a registry name, URL or local path to (entry or None, path_or_url); nothing is opened or downloaded.

    A URL or existing file named like a released model's download (e.g. '64x64_diffusion.pt') gets its entry,
    so a manually downloaded ADM checkpoint still finds its architecture preset.
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f'name_or_path is {type(name_or_path).__name__}; expected a model name, path or URL')
    value = os.fspath(name_or_path)
    if value in MODELS:
        return MODELS[value], MODELS[value].url
    if dnnlib.util.is_url(value, allow_file_urls=True) or os.path.isfile(value):
        return _entry_for_file(value), value
    known = ', '.join(MODELS)
    if os.sep in value or os.path.splitext(value)[1] in ('.pkl', '.pt', '.pth'):
        raise FileNotFoundError(f'model file {value!r} does not exist (nor is it a URL); known model names: {known}')
    raise ValueError(f'unknown model {value!r}: not a known name, an existing file or a URL; known names: {known}')
