"""Fréchet Inception Distance (Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
Equilibrium", NeurIPS 2017), as computed by StyleGAN2-ADA: Inception-v3 pool features, moments in float64.

FID = ||mu_r - mu_g||^2 + Tr(Sigma_r + Sigma_g - 2 (Sigma_g Sigma_r)^(1/2))   (Heusel et al., eq. 6)

The reference moments come from the dataset (cached) or from an EDM-style fid-refs .npz with `mu` and `sigma`.
"""

import io
import os

import numpy as np
import scipy
import scipy.linalg

import dnnlib
from metrics import metric_utils
from torch_utils import dataset_classes

_SCIPY_VERSION = tuple(int(part) for part in scipy.__version__.split('.')[:2])


class RefStatsError(ValueError):
    """Reference statistics (fid_ref, CLI --ref) that cannot be read or do not fit the detector's features."""


def sqrtm_real(matrix: np.ndarray) -> np.ndarray:
    """Real part of the principal square root of `matrix`, like scipy.linalg.sqrtm(..., disp=False) officially.

    `disp` is deprecated from SciPy 1.17 (removal in 1.18, docs/spec/stylegan2-ada.md section 8); without
    it the same root is returned.
    """
    if _SCIPY_VERSION >= (1, 17):
        root = scipy.linalg.sqrtm(matrix)
    else:
        root, _error_estimate = scipy.linalg.sqrtm(matrix, disp=False)
    return np.real(root)


def fid_from_stats(mu_real: np.ndarray, sigma_real: np.ndarray, mu_gen: np.ndarray, sigma_gen: np.ndarray) -> float:
    """FID between two Gaussians (mu [F], Sigma [F, F]), in float64."""
    mu_real, mu_gen = np.asarray(mu_real, np.float64), np.asarray(mu_gen, np.float64)
    sigma_real, sigma_gen = np.asarray(sigma_real, np.float64), np.asarray(sigma_gen, np.float64)
    if mu_real.shape != mu_gen.shape or sigma_real.shape != sigma_gen.shape or sigma_real.shape != mu_real.shape * 2:
        raise ValueError(f'FID statistics do not match: mu {mu_real.shape} vs {mu_gen.shape}, sigma {sigma_real.shape} '
                         f'vs {sigma_gen.shape}; were they computed with the same detector?')
    for name, array in (('reference mu', mu_real), ('reference sigma', sigma_real), ('generated mu', mu_gen),
                        ('generated sigma', sigma_gen)):
        if not np.isfinite(array).all():
            raise ValueError(f'FID statistics: {name} holds NaN/Inf values; the FID would be meaningless')
    m = np.square(mu_gen - mu_real).sum()
    s = sqrtm_real(np.dot(sigma_gen, sigma_real))
    return float(np.real(m + np.trace(sigma_gen + sigma_real - s * 2)))


def save_ref_stats(path: str | os.PathLike, mu: np.ndarray, sigma: np.ndarray) -> None:
    """Write reference moments as an .npz with `mu` and `sigma` (EDM's fid-refs format), atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, mu=np.asarray(mu, np.float64), sigma=np.asarray(sigma, np.float64))
    dnnlib.util.write_atomically(path, buffer.getvalue())


def load_ref_stats(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) from a fid-refs .npz (local path or URL); plain arrays only, nothing runs on load."""
    with dnnlib.util.open_url(path) as f:
        try:
            head = f.read(4)
            f.seek(0)
            if head != b'PK\x03\x04':  # np.load would try to unpickle it (and advise allow_pickle).
                raise ValueError(f'not an .npz archive (starts with {head!r}); expected an .npz with mu and sigma, '
                                 'as python fid.py ref writes')
            with np.load(f, allow_pickle=False) as data:
                if 'mu' not in data or 'sigma' not in data:
                    raise ValueError(f'reference statistics {path!r} hold {sorted(data.keys())}; expected mu and sigma')
                mu, sigma = data['mu'].astype(np.float64), data['sigma'].astype(np.float64)
            for name, array in (('mu', mu), ('sigma', sigma)):
                if not np.isfinite(array).all():  # NaN/Inf policy: a NaN reference would print FID nan, rc 0.
                    raise ValueError(f'{name} holds {int((~np.isfinite(array)).sum())} NaN/Inf value(s); recompute '
                                     f'the reference with python fid.py ref')
            return mu, sigma
        except (OSError, ValueError) as err:
            raise RefStatsError(f'reference statistics {path!r}: {err}') from None


def compute_fid(opts: metric_utils.MetricOptions, max_real: int | None, num_gen: int) -> float:
    """FID of opts.G against the dataset (or opts.fid_ref); all ranks call it, rank 0 gets the value, others NaN."""
    detector_kwargs = dict(return_features=True)  # Inception pool features [N, 2048].
    if opts.fid_ref is not None:
        mu_real, sigma_real = load_ref_stats(opts.fid_ref)
    else:
        mu_real, sigma_real = metric_utils.compute_feature_stats_for_dataset(
            opts, 'inception', detector_kwargs, capture_mean_cov=True, max_items=max_real).get_mean_cov()
    mu_gen, sigma_gen = metric_utils.compute_feature_stats_for_generator(
        opts, 'inception', detector_kwargs, capture_mean_cov=True, max_items=num_gen).get_mean_cov()
    if opts.rank != 0:
        return float('nan')
    try:
        return fid_from_stats(mu_real, sigma_real, mu_gen, sigma_gen)
    except ValueError as err:
        if opts.fid_ref is None:
            raise
        raise RefStatsError(f'reference statistics {opts.fid_ref!r}: {err}') from None


def dataset_moments(path: str, detector: str | None = None, max_items: int | None = None, device=None,
                    progress: bool = False, num_workers: int = 3,
                    trust_detector: bool = False) -> tuple[np.ndarray, np.ndarray, int]:
    """(mu, Sigma, number of images) of the Inception features of a folder or zip of images (all of them, or the
    first max_items in sorted order), not cached: for reference statistics and folders of generated images."""
    opts = metric_utils.MetricOptions(dataset_kwargs=dict(class_name=dataset_classes.IMAGE_FOLDER_DATASET, path=path),
                                      device=device, progress=progress, cache=False, detector=detector,
                                      num_workers=num_workers, trust_detector=trust_detector)
    stats = metric_utils.compute_feature_stats_for_dataset(opts, 'inception', dict(return_features=True),
                                                           capture_mean_cov=True, max_items=max_items)
    mu, sigma = stats.get_mean_cov()
    return mu, sigma, stats.num_items
