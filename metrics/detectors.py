"""Feature detectors of the StyleGAN2-ADA / StyleGAN3 / EDM metrics: Inception-v3 (FID, KID, IS) and VGG16 (PR).

Call convention (docs/spec/stylegan2-ada.md section 7):
`detector(images, **kwargs)` on uint8 [N, 3, H, W] images at their native resolution
(the detector resizes itself); `return_features=True` -> float [N, F] (2048 pool features for Inception);
`no_output_bias=True` -> class probabilities [N, 1008] (IS).

Where a detector comes from, first match wins (docs/metrics.md):
  1. an explicit path or URL (`--detector` / `--detector-vgg16`);
  2. $SMART_DETECTOR_DIR holding `inception-2015-12-05.pt` / `.pkl` or `vgg16.pt` / `.pkl`;
  3. a file already in the download cache ($DNNLIB_CACHE_DIR/downloads/<md5 of URL>_<name>) for any official URL;
  4. one download attempt of the official StyleGAN2-ADA URL; offline this fails at once with a message saying how
     to provide the file, instead of retrying for minutes.

Formats: a TorchScript archive (.pt, loaded with torch.jit.load, which does not run arbitrary Python) or a pickle
(.pkl, e.g. StyleGAN3's). Unpickling RUNS CODE stored in the file, so a file that is not TorchScript (a .pkl, or a
.pt that torch.jit.load rejects) is refused with UntrustedDetectorError unless the caller passes trust=True (the
CLIs' --trust-detector), wherever the file came from: anyone able to drop a file into $SMART_DETECTOR_DIR or the
download cache could otherwise run code in every later metric run.
"""

import hashlib
import os
import pickle
import re
import warnings

import torch

import dnnlib

DETECTOR_DIR_ENV = 'SMART_DETECTOR_DIR'

_SG2ADA = 'https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics'
_SG3 = 'https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/files/metrics'

# kind -> (file names looked for in SMART_DETECTOR_DIR, official URLs in order of preference).
DETECTORS = {
    'inception': (('inception-2015-12-05.pt', 'inception-2015-12-05.pkl'),
                  (f'{_SG2ADA}/inception-2015-12-05.pt', f'{_SG3}/inception-2015-12-05.pkl')),
    'vgg16': (('vgg16.pt', 'vgg16.pkl'), (f'{_SG2ADA}/vgg16.pt', f'{_SG3}/vgg16.pkl')),
}
FLAGS = {'inception': '--detector', 'vgg16': '--detector-vgg16'}
TRUST_FLAG = '--trust-detector'

_loaded: dict = {}  # (path, md5, device) -> (detector module, whether it was unpickled); each file loads once.
_identities: dict = {}  # (path, size, mtime_ns) -> md5 of the file


class DetectorUnavailableError(FileNotFoundError):
    """The detector file is neither given, nor in SMART_DETECTOR_DIR or the download cache, and cannot be fetched.

    `flag` names the CLI option that provides it (--detector or --detector-vgg16).
    """

    def __init__(self, message: str, flag: str):
        super().__init__(message)
        self.flag = flag


class UntrustedDetectorError(DetectorUnavailableError):
    """The detector file is not TorchScript, so loading it would unpickle it (run code), and trust was not given."""


def _check_kind(kind: str) -> None:
    if kind not in DETECTORS:
        raise ValueError(f'detector kind {kind!r}: expected one of {list(DETECTORS)}')


def cache_file_name(url: str) -> str:
    """The name under $DNNLIB_CACHE_DIR/downloads/ that open_url serves `url` from: '<md5 of url>_<base name>'."""
    return hashlib.md5(url.encode('utf-8')).hexdigest() + '_' + url.rsplit('/', 1)[-1]


def _cached_path(url: str) -> str | None:
    downloads = dnnlib.util.make_cache_dir_path('downloads')
    prefix = hashlib.md5(url.encode('utf-8')).hexdigest() + '_'
    if not os.path.isdir(downloads):
        return None
    names = sorted(name for name in os.listdir(downloads) if name.startswith(prefix) and not name.endswith('.part'))
    return os.path.join(downloads, names[0]) if names else None


def unavailable_message(kind: str, error: BaseException | None = None) -> str:
    """What to do when no detector file can be found or fetched (names the files, URLs, flag, env var, cache)."""
    names, urls = DETECTORS[kind]
    downloads = dnnlib.util.make_cache_dir_path('downloads')
    reason = '' if error is None else f' ({str(error.__cause__ or error)[:200]})'  # the root cause, briefly
    lines = [f'the {kind} detector file {names[0]} is not available offline and could not be downloaded from '
             f'{urls[0]}{reason}. Any of these works:',
             f'  - pass {FLAGS[kind]} PATH (a local .pt TorchScript file, a URL, or a .pkl with {TRUST_FLAG});',
             f'  - put {names[0]} (or {names[1]}) into the folder named by ${DETECTOR_DIR_ENV};',
             f'  - copy the file into {downloads} as ' + ' or '.join(cache_file_name(url) for url in urls) +
             ' (the download cache; set $DNNLIB_CACHE_DIR to move it).',
             f'Download it once on a machine with internet access: {" or ".join(urls)}']
    return '\n'.join(lines)


def locate_detector(kind: str, source: str | None = None, download: bool = True) -> tuple[str | None, str]:
    """(local file of detector `kind`, where it was found: 'given by --detector', 'found in $SMART_DETECTOR_DIR=...',
    'found in the download cache ...' or 'downloaded from URL'); see the module docstring for the order.

    Downloads at most once; with download=False returns (None, 'not found locally') instead of trying. Raises
    FileNotFoundError for a missing explicit path and DetectorUnavailableError when nothing is found offline.
    """
    _check_kind(kind)
    if source is not None:
        try:
            return dnnlib.util.open_url(source, num_attempts=1, return_filename=True), f'given by {FLAGS[kind]}'
        except FileNotFoundError:
            raise
        except OSError as err:
            raise DetectorUnavailableError(f'{source}: {err}', FLAGS[kind]) from None
    names, urls = DETECTORS[kind]
    folder = os.environ.get(DETECTOR_DIR_ENV)
    if folder:
        for name in names:
            if os.path.isfile(os.path.join(folder, name)):
                return os.path.join(folder, name), f'found in ${DETECTOR_DIR_ENV}={folder}'
    for url in urls:
        cached = _cached_path(url)
        if cached is not None:
            return cached, f'found in the download cache {os.path.dirname(cached)}'
    if not download:
        return None, 'not found locally'
    try:
        return dnnlib.util.open_url(urls[0], num_attempts=1, return_filename=True), f'downloaded from {urls[0]}'
    except OSError as err:
        raise DetectorUnavailableError(unavailable_message(kind, err), FLAGS[kind]) from None


def resolve_detector(kind: str, source: str | None = None) -> str:
    """The local file of detector `kind` (locate_detector without the origin)."""
    return locate_detector(kind, source)[0]


def file_identity(path: str) -> str:
    """md5 of the file's content (memoised per path, size and mtime): names the detector in stats cache keys."""
    info = os.stat(path)
    key = (os.path.abspath(path), info.st_size, info.st_mtime_ns)
    if key not in _identities:
        digest = hashlib.md5()
        with open(path, 'rb') as f:
            for chunk in iter(lambda: f.read(1 << 20), b''):
                digest.update(chunk)
        _identities[key] = digest.hexdigest()
    return _identities[key]


def untrusted_message(path: str, origin: str, flag: str) -> str:
    """Why a non-TorchScript detector file is refused, and what to do (names the file, its origin and the flags)."""
    return (f'{path} ({origin}) is not a TorchScript archive, so loading it means unpickling it, which runs code '
            f'stored in the file; refused. If you trust this file, pass {TRUST_FLAG}; otherwise use the official '
            f'TorchScript file (e.g. {DETECTORS["inception"][0][0]} / {DETECTORS["vgg16"][0][0]}) via {flag}')


def _load_torchscript(path: str, device: torch.device) -> torch.nn.Module:
    with warnings.catch_warnings():  # torch >= 2.10 deprecates TorchScript, yet the official detectors are .pt.
        warnings.filterwarnings('ignore', message='.*torch.jit.load.* is deprecated', category=DeprecationWarning)
        return torch.jit.load(path, map_location=device)


def _load_file(path: str, device: torch.device, trust: bool, origin: str, flag: str) -> tuple[torch.nn.Module, bool]:
    """(detector in eval mode on device, whether it was unpickled); see load_detector_file."""
    unpickled = False
    try:
        detector = _load_torchscript(path, device)
    except RuntimeError as jit_error:
        if not trust:
            raise UntrustedDetectorError(untrusted_message(path, origin, flag), flag) from None
        try:
            with open(path, 'rb') as f:
                detector, unpickled = pickle.load(f), True  # Runs code stored in the file: the caller trusts it.
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError) as pickle_error:
            raise ValueError(f'detector {path!r} is neither a TorchScript archive ({jit_error}) nor a pickle '
                             f'({pickle_error}); expected e.g. inception-2015-12-05.pt or .pkl') from None
    if not isinstance(detector, torch.nn.Module):
        raise TypeError(f'detector {path!r} holds a {type(detector).__name__}; expected a torch.nn.Module (or '
                        'TorchScript module) taking uint8 [N, 3, H, W] images')
    for param in detector.parameters():  # ScriptModules have no requires_grad_(); parameters do.
        param.requires_grad_(False)
    return detector.eval().to(device), unpickled


def load_detector_file(path: str, device: torch.device, trust: bool = False,
                       origin: str = 'given', flag: str = FLAGS['inception']) -> torch.nn.Module:
    """Load a detector from a local file, in eval mode on `device`: as TorchScript, or (only with `trust`) by
    unpickling it. Without `trust` a file that is not TorchScript raises UntrustedDetectorError before any of it
    is unpickled; `origin` and `flag` only word that error."""
    return _load_file(path, device, trust, origin, flag)[0]


def get_detector(kind: str, source: str | None, device: torch.device, trust: bool = False,
                 download: bool = True) -> tuple[torch.nn.Module | None, str | None]:
    """(detector module on `device`, identity string '<stem>-<md5>') for `kind`, loaded once per process; (None,
    None) when download=False and no local file is found (a URL source is fetched anyway).

    Only TorchScript files load without `trust` (UntrustedDetectorError otherwise, see load_detector_file).
    """
    path, origin = locate_detector(kind, source, download)
    if path is None:
        return None, None
    device = torch.device(device)
    identity = file_identity(path)
    key = (os.path.abspath(path), identity, str(device))  # A replaced file at the same path is loaded anew.
    if key in _loaded and _loaded[key][1] and not trust:  # Unpickled earlier with trust; not for this caller.
        raise UntrustedDetectorError(untrusted_message(path, origin, FLAGS[kind]), FLAGS[kind])
    if key not in _loaded:
        try:
            _loaded[key] = _load_file(path, device, trust, origin, FLAGS[kind])
        except (ValueError, TypeError) as err:  # A file that is there but unusable: the CLIs name the flag.
            raise DetectorUnavailableError(f'{err}; pass {FLAGS[kind]} PATH with a working {kind} detector',
                                           FLAGS[kind]) from None
    stem = re.sub(r'^[0-9a-f]{32}_', '', os.path.splitext(os.path.basename(path))[0])  # Drop a cache md5 prefix.
    return _loaded[key][0], f'{stem}-{identity}'


def run_detector(detector: torch.nn.Module, images: torch.Tensor, **detector_kwargs) -> torch.Tensor:
    """Features (or probabilities) of uint8 images [N, C, H, W]; 1-channel images are repeated to 3."""
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f'detector input must be uint8 [N, C, H, W], got {images.dtype} {list(images.shape)}')
    if images.shape[1] == 1:
        images = images.repeat([1, 3, 1, 1])
    out = detector(images, **detector_kwargs)
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != images.shape[0]:
        raise ValueError(f'detector returned {getattr(out, "shape", type(out).__name__)} for {images.shape[0]} '
                         f'images with {detector_kwargs}; expected [N, F]')
    return out
