"""Tests for torch_utils.custom_ops: one real C++ build and reuse, the source digest, and the warn-once fallback."""

import subprocess
import sys
import time
import uuid
import warnings

import pytest
import torch

from torch_utils import custom_ops

# Minimal includes keep the one real compile near 10 s; <torch/extension.h> alone takes several times longer.
_ADD_SOURCE = """
#include <ATen/core/Tensor.h>
#include <torch/csrc/utils/pybind.h>

static at::Tensor add_tensors(const at::Tensor& a, const at::Tensor& b) { return a.add(b); }

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("add_tensors", &add_tensors); }
"""


@pytest.fixture
def build_root(tmp_path, monkeypatch):
    """Build under tmp_path, never in the user's cache; plugin caches are restored after the test."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "extensions"))
    monkeypatch.setattr(custom_ops, "_cached_plugins", {})
    monkeypatch.setattr(custom_ops, "_unavailable", {})
    monkeypatch.setattr(custom_ops, "verbosity", "brief")
    return tmp_path / "extensions"


def _unique_name(prefix):
    # A process can import an extension module name only once, so every test plugin gets a fresh name.
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@pytest.mark.slow
def test_get_plugin_builds_calls_and_reuses(build_root, tmp_path, capsys):
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    (src_dir / "add.cpp").write_text(_ADD_SOURCE)
    name = _unique_name("test_add")

    plugin = custom_ops.get_plugin(name, sources=["add.cpp"], source_dir=str(src_dir))
    assert capsys.readouterr().out == f'Setting up PyTorch plugin "{name}"... Done.\n'
    a = torch.arange(4, dtype=torch.float64)
    assert plugin.add_tensors(a, torch.full((4,), 0.5, dtype=torch.float64)).tolist() == [0.5, 1.5, 2.5, 3.5]

    (digest_dir,) = (build_root / name).iterdir()  # Sources were copied into one digest-named build dir.
    assert (digest_dir / "add.cpp").read_text() == _ADD_SOURCE
    library = digest_dir / f"{name}.so"
    mtime = library.stat().st_mtime_ns

    start = time.monotonic()
    assert custom_ops.get_plugin(name, sources=["add.cpp"], source_dir=str(src_dir)) is plugin
    assert time.monotonic() - start < 1.0 and capsys.readouterr().out == ""  # In-process cache: nothing rebuilt.
    assert library.stat().st_mtime_ns == mtime

    # A new process (a later run) finds the same digest dir and loads the existing library without compiling.
    script = (f"import torch; from torch_utils import custom_ops; "
              f"p = custom_ops.get_plugin({name!r}, sources=['add.cpp'], source_dir={str(src_dir)!r}); "
              f"print(p.add_tensors(torch.ones(2), torch.ones(2)).tolist())")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f'Setting up PyTorch plugin "{name}"... Done.\n[2.0, 2.0]\n'
    assert library.stat().st_mtime_ns == mtime


def test_source_digest_tracks_contents_and_build_kwargs(tmp_path):
    src = tmp_path / "op.cpp"
    src.write_text("int f() { return 1; }\n")
    digest = custom_ops._source_digest([str(src)], {})
    assert digest == custom_ops._source_digest([str(src)], {})
    assert digest != custom_ops._source_digest([str(src)], {"extra_cflags": ["-O3"]})
    src.write_text("int f() { return 2; }\n")
    assert digest != custom_ops._source_digest([str(src)], {})


def _warnings_from_two_calls(name, sources, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # Only our own once-per-plugin logic may deduplicate.
        results = [custom_ops.load_or_warn(name, sources, **kwargs) for _ in range(2)]
    assert results == [None, None]
    return [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]


def test_load_or_warn_without_compiler_warns_once(build_root, tmp_path, monkeypatch):
    (tmp_path / "op.cpp").write_text(_ADD_SOURCE)
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    name = _unique_name("test_nocxx")
    messages = _warnings_from_two_calls(name, [str(tmp_path / "op.cpp")])
    assert messages == [
        f'PyTorch plugin "{name}" is unavailable (no C++ compiler found (looked for '
        f"'{tmp_path / 'no-such-compiler'}'; set CXX to a working compiler)); falling back to the slower reference "
        f"implementation."
    ]
    assert not build_root.exists()  # Nothing was attempted.


def test_load_or_warn_with_build_error_warns_once(build_root, tmp_path, capsys):
    (tmp_path / "broken.cpp").write_text("#error deliberately broken plugin source\n")  # Fails in well under 1 s.
    name = _unique_name("test_broken")
    messages = _warnings_from_two_calls(name, ["broken.cpp"], source_dir=str(tmp_path))
    assert len(messages) == 1
    assert messages[0].startswith(f'PyTorch plugin "{name}" is unavailable (build error: Setting up PyTorch plugin '
                                  f'"{name}" failed: ')
    assert "deliberately broken plugin source" in messages[0]  # The compiler log reaches the user.
    assert "falling back to the slower reference implementation" in messages[0]
    assert capsys.readouterr().out == f'Setting up PyTorch plugin "{name}"... Failed!\n'  # Built once, not twice.


def test_cuda_sources_need_a_cuda_device(build_root, tmp_path):
    (tmp_path / "op.cu").write_text("// never compiled here\n")
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    name = _unique_name("test_cuda")
    messages = _warnings_from_two_calls(name, [str(tmp_path / "op.cu")])
    reason = "this PyTorch build has no CUDA support" if torch.version.cuda is None else "no CUDA device is available"
    assert messages == [f'PyTorch plugin "{name}" is unavailable ({reason}); falling back to the slower reference '
                        f"implementation."]


def test_get_plugin_argument_errors(build_root, tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"get_plugin: sources not found: \[.*missing\.cpp'\]"):
        custom_ops.get_plugin("ok_name", sources=["missing.cpp"], source_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"module_name must be a Python identifier, got 'bad-name'"):
        custom_ops.get_plugin("bad-name", sources=[])
    with pytest.raises(TypeError, match=r"build_kwargs must not contain \['verbose'\]"):
        custom_ops.get_plugin("ok_name", sources=[], verbose=True)
    with pytest.raises(TypeError, match=r"sources must be a list of file paths, got 'a.cpp'"):
        custom_ops.get_plugin("ok_name", sources="a.cpp")
    monkeypatch.setattr(custom_ops, "verbosity", "loud")
    with pytest.raises(ValueError, match=r"verbosity must be one of \('none', 'brief', 'full'\), got 'loud'"):
        custom_ops.get_plugin("ok_name", sources=[])
    assert not build_root.exists()
