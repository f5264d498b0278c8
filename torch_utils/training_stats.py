"""The training-statistics bus: any code reports named values; a Collector summarises them once per tick.

`report(name, value)` accumulates the moments [count, sum, sum of squares] per name and per device, without any
host-device synchronisation. `Collector.update()` gathers the pending moments, summed over all devices and, in
multi-process training, over all ranks, hands them to every live Collector whose regex matches, and exposes
num / mean / std per name for the interval since that Collector's previous update. Names follow the
project's slash-path convention (`Loss/G/main`, `SMaRt/loss`). The API matches StyleGAN2-ADA's
`torch_utils.training_stats` (docs/spec/nvidia-pickles.md section 2).
"""

import math
import re
import weakref
from typing import Any, Optional

import numpy as np
import torch

import dnnlib

_NUM_MOMENTS = 3  # [count, sum, sum of squares]
_DTYPE = torch.float64  # float64 so that sums over a long tick do not lose the small values.

_rank: int = 0  # Rank of this process; report0() only reports on rank 0.
_sync_device: Optional[torch.device] = None  # Device for the cross-rank all_reduce (None = CPU / backend default).
_counters: dict[str, dict[torch.device, torch.Tensor]] = {}  # name -> device -> [3] moments not yet gathered.
_collectors: "weakref.WeakSet[Collector]" = weakref.WeakSet()  # Live Collectors; each receives every gathered delta.


def init_multiprocessing(rank: int, sync_device: Optional[torch.device]) -> None:
    """Record this process's rank and the device used to all_reduce statistics across ranks (None = CPU)."""
    global _rank, _sync_device
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
        raise ValueError(f"init_multiprocessing: rank must be an int >= 0, got {rank!r}")
    _rank = rank
    _sync_device = None if sync_device is None else torch.device(sync_device)


def _as_float64_elems(name: str, value: Any) -> torch.Tensor:
    """Flatten `value` (tensor, numpy array, number or list) into a detached 1D float64 tensor on its device."""
    if isinstance(value, torch.Tensor):
        elems = value.detach()
    else:
        try:
            elems = torch.from_numpy(np.array(value, dtype=np.float64))  # np.array copies, so any strides work.
        except (TypeError, ValueError):
            raise TypeError(
                f"report: value for {name!r} must be a tensor, numpy array or number(s), got {type(value).__name__}"
            ) from None
    # MPS has no float64; accumulate such values on the CPU instead.
    if elems.device.type == "mps":
        elems = elems.cpu()
    return elems.flatten().to(_DTYPE)


def report(name: str, value: Any) -> Any:
    """Add the elements of `value` to the statistic `name` and return `value` unchanged.

    Every element counts, including NaN and inf, which then make that tick's mean/std non-finite: a diverging
    loss stays visible instead of being silently dropped. An empty value only registers the name.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"report: name must be a non-empty str such as 'Loss/G/main', got {name!r}")
    elems = _as_float64_elems(name, value)
    moments = torch.stack([elems.new_full((), elems.numel()), elems.sum(), elems.square().sum()])
    device_counters = _counters.setdefault(name, {})
    if moments.device not in device_counters:
        device_counters[moments.device] = torch.zeros_like(moments)
    device_counters[moments.device].add_(moments)
    return value


def report0(name: str, value: Any) -> Any:
    """Like report(), but only rank 0 contributes `value`; other ranks register the name. Returns `value`."""
    report(name, value if _rank == 0 else [])
    return value


def _distributed_world_size() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


def _reduce_device() -> torch.device:
    if _sync_device is not None:
        return _sync_device
    # NCCL only reduces CUDA tensors; gloo and the single-process case use the CPU.
    if _distributed_world_size() > 1 and torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _sync(names: list[str]) -> None:
    """Gather the pending moments of `names` (all devices, all ranks) and hand them to every live Collector.

    With several ranks this is a collective call: the name lists are merged across ranks first, so that every rank
    all_reduces the same rows even if some rank never reported a name.
    """
    world_size = _distributed_world_size()
    if world_size > 1:
        gathered: list[Optional[list[str]]] = [None] * world_size
        torch.distributed.all_gather_object(gathered, names)
        names = sorted(set().union(*gathered))
    if len(names) == 0:
        return

    device = _reduce_device()
    rows = []
    for name in names:
        row = torch.zeros(_NUM_MOMENTS, dtype=_DTYPE, device=device)
        for counter in _counters.get(name, {}).values():
            row.add_(counter.to(device))
            counter.zero_()
        rows.append(row)
    moments = torch.stack(rows)  # [len(names), 3]
    if world_size > 1:
        torch.distributed.all_reduce(moments)
    moments = moments.cpu()
    for collector in list(_collectors):
        collector._receive(names, moments)


class Collector:
    """Summary of the statistics whose names fully match `regex`, refreshed by `update()`.

    After `update()`, num/mean/std describe the values reported since the previous update (or since construction).
    With `keep_previous`, a name that got no new reports keeps its last summary; otherwise it disappears.
    In multi-process training, constructing a Collector and calling update() are collective: all ranks must do it.
    """

    def __init__(self, regex: str = ".*", keep_previous: bool = True):
        if not isinstance(regex, str):
            raise TypeError(f"Collector: regex must be a str, got {type(regex).__name__}")
        try:
            self._regex = re.compile(regex)
        except re.error as err:
            raise ValueError(f"Collector: regex {regex!r} is not a valid regular expression: {err}") from None
        self._keep_previous = keep_previous
        self._pending: dict[str, torch.Tensor] = {}  # name -> moments received since our last update.
        self._moments: dict[str, torch.Tensor] = {}  # name -> moments of the last update interval.
        # Start the interval now: values reported before this Collector existed go to the older Collectors only.
        self._sync_own_names()
        _collectors.add(self)

    def _sync_own_names(self) -> None:
        _sync([name for name in sorted(_counters) if self._regex.fullmatch(name)])

    def _receive(self, names: list[str], moments: torch.Tensor) -> None:
        """Add gathered moments ([len(names), 3], CPU) of the names we select to our pending interval."""
        for name, row in zip(names, moments):
            if self._regex.fullmatch(name):
                self._pending[name] = self._pending[name] + row if name in self._pending else row.clone()

    def names(self) -> list[str]:
        """Names that have a summary after the last update(), sorted."""
        return sorted(self._moments)

    def update(self) -> None:
        """Gather the values reported since the previous update (over devices and ranks) into num/mean/std."""
        self._sync_own_names()
        if not self._keep_previous:
            self._moments.clear()
        for name, moments in self._pending.items():
            if moments[0] != 0:  # Names registered with empty values only (report0 on other ranks) have no summary.
                self._moments[name] = moments
        self._pending = {}

    def num(self, name: str) -> int:
        """Number of scalar values reported for `name` in the last interval (0 if none)."""
        moments = self._moments.get(name)
        return 0 if moments is None else int(moments[0])

    def mean(self, name: str) -> float:
        """Mean of the values reported for `name` in the last interval (NaN if none)."""
        count = self.num(name)
        return float("nan") if count == 0 else float(self._moments[name][1]) / count

    def std(self, name: str) -> float:
        """Population standard deviation (ddof=0) of the values for `name` in the last interval (NaN if none)."""
        count = self.num(name)
        if count == 0:
            return float("nan")
        if count == 1 and math.isfinite(float(self._moments[name][1])):
            return 0.0  # Exactly; the moment formula below could leave a rounding residue.
        mean = float(self._moments[name][1]) / count
        # E[x^2] - E[x]^2 can come out slightly negative through rounding; clamp before the square root.
        variance = float(self._moments[name][2]) / count - mean**2
        return math.sqrt(max(variance, 0.0)) if math.isfinite(variance) else float("nan")

    def as_dict(self) -> dnnlib.EasyDict:
        """Return EasyDict name -> EasyDict(num, mean, std) for all names of the last update (for stats.jsonl)."""
        summary = dnnlib.EasyDict()
        for name in self.names():
            summary[name] = dnnlib.EasyDict(num=self.num(name), mean=self.mean(name), std=self.std(name))
        return summary

    def __getitem__(self, name: str) -> float:
        """Mean of `name` in the last interval, e.g. `collector['Loss/G/main']`."""
        return self.mean(name)
