"""Writing StyleGAN2-ADA datasets (Karras et al. 2020): resize/crop transforms, the atomic zip/folder writer, and
`convert_dataset`, the library call behind dataset_tool.py.

Output layout (what ImageFolderDataset and NVIDIA's reader expect): image idx goes to `00000/img00000000.png`
(the first five of the eight digits name the folder), stored as uncompressed PNG (compress_level 0) in a
ZIP_STORED archive or a folder, and `dataset.json` ({"labels": [[relpath, label], ...]} or null) comes last.

Transforms follow StyleGAN3's dataset_tool (`--resolution WxH`), all resampling with PIL's Lanczos filter:
- none:              resize every image to W x H when its size differs (W == H required).
- center-crop:       take the largest centred square, resize it to W x H (W == H required).
- center-crop-wide:  crop the centre to the W:H aspect ratio (H <= W), resize to W x H, and paste it centred
                     into a black W x W canvas, because dataset images must be square. Images whose crop is
                     smaller than W x H are skipped, as in StyleGAN3, rather than upsampled. (StyleGAN3 measures
                     the crop height in output pixels, which squashes sources larger than W; we crop the exact
                     W:H window and agree with it for sources of width W, e.g. LSUN cars at 512x384.)
"""

import io
import json
import os
import re
import shutil
import tempfile
import zipfile
from typing import Callable, Optional

import numpy as np
import PIL.Image
from tqdm import tqdm

import dnnlib
from dataset_io.images import ImageFileError, file_ext
from dataset_io.sources import ImageSource

TRANSFORMS = ('center-crop', 'center-crop-wide')


class DestinationError(OSError):
    """The destination cannot be written as asked (exists, wrong kind, inside the source, ...)."""


def parse_resolution(text: str) -> tuple:
    """'WxH' -> (W, H) with positive integers, e.g. '256x256' -> (256, 256)."""
    match = re.fullmatch(r'\s*(\d+)\s*[xX]\s*(\d+)\s*', str(text))
    if not match or int(match.group(1)) < 1 or int(match.group(2)) < 1:
        raise ValueError(f'resolution {text!r} is not of the form WxH with positive integers, e.g. 256x256')
    return int(match.group(1)), int(match.group(2))


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Lanczos resize of uint8 [H, W, C] to [height, width, C]; returned unchanged when already that size."""
    if image.shape[:2] == (height, width):
        return image
    pil = PIL.Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
    resized = np.asarray(pil.resize((width, height), PIL.Image.Resampling.LANCZOS))
    return resized.reshape(height, width, image.shape[2])


def _center_crop(image: np.ndarray, width: int, height: int) -> np.ndarray:
    side = min(image.shape[:2])
    top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
    return _resize(image[top:top + side, left:left + side], width, height)


def _center_crop_wide(image: np.ndarray, width: int, height: int) -> Optional[np.ndarray]:
    h, w = image.shape[:2]
    crop_h, crop_w = (h, int(round(h * width / height))) if w * height > h * width else \
        (int(round(w * height / width)), w)  # The largest centred W:H window.
    if crop_w < width or crop_h < height:
        return None
    top, left = (h - crop_h) // 2, (w - crop_w) // 2
    resized = _resize(image[top:top + crop_h, left:left + crop_w], width, height)  # [height, width, C]
    canvas = np.zeros([width, width, image.shape[2]], dtype=np.uint8)
    canvas[(width - height) // 2:(width - height) // 2 + height] = resized
    return canvas


def make_transform(transform: Optional[str], resolution: Optional[tuple]) -> Callable:
    """Return f(uint8 [H, W, C]) -> uint8 [H', W', C], or None to skip the image; see the module doc."""
    if transform is not None and transform not in TRANSFORMS:
        raise ValueError(f'transform {transform!r} is unknown; expected one of {", ".join(TRANSFORMS)} or none')
    if resolution is None:
        if transform is not None:
            raise ValueError(f'transform {transform} needs an output resolution WxH, e.g. 256x256')
        return lambda image: image
    width, height = resolution
    if width & (width - 1) != 0:
        raise ValueError(f'resolution {width}x{height}: the width {width} is not a power of two (e.g. 256x256)')
    if transform == 'center-crop-wide':
        if height > width:
            raise ValueError(f'resolution {width}x{height}: center-crop-wide needs H <= W (it pads to W x W)')
        return lambda image: _center_crop_wide(image, width, height)
    if width != height:
        raise ValueError(f'resolution {width}x{height} is not square; dataset images must be square '
                         f'(only center-crop-wide takes a wide WxH)')
    if transform == 'center-crop':
        return lambda image: _center_crop(image, width, height)
    return lambda image: _resize(image, width, height)


def archive_name(idx: int) -> str:
    """Relative path of image `idx` in a dataset: 8 digits, the first 5 naming the folder (1000 images each)."""
    idx_str = f'{idx:08d}'
    return f'{idx_str[:5]}/img{idx_str}.png'


def encode_png(image: np.ndarray) -> bytes:
    """uint8 [H, W, 1 or 3] -> uncompressed PNG bytes (compress_level 0: fast to write and to read)."""
    pil = PIL.Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
    buffer = io.BytesIO()
    pil.save(buffer, format='png', compress_level=0, optimize=False)
    return buffer.getvalue()


_LAYOUT_NAME = re.compile(r'(\d{5})/img(\d{8})\.png')  # archive_name()'s pattern.


def _is_written_layout(names) -> bool:
    """Whether `names` are exactly what convert_dataset writes: dataset.json plus NNNNN/imgNNNNNNNN.png files."""
    names = set(names)
    if 'dataset.json' not in names:
        return False
    for name in names - {'dataset.json'}:
        match = _LAYOUT_NAME.fullmatch(name)
        if match is None or not match.group(2).startswith(match.group(1)):
            return False
    return True


def _folder_entries(path: str) -> list:
    """Relative paths of every file and every empty folder below `path` (forward slashes)."""
    entries = []
    for root, dirs, files in os.walk(path):
        rel = os.path.relpath(root, path).replace(os.sep, '/')
        if not dirs and not files and rel != '.':
            entries.append(rel + '/')  # An empty folder is not part of the layout: refuse it.
        entries.extend(name if rel == '.' else f'{rel}/{name}' for name in files)
    return entries


def _check_overwritable(dest: str, is_zip: bool) -> None:
    """--overwrite replaces only a dataset this tool wrote (its exact layout), never an arbitrary file or folder."""
    if is_zip:
        try:
            with zipfile.ZipFile(dest) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError) as err:
            raise DestinationError(f'{dest} exists and is not a dataset zip ({err}); --overwrite only replaces a '
                                   f'dataset written by dataset_tool.py; remove it yourself or choose another path')
    else:
        names = _folder_entries(dest)
    if not _is_written_layout(names):
        odd = sorted(n for n in names if n != 'dataset.json' and not _LAYOUT_NAME.fullmatch(n))
        what = f'it holds {odd[0]!r}' if odd else 'it has no dataset.json'
        raise DestinationError(f'{dest} exists but is not a dataset written by dataset_tool.py ({what}); '
                               f'--overwrite only replaces such datasets; remove it yourself or choose another path')


def _check_apart(dest: str, source: str) -> None:
    """Refuse a dest equal to, inside or containing the source (symlinks resolved): writing or replacing it could
    destroy the images being read."""
    real_dest, real_source = os.path.realpath(dest), os.path.realpath(source)
    common = os.path.commonpath([real_dest, real_source])
    if real_dest == real_source:
        raise DestinationError(f'{dest} is the source {source}; choose a destination outside the source')
    if common == real_source:
        raise DestinationError(f'{dest} is inside the source folder {source}; choose a path outside it')
    if common == real_dest:
        raise DestinationError(f'{dest} contains the source {source}; choose a path that does not contain it')


def check_dest(dest: str, overwrite: bool = False, source: Optional[str] = None) -> None:
    """Raise DestinationError unless `dest` (a .zip path or a folder) may be written; see DatasetWriter."""
    is_zip = file_ext(dest) == '.zip'
    if source is not None:
        _check_apart(dest, source)
    if os.path.isdir(dest):
        if is_zip:
            raise DestinationError(f'{dest} is an existing directory; a .zip destination must be a file path')
        if os.listdir(dest):
            if not overwrite:
                raise DestinationError(f'{dest} already exists and is not empty; pass --overwrite to replace it')
            _check_overwritable(dest, is_zip)
    elif os.path.exists(dest):
        if not is_zip:
            raise DestinationError(f'{dest} is an existing file; a folder destination needs a free path '
                                   f'(or name the destination *.zip)')
        if not overwrite:
            raise DestinationError(f'{dest} already exists; pass --overwrite to replace it')
        _check_overwritable(dest, is_zip)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # Someone else's live process.
        return True
    return True


def remove_stale_temp_outputs(dest: str) -> list:
    """Delete what killed runs writing `dest` left beside it: hidden `.<name>.<pid>.<random>.tmp` files or folders
    (and their `.old` copies) whose process is gone; a live writer's are kept. Returns the removed paths."""
    parent, base = os.path.split(os.path.abspath(dest))
    pattern = re.compile(rf'\.{re.escape(base)}\.(\d+)\.[A-Za-z0-9_]+\.tmp(\.old)?')
    removed = []
    for name in sorted(os.listdir(parent)) if os.path.isdir(parent) else []:
        match = pattern.fullmatch(name)
        if match is None or _pid_alive(int(match.group(1))):
            continue
        path = os.path.join(parent, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.remove(path)
        removed.append(path)
    return removed


class DatasetWriter:
    """Writes a dataset to a temporary sibling of `dest` and moves it into place only in commit().

    A crash, an exception or Ctrl-C before commit() leaves no `dest` and no temporary file behind (the context
    manager removes it), so a half-written dataset can never be mistaken for a complete one.
    """

    def __init__(self, dest: str, overwrite: bool = False):
        check_dest(dest, overwrite)
        self._dest = os.path.abspath(dest)
        self._is_zip = file_ext(dest) == '.zip'
        parent = os.path.dirname(self._dest)
        os.makedirs(parent, exist_ok=True)
        # The pid in the name lets a later run tell a killed writer's leftovers from a live one's.
        prefix, mask = f'.{os.path.basename(self._dest)}.{os.getpid()}.', dnnlib.util.get_umask()
        if self._is_zip:
            fd, self._tmp = tempfile.mkstemp(dir=parent, prefix=prefix, suffix='.tmp')
            os.close(fd)
            os.chmod(self._tmp, 0o666 & ~mask)  # mkstemp makes 0600; give the dataset normal file permissions.
            self._zip = zipfile.ZipFile(self._tmp, 'w', compression=zipfile.ZIP_STORED)
        else:
            self._tmp = tempfile.mkdtemp(dir=parent, prefix=prefix, suffix='.tmp')
            os.chmod(self._tmp, 0o777 & ~mask)
        self._done = False

    def add(self, name: str, data: bytes) -> None:
        """Store `data` as the file `name` (a relative path with forward slashes)."""
        if self._is_zip:
            self._zip.writestr(name, data)
            return
        path = os.path.join(self._tmp, *name.split('/'))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'wb') as f:
            f.write(data)

    def commit(self) -> None:
        """Finish the dataset and move it to `dest`, replacing an existing one only if that was allowed."""
        if self._is_zip:
            self._zip.close()
            os.replace(self._tmp, self._dest)  # Atomic, also over an existing file (--overwrite).
        else:
            old = None
            if os.path.isdir(self._dest):  # Empty, or allowed by --overwrite (checked in __init__).
                old = self._tmp + '.old'
                os.rename(self._dest, old)
            try:
                os.rename(self._tmp, self._dest)
            except OSError:
                if old is not None:
                    os.rename(old, self._dest)  # Put the previous dataset back; abort() then removes ours.
                raise
            if old is not None:
                shutil.rmtree(old)
        self._done = True

    def abort(self) -> None:
        """Delete the temporary output; `dest` is left as it was."""
        if self._done:
            return
        if self._is_zip:
            try:
                self._zip.close()  # On a full disk writing the central directory fails too: remove the file anyway.
            except OSError:
                pass
            finally:
                if os.path.exists(self._tmp):
                    os.remove(self._tmp)
        else:
            shutil.rmtree(self._tmp, ignore_errors=True)
        self._done = True

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.abort()  # No-op after commit(); otherwise (exception, Ctrl-C, forgotten commit) removes the temp output.


def _json_label(label):
    """Labels as plain JSON values (numpy scalars and arrays become int/float/list)."""
    return label.tolist() if isinstance(label, (np.ndarray, np.generic)) else label


def _check_image(image: np.ndarray, name: str, first: Optional[tuple]) -> None:
    """Every output image must be square, power-of-two sized, 1 or 3 channels, and shaped like the first one."""
    h, w, c = image.shape
    if first is None:
        if h != w or w & (w - 1) != 0:
            raise ImageFileError(f'{name}: image is {w}x{h} (WxH); dataset images must be square with a '
                                 f'power-of-two side; use --resolution (with --transform center-crop for '
                                 f'non-square images)')
        if c not in (1, 3):
            raise ImageFileError(f'{name}: image has {c} channels; expected 1 (grayscale) or 3 (RGB)')
    elif image.shape != first[1]:
        raise ImageFileError(f'{name}: image is {w}x{h}x{c} (WxHxC) but the first image {first[0]} is '
                             f'{first[1][1]}x{first[1][0]}x{first[1][2]}; all images need the same size and channel '
                             f'count; pass --resolution to resize them all')


def convert_dataset(source: ImageSource, dest: str, max_images: Optional[int] = None, transform: Optional[str] = None,
                    resolution: Optional[tuple] = None, overwrite: bool = False,
                    progress: bool = True) -> dnnlib.EasyDict:
    """Write up to `max_images` images of `source` to `dest` (.zip or folder) atomically; return a summary."""
    transform_fn = make_transform(transform, resolution)
    check_dest(dest, overwrite, source=source.path if os.path.exists(source.path) else None)  # Not sklearn-digits.
    total = source.num_images if max_images is None else min(source.num_images, max_images)
    labels, first, num_skipped, num_alpha = [], None, 0, 0
    with DatasetWriter(dest, overwrite) as writer, tqdm(total=total, disable=not progress, unit='img') as bar:
        for item in source.images() if total > 0 else ():
            image = transform_fn(item.image)  # [H, W, C]
            if image is None:
                num_skipped += 1
                continue
            _check_image(image, item.name, first)
            num_alpha += item.had_alpha
            first = first or (item.name, image.shape)
            fname = archive_name(len(labels))
            writer.add(fname, encode_png(image))
            labels.append(None if item.label is None else [fname, _json_label(item.label)])
            bar.update(1)
            if len(labels) == total:  # Stop before the source decodes an image that will not be used.
                break
        if not labels:
            raise ImageFileError(f'{source.path}: no images to write ({num_skipped} skipped by the transform)')
        all_labelled = all(label is not None for label in labels)
        writer.add('dataset.json', json.dumps({'labels': labels if all_labelled else None}).encode('utf-8'))
        writer.commit()
    h, w, c = first[1]
    return dnnlib.EasyDict(dest=dest, num_images=len(labels), image_shape=[c, h, w], has_labels=all_labelled,
                           num_skipped=num_skipped, num_alpha=num_alpha)
