"""StyleGAN2Loss (training.loss): phases and the modules they train, Xboth == Xmain + Xreg, R1 against a float64
reference, the path-length formula and pl_mean update, style mixing, plugin hooks (call order, penalties, disabled ==
baseline), reported statistics, no-op phases, state_dict round trip and argument errors."""

import copy
import math
import re

import pytest
import torch
import torch.nn.functional as F

from torch_utils import training_stats
from torch_utils.ops import conv2d_gradfix
from training.loss import PHASES, StyleGAN2Loss
from training.loss_plugin import LossPlugin
from training.networks import Discriminator, Generator

BATCH, RES, C_DIM = 4, 8, 2


def _nets(seed=0, extra_c_dim=0):
    """A tiny G and D (8x8, <= 16 channels) in training mode, with non-zero noise strengths."""
    torch.manual_seed(seed)
    G = Generator(z_dim=8, c_dim=C_DIM, w_dim=8, img_resolution=RES, img_channels=3,
                  mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=64, channel_max=16))
    D = Discriminator(c_dim=C_DIM + extra_c_dim, img_resolution=RES, img_channels=3, channel_base=64, channel_max=16,
                      mapping_kwargs=dict(num_layers=2), epilogue_kwargs=dict(mbstd_group_size=2))
    with torch.no_grad():
        for p in [p for name, p in G.named_parameters() if name.endswith('noise_strength')]:
            p.fill_(0.3)
    return G.train(), D.train()


def _batch(seed=1, batch=BATCH):
    """(real_img, real_c, gen_z, gen_c) from a seeded generator; images in [-1, 1], one-hot labels."""
    gen = torch.Generator().manual_seed(seed)
    real_img = torch.rand([batch, 3, RES, RES], generator=gen) * 2 - 1
    real_c, gen_c = F.one_hot(torch.randint(0, C_DIM, [2, batch], generator=gen), C_DIM).float()  # [N, C_DIM] each
    return real_img, real_c, torch.randn([batch, 8], generator=gen), gen_c


def _step(loss, phase, batch, gain=1, seed=5):
    """Run one phase as the loop does (fresh grads, only the phase's module requires grad), seeding the global RNG."""
    loss.G.requires_grad_(phase.startswith('G'))
    loss.D.requires_grad_(phase.startswith('D'))
    (loss.G if phase.startswith('G') else loss.D).zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss.accumulate_gradients(phase, *batch, gain=gain, cur_nimg=0)


def _grads(module):
    return {name: None if p.grad is None else p.grad.clone() for name, p in module.named_parameters()}


def _assert_grads_equal(a, b, exact=True):
    assert a.keys() == b.keys() and all((a[name] is None) == (b[name] is None) for name in a)
    for name in (name for name in a if a[name] is not None):
        torch.testing.assert_close(a[name], b[name], rtol=0 if exact else 1e-5, atol=0 if exact else 1e-6, msg=name)


@pytest.fixture
def spy(monkeypatch):
    """spy(owner, name, record) wraps owner.name; returns the list that gets record(*args) of every call."""
    def install(owner, name, record):
        calls, original = [], getattr(owner, name)
        def wrapper(*args, **kwargs):
            calls.append(record(*args))
            return original(*args, **kwargs)
        monkeypatch.setattr(owner, name, wrapper)
        return calls
    return install


@pytest.fixture
def reports(spy):
    """Every training_stats.report call as (name, value detached)."""
    return spy(training_stats, 'report', lambda name, value: (name, value.detach().clone()))


# Phases: who gets gradients, and how the combined phases decompose.

@pytest.mark.parametrize('phase', PHASES)
def test_each_phase_trains_only_its_module(phase):
    G, D = _nets()
    # D phases leave G trainable on purpose: the fake batch must still not be differentiated.
    G.requires_grad_(True)
    D.requires_grad_(phase.startswith('D'))
    StyleGAN2Loss('cpu', G, D).accumulate_gradients(phase, *_batch(), gain=1, cur_nimg=0)
    trained, frozen = (G, D) if phase.startswith('G') else (D, G)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trained.parameters())
    assert sum(p.grad.abs().sum() for p in trained.parameters()) > 0
    assert all(p.grad is None for p in frozen.parameters())


@pytest.mark.parametrize('both,main,reg', [('Gboth', 'Gmain', 'Greg'), ('Dboth', 'Dmain', 'Dreg')])
def test_both_equals_main_plus_reg(both, main, reg):
    G, D = _nets()
    loss_both = StyleGAN2Loss('cpu', copy.deepcopy(G), copy.deepcopy(D), r1_gamma=3)
    loss_split = StyleGAN2Loss('cpu', G, D, r1_gamma=3)
    _step(loss_both, both, _batch(), gain=4, seed=7)
    # main then reg continue one RNG stream, exactly as the combined phase draws it.
    _step(loss_split, main, _batch(), gain=4, seed=7)
    loss_split.accumulate_gradients(reg, *_batch(), gain=4, cur_nimg=0)
    # Gboth runs the same two backward passes; Dboth shares one real D forward, so only rounding may differ.
    _assert_grads_equal(_grads(getattr(loss_both, both[0])), _grads(getattr(loss_split, both[0])), both == 'Gboth')
    assert torch.equal(loss_both.pl_mean, loss_split.pl_mean) and (loss_split.pl_mean > 0) == (both == 'Gboth')
    assert torch.equal(loss_both.G.mapping.w_avg, G.mapping.w_avg)


def test_phases_with_zero_weight_do_nothing(reports):
    G, D = _nets()
    loss = StyleGAN2Loss('cpu', G, D, pl_weight=0, r1_gamma=0)
    for phase in ('Greg', 'Dreg'):
        rng = torch.get_rng_state()
        loss.accumulate_gradients(phase, *_batch(), gain=4, cur_nimg=0)
        assert torch.equal(torch.get_rng_state(), rng)
    assert all(p.grad is None for p in [*G.parameters(), *D.parameters()])
    assert reports == [] and loss.pl_mean == 0
    for both, main, module in (('Gboth', 'Gmain', G), ('Dboth', 'Dmain', D)):
        _step(loss, both, _batch(), seed=3)
        grads_both = _grads(module)
        _step(loss, main, _batch(), seed=3)
        _assert_grads_equal(grads_both, _grads(module))


# R1 and path length against independent references.

class _TinyD(torch.nn.Module):
    """A D that runs in any dtype (the StyleGAN2 D keeps its head in float32), for the float64 R1 reference."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * RES * RES + C_DIM, 1)

    def forward(self, img, c):
        x = torch.tanh(self.conv(img)).flatten(1)  # [N, 4 * H * W]
        return self.fc(torch.cat([x, c], dim=1))  # [N, 1]


def _augment(img):
    """A linear stand-in for ADA: mirror and halve; R1 must see the factor 0.5 through it."""
    return img.flip(3) * 0.5


@pytest.mark.parametrize('augment_pipe', [None, _augment])
def test_r1_matches_float64_reference(reports, augment_pipe):
    G, _ = _nets()
    torch.manual_seed(0)
    D = _TinyD()
    D64 = copy.deepcopy(D).double()
    real_img, real_c, _, _ = batch = _batch()
    _step(StyleGAN2Loss('cpu', G, D, augment_pipe=augment_pipe, r1_gamma=3), 'Dreg', batch, gain=16)
    x = real_img.double().requires_grad_(True)
    logits = D64(x if augment_pipe is None else augment_pipe(x), real_c.double())  # [N, 1]
    (grad_x,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
    r1_ref = (grad_x ** 2).flatten(1).sum(1)  # [N]
    (r1_ref * 1.5).mean().mul(16).backward()
    stats = dict(reports)
    torch.testing.assert_close(stats['Loss/r1_penalty'].double(), r1_ref.detach(), rtol=1e-5, atol=0)
    torch.testing.assert_close(stats['Loss/D/reg'].double(), 1.5 * r1_ref.detach(), rtol=1e-5, atol=0)
    for (name, p), p64 in zip(D.named_parameters(), D64.parameters()):
        grad64 = torch.zeros_like(p64) if p64.grad is None else p64.grad  # fc.bias does not affect grad_x
        torch.testing.assert_close(p.grad.double(), grad64, rtol=1e-4, atol=1e-7, msg=name)


@pytest.mark.parametrize('gradfix', [False, True])
def test_path_length_penalty_and_pl_mean_update(reports, monkeypatch, gradfix):
    # With the custom convs, pl_no_weight_grad skips the unused weight gradients of J^T y: results must not change.
    monkeypatch.setattr(conv2d_gradfix, 'enabled', gradfix)
    G, D = _nets()
    G_ref = copy.deepcopy(G)
    loss = StyleGAN2Loss('cpu', G, D, style_mixing_prob=0, pl_weight=2, pl_decay=0.25, pl_batch_shrink=2,
                         pl_no_weight_grad=gradfix)
    _, _, gen_z, gen_c = _batch()
    n, pl_mean_ref = BATCH // 2, 0.0
    for step, seed in enumerate([11, 12]):
        _step(loss, 'Greg', _batch(), gain=4, seed=seed)
        # Reference, in the documented draw order: mapping, synthesis (noise), then the projection noise y.
        torch.manual_seed(seed)
        G_ref.zero_grad(set_to_none=True)
        ws = G_ref.mapping(gen_z[:n], gen_c[:n])  # [n, num_ws, w_dim]
        img = G_ref.synthesis(ws)  # [n, 3, 8, 8]
        y = torch.randn_like(img) / RES
        (jac_y,) = torch.autograd.grad((img * y).sum(), ws, create_graph=True)  # J_w^T y, [n, num_ws, w_dim]
        lengths = torch.stack([(jac_y[i].double() ** 2).sum() / G.num_ws for i in range(n)]).sqrt()
        pl_mean_old, pl_mean_ref = pl_mean_ref, pl_mean_ref + 0.25 * (lengths.mean().item() - pl_mean_ref)
        torch.testing.assert_close(loss.pl_mean.item(), pl_mean_ref, rtol=1e-6, atol=0)
        stats = dict(reports[2 * step:])
        penalty = stats['Loss/pl_penalty']
        torch.testing.assert_close(penalty.double(), (lengths.detach() - pl_mean_ref) ** 2, rtol=1e-4, atol=1e-9)
        torch.testing.assert_close(stats['Loss/G/reg'], 2 * penalty)
        # The gradient also flows through the updated pl_mean, and the zero-weighted image term touches every layer.
        lengths32 = jac_y.square().sum(2).mean(1).sqrt()  # [n]
        pl_mean_new = lengths32.mean() * 0.25 + torch.tensor(pl_mean_old, dtype=torch.float32) * 0.75
        (img[:, 0, 0, 0] * 0 + (lengths32 - pl_mean_new).square() * 2).mean().mul(4).backward()
        _assert_grads_equal(_grads(G), _grads(G_ref), exact=False)


# Style mixing.

@pytest.mark.parametrize('prob,expected_cutoffs', [(1, set(range(1, 4))), (0.5, set(range(1, 5))), (0, {4})])
def test_style_mixing_takes_ws_from_a_second_z_after_one_cutoff(prob, expected_cutoffs):
    G, D = _nets()
    assert G.num_ws == 4
    loss = StyleGAN2Loss('cpu', G, D, style_mixing_prob=prob)
    seen = []  # (ws, RNG state) at the synthesis input
    G.synthesis.register_forward_pre_hook(lambda module, args: seen.append((args[0].clone(), torch.get_rng_state())))
    _, _, z, c = _batch()
    cutoffs = set()
    for seed in range(12):
        w_avg = G.mapping.w_avg.clone()
        torch.manual_seed(seed)
        with torch.no_grad():
            loss.run_G(z, c)
            ws, rng = seen[-1]  # [N, num_ws, w_dim]
            torch.manual_seed(seed)
            cutoff = G.num_ws  # = this batch is not mixed
            if prob > 0:
                drawn = int(torch.empty([], dtype=torch.int64).random_(1, G.num_ws))
                cutoff = drawn if torch.rand([]) < prob else cutoff
                w2 = G.mapping(torch.randn_like(z), c, skip_w_avg_update=True)[:, 0]  # [N, w_dim]
                assert torch.equal(ws[:, cutoff:], w2[:, None].expand(-1, G.num_ws - cutoff, -1))
            assert torch.equal(rng, torch.get_rng_state())  # no other draws before synthesis (none for prob 0)
            w1 = G.mapping(z, c, skip_w_avg_update=True)[:, 0]  # [N, w_dim]
        cutoffs.add(cutoff)
        assert torch.equal(ws[:, :cutoff], w1[:, None].expand(-1, cutoff, -1))
        # Only the first z moves the running average.
        torch.testing.assert_close(G.mapping.w_avg, w1.mean(0).lerp(w_avg, G.mapping.w_avg_beta), rtol=0, atol=1e-7)
    assert cutoffs == expected_cutoffs


# Plugins.

class _AppendLabel(LossPlugin):
    """Shifts D's input by 0.1 and appends a constant label column (like Diffusion-GAN's t)."""
    name = 'append'
    extra_c_dim = 1

    def transform_D_input(self, img, c):
        return img + 0.1, torch.cat([c, torch.full_like(c[:, :1], 0.5)], dim=1)


class _Recorder(LossPlugin):
    """Records its hook calls; leaves D's input unchanged; G penalty: penalty(gen_img), or None when not given."""
    name = 'recorder'

    def __init__(self, penalty=None):
        self.calls, self.penalty = [], penalty

    def transform_D_input(self, img, c):
        self.calls.append(('D', img.detach().clone(), c.clone()))
        return img, c

    def G_penalty(self, gen_img, gen_c):
        self.calls.append(('G_penalty', gen_img.detach().clone(), gen_c.clone()))
        return None if self.penalty is None else self.penalty(gen_img)


def test_plugins_see_every_D_input_in_order_and_the_G_batch():
    G, D = _nets(extra_c_dim=1)
    recorder = _Recorder()
    loss = StyleGAN2Loss('cpu', G, D, augment_pipe=_augment, plugins=[_AppendLabel(), recorder])
    fakes, D_labels = [], []
    G.synthesis.register_forward_hook(lambda module, args, out: fakes.append(out.detach().clone()))
    D.register_forward_pre_hook(lambda module, args: D_labels.append(args[1].clone()))
    real_img, real_c, gen_z, gen_c = _batch()
    expected = {'Gmain': ['D', 'G_penalty'], 'Greg': [], 'Gboth': ['D', 'G_penalty'],
                'Dmain': ['D', 'D'], 'Dreg': ['D'], 'Dboth': ['D', 'D']}
    for phase in PHASES:
        del recorder.calls[:], fakes[:], D_labels[:]
        _step(loss, phase, _batch())
        calls = {kind: [(img, c) for k, img, c in recorder.calls if k == kind] for kind in ('D', 'G_penalty')}
        assert [kind for kind, _, _ in recorder.calls] == expected[phase], phase
        assert len(D_labels) == len(calls['D'])
        for (img, c), D_c in zip(calls['D'], D_labels):  # the first plugin's label column reaches D
            assert torch.equal(c, D_c) and torch.equal(c[:, C_DIM], torch.full([BATCH], 0.5))
        if phase.startswith('D'):  # the real batch comes last: augmented, then shifted by the first plugin
            assert torch.equal(calls['D'][-1][0], _augment(real_img) + 0.1)
            assert torch.equal(calls['D'][-1][1][:, :C_DIM], real_c)
        if phase != 'Dreg' and expected[phase]:  # the fake batch comes first
            assert torch.equal(calls['D'][0][0], _augment(fakes[0]) + 0.1)
            assert torch.equal(calls['D'][0][1][:, :C_DIM], gen_c)
        for img, c in calls['G_penalty']:  # G's raw output: not augmented, no plugin transform
            assert torch.equal(img, fakes[0]) and torch.equal(c, gen_c)


def test_G_penalty_adds_to_the_G_loss_and_reaches_G_through_the_image(spy):
    backward_values = spy(torch.Tensor, 'backward', lambda loss: loss.item())
    grads = []
    for penalty in (None, lambda img: torch.full([len(img)], 0.25), lambda img: img.square().mean([1, 2, 3])):
        G, D = _nets()
        _step(StyleGAN2Loss('cpu', G, D, plugins=[_Recorder(penalty)]), 'Gmain', _batch(), gain=3)
        grads.append(_grads(G))
    # A constant k per sample shifts the loss by k * gain and leaves the gradient alone.
    assert len(backward_values) == 3 and backward_values[1] - backward_values[0] == pytest.approx(0.75, abs=1e-6)
    _assert_grads_equal(grads[0], grads[1])
    # An image penalty adds its own gradient: replay the same fake batch (same seed) and differentiate it alone.
    G, D = _nets()
    torch.manual_seed(5)
    (StyleGAN2Loss('cpu', G, D).run_G(*_batch()[2:])[0].square().mean([1, 2, 3]).mean() * 3).backward()
    _assert_grads_equal(grads[2], {name: grads[0][name] + grad for name, grad in _grads(G).items()}, exact=False)


def test_disabled_plugins_are_bit_identical_to_no_plugins():
    runs = []
    for plugins in ([], [LossPlugin(), _Recorder()]):
        G, D = _nets()
        loss = StyleGAN2Loss('cpu', G, D, plugins=plugins)
        runs.append([])
        for seed, phase in enumerate(PHASES):
            _step(loss, phase, _batch(seed), gain=4, seed=seed)
            runs[-1] += [_grads(G), _grads(D), {'pl_mean': loss.pl_mean.clone(), 'w_avg': G.mapping.w_avg.clone()}]
    for state, state_with_plugins in zip(*runs):
        _assert_grads_equal(state, state_with_plugins)


# Statistics and state.

def test_reported_statistics(reports):
    loss = StyleGAN2Loss('cpu', *_nets())
    collector = training_stats.Collector(regex='Loss/.*')
    expected = {'Gmain': ['Loss/scores/fake', 'Loss/signs/fake', 'Loss/G/loss'],
                'Greg': ['Loss/pl_penalty', 'Loss/G/reg'],
                'Dmain': ['Loss/scores/fake', 'Loss/signs/fake', 'Loss/scores/real', 'Loss/signs/real', 'Loss/D/loss'],
                'Dreg': ['Loss/scores/real', 'Loss/signs/real', 'Loss/r1_penalty', 'Loss/D/reg']}
    for phase, names in expected.items():
        reports.clear()
        _step(loss, phase, _batch())
        assert [name for name, _ in reports] == names, phase
        stats = dict(reports)
        assert all(value.shape == (BATCH // (2 if phase == 'Greg' else 1),) for value in stats.values())
        if phase == 'Gmain':
            torch.testing.assert_close(stats['Loss/G/loss'], F.softplus(-stats['Loss/scores/fake']))
            assert torch.equal(stats['Loss/signs/fake'], stats['Loss/scores/fake'].sign())
        if phase == 'Dmain':
            torch.testing.assert_close(stats['Loss/D/loss'], F.softplus(stats['Loss/scores/fake'])
                                       + F.softplus(-stats['Loss/scores/real']))
    collector.update()
    assert set(collector.names()) == {name for names in expected.values() for name in names}
    assert collector.num('Loss/scores/real') == 2 * BATCH


def test_state_dict_round_trip():
    G, D = _nets()
    loss = StyleGAN2Loss('cpu', G, D)
    _step(loss, 'Greg', _batch(), seed=1)
    state = loss.state_dict()
    assert set(state) == {'pl_mean'} and state['pl_mean'] > 0
    resumed = StyleGAN2Loss('cpu', copy.deepcopy(G), copy.deepcopy(D))
    resumed.load_state_dict(state)
    assert torch.equal(resumed.pl_mean, loss.pl_mean)
    _step(loss, 'Greg', _batch(), seed=2)
    _step(resumed, 'Greg', _batch(), seed=2)
    assert torch.equal(resumed.pl_mean, loss.pl_mean) and not torch.equal(state['pl_mean'], loss.pl_mean)
    _assert_grads_equal(_grads(G), _grads(resumed.G))


# Argument errors.

def _loss(**kwargs):
    G, D = _nets()
    return StyleGAN2Loss(**dict(dict(device='cpu', G=G, D=D), **kwargs))


def _accumulate(phase='Gmain', batch=BATCH, gain=1, cur_nimg=0, **kwargs):
    _loss(**kwargs).accumulate_gradients(phase, *_batch(batch=batch), gain=gain, cur_nimg=cur_nimg)


@pytest.mark.parametrize('call,error,message', [
    (lambda: _loss(r1_gamma=-1), ValueError, 'r1_gamma must be a number >= 0, got -1'),
    (lambda: _loss(style_mixing_prob=1.5), ValueError, 'style_mixing_prob must be a number in [0, 1], got 1.5'),
    (lambda: _loss(pl_weight='2'), ValueError, "pl_weight must be a number >= 0, got '2'"),
    (lambda: _loss(pl_decay=-0.1), ValueError, 'pl_decay must be a number in [0, 1], got -0.1'),
    (lambda: _loss(pl_batch_shrink=0), ValueError, 'pl_batch_shrink must be an int >= 1, got 0'),
    (lambda: _loss(plugins=[LossPlugin(), LossPlugin()]), ValueError,
     "plugins must have unique names, got 'plugin' twice; rename one of them"),
    (lambda: _loss(G=None), TypeError, 'G must be a torch.nn.Module, got NoneType'),
    (lambda: _loss(augment_pipe=3), TypeError, 'augment_pipe must be callable (img -> img) or None, got int'),
    (lambda: _loss(plugins=LossPlugin()), TypeError,
     'plugins must be a list or tuple of LossPlugin objects, got LossPlugin'),
    (lambda: _loss(plugins=['smart']), TypeError, 'plugins must hold LossPlugin objects, got str'),
    (lambda: _accumulate('Gpl'), ValueError, "phase must be one of Gmain, Greg, Gboth, Dmain, Dreg, Dboth, got 'Gpl'"),
    (lambda: _accumulate('Greg', batch=1), ValueError, 'gen_z has 1 samples, but the path-length phase needs at '
                                                       'least pl_batch_shrink=2; use a larger batch per GPU'),
    (lambda: _accumulate(gain=-4), ValueError, 'gain must be a number >= 0, got -4'),
    (lambda: _accumulate('Dmain', cur_nimg=-1), ValueError, 'cur_nimg must be an int >= 0, got -1'),
    (lambda: _accumulate(plugins=[_Recorder(lambda gen_img: torch.zeros([len(gen_img), 1]))]), ValueError,
     "plugin 'recorder': G_penalty must return None or a tensor of shape [4] (one value per sample), got [4, 1]"),
    (lambda: _loss().load_state_dict({'pl_mean': torch.zeros([]), 'extra': 1}), ValueError,
     "state must be a dict with the single key 'pl_mean' (from StyleGAN2Loss.state_dict()), got ['extra', 'pl_mean']"),
    (lambda: _loss().load_state_dict({'pl_mean': torch.zeros([2])}), ValueError,
     "state['pl_mean'] must be a finite scalar, got tensor([0., 0.])"),
    (lambda: _loss().load_state_dict({'pl_mean': math.nan}), ValueError,
     "state['pl_mean'] must be a finite scalar, got nan"),
])
def test_argument_errors(call, error, message):
    with pytest.raises(error, match=f'^{re.escape(message)}$'):
        call()
