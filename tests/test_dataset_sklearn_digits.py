"""dataset_tool.py --source=sklearn-digits: all 1797 digits with sklearn's labels, pixels 0..16 -> 0..255,
nearest-neighbour upscaling, grey or RGB, a round trip through ImageFolderDataset, and a clear error without
scikit-learn."""

import builtins
import os
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from dataset_io import sources as dataset_sources
from dataset_io.reader import ImageFolderDataset

sklearn_datasets = pytest.importorskip('sklearn.datasets')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import dataset_tool  # noqa: E402  (a top-level script, importable from the repository root)


def _run(*args):
    return CliRunner().invoke(dataset_tool.main, [str(a) for a in args])


@pytest.fixture(scope='module')
def digits():
    return sklearn_datasets.load_digits()


@pytest.fixture(scope='module')
def grey_zip(tmp_path_factory):
    dest = tmp_path_factory.mktemp('digits') / 'digits-16x16.zip'
    result = _run('--source=sklearn-digits', f'--dest={dest}')
    assert result.exit_code == 0, result.output
    assert 'Wrote 1797 images (16x16, 1 channel(s), labels: yes)' in result.output
    return dest


def test_round_trip_count_labels_pixels(grey_zip, digits):
    dataset = ImageFolderDataset(str(grey_zip), use_labels=True)
    assert len(dataset) == 1797
    assert dataset.image_shape == [1, 16, 16]
    images = np.stack([dataset[i][0] for i in range(len(dataset))])  # [N, 1, 16, 16] uint8
    labels = np.array([int(np.argmax(dataset.get_label(i))) for i in range(len(dataset))])
    dataset.close()
    assert images.dtype == np.uint8 and images.min() == 0 and images.max() == 255
    np.testing.assert_array_equal(labels, digits.target)
    np.testing.assert_array_equal(np.bincount(labels, minlength=10), np.bincount(digits.target, minlength=10))
    expected = np.rint(digits.images * 255 / 16).astype(np.uint8)  # [N, 8, 8]
    np.testing.assert_array_equal(images[:, 0, ::2, ::2], expected)  # nearest: each source pixel is a 2x2 block
    for dy in (0, 1):
        for dx in (0, 1):
            np.testing.assert_array_equal(images[:, 0, dy::2, dx::2], expected)


def test_rgb_repeats_grey_and_other_resolution(tmp_path, grey_zip):
    dest = tmp_path / 'digits-rgb.zip'
    result = _run('--source=sklearn-digits', f'--dest={dest}', '--channels=3', '--resolution=32x32')
    assert result.exit_code == 0, result.output
    rgb = ImageFolderDataset(str(dest))
    grey = ImageFolderDataset(str(grey_zip))
    assert rgb.image_shape == [3, 32, 32] and len(rgb) == 1797
    for idx in (0, 5, 1796):
        image, g = rgb[idx][0], grey[idx][0]
        np.testing.assert_array_equal(image[0], image[1])
        np.testing.assert_array_equal(image[0], image[2])
        np.testing.assert_array_equal(image[0, ::2, ::2], g[0])  # 32 = 16 upscaled by 2 again
    rgb.close()
    grey.close()


def test_bad_options_name_their_flag(tmp_path):
    result = _run('--source=sklearn-digits', f'--dest={tmp_path / "a.zip"}', '--resolution=16x32')
    assert result.exit_code != 0 and 'Error: --resolution' in result.output and 'square' in result.output
    result = _run('--source=sklearn-digits', f'--dest={tmp_path / "a.zip"}', '--resolution=4x4')
    assert result.exit_code != 0 and 'Error: --resolution' in result.output and '>= 8' in result.output
    result = _run('--source=sklearn-digits', f'--dest={tmp_path / "a.zip"}', '--transform=center-crop',
                  '--resolution=16x16')
    assert result.exit_code != 0 and 'Error: --transform' in result.output
    (tmp_path / 'imgs').mkdir()
    result = _run(f'--source={tmp_path / "imgs"}', f'--dest={tmp_path / "b.zip"}', '--channels=3')
    assert result.exit_code != 0 and 'Error: --channels' in result.output and 'sklearn-digits' in result.output
    assert not os.path.exists(tmp_path / 'a.zip') and not os.path.exists(tmp_path / 'b.zip')


def test_missing_sklearn_says_what_to_install(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_sklearn(name, *args, **kwargs):
        if name == 'sklearn' or name.startswith('sklearn.'):
            raise ImportError(f'No module named {name!r}')
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, '__import__', no_sklearn)
    with pytest.raises(ImportError, match=r'scikit-learn.*pip install -e "\.\[bench\]"'):
        dataset_sources.open_sklearn_digits()
    result = _run('--source=sklearn-digits', f'--dest={tmp_path / "c.zip"}')
    assert result.exit_code != 0
    assert 'Error: --source: sklearn-digits: needs the Python package "scikit-learn"' in result.output
    assert 'pip install -e ".[bench]"' in result.output
    assert not os.path.exists(tmp_path / 'c.zip')
