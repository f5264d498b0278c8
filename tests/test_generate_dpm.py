"""generate_dpm.py through click's CliRunner: PNGs per seed from tiny EDM / NCSNv2 pickles, byte-identical reruns,
batch-independent images, --dry-run, and one test per user-facing error naming its flag."""

import json
import os
import pickle
import sys

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import edm_tiny_nets
from edm_bridge import edm_networks
from edm_bridge.ncsnv2 import NCSNv2Precond

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import generate_dpm  # noqa: E402  (a top-level script, importable from the repository root)


def _write(path, net):
    path.write_bytes(pickle.dumps(dict(ema=net, loss_fn=None, augment_pipe=None, dataset_kwargs={})))
    return str(path)


@pytest.fixture(scope='module')
def pickles(tmp_path_factory):
    root = tmp_path_factory.mktemp('nets')
    uncond = edm_tiny_nets.tiny(edm_networks.EDMPrecond, res=8, attn_resolutions=[])
    cond = edm_tiny_nets.tiny(edm_networks.EDMPrecond, seed=1, res=8, label_dim=4, attn_resolutions=[])
    torch.manual_seed(0)
    ncsn = NCSNv2Precond(8, 3, ngf=8, sigma_max=1.0, sigma_min=0.05, num_scales=3).eval()
    return dict(uncond=_write(root / 'uncond.pkl', uncond), cond=_write(root / 'cond.pkl', cond),
                ncsnv2=_write(root / 'ncsnv2.pkl', ncsn))


def _run(*args):
    return CliRunner().invoke(generate_dpm.main, [str(a) for a in args])


def _pixels(path):
    return np.asarray(PIL.Image.open(path)).astype(np.int16)


def test_nan_weights_stop_before_any_image(tmp_path):
    net = edm_tiny_nets.tiny(edm_networks.EDMPrecond, res=8, attn_resolutions=[])
    with torch.no_grad():
        next(net.parameters()).view(-1)[0] = float('inf')
    path = _write(tmp_path / 'inf.pkl', net)
    result = _run('--network', path, '--outdir', tmp_path / 'out', '--seeds', '0-1')
    assert result.exit_code == 1 and 'Traceback' not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith('Error')]
    assert len(errors) == 1 and errors[0].startswith(f'Error: --network {path}: {path} holds non-finite weights '
                                                     '(NaN/Inf; samples would be black)')
    assert not os.path.exists(tmp_path / 'out')


def test_help():
    result = _run('--help')
    assert result.exit_code == 0 and '--sampler [auto|heun|langevin]' in result.output and '--dry-run' in result.output


def test_writes_pngs_and_grid_and_reruns_identically(tmp_path, pickles):
    outs = [tmp_path / 'a', tmp_path / 'b']
    for out in outs:
        result = _run('--network', pickles['uncond'], '--seeds', '0-2,5', '--steps', 4, '--outdir', out, '--grid')
        assert result.exit_code == 0, result.output
    names = sorted(os.listdir(outs[0]))
    assert names == ['grid.png', 'seed0000.png', 'seed0001.png', 'seed0002.png', 'seed0005.png']
    for name in names:
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes()
    assert _pixels(outs[0] / 'seed0000.png').shape == (8, 8, 3) and _pixels(outs[0] / 'grid.png').shape == (16, 16, 3)
    assert not np.array_equal(_pixels(outs[0] / 'seed0000.png'), _pixels(outs[0] / 'seed0001.png'))


def test_images_do_not_depend_on_the_batch(tmp_path, pickles):
    for out, batch in (('one', 1), ('three', 3)):
        result = _run('--network', pickles['cond'], '--seeds', '0-2', '--steps', 3, '--s-churn', 5, '--class', 1,
                      '--batch', batch, '--outdir', tmp_path / out)
        assert result.exit_code == 0, result.output
    for seed in range(3):
        diff = np.abs(_pixels(tmp_path / 'one' / f'seed{seed:04d}.png') - _pixels(tmp_path / 'three' /
                                                                                  f'seed{seed:04d}.png'))
        assert diff.max() <= 1  # Float rounding in batched convolutions may move a pixel by one step, no more.


def test_ncsnv2_snapshot_defaults_to_langevin_over_its_ladder(tmp_path, pickles):
    for out, trusted in (('safe', []), ('trusted', ['--trusted'])):
        result = _run('--network', pickles['ncsnv2'], *trusted, '--seeds', '3-4', '--langevin-steps', 2,
                      '--outdir', tmp_path / out)
        assert result.exit_code == 0, result.output
        config = json.loads(result.output[result.output.index('{'):result.output.index('}') + 1])
        assert (config['sampler'], config['num_steps'], config['sigma_min'], config['sigma_max']) == \
            ('langevin', 3, 0.1, 2.0)
    assert sorted(os.listdir(tmp_path / 'safe')) == ['seed0003.png', 'seed0004.png']
    for name in ('seed0003.png', 'seed0004.png'):  # Rebuilt from our classes == running the pickled source.
        assert (tmp_path / 'safe' / name).read_bytes() == (tmp_path / 'trusted' / name).read_bytes()


def test_dry_run_prints_the_grid_and_writes_nothing(tmp_path, pickles):
    result = _run('--network', pickles['uncond'], '--steps', 3, '--sigma-max', 10, '--dry-run')
    assert result.exit_code == 0, result.output
    config = json.loads(result.output[result.output.index('{'):result.output.index('}') + 1])
    assert (config['sampler'], config['num_steps'], config['sigma_max'], config['seeds']) == ('heun', 3, 10, 64)
    assert 'noise levels: 10 0.4803 0.002 0' in result.output  # EDM eq. 5: ((10^(1/7) + 0.002^(1/7)) / 2)^7
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('net, args, message', [
    ('uncond', ['--class', 2], '--class: class_idx=2 given, but the network is unconditional'),
    ('cond', ['--class', 4], '--class: class_idx=4 is out of range; expected 0..3'),
    ('uncond', ['--sigma-min', 5, '--sigma-max', 1], '--sigma-min/--sigma-max: sigma_min=5.0, sigma_max=1.0'),
    ('missing', [], '--network'),
])
def test_errors_name_the_flag(tmp_path, pickles, net, args, message):
    path = pickles.get(net, str(tmp_path / 'missing.pkl'))
    result = _run('--network', path, '--outdir', tmp_path / 'out', *args)
    assert result.exit_code != 0 and message in result.output, result.output


def test_usage_errors_name_the_flag(pickles):
    assert '--outdir: required unless --dry-run' in _run('--network', pickles['uncond']).output
    result = _run('--network', pickles['uncond'], '--seeds', '5-2', '--dry-run')
    assert result.exit_code == 2 and "'--seeds'" in result.output and "range '5-2' is empty" in result.output
    result = _run('--network', pickles['uncond'], '--steps', 0, '--dry-run')
    assert result.exit_code == 2 and "'--steps'" in result.output
    if not torch.cuda.is_available():
        assert '--device cuda: no CUDA device is available' in _run('--network', pickles['uncond'], '--device',
                                                                    'cuda', '--dry-run').output


def test_official_ncsnv2_checkpoint_samples_with_its_config(tmp_path):
    from shared_fixtures import fixture_dir
    path = os.path.join(fixture_dir('ncsnv2'), 'ncsnv2-church-ngf16-32px', 'checkpoint.pth')  # config.yml beside it
    result = _run('--network', path, '--dry-run')
    assert result.exit_code == 0, result.output
    config = json.loads(result.output[result.output.index('{'):result.output.index('}') + 1])
    assert (config['sampler'], config['num_steps'], config['n_steps_each']) == ('langevin', 788, 4)
    assert config['step_lr'] == pytest.approx(4 * 4.9e-6) and config['sigma_max'] == pytest.approx(280.0)
    result = _run('--network', path, '--seeds', '0-1', '--steps', '3', '--langevin-steps', '1', '--outdir', tmp_path)
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(tmp_path)) == ['seed0000.png', 'seed0001.png']
    assert np.asarray(PIL.Image.open(tmp_path / 'seed0000.png')).shape == (32, 32, 3)
