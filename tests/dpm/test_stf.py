"""Tests for dpm/stf.py: the chunked STF target equals the brute-force posterior mean (float64, tiny to huge
sigma, chunk sizes that do and do not divide R), its limits, the class mask, and the variance reduction against the
plain target on a Gaussian mixture at an intermediate sigma."""

import re

import pytest
import torch

from dpm.stf import stf_target, stf_target_reference


def _batch(N=3, R=10, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    reference = torch.randn([R, 2, 3, 3], generator=gen, dtype=dtype)
    sigma = torch.tensor([0.3, 1.0, 2.0][:N], dtype=dtype)
    x_noisy = reference[:N] + sigma.reshape(-1, 1, 1, 1) * torch.randn([N, 2, 3, 3], generator=gen, dtype=dtype)
    return x_noisy, sigma, reference


@pytest.mark.parametrize('chunk', [1, 3, 5, 7, 10, 64])
@pytest.mark.parametrize('scale', [1e-3, 0.1, 1.0, 1e3])
def test_chunked_target_equals_brute_force(chunk, scale):
    x_noisy, sigma, reference = _batch()
    fast = stf_target(x_noisy, sigma * scale, reference, chunk=chunk)
    slow = stf_target_reference(x_noisy, sigma * scale, reference)
    assert fast.shape == x_noisy.shape and fast.dtype == torch.float64
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-12)


def test_limits_tiny_sigma_picks_the_nearest_reference_huge_sigma_averages():
    x_noisy, _, reference = _batch()
    tiny = stf_target(reference[:3] + 1e-6, torch.full([3], 1e-4, dtype=torch.float64), reference, chunk=4)
    torch.testing.assert_close(tiny, reference[:3], rtol=0, atol=1e-12)
    huge = stf_target(x_noisy, 1e6, reference, chunk=4)  # A scalar sigma applies to every sample.
    torch.testing.assert_close(huge, reference.mean(dim=0, keepdim=True).expand_as(huge), rtol=0, atol=1e-9)


def test_float32_inputs_keep_their_dtype_and_match_float64():
    x_noisy, sigma, reference = _batch()
    out = stf_target(x_noisy.float(), sigma.float().reshape(-1, 1, 1, 1), reference.float(), chunk=3)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), stf_target_reference(x_noisy, sigma, reference), rtol=0, atol=1e-5)


def test_class_mask_equals_posterior_over_the_same_class():
    x_noisy, sigma, reference = _batch(R=8)
    ref_labels = torch.eye(2, dtype=torch.float64)[[0, 1, 0, 1, 1, 0, 0, 1]]  # [8, 2]
    labels = ref_labels[:3]
    out = stf_target(x_noisy, sigma, reference, chunk=3, labels=labels, ref_labels=ref_labels)
    for i in range(3):
        same = (ref_labels == labels[i]).all(dim=1)
        expected = stf_target_reference(x_noisy[i:i + 1], sigma[i:i + 1], reference[same])
        torch.testing.assert_close(out[i:i + 1], expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out, stf_target_reference(x_noisy, sigma, reference, labels, ref_labels))


def test_stf_reduces_target_variance_on_a_mixture_at_intermediate_sigma():
    """Fixed x_tilde between two modes; y drawn from the true posterior p(y | x_tilde). The plain target is y itself;
    the STF target uses a reference of y plus fresh data. STF's target variance across draws must be far smaller."""
    gen = torch.Generator().manual_seed(0)
    D, K, s, sigma, R, draws = 16, 4, 0.05, 0.6, 128, 200
    mu = torch.randn([K, D], generator=gen, dtype=torch.float64)  # Mixture centres, equal weights, std s.
    x_tilde = (0.5 * (mu[0] + mu[1]) + 0.05 * torch.randn([D], generator=gen, dtype=torch.float64))[None]  # [1, D]
    log_w = -(x_tilde - mu).square().sum(dim=1) / (2 * (s ** 2 + sigma ** 2))
    post_k = log_w.softmax(dim=0)
    shrink = s ** 2 / (s ** 2 + sigma ** 2)
    assert float(post_k.max()) < 0.9  # Intermediate sigma: the posterior is genuinely multi-modal.
    plain, stable = [], []
    for _ in range(draws):
        k = int(torch.multinomial(post_k, 1, generator=gen))
        post_mean = mu[k] + shrink * (x_tilde[0] - mu[k])
        y = post_mean + (s ** 2 * sigma ** 2 / (s ** 2 + sigma ** 2)) ** 0.5 * torch.randn([D], generator=gen,
                                                                                             dtype=torch.float64)
        fresh = mu[torch.randint(K, [R - 1], generator=gen)] + s * torch.randn([R - 1, D], generator=gen,
                                                                                dtype=torch.float64)
        reference = torch.cat([y[None], fresh]).reshape(R, 1, 4, 4)
        plain.append(y)
        stable.append(stf_target(x_tilde.reshape(1, 1, 4, 4), sigma, reference, chunk=50).reshape(D))
    var_plain = float(torch.stack(plain).var(dim=0).sum())
    var_stf = float(torch.stack(stable).var(dim=0).sum())
    assert var_plain > 1.0 and var_stf < 0.1 * var_plain, (var_plain, var_stf)


@pytest.mark.parametrize('kwargs, message', [
    (dict(chunk=0), 'chunk=0: expected an integer >= 1'),
    (dict(reference=torch.zeros([4, 2, 3, 4])), 'expected [N, C, H, W] and [R, C, H, W] with the same C, H, W'),
    (dict(sigma=torch.tensor([1.0, -1.0, 1.0])), 'expected 1 or N=3 values > 0'),
    (dict(labels=torch.zeros([3, 2])), 'labels and ref_labels: pass both'),
    (dict(labels=torch.eye(2)[[0, 0, 0]], ref_labels=torch.eye(2)[[1, 1, 1, 1]]), 'a sample has no reference'),
])
def test_errors(kwargs, message):
    x_noisy, sigma, reference = _batch(R=4, dtype=torch.float32)
    args = {**dict(x_noisy=x_noisy, sigma=sigma, reference=reference), **kwargs}
    with pytest.raises(ValueError, match=re.escape(message)):
        stf_target(**args)
