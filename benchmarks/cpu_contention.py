"""How the trainers slow down on a busy CPU, with and without the thread set-up of torch_utils/cpu_threads.py.

Runs a tiny train.py job (16x16, cbase 512, cmax 32, batch 8) and train_dpm.py's tiny preset (16x16) as
subprocesses, each idle and with one CPU-bound process running beside it (a busy loop this script starts), under
three thread set-ups:

  before     OMP_WAIT_POLICY unset for OpenMP (its default: idle workers spin), torch's default threads
  passive    OMP_WAIT_POLICY=PASSIVE (what the CLIs now set), torch's default threads
  threads=1  OMP_WAIT_POLICY=PASSIVE and --threads 1

and prints sec/kimg (mean of Timing/sec_per_kimg over the ticks after the first, from stats.jsonl) with the loaded /
idle ratio. Every arm runs in this one invocation, so the ratios are side by side.

  python benchmarks/cpu_contention.py                 # both trainers, all arms (about 10 minutes on 2 idle cores)
  python benchmarks/cpu_contention.py --trainer gan --kimg 0.1
"""

import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time

import click

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'tests', 'support'))

from tiny_datasets import make_zip  # noqa: E402

ARMS = {
    'before': (dict(OMP_WAIT_POLICY=''), []),
    'passive': (dict(OMP_WAIT_POLICY='PASSIVE'), []),
    'threads=1': (dict(OMP_WAIT_POLICY='PASSIVE'), ['--threads=1']),
}


def _busy_loop():
    while True:
        pass


def _command(trainer: str, data: str, outdir: str, kimg: float) -> list[str]:
    if trainer == 'gan':
        return [sys.executable, os.path.join(ROOT, 'train.py'), f'--outdir={outdir}', f'--data={data}', '--cbase=512',
                '--cmax=32', '--map-depth=2', '--batch=8', f'--kimg={kimg}', f'--tick={kimg / 4}', '--snap=1000',
                '--workers=0']
    return [sys.executable, os.path.join(ROOT, 'train_dpm.py'), f'--outdir={outdir}', f'--data={data}', '--preset=tiny',
            f'--duration={kimg}', f'--tick={kimg / 4}', '--snap=1000', '--workers=0']


def _sec_per_kimg(outdir: str) -> float:
    (run,) = [os.path.join(outdir, name) for name in os.listdir(outdir)]
    with open(os.path.join(run, 'stats.jsonl')) as f:
        ticks = [json.loads(line) for line in f]
    values = [tick['Timing/sec_per_kimg']['mean'] for tick in ticks[1:]] or [ticks[0]['Timing/sec_per_kimg']['mean']]
    return sum(values) / len(values)


def run_arm(trainer: str, arm: str, loaded: bool, data: str, kimg: float) -> float:
    """sec/kimg of one trainer run under one thread set-up, with or without a competing busy process."""
    env_extra, flags = ARMS[arm]
    env = dict(os.environ, **env_extra)
    env.pop('OMP_NUM_THREADS', None)
    busy = multiprocessing.Process(target=_busy_loop, daemon=True) if loaded else None
    if busy is not None:
        busy.start()
    try:
        with tempfile.TemporaryDirectory() as outdir:
            out = subprocess.run(_command(trainer, data, outdir, kimg) + flags, env=env, cwd=ROOT,
                                 capture_output=True, text=True)
            if out.returncode != 0:
                raise RuntimeError(f'{trainer} {arm} failed (rc {out.returncode}):\n{out.stderr[-2000:]}')
            return _sec_per_kimg(outdir)
    finally:
        if busy is not None:
            busy.terminate()
            busy.join()


@click.command()
@click.option('--trainer', type=click.Choice(['gan', 'dpm', 'both']), default='both', show_default=True)
@click.option('--kimg', type=click.FloatRange(min=0, min_open=True), default=None,
              show_default='0.16 gan, 0.32 dpm', help='Training length of each run')
@click.option('--arms', default=','.join(ARMS), show_default=True, help='Comma-separated thread set-ups')
def main(trainer, kimg, arms):
    arms = arms.split(',')
    for arm in arms:
        if arm not in ARMS:
            raise click.BadParameter(f'{arm!r}: expected some of {list(ARMS)}', param_hint='--arms')
    trainers = ['gan', 'dpm'] if trainer == 'both' else [trainer]
    print(f'{os.cpu_count()} CPUs, load average before start {os.getloadavg()[0]:.2f}; '
          'loaded = one busy-loop process beside the run')
    print(f'{"trainer":8s} {"set-up":10s} {"idle s/kimg":>12s} {"loaded s/kimg":>14s} {"loaded/idle":>12s}')
    with tempfile.TemporaryDirectory() as tmp:
        data = make_zip(os.path.join(tmp, 'ds.zip'), num=64, res=16, seed=0)
        for name in trainers:
            length = kimg if kimg is not None else (0.16 if name == 'gan' else 0.32)
            for arm in arms:
                start = time.time()
                idle = run_arm(name, arm, False, str(data), length)
                loaded = run_arm(name, arm, True, str(data), length)
                print(f'{name:8s} {arm:10s} {idle:12.1f} {loaded:14.1f} {loaded / idle:12.2f}   '
                      f'({time.time() - start:.0f} s)', flush=True)


if __name__ == '__main__':
    main()
