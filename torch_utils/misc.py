"""Small torch helpers used by StyleGAN2-ADA / StyleGAN3 / EDM network code and by the training loop.

`constant`, `assert_shape`, `suppress_tracer_warnings` and `profiled_function` are called by the source code stored
inside NVIDIA network pickles, so their names and keyword names are a compatibility contract
(docs/spec/nvidia-pickles.md section 2). The rest serves the training loop: an infinite distributed sampler, copying
parameters by name, DDP helpers and a module summary table.
"""

import contextlib
import functools
import re
import warnings
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch

# ----------------------------------------------------------------------------------------------------------------------
# Helpers called from pickled network code.

_constant_cache: dict = {}


def constant(
    value: Any,
    shape: Optional[Sequence[int]] = None,
    dtype: Optional[torch.dtype] = None,
    device: Optional[torch.device] = None,
    memory_format: Optional[torch.memory_format] = None,
) -> torch.Tensor:
    """Return a cached constant tensor holding a copy of `value`, broadcast to `shape` if given.

    The cache key is (value bytes, value dtype/shape, shape, dtype, device, memory_format), so repeated calls from a
    forward pass return the very same tensor instead of allocating and uploading it again.
    """
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    value = np.asarray(value)
    shape = None if shape is None else tuple(int(size) for size in shape)
    dtype = torch.get_default_dtype() if dtype is None else dtype
    device = torch.device("cpu") if device is None else torch.device(device)
    memory_format = torch.contiguous_format if memory_format is None else memory_format

    key = (value.shape, value.dtype, value.tobytes(), shape, dtype, device, memory_format)
    tensor = _constant_cache.get(key)
    if tensor is None:
        # Copy: the caller may mutate its array later, and torch cannot wrap negatively strided numpy arrays
        # (EDM's augment pipe passes one).
        tensor = torch.from_numpy(value.copy()).to(dtype=dtype, device=device)
        if shape is not None:
            try:
                tensor = tensor.broadcast_to(shape)
            except RuntimeError:
                raise ValueError(
                    f"constant: value of shape {list(value.shape)} cannot be broadcast to shape={list(shape)}"
                ) from None
        tensor = tensor.contiguous(memory_format=memory_format)
        _constant_cache[key] = tensor
    return tensor


class suppress_tracer_warnings(warnings.catch_warnings):
    """Context manager that silences torch.jit.TracerWarning (shape checks during tracing are intentional)."""

    def __enter__(self) -> "suppress_tracer_warnings":
        super().__enter__()
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        return self


def _symbolic_equal(size: Any, ref_size: Any, idx: int) -> None:
    # During tracing sizes are 0-dim tensors; reading them as numbers (even to format the message) is intended
    # here, so the tracer's warning about it is noise.
    with suppress_tracer_warnings():
        message = f"Wrong size for dimension {idx}: got {int(size)}, expected {int(ref_size)}"
        torch._assert(torch.equal(torch.as_tensor(size), torch.as_tensor(ref_size)), message)


def assert_shape(tensor: torch.Tensor, ref_shape: Sequence[Any]) -> None:
    """Raise AssertionError unless `tensor.shape` matches `ref_shape`, where a None entry matches any size."""
    if tensor.ndim != len(ref_shape):
        raise AssertionError(f"Wrong number of dimensions: got {tensor.ndim}, expected {len(ref_shape)}")
    for idx, (size, ref_size) in enumerate(zip(tensor.shape, ref_shape)):
        if ref_size is None:
            continue
        if isinstance(size, torch.Tensor) or isinstance(ref_size, torch.Tensor):
            _symbolic_equal(size, ref_size, idx)
        elif size != ref_size:
            raise AssertionError(f"Wrong size for dimension {idx}: got {size}, expected {ref_size}")


def profiled_function(fn: Callable) -> Callable:
    """Decorator: run `fn` inside a profiler range named after it, so it shows up in torch.profiler traces."""

    @functools.wraps(fn)
    def decorator(*args: Any, **kwargs: Any) -> Any:
        with torch.autograd.profiler.record_function(fn.__name__):
            return fn(*args, **kwargs)

    return decorator


nan_to_num = torch.nan_to_num

# ----------------------------------------------------------------------------------------------------------------------
# Data loading.


class InfiniteSampler(torch.utils.data.Sampler):
    """Sampler that yields dataset indices forever; rank `rank` of `num_replicas` gets every num_replicas-th index.

    With `shuffle`, the order starts as a seeded random permutation; after each visit the visited slot is swapped
    with a random slot among the `window_size * len(dataset)` slots before it, so later passes differ from the first
    while every index still comes up about once per pass. All ranks walk the same sequence, so together they cover it.
    """

    def __init__(
        self,
        dataset: Any,
        rank: int = 0,
        num_replicas: int = 1,
        shuffle: bool = True,
        seed: int = 0,
        window_size: float = 0.5,
    ):
        if not hasattr(dataset, "__len__"):
            raise TypeError(f"InfiniteSampler: dataset must have a length, got {type(dataset).__name__}")
        if len(dataset) <= 0:
            raise ValueError(f"InfiniteSampler: dataset must not be empty, got len(dataset)={len(dataset)}")
        if not isinstance(num_replicas, int) or num_replicas < 1:
            raise ValueError(f"InfiniteSampler: num_replicas must be an int >= 1, got {num_replicas!r}")
        if not isinstance(rank, int) or not 0 <= rank < num_replicas:
            raise ValueError(f"InfiniteSampler: rank must be an int in [0, {num_replicas - 1}], got {rank!r}")
        if not 0 <= window_size <= 1:
            raise ValueError(f"InfiniteSampler: window_size must be in [0, 1], got {window_size!r}")
        super().__init__()
        self.dataset = dataset
        self.rank = rank
        self.num_replicas = num_replicas
        self.shuffle = shuffle
        self.seed = seed
        self.window_size = window_size

    def __iter__(self) -> Iterator[int]:
        order = np.arange(len(self.dataset))
        rnd = np.random.RandomState(self.seed)
        window = 0
        if self.shuffle:
            rnd.shuffle(order)
            window = int(np.rint(order.size * self.window_size))
        step = 0
        while True:
            slot = step % order.size
            if step % self.num_replicas == self.rank:
                yield int(order[slot])
            if window >= 2:
                other = (slot - rnd.randint(window)) % order.size
                order[slot], order[other] = order[other], order[slot]
            step += 1


# ----------------------------------------------------------------------------------------------------------------------
# Parameters and buffers.


def _check_module(arg_name: str, module: Any) -> None:
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"{arg_name} must be a torch.nn.Module, got {type(module).__name__}")


def params_and_buffers(module: torch.nn.Module) -> list[torch.Tensor]:
    """Return all parameters followed by all buffers of `module` (recursively)."""
    _check_module("module", module)
    return list(module.parameters()) + list(module.buffers())


def named_params_and_buffers(module: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Return (qualified name, tensor) for all parameters followed by all buffers of `module`."""
    _check_module("module", module)
    return list(module.named_parameters()) + list(module.named_buffers())


def param_coverage(src_module: torch.nn.Module, dst_module: torch.nn.Module) -> tuple[list[str], list[str]]:
    """(names of src_module's parameters/buffers that dst_module lacks, names of dst_module's that src_module lacks):
    what copy_params_and_buffers(src, dst) would leave unused and unfilled."""
    _check_module("src_module", src_module)
    _check_module("dst_module", dst_module)
    src_names = [name for name, _ in named_params_and_buffers(src_module)]
    dst_names = [name for name, _ in named_params_and_buffers(dst_module)]
    src_set, dst_set = set(src_names), set(dst_names)
    return [name for name in src_names if name not in dst_set], [name for name in dst_names if name not in src_set]


@torch.no_grad()
def copy_params_and_buffers(
    src_module: torch.nn.Module, dst_module: torch.nn.Module, require_all: bool = False
) -> None:
    """Copy every parameter/buffer of `dst_module` from the same-named one in `src_module`, in place.

    Names missing in `src_module` are skipped unless `require_all`. requires_grad of the destination is unchanged.
    """
    _check_module("src_module", src_module)
    _check_module("dst_module", dst_module)
    src_tensors = dict(named_params_and_buffers(src_module))
    for name, tensor in named_params_and_buffers(dst_module):
        if name not in src_tensors:
            if require_all:
                raise ValueError(f"copy_params_and_buffers: {name!r} of dst_module has no counterpart in src_module "
                                 f"(require_all=True)")
            continue
        src = src_tensors[name]
        # copy_ would silently broadcast a mismatched tensor; a resume from the wrong architecture must fail loudly.
        if src.shape != tensor.shape:
            raise ValueError(f"copy_params_and_buffers: {name!r} has shape {list(src.shape)} in src_module but "
                             f"{list(tensor.shape)} in dst_module")
        tensor.copy_(src.detach())


# ----------------------------------------------------------------------------------------------------------------------
# Distributed training.


@contextlib.contextmanager
def ddp_sync(module: torch.nn.Module, sync: bool) -> Iterator[None]:
    """Context manager: skip DDP's gradient all-reduce inside it when `module` is DDP and `sync` is False."""
    _check_module("module", module)
    if sync or not isinstance(module, torch.nn.parallel.DistributedDataParallel):
        yield
    else:
        with module.no_sync():
            yield


def check_ddp_consistency(module: torch.nn.Module, ignore_regex: Optional[str] = None) -> None:
    """With torch.distributed initialised, check every parameter/buffer equals rank 0's (NaN == NaN).

    Tensors whose name '<ClassName>.<qualified name>' fully matches `ignore_regex` are skipped. Raises
    AssertionError naming the first differing tensor; does nothing without torch.distributed.
    """
    _check_module("module", module)
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    for name, tensor in named_params_and_buffers(module):
        full_name = type(module).__name__ + "." + name
        if ignore_regex is not None and re.fullmatch(ignore_regex, full_name):
            continue
        tensor = tensor.detach()
        reference = tensor.clone()
        torch.distributed.broadcast(tensor=reference, src=0)
        same = tensor == reference
        if tensor.is_floating_point():
            same |= tensor.isnan() & reference.isnan()
        if not bool(same.all()):
            raise AssertionError(f"check_ddp_consistency: {full_name} on rank {torch.distributed.get_rank()} "
                                 f"differs from rank 0")


# ----------------------------------------------------------------------------------------------------------------------
# Module summary.


def _record_forward(module: torch.nn.Module, inputs: Sequence[Any], max_nesting: int) -> tuple[Any, list[dict]]:
    """Run module(*inputs) with hooks; return (outputs, [dict(mod, outputs) per submodule call, innermost first])."""
    entries: list[dict] = []
    depth = [0]  # Current call depth; a list so the hooks can update it.

    def pre_hook(_mod: torch.nn.Module, _inputs: Any) -> None:
        depth[0] += 1

    def post_hook(mod: torch.nn.Module, _inputs: Any, outputs: Any) -> None:
        depth[0] -= 1
        if depth[0] <= max_nesting:
            outputs = list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]
            entries.append(dict(mod=mod, outputs=[t for t in outputs if isinstance(t, torch.Tensor)]))

    handles = [mod.register_forward_pre_hook(pre_hook) for mod in module.modules()]
    handles += [mod.register_forward_hook(post_hook) for mod in module.modules()]
    try:
        outputs = module(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    return outputs, entries


def _format_table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[col]) for row in rows) for col in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]


def _assign_unique_tensors(entries: list[dict]) -> None:
    """Give each entry the params/buffers/outputs not already claimed by an earlier entry (children come first)."""
    seen: set[int] = set()
    for entry in entries:
        candidates = dict(params=list(entry["mod"].parameters()), buffers=list(entry["mod"].buffers()),
                          outputs=entry["outputs"])
        for kind, tensors in candidates.items():
            entry[kind] = [t for t in tensors if id(t) not in seen]
            seen.update(id(t) for t in entry[kind])


def _summary_rows(entries: list[dict], names: dict[int, str]) -> list[list[str]]:
    """One table row per entry (plus one per extra output tensor): name, #params, #buffers, shape, dtype."""
    rows = []
    for entry in entries:
        name = names.get(id(entry["mod"]), "") or "<top-level>"
        num_params = sum(t.numel() for t in entry["params"])
        num_buffers = sum(t.numel() for t in entry["buffers"])
        shapes = [str(list(t.shape)) for t in entry["outputs"]] or ["-"]
        dtypes = [str(t.dtype).split(".")[-1] for t in entry["outputs"]] or ["-"]
        rows.append([name, str(num_params) if num_params else "-", str(num_buffers) if num_buffers else "-",
                     shapes[0], dtypes[0]])
        rows += [[f"{name}:{idx}", "", "", shapes[idx], dtypes[idx]] for idx in range(1, len(shapes))]
    return rows


def print_module_summary(
    module: torch.nn.Module, inputs: Sequence[Any], max_nesting: int = 3, skip_redundant: bool = True
) -> Any:
    """Run `module(*inputs)`, print Parameters/Buffers/Output shape/Datatype per submodule plus totals; return outputs.

    Submodules nested deeper than `max_nesting` levels are folded into their ancestors; each tensor is counted once,
    by the innermost recorded module that owns it. `skip_redundant` drops rows that own no tensor of their own.
    """
    _check_module("module", module)
    if not isinstance(inputs, (tuple, list)):
        raise TypeError(
            f"print_module_summary: inputs must be a tuple or list of arguments, got {type(inputs).__name__}"
        )
    if isinstance(module, torch.jit.ScriptModule):
        raise TypeError("print_module_summary: module must be an eager nn.Module; ScriptModules have no forward hooks")
    outputs, entries = _record_forward(module, inputs, max_nesting)
    _assign_unique_tensors(entries)
    if skip_redundant:
        entries = [e for e in entries if e["params"] or e["buffers"] or e["outputs"]]

    names = {id(mod): name for name, mod in module.named_modules()}
    header = ["Module", "Parameters", "Buffers", "Output shape", "Datatype"]
    total_params = sum(t.numel() for e in entries for t in e["params"])
    total_buffers = sum(t.numel() for e in entries for t in e["buffers"])
    total = ["Total", str(total_params), str(total_buffers), "-", "-"]
    lines = _format_table([header] + _summary_rows(entries, names) + [total])
    rule = "-" * max(len(line) for line in lines)
    print("\n".join(["", lines[0], rule, *lines[1:-1], rule, lines[-1], ""]))
    return outputs
