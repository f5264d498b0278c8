"""Speed of a frozen EDM denoiser as SMaRt uses it: CIFAR-10-sized DDPM++ (SongUNet) behind EDMPrecond.

Builds the configuration of EDM's CIFAR-10 DDPM++ networks (edm-cifar10-32x32-cond-vp: 32x32x3, 10 classes,
128 channels, mult [2, 2, 2], positional noise embedding, augment_dim 9) with random weights, wraps it in
FrozenDenoiser, and prints the median milliseconds over `--reps` runs after `--warmup` runs of:
  - forward under torch.no_grad();
  - forward + gradient w.r.t. the input (x.requires_grad, backward of D.sum()), SMaRt's generator-side cost;
plus the parameter count.

    python benchmarks/denoiser.py [--device cpu|cuda] [--batch 8] [--reps 5] [--warmup 1] [--threads N]
"""


import click
import torch

from edm_bridge.denoiser import FrozenDenoiser
from edm_bridge.edm_networks import EDMPrecond
from torch_utils import timing

CIFAR_DDPMPP = dict(img_resolution=32, img_channels=3, label_dim=10, model_type='SongUNet',
                    embedding_type='positional', encoder_type='standard', decoder_type='standard',
                    channel_mult_noise=1, resample_filter=[1, 1], model_channels=128, channel_mult=[2, 2, 2],
                    augment_dim=9)


def run_benchmark(device: torch.device, batch: int, reps: int, warmup: int, seed: int = 0) -> tuple[dict, int]:
    """Time the CIFAR-10 DDPM++ denoiser on `device`; return ({case: median ms}, parameter count)."""
    torch.manual_seed(seed)
    D = FrozenDenoiser(EDMPrecond(**CIFAR_DDPMPP)).to(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn([batch, 3, 32, 32], generator=gen, device=device)
    sigma = torch.full([batch], 0.1, device=device)
    labels = torch.eye(10, device=device)[torch.arange(batch, device=device) % 10]  # [N, 10] one-hot

    def forward():
        with torch.no_grad():
            D(x, sigma, labels)

    def input_gradient():
        x_in = x.detach().requires_grad_(True)
        D(x_in, sigma, labels).sum().backward()
        assert x_in.grad is not None

    times = {'forward (no_grad)': timing.median_ms(forward, reps, warmup, device),
             'forward + input gradient': timing.median_ms(input_gradient, reps, warmup, device)}
    return times, sum(p.numel() for p in D.parameters())


@click.command()
@click.option('--device', type=click.Choice(['cpu', 'cuda']), default='cpu', show_default=True, help='Device')
@click.option('--batch', type=click.IntRange(min=1), default=8, show_default=True, help='Batch size')
@click.option('--reps', type=click.IntRange(min=1), default=5, show_default=True, help='Timed repetitions')
@click.option('--warmup', type=click.IntRange(min=0), default=1, show_default=True, help='Untimed warm-up runs')
@click.option('--threads', type=click.IntRange(min=1), default=None, help='torch intra-op threads  [default: torch]')
def main(device: str, batch: int, reps: int, warmup: int, threads: int | None) -> None:
    """Time the CIFAR-10 DDPM++ EDM denoiser and print a table."""
    if device == 'cuda' and not torch.cuda.is_available():
        raise click.ClickException('--device cuda: no CUDA device is available')
    if threads is not None:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    times, num_params = run_benchmark(dev, batch, reps, warmup)
    print(f'torch {torch.__version__}, {dev}, {torch.get_num_threads()} threads, EDMPrecond + SongUNet (DDPM++) '
          f'32x32 fp32, batch {batch}, median of {reps} after {warmup} warm-up')
    print(f"{'case':<26} {'ms':>10}")
    for name, ms in times.items():
        print(f'{name:<26} {ms:>10.1f}')
    print(f"{'parameters':<26} {num_params:>10,}")


if __name__ == '__main__':
    main()
