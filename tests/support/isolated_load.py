"""Unpickle in a subprocess that can import only copies of torch_utils and dnnlib (plus torch and numpy).

Proves that a pickle of our persistent classes runs where this repository's training/ and edm_bridge/ are absent,
as NVIDIA's pickles do. This directory is on pytest's `pythonpath`, so tests `from isolated_load import run_without_repo`.
"""

import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]

_PREAMBLE = textwrap.dedent('''
    import importlib.util, pickle, sys
    sys.path[:0] = [sys.argv[1], sys.argv[2]]  # the copied torch_utils / dnnlib, then site-packages (torch, numpy)
    for package in ('training', 'edm_bridge', 'dpm'):
        assert importlib.util.find_spec(package) is None, package + '/ must not be importable here'
    import torch
    torch.set_num_threads(1)
    with open(sys.argv[3], 'rb') as f:
        data = pickle.load(f)
    assert sys.modules['torch_utils'].__file__.startswith(sys.argv[1])
''')


def run_without_repo(tmp_path: Path, data: dict, body: str) -> dict:
    """Pickle `data`; in the isolated subprocess unpickle it as `data`, run `body` (it fills a dict `out`, using
    torch), and return `out` (saved with torch.save)."""
    lib = tmp_path / 'lib'
    for package in ('torch_utils', 'dnnlib'):
        shutil.copytree(REPO / package, lib / package, ignore=shutil.ignore_patterns('__pycache__'))
    (tmp_path / 'data.pkl').write_bytes(pickle.dumps(data))
    script = _PREAMBLE + 'out = {}\n' + textwrap.dedent(body) + '\ntorch.save(out, sys.argv[4])\n'
    site_packages = str(Path(torch.__file__).parents[1])
    # -I -S: no environment, no user site and no .pth files, so the editable install of this repo is invisible.
    result = subprocess.run([sys.executable, '-I', '-S', '-c', script, str(lib), site_packages,
                             str(tmp_path / 'data.pkl'), str(tmp_path / 'out.pt')],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return torch.load(tmp_path / 'out.pt')
