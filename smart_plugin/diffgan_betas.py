"""Beta schedules of Diffusion-GAN's forward chain (Wang et al., "Diffusion-GAN: Training GANs with Diffusion", ICLR
2023), the seven its release offers (--beta_schedule; docs/spec/diffusion.md §6), each re-spaced over the current
chain length T:

    linear        beta_t = linspace(beta_start, beta_end, T)                        (the released default)
    quad          beta_t = linspace(sqrt(beta_start), sqrt(beta_end), T)^2
    const         beta_t = beta_end
    jsd           beta_t = 1 / linspace(T, 1, T)            (1/T, 1/(T-1), ..., 1; beta_start, beta_end unused)
    sigmoid       beta_t = beta_start + (beta_end - beta_start) sigmoid(linspace(-6, 6, T))
    cosine        alpha_bar(i) = cos(((i / T) + s) / (1 + s) pi / 2)^2 / alpha_bar(0), s = 0.008, i = 0..T,
                  beta_t = clip(1 - alpha_bar(t) / alpha_bar(t - 1), 0, 0.999)   (Nichol & Dhariwal 2021, eq. 17;
                  beta_start, beta_end unused)
    continuous_t  beta_t = 1 - exp(-b_min / T - (b_max - b_min) (2t - 1) / (2 T^2)), b_min 0.1, b_max 5
                  (the VP SDE of Song et al. 2021 discretised into T steps; beta_start, beta_end unused)

The betas are float64; `alpha_bar` then follows the release in float32: alpha_bar_0 = 1, alpha_bar_t =
cumprod(1 - beta) over s = 1..t.
"""

import math

import numpy as np
import torch

COSINE_S = 0.008                             # Offset s of the cosine schedule.
CONTINUOUS_B_MIN, CONTINUOUS_B_MAX = 0.1, 5.0  # beta_min, beta_max of the continuous_t (VP SDE) schedule.


def _linear(T: int, beta_start: float, beta_end: float) -> np.ndarray:
    return np.linspace(beta_start, beta_end, T, dtype=np.float64)


def _quad(T: int, beta_start: float, beta_end: float) -> np.ndarray:
    return np.linspace(beta_start ** 0.5, beta_end ** 0.5, T, dtype=np.float64) ** 2


def _const(T: int, beta_start: float, beta_end: float) -> np.ndarray:
    return np.full(T, beta_end, dtype=np.float64)


def _jsd(T: int, beta_start: float, beta_end: float) -> np.ndarray:
    return 1.0 / np.linspace(T, 1, T, dtype=np.float64)


def _sigmoid(T: int, beta_start: float, beta_end: float) -> np.ndarray:
    return 1 / (np.exp(-np.linspace(-6, 6, T)) + 1) * (beta_end - beta_start) + beta_start


def _cosine(T: int, beta_start: float, beta_end: float) -> np.ndarray:
    steps = T + 1
    u = np.linspace(0, steps, steps) / steps  # i / T for i = 0..T, computed in the release's order.
    alpha_bar = np.cos((u + COSINE_S) / (1 + COSINE_S) * math.pi * 0.5) ** 2
    alpha_bar = alpha_bar / alpha_bar[0]
    return np.clip(1 - alpha_bar[1:] / alpha_bar[:-1], 0, 0.999)


def _continuous_t(T: int, beta_start: float, beta_end: float) -> np.ndarray:
    t = np.arange(1, T + 1)
    b_min, b_max = CONTINUOUS_B_MIN, CONTINUOUS_B_MAX
    return 1 - np.exp(-b_min / T - 0.5 * (b_max - b_min) * (2 * t - 1) / T ** 2)


SCHEDULES = {'linear': _linear, 'quad': _quad, 'const': _const, 'jsd': _jsd, 'sigmoid': _sigmoid,
             'cosine': _cosine, 'continuous_t': _continuous_t}
BETA_SCHEDULES = tuple(SCHEDULES)  # Valid names, the released default first.


def betas(schedule: str, T: int, beta_start: float, beta_end: float) -> np.ndarray:
    """beta_1..beta_T of `schedule` for a chain of length T, float64 [T]."""
    if schedule not in SCHEDULES:
        raise ValueError(f'beta schedule is {schedule!r}; expected one of {list(BETA_SCHEDULES)}')
    if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or T < 1:
        raise ValueError(f'T is {T!r}; expected an integer >= 1')
    return SCHEDULES[schedule](int(T), beta_start, beta_end)


def alpha_bar(schedule: str, T: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """alpha_bar_t for t = 0..T, float32 [T + 1]: 1, then cumprod(1 - beta) in float32 as released."""
    alphas = 1.0 - torch.from_numpy(betas(schedule, T, beta_start, beta_end)).float()
    return torch.cat([torch.ones([1]), alphas.cumprod(dim=0)])
