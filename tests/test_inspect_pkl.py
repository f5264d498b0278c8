"""inspect_pkl.py through click's CliRunner: help, the demo, JSON output and user-facing errors."""

import json
import os
import pickle
import sys

from click.testing import CliRunner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import inspect_pkl  # noqa: E402  (a top-level script, importable from the repository root)


def _run(*args):
    return CliRunner().invoke(inspect_pkl.main, list(args))


def test_help():
    result = _run("--help")
    assert result.exit_code == 0
    assert "--network" in result.output and "--trusted" in result.output


def test_demo_json(tmp_path):
    result = _run("--outdir", str(tmp_path), "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output[result.output.index("["):])
    assert [row["path"] for row in rows] == ["G", "G_ema"]
    from training.demo_network import DemoGenerator
    reference = DemoGenerator()
    expected_tensors = len(reference.state_dict())
    expected_elements = sum(t.numel() for t in reference.state_dict().values())
    for row in rows:
        assert row["class_name"] == "DemoGenerator"
        assert (row["num_tensors"], row["num_elements"], row["trusted_equal"]) == (
            expected_tensors, expected_elements, expected_tensors)
        assert len(row["module_src_hash"]) == 64


def test_safe_by_default_for_user_pickles(tmp_path):
    _run("--outdir", str(tmp_path))
    result = _run("--network", str(tmp_path / "demo-snapshot.pkl"), "--json")
    assert result.exit_code == 0, result.output
    assert all("trusted_equal" not in row for row in json.loads(result.output))


def test_missing_file_names_flag(tmp_path):
    result = _run("--network", str(tmp_path / "nope.pkl"))
    assert result.exit_code != 0
    assert "--network" in result.output and "nope.pkl" in result.output


def test_refused_global_names_flag_and_global(tmp_path):
    path = tmp_path / "evil.pkl"

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo should-not-run",))

    path.write_bytes(pickle.dumps({"G": Evil()}))
    result = _run("--network", str(path))
    assert result.exit_code != 0
    assert "--network" in result.output and "system" in result.output


def test_no_networks(tmp_path):
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"a": 1}))
    result = _run("--network", str(path))
    assert result.exit_code != 0
    assert "holds no networks" in result.output
