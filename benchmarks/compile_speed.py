"""torch.compile of the forward passes on CPU: does it pay at --cfg=cpu? G.mapping, G.synthesis and D compiled with
inductor (static shapes) against eager, for one Gmain-like step (G forward, D forward, backward to every parameter),
timed by the process's CPU clock, alternating eager / compiled, rep by rep; prints the compile time and the ratio
of each pair.

    python benchmarks/compile_speed.py [--res 16] [--batch 32] [--pairs 3] [--reps 10]

Under Dynamo the gains `np.sqrt(0.5)` in training/networks.py reach bias_act as 0-d arrays, which bias_act's
argument check rejects; the benchmark lifts that check (only here) so that the graphs compile. The R1 phase cannot
be compiled at all (its double backward is not supported by AOTAutograd), so only Gmain / Dmain could use this.
"""

import os
import sys
import time

import click
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch_utils.ops.bias_act as bias_act_module  # noqa: E402
from training.networks import Discriminator, Generator  # noqa: E402


def _step(mapping, synthesis, D, z):
    D(synthesis(mapping(z, None)), None).sum().backward()


def _cpu_ms(fn, reps: int) -> float:
    fn()
    start = time.process_time()
    for _ in range(reps):
        fn()
    return (time.process_time() - start) / reps * 1000


@click.command()
@click.option('--res', type=click.Choice(['16', '32']), default='16', show_default=True, help='Resolution')
@click.option('--batch', type=click.IntRange(min=4), default=32, show_default=True)
@click.option('--pairs', type=click.IntRange(min=1), default=3, show_default=True)
@click.option('--reps', type=click.IntRange(min=1), default=10, show_default=True, help='Steps per timing')
@click.option('--threads', type=click.IntRange(min=1), default=1, show_default=True)
def main(res, batch, pairs, reps, threads):
    import torch._dynamo
    torch.set_num_threads(threads)
    torch._dynamo.config.cache_size_limit = 64       # One graph per block size.
    bias_act_module._check_real = lambda *args, **kwargs: None   # See the docstring.
    torch.manual_seed(0)
    res = int(res)
    G = Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=res, img_channels=1,
                  mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=1024, channel_max=64))
    D = Discriminator(c_dim=0, img_resolution=res, img_channels=1, channel_base=1024, channel_max=64,
                      epilogue_kwargs=dict(mbstd_group_size=4))
    z = torch.randn(batch, 512)
    compiled = [torch.compile(m, dynamic=False) for m in (G.mapping, G.synthesis, D)]
    start = time.process_time()
    _step(*compiled, z)
    print(f'--cfg=cpu networks at {res}x{res}, batch {batch}, {threads} thread(s); compile + first step: '
          f'{time.process_time() - start:.1f} s CPU')
    for i in range(pairs):
        eager = _cpu_ms(lambda: _step(G.mapping, G.synthesis, D, z), reps)
        fast = _cpu_ms(lambda: _step(*compiled, z), reps)
        print(f'pair {i}: eager {eager:.1f} ms/step, compiled {fast:.1f} ms/step, ratio {fast / eager:.3f}')


if __name__ == '__main__':
    main()
