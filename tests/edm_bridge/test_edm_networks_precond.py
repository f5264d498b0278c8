"""Tests for edm_bridge/edm_networks.py, preconditioners: the coefficients of EDM Table 1 in float64 with a mocked
backbone, the iDDPM grid against the DDPM cosine schedule, the VP noise level and its inverse, labels, fp16 on CPU,
output shapes, first-order input gradients, and pickles: rebuilt from safe-loader records with strict state dicts,
and loaded with only torch_utils and dnnlib importable."""

import io
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edm_bridge import edm_networks as nets
from edm_tiny_nets import DHARIWAL, SONG, inputs, tiny
from isolated_load import run_without_repo
from torch_utils import safe_pickle

PRECONDS = [nets.EDMPrecond, nets.VPPrecond, nets.VEPrecond, nets.iDDPMPrecond]


# ----------------------------------------------------------------------------------------------------------------------
# Preconditioners.

def test_preconditioner_attributes_and_backbone_lookup():
    vp = nets.VPPrecond(16, 3, label_dim=4, **SONG)
    assert (vp.img_resolution, vp.img_channels, vp.label_dim, vp.use_fp16) == (16, 3, 4, False)
    assert type(vp.model) is nets.SongUNet and vp.model.map_label.in_features == 4
    idd = nets.iDDPMPrecond(16, 3, **DHARIWAL)
    assert type(idd.model) is nets.DhariwalUNet and idd.model.out_conv.out_channels == 6  # eps and variance halves
    assert list(idd.state_dict()['u'].shape) == [1001] and idd.u.dtype == torch.float32
    assert (idd.sigma_min, idd.sigma_max) == (float(idd.u[999]), float(idd.u[0]))
    assert (nets.VEPrecond(16, 3, **SONG).sigma_min, nets.VEPrecond(16, 3, **SONG).sigma_max) == (0.02, 100)
    edm = nets.EDMPrecond(16, 3, **DHARIWAL)
    assert (edm.sigma_min, edm.sigma_max, edm.sigma_data) == (0, float('inf'), 0.5)
    assert edm.init_kwargs == dict(DHARIWAL)  # what a pickle records and the safe loader rebuilds from


@pytest.mark.parametrize('cls,backbone', [(c, b) for c in PRECONDS for b in ('SongUNet', 'DhariwalUNet')])
@pytest.mark.parametrize('label_dim,augment_dim', [(0, 0), (4, 9)])
def test_preconditioner_output_shapes(cls, backbone, label_dim, augment_dim):
    net = tiny(cls, label_dim=label_dim, augment_dim=augment_dim, **(SONG if backbone == 'SongUNet' else DHARIWAL))
    x, sigma, labels = inputs(N=3, label_dim=label_dim)
    aug = {'augment_labels': torch.rand([3, 9])} if augment_dim else {}
    with torch.no_grad():
        D = net(x, sigma, labels, **aug)
        assert D.shape == x.shape and D.dtype == torch.float32 and torch.isfinite(D).all()
        assert net(x[:1], 0.7, labels[:1] if labels is not None else None).shape == (1, 3, 16, 16)  # scalar sigma
        if augment_dim:  # augment labels enter the embedding only when passed
            assert not torch.allclose(D, net(x, sigma, labels), atol=1e-4)


def _expected_coefficients(cls, s):
    """c_skip, c_out, c_in, c_noise of EDM Table 1 (docs/spec/diffusion.md section 2) in float64, for sigma s [N].

    VP and iDDPM return c_noise None: their tests derive it from t and from the grid index instead."""
    one = torch.ones_like(s)
    if cls is nets.EDMPrecond:
        sd = 0.5
        norm = (s ** 2 + sd ** 2).sqrt()
        return sd ** 2 / norm ** 2, s * sd / norm, 1 / norm, s.log() / 4
    if cls is nets.VEPrecond:
        return one, s, one, (s / 2).log()
    return one, -s, 1 / (s ** 2 + 1).sqrt(), None  # VPPrecond and iDDPMPrecond


@pytest.mark.parametrize('cls', PRECONDS)
def test_preconditioning_coefficients(cls, monkeypatch):
    net = tiny(cls, label_dim=3)
    N, C = 3, 3
    if cls is nets.VPPrecond:
        t = torch.tensor([0.05, 0.4, 1.0], dtype=torch.float64)
        s = (torch.exp(0.5 * 19.9 * t ** 2 + 0.1 * t) - 1).sqrt()  # the VP SDE's sigma(t), beta_d 19.9, beta_min 0.1
        expected_noise = 999 * t
    elif cls is nets.iDDPMPrecond:
        j = torch.tensor([3, 400, 998])
        s = net.u[j].double() * torch.tensor([1.0, 1.0001, 0.9999], dtype=torch.float64)  # near grid points snap
        expected_noise = (999 - j).double()
    else:
        s = torch.tensor([0.002, 0.6, 80.0], dtype=torch.float64)
        expected_noise = None
    c_skip, c_out, c_in, c_noise = _expected_coefficients(cls, s)
    c_skip, c_out, c_in = (c.reshape(-1, 1, 1, 1) for c in (c_skip, c_out, c_in))
    expected_noise = c_noise if expected_noise is None else expected_noise

    gen = torch.Generator().manual_seed(3)
    x = torch.randn([N, C, 8, 8], generator=gen, dtype=torch.float64)
    R = torch.randn([N, 2 * C if cls is nets.iDDPMPrecond else C, 8, 8], generator=gen)  # F's output
    labels = F.one_hot(torch.tensor([2, 0, 1]), 3).float()
    seen = {}

    def fake_F(x_in, noise_labels, class_labels, **kwargs):
        seen.update(x_in=x_in, noise_labels=noise_labels, class_labels=class_labels, kwargs=kwargs)
        return R

    monkeypatch.setattr(net.model, 'forward', fake_F)
    D = net(x, s, labels, augment_labels='passed through')
    torch.testing.assert_close(seen['x_in'].double(), c_in * x, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(seen['noise_labels'].double(), expected_noise, rtol=1e-5, atol=1e-5)
    assert torch.equal(seen['class_labels'], labels) and seen['kwargs'] == {'augment_labels': 'passed through'}
    torch.testing.assert_close(D.double(), c_skip * x + c_out * R[:, :C].double(), rtol=1e-5, atol=1e-5)


def test_iddpm_grid_is_the_cosine_schedule():
    net = nets.iDDPMPrecond(8, 3, model_channels=8, channel_mult=[1], num_blocks=1, attn_resolutions=[])
    # DDPM cosine schedule (Nichol & Dhariwal 2021) from its definition, float64.
    T, s = 1000, 0.008
    f = lambda v: np.cos((v + s) / (1 + s) * np.pi / 2) ** 2  # noqa: E731
    steps = np.arange(T)
    beta = np.minimum(1 - f((steps + 1) / T) / f(steps / T), 0.999)
    alpha_bar = np.cumprod(1 - beta)
    sigma_hat = np.sqrt((1 - alpha_bar) / alpha_bar)  # EDM-equivalent noise level of DDPM step t
    u = net.u.double().numpy()
    np.testing.assert_allclose(u[:T], sigma_hat[::-1], rtol=1e-6)  # u_j = sigma_hat(999 - j)
    assert u[T] == 0 and np.all(np.diff(u) < 0)
    # docs/spec/diffusion.md: ADM's timestep t -> sigma u[999 - t]; cosine t = 25 -> 0.0515, t = 60 -> 0.1072.
    assert round(float(u[999 - 25]), 4) == 0.0515 and round(float(u[999 - 60]), 4) == 0.1072
    # round_sigma snaps to the nearest grid value and keeps shape and dtype; return_index gives j.
    sig = torch.tensor([[u[10] * 1.001, u[700]], [1e9, 0.0]], dtype=torch.float64)
    assert net.round_sigma(sig, return_index=True).tolist() == [[10, 700], [0, 1000]]
    snapped = net.round_sigma(sig)
    assert snapped.shape == (2, 2) and snapped.dtype == torch.float64
    assert snapped.tolist() == [[float(net.u[10]), float(net.u[700])], [float(net.u[0]), 0.0]]


def test_vp_sigma_and_inverse():
    net = nets.VPPrecond(8, 3, model_channels=8, channel_mult=[1], num_blocks=1, attn_resolutions=[])
    t = torch.linspace(1e-5, 1, 101, dtype=torch.float64)
    sigma = net.sigma(t)
    torch.testing.assert_close(sigma, torch.sqrt(torch.expm1(0.5 * 19.9 * t ** 2 + 0.1 * t)), rtol=1e-9, atol=0)
    torch.testing.assert_close(net.sigma_inv(sigma), t, rtol=1e-9, atol=1e-12)
    assert net.sigma_min == pytest.approx(1e-3, rel=0.03) and net.sigma_max == pytest.approx(152.167, rel=1e-5)
    assert torch.equal(net.round_sigma(torch.tensor([0.3, 7.0])), torch.tensor([0.3, 7.0]))


def test_edm_precond_returns_x_as_sigma_goes_to_zero():
    net = tiny(nets.EDMPrecond, label_dim=3)
    x, _, labels = inputs(label_dim=3)
    with torch.no_grad():
        D = net(x, torch.full([2], 1e-12), labels)  # c_skip = 1 - 4e-24, c_out = 1e-12
        torch.testing.assert_close(D, x, rtol=0, atol=1e-6)
        assert not torch.allclose(net(x, torch.full([2], 1.0), labels), x, atol=1e-2)


@pytest.mark.parametrize('cls', PRECONDS)
def test_missing_labels_are_zeros_and_fp16_flag_is_ignored_on_cpu(cls):
    net = tiny(cls, label_dim=3)
    x, sigma, labels = inputs(label_dim=3)
    with torch.no_grad():
        assert torch.equal(net(x, sigma, None), net(x, sigma, torch.zeros([2, 3])))
        assert not torch.allclose(net(x, sigma, labels), net(x, sigma, None), atol=1e-4)
        net16 = cls(16, 3, label_dim=3, use_fp16=True, **(DHARIWAL if cls is nets.iDDPMPrecond else SONG)).eval()
        net16.load_state_dict(net.state_dict(), strict=True)
        D16 = net16(x, sigma, labels)
        assert D16.dtype == torch.float32 and torch.equal(D16, net(x, sigma, labels, force_fp32=True))


@pytest.mark.parametrize('backbone', [SONG, DHARIWAL])
def test_label_dropout_in_training_mode(backbone):
    net = tiny(nets.EDMPrecond, label_dim=3, label_dropout=1.0, **backbone)
    x, sigma, labels = inputs(label_dim=3)
    with torch.no_grad():
        cond = net(x, sigma, labels)  # eval: labels used
        assert torch.equal(net.train()(x, sigma, labels), net.eval()(x, sigma, torch.zeros([2, 3])))
        assert not torch.allclose(cond, net(x, sigma, torch.zeros([2, 3])), atol=1e-4)


# ----------------------------------------------------------------------------------------------------------------------
# Gradients and pickles.

@pytest.mark.parametrize('backbone', [SONG, DHARIWAL])
def test_first_order_input_gradient(backbone):
    net = tiny(nets.EDMPrecond, **backbone).requires_grad_(False)
    x, sigma, _ = inputs()
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(net(x, sigma).sum(), x)
    assert grad.shape == x.shape and torch.isfinite(grad).all() and grad.abs().sum() > 0
    # Directional derivative against a central difference, in float64 (attention weights stay float32).
    model = net.model.double()
    xd, v = x.detach().double(), torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    xd.requires_grad_(True)
    c_noise = torch.tensor([0.2, -0.3], dtype=torch.float64)
    (g,) = torch.autograd.grad(model(xd, c_noise, None).sum(), xd)
    h = 1e-2  # float32 attention noise (~1e-7 per output) limits how small h can usefully be
    with torch.no_grad():
        fd = (model(xd + h * v, c_noise, None).sum() - model(xd - h * v, c_noise, None).sum()) / (2 * h)
    assert float((g * v).sum()) == pytest.approx(float(fd), rel=5e-4)


def test_pickle_round_trip_in_process():
    net = tiny(nets.EDMPrecond, label_dim=3, augment_dim=9)
    x, sigma, labels = inputs(label_dim=3)
    net2 = pickle.loads(pickle.dumps(net))
    assert type(net2) is nets.EDMPrecond and net2.init_kwargs == net.init_kwargs
    with torch.no_grad():
        assert torch.equal(net2(x, sigma, labels), net(x, sigma, labels))


def test_safe_loader_records_rebuild_our_classes_strictly():
    nets_in = dict(ema=tiny(nets.EDMPrecond, label_dim=3, augment_dim=9, embedding_type='fourier',
                            encoder_type='skip', decoder_type='skip', resample_filter=[1, 3, 3, 1]),
                   iddpm=tiny(nets.iDDPMPrecond, label_dim=3), vp=tiny(nets.VPPrecond), ve=tiny(nets.VEPrecond))
    records = safe_pickle.safe_load(io.BytesIO(pickle.dumps(dict(nets_in, dataset_kwargs=dict(resolution=16)))))
    x, sigma, labels = inputs(label_dim=3)
    for key, net in nets_in.items():
        rec = records[key]  # what a released EDM pickle yields without running its code
        rebuilt = getattr(nets, rec.class_name)(*rec.init_args, **rec.init_kwargs).eval()
        rebuilt.load_state_dict(rec.state_dict, strict=True)
        c = labels if net.label_dim else None
        with torch.no_grad():
            assert torch.equal(rebuilt(x, sigma, c), net(x, sigma, c)), key


def test_pickles_load_with_only_torch_utils_and_dnnlib(tmp_path):
    ema = tiny(nets.EDMPrecond, label_dim=3, embedding_type='fourier', encoder_type='residual', decoder_type='skip',
                resample_filter=[1, 3, 3, 1])
    vp, iddpm = tiny(nets.VPPrecond, label_dim=3), tiny(nets.iDDPMPrecond, label_dim=3)
    x, sigma, labels = inputs(label_dim=3)
    with torch.no_grad():
        expected = {key: net(x, sigma, labels) for key, net in (('ema', ema), ('vp', vp), ('iddpm', iddpm))}
    out = run_without_repo(tmp_path, dict(ema=ema, vp=vp, iddpm=iddpm, x=x, sigma=sigma, labels=labels), """
        for key in ('ema', 'vp', 'iddpm'):
            net = data[key]
            assert type(net).__module__.startswith('_imported_module_'), type(net).__module__
            with torch.no_grad():
                out[key] = net(data['x'], data['sigma'], data['labels'])
    """)
    for key, D in expected.items():
        assert torch.equal(out[key], D), key
