"""Hostile files at every entry point that reads a network, snapshot, detector, score source, resume state,
checkpoint, config or npz: payloads of each kind -- a pickle __reduce__ that calls a function, a
persistent object whose stored source runs when loaded, a callable named in stored kwargs (training_set_kwargs),
and the same through torch.save, npz and YAML -- must never run. Each payload creates its own marker file when
run; first each payload is shown to be live (the unsafe loader of its format creates the marker), then every
entry point is fed every payload that fits it, and no marker may appear (nor a traceback)."""

import os
import pathlib
import pickle
import sys

import numpy as np
import PIL.Image
import pytest
import torch
import yaml
from click.testing import CliRunner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import calc_metrics  # noqa: E402  (top-level scripts, importable from the repository root)
import fid  # noqa: E402
import generate  # noqa: E402
import generate_dpm  # noqa: E402
import inspect_pkl  # noqa: E402
import legacy  # noqa: E402
import projector  # noqa: E402
import style_mixing  # noqa: E402
import tiny_metrics  # noqa: E402
import train  # noqa: E402
import train_dpm  # noqa: E402
from dnnlib import util  # noqa: E402
from dpm import snapshot as dpm_snapshot  # noqa: E402
from edm_bridge import loading, ncsnv2_checkpoint  # noqa: E402
from edm_bridge.__main__ import cli as edm_bridge_cli  # noqa: E402
from metrics import detectors  # noqa: E402
from tiny_datasets import make_zip  # noqa: E402
from torch_utils import persistence  # noqa: E402
from training import snapshot  # noqa: E402


class _Touch:
    """Unpickling it calls pathlib.Path.touch(marker): any function a pickle may name."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


class _PersistentSource:
    """A persistence-format object (as NVIDIA's pickles hold them) whose stored module source creates the marker."""

    def __init__(self, marker, class_name):
        self.marker, self.class_name = str(marker), class_name

    def __reduce__(self):
        source = f'open({self.marker!r}, "w").close()\nclass {self.class_name}:\n    pass\n'
        meta = dict(type='class', version=6, module_src=source, class_name=self.class_name, state={})
        return persistence._reconstruct_persistent_obj, (meta,)


def _write_pickle(path, obj):
    path.write_bytes(pickle.dumps(obj))
    return str(path)


@pytest.fixture(scope='module')
def hostile(tmp_path_factory):
    """{payload name: (path, marker)} plus 'files': benign inputs the commands need besides the payload."""
    root = tmp_path_factory.mktemp('hostile')
    markers = root / 'markers'
    markers.mkdir()

    def marker(name):
        return markers / f'{name}.ran'

    G = tiny_metrics.make_generator()
    hub = root / 'hub'  # torch.hub.load(source='local') imports <repo_or_dir>/hubconf.py: code named by kwargs.
    hub.mkdir()
    (hub / 'hubconf.py').write_text(f'open({str(marker("kwargs"))!r}, "w").close()\n\n\ndef m(**kwargs):\n'
                                    '    return None\n')
    kwargs_snapshot = dict(G_ema=G, training_set_kwargs=dict(class_name='torch.hub.load', repo_or_dir=str(hub),
                                                              model='m', source='local'))
    payloads = {
        'reduce': _write_pickle(root / 'reduce.pkl', dict(G=_Touch(marker('reduce')), G_ema=_Touch(marker('reduce')))),
        'persistent': _write_pickle(root / 'persistent.pkl', dict(G_ema=_PersistentSource(marker('persistent'),
                                                                                          'Generator'))),
        'kwargs': _write_pickle(root / 'kwargs.pkl', kwargs_snapshot),
        'edm_reduce': _write_pickle(root / 'edm_reduce.pkl', dict(ema=_Touch(marker('edm_reduce')))),
        'edm_persistent': _write_pickle(root / 'edm_persistent.pkl', dict(ema=_PersistentSource(
            marker('edm_persistent'), 'EDMPrecond'))),
        'detector': tiny_metrics.save_payload(root / 'detector.pkl', marker('detector')),
    }
    torch.save(dict(net=_Touch(marker('torch_save'))), root / 'torch_save.pt')
    payloads['torch_save'] = str(root / 'torch_save.pt')
    np.savez(root / 'npz.npz', w=np.array([_Touch(marker('npz')), 0], dtype=object),
             mu=np.array([_Touch(marker('npz')), 0], dtype=object), sigma=np.zeros([2, 2]))
    payloads['npz'] = str(root / 'npz.npz')
    (root / 'config.yml').write_text(f'!!python/object/apply:os.mkdir [{str(marker("yaml"))!r}]\n')
    payloads['yaml'] = str(root / 'config.yml')
    image = root / 'target.png'
    PIL.Image.fromarray(np.zeros([8, 8, 3], np.uint8)).save(image)
    files = dict(ds=make_zip(root / 'ds.zip', num=8, res=8, seed=5), target=str(image), out=str(root / 'out'),
                 net=str(root / 'net.pkl'))
    snapshot.save_network_pkl(files['net'], dict(G_ema=G))
    return dict(payloads=payloads, markers=markers, files=files)


def _unsafe_load(name, path):
    """The loader each payload is aimed at, used the unsafe way (what the entry points must never do)."""
    if name == 'torch_save':
        torch.load(path, weights_only=False)
    elif name == 'npz':
        with np.load(path, allow_pickle=True) as data:
            data['w']
    elif name == 'yaml':
        with open(path) as f:
            yaml.unsafe_load(f)
    elif name == 'kwargs':
        util.construct_class_by_name(**snapshot.load_network_pkl(path)['training_set_kwargs'])
    else:
        with open(path, 'rb') as f:
            pickle.load(f)


def test_every_payload_is_live(hostile, tmp_path):
    try:
        for name, path in hostile['payloads'].items():
            try:
                _unsafe_load(name, path)
            except Exception:  # noqa: BLE001  Loaders may fail after the payload ran; the marker is what counts.
                pass
        ran = sorted(p.name for p in hostile['markers'].iterdir())
        assert ran == sorted(f'{name}.ran' for name in hostile['payloads']), ran
    finally:
        for p in hostile['markers'].iterdir():
            p.rmdir() if p.is_dir() else p.unlink()


# Entry points: (id, click command, args with {payload} and {file} placeholders, the payloads fed to it).
PICKLES = ['reduce', 'persistent', 'kwargs']
EDM = ['edm_reduce', 'edm_persistent', 'torch_save']
ENTRY_POINTS = [
    ('generate --network', generate.main, ['--network', '{payload}', '--outdir', '{out}', '--seeds', '0'], PICKLES),
    ('generate --projected-w', generate.main, ['--network', '{net}', '--outdir', '{out}', '--projected-w',
                                               '{payload}'], ['npz']),
    ('style_mixing --network', style_mixing.main, ['--network', '{payload}', '--rows', '0', '--cols', '1',
                                                   '--outdir', '{out}'], PICKLES),
    ('projector --network', projector.main, ['--network', '{payload}', '--target', '{target}', '--outdir', '{out}',
                                             '--num-steps', '1'], PICKLES),
    ('projector --detector-vgg16', projector.main, ['--network', '{net}', '--target', '{target}', '--outdir', '{out}',
                                                    '--num-steps', '1', '--detector-vgg16', '{payload}'],
     ['detector', 'reduce']),
    ('calc_metrics --network', calc_metrics.main, ['--network', '{payload}', '--metrics', 'fid2k_full'], PICKLES),
    ('calc_metrics --detector', calc_metrics.main, ['--network', '{net}', '--data', '{ds}', '--metrics', 'fid2k_full',
                                                    '--detector', '{payload}', '--workers', '0'],
     ['detector', 'reduce', 'torch_save']),
    ('calc_metrics --ref', calc_metrics.main, ['--network', '{net}', '--metrics', 'fid2k_full', '--ref', '{payload}'],
     ['npz']),
    ('fid ref --detector', fid.main, ['ref', '--data', '{ds}', '--dest', '{out}/r.npz', '--detector', '{payload}',
                                      '--workers', '0'], ['detector', 'torch_save']),
    ('fid calc --ref', fid.main, ['calc', '--images', '{ds}', '--ref', '{payload}'], ['npz']),
    ('inspect_pkl --network', inspect_pkl.main, ['--network', '{payload}'], PICKLES + EDM[:2]),
    ('train --resume', train.main, ['--outdir', '{out}', '--data', '{ds}', '--resume', '{payload}', '--dry-run'],
     PICKLES),
    ('train --smart-dpm', train.main, ['--outdir', '{out}', '--data', '{ds}', '--smart-lambda', '0.1', '--smart-dpm',
                                       '{payload}', '--dry-run'], EDM),
    ('train --detector', train.main, ['--outdir', '{out}', '--data', '{ds}', '--metrics', 'fid2k_full', '--detector',
                                      '{payload}', '--dry-run'], ['detector', 'torch_save']),
    ('train_dpm --resume', train_dpm.main, ['--outdir', '{out}', '--data', '{ds}', '--preset', 'tiny', '--workers',
                                            '0', '--resume', '{payload}'], ['torch_save']),
    ('generate_dpm --network', generate_dpm.main, ['--network', '{payload}', '--outdir', '{out}', '--seeds', '0'],
     EDM),
    ('edm_bridge info', edm_bridge_cli, ['info', '{payload}'], EDM),
]
CASES = [(name, cli, args, payload) for name, cli, args, payloads in ENTRY_POINTS for payload in payloads]


def _assert_nothing_ran(hostile):
    ran = sorted(p.name for p in hostile['markers'].iterdir())
    for p in hostile['markers'].iterdir():  # Each case on its own: a payload that ran does not fail the next ones.
        p.rmdir() if p.is_dir() else p.unlink()
    assert ran == []


@pytest.mark.parametrize('cli, args, payload', [case[1:] for case in CASES],
                         ids=[f'{case[0]}-{case[3]}' for case in CASES])
def test_entry_point_runs_nothing_from_the_file(hostile, monkeypatch, tmp_path, cli, args, payload):
    monkeypatch.delenv(legacy.TRUST_ENV, raising=False)
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))  # Nothing cached to fall back on.
    monkeypatch.delenv('SMART_DETECTOR_DIR', raising=False)
    values = dict(hostile['files'], payload=hostile['payloads'][payload], out=str(tmp_path / 'out'))
    result = CliRunner().invoke(cli, [arg.format(**values) for arg in args])
    _assert_nothing_ran(hostile)
    # Refused with one line (1), or read as plain data (0: inspect_pkl lists a record, generate uses a snapshot whose
    # training_set_kwargs it never looks at).
    assert result.exit_code in (0, 1) and 'Traceback' not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception


def test_library_entry_points_run_nothing(hostile, monkeypatch):
    monkeypatch.delenv(legacy.TRUST_ENV, raising=False)
    p = hostile['payloads']
    for name in PICKLES[:2]:
        with pytest.raises((pickle.UnpicklingError, ValueError)):
            legacy.load_network_pkl(p[name])
        with pytest.raises((pickle.UnpicklingError, ValueError)):
            snapshot.load_network_pkl(p[name])
    for name in EDM:
        with pytest.raises((pickle.UnpicklingError, ValueError)):
            loading.load_denoiser(p[name])
    with pytest.raises(ValueError, match='torch.load\\(weights_only=True\\) failed'):
        dpm_snapshot.load_training_state(p['torch_save'])
    with pytest.raises(ValueError):
        ncsnv2_checkpoint.read_config(p['yaml'])
    for name in ('detector', 'reduce', 'torch_save'):
        with pytest.raises(detectors.DetectorUnavailableError):
            detectors.get_detector('inception', p[name], 'cpu', download=False)
    _assert_nothing_ran(hostile)
