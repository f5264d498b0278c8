"""The CUDA-plugin dispatch of bias_act / upfirdn2d and its run-time self-check, on CPU.

A fake plugin implements the kernels' contract (bias_act.h, upfirdn2d.h) in float64 PyTorch on CPU tensors and is
installed through the test hook of checked_plugin.CheckedPlugin (loader, device_types). A correct fake passes the
self-check and drives the autograd glue of the CUDA path (first / second order); a fake with an injected error is
rejected with one warning naming the numbers, after which every call equals the reference path exactly. A build
that fails falls back the same way.
"""

import re
import warnings

import pytest
import torch

from torch_utils import custom_ops
from torch_utils.ops import bias_act, checked_plugin, upfirdn2d

SELU_SCALE, SELU_ALPHA = 1.0507009873554804934193349852946, 1.6732632423543772848170429916717


def _derivatives(act, s, alpha):
    """f(s), f'(s), f''(s) written out by hand (float64), for the activation index `act` of activation_funcs."""
    one, zero, pos = torch.ones_like(s), torch.zeros_like(s), s > 0
    sg = torch.sigmoid(s)
    if act == 1:
        return s, one, zero
    if act == 2:
        return s.clamp(min=0), pos.double(), zero
    if act == 3:
        return torch.where(pos, s, s * alpha), torch.where(pos, one, one * alpha), zero
    if act == 4:
        t = torch.tanh(s)
        return t, 1 - t * t, -2 * t * (1 - t * t)
    if act == 5:
        return sg, sg * (1 - sg), sg * (1 - sg) * (1 - 2 * sg)
    if act == 6:
        return torch.where(pos, s, torch.expm1(s)), torch.where(pos, one, s.exp()), torch.where(pos, zero, s.exp())
    if act == 7:
        neg = SELU_SCALE * SELU_ALPHA * s.exp()
        return (torch.where(pos, SELU_SCALE * s, SELU_SCALE * SELU_ALPHA * torch.expm1(s)),
                torch.where(pos, SELU_SCALE * one, neg), torch.where(pos, zero, neg))
    if act == 8:
        big = s > 20
        return (torch.where(big, s, torch.log1p(s.exp())), torch.where(big, one, sg),
                torch.where(big, zero, sg * (1 - sg)))
    dsg = sg * (1 - sg)
    return s * sg, sg + s * dsg, dsg * (2 + s * (1 - 2 * sg))


class FakeBiasActPlugin:
    """The bias_act kernel contract in float64 PyTorch; `error` is added to the chosen mode's result."""

    def __init__(self, error=0.0, error_mode=0):
        self.error, self.error_mode, self.calls = error, error_mode, []

    def bias_act(self, x, b, g1, g2, mode, dim, act, alpha, gain, clamp, ref_is_y):
        self.calls.append(mode)
        v = x.double()
        if ref_is_y:
            slope = alpha if act == 3 else 0.0
            d = torch.ones_like(v) if act == 1 else torch.where(v > 0, torch.ones_like(v), torch.full_like(v, slope))
            if clamp >= 0:  # A clamped output holds the clamp rounded to the arithmetic type, then to x's dtype.
                acc = torch.float64 if x.dtype == torch.float64 else torch.float32
                d = torch.where(v.abs() < torch.tensor(clamp, dtype=acc).to(x.dtype).double(), d, 0.0)
            out = g1.double() * d * gain
        else:
            s = v + b.double().reshape([-1 if i == dim else 1 for i in range(v.ndim)]) if b.numel() else v
            f, d1, d2 = _derivatives(act, s, alpha)
            y = f * gain
            if mode == 0:
                out = y.clamp(-clamp, clamp) if clamp >= 0 else y
            else:
                mask = (y >= -clamp) & (y <= clamp) if clamp >= 0 else torch.ones_like(y, dtype=torch.bool)
                out = g1.double() * d1 * gain if mode == 1 else g2.double() * g1.double() * d2 * gain
                out = torch.where(mask, out, 0.0)
        if mode == self.error_mode:
            out = out + self.error
        return out.to(x.dtype)


class FakeUpfirdn2dPlugin:
    """The upfirdn2d kernel contract, y[oy, ox] = sum_t g[t] u[oy * down + ty - py0, ...], in float64 PyTorch."""

    def __init__(self, error=0.0):
        self.error, self.calls = error, 0

    def upfirdn2d(self, x, g, upx, upy, downx, downy, px0, py0, out_h, out_w):
        self.calls += 1
        n, c, in_h, in_w = x.shape
        u = x.new_zeros([n, c, in_h * upy, in_w * upx], dtype=torch.float64)
        u[:, :, ::upy, ::upx] = x.double()  # Zero insertion.
        y = u.new_zeros([n, c, out_h, out_w])
        for ty in range(g.shape[0]):
            rows = torch.arange(out_h) * downy + ty - py0
            row_ok = (rows >= 0) & (rows < u.shape[2])
            for tx in range(g.shape[1]):
                cols = torch.arange(out_w) * downx + tx - px0
                col_ok = (cols >= 0) & (cols < u.shape[3])
                taps = u[:, :, rows.clamp(0, u.shape[2] - 1)][:, :, :, cols.clamp(0, u.shape[3] - 1)]
                y += float(g[ty, tx]) * taps * (row_ok[:, None] & col_ok[None, :])
        return (y + self.error).to(x.dtype)


@pytest.fixture
def install(monkeypatch):
    """install(op_module, fake): route CPU tensors of `op_module` to `fake`; verdicts are reset after the test."""
    def _install(op, fake, loader=None):
        plugin = op._plugin
        monkeypatch.setattr(plugin, 'loader', loader or (lambda: fake))
        monkeypatch.setattr(plugin, 'device_types', ('cpu', 'cuda'))
        plugin.reset()
        return plugin
    yield _install
    bias_act._plugin.reset()
    upfirdn2d._plugin.reset()


def _no_warnings(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        result = fn()
    assert [str(w.message) for w in caught] == []
    return result


def test_plugins_are_not_loaded_for_cpu_tensors(monkeypatch):
    calls = []
    for op in (bias_act, upfirdn2d):
        monkeypatch.setattr(op._plugin, 'loader', lambda: calls.append(1))
        op._plugin.reset()
    x = torch.randn([1, 2, 4, 4])
    bias_act.bias_act(x, torch.zeros([2]), act='lrelu')
    upfirdn2d.upsample2d(x, upfirdn2d.setup_filter([1, 3, 3, 1]))
    assert calls == [] and bias_act._plugin.status is None and upfirdn2d._plugin.status is None


@pytest.mark.parametrize('act', sorted(bias_act.activation_funcs))
def test_bias_act_through_a_correct_plugin_matches_reference(install, act):
    fake = FakeBiasActPlugin()
    plugin = install(bias_act, fake)
    rng_state = torch.get_rng_state()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn([3, 4, 5, 2], generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn([4], generator=gen, dtype=torch.float64, requires_grad=True)
    dy, w = torch.randn([2, 3, 4, 5, 2], generator=gen, dtype=torch.float64)
    dy.requires_grad_()
    for kwargs in (dict(), dict(alpha=0.1, gain=1.3, clamp=0.8), dict(alpha=-0.5, gain=-2.0, clamp=1.5)):
        results = []
        for impl in ('cuda', 'ref'):
            y = _no_warnings(lambda: bias_act.bias_act(x, b, act=act, impl=impl, **kwargs))
            gx, gb = torch.autograd.grad(y, [x, b], dy, create_graph=True)
            inputs = [x, b, dy]
            second = torch.autograd.grad((gx * w).sum() + (gb * w[0, :, 0, 0]).sum(), inputs, allow_unused=True)
            results.append([y, gx, gb] + [torch.zeros_like(t) if g is None else g for t, g in zip(inputs, second)])
        for got, want in zip(*results):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    assert plugin.status == 'ok' and torch.equal(torch.get_rng_state(), rng_state)
    assert fake.calls.count(0) > 3  # The fake ran the forward passes of the calls above, not only the self-check.


def test_bias_act_cuda_path_is_second_order_only(install):
    install(bias_act, FakeBiasActPlugin())
    x = torch.randn([2, 3], dtype=torch.float64, requires_grad=True)
    (g1,) = torch.autograd.grad(bias_act.bias_act(x, act='tanh', dim=1).sum(), [x], create_graph=True)
    (g2,) = torch.autograd.grad(g1.sum(), [x], create_graph=True)
    with pytest.raises(RuntimeError, match=r"provides gradients up to second order; use impl='ref'"):
        torch.autograd.grad(g2.sum(), [x])


def test_bias_act_channels_last_and_identity(install):
    fake = FakeBiasActPlugin()
    install(bias_act, fake)
    x = torch.randn([2, 3, 4, 5]).to(memory_format=torch.channels_last)
    assert bias_act.bias_act(x) is x  # linear, no bias, gain 1, no clamp: the identity without a kernel call.
    b = torch.randn([3])
    torch.testing.assert_close(bias_act.bias_act(x, b, act='swish', clamp=1.0),
                               bias_act.bias_act(x, b, act='swish', clamp=1.0, impl='ref'))


def test_bias_act_cuda_path_survives_in_place_add_into_a_linear_output(install):
    # The resnet blocks of G and D add into the skip's (linear) output in place: y.add_(x). The CUDA path must not keep
    # that output for its backward (found on an H200: R1 through a resnet D raised "modified by an inplace operation").
    install(bias_act, FakeBiasActPlugin())
    install(upfirdn2d, FakeUpfirdn2dPlugin())
    gen = torch.Generator().manual_seed(0)
    x = torch.randn([2, 3, 4, 4], generator=gen, dtype=torch.float64, requires_grad=True)
    other = torch.randn([2, 3, 4, 4], generator=gen, dtype=torch.float64)
    grads = []
    for impl in ('cuda', 'ref'):
        for clamp in (None, 0.5):
            y = bias_act.bias_act(x, None, act='linear', gain=0.5 ** 0.5, clamp=clamp, impl=impl)
            z = y.add_(other)
            (g,) = torch.autograd.grad(z.square().sum(), [x])
            grads.append(g)
    torch.testing.assert_close(grads[0], grads[2], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grads[1], grads[3], rtol=1e-12, atol=1e-12)


def test_resnet_discriminator_r1_through_the_cuda_path(install):
    from training import discriminator  # noqa: PLC0415 (training is not needed by the other tests here)
    install(bias_act, FakeBiasActPlugin())
    install(upfirdn2d, FakeUpfirdn2dPlugin())
    torch.manual_seed(0)
    D = discriminator.Discriminator(c_dim=0, img_resolution=8, img_channels=1, channel_base=64, channel_max=8,
                                    conv_clamp=256)
    img = torch.randn([2, 1, 8, 8], requires_grad=True)
    results = []
    for context in (lambda: torch.enable_grad(), checked_plugin.reference_only):
        with context():
            (r1_grad,) = torch.autograd.grad(D(img, None).sum(), [img], create_graph=True)
            grads = torch.autograd.grad(r1_grad.square().sum(), list(D.parameters()), allow_unused=True)
            results.append([g for g in grads if g is not None])
    assert len(results[0]) == len(results[1]) > 10
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


_UPFIRDN_CASES = [  # (filter taps, up, down, padding, flip, gain)
    ([1, 3, 3, 1], 2, 1, [2, 1, 2, 1], False, 4),
    ([1, 3, 3, 1], 1, 2, [1, 1, 1, 1], True, 1),
    ([1, 2, 3, 4, 5, 4, 3, 2], 2, 1, [4, 3, 4, 3], False, 4),  # 8 taps: separable.
    ([[1, 2, 0, -1, 3], [0, 1, 4, 2, 1], [2, -2, 1, 0, 1]], [2, 1], [1, 3], [1, -1, 2, 0], True, 0.5),
    (None, [3, 2], [2, 3], [0, 1, -1, 2], False, 2),
    ([1, 1], 2, 2, [0, 0, 0, 0], False, 1),
]


@pytest.mark.parametrize('taps, up, down, padding, flip, gain', _UPFIRDN_CASES)
def test_upfirdn2d_through_a_correct_plugin_matches_reference(install, taps, up, down, padding, flip, gain):
    fake = FakeUpfirdn2dPlugin()
    plugin = install(upfirdn2d, fake)
    gen = torch.Generator().manual_seed(1)
    f = None if taps is None else upfirdn2d.setup_filter(taps, normalize=False)
    x = torch.randn([2, 3, 7, 6], generator=gen, dtype=torch.float64, requires_grad=True)
    results = []
    for impl in ('cuda', 'ref'):
        y = _no_warnings(lambda: upfirdn2d.upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip,
                                                     gain=gain, impl=impl))
        dy = torch.ones_like(y).mul(torch.arange(y.numel(), dtype=y.dtype).reshape(y.shape).sin()).requires_grad_()
        (gx,) = torch.autograd.grad(y, [x], dy, create_graph=True)
        (gdy,) = torch.autograd.grad((gx * x.detach().cos()).sum(), [dy], create_graph=True)
        # R1's shape, |d sum(y^3) / dx|^2 differentiated in x, and one order more: any order works (linear op).
        (gx3,) = torch.autograd.grad(y.pow(3).sum(), [x], create_graph=True)
        (gr1,) = torch.autograd.grad(gx3.square().sum(), [x], create_graph=True)
        (g3,) = torch.autograd.grad((gr1 * gr1.detach()).sum(), [x])
        results.append([y, gx, gdy, gr1, g3])
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    assert plugin.status == 'ok' and fake.calls > 0


def test_upfirdn2d_wrappers_and_filter_gradient(install):
    fake = FakeUpfirdn2dPlugin()
    install(upfirdn2d, fake)
    x = torch.randn([1, 2, 8, 8], dtype=torch.float64)
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    for fn in (upfirdn2d.upsample2d, upfirdn2d.downsample2d, upfirdn2d.filter2d):
        torch.testing.assert_close(fn(x, f), fn(x, f, impl='ref'), rtol=1e-9, atol=1e-12)
    calls = fake.calls
    f_trained = f.clone().requires_grad_()  # Kernel gradients reach x only: a trainable filter keeps the reference.
    upfirdn2d.upfirdn2d(x, f_trained).sum().backward()
    assert fake.calls == calls and f_trained.grad is not None


def test_a_wrong_forward_is_rejected_once_and_the_reference_used(install):
    fake = FakeBiasActPlugin(error=1e-3, error_mode=0)
    plugin = install(bias_act, fake)
    x, b = torch.randn([2, 3, 4]), torch.randn([3])
    with pytest.warns(RuntimeWarning) as record:
        y = bias_act.bias_act(x, b, act='lrelu', clamp=2.0)
    (message,) = [str(w.message) for w in record]
    assert message.startswith('PyTorch plugin "bias_act_plugin" failed its self-check against the reference op on '
                              'cpu (')
    assert ('(51 of 180 comparisons out of tolerance: torch.float64 linear {} forward: max |plugin - ref| = 0.001 > '
            '8.89e-09 (tolerance 1e-09 x 8.89); ' in message)
    assert message.endswith('; ... (47 more)); falling back to the slower reference implementation.')
    assert plugin.status == 'rejected'
    calls = len(fake.calls)
    y2 = _no_warnings(lambda: bias_act.bias_act(x, b, act='lrelu', clamp=2.0))  # Warned once; no new check.
    assert torch.equal(y, bias_act.bias_act(x, b, act='lrelu', clamp=2.0, impl='ref')) and torch.equal(y, y2)
    assert len(fake.calls) == calls  # The rejected plugin is never called again.


@pytest.mark.parametrize('mode', [1, 2])
def test_a_wrong_gradient_is_rejected(install, mode):
    plugin = install(bias_act, FakeBiasActPlugin(error=1e-6, error_mode=mode))
    with pytest.warns(RuntimeWarning, match=r'failed its self-check') as record:
        bias_act.bias_act(torch.randn([2, 3]), act='sigmoid')
    assert len(record) == 1 and plugin.status == 'rejected'
    failures = plugin.report.split('; ')
    first_order = [f for f in failures if ' grad ' in f and '2nd-order' not in f]
    assert not any('forward' in f for f in failures)
    if mode == 1:  # Mode 1 is also the gradient of the gradient in dy, so second-order checks fail as well.
        assert first_order and any('2nd-order grad dy' in f for f in failures)
    else:
        assert not first_order and all('2nd-order grad x' in f or '2nd-order grad b' in f for f in failures)


def test_a_wrong_upfirdn2d_is_rejected_and_the_reference_used(install):
    plugin = install(upfirdn2d, FakeUpfirdn2dPlugin(error=1e-4))  # Within float16's tolerance, not float32's.
    x, f = torch.randn([1, 2, 6, 6]), upfirdn2d.setup_filter([1, 3, 3, 1])
    with pytest.warns(RuntimeWarning, match=r'"upfirdn2d_plugin" failed its self-check') as record:
        y = upfirdn2d.upsample2d(x, f)
    assert len(record) == 1
    text = plugin.report
    assert re.search(r'torch\.float32 case 0 \(f \[4, 4\], up \(2, 2\), down \(1, 1\), pad \(2, 1, 2, 1\)\) forward: '
                     r'max \|plugin - ref\| = 0\.0001 > [0-9.e-]+ \(tolerance 2e-05 x [0-9.]+\)', text)
    assert 'torch.float16' not in text
    assert plugin.status == 'rejected'
    torch.testing.assert_close(y, upfirdn2d.upsample2d(x, f, impl='ref'))  # The fake is off by 1e-4.


def test_a_kernel_that_raises_is_rejected(install):
    class Raising:
        def upfirdn2d(self, *args):
            raise RuntimeError('CUDA error: no kernel image is available for execution on the device')
    install(upfirdn2d, Raising())
    x = torch.randn([1, 1, 4, 4])
    with pytest.warns(RuntimeWarning, match=r'self-check raised RuntimeError: CUDA error: no kernel image'):
        y = upfirdn2d.filter2d(x, upfirdn2d.setup_filter([1, 2, 1]))
    torch.testing.assert_close(y, upfirdn2d.filter2d(x, upfirdn2d.setup_filter([1, 2, 1]), impl='ref'))


def test_a_failed_build_falls_back_with_one_warning(install, tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_EXTENSIONS_DIR', str(tmp_path / 'extensions'))
    monkeypatch.setattr(custom_ops, '_cached_plugins', {})
    monkeypatch.setattr(custom_ops, '_unavailable', {})
    (tmp_path / 'broken.cpp').write_text('#error deliberately broken bias_act plugin\n')
    plugin = install(bias_act, None, loader=lambda: custom_ops.load_or_warn(
        'broken_bias_act_plugin', sources=['broken.cpp'], source_dir=str(tmp_path)))
    x = torch.randn([2, 3])
    with pytest.warns(RuntimeWarning) as record:
        y = bias_act.bias_act(x, act='elu', gain=2.0)
    (message,) = [str(w.message) for w in record]
    assert message.startswith('PyTorch plugin "broken_bias_act_plugin" is unavailable (build error: ')
    assert 'deliberately broken bias_act plugin' in message
    assert plugin.status == 'unavailable' and torch.equal(y, bias_act.bias_act(x, act='elu', gain=2.0, impl='ref'))
    _no_warnings(lambda: bias_act.bias_act(x, act='elu'))  # Not retried, not warned again.


def test_reference_only_bypasses_a_verified_plugin(install):
    fake = FakeUpfirdn2dPlugin()
    install(upfirdn2d, fake)
    x, f = torch.randn([1, 1, 4, 4]), upfirdn2d.setup_filter([1, 1])
    upfirdn2d.upsample2d(x, f)
    calls = fake.calls
    with checked_plugin.reference_only():
        upfirdn2d.upsample2d(x, f)
    assert fake.calls == calls
    upfirdn2d.upsample2d(x, f)
    assert fake.calls > calls


def test_comparison_reports_shape_nan_and_tolerance():
    comparison = checked_plugin.Comparison()
    want = torch.tensor([1.0, -3.0], dtype=torch.float64)
    comparison.check('ok', want.float() + 1e-6, want, torch.float32)
    comparison.check('nan', torch.tensor([float('nan'), -3.0]), want, torch.float32)
    comparison.check('shape', torch.zeros(3), want, torch.float32)
    comparison.check('half', want.half() + 0.02, want, torch.float16)
    assert comparison.count == 4
    assert comparison.failures == [
        'nan: max |plugin - ref| = nan > 6e-05 (tolerance 2e-05 x 3)',
        'shape: shape [3] != reference [2]',
        'half: max |plugin - ref| = 0.0195 > 0.012 (tolerance 0.004 x 3)',
    ]
