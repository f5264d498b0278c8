"""The metric registry, calc_metric on a tiny generator with tiny detectors (result format, repeatability, RNG left
alone, the dataset statistics cache) and report_metric's jsonl lines."""

import json
import math
import os

import numpy as np
import pytest
import torch

import tiny_datasets
from free_port import free_port
from tiny_metrics import make_generator
from metrics import metric_main, metric_utils
from torch_utils import distributed

VALID = ['fid50k_full', 'kid50k_full', 'pr50k3_full', 'is50k', 'ppl2_wend', 'fid50k', 'kid50k', 'pr50k3',
         'ppl_zfull', 'ppl_wfull', 'ppl_zend', 'ppl_wend', 'fid2k_full', 'kid2k_full', 'pr2k3_full', 'is2k',
         'ppl2_wend_2k']


def _kwargs(dataset_zip, G, **overrides):
    kwargs = dict(G=G, dataset_kwargs=dict(class_name='training.dataset.ImageFolderDataset', path=dataset_zip),
                  device='cpu', num_workers=0)
    kwargs.update(overrides)
    return kwargs


def test_registry_and_unknown_names():
    assert metric_main.list_valid_metrics() == VALID
    assert metric_main.is_valid_metric('kid50k_full') and not metric_main.is_valid_metric('eqt50k_int')
    with pytest.raises(ValueError) as info:
        metric_main.calc_metric('eqt50k_int')
    assert str(info.value) == f"unknown metric 'eqt50k_int'; valid metrics: {', '.join(VALID)} (or none)"
    assert metric_main.parse_metric_list('none') == [] and metric_main.parse_metric_list(' ') == []
    assert metric_main.parse_metric_list(' fid2k_full, is2k,fid2k_full') == ['fid2k_full', 'is2k']
    with pytest.raises(ValueError, match="unknown metric 'none'"):
        metric_main.parse_metric_list('fid2k_full,none')


def test_calc_metric_result_is_repeatable_and_leaves_the_rng_alone(metric_env, dataset_zip, tiny_G):
    torch.manual_seed(123)
    np.random.seed(123)
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    first = metric_main.calc_metric('fid2k_full', **_kwargs(dataset_zip, tiny_G))
    assert torch.equal(torch.get_rng_state(), torch_state) and np.random.get_state()[1].tolist() == np_state[1].tolist()
    assert set(first) == {'results', 'metric', 'total_time', 'total_time_str', 'num_gpus'}
    assert first.metric == 'fid2k_full' and first.num_gpus == 1 and list(first.results) == ['fid2k_full']
    assert math.isfinite(first.results.fid2k_full) and first.results.fid2k_full > 0
    again = metric_main.calc_metric('fid2k_full', **_kwargs(dataset_zip, tiny_G))
    other_seed = metric_main.calc_metric('fid2k_full', **_kwargs(dataset_zip, tiny_G, random_seed=1))
    assert again.results == first.results and other_seed.results != first.results


def test_all_quick_metrics_give_their_result_keys(metric_env, dataset_zip, tiny_G):
    results = {}
    for name in ('kid2k_full', 'pr2k3_full', 'is2k'):
        results.update(metric_main.calc_metric(name, **_kwargs(dataset_zip, tiny_G)).results)
    assert sorted(results) == ['is2k_mean', 'is2k_std', 'kid2k_full', 'pr2k3_full_precision', 'pr2k3_full_recall']
    assert 1 <= results['is2k_mean'] <= 10  # between uniform predictions and 10 distinct classes
    assert 0 <= results['pr2k3_full_precision'] <= 1 and 0 <= results['pr2k3_full_recall'] <= 1


def test_dataset_statistics_are_cached_by_content(metric_env, tmp_path, monkeypatch, tiny_G):
    zip_path = tiny_datasets.make_zip(tmp_path / 'ds.zip', num=12, res=8, seed=4)
    loads = []
    original_load = metric_utils.FeatureStats.load
    monkeypatch.setattr(metric_utils.FeatureStats, 'load', lambda path: loads.append(path) or original_load(path))
    first = metric_main.calc_metric('fid2k_full', **_kwargs(zip_path, tiny_G))
    files = os.listdir(metric_env.cache / 'gan-metrics')
    assert loads == [] and len(files) == 1 and files[0].startswith('ds-inception-2015-12-05-')
    second = metric_main.calc_metric('fid2k_full', **_kwargs(zip_path, tiny_G))
    assert loads == [str(metric_env.cache / 'gan-metrics' / files[0])] and second.results == first.results
    moved = tmp_path / 'elsewhere' / 'ds.zip'
    moved.parent.mkdir()
    os.replace(zip_path, moved)  # the same content in another folder: still a hit
    metric_main.calc_metric('fid2k_full', **_kwargs(str(moved), tiny_G))
    assert len(loads) == 2
    tiny_datasets.make_zip(moved, num=12, res=8, seed=5)  # new content at the same path: a miss, a new file
    changed = metric_main.calc_metric('fid2k_full', **_kwargs(str(moved), tiny_G))
    assert len(loads) == 2 and len(os.listdir(metric_env.cache / 'gan-metrics')) == 2
    assert changed.results != first.results
    metric_main.calc_metric('fid2k_full', **_kwargs(str(moved), tiny_G, cache=False))
    assert len(loads) == 2


def test_report_metric_appends_jsonl_lines(tmp_path):
    pkl = tmp_path / 'network-snapshot-000004.pkl'
    pkl.write_bytes(b'')
    result = dict(results=dict(fid2k_full=12.5), metric='fid2k_full', total_time=3.25, total_time_str='3s',
                  num_gpus=1)
    printed = []
    for _ in range(2):
        metric_main.report_metric(result, run_dir=str(tmp_path), snapshot_pkl=str(pkl), print_fn=printed.append)
    lines = (tmp_path / 'metric-fid2k_full.jsonl').read_text().splitlines()
    assert lines == printed and len(lines) == 2
    entry = json.loads(lines[0])
    assert list(entry) == ['results', 'metric', 'total_time', 'total_time_str', 'num_gpus', 'snapshot_pkl',
                           'timestamp']
    assert entry['snapshot_pkl'] == 'network-snapshot-000004.pkl' and entry['results'] == {'fid2k_full': 12.5}
    line = metric_main.report_metric(result, snapshot_pkl='https://x/net.pkl', print_fn=printed.append)
    assert json.loads(line)['snapshot_pkl'] == 'https://x/net.pkl' and len(printed) == 3


def test_conditional_generator_needs_labels_and_options_are_checked(metric_env, dataset_zip):
    with pytest.raises(ValueError, match="G is conditional with c_dim=2, but the dataset .* gives labels of dim 0"):
        metric_main.calc_metric('is2k', **_kwargs(dataset_zip, make_generator(c_dim=2)))
    with pytest.raises(ValueError, match='G=None: this metric needs a generator'):
        metric_main.calc_metric('is2k', **_kwargs(dataset_zip, None))
    with pytest.raises(ValueError, match='num_gpus=2, rank=2: expected integers with 0 <= rank < num_gpus'):
        metric_main.calc_metric('is2k', **_kwargs(dataset_zip, None, num_gpus=2, rank=2))
    message = r"dataset_kwargs=\{'max_size': None, 'xflip': False\}: this metric needs a dataset \(class_name, path"
    with pytest.raises(ValueError, match=message):
        metric_main.calc_metric('fid2k_full', G=None, device='cpu')


def test_conditional_generator_with_labels(metric_env, tmp_path):
    zip_path = tiny_datasets.make_zip(tmp_path / 'cond.zip', num=12, res=8, num_classes=2, seed=6)
    result = metric_main.calc_metric('is2k', **_kwargs(zip_path, make_generator(c_dim=2),
                                                      dataset_kwargs=dict(class_name='training.dataset.'
                                                                          'ImageFolderDataset', path=zip_path,
                                                                          use_labels=True)))
    assert 1 <= result.results.is2k_mean <= 10


def _worker(rank, port, kwargs, out_dir):
    torch.set_num_threads(1)
    with distributed.process_group(rank, 2, init_method=f'tcp://127.0.0.1:{port}'):  # Left synchronised.
        _save_metric(rank, kwargs, out_dir)


def _save_metric(rank, kwargs, out_dir):
    result = metric_main.calc_metric('kid2k_full', num_gpus=2, rank=rank, **kwargs)
    with open(os.path.join(out_dir, f'rank{rank}.json'), 'w') as f:
        json.dump(result, f)


def test_two_process_gloo_metric_gives_rank0_result_everywhere(metric_env, dataset_zip, tiny_G, tmp_path):
    # fork: the workers inherit the imported modules instead of importing torch again.
    torch.multiprocessing.start_processes(_worker, args=(free_port(), _kwargs(dataset_zip, tiny_G), str(tmp_path)),
                                          nprocs=2, join=True, start_method='fork')
    results = [json.loads((tmp_path / f'rank{rank}.json').read_text()) for rank in (0, 1)]
    assert results[0]['results'] == results[1]['results'] and results[0]['num_gpus'] == 2
    assert math.isfinite(results[0]['results']['kid2k_full'])
    assert len(os.listdir(metric_env.cache / 'gan-metrics')) == 1  # rank 0 wrote the dataset statistics once
