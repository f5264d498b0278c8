"""Tests for edm_bridge/checks.py: every compatibility message and the sigma-band warnings."""

import math
import re
import types
import warnings

import pytest
import torch

from edm_bridge.checks import check_compatible, check_sigma_band, edm_training_share, is_edm_trained
from edm_bridge.denoiser import FrozenDenoiser
from edm_bridge.registry import MODELS


def fake(resolution=64, channels=3, label_dim=0, sigma_min=0.0, sigma_max=math.inf):
    return types.SimpleNamespace(img_resolution=resolution, img_channels=channels, label_dim=label_dim,
                                 sigma_min=sigma_min, sigma_max=sigma_max)


class EDMPrecond(torch.nn.Module):
    """Same class name as EDM's preconditioner: is_edm_trained goes by the name (pickled classes keep it)."""
    img_resolution, img_channels, label_dim, sigma_min, sigma_max = 8, 3, 0, 0.0, math.inf

    def forward(self, x, sigma, class_labels=None):
        return x


def test_compatible_returns_no_notes_when_everything_matches():
    assert check_compatible(fake(label_dim=10), 64, 3, 10) == []
    assert check_compatible(MODELS['adm-lsun-bedroom256'], 256, 3, 0) == []


def test_resolution_mismatch():
    with pytest.raises(ValueError, match=re.escape('denoiser is 64x64 but the generator outputs 256x256; use a '
                                                   '256x256 model')):
        check_compatible(fake(), 256, 3, 0)


def test_channel_mismatch():
    with pytest.raises(ValueError, match=re.escape('denoiser takes 3-channel images but the dataset outputs '
                                                   '1-channel images; use a model trained on 1-channel data')):
        check_compatible(fake(), 64, 1, 0, what='dataset')


def test_conditional_denoiser_with_unconditional_generator():
    with pytest.raises(ValueError, match=re.escape(
            'denoiser is class-conditional (1000 classes) but the generator is unconditional (label_dim 0): the '
            'denoiser would get all-zero labels, which it never saw in training (out of distribution); use an '
            'unconditional denoiser')):
        check_compatible(MODELS['adm-imagenet64-cond'], 64, 3, 0)


def test_class_count_mismatch():
    with pytest.raises(ValueError, match=re.escape(
            "denoiser is conditional on 1000 classes but the generator on 10: the labels must index the same "
            "classes; use a denoiser trained on the generator's 10 classes")):
        check_compatible(fake(label_dim=1000), 64, 3, 10)


def test_unconditional_denoiser_with_conditional_generator_is_a_note():
    notes = check_compatible(fake(), 64, 3, 10)
    assert notes == ['the denoiser is unconditional and the generator conditional on 10 classes: labels are not '
                     'passed to the denoiser, so the score regularises the class-marginal distribution']


def test_compatible_argument_errors():
    with pytest.raises(TypeError, match=re.escape("denoiser (str) has no attribute 'img_resolution'; expected a "
                                                  "Denoiser or registry.ModelEntry")):
        check_compatible('edm-cifar10-32x32-cond-vp', 32, 3, 10)
    with pytest.raises(TypeError, match="img_resolution is float 32.0; expected an int"):
        check_compatible(fake(), 32.0, 3, 0)
    with pytest.raises(ValueError, match="label_dim is -1; expected an int >= 0"):
        check_compatible(fake(), 64, 3, -1)


def test_sigma_band_inside_range_is_silent():
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert check_sigma_band(fake(sigma_min=0.002, sigma_max=80), [0.05, 0.2]) is None
        assert check_sigma_band((0.002, 80.0), torch.tensor([0.004, 0.005])) is None  # A bare range: not EDM-trained.


def test_sigma_band_outside_range():
    with pytest.warns(UserWarning) as record:
        text = check_sigma_band(fake(sigma_min=0.02, sigma_max=100), [0.01, 150.0])
    assert text == ("sigma band [0.01, 150] goes below the denoiser's sigma_min 0.02; "
                    "sigma band [0.01, 150] goes above the denoiser's sigma_max 100")
    assert [str(w.message) for w in record] == [text]


def test_sigma_band_below_edm_training_support():
    band = [0.00363, 0.00406, 0.00454]  # Karras-1000 t = 25, 30, 35 (docs/spec/diffusion.md).
    expected = ("sigma band [0.00363, 0.00454] reaches below 0.01, which an EDM-trained network rarely sees: EDM's "
                "default training (ln sigma ~ N(-1.2, 1.2^2)) puts 0.012% of its samples in this band, so the score "
                "there is poorly trained; query larger sigmas or use a model trained with extra weight on this band")
    for denoiser in (EDMPrecond(), FrozenDenoiser(EDMPrecond())):
        assert is_edm_trained(denoiser)
        with pytest.warns(UserWarning, match=re.escape(expected)):
            assert check_sigma_band(denoiser, band) == expected
    with pytest.warns(UserWarning, match='reaches below 0.01'):
        check_sigma_band((0.0, math.inf), band, edm_trained=True)
    assert check_sigma_band(fake(), band) is None  # Not an EDM class: only the range applies.
    assert not is_edm_trained(fake())


def test_edm_training_share_matches_spec():
    assert edm_training_share(1e-12, 0.01) == pytest.approx(0.0023, abs=5e-5)  # spec: 0.23% below sigma 0.01.
    assert edm_training_share(0.00363, 0.00454) == pytest.approx(0.00012, abs=5e-6)  # spec: 0.012% for [25, 35].


def test_sigma_band_errors():
    with pytest.raises(ValueError, match=re.escape('sigmas are [0.1, -1.0]; expected a non-empty list of positive '
                                                   'finite noise levels')):
        check_sigma_band(fake(), [0.1, -1.0])
    with pytest.raises(ValueError, match=re.escape('sigmas are []; expected')):
        check_sigma_band(fake(), [])
    with pytest.raises(ValueError, match=re.escape("denoiser_or_range is (1.0,); expected (sigma_min, sigma_max)")):
        check_sigma_band((1.0,), [0.1])
    with pytest.raises(ValueError, match=re.escape('sigma range (5, 1) is not ordered; expected 0 <= sigma_min <= '
                                                   'sigma_max')):
        check_sigma_band((5.0, 1.0), [0.1])
    with pytest.raises(TypeError, match=re.escape("denoiser_or_range (ModelEntry) has no attribute 'sigma_min'; "
                                                  "expected a Denoiser or (sigma_min, sigma_max)")):
        check_sigma_band(MODELS['adm-imagenet64-cond'], [0.1])
