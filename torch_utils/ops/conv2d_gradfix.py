"""Drop-in `conv2d` / `conv_transpose2d` whose weight gradient can be switched off, from StyleGAN2-ADA (Karras 2020).

The R1 and path-length regularisers of StyleGAN2 differentiate an image gradient a second time. Computing that image
gradient never needs the gradient w.r.t. the conv weights, so `no_weight_gradients()` lets the backward pass skip it.
When the module flag `enabled` is True the convs run through custom autograd Functions (on any device) whose backward
is itself built from differentiable ops, so gradients of any order work; when False they are plain
`torch.nn.functional` calls. As in the official code, the custom Functions serve CUDA tensors only (unless
`custom_on_cpu`): on the CPU PyTorch's own convolution backward already computes only the gradients that autograd asks
for, in one fused C++ call, and that is ~10% of a CPU training step faster than the Python Functions. Names and keyword names are a compatibility contract with NVIDIA network pickles, whose
stored source calls e.g. `conv2d(input=..., weight=..., padding=..., groups=...)`.
"""

import contextlib
import numbers

import torch
import torch.nn.functional as F

enabled = False                     # Route conv2d / conv_transpose2d through the custom autograd Functions below.
weight_gradients_disabled = False   # While True, the custom backward returns None for the weight.
custom_on_cpu = False               # Also route CPU tensors through the custom Functions (tests, timing the old path).


@contextlib.contextmanager
def no_weight_gradients(disable=True):
    """Context manager: while active (and `disable` is true), backward passes of the custom convs skip the weight."""
    global weight_gradients_disabled
    previous = weight_gradients_disabled
    if disable:
        weight_gradients_disabled = True
    try:
        yield
    finally:
        weight_gradients_disabled = previous


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution (cross-correlation) with the semantics of `torch.nn.functional.conv2d`."""
    if not _use_custom(input):
        return F.conv2d(input=input, weight=weight, bias=bias, stride=stride, padding=padding, dilation=dilation,
                        groups=groups)
    config = _make_config(stride=stride, padding=padding, dilation=dilation, groups=groups, output_padding=0)
    return _Conv2d.apply(input, weight, bias, config)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """2-D transposed convolution with the semantics of `torch.nn.functional.conv_transpose2d`."""
    if not _use_custom(input):
        return F.conv_transpose2d(input=input, weight=weight, bias=bias, stride=stride, padding=padding,
                                  output_padding=output_padding, groups=groups, dilation=dilation)
    config = _make_config(stride=stride, padding=padding, dilation=dilation, groups=groups,
                          output_padding=output_padding)
    if any(p >= s for p, s in zip(config['output_padding'], config['stride'])):
        # The custom backward relies on conv2d inverting the output size, which holds only for output_padding < stride.
        raise ValueError(f"output_padding must be smaller than stride ({stride!r}) when conv2d_gradfix is enabled, "
                         f"got {output_padding!r}")
    return _ConvTranspose2d.apply(input, weight, bias, config)


def _use_custom(input) -> bool:
    return enabled and (custom_on_cpu or not isinstance(input, torch.Tensor) or input.device.type != 'cpu')


def _pair(name, value, minimum):
    """Turn an int or a pair of ints into a tuple of two ints >= `minimum`; raise naming `name` otherwise."""
    pair = (value, value) if _is_int(value) else value
    if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(_is_int(v) for v in pair):
        raise TypeError(f"{name} must be an int or a pair of ints when conv2d_gradfix is enabled, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _make_config(stride, padding, dilation, groups, output_padding):
    """Validate and freeze the non-tensor conv arguments into a dict passed to the custom Functions."""
    if not _is_int(groups) or groups < 1:
        raise ValueError(f"groups must be an int >= 1, got {groups!r}")
    return dict(stride=_pair('stride', stride, 1), padding=_pair('padding', padding, 0),
                dilation=_pair('dilation', dilation, 1), groups=int(groups),
                output_padding=_pair('output_padding', output_padding, 0))


def _conv_weight_grad(input, weight_shape, grad_output, config):
    """Gradient of <conv2d(input, W), grad_output> w.r.t. W, built from differentiable ops."""
    return torch.nn.grad.conv2d_weight(input, weight_shape, grad_output, stride=config['stride'],
                                       padding=config['padding'], dilation=config['dilation'],
                                       groups=config['groups'])


def _transpose_output_padding(input_shape, weight_shape, output_shape, config):
    """Return the output_padding that makes conv_transpose2d map an output of `output_shape` back to `input_shape`.

    A strided conv2d floors its output size, so several input sizes give the same output; the transposed conv needs
    the remainder to reproduce the exact input size.
    """
    result = []
    for axis in range(2):
        full = ((output_shape[axis + 2] - 1) * config['stride'][axis] - 2 * config['padding'][axis]
                + config['dilation'][axis] * (weight_shape[axis + 2] - 1) + 1)
        result.append(input_shape[axis + 2] - full)
    assert all(0 <= p < s for p, s in zip(result, config['stride']))
    return tuple(result)


class _Conv2d(torch.autograd.Function):
    """conv2d whose backward honours `weight_gradients_disabled` and is differentiable (double backward)."""

    @staticmethod
    def forward(ctx, input, weight, bias, config):
        ctx.save_for_backward(input, weight)
        ctx.config = config
        return F.conv2d(input, weight, bias, stride=config['stride'], padding=config['padding'],
                        dilation=config['dilation'], groups=config['groups'])

    @staticmethod
    def backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        config = ctx.config
        grad_input = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            # The adjoint of a conv is the transposed conv with the same weight.
            output_padding = _transpose_output_padding(input.shape, weight.shape, grad_output.shape, config)
            grad_input = F.conv_transpose2d(grad_output, weight, None, stride=config['stride'],
                                            padding=config['padding'], output_padding=output_padding,
                                            groups=config['groups'], dilation=config['dilation'])
        if ctx.needs_input_grad[1] and not weight_gradients_disabled:
            grad_weight = _conv_weight_grad(input, weight.shape, grad_output, config)
        if ctx.needs_input_grad[2]:
            grad_bias = grad_output.sum([0, 2, 3])
        return grad_input, grad_weight, grad_bias, None


class _ConvTranspose2d(torch.autograd.Function):
    """conv_transpose2d whose backward honours `weight_gradients_disabled` and is differentiable (double backward)."""

    @staticmethod
    def forward(ctx, input, weight, bias, config):
        ctx.save_for_backward(input, weight)
        ctx.config = config
        return F.conv_transpose2d(input, weight, bias, stride=config['stride'], padding=config['padding'],
                                  output_padding=config['output_padding'], groups=config['groups'],
                                  dilation=config['dilation'])

    @staticmethod
    def backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        config = ctx.config
        grad_input = grad_weight = grad_bias = None
        # conv_transpose2d(., W) is the adjoint of conv2d(., W) with the same stride/padding/dilation/groups, so
        # its input gradient is a plain conv, and its weight gradient is conv2d's with the roles of the tensors swapped.
        if ctx.needs_input_grad[0]:
            grad_input = F.conv2d(grad_output, weight, None, stride=config['stride'], padding=config['padding'],
                                  dilation=config['dilation'], groups=config['groups'])
        if ctx.needs_input_grad[1] and not weight_gradients_disabled:
            grad_weight = _conv_weight_grad(grad_output, weight.shape, input, config)
        if ctx.needs_input_grad[2]:
            grad_bias = grad_output.sum([0, 2, 3])
        return grad_input, grad_weight, grad_bias, None
