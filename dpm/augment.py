"""Geometric augmentation with augment labels for diffusion-model training (EDM: Karras et al. 2022, "Elucidating the
Design Space of Diffusion-Based Generative Models", section 5, augmentation regularization; after ADA, Karras et al.
2020).

Each image is augmented independently; the network receives a 9-number description of what was done (the augment
labels) as extra conditioning, and at sampling time gets zeros, i.e. "not augmented", so augmentations never leak
into the samples. An operation with multiplier m fires with probability min(m * p, 1); EDM's training config uses
p = 0.12 with xflip = 1e8 (x-flip always possible, i.e. half the images flipped), yflip = scale = rotate_frac =
aniso = translate_frac = 1. The 9 augment labels, in EDM's order (zero when the operation did not fire):

    0 xflip          1 if flipped left-right                  5 aniso_x      a cos(2 r)   (a = log2 stretch,
    1 yflip          1 if flipped top-bottom                  6 aniso_y      a sin(2 r)    r = stretch direction)
    2 scale          log2 of the isotropic scale              7 translate_x  shift / image width
    3 rotate_cos_m1  cos(theta) - 1 (theta = rotation angle)  8 translate_y  shift / image height
    4 rotate_sin     sin(theta)

The doubled angle 2r makes the anisotropy label unique (r and r + pi give the same stretch). The general transforms
(scale, rotation, anisotropy, translation, in that order) are one affine map per image, resampled bilinearly with
reflection padding; EDM additionally oversamples 2x with a wavelet filter, which this pipe leaves out.

This module is self-contained (torch, numpy, torch_utils only): a pickle of the pipe embeds its source.
"""

import numpy as np
import torch

from torch_utils import persistence

LABEL_NAMES = ('xflip', 'yflip', 'scale', 'rotate_cos_m1', 'rotate_sin', 'aniso_x', 'aniso_y', 'translate_x',
               'translate_y')


def _matrix(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor, tx: torch.Tensor,
            ty: torch.Tensor) -> torch.Tensor:
    """[N, 3, 3] homogeneous matrices [[a, b, tx], [c, d, ty], [0, 0, 1]] from [N] entries."""
    zero, one = torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([a, b, tx, c, d, ty, zero, zero, one], dim=1).reshape(-1, 3, 3)


def rotation(theta: torch.Tensor) -> torch.Tensor:
    """[N, 3, 3] rotations by theta [N] radians (x right, y down)."""
    zero = torch.zeros_like(theta)
    return _matrix(theta.cos(), -theta.sin(), theta.sin(), theta.cos(), zero, zero)


def scaling(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    """[N, 3, 3] axis-aligned scalings by sx, sy [N]."""
    zero = torch.zeros_like(sx)
    return _matrix(sx, zero, zero, sy, zero, zero)


def translation(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    """[N, 3, 3] translations by tx, ty [N] pixels."""
    one, zero = torch.ones_like(tx), torch.zeros_like(tx)
    return _matrix(one, zero, zero, one, tx, ty)


def affine_transform(images: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """Resample images [N, C, H, W] at M @ p for every output pixel centre p (pixels from the image centre, x right,
    y down; M [N, 3, 3] maps output to input positions): bilinear, reflection padding."""
    N, _, H, W = images.shape
    to_norm = torch.diag(torch.tensor([2 / W, 2 / H, 1], dtype=M.dtype, device=M.device))
    to_px = torch.diag(torch.tensor([W / 2, H / 2, 1], dtype=M.dtype, device=M.device))
    theta = (to_norm @ M @ to_px)[:, :2, :].to(images.dtype)  # [N, 2, 3] in grid_sample's [-1, 1] coordinates
    grid = torch.nn.functional.affine_grid(theta, [N, 1, H, W], align_corners=False)
    return torch.nn.functional.grid_sample(images, grid, mode='bilinear', padding_mode='reflection',
                                           align_corners=False)


def _check_number(name: str, value, lo: float, hi: float = float('inf')) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi or np.isnan(value):
        raise ValueError(f'AugmentPipe: {name}={value!r}; expected a number in [{lo:g}, {hi:g}]')
    return float(value)


@persistence.persistent_class
class AugmentPipe(torch.nn.Module):
    """EDM's geometric augmentation: forward(images [N, C, H, W]) -> (augmented images, augment labels [N, 9])."""

    def __init__(self,
        p: float = 0.12,                    # Overall augmentation probability; 0 = identity.
        xflip: float = 1e8,                 # Multiplier of p for left-right flips (1e8 = always possible).
        yflip: float = 1,                   # Multiplier of p for top-bottom flips.
        scale: float = 1,                   # Multiplier of p for isotropic scaling.
        rotate_frac: float = 1,             # Multiplier of p for arbitrary rotations.
        aniso: float = 1,                   # Multiplier of p for anisotropic stretching.
        translate_frac: float = 1,          # Multiplier of p for fractional translations.
        scale_std: float = 0.2,             # Std of log2(scale).
        rotate_frac_max: float = 1,         # Largest rotation, in half turns.
        aniso_std: float = 0.2,             # Std of log2(stretch).
        aniso_rotate_prob: float = 0.5,     # Probability that the stretch direction is random (else along x).
        translate_frac_std: float = 0.125,  # Std of the shift, as a fraction of the image size.
    ):
        super().__init__()
        self.p = _check_number('p', p, 0, 1)
        for name in ('xflip', 'yflip', 'scale', 'rotate_frac', 'aniso', 'translate_frac', 'scale_std',
                     'rotate_frac_max', 'aniso_std', 'translate_frac_std'):
            setattr(self, name, _check_number(name, locals()[name], 0, 1e30))
        self.aniso_rotate_prob = _check_number('aniso_rotate_prob', aniso_rotate_prob, 0, 1)

    def _fires(self, multiplier: float, N: int, device: torch.device) -> torch.Tensor:
        """[N] bool: which images get an operation of probability min(multiplier * p, 1)."""
        return torch.rand([N], device=device) < min(multiplier * self.p, 1)

    def _flip(self, images: torch.Tensor, multiplier: float, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
        N = images.shape[0]
        w = torch.randint(2, [N], device=images.device).to(images.dtype)
        w = torch.where(self._fires(multiplier, N, images.device), w, torch.zeros_like(w))  # [N] 0/1
        return torch.where(w.reshape(-1, 1, 1, 1) == 1, images.flip(dim), images), w

    def _general_matrix(self, N: int, H: int, W: int, device: torch.device) -> tuple[torch.Tensor, list]:
        """Output->input maps [N, 3, 3] of scale, rotation, aniso and translation, and their 7 label columns."""
        zeros = torch.zeros([N], device=device)
        M = torch.eye(3, device=device).repeat(N, 1, 1)
        s = torch.where(self._fires(self.scale, N, device), torch.randn([N], device=device) * self.scale_std, zeros)
        M = M @ scaling(torch.exp2(-s), torch.exp2(-s))  # Inverses, composed in the order the image sees them.
        theta = (torch.rand([N], device=device) * 2 - 1) * np.pi * self.rotate_frac_max
        theta = torch.where(self._fires(self.rotate_frac, N, device), theta, zeros)
        M = M @ rotation(-theta)
        a = torch.where(self._fires(self.aniso, N, device), torch.randn([N], device=device) * self.aniso_std, zeros)
        r = (torch.rand([N], device=device) * 2 - 1) * np.pi
        r = torch.where(torch.rand([N], device=device) < self.aniso_rotate_prob, r, zeros)
        M = M @ rotation(r) @ scaling(torch.exp2(-a), torch.exp2(a)) @ rotation(-r)
        t = torch.randn([2, N], device=device) * self.translate_frac_std
        t = torch.where(self._fires(self.translate_frac, N, device), t, torch.zeros_like(t))
        M = M @ translation(-t[0] * W, -t[1] * H)
        labels = [s, theta.cos() - 1, theta.sin(), a * (2 * r).cos(), a * (2 * r).sin(), t[0], t[1]]
        return M, labels

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Augmented images [N, C, H, W] (same dtype) and augment labels [N, 9] (columns as in LABEL_NAMES)."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
            raise TypeError(f'images: expected a float tensor [N, C, H, W], got '
                            f'{getattr(images, "dtype", type(images).__name__)} {list(getattr(images, "shape", []))}')
        N, _, H, W = images.shape
        if self.p == 0:
            return images, torch.zeros([N, len(LABEL_NAMES)], dtype=images.dtype, device=images.device)
        images, w_x = self._flip(images, self.xflip, dim=3)
        images, w_y = self._flip(images, self.yflip, dim=2)
        M, labels = self._general_matrix(N, H, W, images.device)
        if any(m > 0 for m in (self.scale, self.rotate_frac, self.aniso, self.translate_frac)):
            images = affine_transform(images, M)
        labels = torch.stack([w_x, w_y] + [label.to(images.dtype) for label in labels], dim=1)  # [N, 9]
        return images, labels

    def extra_repr(self) -> str:
        return (f'p={self.p:g}, xflip={self.xflip:g}, yflip={self.yflip:g}, scale={self.scale:g}, '
                f'rotate_frac={self.rotate_frac:g}, aniso={self.aniso:g}, translate_frac={self.translate_frac:g}')
