"""A full disk or read-only output folder gives one line naming --outdir / --dest (train.py names the last good
snapshot, which stays intact), the log file gives up quietly, and dataset_tool's temp zip is removed. The failures are simulated by making the writes raise ENOSPC / EACCES (tests run as root)."""

import errno
import glob
import os
import sys

import pytest
from click.testing import CliRunner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import generate  # noqa: E402  (top-level scripts, importable from the repository root)
import tiny_metrics  # noqa: E402
import train  # noqa: E402
from dataset_io import writer as dataset_writer  # noqa: E402
from dnnlib import util  # noqa: E402
from tiny_datasets import make_zip  # noqa: E402
from torch_utils import image_io  # noqa: E402
from training import run_outputs, snapshot  # noqa: E402

FULL = OSError(errno.ENOSPC, 'No space left on device')
TINY = ['--cfg', 'stylegan2', '--batch', '4', '--cbase', '128', '--cmax', '16', '--map-depth', '2', '--mbstd-group',
        '2', '--workers', '0', '--tick', '0.008', '--snap', '1', '--kimg', '0.02']


def _error_line(result) -> str:
    """The one 'Error: ...' line of a failed command (stdout and stderr are interleaved in result.output)."""
    assert result.exit_code == 1 and 'Traceback' not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.startswith('Error')]
    assert len(lines) == 1, result.output
    return lines[0]


def _fail_after(monkeypatch, module, name, calls):
    """Let `calls` calls of module.name through, then raise ENOSPC."""
    real, count = getattr(module, name), [0]

    def wrapper(*args, **kwargs):
        count[0] += 1
        if count[0] > calls:
            raise FULL
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)


def test_train_names_the_last_good_snapshot(tmp_path, monkeypatch):
    data = make_zip(tmp_path / 'ds.zip', num=8, res=8, seed=2)
    _fail_after(monkeypatch, run_outputs.snapshot, 'save_network_pkl', calls=1)
    result = CliRunner().invoke(train.main, ['--outdir', str(tmp_path / 'runs'), '--data', data, *TINY])
    run_dir = glob.glob(str(tmp_path / 'runs' / '00000-*'))[0]
    last = os.path.join(run_dir, 'network-snapshot-000000.pkl')
    assert result.exit_code == 1 and 'Traceback' not in result.output
    assert _error_line(result) == (
        f"Error: --outdir: cannot write the run's outputs in {run_dir}: No space left on device; the last good "
        f"snapshot is {last} (free space or fix the permissions, then resume from it)")
    assert snapshot.load_network_pkl(last)['training_state']['cur_nimg'] == 4  # Intact.
    assert not [name for name in os.listdir(run_dir) if name.endswith('.part')]


def test_train_read_only_outdir(tmp_path, monkeypatch):
    data = make_zip(tmp_path / 'ds.zip', num=8, res=8, seed=2)

    def denied(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, 'Permission denied', path)

    monkeypatch.setattr(os, 'makedirs', denied)
    result = CliRunner().invoke(train.main, ['--outdir', str(tmp_path / 'ro'), '--data', data, *TINY])
    assert result.exit_code == 1 and 'Traceback' not in result.output
    assert _error_line(result) == (f'Error: --outdir: cannot create the run dir {tmp_path}/ro/00000-ds-'
                                              'stylegan2-kimg0.02-batch4: Permission denied')


def test_output_write_error_only_for_outputs(tmp_path):
    assert run_outputs.output_write_error(FileNotFoundError(errno.ENOENT, 'x', 'a'), str(tmp_path), None) is None
    denied_elsewhere = PermissionError(errno.EACCES, 'Permission denied', '/data/img.png')  # A read, not an output.
    assert run_outputs.output_write_error(denied_elsewhere, str(tmp_path), None) is None
    denied = PermissionError(errno.EACCES, 'Permission denied', str(tmp_path / 'log.txt'))
    assert str(run_outputs.output_write_error(denied, str(tmp_path), 'a.pkl')) == (
        f"cannot write the run's outputs in {tmp_path}: Permission denied ({tmp_path}/log.txt); the last good "
        "snapshot is a.pkl (free space or fix the permissions, then resume from it)")


@pytest.mark.parametrize('projected', [False, True])
def test_generate_disk_full(tmp_path, monkeypatch, projected):
    pkl = tmp_path / 'net.pkl'
    snapshot.save_network_pkl(pkl, dict(G_ema=tiny_metrics.make_generator()))
    args = ['--network', str(pkl), '--outdir', str(tmp_path / 'out'), '--device', 'cpu']
    if projected:
        import numpy as np
        G = tiny_metrics.make_generator()
        np.savez(tmp_path / 'w.npz', w=np.zeros([2, G.num_ws, G.w_dim], np.float32))
        args += ['--projected-w', str(tmp_path / 'w.npz')]
    else:
        args += ['--seeds', '0-3']
    _fail_after(monkeypatch, image_io.dnnlib.util, 'write_atomically', calls=1)
    result = CliRunner().invoke(generate.main, args)
    assert result.exit_code == 1 and 'Traceback' not in result.output
    assert _error_line(result) == f'Error: --outdir: cannot write to {tmp_path}/out: No space left on device'


def test_generate_read_only_outdir(tmp_path, monkeypatch):
    pkl = tmp_path / 'net.pkl'
    snapshot.save_network_pkl(pkl, dict(G_ema=tiny_metrics.make_generator()))

    def denied(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, 'Permission denied', path)

    monkeypatch.setattr(os, 'makedirs', denied)
    result = CliRunner().invoke(generate.main, ['--network', str(pkl), '--outdir', str(tmp_path / 'ro'), '--seeds',
                                                '0', '--device', 'cpu'])
    assert _error_line(result) == f'Error: --outdir: cannot write to {tmp_path}/ro: Permission denied ({tmp_path}/ro)'


class _FullDisk:
    """A file whose writes fail with ENOSPC; everything else is the wrapped file's."""

    def __init__(self, file):
        self._file = file

    def write(self, data):
        raise FULL

    def __getattr__(self, name):
        return getattr(self._file, name)


def test_dataset_tool_removes_its_temp_zip_when_the_disk_fills(tmp_path):
    dest = tmp_path / 'ds.zip'
    writer = dataset_writer.DatasetWriter(str(dest))
    writer.add('a.png', b'x' * 100)

    writer._zip.fp = _FullDisk(writer._zip.fp)  # Every further write (the next member, the central directory) fails.
    with pytest.raises(OSError, match='No space left'):
        with writer:
            writer.add('b.png', b'y' * 100)
    assert os.listdir(tmp_path) == []


def test_logger_stops_writing_a_full_log_file(tmp_path, capsys):
    logger = util.Logger(str(tmp_path / 'log.txt'), file_mode='w')
    try:
        print('first')
        logger.file.write = lambda text: (_ for _ in ()).throw(FULL)
        print('second')
        print('third')
    finally:
        logger.close()
    captured = capsys.readouterr()
    assert captured.out == 'first\nsecond\nthird\n'
    assert captured.err == f'Log file {tmp_path}/log.txt no longer written: No space left on device\n'
    assert (tmp_path / 'log.txt').read_text() == 'first\n'
