"""Temp files of killed writers are removed from the whole --outdir when a run starts (train.py and train_dpm.py
through cli_common.create_run_dir), and train_dpm removes a dead writer's temp file however young.
"""

import os
import re
import socket
import subprocess
import sys

from cli.common import create_run_dir
from dnnlib import util
from dpm import snapshot as dpm_snapshot


def _dead_pid() -> int:
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()  # A writer that was killed: its pid is gone.
    return dead.pid


def _temp_name(dest: str, pid: int) -> str:
    return f'.{dest}.{re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())}-{pid}.k3j_x9a1.part'


def test_a_new_run_cleans_every_run_dir_of_the_outdir(tmp_path, capsys):
    dead = _dead_pid()
    killed, other = tmp_path / '00000-ds-killed', tmp_path / '00001-ds-other'
    killed.mkdir(), other.mkdir()
    stale = [killed / _temp_name('network-snapshot-000000.pkl', dead), tmp_path / _temp_name('x.json', dead)]
    live = other / _temp_name('network-snapshot-000004.pkl', os.getpid())
    for path in stale + [live]:
        path.write_bytes(b'half a pickle')
    run_dir = create_run_dir(str(tmp_path / '00002-ds-new'), dict(a=1), rank=0)
    assert os.path.isfile(os.path.join(run_dir, 'training_options.json'))
    assert [path.exists() for path in stale] == [False, False] and live.exists()
    assert capsys.readouterr().out.splitlines() == [
        f'Removed 1 stale temp file(s) of interrupted writes in {tmp_path}: {stale[1].name}',
        f'Removed 1 stale temp file(s) of interrupted writes in {killed}: {stale[0].name}']


def test_remove_stale_temp_files_below_a_missing_outdir_is_empty(tmp_path):
    assert util.remove_stale_temp_files_below(tmp_path / 'missing') == {}
    (tmp_path / 'file').write_text('')
    assert util.remove_stale_temp_files_below(tmp_path) == {}


def test_train_dpm_removes_a_dead_writers_young_temp_file(tmp_path):
    young = tmp_path / _temp_name('training-state-000000.pt', _dead_pid())  # Written a moment ago.
    mine = tmp_path / _temp_name('network-snapshot-000000.pkl', os.getpid())
    for path in (young, mine):
        path.write_bytes(b'half a state')
    lines = []
    assert dpm_snapshot.remove_stale_temp_files(str(tmp_path), log=lines.append) == [str(young)]
    assert not young.exists() and mine.exists()
    assert lines == [f'Removed 1 temporary file(s) of an interrupted run in {tmp_path}: {young.name}']
