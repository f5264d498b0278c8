"""train.py --cfg=cpu under --dry-run: the preset found by benchmarks/cpu_preset_search.py (docs/cpu-preset.md),
channels from the resolution (cbase 1024, at most 64), G's learning rate below D's, flags still override it."""

import json
import os
import sys

import pytest
from click.testing import CliRunner

from tiny_datasets import make_zip

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import train  # noqa: E402


def _dry_run(tmp_path, *args) -> dict:
    result = CliRunner().invoke(train.main, ['--outdir', str(tmp_path / 'out'), '--dry-run', *map(str, args)])
    assert result.exit_code == 0, result.output
    text = result.output
    return json.loads(text[text.index('{'):text.rindex('}') + 1])


@pytest.mark.parametrize('res', [16, 32])
def test_cpu_preset(tmp_path, res):
    data = make_zip(tmp_path / 'ds.zip', num=4, res=res)
    options = _dry_run(tmp_path, '--data', data, '--cfg', 'cpu')
    assert (options['batch_size'], options['batch_gpu'], options['total_kimg']) == (32, 32, 200)
    assert (options['ema_kimg'], options['ema_rampup']) == (10, 0.05)
    synthesis = options['G_kwargs']['synthesis_kwargs']
    assert (synthesis['channel_base'], synthesis['channel_max']) == (1024, 64)
    assert (options['D_kwargs']['channel_base'], options['D_kwargs']['channel_max']) == (1024, 64)
    assert options['G_kwargs']['mapping_kwargs'] == dict(num_layers=2)
    assert options['D_kwargs']['epilogue_kwargs'] == dict(mbstd_group_size=4)
    assert (options['G_opt_kwargs']['lr'], options['D_opt_kwargs']['lr']) == (0.001, 0.002)
    assert options['loss_kwargs']['r1_gamma'] == 10
    assert (options['loss_kwargs']['pl_weight'], options['loss_kwargs']['style_mixing_prob']) == (0, 0)
    assert options['run_dir'].endswith('-ds-cpu')
    # As measured: no augmentation, float32 (no fp16 layers, no conv clamp).
    assert (options['augment_kwargs'], options['augment_p'], options['ada_target']) == (None, 0, None)
    assert (synthesis['num_fp16_res'], synthesis['conv_clamp']) == (0, None)
    assert (options['D_kwargs']['num_fp16_res'], options['D_kwargs']['conv_clamp']) == (0, None)


def test_cpu_preset_flags_override(tmp_path):
    data = make_zip(tmp_path / 'ds.zip', num=4, res=16)
    options = _dry_run(tmp_path, '--data', data, '--cfg', 'cpu', '--cmax', '32', '--glr', '0.0005', '--batch', '16')
    assert options['G_kwargs']['synthesis_kwargs']['channel_max'] == 32
    assert (options['G_opt_kwargs']['lr'], options['batch_size']) == (0.0005, 16)
    with_ada = _dry_run(tmp_path, '--data', data, '--cfg', 'cpu', '--aug', 'ada')
    assert (with_ada['ada_target'], with_ada['augment_kwargs']['xflip']) == (0.6, 1)
    other = _dry_run(tmp_path, '--data', data, '--cfg', 'stylegan2')
    assert other['G_kwargs']['synthesis_kwargs']['channel_max'] == 512  # Unchanged default elsewhere.
    assert other['G_opt_kwargs']['lr'] == other['D_opt_kwargs']['lr'] == 0.002
