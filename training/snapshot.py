"""Network snapshots: save them atomically, and load StyleGAN2-ADA-format pickles (ours or NVIDIA's), safely by default.

A snapshot is the dict StyleGAN2-ADA writes: G, D, G_ema, augment_pipe and training_set_kwargs
(docs/spec/nvidia-pickles.md section 1.5). `load_network_pkl` reads it in one of two ways:

- safe (default): `torch_utils.safe_pickle` reads the file without running any code from it, and each network is
  rebuilt from our own classes (training.networks) with the recorded constructor arguments, then filled with the
  stored tensors. Works for our snapshots, official StyleGAN2-ADA PyTorch pickles and StyleGAN2 networks written by
  the StyleGAN3 codebase (--cfg=stylegan2; their arguments are mapped by training.pickle_codebases).
- trusted: `pickle.load`, which runs the network source stored in the pickle (needed for classes we do not have,
  e.g. StyleGAN3's alias-free generators). Only for files you trust.
"""

import io
import os
import pickle
import warnings
from typing import Any, BinaryIO, Callable

import torch

import dnnlib
from torch_utils import safe_pickle
from training import pickle_codebases

NETWORK_KEYS = ("G", "D", "G_ema")


def _our_classes() -> dict[str, Callable[..., torch.nn.Module]]:
    """Recorded class name -> our class that accepts the same constructor arguments and state dict.

    An augment_pipe that cannot be rebuilt stays a PersistentRecord (with a warning; its tensors remain readable).
    """
    from training import augment, networks  # Deferred: only the safe path needs the network definitions.
    return {"Generator": networks.Generator, "Discriminator": networks.Discriminator,
            "AugmentPipe": augment.AugmentPipe}


def _plain(value: Any) -> Any:
    """Turn the safe loader's containers back into what constructors expect (EasyDict for kwargs dicts)."""
    if isinstance(value, dict):
        return dnnlib.EasyDict({k: _plain(v) for k, v in value.items()})
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return value


def build_from_record(key: str, record: safe_pickle.PersistentRecord,
                      codebase: str = pickle_codebases.SG2ADA, trust_flag: str | None = "--trust-pickle") -> torch.nn.Module:
    """Construct our class for `record` from its recorded init arguments (as written by `codebase`, see
    training.pickle_codebases) and load its tensors (strict, by name). `trust_flag` is the caller's flag for the
    trusted loader, named in the hint (None: the caller has none)."""
    classes = _our_classes()
    origin = (f"if the pickle comes from a codebase with other {record.class_name} classes (e.g. StyleGAN3's "
              "alias-free networks)")
    hint = (f"{origin}, load it with {trust_flag}, which runs the code stored in it" if trust_flag else
            f"{origin}, it can only be loaded by running its code, which this tool never does")
    if record.class_name not in classes:
        raise ValueError(f"{key}: the snapshot holds a {record.class_name!r}, which the safe loader can rebuild only "
                         f"for {sorted(classes)}; {hint}")
    cls = classes[record.class_name]
    args, kwargs = pickle_codebases.our_arguments(key, record, codebase)
    try:
        net = cls(*_plain(args), **_plain(kwargs))
    except TypeError as err:
        raise ValueError(f"{key}: the recorded constructor arguments of {record.class_name} ({codebase}) do not fit "
                         f"{cls.__module__}.{cls.__qualname__} ({err}); {hint}") from err
    expected = net.state_dict()
    missing = sorted(set(expected) - set(record.state_dict))
    unexpected = sorted(set(record.state_dict) - set(expected))
    wrong_shape = sorted(name for name in set(expected) & set(record.state_dict)
                         if expected[name].shape != record.state_dict[name].shape)
    if missing or unexpected or wrong_shape:
        raise ValueError(f"{key}: the stored tensors do not match {record.class_name} built from its recorded "
                         f"arguments (missing {missing[:4]}, unexpected {unexpected[:4]}, wrong shape "
                         f"{wrong_shape[:4]}); {hint}")
    net.load_state_dict(record.state_dict, strict=True)
    return net.eval().requires_grad_(False)


def _read_bytes(f: str | os.PathLike | BinaryIO) -> bytes:
    if isinstance(f, (str, os.PathLike)):
        with dnnlib.util.open_url(os.fspath(f)) as file:
            return file.read()
    return f.read()


def load_network_pkl(f: str | os.PathLike | BinaryIO, trusted: bool = False,
                     trust_flag: str | None = "--trust-pickle") -> dict[str, Any]:
    """Load a network snapshot from a path, URL or binary file; return a dict with G, D, G_ema, augment_pipe and
    training_set_kwargs (missing keys are None; rebuilt networks are in eval mode without gradients).

    With trusted=False (default) nothing from the file runs; with trusted=True it is unpickled normally.
    `trust_flag` names the caller's flag for trusted=True in errors (None: the caller has none).
    """
    data = _read_bytes(f)
    if trusted:
        snapshot = pickle.loads(data)
    else:
        snapshot = safe_pickle.safe_load(io.BytesIO(data))
    if not isinstance(snapshot, dict) or not any(key in snapshot for key in NETWORK_KEYS):
        raise ValueError(f"the pickle holds {type(snapshot).__name__} without any of the keys {list(NETWORK_KEYS)}; "
                         "expected a StyleGAN2-ADA style network snapshot (TensorFlow pickles are not supported)")
    result = dict(snapshot)
    for key in NETWORK_KEYS + ("augment_pipe", "training_set_kwargs"):
        result.setdefault(key, None)
    codebase = pickle_codebases.snapshot_codebase(result)
    for key in NETWORK_KEYS + ("augment_pipe",):
        value = result[key]
        if isinstance(value, safe_pickle.PersistentRecord):
            try:
                result[key] = build_from_record(key, value, codebase, trust_flag)
            except ValueError as err:
                if key != "augment_pipe":
                    raise
                # The augment pipe matters only for resuming training; keep its record readable instead of failing.
                warnings.warn(f"augment_pipe kept as a PersistentRecord: {err}")
        elif value is not None and not isinstance(value, torch.nn.Module):
            raise ValueError(f"{key}: expected a network, got {type(value).__name__}")
    if result["training_set_kwargs"] is not None:
        result["training_set_kwargs"] = dict(_plain(result["training_set_kwargs"]))
    return result


def save_network_pkl(path: str | os.PathLike, snapshot: dict[str, Any]) -> None:
    """Pickle a snapshot dict to `path` atomically (temp file + rename): a crash never leaves a truncated file."""
    if not isinstance(snapshot, dict):
        raise TypeError(f"snapshot must be a dict (G, D, G_ema, ...), got {type(snapshot).__name__}")
    dnnlib.util.write_atomically(path, pickle.dumps(snapshot))
