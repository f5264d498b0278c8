"""Speed of the metric formulas on random features of the official sizes (the detectors are not needed).

Prints the median milliseconds over `--reps` runs of:
  - FID from two 2048-d moment pairs (one scipy.linalg.sqrtm of a 2048 x 2048 product);
  - FeatureStats accumulating mean / covariance of `--num` 2048-d features in float64 (batches of 64);
  - KID with 100 subsets of 1000 on `--num` x 2048 features;
  - precision / recall with k=3 on `--num` x 4096 VGG16-sized features (one rank, row/col batches of 10000).
`--num` 50000 reproduces the *50k metrics; the default 5000 keeps a CPU run short.

    python benchmarks/metric_formulas.py [--device cpu|cuda] [--num 5000] [--reps 3] [--warmup 1] [--threads N]
"""

import click
import numpy as np
import torch

from metrics import frechet_inception_distance, kernel_inception_distance, precision_recall
from metrics.feature_stats import FeatureStats
from torch_utils import timing


def run_benchmark(device: torch.device, num: int, reps: int, warmup: int, seed: int = 0) -> dict:
    """Time each formula; return {case: median ms}."""
    rnd = np.random.RandomState(seed)
    inception = rnd.rand(num, 2048).astype(np.float32)  # pool features are non-negative, like these
    other = rnd.rand(num, 2048).astype(np.float32) + 0.01
    vgg = torch.from_numpy(rnd.rand(num, 4096).astype(np.float32)).to(device)
    vgg_other = vgg + 0.01
    if device.type == 'cuda':
        vgg, vgg_other = vgg.half(), vgg_other.half()

    def moments(features):
        stats = FeatureStats(capture_mean_cov=True)
        for batch in np.array_split(features, max(1, len(features) // 64)):
            stats.append(batch)
        return stats.get_mean_cov()

    mu_a, sigma_a = moments(inception)
    mu_b, sigma_b = moments(other)
    cases = {
        'FID from moments (2048-d)': lambda: frechet_inception_distance.fid_from_stats(mu_a, sigma_a, mu_b, sigma_b),
        f'mean/cov of {num} features': lambda: moments(inception),
        f'KID 100 x 1000 of {num}': lambda: kernel_inception_distance.kid_from_features(inception, other, 100, 1000),
        f'PR k=3, {num} vs {num}': lambda: precision_recall.pr_from_features(vgg, vgg_other, 3, 10000, 10000),
    }
    return {name: timing.median_ms(fn, reps, warmup, device) for name, fn in cases.items()}


@click.command()
@click.option('--device', type=click.Choice(['cpu', 'cuda']), default='cpu', show_default=True, help='Device (PR)')
@click.option('--num', type=click.IntRange(min=1000), default=5000, show_default=True, help='Items per set')
@click.option('--reps', type=click.IntRange(min=1), default=3, show_default=True, help='Timed repetitions')
@click.option('--warmup', type=click.IntRange(min=0), default=1, show_default=True, help='Untimed warm-up runs')
@click.option('--threads', type=click.IntRange(min=1), default=None, help='torch intra-op threads  [default: torch]')
def main(device: str, num: int, reps: int, warmup: int, threads: int | None) -> None:
    """Time the metric formulas and print a table."""
    if device == 'cuda' and not torch.cuda.is_available():
        raise click.ClickException('--device cuda: no CUDA device is available')
    if threads is not None:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    times = run_benchmark(dev, num, reps, warmup)
    print(f'torch {torch.__version__}, {dev}, {torch.get_num_threads()} threads, median of {reps} after {warmup} '
          'warm-up')
    print(f"{'case':<32} {'ms':>10}")
    for name, ms in times.items():
        print(f'{name:<32} {ms:>10.1f}')


if __name__ == '__main__':
    main()
