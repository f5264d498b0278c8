"""The adaptive probability p of ADA (Karras et al., NeurIPS 2020) and of Diffusion-GAN's chain length (Wang et al.,
ICLR 2023): one feedback rule on the overfitting signal E[sign D(real)], used by training/train_state.py (ADA's
augment p) and smart_plugin/diffgan.py (the diffusion p)."""

import math
from typing import Literal

import numpy as np

Clamp = Literal['floor', 'unit']  # 'floor': p >= 0 with no upper clamp (ADA); 'unit': p in [0, 1] (Diffusion-GAN).
CLAMPS = ('floor', 'unit')


def next_p(p: float, signs_real_mean: float, target: float, batch_size: int, interval: int, kimg: float,
           clamp: Clamp) -> float:
    """p + sign(signs_real_mean - target) * batch_size * interval / (kimg * 1000), clamped per `clamp`.

    The step is batch_size * interval / (kimg * 1000) computed first, then signed: the arithmetic of
    training.augment.adjust_ada_p, and bit for bit that of the released Diffusion-GAN, which divides the signed
    product (the sign is -1, 0 or 1, so both orders give the same double).
    """
    step = float(batch_size) * float(interval) / (float(kimg) * 1000)
    value = float(p) + float(np.sign(float(signs_real_mean) - float(target))) * step
    if clamp == 'floor':
        return max(value, 0.0)
    return float(np.clip(value, 0, 1))


class AdaController:
    """Holds p and moves it every `interval` steps by the sign of E[sign D(real)] - target (`next_p`).

    The caller gathers the signs (its own statistics) and calls `update` at its adjustment steps; `state_dict`
    holds p only, so the callers keep their own snapshot formats around it.
    """

    def __init__(self, target: float, interval: int, kimg: float, clamp: Clamp = 'floor', p: float = 0.0) -> None:
        if not math.isfinite(float(target)):
            raise ValueError(f'AdaController: target={target!r}, expected a finite number')
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f'AdaController: interval={interval!r}, expected an integer >= 1')
        if not (math.isfinite(float(kimg)) and float(kimg) > 0):
            raise ValueError(f'AdaController: kimg={kimg!r}, expected a finite number > 0')
        if clamp not in CLAMPS:
            raise ValueError(f'AdaController: clamp={clamp!r}, expected one of {list(CLAMPS)}')
        self.target = target      # Wanted E[sign D(real)]: above it p grows, below it p shrinks.
        self.interval = interval  # Steps between adjustments (one adjustment covers this many steps).
        self.kimg = kimg          # Thousands of images for p to move by 1.
        self.clamp = clamp        # 'floor' (ADA) or 'unit' (Diffusion-GAN).
        self.p = float(p)         # The current probability.

    def update(self, signs_real_mean: float, batch_size: int) -> float:
        """One adjustment from the mean sign over the last interval at `batch_size` images a step; returns p."""
        if not (math.isfinite(self.p) and math.isfinite(float(signs_real_mean))):
            raise ValueError(f'AdaController.update: p={self.p!r}, signs_real_mean={signs_real_mean!r}; expected '
                             'finite numbers')
        self.p = next_p(self.p, signs_real_mean, self.target, batch_size, self.interval, self.kimg, self.clamp)
        return self.p

    def state_dict(self) -> dict:
        """{'p': p}."""
        return {'p': self.p}

    def load_state_dict(self, state: dict) -> None:
        """Restore what state_dict returned."""
        self.p = float(state['p'])
