"""The StyleGAN2 generator (training.networks): the official parameter counts and names, shapes, noise modes,
truncation, fused vs non-fused modconv, weight copies, double backward, fp16 blocks on CPU and pickles that load
with only torch_utils and dnnlib importable."""

import copy
import pickle

import numpy as np
import pytest
import torch

import training.networks as networks
from isolated_load import run_without_repo
from torch_utils import misc
from training.networks import Discriminator, Generator, SynthesisNetwork



def _num_params(module):
    return sum(p.numel() for p in module.parameters())


def _tiny_G(seed=0, c_dim=3, res=16, **synthesis_kwargs):
    torch.manual_seed(seed)
    synthesis_kwargs = dict(channel_base=256, channel_max=32, **synthesis_kwargs)
    return Generator(z_dim=12, c_dim=c_dim, w_dim=10, img_resolution=res, img_channels=3,
                     mapping_kwargs=dict(num_layers=2), synthesis_kwargs=synthesis_kwargs)


def _inputs(G, batch=2, seed=1):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn([batch, G.z_dim], generator=gen)
    c = torch.nn.functional.one_hot(torch.arange(batch) % max(G.c_dim, 1), max(G.c_dim, 1)).float()[:, :G.c_dim]
    return z, c


def _set_noise_strength(G, value):
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith('noise_strength'):
                p.fill_(value)


# ----------------------------------------------------------------------------------------------------------------------
# The official numbers (docs/spec/stylegan2-ada.md 3.5) and names (docs/spec/nvidia-pickles.md 3.4).

CIFAR_G = dict(z_dim=512, w_dim=512, img_resolution=32, img_channels=3, mapping_kwargs=dict(num_layers=2),
               synthesis_kwargs=dict(channel_base=32768, channel_max=512, num_fp16_res=4, conv_clamp=256))
CIFAR_D = dict(img_resolution=32, img_channels=3, architecture='orig', channel_base=32768, channel_max=512,
               num_fp16_res=4, conv_clamp=256, epilogue_kwargs=dict(mbstd_group_size=32))


@pytest.mark.parametrize('name,build,expected', [
    ('cifar G', lambda: Generator(c_dim=0, **CIFAR_G), 19_947_539),
    ('cifar G mapping', lambda: Generator(c_dim=0, **CIFAR_G).mapping, 525_312),
    ('cifar G synthesis', lambda: SynthesisNetwork(512, 32, 3, channel_base=32768, channel_max=512), 19_422_227),
    ('cifar G c_dim=10', lambda: Generator(c_dim=10, **CIFAR_G), 20_215_315),
    ('cifar D', lambda: Discriminator(c_dim=0, **CIFAR_D), 20_720_641),
    ('cifar D c_dim=10', lambda: Discriminator(c_dim=10, **CIFAR_D), 23_089_664),
    ('auto@32 D', lambda: Discriminator(0, 32, 3, channel_base=16384, epilogue_kwargs=dict(mbstd_group_size=4)),
     21_507_073),
    ('G 8 mapping layers', lambda: Generator(512, 0, 512, 32, 3), 21_523_475),
])
def test_official_parameter_counts(name, build, expected):
    assert _num_params(build()) == expected, name


def _conv_names(prefix, noise=True):
    names = [f'{prefix}.weight'] + ([f'{prefix}.noise_strength'] if noise else []) + [f'{prefix}.bias']
    return names + [f'{prefix}.affine.weight', f'{prefix}.affine.bias']


def test_generator_parameter_and_buffer_names_and_shapes():
    G = _tiny_G(res=8, architecture='resnet')
    s = 'synthesis'
    assert [n for n, _ in G.named_parameters()] == (
        [f'{s}.b4.const'] + _conv_names(f'{s}.b4.conv1')  # 'resnet': ToRGB in the last block only
        + _conv_names(f'{s}.b8.conv0') + _conv_names(f'{s}.b8.conv1') + _conv_names(f'{s}.b8.torgb', noise=False)
        + [f'{s}.b8.skip.weight', 'mapping.embed.weight', 'mapping.embed.bias', 'mapping.fc0.weight',
           'mapping.fc0.bias', 'mapping.fc1.weight', 'mapping.fc1.bias'])
    assert [n for n, _ in G.named_buffers()] == [
        f'{s}.b4.resample_filter', f'{s}.b4.conv1.resample_filter', f'{s}.b4.conv1.noise_const',
        f'{s}.b8.resample_filter', f'{s}.b8.conv0.resample_filter', f'{s}.b8.conv0.noise_const',
        f'{s}.b8.conv1.resample_filter', f'{s}.b8.conv1.noise_const', f'{s}.b8.skip.resample_filter',
        'mapping.w_avg']
    shapes = {n: list(t.shape) for n, t in misc.named_params_and_buffers(G)}
    # channel_base 256 -> 32 channels at 4x4 and 8x8; w_dim 10, z_dim 12, embed 10.
    assert shapes[f'{s}.b4.const'] == [32, 4, 4] and shapes[f'{s}.b4.conv1.weight'] == [32, 32, 3, 3]
    assert shapes[f'{s}.b4.conv1.noise_strength'] == [] and shapes[f'{s}.b8.conv0.noise_const'] == [8, 8]
    assert shapes[f'{s}.b8.torgb.weight'] == [3, 32, 1, 1] and shapes[f'{s}.b8.torgb.affine.weight'] == [32, 10]
    assert shapes[f'{s}.b8.skip.weight'] == [32, 32, 1, 1] and shapes[f'{s}.b4.resample_filter'] == [4, 4]
    assert shapes['mapping.fc0.weight'] == [10, 22] and shapes['mapping.w_avg'] == [10]
    assert torch.equal(G.synthesis.b4.conv1.affine.bias, torch.ones(32))  # styles start at 1


def test_re_exports_resolve_by_official_names():
    import dnnlib
    for name in ['Generator', 'Discriminator', 'MappingNetwork', 'SynthesisNetwork', 'SynthesisBlock',
                 'SynthesisLayer', 'ToRGBLayer', 'FullyConnectedLayer', 'Conv2dLayer', 'DiscriminatorBlock',
                 'DiscriminatorEpilogue', 'MinibatchStdLayer', 'normalize_2nd_moment', 'modulated_conv2d']:
        assert dnnlib.util.get_obj_by_name(f'training.networks.{name}') is getattr(networks, name)
    D = dnnlib.util.construct_class_by_name(class_name='training.networks.Discriminator', c_dim=0,
                                            img_resolution=8, img_channels=3, channel_base=64)
    assert D(torch.zeros(4, 3, 8, 8), None).shape == (4, 1)


# ----------------------------------------------------------------------------------------------------------------------
# Behaviour.

@pytest.mark.parametrize('architecture', ['orig', 'skip', 'resnet'])
def test_generator_output_shape_num_ws_and_range(architecture):
    for res in (8, 16, 32):
        assert _tiny_G(res=res, architecture=architecture).num_ws == 2 * int(np.log2(res)) - 2
    G = _tiny_G(res=32, architecture=architecture)
    assert G.num_ws == 8 and G.mapping.num_ws == 8
    img = G(*_inputs(G, batch=3), noise_mode='random')
    assert img.shape == (3, 3, 32, 32) and img.dtype == torch.float32
    assert torch.isfinite(img).all() and 0.05 < img.std() < 20


def test_noise_modes():
    G = _tiny_G().eval()
    z, c = _inputs(G)
    _set_noise_strength(G, 0.0)
    silent = G(z, c, noise_mode='const')
    _set_noise_strength(G, 0.5)
    assert torch.equal(G(z, c, noise_mode='none'), silent)  # 'none' ignores noise_strength
    const = G(z, c, noise_mode='const')
    assert torch.equal(G(z, c, noise_mode='const'), const) and not torch.allclose(const, silent, atol=1e-3)
    torch.manual_seed(5)
    first = G(z, c, noise_mode='random')
    torch.manual_seed(5)
    assert torch.equal(G(z, c, noise_mode='random'), first)
    torch.manual_seed(6)
    assert not torch.allclose(G(z, c, noise_mode='random'), first, atol=1e-3)
    with pytest.raises(ValueError, match=r"^noise_mode='zero': expected one of \['random', 'const', 'none'\]$"):
        G(z, c, noise_mode='zero')


def test_truncation_psi_zero_gives_the_image_of_w_avg():
    G = _tiny_G().eval()
    z, c = _inputs(G)
    w_avg = torch.randn([G.w_dim], generator=torch.Generator().manual_seed(3))
    G.mapping.w_avg.copy_(w_avg)
    expected = G.synthesis(w_avg.repeat(2, G.num_ws, 1), noise_mode='const')
    assert torch.equal(G(z, c, truncation_psi=0, noise_mode='const'), expected)
    # With a cutoff only the first ws move toward w_avg, so the image differs from both extremes.
    cut = G(z, c, truncation_psi=0, truncation_cutoff=2, noise_mode='const')
    assert not torch.allclose(cut, expected, atol=1e-4) and not torch.allclose(cut, G(z, c, noise_mode='const'))


def test_w_avg_keywords_pass_through_the_generator():
    G = _tiny_G().train()
    z, c = _inputs(G)
    before = G.mapping.w_avg.clone()
    G(z, c, skip_w_avg_update=True)
    assert torch.equal(G.mapping.w_avg, before)
    G.eval()(z, c, update_emas=True)  # StyleGAN3's keyword: update regardless of the mode
    assert not torch.equal(G.mapping.w_avg, before)
    img = G.synthesis(G.mapping(z, c), update_emas=True, noise_mode='none')  # accepted, no-op in synthesis
    assert torch.equal(img, G.synthesis(G.mapping(z, c), noise_mode='none'))


def test_fused_and_non_fused_modconv_agree():
    G = _tiny_G(architecture='resnet').eval()
    _set_noise_strength(G, 0.3)
    z, c = _inputs(G, batch=3)
    fused = G(z, c, noise_mode='const', fused_modconv=True)
    torch.testing.assert_close(G(z, c, noise_mode='const', fused_modconv=False), fused, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(G(z, c, noise_mode='const'), fused, rtol=0, atol=0)  # eval fp32 default: fused


def test_copy_params_and_buffers_reproduces_outputs():
    G0, G1 = _tiny_G(seed=0), _tiny_G(seed=1)
    z, c = _inputs(G0)
    assert not torch.equal(G0.eval()(z, c, noise_mode='const'), G1.eval()(z, c, noise_mode='const'))
    misc.copy_params_and_buffers(G0, G1, require_all=True)
    assert torch.equal(G0(z, c, noise_mode='const'), G1(z, c, noise_mode='const'))
    for (n0, t0), (n1, t1) in zip(misc.named_params_and_buffers(G0), misc.named_params_and_buffers(G1)):
        assert n0 == n1 and torch.equal(t0, t1)


def test_double_backward_through_synthesis_path_length_style():
    G = _tiny_G(architecture='skip').train()
    _set_noise_strength(G, 0.1)
    z, c = _inputs(G, batch=2)
    ws = G.mapping(z, c).detach().requires_grad_()
    img = G.synthesis(ws)  # training mode: non-fused modconv with fma noise
    pl_noise = torch.randn(img.shape, generator=torch.Generator().manual_seed(2)) / np.sqrt(16 * 16)
    (pl_grads,) = torch.autograd.grad((img * pl_noise).sum(), ws, create_graph=True)
    assert pl_grads.shape == ws.shape and pl_grads.abs().sum() > 0
    pl_grads.square().sum(2).mean(1).sqrt().mean().backward()
    for name in ['synthesis.b4.const', 'synthesis.b8.conv0.weight', 'synthesis.b16.conv1.affine.weight',
                 'synthesis.b16.torgb.weight', 'synthesis.b16.conv1.noise_strength']:
        grad = G.get_parameter(name).grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def test_fp16_blocks_run_in_fp32_on_cpu():
    G16 = _tiny_G(num_fp16_res=2, conv_clamp=256, fp16_channels_last=True)
    G32 = _tiny_G(seed=4, num_fp16_res=0, conv_clamp=256)
    misc.copy_params_and_buffers(G16, G32, require_all=True)
    assert [G16.synthesis.b8.use_fp16, G16.synthesis.b16.use_fp16, G16.synthesis.b4.use_fp16] == [True, True, False]
    z, c = _inputs(G16)
    for force_fp32 in (False, True):
        img = G16.eval()(z, c, noise_mode='const', force_fp32=force_fp32)
        assert img.dtype == torch.float32
        torch.testing.assert_close(img, G32.eval()(z, c, noise_mode='const'), rtol=1e-6, atol=1e-6)


def test_generator_argument_errors():
    with pytest.raises(ValueError, match=r'^img_resolution=24: expected a power of two >= 4$'):
        _tiny_G(res=24)
    with pytest.raises(ValueError, match=r"^architecture='unet': expected one of \['orig', 'skip', 'resnet'\]$"):
        _tiny_G(architecture='unet')
    G = _tiny_G()
    with pytest.raises(ValueError, match=r'^ws must be a tensor of shape \[N, 6, 10\], got \[2, 5, 10\]$'):
        G.synthesis(torch.zeros(2, 5, 10))


# ----------------------------------------------------------------------------------------------------------------------
# Pickles.

def test_pickle_round_trip_in_process():
    G = _tiny_G().eval()
    z, c = _inputs(G)
    G2 = pickle.loads(pickle.dumps(G))
    assert type(G2) is Generator and G2.init_kwargs == G.init_kwargs
    assert torch.equal(G2(z, c, noise_mode='const'), G(z, c, noise_mode='const'))
    assert torch.equal(copy.deepcopy(G)(z, c, noise_mode='const'), G(z, c, noise_mode='const'))


def test_pickles_load_with_only_torch_utils_and_dnnlib(tmp_path):
    G = _tiny_G(architecture='resnet').eval()
    _set_noise_strength(G, 0.2)
    torch.manual_seed(0)
    D = Discriminator(3, 16, 3, channel_base=256, channel_max=32, mapping_kwargs=dict(num_layers=2)).eval()
    z, c = _inputs(G)
    img = G(z, c, noise_mode='const')
    logits = D(img, c)
    out = run_without_repo(tmp_path, dict(G=G, D=D, z=z, c=c), """
        G, D = data['G'], data['D']
        assert type(G).__module__.startswith('_imported_module_') and type(G).__name__ == 'Generator'
        img = G(data['z'], data['c'], noise_mode='const')
        out.update(img=img, logits=D(img, data['c']))
    """)
    assert torch.equal(out['img'], img) and torch.equal(out['logits'], logits)
