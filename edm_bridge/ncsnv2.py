"""NCSNv2 as an EDM-style denoiser (Song & Ermon 2020, "Improved Techniques for Training Score-Based Generative
Models"; docs/spec/diffusion.md section 5).

NCSNv2 works on data in [0, 1] and conditions on the noise level only by division (its technique 3):
s(x, sigma) = f(x) / sigma, with f a RefineNet-style score network. It trains on a geometric ladder of noise levels
sigma_1 > ... > sigma_L (technique 1 and 2; CIFAR-10: 50 -> 0.01, L = 232) with the sigma^2-weighted denoising score
matching loss 1/2 ||sigma s(x + sigma z, sigma) + z||^2, and samples with annealed Langevin dynamics.

The rest of this codebase speaks EDM's denoiser D(x; sigma) with images in [-1, 1]. With x01 = (x + 1) / 2 and
sigma01 = sigma / 2 (the same noise, measured in [0, 1] units), Tweedie's formula in [0, 1] units gives

    D01 = x01 + sigma01^2 s(x01, sigma01),    D = 2 D01 - 1 = x + sigma^2 score(x; sigma),

so NCSNv2Precond is a Denoiser like EDMPrecond, and its noise prediction is (x - D) / sigma = -sigma01 s(x01, sigma01).
Constructor sigmas are NCSNv2's [0, 1]-unit values; the Denoiser attributes sigma_min / sigma_max are in the
[-1, 1] units of D (twice as large). The network here is a lite RefineNet: residual stages with InstanceNorm++ and
ELU, then RefineNet blocks (residual adaptation, multi-resolution fusion, chained residual pooling) back up.

Self-contained on purpose (torch, numpy, torch_utils only): a pickle of a persistent object embeds only the source
of its own module.
"""

import numpy as np
import torch
from torch.nn.functional import elu

from torch_utils import persistence


def ncsnv2_sigmas(sigma_max: float, sigma_min: float, num_scales: int) -> torch.Tensor:
    """The geometric ladder sigma_1 = sigma_max > ... > sigma_L = sigma_min [L] (float32, [0, 1]-data units)."""
    if not (isinstance(num_scales, int) and num_scales >= 2):
        raise ValueError(f'num_scales={num_scales!r}; expected an integer >= 2')
    if not 0 < sigma_min < sigma_max < float('inf'):
        raise ValueError(f'sigma_min={sigma_min!r}, sigma_max={sigma_max!r}; expected 0 < sigma_min < sigma_max')
    return torch.tensor(np.exp(np.linspace(np.log(sigma_max), np.log(sigma_min), num_scales)), dtype=torch.float32)


def _auto_channel_mult(img_resolution: int) -> tuple:
    """NCSNv2's CIFAR widths (1, 2, 2, 2), cut so that the coarsest stage keeps at least 4x4 pixels."""
    stages = 1 + max(0, min(3, int(np.log2(max(img_resolution, 1) / 4))))
    return (1, 2, 2, 2)[:stages]


@persistence.persistent_class
class InstanceNormPlus(torch.nn.Module):
    """NCSNv2's InstanceNorm++ without noise conditioning: instance norm that keeps the (normalised) channel means."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.alpha = torch.nn.Parameter(1 + 0.02 * torch.randn([num_features]))
        self.gamma = torch.nn.Parameter(1 + 0.02 * torch.randn([num_features]))
        self.beta = torch.nn.Parameter(torch.zeros([num_features]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, C, H, W]
        mu = x.mean(dim=(2, 3))  # [N, C]
        mu = (mu - mu.mean(dim=1, keepdim=True)) / (mu.var(dim=1, keepdim=True, unbiased=False) + self.eps).sqrt()
        h = torch.nn.functional.instance_norm(x, eps=self.eps) + mu[:, :, None, None] * self.alpha[:, None, None]
        return self.gamma[:, None, None] * h + self.beta[:, None, None]


@persistence.persistent_class
class ResidualBlock(torch.nn.Module):
    """norm -> ELU -> conv3x3 -> norm -> ELU -> conv3x3 (+ 2x average-pool down), plus a (1x1 conv) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, down: bool = False, norm: bool = True):
        super().__init__()
        self.down = down
        self.norm0 = InstanceNormPlus(in_channels) if norm else torch.nn.Identity()
        self.conv0 = torch.nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm1 = InstanceNormPlus(out_channels) if norm else torch.nn.Identity()
        self.conv1 = torch.nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = torch.nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels or down else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, I, H, W] -> [N, O, H', W']
        h = self.conv1(elu(self.norm1(self.conv0(elu(self.norm0(x))))))
        skip = x if self.skip is None else self.skip(x)
        if self.down:
            h, skip = torch.nn.functional.avg_pool2d(h, 2), torch.nn.functional.avg_pool2d(skip, 2)
        return h + skip


@persistence.persistent_class
class RefineBlock(torch.nn.Module):
    """RefineNet block: adapt each input (residual unit), fuse at the finest size, chained residual pooling, output
    residual unit. Inputs are [skip at this stage, refined features from the coarser stage] (the coarsest: one)."""

    def __init__(self, in_channels: list, out_channels: int, num_pools: int = 2):
        super().__init__()
        self.adapt = torch.nn.ModuleList([ResidualBlock(c, out_channels, norm=False) for c in in_channels])
        self.pools = torch.nn.ModuleList([torch.nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
                                          for _ in range(num_pools)])
        self.out = ResidualBlock(out_channels, out_channels, norm=False)

    def forward(self, xs: list) -> torch.Tensor:  # [[N, C_i, H_i, W_i]] -> [N, O, H_0, W_0]
        size = xs[0].shape[2:]
        h = sum(torch.nn.functional.interpolate(block(x), size=size, mode='bilinear', align_corners=False)
                if x.shape[2:] != size else block(x) for block, x in zip(self.adapt, xs))
        h = path = elu(h)
        for conv in self.pools:  # Chained residual pooling: context from ever larger max-pool windows.
            path = conv(torch.nn.functional.max_pool2d(path, 5, stride=1, padding=2))
            h = h + path
        return self.out(h)


@persistence.persistent_class
class NCSNv2Net(torch.nn.Module):
    """The lite RefineNet f(x01) [N, C, H, W]: scaled by 1/sigma it is the score s(x, sigma) (NCSNv2 technique 3)."""

    def __init__(self, img_channels: int, ngf: int, channel_mult: tuple, label_dim: int = 0, augment_dim: int = 0):
        super().__init__()
        widths = [ngf * m for m in channel_mult]
        self.begin = torch.nn.Conv2d(img_channels, ngf, 3, padding=1)
        self.map_label = torch.nn.Linear(label_dim, ngf, bias=False) if label_dim else None
        self.map_augment = torch.nn.Linear(augment_dim, ngf, bias=False) if augment_dim else None
        self.stages = torch.nn.ModuleList([
            torch.nn.Sequential(ResidualBlock(c_in, c_out, down=i > 0), ResidualBlock(c_out, c_out))
            for i, (c_in, c_out) in enumerate(zip([ngf] + widths[:-1], widths))])
        self.refines = torch.nn.ModuleList([
            RefineBlock([widths[i]] if i == len(widths) - 1 else [widths[i], widths[i + 1]], widths[i])
            for i in range(len(widths))])
        self.norm = InstanceNormPlus(widths[0])
        self.end = torch.nn.Conv2d(widths[0], img_channels, 3, padding=1)

    def forward(self, x01: torch.Tensor, class_labels: torch.Tensor | None = None,
                augment_labels: torch.Tensor | None = None) -> torch.Tensor:  # [N, C, H, W] -> f [N, C, H, W]
        h = self.begin(2 * x01 - 1)  # Centred input, as NCSNv2 does for [0, 1] data.
        if self.map_label is not None:
            h = h + self.map_label(class_labels)[:, :, None, None]
        if self.map_augment is not None and augment_labels is not None:
            h = h + self.map_augment(augment_labels.to(h.dtype))[:, :, None, None]
        skips = []
        for stage in self.stages:
            h = stage(h)
            skips.append(h)
        h = self.refines[-1]([skips[-1]])
        for i in reversed(range(len(skips) - 1)):
            h = self.refines[i]([skips[i], h])
        return self.end(elu(self.norm(h)))


@persistence.persistent_class
class NCSNv2Precond(torch.nn.Module):
    """NCSNv2 score network as a denoiser D(x; sigma) in [-1, 1] units: D = 2 (x01 + sigma01 f(x01)) - 1."""

    def __init__(self,
        img_resolution: int,                # Image resolution.
        img_channels: int,                  # Image channels.
        label_dim: int = 0,                 # Class label width; 0 = unconditional (NCSNv2 itself is unconditional).
        sigma_min: float = 0.01,            # sigma_L, smallest training noise level, [0, 1]-data units.
        sigma_max: float = 50.0,            # sigma_1, largest training noise level, [0, 1]-data units.
        num_scales: int = 232,              # L, number of noise levels of the geometric ladder.
        ngf: int = 128,                     # Base width of the score network.
        channel_mult: tuple | None = None,  # Per-stage width multipliers; None = (1, 2, 2, 2) cut to >= 4x4 pixels.
        augment_dim: int = 0,               # Augment label width (9 with dpm_augment.AugmentPipe); 0 = none.
        **unused,                           # Other trainer options (ignored).
    ):
        super().__init__()
        ncsnv2_sigmas(sigma_max, sigma_min, num_scales)  # Validates the ladder.
        channel_mult = tuple(channel_mult) if channel_mult is not None else _auto_channel_mult(img_resolution)
        if img_resolution % 2 ** (len(channel_mult) - 1) != 0:
            raise ValueError(f'img_resolution={img_resolution} is not divisible by 2^{len(channel_mult) - 1}; '
                             f'channel_mult={channel_mult} downsamples {len(channel_mult) - 1} times')
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.label_dim = label_dim
        self.sigma01_min = float(sigma_min)
        self.sigma01_max = float(sigma_max)
        self.sigma_min = 2 * self.sigma01_min  # Denoiser range in [-1, 1] units.
        self.sigma_max = 2 * self.sigma01_max
        self.num_scales = num_scales
        self.sigma_data = 0.5
        self.model = NCSNv2Net(img_channels, ngf, channel_mult, label_dim=label_dim, augment_dim=augment_dim)

    def sigmas(self) -> torch.Tensor:
        """The training ladder in the denoiser's [-1, 1] units: 2 sigma_i [L], descending."""
        return 2 * ncsnv2_sigmas(self.sigma01_max, self.sigma01_min, self.num_scales)

    def score01(self, x01: torch.Tensor, sigma01: torch.Tensor, class_labels: torch.Tensor | None = None,
                augment_labels: torch.Tensor | None = None) -> torch.Tensor:
        """NCSNv2's score s(x01, sigma01) = f(x01) / sigma01 [N, C, H, W] on [0, 1] data (sigma01 [N] or scalar)."""
        sigma01 = torch.as_tensor(sigma01, dtype=x01.dtype, device=x01.device).reshape(-1, 1, 1, 1)
        return self.model(x01, self._labels(x01, class_labels), augment_labels) / sigma01

    def _labels(self, x: torch.Tensor, class_labels: torch.Tensor | None) -> torch.Tensor | None:
        if self.label_dim == 0:
            return None
        if class_labels is None:
            return torch.zeros([x.shape[0], self.label_dim], dtype=x.dtype, device=x.device)
        return class_labels.to(x.dtype).reshape(-1, self.label_dim).expand(x.shape[0], -1)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, class_labels: torch.Tensor | None = None,
                force_fp32: bool = False, augment_labels: torch.Tensor | None = None) -> torch.Tensor:
        """D(x; sigma) [N, C, H, W] for x in [-1, 1] units, computed in x's dtype (force_fp32: EDM signature only)."""
        sigma01 = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1) / 2
        x01 = (x + 1) / 2
        D01 = x01 + sigma01.square() * self.score01(x01, sigma01, class_labels, augment_labels)  # Tweedie, [0, 1]
        return 2 * D01 - 1

    def round_sigma(self, sigma: torch.Tensor | float) -> torch.Tensor:
        """Noise levels are continuous here (s = f / sigma works for any sigma): returned unchanged as a tensor."""
        return torch.as_tensor(sigma)

