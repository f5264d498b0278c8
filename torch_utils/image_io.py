"""Image output: float images in [-1, 1] to uint8, PNG files and image grids, written atomically."""

import io
import math
import os

import numpy as np
import PIL.Image
import torch

import dnnlib


def quantize(img: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] float in [-1, 1] -> uint8 tensor of the same shape and device, as StyleGAN2-ADA rounds for images
    and metrics alike: clamp(x * 127.5 + 128)."""
    return (img * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """[N, C, H, W] float in [-1, 1] -> [N, H, W, C] uint8 numpy (quantize, channels last)."""
    return quantize(img).permute(0, 2, 3, 1).cpu().numpy()


def save_png(image: np.ndarray, path: str | os.PathLike) -> None:
    """Write one [H, W, C] uint8 image (C = 1 or 3) as a PNG, atomically."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"image must be a uint8 [H, W, 1 or 3] array, got {image.dtype} {list(image.shape)}")
    pil = PIL.Image.fromarray(image[:, :, 0], "L") if image.shape[2] == 1 else PIL.Image.fromarray(image, "RGB")
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG")
    dnnlib.util.write_atomically(path, buffer.getvalue())


def save_image_grid(img: np.ndarray | torch.Tensor, path: str | os.PathLike, drange: tuple[float, float],
                    grid_size: tuple[int, int], min_cell: int = 1) -> None:
    """Tile [N, C, H, W] images (values in `drange`) row-major into a grid_size = (gw, gh) PNG; N must be gw * gh.
    Images smaller than `min_cell` pixels are enlarged by the largest whole factor that keeps them within it
    (nearest neighbour: each pixel becomes a square block), so that a grid of 16x16 images is readable."""
    img = np.asarray(img.detach().cpu() if isinstance(img, torch.Tensor) else img, dtype=np.float32)
    gw, gh = grid_size
    n, c, h, w = img.shape
    if n != gw * gh:
        raise ValueError(f"grid_size {gw}x{gh} needs {gw * gh} images, got {n}")
    lo, hi = drange
    img = np.rint((img - lo) * (255 / (hi - lo))).clip(0, 255).astype(np.uint8)  # [N, C, H, W]
    scale = max(1, min_cell // max(h, w))
    if scale > 1:
        img = img.repeat(scale, axis=2).repeat(scale, axis=3)                 # [N, C, H * s, W * s]
        h, w = h * scale, w * scale
    img = img.reshape(gh, gw, c, h, w).transpose(0, 3, 1, 4, 2).reshape(gh * h, gw * w, c)
    save_png(img, path)


class UInt8Grid:
    """A near-square grid (gw = ceil(sqrt(num)) columns, row-major, empty cells black) of `num` [H, W, C] uint8
    images added one at a time: it holds only the uint8 canvas, never a list of the images or a float copy."""

    def __init__(self, num: int):
        if num < 1:
            raise ValueError(f"a grid needs at least one image, got num={num}")
        self.num, self.count, self.canvas = num, 0, None
        self.gw = math.ceil(math.sqrt(num))
        self.gh = math.ceil(num / self.gw)

    def add(self, image: np.ndarray) -> None:
        """Paste the next image into its cell; all images must have the first one's shape."""
        h, w, c = image.shape
        if self.canvas is None:
            self.canvas = np.zeros([self.gh * h, self.gw * w, c], dtype=np.uint8)  # [gh * H, gw * W, C]
        if self.count >= self.num or self.canvas.shape != (self.gh * h, self.gw * w, c):
            raise ValueError(f"image {self.count} of shape {list(image.shape)} does not fit this grid of {self.num}")
        row, col = divmod(self.count, self.gw)
        self.canvas[row * h:(row + 1) * h, col * w:(col + 1) * w] = image
        self.count += 1

    def save(self, path: str | os.PathLike) -> tuple[int, int]:
        """Write the grid PNG atomically; return (gw, gh)."""
        if self.canvas is None:
            raise ValueError("no image was added to the grid")
        save_png(self.canvas, path)
        return self.gw, self.gh


def save_uint8_grid(images: list[np.ndarray], path: str | os.PathLike) -> tuple[int, int]:
    """Tile [H, W, C] uint8 images row-major into a near-square grid PNG (empty cells black); return (gw, gh)."""
    grid = UInt8Grid(len(images))
    for image in images:
        grid.add(image)
    return grid.save(path)
