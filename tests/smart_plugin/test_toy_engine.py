"""The batched toy engine: a batched run equals the same run alone, Adam equals torch's, branches continue exactly."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from smart_plugin.toy import workers
from smart_plugin.toy.config import METHODS, ToyConfig, arms_of
from smart_plugin.toy.engine import BatchedToy, RunSpec, StackedAdam
from smart_plugin.toy.experiment import ResultWriter, paired, plan_runs

CFG = ToyConfig(batch=32, smart_start=0.0, smart_lam=1.0, eval_every=5, eval_samples=200, num_samples=300, steps=10)


def _train(specs, steps=12, states=None):
    toy = BatchedToy(specs, states)
    for _ in range(steps):
        toy.step()
    return toy


def _params(toy, r):
    return torch.cat([p[r].flatten() for p in toy.G + toy.D])


def test_batched_run_equals_the_same_run_alone():
    specs = [RunSpec(m, s, dataclasses.replace(CFG, lr_G=lr), m) for s in (0, 1) for m in METHODS
             for lr in (1e-3,)] + [RunSpec('smart', 2, dataclasses.replace(CFG, smart_lam=0.1, spacing=1.5), 's')]
    batched = _train(specs)
    for r, spec in enumerate(specs):
        alone = _train([spec])
        torch.testing.assert_close(_params(batched, r), _params(alone, 0), rtol=1e-5, atol=1e-5)
        assert [p.state_dict() for p in batched.runs[r].plugins] == [p.state_dict() for p in alone.runs[0].plugins]
    # Runs differ from each other (seed, method): the batch does not mix them.
    assert not torch.allclose(_params(batched, 0), _params(batched, 1))


def test_diffgan_runs_adapt_to_their_own_discriminator():
    specs = [RunSpec('diffgan', 0, CFG, 'a'), RunSpec('smart_diffgan', 0, CFG, 'b')]
    toy = _train(specs, steps=24)
    p = [toy.runs[r].plugins[0].p for r in range(2)]
    alone = [_train([s], steps=24).runs[0].plugins[0].p for s in specs]
    assert p == alone


def test_disabled_smart_equals_vanilla_bit_for_bit():
    off = dataclasses.replace(CFG, smart_lam=0.0)
    toy = _train([RunSpec('vanilla', 3, off, 'v'), RunSpec('smart', 3, off, 's')])
    assert torch.equal(_params(toy, 0), _params(toy, 1))


def test_stacked_adam_equals_torch_adam():
    torch.manual_seed(0)
    w = torch.randn(2, 3, 4)
    lr = torch.tensor([1e-3, 3e-2])
    mine = [w.clone()]
    opt = StackedAdam(mine, lr, (0.5, 0.999))
    refs = [torch.nn.Parameter(w[r].clone()) for r in range(2)]
    ref_opts = [torch.optim.Adam([refs[r]], lr=float(lr[r]), betas=(0.5, 0.999)) for r in range(2)]
    for step in range(5):
        g = torch.randn(2, 3, 4)
        opt.step([g])
        for r in range(2):
            refs[r].grad = g[r].clone()
            ref_opts[r].step()
    for r in range(2):
        torch.testing.assert_close(mine[0][r], refs[r].detach(), rtol=1e-6, atol=1e-7)


def test_branch_continues_the_state_exactly():
    # Vanilla for 6 steps, exported and continued for 6 more, equals vanilla trained 12 steps straight.
    spec = RunSpec('vanilla', 5, CFG, 'v')
    first = _train([spec], steps=6)
    continued = _train([spec], steps=6, states=[first.export_state(0)])
    straight = _train([spec], steps=12)
    assert torch.equal(_params(continued, 0), _params(straight, 0))
    assert continued.opt_G.t == 12


def test_finetune_lr_applies_after_the_branch_only():
    spec = RunSpec('vanilla', 0, dataclasses.replace(CFG, finetune_lr=0.25), 'v')
    assert float(BatchedToy([spec]).opt_G.lr.flatten()[0]) == pytest.approx(1e-3)
    branched = BatchedToy([spec], states=[_train([spec], steps=1).export_state(0)])
    assert float(branched.opt_G.lr.flatten()[0]) == 0.25 and float(branched.opt_D.lr.flatten()[0]) == 0.25


def test_one_group_needs_one_shape():
    with pytest.raises(ValueError, match=r'^run b seed 0 has .*width.: 64.*; a batched group needs one shape$'):
        BatchedToy([RunSpec('vanilla', 0, CFG, 'a'), RunSpec('vanilla', 0, dataclasses.replace(CFG, width=64), 'b')])


def test_workers_split_runs_without_changing_them():
    specs = plan_runs(dataclasses.replace(CFG, steps=6), [0, 1], arms_of(('vanilla', 'smart')))
    with workers.Progress(24, enabled=False) as bar:
        two = dict((s.label + str(s.seed), r) for s, r in workers.train(specs, 6, bar, workers=2))
        one = dict((s.label + str(s.seed), r) for s, r in workers.train(specs, 6, bar, workers=1))
    assert sorted(two) == sorted(one) == ['smart0', 'smart1', 'vanilla0', 'vanilla1']
    for key in one:
        np.testing.assert_allclose(two[key]['samples'], one[key]['samples'], rtol=1e-5, atol=1e-5)
        assert one[key]['curves']['step'] == [5, 6]
        assert one[key]['curves']['churn'][0] is None and 0 <= one[key]['curves']['churn'][1] <= 1


def test_shards_balance_the_run_costs():
    # Method-major order (as plan_runs gives it): contiguous halves would put every SMaRt run on one worker.
    specs = plan_runs(dataclasses.replace(CFG, smart_start=0.5), [0, 1, 2], arms_of(METHODS))
    costs = [workers.run_cost(s) for s in specs]
    assert costs[:3] == [1.0] * 3 and costs[3:6] == [1.8] * 3 and costs[6:9] == [1.4] * 3
    assert costs[9:] == [pytest.approx(2.2)] * 3
    assert workers.run_cost(RunSpec('smart', 0, dataclasses.replace(CFG, smart_draws=16), 's')) == pytest.approx(2.7)
    shards = workers._shards(specs, 2)
    assert sorted(shards[0] + shards[1]) == list(range(12)) and all(s == sorted(s) for s in shards)
    loads = [sum(costs[i] for i in shard) for shard in shards]
    assert loads == [pytest.approx(9.6), pytest.approx(9.6)] and [len(s) for s in shards] == [6, 6]
    assert workers._shards(specs[:1], 2) == [[0]]    # Never more shards than runs.
    assert workers._shards(specs, 5) and len(workers._shards(specs, 5)) == 5


def test_paired_differences_per_seed():
    def run(hq):
        return {'metrics': {'hq_share': hq}}
    runs = {'vanilla': {0: run(0.1), 1: run(0.2)}, 'smart': {0: run(0.3), 1: run(0.3)},
            'vanilla[smart_lam=1]': {0: run(0.0)}, 'smart[smart_lam=1]': {0: run(0.5), 1: run(0.9)}}
    out = paired(runs)
    assert set(out) == {'smart', 'smart[smart_lam=1]'}
    assert out['smart']['hq_share'] == {'mean': pytest.approx(0.15), 'std': pytest.approx(0.05), 'n': 2}
    assert out['smart[smart_lam=1]']['hq_share'] == {'mean': pytest.approx(0.5), 'std': 0.0, 'n': 1}


def test_results_are_written_as_each_run_finishes(tmp_path):
    header = {'config': dataclasses.asdict(CFG), 'seeds': [0, 1], 'methods': ['vanilla'], 'sweep': None}
    writer = ResultWriter(str(tmp_path), header)
    result = {'samples': np.zeros([3, 2], np.float32), 'metrics': {'hq_share': 0.5}, 'curves': {'step': [1]}}
    writer.add(RunSpec('vanilla', 0, CFG, 'vanilla'), result)
    saved = json.loads((tmp_path / 'results.json').read_text())
    assert list(saved['runs']) == ['vanilla'] and list(saved['runs']['vanilla']) == ['0']
    assert saved['summary']['vanilla']['hq_share'] == {'mean': 0.5, 'std': 0.0}
    writer.add(RunSpec('vanilla', 1, CFG, 'vanilla'), {**result, 'metrics': {'hq_share': 0.7}})
    saved = json.loads((tmp_path / 'results.json').read_text())
    assert saved['summary']['vanilla']['hq_share']['mean'] == pytest.approx(0.6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['results.json', 'samples-vanilla-seed0.npz',
                                                          'samples-vanilla-seed1.npz']


def test_estimator_options_reach_the_one_smart_plugin():
    cfg = dataclasses.replace(CFG, smart_draws=4, smart_antithetic=True, smart_grad='sds')
    toy = BatchedToy([RunSpec('smart', 0, cfg, 'k4'), RunSpec('smart', 0, CFG, 'k1')])
    opts = [toy.runs[r].plugins[0].options for r in range(2)]
    assert [(o.draws, o.antithetic, o.grad) for o in opts] == [(4, True, 'sds'), (1, False, 'full')]
    assert '4 antithetic draws per sample, grad sds' in toy.runs[0].setup_lines
    for _ in range(3):
        toy.step()
    assert not torch.allclose(_params(toy, 0), _params(toy, 1))


def test_exported_states_cross_worker_processes():
    specs = plan_runs(dataclasses.replace(CFG, steps=4), [0, 1], arms_of(('vanilla',)))
    with workers.Progress(8, enabled=False) as bar:
        out = {s.seed: r['state'] for s, r in workers.train(specs, 4, bar, workers=2, export=True, evaluate=False)}
    local = BatchedToy(specs)
    for _ in range(4):
        local.step()
    for r, seed in enumerate((0, 1)):
        torch.testing.assert_close(torch.cat([p.flatten() for p in out[seed]['G']]),
                                   torch.cat([p[r].flatten() for p in local.G]), rtol=1e-5, atol=1e-6)
        assert out[seed]['t'] == 4 and out[seed]['gen'].dtype == torch.uint8
