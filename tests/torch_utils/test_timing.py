"""torch_utils.timing: the median of repeated runs, warm-up runs excluded."""

import types

import pytest
import torch

from torch_utils import timing


def test_median_excludes_warmup(monkeypatch):
    ticks = iter([0.0, 10.0, 10.001, 20.0, 20.003, 30.0, 30.002])  # warm-up start, then start/stop pairs
    # Replace the module's clock only (patching time.perf_counter itself would also feed pytest's own timers).
    monkeypatch.setattr(timing, "time", types.SimpleNamespace(perf_counter=lambda: next(ticks)))
    calls = []
    result = timing.median_ms(lambda: calls.append(1), reps=3, warmup=1, device=torch.device("cpu"))
    assert len(calls) == 4
    assert result == pytest.approx(2.0)  # runs of 1, 3 and 2 ms after the warm-up


def test_bad_counts():
    with pytest.raises(ValueError, match="reps must be >= 1 and warmup >= 0, got reps=0, warmup=0"):
        timing.median_ms(lambda: None, reps=0, warmup=0, device=torch.device("cpu"))
