"""Image datasets in the StyleGAN2-ADA format (Karras et al., "Training Generative Adversarial Networks with Limited
Data", NeurIPS 2020): a folder or uncompressed .zip of images plus an optional dataset.json with labels.

`Dataset` holds what every dataset shares (subset, x-flip, labels); `ImageFolderDataset` reads the files. Keyword
names match NVIDIA's, because snapshots store `training_set_kwargs` and rebuild the dataset by class name.

Validation cost: at construction every image's *header* is read (26 bytes for PNG, PIL's lazy open for other
formats), so a dataset with mixed sizes, non-square or non-power-of-two images, or unsupported channel counts fails
at once with the offending file named. Measured on one CPU core: about 2 s per 100k PNGs in a zip, 7 s per 100k
JPEGs. Pixels are decoded only when an item is loaded, and the decoded shape is checked again there.
"""

import abc
import copy
import numbers
import os
import zipfile
import zlib

import numpy as np
import torch

import dnnlib
from dataset_io import labels as dataset_labels
from dataset_io.images import ImageFileError, decode_image, file_ext, list_folder, probe_image, select_images


def _check_optional_int(arg_name: str, value, minimum: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f'{arg_name} must be an int or None, got {type(value).__name__} {value!r}')
    if value < minimum:
        raise ValueError(f'{arg_name} must be >= {minimum} (or None), got {value}')


class Dataset(torch.utils.data.Dataset, abc.ABC):
    """Base dataset: a random subset (`max_size`), x-flip doubling, and labels as one-hot or float vectors."""

    def __init__(self,
                 name,                  # Dataset name, e.g. the file name without extension.
                 raw_shape,             # Shape of the raw image data [N, C, H, W].
                 max_size=None,         # Keep a random subset of this many images; None = all.
                 use_labels=False,      # Return labels from get_label(); False = zero-dim labels.
                 xflip=False,           # Append x-flipped copies of every image (doubles the length).
                 random_seed=0,         # Seed of the subset choice.
                 ):
        if len(raw_shape) != 4:
            raise ValueError(f'raw_shape must be [N, C, H, W], got {list(raw_shape)}')
        _check_optional_int('max_size', max_size, minimum=1)
        _check_optional_int('random_seed', random_seed, minimum=0)
        self._name = name
        self._raw_shape = [int(x) for x in raw_shape]
        self._use_labels = bool(use_labels)
        self._raw_labels = None
        self._label_shape = None

        # The subset is a shuffle with RandomState(random_seed), kept sorted: the same images NVIDIA's reader picks.
        self._raw_idx = np.arange(self._raw_shape[0], dtype=np.int64)
        if max_size is not None and self._raw_idx.size > max_size:
            np.random.RandomState(random_seed).shuffle(self._raw_idx)
            self._raw_idx = np.sort(self._raw_idx[:max_size])
        self._xflip = np.zeros(self._raw_idx.size, dtype=np.uint8)
        if xflip:
            self._raw_idx = np.tile(self._raw_idx, 2)
            self._xflip = np.concatenate([self._xflip, np.ones_like(self._xflip)])

    def _get_raw_labels(self) -> np.ndarray:
        """All raw labels: int64 [N] class indices or float32 [N, D]; float32 [N, 0] without labels."""
        if self._raw_labels is None:
            labels = self._load_raw_labels() if self._use_labels else None
            if labels is None:
                labels = np.zeros([self._raw_shape[0], 0], dtype=np.float32)
            assert labels.shape[0] == self._raw_shape[0] and labels.dtype in (np.int64, np.float32)
            self._raw_labels = labels
        return self._raw_labels

    def close(self) -> None:
        """Release open files; the dataset reopens them on the next access."""

    def _take_handles(self, other: 'Dataset') -> None:
        """Take over the open files of `other` (a dataset of the same collection), which reopens them if used."""

    @abc.abstractmethod
    def _load_raw_image(self, raw_idx: int) -> np.ndarray:
        """Image `raw_idx` of the underlying collection as uint8 [C, H, W]."""

    @abc.abstractmethod
    def _load_raw_labels(self):
        """All labels: int64 [N], float32 [N, D], or None when the collection has none."""

    def __getstate__(self):
        # Labels are reloaded on demand: DataLoader workers then do not receive a copy of the whole label array.
        return dict(self.__dict__, _raw_labels=None)

    def __del__(self):
        try:
            self.close()
        except Exception:  # Interpreter shutdown may already have torn down what close() needs.
            pass

    def __len__(self) -> int:
        return self._raw_idx.size

    @property
    def num_raw_images(self) -> int:
        """Images in the underlying collection, before max_size and xflip."""
        return self._raw_shape[0]

    def view(self, max_size=None, use_labels=False, xflip=False, random_seed=0) -> 'Dataset':
        """The same collection with other subset / label / x-flip options, without scanning its files again."""
        clone = copy.copy(self)
        clone.__dict__.update(self.__getstate__())  # No shared open handles ...
        clone._take_handles(self)                    # ... but the open ones move over: the files are opened once.
        Dataset.__init__(clone, name=self._name, raw_shape=self._raw_shape, max_size=max_size, use_labels=use_labels,
                         xflip=xflip, random_seed=random_seed)
        if clone._use_labels:
            clone._get_raw_labels()  # Fail now, as the constructor does.
        return clone

    def __getitem__(self, idx):
        """Return (uint8 [C, H, W] image, float32 label); flipped items are mirrored along W."""
        image = self._load_raw_image(self._raw_idx[idx])  # [C, H, W]
        assert image.dtype == np.uint8 and list(image.shape) == self.image_shape
        if self._xflip[idx]:
            image = image[:, :, ::-1]
        return image.copy(), self.get_label(idx)

    def get_label(self, idx) -> np.ndarray:
        """Label of item `idx` as float32: one-hot [max+1] for class indices, else the stored vector."""
        label = self._get_raw_labels()[self._raw_idx[idx]]
        if label.dtype == np.int64:
            onehot = np.zeros(self.label_shape, dtype=np.float32)
            onehot[label] = 1
            label = onehot
        return label.copy()

    def get_details(self, idx) -> dnnlib.EasyDict:
        """Where item `idx` comes from: raw_idx, xflip and the raw (not one-hot) label."""
        return dnnlib.EasyDict(raw_idx=int(self._raw_idx[idx]), xflip=(int(self._xflip[idx]) != 0),
                               raw_label=self._get_raw_labels()[self._raw_idx[idx]].copy())

    @property
    def name(self) -> str:
        return self._name

    @property
    def image_shape(self) -> list:
        return list(self._raw_shape[1:])

    @property
    def num_channels(self) -> int:
        return self.image_shape[0]

    @property
    def resolution(self) -> int:
        _channels, height, width = self.image_shape
        if height != width:
            raise ValueError(f'dataset {self._name!r} has non-square {height}x{width} images; resolution needs H == W')
        return width

    @property
    def label_shape(self) -> list:
        if self._label_shape is None:
            raw_labels = self._get_raw_labels()
            if raw_labels.dtype == np.int64:
                self._label_shape = [int(np.max(raw_labels)) + 1]
            else:
                self._label_shape = list(raw_labels.shape[1:])
        return list(self._label_shape)

    @property
    def label_dim(self) -> int:
        assert len(self.label_shape) == 1
        return self.label_shape[0]

    @property
    def has_labels(self) -> bool:
        return any(x != 0 for x in self.label_shape)

    @property
    def has_onehot_labels(self) -> bool:
        return self._get_raw_labels().dtype == np.int64


class ImageFolderDataset(Dataset):
    """Images in a directory (walked recursively) or a .zip, sorted by relative path, labels from dataset.json."""

    def __init__(self,
                 path,                  # Directory or .zip of images.
                 resolution=None,       # Expected image side; None = take it from the files.
                 **super_kwargs,        # max_size, use_labels, xflip, random_seed: see Dataset.
                 ):
        _check_optional_int('resolution', resolution, minimum=1)
        _check_optional_int('max_size', super_kwargs.get('max_size'), minimum=1)  # Fail before scanning the files.
        self._path = os.fspath(path)
        self._zipfile = None
        self._zipfile_pid = None    # Process that opened _zipfile: a forked DataLoader worker must open its own.
        if not os.path.exists(self._path):
            raise FileNotFoundError(f'dataset path {self._path!r} does not exist; expected a directory or a .zip '
                                    f'of images')
        if os.path.isdir(self._path):
            self._type = 'dir'
            self._all_fnames = set(list_folder(self._path))
        elif file_ext(self._path) == '.zip':
            self._type = 'zip'
            self._all_fnames = set(self._get_zipfile().namelist())
        else:
            raise ImageFileError(f'dataset path {self._path!r} is neither a directory nor a .zip file')
        self._image_fnames = select_images(self._all_fnames)
        if not self._image_fnames:
            raise ImageFileError(f'{self._path}: no image files found (looked for extensions PIL can open, '
                                 f'e.g. .png, .jpg); create datasets with dataset_tool.py')
        image_shape = self._check_headers()
        if resolution is not None and image_shape[1:] != [resolution, resolution]:
            raise ImageFileError(f'{self._path}: images are {image_shape[1]}x{image_shape[2]} but '
                                 f'resolution={resolution} was requested')
        name = os.path.splitext(os.path.basename(self._path.rstrip('/' + os.sep)))[0]
        super().__init__(name=name, raw_shape=[len(self._image_fnames)] + image_shape, **super_kwargs)
        if self._use_labels:
            self._get_raw_labels()  # Fail now, not in a DataLoader worker, if dataset.json does not fit the files.

    def _describe(self, fname: str) -> str:
        """Path of a member file as shown in error messages, e.g. 'data.zip/00000/img00000000.png'."""
        return f'{self._path.rstrip("/" + os.sep)}/{fname}'

    def _get_zipfile(self) -> zipfile.ZipFile:
        assert self._type == 'zip'
        # A handle inherited through fork shares its file offset with the parent and the other workers: concurrent
        # reads then interleave and fail ('File name in directory ... and header ... differ'). Reopen per process.
        if self._zipfile is None or self._zipfile_pid != os.getpid():
            try:
                self._zipfile = zipfile.ZipFile(self._path)
            except zipfile.BadZipFile as err:
                raise ImageFileError(f'{self._path}: not a valid zip file ({err})') from err
            self._zipfile_pid = os.getpid()
        return self._zipfile

    def _open_file(self, fname: str):
        if self._type == 'dir':
            return open(os.path.join(self._path, fname), 'rb')
        return self._get_zipfile().open(fname, 'r')

    def _check_headers(self) -> list:
        """Read every image header; return the common shape [C, H, W] or raise naming the first misfit."""
        first_fname, first_shape = None, None
        for fname in self._image_fnames:
            try:
                with self._open_file(fname) as f:
                    shape = list(probe_image(f, self._describe(fname)))  # [C, H, W]
            except (zipfile.BadZipFile, zlib.error, EOFError) as err:  # A small member is read whole: CRC checked.
                raise ImageFileError(f'{self._describe(fname)}: cannot read the file ({type(err).__name__}: '
                                     f'{err})') from err
            if first_shape is None:
                first_fname, first_shape = fname, shape
                channels, height, width = shape
                if height != width or width & (width - 1) != 0:
                    raise ImageFileError(f'{self._describe(fname)}: image is {height}x{width} (HxW); expected '
                                         f'square images with a power-of-two side; resize with dataset_tool.py')
            elif shape != first_shape:
                raise ImageFileError(f'{self._describe(fname)}: image shape [C, H, W] = {shape} differs from '
                                     f'{first_shape} of {self._describe(first_fname)}; all images need the same '
                                     f'size and channel count')
        return first_shape

    def close(self) -> None:
        """Close the zip handle (reopened lazily on the next access)."""
        if getattr(self, '_zipfile', None) is not None and self._zipfile_pid == os.getpid():
            self._zipfile.close()
        self._zipfile = None

    def _take_handles(self, other: Dataset) -> None:
        if getattr(other, '_zipfile', None) is not None and other._zipfile_pid == os.getpid():
            self._zipfile, self._zipfile_pid, other._zipfile = other._zipfile, other._zipfile_pid, None

    def __getstate__(self):
        return dict(super().__getstate__(), _zipfile=None, _zipfile_pid=None)  # A zip handle stays in its process.

    def _load_raw_image(self, raw_idx: int) -> np.ndarray:
        fname = self._image_fnames[raw_idx]
        try:
            with self._open_file(fname) as f:
                data = f.read()
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:  # E.g. a CRC error in a damaged zip.
            raise ImageFileError(f'{self._describe(fname)}: cannot read the file ({type(err).__name__}: '
                                 f'{err})') from err
        image = decode_image(data, self._describe(fname)).transpose(2, 0, 1)  # [H, W, C] -> [C, H, W]
        if list(image.shape) != self.image_shape:  # The header said otherwise, or the file changed since.
            raise ImageFileError(f'{self._describe(fname)}: decoded to shape [C, H, W] = {list(image.shape)}, '
                                 f'expected {self.image_shape}')
        return image

    def _read_label_entries(self):
        """The "labels" value of dataset.json (a list of [relpath, label] or None); None if there is no file."""
        if 'dataset.json' not in self._all_fnames:
            return None
        with self._open_file('dataset.json') as f:
            return dataset_labels.parse_label_file(f.read(), self._describe('dataset.json'))

    @property
    def has_stored_labels(self) -> bool:
        """Whether dataset.json holds labels, whatever use_labels says (train.py asks this before --cond)."""
        return self._read_label_entries() is not None

    def check_labels(self) -> np.ndarray:
        """The validated raw labels of dataset.json whatever use_labels says (train.py checks them before --cond)."""
        return self._load_raw_labels()

    def _load_raw_labels(self) -> np.ndarray:
        entries = self._read_label_entries()
        if entries is None:
            raise ImageFileError(f'{self._path}: use_labels=True but the dataset has no labels (no dataset.json, '
                                 f'or "labels": null); train unconditionally or add labels with dataset_tool.py')
        names = [fname.replace('\\', '/') for fname in self._image_fnames]
        return dataset_labels.validate_labels(entries, names, self._describe('dataset.json'))
