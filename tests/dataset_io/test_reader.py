"""dataset_io.reader: ImageFolderDataset reads folders and zips exactly, with subsets, x-flip, labels, pickling,
and a named-file error for every malformed dataset (docs/spec/stylegan2-ada.md section 6)."""

import io
import json
import os
import pickle
import re
import zipfile

import numpy as np
import PIL.Image
import pytest
import torch

import dnnlib
from dataset_io import images as dataset_images, reader as dataset_module
from dataset_io.images import ImageFileError, decode_image
from dataset_io.reader import Dataset, ImageFolderDataset


def _random_image(rng, size=16, channels=3, height=None):
    shape = (height or size, size) + ((channels,) if channels != 1 else ())
    return rng.randint(0, 256, size=shape, dtype=np.uint8)


def _save(path, array, **save_kwargs):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    PIL.Image.fromarray(array).save(path, **save_kwargs)


def _make_folder(root, names=('b.png', 'a.png', 'sub/c.png', 'sub/d/e.png'), size=16, channels=3, seed=0, labels=None):
    """Write PNGs under `root`; return {relpath: uint8 [C, H, W]} of what was written."""
    rng = np.random.RandomState(seed)
    arrays = {}
    for name in names:
        array = _random_image(rng, size, channels)
        _save(os.path.join(root, name), array)
        arrays[name] = array.reshape(size, size, channels).transpose(2, 0, 1)
    if labels is not None:
        (root / 'dataset.json').write_text(json.dumps({'labels': labels}))
    return arrays


def _zip_folder(folder, zip_path):
    with zipfile.ZipFile(zip_path, 'w', compression=zipfile.ZIP_STORED) as zf:
        for root, _dirs, files in os.walk(folder):
            for fname in files:
                full = os.path.join(root, fname)
                zf.write(full, os.path.relpath(full, folder).replace(os.sep, '/'))
    return zip_path


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / 'imgs'
    return root, _make_folder(root)


@pytest.mark.parametrize('as_zip', [False, True])
def test_reads_sorted_images_exactly(folder, tmp_path, as_zip):
    root, arrays = folder
    path = _zip_folder(root, tmp_path / 'imgs.zip') if as_zip else root
    ds = ImageFolderDataset(str(path))
    assert ds._image_fnames == ['a.png', 'b.png', 'sub/c.png', 'sub/d/e.png']
    assert (len(ds), ds.name, ds.image_shape, ds.num_channels, ds.resolution) == (4, 'imgs', [3, 16, 16], 3, 16)
    for idx, name in enumerate(ds._image_fnames):
        image, label = ds[idx]
        assert image.dtype == np.uint8 and image.flags.c_contiguous
        np.testing.assert_array_equal(image, arrays[name])
        assert label.dtype == np.float32 and label.shape == (0,)
    assert (ds.label_shape, ds.has_labels) == ([0], False)
    ds.close()
    np.testing.assert_array_equal(ds[0][0], arrays['a.png'])  # Reopens after close().


def test_grayscale_and_jpeg(tmp_path):
    rng = np.random.RandomState(1)
    gray = _random_image(rng, 8, channels=1)
    _save(str(tmp_path / 'g' / 'x.png'), gray)
    ds = ImageFolderDataset(str(tmp_path / 'g'))
    assert ds.image_shape == [1, 8, 8]
    np.testing.assert_array_equal(ds[0][0], gray[np.newaxis])
    rgb = _random_image(rng, 8)
    _save(str(tmp_path / 'j' / 'x.JPG'), rgb, format='jpeg', quality=90)  # Uppercase extension counts too.
    ds = ImageFolderDataset(str(tmp_path / 'j'))
    expected = np.asarray(PIL.Image.open(tmp_path / 'j' / 'x.JPG')).transpose(2, 0, 1)
    assert ds.image_shape == [3, 8, 8]
    np.testing.assert_array_equal(ds[0][0], expected)


@pytest.mark.parametrize('mode', ['L', 'RGB', 'P'])
def test_pyspng_and_pil_decode_identically(mode):
    assert dataset_images.pyspng is not None, 'pyspng is a dependency; the fast path must be tested'
    rng = np.random.RandomState(2)
    pil = PIL.Image.fromarray(_random_image(rng, 16)).convert(mode)
    buffer = io.BytesIO()
    pil.save(buffer, format='png')
    fast = decode_image(buffer.getvalue(), 'x.png', use_pyspng=True)
    slow = decode_image(buffer.getvalue(), 'x.png', use_pyspng=False)
    reference = np.asarray(pil.convert('RGB' if mode == 'P' else mode)).reshape(16, 16, -1)
    np.testing.assert_array_equal(fast, reference)
    np.testing.assert_array_equal(slow, reference)


def test_dataset_without_pyspng_gives_same_items(folder, monkeypatch):
    root, _arrays = folder
    fast = [ImageFolderDataset(str(root))[i][0] for i in range(4)]
    monkeypatch.setattr(dataset_images, 'pyspng', None)
    slow = [ImageFolderDataset(str(root))[i][0] for i in range(4)]
    for a, b in zip(fast, slow):
        np.testing.assert_array_equal(a, b)


def test_xflip_doubles_and_mirrors(folder):
    root, arrays = folder
    ds = ImageFolderDataset(str(root), xflip=True)
    assert len(ds) == 8
    for idx in range(4):
        np.testing.assert_array_equal(ds[idx + 4][0], ds[idx][0][:, :, ::-1])
        assert ds.get_details(idx).xflip is False and ds.get_details(idx + 4).xflip is True
        assert ds.get_details(idx + 4).raw_idx == idx


def test_max_size_subset_matches_reference_and_is_deterministic(tmp_path):
    root = tmp_path / 'ten'
    _make_folder(root, names=[f'{i}.png' for i in range(10)], size=8)
    raw = lambda ds: [ds.get_details(i).raw_idx for i in range(len(ds))]  # noqa: E731
    # RandomState(seed).shuffle(arange(10))[:4], sorted: the subset NVIDIA's reader picks (golden values).
    assert raw(ImageFolderDataset(str(root), max_size=4, random_seed=0)) == [2, 4, 8, 9]
    assert raw(ImageFolderDataset(str(root), max_size=4, random_seed=1)) == [2, 4, 6, 9]
    assert raw(ImageFolderDataset(str(root), max_size=4, random_seed=0, xflip=True)) == [2, 4, 8, 9] * 2
    assert raw(ImageFolderDataset(str(root), max_size=50)) == list(range(10))


def test_onehot_labels(tmp_path):
    root = tmp_path / 'lab'
    _make_folder(root, names=['a.png', 'b.png', 'c/d.png'], size=8,
                 labels=[['c/d.png', 1], ['a.png', 0], ['b.png', 3]])
    ds = ImageFolderDataset(str(root), use_labels=True)
    assert (ds.label_shape, ds.label_dim, ds.has_labels, ds.has_onehot_labels) == ([4], 4, True, True)
    expected = np.eye(4, dtype=np.float32)[[0, 3, 1]]  # Sorted images a, b, c/d.
    for idx in range(3):
        label = ds[idx][1]
        assert label.dtype == np.float32
        np.testing.assert_array_equal(label, expected[idx])
    assert ds.get_details(1).raw_label == 3
    unlabelled = ImageFolderDataset(str(root))
    assert (unlabelled.label_shape, unlabelled.has_labels, unlabelled.has_stored_labels) == ([0], False, True)
    _make_folder(tmp_path / 'plain', names=['a.png'], size=8)
    assert ImageFolderDataset(str(tmp_path / 'plain')).has_stored_labels is False


def test_vector_labels(tmp_path):
    root = tmp_path / 'vec'
    _make_folder(root, names=['a.png', 'b.png'], size=8, labels=[['a.png', [0.5, -1]], ['b.png', [2, 3.25]]])
    ds = ImageFolderDataset(str(root), use_labels=True)
    assert (ds.label_shape, ds.has_onehot_labels) == ([2], False)
    np.testing.assert_array_equal(ds.get_label(1), np.array([2, 3.25], dtype=np.float32))
    assert ds.get_label(0).dtype == np.float32


def test_pickle_mid_use_drops_handle_and_labels(tmp_path):
    root = tmp_path / 'p'
    _make_folder(root, names=['a.png', 'b.png', 'c.png'], size=8, labels=[['a.png', 0], ['b.png', 1], ['c.png', 2]])
    ds = ImageFolderDataset(str(_zip_folder(root, tmp_path / 'p.zip')), use_labels=True, xflip=True)
    first = ds[1]  # Opens the zip and caches the labels.
    assert ds._zipfile is not None and ds._raw_labels is not None
    state = ds.__getstate__()
    assert state['_zipfile'] is None and state['_raw_labels'] is None
    clone = pickle.loads(pickle.dumps(ds))
    assert ds._zipfile is not None  # Pickling does not disturb the original.
    for idx in range(len(ds)):
        np.testing.assert_array_equal(clone[idx][0], ds[idx][0])
        np.testing.assert_array_equal(clone[idx][1], ds[idx][1])
    np.testing.assert_array_equal(first[0], ds[1][0])


def test_dataloader_workers_read_zip(tmp_path):
    root = tmp_path / 'w'
    arrays = _make_folder(root, names=[f'{i}.png' for i in range(4)], size=8)
    ds = ImageFolderDataset(str(_zip_folder(root, tmp_path / 'w.zip')))
    ds[0]  # An open handle in the parent must not leak into the workers.
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)
    images = torch.cat([batch[0] for batch in loader])  # [4, 3, 8, 8]
    np.testing.assert_array_equal(images.numpy(), np.stack([arrays[f'{i}.png'] for i in range(4)]))


def test_forked_process_reopens_zip(tmp_path, monkeypatch):
    # A handle inherited through fork shares its file offset with the parent: a new process id must get its own
    # handle, and closing in the child must not close the parent's.
    root = tmp_path / 'f'
    arrays = _make_folder(root, names=[f'{i}.png' for i in range(3)], size=8)
    ds = ImageFolderDataset(str(_zip_folder(root, tmp_path / 'f.zip')))
    ds[0]
    parent_handle = ds._zipfile
    real_pid = os.getpid()
    monkeypatch.setattr(dataset_module.os, 'getpid', lambda: real_pid + 1)
    np.testing.assert_array_equal(ds[2][0], arrays['2.png'])
    assert ds._zipfile is not parent_handle and ds._zipfile_pid == real_pid + 1
    child_handle = ds._zipfile
    ds._zipfile, ds._zipfile_pid = parent_handle, real_pid   # As the child sees the inherited handle.
    ds.close()
    assert parent_handle.fp is not None                      # Not closed by the other process.
    child_handle.close()
    monkeypatch.undo()
    parent_handle.close()


def test_construct_from_official_training_set_kwargs(folder):
    root, _arrays = folder
    kwargs = dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path=str(root), use_labels=False,
                             max_size=4, xflip=False, resolution=16, random_seed=0)
    ds = dnnlib.util.construct_class_by_name(**kwargs)
    assert isinstance(ds, ImageFolderDataset) and isinstance(ds, Dataset) and len(ds) == 4


def _error(exc_type, match_parts, *args, **kwargs):
    with pytest.raises(exc_type) as info:
        ImageFolderDataset(*args, **kwargs)
    for part in match_parts:
        assert part in str(info.value), (part, str(info.value))
    return info.value


def test_error_missing_path(tmp_path):
    _error(FileNotFoundError, [str(tmp_path / 'nope'), 'does not exist'], str(tmp_path / 'nope'))


def test_error_not_dir_or_zip(tmp_path):
    (tmp_path / 'data.tar').write_bytes(b'x')
    err = _error(ImageFileError, ['data.tar', 'neither a directory nor a .zip'], str(tmp_path / 'data.tar'))
    assert isinstance(err, OSError)


def test_error_bad_zip(tmp_path):
    (tmp_path / 'data.zip').write_bytes(b'not a zip')
    _error(ImageFileError, ['data.zip', 'not a valid zip file'], str(tmp_path / 'data.zip'))


def test_error_no_images(tmp_path):
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'empty' / 'notes.txt').write_text('hi')
    _error(ImageFileError, ['empty', 'no image files found'], str(tmp_path / 'empty'))


def test_error_mixed_resolutions_names_both_files_and_shapes(tmp_path):
    _make_folder(tmp_path / 'm', names=['a.png'], size=16)
    _make_folder(tmp_path / 'm', names=['b.png'], size=8, seed=1)
    _error(ImageFileError, ['m/b.png', '[3, 8, 8]', '[3, 16, 16]', 'm/a.png'], str(tmp_path / 'm'))


def test_error_mixed_channels(tmp_path):
    _make_folder(tmp_path / 'm', names=['a.png'], size=8)
    _make_folder(tmp_path / 'm', names=['b.png'], size=8, channels=1, seed=1)
    _error(ImageFileError, ['m/b.png', '[1, 8, 8]', '[3, 8, 8]'], str(tmp_path / 'm'))


@pytest.mark.parametrize('height, width', [(8, 16), (12, 12)])
def test_error_non_square_or_non_power_of_two(tmp_path, height, width):
    _save(str(tmp_path / 'n' / 'a.png'), np.zeros([height, width, 3], dtype=np.uint8))
    _error(ImageFileError, ['n/a.png', f'{height}x{width}', 'power-of-two'], str(tmp_path / 'n'))


@pytest.mark.parametrize('mode, expected', [('RGBA', '4 channels'), ('LA', '2 channels')])
def test_error_channel_count(tmp_path, mode, expected):
    PIL.Image.new(mode, (8, 8)).save(tmp_path / 'a.png')
    _error(ImageFileError, [str(tmp_path / 'a.png'), expected, 'expected 1'], str(tmp_path))


def test_error_unsupported_mode_via_pil(tmp_path):
    PIL.Image.new('CMYK', (8, 8)).save(tmp_path / 'a.tiff')
    _error(ImageFileError, ['a.tiff', "mode 'CMYK'"], str(tmp_path))


def test_error_16_bit_png(tmp_path):
    PIL.Image.fromarray(np.zeros([8, 8], dtype=np.uint16)).save(tmp_path / 'a.png')
    _error(ImageFileError, ['a.png', '16-bit'], str(tmp_path))


def test_error_resolution_mismatch(folder):
    root, _arrays = folder
    _error(ImageFileError, [str(root), '16x16', 'resolution=32'], str(root), resolution=32)


def test_error_arguments():
    _error(ValueError, ['max_size must be >= 1', '0'], 'unused', max_size=0)
    _error(TypeError, ['resolution must be an int', "'16'"], 'unused', resolution='16')


@pytest.mark.parametrize('labels, expected', [
    ([['a.png', 0]], ["'b.png' has no label", 'dataset.json']),
    ([['a.png', 0], ['b.png', 1], ['zz.png', 1]], ["'zz.png' names no image file", 'dataset.json']),
    ([['a.png', 0], ['a.png', 1], ['b.png', 1]], ["'a.png' is labelled twice"]),
    ([['a.png', 0], ['b.png', -1]], ["'b.png' has the label -1; expected a class index in [0, 100000)"]),
    ([['a.png', 0], ['b.png', 10 ** 9]], ["'b.png' has the label 1000000000; expected a class index in [0, 100000)"]),
    ([['a.png', 0], ['b.png', True]], ["'b.png' has the label True", 'integer class index like the first']),
    ([['a.png', 0], ['b.png', [1.0]]], ["'b.png' has the label [1.0]", 'integer class index like the first']),
    ([['a.png', 'cat'], ['b.png', 'dog']], ["'a.png' has the label cat", 'integer class index or a non-empty list']),
    ([['a.png', []], ['b.png', []]], ["'a.png' has the label []", 'non-empty list of numbers']),
    ([['a.png', [0.5, float('nan')]], ['b.png', [1, 2]]], ["'a.png' has the label [0.5, nan]", 'expected finite']),
    ([['a.png', [0.5, 1]], ['b.png', [1, float('inf')]]], ["'b.png' has the label [1, inf]", 'expected finite']),
    ([['a.png', [0.5, 1]], ['b.png', [1, 1e300]]], ["'b.png' has the label [1, 1e+300]", 'overflow float32']),
    ([['a.png', [0, 1]], ['b.png', [1]]], ["'b.png' has the label [1]", 'list of 2 numbers']),
    ([['a.png']], ['labels[0]', 'not a [relpath, label] pair']),
    ({'a.png': 0}, ['"labels" must be a list']),
    (None, ['use_labels=True but the dataset has no labels']),
])
def test_error_labels_do_not_match_files(tmp_path, labels, expected):
    root = tmp_path / 'l'
    _make_folder(root, names=['a.png', 'b.png'], size=8, labels=labels)
    err = _error(ImageFileError, expected, str(root), use_labels=True)
    assert str(root) in str(err)


def test_error_malformed_dataset_json(tmp_path):
    root = tmp_path / 'l'
    _make_folder(root, names=['a.png'], size=8)
    (root / 'dataset.json').write_text('{"labels": [["a.png", 0]')
    _error(ImageFileError, [f'{root}/dataset.json', 'malformed JSON'], str(root), use_labels=True)
    (root / 'dataset.json').write_text('[1, 2]')
    _error(ImageFileError, [f'{root}/dataset.json', '{"labels": [[relpath, label], ...]}'], str(root),
           use_labels=True)


def test_error_use_labels_without_dataset_json(folder):
    root, _arrays = folder
    _error(ImageFileError, [str(root), 'use_labels=True but the dataset has no labels'], str(root), use_labels=True)


def test_errors_at_load_time_name_the_file(tmp_path):
    root = tmp_path / 'late'
    _make_folder(root, names=['a.png', 'b.png'], size=8)
    ds = ImageFolderDataset(str(root))
    _save(str(root / 'b.png'), np.zeros([16, 16, 3], dtype=np.uint8))  # Changed after construction.
    with pytest.raises(ImageFileError, match=r'late/b\.png: decoded to shape .* \[3, 16, 16\], expected \[3, 8, 8\]'):
        ds[1]
    data = (root / 'a.png').read_bytes()
    (root / 'a.png').write_bytes(data[:60])  # A valid header but truncated pixel data.
    with pytest.raises(ImageFileError, match=r'late/a\.png: cannot decode the image'):
        ds[0]


def test_damaged_zip_member_found_at_load_time_names_the_file(tmp_path):
    """Before: zipfile's BadZipFile traceback (from a DataLoader worker at train time)."""
    rng = np.random.RandomState(0)
    path = tmp_path / 'd.zip'
    with zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as zf:
        for name in ('a.png', 'b.png'):
            buffer = io.BytesIO()
            PIL.Image.fromarray(rng.randint(0, 256, [64, 64, 3], dtype=np.uint8)).save(buffer, 'png',
                                                                                         compress_level=0)
            zf.writestr(name, buffer.getvalue())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo('b.png')
    raw = bytearray(path.read_bytes())
    raw[info.header_offset + 30 + len('b.png') + info.file_size - 100] ^= 0xFF  # Past what the header probe reads.
    path.write_bytes(bytes(raw))
    ds = ImageFolderDataset(str(path))  # The header probe does not reach the damage.
    ds[0]
    with pytest.raises(ImageFileError, match=re.escape(f"{path}/b.png: cannot read the file (BadZipFile: Bad CRC-32 "
                                                       f"for file 'b.png')")):
        ds[1]


def test_view_equals_a_fresh_dataset_and_reopens_nothing(tmp_path):
    """train.py's pre-flight scans the files once and hands a view with the run's options to set-up."""
    root = tmp_path / 'src'
    names = [f'{i}.png' for i in range(6)]
    _make_folder(root, names=names, size=8, labels=[[name, i % 3] for i, name in enumerate(names)])
    path = str(_zip_folder(root, tmp_path / 'v.zip'))
    probe = ImageFolderDataset(path)
    opened = []
    hook_on = [True]

    def hook(event, args):
        if hook_on[0] and event == 'open' and isinstance(args[0], str) and args[0] == path:
            opened.append(args[0])
    import sys
    sys.addaudithook(hook)
    view = probe.view(max_size=4, use_labels=True, xflip=True, random_seed=3)
    items = [view[i] for i in range(len(view))]
    hook_on[0] = False
    fresh = ImageFolderDataset(path, max_size=4, use_labels=True, xflip=True, random_seed=3)
    assert opened == [] and probe.num_raw_images == 6 and len(view) == len(fresh) == 8
    for i, (image, label) in enumerate(items):
        assert np.array_equal(image, fresh[i][0]) and np.array_equal(label, fresh[i][1])
    assert view.label_dim == 3 and probe.label_dim == 0  # The probe keeps its own options.
