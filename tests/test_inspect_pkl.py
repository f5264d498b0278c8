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
    assert [row["path"] for row in rows] == ["G", "D", "G_ema"]
    from training.networks import Discriminator, Generator
    for row, net in zip(rows, [Generator(**inspect_pkl.DEMO_G_KWARGS), Discriminator(**inspect_pkl.DEMO_D_KWARGS),
                               Generator(**inspect_pkl.DEMO_G_KWARGS)]):
        state = net.state_dict()
        assert row["class_name"] == type(net).__name__
        assert (row["num_tensors"], row["num_elements"], row["trusted_equal"]) == (
            len(state), sum(t.numel() for t in state.values()), len(state))
        assert len(row["module_src_hash"]) == 64
        assert row["init_kwargs"]["img_resolution"] == 32


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
