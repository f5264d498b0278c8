"""The StyleGAN2 generator (Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN"), as used by
StyleGAN2-ADA (Karras et al. 2020, "Training Generative Adversarial Networks with Limited Data").

G = synthesis(mapping(z, c)): an MLP (8 layers by default) maps z to w, and a stack of resolution blocks turns a
learned 4x4 constant into an image, every 3x3 conv modulated by a style from w and followed by per-pixel noise.
Constructor keywords, forward signatures and the names, shapes and registration order of all parameters and buffers
match the official StyleGAN2-ADA networks (docs/spec/stylegan2-ada.md 3.1-3.4), so official snapshots resume by name and
their recorded init kwargs build these classes. Class names resolve as `training.networks.<Name>` for every network
class, including the discriminator's (official training options name them so).

A pickle of these classes stores this file's source and reruns it on load, possibly where this repository is absent
(only torch_utils and dnnlib importable, as for NVIDIA's pickles). So everything a forward pass runs lives in this file
or in torch_utils; the sibling modules are needed only to *build* networks and their import may fail in a pickle.
"""

import numpy as np
import torch

from torch_utils import misc, persistence
from torch_utils.ops import bias_act, conv2d_resample, fma, upfirdn2d

try:
    from training.discriminator import Discriminator, DiscriminatorBlock, DiscriminatorEpilogue, MinibatchStdLayer
    from training.layers import Conv2dLayer, FullyConnectedLayer, MappingNetwork, check_choice, normalize_2nd_moment
except ModuleNotFoundError as exc:
    # Running from a pickle without this repository (or next to NVIDIA's `training` package): build-time names only.
    if exc.name is None or exc.name.split('.')[0] != 'training':
        raise

# The generator's classes, and (re-exported) the layers' and the discriminator's: official options name them all
# 'training.networks.<Name>'.
__all__ = ['modulated_conv2d', 'SynthesisLayer', 'ToRGBLayer', 'SynthesisBlock', 'SynthesisNetwork', 'Generator',
           'normalize_2nd_moment', 'FullyConnectedLayer', 'Conv2dLayer', 'MappingNetwork',
           'DiscriminatorBlock', 'MinibatchStdLayer', 'DiscriminatorEpilogue', 'Discriminator']

_NOISE_MODES = ('random', 'const', 'none')
_ARCHITECTURES = ('orig', 'skip', 'resnet')
# CPU activations in channels_last (NHWC): oneDNN's convolutions run ~1.3x faster on them than on NCHW.
CPU_CHANNELS_LAST = True

# ----------------------------------------------------------------------------------------------------------------------
# Modulated convolution (paper section 2.2, eq. 1-3). Kept here rather than in layers.py because SynthesisLayer's
# forward pass calls it, and a pickled SynthesisLayer can only rely on this file's source.


def modulated_conv2d(
    x: torch.Tensor,                    # Input activations [N, I, H, W].
    weight: torch.Tensor,               # Shared weight [O, I, k, k].
    styles: torch.Tensor,               # Per-sample input-channel scales s [N, I].
    noise: torch.Tensor = None,         # Added to the output, broadcastable to [N, O, H', W']; None = no noise.
    up: int = 1,                        # Integer upsampling factor.
    down: int = 1,                      # Integer downsampling factor.
    padding: int = 0,                   # Padding, applied once to the upsampled image (see conv2d_resample).
    resample_filter: torch.Tensor = None,  # FIR filter from upfirdn2d.setup_filter; None = box.
    demodulate: bool = True,            # Scale each output channel of the modulated weight to unit norm (eq. 3).
    flip_weight: bool = True,           # False = true convolution (what the transposed conv of up > 1 computes).
    fused_modconv: bool = True,         # One grouped conv with per-sample weights, instead of scaling activations.
) -> torch.Tensor:
    """Convolve sample n of `x` with w'_n = weight * styles[n] (eq. 1), demodulated by rsqrt(sum w'^2 + 1e-8) (eq. 3),
    then add `noise`. Both paths compute the same result: [N, O, H', W']."""
    batch_size = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    misc.assert_shape(x, [batch_size, in_channels, None, None])
    misc.assert_shape(styles, [batch_size, in_channels])

    if x.dtype == torch.float16 and demodulate:
        # Demodulation cancels per-output-channel weight scales and global style scales, so dividing both by their
        # max changes nothing except keeping the fp16 activations and products far from overflow.
        weight = weight * (1 / np.sqrt(in_channels * kh * kw) / weight.abs().amax(dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.abs().amax(dim=1, keepdim=True)

    dcoefs = None
    if demodulate:
        # Eq. 3 sums (weight * s)^2 over i and the taps; that factorises into s^2 @ (sum over taps of weight^2), which
        # avoids building the [N, O, I, k, k] per-sample weights in the non-fused (training) path: 2.2x faster G
        # forward+backward on CPU. The per-sample formula is the test oracle.
        dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()  # [N, O]
    conv_kwargs = dict(f=resample_filter, up=up, down=down, padding=padding, flip_weight=flip_weight)

    if not fused_modconv:
        # Scale activations instead of weights: one shared-weight conv for the whole batch (cheaper to train).
        x = x * styles.to(x.dtype).reshape(batch_size, in_channels, 1, 1)
        x = conv2d_resample.conv2d_resample(x=x, w=weight.to(x.dtype), **conv_kwargs)  # [N, O, H', W']
        if demodulate and noise is not None:
            return fma.fma(x, dcoefs.to(x.dtype).reshape(batch_size, out_channels, 1, 1), noise.to(x.dtype))
        if demodulate:
            return x * dcoefs.to(x.dtype).reshape(batch_size, out_channels, 1, 1)
        return x + noise.to(x.dtype) if noise is not None else x

    # Fused: the batch becomes the groups of a single conv over [1, N * I, H, W].
    w = weight.unsqueeze(0) * styles.reshape(batch_size, 1, in_channels, 1, 1)  # [N, O, I, k, k]
    if demodulate:
        w = w * dcoefs.reshape(batch_size, out_channels, 1, 1, 1)
    x = x.reshape(1, batch_size * in_channels, *x.shape[2:])
    w = w.reshape(batch_size * out_channels, in_channels, kh, kw)
    x = conv2d_resample.conv2d_resample(x=x, w=w.to(x.dtype), groups=batch_size, **conv_kwargs)
    x = x.reshape(batch_size, out_channels, *x.shape[2:])  # [N, O, H', W']
    if noise is not None:
        x = x.add_(noise)  # In place: the sum is formed at the wider dtype and rounded once, as in the official code.
    return x

# ----------------------------------------------------------------------------------------------------------------------
# Synthesis network.


@persistence.persistent_class
class SynthesisLayer(torch.nn.Module):
    """Modulated 3x3 conv (optionally 2x upsampling) + per-pixel noise + bias + lrelu, styled by one w."""

    def __init__(self,
        in_channels: int,                   # Input channels.
        out_channels: int,                  # Output channels.
        w_dim: int,                         # Intermediate latent (W) dimensionality.
        resolution: int,                    # Output resolution.
        kernel_size: int = 3,               # Convolution kernel width.
        up: int = 1,                        # Integer upsampling factor.
        use_noise: bool = True,             # Add per-pixel noise (StyleGAN's stochastic variation).
        activation: str = 'lrelu',          # Any bias_act activation.
        resample_filter=[1, 3, 3, 1],       # FIR taps of the upsampling filter.
        conv_clamp: float = None,           # Clamp the output to +-conv_clamp; None = no clamping.
        channels_last: bool = False,        # Keep the weight in channels_last memory format.
    ):
        super().__init__()
        check_choice('activation', activation, sorted(bias_act.activation_funcs))
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)  # styles start at 1
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.act_gain = bias_act.activation_funcs[activation].def_gain

        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = torch.nn.Parameter(
            torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format))
        if use_noise:
            self.register_buffer('noise_const', torch.randn([resolution, resolution]))
            self.noise_strength = torch.nn.Parameter(torch.zeros([]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x, w, noise_mode='random', fused_modconv=True, gain=1):
        """x [N, I, res / up, res / up], w [N, w_dim] -> [N, O, res, res]; noise_mode is 'random', 'const' or 'none'."""
        if noise_mode not in _NOISE_MODES:
            raise ValueError(f'noise_mode={noise_mode!r}: expected one of {list(_NOISE_MODES)}')
        in_resolution = self.resolution // self.up
        misc.assert_shape(x, [None, self.weight.shape[1], in_resolution, in_resolution])
        styles = self.affine(w)  # [N, I]

        noise = None
        if self.use_noise and noise_mode == 'random':
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device)
            noise = noise * self.noise_strength  # [N, 1, res, res]
        if self.use_noise and noise_mode == 'const':
            noise = self.noise_const * self.noise_strength  # [res, res], the same for every sample

        x = modulated_conv2d(x=x, weight=self.weight, styles=styles, noise=noise, up=self.up, padding=self.padding,
                             resample_filter=self.resample_filter, flip_weight=(self.up == 1),
                             fused_modconv=fused_modconv)
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act.bias_act(x, self.bias.to(x.dtype), act=self.activation, gain=self.act_gain * gain,
                                 clamp=act_clamp)

    def extra_repr(self) -> str:
        return (f'in_channels={self.in_channels}, out_channels={self.out_channels}, resolution={self.resolution}, '
                f'up={self.up}, activation={self.activation}')


@persistence.persistent_class
class ToRGBLayer(torch.nn.Module):
    """Modulated 1x1 conv without demodulation, from features to image channels (plus bias, no activation)."""

    def __init__(self,
        in_channels: int,                   # Input channels.
        out_channels: int,                  # Image channels.
        w_dim: int,                         # Intermediate latent (W) dimensionality.
        kernel_size: int = 1,               # Convolution kernel width.
        conv_clamp: float = None,           # Clamp the output to +-conv_clamp; None = no clamping.
        channels_last: bool = False,        # Keep the weight in channels_last memory format.
    ):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = torch.nn.Parameter(
            torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        # Without demodulation the equalized-learning-rate gain has to be applied explicitly, here to the styles.
        self.weight_gain = 1 / np.sqrt(in_channels * (kernel_size ** 2))

    def forward(self, x, w, fused_modconv=True):
        """x [N, I, H, W], w [N, w_dim] -> [N, img_channels, H, W] (for kernel_size 1)."""
        styles = self.affine(w) * self.weight_gain  # [N, I]
        x = modulated_conv2d(x=x, weight=self.weight, styles=styles, demodulate=False, fused_modconv=fused_modconv)
        return bias_act.bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)


@persistence.persistent_class
class SynthesisBlock(torch.nn.Module):
    """One resolution of the synthesis network: (const or 2x-upsampling conv0) + conv1, and the image path."""

    def __init__(self,
        in_channels: int,                   # Input channels; 0 = first block (starts from a learned const).
        out_channels: int,                  # Output channels.
        w_dim: int,                         # Intermediate latent (W) dimensionality.
        resolution: int,                    # Resolution of this block.
        img_channels: int,                  # Image channels.
        is_last: bool,                      # Last block: always has a ToRGB layer.
        architecture: str = 'skip',         # 'orig', 'skip' (sum of upsampled ToRGB outputs) or 'resnet'.
        resample_filter=[1, 3, 3, 1],       # FIR taps of the upsampling filter.
        conv_clamp: float = None,           # Clamp conv outputs to +-conv_clamp; None = no clamping.
        use_fp16: bool = False,             # Run this block in fp16 (on CUDA only; see forward).
        fp16_channels_last: bool = False,   # Use channels_last memory format with fp16.
        fused_modconv_default=None,         # fused_modconv when the caller passes None: None = StyleGAN2-ADA's rule
                                            # (fused in eval, fp16 only at batch 1); True, False or 'inference_only'
                                            # (= not training) as StyleGAN3's networks_stylegan2.
        **layer_kwargs,                     # Passed on to SynthesisLayer.
    ):
        super().__init__()
        check_choice('architecture', architecture, _ARCHITECTURES)
        if fused_modconv_default not in (None, True, False, 'inference_only'):
            raise ValueError(f"fused_modconv_default={fused_modconv_default!r}: expected None, True, False or "
                             "'inference_only'")
        self.fused_modconv_default = fused_modconv_default
        self.in_channels = in_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = (use_fp16 and fp16_channels_last)
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))
        self.num_conv = 0
        self.num_torgb = 0
        layer_kwargs = dict(w_dim=w_dim, resolution=resolution, conv_clamp=conv_clamp,
                            channels_last=self.channels_last, **layer_kwargs)

        if in_channels == 0:
            self.const = torch.nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, up=2, resample_filter=resample_filter,
                                        **layer_kwargs)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, **layer_kwargs)
        self.num_conv += 1
        if is_last or architecture == 'skip':
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp,
                                    channels_last=self.channels_last)
            self.num_torgb += 1
        if in_channels != 0 and architecture == 'resnet':
            self.skip = Conv2dLayer(in_channels, out_channels, kernel_size=1, bias=False, up=2,
                                    resample_filter=resample_filter, channels_last=self.channels_last)

    def forward(self, x, img, ws, force_fp32=False, fused_modconv=None, update_emas=False, **layer_kwargs):
        """(x [N, I, res/2, res/2] or None, img [N, C, res/2, res/2] or None, ws [N, num_conv + num_torgb, w_dim])
        -> (x [N, O, res, res], img [N, C, res, res] float32 or None). `update_emas` is accepted for StyleGAN3-style
        callers; synthesis keeps no running averages."""
        misc.assert_shape(ws, [None, self.num_conv + self.num_torgb, self.w_dim])
        w_iter = iter(ws.unbind(dim=1))
        # fp16 only on CUDA: on CPU half-precision convolutions are far slower (measured: docs/spec/stylegan2-ada.md).
        use_fp16 = self.use_fp16 and not force_fp32 and ws.device.type == 'cuda'
        dtype = torch.float16 if use_fp16 else torch.float32
        memory_format = (torch.channels_last if (self.channels_last or (CPU_CHANNELS_LAST and ws.device.type == 'cpu'))
                         and not force_fp32 else torch.contiguous_format)
        if fused_modconv is None:
            fused_modconv = self.fused_modconv_default
        if fused_modconv == 'inference_only':
            fused_modconv = not self.training
        if fused_modconv is None:
            with misc.suppress_tracer_warnings():  # int(batch) is a constant in traces; that is intended
                fused_modconv = (not self.training) and (dtype == torch.float32 or int(ws.shape[0]) == 1)
        layer_kwargs = dict(fused_modconv=fused_modconv, **layer_kwargs)

        if self.in_channels == 0:
            x = self.const.to(dtype=dtype).unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])  # [N, O, 4, 4]
            x = x.to(memory_format=memory_format)
            x = self.conv1(x, next(w_iter), **layer_kwargs)
        else:
            misc.assert_shape(x, [None, self.in_channels, self.resolution // 2, self.resolution // 2])
            x = x.to(dtype=dtype, memory_format=memory_format)
            if self.architecture == 'resnet':
                y = self.skip(x, gain=np.sqrt(0.5))  # sqrt(0.5) on both paths keeps the sum's variance
                x = self.conv0(x, next(w_iter), **layer_kwargs)
                x = self.conv1(x, next(w_iter), gain=np.sqrt(0.5), **layer_kwargs)
                x = y.add_(x)
            else:
                x = self.conv0(x, next(w_iter), **layer_kwargs)
                x = self.conv1(x, next(w_iter), **layer_kwargs)

        if img is not None:
            misc.assert_shape(img, [None, self.img_channels, self.resolution // 2, self.resolution // 2])
            img = upfirdn2d.upsample2d(img, self.resample_filter)
        if self.is_last or self.architecture == 'skip':
            y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv)
            y = y.to(dtype=torch.float32, memory_format=torch.contiguous_format)
            img = img.add_(y) if img is not None else y
        assert x.dtype == dtype and (img is None or img.dtype == torch.float32)
        return x, img

    def extra_repr(self) -> str:
        return f'resolution={self.resolution}, architecture={self.architecture}'


@persistence.persistent_class
class SynthesisNetwork(torch.nn.Module):
    """ws [N, num_ws, w_dim] -> image [N, img_channels, img_resolution, img_resolution] (float32, nominally [-1, 1])."""

    def __init__(self,
        w_dim: int,                         # Intermediate latent (W) dimensionality.
        img_resolution: int,                # Output resolution, a power of two >= 4.
        img_channels: int,                  # Number of image channels.
        channel_base: int = 32768,          # Channels at resolution r: min(channel_base // r, channel_max).
        channel_max: int = 512,             # Maximum channels in any block.
        num_fp16_res: int = 0,              # Run the highest `num_fp16_res` resolutions (but not 4x4) in fp16.
        **block_kwargs,                     # Passed on to SynthesisBlock.
    ):
        super().__init__()
        if not isinstance(img_resolution, int) or img_resolution < 4 or img_resolution & (img_resolution - 1):
            raise ValueError(f'img_resolution={img_resolution!r}: expected a power of two >= 4')
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.img_channels = img_channels
        self.block_resolutions = [2 ** i for i in range(2, self.img_resolution_log2 + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)

        self.num_ws = 0
        for res in self.block_resolutions:
            is_last = (res == self.img_resolution)
            block = SynthesisBlock(channels[res // 2] if res > 4 else 0, channels[res], w_dim=w_dim, resolution=res,
                                   img_channels=img_channels, is_last=is_last, use_fp16=(res >= fp16_resolution),
                                   **block_kwargs)
            # Each block's ToRGB shares the next block's first w, so only the last block's ToRGB adds one.
            self.num_ws += block.num_conv + (block.num_torgb if is_last else 0)
            setattr(self, f'b{res}', block)

    def forward(self, ws, **block_kwargs):
        """ws [N, num_ws, w_dim] -> img [N, img_channels, R, R]; block_kwargs: noise_mode, force_fp32, fused_modconv."""
        if not isinstance(ws, torch.Tensor) or ws.ndim != 3 or tuple(ws.shape[1:]) != (self.num_ws, self.w_dim):
            raise ValueError(f'ws must be a tensor of shape [N, {self.num_ws}, {self.w_dim}], got '
                             f'{list(ws.shape) if isinstance(ws, torch.Tensor) else type(ws).__name__}')
        ws = ws.to(torch.float32)
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f'b{res}')
            block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)  # [N, num_conv + num_torgb, w_dim]
            x, img = block(x, img, block_ws, **block_kwargs)
            w_idx += block.num_conv
        return img

    def extra_repr(self) -> str:
        return f'w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}'


@persistence.persistent_class
class Generator(torch.nn.Module):
    """StyleGAN2 generator: z [N, z_dim], c [N, c_dim] -> image [N, img_channels, img_resolution, img_resolution]."""

    def __init__(self,
        z_dim: int,                         # Input latent (Z) dimensionality; 0 = no latent.
        c_dim: int,                         # Conditioning label (C) dimensionality; 0 = unconditional.
        w_dim: int,                         # Intermediate latent (W) dimensionality.
        img_resolution: int,                # Output resolution, a power of two >= 4.
        img_channels: int,                  # Number of output color channels.
        mapping_kwargs: dict = {},          # Passed on to MappingNetwork.
        synthesis_kwargs: dict = {},        # Passed on to SynthesisNetwork.
    ):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        # Registered before `mapping`, as in the official code: parameters() order is part of the EMA contract.
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                                          **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **mapping_kwargs)

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, skip_w_avg_update=False, update_emas=None,
                **synthesis_kwargs):
        """Return images [N, img_channels, R, R] float32; synthesis_kwargs: noise_mode, force_fp32, fused_modconv."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          skip_w_avg_update=skip_w_avg_update, update_emas=update_emas)
        return self.synthesis(ws, **synthesis_kwargs)
