"""ADM: the class-conditional noise-prediction U-Net of Dhariwal & Nichol 2021, "Diffusion Models Beat GANs on Image
Synthesis" (OpenAI guided-diffusion), written so that the released checkpoints (plain state dicts) load strictly.

State-dict contract (names and shapes of guided-diffusion's `UNetModel`):
  time_embed.{0,2}                    Linear(C, 4C), Linear(4C, 4C) around a SiLU.
  label_emb                           Embedding(num_classes, 4C), only when class-conditional.
  input_blocks.0.0                    3x3 conv from the image.
  input_blocks.i.0 / .1               ResBlock / AttentionBlock; or .0 = ResBlock(down=True) or Downsample (`op`).
  middle_block.{0,1,2}                ResBlock, AttentionBlock, ResBlock.
  output_blocks.i.0 / .1 / .1|.2      ResBlock on [h, skip], AttentionBlock, ResBlock(up=True) or Upsample (`conv`).
  out.{0,2}                           GroupNorm, 3x3 conv to out_channels.
ResBlock: in_layers.{0 norm, 2 conv}, emb_layers.1 (Linear to 2 * out for scale-shift), out_layers.{0 norm, 3 conv},
skip_connection (1x1 conv when channels change). AttentionBlock: norm, qkv (1x1 conv1d to 3C), proj_out (conv1d).

Half precision: with use_fp16 the blocks run in float16 on CUDA, as in the released configs; the weights stay float32
(checkpoints store float32) and are cast per call. GroupNorm and softmax always compute in float32.
"""

import math
from typing import Sequence

import torch
import torch.nn.functional as F

GROUPS = 32                                 # GroupNorm groups everywhere in ADM.


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000) -> torch.Tensor:
    """Sinusoidal embedding [cos(t w_k), sin(t w_k)], w_k = max_period^(-k / (dim//2)); zero-padded if dim is odd."""
    half = dim // 2
    w = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)  # [half]
    args = t.float()[:, None] * w[None]                                                                   # [N, half]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)                                            # [N, 2 half]
    return F.pad(emb, [0, dim % 2])


class GroupNorm32(torch.nn.GroupNorm):
    """GroupNorm(32, C) computed in float32 (fp16 statistics overflow / lose precision) and cast back."""

    def __init__(self, channels: int):
        super().__init__(GROUPS, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(x.dtype)


class Conv1d(torch.nn.Conv1d):
    """Conv1d that casts its float32 weights to the input dtype (fp16 blocks keep float32 master weights)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight.to(x.dtype), self.bias.to(x.dtype))


class Conv2d(torch.nn.Conv2d):
    """Conv2d that casts its float32 weights to the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight.to(x.dtype), self.bias.to(x.dtype))


def zero_init(module: torch.nn.Module) -> torch.nn.Module:
    """Zero a module's parameters: residual branches start as the identity."""
    for p in module.parameters():
        torch.nn.init.zeros_(p)
    return module


class Upsample(torch.nn.Module):
    """Nearest-neighbour 2x upsampling, optionally followed by a 3x3 conv (key `conv`)."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        self.conv = Conv2d(channels, out_channels or channels, 3, padding=1) if use_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, C, H, W] -> [N, C', 2H, 2W]
        x = F.interpolate(x, scale_factor=2, mode='nearest')
        return self.conv(x) if self.conv is not None else x


class Downsample(torch.nn.Module):
    """2x downsampling by a stride-2 3x3 conv (key `op`) or, without conv, 2x2 average pooling."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        if use_conv:
            self.op = Conv2d(channels, out_channels or channels, 3, stride=2, padding=1)
        else:
            assert out_channels in (None, channels), 'pooling cannot change the channel count'
            self.op = torch.nn.AvgPool2d(kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, C, H, W] -> [N, C', H/2, W/2]
        return self.op(x)


class ResBlock(torch.nn.Module):
    """Residual block conditioned on the embedding: additive bias, or GroupNorm scale-shift h * (1 + s) + b."""

    def __init__(self,
        channels: int,                      # Input channels.
        emb_channels: int,                  # Width of the time (+ class) embedding.
        dropout: float,                     # Dropout before the last conv (inactive in eval mode).
        out_channels: int | None = None,    # None = same as input.
        use_scale_shift_norm: bool = False, # True = the embedding modulates the second GroupNorm.
        up: bool = False,                   # Nearest 2x upsampling inside the block (resblock_updown).
        down: bool = False,                 # 2x average-pool downsampling inside the block.
    ):
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = torch.nn.Sequential(GroupNorm32(channels), torch.nn.SiLU(),
                                             Conv2d(channels, out_channels, 3, padding=1))
        # Resampling has no weights; it sits between the first activation and conv, and on the skip path.
        self.resample = Upsample(channels, False) if up else Downsample(channels, False) if down else None
        emb_out_channels = 2 * out_channels if use_scale_shift_norm else out_channels  # (scale, shift) or a bias.
        self.emb_layers = torch.nn.Sequential(torch.nn.SiLU(), torch.nn.Linear(emb_channels, emb_out_channels))
        self.out_layers = torch.nn.Sequential(GroupNorm32(out_channels), torch.nn.SiLU(), torch.nn.Dropout(dropout),
                                              zero_init(Conv2d(out_channels, out_channels, 3, padding=1)))
        self.skip_connection = torch.nn.Identity() if out_channels == channels else Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # [N, C, H, W], [N, E] -> [N, C', H', W']
        h = self.in_layers[1](self.in_layers[0](x))
        if self.resample is not None:
            h, x = self.resample(h), self.resample(x)
        h = self.in_layers[2](h)
        emb_out = self.emb_layers(emb).to(h.dtype)[:, :, None, None]  # [N, C' or 2C', 1, 1]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


def attention_legacy(qkv: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Multi-head attention with qkv channels laid out per head as [q_h, k_h, v_h] (QKVAttentionLegacy)."""
    N, width, L = qkv.shape
    d = width // (3 * num_heads)
    q, k, v = qkv.reshape(N * num_heads, 3 * d, L).split(d, dim=1)  # Each [N heads, d, L].
    return _attend(q, k, v).reshape(N, num_heads * d, L)


def attention_split_heads(qkv: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Multi-head attention with qkv channels laid out as [q (all heads), k, v] (QKVAttention, new order)."""
    N, width, L = qkv.shape
    d = width // (3 * num_heads)
    q, k, v = (u.reshape(N * num_heads, d, L) for u in qkv.chunk(3, dim=1))
    return _attend(q, k, v).reshape(N, num_heads * d, L)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:  # [B, d, L] each -> [B, d, L]
    scale = q.shape[1] ** -0.25  # Split 1/sqrt(d) over q and k: keeps fp16 logits in range.
    logits = torch.einsum('bdt,bds->bts', q * scale, k * scale)      # [B, L_query, L_key]
    weights = torch.softmax(logits.float(), dim=-1).to(logits.dtype)
    return torch.einsum('bts,bds->bdt', weights, v)


class AttentionBlock(torch.nn.Module):
    """Spatial self-attention over all H*W positions with a zero-initialised residual projection."""

    def __init__(self, channels: int, num_heads: int = 1, num_head_channels: int = -1, new_order: bool = False):
        super().__init__()
        if num_head_channels != -1:
            if num_head_channels <= 0 or channels % num_head_channels:
                raise ValueError(f'num_head_channels={num_head_channels}: expected a divisor of the block width '
                                 f'{channels}, or -1 to use num_heads')
            num_heads = channels // num_head_channels
        if num_heads <= 0 or channels % num_heads:
            raise ValueError(f'num_heads={num_heads}: expected a divisor of the block width {channels}')
        self.num_heads = num_heads
        self.attention = attention_split_heads if new_order else attention_legacy
        self.norm = GroupNorm32(channels)
        self.qkv = Conv1d(channels, 3 * channels, 1)
        self.proj_out = zero_init(Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:  # [N, C, H, W]
        N, C, H, W = x.shape
        x = x.reshape(N, C, H * W)
        h = self.attention(self.qkv(self.norm(x)), self.num_heads)  # [N, C, HW]
        return (x + self.proj_out(h)).reshape(N, C, H, W)


class EmbedSequential(torch.nn.Sequential):
    """Sequential whose ResBlocks also receive the embedding (guided-diffusion's TimestepEmbedSequential)."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb) if isinstance(layer, (ResBlock, AttentionBlock)) else layer(x)
        return x


class ADMUNet(torch.nn.Module):
    """guided-diffusion's UNetModel: forward(x, timesteps, y) -> [N, out_channels, H, W] (eps, or eps and the
    variance interpolation v when learn_sigma doubled out_channels)."""

    def __init__(self,
        image_size: int,                    # Training resolution (stored; the layers work at any multiple of 2^levels).
        in_channels: int,                   # Image channels.
        model_channels: int,                # Base width C; level widths are int(mult * C).
        out_channels: int,                  # 3 = eps; 6 = eps and learned variance (learn_sigma).
        num_res_blocks: int,                # ResBlocks per level in the encoder (the decoder has one more).
        attention_resolutions: Sequence[int],  # Downsampling rates ds (image_size // px) that get attention.
        dropout: float = 0,                 # Dropout inside ResBlocks.
        channel_mult: Sequence[float] = (1, 2, 4, 8),  # Width multiplier per level.
        conv_resample: bool = True,         # Up/Downsample blocks use a 3x3 conv (only without resblock_updown).
        dims: int = 2,                      # Only 2-D images are supported.
        num_classes: int | None = None,     # None = unconditional; otherwise y [N] class indices are required.
        use_checkpoint: bool = False,       # Gradient checkpointing in guided-diffusion; ignored here.
        use_fp16: bool = False,             # Run the blocks in float16 on CUDA.
        num_heads: int = 1,                 # Attention heads (when num_head_channels == -1).
        num_head_channels: int = -1,        # Channels per head; -1 = use num_heads.
        num_heads_upsample: int = -1,       # Heads in the decoder; -1 = num_heads.
        use_scale_shift_norm: bool = False, # The embedding scales and shifts the second GroupNorm of each ResBlock.
        resblock_updown: bool = False,      # Resample with ResBlock(up/down=True) instead of Up/Downsample.
        use_new_attention_order: bool = False,  # qkv laid out [q, k, v] over all heads (True) or per head (False).
    ):
        super().__init__()
        if dims != 2:
            raise ValueError(f'dims={dims!r}: only 2-D images (dims=2) are supported')
        if len(channel_mult) == 0:
            raise ValueError('channel_mult=(): expected at least one level')
        if num_classes is not None and num_classes <= 0:
            raise ValueError(f'num_classes={num_classes!r}: expected a positive count, or None if unconditional')
        self.image_size = image_size
        self.in_channels = in_channels
        self.model_channels = model_channels
        self.out_channels = out_channels
        self.num_classes = num_classes
        self.num_levels = len(channel_mult)
        self.use_fp16 = use_fp16
        emb_channels = 4 * model_channels
        self.time_embed = torch.nn.Sequential(torch.nn.Linear(model_channels, emb_channels), torch.nn.SiLU(),
                                              torch.nn.Linear(emb_channels, emb_channels))
        if num_classes is not None:
            self.label_emb = torch.nn.Embedding(num_classes, emb_channels)

        block = dict(emb_channels=emb_channels, dropout=dropout, use_scale_shift_norm=use_scale_shift_norm)
        attn = dict(num_head_channels=num_head_channels, new_order=use_new_attention_order)
        widths = [int(m * model_channels) for m in channel_mult]
        skip_widths = self._build_encoder(widths, num_res_blocks, attention_resolutions, conv_resample,
                                          resblock_updown, block, dict(attn, num_heads=num_heads))
        ch = widths[-1]
        self.middle_block = EmbedSequential(ResBlock(ch, **block), AttentionBlock(ch, num_heads=num_heads, **attn),
                                            ResBlock(ch, **block))
        heads_up = num_heads if num_heads_upsample == -1 else num_heads_upsample
        self._build_decoder(widths, skip_widths, num_res_blocks, attention_resolutions, conv_resample,
                            resblock_updown, block, dict(attn, num_heads=heads_up))
        self.out = torch.nn.Sequential(GroupNorm32(widths[0]), torch.nn.SiLU(),
                                       zero_init(Conv2d(widths[0], out_channels, 3, padding=1)))

    def _build_encoder(self, widths, num_res_blocks, attention_ds, conv_resample, resblock_updown, block, attn):
        """Create input_blocks; return the width of every block output (the decoder's skip connections)."""
        self.input_blocks = torch.nn.ModuleList([EmbedSequential(Conv2d(self.in_channels, widths[0], 3, padding=1))])
        ch, ds, skip_widths = widths[0], 1, [widths[0]]
        for level, width in enumerate(widths):
            for _ in range(num_res_blocks):
                layers = [ResBlock(ch, out_channels=width, **block)]
                ch = width
                if ds in attention_ds:
                    layers.append(AttentionBlock(ch, **attn))
                self.input_blocks.append(EmbedSequential(*layers))
                skip_widths.append(ch)
            if level != len(widths) - 1:
                down = ResBlock(ch, down=True, **block) if resblock_updown else Downsample(ch, conv_resample)
                self.input_blocks.append(EmbedSequential(down))
                skip_widths.append(ch)
                ds *= 2
        return skip_widths

    def _build_decoder(self, widths, skip_widths, num_res_blocks, attention_ds, conv_resample, resblock_updown,
                       block, attn):
        """Create output_blocks, consuming the encoder's skip widths from the deepest up."""
        self.output_blocks = torch.nn.ModuleList()
        skip_widths = list(skip_widths)
        ch, ds = widths[-1], 2 ** (len(widths) - 1)
        for level in reversed(range(len(widths))):
            for i in range(num_res_blocks + 1):
                layers = [ResBlock(ch + skip_widths.pop(), out_channels=widths[level], **block)]
                ch = widths[level]
                if ds in attention_ds:
                    layers.append(AttentionBlock(ch, **attn))
                if level > 0 and i == num_res_blocks:
                    layers.append(ResBlock(ch, up=True, **block) if resblock_updown else Upsample(ch, conv_resample))
                    ds //= 2
                self.output_blocks.append(EmbedSequential(*layers))
        assert not skip_widths, 'every encoder output feeds one decoder block'

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Predict [N, out_channels, H, W] from x_t [N, in_channels, H, W], integer steps [N] and class ids y [N]."""
        self._check_inputs(x, timesteps, y)
        emb = self.time_embed(timestep_embedding(timesteps.expand(x.shape[0]), self.model_channels))  # [N, 4C]
        if y is not None:
            emb = emb + self.label_emb(y)
        h = x.to(torch.float16 if self.use_fp16 and x.device.type == 'cuda' else torch.float32)
        skips = []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h.to(x.dtype))  # The head runs in the input's precision.

    def _check_inputs(self, x: torch.Tensor, timesteps: torch.Tensor, y: torch.Tensor | None) -> None:
        factor = 2 ** (self.num_levels - 1)
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[2] % factor or x.shape[3] % factor:
            raise ValueError(f'x has shape {list(x.shape)}: expected [N, {self.in_channels}, H, W] with H and W '
                             f'multiples of {factor}')
        if timesteps.ndim > 1 or (timesteps.ndim == 1 and timesteps.shape[0] != x.shape[0]):
            raise ValueError(f'timesteps has shape {list(timesteps.shape)}: expected [{x.shape[0]}] or a scalar')
        if self.num_classes is None and y is not None:
            raise ValueError('y was given but the model is unconditional (num_classes=None); pass y=None')
        if self.num_classes is not None:
            if y is None:
                raise ValueError(f'y is None but the model is class-conditional: pass class ids [N] in '
                                 f'[0, {self.num_classes - 1}]')
            if y.shape != (x.shape[0],) or y.dtype.is_floating_point:
                raise ValueError(f'y has shape {list(y.shape)} and dtype {y.dtype}: expected integer class ids '
                                 f'[{x.shape[0]}]')
