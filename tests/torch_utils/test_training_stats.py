"""Tests for torch_utils.training_stats: moments vs numpy, regex selection, keep_previous, a 2-process gloo run."""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from free_port import free_port
from torch_utils import training_stats


@pytest.fixture(autouse=True)
def _fresh_bus(monkeypatch):
    """Each test gets empty module state (counters, collectors, rank), restored afterwards by monkeypatch."""
    monkeypatch.setattr(training_stats, "_counters", {})
    monkeypatch.setattr(training_stats, "_collectors", training_stats.weakref.WeakSet())
    monkeypatch.setattr(training_stats, "_rank", 0)
    monkeypatch.setattr(training_stats, "_sync_device", None)


def _values(seed, n, scale=1.0, shift=0.0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=generator, dtype=torch.float64) * scale + shift


def test_mean_std_num_match_numpy_for_mixed_inputs():
    collector = training_stats.Collector()
    a = _values(0, 7)
    b = _values(1, 6, scale=3.0, shift=5.0).reshape(2, 3)
    assert training_stats.report("Loss/G/main", a) is a
    training_stats.report("Loss/G/main", b.numpy()[::-1])  # Negatively strided numpy array.
    training_stats.report("Loss/G/main", 2.5)
    training_stats.report("Loss/G/main", [1, 2])
    training_stats.report("Loss/G/main", torch.tensor([4.0], requires_grad=True) * 2)  # Detached internally.
    collector.update()

    expected = np.concatenate([a.numpy(), b.numpy().ravel(), [2.5, 1.0, 2.0, 8.0]])
    assert collector.names() == ["Loss/G/main"]
    assert collector.num("Loss/G/main") == expected.size == 17
    assert collector.mean("Loss/G/main") == pytest.approx(expected.mean(), rel=1e-12)
    assert collector["Loss/G/main"] == collector.mean("Loss/G/main")
    assert collector.std("Loss/G/main") == pytest.approx(expected.std(), rel=1e-12)
    summary = collector.as_dict()
    assert list(summary) == ["Loss/G/main"]
    assert summary["Loss/G/main"].num == 17 and summary["Loss/G/main"].std == collector.std("Loss/G/main")


def test_unknown_name_and_single_value():
    collector = training_stats.Collector()
    training_stats.report("one", 3.0)
    collector.update()
    assert (collector.num("one"), collector.mean("one"), collector.std("one")) == (1, 3.0, 0.0)
    assert collector.num("other") == 0 and math.isnan(collector.mean("other")) and math.isnan(collector.std("other"))


def test_intervals_keep_previous_and_regex():
    loss_only = training_stats.Collector(regex="Loss/.*")
    everything = training_stats.Collector(keep_previous=False)
    training_stats.report("Loss/D/real", [1.0, 3.0])
    training_stats.report("Timing/sec", 10.0)
    loss_only.update()
    everything.update()
    assert loss_only.names() == ["Loss/D/real"]
    assert everything.names() == ["Loss/D/real", "Timing/sec"]

    training_stats.report("Timing/sec", [20.0, 40.0])
    loss_only.update()
    everything.update()
    assert loss_only.mean("Loss/D/real") == 2.0  # keep_previous: no new reports -> last summary stays.
    assert everything.names() == ["Timing/sec"]  # Not kept: only names reported in this interval.
    assert (everything.num("Timing/sec"), everything.mean("Timing/sec")) == (2, 30.0)


def test_each_collector_sees_each_value_once():
    early = training_stats.Collector()
    training_stats.report("x", 1.0)  # Before `late` exists: counted by `early` only.
    late = training_stats.Collector()
    training_stats.report("x", 5.0)
    late.update()  # Gathers 5.0 for both collectors.
    training_stats.report("x", 9.0)
    early.update()
    late.update()
    assert (early.num("x"), early.mean("x")) == (3, 5.0)
    assert (late.num("x"), late.mean("x")) == (1, 9.0)


def test_nonfinite_values_are_counted_and_do_not_stick():
    collector = training_stats.Collector()
    training_stats.report("Loss/G/main", [1.0, float("nan")])
    collector.update()
    assert collector.num("Loss/G/main") == 2 and math.isnan(collector.mean("Loss/G/main"))
    training_stats.report("Loss/G/main", [2.0, 4.0])
    collector.update()
    assert (collector.mean("Loss/G/main"), collector.std("Loss/G/main")) == (3.0, 1.0)


def test_report0_and_empty_values():
    collector = training_stats.Collector()
    training_stats.init_multiprocessing(rank=1, sync_device=None)
    assert training_stats.report0("Progress/kimg", 7.0) == 7.0
    training_stats.report("Loss/empty", torch.zeros(0))
    collector.update()
    assert collector.names() == []  # Rank 1 only registered the name; an empty value is not a statistic.
    training_stats.init_multiprocessing(rank=0, sync_device=None)
    training_stats.report0("Progress/kimg", 7.0)
    collector.update()
    assert collector.as_dict() == {"Progress/kimg": {"num": 1, "mean": 7.0, "std": 0.0}}


def test_argument_errors():
    with pytest.raises(ValueError, match=r"report: name must be a non-empty str such as 'Loss/G/main', got ''"):
        training_stats.report("", 1.0)
    with pytest.raises(TypeError, match=r"report: value for 'a' must be a tensor, numpy array or number\(s\), got str"):
        training_stats.report("a", "one")
    with pytest.raises(ValueError, match=r"Collector: regex '\(' is not a valid regular expression"):
        training_stats.Collector(regex="(")
    with pytest.raises(ValueError, match=r"init_multiprocessing: rank must be an int >= 0, got -1"):
        training_stats.init_multiprocessing(rank=-1, sync_device=None)


# ----------------------------------------------------------------------------------------------------------------------
# Two processes, gloo on loopback.


def _rank_values(rank):
    # Different count, mean and spread per rank, so a missing all_reduce cannot go unnoticed.
    return _values(10 + rank, 3 + 2 * rank, scale=1.0 + rank, shift=4.0 * rank)


def _worker(rank, port, out_dir):
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    _collect(rank, out_dir)  # Communicated tensors die with that frame; then leave in step (training.distributed).
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def _collect(rank, out_dir):
    training_stats.init_multiprocessing(rank=rank, sync_device=torch.device("cpu"))
    collector = training_stats.Collector(regex="Loss/.*")
    training_stats.report("Loss/G/main", _rank_values(rank))
    training_stats.report0("Loss/rank0_only", 1.5)
    if rank == 1:
        training_stats.report("Loss/rank1_only", [2.0, 6.0])  # Rank 0 never hears of this name.
    training_stats.report("Other/ignored", 1.0)
    collector.update()
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(collector.as_dict()))


@pytest.mark.slow
def test_two_process_gloo_collectors_see_global_statistics(tmp_path, monkeypatch):
    # Spawned children unpickle _worker by module name; make this test module importable for them.
    module_name = __name__
    root = Path(__file__).resolve().parents[len(module_name.split(".")) - 1]
    monkeypatch.syspath_prepend(str(root))
    assert sys.modules[module_name].__file__ == __file__
    port = free_port()
    torch.multiprocessing.spawn(_worker, args=(port, str(tmp_path)), nprocs=2, join=True)

    expected = torch.cat([_rank_values(0), _rank_values(1)]).numpy()
    for rank in range(2):
        summary = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert sorted(summary) == ["Loss/G/main", "Loss/rank0_only", "Loss/rank1_only"]
        assert summary["Loss/G/main"]["num"] == 8
        assert summary["Loss/G/main"]["mean"] == pytest.approx(expected.mean(), rel=1e-12)
        assert summary["Loss/G/main"]["std"] == pytest.approx(expected.std(), rel=1e-12)
        assert summary["Loss/rank0_only"] == {"num": 1, "mean": 1.5, "std": 0.0}
        assert summary["Loss/rank1_only"] == {"num": 2, "mean": 4.0, "std": 2.0}
