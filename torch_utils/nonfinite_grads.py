"""Counting the non-finite gradient elements that `distributed.reduce_gradients` scrubs, per phase and tick.

The scrub (NaN -> 0, +-Inf -> +-1e5, as in StyleGAN2-ADA) keeps one bad batch from wrecking the weights, but done
silently it can freeze a network: a loss term of 1e30 makes every gradient NaN, every update zero, and the run goes
on with exit 0. So each phase's count is reported as the stat `Grad/<phase>/nonfinite` (elements per step), the loop
prints a warning at every tick that had any, and stops (NonFiniteError) when some phase's update was scrubbed
entirely in every step of a tick. The counts stay on the device until the tick ends: one host sync per tick.
"""

import torch

from torch_utils import training_stats
from torch_utils.finite import NonFiniteError


class NonFiniteGradMonitor:
    """Per-phase tallies of scrubbed gradient elements over the current tick."""

    def __init__(self):
        self._tally: dict[str, list] = {}  # phase -> [steps, scrubbed elements (tensor), fully scrubbed steps (tensor)]

    def record(self, phase: str, scrubbed: torch.Tensor, total: int) -> None:
        """One step of `phase`: `scrubbed` (a 0-dim tensor) of its `total` gradient elements were NaN/Inf."""
        training_stats.report0(f'Grad/{phase}/nonfinite', scrubbed)
        full = (scrubbed >= total) & (total > 0)
        tally = self._tally.setdefault(phase, [0, torch.zeros_like(scrubbed), torch.zeros_like(scrubbed)])
        tally[0] += 1
        tally[1] += scrubbed
        tally[2] += full

    def end_tick(self, flag: str | None = None) -> list[str]:
        """Warnings for the tick that just ended (one line per phase with scrubbed elements); raise NonFiniteError
        when a phase's whole update was scrubbed in every step of the tick. Starts the next tick's tallies."""
        tally, self._tally = self._tally, {}
        lines, frozen = [], []
        for phase, (steps, scrubbed, full) in tally.items():
            scrubbed, full = int(scrubbed), int(full)
            if scrubbed == 0:
                continue
            lines.append(f'Warning: {scrubbed} non-finite gradient element(s) of {phase} replaced by 0 / +-1e5 this '
                         f'tick ({full} of {steps} step(s) wholly non-finite); the loss diverges or a term is too '
                         'large')
            if full == steps:
                frozen.append(phase)
        if frozen:
            raise NonFiniteError(f'every gradient element of {", ".join(frozen)} was NaN/Inf in every step of the '
                                 'last tick, so the network no longer trains; lower the loss weights (e.g. '
                                 '--smart-lambda) or the learning rate', flag)
        return lines
