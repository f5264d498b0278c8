"""List what a network pickle holds without running code from it.

Examples:

\b
  # Built-in demo: write a small snapshot in NVIDIA's format, read it back safely and the trusted way.
  python inspect_pkl.py

\b
  # Inspect a StyleGAN2-ADA / StyleGAN3 / EDM pickle (local path or URL; downloads are cached).
  python inspect_pkl.py --network ~/networks/stylegan2-cifar10-32x32.pkl

\b
  # Also unpickle it the normal way, which RUNS the source stored in it, and compare the weights.
  python inspect_pkl.py --network snapshot.pkl --trusted
"""

from torch_utils import cpu_threads  # noqa: F401  First: OpenMP's wait policy must be set before torch loads (see there).

import copy
import json
import os
import pickle

import click
import torch

from torch_utils import pickle_summary


# The built-in demo: StyleGAN2 networks at 32x32 with few channels, randomly initialised.
DEMO_G_KWARGS = dict(z_dim=64, c_dim=0, w_dim=64, img_resolution=32, img_channels=3,
                     mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=1024, channel_max=64))
DEMO_D_KWARGS = dict(c_dim=0, img_resolution=32, img_channels=3, channel_base=1024, channel_max=64)


def _write_demo_snapshot(outdir: str) -> str:
    from training import networks, snapshot  # Imported here: only the demo needs them.
    with torch.random.fork_rng():
        torch.manual_seed(0)
        G = networks.Generator(**DEMO_G_KWARGS).eval().requires_grad_(False)
        D = networks.Discriminator(**DEMO_D_KWARGS).eval().requires_grad_(False)
    path = os.path.join(outdir, "demo-snapshot.pkl")
    snapshot.save_network_pkl(path, dict(G=G, D=D, G_ema=copy.deepcopy(G), augment_pipe=None,
                                         training_set_kwargs=None))
    print(f"Wrote demo snapshot {path} (random StyleGAN2 G, D and G_ema at 32x32)")
    return path


def _print_table(rows: list) -> None:
    header = f"{'path':<16} {'class':<28} {'source sha256':<14} {'tensors':>8} {'elements':>12}"
    print(header + ("  trusted" if rows and "trusted_equal" in rows[0] else ""))
    print("-" * len(header))
    for row in rows:
        src = row.module_src_hash[:12] if row.module_src_hash else "-"
        line = f"{row.path:<16} {row.class_name:<28} {src:<14} {row.num_tensors:>8} {row.num_elements:>12,}"
        if "trusted_equal" in row:
            line += f"  {row.trusted_equal} equal"
        print(line)
        if row.init_kwargs:
            print(f"{'':<16} kwargs: " + ", ".join(f"{k}={v!r}" for k, v in row.init_kwargs.items()))


@click.command(help=__doc__)
@click.option("--network", "network", metavar="PATH|URL", default=None,
              help="Network pickle to inspect  [default: write and inspect the built-in demo snapshot]")
@click.option("--outdir", metavar="DIR", default="out", show_default=True, type=click.Path(file_okay=False),
              help="Where the built-in demo writes its snapshot")
@click.option("--trusted/--no-trusted", default=None,
              help="Also load with pickle.load (RUNS code from the pickle) and compare  [default: demo only]")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON instead of a table")
def main(network, outdir, trusted, as_json):
    if network is None:
        network = _write_demo_snapshot(outdir)
        trusted = True if trusted is None else trusted
    try:
        rows = pickle_summary.summarize_network_pkl(network, trusted=bool(trusted))
    except (OSError, EOFError, pickle.UnpicklingError, ValueError) as err:
        raise click.ClickException(f"--network {network}: {err}")
    if not rows:
        raise click.ClickException(f"--network {network}: the pickle holds no networks (no persistent objects)")
    if as_json:
        print(json.dumps(rows, indent=2, default=repr))
    else:
        _print_table(rows)


if __name__ == "__main__":
    main()
