"""D forward+backward and D with the R1 double backward at the cifar preset: CPU fast paths on vs off, side by side.

Builds the `--cfg=cifar` discriminator (benchmarks/networks.py's CIFAR D, fp32) and times, by the process's CPU clock,
(a) D(x).sum() backward to D's parameters and (b) the R1 step of training/loss.py: the image gradient with
create_graph under no_weight_gradients, then the penalty's backward. The switches of train_profile.py --ab
(SWITCH = gradfix, upfirdn2d, channels_last or all) alternate on / off, rep by rep; the medians of the per-pair
ratios are printed.

    python benchmarks/d_speed.py [--switch all] [--batch 8] [--pairs 3]
"""

import os
import statistics
import sys
import time

import click
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.networks import CIFAR  # noqa: E402
from benchmarks.train_profile import SWITCHES, _set_switch  # noqa: E402
from torch_utils.ops import conv2d_gradfix  # noqa: E402
from training.networks import Discriminator  # noqa: E402


def _d_fwd_bwd(D, x):
    D(x, None).sum().backward()


def _d_r1(D, x):
    x = x.detach().requires_grad_(True)
    logits = D(x, None)
    with conv2d_gradfix.no_weight_gradients():
        (grad,) = torch.autograd.grad(logits.sum(), [x], create_graph=True)
    (grad.square().sum([1, 2, 3]).mean() + logits.mean() * 0).backward()


@click.command()
@click.option('--switch', type=click.Choice(SWITCHES), default='all', show_default=True, help='Fast path to toggle')
@click.option('--batch', type=click.IntRange(min=1), default=8, show_default=True, help='Batch size')
@click.option('--pairs', type=click.IntRange(min=1), default=3, show_default=True, help='On / off pairs')
def main(switch, batch, pairs):
    """Print the on/off CPU-time ratios of D fwd+bwd and D with R1."""
    torch.manual_seed(0)
    D = Discriminator(**CIFAR['D'])
    x = torch.randn([batch, 3, 32, 32])
    conv2d_gradfix.enabled = True  # As during training (training_loop._speed_flags).
    for name, fn in (('D fwd+bwd', _d_fwd_bwd), ('D with R1', _d_r1)):
        fn(D, x)  # Warm-up.
        times = {True: [], False: []}
        for _ in range(pairs):
            for on in (True, False):
                _set_switch(switch, on)
                start = time.process_time()
                fn(D, x)
                times[on].append(time.process_time() - start)
        _set_switch(switch, True)
        ratios = [a / b for a, b in zip(times[True], times[False])]
        on_ms, off_ms = statistics.median(times[True]) * 1e3, statistics.median(times[False]) * 1e3
        print(f'{name}: on {on_ms:.0f} ms, off {off_ms:.0f} ms (CPU, batch {batch}); on/off '
              f'{statistics.median(ratios):.3f} ({min(ratios):.3f}..{max(ratios):.3f})')


if __name__ == '__main__':
    main()
