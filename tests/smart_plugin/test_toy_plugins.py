"""The toy's plugins and its one trainer: SMaRt's penalty in closed form, the pull-only diagnostic on the batched
engine, and no second GAN step anywhere in the toy."""

import ast
from pathlib import Path

import pytest
import torch

from smart_plugin.toy.config import ToyConfig, build_plugins
from smart_plugin.toy.engine import BatchedToy, RunSpec
from smart_plugin.toy.mixture import GridMixture

ROOT = Path(__file__).resolve().parents[2]


def test_penalty_on_centres_matches_closed_form():
    mixture = GridMixture()
    cfg = ToyConfig(smart_lam=0.5, smart_sigma=(0.15, 0.15), smart_start=0.0)  # sigma << spacing: no jumps
    smart = BatchedToy([RunSpec('smart', 0, cfg, 's')]).runs[0].plugins[0]
    on_centres = mixture.centers.float().repeat(40, 1).reshape(-1, 2, 1, 1)         # [1960, 2, 1, 1]
    torch.manual_seed(0)
    penalty = smart.G_penalty(on_centres, on_centres.new_zeros([1960, 0]))          # [1960]
    assert penalty.shape == (1960,)
    # x0 form on a centre: D(mu + sigma eps) - mu = a sigma eps with a = s^2 / (s^2 + sigma^2), so
    # E[lambda * mean_C (a sigma eps)^2] = lambda (a sigma)^2.
    a = 0.05 ** 2 / (0.05 ** 2 + 0.15 ** 2)
    assert penalty.mean().item() == pytest.approx(0.5 * (a * 0.15) ** 2, rel=0.08)


def test_build_plugins_rejects_unknown_method():
    with pytest.raises(ValueError, match=r"^method is 'wgan'; expected one of \['vanilla', 'diffgan', 'smart', "
                                         r"'smart_diffgan'\]$"):
        build_plugins('wgan', ToyConfig(), GridMixture())


def test_pull_only_reports_both_phases_and_moves_G():
    from smart_plugin.toy.pull_only import pull_only
    cfg = ToyConfig(smart_lam=1.0)
    history = pull_only(cfg, seed=0, gan_steps=5, pull_steps=40, num_evals=2, num_samples=500)
    assert [(h['phase'], h['step']) for h in history] == [('gan', 5), ('pull', 20), ('pull', 40)]
    assert history[0]['w1'] != history[-1]['w1']
    assert set(history[0]) == {'phase', 'step', 'hq_share', 'modes', 'modes10', 'kl', 'kl_hq', 'w1', 'energy'}
    with pytest.raises(ValueError, match=r"pull_steps is 0; expected an integer >= 1"):
        pull_only(cfg, seed=0, gan_steps=5, pull_steps=0)


def test_pull_step_moves_G_only_and_without_plugins_nothing():
    cfg = ToyConfig(batch=16, smart_lam=1.0, smart_start=0.0)
    toy = BatchedToy([RunSpec('smart', 0, cfg, 's'), RunSpec('vanilla', 0, cfg, 'v')])
    G0, D0 = [p.detach().clone() for p in toy.G], [p.detach().clone() for p in toy.D]
    toy.pull_step()
    assert all(torch.equal(a, b) for a, b in zip(D0, toy.D))                # D untouched.
    assert not torch.equal(G0[0][0], toy.G[0][0])                            # The SMaRt run's G moved ...
    # ... and the vanilla run's G (no penalty: zero gradient) is where Adam leaves a zero gradient: unchanged.
    assert torch.equal(G0[0][1], toy.G[0][1])


def _calls(path: Path) -> set[str]:
    """Dotted names of the calls in a Python file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            names.add(ast.unparse(node.func))
    return names


def test_one_trainer_left():
    # The toy trains with the batched engine only: no one-run trainer module, no torch.optim, and the GAN loss
    # (softplus of D's logits) is computed in engine.py alone, across the toy package and its speed benchmark.
    toy = ROOT / 'smart_plugin' / 'toy'
    assert not (toy / 'trainer.py').exists() and not (toy / 'models.py').exists()
    files = sorted(toy.glob('*.py')) + [ROOT / 'benchmarks' / 'toy_speed.py']
    with_loss = [p.name for p in files if {'F.softplus', 'torch.nn.functional.softplus'} & _calls(p)]
    assert with_loss == ['engine.py']
    assert [p.name for p in files if any(n.startswith('torch.optim') for n in _calls(p))] == []
