"""Pickles whose stored source calls the torch_utils API the way StyleGAN3, EDM and the SG2-ADA augment pipe do.

Each source below is a small stand-in written for this test that uses the calls the spec lists for that producer
(docs/spec/nvidia-pickles.md section 2): keyword calls such as `conv2d_gradfix.conv2d(input=..., weight=...)`,
`filtered_lrelu`, `misc.constant` with a negatively strided array, positional `grid_sample`, EDM's
`from torch.nn.functional import silu`, `torch.nn.ModuleDict` nesting and a persistent non-module `loss_fn`.
The trusted load must exec the stored text and reproduce the outputs bit for bit; the safe load must give the same
tensors and attributes without running it.
"""

import io
import pickle

import torch

from torch_utils import safe_pickle

SG3_SOURCE = '''
import numpy as np
import scipy.signal
import torch
from torch_utils import misc, persistence
from torch_utils.ops import bias_act, conv2d_gradfix, filtered_lrelu


@persistence.persistent_class
class AliasFreeLayer(torch.nn.Module):
    def __init__(self, channels, w_dim, up=2, down=2, taps=6, seed=0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.channels, self.up, self.down, self.taps = channels, up, down, taps
        self.affine_weight = torch.nn.Parameter(torch.randn([channels, w_dim], generator=gen))
        self.weight = torch.nn.Parameter(torch.randn([channels, channels, 3, 3], generator=gen))
        self.bias = torch.nn.Parameter(torch.randn([channels], generator=gen) * 0.1)
        fu = scipy.signal.firwin(numtaps=taps * up, cutoff=0.5, fs=2 * up)
        fd = scipy.signal.firwin(numtaps=taps * down, cutoff=0.5, fs=2 * down)
        self.register_buffer('up_filter', torch.as_tensor(fu, dtype=torch.float32))
        self.register_buffer('down_filter', torch.as_tensor(fd, dtype=torch.float32))
        self.padding = [taps * up - 1, taps * up - 1, taps * up - 1, taps * up - 1]

    def forward(self, x, w):
        misc.assert_shape(x, [None, self.channels, None, None])
        with misc.suppress_tracer_warnings():
            batch_size = int(x.shape[0])
        styles = bias_act.bias_act(w @ self.affine_weight.t(), act='linear')      # [N, C]
        wt = self.weight[None] * styles[:, None, :, None, None]                  # [N, O, I, 3, 3]
        wt = wt * (wt.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8).rsqrt()  # demodulate
        x = conv2d_gradfix.conv2d(input=x.reshape(1, -1, *x.shape[2:]), weight=wt.reshape(-1, self.channels, 3, 3),
                                  padding=1, groups=batch_size)
        x = x.reshape(batch_size, self.channels, *x.shape[2:])
        return filtered_lrelu.filtered_lrelu(x=x, fu=self.up_filter, fd=self.down_filter, b=self.bias.to(x.dtype),
                                             up=self.up, down=self.down, padding=self.padding,
                                             gain=np.sqrt(2), slope=0.2, clamp=256)
'''

EDM_SOURCE = '''
import numpy as np
import torch
from torch.nn.functional import silu
from torch_utils import persistence


@persistence.persistent_class
class Linear(torch.nn.Module):
    def __init__(self, in_features, out_features, seed=0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.weight = torch.nn.Parameter(torch.randn([out_features, in_features], generator=gen) / np.sqrt(in_features))
        self.bias = torch.nn.Parameter(torch.zeros([out_features]))

    def forward(self, x):
        return x @ self.weight.t() + self.bias


@persistence.persistent_class
class TinyDenoiserNet(torch.nn.Module):
    def __init__(self, channels, hidden):
        super().__init__()
        self.map = torch.nn.ModuleDict()
        self.map['noise'] = Linear(1, hidden, seed=1)
        self.enc = torch.nn.ModuleList([Linear(channels, hidden, seed=2), Linear(hidden, channels, seed=3)])

    def forward(self, x, noise_labels):
        emb = silu(self.map['noise'](noise_labels[:, None]))           # [N, hidden]
        h = self.enc[0](x.permute(0, 2, 3, 1)) + emb[:, None, None, :]  # [N, H, W, hidden]
        return self.enc[1](silu(h)).permute(0, 3, 1, 2)


@persistence.persistent_class
class TinyEDMPrecond(torch.nn.Module):
    def __init__(self, img_resolution, img_channels, sigma_data=0.5, **model_kwargs):
        super().__init__()
        self.img_resolution, self.img_channels, self.sigma_data = img_resolution, img_channels, sigma_data
        self.model = TinyDenoiserNet(img_channels, **model_kwargs)

    def forward(self, x, sigma):
        sigma = sigma.to(torch.float32).reshape(-1, 1, 1, 1)
        c_skip = self.sigma_data ** 2 / (sigma ** 2 + self.sigma_data ** 2)
        c_out = sigma * self.sigma_data / (sigma ** 2 + self.sigma_data ** 2).sqrt()
        c_in = 1 / (self.sigma_data ** 2 + sigma ** 2).sqrt()
        F_x = self.model(c_in * x, sigma.log().flatten() / 4)
        return c_skip * x + c_out * F_x


@persistence.persistent_class
class TinyEDMLoss:
    def __init__(self, P_mean=-1.2, P_std=1.2, sigma_data=0.5):
        self.P_mean, self.P_std, self.sigma_data = P_mean, P_std, sigma_data
'''

AUGMENT_SOURCE = '''
import numpy as np
import torch
from torch_utils import misc, persistence
from torch_utils.ops import conv2d_gradfix, grid_sample_gradfix, upfirdn2d

wavelet = [0.1, 0.2, 0.4, 0.2, 0.1, 0.05]


@persistence.persistent_class
class TinyAugmentPipe(torch.nn.Module):
    def __init__(self, rotate=1.0):
        super().__init__()
        self.rotate = float(rotate)
        self.register_buffer('p', torch.ones([]))
        self.register_buffer('Hz_geom', upfirdn2d.setup_filter(wavelet))

    def forward(self, images):
        N, C, H, W = images.shape
        # A negatively strided numpy array with dtype=, as the official augment pipe passes.
        flipped = misc.constant(np.asarray(wavelet)[::-1], dtype=torch.float32, device=images.device)
        images = conv2d_gradfix.conv2d(input=images, weight=flipped.reshape(1, 1, 1, -1).repeat(C, 1, 1, 1),
                                       padding=[0, 2], groups=C)
        theta = torch.tensor([[np.cos(self.rotate), -np.sin(self.rotate), 0.0],
                              [np.sin(self.rotate), np.cos(self.rotate), 0.0]], dtype=torch.float32)
        grid = torch.nn.functional.affine_grid(theta[None].repeat(N, 1, 1), [N, C, H, W - 1], align_corners=False)
        images = grid_sample_gradfix.grid_sample(images, grid)
        return upfirdn2d.upfirdn2d(x=images, f=self.Hz_geom, up=2, padding=[5, 5, 5, 5], gain=4) * self.p
'''


def _sg3_snapshot(module):
    layer = module.AliasFreeLayer(channels=4, w_dim=8).eval().requires_grad_(False)
    return dict(G=layer, D=None, G_ema=layer, training_set_kwargs=None, augment_pipe=None)


def _edm_snapshot(module):
    net = module.TinyEDMPrecond(img_resolution=8, img_channels=3, hidden=16).eval().requires_grad_(False)
    return dict(ema=net, loss_fn=module.TinyEDMLoss(P_mean=-1.0), augment_pipe=None,
                dataset_kwargs=dict(class_name='training.dataset.ImageFolderDataset', path='cifar.zip'))


def _assert_safe_load_matches(data, modules):
    loaded = safe_pickle.safe_load(io.BytesIO(data))
    for key, module in modules.items():
        record = loaded[key]
        assert record.class_name == type(module).__name__
        expected = module.state_dict()
        assert sorted(record.state_dict) == sorted(expected)
        for name, tensor in expected.items():
            assert torch.equal(record.state_dict[name], tensor), name
    return loaded


def test_stylegan3_style_source(nvidia_dumps):
    snapshot, data = nvidia_dumps(SG3_SOURCE, _sg3_snapshot)
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn([2, 4, 12, 12], generator=gen), torch.randn([2, 8], generator=gen)
    expected = snapshot['G'](x, w)
    assert expected.shape == (2, 4, 12, 12)  # up=2, down=2 with 2 * (taps * up - 1) padding preserve the size.
    loaded = pickle.loads(data)
    assert type(loaded['G']).__module__ != type(snapshot['G']).__module__  # the stored text was exec'd afresh
    assert loaded['G'] is loaded['G_ema']
    assert torch.equal(loaded['G'](x, w), expected)
    _assert_safe_load_matches(data, {'G': snapshot['G']})


def test_edm_style_source(nvidia_dumps):
    snapshot, data = nvidia_dumps(EDM_SOURCE, _edm_snapshot)
    gen = torch.Generator().manual_seed(1)
    x, sigma = torch.randn([3, 3, 8, 8], generator=gen), torch.tensor([0.1, 1.0, 20.0])
    loaded = pickle.loads(data)
    assert torch.equal(loaded['ema'](x, sigma), snapshot['ema'](x, sigma))
    assert (loaded['loss_fn'].P_mean, loaded['loss_fn'].P_std) == (-1.0, 1.2)
    assert loaded['ema'].init_kwargs == dict(img_resolution=8, img_channels=3, hidden=16)

    records = _assert_safe_load_matches(data, {'ema': snapshot['ema']})
    assert 'model.map.noise.weight' in records['ema'].state_dict  # ModuleDict nesting flattened like state_dict()
    assert records['ema'].init_kwargs == dict(img_resolution=8, img_channels=3, hidden=16)
    assert records['ema'].attrs['sigma_data'] == 0.5
    loss = records['loss_fn']
    assert (loss.class_name, loss.state_dict, loss.init_kwargs) == ('TinyEDMLoss', {}, dict(P_mean=-1.0))
    assert loss.attrs == dict(P_mean=-1.0, P_std=1.2, sigma_data=0.5)
    assert records['dataset_kwargs']['path'] == 'cifar.zip'


def test_augment_style_source(nvidia_dumps):
    snapshot, data = nvidia_dumps(AUGMENT_SOURCE, lambda module: dict(augment_pipe=module.TinyAugmentPipe(0.3)))
    images = torch.randn([2, 3, 8, 8], generator=torch.Generator().manual_seed(2))
    expected = snapshot['augment_pipe'](images)
    assert expected.shape == (2, 3, 16 + 10 - 5, 14 + 10 - 5)  # (in * 2 + 10 - (6 - 1)) with W - 1 from the grid
    loaded = pickle.loads(data)
    assert torch.equal(loaded['augment_pipe'](images), expected)
    _assert_safe_load_matches(data, {'augment_pipe': snapshot['augment_pipe']})
