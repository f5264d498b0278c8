"""Tests for torch_utils.misc: constant cache, shape asserts, sampler, parameter copying, DDP helpers, summary."""

import re
import warnings

import numpy as np
import pytest
import torch

from free_port import free_port
from torch_utils import misc


# ----------------------------------------------------------------------------------------------------------------------
# constant.


def test_constant_is_cached_per_key():
    a = misc.constant([1.0, 2.0, 3.0])
    assert a is misc.constant([1.0, 2.0, 3.0])
    assert a.dtype == torch.float32 and a.device == torch.device("cpu")
    torch.testing.assert_close(a, torch.tensor([1.0, 2.0, 3.0]), rtol=0, atol=0)
    assert misc.constant([1.0, 2.0, 3.0], dtype=torch.float64) is not a
    assert misc.constant([1.0, 2.0, 3.0], shape=[2, 3]) is not a
    assert misc.constant([1.0, 2.0, 3.0], device="cpu") is a  # 'cpu' and torch.device('cpu') are one key.
    # Same bytes, different value shape: must not collide.
    assert misc.constant(np.zeros(4)).shape == (4,)
    assert misc.constant(np.zeros((2, 2))).shape == (2, 2)


def test_constant_copies_value():
    value = np.array([1.0, 2.0], dtype=np.float32)
    t = misc.constant(value, dtype=torch.float32)
    value[0] = 100.0
    assert t.tolist() == [1.0, 2.0]  # The cached tensor does not alias the caller's array.
    assert misc.constant(value, dtype=torch.float32).tolist() == [100.0, 2.0]  # New bytes -> new entry.


def test_constant_negative_strides_with_dtype():
    value = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int64)[::-1, ::-1]
    t = misc.constant(value, dtype=torch.float32)
    assert t.dtype == torch.float32
    assert t.tolist() == [[6.0, 5.0, 4.0], [3.0, 2.0, 1.0]]


def test_constant_broadcast_and_memory_format():
    t = misc.constant([1.0, 2.0, 3.0], shape=[2, 3])
    assert t.tolist() == [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]] and t.is_contiguous()
    t = misc.constant(np.arange(3.0), shape=[1, 2, 4, 3], memory_format=torch.channels_last)
    assert t.shape == (1, 2, 4, 3) and t.is_contiguous(memory_format=torch.channels_last)
    assert t.stride() == (24, 1, 6, 2)
    assert t[0, 1, 2].tolist() == [0.0, 1.0, 2.0]
    with pytest.raises(ValueError, match=r"^constant: value of shape \[3\] cannot be broadcast to shape=\[2, 4\]$"):
        misc.constant([1.0, 2.0, 3.0], shape=[2, 4])


# ----------------------------------------------------------------------------------------------------------------------
# assert_shape, suppress_tracer_warnings, profiled_function.


def test_assert_shape():
    x = torch.zeros(2, 3, 4)
    misc.assert_shape(x, [2, 3, 4])
    misc.assert_shape(x, [None, 3, None])
    with pytest.raises(AssertionError, match=r"^Wrong number of dimensions: got 3, expected 2$"):
        misc.assert_shape(x, [2, 3])
    with pytest.raises(AssertionError, match=r"^Wrong size for dimension 1: got 3, expected 5$"):
        misc.assert_shape(x, [None, 5, 4])
    misc.assert_shape(x, [torch.tensor(2), 3, None])  # Tensor sizes go through the symbolic path.
    with pytest.raises(AssertionError, match=r"^Wrong size for dimension 0: got 2, expected 7$"):
        misc.assert_shape(x, [torch.tensor(7), 3, None])


@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:DeprecationWarning")
def test_assert_shape_under_tracing_is_silent_and_checks():
    def f(x, y):
        misc.assert_shape(x, [y.shape[0], 3])  # Under tracing y.shape[0] is a 0-dim tensor.
        return x * 2

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        traced = torch.jit.trace(f, (torch.zeros(2, 3), torch.zeros(2)), check_trace=False)
    assert [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)] == []
    assert traced(torch.ones(4, 3), torch.zeros(4)).tolist() == [[2.0] * 3] * 4
    with pytest.raises(AssertionError, match=r"^Wrong size for dimension 0: got 2, expected 3$"):
        torch.jit.trace(f, (torch.zeros(2, 3), torch.zeros(3)), check_trace=False)


def test_suppress_tracer_warnings_only_inside_and_only_tracer_warnings():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with misc.suppress_tracer_warnings():
            warnings.warn("hidden", torch.jit.TracerWarning)
            warnings.warn("shown", UserWarning)
        warnings.warn("shown again", torch.jit.TracerWarning)
    assert [str(w.message) for w in caught] == ["shown", "shown again"]


def test_profiled_function_keeps_name_and_records_range():
    @misc.profiled_function
    def scaled_sum(x, scale=1.0):
        """Doc."""
        return x.sum() * scale

    assert scaled_sum.__name__ == "scaled_sum" and scaled_sum.__doc__ == "Doc."
    with torch.autograd.profiler.profile() as prof:
        out = scaled_sum(torch.ones(3), scale=2.0)
    assert out.item() == 6.0
    assert "scaled_sum" in [event.name for event in prof.function_events]
    assert misc.nan_to_num is torch.nan_to_num


# ----------------------------------------------------------------------------------------------------------------------
# InfiniteSampler.


def _take(sampler, count):
    it = iter(sampler)
    return [next(it) for _ in range(count)]


def test_infinite_sampler_deterministic_and_seeded():
    dataset = list(range(13))
    first = _take(misc.InfiniteSampler(dataset, seed=3), 60)
    assert first == _take(misc.InfiniteSampler(dataset, seed=3), 60)
    assert first != _take(misc.InfiniteSampler(dataset, seed=4), 60)
    assert all(isinstance(i, int) and 0 <= i < 13 for i in first)
    assert set(first) == set(range(13))


def test_infinite_sampler_without_shuffle_and_without_window():
    assert _take(misc.InfiniteSampler(range(4), shuffle=False), 10) == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    seq = _take(misc.InfiniteSampler(range(7), seed=1, window_size=0), 21)
    assert sorted(seq[:7]) == list(range(7))  # One fixed permutation, repeated.
    assert seq[:7] == seq[7:14] == seq[14:] and seq[:7] != list(range(7))
    shuffled = _take(misc.InfiniteSampler(range(7), seed=1, window_size=0.5), 21)
    assert shuffled[:1] == seq[:1] and shuffled != seq  # The window re-shuffle changes later passes.


def test_infinite_sampler_ranks_interleave_to_single_rank_sequence():
    dataset = range(11)
    single = _take(misc.InfiniteSampler(dataset, seed=5), 40)
    rank0 = _take(misc.InfiniteSampler(dataset, rank=0, num_replicas=2, seed=5), 20)
    rank1 = _take(misc.InfiniteSampler(dataset, rank=1, num_replicas=2, seed=5), 20)
    assert [i for pair in zip(rank0, rank1) for i in pair] == single


def test_infinite_sampler_validates_arguments():
    with pytest.raises(ValueError, match=r"rank must be an int in \[0, 1\], got 2"):
        misc.InfiniteSampler(range(3), rank=2, num_replicas=2)
    with pytest.raises(ValueError, match=r"num_replicas must be an int >= 1, got 0"):
        misc.InfiniteSampler(range(3), num_replicas=0)
    with pytest.raises(ValueError, match=r"window_size must be in \[0, 1\], got 1.5"):
        misc.InfiniteSampler(range(3), window_size=1.5)
    with pytest.raises(ValueError, match=r"dataset must not be empty, got len\(dataset\)=0"):
        misc.InfiniteSampler([])
    with pytest.raises(TypeError, match=r"dataset must have a length, got int"):
        misc.InfiniteSampler(5)


# ----------------------------------------------------------------------------------------------------------------------
# Parameters and buffers.


def _net(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))


def test_params_and_buffers_lists():
    net = _net(0)
    names = [name for name, _ in misc.named_params_and_buffers(net)]
    assert names == ["0.weight", "0.bias", "1.weight", "1.bias", "2.weight", "2.bias",
                     "1.running_mean", "1.running_var", "1.num_batches_tracked"]
    assert [t is u for t, (_, u) in zip(misc.params_and_buffers(net), misc.named_params_and_buffers(net))] == [True] * 9
    with pytest.raises(TypeError, match="module must be a torch.nn.Module, got list"):
        misc.params_and_buffers([])


def test_copy_params_and_buffers():
    src, dst = _net(0), _net(1)
    src[1].running_mean.fill_(0.5)
    dst[0].weight.requires_grad_(False)
    misc.copy_params_and_buffers(src, dst, require_all=True)
    for (name, s), (_, d) in zip(misc.named_params_and_buffers(src), misc.named_params_and_buffers(dst)):
        assert torch.equal(s, d) and s.data_ptr() != d.data_ptr(), name
    assert dst[0].weight.requires_grad is False and dst[0].bias.requires_grad is True
    assert dst[0].bias.grad_fn is None and dst[0].bias.is_leaf


def test_copy_params_and_buffers_missing_and_mismatched():
    src = torch.nn.Linear(3, 4)
    dst = torch.nn.Linear(3, 4)
    dst.register_buffer("extra", torch.full((2,), 9.0))
    misc.copy_params_and_buffers(src, dst)  # Missing names are skipped by default...
    assert torch.equal(dst.weight, src.weight) and dst.extra.tolist() == [9.0, 9.0]
    with pytest.raises(ValueError, match=r"'extra' of dst_module has no counterpart in src_module \(require_all="):
        misc.copy_params_and_buffers(src, dst, require_all=True)
    with pytest.raises(ValueError, match=r"'weight' has shape \[4, 3\] in src_module but \[1, 3\] in dst_module"):
        misc.copy_params_and_buffers(src, torch.nn.Linear(3, 1))


# ----------------------------------------------------------------------------------------------------------------------
# DDP helpers, in a one-process gloo group (rank 0 only, loopback).


@pytest.fixture
def gloo_world_of_one():
    port = free_port()
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    yield
    torch.distributed.destroy_process_group()


def test_ddp_helpers_without_distributed():
    net = torch.nn.Linear(2, 2)
    with misc.ddp_sync(net, sync=False):
        pass
    misc.check_ddp_consistency(net)  # Not initialised: nothing to compare, must not raise.
    with pytest.raises(TypeError, match="module must be a torch.nn.Module, got str"):
        with misc.ddp_sync("net", sync=True):
            pass


def test_ddp_sync_and_consistency(gloo_world_of_one, monkeypatch):
    ddp = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(2, 2))
    with misc.ddp_sync(ddp, sync=False):
        assert ddp.require_backward_grad_sync is False
    assert ddp.require_backward_grad_sync is True
    with misc.ddp_sync(ddp, sync=True):
        assert ddp.require_backward_grad_sync is True

    net = torch.nn.Linear(2, 2)
    net.register_buffer("w_avg", torch.tensor([float("nan"), 1.0]))
    misc.check_ddp_consistency(net)  # NaN on both sides counts as equal.

    # Pretend rank 0 holds a different w_avg: the broadcast result is what this rank compares against.
    real_broadcast = torch.distributed.broadcast

    def fake_broadcast(tensor, src):
        real_broadcast(tensor, src)
        if tensor.shape == (2,) and tensor[1] == 1.0:
            tensor[1] = 2.0

    monkeypatch.setattr(torch.distributed, "broadcast", fake_broadcast)
    with pytest.raises(AssertionError, match=r"^check_ddp_consistency: Linear\.w_avg on rank 0 differs from rank 0$"):
        misc.check_ddp_consistency(net)
    misc.check_ddp_consistency(net, ignore_regex=r".*\.[^.]+_(avg|ema)")


# ----------------------------------------------------------------------------------------------------------------------
# print_module_summary.


class _TwoHeads(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Sequential(torch.nn.Linear(5, 5)))
        self.head = torch.nn.Linear(5, 2)
        self.register_buffer("scale", torch.ones(7))

    def forward(self, x):
        h = self.body(x)
        return self.head(h), h.double()


def _table_rows(text):
    return [re.split(r"\s{2,}", line.strip()) for line in text.strip().splitlines() if not line.startswith("---")]


def test_print_module_summary_totals_and_outputs(capsys):
    net = _TwoHeads()
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    out = misc.print_module_summary(net, [x])
    expected = net(x)
    assert torch.equal(out[0], expected[0]) and torch.equal(out[1], expected[1])
    rows = _table_rows(capsys.readouterr().out)
    assert rows[0] == ["Module", "Parameters", "Buffers", "Output shape", "Datatype"]
    num_params = sum(p.numel() for p in net.parameters())
    assert rows[-1] == ["Total", str(num_params), "7", "-", "-"]
    assert ["body.0", "20", "-", "[4, 5]", "float32"] in rows
    assert ["body.1.0", "30", "-", "[4, 5]", "float32"] in rows
    assert ["head", "12", "-", "[4, 2]", "float32"] in rows
    # The first output was already listed under `head`, so the top level shows only its new one.
    assert ["<top-level>", "-", "7", "[4, 5]", "float64"] in rows
    assert len(rows) == 6


def test_print_module_summary_max_nesting_zero(capsys):
    net = _TwoHeads()
    misc.print_module_summary(net, (torch.zeros(1, 3),), max_nesting=0)
    rows = _table_rows(capsys.readouterr().out)
    assert rows[1:] == [["<top-level>", "62", "7", "[1, 2]", "float32"], ["<top-level>:1", "[1, 5]", "float64"],
                        ["Total", "62", "7", "-", "-"]]
    with pytest.raises(TypeError, match="inputs must be a tuple or list of arguments, got Tensor"):
        misc.print_module_summary(net, torch.zeros(1, 3))
