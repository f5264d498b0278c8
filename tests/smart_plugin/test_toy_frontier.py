"""The toy's default study, the lambda frontier: the resolved default, the frontier's data against results.json,
and the line naming the arms that beat the control."""

import json

import pytest
from click.testing import CliRunner
from PIL import Image

from smart_plugin.toy import frontier
from smart_plugin.toy.__main__ import main

LADDER = ['smart[smart_lam=1.0]', 'smart[smart_lam=3.0]', 'smart[smart_lam=10.0]', 'smart[smart_lam=30.0]',
          'smart[smart_lam=100.0]']
ARMS = ['vanilla', 'diffgan'] + LADDER + ['smart[smart_lam=30.0,smart_draws=1]']


def _dry_run(*args):
    result = CliRunner().invoke(main, ['--dry-run', *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_default_resolves_to_the_frontier_study():
    cfg = _dry_run()
    assert (cfg['finetune_from'], cfg['steps'], cfg['seeds'], cfg['smart_draws']) == (6000, 2000, [0, 1, 2], 16)
    assert (cfg['smart_param'], cfg['smart_start'], cfg['num_samples']) == ('x0', 0.0, 10000)
    assert [a['label'] for a in cfg['arms']] == ARMS
    assert [a['smart_lam'] for a in cfg['arms'][2:]] == [1.0, 3.0, 10.0, 30.0, 100.0, 30.0]
    assert [a.get('smart_draws') for a in cfg['arms']] == [None] * 7 + [1]
    quick = _dry_run('--quick')
    assert (quick['finetune_from'], quick['steps'], quick['seeds'], quick['num_samples']) == (3000, 1000, [0], 5000)
    assert [a['label'] for a in quick['arms']] == ARMS
    scratch = _dry_run('--finetune-from', '0')
    assert scratch['smart_start'] == 0.5


def test_lambda_flag_needs_methods_with_the_default_study():
    result = CliRunner().invoke(main, ['--dry-run', '--smart-lam', '3'])
    assert result.exit_code == 1
    assert result.output.strip() == ('Error: --smart-lam: the default study sets lambda per arm (1,3,10,30,100); '
                                     'pass --methods (e.g. vanilla,smart) to train one lambda')
    assert _dry_run('--smart-lam', '3', '--methods', 'vanilla,smart')['arms'][1] == {'label': 'smart',
                                                                                      'method': 'smart'}


def _run(metrics_by_label: dict) -> dict:
    return {label: {seed: {'metrics': m} for seed, m in enumerate(per_seed)}
            for label, per_seed in metrics_by_label.items()}


def test_beats_control_needs_both_axes_on_every_seed():
    def m(hq, modes):
        return {'hq_share': hq, 'modes': modes, 'kl_hq': 0.5}
    runs = _run({'vanilla': [m(0.1, 20), m(0.2, 30)],
                 'diffgan': [m(0.2, 21), m(0.3, 31)],                                # Both axes, both seeds.
                 'smart[smart_lam=10.0]': [m(0.5, 10), m(0.6, 12)],                  # Sharper, fewer modes.
                 'smart[smart_lam=1.0]': [m(0.2, 21), m(0.1, 35)],                   # One seed only.
                 'smart[smart_lam=3.0]': [m(0.1, 25), m(0.25, 35)]})                 # A tie is no win.
    assert frontier.beats_control(runs) == ['diffgan']
    front = frontier.frontier_data(runs)
    assert front['arms']['vanilla']['hq_share'] == {'mean': pytest.approx(0.15), 'std': pytest.approx(0.05)}
    assert front['trajectory'] is None and front['truncation'] is None
    summary = {label: {k: {'mean': v['mean'], 'std': v['std']} for k, v in stats.items()}
               for label, stats in front['arms'].items()}
    lines = frontier.table_lines(summary, front, seeds=2)
    assert lines[-1] == 'beats the control on both axes (hq_share and modes higher on every seed): Diffusion-GAN'
    assert frontier.table_lines(summary, front, seeds=1)[-1].endswith(': Diffusion-GAN (1 seed: one draw of the noise)')
    del runs['diffgan']
    assert frontier.table_lines(summary, frontier.frontier_data(runs), 2)[-1].endswith('on every seed): none')
    assert frontier.frontier_data({'smart': runs['smart[smart_lam=1.0]']}) is None   # No control, no frontier.


def test_display_names():
    assert [frontier.display_name(lb, 'vanilla') for lb in ARMS] == [
        'control (vanilla)', 'Diffusion-GAN', 'SMaRt lam 1', 'SMaRt lam 3', 'SMaRt lam 10', 'SMaRt lam 30',
        'SMaRt lam 100', 'SMaRt lam 30, draws 1']
    assert frontier.display_name('vanilla[width=64]') == 'vanilla GAN width 64'


def test_frontier_data_equals_results_json(tmp_path):
    result = CliRunner().invoke(main, ['--outdir', str(tmp_path), '--quick', '--finetune-from', '10', '--steps', '6',
                                       '--workers', '1'])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-2].startswith('beats the control on both axes')
    results = json.loads((tmp_path / 'results.json').read_text())
    assert list(results['runs']) == ARMS and results['arms'] == ARMS
    front = results['frontier']
    assert front == json.loads(json.dumps(frontier.frontier_data(results['runs'])))
    for label in ARMS:
        for key in frontier.AXES:
            assert front['arms'][label][key] == {'mean': results['summary'][label][key]['mean'], 'std': 0.0}
    control = results['runs']['vanilla']['0']
    # The control's trajectory spans its pretraining and its own fine-tuning; its last point is its final state,
    # and the truncation sweep's psi = 1 is the control itself (the same latents).
    assert front['trajectory']['step'] == [10, 16] and control['trajectory']['step'] == [10, 16]
    assert front['trajectory']['hq_share']['mean'][-1] == control['metrics']['hq_share']
    assert front['trajectory']['modes']['mean'][-1] == control['metrics']['modes']
    assert front['truncation']['psi'] == list(frontier.PSI)
    assert front['truncation']['kl_hq']['mean'][0] == control['metrics']['kl_hq']
    assert 'trajectory' not in results['runs']['diffgan']['0']
    assert Image.open(tmp_path / 'frontier.png').size[0] > 1000
    assert Image.open(tmp_path / 'figure.png').size == (3 * 300, 3 * (300 + 44))   # Real data and 8 arms, 3 x 3.
