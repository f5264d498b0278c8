"""Tests for edm_bridge/ncsnv2.py: shapes, the [0, 1] <-> [-1, 1] denoiser identity in float64, the sigma ladder, the
DSM loss against NCSNv2's formula, a short training run, the eps form (docs/spec/diffusion.md §5), pickling, errors."""

import pickle

import numpy as np
import pytest
import torch

from edm_bridge import denoiser, ncsnv2
from dpm.augment import AugmentPipe
from dpm.losses import NCSNv2Loss
from edm_bridge.ncsnv2 import NCSNv2Precond

TINY = dict(img_resolution=8, img_channels=3, ngf=8, sigma_max=1.0, sigma_min=0.01, num_scales=10)


def tiny_net(seed=0, **kwargs):
    torch.manual_seed(seed)
    return NCSNv2Precond(**{**TINY, **kwargs})


def batch(N=4, C=3, res=8, seed=1, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    y = torch.rand([N, C, res, res], generator=gen, dtype=dtype) * 2 - 1
    sigma = torch.tensor([0.02, 0.3, 1.0, 2.0][:N], dtype=dtype)
    return y, sigma


def test_forward_shapes_attributes_and_labels():
    net = tiny_net(label_dim=5, augment_dim=9)
    y, sigma = batch()
    labels = torch.eye(5)[[0, 1, 2, 4]]
    out = net(y, sigma, labels, augment_labels=torch.zeros([4, 9]))
    assert out.shape == (4, 3, 8, 8) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert (net.img_resolution, net.img_channels, net.label_dim, net.sigma_data) == (8, 3, 5, 0.5)
    assert (net.sigma_min, net.sigma_max) == (0.02, 2.0)  # [-1, 1] units: twice the [0, 1]-unit ladder ends.
    assert not torch.equal(out, net(y, sigma, torch.eye(5)[[1, 1, 2, 4]]))  # Labels condition the output.
    assert torch.equal(net(y, sigma, None), net(y, sigma, torch.zeros([4, 5])))
    assert torch.equal(net.round_sigma(sigma), sigma)
    assert isinstance(denoiser.FrozenDenoiser(net), denoiser.Denoiser)


def test_auto_channel_mult_and_resolution_error():
    assert [len(tiny_net(img_resolution=r).model.stages) for r in (4, 8, 16, 32, 64)] == [1, 2, 3, 4, 4]
    with pytest.raises(ValueError, match=r'img_resolution=10 is not divisible by 2\^2; channel_mult=\(1, 2, 2\)'):
        tiny_net(img_resolution=10, channel_mult=(1, 2, 2))


def test_denoiser_identity_in_float64():
    net = tiny_net().double()
    g, sigma = batch(dtype=torch.float64)
    D = net(g, sigma)
    # Independent computation in [0, 1] units: x01 = (g + 1) / 2, sigma01 = sigma / 2, s = f(x01) / sigma01.
    x01, sigma01 = (g + 1) / 2, (sigma / 2).reshape(-1, 1, 1, 1)
    s = net.model(x01) / sigma01
    torch.testing.assert_close(D, 2 * (x01 + sigma01 ** 2 * s) - 1, rtol=0, atol=1e-12)
    # The same D in [-1, 1] units: D = x + sigma^2 score with score = ds/dx-units change: score = s / 2.
    torch.testing.assert_close(D, g + sigma.reshape(-1, 1, 1, 1) ** 2 * (s / 2), rtol=0, atol=1e-12)


def test_eps_form_is_minus_sigma_x_times_score():
    net = tiny_net().double()
    g, sigma_hat = batch(dtype=torch.float64)
    eps = denoiser.denoised_to_eps(g, net(g, sigma_hat), sigma_hat)
    sigma_x = sigma_hat / 2
    expected = -sigma_x.reshape(-1, 1, 1, 1) * net.score01((g + 1) / 2, sigma_x)  # docs/spec/diffusion.md section 5
    torch.testing.assert_close(eps, expected, rtol=1e-10, atol=1e-12)


def test_sigma_ladder():
    sigmas = ncsnv2.ncsnv2_sigmas(50.0, 0.01, 232)
    assert sigmas.shape == (232,) and sigmas.dtype == torch.float32
    assert float(sigmas[0]) == pytest.approx(50.0, rel=1e-7) and float(sigmas[-1]) == pytest.approx(0.01, rel=1e-7)
    ratios = (sigmas[1:].double() / sigmas[:-1].double()).numpy()
    np.testing.assert_allclose(ratios, (0.01 / 50) ** (1 / 231), rtol=1e-6)
    torch.testing.assert_close(tiny_net().sigmas(), 2 * ncsnv2.ncsnv2_sigmas(1.0, 0.01, 10))
    with pytest.raises(ValueError, match=r'num_scales=1; expected an integer >= 2'):
        ncsnv2.ncsnv2_sigmas(1.0, 0.1, 1)
    with pytest.raises(ValueError, match=r'sigma_min=2.0, sigma_max=1.0; expected 0 < sigma_min < sigma_max'):
        ncsnv2.ncsnv2_sigmas(1.0, 2.0, 5)


def test_loss_equals_ncsnv2_dsm_for_fixed_noise():
    net = tiny_net().double()
    loss_fn = NCSNv2Loss(sigma_max=1.0, sigma_min=0.01, num_scales=10)
    y, _ = batch(N=6, dtype=torch.float64)
    torch.manual_seed(3)
    loss = loss_fn(net, y)
    # Replay the draws: ladder index, then z. NCSNv2 in [0, 1] units: 1/2 ||sigma01 s(x01 + sigma01 z) + z||^2.
    torch.manual_seed(3)
    sigma01 = ncsnv2.ncsnv2_sigmas(1.0, 0.01, 10)[torch.randint(10, [6])].double().reshape(-1, 1, 1, 1)
    z = torch.randn_like(y)
    s = net.score01((y + 1) / 2 + sigma01 * z, sigma01)
    expected = 0.5 * (sigma01 * s + z).square().sum(dim=(1, 2, 3))  # [N]
    assert loss.shape == (6, 3, 8, 8)
    torch.testing.assert_close(loss.sum(dim=(1, 2, 3)), expected, rtol=1e-5, atol=1e-8)


def test_loss_with_augment_pipe_and_sigma_dist():
    class Fixed:
        def sample(self, n, device):
            return torch.full([n], 0.5, device=device)

    net = tiny_net(augment_dim=9)
    y, _ = batch()
    torch.manual_seed(0)
    loss = NCSNv2Loss(sigma_dist=Fixed())(net, y, augment_pipe=AugmentPipe(p=1))
    assert loss.shape == (4, 3, 8, 8) and torch.isfinite(loss).all()
    assert NCSNv2Loss(sigma_dist=Fixed()).sample_sigma(3, torch.device('cpu')).tolist() == [0.5, 0.5, 0.5]


def test_short_training_lowers_the_loss():
    torch.manual_seed(0)
    net = NCSNv2Precond(8, 1, ngf=8, sigma_max=1.0, sigma_min=0.01, num_scales=10)
    loss_fn = NCSNv2Loss(sigma_max=1.0, sigma_min=0.01, num_scales=10)
    points = torch.tensor([-0.6, 0.6]).reshape(2, 1, 1, 1).expand(2, 1, 8, 8)  # Two-point data set.
    data = points[torch.arange(32) % 2]

    def eval_loss():
        with torch.no_grad(), torch.random.fork_rng():
            torch.manual_seed(123)
            return float(sum(loss_fn(net, data).sum(dim=(1, 2, 3)).mean() for _ in range(4)) / 4)

    before = eval_loss()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(200):
        opt.zero_grad()
        loss_fn(net, data[torch.randperm(32)[:16]]).sum(dim=(1, 2, 3)).mean().backward()
        opt.step()
    after = eval_loss()
    assert after < 0.5 * before, (before, after)


def test_pickle_round_trip_gives_identical_outputs():
    net = tiny_net(label_dim=3, augment_dim=9).eval()
    clone = pickle.loads(pickle.dumps(net))
    y, sigma = batch()
    labels = torch.eye(3)[[0, 1, 2, 0]]
    assert type(clone).__name__ == 'NCSNv2Precond' and clone.init_kwargs == net.init_kwargs
    assert torch.equal(clone(y, sigma, labels), net(y, sigma, labels))


def test_loss_rejects_stf():
    with pytest.raises(ValueError, match='NCSNv2Loss: stf=True is not supported') as error:
        NCSNv2Loss(stf=True)
    assert '--loss' not in str(error.value) and '--arch ddpmpp' in str(error.value)  # train_dpm.py has no --loss.
    with pytest.raises(ValueError, match=r'NCSNv2Loss: reference \(the STF batch\) must be None'):
        NCSNv2Loss()(tiny_net(), batch()[0], reference=batch()[0])
    with pytest.raises(TypeError, match='sigma_dist is a str; expected None or an object with sample'):
        NCSNv2Loss(sigma_dist='ladder')
