"""Summaries of network pickles (NVIDIA persistence format), read safely and optionally cross-checked.

`summarize_network_pkl` is the library side of `inspect_pkl.py`: it lists each network a pickle holds
from the safe loader's records and, when asked, also unpickles the file the trusted way (which runs the
stored source) and checks that both readings give identical tensors.
"""

import io
import pickle
from typing import Any

import torch

import dnnlib
from torch_utils import safe_pickle


def _trusted_modules(obj: Any, path: str = "") -> dict[str, torch.nn.Module]:
    """Map the same paths that safe_pickle.iter_records gives to the modules of a trusted load."""
    if isinstance(obj, torch.nn.Module):
        return {path: obj}
    found = {}
    if isinstance(obj, dict):
        for key, value in obj.items():
            found.update(_trusted_modules(value, f"{path}.{key}" if path else str(key)))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            found.update(_trusted_modules(value, f"{path}[{i}]"))
    return found


def _compare_state_dicts(path: str, safe: dict[str, torch.Tensor], trusted: dict[str, torch.Tensor]) -> int:
    """Raise ValueError unless both state dicts hold the same names and bit-identical tensors; return the count."""
    if sorted(safe) != sorted(trusted):
        missing = sorted(set(safe) ^ set(trusted))
        raise ValueError(f"{path}: the safe and trusted loads disagree on tensor names: {missing[:5]}")
    for name, tensor in safe.items():
        other = trusted[name].detach().cpu()
        if tensor.shape != other.shape or tensor.dtype != other.dtype or not torch.equal(tensor, other):
            raise ValueError(f"{path}.{name}: the safe and trusted loads give different tensors")
    return len(safe)


def summarize_network_pkl(url: str, trusted: bool = False, cache_dir: str | None = None) -> list[dnnlib.EasyDict]:
    """Return one row per network in the pickle at `url`: path, class, source hash, tensor and parameter counts.

    With `trusted=True` the pickle is also loaded with `pickle.load` (this RUNS the code stored in it) and each
    row gets `trusted_equal`, the number of tensors verified bit-identical between the two loads.
    """
    with dnnlib.util.open_url(url, cache_dir=cache_dir) as f:
        data = f.read()
    records = list(safe_pickle.iter_records(safe_pickle.safe_load(io.BytesIO(data))))
    rows = []
    for path, record in records:
        rows.append(dnnlib.EasyDict(
            path=path,
            class_name=record.class_name,
            module_src_hash=record.module_src_hash,
            num_tensors=len(record.state_dict),
            num_elements=sum(t.numel() for t in record.state_dict.values()),
            init_kwargs=dict(record.init_kwargs),
        ))
    if trusted:
        modules = _trusted_modules(pickle.loads(data))
        for row, (path, record) in zip(rows, records):
            if path not in modules:
                raise ValueError(f"{path}: present in the safe load but not a torch.nn.Module in the trusted load")
            row.trusted_equal = _compare_state_dicts(path, record.state_dict, modules[path].state_dict())
    return rows
