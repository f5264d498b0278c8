"""NCSNv2's released score networks, rebuilt clean-room so that official checkpoints load by name (Song & Ermon 2020,
"Improved Techniques for Training Score-Based Generative Models"; docs/spec/diffusion.md section 5).

Three RefineNet variants, chosen in the release by the dataset: `NCSNv2` (CIFAR-10, CelebA), `NCSNv2Deeper` (LSUN)
and `NCSNv2Deepest` (FFHQ). All compute s(x, sigma) = f(x) / sigma (technique 3: the network is unconditional and the
noise level enters only by division); `forward(x, y)` takes the noise-level index y into the `sigmas` buffer as the
release does, `score(x, sigma)` any continuous sigma. Parameter names, shapes and registration order equal the
release's (the fixture ncsnv2_official_state_dicts.json records them), so `load_state_dict(strict=True)` works on
the DataParallel-stripped checkpoint.

Architecture facts (ResidualBlock, RCU / MSF / CRP RefineNet blocks, InstanceNorm++) are from the paper and the
released checkpoints' tensor names; the code is ours. Data convention: x in [0, 1] ('h = 2x - 1' at the input) unless
the config says `rescaled` (x in [-1, 1]) or `logit_transform` (both then use x as is).
"""

import functools

import torch
from torch.nn.functional import interpolate

ARCHITECTURES = ('NCSNv2', 'NCSNv2Deeper', 'NCSNv2Deepest')
ACTIVATIONS = {'elu': torch.nn.ELU, 'relu': torch.nn.ReLU, 'lrelu': functools.partial(torch.nn.LeakyReLU, 0.2),
               'swish': torch.nn.SiLU}

# Encoder stages per architecture: (name, in width, out width, resample, dilation), widths in units of ngf.
# A 'down' stage with dilation > 1 keeps the resolution (dilated convolutions instead of pooling), as released.
_STAGES = {
    'NCSNv2': [('res1', 1, 1, None, 1), ('res2', 1, 2, 'down', 1), ('res3', 2, 2, 'down', 2),
               ('res4', 2, 2, 'down', 4)],
    'NCSNv2Deeper': [('res1', 1, 1, None, 1), ('res2', 1, 2, 'down', 1), ('res3', 2, 2, 'down', 1),
                     ('res4', 2, 4, 'down', 2), ('res5', 4, 4, 'down', 4)],
    'NCSNv2Deepest': [('res1', 1, 1, None, 1), ('res2', 1, 2, 'down', 1), ('res3', 2, 2, 'down', 1),
                      ('res31', 2, 2, 'down', 1), ('res4', 2, 4, 'down', 2), ('res5', 4, 4, 'down', 4)],
}
# Decoder: (name, input widths, output width, encoder stage it refines) in registration order. They run from the
# coarsest stage to the finest (so NCSNv2Deepest runs refine31 before refine3); the finest one is the 'end' block.
_REFINES = {
    'NCSNv2': [('refine1', [2], 2, 'res4'), ('refine2', [2, 2], 2, 'res3'), ('refine3', [2, 2], 1, 'res2'),
               ('refine4', [1, 1], 1, 'res1')],
    'NCSNv2Deeper': [('refine1', [4], 4, 'res5'), ('refine2', [4, 4], 2, 'res4'), ('refine3', [2, 2], 2, 'res3'),
                     ('refine4', [2, 2], 1, 'res2'), ('refine5', [1, 1], 1, 'res1')],
    'NCSNv2Deepest': [('refine1', [4], 4, 'res5'), ('refine2', [4, 4], 2, 'res4'), ('refine3', [2, 2], 2, 'res3'),
                      ('refine31', [2, 2], 2, 'res31'), ('refine4', [2, 2], 1, 'res2'), ('refine5', [1, 1], 1, 'res1')],
}


def _conv3x3(c_in: int, c_out: int, bias: bool = True, dilation: int = 1) -> torch.nn.Conv2d:
    return torch.nn.Conv2d(c_in, c_out, 3, padding=dilation, dilation=dilation, bias=bias)


class InstanceNorm2dPlus(torch.nn.Module):
    """InstanceNorm++ (NCSNv2 appendix): instance norm plus the channel means, standardised across channels
    (unbiased variance), scaled by alpha, then the affine gamma h + beta."""

    def __init__(self, num_features: int):
        super().__init__()
        self.alpha = torch.nn.Parameter(torch.ones(num_features))
        self.gamma = torch.nn.Parameter(torch.ones(num_features))
        self.beta = torch.nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, C, H, W]
        mu = x.mean(dim=(2, 3))  # [N, C]
        mu = (mu - mu.mean(dim=-1, keepdim=True)) / (mu.var(dim=-1, keepdim=True) + 1e-5).sqrt()
        h = torch.nn.functional.instance_norm(x, eps=1e-5) + mu[..., None, None] * self.alpha[..., None, None]
        return self.gamma[..., None, None] * h + self.beta[..., None, None]


class ConvMeanPool(torch.nn.Module):
    """Convolution ('same' padding), then the mean of the four 2x2 phases (a 2x average pool)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int):
        super().__init__()
        self.conv = torch.nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, I, H, W] -> [N, O, H/2, W/2]
        h = self.conv(x)
        return (h[:, :, ::2, ::2] + h[:, :, 1::2, ::2] + h[:, :, ::2, 1::2] + h[:, :, 1::2, 1::2]) / 4


class ResidualBlock(torch.nn.Module):
    """Pre-activation residual block: norm, act, conv1, norm, act, conv2, plus a (convolved) shortcut. 'down' halves
    the resolution with ConvMeanPool when dilation is 1; with dilation > 1 all convolutions are dilated instead."""

    def __init__(self, c_in: int, c_out: int, act: torch.nn.Module, resample: str | None = None, dilation: int = 1):
        super().__init__()
        self.act = act
        self.has_shortcut = c_in != c_out or resample is not None
        mid = c_in if resample == 'down' else c_out
        self.conv1 = _conv3x3(c_in, mid, dilation=dilation)
        self.normalize2 = InstanceNorm2dPlus(mid)
        if resample == 'down' and dilation == 1:
            self.conv2 = ConvMeanPool(mid, c_out, 3)
            shortcut = ConvMeanPool(c_in, c_out, 1)
        else:
            self.conv2 = _conv3x3(mid, c_out, dilation=dilation)
            shortcut = _conv3x3(c_in, c_out, dilation=dilation) if dilation > 1 else torch.nn.Conv2d(c_in, c_out, 1)
        if self.has_shortcut:
            self.shortcut = shortcut
        self.normalize1 = InstanceNorm2dPlus(c_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(self.act(self.normalize2(self.conv1(self.act(self.normalize1(x))))))
        return (self.shortcut(x) if self.has_shortcut else x) + h


class RCUBlock(torch.nn.Module):
    """Residual conv units: n_blocks times x <- x + (act, conv3x3) x n_stages, convolutions without bias."""

    def __init__(self, features: int, n_blocks: int, n_stages: int, act: torch.nn.Module):
        super().__init__()
        self.act, self.n_blocks, self.n_stages = act, n_blocks, n_stages
        for i in range(n_blocks):
            for j in range(n_stages):
                setattr(self, f'{i + 1}_{j + 1}_conv', _conv3x3(features, features, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(self.n_blocks):
            h = x
            for j in range(self.n_stages):
                h = getattr(self, f'{i + 1}_{j + 1}_conv')(self.act(h))
            x = h + x
        return x


class MSFBlock(torch.nn.Module):
    """Multi-resolution fusion: conv3x3 each input to `features`, resize bilinearly (align_corners) and sum."""

    def __init__(self, in_planes: list, features: int):
        super().__init__()
        self.convs = torch.nn.ModuleList([_conv3x3(c, features) for c in in_planes])

    def forward(self, xs: list, shape: torch.Size) -> torch.Tensor:
        h = 0
        for conv, x in zip(self.convs, xs):
            h = h + interpolate(conv(x), size=shape, mode='bilinear', align_corners=True)
        return h


class CRPBlock(torch.nn.Module):
    """Chained residual pooling: act, then n_stages times path <- conv(maxpool5x5(path)), x <- x + path."""

    def __init__(self, features: int, n_stages: int, act: torch.nn.Module):
        super().__init__()
        self.act = act
        self.convs = torch.nn.ModuleList([_conv3x3(features, features, bias=False) for _ in range(n_stages)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = path = self.act(x)
        for conv in self.convs:
            path = conv(torch.nn.functional.max_pool2d(path, 5, stride=1, padding=2))
            x = path + x
        return x


class RefineBlock(torch.nn.Module):
    """RefineNet block: adapt each input (2 RCUs), fuse (MSF, if several inputs), CRP, output RCUs (3 at the end)."""

    def __init__(self, in_planes: list, features: int, act: torch.nn.Module, end: bool = False):
        super().__init__()
        self.adapt_convs = torch.nn.ModuleList([RCUBlock(c, 2, 2, act) for c in in_planes])
        self.output_convs = RCUBlock(features, 3 if end else 1, 2, act)
        if len(in_planes) > 1:
            self.msf = MSFBlock(in_planes, features)
        self.crp = CRPBlock(features, 2, act)

    def forward(self, xs: list, shape: torch.Size) -> torch.Tensor:
        hs = [adapt(x) for adapt, x in zip(self.adapt_convs, xs)]
        h = self.msf(hs, shape) if len(hs) > 1 else hs[0]
        return self.output_convs(self.crp(h))


class NCSNv2Net(torch.nn.Module):
    """One of the released RefineNets (`architecture`); state_dict names as in the official checkpoints."""

    def __init__(self,
        architecture: str,                  # 'NCSNv2', 'NCSNv2Deeper' or 'NCSNv2Deepest'.
        sigmas: torch.Tensor,               # The noise ladder [L] (buffer 'sigmas'; checkpoints store it).
        channels: int = 3,                  # Image channels.
        ngf: int = 128,                     # Base width.
        nonlinearity: str = 'elu',          # One of ACTIVATIONS.
        centered_input: bool = True,        # True: x in [0, 1] enters as 2x - 1 (neither rescaled nor logit data).
    ):
        super().__init__()
        if architecture not in ARCHITECTURES:
            raise ValueError(f'architecture={architecture!r}; expected one of {list(ARCHITECTURES)}')
        if nonlinearity not in ACTIVATIONS:
            raise ValueError(f'nonlinearity={nonlinearity!r}; expected one of {list(ACTIVATIONS)}')
        self.architecture = architecture
        self.centered_input = centered_input
        self.act = act = ACTIVATIONS[nonlinearity]()
        self.register_buffer('sigmas', torch.as_tensor(sigmas, dtype=torch.float32).clone())
        self.begin_conv = _conv3x3(channels, ngf)
        self.normalizer = InstanceNorm2dPlus(ngf)
        self.end_conv = _conv3x3(ngf, channels)
        self.stage_names = [name for name, *_ in _STAGES[architecture]]
        for name, m_in, m_out, resample, dilation in _STAGES[architecture]:
            setattr(self, name, torch.nn.ModuleList([
                ResidualBlock(m_in * ngf, m_out * ngf, act, resample=resample, dilation=dilation),
                ResidualBlock(m_out * ngf, m_out * ngf, act, dilation=dilation)]))
        refine_of = {stage: name for name, _, _, stage in _REFINES[architecture]}
        self.refine_plan = [(refine_of[stage], stage) for stage in reversed(self.stage_names)]  # Coarsest first.
        for name, m_in, m_out, stage in _REFINES[architecture]:
            setattr(self, name, RefineBlock([m * ngf for m in m_in], m_out * ngf, act, end=stage == 'res1'))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """f(x) [N, C, H, W], the network before the division by sigma."""
        h = self.begin_conv(2 * x - 1 if self.centered_input else x)
        layers = {}
        for name in self.stage_names:
            for block in getattr(self, name):
                h = block(h)
            layers[name] = h
        h = None
        for name, stage in self.refine_plan:
            skip = layers[stage]
            h = getattr(self, name)([skip] if h is None else [skip, h], skip.shape[2:])
        return self.end_conv(self.act(self.normalizer(h)))

    def score(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """s(x, sigma) = f(x) / sigma [N, C, H, W] for a scalar or per-sample [N] sigma (the model's data units)."""
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)
        return self.features(x) / sigma

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The release's call: the score at the noise levels sigmas[y] (y [N] integer indices)."""
        return self.score(x, self.sigmas[y])
