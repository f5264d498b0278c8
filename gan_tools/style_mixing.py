"""Style mixing (Karras et al., "A Style-Based Generator Architecture for GANs", CVPR 2019, section 3.1), as
StyleGAN2-ADA's style_mixing.py draws it: each row seed's ws with the ws at `col_styles` taken from a column seed.

z follows generate.py's seed recipe (gan_tools.sampling.seed_to_z); truncation lerps every w toward w_avg by psi.
"""

from typing import Sequence

import numpy as np
import torch

from gan_tools import sampling
from torch_utils.image_io import to_uint8


def check_styles(col_styles: Sequence[int], num_ws: int) -> None:
    """ValueError unless every style index lies in 0..num_ws-1."""
    bad = [s for s in col_styles if not 0 <= s < num_ws]
    if bad or not col_styles:
        raise ValueError(f'style indices {list(col_styles)}: expected a non-empty list in 0..{num_ws - 1} '
                         f'(the generator has num_ws={num_ws})')


@torch.no_grad()
def mix_styles(G: torch.nn.Module, row_seeds: Sequence[int], col_seeds: Sequence[int], col_styles: Sequence[int],
               truncation_psi: float = 1, noise_mode: str = 'const', class_idx: int | None = None,
               device: torch.device = torch.device('cpu')) -> dict[tuple[int, int], np.ndarray]:
    """{(row_seed, col_seed): uint8 [H, W, C]} for every pair, plus {(seed, seed): the seed's own image}."""
    check_styles(col_styles, G.num_ws)
    seeds = list(dict.fromkeys([*row_seeds, *col_seeds]))
    z = torch.from_numpy(np.concatenate([sampling.seed_to_z(seed, G.z_dim) for seed in seeds])).float().to(device)
    c = sampling.class_to_c(class_idx, G.c_dim).to(device).repeat([len(seeds), 1])
    ws = G.mapping(z, c)  # [S, num_ws, w_dim]
    w_avg = G.mapping.w_avg
    ws = w_avg + (ws - w_avg) * truncation_psi
    w_dict = dict(zip(seeds, ws))
    images = {(seed, seed): img for seed, img in zip(seeds, to_uint8(G.synthesis(ws, noise_mode=noise_mode)))}
    styles = list(col_styles)
    for row in row_seeds:
        for col in col_seeds:
            w = w_dict[row].clone()  # [num_ws, w_dim]
            w[styles] = w_dict[col][styles]
            images[(row, col)] = to_uint8(G.synthesis(w[None], noise_mode=noise_mode))[0]
    return images


def mixing_grid(images: dict[tuple[int, int], np.ndarray], row_seeds: Sequence[int],
                col_seeds: Sequence[int]) -> np.ndarray:
    """The (rows + 1) x (cols + 1) grid [H', W', C]: column seeds along the top, row seeds down the left, the mix of
    row r and column c at (r + 1, c + 1); the top-left cell black."""
    h, w, channels = next(iter(images.values())).shape
    canvas = np.zeros([h * (len(row_seeds) + 1), w * (len(col_seeds) + 1), channels], dtype=np.uint8)
    for j, col in enumerate(col_seeds):
        canvas[:h, w * (j + 1): w * (j + 2)] = images[(col, col)]
    for i, row in enumerate(row_seeds):
        canvas[h * (i + 1): h * (i + 2), :w] = images[(row, row)]
        for j, col in enumerate(col_seeds):
            canvas[h * (i + 1): h * (i + 2), w * (j + 1): w * (j + 2)] = images[(row, col)]
    return canvas
