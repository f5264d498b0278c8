"""training.discriminator: shapes for every architecture, names, minibatch std against a naive loop, the projection
logit, Freeze-D and fp16 blocks on CPU."""

import numpy as np
import pytest
import torch

from torch_utils import misc
from training.discriminator import Discriminator, DiscriminatorBlock, MinibatchStdLayer


def _tiny_D(seed=0, c_dim=3, architecture='resnet', **kwargs):
    torch.manual_seed(seed)
    return Discriminator(c_dim=c_dim, img_resolution=16, img_channels=3, architecture=architecture, channel_base=256,
                         channel_max=32, mapping_kwargs=dict(num_layers=2), **kwargs)


def _inputs(batch=4, c_dim=3, seed=1):
    gen = torch.Generator().manual_seed(seed)
    img = torch.randn([batch, 3, 16, 16], generator=gen)
    c = torch.nn.functional.one_hot(torch.arange(batch) % max(c_dim, 1), max(c_dim, 1)).float()[:, :c_dim]
    return img, c


@pytest.mark.parametrize('architecture', ['orig', 'skip', 'resnet'])
@pytest.mark.parametrize('c_dim', [0, 3])
def test_discriminator_output_shape_and_range(architecture, c_dim):
    D = _tiny_D(c_dim=c_dim, architecture=architecture)
    logits = D(*_inputs(c_dim=c_dim))
    assert logits.shape == (4, 1) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all() and 0 < logits.abs().max() < 100
    assert hasattr(D, 'mapping') == (c_dim > 0)
    assert hasattr(D.b8, 'fromrgb') == (architecture == 'skip') and hasattr(D.b16, 'fromrgb')
    assert hasattr(D.b8, 'skip') == (architecture == 'resnet') and hasattr(D.b4, 'fromrgb') == (architecture == 'skip')


def test_discriminator_parameter_and_buffer_names():
    D = _tiny_D(c_dim=3)
    layers = ['fromrgb', 'conv0', 'conv1', 'skip']
    expected = []
    for res, names in ((16, layers), (8, layers[1:])):
        for layer in names:
            expected += [f'b{res}.{layer}.weight'] + ([f'b{res}.{layer}.bias'] if layer != 'skip' else [])
    expected += ['mapping.embed.weight', 'mapping.embed.bias', 'mapping.fc0.weight', 'mapping.fc0.bias',
                 'mapping.fc1.weight', 'mapping.fc1.bias']
    expected += ['b4.conv.weight', 'b4.conv.bias', 'b4.fc.weight', 'b4.fc.bias', 'b4.out.weight', 'b4.out.bias']
    assert [n for n, _ in D.named_parameters()] == expected
    assert [n for n, _ in D.named_buffers()] == (
        ['b16.resample_filter'] + [f'b16.{layer}.resample_filter' for layer in layers]
        + ['b8.resample_filter'] + [f'b8.{layer}.resample_filter' for layer in layers[1:]]
        + ['b4.conv.resample_filter'])
    shapes = {n: list(t.shape) for n, t in misc.named_params_and_buffers(D)}
    # channel_base 256: 16 channels at 16x16, 32 at 8x8 and 4x4; one mbstd channel; cmap_dim = 32.
    assert shapes['b16.fromrgb.weight'] == [16, 3, 1, 1] and shapes['b16.conv1.weight'] == [32, 16, 3, 3]
    assert shapes['b16.skip.weight'] == [32, 16, 1, 1] and shapes['b4.conv.weight'] == [32, 33, 3, 3]
    assert shapes['b4.fc.weight'] == [32, 32 * 16] and shapes['b4.out.weight'] == [32, 32]
    assert shapes['mapping.fc1.weight'] == [32, 32] and shapes['b4.conv.resample_filter'] == [4, 4]
    assert list(_tiny_D(c_dim=0).b4.out.weight.shape) == [1, 32]


def test_projection_logit_is_scaled_inner_product_with_cmap():
    D = _tiny_D(c_dim=3, architecture='orig')
    img, c = _inputs()
    captured = {}
    D.b4.out.register_forward_hook(lambda mod, args, out: captured.update(out=out.double()))
    logits = D(img, c).double()
    cmap = D.mapping(None, c).double()  # [N, 32]
    expected = (captured['out'] * cmap).sum(dim=1, keepdim=True) / np.sqrt(32)
    torch.testing.assert_close(logits, expected, rtol=1e-6, atol=1e-6)


def _naive_mbstd(x, group_size, num_channels):
    """Loop over samples: std over the samples that share n mod (N / G), averaged per channel group."""
    N, C, H, W = x.shape
    G = N if group_size is None else min(group_size, N)
    M, c = N // G, C // num_channels
    x64 = x.double()
    extra = torch.zeros(N, num_channels, H, W, dtype=torch.float64)
    for n in range(N):
        members = x64[[n % M + k * M for k in range(G)]]  # [G, C, H, W]
        std = (members.var(dim=0, unbiased=False) + 1e-8).sqrt()  # [C, H, W]
        for f in range(num_channels):
            extra[n, f] = std[f * c:(f + 1) * c].mean()
    return torch.cat([x64, extra], dim=1)


@pytest.mark.parametrize('group_size,num_channels,batch', [(4, 1, 8), (2, 2, 6), (None, 2, 3), (32, 1, 4)])
def test_minibatch_std_matches_naive_loop(group_size, num_channels, batch):
    x = torch.randn([batch, 6, 3, 3], generator=torch.Generator().manual_seed(0)) * 3
    out = MinibatchStdLayer(group_size, num_channels)(x)
    assert out.shape == (batch, 6 + num_channels, 3, 3) and torch.equal(out[:, :6], x)
    torch.testing.assert_close(out.double(), _naive_mbstd(x, group_size, num_channels), rtol=1e-5, atol=1e-6)


def test_freeze_d_moves_the_first_layers_to_buffers():
    D, D_frozen = _tiny_D(c_dim=0), _tiny_D(seed=1, c_dim=0, block_kwargs=dict(freeze_layers=5))
    # Global layer indices: b16 fromrgb 0, conv0 1, conv1 2, skip 3; b8 conv0 4, conv1 5, skip 6.
    frozen = ['b16.fromrgb.weight', 'b16.fromrgb.bias', 'b16.conv0.weight', 'b16.conv0.bias', 'b16.conv1.weight',
              'b16.conv1.bias', 'b16.skip.weight', 'b8.conv0.weight', 'b8.conv0.bias']
    params = [n for n, _ in D_frozen.named_parameters()]
    buffers = [n for n, _ in D_frozen.named_buffers()]
    assert [n for n, _ in D.named_parameters() if n not in frozen] == params
    assert all(name in buffers for name in frozen) and [D.b16.num_layers, D.b8.num_layers] == [4, 3]
    assert sorted(D.state_dict()) == sorted(D_frozen.state_dict())
    D_frozen.load_state_dict(D.state_dict())
    img, c = _inputs(c_dim=0)
    assert torch.equal(D_frozen(img, c), D(img, c))
    D_frozen(img, c).sum().backward()
    assert D_frozen.b8.conv1.weight.grad is not None and D_frozen.b8.conv0.weight.grad is None


def test_fp16_blocks_run_in_fp32_on_cpu():
    D16 = _tiny_D(c_dim=3, num_fp16_res=2, conv_clamp=256, block_kwargs=dict(fp16_channels_last=True))
    D32 = _tiny_D(seed=5, c_dim=3, conv_clamp=256)
    misc.copy_params_and_buffers(D16, D32, require_all=True)
    assert [D16.b16.use_fp16, D16.b8.use_fp16] == [True, True]
    img, c = _inputs()
    for force_fp32 in (False, True):
        torch.testing.assert_close(D16(img, c, force_fp32=force_fp32), D32(img, c), rtol=1e-6, atol=1e-6)


def test_discriminator_argument_errors():
    with pytest.raises(ValueError, match=r'^img_resolution=12: expected a power of two >= 8$'):
        Discriminator(0, 12, 3)
    with pytest.raises(ValueError, match=r"^architecture='unet': expected one of \['orig', 'skip', 'resnet'\]$"):
        _tiny_D(architecture='unet')
    with pytest.raises(ValueError, match=r'^in_channels=8: expected 0 \(first block\) or tmp_channels=16$'):
        DiscriminatorBlock(8, 16, 32, resolution=16, img_channels=3, first_layer_idx=0)
    D = _tiny_D(c_dim=3)
    with pytest.raises(ValueError, match=r'^img must be a tensor of shape \[N, 3, 16, 16\], got \[4, 3, 8, 8\]$'):
        D(torch.zeros(4, 3, 8, 8), torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r'^c must be a tensor of shape \[N, 3\], got \[4, 2\]$'):
        D(torch.zeros(4, 3, 16, 16), torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r'^minibatch std: batch size 6 must be divisible by the group size 4 '
                                         r'\(mbstd_group_size=4\)$'):
        D(torch.zeros(6, 3, 16, 16), torch.zeros(6, 3))
