"""Fixtures of the metrics tests: tiny TorchScript detectors found through $SMART_DETECTOR_DIR, a private download /
statistics cache ($DNNLIB_CACHE_DIR), a tiny dataset zip and a tiny generator. Nothing touches the network."""

import types

import pytest

import tiny_datasets
import tiny_metrics


@pytest.fixture(scope='session')
def detector_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp('detectors')
    return types.SimpleNamespace(dir=str(folder),
                                 inception=tiny_metrics.save_torchscript(folder / 'inception-2015-12-05.pt'),
                                 vgg16=tiny_metrics.save_torchscript(folder / 'vgg16.pt', num_features=6, seed=1))


@pytest.fixture
def metric_env(detector_files, tmp_path, monkeypatch):
    """SMART_DETECTOR_DIR -> the tiny detectors, DNNLIB_CACHE_DIR -> an empty folder of this test."""
    monkeypatch.setenv('SMART_DETECTOR_DIR', detector_files.dir)
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    return types.SimpleNamespace(cache=tmp_path / 'cache', **vars(detector_files))


@pytest.fixture(scope='session')
def dataset_zip(tmp_path_factory):
    return tiny_datasets.make_zip(tmp_path_factory.mktemp('data') / 'tiny.zip', num=12, res=8, seed=3)


@pytest.fixture(scope='session')
def tiny_G():
    return tiny_metrics.make_generator()
