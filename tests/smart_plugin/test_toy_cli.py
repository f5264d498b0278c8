"""`python -m smart_plugin.toy`: --help, --dry-run, user errors with their flag, and an end-to-end tiny run."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from smart_plugin.toy import plots
from smart_plugin.toy.__main__ import main
from smart_plugin.toy.experiment import METHODS

SWEEPABLE = str(sorted(['spacing', 'std', 'z-dim', 'width', 'depth', 'batch', 'steps', 'lr-g', 'lr-d', 'finetune-lr',
                        'smart-lam', 'smart-param', 'smart-freq', 'smart-sigma', 'smart-draws', 'smart-antithetic',
                        'smart-grad', 'smart-start', 'diffgan-noise-sd', 'diffgan-tmax', 'diffgan-target',
                        'num-samples', 'eval-every', 'eval-samples']))


def test_help():
    result = CliRunner().invoke(main, ['--help'])
    assert result.exit_code == 0
    for flag in ('--outdir', '--quick', '--seeds', '--smart-lam', '--smart-sigma', '--dry-run', '--finetune-from',
                 '--lr-G', '--lr-D', '--finetune-lr', '--batch', '--z-dim', '--width', '--depth', '--spacing',
                 '--smart-draws', '--smart-antithetic', '--smart-grad', '--diffgan-noise-sd', '--diffgan-tmax',
                 '--diffgan-target', '--sweep', '--workers'):
        assert flag in result.output


def test_dry_run_quick(tmp_path):
    result = CliRunner().invoke(main, ['--outdir', str(tmp_path), '--quick', '--dry-run', '--smart-lam', '0.3',
                                       '--methods', ','.join(METHODS)])
    assert result.exit_code == 0, result.output
    cfg = json.loads(result.output)
    assert (cfg['steps'], cfg['num_samples'], cfg['seeds'], cfg['smart_lam']) == (1000, 5000, [0], 0.3)
    assert [arm['method'] for arm in cfg['arms']] == list(METHODS)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize('args, message', [
    (['--seeds', 'a,b'], "Error: --seeds: 'a,b' is not a comma-separated list of ints"),
    (['--seeds', ','], "Error: --seeds: ',' is empty; expected at least one value"),
    (['--methods', 'vanilla,gan'], "Error: --methods: unknown ['gan']; expected some of ['vanilla', 'diffgan', "
                                   "'smart', 'smart_diffgan']"),
    (['--smart-sigma', '0.1'], "Error: --smart-sigma: '0.1' has 1 values; expected LO,HI"),
    (['--smart-sigma', '0.5,0.1'], 'Error: --smart-sigma: smart_sigma is (0.5, 0.1); expected (lo, hi) with '
                                   '0 < lo <= hi'),
    (['--sweep', 'smart-lam'], "Error: --sweep: 'smart-lam' is not NAME=V1,V2,... with NAME one of " + SWEEPABLE),
    (['--sweep', 'colour=1,2'], "Error: --sweep: 'colour=1,2' is not NAME=V1,V2,... with NAME one of " + SWEEPABLE),
    (['--sweep', 'width=8,x'], "Error: --sweep: '8,x' are not values of --width"),
    (['--sweep', 'smart-draws=2,3', '--smart-draws', '2', '--smart-antithetic'],
     'Error: --smart-draws: smart_draws is 3; expected an even number with smart_antithetic'),
])
def test_user_errors_name_the_flag(tmp_path, args, message):
    result = CliRunner().invoke(main, ['--outdir', str(tmp_path), '--dry-run'] + args)
    assert result.exit_code == 1
    assert result.output.strip() == message


def test_tiny_run_writes_every_output(tmp_path):
    result = CliRunner().invoke(main, ['--outdir', str(tmp_path), '--quick', '--steps', '40', '--workers', '1',
                                       '--finetune-from', '0', '--methods', ','.join(METHODS)])
    assert result.exit_code == 0, result.output
    assert f'Outputs are in {tmp_path}' in result.output
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(['results.json', 'figure.png', 'curves.png', 'frontier.png'] +
                           [f'samples-{m}-seed0.npz' for m in METHODS])
    results = json.loads((tmp_path / 'results.json').read_text())
    assert results['seeds'] == [0] and results['config']['steps'] == 40
    for method in METHODS:
        run = results['runs'][method]['0']
        assert set(run['metrics']) == {'hq_share', 'modes', 'modes10', 'kl', 'kl_hq', 'w1', 'energy', 'churn'}
        assert run['curves']['step'] == [40]
        assert set(results['summary'][method]['w1']) == {'mean', 'std'}
        with np.load(tmp_path / f'samples-{method}-seed0.npz') as npz:
            assert npz['samples'].shape == (5000, 2) and npz['samples'].dtype == np.float32
            assert npz['centers'].shape == (49, 2)
            assert float(npz['std']) == 0.05
    assert Image.open(tmp_path / 'figure.png').size == (3 * plots.PANEL, 2 * (plots.PANEL + 44))   # Real data + 4.
    chart = (plots.PAD[0] + plots.CHART[0] + plots.PAD[2], plots.PAD[1] + plots.CHART[1] + plots.PAD[3])
    assert Image.open(tmp_path / 'curves.png').size == (2 * chart[0] + plots.LEGEND, 2 * chart[1])
    assert 'beats the control on both axes' in result.output


def test_dry_run_resolves_sweep_and_finetune(tmp_path):
    result = CliRunner().invoke(main, ['--outdir', str(tmp_path), '--dry-run', '--finetune-from', '300', '--sweep',
                                       'smart_sigma=0.05/0.2,0.1/0.5', '--lr-G', '2e-4', '--lr', '5e-4'])
    assert result.exit_code == 0, result.output
    cfg = json.loads(result.output)
    bands = ('(0.05, 0.2)', '(0.1, 0.5)')
    assert [arm['label'] for arm in cfg['arms']] == [f'{m}[smart_sigma={band}]' for band in bands for m in METHODS]
    assert [arm['smart_sigma'] for arm in cfg['arms'][::4]] == [[0.05, 0.2], [0.1, 0.5]]
    assert (cfg['finetune_from'], cfg['smart_start'], cfg['lr_G'], cfg['lr_D']) == (300, 0.0, 2e-4, 5e-4)


def test_finetune_sweep_run_reports_paired_differences(tmp_path):
    result = CliRunner().invoke(main, ['--outdir', str(tmp_path), '--quick', '--steps', '10', '--finetune-from', '10',
                                       '--methods', 'vanilla,smart', '--seeds', '0,1', '--sweep', 'smart-lam=0.5,2',
                                       '--workers', '1'])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / 'results.json').read_text())
    labels = ['vanilla[smart_lam=0.5]', 'smart[smart_lam=0.5]', 'vanilla[smart_lam=2.0]', 'smart[smart_lam=2.0]']
    assert list(results['runs']) == labels
    assert set(results['paired']) == {'smart[smart_lam=0.5]', 'smart[smart_lam=2.0]'}
    diff = results['paired']['smart[smart_lam=2.0]']['hq_share']
    runs = results['runs']
    expected = [runs['smart[smart_lam=2.0]'][s]['metrics']['hq_share'] -
                runs['vanilla[smart_lam=2.0]'][s]['metrics']['hq_share'] for s in ('0', '1')]
    assert diff == {'mean': pytest.approx(np.mean(expected)), 'std': pytest.approx(np.std(expected)), 'n': 2}
    # The two points share the vanilla start and the vanilla control (same seed, same config apart from lambda).
    assert runs['vanilla[smart_lam=0.5]']['0']['metrics'] == runs['vanilla[smart_lam=2.0]']['0']['metrics']


def test_finetune_reuses_saved_vanilla_starts(tmp_path):
    args = ['--quick', '--steps', '5', '--finetune-from', '8', '--methods', 'vanilla,smart', '--workers', '1',
            '--pretrain-dir', str(tmp_path / 'pre')]
    first = CliRunner().invoke(main, ['--outdir', str(tmp_path / 'a')] + args)
    assert first.exit_code == 0, first.output
    saved = sorted(p.name for p in (tmp_path / 'pre').iterdir())
    assert len(saved) == 1 and saved[0].startswith('pretrain-seed0-') and saved[0].endswith('.pt')
    second = CliRunner().invoke(main, ['--outdir', str(tmp_path / 'b')] + args)
    assert second.exit_code == 0, second.output
    a, b = (json.loads((tmp_path / d / 'results.json').read_text()) for d in 'ab')
    for label in ('vanilla', 'smart'):
        assert a['runs'][label]['0']['metrics'] == b['runs'][label]['0']['metrics']
        assert a['runs'][label]['0']['curves'] == b['runs'][label]['0']['curves']
