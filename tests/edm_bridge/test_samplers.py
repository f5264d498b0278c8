"""Tests for edm_bridge/samplers.py against the closed-form denoiser of a Gaussian N(mu, s^2): sample statistics,
evaluation counts, per-seed noise, the Langevin chain against its exact moment recursion, config resolution, errors."""

import math

import pytest
import torch

from edm_bridge import samplers
from edm_bridge.denoiser import FrozenDenoiser
from edm_bridge.ncsnv2 import NCSNv2Precond

MU, S = 0.3, 0.5


class GaussianDenoiser(torch.nn.Module):
    """D(x; sigma) = mu + s^2 / (s^2 + sigma^2) (x - mu): the exact posterior mean for data ~ N(mu, s^2 I)."""

    def __init__(self, mu=MU, s=S, sigma_min=0.0, sigma_max=float('inf'), label_dim=0):
        super().__init__()
        self.mu, self.s, self.calls = mu, s, 0
        self.img_resolution, self.img_channels, self.label_dim = 2, 1, label_dim
        self.sigma_min, self.sigma_max = sigma_min, sigma_max

    def forward(self, x, sigma, class_labels=None):
        self.calls += 1
        sigma = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1, 1, 1)
        return self.mu + self.s ** 2 / (self.s ** 2 + sigma ** 2) * (x - self.mu)


def test_karras_sigmas_match_eq5():
    t = samplers.karras_sigmas(4, 0.002, 80, 7)
    expected = [(80 ** (1 / 7) + i / 3 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7 for i in range(4)] + [0]
    assert t.dtype == torch.float64 and t.tolist() == pytest.approx(expected, rel=1e-12)
    assert float(t[0]) == pytest.approx(80) and float(t[3]) == pytest.approx(0.002)


@pytest.mark.parametrize('num_steps', [1, 5, 18])
def test_heun_evaluation_count(num_steps):
    net = GaussianDenoiser()
    samplers.edm_sampler(net, torch.randn([3, 1, 2, 2]), num_steps=num_steps)
    assert net.calls == 2 * num_steps - 1


def _heun_gain(num_steps, s=S, sigma_min=0.002, sigma_max=80.0, rho=7):
    """Independent scalar Heun recursion for y = x - mu, dy/dsigma = y sigma / (s^2 + sigma^2): y_0 / y_T."""
    t = [(sigma_max ** (1 / rho) + i / (num_steps - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
         for i in range(num_steps)] + [0.0]
    y = 1.0
    for i, (a, b) in enumerate(zip(t[:-1], t[1:])):
        d1 = y * a / (s ** 2 + a ** 2)
        y_euler = y + (b - a) * d1
        y = y + (b - a) * 0.5 * (d1 + y_euler * b / (s ** 2 + b ** 2)) if i < num_steps - 1 else y_euler
    return y


def test_heun_equals_the_exact_discrete_flow_of_a_gaussian():
    latents = torch.randn([64, 1, 2, 2], generator=torch.Generator().manual_seed(0))
    x = samplers.edm_sampler(GaussianDenoiser(), latents, num_steps=18)
    assert x.dtype == torch.float32 and x.shape == latents.shape
    # The flow is linear in x - mu; 18 steps overshoot the exact gain s / sqrt(s^2 + 80^2) by 5.5 %.
    gain = _heun_gain(18)
    assert gain * math.sqrt(S ** 2 + 80 ** 2) / S == pytest.approx(1.0553, abs=1e-4)
    torch.testing.assert_close(x.double(), MU + (latents.double() * 80 - MU) * gain, atol=1e-5, rtol=0)


def test_heun_samples_match_the_gaussian():
    latents = torch.randn([4000, 1, 2, 2], generator=torch.Generator().manual_seed(0))
    x = samplers.edm_sampler(GaussianDenoiser(), latents, num_steps=64)
    assert abs(float(x.mean()) - MU) < 0.02 and abs(float(x.std()) - S) < 0.01


def test_heun_with_churn_still_matches_the_gaussian():
    torch.manual_seed(0)
    x = samplers.edm_sampler(GaussianDenoiser(), torch.randn([4000, 1, 2, 2]), num_steps=64, S_churn=20,
                             S_min=0.01, S_max=50)
    assert abs(float(x.mean()) - MU) < 0.02 and abs(float(x.std()) - S) < 0.015


def test_same_seed_same_image_whatever_the_batch():
    net = GaussianDenoiser()
    config = samplers.SamplerConfig('heun', num_steps=6, sigma_min=0.002, sigma_max=80, S_churn=5)
    together = dict(samplers.generate_images(net, [4, 7, 9], config, batch_size=3))
    alone = dict(samplers.generate_images(net, [9, 4], config, batch_size=1))
    assert torch.equal(together[9], alone[9]) and torch.equal(together[4], alone[4])
    assert not torch.equal(together[4], together[7])


def test_stacked_generator_rows_follow_their_seed():
    a = samplers.StackedRandomGenerator('cpu', [1, 2]).randn([2, 3])
    b = samplers.StackedRandomGenerator('cpu', [2]).randn([1, 3])
    assert torch.equal(a[1], b[0]) and torch.equal(a[0], torch.randn([3], generator=torch.Generator().manual_seed(1)))
    with pytest.raises(ValueError, match=r'size \[3, 3\] has 3 rows; this generator has 2 seeds'):
        samplers.StackedRandomGenerator('cpu', [1, 2]).randn([3, 3])


def test_annealed_langevin_matches_the_exact_chain_and_the_gaussian():
    s = 0.2
    net = GaussianDenoiser(s=s)
    sigmas = samplers.SamplerConfig('langevin', num_steps=6, sigma_min=0.05, sigma_max=1.0).sigmas()  # geometric
    step_lr, n_each = 0.2 * 0.05 ** 2, 50
    x_init = torch.rand([4000, 1, 2, 2], generator=torch.Generator().manual_seed(0)) * 2 - 1
    x = samplers.annealed_langevin(net, x_init, sigmas, n_steps_each=n_each, step_lr=step_lr,
                                   generator=torch.Generator().manual_seed(1))
    assert net.calls == len(sigmas) * n_each + 1
    # With a Gaussian score -(x - mu) / v, v = s^2 + sigma^2, one step maps mean m -> mu + (1 - a/v)(m - mu) and
    # variance q -> (1 - a/v)^2 q + 2a exactly; the final denoising step scales by s^2 / v_L.
    m, q = 0.0, 1 / 3  # U[-1, 1]
    for sigma in sigmas.tolist():
        a, v = step_lr * (sigma / 0.05) ** 2, s ** 2 + sigma ** 2
        for _ in range(n_each):
            m, q = MU + (1 - a / v) * (m - MU), (1 - a / v) ** 2 * q + 2 * a
    k = s ** 2 / (s ** 2 + 0.05 ** 2)
    m, q = MU + k * (m - MU), k ** 2 * q
    assert abs(float(x.mean()) - m) < 0.01 and abs(float(x.var()) / q - 1) < 0.05
    assert abs(m - MU) < 1e-6 and abs(math.sqrt(q) / s - 1) < 0.01  # The chain itself lands on N(mu, s^2).
    assert abs(float(x.mean()) - MU) < 0.01 and abs(float(x.std()) / s - 1) < 0.03


def test_annealed_langevin_noise_sources_and_errors():
    net = GaussianDenoiser()
    x0 = torch.zeros([2, 1, 2, 2])
    a = samplers.annealed_langevin(net, x0, [1.0, 0.1], generator=samplers.StackedRandomGenerator('cpu', [3, 4]))
    b = samplers.annealed_langevin(net, x0[:1], [1.0, 0.1], generator=samplers.StackedRandomGenerator('cpu', [4]))
    torch.testing.assert_close(a[1:], b, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match=r'sigmas=\[0.1, 1.0\]...; expected positive noise levels in descending'):
        samplers.annealed_langevin(net, x0, [0.1, 1.0])
    with pytest.raises(ValueError, match=r'n_steps_each=0, step_lr=1e-05; expected an integer >= 1'):
        samplers.annealed_langevin(net, x0, [1.0], n_steps_each=0, step_lr=1e-5)


def test_resolve_config_defaults():
    heun = samplers.resolve_config(GaussianDenoiser(sigma_min=0.01, sigma_max=50))
    assert (heun.sampler, heun.num_steps, heun.sigma_min, heun.sigma_max) == ('heun', 18, 0.01, 50)
    torch.manual_seed(0)
    ncsn = FrozenDenoiser(NCSNv2Precond(8, 3, ngf=8, sigma_max=1.0, sigma_min=0.01, num_scales=10))
    lang = samplers.resolve_config(ncsn)
    assert (lang.sampler, lang.num_steps, lang.sigma_min, lang.sigma_max) == ('langevin', 10, 0.02, 2.0)
    torch.testing.assert_close(lang.sigmas().float(), ncsn.net.sigmas())  # Langevin walks the training ladder.
    assert samplers.resolve_config(ncsn, sampler='heun', num_steps=4).sigma_max == 2.0
    assert samplers.resolve_config(GaussianDenoiser(), sampler='langevin').num_steps == 100


@pytest.mark.parametrize('kwargs, message', [
    (dict(sampler='euler'), r"sampler='euler'; expected one of \['heun', 'langevin'\]"),
    (dict(num_steps=0), r'num_steps=0; expected an integer >= 1'),
    (dict(sigma_min=100.0), r'sigma_min=100.0, sigma_max=80, rho=7; expected 0 < sigma_min <= sigma_max'),
    (dict(step_lr=0), r'step_lr=0; expected S_churn >= 0'),
])
def test_config_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        samplers.SamplerConfig(**{**dict(sampler='heun', num_steps=4, sigma_min=0.002, sigma_max=80), **kwargs})


def test_class_labels():
    rnd = samplers.StackedRandomGenerator('cpu', [0, 1, 2])
    labels = samplers.class_labels_for(GaussianDenoiser(label_dim=4), 2, rnd, torch.device('cpu'))
    assert labels.tolist() == [[0, 0, 1, 0]] * 3
    random = samplers.class_labels_for(GaussianDenoiser(label_dim=4), None, rnd, torch.device('cpu'))
    assert random.shape == (3, 4) and random.sum(dim=1).tolist() == [1, 1, 1]
    with pytest.raises(ValueError, match=r'class_idx=1 given, but the network is unconditional'):
        samplers.class_labels_for(GaussianDenoiser(), 1, rnd, torch.device('cpu'))
    with pytest.raises(ValueError, match=r'class_idx=4 is out of range; expected 0..3'):
        samplers.class_labels_for(GaussianDenoiser(label_dim=4), 4, rnd, torch.device('cpu'))


def test_heun_draws_latents_then_labels_per_seed_like_edm(monkeypatch):
    # EDM's generate.py: latents = rnd.randn(...) first, then class labels from rnd.randint: same seed, same image.
    seen = {}

    def capture(net, latents, class_labels, **kwargs):
        seen.update(latents=latents, labels=class_labels)
        return latents
    monkeypatch.setattr(samplers, 'edm_sampler', capture)
    config = samplers.SamplerConfig(sampler='heun', num_steps=2, sigma_min=0.1, sigma_max=1)
    list(samplers.generate_images(GaussianDenoiser(label_dim=1000), [5, 7], config))
    for row, seed in enumerate([5, 7]):
        gen = torch.Generator().manual_seed(seed)
        assert torch.equal(seen['latents'][row], torch.randn([1, 2, 2], generator=gen))
        assert int(seen['labels'][row].argmax()) == int(torch.randint(1000, [], generator=gen))


class _DeviceCheckingGenerator(samplers.StackedRandomGenerator):
    """Fails like a CUDA generator asked for a CPU tensor when a draw does not name the generators' device."""

    def _stack(self, draw, size, **kwargs):
        if torch.device(kwargs.get('device', 'cpu')) != torch.device(self.device):
            raise RuntimeError(f"Expected a '{kwargs.get('device', 'cpu')}' device type for generator but found "
                               f"'{self.device}'")
        return super()._stack(draw, size, **kwargs)


def test_random_class_labels_are_drawn_on_the_generators_device():
    rnd = _DeviceCheckingGenerator('cpu', [0, 1])
    rnd.device = 'meta'  # Stands for cuda: every draw must pass device=meta.
    labels = samplers.class_labels_for(GaussianDenoiser(label_dim=4), None, rnd, torch.device('meta'))
    assert labels.shape == (2, 4) and labels.device.type == 'meta'


@pytest.mark.cuda
def test_generate_conditional_on_cuda():
    config = samplers.SamplerConfig(sampler='heun', num_steps=2, sigma_min=0.1, sigma_max=1)
    images = list(samplers.generate_images(GaussianDenoiser(label_dim=3), [0, 1], config, device='cuda'))
    assert len(images) == 2


def test_langevin_passes_sigma_on_the_images_device():
    # The ladder lives on the CPU; a bare EDM preconditioner on CUDA needs sigma on the images' device ('meta' here).
    class DeviceCheckingNet(GaussianDenoiser):
        def forward(self, x, sigma, class_labels=None):
            assert sigma.device == x.device, (sigma.device, x.device)
            return x

    x = samplers.annealed_langevin(DeviceCheckingNet(), torch.zeros([2, 1, 2, 2], device='meta'), [1.0, 0.5],
                                   n_steps_each=1)
    assert x.device.type == 'meta'
