"""Speed of the StyleGAN2 generator and discriminator (training/networks.py) at the cifar preset.

Builds G and D as `--cfg=cifar` does (32x32x3, z_dim = w_dim = 512, 2 mapping layers, channel_base 32768,
channel_max 512, D 'orig' with minibatch-std groups of 32), in fp32, and prints the median milliseconds over
`--reps` runs after `--warmup` runs of:
  - G forward in training mode (non-fused modulated convs, autograd recording as in training);
  - G forward + backward of img.sum();
  - D forward + backward of logits.sum() (w.r.t. D's parameters);
plus the parameter counts. For comparison, docs/spec/stylegan2-ada.md measured the official code on a 2-core CPU at
G fwd 660 ms, G fwd+bwd 2518 ms, D fwd+bwd 853 ms.

    python benchmarks/networks.py [--device cpu|cuda] [--batch 8] [--reps 7] [--warmup 2] [--threads N]
"""


import click
import torch

from torch_utils import timing
from training.networks import Discriminator, Generator

CIFAR = dict(
    G=dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=32, img_channels=3, mapping_kwargs=dict(num_layers=2),
           synthesis_kwargs=dict(channel_base=32768, channel_max=512, num_fp16_res=0, conv_clamp=None)),
    D=dict(c_dim=0, img_resolution=32, img_channels=3, architecture='orig', channel_base=32768, channel_max=512,
           num_fp16_res=0, conv_clamp=None, epilogue_kwargs=dict(mbstd_group_size=32)),
)


def _num_params(module):
    return sum(p.numel() for p in module.parameters())


def run_benchmark(device, batch, reps, warmup, seed=0):
    """Build the cifar-preset G and D on `device` and return {case: median ms} plus the parameter counts."""
    torch.manual_seed(seed)
    G = Generator(**CIFAR['G']).train().requires_grad_(True).to(device)
    D = Discriminator(**CIFAR['D']).train().requires_grad_(True).to(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    z = torch.randn([batch, G.z_dim], generator=gen, device=device)
    c = torch.zeros([batch, 0], device=device)
    img = torch.randn([batch, 3, 32, 32], generator=gen, device=device)

    def g_backward():
        G.zero_grad(set_to_none=True)
        G(z, c).sum().backward()

    def d_backward():
        D.zero_grad(set_to_none=True)
        D(img, c).sum().backward()

    return {
        'G forward (train mode)': timing.median_ms(lambda: G(z, c), reps, warmup, device),
        'G forward+backward': timing.median_ms(g_backward, reps, warmup, device),
        'D forward+backward': timing.median_ms(d_backward, reps, warmup, device),
    }, _num_params(G), _num_params(D)


@click.command()
@click.option('--device', type=click.Choice(['cpu', 'cuda']), default='cpu', show_default=True, help='Device')
@click.option('--batch', type=click.IntRange(min=1), default=8, show_default=True,
              help='Batch size (above 32: a multiple of 32, the minibatch-std group size)')
@click.option('--reps', type=click.IntRange(min=1), default=7, show_default=True, help='Timed repetitions')
@click.option('--warmup', type=click.IntRange(min=0), default=2, show_default=True, help='Untimed warm-up runs')
@click.option('--threads', type=click.IntRange(min=1), default=None, help='torch intra-op threads  [default: torch]')
def main(device, batch, reps, warmup, threads):
    """Time G and D of the cifar preset and print a table."""
    if device == 'cuda' and not torch.cuda.is_available():
        raise click.ClickException('--device cuda: no CUDA device is available')
    if batch > 32 and batch % 32 != 0:
        raise click.ClickException(f'--batch {batch}: D takes minibatch std over groups of min(32, batch) samples, '
                                   'so a batch above 32 must be a multiple of 32')
    if threads is not None:
        torch.set_num_threads(threads)
    device = torch.device(device)
    times, g_params, d_params = run_benchmark(device, batch, reps, warmup)
    print(f'torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, cifar preset 32x32 fp32, '
          f'batch {batch}, median of {reps} after {warmup} warm-up')
    print(f"{'case':<26} {'ms':>10}")
    for name, ms in times.items():
        print(f'{name:<26} {ms:>10.1f}')
    print(f"{'G parameters':<26} {g_params:>10,}")
    print(f"{'D parameters':<26} {d_params:>10,}")


if __name__ == '__main__':
    main()
