"""SIGTERM is handled like Ctrl-C by train.py, train_dpm.py and dataset_tool.py: the current write finishes or is
abandoned without leftovers, the exit status is 143 and the last snapshot is named. Each CLI runs in a subprocess
that sends SIGTERM to itself at a chosen point (deterministic; no timing); before, SIGTERM killed it outright."""

import glob
import os
import subprocess
import sys
import textwrap

import pytest

from tiny_datasets import make_zip

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs `module.main(args)` after wrapping `target` (module attribute path) so that its `at`-th call first sends
# SIGTERM to this process (the handler raises at the next bytecode, inside the wrapped call).
RUNNER = textwrap.dedent('''
    import importlib, os, signal, sys
    sys.path[:0] = [{root!r}, os.path.join({root!r}, 'tests', 'support')]
    # As in a foreground terminal: a shell that starts pytest in the background (no job control) makes children
    # inherit SIGINT ignored, and Python then installs no KeyboardInterrupt handler.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    owner, name = {target!r}.rsplit('.', 1)
    owner = importlib.import_module(owner)
    real, calls = getattr(owner, name), []
    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) == {at}:
            os.kill(os.getpid(), signal.{signal})
        return real(*args, **kwargs)
    setattr(owner, name, wrapped)
    importlib.import_module({script!r}).main({args!r})
''')


def _run(script, args, target, at, sig='SIGTERM'):
    code = RUNNER.format(root=ROOT, target=target, at=at, signal=sig, script=script, args=[str(a) for a in args])
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    return subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


def _leftovers(root):
    """Temporary files anywhere below root (atomic writes and dataset_tool's hidden outputs)."""
    return sorted(p for p in glob.glob(os.path.join(root, '**', '*'), recursive=True) + glob.glob(
        os.path.join(root, '**', '.*'), recursive=True) if p.endswith(('.part', '.tmp', '.old')))


TINY = ['--cfg', 'stylegan2', '--batch', '4', '--cbase', '128', '--cmax', '16', '--map-depth', '2', '--mbstd-group',
        '2', '--workers', '0', '--tick', '0.008', '--snap', '1']


def test_train_sigterm_exits_143_and_names_the_last_snapshot(tmp_path):
    data = make_zip(tmp_path / 'ds.zip', num=16, res=8, seed=7)
    result = _run('train', ['--outdir', tmp_path / 'runs', '--data', data, '--kimg', '0.04', *TINY],
                  'training.training_loop.training_step', at=4)
    assert result.returncode == 143, result.stdout + result.stderr
    run_dir = glob.glob(str(tmp_path / 'runs' / '00000-*'))[0]
    last = os.path.join(run_dir, 'network-snapshot-000000.012.pkl')  # Sub-kimg snapshots get the finer name.
    assert f'Interrupted (SIGTERM) at kimg 0.012; the last snapshot is {last}' in result.stdout, result.stdout
    assert _leftovers(str(tmp_path)) == [] and os.path.isfile(last)


def test_train_sigterm_inside_a_snapshot_write_leaves_no_temp_file(tmp_path):
    data = make_zip(tmp_path / 'ds.zip', num=16, res=8, seed=7)
    result = _run('train', ['--outdir', tmp_path / 'runs', '--data', data, '--kimg', '0.04', *TINY],
                  'dnnlib.util.write_atomically', at=1)  # The first atomic write: training_options.json (set-up).
    assert result.returncode == 143, result.stdout + result.stderr
    assert 'Interrupted (SIGTERM) during set-up; no snapshot written' in result.stderr
    assert _leftovers(str(tmp_path)) == []


@pytest.mark.parametrize('target, at, message', [
    ('dpm.training_loop.training_step', 3, 'at kimg 0.016; the last snapshot is {pkl} (resume with '
                                                      '--resume={pt})'),
    ('dpm.snapshot.save_network_snapshot', 2, 'at kimg 0.016; the last snapshot is {pkl} (resume with '
                                                         '--resume={pt1})'),
])
def test_train_dpm_sigterm_exits_143_and_stays_resumable(tmp_path, target, at, message):
    """Before: SIGTERM killed train_dpm outright; a kill between its two files left a tick that could not resume."""
    data = make_zip(tmp_path / 'ds.zip', num=16, res=8, seed=1)
    common = ['--data', data, '--preset', 'tiny', '--workers', '0', '--tick', '0.008', '--batch', '8', '--snap', '1']
    result = _run('train_dpm', ['--outdir', tmp_path / 'runs', '--duration', '0.04', *common], target, at)
    assert result.returncode == 143, result.stdout + result.stderr
    run_dir = glob.glob(str(tmp_path / 'runs' / '00000-*'))[0]
    names = dict(pkl=os.path.join(run_dir, 'network-snapshot-000000.pkl'),
                 pt=os.path.join(run_dir, 'training-state-000000.pt'),
                 pt1=os.path.join(run_dir, 'training-state-000000.pt'))
    assert f'Interrupted (SIGTERM) {message.format(**names)}' in result.stdout, result.stdout
    assert _leftovers(str(tmp_path)) == []
    # A temp file of a killed write (SIGKILL leaves one) is removed at the next start.
    stale = os.path.join(run_dir, 'tmp_x1y2z3.part')
    open(stale, 'wb').write(b'half a snapshot')
    os.utime(stale, (1e9, 1e9))
    from click.testing import CliRunner
    sys.path.insert(0, ROOT)
    import train_dpm
    resumed = CliRunner().invoke(train_dpm.main, [str(a) for a in ['--outdir', tmp_path / 'runs', '--duration',
                                                                    '0.024', '--resume', names['pkl'], *common]])
    assert resumed.exit_code == 0, resumed.output
    assert f'Removed 1 temporary file(s) of an interrupted run in {run_dir}: tmp_x1y2z3.part' in resumed.output
    assert 'Resumed from' in resumed.output and not os.path.exists(stale)


def test_dataset_tool_sigterm_exits_143_and_leaves_nothing(tmp_path):
    src = tmp_path / 'src'
    make_zip(tmp_path / 'src.zip', num=6, res=8, seed=3)
    result = _run('dataset_tool', ['--source', tmp_path / 'src.zip', '--dest', tmp_path / 'out' / 'ds.zip'],
                  'dataset_io.writer.encode_png', at=3)
    assert result.returncode == 143, result.stdout + result.stderr
    assert f'Interrupted (SIGTERM); nothing written to {tmp_path / "out" / "ds.zip"}' in result.stderr
    assert os.listdir(tmp_path / 'out') == [] and not src.exists()


@pytest.mark.parametrize('dest_name', ['ds.zip', 'ds_dir'])
def test_dataset_tool_removes_a_killed_runs_temp_output(tmp_path, dest_name):
    """Before: a killed run left hidden .<dest>.*.tmp files (up to 64 MB) forever."""
    make_zip(tmp_path / 'src.zip', num=2, res=8, seed=3)
    dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    (tmp_path / 'out').mkdir()
    stale = tmp_path / 'out' / f'.{dest_name}.{dead_pid}.abc_123x.tmp'
    live = tmp_path / 'out' / f'.{dest_name}.{os.getpid()}.def_456y.tmp'  # A live writer's: kept.
    for path in (stale, live):
        if dest_name.endswith('.zip'):
            path.write_bytes(b'partial zip')
        else:
            (path / '00000').mkdir(parents=True)
            (path / '00000' / 'img00000000.png').write_bytes(b'x')
    result = subprocess.run([sys.executable, 'dataset_tool.py', '--source', str(tmp_path / 'src.zip'), '--dest',
                             str(tmp_path / 'out' / dest_name)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f'Removed {stale}, left by an interrupted dataset_tool run' in result.stdout
    assert sorted(os.listdir(tmp_path / 'out')) == sorted([dest_name, live.name])


def test_train_dpm_ctrl_c_exits_130_and_names_the_last_snapshot(tmp_path):
    """Before: Ctrl-C ended train_dpm.py with 'Aborted!' and exit status 1, naming no snapshot."""
    data = make_zip(tmp_path / 'ds.zip', num=16, res=8, seed=1)
    common = ['--data', data, '--preset', 'tiny', '--workers', '0', '--tick', '0.008', '--batch', '8', '--snap', '1']
    result = _run('train_dpm', ['--outdir', tmp_path / 'runs', '--duration', '0.04', *common],
                  'dpm.training_loop.training_step', at=3, sig='SIGINT')
    assert result.returncode == 130, result.stdout + result.stderr
    run_dir = glob.glob(str(tmp_path / 'runs' / '00000-*'))[0]
    assert (f'Interrupted (SIGINT) at kimg 0.016; the last snapshot is {run_dir}/network-snapshot-000000.pkl (resume '
            f'with --resume={run_dir}/training-state-000000.pt)') in result.stdout, result.stdout
    assert 'Aborted!' not in result.stdout + result.stderr and _leftovers(str(tmp_path)) == []
