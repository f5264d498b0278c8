"""edm_bridge.factory: one rule from a score-source spec (registry name, path, 'gaussian') to a frozen Denoiser,
used by SMaRt's pre-flight (local_only) and its set-up alike."""

import os

import pytest
import torch

from edm_bridge import factory
from edm_bridge.denoiser import FrozenDenoiser
from shared_fixtures import fixture_dir


class _Images:
    """Four constant images 0, 1, 2, 3 (uint8 [C, H, W]) with a dataset's len / getitem."""

    def __len__(self):
        return 4

    def __getitem__(self, idx):
        return torch.full([1, 4, 4], idx, dtype=torch.uint8).numpy(), torch.zeros([0]).numpy()

    resolution, num_channels, image_shape = 4, 1, [1, 4, 4]


def test_gaussian_is_fitted_at_setup_only():
    assert factory.load_score_source('gaussian', 4, 1, 0, local_only=True) is None
    source = factory.load_score_source('gaussian', 4, 1, 0, training_set=_Images())
    assert isinstance(source.denoiser, FrozenDenoiser) and source.entry is None
    assert source.label == 'gaussian (per-pixel fit to 4 images)'
    assert not any(param.requires_grad for param in source.denoiser.parameters())
    with pytest.raises(ValueError, match="score source 'gaussian' is fitted to the training set"):
        factory.load_score_source('gaussian', 4, 1, 0)


def test_registry_entry_is_checked_before_anything_is_loaded(monkeypatch):
    monkeypatch.setattr(factory.loading, 'load_denoiser', lambda *args, **kwargs: pytest.fail('loaded'))
    with pytest.raises(ValueError, match='denoiser is 32x32 but the generator outputs 64x64'):
        factory.load_score_source('edm-cifar10-32x32-uncond-vp', 64, 3, 0)
    assert factory.load_score_source('edm-cifar10-32x32-uncond-vp', 32, 3, 0, local_only=True) is None


def test_local_file_is_loaded_frozen_with_its_path_as_label():
    ckpt = os.path.join(fixture_dir('ncsnv2'), 'ncsnv2-cifar10-ngf16-32px', 'checkpoint.pth')
    source = factory.load_score_source(ckpt, 32, 3, 0, local_only=True)
    assert isinstance(source.denoiser, FrozenDenoiser) and source.label == ckpt and source.entry is None
    assert (source.denoiser.img_resolution, source.denoiser.img_channels) == (32, 3)
    assert not source.denoiser.training
