"""Every command in the ```bash blocks of README.md and docs/*.md runs as written, in order, in a fresh copy of the
repository: README.md first, then the docs pages in name order.

COMMANDS is the explicit table: one entry per documented command (continuation lines joined, whitespace collapsed,
the trailing comment left off). A command without an entry fails the test naming it and its page, and so does an
entry whose command no page has. Kinds:
  run      run as written with bash in the copy (cwd = its root, HOME = an empty folder, so `~/...` and the download
           cache start empty); `makes` lists files it must leave ('~/' = HOME), `shows` text its output must hold.
  dry-run  run with --dry-run appended (options and set-up checks; train.py also prints SMaRt's start-up line).
  marked   needs a download or a GPU, so not run; the line must end with a comment saying so (`needs download` /
           `needs GPU`). pip lines are of this kind and are checked textually instead.
  covered  run by the named test, at a budget the suite can afford.
Every train.py / train_dpm.py command that would train on this CPU (not marked, or on the bundled digits) is
bounded: small networks and a short budget, so that pasting it finishes in minutes. The chain runs in one test
(slow: a few minutes); the table checks are cheap. The environment adds OMP_NUM_THREADS=1; the commands themselves
are the pages', character for character.
"""

import ast
import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import PIL.Image
import pytest

ROOT = Path(__file__).resolve().parents[1]
MARK = re.compile(r'\bneeds (download|GPU)')
CPU_INDEX = '--extra-index-url https://download.pytorch.org/whl/cpu'
SNAP = 'runs/00001-digits-16x16-auto1-kimg0.2-batch8-smart0.1/network-snapshot-000000.200.pkl'
DPM = 'runs/dpm/00000-digits-16x16-uncond-ddpmpp-edm-tiny-batch16-stf-band0.5'
TINY_DPM = '--data=datasets/digits-16x16.zip --preset=tiny --stf --rbatch=64 --band-share=0.5'
TINY_GAN = '--data=datasets/digits-16x16.zip --cbase=512 --cmax=32 --map-depth=2 --batch=8'
GAUSS = '--smart-lambda=0.1 --smart-freq=2 --smart-dpm=gaussian'
BAND = '--smart-schedule=ddpm-linear --smart-t=40,60'


@dataclasses.dataclass(frozen=True)
class Entry:
    kind: str               # 'run', 'dry-run', 'marked' or 'covered' (module docstring).
    makes: tuple = ()       # run: files the command must leave, relative to the copy ('~/' = HOME).
    shows: str = ''         # run, dry-run: text the command's output must contain.
    need: str = ''          # marked: 'download' or 'GPU' (the comment says `needs <need>`).
    by: str = ''            # covered: 'tests/<file>.py::<test>' that runs it.
    before: str = ''        # run: a precondition the test makes first ('photos': ~/photos holds 4 images).


def download(*_):
    return Entry('marked', need='download')


COMMANDS = {
    # README: Quickstart (pip: checked textually; the main job runs in tests/test_readme.py, the suite is this suite).
    'python -m pip install torch==2.13.0 --extra-index-url https://download.pytorch.org/whl/cpu && python -m pip '
    'install -e . && python -m smart_plugin.toy': download(),
    'python -m pip install -e ".[test]" && python -m pytest': download(),
    # README: the main job (its default runs in tests/test_readme.py at a short budget).
    'python -m smart_plugin.toy': Entry('covered', by='tests/test_readme.py::test_main_job_runs'),
    # README: Train a GAN on CPU.
    'python dataset_tool.py --source=sklearn-digits --dest=datasets/digits-16x16.zip':
        Entry('run', makes=('datasets/digits-16x16.zip',),
              shows='Wrote 1797 images (16x16, 1 channel(s), labels: yes)'),
    f'python train.py --outdir=runs {TINY_GAN} --kimg=0.2 --tick=0.05 --workers=0':
        Entry('run', makes=('runs/00000-digits-16x16-auto1-kimg0.2-batch8/network-snapshot-000000.200.pkl',)),
    # README: Train with SMaRt.
    f'python train.py --outdir=runs {TINY_GAN} --kimg=0.2 --tick=0.05 {GAUSS} {BAND} --workers=0':
        Entry('run', makes=(SNAP,), shows='t 40..60 on ddpm-linear-1000 -> sigma 0.1437..0.2085'),
    f'python generate.py --network={SNAP} --seeds=0-7 --grid --outdir=out/images':
        Entry('run', makes=('out/images/seed0007.png', 'out/images/grid.png')),
    'python train.py --outdir=runs --data=~/datasets/cifar10-32x32.zip --cfg=cifar --cond --smart-lambda=0.01 '
    '--smart-schedule=ddpm-linear --smart-t=40,60 --smart-freq=8 --smart-dpm=edm-cifar10-32x32-cond-vp': download(),
    # docs/cpu-preset.md: the search (hours; its pieces are tested without training).
    'python benchmarks/cpu_preset_search.py --outdir=runs/cpu-search --prepare-only':
        Entry('covered', by='tests/test_cpu_preset_search.py::test_cli_refuses_missing_inputs'),
    'python benchmarks/cpu_preset_search.py --outdir=runs/cpu-search --grid=full --res=16,32 --seeds=2 --jobs=2 '
    '--kimg16=200 --kimg32=200 --eval-kimg=4':
        Entry('covered', by='tests/test_cpu_preset_search.py::test_summary_and_table'),
    # docs/datasets.md.
    'python dataset_tool.py --source=~/downloads/cifar-10-python.tar.gz --dest=~/datasets/cifar10-32x32.zip':
        download(),
    'python dataset_tool.py --source=~/photos --dest=~/datasets/photos-64.zip --transform=center-crop '
    '--resolution=64x64': Entry('run', makes=('~/datasets/photos-64.zip',), before='photos',
                                shows='Wrote 4 images (64x64, 3 channel(s), labels: no)'),
    'python dataset_tool.py --source=sklearn-digits --dest=datasets/digits-32x32-rgb.zip --resolution=32x32 '
    '--channels=3': Entry('run', makes=('datasets/digits-32x32-rgb.zip',),
                          shows='Wrote 1797 images (32x32, 3 channel(s), labels: yes)'),
    'python generate.py --network=https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metfaces.pkl '
    '--seeds=85,265,297,849 --outdir=out/metfaces': download(),
    # docs/diffusion-gan.md.
    f'python train.py --outdir=runs {TINY_GAN} --kimg=0.1 --tick=0.05 --workers=0 --diffgan {GAUSS}':
        Entry('dry-run', shows='SMaRt: lambda 0.1 (eps form), every 2 steps, t 40..60 on ddpm-linear-1000'),
    # docs/metrics.md: the Inception detector is a download.
    f'python calc_metrics.py --metrics=fid50k_full,kid50k_full --network={SNAP}': download(),
    f'python train.py --outdir=runs {TINY_GAN} --kimg=0.2 --tick=0.05 --workers=0 --metrics=fid50k_full '
    '--detector=inception-2015-12-05.pt': download(),
    'python fid.py ref --data=datasets/digits-16x16.zip --dest=refs/digits.npz': download(),
    'python fid.py calc --images=out/images --ref=refs/digits.npz': download(),
    # docs/score-sources.md.
    'python -m edm_bridge models': Entry('run', shows='edm-cifar10-32x32-cond-vp'),
    'python -m edm_bridge info edm-cifar10-32x32-cond-vp': download(),
    'python -m edm_bridge sigmas --schedule ddpm-cosine --t 25,35': Entry('run', shows='25 0.05154'),
    # docs/smart-digits.md: the --quick study runs in its own test; the full study is about 20 minutes.
    'python -m pip install -e ".[bench]"': download(),
    'python benchmarks/smart_digits.py --outdir=runs/smart-digits':
        Entry('covered', by='tests/test_smart_digits.py::test_quick_study_end_to_end'),
    'python benchmarks/smart_digits.py --outdir=runs/smart-digits-quick --quick':
        Entry('covered', by='tests/test_smart_digits.py::test_quick_study_end_to_end'),
    # docs/smart-study/README.md: the dry run prints the stage graph; the study runs end to end (stand-in metrics,
    # tiny budgets) in its own test.
    'python benchmarks/smart_study.py --outdir=runs/smart-study --dry-run': Entry('run', shows='base-s0'),
    'python benchmarks/smart_study.py --outdir=runs/smart-study':
        Entry('covered', by='tests/test_smart_study.py::test_tiny_study_end_to_end_with_stand_in_metric_commands'),
    'python benchmarks/smart_study.py --outdir=runs/smart-study-quick --quick --data=sklearn-digits '
    '--gan-flags="--cbase=256 --cmax=16 --map-depth=2 --batch=8 --aug=noaug"':
        Entry('covered', by='tests/test_smart_study.py::test_tiny_study_end_to_end_with_stand_in_metric_commands'),
    # docs/stylegan2-ada-users.md: released command lines, verbatim (tests/test_released_cli.py resolves them on tiny
    # fixtures with --dry-run); the projector needs the VGG16 detector, the projected-w render its output.
    'python train.py --outdir=~/training-runs --gpus=2 --data=~/datasets/cifar10.zip --cfg=cifar --cond=1': download(),
    'python train.py --outdir=~/training-runs --gpus=8 --data=~/datasets/metfaces.zip --cfg=paper1024 --mirror=1 '
    '--resume=ffhq1024 --snap=10': download(),
    'python train.py --outdir=training-runs --data="~/cifar10.zip" --gpus=4 --cfg cifar --kimg 50000 --aug no '
    '--target 0.6 --noise_sd 0.05 --ts_dist priority': download(),
    'python dataset_tool.py --source=~/downloads/lsun/raw/church_lmdb --dest=~/datasets/lsun_church200k.zip '
    '--transform=center-crop-wide --width=256 --height=256 --max_images=200000': download(),
    f'python projector.py --outdir=out --target=out/images/seed0000.png --num-steps=1000 --seed=303 '
    f'--network={SNAP}': download(),
    f'python generate.py --outdir=out --projected-w=out/projected_w.npz --network={SNAP}': download(),
    f'python style_mixing.py --outdir=out --rows=85,100,75,458,1500 --cols=55,821,1789,293 --styles=0-3 '
    f'--network={SNAP}': Entry('run', makes=('out/grid.png', 'out/1500-293.png'), shows='Wrote 29 images'),
    # docs/toy.md: the default runs in tests/test_readme.py (at a short budget), the others resolve.
    'python -m smart_plugin.toy --quick': Entry('covered', by='tests/test_readme.py::test_main_job_runs'),
    'python -m smart_plugin.toy --methods vanilla,smart --smart-lam 30 --smart-draws 4 --pretrain-dir runs/toy '
    '--outdir runs/toy-draws4': Entry('dry-run', shows='"smart_draws": 4'),
    'python -m smart_plugin.toy --methods vanilla,smart --smart-lam 30 --smart-draws 4 --smart-antithetic '
    '--pretrain-dir runs/toy --outdir runs/toy-anti4': Entry('dry-run', shows='"smart_antithetic": true'),
    'python -m smart_plugin.toy --methods vanilla,smart --smart-lam 30 --smart-draws 1 --smart-grad sds '
    '--pretrain-dir runs/toy --outdir runs/toy-sds': Entry('dry-run', shows='"smart_grad": "sds"'),
    'python -m smart_plugin.toy --methods vanilla,diffgan,smart_diffgan --smart-lam 10 --pretrain-dir runs/toy '
    '--outdir runs/toy-diffgan': Entry('dry-run', shows='"arms": ['),
    'python -m smart_plugin.toy --methods vanilla,smart --smart-lam 10 --steps 6000 --pretrain-dir runs/toy '
    '--outdir runs/toy-longer': Entry('dry-run', shows='"steps": 6000'),
    'python -m smart_plugin.toy.pull_only --seed 0':
        Entry('covered', by='tests/smart_plugin/test_toy_plugins.py::test_pull_only_reports_both_phases_and_moves_G'),
    'python -m smart_plugin.toy --finetune-from 0 --methods vanilla,diffgan,smart,smart_diffgan --smart-lam 0.3 '
    '--smart-draws 1 --outdir runs/toy-scratch': Entry('dry-run', shows='"finetune_from": 0'),
    'python benchmarks/toy_speed.py': Entry('dry-run', shows='toy speed: 24 runs'),
    # docs/train-dpm.md.
    f'python train_dpm.py --outdir=runs/dpm {TINY_DPM}':
        Entry('run', makes=(f'{DPM}/network-snapshot-000003.pkl', f'{DPM}/training-state-000003.pt')),
    f'python train_dpm.py --outdir=runs/dpm {TINY_DPM} --duration=4 --resume={DPM}/training-state-000003.pt':
        Entry('run', makes=(DPM.replace('00000', '00001') + '/network-snapshot-000004.pkl',)),
    f'python generate_dpm.py --network={DPM}/network-snapshot-000003.pkl --seeds=0-15 --grid --outdir=out/dpm':
        Entry('run', makes=('out/dpm/seed0015.png', 'out/dpm/grid.png')),
    f'python train.py --outdir=runs {TINY_GAN} --kimg=0.2 --tick=0.05 --workers=0 --smart-lambda=0.01 '
    f'--smart-dpm={DPM}/network-snapshot-000003.pkl --smart-schedule=ddpm-linear --smart-t=40,60':
        Entry('dry-run', shows='t 40..60 on ddpm-linear-1000 -> sigma 0.1437..0.2085'),
    'torchrun --standalone --nproc_per_node=2 train_dpm.py --outdir=runs --data=~/datasets/cifar10-32x32.zip '
    '--preset=cifar --stf': download(),
    # docs/train-on-cpu.md: MNIST-5k, --cfg=cpu (a long run: resolved, not run), the detector and compare commands.
    'python dataset_tool.py --source=mnist5k --resolution=16x16 --dest=datasets/mnist5k-16x16.zip':
        Entry('covered', by='tests/test_dataset_mnist5k.py::test_cli_writes_5000_digits_500_per_class'),
    'python dataset_tool.py --source=mnist5k --dest=datasets/mnist5k-32x32.zip':
        Entry('covered', by='tests/test_dataset_mnist5k.py::test_default_is_32x32'),
    'python train.py --outdir=runs --data=datasets/mnist5k-16x16.zip --cfg=cpu --aug=noaug --threads=2 --snap=1 '
    '--tick=4 --kimg=200': Entry('covered', by='tests/test_train_cfg_cpu.py::test_cpu_preset'),
    'python -m metrics.train_classifier --data=datasets/mnist5k-16x16.zip --out=detectors/mnist5k-16.pt': Entry(
        'covered',
        by='tests/metrics/test_compare.py::test_train_classifier_prints_accuracy_and_saves_a_16x16_detector'),
    'python calc_metrics.py --network=runs/00000-mnist5k-16x16-cpu-kimg200-noaug/network-snapshot-000200.pkl '
    '--metrics=fid2k_full,kid2k_full,pr2k3_full --detector=detectors/mnist5k-16.pt '
    '--detector-vgg16=detectors/mnist5k-16.pt':
        Entry('covered', by='tests/test_calc_metrics.py::test_pickle_detector_data_flag_and_reference_statistics'),
    'python -m metrics.compare runs/00000-* runs/00001-* --detector=detectors/mnist5k-16.pt --num-gen=2000 '
    '--json=compare.json --curves=curves.png':
        Entry('covered', by='tests/metrics/test_compare.py::test_cli_json_table_and_curves'),
    'python train.py --outdir=runs --data=datasets/mnist5k-16x16.zip --cfg=cpu --aug=noaug --kimg=100 --seed=0':
        Entry('covered', by='tests/test_train_cfg_cpu.py::test_cpu_preset_flags_override'),
    'python train.py --outdir=runs --data=datasets/mnist5k-16x16.zip --cfg=cpu --aug=noaug --kimg=140 '
    '--resume=runs/00000-mnist5k-16x16-cpu-kimg100-noaug/network-snapshot-000100.pkl':
        Entry('covered', by='tests/metrics/test_compare.py::test_groups_pairs_and_cache'),
    'python train.py --outdir=runs --data=datasets/mnist5k-16x16.zip --cfg=cpu --aug=noaug --kimg=140 '
    '--resume=runs/00000-mnist5k-16x16-cpu-kimg100-noaug/network-snapshot-000100.pkl --smart-lambda=0.1 '
    '--smart-dpm=gaussian': Entry('covered', by='tests/metrics/test_compare.py::test_groups_pairs_and_cache'),
    'python -m metrics.compare runs/00001-* runs/00002-* --detector=detectors/mnist5k-16.pt':
        Entry('covered', by='tests/metrics/test_compare.py::test_groups_pairs_and_cache'),
    # docs/training.md.
    f'torchrun --standalone --nproc_per_node=2 train.py --outdir=runs --data=datasets/digits-16x16.zip --gpus=2 '
    f'--batch=8 --cbase=512 --cmax=32 --map-depth=2 --kimg=0.1 --tick=0.05 --workers=0':
        Entry('dry-run', shows='Dry run; exiting.'),
    f'python train.py --outdir=runs {TINY_GAN} --kimg=0.3 --tick=0.05 {GAUSS} {BAND} --workers=0 --resume={SNAP}':
        Entry('run', makes=('runs/00002-digits-16x16-auto1-kimg0.3-batch8-resumecustom-smart0.1/'
                            'network-snapshot-000000.pkl',), shows='weights and training state (exact)'),
}


def split_commands(block: str) -> list[tuple[str, str]]:
    """(command, trailing comment) per command of a bash block: full-line comments and blank lines skipped,
    backslash continuations joined, whitespace collapsed."""
    commands, pending = [], ''
    for line in block.splitlines():
        if not pending and (not line.strip() or line.strip().startswith('#')):
            continue
        pending += ' ' + line.strip()
        if pending.endswith('\\'):
            pending = pending[:-1]
            continue
        command, _, comment = pending.partition(' #')
        # A '#' inside quotes would be cut here; shlex (which knows quotes) must see the same command.
        assert shlex.split(pending, comments=True) == shlex.split(command), pending
        commands.append((' '.join(command.split()), comment.strip()))
        pending = ''
    assert not pending, f'a README command ends in a backslash: {pending}'
    return commands


def documented_pages() -> list[Path]:
    """README.md, then every docs/*.md page (subfolders included) in name order."""
    return [ROOT / 'README.md', *sorted((ROOT / 'docs').rglob('*.md'))]


def documented_commands() -> list[tuple[str, str, str]]:
    """(page, command, trailing comment) for every command of every ```bash block of the documented pages."""
    found = []
    for page in documented_pages():
        text = page.read_text(encoding='utf-8')
        for block in re.findall(r'^```bash\n(.*?)^```', text, re.S | re.M):
            found += [(str(page.relative_to(ROOT)), command, comment) for command, comment in split_commands(block)]
    return found


def readme_commands() -> list[tuple[str, str]]:
    """(command, comment) of every documented command, README.md first."""
    return [(command, comment) for _, command, comment in documented_commands()]


def test_split_commands_joins_continuations_and_keeps_the_comment():
    block = ('# a comment line\n\npython a.py --x=1 \\\n    --y="two words"  # needs download\n'
             'python b.py  # plain\nls\n')
    assert split_commands(block) == [('python a.py --x=1 --y="two words"', 'needs download'),
                                     ('python b.py', 'plain'), ('ls', '')]
    with pytest.raises(AssertionError, match='ends in a backslash'):
        split_commands('python a.py \\\n')


def test_every_documented_command_has_an_entry():
    found = documented_commands()
    commands = [command for _, command, _ in found]
    assert len(commands) == len(set(commands)), 'a command appears twice in the pages; the table needs them distinct'
    missing = [f'{page}: {command}' for page, command, _ in found if command not in COMMANDS]
    assert not missing, ('commands with no entry in tests/test_readme_commands.py COMMANDS (say how the test runs '
                         'each):\n' + '\n'.join(missing))
    stale = [command for command in COMMANDS if command not in commands]
    assert not stale, 'COMMANDS entries whose command is no longer in README.md or docs/:\n' + '\n'.join(stale)
    assert [command for command in COMMANDS] == commands, 'COMMANDS must list the commands in page order'
    assert {page for page, _, _ in found} >= {'README.md', 'docs/training.md', 'docs/train-dpm.md'}


# A training CLI and the flags that bound it on CPU: small networks (or the tiny preset) and a short budget.
BOUNDS = {'train.py': (('--cbase=', '--cmax='), ('--kimg=',)), 'train_dpm.py': (('--preset=tiny',), ())}


def unbounded(command: str) -> list[str]:
    """The bounding flags a CPU training command lacks ([] when bounded or not a training command); train.py's
    --cfg=cpu preset has small networks of its own."""
    words = shlex.split(command)
    script = next((os.path.basename(w) for w in words if os.path.basename(w) in BOUNDS), None)
    if script is None:
        return []
    groups = BOUNDS[script][1:] if script == 'train.py' and '--cfg=cpu' in words else BOUNDS[script]
    wanted = [flag for group in groups for flag in group]
    return [flag for flag in wanted if not any(word.startswith(flag) for word in words)]


def test_every_cpu_training_command_is_bounded():
    checked = 0
    for page, command, _ in documented_commands():
        entry = COMMANDS[command]
        if entry.kind == 'marked' and 'datasets/digits' not in command:
            continue  # Needs a download or GPUs: a released or GPU-sized run, not a paste on this CPU.
        checked += bool(set(BOUNDS) & {os.path.basename(w) for w in shlex.split(command)})
        assert unbounded(command) == [], f'{page}: a CPU training command without {unbounded(command)}: {command}'
    assert checked >= 8, checked
    assert unbounded('torchrun --nproc_per_node=2 train.py --data=d.zip --gpus=2 --batch=32') == [
        '--cbase=', '--cmax=', '--kimg=']
    assert unbounded('python train_dpm.py --data=d.zip --preset=cifar') == ['--preset=tiny']
    assert unbounded('python generate.py --network=x.pkl') == []
    assert unbounded('python train.py --data=d.zip --cfg=cpu --kimg=200') == []
    assert unbounded('python train.py --data=d.zip --cfg=cpu') == ['--kimg=']


def test_unrunnable_commands_carry_the_mark_and_runnable_ones_do_not():
    for command, comment in readme_commands():
        entry = COMMANDS[command]
        marks = MARK.findall(comment)
        if entry.kind == 'marked':
            assert entry.need in marks, f'README command needs {entry.need} but its comment does not say ' \
                                        f'"needs {entry.need}": {command}  # {comment}'
        else:
            assert not marks, f'README command is marked "{comment}" but the test runs it ({entry.kind}): {command}'


def _extras() -> set[str]:
    text = (ROOT / 'pyproject.toml').read_text(encoding='utf-8')
    section = text.split('[project.optional-dependencies]', 1)[1].split('\n[', 1)[0]
    return set(re.findall(r'^([\w-]+)\s*=', section, re.M))


def test_pip_lines_name_the_cpu_index_and_existing_extras():
    assert _extras() == {'test', 'curves', 'bench'}  # What the README installs must exist.
    pip_lines = [command for command, _ in readme_commands() if 'pip install' in command]
    assert len(pip_lines) == 3, pip_lines
    for command in pip_lines:
        assert COMMANDS[command] == download(), f'a pip line is not marked "needs download": {command}'
        for part in command.split('&&'):
            words = shlex.split(part)
            if 'install' not in words:
                continue
            assert words[:4] == ['python', '-m', 'pip', 'install'], part
            if any(word.startswith('torch') for word in words):  # torch's CPU build, never the CUDA default.
                assert CPU_INDEX in part and 'torch==2.13.0' in words, part
            for target in (words[i + 1] for i, word in enumerate(words) if word == '-e'):
                match = re.fullmatch(r'\.(?:\[([\w,-]+)\])?', target)
                assert match, f'pip install -e {target}: expected . or .[extras]'
                assert set(filter(None, (match.group(1) or '').split(','))) <= _extras(), part


def test_covered_commands_name_a_test_that_exists():
    for command, entry in COMMANDS.items():
        if entry.kind != 'covered':
            continue
        path, _, name = entry.by.partition('::')
        tree = ast.parse((ROOT / path).read_text(encoding='utf-8'))
        assert name in {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}, entry.by
        source = (ROOT / path).read_text(encoding='utf-8')
        words = shlex.split(command)
        script = words[2] if words[1] == '-m' else os.path.basename(words[1])   # A module or a script file.
        assert script in source, (command, entry.by)


def _fresh_copy(dest: Path) -> None:
    """The repository's tracked and untracked-but-not-ignored files (what a clone of the working tree holds)."""
    try:
        listed = subprocess.run(['git', 'ls-files', '-co', '--exclude-standard', '-z'], cwd=ROOT, check=True,
                                capture_output=True, timeout=600).stdout.decode().split('\0')
    except (OSError, subprocess.CalledProcessError):  # Not a git checkout: everything but outputs and caches.
        shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns('.git', '__pycache__', '*.egg-info', 'runs', 'out',
                                                                  'datasets', 'refs', '.pytest_cache'))
        return
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)


def _make_photos(home: Path) -> None:
    (home / 'photos').mkdir()
    for i in range(4):
        PIL.Image.new('RGB', (80 + 8 * i, 72), (40 * i, 200 - 30 * i, 90)).save(home / 'photos' / f'photo{i}.png')


@pytest.mark.slow
def test_readme_commands_run_in_order(tmp_path):
    clone, home = tmp_path / 'clone', tmp_path / 'home'
    clone.mkdir()
    home.mkdir()
    _fresh_copy(clone)
    assert not (clone / 'runs').exists() and not (clone / 'datasets').exists()
    env = {k: v for k, v in os.environ.items() if k not in ('DNNLIB_CACHE_DIR', 'SMART_DETECTOR_DIR',
                                                             'PYTHONPATH', 'WORLD_SIZE', 'RANK', 'LOCAL_RANK')}
    env.update(HOME=str(home), PYTHONPATH=str(clone), OMP_NUM_THREADS='1',
               PATH=os.path.dirname(sys.executable) + os.pathsep + env.get('PATH', ''))
    ran = []
    for command, _ in readme_commands():
        entry = COMMANDS[command]
        if entry.kind not in ('run', 'dry-run'):
            continue
        if entry.before == 'photos':
            _make_photos(home)
        script = command + ' --dry-run' if entry.kind == 'dry-run' else command
        # The timeout only guards against a hang: a busy machine may make these many times slower than idle.
        result = subprocess.run(['bash', '-c', script], cwd=clone, env=env, capture_output=True, text=True,
                                timeout=3600)
        output = result.stdout + result.stderr
        assert result.returncode == 0, f'documented command failed ({result.returncode}): {script}\n{output[-4000:]}'
        assert entry.shows in output, f'{script}: expected "{entry.shows}" in its output\n{output[-4000:]}'
        for path in entry.makes:
            made = home / path[2:] if path.startswith('~/') else clone / path
            assert made.is_file(), f'{script}: expected it to make {path}'
        ran.append(command)
    assert ran == [c for c, e in COMMANDS.items() if e.kind in ('run', 'dry-run')] and len(ran) == 24, ran
