"""The StyleGAN2 discriminator (Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN") with the
StyleGAN2-ADA options: Freeze-D (Mo et al. 2020) and projection conditioning (Miyato & Koyama 2018).

Blocks halve the resolution from img_resolution down to 8; the 4x4 epilogue appends the minibatch standard deviation
(Karras et al. 2018), then a conv and two dense layers give one logit per image. Constructor keywords and the names,
shapes and registration order of parameters and buffers match the official StyleGAN2-ADA networks
(docs/spec/stylegan2-ada.md 3.3-3.4); `training.networks` re-exports every class here.

A pickle of these classes stores this file's source and may be loaded where this repository is absent, so the forward
passes use only this file and torch_utils; the layer classes from training.layers are needed only to build networks.
"""

import numpy as np
import torch

from torch_utils import misc, persistence
from torch_utils.ops import upfirdn2d

try:
    from training.layers import Conv2dLayer, FullyConnectedLayer, MappingNetwork, check_choice
except ModuleNotFoundError as exc:
    # Running from a pickle without this repository (or next to NVIDIA's `training` package): build-time names only.
    if exc.name is None or exc.name.split('.')[0] != 'training':
        raise

_ARCHITECTURES = ('orig', 'skip', 'resnet')
# CPU activations in channels_last (NHWC): oneDNN's convolutions run ~1.3x faster on them than on NCHW.
CPU_CHANNELS_LAST = True


@persistence.persistent_class
class DiscriminatorBlock(torch.nn.Module):
    """One resolution of D: (fromrgb) + conv0 + conv1 with 2x downsampling (+ a 1x1 skip for 'resnet')."""

    def __init__(self,
        in_channels: int,                   # Input channels: 0 for the first block (it reads the image), else tmp.
        tmp_channels: int,                  # Channels between conv0 and conv1.
        out_channels: int,                  # Output channels.
        resolution: int,                    # Input resolution of this block.
        img_channels: int,                  # Image channels.
        first_layer_idx: int,               # Global index of this block's first layer (for Freeze-D).
        architecture: str = 'resnet',       # 'orig', 'skip' (fromrgb at every block) or 'resnet'.
        activation: str = 'lrelu',          # Any bias_act activation.
        resample_filter=[1, 3, 3, 1],       # FIR taps of the downsampling filter.
        conv_clamp: float = None,           # Clamp conv outputs to +-conv_clamp; None = no clamping.
        use_fp16: bool = False,             # Run this block in fp16 (on CUDA only; see forward).
        fp16_channels_last: bool = False,   # Use channels_last memory format with fp16.
        freeze_layers: int = 0,             # Layers with a global index below this are frozen (Freeze-D).
    ):
        super().__init__()
        if in_channels not in (0, tmp_channels):
            raise ValueError(f'in_channels={in_channels!r}: expected 0 (first block) or tmp_channels={tmp_channels}')
        check_choice('architecture', architecture, _ARCHITECTURES)
        self.in_channels = in_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.first_layer_idx = first_layer_idx
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = (use_fp16 and fp16_channels_last)
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))
        self.num_layers = 0

        def layer(*args, **kwargs):
            # Layers are numbered in creation order across D; the first `freeze_layers` of them are not trained.
            trainable = first_layer_idx + self.num_layers >= freeze_layers
            self.num_layers += 1
            return Conv2dLayer(*args, trainable=trainable, channels_last=self.channels_last, **kwargs)

        if in_channels == 0 or architecture == 'skip':
            self.fromrgb = layer(img_channels, tmp_channels, kernel_size=1, activation=activation,
                                 conv_clamp=conv_clamp)
        self.conv0 = layer(tmp_channels, tmp_channels, kernel_size=3, activation=activation, conv_clamp=conv_clamp)
        self.conv1 = layer(tmp_channels, out_channels, kernel_size=3, activation=activation, down=2,
                           resample_filter=resample_filter, conv_clamp=conv_clamp)
        if architecture == 'resnet':
            self.skip = layer(tmp_channels, out_channels, kernel_size=1, bias=False, down=2,
                              resample_filter=resample_filter)

    def forward(self, x, img, force_fp32=False):
        """(x [N, tmp, res, res] or None, img [N, C, res, res] or None) -> (x [N, out, res/2, res/2], img or None)."""
        # fp16 only on CUDA: on CPU half-precision convolutions are far slower (measured: docs/spec/stylegan2-ada.md).
        use_fp16 = self.use_fp16 and not force_fp32 and (x if x is not None else img).device.type == 'cuda'
        dtype = torch.float16 if use_fp16 else torch.float32
        cpu = (x if x is not None else img).device.type == 'cpu'
        memory_format = (torch.channels_last if (self.channels_last or (CPU_CHANNELS_LAST and cpu)) and not force_fp32
                         else torch.contiguous_format)

        if x is not None:
            misc.assert_shape(x, [None, self.in_channels, self.resolution, self.resolution])
            x = x.to(dtype=dtype, memory_format=memory_format)
        if self.in_channels == 0 or self.architecture == 'skip':
            misc.assert_shape(img, [None, self.img_channels, self.resolution, self.resolution])
            img = img.to(dtype=dtype, memory_format=memory_format)
            y = self.fromrgb(img)
            x = x + y if x is not None else y
            img = upfirdn2d.downsample2d(img, self.resample_filter) if self.architecture == 'skip' else None

        if self.architecture == 'resnet':
            y = self.skip(x, gain=np.sqrt(0.5))  # sqrt(0.5) on both paths keeps the sum's variance
            x = self.conv0(x)
            x = self.conv1(x, gain=np.sqrt(0.5))
            x = y.add_(x)
        else:
            x = self.conv1(self.conv0(x))
        assert x.dtype == dtype
        return x, img

    def extra_repr(self) -> str:
        return f'resolution={self.resolution}, architecture={self.architecture}'


@persistence.persistent_class
class MinibatchStdLayer(torch.nn.Module):
    """Append the feature-averaged standard deviation over sample groups as extra channels (Karras et al. 2018)."""

    def __init__(self,
        group_size: int,                    # Samples per group; None = the whole batch. Capped at the batch size.
        num_channels: int = 1,              # Number of appended feature maps (channel groups F).
    ):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x):
        """x [N, C, H, W] -> [N, C + F, H, W]; sample n belongs to the group {n % (N/G) + k * (N/G)}, k < G."""
        N, C, H, W = x.shape
        with misc.suppress_tracer_warnings():  # the group size is a constant in traces; that is intended
            G = min(int(self.group_size), int(N)) if self.group_size is not None else int(N)
        F = self.num_channels
        if N % G != 0:
            raise ValueError(f'minibatch std: batch size {N} must be divisible by the group size {G} '
                             f'(mbstd_group_size={self.group_size})')
        if C % F != 0:
            raise ValueError(f'minibatch std: {C} channels must be divisible by num_channels={F}')
        c = C // F

        y = x.reshape(G, -1, F, c, H, W)            # [G, M, F, c, H, W]
        y = y - y.mean(dim=0)                       # deviation from the group mean
        y = y.square().mean(dim=0)                  # [M, F, c, H, W] variance over the group
        y = (y + 1e-8).sqrt()                       # standard deviation
        y = y.mean(dim=[2, 3, 4])                   # [M, F] averaged over channels and pixels
        y = y.reshape(-1, F, 1, 1)                  # [M, F, 1, 1]
        y = y.repeat(G, 1, H, W)                    # [N, F, H, W]
        return torch.cat([x, y], dim=1)             # [N, C + F, H, W]

    def extra_repr(self) -> str:
        return f'group_size={self.group_size}, num_channels={self.num_channels}'


@persistence.persistent_class
class DiscriminatorEpilogue(torch.nn.Module):
    """The 4x4 head of D: (fromrgb) + minibatch std + conv + fc + out, with projection conditioning via cmap."""

    def __init__(self,
        in_channels: int,                   # Input channels.
        cmap_dim: int,                      # Projection (label embedding) dimensionality; 0 = unconditional.
        resolution: int,                    # Resolution of this block (4).
        img_channels: int,                  # Image channels.
        architecture: str = 'resnet',       # 'orig', 'skip' or 'resnet'.
        mbstd_group_size: int = 4,          # Minibatch std group size; None = the whole batch.
        mbstd_num_channels: int = 1,        # Minibatch std feature maps; 0 = disabled.
        activation: str = 'lrelu',          # Any bias_act activation.
        conv_clamp: float = None,           # Clamp conv outputs to +-conv_clamp; None = no clamping.
    ):
        super().__init__()
        check_choice('architecture', architecture, _ARCHITECTURES)
        self.in_channels = in_channels
        self.cmap_dim = cmap_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.architecture = architecture

        if architecture == 'skip':
            self.fromrgb = Conv2dLayer(img_channels, in_channels, kernel_size=1, activation=activation)
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, kernel_size=3, activation=activation,
                                conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * (resolution ** 2), in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x, img, cmap, force_fp32=False):
        """x [N, C, 4, 4], img [N, img_channels, 4, 4] ('skip' only), cmap [N, cmap_dim] or None -> logits [N, 1]."""
        misc.assert_shape(x, [None, self.in_channels, self.resolution, self.resolution])
        x = x.to(dtype=torch.float32, memory_format=torch.contiguous_format)  # the head always runs in fp32
        if self.architecture == 'skip':
            misc.assert_shape(img, [None, self.img_channels, self.resolution, self.resolution])
            x = x + self.fromrgb(img.to(dtype=torch.float32, memory_format=torch.contiguous_format))
        if self.mbstd is not None:
            x = self.mbstd(x)                       # [N, C + F, 4, 4]
        x = self.conv(x)                            # [N, C, 4, 4]
        x = self.fc(x.flatten(1))                   # [N, C]
        x = self.out(x)                             # [N, max(cmap_dim, 1)]
        if self.cmap_dim > 0:
            misc.assert_shape(cmap, [None, self.cmap_dim])
            # Projection discriminator: the logit is the (scaled) inner product with the label embedding.
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / np.sqrt(self.cmap_dim))
        assert x.dtype == torch.float32
        return x

    def extra_repr(self) -> str:
        return f'resolution={self.resolution}, architecture={self.architecture}'


@persistence.persistent_class
class Discriminator(torch.nn.Module):
    """StyleGAN2 discriminator: img [N, img_channels, R, R], c [N, c_dim] -> logits [N, 1]."""

    def __init__(self,
        c_dim: int,                         # Conditioning label (C) dimensionality; 0 = unconditional.
        img_resolution: int,                # Input resolution, a power of two >= 8.
        img_channels: int,                  # Number of input color channels.
        architecture: str = 'resnet',       # 'orig', 'skip' or 'resnet'.
        channel_base: int = 32768,          # Channels at resolution r: min(channel_base // r, channel_max).
        channel_max: int = 512,             # Maximum channels in any block.
        num_fp16_res: int = 0,              # Run the highest `num_fp16_res` resolutions (but not 4x4) in fp16.
        conv_clamp: float = None,           # Clamp conv outputs to +-conv_clamp; None = no clamping.
        cmap_dim: int = None,               # Projection dimensionality; None = channels at 4x4.
        block_kwargs: dict = {},            # Passed on to DiscriminatorBlock (e.g. freeze_layers).
        mapping_kwargs: dict = {},          # Passed on to the label MappingNetwork.
        epilogue_kwargs: dict = {},         # Passed on to DiscriminatorEpilogue (e.g. mbstd_group_size).
    ):
        super().__init__()
        if not isinstance(img_resolution, int) or img_resolution < 8 or img_resolution & (img_resolution - 1):
            raise ValueError(f'img_resolution={img_resolution!r}: expected a power of two >= 8')
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.img_channels = img_channels
        self.block_resolutions = [2 ** i for i in range(self.img_resolution_log2, 2, -1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions + [4]}
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)
        cmap_dim = (channels[4] if cmap_dim is None else cmap_dim) if c_dim > 0 else 0
        common_kwargs = dict(img_channels=img_channels, architecture=architecture, conv_clamp=conv_clamp)

        cur_layer_idx = 0
        for res in self.block_resolutions:
            in_channels = channels[res] if res < img_resolution else 0
            block = DiscriminatorBlock(in_channels, channels[res], channels[res // 2], resolution=res,
                                       first_layer_idx=cur_layer_idx, use_fp16=(res >= fp16_resolution),
                                       **block_kwargs, **common_kwargs)
            setattr(self, f'b{res}', block)
            cur_layer_idx += block.num_layers
        if c_dim > 0:
            self.mapping = MappingNetwork(z_dim=0, c_dim=c_dim, w_dim=cmap_dim, num_ws=None, w_avg_beta=None,
                                          **mapping_kwargs)
        self.b4 = DiscriminatorEpilogue(channels[4], cmap_dim=cmap_dim, resolution=4, **epilogue_kwargs,
                                        **common_kwargs)

    def forward(self, img, c, update_emas=False, **block_kwargs):
        """img [N, img_channels, R, R], c [N, c_dim] -> logits [N, 1]; block_kwargs: force_fp32. `update_emas` is
        accepted for StyleGAN3-style callers; D keeps no running averages."""
        expected = (self.img_channels, self.img_resolution, self.img_resolution)
        if not isinstance(img, torch.Tensor) or img.ndim != 4 or tuple(img.shape[1:]) != expected:
            raise ValueError(f'img must be a tensor of shape [N, {", ".join(map(str, expected))}], got '
                             f'{list(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__}')
        x = None
        for res in self.block_resolutions:
            x, img = getattr(self, f'b{res}')(x, img, **block_kwargs)
        cmap = self.mapping(None, c) if self.c_dim > 0 else None  # [N, cmap_dim]
        return self.b4(x, img, cmap)

    def extra_repr(self) -> str:
        return f'c_dim={self.c_dim}, img_resolution={self.img_resolution}, img_channels={self.img_channels}'
