"""Scrubbed non-finite gradients are counted per phase (stat Grad/<phase>/nonfinite), warned about at the tick, and
stop training with the last good snapshot named when a phase's whole update was non-finite for a tick."""

import json
import os

import pytest
import torch

from tiny_datasets import make_zip
from tiny_training import tiny_config
from torch_utils import distributed, training_stats
from torch_utils.finite import NonFiniteError
from torch_utils.nonfinite_grads import NonFiniteGradMonitor
from training import networks, training_loop
from training.loss_plugin import LossPlugin


def test_reduce_gradients_counts_what_it_scrubs():
    a, b, c = (torch.nn.Parameter(torch.zeros(3)) for _ in range(3))
    a.grad = torch.tensor([float('nan'), float('inf'), -float('inf')])
    b.grad = torch.tensor([1.5, -2.0, 3e5])
    scrubbed, total = distributed.reduce_gradients([a, b, c])
    assert (int(scrubbed), total) == (3, 6)
    assert a.grad.tolist() == [0.0, 1e5, -1e5] and b.grad.tolist() == [1.5, -2.0, 3e5]
    assert [int(n) for n in distributed.reduce_gradients([c])] == [0, 0]


@pytest.mark.parametrize('case', ['finite', 'nan', 'inf', 'sum overflows'])
def test_cpu_finite_check_first_matches_the_full_scrub(monkeypatch, case):
    """The CPU path that first checks the sum is finite gives the full path's gradients, counts and dtypes."""
    grads = [torch.randn(5, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    if case == 'nan':
        grads[1][2] = float('nan')
    if case == 'inf':
        grads[2][0] = -float('inf')
    if case == 'sum overflows':  # every element finite, the sum is not: the full path runs and scrubs nothing
        grads[0][:] = 3e38
    calls = []
    monkeypatch.setattr(distributed.misc, 'nan_to_num', lambda *args, fn=distributed.misc.nan_to_num, **kwargs:
                        calls.append(1) or fn(*args, **kwargs))
    results = {}
    for fast in (True, False):
        monkeypatch.setattr(distributed, 'CPU_CHECK_FINITE_FIRST', fast)
        params = [torch.nn.Parameter(torch.zeros(5)) for _ in grads]
        for param, grad in zip(params, grads):
            param.grad = grad.clone()
        scrubbed, total = distributed.reduce_gradients(params)
        results[fast] = (scrubbed, total, [param.grad for param in params])
    (s_fast, n_fast, g_fast), (s_ref, n_ref, g_ref) = results[True], results[False]
    assert s_fast.dtype == s_ref.dtype == torch.int64 and s_fast.shape == s_ref.shape == ()
    assert (int(s_fast), n_fast) == (int(s_ref), n_ref) == ({'nan': 1, 'inf': 1}.get(case, 0), 15)
    assert all(torch.equal(a, b) for a, b in zip(g_fast, g_ref))
    assert len(calls) == (1 if case == 'finite' else 2)  # the fast path skipped the scrub only when all was finite


def test_monitor_warns_on_some_and_stops_on_all():
    collector = training_stats.Collector(regex='Grad/.*')
    monitor = NonFiniteGradMonitor()
    monitor.record('Gmain', torch.tensor(10), 10)
    monitor.record('Gmain', torch.tensor(2), 10)
    monitor.record('Dmain', torch.tensor(0), 7)
    assert monitor.end_tick() == ['Warning: 12 non-finite gradient element(s) of Gmain replaced by 0 / +-1e5 this '
                                  'tick (1 of 2 step(s) wholly non-finite); the loss diverges or a term is too large']
    collector.update()
    assert collector.as_dict()['Grad/Gmain/nonfinite'] == dict(num=2, mean=6.0, std=4.0)
    assert monitor.end_tick() == []  # The tallies restart each tick.
    monitor.record('Dmain', torch.tensor(7), 7)
    monitor.record('Dmain', torch.tensor(7), 7)
    with pytest.raises(NonFiniteError, match=r'^every gradient element of Dmain was NaN/Inf in every step of the last '
                                             r'tick, so the network no longer trains; lower') as info:
        monitor.end_tick(flag='--smart-lambda')
    assert info.value.flag == '--smart-lambda'


class _NaNPenalty(LossPlugin):
    """A G penalty that turns NaN (every G gradient element NaN) from step `start` on, for `steps` steps."""
    name = 'nan'

    def __init__(self, start, steps=10 ** 9):
        self.start, self.stop, self.step = start, start + steps, 0

    def G_penalty(self, gen_img, gen_c):
        factor = float('nan') if self.start <= self.step < self.stop else 0.0
        return gen_img.mean(dim=[1, 2, 3]) * factor  # [N]

    def end_of_step(self, cur_nimg, batch_size):
        self.step += 1


def _run(tmp_path, plugin):
    data = make_zip(tmp_path / 'ds.zip', num=8, res=8, seed=1)
    config = tiny_config(data, total_kimg=0.024, kimg_per_tick=0.008, image_snapshot_ticks=None,
                         network_snapshot_ticks=1, plugins=[plugin])
    return training_loop.training_loop(run_dir=str(tmp_path / 'run'), **config)


def test_a_wholly_nonfinite_phase_stops_training_naming_the_last_good_snapshot(tmp_path):
    with pytest.raises(NonFiniteError) as info:
        _run(tmp_path, _NaNPenalty(start=1))  # Step 0 (tick 0, snapshot 000000) is fine; steps 1.. are NaN.
    last = os.path.join(str(tmp_path / 'run'), 'network-snapshot-000000.pkl')
    assert str(info.value) == ('every gradient element of Gmain was NaN/Inf in every step of the last tick, so the '
                               'network no longer trains; lower the loss weights (e.g. --smart-lambda) or the '
                               f'learning rate (at kimg 0.012; the last good snapshot is {last})')
    assert sorted(name for name in os.listdir(tmp_path / 'run') if name.startswith('network')) == [
        'network-snapshot-000000.pkl']


def test_a_partly_nonfinite_tick_is_counted_and_warned_about(tmp_path, capsys):
    result = _run(tmp_path, _NaNPenalty(start=2, steps=1))  # One of tick 1's two Gmain steps is NaN.
    assert result.cur_nimg == 24
    stats = [json.loads(line) for line in (tmp_path / 'run' / 'stats.jsonl').read_text().splitlines()]
    num_G = sum(p.numel() for p in networks.Generator(
        z_dim=16, c_dim=0, w_dim=16, img_resolution=8, img_channels=3, mapping_kwargs=dict(num_layers=2),
        synthesis_kwargs=dict(channel_base=128, channel_max=16)).parameters())
    assert [s['Grad/Gmain/nonfinite']['mean'] * s['Grad/Gmain/nonfinite']['num'] for s in stats] == [0, num_G, 0, 0]
    assert [s['Grad/Dmain/nonfinite']['mean'] for s in stats] == [0, 0, 0, 0]
    assert (f'Warning: {num_G} non-finite gradient element(s) of Gmain replaced by 0 / +-1e5 this tick (1 of 2 '
            f'step(s) wholly non-finite)') in capsys.readouterr().out
