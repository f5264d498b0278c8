"""The denoiser interface that SMaRt and the other plugins see, and conversions between its parameterizations.

A diffusion model enters this codebase as a denoiser D(x; sigma) in EDM's convention (Karras et al., "Elucidating
the Design Space of Diffusion-Based Generative Models", NeurIPS 2022): x = y + sigma * n with the clean image y in
[-1, 1] and n ~ N(0, I); D(x; sigma) estimates E[y | x]. The noise prediction and the score follow from D alone
(Tweedie's formula, EDM eq. 3; docs/spec/diffusion.md section 1):

    eps(x; sigma)   = (x - D(x; sigma)) / sigma
    score(x; sigma) = grad_x log p(x; sigma) = (D(x; sigma) - x) / sigma^2 = -eps(x; sigma) / sigma

`FrozenDenoiser` wraps any module with this interface (an EDM preconditioner, the ADM wrapper) so that it cannot
be trained by accident: eval mode, no parameter gradients; gradients still reach its input.
"""

import inspect
import typing

import torch

INTERFACE_ATTRS = ('img_resolution', 'img_channels', 'label_dim', 'sigma_min', 'sigma_max')


@typing.runtime_checkable
class Denoiser(typing.Protocol):
    """Anything callable as D(x, sigma, labels) -> denoised image, with the model's resolution, labels and sigmas."""
    img_resolution: int   # Square image side in pixels.
    img_channels: int     # Channels C of x.
    label_dim: int        # Number of classes (one-hot width); 0 = unconditional.
    sigma_min: float      # Smallest supported noise level (0 = no lower limit).
    sigma_max: float      # Largest supported noise level (inf = no upper limit).

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """x [N, C, H, W] noisy image, sigma [N] or scalar, labels [N, label_dim] one-hot or None -> D [N, C, H, W]."""
        ...


def _sigma_like(x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """Return sigma (scalar, [N] or [N, 1, 1, 1]) as a tensor broadcastable against x [N, ...], in x's dtype."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if sigma.ndim == 0:
        return sigma
    if sigma.shape[0] not in (1, x.shape[0]) or any(size != 1 for size in sigma.shape[1:]):
        raise ValueError(f'sigma has shape {list(sigma.shape)}; expected a scalar, [N] or [N, 1, 1, 1] with '
                         f'N = {x.shape[0]} (x has shape {list(x.shape)})')
    return sigma.reshape(sigma.shape[0], *([1] * (x.ndim - 1)))  # [N, 1, 1, 1]


def denoised_to_eps(x: torch.Tensor, denoised: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """Noise prediction eps = (x - D) / sigma [N, C, H, W] from the noisy image x and the denoised D."""
    return (x - denoised) / _sigma_like(x, sigma)


def eps_to_denoised(x: torch.Tensor, eps: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """Denoised image D = x - sigma * eps [N, C, H, W] from a noise prediction."""
    return x - _sigma_like(x, sigma) * eps


def denoised_to_score(x: torch.Tensor, denoised: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """Score grad_x log p(x; sigma) = (D - x) / sigma^2 [N, C, H, W] (Tweedie)."""
    return (denoised - x) / _sigma_like(x, sigma).square()


def score_to_eps(score: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """Noise prediction eps = -sigma * score [N, C, H, W]."""
    return -_sigma_like(score, sigma) * score


def eps_to_score(eps: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """Score = -eps / sigma [N, C, H, W]."""
    return -eps / _sigma_like(eps, sigma)


def _label_keyword(net: torch.nn.Module) -> str:
    """The keyword under which `net` takes class labels: 'class_labels' (EDM preconditioners) or 'labels'."""
    params = inspect.signature(net.forward).parameters
    for keyword in ('labels', 'class_labels'):
        if keyword in params:
            return keyword
    raise TypeError(f'{type(net).__name__}.forward{inspect.signature(net.forward)} takes neither `labels` nor '
                    '`class_labels`; expected forward(x, sigma, labels=None) or an EDM preconditioner')


class FrozenDenoiser(torch.nn.Module):
    """A Denoiser around a network that is never trained: eval mode always, requires_grad False on every parameter.

    Gradients flow to the input x (SMaRt differentiates through it) but never into the wrapped weights.
    An unconditional denoiser ignores labels; see checks.check_compatible for why that combination is allowed.
    """

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        if not isinstance(net, torch.nn.Module):
            raise TypeError(f'net is {type(net).__name__}; expected a torch.nn.Module with the Denoiser interface')
        missing = [name for name in INTERFACE_ATTRS if not hasattr(net, name)]
        if missing:
            raise TypeError(f'net ({type(net).__name__}) lacks the Denoiser attributes {missing}; expected '
                            f'{list(INTERFACE_ATTRS)}')
        self._label_keyword = _label_keyword(net)
        self.net = net.requires_grad_(False)
        self.img_resolution = int(net.img_resolution)
        self.img_channels = int(net.img_channels)
        self.label_dim = int(net.label_dim)
        self.sigma_min = float(net.sigma_min)
        self.sigma_max = float(net.sigma_max)
        self.train(False)

    def train(self, mode: bool = True) -> 'FrozenDenoiser':
        """Stay in eval mode whatever `mode` says: a parent's .train() must not switch on the net's dropout."""
        return super().train(False)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float,
                labels: torch.Tensor | None = None) -> torch.Tensor:
        """Denoise x [N, C, H, W] at noise level sigma (scalar or [N]); labels [N, label_dim] one-hot or None."""
        if x.ndim != 4 or x.shape[1] != self.img_channels:
            raise ValueError(f'x has shape {list(x.shape)}; expected [N, {self.img_channels}, H, W]')
        N = x.shape[0]
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device)
        if sigma.numel() not in (1, N):
            raise ValueError(f'sigma has shape {list(sigma.shape)}; expected a scalar or [{N}]')
        sigma = sigma.reshape(-1).expand(N)  # [N]
        if self.label_dim == 0:
            labels = None  # Unconditional model: the caller's labels carry nothing it can use.
        elif labels is not None:
            if labels.shape != (N, self.label_dim):
                raise ValueError(f'labels have shape {list(labels.shape)}; expected [{N}, {self.label_dim}] '
                                 '(one-hot class labels)')
            labels = labels.to(device=x.device, dtype=torch.float32)
        return self.net(x, sigma, **{self._label_keyword: labels})

    def extra_repr(self) -> str:
        return (f'img_resolution={self.img_resolution}, img_channels={self.img_channels}, label_dim={self.label_dim}, '
                f'sigma_min={self.sigma_min:g}, sigma_max={self.sigma_max:g}')
