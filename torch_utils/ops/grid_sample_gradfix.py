"""Bilinear `grid_sample` with a double-backward-capable custom gradient, from StyleGAN2-ADA (Karras et al. 2020).

The ADA augmentation pipe resamples the discriminator's input with `grid_sample`, and the R1 penalty differentiates
the image gradient a second time, so the sampler must support double backward w.r.t. its input. Plain PyTorch
`grid_sample` already does (checked on CPU with torch 2.13); the custom Function here, used on any device when the
flag `enabled` is True, keeps the StyleGAN2-ADA switch working. Its second-order gradient covers the input path with
a constant grid (the one R1 needs); double backward with a grid that requires grad raises NotImplementedError.
`grid_sample(input, grid)` and `enabled` are a compatibility contract with NVIDIA network pickles (the augment pipe
calls it positionally).
"""

import torch
import torch.nn.functional as F

enabled = False  # Route grid_sample through the custom autograd Functions below.

# Integer codes of aten::grid_sampler_2d: interpolation 0 = bilinear, padding 0 = zeros.
_BILINEAR = 0
_ZEROS = 0
_ALIGN_CORNERS = False


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
    if not enabled:
        return F.grid_sample(input=input, grid=grid, mode='bilinear', padding_mode='zeros',
                             align_corners=_ALIGN_CORNERS)
    return _GridSample2dForward.apply(input, grid)


def _grid_sampler_backward(grad_output, input, grid, output_mask):
    """Return (grad_input, grad_grid) of bilinear zero-padded grid sampling; entries not in `output_mask` are None."""
    grad_input, grad_grid = torch.ops.aten.grid_sampler_2d_backward(
        grad_output, input, grid, _BILINEAR, _ZEROS, _ALIGN_CORNERS, list(output_mask))
    return (grad_input if output_mask[0] else None), (grad_grid if output_mask[1] else None)


class _GridSample2dForward(torch.autograd.Function):
    """grid_sample whose backward is itself a differentiable Function."""

    @staticmethod
    def forward(ctx, input, grid):
        ctx.save_for_backward(input, grid)
        return torch.ops.aten.grid_sampler_2d(input, grid, _BILINEAR, _ZEROS, _ALIGN_CORNERS)

    @staticmethod
    def backward(ctx, grad_output):
        input, grid = ctx.saved_tensors
        output_mask = (ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        grad_input, grad_grid = _GridSample2dBackward.apply(grad_output, input, grid, output_mask)
        return grad_input, grad_grid


class _GridSample2dBackward(torch.autograd.Function):
    """(grad_output, input, grid) -> (grad_input, grad_grid), differentiable w.r.t. grad_output via grad_input."""

    @staticmethod
    def forward(ctx, grad_output, input, grid, output_mask):
        ctx.save_for_backward(grid)
        ctx.set_materialize_grads(False)
        return _grid_sampler_backward(grad_output, input, grid, output_mask)

    @staticmethod
    def backward(ctx, grad2_grad_input, grad2_grad_grid):
        grid, = ctx.saved_tensors
        if grad2_grad_grid is not None or ctx.needs_input_grad[2]:
            # Both would need second derivatives of the bilinear weights w.r.t. the grid.
            raise NotImplementedError("grid_sample_gradfix: double backward is supported only for a grid that does "
                                      "not require grad; set grid_sample_gradfix.enabled = False to use PyTorch's own")
        grad2_grad_output = None
        if ctx.needs_input_grad[0] and grad2_grad_input is not None:
            # grad_input is linear in grad_output: grad_input = S^T grad_output with S the sampling operator of
            # `grid`. Its derivative w.r.t. grad_output, applied to grad2_grad_input, is S grad2_grad_input.
            grad2_grad_output = _GridSample2dForward.apply(grad2_grad_input, grid)
        # grad_input does not depend on input.
        return grad2_grad_output, None, None, None
