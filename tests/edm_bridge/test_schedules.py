"""Tests for edm_bridge.schedules: the spec's t -> sigma table, independent references, round trips and errors."""

import math
import re

import numpy as np
import pytest
import torch

from edm_bridge.schedules import (DDPMSchedule, KarrasSchedule, ListSchedule, VPSchedule, get_schedule,
                                  parse_schedule)

ALL_NAMES = ['ddpm-linear', 'ddpm-cosine', 'karras', 'vp']

# docs/spec/diffusion.md section 1: EDM-equivalent sigma_hat = sigma_t / alpha_t, as printed there.
SPEC_TABLE = {  # t: (DDPM linear, DDPM cosine, Karras-1000)
    25: ('0.0955', '0.0515', '0.00363'),
    30: ('0.1116', '0.0596', '0.00406'),
    35: ('0.1276', '0.0675', '0.00454'),
    40: ('0.1437', '0.0755', '0.00506'),
    50: ('0.1760', '0.0914', '0.00627'),
    60: ('0.2085', '0.1072', '0.00772'),
}


@pytest.mark.parametrize('column, name', [(0, 'ddpm-linear'), (1, 'ddpm-cosine'), (2, 'karras')])
def test_spec_table_to_three_significant_digits(column, name):
    # Within one unit of the 3rd significant digit: two printed entries are rounded up where float64 (and float32)
    # give just below the rounding point (linear t=30: 0.111546, spec 0.1116; cosine t=50: 0.0913475, spec 0.0914).
    # Every other printed digit matches. The exact oracles below check the formulas to 1e-10.
    schedule = get_schedule(name)
    for t, row in SPEC_TABLE.items():
        spec = float(row[column])
        tolerance = 10 ** (math.floor(math.log10(spec)) - 2)
        assert abs(schedule.sigma_hat(t) - spec) <= tolerance, (name, t)


def test_ddpm_linear_matches_a_running_product():
    betas = [1e-4 + (0.02 - 1e-4) * s / 999 for s in range(1000)]
    alpha_bar, expected = 1.0, []
    for beta in betas:
        alpha_bar *= 1 - beta
        expected.append(math.sqrt((1 - alpha_bar) / alpha_bar))
    schedule = get_schedule('ddpm-linear')
    np.testing.assert_allclose(schedule.sigma_grid, expected, rtol=1e-12)
    np.testing.assert_allclose(schedule.alpha_bar, 1 / (1 + np.square(expected)), rtol=1e-12)


def test_ddpm_cosine_equals_iddpm_precond_grid_reversed():
    # EDM's iDDPMPrecond builds its grid backwards from u_M = 0 (C_1 0.001, C_2 0.008); spec: u_j = cosine step 999-j.
    M, C1, C2 = 1000, 0.001, 0.008
    alpha_bar = lambda j: math.sin(0.5 * math.pi * j / M / (C2 + 1)) ** 2
    u = [0.0] * (M + 1)
    for j in range(M, 0, -1):
        u[j - 1] = math.sqrt((u[j] ** 2 + 1) / max(alpha_bar(j - 1) / alpha_bar(j), C1) - 1)
    np.testing.assert_allclose(get_schedule('ddpm-cosine').sigma_grid, u[M - 1::-1], rtol=1e-10)


def test_karras_and_vp_endpoints_and_formula():
    karras = get_schedule('karras', num_steps=11, sigma_min=0.01, sigma_max=10, rho=3)
    assert (karras.sigma_min, karras.sigma_max) == (0.01, 10)
    assert karras.sigma_hat(5) == pytest.approx(((0.01 ** (1 / 3) + 10 ** (1 / 3)) / 2) ** 3, rel=1e-12)
    vp = get_schedule('vp')
    sigma = lambda u: math.sqrt(math.exp(0.5 * 19.9 * u * u + 0.1 * u) - 1)
    assert vp.sigma_hat(0) == pytest.approx(sigma(1e-5), rel=1e-9)
    assert vp.sigma_hat(999) == pytest.approx(sigma(1.0), rel=1e-12)
    assert vp.sigma_hat(333) == pytest.approx(sigma(1e-5 + (1 - 1e-5) * 333 / 999), rel=1e-12)


def test_ddpm_linear_rescales_betas_for_other_step_counts():
    betas = get_schedule('ddpm-linear', num_steps=500).betas
    assert (len(betas), betas[0], betas[-1]) == (500, pytest.approx(2e-4), pytest.approx(0.04))


@pytest.mark.parametrize('name', ALL_NAMES)
def test_grid_ascends_and_bounds_match(name):
    schedule = get_schedule(name)
    grid = schedule.sigma_grid
    assert grid.shape == (1000,) and grid.dtype == np.float64
    assert np.all(np.diff(grid) > 0)
    assert (schedule.sigma_min, schedule.sigma_max) == (grid[0], grid[-1])


@pytest.mark.parametrize('name', ALL_NAMES)
def test_t_for_sigma_inverts_sigma_hat(name):
    schedule = get_schedule(name)
    t = np.arange(schedule.num_steps)
    np.testing.assert_array_equal(schedule.t_for_sigma(schedule.sigma_hat(t)), t)
    t_torch = torch.arange(schedule.num_steps)
    for dtype in (torch.float64, torch.float32):  # Callers often pass float32 sigmas.
        sigma = schedule.sigma_hat(t_torch).to(dtype)
        assert torch.equal(schedule.t_for_sigma(sigma), t_torch)
    assert schedule.t_for_sigma(schedule.sigma_hat(37)) == 37


def test_t_for_sigma_snaps_to_nearest_in_log_sigma():
    schedule = parse_schedule('list:0.01,0.04,1.0')
    assert schedule.t_for_sigma(np.array([0.0, 0.0199, 0.0201, 0.199, 0.201, 1e9])).tolist() == [0, 0, 1, 1, 2, 2]
    # Geometric midpoints are 0.02 and 0.2; the input shape is kept.
    assert schedule.t_for_sigma(torch.tensor([[0.0199], [0.0201], [0.199], [0.201]])).tolist() == [[0], [1], [1], [2]]


def test_return_types():
    schedule = get_schedule('karras')
    assert isinstance(schedule.sigma_hat(3), float) and isinstance(schedule.t_for_sigma(0.1), int)
    out = schedule.sigma_hat(torch.tensor([1, 2], dtype=torch.int32))
    assert out.dtype == torch.float64 and out.shape == (2,)
    assert schedule.t_for_sigma(torch.tensor([0.1])).dtype == torch.int64
    assert schedule.t_for_sigma(np.array([0.1, 0.2])).dtype == np.int64


def test_parse_schedule():
    assert parse_schedule('karras') == KarrasSchedule()
    assert parse_schedule('karras:1000,0.002,80,7') == KarrasSchedule(1000, 0.002, 80.0, 7.0)
    assert parse_schedule('karras:18') == KarrasSchedule(num_steps=18)
    assert parse_schedule('ddpm-cosine') == DDPMSchedule(beta_schedule='cosine')
    assert parse_schedule('ddpm-linear:500') == DDPMSchedule(num_steps=500)
    assert parse_schedule('vp:100,19.9,0.1,1e-3') == VPSchedule(100, 19.9, 0.1, 1e-3)
    schedule = parse_schedule('list:0.01,0.02,0.05')
    assert schedule == ListSchedule(sigmas=(0.01, 0.02, 0.05))
    assert schedule.num_steps == 3 and schedule.sigma_hat(1) == 0.02


def test_describe():
    assert get_schedule('karras').describe() == ('karras(num_steps=1000, sigma_min=0.002, sigma_max=80.0, rho=7.0): '
                                                 't in [0, 999] -> sigma_hat in [0.002, 80]')
    assert get_schedule('ddpm-linear').describe() == ('ddpm-linear(num_steps=1000): t in [0, 999] -> sigma_hat in '
                                                      '[0.01, 157.4]')


@pytest.mark.parametrize('call, error, message', [
    (lambda: get_schedule('cosine'), ValueError,
     "schedule name='cosine': expected one of ['ddpm-linear', 'ddpm-cosine', 'karras', 'vp', 'list']"),
    (lambda: get_schedule('karras', sigma=1), TypeError,
     "schedule 'karras' got unknown parameter(s) ['sigma']: expected some of ['num_steps', 'sigma_min', "
     "'sigma_max', 'rho']"),
    (lambda: get_schedule('list'), TypeError, "schedule 'list' needs sigmas=[...]"),
    (lambda: parse_schedule('edm:1'), ValueError,
     "schedule='edm:1': unknown name 'edm'; expected one of ['ddpm-linear', 'ddpm-cosine', 'karras', 'vp', 'list']"),
    (lambda: parse_schedule('karras:1000.5'), ValueError,
     "schedule='karras:1000.5': num_steps='1000.5' is not a valid int"),
    (lambda: parse_schedule('ddpm-linear:10,20'), ValueError,
     "schedule='ddpm-linear:10,20': 'ddpm-linear' takes at most 1 value(s) (num_steps)"),
    (lambda: parse_schedule('list:0.05,0.01'), ValueError,
     "schedule='list:0.05,0.01': sigmas=[0.05, 0.01]: expected at least two positive, finite, strictly "
     "ascending noise levels"),
    (lambda: parse_schedule(3), TypeError, 'schedule=3: expected a string such as "karras:1000,0.002,80,7"'),
    (lambda: get_schedule('karras', sigma_min=1, sigma_max=1), ValueError,
     'sigma_min=1, sigma_max=1: expected 0 < sigma_min < sigma_max < inf'),
    (lambda: get_schedule('karras', rho=0), ValueError, 'rho=0: expected a positive number'),
    (lambda: get_schedule('vp', eps_t=0), ValueError, 'eps_t=0: expected a number in (0, 1)'),
    (lambda: get_schedule('ddpm-cosine', num_steps=1), ValueError, 'num_steps=1: expected an integer >= 2'),
    (lambda: DDPMSchedule(beta_schedule='quad'), ValueError,
     "beta_schedule='quad': expected 'linear' or 'cosine'"),
    (lambda: get_schedule('karras').sigma_hat(1000), ValueError, 't spans [1000, 1000]: expected timesteps in '
     '[0, 999]'),
    (lambda: get_schedule('karras').sigma_hat(torch.tensor([-1, 3])), ValueError,
     't spans [-1, 3]: expected timesteps in [0, 999]'),
    (lambda: get_schedule('karras').sigma_hat(2.0), TypeError,
     't=2.0: expected an integer or an integer array of timesteps'),
    (lambda: get_schedule('karras').sigma_hat(torch.tensor([2.0])), TypeError,
     't has dtype torch.float32: expected an integer tensor of timesteps'),
    (lambda: get_schedule('karras').t_for_sigma(-0.1), ValueError,
     'sigma=-0.1: expected non-negative noise levels (no NaN)'),
    (lambda: get_schedule('karras').t_for_sigma(torch.tensor([float('nan')])), ValueError,
     'sigma=tensor([nan]): expected non-negative noise levels (no NaN)'),
])
def test_errors(call, error, message):
    with pytest.raises(error, match=f'^{re.escape(message)}$'):
        call()
