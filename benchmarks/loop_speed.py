"""Whole-loop training speed (s/kimg) of this working tree against another commit, side by side.

`benchmarks/train_speed.py --against REV` lands here. REV is checked out with `git worktree add --detach` into a temp
dir; per configuration, `train.py` of the working tree (A) and of REV (B) run in turn, A B A B ..., as separate
processes with the same flags, threads and dataset, each importing its own tree (cwd and PYTHONPATH). A run's figure
is the median `Timing/sec_per_kimg` of its stats.jsonl ticks after the first (steady state: the first tick holds the
warm-up). On a shared machine wall time drifts with the other load, so each pair also measures CPU seconds
per kimg, which the load disturbs far less: the CPU time (user + system, data workers included) of a run of
`ticks` ticks minus that of a 1-tick run of the same tree, over the kimg between them (start-up cancels out). The
ratios A/B are taken pair by pair and their medians printed. Datasets are scikit-learn's digits written by
this tree's dataset_tool.py (16x16 grey, and 32x32 RGB for cifar).
"""

import dataclasses
import json
import os
import resource
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


def _children_cpu_sec() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(tree: str, config: LoopConfig, data: str, threads: int, outdir: str, ticks: int) -> tuple:
    """Run train.py of `tree` for `ticks` ticks; return (median steady-state wall s/kimg or None, CPU seconds)."""
    kimg = ticks * config.tick_kimg
    cmd = [sys.executable, 'train.py', f'--outdir={outdir}', f'--data={data}', f'--kimg={kimg:g}',
           f'--tick={config.tick_kimg:g}', '--snap=100000', f'--threads={threads}', *config.flags]
    env = dict(os.environ, PYTHONPATH=tree, OMP_NUM_THREADS=str(threads))
    cpu_start = _children_cpu_sec()
    result = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    cpu_sec = _children_cpu_sec() - cpu_start
    if result.returncode != 0:
        raise RuntimeError(f'train.py in {tree} failed ({" ".join(cmd[1:])}):\n{result.stderr[-2000:]}')
    runs = sorted(os.listdir(outdir))
    with open(os.path.join(outdir, runs[-1], 'stats.jsonl')) as f:
        stats = [json.loads(line) for line in f if line.strip()]
    values = [tick['Timing/sec_per_kimg']['mean'] for tick in stats[1:] if 'Timing/sec_per_kimg' in tick]
    return (statistics.median(values) if values else None), cpu_sec


def _pair(trees: dict, config: LoopConfig, data: str, threads: int, tmp: str, tag: str) -> dict:
    """One A B pair: per tree a 1-tick and a full run; {tree tag: (wall s/kimg, CPU s/kimg)}."""
    out = {}
    for key, tree in trees.items():
        _, cpu_short = run_once(tree, config, data, threads, os.path.join(tmp, f'{tag}-{key}-short'), 1)
        wall, cpu_long = run_once(tree, config, data, threads, os.path.join(tmp, f'{tag}-{key}-long'), config.ticks)
        out[key] = (wall, (cpu_long - cpu_short) / ((config.ticks - 1) * config.tick_kimg))
    return out


def compare(rev: str, names: list, pairs: int, threads: int, log=print) -> list:
    """For each configuration, `pairs` alternating A (this tree) / B (rev) measurements; rows with the ratios."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        datasets = make_datasets(tmp)
        rev_tree = add_worktree(rev, tmp)
        try:
            for name in names:
                config = CONFIGS[name]
                wall, cpu = {'A': [], 'B': []}, {'A': [], 'B': []}
                for i in range(pairs):
                    res = _pair({'A': REPO, 'B': rev_tree}, config, datasets[config.data], threads, tmp, f'{name}{i}')
                    for key in 'AB':
                        wall[key].append(res[key][0])
                        cpu[key].append(res[key][1])
                    log(f'  {name} pair {i + 1}/{pairs}: wall s/kimg A {res["A"][0]:.2f} B {res["B"][0]:.2f}, '
                        f'CPU s/kimg A {res["A"][1]:.2f} B {res["B"][1]:.2f}')
                rows.append(dict(config=config.name, wall=wall, cpu=cpu,
                                 wall_ratio=statistics.median(a / b for a, b in zip(wall['A'], wall['B'])),
                                 cpu_ratio=statistics.median(a / b for a, b in zip(cpu['A'], cpu['B']))))
        finally:
            remove_worktree(rev_tree)
    return rows


def format_rows(rows: list, rev: str) -> str:
    """Fixed-width table: per configuration wall and CPU s/kimg of A and B and the median ratios."""
    lines = [f"{'configuration':<50} {'wall A':>7} {'wall B':>7} {'A/B':>6} {'CPU A':>7} {'CPU B':>7} {'A/B':>6}"]
    for r in rows:
        med = {kind: {key: statistics.median(r[kind][key]) for key in 'AB'} for kind in ('wall', 'cpu')}
        lines.append(f"{r['config']:<50} {med['wall']['A']:7.2f} {med['wall']['B']:7.2f} {r['wall_ratio']:6.3f} "
                     f"{med['cpu']['A']:7.2f} {med['cpu']['B']:7.2f} {r['cpu_ratio']:6.3f}")
    lines.append(f's/kimg; A = working tree, B = {rev}; medians over the pairs, ratios taken pair by pair')
    return '\n'.join(lines)
