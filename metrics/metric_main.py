"""Metric registry and reporting, with StyleGAN2-ADA's names and output format (docs/spec/stylegan2-ada.md section 7).

Primary metrics: fid50k_full, kid50k_full, pr50k3_full, is50k, ppl2_wend. Legacy ones (fid50k, kid50k, pr50k3) use
50k reals and keep the dataset's x-flips; legacy ppl_zfull, ppl_wfull, ppl_zend, ppl_wend crop to the face. Quick
variants with 2k generated images (fid2k_full, kid2k_full, pr2k3_full, is2k, ppl2_wend_2k)
are for smoke checks only: their values are biased (FID and IS depend on the sample size) and not comparable with
papers. `calc_metric(name, **MetricOptions kwargs)` returns EasyDict(results, metric, total_time, total_time_str,
num_gpus); `report_metric` prints it as one JSON line and appends it to <run_dir>/metric-<name>.jsonl.
"""

import json
import os
import time
from typing import Callable

import torch

import dnnlib
from metrics import frechet_inception_distance, inception_score, kernel_inception_distance, metric_utils
from metrics import perceptual_path_length, precision_recall
from torch_utils import distributed

_metric_dict: dict[str, Callable[[metric_utils.MetricOptions], dict]] = {}


_metric_detectors: dict[str, str] = {}  # Metric name -> the detector kind it needs (metrics.detectors.DETECTORS).


def register_metric(fn: Callable[[metric_utils.MetricOptions], dict] | None = None, *,
                    detector: str = 'inception') -> Callable:
    """Register `fn(opts) -> dict of results` under its function name, needing detector kind `detector`; usable
    bare (@register_metric: the Inception network) or as @register_metric(detector='vgg16')."""
    def register(fn):
        _metric_dict[fn.__name__] = fn
        _metric_detectors[fn.__name__] = detector
        return fn
    return register if fn is None else register(fn)


def detectors_for(metrics: list[str]) -> set[str]:
    """The detector kinds ('inception', 'vgg16') that the registered `metrics` need."""
    return {_metric_detectors[metric] for metric in metrics}


def is_valid_metric(metric: str) -> bool:
    """Whether `metric` is a registered metric name."""
    return metric in _metric_dict


def list_valid_metrics() -> list[str]:
    """All registered metric names."""
    return list(_metric_dict.keys())


def check_metric(metric: str) -> None:
    """Raise ValueError naming `metric` and listing the valid names if it is not registered."""
    if not is_valid_metric(metric):
        raise ValueError(f'unknown metric {metric!r}; valid metrics: {", ".join(list_valid_metrics())} (or none)')


def parse_metric_list(text: str) -> list[str]:
    """'fid50k_full,kid50k_full' -> names, each checked; 'none' or '' -> []."""
    names = [name.strip() for name in str(text).split(',') if name.strip()]
    if [name.lower() for name in names] in ([], ['none']):
        return []
    for name in names:
        check_metric(name)
    return list(dict.fromkeys(names))  # Drop repeats, keep the order.


def calc_metric(metric: str, **kwargs) -> dnnlib.EasyDict:
    """Evaluate `metric` (kwargs: MetricOptions fields); every rank must call it; results are rank 0's on all ranks.

    Runs under a forked RNG seeded from random_seed and the rank: the result is repeatable and training's RNG streams
    (hence an exact resume) are untouched.
    """
    check_metric(metric)
    opts = metric_utils.MetricOptions(**kwargs)
    start_time = time.time()
    devices = [opts.device] if opts.device.type == 'cuda' else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(opts.random_seed * opts.num_gpus + opts.rank)
        results = _metric_dict[metric](opts)
    results = distributed.broadcast_object(results)
    total_time = time.time() - start_time
    return dnnlib.EasyDict(results=dnnlib.EasyDict(results), metric=metric, total_time=total_time,
                           total_time_str=dnnlib.util.format_time(total_time), num_gpus=opts.num_gpus)


def report_metric(result_dict: dict, run_dir: str | None = None, snapshot_pkl: str | None = None,
                  print_fn: Callable[[str], None] = print) -> str:
    """Print the result as one JSON line (plus snapshot_pkl, timestamp) and append it to the run's jsonl; return it.

    snapshot_pkl is stored relative to run_dir when it is a file there. One short append per line: concurrent readers
    see whole lines.
    """
    metric = result_dict['metric']
    if run_dir is not None and snapshot_pkl is not None and os.path.isfile(snapshot_pkl):
        snapshot_pkl = os.path.relpath(snapshot_pkl, run_dir)
    line = json.dumps(dict(result_dict, snapshot_pkl=snapshot_pkl, timestamp=time.time()))
    print_fn(line)
    if run_dir is not None and os.path.isdir(run_dir):
        with open(os.path.join(run_dir, f'metric-{metric}.jsonl'), 'a', encoding='utf-8') as f:
            f.write(line + '\n')
    return line


def _no_xflip(opts: metric_utils.MetricOptions) -> None:
    """'_full' metrics use the dataset as stored: without x-flipped copies."""
    opts.dataset_kwargs.update(max_size=None, xflip=False)


# Primary metrics (docs/spec/stylegan2-ada.md section 7).

@register_metric
def fid50k_full(opts):
    _no_xflip(opts)
    return dict(fid50k_full=frechet_inception_distance.compute_fid(opts, max_real=None, num_gen=50000))


@register_metric
def kid50k_full(opts):
    _no_xflip(opts)
    kid = kernel_inception_distance.compute_kid(opts, max_real=1000000, num_gen=50000, num_subsets=100,
                                                max_subset_size=1000)
    return dict(kid50k_full=kid)


@register_metric(detector='vgg16')
def pr50k3_full(opts):
    _no_xflip(opts)
    precision, recall = precision_recall.compute_pr(opts, max_real=200000, num_gen=50000, nhood_size=3,
                                                    row_batch_size=10000, col_batch_size=10000)
    return dict(pr50k3_full_precision=precision, pr50k3_full_recall=recall)


@register_metric
def is50k(opts):
    _no_xflip(opts)
    mean, std = inception_score.compute_is(opts, num_gen=50000, num_splits=10)
    return dict(is50k_mean=mean, is50k_std=std)


@register_metric(detector='vgg16')
def ppl2_wend(opts):
    ppl = perceptual_path_length.compute_ppl(opts, num_samples=50000, epsilon=1e-4, space='w', sampling='end',
                                             crop=False, batch_size=2)
    return dict(ppl2_wend=ppl)


# Legacy metrics: 50k reals from the dataset as configured (x-flips kept).

@register_metric
def fid50k(opts):
    opts.dataset_kwargs.update(max_size=None)
    return dict(fid50k=frechet_inception_distance.compute_fid(opts, max_real=50000, num_gen=50000))


@register_metric
def kid50k(opts):
    opts.dataset_kwargs.update(max_size=None)
    kid = kernel_inception_distance.compute_kid(opts, max_real=50000, num_gen=50000, num_subsets=100,
                                                max_subset_size=1000)
    return dict(kid50k=kid)


@register_metric(detector='vgg16')
def pr50k3(opts):
    opts.dataset_kwargs.update(max_size=None)
    precision, recall = precision_recall.compute_pr(opts, max_real=50000, num_gen=50000, nhood_size=3,
                                                    row_batch_size=10000, col_batch_size=10000)
    return dict(pr50k3_precision=precision, pr50k3_recall=recall)


# Legacy PPL: face crop (docs/spec/stylegan2-ada.md section 7).

def _legacy_ppl(opts, space: str, sampling: str) -> float:
    return perceptual_path_length.compute_ppl(opts, num_samples=50000, epsilon=1e-4, space=space, sampling=sampling,
                                              crop=True, batch_size=2)


@register_metric(detector='vgg16')
def ppl_zfull(opts):
    return dict(ppl_zfull=_legacy_ppl(opts, 'z', 'full'))


@register_metric(detector='vgg16')
def ppl_wfull(opts):
    return dict(ppl_wfull=_legacy_ppl(opts, 'w', 'full'))


@register_metric(detector='vgg16')
def ppl_zend(opts):
    return dict(ppl_zend=_legacy_ppl(opts, 'z', 'end'))


@register_metric(detector='vgg16')
def ppl_wend(opts):
    return dict(ppl_wend=_legacy_ppl(opts, 'w', 'end'))


# Quick variants for smoke checks (2k generated images; not comparable with published numbers).

@register_metric
def fid2k_full(opts):
    _no_xflip(opts)
    return dict(fid2k_full=frechet_inception_distance.compute_fid(opts, max_real=None, num_gen=2000))


@register_metric
def kid2k_full(opts):
    _no_xflip(opts)
    kid = kernel_inception_distance.compute_kid(opts, max_real=1000000, num_gen=2000, num_subsets=100,
                                                max_subset_size=1000)
    return dict(kid2k_full=kid)


@register_metric(detector='vgg16')
def pr2k3_full(opts):
    _no_xflip(opts)
    precision, recall = precision_recall.compute_pr(opts, max_real=2000, num_gen=2000, nhood_size=3,
                                                    row_batch_size=2000, col_batch_size=2000)
    return dict(pr2k3_full_precision=precision, pr2k3_full_recall=recall)


@register_metric
def is2k(opts):
    _no_xflip(opts)
    mean, std = inception_score.compute_is(opts, num_gen=2000, num_splits=10)
    return dict(is2k_mean=mean, is2k_std=std)


@register_metric(detector='vgg16')
def ppl2_wend_2k(opts):
    ppl = perceptual_path_length.compute_ppl(opts, num_samples=2000, epsilon=1e-4, space='w', sampling='end',
                                             crop=False, batch_size=2)
    return dict(ppl2_wend_2k=ppl)
