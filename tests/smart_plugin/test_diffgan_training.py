"""Diffusion-GAN inside the training loop: a disabled plugin is bit-identical to the baseline, and a run with the
plugin (raw t into D, coupled ADA) resumes from a snapshot exactly (2 + 2 steps == 4 steps)."""

import pytest
import torch

from smart_plugin import DiffGANOptions, DiffusionGAN
from tiny_datasets import make_zip
from tiny_training import tiny_config
from training import run_outputs, snapshot, train_state, training_loop


@pytest.fixture(scope='module')
def data_zip(tmp_path_factory):
    return make_zip(tmp_path_factory.mktemp('data') / 'tiny.zip', num=16, res=8, seed=123)


def _setup(data_zip, plugins, **overrides):
    """A tiny configuration (8x8 RGB, 16-channel networks, batch 4 in rounds of 2) without ADA in the loop."""
    config = tiny_config(data_zip, plugins=plugins, **overrides)
    return train_state.setup_training(**config, log=lambda *args: None)


def _weights(state):
    return {f'{net}.{name}': tensor.detach().clone() for net in ('G', 'D', 'G_ema')
            for name, tensor in state[net].state_dict().items()}


def _assert_same(a, b):
    assert a.keys() == b.keys() and [name for name in a if not torch.equal(a[name], b[name])] == []


def test_disabled_plugin_is_bit_identical_to_the_baseline(data_zip):
    runs = []
    for plugins in ([], [DiffusionGAN(DiffGANOptions(enabled=False, ada_augpipe='bgc', t_embed='raw'))]):
        state = _setup(data_zip, plugins)
        for _ in range(3):
            training_loop.training_step(state)
        runs.append(_weights(state))
    _assert_same(runs[0], runs[1])
    assert runs[0]['D.b4.fc.weight'].shape[0] == 16 and 'D.mapping.embed.weight' not in runs[0]  # Unconditional D.


def _plugin():
    plugin = DiffusionGAN(DiffGANOptions(enabled=True, interval=2, ada_kimg=0.1, ada_augpipe='bgc'))
    plugin.load_state_dict(dict(version=2, p=0.5, T=505, step=0, t_table=None, t_embed='raw'))  # p_aug = 0.25.
    return plugin


def test_two_plus_two_steps_equal_four_steps(data_zip, tmp_path):
    four = _setup(data_zip, [_plugin()])
    assert four.D.c_dim == 1 and float(four.plugins[0].augment_pipe.p) == 0.25  # D takes t as its only label.
    for _ in range(4):
        training_loop.training_step(four)
    two = _setup(data_zip, [_plugin()])
    for _ in range(2):
        training_loop.training_step(two)
    pkl = tmp_path / 'snap.pkl'
    snapshot.save_network_pkl(pkl, run_outputs.snapshot_data(two, next_tick=1))
    saved = snapshot.load_network_pkl(pkl)['plugins']['diffgan']
    assert saved['version'] == 2 and saved['step'] == 2 and saved['p'] != 0.5  # One adaptive step so far.
    resumed = _setup(data_zip, [DiffusionGAN(DiffGANOptions(enabled=True, interval=2, ada_kimg=0.1,
                                                            ada_augpipe='bgc'))], resume_pkl=str(pkl))
    assert resumed.plugins[0].state_dict() == saved
    assert float(resumed.plugins[0].augment_pipe.p) == min(saved['p'], 0.25)
    for _ in range(2):
        training_loop.training_step(resumed)
    _assert_same(_weights(four), _weights(resumed))
    assert four.plugins[0].state_dict() == resumed.plugins[0].state_dict()
    assert four.plugins[0].step == 4 and four.augment_pipe is None  # No ADA controller of the loop's own.
