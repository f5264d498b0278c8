"""torch_utils.image_io: uint8 conversion, PNG writing and grid layout."""

import numpy as np
import PIL.Image
import pytest
import torch

from torch_utils import image_io


def test_to_uint8_rounding_and_layout():
    img = torch.tensor([-1.0, -0.5, 0.0, 0.999, 1.0, 2.0]).reshape(1, 1, 2, 3).repeat(1, 3, 1, 1)
    out = image_io.to_uint8(img)
    assert out.shape == (1, 2, 3, 3) and out.dtype == np.uint8
    # x * 127.5 + 128, clamped, truncated towards zero by the uint8 cast.
    assert out[0, :, :, 0].tolist() == [[0, 64, 128], [255, 255, 255]]


@pytest.mark.parametrize("channels,mode", [(1, "L"), (3, "RGB")])
def test_save_png_modes(tmp_path, channels, mode):
    image = np.random.RandomState(0).randint(0, 256, size=(4, 5, channels), dtype=np.uint8)
    image_io.save_png(image, tmp_path / "a.png")
    with PIL.Image.open(tmp_path / "a.png") as pil:
        assert pil.mode == mode
        np.testing.assert_array_equal(np.asarray(pil).reshape(4, 5, channels), image)
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]  # no temp file left behind


def test_save_png_rejects_bad_arrays(tmp_path):
    with pytest.raises(ValueError, match=r"image must be a uint8 \[H, W, 1 or 3\] array, got float32 \[4, 4, 3\]"):
        image_io.save_png(np.zeros([4, 4, 3], np.float32), tmp_path / "a.png")


def test_grid_layout_is_row_major(tmp_path):
    # Six 2x3 tiles, tile k filled with value k, arranged 3 wide and 2 high.
    tiles = np.arange(6, dtype=np.float32).reshape(6, 1, 1, 1) * np.ones([6, 1, 2, 3], np.float32)
    image_io.save_image_grid(tiles, tmp_path / "grid.png", drange=(0, 255), grid_size=(3, 2))
    grid = np.asarray(PIL.Image.open(tmp_path / "grid.png"))
    assert grid.shape == (4, 9)
    assert grid[::2, ::3].tolist() == [[0, 1, 2], [3, 4, 5]]


def test_small_images_are_enlarged_by_whole_factors(tmp_path):
    tiles = np.arange(6, dtype=np.float32).reshape(6, 1, 1, 1) * np.ones([6, 1, 2, 3], np.float32)   # 2x3 tiles
    image_io.save_image_grid(tiles, tmp_path / "grid.png", drange=(0, 255), grid_size=(3, 2), min_cell=7)
    grid = np.asarray(PIL.Image.open(tmp_path / "grid.png"))
    assert grid.shape == (8, 18)  # 7 // 3 = 2: each pixel becomes a 2x2 block.
    assert grid[::4, ::6].tolist() == [[0, 1, 2], [3, 4, 5]] and (grid[4:8, 6:12] == 4).all()
    image_io.save_image_grid(tiles, tmp_path / "same.png", drange=(0, 255), grid_size=(3, 2), min_cell=5)
    assert np.asarray(PIL.Image.open(tmp_path / "same.png")).shape == (4, 9)  # 5 // 3 = 1: unchanged.


def test_grid_drange_and_count(tmp_path):
    img = torch.full([2, 3, 2, 2], -1.0)
    img[1] = 1.0
    image_io.save_image_grid(img, tmp_path / "g.png", drange=(-1, 1), grid_size=(2, 1))
    grid = np.asarray(PIL.Image.open(tmp_path / "g.png"))
    assert grid.shape == (2, 4, 3) and grid[0, 0, 0] == 0 and grid[0, 3, 0] == 255
    with pytest.raises(ValueError, match="grid_size 3x1 needs 3 images, got 2"):
        image_io.save_image_grid(img, tmp_path / "g.png", drange=(-1, 1), grid_size=(3, 1))
