"""The digit detector command (metrics.train_classifier), the digit metrics (metrics.digit_metrics) and the compare
command (metrics.compare) on tiny train.py runs: numbers equal to calc_metrics', seed groups, paired differences of
runs resumed from one snapshot, the cache, and one-line errors."""

import json
import os
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from metrics import compare, digit_metrics
from tiny_datasets import make_zip

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
import calc_metrics  # noqa: E402
import train  # noqa: E402
from metrics import train_classifier  # noqa: E402

TINY = ['--cfg', 'stylegan2', '--batch', '4', '--cbase', '128', '--cmax', '16', '--map-depth', '2', '--mbstd-group',
        '2', '--workers', '0', '--tick', '0.008', '--snap', '1', '--aug', 'noaug']
NUM_GEN = 2000  # As calc_metrics' fid2k_full, kid2k_full, pr2k3_full.
FEW = 100  # Generated images where only the bookkeeping is tested.


def _train(*args):
    result = CliRunner().invoke(train.main, [str(a) for a in args] + TINY)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('compare')
    os.environ['DNNLIB_CACHE_DIR'] = str(tmp / 'cache')  # A cold statistics cache, as a first calc_metrics run.
    data = make_zip(tmp / 'digits.zip', num=60, res=16, num_classes=10)
    result = CliRunner().invoke(train_classifier.main, ['--data', data, '--out', str(tmp / 'det.pt'), '--epochs', '2'])
    assert result.exit_code == 0, result.output
    runs = tmp / 'runs'
    for seed in (0, 1):
        _train('--outdir', runs, '--data', data, '--kimg', '0.008', '--seed', seed)
    first = sorted(runs.iterdir())[0]
    resume = str(first / 'network-snapshot-000000.008.pkl')
    _train('--outdir', runs, '--data', data, '--kimg', '0.016', '--resume', resume)
    _train('--outdir', runs, '--data', data, '--kimg', '0.016', '--resume', resume, '--glr', '0.05')
    yield dict(data=data, detector=str(tmp / 'det.pt'), runs=sorted(str(p) for p in runs.iterdir()), tmp=tmp,
               output=result.output)
    del os.environ['DNNLIB_CACHE_DIR']


def test_train_classifier_prints_accuracy_and_saves_a_16x16_detector(setup):
    assert 'Held-out accuracy' in setup['output'] and '(48 for training, 16x16)' in setup['output']
    assert digit_metrics.detector_resolution(setup['detector']) == 16


def test_metrics_equal_calc_metrics(setup):
    pkl = compare.list_snapshots(setup['runs'][0])[-1][1]
    kwargs = dict(num_gpus=1, device='cpu', progress=False, detector=setup['detector'],
                  detector_vgg16=setup['detector'], random_seed=0, num_workers=0)
    results = calc_metrics.evaluate(pkl, ['fid2k_full', 'kid2k_full', 'pr2k3_full'], kwargs, None, None, False, 0)
    ours = compare.evaluate_snapshot(pkl, setup['detector'], num_gen=NUM_GEN)
    values = {k: v for result in results for k, v in result.results.items()}
    assert ours['fd'] == pytest.approx(values['fid2k_full'], rel=1e-9, abs=1e-9)
    assert ours['kid'] == pytest.approx(values['kid2k_full'], rel=1e-9, abs=1e-12)
    assert ours['precision'] == pytest.approx(values['pr2k3_full_precision'], abs=1e-7)
    assert ours['recall'] == pytest.approx(values['pr2k3_full_recall'], abs=1e-7)
    assert 0 <= ours['recognisable'] <= 1 and ours['class_kl'] >= 0
    cache = json.loads(open(os.path.join(setup['runs'][0], compare.CACHE_NAME)).read())
    assert list(cache.values()) == [ours]


def test_groups_pairs_and_cache(setup, monkeypatch):
    result = compare.compare_runs(setup['runs'], setup['detector'], num_gen=FEW)
    metrics = [run['metrics'] for run in result['runs']]
    assert [run['kimg'] for run in result['runs']] == [0.008, 0.008, 0.016, 0.016]
    assert [(g['n'], g['seeds']) for g in result['groups']] == [(2, [0, 1]), (1, [0]), (1, [0])]
    for key in digit_metrics.METRIC_KEYS:
        assert result['groups'][0]['mean'][key] == pytest.approx((metrics[0][key] + metrics[1][key]) / 2)
        assert result['groups'][0]['std'][key] == pytest.approx(abs(metrics[0][key] - metrics[1][key]) / np.sqrt(2))
    assert len(result['pairs']) == 1
    pair = result['pairs'][0]
    assert (pair['reference'], pair['run']) == (setup['runs'][2], setup['runs'][3])
    assert pair['diff'] == {k: metrics[3][k] - metrics[2][k] for k in digit_metrics.METRIC_KEYS}

    def refuse(*args, **kwargs):
        raise AssertionError('recomputed a cached snapshot')
    monkeypatch.setattr(digit_metrics, 'evaluate_generator', refuse)
    assert compare.compare_runs(setup['runs'], setup['detector'], num_gen=FEW) == result


def test_cli_json_table_and_curves(setup):
    out = setup['tmp'] / 'cli'
    args = setup['runs'][:2] + ['--detector', setup['detector'], '--num-gen', str(FEW), '--json', str(out) + '.json',
                                '--curves', str(out) + '.png']
    result = CliRunner().invoke(compare.main, args)
    assert result.exit_code == 0, result.output
    written = json.loads(open(str(out) + '.json').read())
    assert written['runs'][0]['metrics'] == compare.evaluate_snapshot(
        compare.list_snapshots(setup['runs'][0])[-1][1], setup['detector'], FEW)
    assert [len(points) for points in written['curves'].values()] == [2, 2]  # kimg 0 and 0.008
    assert open(str(out) + '.png', 'rb').read(8) == b'\x89PNG\r\n\x1a\n'
    assert f'| {os.path.basename(setup["runs"][0])} | 0.008 |' in result.output


def test_folder_without_snapshots_is_one_line(setup, tmp_path):
    result = CliRunner().invoke(compare.main, [str(tmp_path), '--detector', setup['detector']])
    assert result.exit_code == 1
    assert result.output.strip() == (f'Error: RUN_DIR: {tmp_path}: holds no network-snapshot-*.pkl; expected a '
                                     f'train.py run directory with at least one snapshot')


def test_detector_of_another_resolution_is_one_line(setup, tmp_path):
    data8 = make_zip(tmp_path / 'd8.zip', num=20, res=8, num_classes=10)
    detector8 = str(tmp_path / 'det8.pt')
    trained = CliRunner().invoke(train_classifier.main, ['--data', data8, '--out', detector8, '--epochs', '1'])
    assert trained.exit_code == 0, trained.output
    result = CliRunner().invoke(compare.main, [setup['runs'][0], '--detector', detector8])
    assert result.exit_code == 1
    assert result.output.strip() == (f'Error: --detector: {detector8}: this detector was trained on 8x8 digits, but '
                                     f'the images are 16x16; train one on the run\'s dataset with python -m '
                                     f'metrics.train_classifier --data=ZIP --out=PATH.pt')


def test_train_classifier_refuses_unlabelled_data(tmp_path):
    data = make_zip(tmp_path / 'plain.zip', num=8, res=8)
    result = CliRunner().invoke(train_classifier.main, ['--data', data, '--out', str(tmp_path / 'd.pt')])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f'Error: --data: {data}: use_labels=True but the dataset has no labels (no dataset.json, or "labels": null); '
        f'train unconditionally or add labels with dataset_tool.py']
