"""Tests for SMaRt's estimator options (smart_plugin/regularizer.py): K draws (unbiased, variance 1 / K), antithetic
pairs, grad 'full' vs 'sds' against closed forms and autograd, per-sample lambda, generators, the toy's tiling, the
diagnostics (SMaRt/grad_norm, Loss/G/grad_norm) and that the defaults reproduce the single-draw estimator bit for bit.
The score source is the closed-form Gaussian (smart_plugin/gaussian.py), so every expectation is known."""

import dataclasses
import re
import types

import pytest
import torch

from smart_plugin import GaussianDenoiser, SMaRt, SMaRtOptions, draw_noise, score_matching_loss
from tiny_datasets import make_zip
from torch_utils import training_stats
from training import train_state, training_loop

MU = torch.tensor([[[0.3, -0.2], [0.0, 0.5]]], dtype=torch.float64)     # [1, 2, 2]
VAR = torch.tensor([[[0.04, 0.25], [0.1, 0.01]]], dtype=torch.float64)  # [1, 2, 2]
NUM = 20000  # Independent estimates per setting in the variance tests (a batch of copies of one point).


def make(denoiser=None, rank=1, **kwargs):
    """A SMaRt plugin after setup() (silent) with the Gaussian of MU, VAR; lambda 0.5 unless given."""
    kwargs.setdefault('lam', 0.5)
    plugin = SMaRt(SMaRtOptions(**kwargs), denoiser or GaussianDenoiser(MU, VAR))
    net = plugin.denoiser
    G = types.SimpleNamespace(img_resolution=net.img_resolution, img_channels=net.img_channels, c_dim=0)
    plugin.setup(G=G, D=None, training_set=None, device=torch.device('cpu'), rank=rank, num_gpus=1)
    return plugin


def points(N=4, seed=0, offset=0.0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn([N, 1, 2, 2], generator=gen, dtype=torch.float64) * 0.3 + MU + offset).requires_grad_(True)


def copies(offset, N=NUM):
    """N copies of one point at MU + offset (+ a fixed perturbation): N independent estimates of the same value."""
    return points(N=1, seed=3, offset=offset).detach().repeat(N, 1, 1, 1).requires_grad_(True)


def penalty_and_grad(plugin, x, seed):
    torch.manual_seed(seed)
    x = x.detach().requires_grad_(True)
    penalty = plugin.G_penalty(x, x.new_zeros([x.shape[0], 0]))
    (grad,) = torch.autograd.grad(penalty.sum(), x)
    return penalty.detach(), grad


def single_draw_reference(plugin, x):
    """The single-draw estimator as it was before the estimator options: randint [b], randn_like, loss * lambda."""
    opts = plugin.options
    t = torch.randint(plugin.t_lo, plugin.t_hi + 1, [x.shape[0]], device=x.device)  # The band resolved at setup.
    sigma = plugin.sigma_grid[t].to(x.dtype)
    eps = torch.randn_like(x)
    return score_matching_loss(plugin.denoiser, x, sigma, eps, None, opts.param) * opts.lam


def closed_form(plugin, x, t, eps, grad):
    """Per-draw penalty [K b] and gradient [K b, ...] in x of the Gaussian: r = D(x + s e) - x
    = (a - 1)(x - mu) + a s e, a = var / (var + s^2); full: d r / d x = a - 1; sds: D constant, d r / d x = -1."""
    opts = plugin.options
    s = torch.from_numpy(plugin.schedule.sigma_grid)[t].float().double().reshape(-1, 1, 1, 1)  # float32, as D's input.
    a = VAR / (VAR + s**2)
    r = (a - 1) * (x - MU) + a * s * eps
    weight = 1 / s**2 if opts.param == 'eps' else torch.ones_like(s)
    dr = (a - 1) if grad == 'full' else -torch.ones_like(a)
    return opts.lam * (weight * r**2).flatten(1).mean(1), opts.lam * weight * 2 * r * dr / 4


# Defaults: the paper's estimator, bit for bit.

@pytest.mark.parametrize('channels_last', [False, True])
def test_defaults_reproduce_the_single_draw_estimator_bit_for_bit(channels_last):
    mu, var = torch.rand([3, 4, 4], dtype=torch.float64) - 0.5, torch.rand([3, 4, 4], dtype=torch.float64) + 0.05
    plugin = make(GaussianDenoiser(mu, var), schedule='ddpm-linear', t_lo=20, t_hi=200)
    x = torch.randn([5, 3, 4, 4], dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    results = []
    for compute in (lambda x: plugin.G_penalty(x, x.new_zeros([5, 0])), lambda x: single_draw_reference(plugin, x)):
        torch.manual_seed(7)
        leaf = x.clone().requires_grad_(True)
        penalty = compute(leaf)
        penalty.sum().backward()
        results.append((penalty.detach(), leaf.grad, torch.get_rng_state()))
    (new, new_grad, new_rng), (old, old_grad, old_rng) = results
    assert torch.equal(new, old) and torch.equal(new_grad, old_grad) and torch.equal(new_rng, old_rng)


def test_draws_equal_the_toys_tiled_batch_bit_for_bit():
    g = points(N=6)
    tiled = make(lam=0.3, param='x0')
    torch.manual_seed(2)
    expected = tiled.G_penalty(g.repeat(4, 1, 1, 1), torch.zeros([24, 0])).reshape(4, 6).mean(dim=0)
    torch.manual_seed(2)
    assert torch.equal(make(lam=0.3, param='x0', draws=4).G_penalty(g, torch.zeros([6, 0])), expected)


# K draws: closed form, unbiased, variance 1 / K.

@pytest.mark.parametrize('param, grad, antithetic', [('eps', 'full', False), ('x0', 'full', True),
                                                     ('eps', 'sds', False), ('x0', 'sds', True)])
def test_k_draws_match_the_closed_form(param, grad, antithetic):
    plugin = make(param=param, grad=grad, draws=4, antithetic=antithetic, schedule='ddpm-linear', t_lo=20, t_hi=400)
    g = points(N=3)
    penalty, g_grad = penalty_and_grad(plugin, g, seed=11)
    torch.manual_seed(11)  # Replay: t [m b], eps [m b, ...] with m = 2 antithetic pairs or 4 independent draws.
    m = 2 if antithetic else 4
    t, eps = torch.randint(20, 401, [m * 3]), torch.randn([m * 3, 1, 2, 2], dtype=torch.float64)
    if antithetic:
        t, eps = torch.cat([t, t]), torch.cat([eps, -eps])
    per_draw, per_draw_grad = closed_form(plugin, g.detach().repeat(4, 1, 1, 1), t, eps, grad)
    torch.testing.assert_close(penalty, per_draw.reshape(4, 3).mean(0), rtol=1e-10, atol=0)
    torch.testing.assert_close(g_grad, per_draw_grad.reshape(4, 3, 1, 2, 2).mean(0), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize('param, offset', [('eps', 0.0), ('x0', 1.0)])
def test_k_draw_mean_is_unbiased_and_its_variance_falls_as_one_over_k(param, offset):
    x = copies(offset)
    results = {K: penalty_and_grad(make(param=param, draws=K, schedule='ddpm-linear', t_lo=10, t_hi=300), x, seed=K)
               for K in (1, 4, 16)}
    mean = {K: p.mean().item() for K, (p, _) in results.items()}
    var = {K: p.var().item() for K, (p, _) in results.items()}
    grad_var = {K: g.var(0).sum().item() for K, (_, g) in results.items()}
    for K in (4, 16):
        standard_error = ((var[1] + var[K]) / NUM) ** 0.5
        assert abs(mean[K] - mean[1]) < 3 * standard_error, (K, mean, standard_error)
        assert var[1] / var[K] == pytest.approx(K, rel=0.25), (K, var)
        assert grad_var[1] / grad_var[K] == pytest.approx(K, rel=0.25), (K, grad_var)


@pytest.mark.parametrize('K', [2, 4])
@pytest.mark.parametrize('offset', [0.0, 1.0])
def test_antithetic_pairs_lower_the_gradient_variance_at_equal_k(K, offset):
    # The paper's regime: eps form, small sigma (Karras t 20..60). Within a pair the noise term of the gradient,
    # linear in eps for the Gaussian, cancels; what is left comes from t (shared by a pair) alone.
    x = copies(offset)
    kwargs = dict(param='eps', draws=K, t_lo=20, t_hi=60)
    independent, antithetic = (penalty_and_grad(make(antithetic=a, **kwargs), x, seed=K)[1].var(0).sum().item()
                               for a in (False, True))
    assert antithetic < 0.2 * independent, (independent, antithetic)
    mean_independent, mean_antithetic = (penalty_and_grad(make(antithetic=a, **kwargs), x, seed=5)[0].mean().item()
                                         for a in (False, True))
    assert mean_antithetic == pytest.approx(mean_independent, rel=0.05)  # Same expectation (loose: noisy values).


# grad 'sds'.

class Detached(torch.nn.Module):
    """The denoiser's output detached from the graph: autograd then gives the score-distillation gradient."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.img_resolution, self.img_channels, self.label_dim = net.img_resolution, net.img_channels, 0
        self.sigma_min, self.sigma_max = net.sigma_min, net.sigma_max

    def forward(self, x, sigma, labels=None):
        return self.net(x, sigma, labels).detach()


@pytest.mark.parametrize('param', ['eps', 'x0'])
def test_sds_gradient_equals_autograd_with_the_denoiser_detached(param):
    kwargs = dict(param=param, draws=2, lam=0.7, t_lo=10, t_hi=60)
    g = points(N=5, offset=0.4)
    sds, sds_grad = penalty_and_grad(make(grad='sds', **kwargs), g, seed=4)
    reference, reference_grad = penalty_and_grad(make(Detached(GaussianDenoiser(MU, VAR)), **kwargs), g, seed=4)
    assert torch.equal(sds, reference) and torch.equal(sds_grad, reference_grad)
    full, full_grad = penalty_and_grad(make(**kwargs), g, seed=4)
    assert torch.equal(sds, full) and not torch.allclose(sds_grad, full_grad)  # Same value, other gradient.


def test_sds_gradient_is_lambda_w_sigma_times_x0_minus_D():
    plugin = make(grad='sds', lam=0.7, t_lo=10, t_hi=60)
    g = points(N=5, offset=0.4)
    _, grad = penalty_and_grad(plugin, g, seed=8)
    torch.manual_seed(8)
    t, eps = draw_noise(g, 10, 60)
    sigma = plugin.sigma_grid[t].double().reshape(-1, 1, 1, 1)
    denoised = plugin.denoiser(g.detach() + sigma * eps, sigma.reshape(-1))
    expected = 0.7 / sigma**2 * (g.detach() - denoised) * (2 / 4)  # 2 / CHW from the mean of squares.
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=0)
    # For the Gaussian the full gradient is the sds one times (1 - a) per pixel (the denoiser Jacobian a = var / ...).
    _, full_grad = penalty_and_grad(make(lam=0.7, t_lo=10, t_hi=60), g, seed=8)
    torch.testing.assert_close(full_grad, grad * (1 - VAR / (VAR + sigma**2)), rtol=1e-9, atol=1e-14)


def test_sds_runs_no_backward_through_the_denoiser():
    class Counting(GaussianDenoiser):
        outputs = []

        def forward(self, x, sigma, labels=None):
            out = super().forward(x, sigma, labels)
            Counting.outputs.append(out)
            return out

    penalty = make(Counting(MU, VAR), grad='sds').G_penalty(points(), torch.zeros([4, 0]))
    assert penalty.requires_grad and not Counting.outputs[-1].requires_grad
    make(Counting(MU, VAR)).G_penalty(points(), torch.zeros([4, 0]))
    assert Counting.outputs[-1].requires_grad


# Per-sample lambda, generators, layouts.

def test_per_sample_lambda_and_batch_cap():
    g = points(N=4)
    lam = torch.tensor([0.0, 0.5, 2.0, 1.0], dtype=torch.float64)
    torch.manual_seed(3)
    unit = make(lam=1.0, draws=2).G_penalty(g, torch.zeros([4, 0]))
    torch.manual_seed(3)
    weighted = make(lam=1.0, draws=2).G_penalty(g, torch.zeros([4, 0]), lam=lam)
    torch.testing.assert_close(weighted, unit * lam, rtol=1e-12, atol=0)
    torch.manual_seed(3)
    capped = make(lam=1.0, draws=2, batch=2).G_penalty(g, torch.zeros([4, 0]), lam=lam)
    torch.manual_seed(3)
    head = make(lam=1.0, draws=2).G_penalty(g[:2], torch.zeros([2, 0]))
    torch.testing.assert_close(capped, torch.cat([head * lam[:2] * 2, torch.zeros(2, dtype=torch.float64)]),
                               rtol=1e-12, atol=0)


def test_generator_draws_leave_the_global_rng_alone():
    g, c = points(), torch.zeros([4, 0])
    plugin = make(draws=4, antithetic=True)
    state = torch.get_rng_state()
    with_generator = plugin.G_penalty(g, c, generator=torch.Generator().manual_seed(21))
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(21)  # On the CPU a seeded generator and the seeded global RNG give the same stream.
    torch.testing.assert_close(plugin.G_penalty(g, c), with_generator, rtol=0, atol=0)


def test_draw_noise_layout():
    x0 = torch.zeros([3, 1, 2, 2])
    t, eps = draw_noise(x0, 5, 9, draws=6, antithetic=True, generator=torch.Generator().manual_seed(0))
    assert t.shape == (18,) and eps.shape == (18, 1, 2, 2) and 5 <= int(t.min()) and int(t.max()) <= 9
    assert torch.equal(t[:9], t[9:]) and torch.equal(eps[:9], -eps[9:])  # Draw k + K / 2 is (t, -eps) of draw k.
    t, eps = draw_noise(x0, 5, 9, draws=2, generator=torch.Generator().manual_seed(0))
    assert t.shape == (6,) and not torch.equal(eps[:3], -eps[3:])


def test_penalty_shape_errors():
    plugin = make()
    with pytest.raises(ValueError, match=re.escape('t has shape [5] and eps [5, 1, 2, 2]; expected [K * 2] and '
                                                   '[K * 2, 1, 2, 2] for x0 of shape [2, 1, 2, 2]')):
        plugin.penalty(torch.zeros([2, 1, 2, 2]), torch.zeros(5, dtype=torch.long), torch.zeros([5, 1, 2, 2]))


# Statistics, diagnostics and the start-up line.

def test_reports_k_draw_loss_per_sample_and_every_sigma():
    collector = training_stats.Collector(regex='SMaRt/.*')
    penalty = make(lam=2.0, draws=4).G_penalty(points(), torch.zeros([4, 0]))
    collector.update()
    assert collector.num('SMaRt/loss') == 4 and collector.num('SMaRt/sigma') == 16
    assert collector.mean('SMaRt/loss') == pytest.approx(penalty.mean().item() / 2, rel=1e-12)
    assert 'SMaRt/grad_norm' not in collector.names()


def test_diagnostics_report_the_penalty_gradient_norm_and_change_nothing():
    g = points(N=4, offset=0.5)
    collector = training_stats.Collector(regex='SMaRt/grad_norm')
    penalty, grad = penalty_and_grad(make(draws=2, diagnostics=True), g, seed=6)
    collector.update()
    assert collector.num('SMaRt/grad_norm') == 4
    assert collector.mean('SMaRt/grad_norm') == pytest.approx(grad.flatten(1).norm(dim=1).mean().item(), rel=1e-12)
    quiet, quiet_grad = penalty_and_grad(make(draws=2), g, seed=6)
    assert torch.equal(penalty, quiet) and torch.equal(grad, quiet_grad)


def _tiny_config(tmp_path):
    data = make_zip(tmp_path / 'tiny.zip', num=8, res=8, seed=1)
    return dict(training_set_kwargs=dict(class_name='training.dataset.ImageFolderDataset', path=data),
                G_kwargs=dict(z_dim=8, w_dim=8, mapping_kwargs=dict(num_layers=2),
                              synthesis_kwargs=dict(channel_base=64, channel_max=8)),
                D_kwargs=dict(channel_base=64, channel_max=8, epilogue_kwargs=dict(mbstd_group_size=2)),
                G_opt_kwargs=dict(lr=0.0025, betas=[0, 0.99]), D_opt_kwargs=dict(lr=0.0025, betas=[0, 0.99]),
                loss_kwargs=dict(r1_gamma=1.0), batch_size=4, batch_gpu=4, device='cpu', random_seed=3)


def test_lambda_zero_with_every_estimator_option_is_bit_identical_to_no_plugin(tmp_path):
    config = _tiny_config(tmp_path)
    off = SMaRt(SMaRtOptions(lam=0.0, freq=1, draws=4, antithetic=True, grad='sds', diagnostics=True))
    runs = []
    for plugins in ([], [off]):
        state = train_state.setup_training(**config, plugins=plugins, log=lambda *args: None)
        for _ in range(2):
            training_loop.training_step(state)
        runs.append({f'{label}.{name}': t.detach().clone() for label, module in (('G', state.G), ('D', state.D))
                     for name, t in module.state_dict().items()} | {'rng': torch.get_rng_state()})
    assert runs[0].keys() == runs[1].keys() and all(torch.equal(runs[0][key], runs[1][key]) for key in runs[0])


def test_training_step_with_diagnostics_is_bit_identical_and_reports_both_norms(tmp_path):
    config = _tiny_config(tmp_path)
    options = SMaRtOptions(lam=0.5, freq=2, draws=2, dpm='gaussian')
    runs = []
    for diagnostics in (False, True):
        collector = training_stats.Collector(regex='SMaRt/grad_norm|Loss/G/grad_norm', keep_previous=False)
        plugin = SMaRt(dataclasses.replace(options, diagnostics=diagnostics))
        state = train_state.setup_training(**config, plugins=[plugin], log=lambda *args: None)
        norms = []
        for _ in range(3):  # SMaRt runs on steps 0 and 2.
            training_loop.training_step(state)
            collector.update()
            norms.append({name: collector.num(name) for name in collector.names()})
        runs.append(({name: p.detach().clone() for name, p in state.G.named_parameters()}, norms))
    (quiet, quiet_norms), (loud, loud_norms) = runs
    assert quiet.keys() == loud.keys() and all(torch.equal(quiet[name], loud[name]) for name in quiet)
    assert quiet_norms == [{}, {}, {}]
    assert loud_norms == [{'Loss/G/grad_norm': 4, 'SMaRt/grad_norm': 4}, {}, {'Loss/G/grad_norm': 4,
                                                                              'SMaRt/grad_norm': 4}]


def test_startup_line_shows_the_estimator(capsys):
    make(rank=0, draws=4, antithetic=True, grad='sds', diagnostics=True, t_lo=40, t_hi=60, batch=2)
    assert capsys.readouterr().out.startswith('SMaRt: lambda 0.5 (eps form), every 8 steps, t 40..60 on karras-1000 -> '
                                       "sigma 0.005063..0.007721 (schedule not given: the score source's own), score "
                                       'source GaussianDenoiser (given), 4 antithetic '
                                       'draws per sample, grad sds, diagnostics on, first 2 samples per round\n'
                                       'WARNING: SMaRt: the sigma band ends at 0.007721, below one grey level')  # 2/255
