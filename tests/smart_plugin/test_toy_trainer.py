"""The toy trainer uses the image trainer's plugins: disabled plugins == baseline bit for bit; SMaRt's penalty."""

import pytest
import torch

from smart_plugin import DiffGANOptions, DiffusionGAN, SMaRt, SMaRtOptions
from smart_plugin.toy.experiment import ToyConfig, build_plugins
from smart_plugin.toy.mixture import GridMixture, MixtureDenoiser
from smart_plugin.toy.trainer import G_penalty, build_gan, train_step


def _train(plugins, steps=3, seed=0):
    torch.manual_seed(seed)
    gan = build_gan(plugins, 8, 1e-3, 1e-3, (0.5, 0.999), None)
    data = GridMixture().sample(4 * steps, torch.Generator().manual_seed(seed)).reshape(steps, 4, 2, 1, 1)
    for real in data:
        train_step(gan, real)
    return torch.cat([p.flatten() for p in gan.G.parameters()])


def test_disabled_plugins_equal_baseline_bit_for_bit():
    mixture = GridMixture()
    off = [DiffusionGAN(DiffGANOptions(enabled=False)), SMaRt(SMaRtOptions(lam=0.0), MixtureDenoiser(mixture))]
    assert torch.equal(_train([]), _train(off))


def test_smart_changes_training():
    on = build_plugins('smart', ToyConfig(smart_lam=1.0, smart_start=0.0), GridMixture())
    assert not torch.equal(_train([]), _train(on))


def test_penalty_on_centres_matches_closed_form():
    mixture = GridMixture()
    cfg = ToyConfig(smart_lam=0.5, smart_sigma=(0.15, 0.15), smart_start=0.0)  # sigma << spacing: no jumps
    gan = build_gan(build_plugins('smart', cfg, mixture), 8, 1e-3, 1e-3, (0.5, 0.999), None)
    on_centres = mixture.centers.float().repeat(40, 1).reshape(-1, 2, 1, 1)         # [1960, 2, 1, 1]
    torch.manual_seed(0)
    penalty = G_penalty(gan, on_centres)                                            # [1960]
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
