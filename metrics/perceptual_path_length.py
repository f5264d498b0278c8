"""Perceptual path length (Karras et al., "A Style-Based Generator Architecture for GANs", CVPR 2019, eq. 3-4), with
StyleGAN2-ADA's definitions: ppl2_wend and the legacy ppl_zfull, ppl_wfull, ppl_zend, ppl_wend.

For a pair of latents (z0, z1) and t ~ U(0, 1) ('full') or t = 0 ('end'), PPL measures how fast the image moves
along the interpolation path: d = ||phi(g(lerp(t))) - phi(g(lerp(t + eps)))||^2 / eps^2, with slerp in Z (eq. 3) or
lerp in W (eq. 4), phi the LPIPS embedding of the VGG16 detector (vgg16.pt, called with resize_images=False,
return_lpips=True on float images in [0, 255]) and eps = 1e-4. Images are made with constant noise inputs, drawn
anew per batch, in fp32; for faces the legacy metrics crop the central face region (rows 3/8..7/8, columns
2/8..6/8); above 256 px they are box-downsampled to 256. The result is the mean of d over the samples within the
1st-99th percentile (numpy 'lower' / 'higher' percentiles, so the kept set is a subset of the samples).
"""

import copy

import numpy as np
import torch

from metrics import detectors, metric_utils

SPACES, SAMPLINGS = ('z', 'w'), ('full', 'end')


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of the directions of a, b [N, D] by t [N, 1] (unit-length result), as StyleGAN's PPL."""
    a = a / a.norm(dim=-1, keepdim=True)
    b = b / b.norm(dim=-1, keepdim=True)
    cos = (a * b).sum(dim=-1, keepdim=True)
    angle = t * torch.acos(cos)
    ortho = b - cos * a
    ortho = ortho / ortho.norm(dim=-1, keepdim=True)
    out = a * torch.cos(angle) + ortho * torch.sin(angle)
    return out / out.norm(dim=-1, keepdim=True)


def face_crop(img: torch.Tensor) -> torch.Tensor:
    """The legacy metrics' face crop of square images [N, C, H, W]: rows 3H/8..7H/8, columns 2W/8..6W/8."""
    if img.shape[2] != img.shape[3]:
        raise ValueError(f'the PPL face crop needs square images, got {img.shape[2]}x{img.shape[3]}')
    c = img.shape[2] // 8
    return img[:, :, c * 3: c * 7, c * 2: c * 6]


def interpolated_ws(G: torch.nn.Module, z0: torch.Tensor, z1: torch.Tensor, c: torch.Tensor, t: torch.Tensor,
                    epsilon: float, space: str) -> tuple[torch.Tensor, torch.Tensor]:
    """ws [N, num_ws, w_dim] at t and at t + epsilon along the Z slerp or W lerp path from z0 to z1 [N, z_dim]."""
    if space == 'w':
        w0, w1 = G.mapping(z=torch.cat([z0, z1]), c=torch.cat([c, c])).chunk(2)
        t = t[:, None, None]  # [N, 1, 1]
        return w0.lerp(w1, t), w0.lerp(w1, t + epsilon)
    zt0, zt1 = slerp(z0, z1, t[:, None]), slerp(z0, z1, t[:, None] + epsilon)
    return G.mapping(z=torch.cat([zt0, zt1]), c=torch.cat([c, c])).chunk(2)


def path_lengths(G: torch.nn.Module, vgg16: torch.nn.Module, ws0: torch.Tensor, ws1: torch.Tensor, epsilon: float,
                 crop: bool, G_kwargs: dict | None = None) -> torch.Tensor:
    """d = ||LPIPS(g(ws0)) - LPIPS(g(ws1))||^2 / epsilon^2 per sample [N], images from G.synthesis (const noise)."""
    img = G.synthesis(torch.cat([ws0, ws1]), noise_mode='const', force_fp32=True, **(G_kwargs or {}))  # [2N,C,H,W]
    if crop:
        img = face_crop(img)
    factor = G.img_resolution // 256
    if factor > 1:  # Box-downsample to 256 px, as the LPIPS embedding was calibrated there.
        img = img.reshape([-1, img.shape[1], img.shape[2] // factor, factor, img.shape[3] // factor, factor])
        img = img.mean([3, 5])
    img = (img + 1) * (255 / 2)  # [-1, 1] -> [0, 255]
    if img.shape[1] == 1:
        img = img.repeat([1, 3, 1, 1])
    lpips0, lpips1 = vgg16(img, resize_images=False, return_lpips=True).chunk(2)
    return (lpips0 - lpips1).square().sum(1) / epsilon ** 2


def filtered_mean(dist: np.ndarray) -> float:
    """Mean of the values within the 1st ('lower') and 99th ('higher') percentile, StyleGAN2-ADA's outlier filter."""
    lo = np.percentile(dist, 1, method='lower')
    hi = np.percentile(dist, 99, method='higher')
    return float(dist[(dist >= lo) & (dist <= hi)].mean())


def _randomize_noise(G: torch.nn.Module) -> None:
    for name, buf in G.named_buffers():
        if name.endswith('.noise_const'):
            buf.copy_(torch.randn_like(buf))


@torch.no_grad()
def compute_ppl(opts: metric_utils.MetricOptions, num_samples: int, epsilon: float, space: str, sampling: str,
                crop: bool, batch_size: int) -> float:
    """PPL of opts.G over num_samples interpolation pairs (batch_size per rank and round); rank 0 gets the value,
    the other ranks NaN. z, t and the noise come from torch's global RNG (seeded by metric_main.calc_metric)."""
    if space not in SPACES or sampling not in SAMPLINGS:
        raise ValueError(f'space={space!r}, sampling={sampling!r}: expected space in {SPACES}, sampling in {SAMPLINGS}')
    if opts.G is None:
        raise ValueError('G=None: this metric needs a generator (pass --network)')
    G = copy.deepcopy(opts.G).eval().requires_grad_(False).to(opts.device)
    vgg16, _ = detectors.get_detector('vgg16', opts.detector_source('vgg16'), opts.device, trust=opts.trust_detector)
    sample_c = metric_utils._label_sampler(opts, G.c_dim)
    dist = []
    with metric_utils._bar(opts, num_samples, 'ppl sampling') as bar:
        for _ in range(0, num_samples, batch_size * opts.num_gpus):
            c = sample_c(batch_size).to(opts.device)  # [N, c_dim]
            t = torch.rand([batch_size], device=opts.device) * (1 if sampling == 'full' else 0)  # [N]
            z0, z1 = torch.randn([batch_size * 2, G.z_dim], device=opts.device).chunk(2)  # [N, z_dim] each
            ws0, ws1 = interpolated_ws(G, z0, z1, c, t, epsilon, space)
            _randomize_noise(G)
            d = path_lengths(G, vgg16, ws0, ws1, epsilon, crop, opts.G_kwargs)  # [N]
            if opts.num_gpus > 1:
                gathered = [torch.empty_like(d) for _ in range(opts.num_gpus)]
                torch.distributed.all_gather(gathered, d)
                d = torch.cat(gathered)
            dist.append(d)
            bar.update(d.numel())
    if opts.rank != 0:
        return float('nan')
    return filtered_mean(torch.cat(dist)[:num_samples].cpu().numpy().astype(np.float64))
