"""calc_metrics.py through click's CliRunner with tiny TorchScript / pickle detectors built here: the quick metrics
end to end into metric-<name>.jsonl, reference statistics, and each user error naming its flag. No network."""

import json
import os
import sys

import numpy as np
import pytest
import requests
from click.testing import CliRunner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import calc_metrics  # noqa: E402  (a top-level script, importable from the repository root)
import tiny_metrics  # noqa: E402
from metrics import frechet_inception_distance  # noqa: E402
from tiny_datasets import make_zip  # noqa: E402
from training import snapshot  # noqa: E402

KEYS = ['results', 'metric', 'total_time', 'total_time_str', 'num_gpus', 'snapshot_pkl', 'timestamp']


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp('calc')
    data = make_zip(root / 'ds.zip', num=12, res=8, seed=11)
    run_dir = root / '00000-ds-auto1'
    run_dir.mkdir()
    (run_dir / 'training_options.json').write_text('{}')
    pkl = run_dir / 'network-snapshot-000000.pkl'
    snapshot.save_network_pkl(pkl, dict(G_ema=tiny_metrics.make_generator(), training_set_kwargs=dict(
        class_name='training.dataset.ImageFolderDataset', path=data, use_labels=False, xflip=False)))
    bare = root / 'bare.pkl'  # no training_set_kwargs, no run dir
    snapshot.save_network_pkl(bare, dict(G_ema=tiny_metrics.make_generator()))
    return dict(data=data, run_dir=run_dir, pkl=str(pkl), bare=str(bare),
                inception=tiny_metrics.save_torchscript(root / 'inception.pt'),
                inception_pkl=tiny_metrics.save_pickle(root / 'inception.pkl'),
                vgg16=tiny_metrics.save_torchscript(root / 'vgg16.pt', num_features=6, seed=1))


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """A private cache, no SMART_DETECTOR_DIR, and any download attempt fails as on a machine without network."""
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    monkeypatch.delenv('SMART_DETECTOR_DIR', raising=False)

    def refuse(self, url, **kwargs):
        raise requests.ConnectionError('offline')

    monkeypatch.setattr(requests.Session, 'get', refuse)


def _invoke(*args):
    return CliRunner().invoke(calc_metrics.main, [str(arg) for arg in args])


def _json_lines(output):
    return [json.loads(line) for line in output.splitlines() if line.startswith('{')]


def test_help():
    result = _invoke('--help')
    assert result.exit_code == 0
    for text in ('--network', '--metrics', '--data', '--mirror', '--gpus', '--detector', '--detector-vgg16', '--ref',
                 'fid2k_full', 'kid2k_full', 'pr2k3_full', 'is2k'):
        assert text in result.output, text


def test_quick_metrics_end_to_end_into_the_run_dir(files):
    result = _invoke('--network', files['pkl'], '--metrics', 'fid2k_full,kid2k_full,pr2k3_full,is2k', '--detector',
                     files['inception'], '--detector-vgg16', files['vgg16'], '--workers', 0, '--quiet')
    assert result.exit_code == 0, result.output
    printed = _json_lines(result.output)
    assert [line['metric'] for line in printed] == ['fid2k_full', 'kid2k_full', 'pr2k3_full', 'is2k']
    expected_results = dict(fid2k_full=['fid2k_full'], kid2k_full=['kid2k_full'],
                            pr2k3_full=['pr2k3_full_precision', 'pr2k3_full_recall'], is2k=['is2k_mean', 'is2k_std'])
    for name, keys in expected_results.items():
        lines = (files['run_dir'] / f'metric-{name}.jsonl').read_text().splitlines()
        entry = json.loads(lines[-1])
        assert list(entry) == KEYS and sorted(entry['results']) == keys and entry['num_gpus'] == 1
        assert entry['snapshot_pkl'] == 'network-snapshot-000000.pkl'
        assert all(np.isfinite(value) for value in entry['results'].values())
    assert printed[0]['results']['fid2k_full'] > 0 and 1 <= printed[3]['results']['is2k_mean'] <= 10


def test_untrusted_pickle_detector_is_refused_before_it_runs(files, tmp_path):
    marker = tmp_path / 'payload-ran'
    payload = tiny_metrics.save_payload(tmp_path / 'inception-2015-12-05.pt', marker)
    result = _invoke('--network', files['bare'], '--data', files['data'], '--metrics', 'fid2k_full', '--detector',
                     payload, '--workers', 0, '--quiet')
    assert result.exit_code == 1 and not marker.exists()
    assert result.output.startswith(f'Error: --detector: {payload} (given by --detector) is not a TorchScript '
                                    'archive, so loading it means unpickling it'), result.output
    assert 'pass --trust-detector' in result.output


def test_pickle_detector_data_flag_and_reference_statistics(files, tmp_path):
    scripted = _invoke('--network', files['bare'], '--data', files['data'], '--metrics', 'fid2k_full', '--detector',
                       files['inception'], '--workers', 0, '--quiet')
    pickled = _invoke('--network', files['bare'], '--data', files['data'], '--metrics', 'fid2k_full', '--detector',
                      files['inception_pkl'], '--trust-detector', '--workers', 0, '--quiet')
    assert scripted.exit_code == 0 and pickled.exit_code == 0, scripted.output + pickled.output
    fid = _json_lines(scripted.output)[0]['results']['fid2k_full']
    assert _json_lines(pickled.output)[0]['results']['fid2k_full'] == pytest.approx(fid, rel=1e-9)  # same weights
    assert not [name for name in os.listdir(tmp_path.parent) if name.startswith('metric-')]  # no run dir: print only

    mu, sigma, count = frechet_inception_distance.dataset_moments(files['data'], detector=files['inception'],
                                                                  num_workers=0)
    frechet_inception_distance.save_ref_stats(tmp_path / 'ref.npz', mu, sigma)
    with_ref = _invoke('--network', files['bare'], '--data', files['data'], '--metrics', 'fid2k_full', '--ref',
                       tmp_path / 'ref.npz', '--detector', files['inception'], '--workers', 0, '--quiet')
    assert with_ref.exit_code == 0 and count == 12
    assert _json_lines(with_ref.output)[0]['results']['fid2k_full'] == pytest.approx(fid, rel=1e-9)


def test_dry_run(files):
    result = _invoke('--network', files['pkl'], '--metrics', 'is2k', '--dry-run', '--seed', 3)
    assert result.exit_code == 0, result.output
    options = json.loads(result.output)
    assert options['metrics'] == ['is2k'] and options['random_seed'] == 3 and options['num_gpus'] == 1


ERRORS = [
    (['--network', '{pkl}', '--metrics', 'fid3k'], "--metrics: unknown metric 'fid3k'; valid metrics: fid50k_full"),
    (['--network', '{pkl}', '--metrics', 'none'], '--metrics: no metric given'),
    (['--network', '{missing}'], '--network: '),
    (['--network', '{pkl}', '--detector', '{missing}'], '--detector: '),
    (['--network', '{pkl}', '--detector-vgg16', '{missing}'], '--detector-vgg16: '),
    (['--network', '{pkl}', '--ref', '{missing}'], '--ref: '),
    (['--network', '{pkl}', '--gpus', '2'], '--gpus: 2, but 1 process(es) were started'),
    (['--network', '{bare}', '--metrics', 'is2k'], '--data: the snapshot records no training_set_kwargs'),
    (['--network', '{bare}', '--data', '{missing}', '--metrics', 'is2k'], '--data: '),
    (['--network', '{data}', '--metrics', 'is2k'], '--network: '),
    (['--network', '{pkl}', '--metrics', 'fid2k_full'],
     '--detector: the inception detector file inception-2015-12-05.pt is not available offline'),
    (['--network', '{pkl}', '--metrics', 'pr2k3_full', '--detector', '{inception}'],
     '--detector-vgg16: the vgg16 detector file vgg16.pt is not available offline'),
]


@pytest.mark.parametrize('args, message', ERRORS, ids=[str(i) for i in range(len(ERRORS))])
def test_user_errors_name_the_flag(files, tmp_path, args, message):
    paths = dict(files, missing=str(tmp_path / 'missing.pkl'))
    result = _invoke(*[arg.format(**paths) for arg in args], '--workers', '0', '--quiet')
    assert result.exit_code != 0 and f'Error: {message}' in result.output, result.output



LATE_ERRORS = [  # (extra arguments, expected message); found only after loading the detector, --ref or the labels.
    (['--metrics', 'is2k', '--detector', '{junk_pt}'], '--detector: detector '),
    (['--metrics', 'fid2k_full', '--detector', '{inception}', '--ref', '{ref5}'], '--ref: reference statistics'),
    (['--metrics', 'fid2k_full', '--ref', '{junk_npz}'], '--ref: reference statistics'),
    (['--metrics', 'kid2k_full', '--ref', '{ref5}'], '--ref: only FID metrics use'),
    (['--network', '{cond_pkl}', '--data', '{cond_data}', '--metrics', 'is2k'],
     '--data: {cond_data} has labels of dim 2, but the network is conditional with c_dim=3'),
]


@pytest.mark.parametrize('args, message', LATE_ERRORS, ids=[str(i) for i in range(len(LATE_ERRORS))])
def test_unusable_detector_reference_and_labels_name_the_flag(files, tmp_path, args, message):
    (tmp_path / 'junk.pt').write_bytes(b'not a detector')
    np.savez(tmp_path / 'ref5.npz', mu=np.zeros(5), sigma=np.eye(5))  # 5 features; the tiny detector gives 8
    (tmp_path / 'junk.npz').write_bytes(b'junk')
    snapshot.save_network_pkl(tmp_path / 'cond.pkl', dict(G_ema=tiny_metrics.make_generator(c_dim=3)))
    paths = dict(files, junk_pt=tmp_path / 'junk.pt', ref5=tmp_path / 'ref5.npz', junk_npz=tmp_path / 'junk.npz',
                 cond_pkl=tmp_path / 'cond.pkl',
                 cond_data=make_zip(tmp_path / 'cond.zip', num=4, res=8, num_classes=2, seed=1))
    args = ['--network', files['bare'], '--data', files['data']] + args  # Later --network / --data win.
    result = _invoke(*[str(arg).format(**paths) for arg in args], '--workers', '0', '--quiet')
    assert result.exit_code != 0 and f'Error: {message.format(**paths)}' in result.output, result.output
