"""Whole-loop training speed (s/kimg) of this working tree against another commit, side by side.

`benchmarks/train_speed.py --against REV` lands here. REV is checked out with `git worktree add --detach` into a temp
dir; per configuration, `train.py` of the working tree (A) and of REV (B) run in turn, A B A B ..., as separate
processes with the same flags, threads and dataset, each importing its own tree (cwd and PYTHONPATH). A run's figure
is the median `Timing/sec_per_kimg` of its stats.jsonl ticks after the first (steady state: the first tick holds the
warm-up); the ratio A/B is taken pair by pair and its median printed. Datasets are scikit-learn's digits written by
this tree's dataset_tool.py (16x16 grey, and 32x32 RGB for cifar).
"""

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    name: str           # Row label.
    data: str           # 'digits16' or 'digits32rgb'.
    flags: tuple        # train.py flags besides --outdir, --data, --kimg, --tick, --snap, --threads.
    ticks: int          # Ticks per run; the first is dropped.
    tick_kimg: float    # kimg per tick.


CONFIGS = {
    'digits': LoopConfig('digits 16x16 (cbase 256, cmax 32, batch 16)', 'digits16',
                         ('--cbase=256', '--cmax=32', '--map-depth=2', '--batch=16'), 4, 0.128),
    'mnist': LoopConfig('MNIST-like 16x16 (cbase 1024, cmax 64, batch 32)', 'digits16',
                        ('--cbase=1024', '--cmax=64', '--batch=32'), 4, 0.128),
    'cifar': LoopConfig('cifar 32x32 (cfg cifar, batch 8)', 'digits32rgb',
                        ('--cfg=cifar', '--batch=8', '--mbstd-group=4'), 3, 0.016),
}


def make_datasets(tmp: str) -> dict:
    """The two digits zips, written by this tree's dataset_tool.py; {'digits16': path, 'digits32rgb': path}."""
    paths = {'digits16': os.path.join(tmp, 'digits16.zip'), 'digits32rgb': os.path.join(tmp, 'digits32rgb.zip')}
    extra = {'digits16': [], 'digits32rgb': ['--resolution=32x32', '--channels=3']}
    for key, path in paths.items():
        subprocess.run([sys.executable, 'dataset_tool.py', '--source=sklearn-digits', f'--dest={path}'] + extra[key],
                       cwd=REPO, check=True, capture_output=True, env=dict(os.environ, PYTHONPATH=REPO))
    return paths


def add_worktree(rev: str, tmp: str) -> str:
    """Check out `rev` (detached) into tmp/rev and return the path; raises ValueError naming rev if git cannot."""
    path = os.path.join(tmp, 'rev')
    result = subprocess.run(['git', 'worktree', 'add', '--detach', path, rev], cwd=REPO, capture_output=True,
                            text=True)
    if result.returncode != 0:
        raise ValueError(f'--against {rev}: git worktree add failed: {result.stderr.strip().splitlines()[-1]}')
    return path


def remove_worktree(path: str) -> None:
    subprocess.run(['git', 'worktree', 'remove', '--force', path], cwd=REPO, capture_output=True)


def run_once(tree: str, config: LoopConfig, data: str, threads: int, outdir: str) -> float:
    """Run train.py of `tree` once; return the median steady-state s/kimg from its stats.jsonl."""
    kimg = config.ticks * config.tick_kimg
    cmd = [sys.executable, 'train.py', f'--outdir={outdir}', f'--data={data}', f'--kimg={kimg:g}',
           f'--tick={config.tick_kimg:g}', '--snap=100000', f'--threads={threads}', *config.flags]
    env = dict(os.environ, PYTHONPATH=tree, OMP_NUM_THREADS=str(threads))
    result = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f'train.py in {tree} failed ({" ".join(cmd[1:])}):\n{result.stderr[-2000:]}')
    runs = sorted(os.listdir(outdir))
    with open(os.path.join(outdir, runs[-1], 'stats.jsonl')) as f:
        ticks = [json.loads(line) for line in f if line.strip()]
    values = [tick['Timing/sec_per_kimg']['mean'] for tick in ticks[1:] if 'Timing/sec_per_kimg' in tick]
    if not values:
        raise RuntimeError(f'train.py in {tree}: no steady-state ticks in stats.jsonl ({len(ticks)} tick(s))')
    return statistics.median(values)


def compare(rev: str, names: list, pairs: int, threads: int, log=print) -> list:
    """For each configuration: A = this tree, B = rev, `pairs` alternating runs; rows with s/kimg and ratios."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        datasets = make_datasets(tmp)
        rev_tree = add_worktree(rev, tmp)
        try:
            for name in names:
                config = CONFIGS[name]
                a, b = [], []
                for i in range(pairs):
                    for tree, acc, tag in ((REPO, a, 'A'), (rev_tree, b, 'B')):
                        outdir = os.path.join(tmp, f'{name}-{tag}-{i}')
                        acc.append(run_once(tree, config, datasets[config.data], threads, outdir))
                    log(f'  {name} pair {i + 1}/{pairs}: A {a[-1]:.2f} s/kimg, B {b[-1]:.2f} s/kimg, '
                        f'A/B {a[-1] / b[-1]:.3f}')
                ratios = [x / y for x, y in zip(a, b)]
                rows.append(dict(config=config.name, a=a, b=b, ratio=statistics.median(ratios),
                                 ratio_min=min(ratios), ratio_max=max(ratios)))
        finally:
            remove_worktree(rev_tree)
    return rows


def format_rows(rows: list, rev: str) -> str:
    lines = [f"{'configuration':<50} {'A s/kimg':>9} {'B s/kimg':>9} {'A/B':>6} {'min':>6} {'max':>6}"]
    for r in rows:
        lines.append(f"{r['config']:<50} {statistics.median(r['a']):9.2f} {statistics.median(r['b']):9.2f} "
                     f"{r['ratio']:6.3f} {r['ratio_min']:6.3f} {r['ratio_max']:6.3f}")
    lines.append(f'A = working tree, B = {rev}; medians over the pairs, A/B taken pair by pair')
    return '\n'.join(lines)
