"""Training curves of a run directory as one PNG: `python -m gan_tools.plot_stats RUN_DIR [--out FILE]`.

Reads stats.jsonl (one line per tick; Metrics/* lines are there too) and draws, against kimg, one panel per group
present: G and D losses, regularisers (R1, path length), D scores and signs, SMaRt/*, DiffGAN/* (p, T), the ADA
probability (Progress/augment) and the metrics. Needs matplotlib (the `curves` extra). Written atomically to
RUN_DIR/curves.png by default.
"""

import io
import json
import math
import os

import click

import dnnlib

# Panel title -> predicate on the stat name; a name is drawn in every panel whose predicate it meets.
PANELS = {
    'Losses': lambda name: name in ('Loss/G/loss', 'Loss/D/loss'),
    'Regularizers': lambda name: name in ('Loss/r1_penalty', 'Loss/pl_penalty', 'Loss/G/reg', 'Loss/D/reg'),
    'D scores and signs': lambda name: name.startswith(('Loss/scores/', 'Loss/signs/')),
    'SMaRt': lambda name: name.startswith('SMaRt/'),
    'Diffusion-GAN': lambda name: name.startswith('DiffGAN/'),
    'ADA p': lambda name: name == 'Progress/augment',
    'Metrics': lambda name: name.startswith('Metrics/'),
}


def load_stats(run_dir: str) -> list[dict]:
    """The parsed lines of RUN_DIR/stats.jsonl (FileNotFoundError naming it when there is none)."""
    path = os.path.join(run_dir, 'stats.jsonl')
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path} does not exist; expected a run directory of train.py')
    with open(path, encoding='utf-8') as f:
        lines = [(number, line) for number, line in enumerate(f, start=1) if line.strip()]
    stats = []
    for number, line in lines:
        try:
            stats.append(json.loads(line))
        except (ValueError, RecursionError) as err:  # Also too deep nesting and over-long integers.
            reason = 'nested too deeply' if isinstance(err, RecursionError) else str(err)[:200]
            raise ValueError(f'{path} line {number} is not a JSON object ({reason})') from None
        if not isinstance(stats[-1], dict):
            raise ValueError(f'{path} line {number} is not a JSON object (a {type(stats[-1]).__name__})')
    return stats


def curves(stats: list[dict]) -> dict[str, dict[str, tuple[list[float], list[float]]]]:
    """{panel: {stat name: (kimg values, tick means)}} for the panels with data; NaN means are left out."""
    panels: dict = {}
    for line in stats:
        kimg = line.get('Progress/kimg', {}).get('mean')
        if kimg is None:
            continue
        for name, value in line.items():
            if not isinstance(value, dict) or value.get('mean') is None or not math.isfinite(value['mean']):
                continue
            for title, wanted in PANELS.items():
                if wanted(name):
                    xs, ys = panels.setdefault(title, {}).setdefault(name, ([], []))
                    xs.append(kimg)
                    ys.append(value['mean'])
    return {title: panels[title] for title in PANELS if title in panels}


def plot_stats(run_dir: str, out: str | None = None) -> str:
    """Draw the curves of run_dir to `out` (default RUN_DIR/curves.png); return the path."""
    import matplotlib  # Deferred: matplotlib is an optional extra.
    matplotlib.use('Agg')
    from matplotlib import pyplot as plt
    panels = curves(load_stats(run_dir))
    if not panels:
        raise ValueError(f'{run_dir}/stats.jsonl has no curves to draw (no Loss/*, SMaRt/*, DiffGAN/*, '
                         'Progress/augment or Metrics/* values)')
    cols = min(len(panels), 3)
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, (title, series) in zip(axes.flat, panels.items()):
        for name, (xs, ys) in series.items():
            ax.plot(xs, ys, label=name, linewidth=1.2, marker='.' if len(xs) < 30 else None)
        ax.set_title(title)
        ax.set_xlabel('kimg')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis('off')
    fig.suptitle(os.path.basename(os.path.normpath(run_dir)), fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png', dpi=80)
    plt.close(fig)
    out = out or os.path.join(run_dir, 'curves.png')
    dnnlib.util.write_atomically(out, buffer.getvalue())
    return out


@click.command(help=__doc__)
@click.argument('run_dir', type=click.Path(exists=True, file_okay=False))
@click.option('--out', metavar='FILE', default=None, show_default='RUN_DIR/curves.png', help='Output PNG')
def main(run_dir, out):
    try:
        path = plot_stats(run_dir, out)
    except (FileNotFoundError, ValueError) as err:
        raise click.ClickException(f'RUN_DIR: {err}') from None
    except ImportError as err:
        raise click.ClickException(f'{err}; install matplotlib (pip install matplotlib)') from None
    print(f'Wrote {path}')


if __name__ == '__main__':
    main()
