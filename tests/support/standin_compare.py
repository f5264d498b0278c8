"""Stand-in for `python -m metrics.compare RUN_DIR... --detector=PATH --num-gen N --json OUT` in the
study's wiring test: each run's last snapshot through smart_study_metrics.evaluate_truncated at psi 1, the dataset
from the run's training_options.json; writes the 'runs' part of the JSON."""

import json
import os
import sys

import click

sys.path.insert(0, '.')
sys.path.insert(0, 'benchmarks')


def evaluate_snapshot(snapshot_path: str, detector_path: str, num_gen: int = 1000, seed: int = 0,
                      device: str = 'cpu') -> dict:
    """The library call's stand-in: the metrics of one snapshot, at psi 1."""
    import smart_study_metrics as sm
    with open(os.path.join(os.path.dirname(snapshot_path), 'training_options.json')) as f:
        data = json.load(f)['training_set_kwargs']['path']
    return sm.evaluate_truncated(snapshot_path, detector_path, data, num_gen, 1.0, seed)


@click.command()
@click.argument('run_dirs', nargs=-1, required=True)
@click.option('--detector', required=True)
@click.option('--num-gen', type=int, default=1000)
@click.option('--json', 'json_out', required=True)
def main(run_dirs, detector, num_gen, json_out) -> None:
    from smart_digits_eval import snapshots
    runs = []
    for run_dir in run_dirs:
        kimg, pkl = snapshots(run_dir)[-1]
        runs.append(dict(run_dir=run_dir, snapshot=pkl, kimg=kimg,
                         metrics=evaluate_snapshot(pkl, detector, num_gen=num_gen)))
    with open(json_out, 'w') as f:
        json.dump(dict(runs=runs, groups=[], pairs=[]), f)


if __name__ == '__main__':
    main()
