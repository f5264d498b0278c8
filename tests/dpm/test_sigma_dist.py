"""Tests for dpm/sigma_dist.py: each p(sigma) against its closed form, the SMaRt-band share, smart_band's
sigmas against docs/spec/diffusion.md section 1, describe round trips and errors."""

import math
import re

import pytest
import torch

from dpm import sigma_dist as sd

N = 200_000


def _draw(dist, n=N, seed=0):
    return dist.sample(n, 'cpu', generator=torch.Generator().manual_seed(seed)).double()


def _fraction(sigma, lo, hi):
    return float(((sigma >= lo) & (sigma <= hi)).double().mean())


def test_lognormal_moments_and_mass():
    sigma = _draw(sd.LogNormalSigma(-1.2, 1.2))
    assert sigma.dtype == torch.float64 and sigma.shape == (N,)
    assert abs(float(sigma.log().mean()) + 1.2) < 0.01 and abs(float(sigma.log().std()) - 1.2) < 0.01
    dist = sd.LogNormalSigma(-1.2, 1.2)
    assert dist.mass(1e-30, 1e30) == pytest.approx(1.0)
    assert dist.mass(math.exp(-1.2), 1e30) == pytest.approx(0.5, abs=1e-12)
    assert _fraction(sigma, 0.1, 0.5) == pytest.approx(dist.mass(0.1, 0.5), abs=0.004)


def test_loguniform_range_and_mass():
    dist = sd.LogUniformSigma(0.02, 100)
    sigma = _draw(dist)
    assert float(sigma.min()) >= 0.02 * (1 - 1e-6) and float(sigma.max()) <= 100 * (1 + 1e-6)
    assert dist.mass(0.02, 100) == pytest.approx(1.0) and dist.mass(200, 300) == 0.0
    assert dist.mass(1, 10) == pytest.approx(math.log(10) / math.log(5000))
    assert _fraction(sigma, 1, 10) == pytest.approx(dist.mass(1, 10), abs=0.004)


def test_vp_range_inverse_and_mass():
    dist = sd.VPSigma()
    sigma = _draw(dist)
    lo, hi = float(dist.sigma(1e-5)), float(dist.sigma(1.0))
    assert float(sigma.min()) >= lo * (1 - 1e-4) and float(sigma.max()) <= hi * (1 + 1e-4)
    assert hi == pytest.approx(152.0, rel=0.01)  # sqrt(exp(19.9 / 2 + 0.1) - 1), EDM's VP sigma_max.
    assert dist.t_of(float(dist.sigma(0.3))) == pytest.approx(0.3, abs=1e-12)
    assert _fraction(sigma, 0.5, 5.0) == pytest.approx(dist.mass(0.5, 5.0), abs=0.004)


def test_ladder_is_uniform_over_its_values():
    dist = sd.LadderSigma([4.0, 2.0, 1.0, 0.5])
    sigma = _draw(dist, n=40_000).float()
    counts = torch.stack([(sigma == v).sum() for v in (4.0, 2.0, 1.0, 0.5)])
    assert int(counts.sum()) == 40_000 and float((counts / 40_000 - 0.25).abs().max()) < 0.01
    assert dist.mass(0.9, 2.5) == 0.5


@pytest.mark.parametrize('share', [0.0, 0.5, 1.0])
def test_band_share_is_requested_share_plus_base_mass(share):
    lo, hi = sd.smart_band('ddpm-linear', 40, 60)
    base = sd.LogNormalSigma()
    mix = sd.BandMixture(base, lo, hi, share)
    expected = share + (1 - share) * base.mass(lo, hi)
    assert mix.band_mass() == pytest.approx(expected, abs=1e-12)
    assert base.mass(lo, hi) == pytest.approx(0.1109, abs=1e-3)
    assert _fraction(_draw(mix), lo, hi) == pytest.approx(expected, abs=0.004)  # ~4 standard errors at n=200k.


def test_band_draws_are_log_uniform_inside_the_band():
    mix = sd.BandMixture(sd.LogNormalSigma(), 0.1, 1.0, share=1.0)
    sigma = _draw(mix)
    assert _fraction(sigma, 0.1, math.sqrt(0.1)) == pytest.approx(0.5, abs=0.005)
    linear = _draw(sd.BandMixture(sd.LogNormalSigma(), 0.1, 1.0, share=1.0, log_uniform=False))
    assert _fraction(linear, 0.1, 0.55) == pytest.approx(0.5, abs=0.005)


def test_smart_band_matches_the_spec_table():
    assert sd.smart_band('ddpm-linear', 40, 60) == pytest.approx((0.1437, 0.2085), abs=1e-4)
    assert sd.smart_band('linear', 40, 60) == sd.smart_band('ddpm-linear', 40, 60)
    assert sd.smart_band('cosine', 25, 35) == pytest.approx((0.0515, 0.0675), abs=1e-4)
    assert sd.smart_band('karras', 40, 60) == pytest.approx((0.00506, 0.00772), abs=1e-5)


def test_generator_makes_draws_reproducible():
    mix = sd.BandMixture(sd.VPSigma(), 0.1, 0.2, 0.3)
    assert torch.equal(_draw(mix, n=64, seed=3), _draw(mix, n=64, seed=3))
    assert not torch.equal(_draw(mix, n=64, seed=3), _draw(mix, n=64, seed=4))


@pytest.mark.parametrize('dist', [sd.LogNormalSigma(-1.0, 1.5), sd.LogUniformSigma(0.01, 50), sd.VPSigma(18.0),
                                  sd.LadderSigma([1.0, 0.1]),
                                  sd.BandMixture(sd.LadderSigma([2.0, 0.5]), 0.1, 0.2, 0.4)])
def test_describe_round_trip(dist):
    rebuilt = sd.sigma_dist_from_dict(dist.describe())
    assert type(rebuilt) is type(dist) and rebuilt.describe() == dist.describe()
    assert torch.equal(_draw(rebuilt, n=32), _draw(dist, n=32))


@pytest.mark.parametrize('make, message', [
    (lambda: sd.BandMixture(sd.LogNormalSigma(), 0.1, 0.2, 1.5), 'share=1.5: expected a number in [0, 1]'),
    (lambda: sd.BandMixture(sd.LogNormalSigma(), 0.2, 0.1, 0.5), 'sigma_lo=0.2, sigma_hi=0.1: expected sigma_lo < '),
    (lambda: sd.BandMixture('lognormal', 0.1, 0.2, 0.5), 'base is str; expected a SigmaDistribution'),
    (lambda: sd.LogNormalSigma(P_std=0), 'P_std=0: expected a finite number > 0'),
    (lambda: sd.LadderSigma([]), 'sigmas=[]: expected a non-empty list'),
    (lambda: sd.smart_band('ddpm-linear', 60, 40), 't_min=60, t_max=40: expected t_min < t_max'),
    (lambda: sd.smart_band('ddpm-linear', 40, 1000), 't_max=1000: expected < 1000'),
    (lambda: sd.smart_band('bogus', 40, 60), "unknown name 'bogus'"),
    (lambda: sd.sigma_dist_from_dict({'name': 'nope'}), "expected a dict with name in ['lognormal'"),
])
def test_errors_name_the_argument(make, message):
    with pytest.raises((ValueError, TypeError), match=re.escape(message)):
        make()
