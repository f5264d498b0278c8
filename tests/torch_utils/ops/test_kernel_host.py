"""The CUDA kernels' own source, compiled for the host (kernel_host_harness.cpp), through the real self-check and
dispatch path on CPU: the activation formulas, the clamp masks, the bias indexing and upfirdn2d's tap and stride
arithmetic are those of bias_act_kernel.h / upfirdn2d_kernel.h, which bias_act.cu / upfirdn2d.cu launch on a GPU."""

import os
import warnings

import pytest
import torch

from torch_utils import custom_ops
from torch_utils.ops import bias_act, upfirdn2d

OPS_DIR = os.path.join(os.path.dirname(bias_act.__file__))
HARNESS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'kernel_host_harness.cpp')

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def harness(tmp_path_factory):
    """The host-compiled kernels (built once per test session into a temp dir)."""
    saved = os.environ.get('TORCH_EXTENSIONS_DIR')
    os.environ['TORCH_EXTENSIONS_DIR'] = str(tmp_path_factory.mktemp('extensions'))
    try:
        return custom_ops.get_plugin('kernel_host_harness', sources=[HARNESS], extra_cflags=['-O2'],
                                     headers=[os.path.join(OPS_DIR, 'bias_act_kernel.h'),
                                              os.path.join(OPS_DIR, 'upfirdn2d_kernel.h')])
    finally:
        if saved is None:
            del os.environ['TORCH_EXTENSIONS_DIR']
        else:
            os.environ['TORCH_EXTENSIONS_DIR'] = saved


@pytest.fixture
def installed(harness, monkeypatch):
    for op in (bias_act, upfirdn2d):
        monkeypatch.setattr(op._plugin, 'loader', lambda: harness)
        monkeypatch.setattr(op._plugin, 'device_types', ('cpu', 'cuda'))
        op._plugin.reset()
    yield harness
    for op in (bias_act, upfirdn2d):
        op._plugin.reset()


def test_host_compiled_kernels_pass_the_self_checks(installed):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        bias_act.bias_act(torch.randn([2, 3]), act='lrelu')
        upfirdn2d.upsample2d(torch.randn([1, 1, 4, 4]), upfirdn2d.setup_filter([1, 3, 3, 1]))
    assert [str(w.message) for w in caught] == []
    assert bias_act._plugin.status == 'ok' and bias_act._plugin.report == '180 comparisons within tolerance'
    assert upfirdn2d._plugin.status == 'ok' and upfirdn2d._plugin.report == '30 comparisons within tolerance'


def test_host_compiled_upfirdn2d_strides_and_dtypes(installed):
    gen = torch.Generator().manual_seed(0)
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    x = torch.randn([2, 8, 9, 10], generator=gen)
    cases = [x.to(memory_format=torch.channels_last), x[:, ::2, 1:, 2:],  # channels_last, a strided view
             x.to(torch.bfloat16), x.double()]
    for xc in cases:
        for fn in (upfirdn2d.upsample2d, upfirdn2d.downsample2d):
            got, want = fn(xc, f), fn(xc.double(), f, impl='ref')
            assert got.dtype == xc.dtype
            tol = 1e-2 if xc.dtype == torch.bfloat16 else 1e-5
            torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol)
    assert upfirdn2d.upsample2d(cases[0], f).is_contiguous(memory_format=torch.channels_last)


def test_host_compiled_bias_act_fp16_clamp_gradient(installed):
    # D's residual layers clamp at 256 * sqrt(0.5) = 181.02, which float16 stores as 181.0: a clamped fp16 output
    # holds 181.0, and its gradient must still be 0 (the kernel compares with the clamp rounded to float16).
    clamp = 256 * 0.5 ** 0.5
    x = torch.tensor([[500.0, -1000.0, 100.0, -100.0]], dtype=torch.float16, requires_grad=True)
    y = bias_act.bias_act(x, act='lrelu', gain=1.0, clamp=clamp)
    assert y.tolist() == [[181.0, -181.0, 100.0, -20.0]]
    (g,) = torch.autograd.grad(y.sum(), [x])
    assert g.tolist() == [[0.0, 0.0, 1.0, torch.tensor(0.2, dtype=torch.float16).item()]]


def test_host_compiled_bias_act_strided_inputs(installed):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn([4, 6, 5, 3], generator=gen).to(memory_format=torch.channels_last).requires_grad_()
    b = torch.randn([6], generator=gen, requires_grad=True)
    for act in ('lrelu', 'swish'):
        outs = []
        for impl in ('cuda', 'ref'):
            y = bias_act.bias_act(x, b, act=act, clamp=1.5, impl=impl)
            dy = torch.ones_like(y)[:, :, :, :].transpose(1, 3).contiguous().transpose(1, 3)  # Different strides.
            outs.append([y, *torch.autograd.grad(y, [x, b], dy)])
        for got, want in zip(*outs):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
