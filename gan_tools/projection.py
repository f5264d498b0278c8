"""Projection of an image into a generator's W space (Karras et al., "Analyzing and Improving the Image Quality of
StyleGAN", CVPR 2020, section 5), with StyleGAN2-ADA projector.py's schedule.

One w (broadcast to all num_ws) and the constant noise maps are optimised with Adam so that the LPIPS embedding of
G.synthesis(w) (VGG16 detector, return_lpips=True, images in [0, 255], downsampled to 256 px above it) matches the
target's. w starts at the mean of 10k mapped z; Gaussian noise of scale sigma_w * 0.05 * max(0, 1 - t / 0.75)^2 is
added to w (sigma_w: the RMS distance of the mapped w from their mean), the learning rate 0.1 ramps up over the
first 5% and down by a cosine over the last 25% of the steps, and the noise maps are regularised toward
spatial whiteness at all scales down to 8x8 (weight 1e5), then renormalised to zero mean and unit variance each step.
"""

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F

DEFAULTS = dict(w_avg_samples=10000, initial_learning_rate=0.1, initial_noise_factor=0.05, lr_rampdown_length=0.25,
                lr_rampup_length=0.05, noise_ramp_length=0.75, regularize_noise_weight=1e5)


def lpips_features(vgg16: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """LPIPS embedding of float images [N, C, H, W] in [0, 255] (area-downsampled to 256 px above 256)."""
    if images.shape[2] > 256:
        images = F.interpolate(images, size=(256, 256), mode='area')
    if images.shape[1] == 1:
        images = images.repeat([1, 3, 1, 1])
    return vgg16(images, resize_images=False, return_lpips=True)


def noise_regularization(noise_bufs: list[torch.Tensor]) -> torch.Tensor:
    """Sum over noise maps and scales (halving down to 8x8) of the squared autocorrelation at a 1-pixel shift."""
    reg = 0.0
    for buf in noise_bufs:
        noise = buf[None, None, :, :]  # [1, 1, H, W]
        while True:
            reg = reg + (noise * torch.roll(noise, shifts=1, dims=3)).mean() ** 2
            reg = reg + (noise * torch.roll(noise, shifts=1, dims=2)).mean() ** 2
            if noise.shape[2] <= 8:
                break
            noise = F.avg_pool2d(noise, kernel_size=2)
    return reg


def learning_rate(step: int, num_steps: int, initial: float, rampdown: float, rampup: float) -> float:
    """The step's learning rate: linear ramp-up over `rampup`, cosine ramp-down over the last `rampdown` fraction."""
    t = step / num_steps
    ramp = min(1.0, (1.0 - t) / rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return initial * ramp * min(1.0, t / rampup)


def project(G: torch.nn.Module, target: torch.Tensor, vgg16: torch.nn.Module, num_steps: int = 1000,
            device: torch.device = torch.device('cpu'), log=None, **kwargs) -> tuple[torch.Tensor, list[float]]:
    """Project a uint8 target [C, H, W] (G's resolution and channels) into W: (ws of every step [num_steps, num_ws,
    w_dim], LPIPS distance of every step). kwargs override DEFAULTS. G is copied, never changed."""
    opts = dict(DEFAULTS, **kwargs)
    if getattr(G, 'c_dim', 0) != 0:
        raise ValueError(f'projection needs an unconditional generator, got c_dim={G.c_dim}')
    expected = (G.img_channels, G.img_resolution, G.img_resolution)
    if tuple(target.shape) != expected:
        raise ValueError(f'target has shape {list(target.shape)}; expected {list(expected)} (the generator output)')
    if num_steps < 1:
        raise ValueError(f'num_steps={num_steps}: expected >= 1')
    G = copy.deepcopy(G).eval().requires_grad_(False).to(device)

    with torch.no_grad():  # Centre and spread of W from the mapping of w_avg_samples z.
        z = np.random.RandomState(123).randn(opts['w_avg_samples'], G.z_dim)
        w = G.mapping(torch.from_numpy(z).to(device, torch.float32), None)[:, :1, :].cpu().numpy().astype(np.float64)
        w_avg = np.mean(w, axis=0, keepdims=True)  # [1, 1, w_dim]
        w_std = (np.sum((w - w_avg) ** 2) / opts['w_avg_samples']) ** 0.5
        target_features = lpips_features(vgg16, target[None].to(device, torch.float32))

    noise_bufs = [buf for name, buf in G.synthesis.named_buffers() if 'noise_const' in name]
    w_opt = torch.tensor(w_avg, dtype=torch.float32, device=device, requires_grad=True)  # [1, 1, w_dim]
    optimizer = torch.optim.Adam([w_opt] + noise_bufs, betas=(0.9, 0.999), lr=opts['initial_learning_rate'])
    with torch.no_grad():
        for buf in noise_bufs:
            buf.copy_(torch.randn_like(buf))
    for buf in noise_bufs:
        buf.requires_grad = True

    w_out, dists = torch.zeros([num_steps, 1, G.w_dim], device=device), []
    for step in range(num_steps):
        t = step / num_steps
        w_noise_scale = w_std * opts['initial_noise_factor'] * max(0.0, 1.0 - t / opts['noise_ramp_length']) ** 2
        lr = learning_rate(step, num_steps, opts['initial_learning_rate'], opts['lr_rampdown_length'],
                           opts['lr_rampup_length'])
        for group in optimizer.param_groups:
            group['lr'] = lr
        ws = (w_opt + torch.randn_like(w_opt) * w_noise_scale).repeat([1, G.num_ws, 1])  # [1, num_ws, w_dim]
        synth = (G.synthesis(ws, noise_mode='const') + 1) * (255 / 2)  # [1, C, H, W] in [0, 255]
        dist = (target_features - lpips_features(vgg16, synth)).square().sum()
        loss = dist + noise_regularization(noise_bufs) * opts['regularize_noise_weight']
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        dists.append(float(dist.detach()))
        if log is not None:
            log(f"step {step + 1:>4d}/{num_steps}: dist {dists[-1]:<4.2f} loss {float(loss.detach()):<5.2f}")
        w_out[step] = w_opt.detach()[0]
        with torch.no_grad():  # Keep the noise maps zero-mean, unit-variance.
            for buf in noise_bufs:
                buf -= buf.mean()
                buf *= buf.square().mean().rsqrt()
    return w_out.repeat([1, G.num_ws, 1]), dists
