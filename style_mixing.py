"""Style-mixing grid of a network snapshot (StyleGAN2-ADA's style_mixing.py options and outputs).

Each cell takes the row seed's styles except those at --styles, which come from the column seed. Writes
<row>-<col>.png for every pair and seed (the seed's own image is <seed>-<seed>.png) and grid.png to --outdir.
Example:

\b
  python style_mixing.py --outdir=out --rows=85,100,75,458,1500 --cols=55,821,1789,293 \\
      --network=network-snapshot-000200.pkl
"""

from torch_utils import cpu_threads  # noqa: F401  First: OpenMP's wait policy must be set before torch loads.

import os

import click

from generate import SeedList  # One seed-list syntax (0-7,12) for all seed-taking tools.
from cli.common import load_G_ema
from gan_tools import style_mixing
from torch_utils import image_io


@click.command(help=__doc__)
@click.option('--network', 'network_pkl', metavar='PATH|URL', required=True, help='Network snapshot')
@click.option('--rows', 'row_seeds', type=SeedList(), required=True, help='Random seeds to use for image rows')
@click.option('--cols', 'col_seeds', type=SeedList(), required=True, help='Random seeds to use for image columns')
@click.option('--styles', 'col_styles', type=SeedList(), default='0-6', show_default=True,
              help='Style layer range (indices into ws)')
@click.option('--trunc', 'truncation_psi', type=float, default=1, show_default=True, help='Truncation psi')
@click.option('--noise-mode', type=click.Choice(['const', 'random', 'none']), default='const', show_default=True,
              help='Noise mode')
@click.option('--class', 'class_idx', type=click.IntRange(min=0), default=None, help='Class index (conditional G)')
@click.option('--outdir', type=click.Path(file_okay=False), required=True, help='Where to save the output images')
@click.option('--device', type=click.Choice(['auto', 'cpu', 'cuda']), default='auto', show_default=True,
              help='Where to run')
@click.option('--trust-pickle', is_flag=True, help='Unpickle normally, RUNNING the code stored in the pickle')
def main(network_pkl, row_seeds, col_seeds, col_styles, truncation_psi, noise_mode, class_idx, outdir, device,
         trust_pickle):
    G, device = load_G_ema(network_pkl, trust_pickle, device)
    G = G.eval()
    try:
        style_mixing.check_styles(col_styles, G.num_ws)
    except ValueError as err:
        raise click.ClickException(f'--styles: {err}') from None
    try:
        images = style_mixing.mix_styles(G, row_seeds, col_seeds, col_styles, truncation_psi, noise_mode, class_idx,
                                         device)
    except ValueError as err:  # Class index and conditioning (sampling.class_to_c).
        raise click.ClickException(f'--class: {err}') from None
    os.makedirs(outdir, exist_ok=True)
    for (row, col), image in images.items():
        image_io.save_png(image, os.path.join(outdir, f'{row}-{col}.png'))
    image_io.save_png(style_mixing.mixing_grid(images, row_seeds, col_seeds), os.path.join(outdir, 'grid.png'))
    print(f'Wrote {len(images)} images and grid.png to {outdir}')


if __name__ == '__main__':
    main()
