"""benchmarks/smart_overhead.py: its settings, the cifar configuration it builds (train.py's preset), the paired
estimate's arithmetic on a fake clock, and its user-facing errors."""

import importlib.util
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import dnnlib
from smart_plugin import SMaRt
from tiny_datasets import make_zip

SCRIPT = Path(__file__).resolve().parents[2] / 'benchmarks' / 'smart_overhead.py'


@pytest.fixture(scope='module')
def bench():
    spec = importlib.util.spec_from_file_location('benchmark_smart_overhead', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_settings(bench):
    settings = bench.settings([8], [1, 4], ['full', 'sds'])
    assert list(settings) == ['baseline', 'freq 8, draws 1, full', 'freq 8, draws 1, sds', 'freq 8, draws 4, full',
                              'freq 8, draws 4, sds']
    assert not settings['baseline'].enabled
    smart = settings['freq 8, draws 4, sds']
    assert (smart.lam, smart.freq, smart.draws, smart.grad, smart.t_lo, smart.t_hi) == (0.1, 8, 4, 'sds', 40, 60)
    both = bench.settings([8], [1], ['full'], ['fp32', 'bf16'])
    assert list(both) == ['baseline', 'freq 8, draws 1, full', 'freq 8, draws 1, full, bf16']
    assert [opts.precision for opts in both.values()] == ['fp32', 'fp32', 'bf16']


def test_cifar_config_is_the_train_py_preset(bench, tmp_path):
    data = make_zip(tmp_path / 'data.zip', num=4, res=32, num_classes=10)
    config = bench._cifar_config(data, 'cpu', 8, str(tmp_path))
    assert (config['batch_size'], config['batch_gpu'], config['device']) == (8, 8, 'cpu')
    assert config['G_kwargs']['synthesis_kwargs']['channel_base'] == 32768
    assert config['D_kwargs']['architecture'] == 'orig'
    assert config['D_kwargs']['epilogue_kwargs']['mbstd_group_size'] == 32
    assert config['loss_kwargs']['pl_weight'] == 0 and config['training_set_kwargs']['use_labels'] is True
    assert 'total_kimg' not in config  # Only setup_training's arguments.


def test_paired_estimate_recovers_known_costs(bench, monkeypatch):
    # A fake step whose cost is known: 1 s plain, +0.5 s Dreg (position 0), +0.25 s Greg (multiples of 4), and
    # 0.125 s per SMaRt draw when the plugin is active; the clock advances by exactly that.
    now = [0.0]

    def fake_step(state):
        position = state.batch_idx % bench.BLOCK
        cost = 1.0 + (0.5 if position == 0 else 0.0) + (0.25 if position % 4 == 0 else 0.0)
        if state.plugins[0].active():
            cost += 0.125 * state.plugins[0].options.draws
        now[0] += cost
        state.batch_idx += 1
        state.plugins[0].end_of_step(0, 8)

    monkeypatch.setattr(bench.training_loop, 'training_step', fake_step)
    options = bench.settings([8, 2], [1, 4], ['full'])
    plugin = SMaRt(options['freq 8, draws 1, full'])
    state = dnnlib.EasyDict(batch_idx=5, device=torch.device('cpu'), plugins=[plugin])
    lines = []
    result = bench._paired(state, plugin, options, pairs=2, clock=lambda: now[0], log=lines.append)
    baseline = (1.75 + 3 * 1.25 + 12 * 1.0) / 16
    assert result['baseline'] == pytest.approx(baseline, rel=1e-12)
    for freq in (8, 2):
        for K in (1, 4):
            assert result[f'freq {freq}, draws {K}, full'] == pytest.approx(baseline + 0.125 * K / freq, rel=1e-12)
    assert len(lines) == 2 * 4 and lines[0].startswith('pair 1/2 freq 8, draws 1, full')


@pytest.mark.parametrize('args, message', [
    (['--freq', '3'], "'3': every frequency must divide the block of 16 iterations"),
    (['--draws', '0'], "'0': every value must be >= 1"),
    (['--grad', 'full,exact'], "'full,exact': expected a comma-separated list of full, sds"),
    (['--precision', 'bf16,fp8'], "'bf16,fp8': expected a comma-separated list of fp32, bf16, fp16"),
])
def test_cli_errors(bench, args, message):
    result = CliRunner().invoke(bench.main, args)
    assert result.exit_code == 2 and message in result.output, result.output
