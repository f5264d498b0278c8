"""The CUDA plugins of bias_act / upfirdn2d against the reference ops at the shapes of the cifar and 256x256 configs.

1. Shapes: G and D of train.py --cfg=cifar (32x32, 10 classes, per-GPU batch 32) and --cfg=paper256 (256x256, batch 8)
   run one forward pass while every bias_act / upfirdn2d call is recorded (shape, dtype, memory format, arguments).
2. Ops: each distinct call runs through the plugin and through the reference in float64 on the same inputs: forward,
   gradient and double backward (d/dx of sum(w * dL/dx), as R1 and path length take it), judged with
   checked_plugin.TOLERANCE. Gradient elements whose output lies within rounding of the clamp (where clamped and
   unclamped are both right) are left out and counted.
3. Networks: R1 = |dD(x)/dx|^2 and the path-length term |d(G(w) * y)/dw| with their parameter gradients, plugins vs
   reference ops (fp32 layers, TF32 off; then mixed precision), and fp16 G / D against fp32 (force_fp32): relative
   errors ||a - b|| / ||b||.

    python benchmarks/kernel_check.py [--device cuda] [--configs cifar,paper256]
On CPU only step 1 runs (shapes at batch 2), since the plugins need CUDA. Exit status 1 if any check fails.
"""

import copy
import contextlib

import click
import torch

from torch_utils.ops import bias_act, checked_plugin, upfirdn2d
from training import discriminator, networks

CONFIGS = {  # train.py presets (docs/spec/stylegan2-ada.md 3.5) on one GPU: batch_gpu = mb / ref_gpus.
    'cifar': dict(res=32, c_dim=10, batch=32, cbase=32768, map=2, D_arch='orig', mbstd=32),
    'paper256': dict(res=256, c_dim=0, batch=8, cbase=16384, map=8, D_arch='resnet', mbstd=8),
}
NET_TOLERANCE = {'fp32': 1e-3, 'mixed': 5e-2, 'fp16 vs fp32': 5e-2}  # Relative error bounds of step 3.


def build_networks(cfg: dict, device: torch.device, mixed: bool = True):
    """G and D as train.py builds them for this preset (fp16 in the top 4 resolutions and conv_clamp 256 if mixed)."""
    fp16_res, clamp = (4, 256) if mixed else (0, None)
    torch.manual_seed(0)
    G = networks.Generator(z_dim=512, c_dim=cfg['c_dim'], w_dim=512, img_resolution=cfg['res'], img_channels=3,
                           mapping_kwargs=dict(num_layers=cfg['map']),
                           synthesis_kwargs=dict(channel_base=cfg['cbase'], channel_max=512, num_fp16_res=fp16_res,
                                                 conv_clamp=clamp))
    D = discriminator.Discriminator(c_dim=cfg['c_dim'], img_resolution=cfg['res'], img_channels=3,
                                    architecture=cfg['D_arch'], channel_base=cfg['cbase'], channel_max=512,
                                    num_fp16_res=fp16_res, conv_clamp=clamp,
                                    epilogue_kwargs=dict(mbstd_group_size=min(cfg['mbstd'], cfg['batch'])))
    return G.to(device), D.to(device)


def _inputs(G, batch, device, seed=1):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn([batch, G.z_dim], generator=gen).to(device)
    c = torch.zeros([batch, G.c_dim], device=device)
    if G.c_dim:
        c[torch.arange(batch), torch.arange(batch) % G.c_dim] = 1
    return z, c


@contextlib.contextmanager
def recording(calls: dict):
    """Record every distinct bias_act / upfirdn2d call into `calls` (key -> (op, x, kwargs))."""
    orig_ba, orig_up = bias_act.bias_act, upfirdn2d.upfirdn2d

    def rec_ba(x, b=None, dim=1, act='linear', alpha=None, gain=None, clamp=None, impl='cuda'):
        key = ('bias_act', tuple(x.shape), x.dtype, x.is_contiguous(memory_format=torch.channels_last) and x.ndim == 4
               and not x.is_contiguous(), b is not None, dim, act, alpha, gain, clamp)
        calls.setdefault(key, ('bias_act', x.detach(), dict(b=None if b is None else b.detach(), dim=dim, act=act,
                                                             alpha=alpha, gain=gain, clamp=clamp)))
        return orig_ba(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp, impl=impl)

    def rec_up(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1, impl='cuda'):
        key = ('upfirdn2d', tuple(x.shape), x.dtype, not x.is_contiguous(), None if f is None else tuple(f.shape),
               str(up), str(down), str(padding), flip_filter, gain)
        calls.setdefault(key, ('upfirdn2d', x.detach(), dict(f=f, up=up, down=down, padding=padding,
                                                              flip_filter=flip_filter, gain=gain)))
        return orig_up(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain, impl=impl)

    bias_act.bias_act, upfirdn2d.upfirdn2d = rec_ba, rec_up
    try:
        yield calls
    finally:
        bias_act.bias_act, upfirdn2d.upfirdn2d = orig_ba, orig_up


def record_calls(cfg: dict, device: torch.device, batch: int) -> dict:
    """The distinct op calls of one G forward and one D forward at this config."""
    G, D = build_networks(cfg, device)
    z, c = _inputs(G, batch, device)
    calls = {}
    with recording(calls), torch.no_grad():
        img = G(z, c)
        D(img, c)
    return calls


def _call(op, x, kwargs, impl):
    if op == 'bias_act':
        b = kwargs['b']
        return bias_act.bias_act(x, b, **{k: v for k, v in kwargs.items() if k != 'b'}, impl=impl)
    return upfirdn2d.upfirdn2d(x, **kwargs, impl=impl)


def check_op(op, x_rec, kwargs, comparison, seed=0):
    """Plugin vs float64 reference for one recorded call: forward, gradient, double backward (into `comparison`)."""
    gen = torch.Generator().manual_seed(seed)
    dtype, device = x_rec.dtype, x_rec.device
    clamp = kwargs.get('clamp') if op == 'bias_act' else None
    scale = 2.0 if not clamp else clamp / 2  # Some values beyond the clamp.
    x = (torch.randn(x_rec.shape, generator=gen) * scale).to(device=device, dtype=dtype)
    x = x.contiguous(memory_format=torch.channels_last) if not x_rec.is_contiguous() else x
    kw = dict(kwargs)
    kw64 = dict(kwargs)
    if op == 'bias_act' and kwargs['b'] is not None:
        b = (torch.randn(kwargs['b'].shape, generator=gen)).to(device=device, dtype=dtype)
        kw['b'], kw64['b'] = b.requires_grad_(), b.double().requires_grad_()
    xk, x64 = x.detach().requires_grad_(), x.double().requires_grad_()
    y = _call(op, xk, kw, 'cuda')
    y64 = _call(op, x64, kw64, 'ref')
    name = f"{op} {list(x.shape)} {dtype} {'NHWC ' if not x.is_contiguous() else ''}" + \
        ', '.join(f'{k}={v if not isinstance(v, torch.Tensor) else list(v.shape)}' for k, v in kwargs.items())
    comparison.check(f'{name}: forward', y, y64, dtype)
    keep = torch.ones_like(y64, dtype=torch.bool)
    if clamp:  # Where the unclamped output is within rounding of the clamp, either gradient (0 or the slope) is right.
        with torch.no_grad():
            v64 = _call(op, x64, dict(kw64, clamp=None), 'ref')
        keep = (v64.abs() - clamp).abs() > 4 * torch.finfo(dtype).eps * clamp
    dy = torch.randn(y64.shape, generator=gen, dtype=torch.float64).to(device)
    w = torch.randn(x.shape, generator=gen, dtype=torch.float64).to(device)
    w = w * keep if clamp else w  # bias_act: w has y's shape.
    inputs = [xk] + ([kw['b']] if op == 'bias_act' and kw['b'] is not None else [])
    inputs64 = [x64] + ([kw64['b']] if op == 'bias_act' and kw64['b'] is not None else [])
    dyk, dy64 = (dy * keep).to(dtype).requires_grad_(), (dy * keep).requires_grad_()
    g = torch.autograd.grad(y, inputs, dyk, create_graph=True)
    g64 = torch.autograd.grad(y64, inputs64, dy64, create_graph=True)
    for label, a, b in zip(['grad x', 'grad b'], g, g64):
        comparison.check(f'{name}: {label}', a, b, dtype)
    # Double backward as R1 / path length take it: d/d(x, b, dy) of sum(w * dL/dx).
    gg = torch.autograd.grad((g[0] * w.to(dtype)).sum(), inputs + [dyk], allow_unused=True)
    gg64 = torch.autograd.grad((g64[0] * w).sum(), inputs64 + [dy64], allow_unused=True)
    labels = ['2nd-order x'] + (['2nd-order b'] if len(inputs) == 2 else []) + ['2nd-order dy']
    for label, a, b, t in zip(labels, gg, gg64, inputs64 + [dy64]):
        zero = torch.zeros_like(t)
        comparison.check(f'{name}: {label}', zero if a is None else a, zero if b is None else b, dtype)
    return int((~keep).sum())


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp(min=1e-30)).item()


def _r1_and_pl(G, D, z, c, seed=2):
    """R1 penalty and its D-parameter gradients; path-length term and its G-parameter gradients."""
    torch.manual_seed(seed)
    img = G(z, c).detach().requires_grad_()
    (r1_grad,) = torch.autograd.grad(D(img, c).sum(), [img], create_graph=True)
    r1 = r1_grad.square().sum()
    d_params = [p for p in D.parameters() if p.requires_grad]
    r1_param_grads = torch.autograd.grad(r1, d_params, allow_unused=True)
    ws = G.mapping(z, c).detach().requires_grad_()
    out = G.synthesis(ws)
    y = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(out.device) / out.shape[2]
    (pl_grad,) = torch.autograd.grad((out * y).sum(), [ws], create_graph=True)
    pl = pl_grad.square().sum(2).mean(1).sqrt().sum()
    g_params = [p for p in G.parameters() if p.requires_grad]
    pl_param_grads = torch.autograd.grad(pl, g_params, allow_unused=True)
    def flat(grads, params):  # Autograd gives None for a parameter the term does not reach.
        return torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for g, p in zip(grads, params)])
    return dict(r1=r1.detach(), r1_param_grads=flat(r1_param_grads, d_params), pl=pl.detach(),
                pl_param_grads=flat(pl_param_grads, g_params))


def check_networks(cfg, device, log):
    """Step 3: relative errors; returns the list of failures."""
    failures = []
    for precision in ('fp32', 'mixed'):
        G, D = build_networks(cfg, device, mixed=(precision == 'mixed'))
        z, c = _inputs(G, cfg['batch'], device)
        got = _r1_and_pl(G, D, z, c)
        with checked_plugin.reference_only():
            want = _r1_and_pl(G, D, z, c)
        for key in got:
            err = _rel(got[key], want[key])
            ok = err <= NET_TOLERANCE[precision]
            log(f'  {precision:<6} plugins vs reference ops, {key:<15} rel. error {err:.2e}  {"ok" if ok else "FAIL"}'
                f'  (|ref| {want[key].double().norm().item():.4g})')
            if not ok:
                failures.append(f'{precision} {key} {err:.2e}')
    G, D = build_networks(cfg, device, mixed=True)
    z, c = _inputs(G, cfg['batch'], device)
    with torch.no_grad():
        img16, img32 = G(z, c), G(z, c, force_fp32=True)
        logits16, logits32 = D(img32, c), D(img32, c, force_fp32=True)
    for key, a, b in (('G image', img16, img32), ('D logits', logits16, logits32)):
        err = _rel(a, b)
        ok = err <= NET_TOLERANCE['fp16 vs fp32']
        log(f'  fp16 vs fp32 (force_fp32), {key:<9} rel. error {err:.2e}  {"ok" if ok else "FAIL"}')
        if not ok:
            failures.append(f'fp16 vs fp32 {key} {err:.2e}')
    return failures


@click.command()
@click.option('--device', type=click.Choice(['cpu', 'cuda']), default='cuda', show_default=True, help='Device')
@click.option('--configs', default='cifar,paper256', show_default=True, help='Comma-separated configs')
def main(device, configs):
    """Check the plugins against the reference ops; exit 1 if anything is out of tolerance."""
    names = configs.split(',')
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise click.ClickException(f'--configs: unknown {unknown}; expected names from {list(CONFIGS)}')
    if device == 'cuda' and not torch.cuda.is_available():
        raise click.ClickException('--device cuda: no CUDA device is available (use --device cpu for step 1 only)')
    device = torch.device(device)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 here.
    failures = []
    for name in names:
        cfg = CONFIGS[name]
        calls = record_calls(cfg, device, cfg['batch'] if device.type == 'cuda' else 2)
        print(f"{name}: {len(calls)} distinct op calls in G + D forward "
              f"({sum(k[0] == 'bias_act' for k in calls)} bias_act, {sum(k[0] == 'upfirdn2d' for k in calls)} "
              f"upfirdn2d)")
        if device.type != 'cuda':
            for key in calls:
                print('  ', *key[:3], *key[3:])
            print('  plugins need CUDA: steps 2 and 3 skipped')
            continue
        for plugin in (bias_act._plugin, upfirdn2d._plugin):
            plugin.get(device)
            print(f'  {plugin.module_name}: self-check {plugin.status} ({plugin.report})')
            if plugin.status != 'ok':
                failures.append(f'{plugin.module_name} {plugin.status}')
        if failures:
            break
        comparison = checked_plugin.Comparison()
        excluded = sum(check_op(op, x, kwargs, comparison) for op, x, kwargs in calls.values())
        print(f'  ops: {comparison.count - len(comparison.failures)} of {comparison.count} comparisons within '
              f'tolerance ({excluded} gradient elements at the clamp boundary left out)')
        for failure in comparison.failures:
            print(f'  FAIL {failure}')
        failures += comparison.failures
        failures += check_networks(cfg, device, lambda line: print(line))
    print('kernel_check: ' + ('PASS' if not failures else f'FAIL ({len(failures)} failures)'))
    raise SystemExit(1 if failures else 0)


if __name__ == '__main__':
    main()
