"""benchmarks/cpu_preset_search.py without training: the train.py flags and config overrides of a job, the summary
of a curve against the issue's target, the table, and the CLI's refusal of bad inputs (no search runs here)."""

import os
import sys
from pathlib import Path

from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'benchmarks'))
import cpu_preset_search as search  # noqa: E402


def test_train_args_and_overrides():
    args = search.train_args('gamma10', 'd.zip', 'out', kimg=60, eval_kimg=4, seed=1, resume=None)
    assert '--gamma=10' in args and '--glr=0.001' in args and '--dlr=0.002' in args and '--seed=1' in args
    assert '--fp32' in args and '--snap=1' in args and '--tick=4' in args and '--kimg=60' in args
    assert search.train_args('base', 'd.zip', 'out', 60, 4, 0, 'a.pkl')[-1] == '--resume=a.pkl'
    config = dict(ema_kimg=10, ema_rampup=0.05, loss_kwargs=dict(r1_gamma=1))
    search.apply_overrides(config, search.CONFIGS['nomix-nopl'][1] | search.CONFIGS['ema1'][1])
    assert config == dict(ema_kimg=1.0, ema_rampup=None, loss_kwargs=dict(r1_gamma=1, pl_weight=0,
                                                                         style_mixing_prob=0))


def _record(seed, points):
    curve = [dict(kimg=k, fd=fd, kid=0.1, precision=0.5, recall=r, class_kl=kl, recognisable=rec)
             for k, fd, r, kl, rec in points]
    return dict(name=f'base-r16-s{seed}', config='base', res=16, seed=seed, curve=curve, sec_per_kimg=6.0)


def test_summary_and_table():
    good = _record(0, [(0, 1000, 0.0, 1.0, 0.5), (4, 50, 0.4, 0.01, 0.9), (8, 80, 0.35, 0.02, 0.85)])
    bad = _record(1, [(0, 1000, 0.0, 1.0, 0.5), (4, 300, 0.1, 0.3, 0.6)])
    s = search.summarize(good)
    assert (s['fd_ratio'], s['best_fd_ratio'], s['best_kimg'], s['target_met']) == (0.08, 0.05, 4, True)
    assert search.summarize(bad)['checks'] == dict(fd=False, recall=False, class_kl=False, recognisable=False)
    row = search.make_table([good, bad]).splitlines()[2]
    assert row.startswith('| base | 16 | 2 | 6.0 +- 2.8 | 1000 +- 0 | 190.0 +- 155.6 | 0.190 +- 0.156 |')
    assert row.endswith('| 6.00 +- 0.00 | 1/2 |')


def test_cli_refuses_missing_inputs(tmp_path):
    result = CliRunner().invoke(search.main, ['--outdir', str(tmp_path), '--data16', str(tmp_path / 'no.zip')])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: --data16: '{tmp_path / 'no.zip'}' is not a file"
    result = CliRunner().invoke(search.main, ['--outdir', str(tmp_path), '--configs', 'base,nope'])
    assert result.exit_code == 2 and "['nope']: unknown" in result.output
    assert not os.listdir(tmp_path)


def test_train_entry_applies_the_overrides_through_train_py(tmp_path):
    # The job's train.py runs with its config builder wrapped (EMA, style mixing and path length have no flags): the
    # wrapper must follow train.py's builder (a RunPlan since the pre-flight split), checked here under --dry-run.
    import json
    import subprocess
    import zipfile

    import numpy as np
    import PIL.Image
    data = tmp_path / 'ds.zip'
    with zipfile.ZipFile(data, 'w') as zf:
        for i in range(8):
            path = tmp_path / f'{i}.png'
            PIL.Image.fromarray(np.full([16, 16], i * 30, dtype=np.uint8)).save(path)
            zf.write(path, f'{i}.png')
    overrides = search.CONFIGS['nomix-nopl'][1] | search.CONFIGS['ema1'][1]
    args = search.train_args('base', str(data), str(tmp_path / 'out'), kimg=1, eval_kimg=1, seed=0, resume=None)
    result = subprocess.run([sys.executable, str(ROOT / 'benchmarks' / 'cpu_preset_search.py'), '_train',
                             json.dumps(overrides), *args, '--dry-run', '--batch=8', '--workers=0'],
                            capture_output=True, text=True, cwd=ROOT, timeout=600,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 0, result.stderr[-2000:]
    options = json.loads(result.stdout[result.stdout.index('{'):result.stdout.index('\n}\n') + 2])
    assert options['ema_kimg'] == 1.0 and options['ema_rampup'] is None
    assert options['loss_kwargs']['pl_weight'] == 0 and options['loss_kwargs']['style_mixing_prob'] == 0
