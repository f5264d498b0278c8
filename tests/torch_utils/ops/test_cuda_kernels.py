"""The compiled CUDA kernels of bias_act and upfirdn2d against the reference ops (needs a CUDA GPU; skipped without).

Every comparison runs the kernel in the tested dtype and the reference in float64 on the same inputs, judged with
checked_plugin.TOLERANCE; see benchmarks/kernel_check.py for the same at the networks' own shapes.
"""

import contextlib

import pytest
import torch

from torch_utils.ops import bias_act, checked_plugin, conv2d_resample, upfirdn2d

pytestmark = pytest.mark.cuda

DTYPES = [torch.float64, torch.float32, torch.float16]


@pytest.fixture(scope='module')
def device():
    device = torch.device('cuda')
    for plugin in (bias_act._plugin, upfirdn2d._plugin):
        plugin.reset()
        assert plugin.get(device) is not None, f'{plugin.module_name}: {plugin.status}: {plugin.report}'
    return device


def _assert_all_within(comparison):
    assert comparison.count > 0
    assert comparison.failures == []


def _compare(fn_kernel, fn_ref, inputs, dtype, comparison, name, second_order=True, keep=None):
    """Forward, gradient of every input and double backward (d/d inputs of sum(w * d out / d inputs[0])); `keep`
    (bool, the output's shape) leaves gradient elements out (zero dy there)."""
    gen = torch.Generator().manual_seed(7)
    ins = [t.detach().to(dtype).requires_grad_() for t in inputs]
    ins64 = [t.detach().to(dtype).double().requires_grad_() for t in inputs]
    y, y64 = fn_kernel(*ins), fn_ref(*ins64)
    assert y.dtype == dtype
    comparison.check(f'{name} forward', y, y64, dtype)
    dy = torch.randn(y64.shape, generator=gen, dtype=torch.float64).to(y64.device)
    dy = dy if keep is None else dy * keep
    dyk, dy64 = dy.to(dtype).requires_grad_(), dy.to(dtype).double().requires_grad_()
    g = torch.autograd.grad(y, ins, dyk, create_graph=True)
    g64 = torch.autograd.grad(y64, ins64, dy64, create_graph=True)
    for i, (a, b) in enumerate(zip(g, g64)):
        comparison.check(f'{name} grad {i}', a, b, dtype)
    if not second_order or dtype == torch.float16:
        return
    w = torch.randn(ins[0].shape, generator=gen, dtype=torch.float64).to(y64.device)
    w = w if keep is None else w * keep
    gg = torch.autograd.grad((g[0] * w.to(dtype)).sum(), ins + [dyk], allow_unused=True)
    gg64 = torch.autograd.grad((g64[0] * w).sum(), ins64 + [dy64], allow_unused=True)
    for i, (a, b, t) in enumerate(zip(gg, gg64, ins64 + [dy64])):
        zero = torch.zeros_like(t)
        comparison.check(f'{name} 2nd-order {i}', zero if a is None else a, zero if b is None else b, dtype)


def _off_clamp_boundary(x, b, dim, act, kwargs, dtype):
    """Elements whose unclamped output is not within rounding of the clamp: there, in low precision, clamped and
    unclamped (gradient 0 or the slope) are both right, so the test leaves them out."""
    if kwargs.get('clamp') is None:
        return None
    clamp = kwargs['clamp']
    v = bias_act.bias_act(x.to(dtype).double(), b.to(dtype).double(), dim=dim, act=act, impl='ref',
                          **dict(kwargs, clamp=None))
    return (v.abs() - clamp).abs() > 4 * torch.finfo(dtype).eps * clamp


def test_self_checks_passed(device):
    for plugin in (bias_act._plugin, upfirdn2d._plugin):
        assert plugin.status == 'ok', plugin.report


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('act', sorted(bias_act.activation_funcs))
def test_bias_act_kernel_matches_reference(device, dtype, act):
    gen = torch.Generator().manual_seed(0)
    comparison = checked_plugin.Comparison()
    for shape, dim, kwargs in [([4, 16, 9, 7], 1, dict()), ([4, 16, 9, 7], 1, dict(alpha=0.1, gain=0.5, clamp=0.9)),
                               ([33, 70], 1, dict(gain=3.0)), ([6, 5, 3], 0, dict(clamp=2.0)),
                               ([2, 8, 5, 5], 3, dict(alpha=0.3, gain=-1.0))]:
        x = (torch.randn(shape, generator=gen) * 2).to(device)
        b = torch.randn([shape[dim]], generator=gen).to(device)
        name = f'{act} {shape} dim {dim} {kwargs}'
        _compare(lambda x, b: bias_act.bias_act(x, b, dim=dim, act=act, **kwargs),
                 lambda x, b: bias_act.bias_act(x, b, dim=dim, act=act, impl='ref', **kwargs),
                 [x, b], dtype, comparison, name, keep=_off_clamp_boundary(x, b, dim, act, kwargs, dtype))
    _assert_all_within(comparison)


def test_bias_act_kernel_channels_last_no_bias_and_large(device):
    comparison = checked_plugin.Comparison()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn([8, 64, 33, 33], generator=gen).to(device).to(memory_format=torch.channels_last)
    b = torch.randn([64], generator=gen).to(device)
    for dtype in (torch.float32, torch.float16):
        _compare(lambda x, b: bias_act.bias_act(x, b, act='lrelu', clamp=256),
                 lambda x, b: bias_act.bias_act(x, b, act='lrelu', clamp=256, impl='ref'), [x * 100, b], dtype,
                 comparison, 'channels_last lrelu', keep=_off_clamp_boundary(x * 100, b, 1, 'lrelu', dict(clamp=256),
                                                                            dtype))
        xl = x.to(dtype)
        assert bias_act.bias_act(xl, b.to(dtype), act='lrelu').is_contiguous(memory_format=torch.channels_last)
    big = torch.randn([3, 5, 1000, 1001], generator=gen).to(device)  # More elements than one launch of threads.
    _compare(lambda x: bias_act.bias_act(x, act='swish'), lambda x: bias_act.bias_act(x, act='swish', impl='ref'),
             [big], torch.float32, comparison, 'large swish')
    _assert_all_within(comparison)


def test_bias_act_kernel_third_order_raises(device):
    x = torch.randn([4, 3], device=device, requires_grad=True)
    (g1,) = torch.autograd.grad(bias_act.bias_act(x, act='tanh').sum(), [x], create_graph=True)
    (g2,) = torch.autograd.grad(g1.sum(), [x], create_graph=True)
    with pytest.raises(RuntimeError, match='up to second order'):
        torch.autograd.grad(g2.sum(), [x])


_UPFIRDN_CASES = [  # (taps, up, down, padding, flip, gain)
    ([1, 3, 3, 1], 2, 1, [2, 1, 2, 1], False, 4),
    ([1, 3, 3, 1], 1, 2, [1, 1, 1, 1], True, 1),
    ([1, 3, 3, 1], 1, 1, [1, 1, 1, 1], False, 4),
    ([1, 1], 2, 2, [0, 0, 0, 0], False, 1),
    ([1, 2, 3, 4, 5, 4, 3, 2], 2, 1, [4, 3, 4, 3], False, 4),              # separable 8 taps
    ([[1, 2, 0, -1, 3], [0, 1, 4, 2, 1], [2, -2, 1, 0, 1]], [2, 1], [1, 3], [1, -1, 2, 0], True, 0.5),
    (None, [3, 2], [2, 3], [0, 1, -1, 2], False, 2),
    (list(range(1, 13)), 4, 2, [6, 5, 6, 5], True, 1),                     # 12 taps, up 4: StyleGAN3-like
]


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('taps, up, down, padding, flip, gain', _UPFIRDN_CASES)
def test_upfirdn2d_kernel_matches_reference(device, dtype, taps, up, down, padding, flip, gain):
    gen = torch.Generator().manual_seed(2)
    comparison = checked_plugin.Comparison()
    f = None if taps is None else upfirdn2d.setup_filter(taps).to(device)
    for shape, fmt in [([3, 5, 11, 9], torch.contiguous_format), ([2, 16, 16, 16], torch.channels_last)]:
        x = torch.randn(shape, generator=gen).to(device).to(memory_format=fmt)
        kwargs = dict(up=up, down=down, padding=padding, flip_filter=flip, gain=gain)
        _compare(lambda x: upfirdn2d.upfirdn2d(x, f, **kwargs), lambda x: upfirdn2d.upfirdn2d(x, f, impl='ref', **kwargs),
                 [x], dtype, comparison, f'{shape} {fmt} {kwargs}')
    _assert_all_within(comparison)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float16])
def test_conv2d_resample_with_kernels_matches_reference(device, dtype):
    """The networks' resampling convolutions: kernels in `dtype` vs the reference ops in float64 (max error relative
    to max |reference|; the convolutions themselves sum 288 products, hence bounds looser than the ops' own)."""
    bound = {torch.float32: 1e-4, torch.float16: 1e-2}[dtype]
    gen = torch.Generator().manual_seed(3)
    f = upfirdn2d.setup_filter([1, 3, 3, 1]).to(device)
    x0 = torch.randn([4, 32, 16, 16], generator=gen).to(device)
    w0 = (torch.randn([48, 32, 3, 3], generator=gen) / 10).to(device)
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        for up, down in [(2, 1), (1, 2), (1, 1)]:
            results = []
            for kind in ('kernel', 'ref'):
                x = (x0.to(dtype) if kind == 'kernel' else x0.to(dtype).double()).requires_grad_()
                w = (w0.to(dtype) if kind == 'kernel' else w0.to(dtype).double()).requires_grad_()
                with checked_plugin.reference_only() if kind == 'ref' else contextlib.nullcontext():
                    y = conv2d_resample.conv2d_resample(x, w, f=f, up=up, down=down, padding=1)
                    gx, gw = torch.autograd.grad(y.double().square().sum(), [x, w])
                results.append([y, gx, gw])
            for got, want in zip(*results):
                err = (got.double() - want).abs().max() / want.abs().max()
                assert err < bound, (up, down, err.item())
    finally:
        torch.backends.cudnn.allow_tf32 = saved
