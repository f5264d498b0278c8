"""Tiny EDM network configurations and inputs shared by the edm_networks tests.

This directory is on pytest's `pythonpath` (pyproject.toml), so tests `import edm_tiny_nets`.
"""

import torch
import torch.nn.functional as F

from edm_bridge import edm_networks as nets

SONG = dict(model_type='SongUNet', model_channels=16, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[8],
            dropout=0)
# DhariwalUNet fixes 64 channels per head, so at <= 32 channels it has no attention;
# test_unet_block_matches_functional_reference covers ADM-style attention blocks directly.
DHARIWAL = dict(model_type='DhariwalUNet', model_channels=16, channel_mult=[1, 2], num_blocks=1,
                attn_resolutions=[8], dropout=0)


def randomize(net, seed=0, scale=0.3):
    """Random parameters everywhere: zero-initialised output layers would hide most of the computation."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale)
    return net


def inputs(N=2, C=3, res=16, label_dim=0, seed=1, dtype=torch.float32):
    """Seeded x [N, C, res, res], sigma [N] and one-hot labels [N, label_dim] (None when label_dim is 0)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn([N, C, res, res], generator=gen, dtype=dtype)
    sigma = torch.tensor([0.3, 2.5, 0.05, 11.0][:N], dtype=dtype)
    labels = F.one_hot(torch.arange(N) % max(label_dim, 1), max(label_dim, 1)).to(dtype)[:, :label_dim]
    return x, sigma, (labels if label_dim else None)


def tiny(cls, seed=0, res=16, label_dim=0, **kwargs):
    """A randomized eval-mode preconditioner `cls` on a tiny SongUNet (DhariwalUNet for iDDPMPrecond)."""
    torch.manual_seed(seed)
    kwargs = {**(DHARIWAL if cls is nets.iDDPMPrecond else SONG), **kwargs}
    return randomize(cls(res, 3, label_dim=label_dim, **kwargs).eval(), seed=seed)
