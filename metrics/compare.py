"""Compare train.py runs in the digit metrics (metrics/digit_metrics.py): per run the metrics of its last snapshot,
mean +- std over runs that differ only in --seed, and paired differences between runs resumed from one snapshot
(e.g. with and without SMaRt). Each snapshot's metrics are computed once and cached in its run dir
(compare-metrics.json, keyed by snapshot, detector file, number of images, seed and dataset).

    python -m metrics.compare runs/00000-* runs/00001-* --detector=detectors/mnist5k-16.pt --num-gen=2000 \\
        --json=compare.json --curves=curves.png
"""

import json
import os
import re
import statistics
import sys

import click
import torch

import dnnlib
from metrics import detectors, digit_metrics, metric_utils

CACHE_NAME = 'compare-metrics.json'
# Called by name, as metric_utils builds the dataset: metrics/ sits below training/ (tests/test_layout.py).
LOAD_SNAPSHOT, RESUME_SUMMARY = 'training.snapshot.load_network_pkl', 'training.resume.resume_summary'
SNAPSHOT_RE = re.compile(r'network-snapshot-(\d+(?:\.\d+)?)\.pkl')
RUN_SPECIFIC = ('run_dir', 'random_seed', 'metrics', 'metric_kwargs', 'data_loader_kwargs')  # Not in a seed group.


def snapshot_kimg(path: str) -> float:
    """kimg of a snapshot from its name (network-snapshot-000012.pkl -> 12, ...-000012.500.pkl -> 12.5)."""
    match = SNAPSHOT_RE.fullmatch(os.path.basename(path))
    if match is None:
        raise ValueError(f'{path}: not a network-snapshot-<kimg>.pkl written by train.py')
    return float(match.group(1))


def exact_kimg(path: str) -> float:
    """kimg of a snapshot from its training state (train.py names sub-kimg snapshots by their whole kimg first), else
    from its name."""
    summary = dnnlib.util.call_func_by_name(path, func_name=RESUME_SUMMARY)
    return snapshot_kimg(path) if summary.cur_nimg is None else summary.cur_nimg / 1000


def list_snapshots(run_dir: str) -> list[tuple[float, str]]:
    """[(kimg, path)] of the run dir's network-snapshot-*.pkl, ascending; FileNotFoundError naming it if none."""
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f'{run_dir}: not a directory; expected a train.py run directory')
    found = sorted((exact_kimg(os.path.join(run_dir, name)), os.path.join(run_dir, name))
                   for name in os.listdir(run_dir) if SNAPSHOT_RE.fullmatch(name))
    if not found:
        raise FileNotFoundError(f'{run_dir}: holds no network-snapshot-*.pkl; expected a train.py run directory '
                                f'with at least one snapshot')
    return found


def run_options(run_dir: str) -> dict:
    """The run's training_options.json ({} when absent)."""
    path = os.path.join(run_dir, 'training_options.json')
    if not os.path.isfile(path):
        return {}
    with open(path, encoding='utf-8') as f:
        return json.load(f)


def _read_cache(path: str) -> dict:
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except (OSError, ValueError):  # Absent or damaged: recompute.
        return {}


def evaluate_snapshot(snapshot_path: str, detector_path: str, num_gen: int = 2000, seed: int = 0, device='cpu',
                      data: str | None = None) -> dict:
    """The digit metrics (digit_metrics.METRIC_KEYS, floats) of a snapshot's G_ema against `data` (default: the
    dataset recorded in the snapshot), cached in <run dir>/compare-metrics.json."""
    data_pkl = dnnlib.util.call_func_by_name(snapshot_path, func_name=LOAD_SNAPSHOT)  # The safe loader.
    G = data_pkl['G_ema']
    if data is None:
        data = (data_pkl.get('training_set_kwargs') or {}).get('path')
        if data is None:
            raise ValueError(f'{snapshot_path}: records no training dataset; pass --data')
    if not os.path.exists(data):
        raise FileNotFoundError(f'{data}: the dataset of {snapshot_path} is not there; pass --data')
    key = '|'.join([os.path.basename(snapshot_path), detectors.file_identity(detector_path), str(num_gen), str(seed),
                    metric_utils.dataset_identity(data)])
    cache_path = os.path.join(os.path.dirname(os.path.abspath(snapshot_path)), CACHE_NAME)
    cache = _read_cache(cache_path)
    if key not in cache:
        result = digit_metrics.evaluate_generator(G, data, detector_path, num_gen=num_gen, seed=seed,
                                                  device=torch.device(device))
        cache = _read_cache(cache_path)  # Re-read: another process may have added entries meanwhile.
        cache[key] = {name: float(result[name]) for name in digit_metrics.METRIC_KEYS}
        dnnlib.util.write_atomically(cache_path, json.dumps(cache, indent=2).encode('utf-8'))
    return dict(cache[key])


def _seed_key(options: dict) -> str:
    """The training options with what differs between seeds of one configuration left out."""
    kept = {k: v for k, v in options.items() if k not in RUN_SPECIFIC}
    if isinstance(kept.get('training_set_kwargs'), dict):
        kept['training_set_kwargs'] = {k: v for k, v in kept['training_set_kwargs'].items() if k != 'random_seed'}
    return json.dumps(kept, sort_keys=True, default=str)


def _mean_std(rows: list[dict]) -> tuple[dict, dict]:
    keys = digit_metrics.METRIC_KEYS
    mean = {k: statistics.mean(row[k] for row in rows) for k in keys}
    std = {k: statistics.stdev(row[k] for row in rows) if len(rows) > 1 else 0.0 for k in keys}
    return mean, std


def _groups(runs: list[dict], options: list[dict]) -> list[dict]:
    """Runs with equal options but for --seed: their names, seeds, and mean / std of each metric."""
    by_key: dict = {}
    for run, opts in zip(runs, options):
        by_key.setdefault(_seed_key(opts), []).append((run, opts.get('random_seed')))
    groups = []
    for members in by_key.values():
        mean, std = _mean_std([run['metrics'] for run, _ in members])
        groups.append(dict(runs=[run['run_dir'] for run, _ in members], seeds=[seed for _, seed in members],
                           n=len(members), mean=mean, std=std))
    return groups


def _pairs(runs: list[dict], options: list[dict]) -> list[dict]:
    """Paired differences run - reference for runs resumed from the same snapshot; the reference is the first of
    them without loss plugins (else the first given)."""
    by_resume: dict = {}
    for run, opts in zip(runs, options):
        if opts.get('resume_pkl'):
            by_resume.setdefault(os.path.abspath(opts['resume_pkl']), []).append((run, opts))
    pairs = []
    for resume_pkl, members in by_resume.items():
        plain = [run for run, opts in members if not opts.get('plugins')]
        reference = (plain or [members[0][0]])[0]
        for run, _opts in members:
            if run is not reference:
                diff = {k: run['metrics'][k] - reference['metrics'][k] for k in digit_metrics.METRIC_KEYS}
                pairs.append(dict(resumed_from=resume_pkl, reference=reference['run_dir'], run=run['run_dir'],
                                  diff=diff))
    return pairs


def compare_runs(run_dirs: list[str], detector_path: str, num_gen: int = 2000, seed: int = 0, device='cpu',
                 data: str | None = None, curves: bool = False) -> dict:
    """{'runs': [{run_dir, snapshot, kimg, metrics}], 'groups': [{runs, seeds, n, mean, std}] over runs differing
    only in --seed, 'pairs': [{resumed_from, reference, run, diff}]}; with `curves`, also 'curves': {run_dir:
    [{kimg, metrics}]} over every snapshot."""
    found = [list_snapshots(run_dir) for run_dir in run_dirs]  # Fail on a folder without snapshots before any work.
    runs, options = [], []
    for run_dir, snapshots in zip(run_dirs, found):
        kimg, path = snapshots[-1]
        metrics = evaluate_snapshot(path, detector_path, num_gen, seed, device, data)
        runs.append(dict(run_dir=run_dir, snapshot=path, kimg=kimg, metrics=metrics))
        options.append(run_options(run_dir))
    result = dict(runs=runs, groups=_groups(runs, options), pairs=_pairs(runs, options))
    if curves:
        result['curves'] = {run_dir: [dict(kimg=kimg, metrics=evaluate_snapshot(path, detector_path, num_gen, seed,
                                                                               device, data))
                                      for kimg, path in snapshots] for run_dir, snapshots in zip(run_dirs, found)}
    return result


COLUMNS = (('fd', 'FD', 2), ('kid', 'KID', 4), ('precision', 'precision', 3), ('recall', 'recall', 3),
           ('class_kl', 'class KL', 4), ('recognisable', 'recognisable', 3))


def format_table(result: dict) -> str:
    """The comparison as three markdown tables: runs, seed groups (mean +- std), paired differences."""
    head = '| ' + ' | '.join(title for _, title, _ in COLUMNS) + ' |'
    rule = '|---' * (len(COLUMNS) + 2) + '|'
    lines = ['| run | kimg ' + head, rule]
    for run in result['runs']:
        cells = [f'{run["metrics"][k]:.{d}f}' for k, _, d in COLUMNS]
        name = os.path.basename(run['run_dir'].rstrip('/'))
        lines.append(f'| {name} | {run["kimg"]:g} | ' + ' | '.join(cells) + ' |')
    lines += ['', '| runs (seeds) | n ' + head, rule]
    for group in result['groups']:
        names = ', '.join(os.path.basename(r.rstrip('/')) for r in group['runs'])
        cells = [f'{group["mean"][k]:.{d}f} +- {group["std"][k]:.{d}f}' for k, _, d in COLUMNS]
        lines.append(f'| {names} ({group["seeds"]}) | {group["n"]} | ' + ' | '.join(cells) + ' |')
    if result['pairs']:
        lines += ['', '| run - reference (same resume snapshot) | ' + head[2:], '|---' * (len(COLUMNS) + 1) + '|']
        for pair in result['pairs']:
            cells = [f'{pair["diff"][k]:+.{d}f}' for k, _, d in COLUMNS]
            name = f'{os.path.basename(pair["run"].rstrip("/"))} - {os.path.basename(pair["reference"].rstrip("/"))}'
            lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def write_curves(curves: dict, path: str, title: str = '') -> None:
    """FD (log scale) and recall over kimg, one line per run, as a PNG (atomically)."""
    import io
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, (ax_fd, ax_recall) = plt.subplots(1, 2, figsize=(10, 4))
    for run_dir, points in curves.items():
        kimg = [p['kimg'] for p in points]
        label = os.path.basename(run_dir.rstrip('/'))
        ax_fd.plot(kimg, [p['metrics']['fd'] for p in points], marker='.', label=label)
        ax_recall.plot(kimg, [p['metrics']['recall'] for p in points], marker='.', label=label)
    ax_fd.set(xlabel='kimg', ylabel='FD (digit-classifier features)', yscale='log', title=title)
    ax_recall.set(xlabel='kimg', ylabel='recall (k=3)', ylim=(0, 1))
    ax_fd.legend(fontsize=6)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png', dpi=100)
    plt.close(fig)
    dnnlib.util.write_atomically(path, buffer.getvalue())


@click.command(help=__doc__)
@click.argument('run_dirs', nargs=-1, required=True, metavar='RUN_DIR...')
@click.option('--detector', required=True, metavar='PATH', help='Digit-classifier detector (metrics.train_classifier)')
@click.option('--num-gen', type=click.IntRange(min=10), default=2000, show_default=True, help='Generated images')
@click.option('--seed', type=click.IntRange(min=0), default=0, show_default=True, help='Seed of the generated set')
@click.option('--data', metavar='ZIP', default=None, show_default='the dataset recorded in each snapshot',
              help='Dataset to compare against')
@click.option('--device', type=click.Choice(['cpu', 'cuda']), default='cpu', show_default=True, help='Device')
@click.option('--json', 'json_path', metavar='PATH', default=None, help='Also write the result as JSON')
@click.option('--curves', metavar='PNG', default=None, help='Also plot FD and recall over every snapshot')
def main(run_dirs, detector, num_gen, seed, data, device, json_path, curves):
    if not os.path.isfile(detector):
        raise click.ClickException(f'--detector: {detector!r} is not a file; make one with python -m '
                                   f'metrics.train_classifier --data=ZIP --out=PATH.pt')
    try:
        result = compare_runs(list(run_dirs), detector, num_gen, seed, device, data, curves=curves is not None)
    except FileNotFoundError as err:
        flag = '--data' if data is not None and data in str(err) else 'RUN_DIR'
        raise click.ClickException(f'{flag}: {err}') from None
    except detectors.DetectorUnavailableError as err:
        raise click.ClickException(f'--detector: {err}') from None
    except (ValueError, TypeError, OSError) as err:
        flag = '--detector' if detector in str(err) else 'RUN_DIR'
        raise click.ClickException(f'{flag}: {err}') from None
    print(format_table(result))
    if json_path is not None:
        dnnlib.util.write_atomically(json_path, json.dumps(result, indent=2).encode('utf-8'))
    if curves is not None:
        write_curves(result['curves'], curves)
        print(f'Wrote {curves}', file=sys.stderr)


if __name__ == '__main__':
    main()
