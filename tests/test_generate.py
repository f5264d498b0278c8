"""generate.py through click's CliRunner, and the seed -> image contract of gan_tools.sampling."""

import gc
import itertools
import os
import pickle
import sys
import weakref

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import generate  # noqa: E402  (a top-level script, importable from the repository root)
from gan_tools import sampling  # noqa: E402
from training import networks, snapshot  # noqa: E402


@pytest.fixture(scope="module")
def network_pkl(tmp_path_factory):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        G = networks.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=8, img_channels=3,
                               mapping_kwargs=dict(num_layers=2),
                               synthesis_kwargs=dict(channel_base=64, channel_max=16)).eval()
    with torch.no_grad():
        for name, param in G.named_parameters():
            if name.endswith("noise_strength"):
                param.fill_(0.5)  # so that the noise mode shows in the pixels
    path = tmp_path_factory.mktemp("net") / "net.pkl"
    snapshot.save_network_pkl(path, dict(G_ema=G))
    return str(path)


def _run(*args):
    return CliRunner().invoke(generate.main, [str(a) for a in args])


def _read(path):
    return np.asarray(PIL.Image.open(path))


def test_parse_seeds():
    assert list(generate.parse_seeds("0-3,7, 10-11")) == [0, 1, 2, 3, 7, 10, 11]
    with pytest.raises(ValueError, match="range '5-2' is empty"):
        generate.parse_seeds("5-2")
    with pytest.raises(ValueError, match="'x' is not a seed or a range like 0-7"):
        generate.parse_seeds("1,x")


def test_help():
    result = _run("--help")
    assert result.exit_code == 0 and "--trust-pickle" in result.output and "--seeds" in result.output


def test_generates_files_and_grid(tmp_path, network_pkl):
    result = _run("--network", network_pkl, "--seeds", "0-2,5", "--outdir", tmp_path, "--grid")
    assert result.exit_code == 0, result.output
    names = sorted(os.listdir(tmp_path))
    assert names == ["grid.png", "seed0000.png", "seed0001.png", "seed0002.png", "seed0005.png"]
    assert _read(tmp_path / "seed0000.png").shape == (8, 8, 3)
    grid = _read(tmp_path / "grid.png")
    assert grid.shape == (16, 16, 3)  # 4 images -> 2x2
    np.testing.assert_array_equal(grid[8:, :8], _read(tmp_path / "seed0002.png"))


@pytest.mark.parametrize("noise_mode", ["const", "random"])
def test_same_seed_same_image_whatever_the_batch(tmp_path, network_pkl, noise_mode):
    for batch in (1, 3):
        result = _run("--network", network_pkl, "--seeds", "3-6", "--outdir", tmp_path / f"b{batch}",
                      "--batch", batch, "--noise-mode", noise_mode)
        assert result.exit_code == 0, result.output
    for seed in range(3, 7):
        np.testing.assert_array_equal(_read(tmp_path / "b1" / f"seed{seed:04d}.png"),
                                      _read(tmp_path / "b3" / f"seed{seed:04d}.png"))


def test_trusted_and_safe_give_the_same_images(tmp_path, network_pkl):
    for flag, sub in ((), "safe"), (("--trust-pickle",), "trusted"):
        result = _run("--network", network_pkl, "--seeds", "0-1", "--outdir", tmp_path / sub, *flag)
        assert result.exit_code == 0, result.output
    for seed in (0, 1):
        np.testing.assert_array_equal(_read(tmp_path / "safe" / f"seed{seed:04d}.png"),
                                      _read(tmp_path / "trusted" / f"seed{seed:04d}.png"))


def test_z_recipe_matches_numpy():
    np.testing.assert_array_equal(sampling.seed_to_z(42, 5), np.random.RandomState(42).randn(1, 5))


@pytest.mark.parametrize("args,message", [
    (("--seeds", "3-1"), "Invalid value for '--seeds': range '3-1' is empty"),
    (("--seeds", "0", "--class", "2"), "--class: class 2 given, but the generator is unconditional"),
    (("--seeds", "0", "--network", "missing.pkl"), "--network missing.pkl:"),
])
def test_errors_name_the_flag(tmp_path, network_pkl, args, message):
    base = ["--outdir", tmp_path] + ([] if "--network" in args else ["--network", network_pkl])
    result = _run(*base, *args)
    assert result.exit_code != 0 and message in result.output, result.output


def test_not_a_snapshot(tmp_path):
    path = tmp_path / "list.pkl"
    path.write_bytes(pickle.dumps([1]))
    result = _run("--network", path, "--seeds", "0", "--outdir", tmp_path)
    assert result.exit_code != 0 and "without any of the keys" in result.output


def test_nan_weights_and_nan_trunc_are_refused(tmp_path, network_pkl):
    """Before: NaN weights gave all-black images with rc 0 and --trunc=nan was accepted."""
    result = _run("--network", network_pkl, "--seeds", "0", "--outdir", tmp_path / "a", "--trunc", "nan")
    assert result.exit_code == 1 and "Error: --trunc: nan is not a finite number" in result.output, result.output
    G = snapshot.load_network_pkl(network_pkl)["G_ema"]
    with torch.no_grad():
        G.synthesis.b4.conv1.weight[0, 0, 0, 0] = float("nan")
    bad = tmp_path / "nan.pkl"
    snapshot.save_network_pkl(bad, dict(G_ema=G))
    result = _run("--network", bad, "--seeds", "0", "--outdir", tmp_path / "b")
    assert result.exit_code == 1, result.output
    assert (f"Error: --network: {bad}: refusing to generate from non-finite weights: G_ema.synthesis.b4.conv1.weight "
            f"holds 1 NaN/Inf value(s)") in result.output
    assert not (tmp_path / "b").exists()


def test_nan_output_is_refused(tmp_path, network_pkl):
    G = snapshot.load_network_pkl(network_pkl)["G_ema"]
    with pytest.raises(ValueError, match=r"the generator output holds NaN/Inf for seed\(s\) \[0\]"):
        list(sampling.generate_images(G, [0], truncation_psi=float("inf")))


def test_seed_ranges_stay_lazy():
    """Before: '--seeds 0-9999999' was expanded into a list up front (2.7 GB in 25 s)."""
    seeds = generate.SeedList().convert("5,0-9999999,20-21", None, None)
    assert isinstance(seeds, sampling.SeedRanges) and seeds.ranges == [(5, 5), (0, 9999999), (20, 21)]
    assert len(seeds) == 10000003 and (seeds[0], seeds[1], seeds[5000001], seeds[-1], seeds[-3]) == (
        5, 0, 5000000, 21, 9999999)
    assert seeds[10000000:10000005] == [9999999, 20, 21] and list(itertools.islice(seeds, 3)) == [5, 0, 1]
    with pytest.raises(ValueError, match=r"seed 4294967296 is too large; seeds are integers in \[0, 2\*\*32\)"):
        generate.parse_seeds("0-4294967296")


@pytest.mark.parametrize("grid", [False, True])
def test_images_are_streamed_not_kept(tmp_path, network_pkl, monkeypatch, grid):
    """Before: every image stayed in memory until the end, with or without --grid (1.28 GB for 2000 at 256x256)."""
    alive = []

    def fake_generate(G, seeds, **kwargs):
        for seed in seeds:
            gc.collect()
            alive.append(sum(ref() is not None for ref in refs))
            image = np.full([8, 8, 3], seed, dtype=np.uint8)
            refs.append(weakref.ref(image))
            yield seed, image
            del image

    refs = []
    monkeypatch.setattr(sampling, "generate_images", fake_generate)
    result = _run("--network", network_pkl, "--seeds", "0-4", "--outdir", tmp_path, *(["--grid"] if grid else []))
    assert result.exit_code == 0, result.output
    assert alive == [0, 1, 1, 1, 1]  # Only the image just written (the loop variable) is held, not all of them.
    if grid:
        expected = np.zeros([16, 24, 3], dtype=np.uint8)  # gw 3, gh 2; the sixth cell black.
        for i in range(5):
            row, col = divmod(i, 3)
            expected[row * 8:(row + 1) * 8, col * 8:(col + 1) * 8] = i
        np.testing.assert_array_equal(_read(tmp_path / "grid.png"), expected)
