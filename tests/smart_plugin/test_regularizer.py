"""Tests for smart_plugin/regularizer.py: SMaRt's penalty and gradient against the Gaussian closed form, gating,
label passing, set-up (schedule, checks, start-up line) and state round trip."""

import pickle
import re
import types
import warnings

import pytest
import torch

import edm_tiny_nets
from edm_bridge import edm_networks, schedules
from edm_bridge.registry import MODELS
from smart_plugin import GaussianDenoiser, OptionError, SMaRt, SMaRtOptions, resolve_schedule
from torch_utils import training_stats
from training.networks import Generator

MU = torch.tensor([[[0.3, -0.2], [0.0, 0.5]]], dtype=torch.float64)     # [1, 2, 2]
VAR = torch.tensor([[[0.04, 0.25], [0.1, 0.01]]], dtype=torch.float64)  # [1, 2, 2]


def fake_G(resolution=2, channels=1, c_dim=0):
    return types.SimpleNamespace(img_resolution=resolution, img_channels=channels, c_dim=c_dim)


GIVEN = 'the float64 Gaussian of MU, VAR'


def make(denoiser=GIVEN, G=None, training_set=None, **kwargs):
    """A SMaRt plugin after setup() on the CPU (default: lambda 0.5, the Gaussian of MU, VAR; None = from dpm)."""
    kwargs.setdefault('lam', 0.5)
    plugin = SMaRt(SMaRtOptions(**kwargs), GaussianDenoiser(MU, VAR) if denoiser is GIVEN else denoiser)
    plugin.setup(G=G or fake_G(), D=None, training_set=training_set, device=torch.device('cpu'), rank=0, num_gpus=1)
    return plugin


def gen_batch(N=4, seed=0, offset=0.0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn([N, 1, 2, 2], generator=gen, dtype=torch.float64) * 0.3 + offset).requires_grad_(True)


class Recorder(torch.nn.Module):
    """A Denoiser stub (identity) that records the labels it receives."""

    def __init__(self, resolution=2, channels=1, label_dim=0, sigma_min=0.0, sigma_max=float('inf')):
        super().__init__()
        self.img_resolution, self.img_channels, self.label_dim = resolution, channels, label_dim
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        self.seen = []

    def forward(self, x, sigma, labels=None):
        self.seen.append(labels)
        return x


@pytest.mark.parametrize('param, schedule', [('eps', None), ('x0', None), ('eps', 'ddpm-linear'),
                                             ('x0', 'ddpm-cosine')])
def test_penalty_and_gradient_match_closed_form(param, schedule):
    plugin = make(param=param, schedule=schedule, t_lo=20, t_hi=60)
    g = gen_batch()
    torch.manual_seed(123)
    penalty = plugin.G_penalty(g, torch.zeros([4, 0]))
    penalty.sum().backward()

    # Replay the draws (t, then eps) and differentiate ||D(g + s e) - g||^2 by hand: D(x) = mu + a (x - mu),
    # a = var / (var + s^2), so r = D(g + s e) - g = (a - 1)(g - mu) + a s e and d r / d g = a - 1.
    torch.manual_seed(123)
    t = torch.randint(20, 61, [4])
    sigma_grid = resolve_schedule(schedule, plugin.denoiser, None).sigma_grid
    s = torch.from_numpy(sigma_grid)[t].float().double().reshape(-1, 1, 1, 1)  # float32 like the denoiser's input.
    e = torch.randn_like(g)
    a = VAR / (VAR + s**2)
    r = (a - 1) * (g.detach() - MU) + a * s * e
    weight = 1 / s**2 if param == 'eps' else torch.ones_like(s)
    expected = 0.5 * (weight * r**2).flatten(1).mean(1)
    expected_grad = 0.5 * weight * 2 * r * (a - 1) / 4
    torch.testing.assert_close(penalty.detach(), expected, rtol=1e-10, atol=0)
    torch.testing.assert_close(g.grad, expected_grad, rtol=1e-10, atol=1e-12)


def test_eps_form_equals_noise_prediction_error():
    plugin = make(param='eps', lam=1.0, schedule='ddpm-linear', t_lo=25, t_hi=35)
    g = gen_batch().detach()
    torch.manual_seed(5)
    penalty = plugin.G_penalty(g, torch.zeros([4, 0]))
    torch.manual_seed(5)
    t = torch.randint(25, 36, [4])
    s = torch.from_numpy(schedules.get_schedule('ddpm-linear').sigma_grid)[t].float().double().reshape(-1, 1, 1, 1)
    e = torch.randn_like(g)
    x_hat = g + s * e
    eps_pred = (x_hat - plugin.denoiser(x_hat, s.reshape(-1))) / s
    torch.testing.assert_close(penalty, (eps_pred - e).square().flatten(1).mean(1), rtol=1e-9, atol=0)


def test_gating_by_freq_consumes_no_rng():
    plugin = make(freq=3)
    g, c = gen_batch(), torch.zeros([4, 0])
    active = []
    for step in range(7):
        state = torch.get_rng_state()
        out = plugin.G_penalty(g, c)
        active.append(out is not None)
        if out is None:
            assert torch.equal(torch.get_rng_state(), state)
        plugin.end_of_step(cur_nimg=4 * (step + 1), batch_size=4)
    assert active == [True, False, False, True, False, False, True]


def test_gating_by_start_kimg_and_lambda_zero(capsys):
    plugin = make(start_kimg=0.008, freq=1)
    g, c = gen_batch(), torch.zeros([4, 0])
    assert plugin.G_penalty(g, c) is None
    plugin.end_of_step(cur_nimg=4, batch_size=4)
    assert plugin.G_penalty(g, c) is None
    plugin.end_of_step(cur_nimg=8, batch_size=4)
    assert plugin.G_penalty(g, c) is not None
    capsys.readouterr()
    off = make(lam=0)
    assert capsys.readouterr().out == 'SMaRt: off (lambda 0)\n'
    state = torch.get_rng_state()
    assert off.G_penalty(g, c) is None and torch.equal(torch.get_rng_state(), state)


def test_sgd_on_free_points_moves_them_toward_the_data_mean():
    # Mid-chain t (sigma ~ 1 > the data std) so that the expected gradient 2 (1 - a)^2 (g - mu) / 4 per point is
    # similar for every pixel; at small sigma the pull is (1 - a)^2 ~ sigma^4 / var^2 weak (needs many steps).
    plugin = make(lam=1.0, param='x0', schedule='ddpm-linear', t_lo=200, t_hi=300, freq=1)
    torch.manual_seed(0)
    points = gen_batch(N=16, offset=1.5)
    opt = torch.optim.SGD([points], lr=1.0)
    distance = lambda: (points.detach() - MU).flatten(1).norm(dim=1).mean().item()
    distances = [distance()]
    for _ in range(20):
        opt.zero_grad()
        plugin.G_penalty(points, torch.zeros([16, 0])).sum().backward()
        opt.step()
        distances.append(distance())
    assert distances[0] > 2.5 and distances[5] < 0.5 * distances[0] and distances[-1] < 0.2 * distances[0]


def test_batch_option_scores_the_first_samples_and_keeps_the_mean():
    plugin = make(batch=2, lam=0.5, param='x0')
    g = gen_batch().detach()
    torch.manual_seed(9)
    penalty = plugin.G_penalty(g, torch.zeros([4, 0]))
    full = make(lam=0.5, param='x0')
    torch.manual_seed(9)
    reference = full.G_penalty(g[:2], torch.zeros([2, 0]))
    assert penalty.shape == (4,) and torch.equal(penalty[2:], torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(penalty[:2], reference * 2, rtol=1e-12, atol=0)


def test_conditional_labels_reach_a_conditional_denoiser_only(capsys):
    c = torch.eye(3, dtype=torch.float64)[[0, 2, 1, 1]]
    cond = Recorder(label_dim=3)
    make(cond, G=fake_G(c_dim=3)).G_penalty(gen_batch(), c)
    assert torch.equal(cond.seen[0], c.float())
    uncond = Recorder(label_dim=0)
    capsys.readouterr()
    make(uncond, G=fake_G(c_dim=3)).G_penalty(gen_batch(), c)
    assert uncond.seen == [None]
    assert capsys.readouterr().out.splitlines()[0].endswith(
        '; note: the denoiser is unconditional and the generator conditional on 3 classes: labels are not passed to '
        'the denoiser, so the score regularises the class-marginal distribution')


def test_reports_loss_and_sigma():
    collector = training_stats.Collector(regex='SMaRt/.*')
    plugin = make(lam=2.0, schedule='karras', t_lo=40, t_hi=60)
    torch.manual_seed(1)
    penalty = plugin.G_penalty(gen_batch(), torch.zeros([4, 0]))
    collector.update()
    assert collector.num('SMaRt/loss') == 4 and collector.num('SMaRt/sigma') == 4
    assert collector.mean('SMaRt/loss') == pytest.approx(penalty.mean().item() / 2, rel=1e-12)
    karras = schedules.get_schedule('karras')
    assert karras.sigma_hat(40) - 1e-9 < collector.mean('SMaRt/sigma') < karras.sigma_hat(60) + 1e-9


def test_startup_line(capsys):
    make(lam=0.01, t_lo=40, t_hi=60)
    assert capsys.readouterr().out.startswith('SMaRt: lambda 0.01 (eps form), every 8 steps, t 40..60 on karras-1000 '
                                              "-> sigma 0.005063..0.007721 (schedule not given: the score source's "
                                              'own), score source GaussianDenoiser (given), 1 draw per sample, grad '
                                              'full\nWARNING: SMaRt: the sigma band ends at 0.007721, below one grey '
                                              'level')  # Karras-1000 t 60 < 2/255.
    images = torch.randint(0, 256, [6, 1, 2, 2], generator=torch.Generator().manual_seed(0)).to(torch.uint8).numpy()
    dataset = [(image, None) for image in images]
    plugin = SMaRt(SMaRtOptions(lam=0.1, param='x0', freq=4, t_lo=25, t_hi=35, schedule='ddpm-linear', batch=8,
                                start_kimg=100))
    plugin.setup(G=fake_G(), D=None, training_set=dataset, device=torch.device('cpu'), rank=0, num_gpus=1)
    assert capsys.readouterr().out == ('SMaRt: lambda 0.1 (x0 form), every 4 steps, t 25..35 on ddpm-linear-1000 -> '
                                       'sigma 0.09548..0.1276, score source gaussian (per-pixel fit to 6 images), '
                                       '1 draw per sample, grad full, first 8 samples per round, from 100 kimg\n')
    torch.testing.assert_close(plugin.denoiser.net.mu, torch.from_numpy(images / 127.5 - 1).float().mean(0))
    silent = SMaRt(SMaRtOptions(lam=1.0), GaussianDenoiser(MU, VAR))
    silent.setup(G=fake_G(), D=None, training_set=None, device=torch.device('cpu'), rank=1, num_gpus=2)
    assert capsys.readouterr().out == ''


def test_schedule_resolution():
    gaussian = GaussianDenoiser(MU, VAR)
    assert resolve_schedule(None, gaussian, None).name == 'karras'
    assert resolve_schedule(None, gaussian, MODELS['adm-imagenet128-cond']).name == 'ddpm-linear'
    adm_like = Recorder()
    adm_like.schedule = schedules.get_schedule('ddpm-cosine', num_steps=500)
    assert resolve_schedule(None, adm_like, MODELS['adm-imagenet128-cond']) is adm_like.schedule  # Native wins.
    assert resolve_schedule('vp:100', gaussian, MODELS['edm-cifar10-32x32-cond-vp']).num_steps == 100


def test_setup_errors():
    with pytest.raises(ValueError, match=re.escape('denoiser is 2x2 but the generator outputs 8x8; use a 8x8 model')):
        make(G=fake_G(resolution=8))
    with pytest.raises(OptionError, match=re.escape('SMaRtOptions.t_hi is 5; expected an integer < 3, the number of '
                                                    'steps of schedule list')) as info:
        make(schedule='list:0.1,0.2,0.3', t_lo=0, t_hi=5)
    assert info.value.field == 't_hi'
    with pytest.raises(TypeError, match=re.escape('options is dict; expected smart_plugin.SMaRtOptions')):
        SMaRt({'lam': 1})
    with pytest.raises(ValueError, match=re.escape('denoiser is 32x32 but the generator outputs 8x8')):
        make(None, G=fake_G(resolution=8, channels=3), dpm='edm-cifar10-32x32-cond-vp')  # Before any download.
    with pytest.raises(OptionError, match=re.escape("score source 'missing/model.pkl': model file 'missing/model.pkl' "
                                                    "does not exist")) as info:
        make(None, dpm='missing/model.pkl')
    assert info.value.field == 'dpm' and isinstance(info.value.__cause__, FileNotFoundError)  # train.py: --smart-dpm.


def test_sigma_band_warning():
    with pytest.warns(UserWarning, match=re.escape("sigma band [0.003625, 0.004538] goes below the denoiser's "
                                                   'sigma_min 0.01')):
        make(Recorder(sigma_min=0.01), t_lo=25, t_hi=35)  # Karras-1000, the Recorder's own (no schedule).
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        make(Recorder(sigma_min=0.001), t_lo=25, t_hi=35)


def test_state_dict_round_trip():
    plugin = make(freq=4, start_kimg=0.01)
    for step in range(5):
        plugin.end_of_step(cur_nimg=4 * (step + 1), batch_size=4)
    assert plugin.state_dict() == {'step': 5, 'cur_nimg': 20}
    resumed = make(freq=4, start_kimg=0.01)
    resumed.load_state_dict(plugin.state_dict())
    g, c = gen_batch(), torch.zeros([4, 0])
    for _ in range(6):
        assert (plugin.G_penalty(g, c) is None) == (resumed.G_penalty(g, c) is None)
        plugin.end_of_step(plugin.cur_nimg + 4, 4)
        resumed.end_of_step(resumed.cur_nimg + 4, 4)
    with pytest.raises(ValueError, match=re.escape("SMaRt state lacks ['cur_nimg']")):
        resumed.load_state_dict({'step': 1})


def test_edm_pickle_score_source_is_frozen_and_gets_labels(tmp_path, capsys):
    net = edm_tiny_nets.tiny(edm_networks.EDMPrecond, res=8, label_dim=4)
    path = tmp_path / 'tiny-edm.pkl'
    path.write_bytes(pickle.dumps(dict(ema=net, loss_fn=None, augment_pipe=None, dataset_kwargs={})))
    with pytest.warns(UserWarning, match='rarely sees'):  # Karras t 25..35 lies below sigma 0.01.
        plugin = make(None, G=fake_G(resolution=8, channels=3, c_dim=4), dpm=str(path), lam=0.1, t_lo=25, t_hi=35)
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith(f"on karras-1000 -> sigma 0.003625..0.004538 (schedule not given: the score source's own), "
                           f'score source {path}, 1 draw per sample, grad full')
    assert out[1].startswith('WARNING: SMaRt: the sigma band ends at 0.004538')
    g = torch.randn([2, 3, 8, 8], generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    c = torch.eye(4)[[1, 3]]
    torch.manual_seed(0)
    penalty = plugin.G_penalty(g, c)
    penalty.sum().backward()
    assert penalty.shape == (2,) and bool(torch.isfinite(penalty).all())
    assert g.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in plugin.denoiser.parameters())
    torch.manual_seed(0)
    other_labels = plugin.G_penalty(g.detach(), torch.eye(4)[[0, 2]])
    assert not torch.allclose(other_labels, penalty.detach())  # The labels reach the conditional network.


@pytest.mark.parametrize('grad', ['full', 'sds'])
def test_bf16_denoiser_is_close_to_fp32_and_reported(grad, capsys):
    # --smart-precision bf16 autocasts the denoiser only: loss and gradient within bf16 round-off of fp32, not equal
    # (the autocast did run), and float32 out; fp32 (the default) runs without any autocast context.
    net = edm_tiny_nets.randomize(edm_networks.EDMPrecond(8, 3, **edm_tiny_nets.SONG).eval(), scale=0.1)
    plugins = {p: make(net, G=fake_G(resolution=8, channels=3), lam=1.0, t_lo=400, t_hi=400, grad=grad,
                       schedule='karras', precision=p) for p in ('fp32', 'bf16')}
    assert capsys.readouterr().out.count(', denoiser in bf16 (autocast)') == 1
    values, grads = {}, {}
    for p, plugin in plugins.items():
        g = torch.randn([4, 3, 8, 8], generator=torch.Generator().manual_seed(0)).requires_grad_(True)
        torch.manual_seed(0)
        values[p] = plugin.G_penalty(g, torch.zeros([4, 0]))
        values[p].sum().backward()
        grads[p] = g.grad
    assert values['bf16'].dtype == grads['bf16'].dtype == torch.float32
    for a, b in ((values['bf16'], values['fp32']), (grads['bf16'], grads['fp32'])):
        rel = ((a - b).norm() / b.norm()).item()
        assert 1e-6 < rel < 3e-2, rel


def test_gradient_reaches_a_real_generator():
    torch.manual_seed(0)
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=8, img_channels=1, mapping_kwargs=dict(num_layers=2),
                  synthesis_kwargs=dict(channel_base=64, channel_max=16, num_fp16_res=0))
    denoiser = GaussianDenoiser(torch.zeros(1, 8, 8), torch.full([1, 8, 8], 0.1))
    plugin = make(denoiser, G=G, lam=1.0, schedule='ddpm-linear')
    img = G(torch.randn([4, 8]), torch.zeros([4, 0]))
    plugin.G_penalty(img, torch.zeros([4, 0])).mean().backward()
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in G.parameters())
    assert G.synthesis.b8.torgb.weight.grad.abs().sum() > 0
    assert all(not b.requires_grad for b in plugin.denoiser.buffers())


class NaNForSome(torch.nn.Module):
    """A denoiser that is the identity except for the samples whose first pixel is > 0, which get NaN (through a
    non-linearity, so that a plain masked loss would still send NaN gradients back to G)."""

    def __init__(self):
        super().__init__()
        self.img_resolution, self.img_channels, self.label_dim = 2, 1, 0
        self.sigma_min, self.sigma_max = 0.0, float('inf')

    def forward(self, x, sigma, labels=None):
        sign = torch.where(x[:, :1, :1, :1] > 0, -1.0, 1.0).to(x.dtype)  # [N, 1, 1, 1], no gradient.
        root = (x.square() + 1).sqrt()
        return 0.5 * x + (sign * (x.square() + 1)).sqrt() - root  # sqrt of a negative: NaN value and gradient.


def test_nonfinite_samples_are_dropped_with_exact_gradient_for_the_rest():
    """Before: one NaN sample made every gradient NaN (the step was lost silently); now it is dropped and counted."""
    x = torch.tensor([[-0.4, 0.1, 0.2, -0.3], [0.5, 0.2, 0.1, 0.0], [-0.2, -0.1, 0.3, 0.4]],
                     dtype=torch.float64).reshape(3, 1, 2, 2).requires_grad_(True)
    collector = training_stats.Collector(regex='SMaRt/.*')
    plugin = make(NaNForSome(), lam=1.0, schedule='karras', t_lo=40, t_hi=60)
    torch.manual_seed(3)
    penalty = plugin.G_penalty(x, torch.zeros([3, 0]))
    penalty.sum().backward()
    collector.update()
    assert collector.num('SMaRt/nonfinite') == 3 and collector.mean('SMaRt/nonfinite') == pytest.approx(1 / 3)
    assert collector.num('SMaRt/loss') == 2
    assert penalty[1].item() == 0 and bool(torch.isfinite(x.grad).all()) and x.grad[1].abs().sum() == 0
    # The finite samples get exactly the gradient they get alone.
    good = x.detach()[[0, 2]].clone().requires_grad_(True)
    torch.manual_seed(3)
    t = torch.randint(40, 61, [3])
    sigma = plugin.sigma_grid[t].double()[[0, 2]].reshape(-1, 1, 1, 1)
    eps = torch.randn([3, 1, 2, 2], dtype=torch.float64)[[0, 2]]
    ref = ((0.5 * (good + sigma * eps) - good).square() / sigma.square()).flatten(1).mean(1)
    ref.sum().backward()
    torch.testing.assert_close(penalty.detach()[[0, 2]], ref.detach(), rtol=1e-12, atol=0)
    torch.testing.assert_close(x.grad[[0, 2]], good.grad, rtol=1e-12, atol=0)


def test_end_of_tick_warns_and_stops_above_the_limit():
    from smart_plugin import regularizer
    from torch_utils.finite import NonFiniteError
    plugin = make(lam=1.0)
    summary = lambda mean, num: {'SMaRt/nonfinite': types.SimpleNamespace(mean=mean, num=num)}  # noqa: E731
    assert plugin.end_of_tick({}) == [] and plugin.end_of_tick(summary(0.0, 64)) == []
    assert plugin.end_of_tick(summary(0.125, 64)) == [
        'Warning: SMaRt: the score source (gaussian) gave NaN/Inf for 8 of 64 SMaRt samples this tick; they were '
        'dropped from the SMaRt term (SMaRt/nonfinite)']
    with pytest.raises(NonFiniteError, match=r'gave NaN/Inf for 32 of 64 SMaRt samples this tick, more than the 25% '
                                             r'allowed') as info:
        plugin.end_of_tick(summary(0.5, 64))
    assert info.value.flag == '--smart-dpm' and regularizer.NONFINITE_LIMIT == 0.25
