"""Tests for edm_bridge.adm_unet and edm_bridge.adm: the guided-diffusion state-dict contract, layer numerics against
independent references, and the ADMDenoiser's sigma <-> t conversion with a mocked U-Net."""

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edm_bridge.adm import ADM_PRESETS, ADMDenoiser, build_adm
from edm_bridge.adm_unet import (ADMUNet, AttentionBlock, ResBlock, attention_legacy, attention_split_heads,
                                 timestep_embedding)
from edm_bridge.denoiser import Denoiser
from edm_bridge.schedules import get_schedule

TINY = dict(image_size=16, in_channels=3, model_channels=32, out_channels=6, num_res_blocks=1,
            attention_resolutions=(2,), channel_mult=(1, 2), num_classes=10, num_head_channels=16,
            use_scale_shift_norm=True, resblock_updown=True, use_new_attention_order=True)


def resblock_keys(prefix, c_in, c_out, emb=128, scale_shift=True):
    keys = {f'{prefix}.in_layers.0.weight': [c_in], f'{prefix}.in_layers.0.bias': [c_in],
            f'{prefix}.in_layers.2.weight': [c_out, c_in, 3, 3], f'{prefix}.in_layers.2.bias': [c_out],
            f'{prefix}.emb_layers.1.weight': [c_out * (2 if scale_shift else 1), emb],
            f'{prefix}.emb_layers.1.bias': [c_out * (2 if scale_shift else 1)],
            f'{prefix}.out_layers.0.weight': [c_out], f'{prefix}.out_layers.0.bias': [c_out],
            f'{prefix}.out_layers.3.weight': [c_out, c_out, 3, 3], f'{prefix}.out_layers.3.bias': [c_out]}
    if c_in != c_out:
        keys.update({f'{prefix}.skip_connection.weight': [c_out, c_in, 1, 1],
                     f'{prefix}.skip_connection.bias': [c_out]})
    return keys


def attention_keys(prefix, c):
    return {f'{prefix}.norm.weight': [c], f'{prefix}.norm.bias': [c], f'{prefix}.qkv.weight': [3 * c, c, 1],
            f'{prefix}.qkv.bias': [3 * c], f'{prefix}.proj_out.weight': [c, c, 1], f'{prefix}.proj_out.bias': [c]}


# The contract for TINY, in guided-diffusion's registration order: 2 levels (32, 64 channels), attention at ds 2.
EXPECTED_TINY = {
    'time_embed.0.weight': [128, 32], 'time_embed.0.bias': [128],
    'time_embed.2.weight': [128, 128], 'time_embed.2.bias': [128],
    'label_emb.weight': [10, 128],
    'input_blocks.0.0.weight': [32, 3, 3, 3], 'input_blocks.0.0.bias': [32],
    **resblock_keys('input_blocks.1.0', 32, 32),                                       # level 0, ds 1
    **resblock_keys('input_blocks.2.0', 32, 32),                                       # ResBlock(down=True)
    **resblock_keys('input_blocks.3.0', 32, 64), **attention_keys('input_blocks.3.1', 64),  # level 1, ds 2
    **resblock_keys('middle_block.0', 64, 64), **attention_keys('middle_block.1', 64),
    **resblock_keys('middle_block.2', 64, 64),
    **resblock_keys('output_blocks.0.0', 64 + 64, 64), **attention_keys('output_blocks.0.1', 64),
    **resblock_keys('output_blocks.1.0', 64 + 32, 64), **attention_keys('output_blocks.1.1', 64),
    **resblock_keys('output_blocks.1.2', 64, 64),                                      # ResBlock(up=True)
    **resblock_keys('output_blocks.2.0', 64 + 32, 32),
    **resblock_keys('output_blocks.3.0', 32 + 32, 32),
    'out.0.weight': [32], 'out.0.bias': [32], 'out.2.weight': [6, 32, 3, 3], 'out.2.bias': [6],
}


def randomize(module, seed, std=0.1):
    """Fill every parameter with seeded noise (the zero-initialised convs would hide most of the network)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    return module


def shapes(module):
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def test_tiny_state_dict_keys_and_shapes():
    assert list(shapes(ADMUNet(**TINY)).items()) == list(EXPECTED_TINY.items())


def test_conv_resample_keys_without_resblock_updown():
    unet = ADMUNet(**{**TINY, 'resblock_updown': False, 'use_scale_shift_norm': False, 'num_classes': None})
    keys = shapes(unet)
    assert keys['input_blocks.2.0.op.weight'] == [32, 32, 3, 3]                  # Downsample conv is `op`.
    assert keys['output_blocks.1.2.conv.weight'] == [64, 64, 3, 3]               # Upsample conv is `conv`.
    assert keys['input_blocks.1.0.emb_layers.1.weight'] == [32, 128]             # No scale-shift: out channels.
    assert 'label_emb.weight' not in keys
    pooled = shapes(ADMUNet(**{**TINY, 'resblock_updown': False, 'conv_resample': False}))
    assert not any(k.startswith(('input_blocks.2.', 'output_blocks.1.2.')) for k in pooled)


def test_full_size_presets_structure():
    # Facts of the released architectures, checked without allocating memory.
    with torch.device('meta'):
        nets = {name: build_adm(name) for name in ADM_PRESETS}
    s64, s128, s256 = (shapes(nets[n]) for n in ADM_PRESETS)
    assert len(nets['adm-imagenet64-cond'].input_blocks) == 1 + 4 * 3 + 3
    assert len(nets['adm-imagenet64-cond'].output_blocks) == 4 * 4
    assert s64['label_emb.weight'] == [1000, 768] and s64['out.2.weight'] == [6, 192, 3, 3]
    assert s64['middle_block.1.qkv.weight'] == [3 * 768, 768, 1]
    assert s64['input_blocks.5.1.qkv.weight'] == [3 * 384, 384, 1]               # First block at 32 px (ds 2).
    assert s128['input_blocks.0.0.weight'] == [256, 3, 3, 3] and 'input_blocks.7.1.norm.weight' in s128  # 32 px.
    assert 'input_blocks.5.1.norm.weight' not in s128                            # 64 px: no attention.
    assert 'label_emb.weight' not in s256 and s256['middle_block.0.in_layers.2.weight'] == [1024, 1024, 3, 3]
    counts = {name: sum(p.numel() for p in net.parameters()) for name, net in nets.items()}
    # Regression pins; ImageNet-64 matches the 295.9M that EDM reports for this architecture.
    assert counts == {'adm-imagenet64-cond': 295_904_454, 'adm-imagenet128-cond': 421_529_606,
                      'adm-lsun-bedroom256': 552_814_086}


@pytest.mark.parametrize('preset, size', [('adm-imagenet64-cond', 16), ('adm-imagenet128-cond', 16),
                                          ('adm-lsun-bedroom256', 32)])
def test_preset_state_dict_round_trip(preset, size):
    torch.manual_seed(0)
    source = randomize(build_adm(preset, channels_scale=1 / 8, image_size=size), seed=1).eval()
    target = build_adm(preset, channels_scale=1 / 8, image_size=size).eval()
    assert target.load_state_dict(source.state_dict(), strict=True).missing_keys == []
    gen = torch.Generator().manual_seed(2)
    x = torch.randn([2, 3, size, size], generator=gen)
    t = torch.tensor([3, 500])
    y = torch.tensor([5, 999]) if ADM_PRESETS[preset].class_cond else None
    out = target(x, t, y)
    assert out.shape == (2, 6, size, size) and out.abs().mean() > 0.01
    assert torch.equal(out, source(x, t, y))


def test_timestep_embedding_formula():
    t = torch.tensor([0, 7, 999])
    emb = timestep_embedding(t, 9).double().numpy()
    w = np.exp(-math.log(10000) * np.arange(4) / 4)
    args = np.array([0, 7, 999])[:, None] * w[None]
    expected = np.concatenate([np.cos(args), np.sin(args), np.zeros([3, 1])], axis=1)
    np.testing.assert_allclose(emb, expected, atol=1e-4)


def naive_attention(q, k, v):
    """Single head: softmax_s(q_t . k_s / sqrt(d)) v_s with q, k, v [d, L]."""
    weights = torch.softmax(q.T @ k / math.sqrt(q.shape[0]), dim=1)   # [L, L]
    return v @ weights.T                                              # [d, L]


def test_attention_orders_against_per_head_reference():
    heads, d, L = 3, 4, 5
    qkv = torch.randn([2, 3 * heads * d, L], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    legacy = attention_legacy(qkv, heads)
    split = attention_split_heads(qkv, heads)
    for n in range(2):
        for h in range(heads):
            block = qkv[n, 3 * d * h: 3 * d * (h + 1)]                # Legacy: [q_h, k_h, v_h] per head.
            ref = naive_attention(block[:d], block[d:2 * d], block[2 * d:])
            torch.testing.assert_close(legacy[n, d * h: d * (h + 1)], ref, rtol=1e-6, atol=1e-6)
            q, k, v = (qkv[n, heads * d * j + d * h: heads * d * j + d * (h + 1)] for j in range(3))  # New order.
            torch.testing.assert_close(split[n, d * h: d * (h + 1)], naive_attention(q, k, v), rtol=1e-6, atol=1e-6)


def test_attention_block_orders_agree_after_permuting_qkv():
    torch.manual_seed(0)
    legacy, new = (randomize(AttentionBlock(64, num_head_channels=16, new_order=o), seed=3) for o in (False, True))
    # Row r of the new layout [q | k | v] (each heads x d) comes from legacy row (head, part, channel).
    heads, d = 4, 16
    perm = [h * 3 * d + j * d + c for j in range(3) for h in range(heads) for c in range(d)]
    with torch.no_grad():
        new.qkv.weight.copy_(legacy.qkv.weight[perm])
        new.qkv.bias.copy_(legacy.qkv.bias[perm])
    x = torch.randn([2, 64, 4, 4], generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(new(x), legacy(x), rtol=1e-5, atol=1e-6)
    assert new.num_heads == 4


@pytest.mark.parametrize('up, down', [(False, False), (True, False), (False, True)])
def test_resblock_scale_shift_against_functional_reference(up, down):
    block = randomize(ResBlock(32, 16, dropout=0.0, out_channels=64, use_scale_shift_norm=True, up=up, down=down), 5)
    gen = torch.Generator().manual_seed(6)
    x, emb = torch.randn([2, 32, 8, 8], generator=gen), torch.randn([2, 16], generator=gen)
    p = dict(block.named_parameters())
    resample = (lambda z: F.interpolate(z, scale_factor=2.0)) if up else (lambda z: F.avg_pool2d(z, 2)) if down \
        else (lambda z: z)
    h = resample(F.silu(F.group_norm(x, 32, p['in_layers.0.weight'], p['in_layers.0.bias'])))
    h = F.conv2d(h, p['in_layers.2.weight'], p['in_layers.2.bias'], padding=1)
    scale, shift = F.linear(F.silu(emb), p['emb_layers.1.weight'], p['emb_layers.1.bias'])[:, :, None, None].chunk(2, 1)
    h = F.group_norm(h, 32, p['out_layers.0.weight'], p['out_layers.0.bias']) * (1 + scale) + shift
    h = F.conv2d(F.silu(h), p['out_layers.3.weight'], p['out_layers.3.bias'], padding=1)
    ref = F.conv2d(resample(x), p['skip_connection.weight'], p['skip_connection.bias']) + h
    torch.testing.assert_close(block(x, emb), ref, rtol=1e-5, atol=1e-5)


def test_unet_input_errors():
    unet = ADMUNet(**TINY)
    x = torch.zeros([2, 3, 16, 16])
    cases = [
        (lambda: unet(torch.zeros([2, 3, 10, 9]), torch.tensor([1, 2]), torch.tensor([0, 1])),
         'x has shape [2, 3, 10, 9]: expected [N, 3, H, W] with H and W multiples of 2'),
        (lambda: unet(x, torch.tensor([1, 2, 3]), torch.tensor([0, 1])),
         'timesteps has shape [3]: expected [2] or a scalar'),
        (lambda: unet(x, torch.tensor([1, 2])), 'y is None but the model is class-conditional: pass class ids [N] '
         'in [0, 9]'),
        (lambda: unet(x, torch.tensor([1, 2]), torch.zeros([2, 10])),
         'y has shape [2, 10] and dtype torch.float32: expected integer class ids [2]'),
        (lambda: ADMUNet(**{**TINY, 'num_classes': None})(x, torch.tensor(1), torch.tensor([0, 1])),
         'y was given but the model is unconditional (num_classes=None); pass y=None'),
        (lambda: ADMUNet(**{**TINY, 'dims': 3}), 'dims=3: only 2-D images (dims=2) are supported'),
        (lambda: ADMUNet(**{**TINY, 'num_head_channels': 24}),
         'num_head_channels=24: expected a divisor of the block width 64, or -1 to use num_heads'),
        (lambda: ADMUNet(**{**TINY, 'num_head_channels': -1, 'num_heads': 5}),
         'num_heads=5: expected a divisor of the block width 64'),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=f'^{re.escape(message)}$'):
            call()


class FakeUNet(torch.nn.Module):
    """Stands in for ADMUNet: records its inputs and returns eps = eps_fn(x_t), plus a huge variance half."""

    def __init__(self, eps_fn, learn_sigma=True, num_classes=None, image_size=8):
        super().__init__()
        self.eps_fn, self.learn_sigma = eps_fn, learn_sigma
        self.in_channels, self.out_channels = 3, 6 if learn_sigma else 3
        self.image_size, self.num_classes = image_size, num_classes
        self.weight = torch.nn.Parameter(torch.ones([]))
        self.calls = []

    def forward(self, x, t, y=None):
        self.calls.append((x.detach().clone(), t.clone(), y))
        eps = self.eps_fn(x) * self.weight
        return torch.cat([eps, torch.full_like(eps, 1e6)], dim=1) if self.learn_sigma else eps


def test_denoiser_snaps_sigma_and_uses_alpha_scaling():
    schedule = get_schedule('ddpm-linear')
    eps_known = torch.randn([3, 3, 8, 8], generator=torch.Generator().manual_seed(7))
    fake = FakeUNet(lambda x_t: eps_known)
    denoiser = ADMDenoiser(fake, schedule, learn_sigma=True)
    x = torch.randn([3, 3, 8, 8], generator=torch.Generator().manual_seed(8))
    sigma_grid = denoiser.sigma_grid
    sigma = torch.stack([sigma_grid[25], sigma_grid[30] * 1.001, sigma_grid[999]]).float()  # One off-grid value.
    out = denoiser(x, sigma)
    x_t, t, y = fake.calls[-1]
    assert t.tolist() == [25, 30, 999] and y is None
    sigma_t = torch.from_numpy(schedule.sigma_grid[[25, 30, 999]]).float().reshape(3, 1, 1, 1)
    assert torch.equal(out, x - sigma_t * eps_known)                  # D = x - sigma_t eps, with the snapped sigma.
    alpha_t = torch.from_numpy(np.sqrt(schedule.alpha_bar[[25, 30, 999]])).float().reshape(3, 1, 1, 1)
    torch.testing.assert_close(x_t, alpha_t * x, rtol=1e-6, atol=1e-7)  # ADM sees sqrt(alpha_bar_t) (x0 + sigma eps).
    denoiser(x, 0.1)                                                  # A scalar sigma applies to every sample.
    assert fake.calls[-1][1].tolist() == [schedule.t_for_sigma(0.1)] * 3
    assert torch.equal(denoiser(x, sigma.reshape(3, 1, 1, 1)), out)   # EDM-style [N, 1, 1, 1] sigma.


def test_denoiser_attributes_and_labels():
    fake = FakeUNet(lambda x_t: torch.zeros_like(x_t), learn_sigma=False, num_classes=10)
    denoiser = ADMDenoiser(fake, get_schedule('ddpm-cosine'), learn_sigma=False)
    assert isinstance(denoiser, Denoiser)
    assert (denoiser.img_resolution, denoiser.img_channels, denoiser.label_dim) == (8, 3, 10)
    assert (denoiser.sigma_min, denoiser.sigma_max) == (denoiser.sigma_grid[0].item(), denoiser.sigma_grid[-1].item())
    labels = F.one_hot(torch.tensor([4, 9]), 10).float()
    x = torch.randn([2, 3, 8, 8])
    assert torch.equal(denoiser(x, torch.tensor([0.1, 0.2]), labels), x)  # eps = 0 -> D(x) = x.
    assert fake.calls[-1][2].tolist() == [4, 9]
    uncond = ADMDenoiser(FakeUNet(lambda x_t: x_t), get_schedule('ddpm-linear'), learn_sigma=True)
    uncond(x, 0.1, labels)                                            # Ignored, as EDM preconditioners do.
    assert uncond.unet.calls[-1][2] is None and uncond.label_dim == 0


def test_denoiser_is_frozen_but_passes_input_gradients():
    a = 0.3
    denoiser = ADMDenoiser(FakeUNet(lambda x_t: a * x_t), get_schedule('ddpm-linear'), learn_sigma=True)
    denoiser.train()
    assert not denoiser.training and not denoiser.unet.training
    assert all(not p.requires_grad for p in denoiser.parameters())
    x = torch.randn([2, 3, 8, 8], requires_grad=True)
    t = 40
    denoiser(x, denoiser.sigma_grid[t]).sum().backward()
    sigma_t = denoiser.sigma_grid[t].item()
    # D = x - sigma_t * a * alpha_t x, so dD/dx = 1 - a sigma_t / sqrt(1 + sigma_t^2).
    torch.testing.assert_close(x.grad, torch.full_like(x, 1 - a * sigma_t / math.sqrt(1 + sigma_t ** 2)))


def test_real_unet_denoiser_gradient_and_from_preset():
    torch.manual_seed(0)
    source = randomize(build_adm('adm-imagenet128-cond', channels_scale=1 / 8, image_size=16), seed=9)
    denoiser = ADMDenoiser.from_preset('adm-imagenet128-cond', state_dict=source.state_dict(), channels_scale=1 / 8,
                                       image_size=16)
    assert denoiser.schedule == get_schedule('ddpm-linear') and denoiser.label_dim == 1000
    x = torch.randn([2, 3, 16, 16], generator=torch.Generator().manual_seed(10), requires_grad=True)
    labels = F.one_hot(torch.tensor([1, 2]), 1000).float()
    out = denoiser(x, torch.tensor([0.1, 0.5]), labels)
    out.square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().mean() > 0
    assert all(p.grad is None for p in denoiser.parameters())
    partial = {k: v for k, v in source.state_dict().items() if k != 'out.2.bias'}
    with pytest.raises(RuntimeError, match='Missing key.*out.2.bias'):
        ADMDenoiser.from_preset('adm-imagenet128-cond', state_dict=partial, channels_scale=1 / 8, image_size=16)


def test_presets_match_readme_flags():
    p64, p128, p256 = (ADM_PRESETS[n] for n in ['adm-imagenet64-cond', 'adm-imagenet128-cond', 'adm-lsun-bedroom256'])
    assert (p64.schedule, p128.schedule, p256.schedule) == ('ddpm-cosine', 'ddpm-linear', 'ddpm-linear')
    assert p64.unet_kwargs['attention_resolutions'] == (2, 4, 8)              # 32, 16, 8 px at 64.
    assert p128.unet_kwargs['attention_resolutions'] == (4, 8, 16)
    assert p256.unet_kwargs['attention_resolutions'] == (8, 16, 32)
    assert p64.unet_kwargs['use_new_attention_order'] and not p128.unet_kwargs.get('use_new_attention_order')
    assert (p128.unet_kwargs['num_heads'], p128.unet_kwargs['num_head_channels']) == (4, -1)
    assert p256.unet_kwargs['num_classes'] is None and p64.unet_kwargs['num_classes'] == 1000


def test_build_adm_channels_scale():
    unet = build_adm('adm-imagenet64-cond', channels_scale=1 / 6, image_size=16)
    assert unet.model_channels == 32 and unet.image_size == 16
    assert unet.input_blocks[5][1].num_heads == 64 // 8                # Head channels 64 / 6 -> 8 (divides 32).


def test_denoiser_errors():
    fake = FakeUNet(lambda x_t: x_t, num_classes=10)
    denoiser = ADMDenoiser(fake, get_schedule('ddpm-linear'), learn_sigma=True)
    x, labels = torch.zeros([2, 3, 8, 8]), torch.zeros([2, 10])
    cases = [
        (ValueError, lambda: build_adm('adm-imagenet256-cond'), "preset='adm-imagenet256-cond': expected one of "
         "['adm-imagenet64-cond', 'adm-imagenet128-cond', 'adm-lsun-bedroom256']"),
        (ValueError, lambda: ADMDenoiser.from_preset('edm'), "preset='edm': expected one of "
         "['adm-imagenet64-cond', 'adm-imagenet128-cond', 'adm-lsun-bedroom256']"),
        (ValueError, lambda: build_adm('adm-imagenet64-cond', channels_scale=2), 'channels_scale=2: expected a '
         'number in (0, 1]'),
        (ValueError, lambda: build_adm('adm-lsun-bedroom256', image_size=48), "image_size=48: expected a positive "
         "multiple of 32 for preset 'adm-lsun-bedroom256'"),
        (ValueError, lambda: denoiser(x, 0.1), 'labels is None but the ADM model is class-conditional: pass one-hot '
         'labels [N, 10]'),
        (ValueError, lambda: denoiser(x, 0.1, torch.zeros([2, 5])), 'labels has shape [2, 5]: expected [2, 10]'),
        (ValueError, lambda: denoiser(torch.zeros([2, 3, 16, 16]), 0.1, labels), 'x has shape [2, 3, 16, 16]: '
         'expected [N, 3, 8, 8] (the model is 8x8; resize the images to match)'),
        (ValueError, lambda: denoiser(x, torch.zeros([3]), labels),
         'sigma has shape [3]: expected a scalar, [2] or [2, 1, 1, 1]'),
        (ValueError, lambda: ADMDenoiser(FakeUNet(None, learn_sigma=False), get_schedule('karras'), True),
         'learn_sigma=True with out_channels=3: expected 2 * in_channels=3'),
    ]
    for error, call, message in cases:
        with pytest.raises(error, match=f'^{re.escape(message)}$'):
            call()


@pytest.mark.cuda
def test_fp16_on_cuda_matches_fp32_on_cpu():
    unet = randomize(ADMUNet(**{**TINY, 'use_fp16': True}), seed=11, std=0.05).eval()
    gen = torch.Generator().manual_seed(12)
    x, t, y = torch.randn([2, 3, 16, 16], generator=gen), torch.tensor([10, 900]), torch.tensor([1, 2])
    with torch.no_grad():
        reference = unet(x, t, y)                                     # float32 on the CPU.
        half = unet.cuda()(x.cuda(), t.cuda(), y.cuda())
    assert half.dtype == torch.float32 and unet.out[2].weight.dtype == torch.float32
    torch.testing.assert_close(half.cpu(), reference, rtol=2e-2, atol=2e-2)
