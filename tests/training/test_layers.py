"""training.layers and modulated_conv2d: formulas against float64 / naive oracles, Freeze-D buffers, w_avg and
truncation of the mapping network, and the error messages of bad arguments."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from naive_ops import naive_upfirdn2d
from training.layers import Conv2dLayer, FullyConnectedLayer, MappingNetwork, normalize_2nd_moment
from training.networks import modulated_conv2d
from torch_utils.ops import upfirdn2d


def _randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(list(shape), generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_normalize_2nd_moment_matches_numpy():
    x = _randn(3, 5, seed=1) * 7
    expected = x.numpy().astype(np.float64) / np.sqrt((x.numpy().astype(np.float64) ** 2).mean(1, keepdims=True) + 1e-8)
    torch.testing.assert_close(normalize_2nd_moment(x), torch.from_numpy(expected).float(), rtol=1e-6, atol=1e-6)
    assert normalize_2nd_moment(x).square().mean(1).sub(1).abs().max() < 1e-5


def test_fully_connected_layer_equalized_lr_formula():
    torch.manual_seed(0)
    layer = FullyConnectedLayer(6, 4, activation='lrelu', lr_multiplier=0.01, bias_init=0.5)
    assert layer.weight.shape == (4, 6) and layer.bias.shape == (4,)
    assert torch.equal(layer.bias, torch.full([4], 0.5))
    torch.manual_seed(0)
    assert torch.equal(layer.weight, torch.randn([4, 6]) / 0.01)  # stored as randn / lr_multiplier
    x = _randn(3, 6, seed=2)
    w64, b64, x64 = layer.weight.double(), layer.bias.double(), x.double()
    y = x64 @ (w64 * 0.01 / np.sqrt(6)).t() + b64 * 0.01
    expected = F.leaky_relu(y, 0.2) * np.sqrt(2)
    torch.testing.assert_close(layer(x).double(), expected, rtol=1e-5, atol=1e-6)


def test_fully_connected_layer_linear_and_no_bias():
    torch.manual_seed(0)
    linear, no_bias = FullyConnectedLayer(5, 3, bias_init=1), FullyConnectedLayer(5, 3, bias=False)
    assert no_bias.bias is None and [n for n, _ in no_bias.named_parameters()] == ['weight']
    x = _randn(2, 5, seed=3).double()
    torch.testing.assert_close(linear(x.float()).double(), x @ linear.weight.double().t() / np.sqrt(5) + 1,
                               rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(no_bias(x.float()).double(), x @ no_bias.weight.double().t() / np.sqrt(5),
                               rtol=1e-5, atol=1e-6)


def test_conv2d_layer_downsampling_matches_naive():
    torch.manual_seed(0)
    layer = Conv2dLayer(3, 4, kernel_size=3, activation='lrelu', down=2, conv_clamp=0.5)
    layer.bias.data = _randn(4, seed=5)
    x = _randn(2, 3, 8, 8, seed=4)
    f = torch.tensor([1., 3., 3., 1.], dtype=torch.float64) / 8
    w = layer.weight.double() / np.sqrt(3 * 9)
    # Conv and FIR filter commute on the same padded input: conv with padding 2, low-pass, keep every 2nd pixel.
    y = naive_upfirdn2d(F.conv2d(x.double(), w, padding=2), f, down=2)
    expected = (F.leaky_relu(y + layer.bias.double()[None, :, None, None], 0.2) * np.sqrt(2) * 0.7).clamp(-0.35, 0.35)
    actual = layer(x, gain=0.7)
    assert actual.shape == (2, 4, 4, 4)
    torch.testing.assert_close(actual.double(), expected, rtol=1e-5, atol=1e-6)


def test_conv2d_layer_registration_and_freeze():
    trainable = Conv2dLayer(2, 3, kernel_size=3, down=2)
    frozen = Conv2dLayer(2, 3, kernel_size=3, down=2, trainable=False)
    assert [n for n, _ in trainable.named_parameters()] == ['weight', 'bias']
    assert [n for n, _ in trainable.named_buffers()] == ['resample_filter']
    assert [n for n, _ in frozen.named_parameters()] == []
    assert [n for n, _ in frozen.named_buffers()] == ['resample_filter', 'weight', 'bias']
    assert list(trainable.state_dict()) == ['weight', 'bias', 'resample_filter']
    frozen.load_state_dict(trainable.state_dict())
    x = _randn(2, 2, 8, 8)
    assert torch.equal(frozen(x), trainable(x))
    expected_filter = torch.outer(torch.tensor([1., 3., 3., 1.]), torch.tensor([1., 3., 3., 1.])) / 64
    assert torch.equal(trainable.resample_filter, expected_filter)
    skip = Conv2dLayer(2, 3, kernel_size=1, bias=False, trainable=False)
    assert skip.bias is None and [n for n, _ in skip.named_buffers()] == ['resample_filter', 'weight']


def _naive_modconv(x, weight, styles, noise, up, padding, demodulate):
    """Per-sample loop: modulate (and demodulate) the weight explicitly, then one plain conv per sample."""
    out = []
    for n in range(x.shape[0]):
        w = weight * styles[n].reshape(1, -1, 1, 1)  # [O, I, k, k]
        if demodulate:
            w = w * (w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).rsqrt()
        xn = x[n:n + 1]
        if up == 1:
            y = F.conv2d(xn, w, padding=padding)
        else:  # zero-insert, pad and low-pass at gain 4, then a true convolution (flip_weight=False)
            f = torch.tensor([1., 3., 3., 1.], dtype=x.dtype) / 8
            y = F.conv2d(naive_upfirdn2d(xn, f, up=2, pad=(3, 2, 3, 2), gain=4), w.flip([2, 3]))
        out.append(y + (noise[n:n + 1] if noise is not None else 0))
    return torch.cat(out)


@pytest.mark.parametrize('fused', [False, True])
@pytest.mark.parametrize('up,demodulate,with_noise', [(1, True, True), (1, True, False), (1, False, True),
                                                     (1, False, False), (2, True, True)])
def test_modulated_conv2d_matches_naive_per_sample_loop(fused, up, demodulate, with_noise):
    x = _randn(3, 4, 6, 6, seed=1, dtype=torch.float64)
    weight = _randn(5, 4, 3, 3, seed=2, dtype=torch.float64)
    styles = _randn(3, 4, seed=3, dtype=torch.float64) + 1
    noise = _randn(3, 1, 6 * up, 6 * up, seed=4, dtype=torch.float64) if with_noise else None
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    actual = modulated_conv2d(x, weight, styles, noise=noise, up=up, padding=1, resample_filter=f,
                              demodulate=demodulate, flip_weight=(up == 1), fused_modconv=fused)
    expected = _naive_modconv(x, weight, styles, noise, up, 1, demodulate)
    assert actual.shape == (3, 5, 6 * up, 6 * up)
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)


def test_modulated_conv2d_fp16_prenormalisation_avoids_overflow():
    # Styles of 3e3 on activations of ~10 overflow fp16 (max 65504) unless the styles are pre-normalised.
    x, weight, styles = _randn(2, 4, 6, 6, seed=1) * 10, _randn(3, 4, 3, 3, seed=2), _randn(2, 4, seed=3) * 3e3
    plain = F.conv2d(x.half() * styles.half()[:, :, None, None], weight.half(), padding=1)
    assert not torch.isfinite(plain).all()  # what happens without the pre-normalisation
    reference = _naive_modconv(x.double(), weight.double(), styles.double(), None, 1, 1, True)
    for fused in (False, True):
        out = modulated_conv2d(x.half(), weight, styles, padding=1, fused_modconv=fused)
        assert out.dtype == torch.float16 and torch.isfinite(out).all()
        torch.testing.assert_close(out.double(), reference, rtol=2e-2, atol=2e-2)


def test_modulated_conv2d_second_order_gradients():
    x = _randn(2, 2, 4, 4, seed=1, dtype=torch.float64).requires_grad_()
    weight = _randn(3, 2, 3, 3, seed=2, dtype=torch.float64).requires_grad_()
    styles = (_randn(2, 2, seed=3, dtype=torch.float64) + 1).requires_grad_()
    noise = _randn(2, 1, 8, 8, seed=4, dtype=torch.float64)
    f = upfirdn2d.setup_filter([1, 3, 3, 1])

    def fn(x, weight, styles):
        return modulated_conv2d(x, weight, styles, noise=noise, up=2, padding=1, resample_filter=f,
                                flip_weight=False, fused_modconv=False)
    assert torch.autograd.gradcheck(fn, (x, weight, styles))
    assert torch.autograd.gradgradcheck(fn, (x, weight, styles))


def _mapping(**kwargs):
    torch.manual_seed(0)
    return MappingNetwork(z_dim=8, c_dim=3, w_dim=6, num_ws=4, num_layers=2, **kwargs)


def test_mapping_registration_and_shapes():
    net = _mapping()
    assert [(n, list(p.shape)) for n, p in net.named_parameters()] == [
        ('embed.weight', [6, 3]), ('embed.bias', [6]), ('fc0.weight', [6, 14]), ('fc0.bias', [6]),
        ('fc1.weight', [6, 6]), ('fc1.bias', [6])]
    assert [(n, list(b.shape)) for n, b in net.named_buffers()] == [('w_avg', [6])]
    label_map = MappingNetwork(z_dim=0, c_dim=3, w_dim=5, num_ws=None, w_avg_beta=None, num_layers=1)
    assert [n for n, _ in label_map.named_buffers()] == []
    assert label_map(None, torch.eye(3)).shape == (3, 5)
    embed_only = MappingNetwork(z_dim=0, c_dim=3, w_dim=5, num_ws=None, w_avg_beta=None, num_layers=0)
    torch.testing.assert_close(embed_only(None, torch.eye(3)), normalize_2nd_moment(embed_only.embed(torch.eye(3))))


def test_mapping_w_avg_follows_lerp_in_training_mode_only():
    net = _mapping().train()
    net.w_avg.copy_(_randn(6, seed=9))
    z, c = _randn(4, 8, seed=1), torch.eye(3)[[0, 1, 2, 0]]
    w = net(z, c, skip_w_avg_update=True)[:, 0].double()  # does not touch w_avg
    old = net.w_avg.double().clone()
    ws = net(z, c)
    assert ws.shape == (4, 4, 6) and torch.equal(ws[:, 0], ws[:, 3])
    torch.testing.assert_close(net.w_avg.double(), 0.995 * old + 0.005 * w.mean(0), rtol=0, atol=1e-6)
    assert not torch.equal(net.w_avg.double(), old)
    frozen = net.w_avg.clone()
    net.eval()(z, c)
    assert torch.equal(net.w_avg, frozen)
    net(z, c, update_emas=True)  # StyleGAN3's keyword overrides the mode
    torch.testing.assert_close(net.w_avg.double(), 0.995 * frozen.double() + 0.005 * w.mean(0), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match=r'^pass either update_emas \(StyleGAN3\) or skip_w_avg_update'):
        net(z, c, update_emas=False, skip_w_avg_update=True)


def test_mapping_truncation_and_cutoff():
    net = _mapping().eval()
    w_avg = _randn(6, seed=7)
    net.w_avg.copy_(w_avg)
    z, c = _randn(2, 8, seed=1), torch.eye(3)[:2]
    ws = net(z, c)
    assert torch.equal(net(z, c, truncation_psi=0), w_avg.expand(2, 4, 6))
    cut = net(z, c, truncation_psi=0.5, truncation_cutoff=2)
    torch.testing.assert_close(cut[:, :2], w_avg + 0.5 * (ws[:, :2] - w_avg))
    assert torch.equal(cut[:, 2:], ws[:, 2:])
    label_map = MappingNetwork(z_dim=0, c_dim=3, w_dim=5, num_ws=None, w_avg_beta=None, num_layers=1)
    with pytest.raises(ValueError, match=r'^truncation_psi=0.7 needs w_avg, which this mapping network does not '
                                         r'track \(num_ws=None, w_avg_beta=None\)$'):
        label_map(None, torch.eye(3), truncation_psi=0.7)


def test_layer_argument_errors():
    with pytest.raises(ValueError, match=r"^activation='gelu': expected one of \['elu', 'linear', 'lrelu'"):
        FullyConnectedLayer(2, 3, activation='gelu')
    with pytest.raises(ValueError, match=r"^activation='Lrelu': expected one of"):
        Conv2dLayer(2, 3, 3, activation='Lrelu')
    with pytest.raises(ValueError, match=r'^z_dim=0 and c_dim=0: the mapping network needs a latent, a label'):
        MappingNetwork(0, 0, 8, num_ws=2)
    with pytest.raises(ValueError, match=r'^num_layers=-1: expected an int >= 0'):
        MappingNetwork(4, 0, 8, num_ws=2, num_layers=-1)
    net = _mapping()
    with pytest.raises(ValueError, match=r'^z must be a tensor of shape \[N, 8\], got \[2, 7\]$'):
        net(torch.zeros(2, 7), torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r'^c must be a tensor of shape \[N, 3\], got NoneType$'):
        net(torch.zeros(2, 8), None)
