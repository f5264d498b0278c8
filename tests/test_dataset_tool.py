"""dataset_tool.py through click's CliRunner: every source kind round-trips into ImageFolderDataset exactly, the
transforms match PIL references, writes are atomic, and every user error names its flag and file."""

import gzip
import io
import json
import os
import pickle
import struct
import sys
import tarfile
import types
import zipfile
import zlib

import numpy as np
import PIL.Image
import pytest
from click.testing import CliRunner

from dataset_io import images as dataset_images, writer as dataset_writer
from dataset_io.reader import ImageFolderDataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import dataset_tool  # noqa: E402  (a top-level script, importable from the repository root)


def _run(*args):
    return CliRunner().invoke(dataset_tool.main, [str(a) for a in args])


def _ok(*args):
    result = _run(*args)
    assert result.exit_code == 0, result.output
    return result


def _fails(flag, parts, *args):
    result = _run(*args)
    assert result.exit_code != 0
    assert f'Error: {flag}' in result.output, result.output
    for part in parts:
        assert str(part) in result.output, (part, result.output)
    return result


def _image_folder(root, shapes=((16, 16, 3),) * 3, seed=0, labels=None, ext='png'):
    """Write images img0.., one per shape ([H, W, C]); return the arrays in sorted-name order."""
    rng = np.random.RandomState(seed)
    root.mkdir(parents=True, exist_ok=True)
    arrays = []
    for i, (h, w, c) in enumerate(shapes):
        array = rng.randint(0, 256, size=(h, w, c), dtype=np.uint8)
        PIL.Image.fromarray(array[:, :, 0] if c == 1 else array).save(root / f'img{i}.{ext}')
        arrays.append(array)
    if labels is not None:
        (root / 'dataset.json').write_text(json.dumps({'labels': labels}))
    return arrays


def _items(path, **kwargs):
    ds = ImageFolderDataset(str(path), **kwargs)
    return [ds[i] for i in range(len(ds))], ds


def test_help():
    result = _ok('--help')
    for flag in ('--source', '--dest', '--max-images', '--transform', '--resolution', '--overwrite', '--dry-run'):
        assert flag in result.output


@pytest.mark.parametrize('dest_name', ['out.zip', 'out_dir'])
def test_folder_round_trip_pixels_and_labels(tmp_path, dest_name):
    arrays = _image_folder(tmp_path / 'src', labels=[['img0.png', 2], ['img1.png', 0], ['img2.png', 1]])
    dest = tmp_path / dest_name
    result = _ok('--source', tmp_path / 'src', '--dest', dest)
    assert 'Wrote 3 images (16x16, 3 channel(s), labels: yes)' in result.output
    items, ds = _items(dest, use_labels=True)
    assert ds.image_shape == [3, 16, 16] and ds._image_fnames == [f'00000/img0000000{i}.png' for i in range(3)]
    for (image, label), array, cls in zip(items, arrays, [2, 0, 1]):
        np.testing.assert_array_equal(image, array.transpose(2, 0, 1))
        np.testing.assert_array_equal(label, np.eye(3, dtype=np.float32)[cls])


def test_zip_layout_stored_uncompressed_png_and_json_last(tmp_path):
    _image_folder(tmp_path / 'src')
    _ok('--source', tmp_path / 'src', '--dest', tmp_path / 'out.zip')
    with zipfile.ZipFile(tmp_path / 'out.zip') as zf:
        infos = zf.infolist()
        assert [i.filename for i in infos] == ['00000/img00000000.png', '00000/img00000001.png',
                                               '00000/img00000002.png', 'dataset.json']
        assert all(i.compress_type == zipfile.ZIP_STORED for i in infos)
        assert b'IDAT\x78\x01' in zf.read(infos[0].filename)  # zlib header 78 01: compression level 0.
        assert json.loads(zf.read('dataset.json')) == {'labels': None}
    assert (dataset_writer.archive_name(0), dataset_writer.archive_name(123456)) == (
        '00000/img00000000.png', '00123/img00123456.png')


def test_zip_source_with_partial_labels_is_refused(tmp_path):
    """Before: labels covering 1 of 3 images were dropped silently (dataset.json null)."""
    _image_folder(tmp_path / 'src', labels=[['img0.png', 1]])
    with zipfile.ZipFile(tmp_path / 'src.zip', 'w') as zf:
        for name in ('img0.png', 'img1.png', 'img2.png', 'dataset.json'):
            zf.write(tmp_path / 'src' / name, name)
    _fails('--source', [f'{tmp_path / "src.zip"}/dataset.json', "image 'img1.png' has no label while 1 others have "
                        "one (2 unlabelled)"], '--source', tmp_path / 'src.zip', '--dest', tmp_path / 'out.zip')
    assert not (tmp_path / 'out.zip').exists()


BAD_LABELS = [
    [['img0.png', 0], ['img1.png', 1]],                                       # Covers 2 of 3 images.
    [['img0.png', 0], ['img1.png', 1], ['img2.png', 1], ['gone.png', 0]],     # Labels a missing file.
    [['img0.png', [0.5, 1]], ['img1.png', [1]], ['img2.png', [0, 0]]],        # Lengths differ.
    [['img0.png', 0], ['img1.png', 'dog'], ['img2.png', 1]],                  # Wrong type.
    [['img0.png', [0.5]], ['img1.png', [float('nan')]], ['img2.png', [1]]],  # NaN.
    [['img0.png', 0], ['img1.png', 10 ** 9], ['img2.png', 1]],                # 1e9 classes.
]


@pytest.mark.parametrize('labels', BAD_LABELS)
def test_tool_refuses_the_labels_the_reader_refuses(tmp_path, labels):
    """Before: dataset_tool dropped, copied or wrote these labels; train.py's reader then refused the dataset."""
    _image_folder(tmp_path / 'src', labels=labels)
    with pytest.raises(OSError) as info:
        ImageFolderDataset(str(tmp_path / 'src'), use_labels=True)
    reader_error = str(info.value)
    result = _fails('--source', [f'{tmp_path / "src"}/dataset.json'], '--source', tmp_path / 'src', '--dest',
                    tmp_path / 'out.zip')
    assert result.output.strip().splitlines()[-1] == f'Error: --source: {reader_error}'
    assert not (tmp_path / 'out.zip').exists()


def _py2_batch_pickle(data, labels):
    """The bytes Python 2's cPickle (protocol 2) writes for {'data': uint8 [n, 3072] array, 'labels': [...]}: str
    values are SHORT_BINSTRING/BINSTRING opcodes, which only encoding='bytes' reads back, as for the real files."""
    def text(b):
        return b'U' + bytes([len(b)]) + b if len(b) < 256 else b'T' + struct.pack('<i', len(b)) + b

    def small(i):
        return b'K' + bytes([i])

    n, d = data.shape
    array = (b'cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n' + small(0) + b'\x85' + text(b'b') + b'\x87R('
             + small(1) + b'M' + struct.pack('<H', n) + b'M' + struct.pack('<H', d) + b'\x86'
             + b'cnumpy\ndtype\n' + text(b'u1') + small(0) + small(1) + b'\x87R(' + small(3) + text(b'|')
             + b'NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xff' + small(0) + b'tb\x89' + text(data.tobytes()) + b'tb')
    return (b'\x80\x02}(' + text(b'data') + array + text(b'labels') + b'](' + b''.join(small(x) for x in labels)
            + b'e' + text(b'batch_label') + text(b'training batch 1 of 5') + b'u.')


def _fake_cifar(path, batches):
    """Write cifar-10-python.tar.gz in the real layout; the first batch as Python 2 wrote it, the rest from Python 3."""
    with tarfile.open(path, 'w:gz') as tar:
        members = {'cifar-10-batches-py/batches.meta': {b'label_names': [b'airplane']},
                   'cifar-10-batches-py/test_batch': {b'data': np.zeros([1, 3072], np.uint8), b'labels': [9]}}
        members.update({f'cifar-10-batches-py/data_batch_{i + 1}': _py2_batch_pickle(data, labels) if i == 0 else
                        {b'data': data, b'labels': labels} for i, (data, labels) in enumerate(batches)})
        for name, obj in members.items():
            blob = obj if isinstance(obj, bytes) else pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))


def test_cifar10(tmp_path):
    rng = np.random.RandomState(3)
    batches = [(rng.randint(0, 256, [n, 3072], dtype=np.uint8), labels) for n, labels in [(3, [4, 0, 9]), (2, [1, 1])]]
    _fake_cifar(tmp_path / 'cifar-10-python.tar.gz', batches)
    _ok('--source', tmp_path / 'cifar-10-python.tar.gz', '--dest', tmp_path / 'c.zip')
    items, ds = _items(tmp_path / 'c.zip', use_labels=True)
    expected = np.concatenate([data for data, _labels in batches]).reshape(5, 3, 32, 32)  # Rows are CHW planes.
    assert ds.label_shape == [10]
    for (image, label), ref, cls in zip(items, expected, [4, 0, 9, 1, 1]):
        np.testing.assert_array_equal(image, ref)
        assert int(np.argmax(label)) == cls


def test_cifar10_refuses_code_in_pickles(tmp_path):
    marker = tmp_path / 'ran'

    class Evil:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    with tarfile.open(tmp_path / 'cifar-10-python.tar.gz', 'w:gz') as tar:
        blob = pickle.dumps({b'data': Evil()}, protocol=2)
        info = tarfile.TarInfo('cifar-10-batches-py/data_batch_1')
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
    _fails('--source', ['data_batch_1', 'not a CIFAR-10 python batch', 'refused'],
           '--source', tmp_path / 'cifar-10-python.tar.gz', '--dest', tmp_path / 'c.zip')
    assert not marker.exists()


def test_cifar10_without_batches(tmp_path):
    _fake_cifar(tmp_path / 'cifar-10-python.tar.gz', [])
    _fails('--source', ['cifar-10-python.tar.gz', 'no cifar-10-batches-py/data_batch_N'],
           '--source', tmp_path / 'cifar-10-python.tar.gz', '--dest', tmp_path / 'c.zip')


def _idx_gz(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b''.join(int(d).to_bytes(4, 'big') for d in array.shape)
    with gzip.open(path, 'wb') as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_mnist_padded_to_32_with_labels(tmp_path):
    digits = np.random.RandomState(4).randint(1, 256, [3, 28, 28], dtype=np.uint8)
    _idx_gz(tmp_path / 'train-images-idx3-ubyte.gz', digits)
    _idx_gz(tmp_path / 'train-labels-idx1-ubyte.gz', np.array([7, 0, 3]))
    _ok('--source', tmp_path / 'train-images-idx3-ubyte.gz', '--dest', tmp_path / 'm.zip')
    items, ds = _items(tmp_path / 'm.zip', use_labels=True)
    assert ds.image_shape == [1, 32, 32] and ds.label_shape == [8]
    for (image, label), digit, cls in zip(items, digits, [7, 0, 3]):
        expected = np.zeros([1, 32, 32], np.uint8)
        expected[0, 2:30, 2:30] = digit
        np.testing.assert_array_equal(image, expected)
        assert int(np.argmax(label)) == cls


def test_mnist_errors(tmp_path):
    images = tmp_path / 'train-images-idx3-ubyte.gz'
    _idx_gz(images, np.zeros([2, 28, 28]))
    _fails('--source', ['train-labels-idx1-ubyte.gz', 'not found'], '--source', images, '--dest', tmp_path / 'm.zip')
    _idx_gz(tmp_path / 'train-labels-idx1-ubyte.gz', np.zeros([3]))
    _fails('--source', ['holds 3 labels', 'holds 2 images'], '--source', images, '--dest', tmp_path / 'm.zip')
    _idx_gz(images, np.zeros([2, 28]))
    _fails('--source', ['train-images-idx3-ubyte.gz', 'magic number 00000802'],
           '--source', images, '--dest', tmp_path / 'm.zip')


def test_lsun_lmdb_needs_package(tmp_path, monkeypatch):
    (tmp_path / 'cat_lmdb').mkdir()
    monkeypatch.setitem(sys.modules, 'lmdb', None)  # `import lmdb` raises ImportError even where it is installed.
    _fails('--source', ['cat_lmdb', '"lmdb"', 'pip install lmdb'],
           '--source', tmp_path / 'cat_lmdb', '--dest', tmp_path / 'cat.zip')


def test_lsun_lmdb_with_stand_in_package(tmp_path, monkeypatch):
    rng = np.random.RandomState(5)
    wide = rng.randint(0, 256, [16, 24, 3], dtype=np.uint8)
    values = []
    for array in (wide, wide[:, ::-1]):
        buffer = io.BytesIO()
        PIL.Image.fromarray(array).save(buffer, format='png')
        values.append(buffer.getvalue())
    records = [(b'0001', values[0]), (b'0002', b'broken'), (b'0003', values[1])]
    txn = types.SimpleNamespace(stat=lambda: {'entries': len(records)}, cursor=lambda: iter(records))

    class Txn:
        def __enter__(self):
            return txn

        def __exit__(self, *exc):
            return False

    env = types.SimpleNamespace(begin=lambda write=False: Txn(), close=lambda: None)
    monkeypatch.setitem(sys.modules, 'lmdb', types.SimpleNamespace(open=lambda path, **kw: env))
    (tmp_path / 'cat_lmdb').mkdir()
    result = _ok('--source', tmp_path / 'cat_lmdb', '--dest', tmp_path / 'cat.zip',
                 '--transform', 'center-crop', '--resolution', '8x8')
    assert 'Skipping' in result.output and '[0002]' in result.output
    items, _ds = _items(tmp_path / 'cat.zip')
    expected = np.asarray(PIL.Image.fromarray(wide[:, 4:20]).resize((8, 8), PIL.Image.Resampling.LANCZOS))
    assert len(items) == 2
    np.testing.assert_array_equal(items[0][0], expected.transpose(2, 0, 1))


def test_resize_without_transform_uses_lanczos(tmp_path):
    arrays = _image_folder(tmp_path / 'src', shapes=[(16, 16, 3)] * 2)
    _ok('--source', tmp_path / 'src', '--dest', tmp_path / 'r.zip', '--resolution', '8x8')
    items, _ds = _items(tmp_path / 'r.zip')
    for (image, _label), array in zip(items, arrays):
        ref = np.asarray(PIL.Image.fromarray(array).resize((8, 8), PIL.Image.Resampling.LANCZOS))
        np.testing.assert_array_equal(image, ref.transpose(2, 0, 1))


def test_center_crop_grayscale(tmp_path):
    arrays = _image_folder(tmp_path / 'src', shapes=[(24, 16, 1), (10, 20, 1)])
    _ok('--source', tmp_path / 'src', '--dest', tmp_path / 'c.zip', '--transform', 'center-crop',
        '--resolution', '8x8')
    items, ds = _items(tmp_path / 'c.zip')
    assert ds.image_shape == [1, 8, 8]
    crops = [arrays[0][4:20, :, 0], arrays[1][:, 5:15, 0]]  # Largest centred squares.
    for (image, _label), crop in zip(items, crops):
        ref = np.asarray(PIL.Image.fromarray(crop).resize((8, 8), PIL.Image.Resampling.LANCZOS))
        np.testing.assert_array_equal(image[0], ref)


def test_center_crop_wide_letterboxes_and_skips_small(tmp_path):
    arrays = _image_folder(tmp_path / 'src', shapes=[(24, 32, 3), (4, 8, 3)])
    result = _ok('--source', tmp_path / 'src', '--dest', tmp_path / 'w.zip', '--transform', 'center-crop-wide',
                 '--resolution', '16x8')
    assert '1 skipped by the transform' in result.output
    items, ds = _items(tmp_path / 'w.zip')
    assert len(items) == 1 and ds.image_shape == [3, 16, 16]
    ref = np.asarray(PIL.Image.fromarray(arrays[0][4:20]).resize((16, 8), PIL.Image.Resampling.LANCZOS))  # 32x16.
    image = items[0][0].transpose(1, 2, 0)
    np.testing.assert_array_equal(image[4:12], ref)
    assert not image[:4].any() and not image[12:].any()


def test_dry_run_writes_nothing(tmp_path):
    _image_folder(tmp_path / 'src')
    result = _ok('--source', tmp_path / 'src', '--dest', tmp_path / 'out.zip', '--max-images', 2, '--dry-run')
    plan = json.loads(result.output[:result.output.index('Dry run')])
    assert (plan['source_kind'], plan['source_images'], plan['dest_format']) == ('image folder', 3, 'zip')
    assert 'would write 2 images' in result.output
    assert sorted(os.listdir(tmp_path)) == ['src']


@pytest.mark.parametrize('dest_name', ['out.zip', 'out_dir'])
def test_refuses_to_overwrite_unless_asked(tmp_path, dest_name):
    _image_folder(tmp_path / 'src')
    dest = tmp_path / dest_name
    _ok('--source', tmp_path / 'src', '--dest', dest, '--max-images', 1)
    _fails('--dest', [dest_name, 'already exists', '--overwrite'], '--source', tmp_path / 'src', '--dest', dest)
    _ok('--source', tmp_path / 'src', '--dest', dest, '--overwrite')
    assert len(ImageFolderDataset(str(dest))) == 3
    assert sorted(os.listdir(tmp_path)) == sorted(['src', dest_name])  # No temporary or old copies left.


def test_empty_existing_folder_is_fine(tmp_path):
    _image_folder(tmp_path / 'src')
    (tmp_path / 'out').mkdir()
    _ok('--source', tmp_path / 'src', '--dest', tmp_path / 'out')
    assert len(ImageFolderDataset(str(tmp_path / 'out'))) == 3


@pytest.mark.parametrize('dest_name, overwrite', [('out.zip', False), ('out_dir', False), ('out.zip', True),
                                                   ('out_dir', True)])
@pytest.mark.parametrize('interrupt', [RuntimeError('disk on fire'), KeyboardInterrupt()])
def test_atomic_write_leaves_nothing_on_failure(tmp_path, monkeypatch, dest_name, overwrite, interrupt):
    _image_folder(tmp_path / 'src', shapes=[(8, 8, 3)] * 4)
    dest = tmp_path / 'out' / dest_name
    previous = dest / 'dataset.json' if dest_name == 'out_dir' else dest
    if overwrite:
        _ok('--source', tmp_path / 'src', '--dest', dest, '--max-images', 1)  # A dataset --overwrite may replace.
    before = sorted(os.listdir(tmp_path / 'out')) if overwrite else None
    before_bytes = previous.read_bytes() if overwrite else None
    real_encode, calls = dataset_writer.encode_png, []

    def failing_encode(image):
        calls.append(1)
        if len(calls) > 2:
            raise interrupt
        return real_encode(image)

    monkeypatch.setattr(dataset_writer, 'encode_png', failing_encode)
    result = _run('--source', tmp_path / 'src', '--dest', dest, *(['--overwrite'] if overwrite else []))
    assert result.exit_code != 0 and len(calls) == 3
    if overwrite:
        assert sorted(os.listdir(tmp_path / 'out')) == before and previous.read_bytes() == before_bytes
    else:
        assert os.listdir(tmp_path / 'out') == []  # No dest, no temporary file or folder.


@pytest.mark.parametrize('resolution, parts', [
    ('abc', ["'abc' is not of the form WxH"]),
    ('12x12', ['width 12 is not a power of two']),
    ('16x8', ['16x8 is not square']),
])
def test_resolution_errors(tmp_path, resolution, parts):
    _fails('--resolution', parts, '--source', tmp_path, '--dest', tmp_path / 'o.zip', '--resolution', resolution)


def test_transform_errors(tmp_path):
    _fails('--resolution', ['center-crop needs an output resolution'],
           '--source', tmp_path, '--dest', tmp_path / 'o.zip', '--transform', 'center-crop')
    _fails('--resolution', ['center-crop-wide needs H <= W'], '--source', tmp_path, '--dest', tmp_path / 'o.zip',
           '--transform', 'center-crop-wide', '--resolution', '8x16')
    result = _run('--source', tmp_path, '--dest', tmp_path / 'o.zip', '--transform', 'stretch')
    assert result.exit_code != 0 and "'--transform'" in result.output and 'stretch' in result.output
    result = _run('--source', tmp_path, '--dest', tmp_path / 'o.zip', '--max-images', '0')
    assert result.exit_code != 0 and "'--max-images'" in result.output


def test_source_errors(tmp_path):
    dest = tmp_path / 'out' / 'o.zip'
    _fails('--source', ['nope', 'no such file or directory'], '--source', tmp_path / 'nope', '--dest', dest)
    (tmp_path / 'data.tar').write_bytes(b'x')
    _fails('--source', ['data.tar', 'unknown source type'], '--source', tmp_path / 'data.tar', '--dest', dest)
    (tmp_path / 'empty').mkdir()
    _fails('--source', ['empty', 'no image files found'], '--source', tmp_path / 'empty', '--dest', dest)
    (tmp_path / 'bad.zip').write_bytes(b'x')
    _fails('--source', ['bad.zip', 'not a valid zip file'], '--source', tmp_path / 'bad.zip', '--dest', dest)


@pytest.mark.parametrize('shapes, parts', [
    ([(16, 16, 3), (8, 8, 3)], ['img1.png', '8x8x3', 'first image', 'img0.png', '16x16x3']),
    ([(16, 16, 3), (16, 16, 1)], ['img1.png', '16x16x1', '16x16x3']),
    ([(16, 8, 3)], ['img0.png', '8x16 (WxH)', 'square', '--transform center-crop']),
    ([(12, 12, 3)], ['img0.png', '12x12', 'power-of-two']),
])
def test_image_errors_name_the_source_image(tmp_path, shapes, parts):
    _image_folder(tmp_path / 'src', shapes=shapes)
    _fails('--source', parts, '--source', tmp_path / 'src', '--dest', tmp_path / 'out' / 'o.zip')
    assert not (tmp_path / 'out' / 'o.zip').exists() and os.listdir(tmp_path / 'out') == []


def test_alpha_is_composited_over_black_and_said_once(tmp_path):
    # RGBA -> RGB and LA -> L as colour * alpha / 255 (rounded); one line for the whole source.
    rgba = _image_folder(tmp_path / 'src', shapes=[(8, 8, 4), (8, 8, 4), (8, 8, 3)])
    result = _run('--source', tmp_path / 'src', '--dest', tmp_path / 'o.zip')
    assert result.exit_code == 0, result.output
    assert result.output.count('alpha channel') == 1
    assert '2 image(s) had an alpha channel; composited over black (RGBA -> RGB, LA -> L)' in result.output
    with zipfile.ZipFile(tmp_path / 'o.zip') as archive:
        first = np.asarray(PIL.Image.open(io.BytesIO(archive.read('00000/img00000000.png'))))
        third = np.asarray(PIL.Image.open(io.BytesIO(archive.read('00000/img00000002.png'))))
    expected = (rgba[0][:, :, :3].astype(np.uint16) * rgba[0][:, :, 3:] + 127) // 255
    assert first.shape == (8, 8, 3) and np.array_equal(first, expected.astype(np.uint8))
    assert np.array_equal(third, rgba[2])
    la = np.stack([np.full((4, 4), 200, np.uint8), np.full((4, 4), 51, np.uint8)], axis=2)   # [H, W, 2]
    buffer = io.BytesIO()
    PIL.Image.fromarray(la, 'LA').save(buffer, format='PNG')
    image = dataset_images.decode_image(buffer.getvalue(), 'la.png', flatten_alpha=True)
    assert image.shape == (4, 4, 1) and int(image[0, 0, 0]) == 40                            # 200 * 51 / 255
    with pytest.raises(dataset_images.ImageFileError, match='la.png: PNG with 2 channels'):
        dataset_images.decode_image(buffer.getvalue(), 'la.png')  # A dataset reader still refuses alpha.


def test_malformed_source_labels(tmp_path):
    _image_folder(tmp_path / 'src')
    (tmp_path / 'src' / 'dataset.json').write_text('{"labels": ')
    _fails('--source', ['src/dataset.json', 'malformed JSON'], '--source', tmp_path / 'src', '--dest',
           tmp_path / 'o.zip')


def test_dest_errors(tmp_path):
    _image_folder(tmp_path / 'src')
    (tmp_path / 'dir.zip').mkdir()
    _fails('--dest', ['dir.zip', 'existing directory'], '--source', tmp_path / 'src', '--dest', tmp_path / 'dir.zip')
    (tmp_path / 'file').write_bytes(b'x')
    _fails('--dest', ['file', 'existing file'], '--source', tmp_path / 'src', '--dest', tmp_path / 'file',
           '--overwrite')
    _fails('--dest', ['inside the source folder'], '--source', tmp_path / 'src', '--dest',
           tmp_path / 'src' / 'o.zip')


@pytest.mark.parametrize('dest_rel', ['.', 'src', 'src/sub', 'link', 'link/o.zip', 'src/o.zip'])
@pytest.mark.parametrize('overwrite', [False, True])
def test_dest_never_overlaps_the_source(tmp_path, dest_rel, overwrite):
    """--source=DIR/src --dest=DIR --overwrite used to delete DIR with the source images in it."""
    _image_folder(tmp_path / 'src')
    (tmp_path / 'src' / 'sub').mkdir()
    (tmp_path / 'unrelated.txt').write_text('keep me')
    os.symlink(tmp_path / 'src', tmp_path / 'link')
    before = sorted(os.listdir(tmp_path / 'src'))
    result = _run('--source', tmp_path / 'src', '--dest', tmp_path / dest_rel, *(['--overwrite'] if overwrite else []))
    assert result.exit_code == 1 and 'Error: --dest: ' in result.output, result.output
    assert any(part in result.output for part in ('is the source', 'inside the source', 'contains the source'))
    assert sorted(os.listdir(tmp_path / 'src')) == before and (tmp_path / 'unrelated.txt').read_text() == 'keep me'


def test_dest_containing_a_source_file_is_refused(tmp_path):
    _image_folder(tmp_path / 'src')
    with zipfile.ZipFile(tmp_path / 'src.zip', 'w') as zf:
        zf.write(tmp_path / 'src' / 'img0.png', 'img0.png')
    _fails('--dest', ['contains the source', 'src.zip'], '--source', tmp_path / 'src.zip', '--dest', tmp_path,
           '--overwrite')
    _fails('--dest', ['is the source'], '--source', tmp_path / 'src.zip', '--dest', tmp_path / 'src.zip',
           '--overwrite')
    assert zipfile.ZipFile(tmp_path / 'src.zip').namelist() == ['img0.png']


@pytest.mark.parametrize('dest_name, content, parts', [
    ('out_dir', {'notes.txt': b'mine'}, ["'notes.txt'", 'not a dataset written by dataset_tool.py']),
    ('out_dir', {'00000/img00000000.png': b'x'}, ['has no dataset.json']),
    ('out_dir', {'dataset.json': b'{}', 'photos/a.png': b'x'}, ["'photos/a.png'"]),
    ('out.zip', b'not a zip', ['is not a dataset zip']),
    ('out.zip', {'dataset.json': b'{}', 'README': b'x'}, ["'README'"]),
])
def test_overwrite_replaces_only_a_written_dataset(tmp_path, dest_name, content, parts):
    _image_folder(tmp_path / 'src')
    dest = tmp_path / dest_name
    if dest_name.endswith('.zip') and isinstance(content, bytes):
        dest.write_bytes(content)
    elif dest_name.endswith('.zip'):
        with zipfile.ZipFile(dest, 'w') as zf:
            for name, data in content.items():
                zf.writestr(name, data)
    else:
        for name, data in content.items():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (dest / name).write_bytes(data)
    before = dest.read_bytes() if dest.is_file() else sorted(dataset_writer._folder_entries(str(dest)))
    _fails('--dest', [dest_name, *parts], '--source', tmp_path / 'src', '--dest', dest, '--overwrite')
    after = dest.read_bytes() if dest.is_file() else sorted(dataset_writer._folder_entries(str(dest)))
    assert after == before


def _png_header_only(width, height):
    """A PNG whose IHDR announces width x height RGB, followed by garbage instead of pixel data."""
    ihdr = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack('>I', len(ihdr)) + b'IHDR' + ihdr + struct.pack('>I', zlib.crc32(b'IHDR' + ihdr))
    return b'\x89PNG\r\n\x1a\n' + chunk + b'\x00' * 64


def test_max_pixels_is_checked_before_decoding(tmp_path, monkeypatch):
    """Before: a 1.17 MB PNG of 20000x20000 was decoded (1.4 GB) before its size was refused."""
    (tmp_path / 'src').mkdir()
    (tmp_path / 'src' / 'huge.png').write_bytes(_png_header_only(20000, 20000))

    def no_decoding(*args, **kwargs):
        raise AssertionError('decoded before the size check')
    monkeypatch.setattr(PIL.Image, 'open', no_decoding)
    monkeypatch.setattr(dataset_images, 'pyspng', types.SimpleNamespace(load=no_decoding))
    _fails('--source', [f'{tmp_path / "src" / "huge.png"}: image is 20000x20000 = 400000000 pixels, more than '
                        f'max_pixels 134217728', '--max-pixels'], '--source', tmp_path / 'src', '--dest',
           tmp_path / 'o.zip')


def test_max_pixels_flag(tmp_path):
    _image_folder(tmp_path / 'src', shapes=[(16, 16, 3)] * 2, ext='jpg')
    _fails('--source', ['img0.jpg: image is 16x16 = 256 pixels, more than max_pixels 255'], '--source',
           tmp_path / 'src', '--dest', tmp_path / 'o.zip', '--max-pixels', 255)
    _ok('--source', tmp_path / 'src', '--dest', tmp_path / 'o.zip', '--max-pixels', 256)
    assert len(ImageFolderDataset(str(tmp_path / 'o.zip'))) == 2
