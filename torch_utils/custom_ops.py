"""Just-in-time building and loading of the C++/CUDA plugins behind the fast paths of `torch_utils.ops`.

`get_plugin` compiles with torch.utils.cpp_extension.load (ninja) on first use. The sources are copied into a
directory named after a digest of their contents and of the Python/torch/CUDA versions, so an edited source or a
torch upgrade builds afresh while an unchanged plugin is reused across runs. `load_or_warn` is what ops call: it
returns None, with one warning per plugin, when the plugin cannot be built, and the op then uses its reference path.
Names follow StyleGAN2-ADA's `torch_utils.custom_ops` (docs/spec/nvidia-pickles.md section 2).
"""

import hashlib
import os
import shutil
import sys
import tempfile
import types
import uuid
import warnings
from typing import Any, Optional

import torch
import torch.utils.cpp_extension

import dnnlib

verbosity = "brief"  # 'none' = silent, 'brief' = one line per plugin, 'full' = also the compiler output.

_VERBOSITY_LEVELS = ("none", "brief", "full")
_RESERVED_BUILD_KWARGS = ("name", "sources", "build_directory", "verbose")  # get_plugin sets these itself.
_cached_plugins: dict[str, types.ModuleType] = {}  # module_name -> loaded plugin.
_unavailable: dict[str, str] = {}  # module_name -> why load_or_warn could not provide it (warned once).


def _extensions_root() -> str:
    # Respect torch's own override so that plugins land where the user keeps their other extensions.
    return os.environ.get("TORCH_EXTENSIONS_DIR") or dnnlib.make_cache_dir_path("torch_extensions")


def _source_digest(files: list[str], build_kwargs: dict[str, Any]) -> str:
    """Hex digest of the files' names and contents, the build kwargs and the Python/torch/CUDA versions."""
    digest = hashlib.sha256()
    for part in (sys.version, torch.__version__, str(torch.version.cuda), repr(sorted(build_kwargs.items()))):
        digest.update(part.encode("utf-8") + b"\0")
    for path in files:
        digest.update(os.path.basename(path).encode("utf-8") + b"\0")
        with open(path, "rb") as f:
            digest.update(f.read())
        digest.update(b"\0")
    return digest.hexdigest()[:32]


def _prepare_build_dir(module_name: str, files: list[str], build_kwargs: dict[str, Any]) -> str:
    """Return the digest-named build directory for the plugin, copying the sources there if it is new."""
    build_dir = os.path.join(_extensions_root(), module_name, _source_digest(files, build_kwargs))
    if not os.path.isdir(build_dir):
        # Copy into a private temp dir and rename it into place: concurrent ranks never see half-copied sources.
        os.makedirs(os.path.dirname(build_dir), exist_ok=True)
        tmp_dir = tempfile.mkdtemp(dir=os.path.dirname(build_dir), prefix=f"tmp-{uuid.uuid4().hex}-")
        for path in files:
            shutil.copyfile(path, os.path.join(tmp_dir, os.path.basename(path)))
        try:
            os.replace(tmp_dir, build_dir)
        except OSError:  # Another process renamed its copy first; its sources are identical (same digest).
            shutil.rmtree(tmp_dir, ignore_errors=True)
            if not os.path.isdir(build_dir):
                raise
    return build_dir


def _resolve_files(arg_name: str, files: Any, source_dir: Optional[str]) -> list[str]:
    if isinstance(files, (str, os.PathLike)) or not all(isinstance(f, (str, os.PathLike)) for f in files):
        raise TypeError(f"get_plugin: {arg_name} must be a list of file paths, got {files!r}")
    paths = [os.path.join(source_dir, os.fspath(f)) if source_dir is not None else os.fspath(f) for f in files]
    missing = [path for path in paths if not os.path.isfile(path)]
    if missing:
        raise FileNotFoundError(f"get_plugin: {arg_name} not found: {missing}")
    names = [os.path.basename(path) for path in paths]
    if len(set(names)) != len(names):
        raise ValueError(f"get_plugin: {arg_name} must have distinct base names (they share one build dir): {names}")
    return paths


def get_plugin(
    module_name: str,
    sources: list[str],
    headers: Optional[list[str]] = None,
    source_dir: Optional[str] = None,
    **build_kwargs: Any,
) -> types.ModuleType:
    """Build (first use) and import the C++/CUDA extension `module_name`; return the module, cached per process.

    `sources` and `headers` are paths, relative to `source_dir` if given. `build_kwargs` go to
    torch.utils.cpp_extension.load (e.g. extra_cuda_cflags). Raises RuntimeError naming the plugin on failure.
    """
    if verbosity not in _VERBOSITY_LEVELS:
        raise ValueError(f"torch_utils.custom_ops.verbosity must be one of {_VERBOSITY_LEVELS}, got {verbosity!r}")
    if not isinstance(module_name, str) or not module_name.isidentifier():
        raise ValueError(f"get_plugin: module_name must be a Python identifier, got {module_name!r}")
    reserved = sorted(set(build_kwargs) & set(_RESERVED_BUILD_KWARGS))
    if reserved:
        raise TypeError(f"get_plugin: build_kwargs must not contain {reserved}; get_plugin sets them itself")
    if module_name in _cached_plugins:
        return _cached_plugins[module_name]
    source_paths = _resolve_files("sources", sources, source_dir)
    header_paths = _resolve_files("headers", headers or [], source_dir)

    if verbosity == "full":
        print(f'Setting up PyTorch plugin "{module_name}"...')
    elif verbosity == "brief":
        print(f'Setting up PyTorch plugin "{module_name}"... ', end="", flush=True)
    try:
        build_dir = _prepare_build_dir(module_name, source_paths + header_paths, build_kwargs)
        build_sources = [os.path.join(build_dir, os.path.basename(path)) for path in source_paths]
        module = torch.utils.cpp_extension.load(
            name=module_name, sources=build_sources, build_directory=build_dir, verbose=(verbosity == "full"),
            **build_kwargs,
        )
    except Exception as err:
        if verbosity == "brief":
            print("Failed!")
        raise RuntimeError(
            f'Setting up PyTorch plugin "{module_name}" failed: {err}\n'
            f"Set torch_utils.custom_ops.verbosity = 'full' to see the full build log."
        ) from err
    if verbosity == "full":
        print(f'Done setting up PyTorch plugin "{module_name}".')
    elif verbosity == "brief":
        print("Done.")
    _cached_plugins[module_name] = module
    return module


def _why_unbuildable(sources: list[str]) -> Optional[str]:
    """Return why the plugin cannot be built here (CUDA sources without a GPU, no compiler), or None."""
    if any(os.fspath(src).endswith(".cu") for src in sources):
        if torch.version.cuda is None:
            return "this PyTorch build has no CUDA support"
        if not torch.cuda.is_available():
            return "no CUDA device is available"
    compiler = os.environ.get("CXX", "c++")  # torch.utils.cpp_extension compiles with $CXX, defaulting to c++.
    if shutil.which(compiler) is None:
        return f"no C++ compiler found (looked for {compiler!r}; set CXX to a working compiler)"
    return None


def load_or_warn(
    module_name: str,
    sources: list[str],
    headers: Optional[list[str]] = None,
    source_dir: Optional[str] = None,
    **build_kwargs: Any,
) -> Optional[types.ModuleType]:
    """Return get_plugin(...) or, if the plugin cannot be built, None: the caller then uses its reference path.

    The first failure for a plugin emits one warning saying why; later calls return None quietly without retrying.
    """
    if module_name in _cached_plugins:
        return _cached_plugins[module_name]
    if module_name in _unavailable:
        return None
    reason = _why_unbuildable(sources)
    if reason is None:
        try:
            return get_plugin(module_name, sources, headers=headers, source_dir=source_dir, **build_kwargs)
        except (RuntimeError, OSError, ImportError) as err:
            reason = f"build error: {err}"
    _unavailable[module_name] = reason
    warnings.warn(
        f'PyTorch plugin "{module_name}" is unavailable ({reason}); falling back to the slower reference '
        f"implementation.",
        RuntimeWarning,
        stacklevel=2,
    )
    return None
