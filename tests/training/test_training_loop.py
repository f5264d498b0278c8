"""The training loop: phases and lazy regularization, one step, EMA, ADA, ticks and outputs, exact resume
(2 + 2 steps == 4 steps bit for bit), crash / interrupt and resume, two-process gloo consistency, and metrics at
snapshots (which leave training bit for bit unchanged)."""

import json
import os
import pickle
import re
import socket
import subprocess
import sys
import time

import PIL.Image
import pytest
import torch

import dnnlib
from free_port import free_port
from smart_plugin import SMaRt, SMaRtOptions
from torch_utils import data_iter, distributed, training_stats
from torch_utils.tick_report import TickReporter
from training import run_outputs, snapshot, train_state, training_loop
from training.augment import augpipe_specs
from training.loss_plugin import LossPlugin
import tiny_metrics
from tiny_training import tiny_config
from tiny_datasets import make_zip

BATCH = 4


def _make_zip(path, num=16, res=8, num_classes=None):
    return make_zip(path, num=num, res=res, num_classes=num_classes, seed=123)


@pytest.fixture(scope='module')
def data_zip(tmp_path_factory):
    return _make_zip(tmp_path_factory.mktemp('data') / 'tiny.zip')


def _config(data_zip, **overrides):
    """A tiny but complete training configuration (8x8 RGB, 16-channel networks, batch 4 in rounds of 2)."""
    return tiny_config(data_zip, **{'batch_size': BATCH, **overrides})


def _setup(data_zip, **overrides):
    return train_state.setup_training(**_config(data_zip, **overrides), log=lambda *args: None)


def _tensors(module):
    return {name: tensor.detach().clone() for name, tensor in module.state_dict().items()}


def _assert_same_tensors(a, b):
    assert a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a), [
        name for name in a if not torch.equal(a[name], b.get(name, torch.empty(0)))]


# Pieces.


def test_phases_and_lazy_regularization_ratios():
    G, D = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    kwargs = dict(lr=0.0025, betas=[0, 0.99])
    opts, phases = train_state.build_phases(G, D, kwargs, kwargs, 4, 16)
    assert [(p.name, p.interval) for p in phases] == [('Gmain', 1), ('Greg', 4), ('Dmain', 1), ('Dreg', 16)]
    assert phases[0].opt is phases[1].opt is opts['G'] and phases[2].opt is phases[3].opt is opts['D']
    G_group, D_group = opts['G'].param_groups[0], opts['D'].param_groups[0]
    # docs/spec/stylegan2-ada.md 4.5: G lr 0.0020, beta2 0.991992; D lr 0.0023529, beta2 0.990585 (lr 0.0025).
    assert G_group['lr'] == pytest.approx(0.0020) and G_group['betas'][1] == pytest.approx(0.991992, abs=1e-6)
    assert D_group['lr'] == pytest.approx(0.0023529, abs=1e-7) and D_group['betas'][1] == pytest.approx(0.990585,
                                                                                                        abs=1e-6)
    assert G_group['betas'][0] == 0 and G_group['eps'] == 1e-8
    opts, phases = train_state.build_phases(G, D, kwargs, kwargs, None, None)
    assert [(p.name, p.interval) for p in phases] == [('Gboth', 1), ('Dboth', 1)]
    assert opts['G'].param_groups[0]['lr'] == 0.0025 and tuple(opts['G'].param_groups[0]['betas']) == (0.0, 0.99)


def test_fused_adam_on_cpu_matches_the_default_implementation(monkeypatch):
    # train_state.CPU_FUSED_ADAM: Adam's fused kernel on CPU networks unless the options choose an implementation;
    # ten steps of both implementations from the same weights and gradients agree to float32 round-off.
    torch.manual_seed(0)
    start = torch.nn.Linear(8, 8).state_dict()
    kwargs = dict(lr=0.01, betas=[0, 0.99])
    trained = {}
    for fused in (True, False):
        monkeypatch.setattr(train_state, 'CPU_FUSED_ADAM', fused)
        G, D = torch.nn.Linear(8, 8), torch.nn.Linear(8, 1)
        G.load_state_dict(start)
        opts, _ = train_state.build_phases(G, D, kwargs, kwargs, 4, 16)
        assert opts['G'].param_groups[0]['fused'] is (True if fused else None)
        gen = torch.Generator().manual_seed(1)
        for _ in range(10):
            opts['G'].zero_grad()
            G(torch.randn([16, 8], generator=gen)).square().mean().backward()
            opts['G'].step()
        trained[fused] = G.state_dict()
    for name, value in trained[True].items():
        assert (value - start[name]).abs().max() > 0.01  # It trained ...
        torch.testing.assert_close(value, trained[False][name], rtol=1e-6, atol=1e-7)  # ... the same way.
    chosen = dict(kwargs, foreach=True)  # An implementation chosen by the options stays.
    opts, _ = train_state.build_phases(G, D, chosen, chosen, 4, 16)
    assert opts['G'].param_groups[0]['fused'] is None and opts['G'].param_groups[0]['foreach'] is True


def test_check_batch_errors():
    assert data_iter.check_batch(8, 2, 2) == 2
    with pytest.raises(ValueError, match=r'batch_size=6 must be a multiple of num_gpus \* batch_gpu = 1 \* 4'):
        data_iter.check_batch(6, 4, 1)
    with pytest.raises(ValueError, match=r"batch_gpu must be an int >= 1, got 0"):
        data_iter.check_batch(4, 0, 1)


def test_reduce_gradients_replaces_nan_and_inf():
    a, b, c = (torch.nn.Parameter(torch.zeros(3)) for _ in range(3))
    a.grad = torch.tensor([float('nan'), float('inf'), -float('inf')])
    b.grad = torch.tensor([1.5, -2.0, 3e5])
    distributed.reduce_gradients([a, b, c])
    assert a.grad.tolist() == [0.0, 1e5, -1e5]
    assert b.grad.tolist() == [1.5, -2.0, 3e5]  # Finite values stay (no clipping), NaN-free.
    assert c.grad is None


def test_ada_tuner_steps_and_carries_over_a_snapshot():
    pipe = dnnlib.EasyDict(p=torch.tensor(0.5))  # Stands in for the AugmentPipe and its buffer p.
    tuner = train_state.AdaTuner(pipe, target=0.6, interval=4, kimg=0.1, batch_size=4)
    training_stats.report('Loss/signs/real', torch.tensor([-1.0, -1.0, -1.0, -1.0]))
    tuner.after_step(3)  # Not an ADA step: nothing happens.
    assert float(pipe.p) == 0.5
    saved = tuner.state_dict()  # A snapshot in the middle of the interval.
    assert saved == dict(num=4, total=-4)
    resumed = train_state.AdaTuner(pipe, target=0.6, interval=4, kimg=0.1, batch_size=4)
    resumed.load_state_dict(saved)
    training_stats.report('Loss/signs/real', torch.tensor([1.0, 1.0, 1.0, 1.0]))
    resumed.after_step(4)
    # Over the whole interval E[sign] = 0 < 0.6: p -= 4 * 4 / (0.1 * 1000). The second half alone would raise p.
    assert float(pipe.p) == pytest.approx(0.5 - 0.16)
    training_stats.report('Loss/signs/real', torch.tensor([-1.0, 0.0]))
    for _ in range(3):
        resumed.after_step(8)
    assert float(pipe.p) == 0.0  # Clamped at 0 from below; later steps without reports change nothing.


def test_status_line_is_fixed_width():
    reporter = TickReporter(run_dir=None, rank=0, device=torch.device('cpu'))
    lines = [reporter.status_line(0, 4, 0, None), reporter.status_line(1234, 25_000_000, 24_996_000, 0.6125)]
    pattern = (r'tick \d+ +kimg [\d.]+ +time \S.* +sec/tick [\d.]+ +sec/kimg [\d.]+ +maintenance [\d.]+ +'
               r'cpumem [\d.]+ +gpumem - +augment [\d.]+')
    for line in lines:
        assert re.fullmatch(pattern, line), line
    columns = [[line.index(field) for field in ('kimg ', 'time ', 'sec/tick', 'sec/kimg', 'maintenance', 'cpumem',
                                                'gpumem', 'augment')] for line in lines]
    assert columns[0] == columns[1]
    assert lines[1].endswith('augment 0.613') and 'kimg 25000.000' in lines[1]
    training_stats.Collector()  # Drain what the status lines reported.


def test_grid_shape_and_class_rows(tmp_path):
    assert run_outputs.grid_shape(32, 50000) == (32, 32)
    assert run_outputs.grid_shape(1024, 70000) == (7, 4)
    assert run_outputs.grid_shape(8, 16) == (4, 4)   # Tiny datasets get a smaller grid.
    assert run_outputs.grid_shape(8, 10) == (4, 3)
    dataset = dnnlib.util.construct_class_by_name(class_name='training.dataset.ImageFolderDataset', use_labels=True,
                                                  path=_make_zip(tmp_path / 'cond.zip', num=12, num_classes=3))
    indices = run_outputs.grid_indices(dataset, gw=5, gh=4)
    rows = [[int(dataset.get_label(i).argmax()) for i in indices[r * 5:(r + 1) * 5]] for r in range(4)]
    assert rows == [[0] * 5, [1] * 5, [2] * 5, [0] * 5]


# One training step.


def test_step_runs_due_phases_with_gains_and_chunks(data_zip):
    state = _setup(data_zip)
    calls = []
    original = state.loss.accumulate_gradients

    def record(**kwargs):
        calls.append(kwargs)
        return original(**kwargs)

    state.loss.accumulate_gradients = record
    per_step = []
    for _ in range(5):
        start = len(calls)
        training_loop.training_step(state)
        per_step.append([(c['phase'], c['gain'], c['cur_nimg']) for c in calls[start:]])

    def both(name, gain, nimg):
        return [(name, gain, nimg)] * 2  # Two accumulation rounds of batch_gpu = 2.

    assert per_step[0] == both('Gmain', 1, 0) + both('Greg', 4, 0) + both('Dmain', 1, 0) + both('Dreg', 16, 0)
    assert per_step[1] == both('Gmain', 1, 4) + both('Dmain', 1, 4)
    assert per_step[4] == both('Gmain', 1, 16) + both('Greg', 4, 16) + both('Dmain', 1, 16)
    assert state.cur_nimg == 20 and state.batch_idx == 5
    for call in calls:
        assert call['gen_z'].shape == (2, 16) and call['real_img'].shape == (2, 3, 8, 8)
        assert call['real_c'].shape == (2, 0) and call['gen_c'].shape == (2, 0)
        pixels = (call['real_img'] + 1) * 127.5  # uint8 -> x / 127.5 - 1
        assert torch.allclose(pixels, pixels.round(), atol=1e-4) and pixels.min() >= 0 and pixels.max() <= 255
    # Each phase has its own z; the two rounds of a phase use different halves.
    assert not torch.equal(calls[0]['gen_z'], calls[4]['gen_z']) and not torch.equal(calls[0]['gen_z'],
                                                                                     calls[1]['gen_z'])
    assert not any(p.requires_grad for p in state.G.parameters()) and not any(
        p.requires_grad for p in state.D.parameters())


def test_step_updates_G_ema_with_half_life(data_zip):
    state = _setup(data_zip, ema_kimg=0.004, ema_rampup=None)  # ema_nimg = 4 = batch: beta = 0.5 per step.
    training_loop.training_step(state)
    ema_before = _tensors(state.G_ema)
    G_before = _tensors(state.G)
    training_loop.training_step(state)
    G_after = dict(state.G.named_parameters())
    changed = 0
    for name, p_ema in state.G_ema.named_parameters():
        expected = G_after[name].detach() + (ema_before[name] - G_after[name].detach()) * 0.5
        assert torch.allclose(p_ema, expected, atol=1e-6, rtol=0), name
        changed += not torch.equal(G_after[name], G_before[name])
    assert changed > 10  # The optimizer did move G.
    for (name, b_ema), b in zip(state.G_ema.named_buffers(), state.G.buffers()):
        assert torch.equal(b_ema, b), name  # Buffers (w_avg, noise_const) are copied, not averaged.


def test_first_step_with_rampup_copies_G(data_zip):
    state = _setup(data_zip)  # ema_rampup 0.05 at cur_nimg 0: ema_nimg 0, beta 0: G_ema = G.
    training_loop.training_step(state)
    _assert_same_tensors(_tensors(state.G_ema), _tensors(state.G))


# Exact resume.


def _resume_config(data_zip):
    # ADA at target 1 lowers p from 0.5 by 4 * 4 / 100 after step 4 (unless every real scored positive).
    return dict(augment_kwargs=dict(augpipe_specs['bgc']), augment_p=0.5, ada_target=1.0, ada_kimg=0.1,
                plugins=[SMaRt(SMaRtOptions(lam=0.5, freq=2, dpm='gaussian'))])


def _full_state(state):
    return dict(G=_tensors(state.G), D=_tensors(state.D), G_ema=_tensors(state.G_ema),
                G_opt=state.opts['G'].state_dict()['state'], D_opt=state.opts['D'].state_dict()['state'])


def test_two_plus_two_steps_equal_four_steps(data_zip, tmp_path):
    four = _setup(data_zip, **_resume_config(data_zip))
    for _ in range(4):
        training_loop.training_step(four)
    two = _setup(data_zip, **_resume_config(data_zip))
    for _ in range(2):
        training_loop.training_step(two)
    pkl = tmp_path / 'snap.pkl'
    snapshot.save_network_pkl(pkl, run_outputs.snapshot_data(two, next_tick=1))
    resumed = _setup(data_zip, resume_pkl=str(pkl), **_resume_config(data_zip))
    assert resumed.cur_nimg == 8 and resumed.batch_idx == 2 and resumed.plugins[0].step == 2
    for _ in range(2):
        training_loop.training_step(resumed)

    expected, got = _full_state(four), _full_state(resumed)
    for key in ('G', 'D', 'G_ema'):
        _assert_same_tensors(expected[key], got[key])
    for key in ('G_opt', 'D_opt'):
        assert expected[key].keys() == got[key].keys()
        for idx in expected[key]:
            for name, value in expected[key][idx].items():
                assert torch.equal(value, got[key][idx][name]), (key, idx, name)
    assert torch.equal(four.loss.pl_mean, resumed.loss.pl_mean) and float(four.loss.pl_mean) > 0
    assert float(four.augment_pipe.p) == float(resumed.augment_pipe.p) == pytest.approx(0.34)  # ADA across resume
    assert resumed.cur_nimg == four.cur_nimg == 16

    # Control: the same snapshot without its training_state resumes weights only, and diverges.
    data = snapshot.load_network_pkl(pkl)
    data['training_state'] = None
    snapshot.save_network_pkl(tmp_path / 'weights.pkl', data)
    weights_only = _setup(data_zip, resume_pkl=str(tmp_path / 'weights.pkl'), **_resume_config(data_zip))
    assert weights_only.cur_nimg == 0
    for _ in range(2):
        training_loop.training_step(weights_only)
    name = 'synthesis.b8.conv1.weight'
    assert not torch.equal(_tensors(weights_only.G)[name], expected['G'][name])


def test_start_up_says_the_augment_p_the_run_starts_at(data_zip, tmp_path):
    two = _setup(data_zip, **_resume_config(data_zip))
    training_loop.training_step(two)
    two.augment_pipe.p.fill_(0.0123)
    pkl = tmp_path / 'snap.pkl'
    snapshot.save_network_pkl(pkl, run_outputs.snapshot_data(two, next_tick=1))
    lines = []
    config = dict(_resume_config(data_zip), augment_p=0.0)
    train_state.setup_training(**_config(data_zip, resume_pkl=str(pkl), **config), log=lines.append)
    assert [line for line in lines if line.startswith('Augmentation:')] == [
        'Augmentation: p = 0.012, adaptive, restored from the snapshot']
    lines = []
    train_state.setup_training(**_config(data_zip, **config), log=lines.append)
    assert 'Augmentation: p = 0.000, adaptive' in lines
    summary = train_state.network_summary(two.G, two.D, 2, torch.device('cpu'))
    assert summary.startswith('Module') and '\n\n\n' not in summary and summary.count('\n\nModule') == 1


def test_weights_only_resume_must_cover_the_networks_unless_partial(data_zip, tmp_path):
    deep = _setup(data_zip, G_kwargs=dict(z_dim=16, w_dim=16, mapping_kwargs=dict(num_layers=4),
                                          synthesis_kwargs=dict(channel_base=128, channel_max=16)))
    pkl = tmp_path / 'deep.pkl'  # Like an official pickle: networks only, 4 mapping layers where the run has 2.
    snapshot.save_network_pkl(pkl, dict(G=deep.G, D=deep.D, G_ema=deep.G_ema))
    unused = 'mapping.fc2.weight, mapping.fc2.bias, mapping.fc3.weight, mapping.fc3.bias'
    with pytest.raises(train_state.ResumeCoverageError) as info:
        _setup(data_zip, resume_pkl=str(pkl))
    assert str(info.value) == (f"resume_pkl '{pkl}' does not match the configured networks one to one:\n"
                               f'  G: 4 tensor(s) of the snapshot not used: {unused}; 0 of the network not filled: -\n'
                               f'  G_ema: 4 tensor(s) of the snapshot not used: {unused}; 0 of the network not '
                               'filled: -\nsettings that probably differ from the run that wrote it: the mapping '
                               'depth (mapping_kwargs.num_layers); or pass resume_partial=True if only part of the '
                               'weights is meant to be resumed')
    assert (info.value.hints, len(info.value.lines)) == (['map_depth'], 2)  # Hints as data: the CLI words them.
    lines = []
    partial = train_state.setup_training(**_config(data_zip), resume_pkl=str(pkl), resume_partial=True,
                                         log=lines.append)
    assert lines[3] == (f'Partial resume from "{pkl}" (partial; weights only):\n  G: 4 tensor(s) of the snapshot not '
                        f'used: {unused}; 0 of the network not filled: -\n  G_ema: 4 tensor(s) of the snapshot not '
                        f'used: {unused}; 0 of the network not filled: -')
    assert torch.equal(partial.G.mapping.fc1.weight, deep.G.mapping.fc1.weight)  # What matches is resumed.
    snapshot.save_network_pkl(tmp_path / 'no_D.pkl', dict(G=deep.G, G_ema=deep.G_ema))
    with pytest.raises(train_state.ResumeCoverageError, match=r"(?s)  D: 0 tensor\(s\) of the snapshot not used: -; "
                                                               r"\d+ of the network not filled: b8.fromrgb.weight, .*"
                                                               r"the mapping depth \(mapping_kwargs.num_layers\), the "
                                                               r"resolution") as info:
        _setup(data_zip, resume_pkl=str(tmp_path / 'no_D.pkl'))
    assert info.value.hints == ['map_depth', 'layers', 'd_architecture']


def test_snapshot_contents(data_zip, tmp_path):
    state = _setup(data_zip, **_resume_config(data_zip))
    training_loop.training_step(state)
    path = run_outputs.save_snapshot(state, str(tmp_path), next_tick=1)
    assert os.path.basename(path) == 'network-snapshot-000000.pkl'
    state.cur_nimg = 1004  # The released name when it is free...
    assert run_outputs.snapshot_path(str(tmp_path), state.cur_nimg) == str(tmp_path / 'network-snapshot-000001.pkl')
    state.cur_nimg = 12  # ...and the exact count when the run already wrote it.
    assert run_outputs.snapshot_path(str(tmp_path), 12) == str(tmp_path / 'network-snapshot-000000.012.pkl')
    assert run_outputs.fakes_path(str(tmp_path), 12) == str(tmp_path / 'fakes000000.png')
    state.cur_nimg = 4
    data = snapshot.load_network_pkl(path)  # Safe loader: nothing in the file runs.
    assert set(data) == {'G', 'D', 'G_ema', 'augment_pipe', 'training_set_kwargs', 'plugins', 'training_state'}
    assert data['training_set_kwargs']['path'] == data_zip
    assert data['plugins'] == {'smart': {'step': 1, 'cur_nimg': 4}}
    ts = data['training_state']
    assert (ts['cur_nimg'], ts['batch_idx'], ts['cur_tick'], ts['tick_start_nimg']) == (4, 1, 1, 4)
    assert set(ts['optimizers']) == {'G', 'D'} and len(ts['rng']) == 1
    with open(path, 'rb') as f:
        trusted = pickle.load(f)  # Our own file: the trusted path must give the same modules.
    for name in ('G', 'D', 'G_ema'):
        module = trusted[name]
        assert not module.training and not any(p.requires_grad for p in module.parameters())
        assert all(t.device.type == 'cpu' for t in module.state_dict().values())
        _assert_same_tensors(_tensors(module), _tensors(state[name]))
        _assert_same_tensors(_tensors(data[name]), _tensors(state[name]))


# The whole loop: outputs, crash + resume, interrupt.


class _Crash(LossPlugin):
    """Raises `exc` at the end of step `after` (simulates a killed run)."""
    name = 'crash'

    def __init__(self, after=None, exc=RuntimeError):
        self.after, self.exc, self.steps = after, exc, 0

    def end_of_step(self, cur_nimg, batch_size):
        self.steps += 1
        if self.steps == self.after:
            raise self.exc('simulated crash')


def _run(data_zip, run_dir, **overrides):
    os.makedirs(run_dir, exist_ok=True)
    config = _config(data_zip, total_kimg=0.024, kimg_per_tick=0.008, image_snapshot_ticks=1,
                     network_snapshot_ticks=1, augment_kwargs=dict(augpipe_specs['bgc']), ada_target=0.6,
                     ada_kimg=0.1)
    config.update(overrides)
    return training_loop.training_loop(run_dir=str(run_dir), **config)


def _stats(run_dir):
    with open(os.path.join(run_dir, 'stats.jsonl')) as f:
        return [json.loads(line) for line in f]


def test_loop_writes_outputs_and_crash_resume_matches_uninterrupted(data_zip, tmp_path):
    full = _run(data_zip, tmp_path / 'full', plugins=[_Crash()])
    assert full.cur_nimg == 24 and not full.interrupted
    names = sorted(name for name in os.listdir(tmp_path / 'full') if not name.startswith('events.out.tfevents.'))
    # Four snapshots within kimg 0: the first gets the released name, the others the exact count (nothing replaced).
    assert names == ['fakes000000.012.png', 'fakes000000.020.png', 'fakes000000.024.png', 'fakes000000.png',
                     'fakes_init.png', 'log.txt', 'network-snapshot-000000.012.pkl', 'network-snapshot-000000.020.pkl',
                     'network-snapshot-000000.024.pkl', 'network-snapshot-000000.pkl', 'reals.png', 'stats.jsonl']
    assert [snapshot.load_network_pkl(tmp_path / 'full' / name)['training_state']['cur_nimg'] for name in names
            if name.startswith('network-')] == [12, 20, 24, 4]
    assert full.snapshot_pkl == str(tmp_path / 'full' / 'network-snapshot-000000.024.pkl')
    assert PIL.Image.open(tmp_path / 'full' / 'reals.png').size == (256, 256)  # 4x4 grid of 8x8 images, 8x
    stats = _stats(tmp_path / 'full')
    # Ticks end after step 1 (tick 0), at 12 >= 4 + 8, at 20 >= 12 + 8, and when done at 24 images.
    assert [s['Progress/kimg']['mean'] for s in stats] == [0.004, 0.012, 0.02, 0.024]
    assert [s['Progress/tick']['mean'] for s in stats] == [0, 1, 2, 3]
    assert all('timestamp' in s and 'Timing/Gmain' in s and 'Loss/G/loss' in s for s in stats)
    assert stats[0]['Timing/Dreg']['num'] == 1 and stats[0]['Loss/G/loss']['num'] == BATCH
    log = (tmp_path / 'full' / 'log.txt').read_text()
    assert re.search(r'^tick 3 +kimg 0\.024 +time', log, re.M) and 'Training set: 16 images' in log

    with pytest.raises(RuntimeError, match='simulated crash'):
        _run(data_zip, tmp_path / 'crashed', plugins=[_Crash(after=5)])
    assert not [name for name in os.listdir(tmp_path / 'crashed') if name.endswith('.part')]
    crashed_pkl = str(tmp_path / 'crashed' / 'network-snapshot-000000.012.pkl')
    assert snapshot.load_network_pkl(crashed_pkl)['training_state']['cur_nimg'] == 12  # The last tick's snapshot.

    resumed = _run(data_zip, tmp_path / 'resumed', plugins=[_Crash()], resume_pkl=crashed_pkl)
    assert resumed.cur_nimg == 24
    assert [s['Progress/kimg']['mean'] for s in _stats(tmp_path / 'resumed')] == [0.02, 0.024]
    final = snapshot.load_network_pkl(full.snapshot_pkl)
    final_resumed = snapshot.load_network_pkl(resumed.snapshot_pkl)
    for name in ('G', 'D', 'G_ema'):
        _assert_same_tensors(_tensors(final[name]), _tensors(final_resumed[name]))
    assert final['training_state']['augment_p'] == final_resumed['training_state']['augment_p']


def test_stale_temp_files_of_the_run_dir_and_the_resumed_run_are_removed(data_zip, tmp_path, capsys):
    old, new = tmp_path / 'old', tmp_path / 'new'
    state = _setup(data_zip)
    resume_pkl = run_outputs.save_snapshot(state, str(old), next_tick=1)
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()  # A writer that was killed: its pid is gone.
    host = re.sub(r'[^A-Za-z0-9-]', '-', socket.gethostname())
    new.mkdir()
    for folder in (old, new):
        (folder / f'.network-snapshot-000004.pkl.{host}-{dead.pid}.k3j_x9a1.part').write_bytes(b'half a pickle')
    training_loop.training_loop(run_dir=str(new), **_config(data_zip, total_kimg=0.004, image_snapshot_ticks=None,
                                                             network_snapshot_ticks=None, resume_pkl=resume_pkl))
    assert not [name for folder in (old, new) for name in os.listdir(folder) if name.endswith('.part')]
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith('Removed ')]
    assert lines == [f'Removed 1 stale temp file(s) of interrupted writes in {folder}: .network-snapshot-000004.pkl.'
                     f'{host}-{dead.pid}.k3j_x9a1.part' for folder in (new, old)]


def test_keyboard_interrupt_ends_cleanly(data_zip, tmp_path, capsys):
    result = _run(data_zip, tmp_path, plugins=[_Crash(after=4, exc=KeyboardInterrupt)])
    assert result.interrupted and result.exit_code == 130 and result.cur_nimg == 16
    assert result.snapshot_pkl == str(tmp_path / 'network-snapshot-000000.012.pkl')
    assert 'Interrupted (SIGINT) at kimg 0.016; the last snapshot is' in capsys.readouterr().out
    assert not [name for name in os.listdir(tmp_path) if name.endswith('.part')]
    assert snapshot.load_network_pkl(result.snapshot_pkl)['training_state']['cur_nimg'] == 12


# Two processes (gloo).


def _train_three_steps(rank, data_zip, out_dir):
    """Rank `rank` of two: three steps and a snapshot, parameters saved. Every tensor that went through a collective
    lives in this frame, so it is gone before the group is left (training.distributed)."""
    training_stats.init_multiprocessing(rank, None)
    state = _setup(data_zip, rank=rank, num_gpus=2, batch_gpu=2)
    first_reals = []
    original = state.loss.accumulate_gradients

    def record(**kwargs):
        first_reals.append(kwargs['real_img'].sum().item())
        return original(**kwargs)

    state.loss.accumulate_gradients = record
    for _ in range(3):
        training_loop.training_step(state)
    run_outputs.snapshot_data(state, next_tick=1)  # Runs check_ddp_consistency on G, D, G_ema.
    flat = {name: torch.cat([p.detach().flatten() for p in state[name].parameters()]) for name in ('G', 'D')}
    torch.save(dict(flat=flat, reals=first_reals[0]), os.path.join(out_dir, f'rank{rank}.pt'))


def _worker(rank, port, data_zip, out_dir):
    torch.set_num_threads(1)
    with distributed.process_group(rank, 2, init_method=f'tcp://127.0.0.1:{port}'):
        _train_three_steps(rank, data_zip, out_dir)


def test_two_process_gloo_keeps_replicas_identical(data_zip, tmp_path):
    torch.multiprocessing.spawn(_worker, args=(free_port(), data_zip, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f'rank{rank}.pt') for rank in (0, 1))
    assert r0['reals'] != r1['reals']  # Each rank trained on its own slice of the data...
    for name in ('G', 'D'):
        assert torch.equal(r0['flat'][name], r1['flat'][name]), name  # ...yet the replicas stayed identical.


def _leave_worker(rank, port, out_dir):
    with distributed.process_group(rank, 2, init_method=f'tcp://127.0.0.1:{port}'):
        flat = torch.full([3], float(rank))
        torch.distributed.all_reduce(flat)
        if rank == 1:
            time.sleep(1)  # Rank 1 is late; rank 0 must still not leave before it.
            open(os.path.join(out_dir, 'rank1-leaving'), 'w').close()
    if rank == 0:  # The barrier in leaving the group: rank 1 had arrived when rank 0 got out.
        assert os.path.exists(os.path.join(out_dir, 'rank1-leaving')) and flat.tolist() == [1, 1, 1]


def test_leaving_the_group_waits_for_every_rank(tmp_path):
    torch.multiprocessing.start_processes(_leave_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True,
                                          start_method='fork')
    with distributed.process_group(0, 1):  # One process: no group at all.
        assert not distributed.is_initialized()


# Metrics at snapshots.


def test_metrics_at_snapshots_leave_training_unchanged(data_zip, tmp_path, monkeypatch):
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    detector = tiny_metrics.save_torchscript(tmp_path / 'inception.pt')
    metric_kwargs = dict(detector=detector, num_workers=0)
    fast = dict(total_kimg=0.012, augment_kwargs=None, ada_target=None, image_snapshot_ticks=None)
    plain = _run(data_zip, tmp_path / 'plain', **fast)
    measured = _run(data_zip, tmp_path / 'measured', **fast, metrics=['fid2k_full', 'is2k'],
                    metric_kwargs=metric_kwargs)
    lines = (tmp_path / 'measured' / 'metric-is2k.jsonl').read_text().splitlines()
    assert len(lines) == 2 and not os.path.exists(tmp_path / 'plain' / 'metric-is2k.jsonl')  # ticks 0 and 1
    stats = _stats(tmp_path / 'measured')
    assert [s['Metrics/is2k_mean']['mean'] for s in stats] == [json.loads(line)['results']['is2k_mean']
                                                              for line in lines]
    assert stats[1]['Metrics/fid2k_full']['num'] == 1 and 'Metrics/fid2k_full' not in _stats(tmp_path / 'plain')[0]
    # Metrics run under a forked RNG: the trained networks are bit for bit those of the run without metrics.
    final_plain, final_measured = (snapshot.load_network_pkl(r.snapshot_pkl) for r in (plain, measured))
    for name in ('G', 'D', 'G_ema'):
        _assert_same_tensors(_tensors(final_plain[name]), _tensors(final_measured[name]))


def test_metrics_without_run_dir_and_unknown_names(data_zip, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    detector = tiny_metrics.save_torchscript(tmp_path / 'inception.pt')
    config = _config(data_zip, total_kimg=0.004, network_snapshot_ticks=1, image_snapshot_ticks=None)
    result = training_loop.training_loop(run_dir=None, metrics=['is2k'], metric_kwargs=dict(detector=detector,
                                                                                            num_workers=0), **config)
    assert result.snapshot_pkl is None and '"metric": "is2k"' in capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown metric 'fid'; valid metrics: fid50k_full"):
        training_loop.training_loop(run_dir=str(tmp_path / 'never'), metrics=['fid'], **config)
    assert not os.path.exists(tmp_path / 'never')
