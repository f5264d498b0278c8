"""Tiny stand-ins for the metrics tests: Inception-v3 / VGG16 detectors with the official call convention, and an
8x8 generator.

`detector(x uint8 [N, 3, H, W], return_features=False, no_output_bias=False)`: features [N, F] with
return_features, else class probabilities [N, K]; `return_lpips=True` (VGG16's LPIPS call, float images in [0, 255])
gives unit-length features [N, F]. A fixed random projection of the 4x4 area-averaged image, so
features depend on the pixels and tests run in milliseconds. This directory is on pytest's `pythonpath`.
"""

import pathlib
import pickle
import warnings

import torch

from torch_utils import persistence
from training import networks


class TinyDetector(torch.nn.Module):
    def __init__(self, num_features: int = 8, num_classes: int = 10, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer('proj', torch.randn([3 * 4 * 4, num_features], generator=gen) / 4)
        self.register_buffer('head', torch.randn([num_features, num_classes], generator=gen))

    def forward(self, x: torch.Tensor, return_features: bool = False, no_output_bias: bool = False,
                resize_images: bool = True, return_lpips: bool = False) -> torch.Tensor:
        x = torch.nn.functional.adaptive_avg_pool2d(x.to(torch.float32) / 127.5 - 1, [4, 4])  # [N, 3, 4, 4]
        features = x.flatten(1) @ self.proj  # [N, F]
        if return_lpips:  # VGG16's LPIPS embedding (float [0, 255] input): unit-length features, differentiable.
            return features / features.square().sum(dim=1, keepdim=True).sqrt().clamp(min=1e-8)
        if return_features:
            return features
        return torch.softmax(features @ self.head * 4, dim=1)  # [N, K]


PersistentTinyDetector = persistence.persistent_class(TinyDetector)


def save_torchscript(path, **kwargs):
    """Script a TinyDetector and save it as a TorchScript archive (like inception-2015-12-05.pt); return the path."""
    with warnings.catch_warnings():  # torch >= 2.10 deprecates TorchScript; the official detectors still use it.
        warnings.simplefilter('ignore', DeprecationWarning)
        torch.jit.script(TinyDetector(**kwargs)).save(str(path))
    return str(path)


def save_pickle(path, **kwargs):
    """Pickle a persistent TinyDetector (like StyleGAN3's .pkl detectors: loading runs its source); return the path."""
    with open(path, 'wb') as f:
        pickle.dump(PersistentTinyDetector(**kwargs), f)
    return str(path)


class _Payload:
    """Unpickling this creates the marker file (a stand-in for any code a hostile pickle could run)."""

    def __init__(self, marker):
        self.marker = pathlib.Path(marker)

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def save_payload(path, marker):
    """A hostile 'detector': a pickle that creates `marker` when loaded with pickle.load; return the path."""
    with open(path, 'wb') as f:
        pickle.dump(_Payload(marker), f)
    return str(path)


def make_generator(c_dim=0, seed=0):
    """An 8x8 RGB Generator with 16 channels at most, randomly initialised from `seed`, in eval mode."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return networks.Generator(z_dim=8, c_dim=c_dim, w_dim=8, img_resolution=8, img_channels=3,
                                  mapping_kwargs=dict(num_layers=2),
                                  synthesis_kwargs=dict(channel_base=64, channel_max=16)).eval()
