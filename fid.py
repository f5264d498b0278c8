"""FID against reference statistics, in the shape of EDM's fid.py: compute the reference once, reuse it.

Reference files are .npz archives with `mu` [2048] and `sigma` [2048, 2048] (float64), the format of EDM's
fid-refs (e.g. cifar10-32x32.npz), so published reference files work too. Detectors: see metrics/detectors.py
(--detector, $SMART_DETECTOR_DIR or the download cache). Examples:

\b
  # Reference statistics of a dataset (a folder or zip of images), once.
  python fid.py ref --data=datasets/cifar10-32x32.zip --dest=fid-refs/cifar10-32x32.npz
  # FID of a folder of generated images (e.g. from generate.py) against it.
  python fid.py calc --images=out --ref=fid-refs/cifar10-32x32.npz
"""

from torch_utils import cpu_threads  # noqa: F401  First: OpenMP's wait policy must be set before torch loads (see there).

import os

import click
import torch

from metrics import detectors, frechet_inception_distance as fid_lib


def _check_images(flag: str, path: str) -> None:
    if not os.path.exists(path):
        raise click.ClickException(f'{flag}: {path!r} does not exist; expected a folder or zip of images')


def _moments(flag: str, path: str, detector: str | None, num: int | None, workers: int, trust_detector: bool):
    _check_images(flag, path)
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        return fid_lib.dataset_moments(path, detector=detector, max_items=num, device=device, progress=True,
                                       num_workers=workers, trust_detector=trust_detector)
    except detectors.DetectorUnavailableError as err:
        raise click.ClickException(f'{err.flag}: {err}') from None
    except (OSError, ValueError) as err:
        raise click.ClickException(f'{flag}: {err}' if path in str(err) else f'{flag}: {path}: {err}') from None


def _check_detector(detector: str | None) -> None:
    if detector is not None and '://' not in detector and not os.path.isfile(detector):
        raise click.ClickException(f'--detector: {detector!r} is neither an existing file nor a URL')


@click.group(help=__doc__)
def main():
    pass


_detector_option = click.option('--detector', metavar='PATH|URL', default=None, show_default='official Inception-v3',
                                help='Inception detector (.pt TorchScript, or a .pkl with --trust-detector)')
_trust_option = click.option('--trust-detector', is_flag=True,
                             help='Load a detector that is not TorchScript by unpickling it, RUNNING code stored in it')
_num_option = click.option('--num', type=click.IntRange(min=2), default=None, show_default='all',
                           help='Use at most this many images (first in sorted order)')
_workers_option = click.option('--workers', type=click.IntRange(min=0), default=3, show_default=True,
                               help='DataLoader workers')


@main.command(help='Compute reference statistics (mu, sigma) of a dataset and save them as an .npz.')
@click.option('--data', metavar='PATH', required=True, help='Folder or zip of images')
@click.option('--dest', metavar='NPZ', required=True, help='Output .npz')
@_detector_option
@_num_option
@_workers_option
@_trust_option
def ref(data, dest, detector, num, workers, trust_detector):
    _check_detector(detector)
    mu, sigma, count = _moments('--data', data, detector, num, workers, trust_detector)
    fid_lib.save_ref_stats(dest, mu, sigma)
    print(f'Saved reference statistics of {count} images to {dest}')


@main.command(help='FID between a folder (or zip) of images and reference statistics.')
@click.option('--images', metavar='PATH', required=True, help='Folder or zip of images')
@click.option('--ref', 'ref_path', metavar='NPZ|URL', required=True, help='Reference statistics (.npz, mu and sigma)')
@_detector_option
@_num_option
@_workers_option
@_trust_option
def calc(images, ref_path, detector, num, workers, trust_detector):
    _check_images('--images', images)  # Before --ref: the flags' order.
    _check_detector(detector)
    try:
        mu_ref, sigma_ref = fid_lib.load_ref_stats(ref_path)
    except (OSError, ValueError) as err:
        raise click.ClickException(f'--ref: {err}') from None
    mu, sigma, count = _moments('--images', images, detector, num, workers, trust_detector)
    try:
        fid = fid_lib.fid_from_stats(mu_ref, sigma_ref, mu, sigma)
    except ValueError as err:
        raise click.ClickException(f'--ref: {err}') from None
    print(f'FID of {count} images: {fid:g}')


if __name__ == '__main__':
    main()
