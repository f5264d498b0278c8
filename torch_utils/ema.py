"""Exponential moving average of network weights with a half-life in images (StyleGAN2-ADA's G_ema, EDM's ema)."""

import torch


@torch.no_grad()
def ema_update(ema: torch.nn.Module, net: torch.nn.Module, batch_size: int, halflife_kimg: float,
               rampup_ratio: float | None, cur_nimg: int) -> None:
    """ema <- lerp(net, ema, beta), beta = 0.5 ** (batch_size / halflife_nimg): a half-life of halflife_nimg images,
    capped at cur_nimg * rampup_ratio during the ramp (None = no ramp). Buffers are copied."""
    halflife_nimg = halflife_kimg * 1000
    if rampup_ratio is not None:
        halflife_nimg = min(halflife_nimg, cur_nimg * rampup_ratio)
    beta = 0.5 ** (batch_size / max(halflife_nimg, 1e-8))
    for p_ema, p_net in zip(ema.parameters(), net.parameters()):
        p_ema.copy_(p_net.detach().lerp(p_ema, beta))
    for b_ema, b_net in zip(ema.buffers(), net.buffers()):
        b_ema.copy_(b_net)
