"""`python -m smart_plugin.toy`: --help, --dry-run, user errors with their flag, and an end-to-end tiny run."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from smart_plugin.toy.__main__ import main
from smart_plugin.toy.experiment import METHODS


def test_help():
    result = CliRunner().invoke(main, ['--help'])
    assert result.exit_code == 0
    for flag in ('--outdir', '--quick', '--seeds', '--smart-lam', '--smart-sigma', '--dry-run'):
        assert flag in result.output


def test_dry_run_quick(tmp_path):
    result = CliRunner().invoke(main, ['--outdir', str(tmp_path), '--quick', '--dry-run', '--smart-lam', '0.3'])
    assert result.exit_code == 0, result.output
    cfg = json.loads(result.output)
    assert (cfg['steps'], cfg['num_samples'], cfg['seeds'], cfg['smart_lam']) == (1500, 5000, [0], 0.3)
    assert cfg['methods'] == list(METHODS)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize('args, message', [
    (['--seeds', 'a,b'], "Error: --seeds: 'a,b' is not a comma-separated list of ints"),
    (['--seeds', ','], "Error: --seeds: ',' is empty; expected at least one value"),
    (['--methods', 'vanilla,gan'], "Error: --methods: unknown ['gan']; expected some of ['vanilla', 'diffgan', "
                                   "'smart', 'smart_diffgan']"),
    (['--smart-sigma', '0.1'], "Error: --smart-sigma: '0.1' has 1 values; expected LO,HI"),
    (['--smart-sigma', '0.5,0.1'], 'Error: --smart-sigma: smart_sigma is (0.5, 0.1); expected (lo, hi) with '
                                   '0 < lo <= hi'),
])
def test_user_errors_name_the_flag(tmp_path, args, message):
    result = CliRunner().invoke(main, ['--outdir', str(tmp_path), '--dry-run'] + args)
    assert result.exit_code == 1
    assert result.output.strip() == message


def test_tiny_run_writes_every_output(tmp_path):
    result = CliRunner().invoke(main, ['--outdir', str(tmp_path), '--quick', '--steps', '40'])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(['results.json', 'figure.png', 'curves.png'] +
                           [f'samples-{m}-seed0.npz' for m in METHODS])
    results = json.loads((tmp_path / 'results.json').read_text())
    assert results['seeds'] == [0] and results['config']['steps'] == 40
    for method in METHODS:
        run = results['runs'][method]['0']
        assert set(run['metrics']) == {'hq_share', 'modes', 'kl', 'w1'}
        assert run['curves']['step'] == [40]
        assert set(results['summary'][method]['w1']) == {'mean', 'std'}
        with np.load(tmp_path / f'samples-{method}-seed0.npz') as npz:
            assert npz['samples'].shape == (5000, 2) and npz['samples'].dtype == np.float32
            assert npz['centers'].shape == (49, 2)
            assert float(npz['std']) == 0.05
    assert Image.open(tmp_path / 'figure.png').size == (4 * 320, 320 + 18)
    assert Image.open(tmp_path / 'curves.png').size == (4 * 320, 320 + 18)
