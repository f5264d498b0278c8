"""Bilinear `grid_sample` as used by the StyleGAN2-ADA augmentation pipe (Karras et al. 2020).

The ADA pipe resamples the discriminator's input with `grid_sample`, and the R1 penalty differentiates the image
gradient a second time, so the sampler needs double backward w.r.t. its input. StyleGAN2-ADA reached for a private
aten op to get it, which broke on newer PyTorch (docs/spec/stylegan2-ada.md section 8). Current
PyTorch's own `grid_sample` differentiates twice w.r.t. both input and grid, so this module calls only the public
op. `enabled` is kept because NVIDIA's training code sets it; it selects nothing any more.
`grid_sample(input, grid)` is a compatibility contract with NVIDIA network pickles (called positionally).
"""

import torch
import torch.nn.functional as F

enabled = False  # Set by StyleGAN2-ADA style training loops; kept for compatibility, the public op serves both.


def grid_sample(input, grid):
    """Sample `input` [N, C, H, W] at `grid` [N, Ho, Wo, 2] (x, y in [-1, 1]) bilinearly; returns [N, C, Ho, Wo].

    Zero padding outside the image and align_corners=False, i.e. -1 and 1 are the outer edges of the border pixels.
    """
    for name, value in (('input', input), ('grid', grid)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if input.ndim != 4 or grid.ndim != 4 or grid.shape[-1] != 2 or grid.shape[0] != input.shape[0]:
        raise ValueError(f"input must be [N, C, H, W] and grid [N, Ho, Wo, 2] with the same N, got input "
                         f"{list(input.shape)} and grid {list(grid.shape)}")
    return F.grid_sample(input=input, grid=grid, mode='bilinear', padding_mode='zeros', align_corners=False)
