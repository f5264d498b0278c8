"""Tests for smart_plugin/diffgan.py: the diffusion of D's inputs, D's t input (raw or scaled), the t table and its
redraw, the histogram of t at constant T, the released p/T trajectory, the ADA coupling, and resume."""

import re

import numpy as np
import pytest
import torch

from smart_plugin import DiffGANOptions, DiffusionGAN, OptionError
from smart_plugin.diffgan import diffusion_length, t_weights
from torch_utils import training_stats

SIGNS = 'Loss/signs/real'


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


def intended_mixture(T, ts_dist):
    """The released distribution of t: 1/2 at 0, 1/2 over 1..T uniformly or with weights t - 1."""
    t = np.arange(1, T + 1, dtype=np.float64)
    w = np.full(T, 1 / T) if ts_dist == 'uniform' else (t - 1) / (t - 1).sum()
    return np.concatenate([[0.5], w / 2])


def test_length_formula():
    assert [diffusion_length(p, 10, 1000) for p in (0, 0.0015, 0.3, 0.5, 1)] == [10, 11, 307, 505, 1000]
    assert diffusion_length(1.2, 10, 1000) == 1000 and diffusion_length(-0.1, 10, 1000) == 10


def test_priority_weights_give_P1_zero():
    assert t_weights(5, 'priority').tolist() == [0, 1, 2, 3, 4]  # P(t) ~ t - 1 for t = 1..5: P(1) = 0.
    assert t_weights(5, 'uniform').tolist() == [1, 1, 1, 1, 1]
    torch.manual_seed(0)
    table = make(table_size=20000, t_min=4, t_max=4, ts_dist='priority').t_table
    counts = np.bincount(table.numpy(), minlength=5)
    assert counts[0] == 10000 and counts[1] == 0 and counts[2:].sum() == 10000  # t = 1 never drawn.
    np.testing.assert_allclose(counts[2:] / 10000, [1 / 6, 2 / 6, 3 / 6], atol=0.015)  # Weights 1, 2, 3.
    mean = (np.arange(2, 5) * counts[2:]).sum() / 10000
    assert mean == pytest.approx(20 / 6, abs=0.03)  # (2 + 6 + 12) / 6; ours before (P ~ t) gave 3.
    uniform = make(table_size=20000, t_min=4, t_max=4, ts_dist='uniform').t_table
    np.testing.assert_allclose(np.bincount(uniform.numpy(), minlength=5)[1:] / 10000, [0.25] * 4, atol=0.015)


def test_raw_t_labels_and_t0_rows_are_unchanged():
    plugin = make(t_min=50, t_max=200)
    gen = torch.Generator().manual_seed(0)
    img, c = torch.randn([64, 3, 8, 8], generator=gen), torch.randn([64, 3], generator=gen)
    torch.manual_seed(0)
    x_t, labels = plugin.transform_D_input(img, c)
    assert plugin.extra_c_dim == 1 and labels.shape == (64, 4) and torch.equal(labels[:, :3], c)
    t = labels[:, 3]
    assert torch.equal(t, t.round()) and set(t.long().tolist()) <= set(range(51))  # Raw integers, T = t_min.
    clean = t == 0
    assert 10 < int(clean.sum()) < 54  # Half the table is 0.
    assert torch.equal(x_t[clean], img[clean])
    assert not torch.isclose(x_t[~clean], img[~clean]).all(dim=(1, 2, 3)).any()


@pytest.mark.parametrize('t_embed, expected', [('raw', 7.0), ('scaled', 7 / 1000)])
def test_raw_vs_scaled_t_input(t_embed, expected):
    plugin = make(t_embed=t_embed)
    fixed_t(plugin, 7)
    img = torch.zeros([4, 1, 2, 2])
    torch.manual_seed(5)
    x_raw, labels = plugin.transform_D_input(img, torch.ones([4, 2]))
    assert torch.equal(labels, torch.tensor([[1.0, 1.0, expected]] * 4))
    other = make(t_embed='scaled' if t_embed == 'raw' else 'raw')
    fixed_t(other, 7)
    torch.manual_seed(5)
    assert torch.equal(other.transform_D_input(img, torch.ones([4, 2]))[0], x_raw)  # Only the label differs.


def test_noise_statistics_at_fixed_t():
    plugin = make(noise_sd=0.05)
    fixed_t(plugin, 7)
    img = torch.full([16384, 1, 2, 2], 0.7)
    torch.manual_seed(1)
    x_t, labels = plugin.transform_D_input(img, torch.zeros([16384, 0]))
    assert torch.equal(labels, torch.full([16384, 1], 7.0))
    ab = reference_alpha_bar(10, 7)
    assert x_t.mean().item() == pytest.approx(np.sqrt(ab) * 0.7, abs=2e-5)
    assert x_t.std().item() == pytest.approx(np.sqrt(1 - ab) * 0.05, rel=0.02)


def test_diffusion_arithmetic_as_released():
    plugin = make()
    fixed_t(plugin, 9)
    img = torch.randn([3, 2, 4, 4], generator=torch.Generator().manual_seed(2))
    torch.manual_seed(8)
    x_t, _ = plugin.transform_D_input(img, torch.zeros([3, 0]))
    torch.manual_seed(8)
    torch.randint(64, [3])  # The t draw.
    noise = torch.randn_like(img) * 0.05
    ab = plugin.alpha_bar[9]  # float32, as the release's alphas_bar_sqrt / one_minus_alphas_bar_sqrt tables.
    assert torch.equal(x_t, ab.sqrt() * img + (1 - ab).sqrt() * noise)


def test_gradient_flows_through_the_diffusion():
    plugin = make()
    fixed_t(plugin, 10)
    img = torch.zeros([2, 1, 4, 4], requires_grad=True)
    x_t, _ = plugin.transform_D_input(img, torch.zeros([2, 0]))
    x_t.sum().backward()
    torch.testing.assert_close(img.grad, torch.full_like(img, np.sqrt(reference_alpha_bar(10, 10))))


def test_table_is_redrawn_every_interval_even_when_T_stays():
    torch.manual_seed(0)
    plugin = make(t_min=1000, t_max=1000)
    tables = [plugin.t_table.clone()]
    for step in range(8):
        training_stats.report(SIGNS, torch.ones([4]))
        plugin.end_of_step(cur_nimg=4 * (step + 1), batch_size=4)
        tables.append(plugin.t_table.clone())
    assert plugin.T == 1000
    same = [torch.equal(tables[i], tables[i + 1]) for i in range(8)]
    assert same == [True, True, True, False, True, True, True, False]  # New tables after steps 4 and 8.


@pytest.mark.parametrize('ts_dist', ['priority', 'uniform'])
@pytest.mark.parametrize('T', [10, 1000])
def test_t_histogram_at_constant_T_matches_the_mixture(ts_dist, T):
    # 100k draws at constant T: one D call of 32 samples per iteration, so a table serves 128 draws.
    torch.manual_seed(0)
    plugin = make(t_min=T, t_max=T, ts_dist=ts_dist)
    img, c = torch.zeros([32, 1, 1, 1]), torch.zeros([32, 0])
    draws = []
    for step in range(3125):
        draws.append(plugin.transform_D_input(img, c)[1][:, 0].long())
        training_stats.report(SIGNS, -torch.ones([32]))
        plugin.end_of_step(cur_nimg=32 * (step + 1), batch_size=32)
    t = torch.cat(draws).numpy()
    share = np.bincount(t, minlength=T + 1) / len(t)
    tv = np.abs(share - intended_mixture(T, ts_dist)).sum() / 2
    assert len(t) == 100_000 and tv < 0.06, tv
    assert len(np.unique(t)) > (0.85 * T if T == 1000 else T - (ts_dist == 'priority'))  # Not 33 levels of 1001.


def released_trajectory(signs_per_step, batch, interval, ada_kimg, target, t_min, t_max):
    """p and T after each adaptive step, the release's training-loop arithmetic written out."""
    p, out = 0.0, []
    for k in range(interval - 1, len(signs_per_step), interval):
        mean = np.concatenate(signs_per_step[k - interval + 1:k + 1]).mean()
        adjust = np.sign(mean - target) * (batch * interval) / (ada_kimg * 1000)
        p = float(np.clip(p + adjust, 0, 1))
        out.append((p, int(np.clip(int(t_min + round(p * (t_max - t_min))), t_min, t_max))))
    return out


def test_fixed_sign_sequence_replays_the_released_p_T_trajectory():
    rng = np.random.default_rng(0)
    # Mostly confident D (mean sign > 0.6) for 200 steps, then unsure: p climbs to 1, then falls back to 0.
    signs = [np.where(rng.random(64) < (0.95 if step < 200 else 0.5), 1.0, -1.0) for step in range(400)]
    plugin = make(ada_kimg=2, target=0.6, interval=4)
    got = []
    for step, s in enumerate(signs):
        training_stats.report(SIGNS, torch.from_numpy(s))
        plugin.end_of_step(cur_nimg=64 * (step + 1), batch_size=64)
        if (step + 1) % 4 == 0:
            got.append((plugin.p, plugin.T))
            assert int(plugin.t_table.max()) <= plugin.T
    expected = released_trajectory(signs, 64, 4, 2, 0.6, 10, 1000)
    assert got == expected
    ps = [p for p, _ in got]
    assert max(ps) == 1.0 and ps[-1] == 0.0 and got[0] == (pytest.approx(0.128, rel=1e-12), 10 + round(0.128 * 990))


def test_p_rises_when_d_is_overconfident_every_interval_only():
    plugin = make(interval=4, ada_kimg=100, target=0.6)
    for step in range(8):
        training_stats.report(SIGNS, torch.tensor([1.0, 1.0, 1.0, 1.0]))
        plugin.end_of_step(cur_nimg=64 * (step + 1), batch_size=64)
        if step == 2:
            assert (plugin.p, plugin.T) == (0.0, 10)  # Not yet: the update runs every 4th iteration.
        if step == 3:
            assert plugin.p == pytest.approx(64 * 4 / 100_000, rel=1e-12) and plugin.T == 10 + round(0.00256 * 990)
            assert plugin.T == 13 and int(plugin.t_table.max()) <= 13
    assert plugin.p == pytest.approx(2 * 64 * 4 / 100_000, rel=1e-12) and plugin.T == 15


def test_p_falls_and_clamps():
    plugin = make(interval=1, ada_kimg=0.001, target=0.6)   # One update moves p by 64 / 1 = 64: clamped.
    training_stats.report(SIGNS, torch.tensor([1.0, 1.0]))
    plugin.end_of_step(cur_nimg=64, batch_size=64)
    assert (plugin.p, plugin.T) == (1.0, 1000)
    training_stats.report(SIGNS, torch.tensor([1.0, -1.0]))  # Mean 0 < target.
    plugin.end_of_step(cur_nimg=128, batch_size=64)
    assert (plugin.p, plugin.T) == (0.0, 10)
    training_stats.report(SIGNS, torch.tensor([-1.0]))
    plugin.end_of_step(cur_nimg=192, batch_size=64)
    assert plugin.p == 0.0  # Clamped at 0 from below.
    plugin.end_of_step(cur_nimg=256, batch_size=64)  # No reports this interval: p stays.
    assert plugin.p == 0.0


def test_reports_p_and_T():
    collector = training_stats.Collector(regex='DiffGAN/.*')
    plugin = make(interval=1, ada_kimg=1)
    training_stats.report(SIGNS, torch.tensor([1.0]))
    plugin.end_of_step(cur_nimg=10, batch_size=10)
    collector.update()
    assert collector.mean('DiffGAN/p') == pytest.approx(0.01) and collector.mean('DiffGAN/T') == 20
    assert 'DiffGAN/p_aug' not in collector.names()


def test_ada_coupling_follows_min_p_maxp():
    collector = training_stats.Collector(regex='DiffGAN/p_aug')
    plugin = make(interval=1, ada_kimg=1, ada_augpipe='blit', ada_maxp=0.25)
    assert plugin.p_aug == 0 and float(plugin.augment_pipe.p) == 0
    for step in range(5):  # p: 0.1, 0.2, 0.3, 0.4, 0.5 (batch 100, ada_kimg 1).
        training_stats.report(SIGNS, torch.ones([4]))
        plugin.end_of_step(cur_nimg=100 * (step + 1), batch_size=100)
        assert plugin.p == pytest.approx(0.1 * (step + 1), rel=1e-12)
        assert float(plugin.augment_pipe.p) == pytest.approx(min(0.1 * (step + 1), 0.25), rel=1e-6)
        collector.update()
        assert collector.mean('DiffGAN/p_aug') == pytest.approx(min(0.1 * (step + 1), 0.25))
    # The pipeline runs before the diffusion: with t = 0 everywhere, D sees augmented but un-noised images.
    fixed_t(plugin, 0)
    assert float(plugin.augment_pipe.p) == pytest.approx(0.25, rel=1e-6)  # Kept across load_state_dict.
    img = torch.randn([64, 3, 8, 8], generator=torch.Generator().manual_seed(1))
    x_t, _ = plugin.transform_D_input(img, torch.zeros([64, 0]))
    changed = int((~torch.isclose(x_t, img).all(dim=(1, 2, 3))).sum())
    assert 3 < changed < 40  # Each of xflip, rot90, xint fires with p 0.25 (about 58% of images, some no-ops).
    plain = make(interval=1, ada_kimg=1)
    fixed_t(plain, 0)
    assert plain.augment_pipe is None and torch.equal(plain.transform_D_input(img, torch.zeros([64, 0]))[0], img)


def test_disabled_is_inert():
    plugin = DiffusionGAN(DiffGANOptions(enabled=False, ada_augpipe='bgc'))
    plugin.setup(G=None, D=None, training_set=None, device=torch.device('cpu'), rank=0, num_gpus=1)
    img, c = torch.randn([2, 1, 4, 4]), torch.zeros([2, 2])
    state = torch.get_rng_state()
    out_img, out_c = plugin.transform_D_input(img, c)
    plugin.end_of_step(cur_nimg=4, batch_size=4)
    assert plugin.extra_c_dim == 0 and out_img is img and out_c is c and plugin.augment_pipe is None
    assert torch.equal(torch.get_rng_state(), state) and plugin.state_dict()['step'] == 0


def test_state_dict_round_trip_resumes_exactly():
    torch.manual_seed(3)
    plugin = make(interval=1, ada_kimg=1, ada_augpipe='blit')
    for step in range(3):
        training_stats.report(SIGNS, torch.tensor([1.0]))
        plugin.end_of_step(cur_nimg=16 * (step + 1), batch_size=16)
    state = plugin.state_dict()
    assert state['p'] == pytest.approx(0.048) and state['T'] == 10 + round(0.048 * 990) and state['step'] == 3
    assert state['version'] == 2 and state['t_embed'] == 'raw' and len(state['t_table']) == 64
    resumed = DiffusionGAN(DiffGANOptions(enabled=True, interval=1, ada_kimg=1, ada_augpipe='blit'))
    resumed.load_state_dict(state)  # Before setup, as a loop resuming from a snapshot does.
    resumed.setup(G=None, D=None, training_set=None, device=torch.device('cpu'), rank=0, num_gpus=1)
    assert resumed.state_dict() == state and float(resumed.augment_pipe.p) == float(plugin.augment_pipe.p)
    img, c = torch.randn([8, 1, 4, 4]), torch.zeros([8, 0])
    outputs = []
    for p in (plugin, resumed):
        torch.manual_seed(4)
        outputs.append(p.transform_D_input(img, c))
    assert torch.equal(outputs[0][0], outputs[1][0]) and torch.equal(outputs[0][1], outputs[1][1])


OLD_STATE = {'p': 0.01, 'T': 20, 'step': 8, 't_table': [0] * 32 + [5] * 32}  # Version 1 (no 'version' key).


def test_old_state_loads_with_scaled_t_and_is_refused_with_raw_t():
    plugin = make(t_embed='scaled')
    plugin.load_state_dict(OLD_STATE)
    assert (plugin.p, plugin.T, plugin.step) == (0.01, 20, 8) and plugin.t_table.tolist() == OLD_STATE['t_table']
    with pytest.raises(OptionError, match=re.escape(
            "the DiffusionGAN state (a snapshot from before raw-t conditioning) was trained with D's t input "
            "'scaled', this run has t_embed 'raw'; resume with t_embed 'scaled' (train.py --diffgan-t-embed=scaled) "
            "or start afresh")) as info:
        make().load_state_dict(OLD_STATE)
    assert info.value.field == 't_embed'
    with pytest.raises(OptionError, match=re.escape("was trained with D's t input 'raw', this run has t_embed "
                                                    "'scaled'")):
        make(t_embed='scaled').load_state_dict(make().state_dict())


def test_errors():
    with pytest.raises(TypeError, match=re.escape('options is NoneType; expected smart_plugin.DiffGANOptions')):
        DiffusionGAN(None)
    with pytest.raises(ValueError, match=re.escape('table_size is 3; expected an even integer >= 2')):
        DiffusionGAN(DiffGANOptions(), table_size=3)
    plugin = make()
    with pytest.raises(ValueError, match=re.escape("DiffusionGAN state lacks ['t_table']")):
        plugin.load_state_dict({'version': 2, 'p': 0.0, 'T': 10, 'step': 0, 't_embed': 'raw'})
    with pytest.raises(ValueError, match=re.escape("DiffusionGAN state version is 3; expected 1 (no version key) "
                                                   "or 2")):
        plugin.load_state_dict({'version': 3})
    with pytest.raises(ValueError, match=re.escape('t_table in the DiffusionGAN state is [0, 11]; expected 64 steps '
                                                   'in [0, T = 10]')):
        plugin.load_state_dict({'version': 2, 'p': 0.0, 'T': 10, 'step': 0, 't_table': [0, 11], 't_embed': 'raw'})
