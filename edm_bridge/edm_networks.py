"""The network classes of EDM (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative
Models"): layers, the DDPM++ / NCSN++ backbone SongUNet (Song et al. 2021), the ADM backbone DhariwalUNet (Dhariwal &
Nichol 2021) and the four preconditioners that turn a backbone F into a denoiser D(x; sigma) (EDM Table 1).

Class names, constructor keywords (names and defaults), submodule names and the names and shapes of every parameter
and buffer follow EDM's `training/networks.py`, so that a released EDM pickle rebuilds these classes from its recorded
init kwargs and loads its state dict strictly, and computes the same outputs (docs/spec/diffusion.md section 2).

Why one module of more than 400 lines: a pickled persistent object stores the source text of its own module only,
and loading re-executes that text where perhaps only torch_utils and dnnlib are importable. Every class must
therefore find all it needs here, and the preconditioners look their backbone up by name in `globals()`.
"""

import numpy as np
import torch
from torch.nn.functional import silu

from torch_utils import persistence

# ----------------------------------------------------------------------------------------------------------------------
# Initialisation and layers.

_INIT_MODES = ('xavier_uniform', 'xavier_normal', 'kaiming_uniform', 'kaiming_normal')


def weight_init(shape: list[int], mode: str, fan_in: int, fan_out: int) -> torch.Tensor:
    """Random tensor of `shape` with Xavier (Glorot) or Kaiming (He) variance, unit gain; uniform or normal."""
    if mode == 'xavier_uniform':
        return np.sqrt(6 / (fan_in + fan_out)) * (torch.rand(*shape) * 2 - 1)
    if mode == 'xavier_normal':
        return np.sqrt(2 / (fan_in + fan_out)) * torch.randn(*shape)
    if mode == 'kaiming_uniform':
        return np.sqrt(3 / fan_in) * (torch.rand(*shape) * 2 - 1)
    if mode == 'kaiming_normal':
        return np.sqrt(1 / fan_in) * torch.randn(*shape)
    raise ValueError(f'init_mode={mode!r}: expected one of {list(_INIT_MODES)}')


def _check_choice(name: str, value, choices) -> None:
    """Raise ValueError naming argument `name` unless `value` is one of `choices`."""
    if value not in choices:
        raise ValueError(f'{name}={value!r}: expected one of {list(choices)}')


@persistence.persistent_class
class Linear(torch.nn.Module):
    """Fully connected layer y = x W^T + b; weights are cast to the input dtype (fp16 path)."""

    def __init__(self,
        in_features: int,                   # Input width.
        out_features: int,                  # Output width.
        bias: bool = True,                  # False = no bias parameter.
        init_mode: str = 'kaiming_normal',  # One of _INIT_MODES.
        init_weight: float = 1,             # Gain applied to the initial weight.
        init_bias: float = 0,               # Gain applied to the initial bias (0 = start at zero).
    ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        fans = dict(mode=init_mode, fan_in=in_features, fan_out=out_features)
        self.weight = torch.nn.Parameter(weight_init([out_features, in_features], **fans) * init_weight)  # [O, I]
        self.bias = torch.nn.Parameter(weight_init([out_features], **fans) * init_bias) if bias else None  # [O]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, I] -> [N, O]
        x = x @ self.weight.to(x.dtype).t()
        if self.bias is not None:
            x = x.add_(self.bias.to(x.dtype))
        return x


def _upsample2x(x: torch.Tensor, f: torch.Tensor, padding: int) -> torch.Tensor:
    """Zero-insertion 2x upsampling followed by the FIR filter f [1, 1, k, k], per channel; gain 4 keeps the mean."""
    C = x.shape[1]
    return torch.nn.functional.conv_transpose2d(x, f.mul(4).tile([C, 1, 1, 1]), groups=C, stride=2, padding=padding)


def _downsample2x(x: torch.Tensor, f: torch.Tensor, padding: int) -> torch.Tensor:
    """FIR filter f [1, 1, k, k] per channel, keeping every 2nd pixel."""
    C = x.shape[1]
    return torch.nn.functional.conv2d(x, f.tile([C, 1, 1, 1]), groups=C, stride=2, padding=padding)


@persistence.persistent_class
class Conv2d(torch.nn.Module):
    """Square convolution with optional 2x up- or downsampling by a fixed FIR filter; kernel=0 resamples only."""

    def __init__(self,
        in_channels: int,                   # Input channels.
        out_channels: int,                  # Output channels.
        kernel: int,                        # Kernel width; 0 = no weight (pure resampling).
        bias: bool = True,                  # False = no bias parameter.
        up: bool = False,                   # Upsample 2x before the convolution.
        down: bool = False,                 # Downsample 2x before the convolution.
        resample_filter=[1, 1],             # 1-D FIR taps; [1, 1] = box (nearest up, average-pool down).
        fused_resample: bool = False,       # Resample on the other side of the conv (up: before, down: after).
        init_mode: str = 'kaiming_normal',  # One of _INIT_MODES.
        init_weight: float = 1,             # Gain applied to the initial weight.
        init_bias: float = 0,               # Gain applied to the initial bias.
    ):
        if up and down:
            raise ValueError(f'up={up!r} and down={down!r}: a Conv2d resamples in one direction at most')
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.up = up
        self.down = down
        self.fused_resample = fused_resample
        fans = dict(mode=init_mode, fan_in=in_channels * kernel * kernel, fan_out=out_channels * kernel * kernel)
        shape = [out_channels, in_channels, kernel, kernel]
        self.weight = torch.nn.Parameter(weight_init(shape, **fans) * init_weight) if kernel else None
        self.bias = torch.nn.Parameter(weight_init([out_channels], **fans) * init_bias) if kernel and bias else None
        f = torch.as_tensor(resample_filter, dtype=torch.float32)
        f = torch.outer(f, f).unsqueeze(0).unsqueeze(1) / f.sum().square()  # [1, 1, k, k], sums to 1
        self.register_buffer('resample_filter', f if up or down else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, I, H, W] -> [N, O, H', W']
        w = self.weight.to(x.dtype) if self.weight is not None else None
        b = self.bias.to(x.dtype) if self.bias is not None else None
        f = self.resample_filter.to(x.dtype) if self.resample_filter is not None else None
        w_pad = w.shape[-1] // 2 if w is not None else 0
        f_pad = (f.shape[-1] - 1) // 2 if f is not None else 0
        if self.fused_resample and self.up and w is not None:
            # Padding split between the two ops so that the output is exactly 2H x 2W.
            x = _upsample2x(x, f, padding=max(f_pad - w_pad, 0))
            x = torch.nn.functional.conv2d(x, w, padding=max(w_pad - f_pad, 0))
        elif self.fused_resample and self.down and w is not None:
            x = torch.nn.functional.conv2d(x, w, padding=w_pad + f_pad)
            x = _downsample2x(x, f, padding=0)
        else:
            if self.up:
                x = _upsample2x(x, f, padding=f_pad)
            if self.down:
                x = _downsample2x(x, f, padding=f_pad)
            if w is not None:
                x = torch.nn.functional.conv2d(x, w, padding=w_pad)
        if b is not None:
            x = x.add_(b.reshape(1, -1, 1, 1))
        return x


@persistence.persistent_class
class GroupNorm(torch.nn.Module):
    """Group normalisation with at most `num_groups` groups and at least `min_channels_per_group` per group."""

    def __init__(self,
        num_channels: int,                  # Channels of the input.
        num_groups: int = 32,               # Upper bound on the number of groups.
        min_channels_per_group: int = 4,    # Narrow layers use fewer groups so each keeps this many channels.
        eps: float = 1e-5,                  # Added to the variance.
    ):
        super().__init__()
        self.num_groups = min(num_groups, num_channels // min_channels_per_group)
        if self.num_groups < 1:
            raise ValueError(f'num_channels={num_channels!r}: expected at least min_channels_per_group='
                             f'{min_channels_per_group} channels')
        self.eps = eps
        self.weight = torch.nn.Parameter(torch.ones(num_channels))  # [C]
        self.bias = torch.nn.Parameter(torch.zeros(num_channels))  # [C]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, C, H, W]
        return torch.nn.functional.group_norm(x, num_groups=self.num_groups, weight=self.weight.to(x.dtype),
                                              bias=self.bias.to(x.dtype), eps=self.eps)


class AttentionOp:
    """Attention weights softmax(q^T k / sqrt(C)) over the key axis, computed in float32 whatever the input dtype.

    Same name and call form (`AttentionOp.apply(q, k)`) as EDM's autograd function. Plain autograd through the
    float32 casts gives the same float32 softmax gradient, and also supports higher-order gradients.
    """

    @staticmethod
    def apply(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:  # q, k [B, C, L] -> w [B, L_q, L_k]
        logits = torch.einsum('ncq,nck->nqk', q.to(torch.float32), (k / np.sqrt(q.shape[1])).to(torch.float32))
        return logits.softmax(dim=2).to(q.dtype)


# ----------------------------------------------------------------------------------------------------------------------
# The U-Net block and the noise-level embeddings.

@persistence.persistent_class
class UNetBlock(torch.nn.Module):
    """Residual block GN-SiLU-conv, embedding injection, GN-SiLU-dropout-conv, optional resampling and self-attention.

    The embedding enters as a bias (DDPM++ / NCSN++) or as an adaptive scale and shift of norm1 (ADM).
    """

    def __init__(self,
        in_channels: int,                   # Input channels.
        out_channels: int,                  # Output channels.
        emb_channels: int,                  # Width of the noise/label embedding.
        up: bool = False,                   # Upsample 2x.
        down: bool = False,                 # Downsample 2x.
        attention: bool = False,            # Append a self-attention layer.
        num_heads: int = None,              # Attention heads; None = out_channels // channels_per_head.
        channels_per_head: int = 64,        # Used when num_heads is None.
        dropout: float = 0,                 # Dropout probability before conv1.
        skip_scale: float = 1,              # Residual sums are multiplied by this (sqrt(0.5) keeps the variance).
        eps: float = 1e-5,                  # GroupNorm epsilon.
        resample_filter=[1, 1],             # FIR taps for up/down.
        resample_proj: bool = False,        # 1x1 conv on a resampled skip even when the channel count is unchanged.
        adaptive_scale: bool = True,        # Embedding gives scale and shift (True) or a bias (False).
        init: dict = dict(),                # Init kwargs of the ordinary layers.
        init_zero: dict = dict(init_weight=0),  # Init kwargs of the last layer of each branch.
        init_attn: dict = None,             # Init kwargs of qkv; None = init.
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.emb_channels = emb_channels
        if not attention:
            self.num_heads = 0
        else:
            self.num_heads = num_heads if num_heads is not None else out_channels // channels_per_head
        self.dropout = dropout
        self.skip_scale = skip_scale
        self.adaptive_scale = adaptive_scale

        self.norm0 = GroupNorm(num_channels=in_channels, eps=eps)
        self.conv0 = Conv2d(in_channels, out_channels, kernel=3, up=up, down=down, resample_filter=resample_filter,
                            **init)
        self.affine = Linear(emb_channels, out_channels * (2 if adaptive_scale else 1), **init)
        self.norm1 = GroupNorm(num_channels=out_channels, eps=eps)
        self.conv1 = Conv2d(out_channels, out_channels, kernel=3, **init_zero)
        self.skip = None
        if out_channels != in_channels or up or down:
            kernel = 1 if resample_proj or out_channels != in_channels else 0
            self.skip = Conv2d(in_channels, out_channels, kernel=kernel, up=up, down=down,
                               resample_filter=resample_filter, **init)
        if self.num_heads:
            self.norm2 = GroupNorm(num_channels=out_channels, eps=eps)
            qkv_init = init_attn if init_attn is not None else init
            self.qkv = Conv2d(out_channels, out_channels * 3, kernel=1, **qkv_init)
            self.proj = Conv2d(out_channels, out_channels, kernel=1, **init_zero)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # x [N, I, H, W], emb [N, E]
        orig = x
        x = self.conv0(silu(self.norm0(x)))  # [N, O, H', W']
        params = self.affine(emb).unsqueeze(2).unsqueeze(3).to(x.dtype)  # [N, O or 2 O, 1, 1]
        if self.adaptive_scale:
            scale, shift = params.chunk(chunks=2, dim=1)
            x = silu(torch.addcmul(shift, self.norm1(x), scale + 1))
        else:
            x = silu(self.norm1(x.add_(params)))
        x = self.conv1(torch.nn.functional.dropout(x, p=self.dropout, training=self.training))
        x = x.add_(self.skip(orig) if self.skip is not None else orig)
        x = x * self.skip_scale
        if self.num_heads:
            x = self.proj(self._attend(self.norm2(x))).add_(x)
            x = x * self.skip_scale
        return x

    def _attend(self, h: torch.Tensor) -> torch.Tensor:  # [N, O, H, W] -> [N, O, H, W]
        """Multi-head self-attention over the H*W positions; qkv channels are laid out as [head, channel, (q, k, v)]."""
        N, C, H, W = h.shape
        q, k, v = self.qkv(h).reshape(N * self.num_heads, C // self.num_heads, 3, H * W).unbind(2)  # [B, C/h, HW]
        w = AttentionOp.apply(q, k)  # [B, HW_q, HW_k]
        a = torch.einsum('nqk,nck->ncq', w, v)  # [B, C/h, HW_q]
        return a.reshape(N, C, H, W)


@persistence.persistent_class
class PositionalEmbedding(torch.nn.Module):
    """Sinusoidal embedding [cos(x f_i), sin(x f_i)] with f_i = max_positions^(-i / (C/2 - endpoint)) (Transformer)."""

    def __init__(self,
        num_channels: int,                  # Output width C (even).
        max_positions: int = 10000,         # Sets the lowest frequency.
        endpoint: bool = False,             # True: the last frequency is exactly 1 / max_positions (DDPM++).
    ):
        super().__init__()
        self.num_channels = num_channels
        self.max_positions = max_positions
        self.endpoint = endpoint

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N] -> [N, C]
        half = self.num_channels // 2
        freqs = torch.arange(start=0, end=half, dtype=torch.float32, device=x.device)
        freqs = (1 / self.max_positions) ** (freqs / (half - (1 if self.endpoint else 0)))
        x = torch.outer(x, freqs.to(x.dtype))
        return torch.cat([x.cos(), x.sin()], dim=1)


@persistence.persistent_class
class FourierEmbedding(torch.nn.Module):
    """Random Fourier features [cos(2 pi f x), sin(2 pi f x)] with f ~ N(0, scale^2) fixed at init (NCSN++)."""

    def __init__(self,
        num_channels: int,                  # Output width C (even).
        scale: float = 16,                  # Standard deviation of the frequencies.
    ):
        super().__init__()
        self.register_buffer('freqs', torch.randn(num_channels // 2) * scale)  # [C/2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N] -> [N, C]
        x = torch.outer(x, (2 * np.pi * self.freqs).to(x.dtype))
        return torch.cat([x.cos(), x.sin()], dim=1)


def _drop_labels(labels: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Zero whole label vectors with probability p in training mode (classifier-free-guidance style dropout)."""
    if not training or not p:
        return labels
    keep = torch.rand([labels.shape[0], 1], device=labels.device) >= p
    return labels * keep.to(labels.dtype)


# ----------------------------------------------------------------------------------------------------------------------
# Backbones.

@persistence.persistent_class
class SongUNet(torch.nn.Module):
    """DDPM++ (positional embedding) and NCSN++ (Fourier embedding) U-Net of Song et al. 2021, as configured by EDM.

    forward(x, noise_labels, class_labels, augment_labels=None) -> F(x) [N, out_channels, H, W].
    """

    def __init__(self,
        img_resolution: int,                # Image resolution at input and output.
        in_channels: int,                   # Image channels at input.
        out_channels: int,                  # Image channels at output.
        label_dim: int = 0,                 # Class label width; 0 = unconditional.
        augment_dim: int = 0,               # Augmentation label width; 0 = no augmentation conditioning.
        model_channels: int = 128,          # Base channel count.
        channel_mult: list = [1, 2, 2, 2],  # Channel multiplier per resolution level.
        channel_mult_emb: int = 4,          # Embedding width = model_channels * channel_mult_emb.
        num_blocks: int = 4,                # Residual blocks per resolution in the encoder.
        attn_resolutions: list = [16],      # Resolutions that get self-attention.
        dropout: float = 0.10,              # Dropout probability in the residual blocks.
        label_dropout: float = 0,           # Probability of dropping the class label in training.
        embedding_type: str = 'positional', # 'positional' (DDPM++) or 'fourier' (NCSN++).
        channel_mult_noise: int = 1,        # Noise embedding width = model_channels * channel_mult_noise.
        encoder_type: str = 'standard',     # 'standard', 'skip' (DDPM++) or 'residual' (NCSN++) input pyramid.
        decoder_type: str = 'standard',     # 'standard' or 'skip' (NCSN++) output pyramid.
        resample_filter: list = [1, 1],     # FIR taps: [1, 1] (DDPM++) or [1, 3, 3, 1] (NCSN++).
    ):
        _check_choice('embedding_type', embedding_type, ['fourier', 'positional'])
        _check_choice('encoder_type', encoder_type, ['standard', 'skip', 'residual'])
        _check_choice('decoder_type', decoder_type, ['standard', 'skip'])
        super().__init__()
        self.img_resolution = img_resolution
        self.label_dropout = label_dropout
        emb_channels = model_channels * channel_mult_emb
        noise_channels = model_channels * channel_mult_noise
        init = dict(init_mode='xavier_uniform')
        init_zero = dict(init_mode='xavier_uniform', init_weight=1e-5)
        init_attn = dict(init_mode='xavier_uniform', init_weight=np.sqrt(0.2))
        block_kwargs = dict(emb_channels=emb_channels, num_heads=1, dropout=dropout, skip_scale=np.sqrt(0.5), eps=1e-6,
                            resample_filter=resample_filter, resample_proj=True, adaptive_scale=False,
                            init=init, init_zero=init_zero, init_attn=init_attn)

        # Mapping: noise level (+ labels) -> embedding [N, emb_channels].
        self.map_noise = (PositionalEmbedding(num_channels=noise_channels, endpoint=True)
                          if embedding_type == 'positional' else FourierEmbedding(num_channels=noise_channels))
        self.map_label = Linear(label_dim, noise_channels, **init) if label_dim else None
        self.map_augment = Linear(augment_dim, noise_channels, bias=False, **init) if augment_dim else None
        self.map_layer0 = Linear(noise_channels, emb_channels, **init)
        self.map_layer1 = Linear(emb_channels, emb_channels, **init)

        cout = self._build_encoder(in_channels, model_channels, channel_mult, num_blocks, attn_resolutions,
                                   encoder_type, resample_filter, block_kwargs, init)
        skips = [block.out_channels for name, block in self.enc.items() if 'aux' not in name]
        self._build_decoder(cout, skips, out_channels, model_channels, channel_mult, num_blocks, attn_resolutions,
                            decoder_type, resample_filter, block_kwargs, init_zero)

    def _build_encoder(self, in_channels, model_channels, channel_mult, num_blocks, attn_resolutions, encoder_type,
                       resample_filter, block_kwargs, init) -> int:
        """Fill self.enc ('{res}x{res}_conv', '_down', '_aux_*', '_block{i}'); return the final channel count."""
        self.enc = torch.nn.ModuleDict()
        cout = caux = in_channels  # caux: channels of the auxiliary input pyramid ('skip' / 'residual').
        for level, mult in enumerate(channel_mult):
            res = self.img_resolution >> level
            if level == 0:
                cin, cout = cout, model_channels
                self.enc[f'{res}x{res}_conv'] = Conv2d(cin, cout, kernel=3, **init)
            else:
                self.enc[f'{res}x{res}_down'] = UNetBlock(cout, cout, down=True, **block_kwargs)
                if encoder_type == 'skip':
                    self.enc[f'{res}x{res}_aux_down'] = Conv2d(caux, caux, kernel=0, down=True,
                                                               resample_filter=resample_filter)
                    self.enc[f'{res}x{res}_aux_skip'] = Conv2d(caux, cout, kernel=1, **init)
                if encoder_type == 'residual':
                    self.enc[f'{res}x{res}_aux_residual'] = Conv2d(caux, cout, kernel=3, down=True,
                                                                   resample_filter=resample_filter,
                                                                   fused_resample=True, **init)
                    caux = cout
            for idx in range(num_blocks):
                cin, cout = cout, model_channels * mult
                self.enc[f'{res}x{res}_block{idx}'] = UNetBlock(cin, cout, attention=(res in attn_resolutions),
                                                                **block_kwargs)
        return cout

    def _build_decoder(self, cout, skips, out_channels, model_channels, channel_mult, num_blocks, attn_resolutions,
                       decoder_type, resample_filter, block_kwargs, init_zero) -> None:
        """Fill self.dec ('{res}x{res}_in0/in1', '_up', '_block{i}', '_aux_up/norm/conv'), consuming `skips`."""
        self.dec = torch.nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = self.img_resolution >> level
            if level == len(channel_mult) - 1:
                self.dec[f'{res}x{res}_in0'] = UNetBlock(cout, cout, attention=True, **block_kwargs)
                self.dec[f'{res}x{res}_in1'] = UNetBlock(cout, cout, **block_kwargs)
            else:
                self.dec[f'{res}x{res}_up'] = UNetBlock(cout, cout, up=True, **block_kwargs)
            for idx in range(num_blocks + 1):
                cin, cout = cout + skips.pop(), model_channels * mult
                attention = (idx == num_blocks and res in attn_resolutions)
                self.dec[f'{res}x{res}_block{idx}'] = UNetBlock(cin, cout, attention=attention, **block_kwargs)
            if decoder_type == 'skip' or level == 0:
                if decoder_type == 'skip' and level < len(channel_mult) - 1:
                    self.dec[f'{res}x{res}_aux_up'] = Conv2d(out_channels, out_channels, kernel=0, up=True,
                                                             resample_filter=resample_filter)
                self.dec[f'{res}x{res}_aux_norm'] = GroupNorm(num_channels=cout, eps=1e-6)
                self.dec[f'{res}x{res}_aux_conv'] = Conv2d(cout, out_channels, kernel=3, **init_zero)

    def _embed(self, noise_labels: torch.Tensor, class_labels: torch.Tensor | None,
               augment_labels: torch.Tensor | None) -> torch.Tensor:  # -> [N, emb_channels]
        """Noise level (+ class and augment labels) -> embedding through the two-layer mapping MLP."""
        emb = self.map_noise(noise_labels)  # [N, noise_channels] as [cos, sin]
        emb = emb.reshape(emb.shape[0], 2, -1).flip(1).reshape(*emb.shape)  # -> [sin, cos], the DDPM++ order
        if self.map_label is not None:
            labels = _drop_labels(class_labels, self.label_dropout, self.training)
            emb = emb + self.map_label(labels * np.sqrt(self.map_label.in_features))  # one-hot -> unit variance
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels)
        return silu(self.map_layer1(silu(self.map_layer0(emb))))

    def forward(self, x: torch.Tensor, noise_labels: torch.Tensor, class_labels: torch.Tensor | None,
                augment_labels: torch.Tensor | None = None) -> torch.Tensor:  # [N, in, H, W] -> [N, out, H, W]
        emb = self._embed(noise_labels, class_labels, augment_labels)
        skips = []
        aux = x  # Input pyramid of the 'skip' / 'residual' encoders.
        for name, block in self.enc.items():
            if 'aux_down' in name:
                aux = block(aux)
            elif 'aux_skip' in name:
                x = skips[-1] = x + block(aux)
            elif 'aux_residual' in name:
                x = skips[-1] = aux = (x + block(aux)) / np.sqrt(2)
            else:
                x = block(x, emb) if isinstance(block, UNetBlock) else block(x)
                skips.append(x)
        aux = tmp = None  # Output pyramid: each level's image prediction is added to the upsampled one below it.
        for name, block in self.dec.items():
            if 'aux_up' in name:
                aux = block(aux)
            elif 'aux_norm' in name:
                tmp = block(x)
            elif 'aux_conv' in name:
                tmp = block(silu(tmp))
                aux = tmp if aux is None else tmp + aux
            else:
                if x.shape[1] != block.in_channels:
                    x = torch.cat([x, skips.pop()], dim=1)
                x = block(x, emb)
        return aux


@persistence.persistent_class
class DhariwalUNet(torch.nn.Module):
    """The ADM U-Net of Dhariwal & Nichol 2021 ("Diffusion Models Beat GANs on Image Synthesis"), as in EDM.

    forward(x, noise_labels, class_labels, augment_labels=None) -> F(x) [N, out_channels, H, W].
    """

    def __init__(self,
        img_resolution: int,                # Image resolution at input and output.
        in_channels: int,                   # Image channels at input.
        out_channels: int,                  # Image channels at output.
        label_dim: int = 0,                 # Class label width; 0 = unconditional.
        augment_dim: int = 0,               # Augmentation label width; 0 = no augmentation conditioning.
        model_channels: int = 192,          # Base channel count.
        channel_mult: list = [1, 2, 3, 4],  # Channel multiplier per resolution level.
        channel_mult_emb: int = 4,          # Embedding width = model_channels * channel_mult_emb.
        num_blocks: int = 3,                # Residual blocks per resolution in the encoder.
        attn_resolutions: list = [32, 16, 8],  # Resolutions that get self-attention (64 channels per head).
        dropout: float = 0.10,              # Dropout probability in the residual blocks.
        label_dropout: float = 0,           # Probability of dropping the class label in training.
    ):
        super().__init__()
        self.img_resolution = img_resolution
        self.label_dropout = label_dropout
        emb_channels = model_channels * channel_mult_emb
        init = dict(init_mode='kaiming_uniform', init_weight=np.sqrt(1 / 3), init_bias=np.sqrt(1 / 3))
        init_zero = dict(init_mode='kaiming_uniform', init_weight=0, init_bias=0)
        block_kwargs = dict(emb_channels=emb_channels, channels_per_head=64, dropout=dropout, init=init,
                            init_zero=init_zero)

        self.map_noise = PositionalEmbedding(num_channels=model_channels)
        self.map_augment = Linear(augment_dim, model_channels, bias=False, **init_zero) if augment_dim else None
        self.map_layer0 = Linear(model_channels, emb_channels, **init)
        self.map_layer1 = Linear(emb_channels, emb_channels, **init)
        self.map_label = (Linear(label_dim, emb_channels, bias=False, init_mode='kaiming_normal',
                                 init_weight=np.sqrt(label_dim)) if label_dim else None)

        self.enc = torch.nn.ModuleDict()
        cout = in_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level == 0:
                cin, cout = cout, model_channels * mult
                self.enc[f'{res}x{res}_conv'] = Conv2d(cin, cout, kernel=3, **init)
            else:
                self.enc[f'{res}x{res}_down'] = UNetBlock(cout, cout, down=True, **block_kwargs)
            for idx in range(num_blocks):
                cin, cout = cout, model_channels * mult
                self.enc[f'{res}x{res}_block{idx}'] = UNetBlock(cin, cout, attention=(res in attn_resolutions),
                                                                **block_kwargs)
        skips = [block.out_channels for block in self.enc.values()]

        self.dec = torch.nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            if level == len(channel_mult) - 1:
                self.dec[f'{res}x{res}_in0'] = UNetBlock(cout, cout, attention=True, **block_kwargs)
                self.dec[f'{res}x{res}_in1'] = UNetBlock(cout, cout, **block_kwargs)
            else:
                self.dec[f'{res}x{res}_up'] = UNetBlock(cout, cout, up=True, **block_kwargs)
            for idx in range(num_blocks + 1):
                cin, cout = cout + skips.pop(), model_channels * mult
                self.dec[f'{res}x{res}_block{idx}'] = UNetBlock(cin, cout, attention=(res in attn_resolutions),
                                                                **block_kwargs)
        self.out_norm = GroupNorm(num_channels=cout)
        self.out_conv = Conv2d(cout, out_channels, kernel=3, **init_zero)

    def forward(self, x: torch.Tensor, noise_labels: torch.Tensor, class_labels: torch.Tensor | None,
                augment_labels: torch.Tensor | None = None) -> torch.Tensor:  # [N, in, H, W] -> [N, out, H, W]
        emb = self.map_noise(noise_labels)  # [N, model_channels]
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels)
        emb = self.map_layer1(silu(self.map_layer0(emb)))  # [N, emb_channels]
        if self.map_label is not None:
            emb = emb + self.map_label(_drop_labels(class_labels, self.label_dropout, self.training))
        emb = silu(emb)
        skips = []
        for block in self.enc.values():
            x = block(x, emb) if isinstance(block, UNetBlock) else block(x)
            skips.append(x)
        for block in self.dec.values():
            if x.shape[1] != block.in_channels:
                x = torch.cat([x, skips.pop()], dim=1)
            x = block(x, emb)
        return self.out_conv(silu(self.out_norm(x)))


# ----------------------------------------------------------------------------------------------------------------------
# Preconditioners: D(x; sigma) = c_skip x + c_out F(c_in x, c_noise) (EDM Table 1).

_BACKBONES = ('SongUNet', 'DhariwalUNet')


def _backbone(model_type: str, **kwargs) -> torch.nn.Module:
    """Build the backbone named `model_type`; by name because recorded pickles store the name."""
    _check_choice('model_type', model_type, _BACKBONES)
    return globals()[model_type](**kwargs)


def _prepare_inputs(net: torch.nn.Module, x: torch.Tensor, sigma: torch.Tensor | float,
                    class_labels: torch.Tensor | None, force_fp32: bool) -> tuple:
    """Shared preconditioner prologue: float32 x [N, C, H, W], sigma [N or 1, 1, 1, 1], labels [N or 1, label_dim]
    (zeros when a conditional net gets None, None for an unconditional one) and the backbone dtype."""
    x = x.to(torch.float32)
    sigma = torch.as_tensor(sigma, device=x.device).to(torch.float32).reshape(-1, 1, 1, 1)
    if net.label_dim == 0:
        class_labels = None
    elif class_labels is None:
        class_labels = torch.zeros([1, net.label_dim], device=x.device)
    else:
        class_labels = class_labels.to(torch.float32).reshape(-1, net.label_dim)
    use_fp16 = net.use_fp16 and not force_fp32 and x.device.type == 'cuda'
    return x, sigma, class_labels, (torch.float16 if use_fp16 else torch.float32)


@persistence.persistent_class
class VPPrecond(torch.nn.Module):
    """Preconditioning of the variance-preserving SDE (DDPM++; Song et al. 2021): c_noise = (M - 1) t(sigma)."""

    def __init__(self,
        img_resolution: int,                # Image resolution.
        img_channels: int,                  # Image channels.
        label_dim: int = 0,                 # Class label width; 0 = unconditional.
        use_fp16: bool = False,             # Run the backbone in float16 (CUDA only).
        beta_d: float = 19.9,               # Extent of the noise level schedule.
        beta_min: float = 0.1,              # Initial slope of the noise level schedule.
        M: int = 1000,                      # Original number of timesteps of the DDPM formulation.
        epsilon_t: float = 1e-5,            # Minimum t-value used during training.
        model_type: str = 'SongUNet',       # Backbone class name.
        **model_kwargs,                     # Backbone keyword arguments.
    ):
        super().__init__()
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.label_dim = label_dim
        self.use_fp16 = use_fp16
        self.beta_d = beta_d
        self.beta_min = beta_min
        self.M = M
        self.epsilon_t = epsilon_t
        with torch.device('cpu'):  # Real numbers even when the network is built under a meta-device context.
            self.sigma_min = float(self.sigma(epsilon_t))
            self.sigma_max = float(self.sigma(1))
        self.model = _backbone(model_type, img_resolution=img_resolution, in_channels=img_channels,
                               out_channels=img_channels, label_dim=label_dim, **model_kwargs)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, class_labels: torch.Tensor | None = None,
                force_fp32: bool = False, **model_kwargs) -> torch.Tensor:  # [N, C, H, W] -> D(x; sigma) [N, C, H, W]
        x, sigma, class_labels, dtype = _prepare_inputs(self, x, sigma, class_labels, force_fp32)
        c_skip = 1
        c_out = -sigma
        c_in = 1 / (sigma ** 2 + 1).sqrt()
        c_noise = (self.M - 1) * self.sigma_inv(sigma)
        F_x = self.model((c_in * x).to(dtype), c_noise.flatten(), class_labels=class_labels, **model_kwargs)
        assert F_x.dtype == dtype or torch.is_autocast_enabled(F_x.device.type)  # Autocast: the op's dtype.
        return c_skip * x + c_out * F_x.to(torch.float32)

    def sigma(self, t: torch.Tensor | float) -> torch.Tensor:
        """VP noise level sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1)."""
        t = torch.as_tensor(t)
        return ((0.5 * self.beta_d * (t ** 2) + self.beta_min * t).exp() - 1).sqrt()

    def sigma_inv(self, sigma: torch.Tensor | float) -> torch.Tensor:
        """Inverse of sigma(t): t = (sqrt(beta_min^2 + 2 beta_d ln(1 + sigma^2)) - beta_min) / beta_d."""
        sigma = torch.as_tensor(sigma)
        return ((self.beta_min ** 2 + 2 * self.beta_d * (1 + sigma ** 2).log()).sqrt() - self.beta_min) / self.beta_d

    def round_sigma(self, sigma: torch.Tensor | float) -> torch.Tensor:
        """Noise levels are continuous: returned unchanged as a tensor."""
        return torch.as_tensor(sigma)


@persistence.persistent_class
class VEPrecond(torch.nn.Module):
    """Preconditioning of the variance-exploding SDE (NCSN++; Song et al. 2021): c_noise = ln(sigma / 2)."""

    def __init__(self,
        img_resolution: int,                # Image resolution.
        img_channels: int,                  # Image channels.
        label_dim: int = 0,                 # Class label width; 0 = unconditional.
        use_fp16: bool = False,             # Run the backbone in float16 (CUDA only).
        sigma_min: float = 0.02,            # Minimum supported noise level.
        sigma_max: float = 100,             # Maximum supported noise level.
        model_type: str = 'SongUNet',       # Backbone class name.
        **model_kwargs,                     # Backbone keyword arguments.
    ):
        super().__init__()
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.label_dim = label_dim
        self.use_fp16 = use_fp16
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max
        self.model = _backbone(model_type, img_resolution=img_resolution, in_channels=img_channels,
                               out_channels=img_channels, label_dim=label_dim, **model_kwargs)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, class_labels: torch.Tensor | None = None,
                force_fp32: bool = False, **model_kwargs) -> torch.Tensor:  # [N, C, H, W] -> D(x; sigma) [N, C, H, W]
        x, sigma, class_labels, dtype = _prepare_inputs(self, x, sigma, class_labels, force_fp32)
        c_skip = 1
        c_out = sigma
        c_in = 1
        c_noise = (0.5 * sigma).log()
        F_x = self.model((c_in * x).to(dtype), c_noise.flatten(), class_labels=class_labels, **model_kwargs)
        assert F_x.dtype == dtype or torch.is_autocast_enabled(F_x.device.type)  # Autocast: the op's dtype.
        return c_skip * x + c_out * F_x.to(torch.float32)

    def round_sigma(self, sigma: torch.Tensor | float) -> torch.Tensor:
        """Noise levels are continuous: returned unchanged as a tensor."""
        return torch.as_tensor(sigma)


@persistence.persistent_class
class iDDPMPrecond(torch.nn.Module):
    """Preconditioning of improved DDPM (Nichol & Dhariwal 2021): sigma is snapped to the cosine-schedule grid `u`
    and c_noise = M - 1 - j is the DDPM timestep of grid index j. The backbone's second output half is ignored."""

    def __init__(self,
        img_resolution: int,                # Image resolution.
        img_channels: int,                  # Image channels.
        label_dim: int = 0,                 # Class label width; 0 = unconditional.
        use_fp16: bool = False,             # Run the backbone in float16 (CUDA only).
        C_1: float = 0.001,                 # Lower bound on alpha_bar(j-1) / alpha_bar(j) (beta clipped at 0.999).
        C_2: float = 0.008,                 # Offset s of the cosine schedule.
        M: int = 1000,                      # Original number of timesteps of the DDPM formulation.
        model_type: str = 'DhariwalUNet',   # Backbone class name.
        **model_kwargs,                     # Backbone keyword arguments.
    ):
        super().__init__()
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.label_dim = label_dim
        self.use_fp16 = use_fp16
        self.C_1 = C_1
        self.C_2 = C_2
        self.M = M
        self.model = _backbone(model_type, img_resolution=img_resolution, in_channels=img_channels,
                               out_channels=img_channels * 2, label_dim=label_dim, **model_kwargs)
        # u_{j-1}^2 + 1 = (u_j^2 + 1) / max(alpha_bar(j-1) / alpha_bar(j), C_1), u_M = 0. The recursion runs in
        # float64 on the CPU (exact to float32 rounding, independent of a meta-device context) and is stored as float32.
        u = np.zeros(M + 1)
        for j in range(M, 0, -1):
            ratio = max(self._alpha_bar_np(j - 1) / self._alpha_bar_np(j), C_1)
            u[j - 1] = np.sqrt((u[j] ** 2 + 1) / ratio - 1)
        self.register_buffer('u', torch.tensor(u, dtype=torch.float32))  # [M + 1], decreasing
        self.sigma_min = float(np.float32(u[M - 1]))  # the float32 buffer values
        self.sigma_max = float(np.float32(u[0]))

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, class_labels: torch.Tensor | None = None,
                force_fp32: bool = False, **model_kwargs) -> torch.Tensor:  # [N, C, H, W] -> D(x; sigma) [N, C, H, W]
        x, sigma, class_labels, dtype = _prepare_inputs(self, x, sigma, class_labels, force_fp32)
        c_skip = 1
        c_out = -sigma
        c_in = 1 / (sigma ** 2 + 1).sqrt()
        c_noise = self.M - 1 - self.round_sigma(sigma, return_index=True).to(torch.float32)
        F_x = self.model((c_in * x).to(dtype), c_noise.flatten(), class_labels=class_labels, **model_kwargs)
        assert F_x.dtype == dtype or torch.is_autocast_enabled(F_x.device.type)  # Autocast: the op's dtype.
        return c_skip * x + c_out * F_x[:, :self.img_channels].to(torch.float32)

    def alpha_bar(self, j: torch.Tensor | int) -> torch.Tensor:
        """alpha_bar(j) = sin^2(pi j / (2 M (1 + C_2))): the cosine schedule indexed from the noisy end."""
        j = torch.as_tensor(j)
        return (0.5 * np.pi * j / self.M / (self.C_2 + 1)).sin() ** 2

    def _alpha_bar_np(self, j: int) -> float:
        """alpha_bar(j) as a float64 number, for building the grid."""
        return float(np.sin(0.5 * np.pi * j / self.M / (self.C_2 + 1)) ** 2)

    def round_sigma(self, sigma: torch.Tensor | float, return_index: bool = False) -> torch.Tensor:
        """Snap sigma to the nearest grid value u_j (or return the index j), keeping sigma's shape and device."""
        sigma = torch.as_tensor(sigma)
        dist = (sigma.to(self.u.device).to(torch.float32).reshape(-1, 1) - self.u.reshape(1, -1)).abs()  # [S, M+1]
        index = dist.argmin(dim=1)
        result = index if return_index else self.u[index].to(sigma.dtype)
        return result.reshape(sigma.shape).to(sigma.device)


@persistence.persistent_class
class EDMPrecond(torch.nn.Module):
    """EDM's own preconditioning (Karras et al. 2022, Table 1): unit-variance input and training target for every
    sigma, c_noise = ln(sigma) / 4."""

    def __init__(self,
        img_resolution: int,                # Image resolution.
        img_channels: int,                  # Image channels.
        label_dim: int = 0,                 # Class label width; 0 = unconditional.
        use_fp16: bool = False,             # Run the backbone in float16 (CUDA only).
        sigma_min: float = 0,               # Minimum supported noise level.
        sigma_max: float = float('inf'),    # Maximum supported noise level.
        sigma_data: float = 0.5,            # Standard deviation of the training data.
        model_type: str = 'DhariwalUNet',   # Backbone class name.
        **model_kwargs,                     # Backbone keyword arguments.
    ):
        super().__init__()
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.label_dim = label_dim
        self.use_fp16 = use_fp16
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max
        self.sigma_data = sigma_data
        self.model = _backbone(model_type, img_resolution=img_resolution, in_channels=img_channels,
                               out_channels=img_channels, label_dim=label_dim, **model_kwargs)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, class_labels: torch.Tensor | None = None,
                force_fp32: bool = False, **model_kwargs) -> torch.Tensor:  # [N, C, H, W] -> D(x; sigma) [N, C, H, W]
        x, sigma, class_labels, dtype = _prepare_inputs(self, x, sigma, class_labels, force_fp32)
        sd = self.sigma_data
        c_skip = sd ** 2 / (sigma ** 2 + sd ** 2)
        c_out = sigma * sd / (sigma ** 2 + sd ** 2).sqrt()
        c_in = 1 / (sd ** 2 + sigma ** 2).sqrt()
        c_noise = sigma.log() / 4
        F_x = self.model((c_in * x).to(dtype), c_noise.flatten(), class_labels=class_labels, **model_kwargs)
        assert F_x.dtype == dtype or torch.is_autocast_enabled(F_x.device.type)  # Autocast: the op's dtype.
        return c_skip * x + c_out * F_x.to(torch.float32)

    def round_sigma(self, sigma: torch.Tensor | float) -> torch.Tensor:
        """Noise levels are continuous: returned unchanged as a tensor."""
        return torch.as_tensor(sigma)
