"""benchmarks/smart_digits.py: the table's layout and paired differences by hand, the outdir guard, and (slow) the
--quick study end to end through the CLIs, then a rerun that skips every finished stage."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip('sklearn')

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / 'benchmarks' / 'smart_digits.py'
sys.path.insert(0, str(ROOT / 'benchmarks'))
import smart_digits  # noqa: E402
import smart_digits_eval  # noqa: E402


def _row(fd, **kw):
    return dict(dict(fd=fd, kid=0.01, precision=0.5, recall=0.4, class_kl=0.02, time=10.0), **kw)


def test_table_means_and_paired_differences():
    rows = {'control': [_row(2.0), _row(4.0)], 'smart-gauss': [_row(1.0), _row(4.0)]}
    table = smart_digits_eval.make_table(rows, ('control', 'smart-gauss')).splitlines()
    assert table[0] == ('| arm | FD (classifier) | KID (pixels) | precision | recall | class-hist KL | time (s) | '
                        'FD - control (paired) |')
    assert len(table) == 4
    control, smart = (line.split(' | ') for line in table[2:])
    assert control[1] == '3.000 +- 1.414' and control[-1] == '- |'
    assert smart[1] == '2.500 +- 2.121' and smart[-1] == '-0.500 +- 0.707 |'  # differences -1 and 0


def test_stages_and_arm_flags():
    stages = smart_digits._stage_list(2)
    assert stages[:4] == ['dataset', 'classifier', 'dpm', 'base-s0'] and stages[-1] == 'report'
    assert len(stages) == 3 + 2 * 5 + 2 * 4 + 1
    o = dict(smart_lambda=0.1, smart_freq=4)
    assert smart_digits._arm_args('control', 'd.pkl', o) == []
    assert smart_digits._arm_args('smart-dpm-d4', 'd.pkl', o) == [
        '--smart-lambda=0.1', '--smart-freq=4', '--smart-schedule=ddpm-linear', '--smart-t=40,60',
        '--smart-dpm=d.pkl', '--smart-draws=4']
    assert smart_digits._arm_args('smart-gauss', 'd.pkl', o)[-1] == '--smart-dpm=gaussian'


def test_help_keeps_the_numbered_stages_one_per_line():
    from click.testing import CliRunner
    result = CliRunner().invoke(smart_digits.main, ['--help'], terminal_width=80)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    starts = [next(i for i, line in enumerate(lines) if line.startswith(f'  {k}. ')) for k in range(1, 8)]
    assert starts == sorted(starts) and lines[starts[0]].startswith('  1. `dataset_tool.py --source=sklearn-digits`')
    assert '  python benchmarks/smart_digits.py --outdir=runs/smart-digits-quick --quick' in result.output


def test_outdir_with_other_options_is_refused(tmp_path):
    (tmp_path / 'state.json').write_text(json.dumps(dict(options=dict(seeds=3), stages={})))
    with pytest.raises(Exception, match=r'--outdir: .* holds a study with other options'):
        smart_digits.Study(str(tmp_path), dict(seeds=1))


@pytest.mark.slow
def test_quick_study_end_to_end(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    out = tmp_path / 'study'
    proc = subprocess.run([sys.executable, str(SCRIPT), f'--outdir={out}', '--quick'], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ('table.md', 'results.json', 'grids.png', 'curves.png', 'classifier.pt', 'pixels.pt',
                 'digits-16x16.zip', 'state.json'):
        assert (out / name).is_file(), name
    table = (out / 'table.md').read_text().splitlines()
    assert table[0].count('|') == 9  # arm + 6 metrics + paired difference
    assert [line.split(' | ')[0].lstrip('| ') for line in table[2:6]] == list(smart_digits.ARMS)
    results = json.loads((out / 'results.json').read_text())
    assert 0 <= results['classifier']['test_accuracy'] <= 1 and results['classifier']['split']['test'] == 359
    for arm in smart_digits.ARMS:
        (row,) = results['rows'][arm]
        assert row['fd'] >= 0 and 0 <= row['precision'] <= 1 and 0 <= row['recall'] <= 1 and row['class_kl'] >= 0
        assert len(row['curve']) >= 2 and row['curve'][0][0] == 0
    assert 'Classifier test accuracy' in proc.stdout + proc.stderr
    stages = json.loads((out / 'state.json').read_text())['stages']
    logs = {p.name: p.stat().st_mtime_ns for p in (out / 'logs').iterdir()}
    rerun = subprocess.run([sys.executable, str(SCRIPT), f'--outdir={out}', '--quick'], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert json.loads((out / 'state.json').read_text())['stages'] == stages  # every stage skipped
    assert {p.name: p.stat().st_mtime_ns for p in (out / 'logs').iterdir()} == logs  # no CLI ran again
    assert '| control |' in rerun.stdout


def test_parallel_stages_respect_dependencies_and_the_job_limit():
    import threading
    import time
    import tqdm
    lock, log, live, peak = threading.Lock(), [], [0], [0]

    def stage(name, fn):
        with lock:
            live[0] += 1
            peak[0] = max(peak[0], live[0])
            log.append(('start', name))
        time.sleep(0.05)
        fn()
        with lock:
            live[0] -= 1
            log.append(('end', name))

    tasks = {'base-s0': (None, lambda: None), 'base-s1': (None, lambda: None)}
    tasks.update({f'{arm}-s{seed}': (f'base-s{seed}', lambda: None) for seed in (0, 1) for arm in ('a', 'b')})
    with tqdm.tqdm(disable=True) as bar:
        smart_digits.run_parallel(tasks, 2, stage, bar)
    assert peak[0] == 2 and sorted(n for e, n in log if e == 'end') == sorted(tasks)
    for seed in (0, 1):   # No arm starts before its base has ended.
        end_base = log.index(('end', f'base-s{seed}'))
        assert all(log.index(('start', f'{arm}-s{seed}')) > end_base for arm in ('a', 'b'))
    log.clear()
    with tqdm.tqdm(disable=True) as bar:
        smart_digits.run_parallel(tasks, 1, stage, bar)
    assert [n for e, n in log if e == 'start'] == list(tasks)   # One job: the dict's order.


def test_parallel_stages_stop_on_a_failure():
    import tqdm
    ran = []

    def fail():
        raise RuntimeError('stage broke')

    tasks = {'base-s0': (None, fail), 'arm-s0': ('base-s0', lambda: ran.append('arm-s0')),
             'base-s1': (None, lambda: ran.append('base-s1'))}
    with tqdm.tqdm(disable=True) as bar, pytest.raises(RuntimeError, match='^stage broke$'):
        smart_digits.run_parallel(tasks, 1, lambda name, fn: fn(), bar)
    assert ran == []   # Nothing starts after the failure, and nothing that needed the failed stage.
