"""The one place where benchmarks/smart_study.py meets the metric commands: the detector command, the
compare command and its JSON, metrics of one snapshot, and metrics of a truncated generator (the frontier's
reference). Every name of those interfaces is spelled here once, so a rename is a one-line change."""

import json
import os

import numpy as np
import torch

from metrics import classifier_features, frechet_inception_distance, kernel_inception_distance, metric_utils
from metrics import precision_recall
from training import snapshot

DETECTOR_MODULE = 'metrics.train_classifier'    # python -m DETECTOR_MODULE --data=ZIP --out=PATH.pt
COMPARE_MODULE = 'metrics.compare'              # python -m COMPARE_MODULE RUN_DIR... --detector= --num-gen --json
METRICS = ('fd', 'kid', 'precision', 'recall', 'class_kl', 'recognisable')
RECOGNISABLE_P = 0.9                            # A generated image is recognisable when max class prob >= this.


def detector_args(data: str, out: str) -> list:
    """Arguments after `python` that train the digit detector on `data` and save it to `out`."""
    return ['-m', DETECTOR_MODULE, f'--data={data}', f'--out={out}']


def compare_args(run_dirs: list, detector: str, num_gen: int, json_out: str) -> list:
    """Arguments after `python` that write the compare command's JSON for `run_dirs` to `json_out`."""
    return ['-m', COMPARE_MODULE, *run_dirs, f'--detector={detector}', '--num-gen', str(num_gen), '--json', json_out]


def read_compare(json_path: str) -> dict:
    """{run_dir: {kimg, snapshot, and every name of METRICS}} from the compare command's JSON ('runs' entries)."""
    with open(json_path) as f:
        runs = json.load(f).get('runs')
    if not isinstance(runs, list) or not runs:
        raise ValueError(f'{json_path}: expected a "runs" list of {{run_dir, snapshot, kimg, metrics}}')
    result = {}
    for run in runs:
        missing = [name for name in METRICS if name not in run.get('metrics', {})]
        if missing:
            raise ValueError(f'{json_path}: run {run.get("run_dir")!r} lacks the metrics {missing}')
        key = os.path.normpath(os.path.abspath(run['run_dir']))
        result[key] = dict({name: float(run['metrics'][name]) for name in METRICS},
                           kimg=float(run['kimg']), snapshot=run['snapshot'])
    return result


def evaluate(snapshot_path: str, detector: str, num_gen: int, seed: int = 0) -> dict:
    """METRICS of one snapshot's G_ema, as the compare command computes them."""
    from metrics.compare import evaluate_snapshot   # The other issue's library call; imported when first needed.
    metrics = evaluate_snapshot(snapshot_path, detector, num_gen=num_gen, seed=seed, device='cpu')
    return {name: float(metrics[name]) for name in METRICS}


@torch.no_grad()
def evaluate_truncated(snapshot_path: str, detector: str, data: str, num_gen: int, psi: float,
                       seed: int = 0) -> dict:
    """METRICS of a snapshot's G_ema sampled with truncation psi (1 = none), all in the detector's feature space:
    FD, KID (100 subsets of <= 1000), precision / recall (k = 3), class-histogram KL, recognisable share."""
    if not 0 < psi <= 1:
        raise ValueError(f'psi={psi!r}: expected a truncation in (0, 1]')
    G = snapshot.load_network_pkl(snapshot_path)['G_ema'].eval().requires_grad_(False)
    opts = metric_utils.MetricOptions(G=G, G_kwargs=dict(truncation_psi=psi), device='cpu', cache=False,
                                      dataset_kwargs=dict(class_name='training.dataset.ImageFolderDataset',
                                                          path=data), detector=detector, detector_vgg16=detector,
                                      num_workers=0, random_seed=seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        result = dict(fd=frechet_inception_distance.compute_fid(opts, None, num_gen),
                      kid=kernel_inception_distance.compute_kid(opts, None, num_gen, 100, 1000))
        result['precision'], result['recall'] = precision_recall.compute_pr(opts, None, num_gen, 3, 10000, 10000)
        real = metric_utils.compute_feature_stats_for_dataset(opts, 'inception', {}, capture_all=True).get_all()
        gen = metric_utils.compute_feature_stats_for_generator(opts, 'inception', {}, capture_all=True,
                                                               max_items=num_gen).get_all()
    p_real = classifier_features.class_histogram(real)
    result['class_kl'] = classifier_features.histogram_kl(classifier_features.class_histogram(gen, real.shape[1]),
                                                          p_real)
    result['recognisable'] = recognisable_share(gen)
    return {name: float(result[name]) for name in METRICS}


def recognisable_share(probs: np.ndarray) -> float:
    """Share of rows of class probabilities [N, K] whose largest probability is >= RECOGNISABLE_P."""
    probs = np.asarray(probs)
    if probs.ndim != 2 or probs.shape[0] == 0:
        raise ValueError(f'class probabilities must be [N, K] with N > 0, got {list(probs.shape)}')
    return float(np.mean(probs.max(axis=1) >= RECOGNISABLE_P))
