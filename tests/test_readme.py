"""The README is the front door: at most 12 KB, its Quickstart true (two commands, CI runs the test command verbatim,
the main job runs), and every docs/ page it or the code names exists."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README_MAX_BYTES = 12 * 1024
LINK = re.compile(r'\]\(([^)#\s]+)(?:#[^)]*)?\)')               # Markdown link or image target, anchor left off.
DOCS_PATH = re.compile(r'\bdocs/[\w./-]*\w')                    # A docs/... path named in code or a comment.
CODE_SUFFIXES = ('.py', '.sh', '.cu', '.h', '.cpp', '.toml')


def readme_size_error(text: str) -> str | None:
    """None when the README fits README_MAX_BYTES (UTF-8), else a message saying by how much it does not."""
    size = len(text.encode('utf-8'))
    if size <= README_MAX_BYTES:
        return None
    return f'README.md is {size} bytes; at most {README_MAX_BYTES} (move detail to docs/)'


def missing_links(page: Path) -> list[str]:
    """Local link targets of the markdown file `page` (relative to it) that do not exist."""
    targets = LINK.findall(page.read_text(encoding='utf-8'))
    return [t for t in targets if '://' not in t and not t.startswith('mailto:') and not (page.parent / t).exists()]


def code_files() -> list[Path]:
    """The repository's source files (not its markdown), tests included."""
    skip = {'.git', 'docs', '__pycache__', 'runs', 'out', 'datasets'}
    return sorted(p for p in Path(ROOT).rglob('*') if p.suffix in CODE_SUFFIXES and p.is_file()
                  and not skip & set(p.relative_to(ROOT).parts) and p != Path(__file__).resolve())


def _quickstart_commands():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    # Without the trailing '# needs download' mark (tests/test_readme_commands.py checks the marks).
    return [re.sub(r"\s+#.*$", "", line.strip()) for line in block.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def test_quickstart_has_exactly_two_commands():
    commands = _quickstart_commands()
    assert len(commands) == 2, commands
    assert commands[0].startswith("python -m pip install torch==2.13.0 --extra-index-url "
                                  "https://download.pytorch.org/whl/cpu && python -m pip install -e . && ")
    assert commands[1] == 'python -m pip install -e ".[test]" && python -m pytest'


def test_ci_runs_the_readme_test_command():
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read().splitlines()
    assert _quickstart_commands()[1] in ci


def _main_job():
    # The install half of command 1 is what CI itself does; the job half runs from a fresh working directory.
    job = _quickstart_commands()[0].rsplit(" && ", 1)[1].split()
    assert job[:3] == ["python", "-m", "smart_plugin.toy"]
    return [sys.executable, *job[1:]]


FRONTIER_ARMS = ["vanilla", "diffgan", "smart[smart_lam=1.0]", "smart[smart_lam=3.0]", "smart[smart_lam=10.0]",
                 "smart[smart_lam=30.0]", "smart[smart_lam=100.0]", "smart[smart_lam=30.0,smart_draws=1]"]


def test_main_job_default_config(tmp_path):
    # The exact command, resolved only: the built-in default is the lambda frontier study (3 seeds, a vanilla GAN of
    # 6000 steps per seed, then 8 arms of 2000 steps), written to runs/toy.
    result = subprocess.run([*_main_job(), "--dry-run"], cwd=tmp_path, capture_output=True, text=True, timeout=1200,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    assert config["seeds"] == [0, 1, 2] and [arm["label"] for arm in config["arms"]] == FRONTIER_ARMS
    assert (config["finetune_from"], config["steps"], config["smart_draws"]) == (6000, 2000, 16)
    assert not os.path.exists(tmp_path / "runs")


def test_main_job_runs(tmp_path):
    # The same command with a shortened budget writes every output into runs/toy. The timeout only guards against a
    # hang: a busy machine may make this many times slower than idle.
    result = subprocess.run([*_main_job(), "--quick", "--finetune-from", "60", "--steps", "60"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=3600, env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.returncode == 0, result.stderr
    out = tmp_path / "runs" / "toy"
    names = {"results.json", "figure.png", "frontier.png", "curves.png"} | {f"samples-{a}-seed0.npz"
                                                                           for a in FRONTIER_ARMS}
    assert names <= set(os.listdir(out)), sorted(os.listdir(out))
    assert list(json.load(open(out / "results.json"))["summary"]) == FRONTIER_ARMS
    assert "beats the control on both axes" in result.stdout


def test_readme_is_at_most_12_kb():
    assert readme_size_error(open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()) is None
    assert readme_size_error("x" * README_MAX_BYTES) is None
    assert readme_size_error("é" * (README_MAX_BYTES // 2 + 1)) == (
        f"README.md is {README_MAX_BYTES + 2} bytes; at most {README_MAX_BYTES} (move detail to docs/)")


def test_links_of_the_readme_and_docs_exist(tmp_path):
    pages = [Path(ROOT) / "README.md", *sorted((Path(ROOT) / "docs").rglob("*.md"))]
    missing = {str(page.relative_to(ROOT)): missing_links(page) for page in pages}
    assert {page: links for page, links in missing.items() if links} == {}
    assert "docs/smart-settings.md" in LINK.findall(pages[0].read_text(encoding="utf-8"))
    (tmp_path / "a.md").write_text("[x](b.md) [y](c.md#part) ![z](d.png) [w](https://e.org/f.md)\n")
    (tmp_path / "b.md").write_text("")
    assert missing_links(tmp_path / "a.md") == ["c.md", "d.png"]


def test_every_docs_path_named_in_code_exists():
    named = {(str(path.relative_to(ROOT)), found) for path in code_files()
             for found in DOCS_PATH.findall(path.read_text(encoding="utf-8", errors="replace"))}
    assert len(named) >= 20, sorted(named)  # The code does cite docs/ pages (e.g. docs/spec/diffusion.md).
    missing = sorted((where, found) for where, found in named if not os.path.exists(os.path.join(ROOT, found)))
    assert missing == []
    assert DOCS_PATH.findall("see docs/spec/diffusion.md section 1. And docs/x.png, docs/") == [
        "docs/spec/diffusion.md", "docs/x.png"]
