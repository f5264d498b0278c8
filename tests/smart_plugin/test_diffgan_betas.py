"""Tests for smart_plugin/diffgan_betas.py: the seven released beta schedules against values computed by hand, and
alpha_bar in float32 as released."""

import math
import re

import numpy as np
import pytest
import torch

from smart_plugin import diffgan_betas
from smart_plugin.diffgan_betas import BETA_SCHEDULES, alpha_bar, betas


def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


def _cosine_alpha_bar(i, T):
    return math.cos((i / T + 0.008) / 1.008 * math.pi / 2) ** 2


def hand_betas(schedule, T, start, end):
    """beta_1..beta_T written out one step at a time with the math module."""
    out = []
    for t in range(1, T + 1):
        u = (t - 1) / (T - 1) if T > 1 else 0.0  # Position of step t on the linspace grid.
        if schedule == 'linear':
            out.append(start + (end - start) * u)
        elif schedule == 'quad':
            out.append((math.sqrt(start) + (math.sqrt(end) - math.sqrt(start)) * u) ** 2)
        elif schedule == 'const':
            out.append(end)
        elif schedule == 'jsd':
            out.append(1 / (T - t + 1))
        elif schedule == 'sigmoid':
            out.append(start + (end - start) * _sigmoid(-6 + 12 * u))
        elif schedule == 'cosine':
            beta = 1 - _cosine_alpha_bar(t, T) / _cosine_alpha_bar(t - 1, T)
            out.append(min(max(beta, 0.0), 0.999))
        elif schedule == 'continuous_t':
            out.append(1 - math.exp(-0.1 / T - 0.5 * (5 - 0.1) * (2 * t - 1) / T ** 2))
    return np.array(out)


def test_schedule_names_as_released():
    assert BETA_SCHEDULES == ('linear', 'quad', 'const', 'jsd', 'sigmoid', 'cosine', 'continuous_t')


@pytest.mark.parametrize('schedule', BETA_SCHEDULES)
@pytest.mark.parametrize('T', [1, 5, 1000])
def test_betas_match_hand_computed(schedule, T):
    got = betas(schedule, T, 1e-4, 0.02)
    assert got.dtype == np.float64 and got.shape == (T,)
    np.testing.assert_allclose(got, hand_betas(schedule, T, 1e-4, 0.02), rtol=1e-12, atol=1e-15)


def test_literal_values():
    np.testing.assert_allclose(betas('linear', 5, 1e-4, 0.02), [1e-4, 0.005075, 0.01005, 0.015025, 0.02], rtol=1e-14)
    np.testing.assert_allclose(betas('quad', 3, 1e-4, 0.01), [1e-4, 0.003025, 0.01], rtol=1e-14)  # (0.01+0.1)/2=0.055
    assert betas('const', 3, 1e-4, 0.02).tolist() == [0.02, 0.02, 0.02]
    np.testing.assert_allclose(betas('jsd', 4, 1e-4, 0.02), [1 / 4, 1 / 3, 1 / 2, 1], rtol=1e-15)
    assert betas('sigmoid', 3, 0.0, 0.5)[1] == pytest.approx(0.25, abs=1e-15)  # sigmoid(0) = 1/2
    assert betas('cosine', 4, 1e-4, 0.02)[-1] == 0.999  # alpha_bar_T = cos(pi/2)^2 ~ 0: clipped.
    assert betas('continuous_t', 1, 1e-4, 0.02)[0] == pytest.approx(1 - math.exp(-0.1 - 2.45), rel=1e-14)


@pytest.mark.parametrize('schedule', BETA_SCHEDULES)
def test_alpha_bar_is_the_float32_cumprod(schedule):
    ab = alpha_bar(schedule, 10, 1e-4, 0.02)
    assert ab.dtype == torch.float32 and ab.shape == (11,) and ab[0] == 1.0
    # As released: float32 betas, 1 - beta and the cumulative product all in float32.
    expected = torch.cumprod(1 - torch.from_numpy(hand_betas(schedule, 10, 1e-4, 0.02)).float(), 0)
    torch.testing.assert_close(ab[1:], expected, rtol=2e-7, atol=0)
    # Against float64: the float32 error stays small (1 - beta in float32 loses ~eps / (1 - beta) when beta is
    # near 1, e.g. cosine's clipped 0.999 step).
    reference = np.cumprod(1 - hand_betas(schedule, 10, 1e-4, 0.02))
    np.testing.assert_allclose(ab[1:].double().numpy(), reference, rtol=1e-4, atol=1e-12)


def test_linear_alpha_bar_at_T_1000():
    ab = alpha_bar('linear', 1000, 1e-4, 0.02)
    product = math.prod(1 - (1e-4 + (0.02 - 1e-4) * (s - 1) / 999) for s in range(1, 501))
    assert float(ab[500]) == pytest.approx(product, rel=1e-5)
    assert float(ab[1000]) == pytest.approx(4.0358e-5, rel=1e-3)  # The familiar DDPM alpha_bar_T.


def test_errors():
    with pytest.raises(ValueError, match=re.escape("beta schedule is 'cos'; expected one of ['linear', 'quad', "
                                                   "'const', 'jsd', 'sigmoid', 'cosine', 'continuous_t']")):
        betas('cos', 10, 1e-4, 0.02)
    with pytest.raises(ValueError, match=re.escape('T is 0; expected an integer >= 1')):
        diffgan_betas.alpha_bar('linear', 0, 1e-4, 0.02)
