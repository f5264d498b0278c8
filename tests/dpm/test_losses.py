"""Tests for dpm/losses.py: every loss equals a hand computation for fixed noise (same seed, documented
draw order), STF replaces the target with the posterior mean over the (augmented) reference, the band distribution
reaches the net, and errors."""

import re

import pytest
import torch

from dpm import losses as dpm_losses, sigma_dist, stf


class ScaleNet(torch.nn.Module):
    """D(x; sigma) = a x + b sigma (records its inputs)."""

    def __init__(self, a=0.7, b=0.1):
        super().__init__()
        self.a, self.b, self.calls = a, b, []

    def forward(self, x, sigma, class_labels=None, augment_labels=None):
        self.calls.append(dict(x=x, sigma=sigma, labels=class_labels, augment_labels=augment_labels))
        return self.a * x + self.b * sigma


class FlipPipe:
    """Deterministic stand-in for AugmentPipe: flips every second image left-right, labels [N, 9]."""

    def __call__(self, images):
        flip = (torch.arange(images.shape[0]) % 2 == 1).reshape(-1, 1, 1, 1)
        labels = torch.zeros([images.shape[0], 9])
        labels[:, 0] = flip.flatten().float()
        return torch.where(flip, images.flip(3), images), labels


def _images(N=4, seed=0):
    return torch.randn([N, 3, 4, 4], generator=torch.Generator().manual_seed(seed)).clamp(-1, 1)


def _hand_sigma_and_noise(dist, y, seed):
    torch.manual_seed(seed)
    sigma = dist.sample(y.shape[0], device='cpu').reshape(-1, 1, 1, 1)
    return sigma, torch.randn_like(y) * sigma


@pytest.mark.parametrize('name, weight', [
    ('edm', lambda s: (s ** 2 + 0.25) / (s * 0.5) ** 2),
    ('vp', lambda s: 1 / s ** 2),
    ('ve', lambda s: 1 / s ** 2),
])
def test_loss_equals_hand_computation(name, weight):
    loss_fn = dpm_losses.LOSSES[name]()
    y, net = _images(), ScaleNet()
    torch.manual_seed(5)
    loss = loss_fn(net, y)
    sigma, n = _hand_sigma_and_noise(loss_fn.sigma_dist, y, seed=5)
    expected = weight(sigma) * (0.7 * (y + n) + 0.1 * sigma - y) ** 2
    assert loss.shape == (4, 3, 4, 4)
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=0)
    assert net.calls[0]['augment_labels'] is None and net.calls[0]['labels'] is None


def test_default_distributions_and_weight_values():
    assert dpm_losses.EDMLoss().sigma_dist.describe() == dict(name='lognormal', P_mean=-1.2, P_std=1.2)
    assert dpm_losses.VELoss().sigma_dist.describe() == dict(name='loguniform', sigma_min=0.02, sigma_max=100.0)
    assert dpm_losses.VPLoss().sigma_dist.describe() == dict(name='vp', beta_d=19.9, beta_min=0.1, epsilon_t=1e-5)
    assert float(dpm_losses.EDMLoss().weight(torch.tensor(0.5))) == pytest.approx(8.0)  # 2 sd^2 / sd^4 at sigma = sd.
    assert float(dpm_losses.VELoss().weight(torch.tensor(0.1))) == pytest.approx(100.0)


def test_stf_loss_uses_the_posterior_mean_over_the_augmented_reference(monkeypatch):
    y_raw = _images(N=4)
    reference = torch.cat([y_raw, _images(N=6, seed=1)])  # [10, 3, 4, 4], minibatch first.
    labels = torch.eye(2)[[0, 1, 0, 1]]
    ref_labels = torch.eye(2)[[0, 1, 0, 1, 1, 0, 0, 1, 0, 1]]
    seen = {}

    def spy(x_noisy, sigma, ref, chunk, labels=None, ref_labels=None):
        seen.update(ref=ref, chunk=chunk, ref_labels=ref_labels)
        return stf.stf_target_reference(x_noisy, sigma, ref, labels, ref_labels)
    monkeypatch.setattr(stf, 'stf_target', spy)
    loss_fn = dpm_losses.VELoss(stf=True, stf_chunk=3)
    net = ScaleNet()
    torch.manual_seed(2)
    loss = loss_fn(net, y_raw, labels, augment_pipe=FlipPipe(), reference=reference, reference_labels=ref_labels)
    ref_aug, aug_labels = FlipPipe()(reference)
    y = ref_aug[:4]  # The minibatch's own augmented copies come first in the reference.
    sigma, n = _hand_sigma_and_noise(loss_fn.sigma_dist, y, seed=2)
    target = stf.stf_target_reference(y + n, sigma, ref_aug, labels, ref_labels)
    torch.testing.assert_close(loss, (0.7 * (y + n) + 0.1 * sigma - target) ** 2 / sigma ** 2, rtol=1e-5, atol=0)
    assert torch.equal(seen['ref'], ref_aug) and seen['chunk'] == 3 and torch.equal(seen['ref_labels'], ref_labels)
    assert torch.equal(net.calls[0]['augment_labels'], aug_labels[:4]) and torch.equal(net.calls[0]['labels'], labels)
    assert not torch.allclose(target, y)  # The stable target differs from the plain one at these sigmas.


def test_stf_with_only_the_minibatch_at_tiny_sigma_is_the_plain_target():
    y = _images()
    dist = sigma_dist.LadderSigma([1e-3])
    plain, stable = dpm_losses.EDMLoss(dist), dpm_losses.EDMLoss(dist, stf=True)
    torch.manual_seed(0)
    a = plain(ScaleNet(), y)
    torch.manual_seed(0)
    b = stable(ScaleNet(), y, reference=y)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=0)


def test_band_mixture_sigmas_reach_the_net():
    lo, hi = sigma_dist.smart_band('ddpm-linear', 40, 60)
    net = ScaleNet()
    dpm_losses.EDMLoss(sigma_dist.BandMixture(sigma_dist.LogNormalSigma(), lo, hi, share=1.0))(net, _images(N=64))
    sigma = net.calls[0]['sigma'].flatten()
    assert sigma.shape == (64,) and float(sigma.min()) >= lo * (1 - 1e-6) and float(sigma.max()) <= hi * (1 + 1e-6)


@pytest.mark.parametrize('call, message', [
    (lambda: dpm_losses.EDMLoss(stf=True)(ScaleNet(), _images()), 'has stf=True: pass reference'),
    (lambda: dpm_losses.EDMLoss()(ScaleNet(), _images(), reference=_images()), 'has stf=False; construct it with'),
    (lambda: dpm_losses.EDMLoss(stf=True)(ScaleNet(), _images(), reference=_images(N=2)),
     'reference [2, 3, 4, 4]: expected [R >= 4, 3, 4, 4]'),
    (lambda: dpm_losses.EDMLoss(stf=True)(ScaleNet(), _images(), torch.eye(2)[[0, 1, 0, 1]], reference=_images()),
     'conditional STF needs reference_labels'),
    (lambda: dpm_losses.EDMLoss(sigma_dist='lognormal'), 'sigma_dist is str; expected a SigmaDistribution'),
    (lambda: dpm_losses.VPLoss(sigma_data=0), 'sigma_data=0: expected a number > 0'),
    (lambda: dpm_losses.VELoss(stf_chunk=0), 'stf_chunk=0: expected an integer >= 1'),
])
def test_errors(call, message):
    with pytest.raises((ValueError, TypeError), match=re.escape(message)):
        call()
