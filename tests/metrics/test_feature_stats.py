"""FeatureStats (float64 moments, max_items, save/load) and rank interleaving: indices, and a two-process gloo run
whose gathered dataset features equal the single-process ones item for item."""


import numpy as np
import pytest
import torch

from free_port import free_port
from metrics import metric_utils
from metrics.feature_stats import FeatureStats, interleaved_indices
from torch_utils import distributed


def test_mean_and_covariance_in_float64_over_batches():
    x = np.random.RandomState(0).randn(50, 4) * 3 + 1000  # a large mean: float32 moments would lose digits
    stats = FeatureStats(capture_all=True, capture_mean_cov=True)
    for part in np.array_split(x.astype(np.float32), 7):
        stats.append(part)
    mu, sigma = stats.get_mean_cov()
    x32 = x.astype(np.float32).astype(np.float64)
    assert np.allclose(mu, x32.mean(0), rtol=0, atol=1e-9)
    assert np.allclose(sigma, np.cov(x32, rowvar=False, bias=True), rtol=1e-9, atol=1e-6)
    assert mu.dtype == np.float64 and np.array_equal(stats.get_all(), x.astype(np.float32))


def test_max_items_cuts_the_last_batch_and_ignores_the_rest():
    stats = FeatureStats(capture_all=True, max_items=5)
    stats.append(np.arange(8.0).reshape(4, 2))
    assert not stats.is_full()
    stats.append(np.arange(8.0, 16.0).reshape(4, 2))
    stats.append(np.ones([3, 2]))
    assert stats.is_full() and stats.num_items == 5
    assert np.array_equal(stats.get_all(), np.arange(10.0).reshape(5, 2))


def test_errors():
    with pytest.raises(ValueError, match='max_items must be an int >= 1 or None, got 0'):
        FeatureStats(max_items=0)
    stats = FeatureStats(capture_all=True)
    stats.append(np.zeros([2, 3]))
    with pytest.raises(ValueError, match='got 4 features per item, expected 3'):
        stats.append(np.zeros([2, 4]))
    with pytest.raises(ValueError, match='no items were appended'):
        FeatureStats(capture_mean_cov=True).get_mean_cov()


def test_save_and_load_round_trip(tmp_path):
    stats = FeatureStats(capture_all=True, capture_mean_cov=True, max_items=10)
    stats.append(np.random.RandomState(1).randn(6, 3))
    stats.save(tmp_path / 'stats.npz')
    loaded = FeatureStats.load(tmp_path / 'stats.npz')
    assert (loaded.num_items, loaded.max_items, loaded.num_features) == (6, 10, 3)
    assert np.array_equal(loaded.get_all(), stats.get_all())
    assert all(np.array_equal(a, b) for a, b in zip(loaded.get_mean_cov(), stats.get_mean_cov()))


@pytest.mark.parametrize('num_items, num_gpus', [(10, 3), (7, 2), (4, 4), (3, 1)])
def test_interleaved_indices_gather_back_to_dataset_order(num_items, num_gpus):
    per_rank = [interleaved_indices(num_items, num_gpus, rank) for rank in range(num_gpus)]
    assert len({len(indices) for indices in per_rank}) == 1  # equal lengths: every rank makes the same calls
    gathered = [per_rank[rank][i] for i in range(len(per_rank[0])) for rank in range(num_gpus)]
    assert gathered[:num_items] == list(range(num_items))


def _worker(rank, port, dataset_zip, detector, out_dir):
    torch.set_num_threads(1)
    with distributed.process_group(rank, 2, init_method=f'tcp://127.0.0.1:{port}'):  # Left synchronised.
        _save_features(rank, dataset_zip, detector, out_dir)


def _save_features(rank, dataset_zip, detector, out_dir):
    opts = metric_utils.MetricOptions(dataset_kwargs=dict(class_name='training.dataset.ImageFolderDataset',
                                                          path=dataset_zip), num_gpus=2, rank=rank,
                                      device='cpu', cache=False, detector=detector, num_workers=0)
    stats = metric_utils.compute_feature_stats_for_dataset(opts, 'inception', dict(return_features=True),
                                                           batch_size=2, capture_all=True)
    np.save(f'{out_dir}/rank{rank}.npy', stats.get_all())


def test_two_process_gloo_features_equal_single_process(dataset_zip, detector_files, tmp_path):
    # 12 images over 2 ranks in batches of 2: every rank reads every other image, gathered back in order.
    # fork: the workers inherit the imported modules instead of importing torch again (seconds on 2 cores).
    torch.multiprocessing.start_processes(_worker, args=(free_port(), dataset_zip, detector_files.inception,
                                                         str(tmp_path)), nprocs=2, join=True, start_method='fork')
    opts = metric_utils.MetricOptions(dataset_kwargs=dict(class_name='training.dataset.ImageFolderDataset',
                                                          path=dataset_zip), device='cpu', cache=False,
                                      detector=detector_files.inception, num_workers=0)
    single = metric_utils.compute_feature_stats_for_dataset(opts, 'inception', dict(return_features=True),
                                                            batch_size=5, capture_all=True).get_all()
    ranks = [np.load(tmp_path / f'rank{rank}.npy') for rank in (0, 1)]
    assert single.shape == (12, 8)
    assert np.array_equal(ranks[0], single) and np.array_equal(ranks[1], single)
