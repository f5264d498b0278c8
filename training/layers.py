"""Equalized-learning-rate building blocks of StyleGAN2 (Karras et al. 2020, "Analyzing and Improving the Image
Quality of StyleGAN"; ADA variant: Karras et al. 2020, "Training Generative Adversarial Networks with Limited Data").

Every layer keeps its weights at unit variance and applies the He-init scale at runtime ("equalized learning rate",
Karras et al. 2018), so Adam sees the same effective step size everywhere. The constructor keywords and the names,
shapes and registration order of parameters and buffers match the official StyleGAN2-ADA networks, so weights copy
by name in both directions (docs/spec/stylegan2-ada.md 3.1, docs/spec/nvidia-pickles.md 3.4).

Pickles of these classes store this file's source and rerun it on load: it must import nothing but torch, numpy,
dnnlib and torch_utils.
"""

import numpy as np
import torch

from torch_utils import persistence
from torch_utils.ops import bias_act, conv2d_resample, upfirdn2d


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Return x scaled to unit second moment along `dim`: x * rsqrt(mean(x^2) + eps)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def check_choice(name: str, value, choices) -> None:
    """Raise ValueError naming argument `name` unless `value` is one of `choices`."""
    if value not in choices:
        raise ValueError(f'{name}={value!r}: expected one of {list(choices)}')


def check_activation(activation: str) -> None:
    """Raise ValueError unless `activation` names a bias_act activation function."""
    check_choice('activation', activation, sorted(bias_act.activation_funcs))


@persistence.persistent_class
class FullyConnectedLayer(torch.nn.Module):
    """Dense layer y = act(x W^T * lr_multiplier / sqrt(in_features) + b * lr_multiplier)."""

    def __init__(self,
        in_features: int,                   # Input width.
        out_features: int,                  # Output width.
        bias: bool = True,                  # False = no bias parameter.
        activation: str = 'linear',         # Any bias_act activation ('linear', 'lrelu', ...).
        lr_multiplier: float = 1,           # Learning-rate multiplier (the mapping network uses 0.01).
        bias_init: float = 0,               # Initial bias value (1 for the style affines: styles start at 1).
    ):
        super().__init__()
        check_activation(activation)
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        # Storing weights divided by lr_multiplier and scaling them back at runtime slows their effective updates.
        self.weight = torch.nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = torch.nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / np.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, in_features] -> [N, out_features]
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == 'linear' and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())  # One fused kernel for the common linear case.
        return bias_act.bias_act(x.matmul(w.t()), b, act=self.activation)

    def extra_repr(self) -> str:
        return f'in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}'


@persistence.persistent_class
class Conv2dLayer(torch.nn.Module):
    """Convolution with optional FIR up/downsampling, bias, activation and clamping (used by D and G's resnet skip)."""

    def __init__(self,
        in_channels: int,                   # Input channels.
        out_channels: int,                  # Output channels.
        kernel_size: int,                   # Square kernel width.
        bias: bool = True,                  # False = no bias.
        activation: str = 'linear',         # Any bias_act activation.
        up: int = 1,                        # Integer upsampling factor.
        down: int = 1,                      # Integer downsampling factor.
        resample_filter=[1, 3, 3, 1],       # FIR taps of the resampling filter.
        conv_clamp: float = None,           # Clamp the output to +-conv_clamp; None = no clamping.
        channels_last: bool = False,        # Keep the weight in channels_last memory format.
        trainable: bool = True,             # False = register weight and bias as buffers (Freeze-D).
    ):
        super().__init__()
        check_activation(activation)
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / np.sqrt(in_channels * (kernel_size ** 2))
        self.act_gain = bias_act.activation_funcs[activation].def_gain

        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format)
        bias = torch.zeros([out_channels]) if bias else None
        if trainable:
            self.weight = torch.nn.Parameter(weight)
            self.bias = torch.nn.Parameter(bias) if bias is not None else None
        else:
            # Buffers keep the names (so state dicts and resumes are unchanged) but receive no gradient.
            self.register_buffer('weight', weight)
            if bias is not None:
                self.register_buffer('bias', bias)
            else:
                self.bias = None

    def forward(self, x: torch.Tensor, gain: float = 1) -> torch.Tensor:  # [N, I, H, W] -> [N, O, H*up/down, ..]
        w = self.weight * self.weight_gain
        b = self.bias.to(x.dtype) if self.bias is not None else None
        # A transposed conv (up > 1) already applies its kernel as a true convolution.
        x = conv2d_resample.conv2d_resample(x=x, w=w.to(x.dtype), f=self.resample_filter, up=self.up,
                                            down=self.down, padding=self.padding, flip_weight=(self.up == 1))
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act.bias_act(x, b, act=self.activation, gain=self.act_gain * gain, clamp=act_clamp)

    def extra_repr(self) -> str:
        return f'activation={self.activation}, up={self.up}, down={self.down}'


@persistence.persistent_class
class MappingNetwork(torch.nn.Module):
    """z [N, z_dim] and c [N, c_dim] -> w [N, num_ws, w_dim] (or [N, w_dim] when num_ws is None), with truncation.

    Tracks the running mean `w_avg` of w in training mode, the centre that truncation pulls toward.
    """

    def __init__(self,
        z_dim: int,                         # Latent dimensionality; 0 = no latent (D's label mapping).
        c_dim: int,                         # Conditioning label dimensionality; 0 = unconditional.
        w_dim: int,                         # Intermediate latent (W) dimensionality.
        num_ws: int,                        # Number of ws to broadcast to; None = return [N, w_dim].
        num_layers: int = 8,                # Number of fully connected layers after the embedding.
        embed_features: int = None,         # Label embedding width; None = w_dim.
        layer_features: int = None,         # Hidden layer width; None = w_dim.
        activation: str = 'lrelu',          # Activation of the fc layers.
        lr_multiplier: float = 0.01,        # Learning-rate multiplier of the fc layers.
        w_avg_beta: float = 0.995,          # Decay of the w_avg running mean; None = no w_avg.
    ):
        super().__init__()
        if num_layers < 0:
            # 0 is valid: converted TF discriminators map labels with the embedding alone.
            raise ValueError(f'num_layers={num_layers!r}: expected an int >= 0')
        if z_dim == 0 and c_dim == 0:
            raise ValueError('z_dim=0 and c_dim=0: the mapping network needs a latent, a label or both')
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        embed_features = (w_dim if embed_features is None else embed_features) if c_dim > 0 else 0
        layer_features = w_dim if layer_features is None else layer_features
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]

        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(features[idx], features[idx + 1], activation=activation,
                                        lr_multiplier=lr_multiplier)
            setattr(self, f'fc{idx}', layer)
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer('w_avg', torch.zeros([w_dim]))

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, skip_w_avg_update=False, update_emas=None):
        """Map (z, c) to ws. w_avg is updated in training mode unless skip_w_avg_update; `update_emas` (StyleGAN3's
        keyword), when given, decides instead regardless of the mode. psi != 1 lerps the first `truncation_cutoff`
        ws (all when None) from w_avg toward w."""
        x = self._embed_inputs(z, c)  # [N, z_dim + embed_features]
        for idx in range(self.num_layers):
            x = getattr(self, f'fc{idx}')(x)  # [N, w_dim] after the last layer

        if update_emas is not None and skip_w_avg_update:
            raise ValueError('pass either update_emas (StyleGAN3) or skip_w_avg_update (StyleGAN2-ADA), not both')
        update = (self.training and not skip_w_avg_update) if update_emas is None else update_emas
        if update and hasattr(self, 'w_avg'):
            # w_avg <- beta * w_avg + (1 - beta) * batch mean
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))

        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])  # [N, num_ws, w_dim]
        if truncation_psi != 1:
            if not hasattr(self, 'w_avg'):
                raise ValueError(f'truncation_psi={truncation_psi!r} needs w_avg, which this mapping network '
                                 f'does not track (num_ws={self.num_ws}, w_avg_beta={self.w_avg_beta})')
            if truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                x[:, :truncation_cutoff] = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x

    def _embed_inputs(self, z, c) -> torch.Tensor:
        """Normalise z and the embedded c to unit 2nd moment and concatenate them: [N, z_dim + embed_features]."""
        x = None
        if self.z_dim > 0:
            if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[1] != self.z_dim:
                raise ValueError(f'z must be a tensor of shape [N, {self.z_dim}], got '
                                 f'{list(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__}')
            x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            if not isinstance(c, torch.Tensor) or c.ndim != 2 or c.shape[1] != self.c_dim:
                raise ValueError(f'c must be a tensor of shape [N, {self.c_dim}], got '
                                 f'{list(c.shape) if isinstance(c, torch.Tensor) else type(c).__name__}')
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1) if x is not None else y
        return x

    def extra_repr(self) -> str:
        return f'z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}'
