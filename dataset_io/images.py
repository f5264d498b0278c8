"""Image files of StyleGAN2-ADA style datasets: which names count as images, cheap header probes, and decoding.

Shared by the dataset reader (dataset_io/reader.py) and dataset_tool.py so both accept exactly the same files.
Accepted pixel formats are the ones a dataset can hold: 8-bit grayscale (1 channel), 8-bit RGB (3 channels) and
palette images, which are expanded to RGB (pyspng does this for PNG; the PIL path matches it). Anything else
(alpha channels, 16-bit samples, CMYK, ...) is refused with an error that names the file, except that dataset_tool.py
decodes with flatten_alpha=True: an alpha channel is then composited over black (RGBA -> RGB, LA -> L).
"""

import io
import os
import struct
from typing import BinaryIO

import numpy as np
import PIL.Image

try:
    import pyspng
except ImportError:  # pyspng is only a faster PNG decoder; PIL gives the same pixels (tests check that).
    pyspng = None

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}   # IHDR colour type -> channels after decoding (palette -> RGB).
_PIL_CHANNELS = {'L': 1, '1': 1, 'RGB': 3, 'P': 3}  # PIL mode -> channels after decode_image's conversion.
_PIL_ALPHA = {'RGBA': 'RGB', 'LA': 'L', 'PA': 'RGB', 'RGBa': 'RGB', 'La': 'L'}  # Mode with alpha -> mode without.


class ImageFileError(OSError):
    """An image file (or a dataset's file layout) is not something a dataset can hold; the message names the file."""


def image_extensions() -> set:
    """Lowercase file extensions (with the dot) that PIL can open; the same set NVIDIA's reader uses."""
    PIL.Image.init()  # Registers all plugins; EXTENSION is incomplete before the first call.
    return set(PIL.Image.EXTENSION)


def file_ext(name: str) -> str:
    """Lowercase extension of `name` including the dot ('' when there is none)."""
    return os.path.splitext(name)[1].lower()


def list_folder(path: str) -> list:
    """All files below the directory `path` (recursively), as sorted relative paths with forward slashes."""
    names = []
    for root, _dirs, files in os.walk(path):
        for fname in files:
            names.append(os.path.relpath(os.path.join(root, fname), start=path).replace(os.sep, '/'))
    return sorted(names)


def select_images(names) -> list:
    """The image files among `names` (lowercase extension known to PIL), sorted."""
    extensions = image_extensions()
    return sorted(name for name in names if file_ext(name) in extensions)


def _png_ihdr(f: BinaryIO, name: str) -> tuple:
    """(width, height, bit depth, colour type) from the 26 leading bytes of a PNG (signature + IHDR)."""
    head = f.read(26)
    if len(head) < 26 or head[:8] != PNG_SIGNATURE or head[12:16] != b'IHDR':
        raise ImageFileError(f'{name}: not a valid PNG file (missing PNG signature or IHDR header)')
    return struct.unpack('>IIBB', head[16:26])


def _read_png_header(f: BinaryIO, name: str) -> tuple:
    """Shape (C, H, W) from the 26 leading bytes of a PNG (signature + IHDR), without decoding pixels."""
    width, height, bit_depth, colour_type = _png_ihdr(f, name)
    if colour_type not in _PNG_CHANNELS:
        raise ImageFileError(f'{name}: invalid PNG colour type {colour_type}')
    channels = _PNG_CHANNELS[colour_type]
    if channels not in (1, 3):
        raise ImageFileError(f'{name}: PNG with {channels} channels (an alpha channel); expected 1 (grayscale) or '
                             f'3 (RGB); convert the image to RGB or L first')
    if colour_type != 3 and bit_depth != 8:
        raise ImageFileError(f'{name}: PNG with {bit_depth}-bit samples; expected 8-bit grayscale or RGB')
    return channels, height, width


def _pil_channels(image: PIL.Image.Image, name: str) -> int:
    if image.mode not in _PIL_CHANNELS:
        raise ImageFileError(f'{name}: image mode {image.mode!r} is not supported; expected 1 channel (L) or 3 (RGB); '
                             f'convert the image to RGB or L first')
    return _PIL_CHANNELS[image.mode]


def probe_image(f: BinaryIO, name: str) -> tuple:
    """Shape (C, H, W) that decode_image will give for the open file `f`, reading only its header."""
    if file_ext(name) == '.png':
        return _read_png_header(f, name)
    try:
        with PIL.Image.open(f) as image:  # Lazy: PIL reads the header here and the pixels only on load().
            return _pil_channels(image, name), image.height, image.width
    except (PIL.UnidentifiedImageError, PIL.Image.DecompressionBombError, OSError, ValueError) as err:
        if isinstance(err, ImageFileError):
            raise
        raise ImageFileError(f'{name}: cannot read the image header: {err}') from err


def check_pixel_count(data: bytes, name: str, max_pixels: int | None) -> None:
    """Refuse an image whose header announces more than `max_pixels` pixels, before anything is decoded (a small
    compressed file can decode to gigabytes)."""
    if max_pixels is None:
        return
    if file_ext(name) == '.png':
        width, height = _png_ihdr(io.BytesIO(data), name)[:2]
    else:
        height, width = probe_image(io.BytesIO(data), name)[1:]
    if height * width > max_pixels:
        raise ImageFileError(f'{name}: image is {width}x{height} = {height * width} pixels, more than max_pixels '
                             f'{max_pixels}; downscale it first or raise the limit (--max-pixels)')


def has_alpha(data: bytes, name: str) -> bool:
    """Whether the encoded image carries an alpha channel (or palette transparency), from its header."""
    if file_ext(name) == '.png' and data[:8] == PNG_SIGNATURE:
        colour_type = data[25] if len(data) > 25 else 0
        return colour_type in (4, 6) or (colour_type == 3 and b'tRNS' in data[:data.find(b'IDAT')])
    try:
        with PIL.Image.open(io.BytesIO(data)) as image:
            return image.mode in _PIL_ALPHA or (image.mode == 'P' and 'transparency' in image.info)
    except (PIL.UnidentifiedImageError, PIL.Image.DecompressionBombError, OSError, ValueError):
        return False  # decode_image reports the unreadable file.


def _over_black(data: bytes, name: str) -> np.ndarray:
    """uint8 [H, W, 1 or 3] of an image with alpha, composited over black: colour * alpha / 255, rounded."""
    with PIL.Image.open(io.BytesIO(data)) as image:
        if image.mode == 'P':
            image = image.convert('RGBA')
        if image.mode not in _PIL_ALPHA:
            raise ImageFileError(f'{name}: image mode {image.mode!r} with transparency is not supported')
        pixels = np.asarray(image.convert({'RGB': 'RGBA', 'L': 'LA'}[_PIL_ALPHA[image.mode]]), dtype=np.uint16)
    colour, alpha = pixels[:, :, :-1], pixels[:, :, -1:]                     # [H, W, C], [H, W, 1]
    return ((colour * alpha + 127) // 255).astype(np.uint8)


def decode_image(data: bytes, name: str, use_pyspng: bool = True, max_pixels: int | None = None,
                 flatten_alpha: bool = False) -> np.ndarray:
    """Decode the bytes of image file `name` to uint8 [H, W, C] with C in (1, 3); pyspng for PNG when available.
    With `max_pixels`, the header is checked first (check_pixel_count). With `flatten_alpha` an image with an
    alpha channel is composited over black instead of refused (has_alpha tells which ones were)."""
    check_pixel_count(data, name, max_pixels)
    if flatten_alpha and has_alpha(data, name):
        try:
            return _over_black(data, name)
        except (PIL.UnidentifiedImageError, OSError, ValueError) as err:
            if isinstance(err, ImageFileError):
                raise
            raise ImageFileError(f'{name}: cannot decode the image: {err}') from err
    try:
        if use_pyspng and pyspng is not None and file_ext(name) == '.png':
            _read_png_header(io.BytesIO(data), name)  # pyspng would decode 16-bit or RGBA files without complaint.
            image = pyspng.load(data)
        else:
            with PIL.Image.open(io.BytesIO(data)) as pil_image:
                _pil_channels(pil_image, name)
                if pil_image.mode in ('P', '1'):  # Expand the palette to RGB (as pyspng does) and bits to 0/255.
                    pil_image = pil_image.convert('RGB' if pil_image.mode == 'P' else 'L')
                image = np.asarray(pil_image)
    except ImageFileError:
        raise
    except (PIL.UnidentifiedImageError, PIL.Image.DecompressionBombError, OSError, ValueError,
            RuntimeError) as err:  # pyspng raises RuntimeError.
        raise ImageFileError(f'{name}: cannot decode the image: {err}') from err
    if image.ndim == 2:
        image = image[:, :, np.newaxis]  # [H, W] -> [H, W, 1]
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ImageFileError(f'{name}: decoded to {image.dtype} {list(image.shape)}; expected uint8 [H, W, 1 or 3]')
    return image
