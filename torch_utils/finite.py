"""The NaN/Inf policy's shared pieces: one error type for non-finite values and a check of a network's tensors.

Used where non-finite numbers would otherwise pass silently (docs/nan-policy.md): resuming from a snapshot,
writing a snapshot, generating images, and SMaRt's per-tick check of its score source.
"""

import math

import torch


class NonFiniteError(ValueError):
    """A value that must be finite is NaN or infinite; `flag` names the command-line input that caused it, if any."""

    def __init__(self, message: str, flag: str | None = None):
        super().__init__(message)
        self.flag = flag


def first_nonfinite(module: torch.nn.Module) -> tuple[str, int] | None:
    """(name, count) of the first parameter or floating buffer of `module` holding NaN/Inf; None if all are finite."""
    for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name, int((~torch.isfinite(tensor)).sum())
    return None


def check_finite_modules(modules: dict, where: str, flag: str | None = None) -> None:
    """Raise NonFiniteError naming `where` and the tensor if any module of {name: module or None} is non-finite."""
    for module_name, module in modules.items():
        if not isinstance(module, torch.nn.Module):  # None, or an entry that is not a network.
            continue
        bad = first_nonfinite(module)
        if bad is not None:
            raise NonFiniteError(f'{where}: {module_name}.{bad[0]} holds {bad[1]} NaN/Inf value(s)', flag)


def check_finite_number(value: float, flag: str) -> None:
    """Raise NonFiniteError naming `flag` unless `value` is a finite number."""
    if not math.isfinite(float(value)):
        raise NonFiniteError(f'{value!r} is not a finite number', flag)
