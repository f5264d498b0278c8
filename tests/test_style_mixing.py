"""style_mixing.py on a tiny snapshot: the grid's shape and layout, and each cell is the row seed's ws with the
--styles entries copied from the column seed."""

import os
import sys

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import style_mixing  # noqa: E402  (a top-level script, importable from the repository root)
import tiny_metrics  # noqa: E402
from gan_tools import sampling  # noqa: E402
from torch_utils import image_io  # noqa: E402
from training import snapshot  # noqa: E402


@pytest.fixture(scope='module')
def net(tmp_path_factory):
    G = tiny_metrics.make_generator(seed=4)
    with torch.no_grad():
        G.mapping.w_avg.normal_()  # A non-trivial truncation centre.
    path = tmp_path_factory.mktemp('net') / 'net.pkl'
    snapshot.save_network_pkl(path, dict(G_ema=G))
    return G, str(path)


def _read(path):
    return np.asarray(PIL.Image.open(path))


def _ws(G, seed, psi):
    with torch.no_grad():
        w = G.mapping(torch.from_numpy(sampling.seed_to_z(seed, G.z_dim)).float(), torch.zeros([1, 0]))[0]
    return G.mapping.w_avg + (w - G.mapping.w_avg) * psi  # [num_ws, w_dim]


def test_grid_shape_layout_and_copied_styles(net, tmp_path):
    G, pkl = net
    rows, cols, styles, psi = [85, 100, 75], [55, 821], [0, 1], 0.7
    result = CliRunner().invoke(style_mixing.main, ['--network', pkl, '--rows', '85,100,75', '--cols', '55,821',
                                                    '--styles', '0-1', '--trunc', str(psi), '--outdir', str(tmp_path)])
    assert result.exit_code == 0, result.output
    grid = _read(tmp_path / 'grid.png')
    assert grid.shape == (8 * (len(rows) + 1), 8 * (len(cols) + 1), 3)
    assert not grid[:8, :8].any()  # Top-left cell black.
    assert len(os.listdir(tmp_path)) == 1 + len(rows) * len(cols) + len(rows) + len(cols)
    for j, col in enumerate(cols):
        assert np.array_equal(grid[:8, 8 * (j + 1): 8 * (j + 2)], _read(tmp_path / f'{col}-{col}.png'))
    for i, row in enumerate(rows):
        assert np.array_equal(grid[8 * (i + 1): 8 * (i + 2), :8], _read(tmp_path / f'{row}-{row}.png'))
        for j, col in enumerate(cols):
            cell = grid[8 * (i + 1): 8 * (i + 2), 8 * (j + 1): 8 * (j + 2)]
            assert np.array_equal(cell, _read(tmp_path / f'{row}-{col}.png'))
            w = _ws(G, row, psi).clone()
            w[styles] = _ws(G, col, psi)[styles]  # Styles 0-1 from the column seed, the rest from the row seed.
            with torch.no_grad():
                expected = image_io.to_uint8(G.synthesis(w[None], noise_mode='const'))[0]
            assert np.array_equal(cell, expected), (row, col)
    assert not np.array_equal(_read(tmp_path / '85-55.png'), _read(tmp_path / '85-85.png'))
    assert not np.array_equal(_read(tmp_path / '85-55.png'), _read(tmp_path / '55-55.png'))


def test_all_styles_copied_gives_the_column_image(net):
    G, _ = net
    images = style_mixing.style_mixing.mix_styles(G, [1], [2], list(range(G.num_ws)))
    assert np.array_equal(images[(1, 2)], images[(2, 2)])


def test_styles_out_of_range_names_the_flag(net, tmp_path):
    G, pkl = net
    result = CliRunner().invoke(style_mixing.main, ['--network', pkl, '--rows', '1', '--cols', '2',
                                                    '--outdir', str(tmp_path)])  # Default 0-6; num_ws is 4 here.
    assert result.exit_code != 0
    assert '--styles: style indices [0, 1, 2, 3, 4, 5, 6]: expected a non-empty list in 0..3' in result.output
    assert not os.path.exists(tmp_path / 'grid.png')
