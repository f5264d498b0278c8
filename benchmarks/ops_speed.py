"""Speed of the torch_utils ops (reference paths) at StyleGAN2 shapes, each beside a plainer formulation.

Prints median milliseconds per forward+backward and the ratio, measured side by side in one run:
  - conv2d_resample up=2 / down=2 (transposed / strided conv fast paths) vs the general formulation
    (zero-insert + filter at full resolution, then a valid conv);
  - upfirdn2d with a separable 1-D filter vs the same filter as a 2-D outer product;
  - bias_act(lrelu, gain, clamp) vs the same chain written inline.

    python benchmarks/ops_speed.py [--batch 8] [--channels 64] [--res 32] [--device cpu|cuda] [--reps 20]
"""

import click
import torch
import torch.nn.functional as F

from torch_utils import timing
from torch_utils.ops import bias_act, conv2d_resample, upfirdn2d


def _time_ms(fn, inputs, reps, device):
    """Median wall time in ms of fn(*inputs).square().sum().backward() over `reps` runs after 3 warm-up runs."""
    def once():
        for t in inputs:
            t.grad = None
        fn(*inputs).square().sum().backward()
    return timing.median_ms(once, reps, 3, device)


def _cases(batch, channels, res, device):
    """Yield (name, fast fn, plain fn, inputs); both fns compute the same values."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn([batch, channels, res, res], generator=gen).to(device).requires_grad_()
    w = torch.randn([channels, channels, 3, 3], generator=gen).to(device).requires_grad_()
    f = upfirdn2d.setup_filter([1, 3, 3, 1], device=device)
    yield ('conv2d_resample up=2', lambda x, w: conv2d_resample.conv2d_resample(x, w, f=f, up=2, padding=1),
           lambda x, w: F.conv2d(upfirdn2d.upfirdn2d(x, f, up=2, padding=[3, 2, 3, 2], gain=4), w), (x, w))
    yield ('conv2d_resample down=2', lambda x, w: conv2d_resample.conv2d_resample(x, w, f=f, down=2, padding=1),
           lambda x, w: upfirdn2d.upfirdn2d(F.conv2d(F.pad(x, [2, 2, 2, 2]), w), f, down=2), (x, w))
    f8 = upfirdn2d.setup_filter(torch.hann_window(10)[1:-1], device=device)  # 8 taps: separable by default
    f8_2d = upfirdn2d.setup_filter(torch.hann_window(10)[1:-1], device=device, separable=False)
    yield ('upfirdn2d up=2, 8 taps', lambda x: upfirdn2d.upsample2d(x, f8), lambda x: upfirdn2d.upsample2d(x, f8_2d),
           (x,))
    b = torch.randn([channels], generator=gen).to(device).requires_grad_()
    yield ('bias_act lrelu+clamp', lambda x, b: bias_act.bias_act(x, b, act='lrelu', clamp=256),
           lambda x, b: (F.leaky_relu(x + b[None, :, None, None], 0.2) * 2 ** 0.5).clamp(-256, 256), (x, b))


@click.command()
@click.option('--batch', type=click.IntRange(min=1), default=8, show_default=True, help='Batch size')
@click.option('--channels', type=click.IntRange(min=1), default=64, show_default=True, help='Channels')
@click.option('--res', type=click.IntRange(min=4), default=32, show_default=True, help='Input resolution')
@click.option('--device', type=click.Choice(['cpu', 'cuda']), default='cpu', show_default=True, help='Device')
@click.option('--reps', type=click.IntRange(min=1), default=20, show_default=True, help='Timed repetitions')
def main(batch, channels, res, device, reps):
    if device == 'cuda' and not torch.cuda.is_available():
        raise click.ClickException('--device cuda: no CUDA device is available')
    device = torch.device(device)
    print(f'torch {torch.__version__}, {device}, threads {torch.get_num_threads()}, '
          f'x=[{batch}, {channels}, {res}, {res}], median of {reps} (forward + backward)')
    print(f"{'case':<26} {'op ms':>9} {'plain ms':>9} {'plain/op':>9} {'max |diff|':>11}")
    for name, fast, plain, inputs in _cases(batch, channels, res, device):
        diff = (fast(*inputs) - plain(*inputs)).abs().max().item()
        t_fast = _time_ms(fast, inputs, reps, device)
        t_plain = _time_ms(plain, inputs, reps, device)
        print(f'{name:<26} {t_fast:>9.2f} {t_plain:>9.2f} {t_plain / t_fast:>9.2f} {diff:>11.2e}')


if __name__ == '__main__':
    main()
