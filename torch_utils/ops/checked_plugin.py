"""The CUDA plugins behind `bias_act` and `upfirdn2d`, trusted only after a run-time self-check against the reference.

The first time an op asks for its plugin in a process (on a tensor of a supported device type), the plugin is built
by `torch_utils.custom_ops` (ninja, cached on disk) and a small case runs through both the plugin and the reference
op, forward and gradient (`self_check`). If they disagree beyond `TOLERANCE`, or the build fails, one warning gives
the numbers and the op uses its reference path for the rest of the process: an unverified or broken kernel never
changes results silently.

Tolerance (per dtype of the checked case): max |plugin - reference| <= TOLERANCE[dtype] * max(1, max |reference|),
where the reference runs in float64 on the same (already rounded) inputs, so TF32 convolutions or fp16 rounding in
the reference cannot blur the check.

Test hook: `loader` (the callable that builds and returns the plugin module, or None) and `device_types` are plain
attributes, so a test can install a fake plugin that runs on CPU tensors and exercise the whole dispatch path.
"""

import contextlib
import os
import warnings
from typing import Any, Callable, Optional

import torch

from torch_utils import custom_ops

# Bound on max |plugin - reference| relative to max(1, max |reference|), by the dtype the plugin computed in.
TOLERANCE = {torch.float64: 1e-9, torch.float32: 2e-5, torch.float16: 4e-3}

_SHOWN_FAILURES = 4  # Failures quoted in the warning; `CheckedPlugin.report` keeps them all.
_SOURCE_DIR = os.path.dirname(os.path.abspath(__file__))
_reference_only = [False]  # Set by reference_only(): every op takes its reference path.


@contextlib.contextmanager
def reference_only():
    """Within this context every op uses its reference path, plugins or not (benchmarks compare the two)."""
    saved = _reference_only[0]
    _reference_only[0] = True
    try:
        yield
    finally:
        _reference_only[0] = saved


class Comparison:
    """Collects plugin-vs-reference comparisons of one self-check; `failures` lists the ones out of tolerance."""

    def __init__(self) -> None:
        self.failures: list[str] = []
        self.count = 0

    def check(self, case: str, got: Optional[torch.Tensor], want: Optional[torch.Tensor], dtype: torch.dtype) -> None:
        """Compare `got` (from the plugin, computed in `dtype`) with the float64 reference `want`."""
        self.count += 1
        if got is None or want is None:
            if (got is None) != (want is None):
                self.failures.append(f"{case}: plugin gave {'no' if got is None else 'a'} result, reference "
                                     f"{'none' if want is None else 'one'}")
            return
        if got.shape != want.shape:
            self.failures.append(f"{case}: shape {list(got.shape)} != reference {list(want.shape)}")
            return
        got, want = got.detach().double().cpu(), want.detach().double().cpu()
        scale = max(1.0, want.abs().max().item()) if want.numel() else 1.0
        err = (got - want).abs().max().item() if want.numel() else 0.0
        bound = TOLERANCE[dtype] * scale
        if not err <= bound:  # Also catches NaN.
            self.failures.append(f"{case}: max |plugin - ref| = {err:.3g} > {bound:.3g} "
                                 f"(tolerance {TOLERANCE[dtype]:g} x {scale:.3g})")


class CheckedPlugin:
    """One op's plugin: built on first use, checked once per process by `self_check`, else the reference path."""

    def __init__(self, module_name: str, sources: list[str], headers: list[str],
                 self_check: Callable[[Any, torch.device, Comparison], None]) -> None:
        self.module_name = module_name
        self.build_kwargs = dict(module_name=module_name, sources=sources, headers=headers, source_dir=_SOURCE_DIR)
        self.self_check = self_check
        self.loader: Callable[[], Any] = lambda: custom_ops.load_or_warn(**self.build_kwargs)
        self.device_types: tuple[str, ...] = ('cuda',)  # Tensors on other devices never reach the plugin.
        self.reset()

    def reset(self) -> None:
        """Forget the plugin and the verdict: the next use builds and checks again (tests)."""
        self.module: Any = None
        self.status: Optional[str] = None  # None = not tried yet, 'ok', 'unavailable' or 'rejected'.
        self.report = ''

    def build(self) -> Any:
        """Build and import the plugin now (raises on failure); no self-check, needs no GPU. For compile checks."""
        return custom_ops.get_plugin(**self.build_kwargs)

    def get(self, device: torch.device) -> Any:
        """The verified plugin for tensors on `device`, or None: the caller then uses the reference path."""
        if _reference_only[0] or device.type not in self.device_types:
            return None
        if self.status is None:
            self._initialize(device)
        return self.module if self.status == 'ok' else None

    def _initialize(self, device: torch.device) -> None:
        module = self.loader()  # custom_ops.load_or_warn warns once itself when the build fails.
        if module is None:
            self.status, self.report = 'unavailable', 'the plugin could not be built or loaded'
            return
        comparison = Comparison()
        try:
            # The check needs autograd whatever the caller's mode, must not use the caller's RNG streams (it uses its
            # own generator) and must see the plugin's own dtypes, not autocast's.
            with torch.inference_mode(False), torch.enable_grad(), torch.autocast(device.type, enabled=False):
                self.self_check(module, device, comparison)
        except Exception as err:  # A kernel that raises (e.g. no kernel image for this GPU) is a failed check.
            comparison.failures.append(f"self-check raised {type(err).__name__}: {err}")
        if comparison.failures:
            self.status = 'rejected'
            self.report = '; '.join(comparison.failures)
            shown = '; '.join(comparison.failures[:_SHOWN_FAILURES])
            if len(comparison.failures) > _SHOWN_FAILURES:
                shown += f'; ... ({len(comparison.failures) - _SHOWN_FAILURES} more)'
            warnings.warn(f'PyTorch plugin "{self.module_name}" failed its self-check against the reference op on '
                          f'{device} ({len(comparison.failures)} of {comparison.count} comparisons out of tolerance: '
                          f'{shown}); falling back to the slower reference implementation.',
                          RuntimeWarning, stacklevel=4)
            return
        self.module, self.status = module, 'ok'
        self.report = f'{comparison.count} comparisons within tolerance'
