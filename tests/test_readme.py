"""The README's Quickstart is true: two commands, CI runs the test command verbatim, the main job runs."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _quickstart_commands():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.strip() for line in block.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_quickstart_has_exactly_two_commands():
    commands = _quickstart_commands()
    assert len(commands) == 2, commands
    assert commands[0].startswith("python -m pip install -e . && ")
    assert commands[1] == 'python -m pip install -e ".[test]" && python -m pytest'


def test_ci_runs_the_readme_test_command():
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read().splitlines()
    assert _quickstart_commands()[1] in ci


def test_main_job_runs(tmp_path):
    # The install half of command 1 is what CI itself does; run the job half from a fresh working directory.
    job = _quickstart_commands()[0].split(" && ", 1)[1].split()
    assert job[:2] == ["python", "inspect_pkl.py"]
    result = subprocess.run([sys.executable, os.path.join(ROOT, job[1]), *job[2:]], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert os.path.isfile(tmp_path / "out" / "demo-snapshot.pkl")
    lines = result.stdout.splitlines()
    assert any(line.startswith("G_ema ") and "Generator" in line and "equal" in line for line in lines), lines
