"""Tests for smart_plugin/diffgan.py: the diffusion of D's inputs, the t table, the adaptive p and T, and resume."""

import re

import numpy as np
import pytest
import torch

from smart_plugin import DiffGANOptions, DiffusionGAN
from smart_plugin.diffgan import alpha_bar_table, diffusion_length
from torch_utils import training_stats


def make(table_size=64, **kwargs):
    plugin = DiffusionGAN(DiffGANOptions(**{'enabled': True, **kwargs}), table_size=table_size)
    plugin.setup(G=None, D=None, training_set=None, device=torch.device('cpu'), rank=0, num_gpus=1)
    return plugin


def reference_alpha_bar(T, t, beta_start=1e-4, beta_end=0.02):
    """alpha_bar_t written out: prod over s = 1..t of (1 - beta_s), beta_s evenly spaced from start to end."""
    return float(np.prod([1 - (beta_start + (beta_end - beta_start) * (s - 1) / (T - 1)) for s in range(1, t + 1)]))


def fixed_t(plugin, t):
    """Make every entry of the t table equal t."""
    plugin.load_state_dict(dict(plugin.state_dict(), t_table=[t] * plugin.table_size))


def test_alpha_bar_table_and_length_formula():
    ab = alpha_bar_table(10, 1e-4, 0.02)
    assert ab.shape == (11,) and ab[0] == 1.0
    assert ab[5] == pytest.approx(reference_alpha_bar(10, 5), rel=1e-14)
    assert ab[10] == pytest.approx(reference_alpha_bar(10, 10), rel=1e-14)
    assert [diffusion_length(p, 10, 1000) for p in (0, 0.0015, 0.3, 0.5, 1)] == [10, 11, 307, 505, 1000]
    assert diffusion_length(1.2, 10, 1000) == 1000 and diffusion_length(-0.1, 10, 1000) == 10


def test_labels_get_t_over_t_max_and_t0_rows_are_unchanged():
    plugin = make(t_min=50, t_max=200)
    gen = torch.Generator().manual_seed(0)
    img, c = torch.randn([64, 3, 8, 8], generator=gen), torch.randn([64, 3], generator=gen)
    torch.manual_seed(0)
    x_t, labels = plugin.transform_D_input(img, c)
    assert plugin.extra_c_dim == 1 and labels.shape == (64, 4) and torch.equal(labels[:, :3], c)
    t = (labels[:, 3] * 200).round()
    assert torch.equal(labels[:, 3], t / 200) and set(t.tolist()) <= set(range(51))   # T = t_min at p = 0.
    clean = t == 0
    assert 10 < int(clean.sum()) < 54  # Half the table is 0.
    assert torch.equal(x_t[clean], img[clean])
    assert not torch.isclose(x_t[~clean], img[~clean]).all(dim=(1, 2, 3)).any()


def test_noise_statistics_at_fixed_t():
    plugin = make(noise_sd=0.05)
    fixed_t(plugin, 7)
    img = torch.full([16384, 1, 2, 2], 0.7)
    torch.manual_seed(1)
    x_t, labels = plugin.transform_D_input(img, torch.zeros([16384, 0]))
    assert torch.equal(labels, torch.full([16384, 1], 7 / 1000))
    ab = reference_alpha_bar(10, 7)
    assert x_t.mean().item() == pytest.approx(np.sqrt(ab) * 0.7, abs=2e-5)
    assert x_t.std().item() == pytest.approx(np.sqrt(1 - ab) * 0.05, rel=0.02)


def test_gradient_flows_through_the_diffusion():
    plugin = make()
    fixed_t(plugin, 10)
    img = torch.zeros([2, 1, 4, 4], requires_grad=True)
    x_t, _ = plugin.transform_D_input(img, torch.zeros([2, 0]))
    x_t.sum().backward()
    torch.testing.assert_close(img.grad, torch.full_like(img, np.sqrt(reference_alpha_bar(10, 10))))


@pytest.mark.parametrize('ts_dist', ['priority', 'uniform'])
def test_t_table_histograms(ts_dist):
    torch.manual_seed(0)
    plugin = make(table_size=40000, t_min=10, t_max=10, ts_dist=ts_dist)
    counts = np.bincount(plugin.t_table.numpy(), minlength=11)
    assert counts[0] == 20000 and counts.sum() == 40000
    share = counts[1:] / 20000
    t = np.arange(1, 11)
    expected = t / t.sum() if ts_dist == 'priority' else np.full(10, 0.1)
    np.testing.assert_allclose(share, expected, atol=0.01, rtol=0)
    mean_t = (share * t).sum()
    assert mean_t == pytest.approx(7.0 if ts_dist == 'priority' else 5.5, abs=0.05)  # 385 / 55 vs 55 / 10.


def test_p_rises_when_d_is_overconfident_every_interval_only():
    plugin = make(interval=4, ada_kimg=100, target=0.6)
    for step in range(8):
        training_stats.report('Loss/signs/real', torch.tensor([1.0, 1.0, 1.0, 1.0]))
        plugin.end_of_step(cur_nimg=64 * (step + 1), batch_size=64)
        if step == 2:
            assert (plugin.p, plugin.T) == (0.0, 10)  # Not yet: the update runs every 4th iteration.
        if step == 3:
            assert plugin.p == pytest.approx(64 * 4 / 100_000, rel=1e-12) and plugin.T == 10 + round(0.00256 * 990)
            assert plugin.T == 13 and int(plugin.t_table.max()) <= 13
    assert plugin.p == pytest.approx(2 * 64 * 4 / 100_000, rel=1e-12) and plugin.T == 15


def test_p_falls_and_clamps():
    plugin = make(interval=1, ada_kimg=0.001, target=0.6)   # One update moves p by 64 / 1 = 64: clamped.
    training_stats.report('Loss/signs/real', torch.tensor([1.0, 1.0]))
    plugin.end_of_step(cur_nimg=64, batch_size=64)
    assert (plugin.p, plugin.T) == (1.0, 1000)
    training_stats.report('Loss/signs/real', torch.tensor([1.0, -1.0]))  # Mean 0 < target.
    plugin.end_of_step(cur_nimg=128, batch_size=64)
    assert (plugin.p, plugin.T) == (0.0, 10)
    training_stats.report('Loss/signs/real', torch.tensor([-1.0]))
    plugin.end_of_step(cur_nimg=192, batch_size=64)
    assert plugin.p == 0.0  # Clamped at 0 from below.
    plugin.end_of_step(cur_nimg=256, batch_size=64)  # No reports this interval: p stays.
    assert plugin.p == 0.0


def test_reports_p_and_T():
    collector = training_stats.Collector(regex='DiffGAN/.*')
    plugin = make(interval=1, ada_kimg=1)
    training_stats.report('Loss/signs/real', torch.tensor([1.0]))
    plugin.end_of_step(cur_nimg=10, batch_size=10)
    collector.update()
    assert collector.mean('DiffGAN/p') == pytest.approx(0.01) and collector.mean('DiffGAN/T') == 20


def test_disabled_is_inert():
    plugin = DiffusionGAN(DiffGANOptions(enabled=False))
    plugin.setup(G=None, D=None, training_set=None, device=torch.device('cpu'), rank=0, num_gpus=1)
    img, c = torch.randn([2, 1, 4, 4]), torch.zeros([2, 2])
    state = torch.get_rng_state()
    out_img, out_c = plugin.transform_D_input(img, c)
    plugin.end_of_step(cur_nimg=4, batch_size=4)
    assert plugin.extra_c_dim == 0 and out_img is img and out_c is c
    assert torch.equal(torch.get_rng_state(), state) and plugin.state_dict()['step'] == 0


def test_state_dict_round_trip_resumes_exactly():
    torch.manual_seed(3)
    plugin = make(interval=1, ada_kimg=1)
    for step in range(3):
        training_stats.report('Loss/signs/real', torch.tensor([1.0]))
        plugin.end_of_step(cur_nimg=16 * (step + 1), batch_size=16)
    state = plugin.state_dict()
    assert state['p'] == pytest.approx(0.048) and state['T'] == 10 + round(0.048 * 990) and state['step'] == 3
    resumed = DiffusionGAN(DiffGANOptions(enabled=True, interval=1, ada_kimg=1))
    resumed.load_state_dict(state)  # Before setup, as a loop resuming from a snapshot does.
    resumed.setup(G=None, D=None, training_set=None, device=torch.device('cpu'), rank=0, num_gpus=1)
    assert resumed.state_dict() == state
    img, c = torch.randn([8, 1, 4, 4]), torch.zeros([8, 0])
    outputs = []
    for p in (plugin, resumed):
        torch.manual_seed(4)
        outputs.append(p.transform_D_input(img, c))
    assert torch.equal(outputs[0][0], outputs[1][0]) and torch.equal(outputs[0][1], outputs[1][1])


def test_errors():
    with pytest.raises(TypeError, match=re.escape('options is NoneType; expected smart_plugin.DiffGANOptions')):
        DiffusionGAN(None)
    with pytest.raises(ValueError, match=re.escape('table_size is 3; expected an even integer >= 2')):
        DiffusionGAN(DiffGANOptions(), table_size=3)
    plugin = make()
    with pytest.raises(ValueError, match=re.escape("DiffusionGAN state lacks ['t_table']")):
        plugin.load_state_dict({'p': 0.0, 'T': 10, 'step': 0})
    with pytest.raises(ValueError, match=re.escape('t_table in the DiffusionGAN state is [0, 11]; expected 64 steps '
                                                   'in [0, T = 10]')):
        plugin.load_state_dict({'p': 0.0, 'T': 10, 'step': 0, 't_table': [0, 11]})
