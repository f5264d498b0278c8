"""Generate images from a network snapshot (ours or an official StyleGAN2-ADA / StyleGAN3 PyTorch pickle).

Examples:

\b
  # Eight images from seeds 0-7 and a grid of them.
  python generate.py --network=network-snapshot-000100.pkl --seeds=0-7 --grid --outdir=out

\b
  # Class-conditional, truncated, from a URL (downloads are cached; offline, pass a local path).
  python generate.py --network=https://example.org/cifar10.pkl --seeds=0-35 --class=1 --trunc=0.7 --outdir=out

\b
  # StyleGAN3 pickles hold networks we have no classes for: run the code stored in the pickle (trusted files only).
  python generate.py --network=stylegan3-t-ffhq-1024x1024.pkl --seeds=0 --trust-pickle --outdir=out

The same seed gives the same image whatever --batch is; z follows StyleGAN2-ADA's recipe, so official pickles
reproduce their published images seed for seed.
"""

from torch_utils import cpu_threads  # First: OpenMP's wait policy must be set before torch loads (see there).

import os
import pickle
import re
import zipfile

import click
import numpy as np
import torch

from gan_tools import sampling
from torch_utils import image_io
from torch_utils.finite import NonFiniteError, check_finite_modules, check_finite_number
from training import snapshot


def parse_seeds(text: str) -> sampling.SeedRanges:
    """'0-3,7,10-11' -> the seeds 0, 1, 2, 3, 7, 10, 11 as lazy ranges (never expanded into a list)."""
    ranges = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if match is None:
            raise ValueError(f"{part!r} is not a seed or a range like 0-7")
        lo = int(match.group(1))
        hi = int(match.group(2)) if match.group(2) is not None else lo
        if hi < lo:
            raise ValueError(f"range {part.strip()!r} is empty (end below start)")
        if hi >= 2 ** 32:
            raise ValueError(f"seed {hi} is too large; seeds are integers in [0, 2**32)")
        ranges.append((lo, hi))
    return sampling.SeedRanges(ranges)


class SeedList(click.ParamType):
    name = "LIST"

    def convert(self, value, param, ctx):
        if isinstance(value, (list, sampling.SeedRanges)):
            return value
        try:
            return parse_seeds(value)
        except ValueError as err:
            self.fail(f"{err}; expected e.g. 0-7,12", param, ctx)


def _load_projected_w(path: str) -> np.ndarray:
    """The float 'w' array of projector.py's .npz (no pickled objects); ClickException naming --projected-w."""
    try:
        with np.load(path, allow_pickle=False) as data:
            ws = data["w"]
    except KeyError:
        raise click.ClickException(f"--projected-w: {path} has no array 'w'; expected projector.py's "
                                   "projected_w.npz") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise click.ClickException(f"--projected-w: {path} is not a .npz of plain arrays ({err}); expected "
                                   "projector.py's projected_w.npz") from None
    if not isinstance(ws, np.ndarray) or not np.issubdtype(ws.dtype, np.floating):
        raise click.ClickException(f"--projected-w: {path} holds 'w' of dtype {ws.dtype}; expected floats")
    return ws


def _outputs_error(outdir: str, err: OSError) -> click.ClickException:
    return click.ClickException(f"--outdir: cannot write to {outdir}: {err.strerror or err}"
                                + (f" ({err.filename})" if err.filename else ""))


def _render_projected_w(G, path: str, noise_mode: str, outdir: str, device: torch.device) -> None:
    """proj{idx:02d}.png for each w [num_ws, w_dim] of the 'w' array in `path` (StyleGAN2-ADA's --projected-w)."""
    ws = _load_projected_w(path)
    if ws.ndim != 3 or ws.shape[1:] != (G.num_ws, G.w_dim):
        raise click.ClickException(f"--projected-w: {path} holds w of shape {list(ws.shape)}; expected "
                                   f"[N, {G.num_ws}, {G.w_dim}] for this network")
    os.makedirs(outdir, exist_ok=True)
    with torch.no_grad():
        for idx, w in enumerate(torch.from_numpy(ws).to(device, torch.float32)):
            image = image_io.to_uint8(G.synthesis(w[None], noise_mode=noise_mode))[0]
            image_io.save_png(image, os.path.join(outdir, f"proj{idx:02d}.png"))
            print(f"w {idx} -> proj{idx:02d}.png")


@click.command(help=__doc__)
@click.option("--network", "network_pkl", metavar="PATH|URL", required=True, help="Network pickle")
@click.option("--seeds", type=SeedList(), default=None, help="Seeds, e.g. 0-7,12  [required unless --projected-w]")
@click.option("--class", "class_idx", type=click.IntRange(min=0), default=None, help="Class index (conditional G)")
@click.option("--trunc", "truncation_psi", type=float, default=1, show_default=True, help="Truncation psi")
@click.option("--noise-mode", type=click.Choice(["const", "random", "none"]), default="const", show_default=True,
              help="Per-layer noise")
@click.option("--outdir", type=click.Path(file_okay=False), required=True, help="Where to save the images")
@click.option("--grid/--no-grid", default=False, show_default=True, help="Also save grid.png of all images")
@click.option("--batch", "batch_size", type=click.IntRange(min=1), default=8, show_default=True, help="Batch size")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Device (auto = cuda when available)")
@click.option("--trust-pickle", is_flag=True, help="Unpickle normally, RUNNING the code stored in the pickle")
@click.option("--projected-w", metavar="NPZ", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Render the ws of projector.py's projected_w.npz (proj00.png, ...) instead of seeds")
def main(network_pkl, seeds, class_idx, truncation_psi, noise_mode, outdir, grid, batch_size, device, trust_pickle,
         projected_w):
    if (seeds is None) == (projected_w is None):
        raise click.ClickException("--seeds: give either --seeds or --projected-w")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise click.ClickException("--device cuda: no CUDA device is available")
    device = torch.device(device)

    print(f'Loading networks from "{network_pkl}"' + (" (trusted: running its code)" if trust_pickle else ""))
    try:
        G = snapshot.load_network_pkl(network_pkl, trusted=trust_pickle)["G_ema"]
    except (OSError, EOFError, pickle.UnpicklingError, ValueError) as err:
        raise click.ClickException(f"--network {network_pkl}: {err}")
    if G is None:
        raise click.ClickException(f"--network {network_pkl}: the snapshot has no G_ema")
    try:  # NaN/Inf policy: NaN weights would give all-black images and exit 0.
        check_finite_number(truncation_psi, "--trunc")
        check_finite_modules({"G_ema": G}, f"{network_pkl}: refusing to generate from non-finite weights", "--network")
    except NonFiniteError as err:
        raise click.ClickException(f"{err.flag}: {err}")
    G = G.to(device)
    try:
        if projected_w is not None:
            _render_projected_w(G, projected_w, noise_mode, outdir, device)
        else:
            _render_seeds(G, seeds, class_idx, truncation_psi, noise_mode, outdir, grid, batch_size, device,
                          network_pkl)
    except OSError as err:  # Disk full, read-only or not a folder: one line naming --outdir.
        raise _outputs_error(outdir, err) from None


def _render_seeds(G, seeds, class_idx, truncation_psi, noise_mode, outdir, grid, batch_size, device, network_pkl):
    """seed{seed:04d}.png for each seed (and grid.png with --grid)."""
    try:
        sampling.class_to_c(class_idx, G.c_dim)
    except ValueError as err:
        raise click.ClickException(f"--class: {err}")
    os.makedirs(outdir, exist_ok=True)
    # Bounded memory: each image goes to disk at once and the grid keeps only its uint8 canvas.
    grid = image_io.UInt8Grid(len(seeds)) if grid else None
    try:
        for seed, image in sampling.generate_images(G, seeds, class_idx=class_idx, truncation_psi=truncation_psi,
                                                    noise_mode=noise_mode, batch_size=batch_size, device=device):
            image_io.save_png(image, os.path.join(outdir, f"seed{seed:04d}.png"))
            if grid is not None:
                grid.add(image)
            print(f"seed {seed:>6d} -> seed{seed:04d}.png")
    except NonFiniteError as err:
        raise click.ClickException(f"--network: {network_pkl}: {err}")
    if grid is not None:
        gw, gh = grid.save(os.path.join(outdir, "grid.png"))
        print(f"grid {gw}x{gh} -> grid.png")


if __name__ == "__main__":
    main()
