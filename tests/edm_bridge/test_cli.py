"""Tests for `python -m edm_bridge` (edm_bridge/__main__.py) through click's CliRunner."""

import json
import pickle

import pytest
import torch
from click.testing import CliRunner

from edm_bridge import edm_networks
from edm_bridge.__main__ import cli

TINY_EDM = dict(img_resolution=8, img_channels=3, label_dim=10, model_type='SongUNet', model_channels=16,
                channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4], dropout=0.0)


def run(*args):
    return CliRunner().invoke(cli, list(args))


@pytest.mark.parametrize('command', [[], ['info'], ['sigmas'], ['models']])
def test_help(command):
    result = run(*command, '--help')
    assert result.exit_code == 0 and 'Usage:' in result.output


def test_sigmas_ddpm_linear_values():
    result = run('sigmas', '--schedule', 'ddpm-linear', '--t', '25,27')
    assert result.exit_code == 0, result.output
    assert result.output == '25 0.09548\n26 0.09870\n27 0.1019\n'  # docs/spec/diffusion.md: t = 25 -> 0.0955.


def test_sigmas_defaults_are_karras_25_to_35():
    lines = run('sigmas').output.splitlines()
    assert len(lines) == 11 and lines[0] == '25 0.003625' and lines[-1] == '35 0.004538'  # spec: 0.00363, 0.00454.
    assert run('sigmas', '--schedule', 'ddpm-cosine', '--t', '30').output == '30 0.05955\n'  # spec: 0.0596.


@pytest.mark.parametrize('args, message', [
    (['--schedule', 'cosine'], "Error: --schedule cosine: schedule='cosine': unknown name 'cosine'"),
    (['--schedule', 'karras:10,x'], "Error: --schedule karras:10,x: schedule='karras:10,x': sigma_min='x' is not"),
    (['--t', '25-35'], 'Error: --t 25-35: expected LO,HI (two integers, e.g. 25,35) or one integer'),
    (['--t', '35,25'], 'Error: --t 35,25: LO 35 is above HI 25; expected LO <= HI'),
    (['--t', '995,1000'], 'Error: --t 995,1000: t spans [995, 1000]: expected timesteps in [0, 999]'),
])
def test_sigmas_errors_name_the_flag(args, message):
    result = run('sigmas', *args)
    assert result.exit_code == 1 and message in result.output


def test_info_on_a_tiny_pickle(tmp_path):
    net = edm_networks.EDMPrecond(**TINY_EDM)
    path = tmp_path / 'tiny.pkl'
    path.write_bytes(pickle.dumps(dict(ema=net, loss_fn=None, augment_pipe=None, dataset_kwargs={})))
    result = run('info', str(path))
    assert result.exit_code == 0, result.output
    num_params = sum(p.numel() for p in net.parameters())
    assert result.output.splitlines() == [
        f'source:          {path}',
        'name:            -',
        'format:          edm-pickle',
        'preconditioning: EDMPrecond',
        'backbone:        SongUNet',
        "architecture:    model_channels=16, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4], dropout=0.0",
        'resolution:      8x8',
        'channels:        3',
        'label_dim:       10',
        f'parameters:      {num_params:,}',
        'sigma range:     [0, inf]',
        "schedule:        karras (SMaRt's default t -> sigma map)",
        'license:         -',
    ]
    summary = json.loads(run('info', str(path), '--json').output)
    assert (summary['num_params'], summary['preconditioning']) == (num_params, 'EDMPrecond')


def test_info_warns_about_nan_weights(tmp_path):
    net = edm_networks.EDMPrecond(**TINY_EDM)
    with torch.no_grad():
        net.model.enc['8x8_conv'].weight[0, 0] = float('nan')
    path = tmp_path / 'nan.pkl'
    path.write_bytes(pickle.dumps(dict(ema=net, loss_fn=None, augment_pipe=None, dataset_kwargs={})))
    result = run('info', str(path))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == ('WARNING:         1 weight tensor(s) hold NaN/Inf: '
                                              'model.enc.8x8_conv.weight (9); the model is damaged and would sample '
                                              'black images')


def test_info_errors_name_the_argument_or_flag(tmp_path):
    result = run('info', 'edm-cifar10')
    assert result.exit_code == 1
    assert "Error: PATH_OR_NAME edm-cifar10: unknown model 'edm-cifar10'" in result.output
    assert 'known names: edm-cifar10-32x32-cond-vp' in result.output
    (tmp_path / 'text.pkl').write_bytes(b'hello')
    result = run('info', str(tmp_path / 'text.pkl'))
    assert result.exit_code == 1 and f'Error: PATH_OR_NAME {tmp_path / "text.pkl"}: ' in result.output
    result = run('info', str(tmp_path / 'text.pkl'), '--adm-preset', 'adm-cifar')
    assert result.exit_code == 2 and "Invalid value for '--adm-preset': 'adm-cifar' is not one of" in result.output


def test_models_lists_the_registry():
    lines = run('models').output.splitlines()
    assert len(lines) == 19
    assert lines[1].split() == ['edm-cifar10-32x32-cond-vp', '32', '10', 'DDPM++', 'karras', 'CC', 'BY-NC-SA', '4.0']
    assert lines[12].split() == ['adm-lsun-bedroom256', '256', '0', 'ADM', 'ddpm-linear', 'MIT']
    assert lines[-1].split()[:5] == ['ncsnv2-ffhq', '256', '0', 'NCSNv2Deepest', 'karras']


def test_info_on_an_adm_checkpoint_needs_the_preset_flag(tmp_path):
    torch.save({'time_embed.0.weight': torch.zeros(4, 2)}, tmp_path / 'ckpt.pt')
    result = run('info', str(tmp_path / 'ckpt.pt'))
    assert result.exit_code == 1 and 'pass adm_preset (CLI: --adm-preset), one of' in result.output
    result = run('info', str(tmp_path / 'ckpt.pt'), '--adm-preset', 'adm-imagenet64-cond')
    assert result.exit_code == 1
    assert "the stored tensors do not match ADM preset 'adm-imagenet64-cond' (missing [" in result.output
