"""`python train.py --gpus=2` without torchrun: two gloo processes started through torch's elastic launcher run a
tiny job to the end, with one run dir and rank-identical networks (checked against rank 0 at every snapshot)."""

import json
import os
import subprocess
import sys

import pytest

from cli import self_launch
from tiny_datasets import make_zip
from training import snapshot

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--cfg=stylegan2', '--batch=4', '--cbase=128', '--cmax=16', '--map-depth=2', '--mbstd-group=2',
        '--workers=0', '--tick=0.008', '--snap=1', '--kimg=0.016']


def test_under_launcher_reads_the_environment(monkeypatch):
    for name in self_launch.TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)
    assert not self_launch.under_launcher()
    monkeypatch.setenv('WORLD_SIZE', '2')
    assert self_launch.under_launcher()


@pytest.mark.slow
def test_gpus_2_without_torchrun_runs_to_the_end(tmp_path):
    data = make_zip(tmp_path / 'ds.zip', num=16, res=8, seed=7)
    env = {k: v for k, v in os.environ.items() if k not in self_launch.TORCHRUN_ENV + ('RANK', 'LOCAL_RANK')}
    env.update(OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='')
    proc = subprocess.run([sys.executable, os.path.join(ROOT, 'train.py'), f'--outdir={tmp_path / "runs"}',
                           f'--data={data}', '--gpus=2', *TINY], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert os.listdir(tmp_path / 'runs') == ['00000-ds-stylegan2-kimg0.016-batch4']  # One run dir, made by rank 0.
    run_dir = tmp_path / 'runs' / '00000-ds-stylegan2-kimg0.016-batch4'
    options = json.loads((run_dir / 'training_options.json').read_text())
    assert (options['num_gpus'], options['batch_gpu']) == (2, 2)
    stats = [json.loads(line) for line in (run_dir / 'stats.jsonl').read_text().splitlines()]
    assert [s['Progress/kimg']['mean'] for s in stats] == [0.004, 0.012, 0.016]
    # Rank-identical networks: the final snapshot is written only after misc.check_ddp_consistency found every
    # parameter and buffer of G, D, G_ema and augment_pipe equal to rank 0's on rank 1 (run_outputs.snapshot_data).
    data = snapshot.load_network_pkl(str(run_dir / 'network-snapshot-000000.pkl'))
    assert data['training_state'] is not None and data['G_ema'] is not None
    assert proc.stdout.count('Exiting...') == 1  # Only rank 0 prints.


def test_self_launch_needs_train_py_as_the_script(tmp_path, monkeypatch):
    from click.testing import CliRunner
    sys.path.insert(0, ROOT)
    import train
    for name in self_launch.TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)
    data = make_zip(tmp_path / 'ds.zip', num=4, res=8, seed=7)
    result = CliRunner().invoke(train.main, ['--outdir', str(tmp_path / 'runs'), '--data', data, '--gpus=2', *TINY])
    assert result.exit_code != 0
    assert ('--gpus: 2 processes can be started only when train.py runs as a script; use torchrun '
            '--nproc_per_node=2 train.py ...') in result.output, result.output
    assert not (tmp_path / 'runs').exists()
