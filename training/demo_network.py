"""A tiny persistent generator built from the torch_utils ops, used by `inspect_pkl.py`'s built-in demo.

It exercises what a StyleGAN2 generator pickle exercises (persistence, EasyDict kwargs, a numpy.float64
attribute, buffers, bias_act, conv2d_resample with upsampling, fma) at a size that runs instantly on a CPU.
The real StyleGAN2 networks live in `training/networks.py` (issue 4).
"""

import copy
import pickle

import numpy as np
import torch

import dnnlib
from torch_utils import misc, persistence
from torch_utils.ops import bias_act, conv2d_resample, fma, upfirdn2d


@persistence.persistent_class
class UpBlock(torch.nn.Module):
    """3x3 conv with 2x upsampling (FIR [1,3,3,1]), per-pixel noise and lrelu."""

    def __init__(self, in_channels: int, out_channels: int, resolution: int):
        super().__init__()
        self.resolution = resolution
        self.weight_gain = np.float64(1 / np.sqrt(in_channels * 9))  # equalized learning rate
        self.weight = torch.nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.bias = torch.nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = torch.nn.Parameter(torch.zeros([]))
        self.register_buffer("resample_filter", upfirdn2d.setup_filter([1, 3, 3, 1]))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))

    def forward(self, x):  # [N, I, R/2, R/2] -> [N, O, R, R]
        w = (self.weight * self.weight_gain).to(x.dtype)
        x = conv2d_resample.conv2d_resample(x, w, f=self.resample_filter, up=2, padding=1, flip_weight=False)
        misc.assert_shape(x, [None, self.weight.shape[0], self.resolution, self.resolution])
        x = fma.fma(self.noise_const, self.noise_strength, x)
        return bias_act.bias_act(x, self.bias, act="lrelu")


@persistence.persistent_class
class DemoGenerator(torch.nn.Module):
    """z [N, z_dim] -> image [N, img_channels, img_resolution, img_resolution] in roughly [-1, 1]."""

    def __init__(self, z_dim: int = 16, img_resolution: int = 16, img_channels: int = 3, block_kwargs: dict = {}):
        super().__init__()
        if img_resolution < 8 or img_resolution & (img_resolution - 1):
            raise ValueError(f"img_resolution={img_resolution}: expected a power of two >= 8")
        kwargs = dnnlib.EasyDict({"channels": 16, **block_kwargs})
        self.z_dim, self.img_resolution, self.img_channels = z_dim, img_resolution, img_channels
        self.fc = torch.nn.Linear(z_dim, kwargs.channels * 16)
        self.blocks = torch.nn.ModuleList()
        res = 8
        while res <= img_resolution:
            self.blocks.append(UpBlock(kwargs.channels, kwargs.channels, res))
            res *= 2
        self.torgb = torch.nn.Conv2d(kwargs.channels, img_channels, 1)

    def forward(self, z):
        misc.assert_shape(z, [None, self.z_dim])
        x = bias_act.bias_act(self.fc(z), act="lrelu").reshape(z.shape[0], -1, 4, 4)
        for block in self.blocks:
            x = block(x)
        return torch.tanh(self.torgb(x))


def write_demo_snapshot(path: str, seed: int = 0) -> dict:
    """Write a StyleGAN2-ADA style snapshot dict (G, G_ema, training_set_kwargs, augment_pipe) atomically; return it."""
    with torch.random.fork_rng():  # Seed the weights without disturbing the caller's global RNG.
        torch.manual_seed(seed)
        G = DemoGenerator(z_dim=16, img_resolution=16, img_channels=3, block_kwargs=dict(channels=16))
        G = G.eval().requires_grad_(False)
    snapshot = dict(G=G, G_ema=copy.deepcopy(G), training_set_kwargs=None, augment_pipe=None)
    dnnlib.util.write_atomically(path, pickle.dumps(snapshot))
    return snapshot
