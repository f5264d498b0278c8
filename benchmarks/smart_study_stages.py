"""The stage runner of benchmarks/smart_study.py: stages with what they need, a resumable record of finished ones
(state.json, with each stage's wall time), and a scheduler that runs up to --jobs of them at once."""

import concurrent.futures
import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from typing import Callable

import click

import dnnlib
from smart_digits_eval import snapshots

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Stage:
    """One node of the study: the stages it needs, and either a CLI (args(lookup) after `python`, run in a fresh
    folder) or a Python step (fn(lookup) -> result). lookup(stage, key) reads an earlier stage's result."""

    name: str
    needs: tuple
    args: Callable | None = None
    fn: Callable | None = None
    folder: str | None = None                        # The CLI's output folder (emptied before it runs, unless...)
    resumable: bool = False                          # ...a train.py stage's earlier try left a snapshot: resume it.
    collect: Callable | None = None                  # collect(lookup) -> the CLI stage's result (after it ran).
    describe: str = ''                               # What a Python step does (--dry-run).


def order_stages(stages: list) -> list:
    """Stages sorted so that every stage comes after those it needs, the given order kept otherwise."""
    placed, ordered, pending = set(), [], list(stages)
    while pending:
        ready = next((s for s in pending if all(n in placed for n in s.needs)), None)
        if ready is None:
            raise ValueError(f'stage graph: no order for {[s.name for s in pending]} (a cycle or a missing stage)')
        ordered.append(ready)
        placed.add(ready.name)
        pending.remove(ready)
    return ordered


def open_state(outdir: str, options: dict) -> tuple[str, dict]:
    """(<outdir>/state.json, its content {'options', 'stages'}): read back to resume, or fresh, with <outdir>/logs
    made. One line naming --outdir for a folder that cannot be made, a file that is not a study state, or a study
    made with other options. Used by smart_study.py and smart_digits.py."""
    state_path = os.path.join(outdir, 'state.json')
    try:
        os.makedirs(os.path.join(outdir, 'logs'), exist_ok=True)
    except OSError as err:  # A file, or a folder we may not write.
        raise click.ClickException(f'--outdir: cannot make the study folder {outdir}: {err.strerror}') from None
    if not os.path.isfile(state_path):
        return state_path, dict(options=options, stages={})
    try:
        with open(state_path) as f:
            state = json.load(f)
        if not isinstance(state, dict) or not {'options', 'stages'} <= set(state):
            raise ValueError('expected an object with options and stages')
    except (OSError, ValueError, RecursionError) as err:
        raise click.ClickException(f'--outdir: {state_path} is not a study state ({str(err)[:120]}); '
                                   'pick a new --outdir') from None
    if state['options'] != options:
        diff = {k: (state['options'].get(k), v) for k, v in options.items() if state['options'].get(k) != v}
        raise click.ClickException(f'--outdir: {outdir} holds a study with other options (stored, given): '
                                   f'{diff}; rerun with the same options to resume, or pick a new --outdir')
    return state_path, state


class Study:
    """The outdir, its state.json (finished stages: result and wall time) and the CLI runner."""

    def __init__(self, outdir: str, options: dict):
        self.outdir = outdir
        self.state_path, self.state = open_state(outdir, options)
        self.lock = threading.Lock()

    def done(self, stage: str) -> bool:
        return stage in self.state['stages']

    def lookup(self, stage: str, key: str):
        """A finished stage's result[key], or its wall time for key 'time_sec'."""
        entry = self.state['stages'][stage]
        return entry['time_sec'] if key == 'time_sec' else entry['result'][key]

    def record(self, stage: str, result: dict, wall_sec: float) -> None:
        with self.lock:
            self.state['stages'][stage] = dict(result=result, time_sec=wall_sec)
            self.record_state()

    def record_state(self) -> None:
        dnnlib.util.write_atomically(self.state_path, json.dumps(self.state, indent=2).encode('utf-8'))

    def run_cli(self, stage: str, args: list) -> None:
        """Run `python <args>` in the repository root, output to logs/<stage>.log; one line on failure."""
        log_path = os.path.join(self.outdir, 'logs', f'{stage}.log')
        env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
        with open(log_path, 'w') as log:
            log.write('$ python ' + shlex.join(args) + '\n')
            log.flush()
            proc = subprocess.run([sys.executable] + args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            with open(log_path) as f:
                tail = f.read()[-2000:]
            raise click.ClickException(f'stage {stage}: `python {args[0]} {args[1] if args[0] == "-m" else ""}` '
                                       f'exited with {proc.returncode}; log {log_path} ends with:\n{tail}')

    def forget_stale(self, stages: list) -> list:
        """Drop the records of finished stages that need a stage not finished (it will run again, so what was
        made from its old output is stale); stages in graph order. Returns their names."""
        stale = []
        for stage in stages:
            if self.done(stage.name) and not all(self.done(n) for n in stage.needs):
                del self.state['stages'][stage.name]
                stale.append(stage.name)
        if stale:
            self.record_state()
        return stale

    def run_stage(self, stage: Stage) -> None:
        """Run one stage unless state.json has it; record its result and wall time."""
        if self.done(stage.name):
            return
        start = time.time()
        if stage.args is not None:
            args, own = stage.args(self.lookup), []
            if stage.folder is not None:
                own = snapshots(stage.folder)[-1:] if stage.resumable else []   # [(kimg, path)] or [].
                if not own:
                    shutil.rmtree(stage.folder, ignore_errors=True)   # What an interrupted try left behind.
                    os.makedirs(stage.folder)
            if own:                                  # train.py continues bit for bit from its own snapshot.
                args = [a for a in args if not a.startswith('--resume=')] + [f'--resume={own[0][1]}']
            if not own or own[0][0] < _flag_value(args, '--kimg', float('inf')) - 1e-9:
                self.run_cli(stage.name, args)       # (else the earlier try got to its last snapshot.)
            result = stage.collect(self.lookup) if stage.collect is not None else {}
        else:
            result = stage.fn(self.lookup)
        self.record(stage.name, result, time.time() - start)


def latest_snapshot(folder: str) -> str | None:
    """The network-snapshot-<kimg>.pkl of highest kimg anywhere under folder (train.py writes them atomically, so a
    found one is whole), or None."""
    found = snapshots(folder)
    return found[-1][1] if found else None


def _flag_value(args: list, flag: str, default: float) -> float:
    """The number of `flag=VALUE` in args (the last one), or default."""
    values = [a.split('=', 1)[1] for a in args if a.startswith(flag + '=')]
    return float(values[-1]) if values else default


def run_graph(stages: list, run: Callable, jobs: int, on_done: Callable = lambda name: None) -> None:
    """run(stage) for every stage, at most `jobs` at once, each once all stages it needs have finished, in list
    order otherwise. After a failure nothing new starts; the first failure is raised once the running ones end."""
    pending, running, finished, failure = list(stages), {}, set(), None
    known = {s.name for s in stages}
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        while pending or running:
            ready = [s for s in pending if all(n in finished or n not in known for n in s.needs)]
            for stage in (ready[:jobs - len(running)] if failure is None else []):
                pending.remove(stage)
                running[pool.submit(run, stage)] = stage.name
            if not running:
                break
            done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                name = running.pop(future)
                if future.exception() is None:
                    finished.add(name)
                    on_done(name)
                elif failure is None:
                    failure = future.exception()
    if failure is not None:
        raise failure


def describe_graph(stages: list) -> str:
    """The stage graph as text: each stage, what it needs, and its command (<stage.key> = an earlier result)."""
    lines = []
    for stage in stages:
        lines.append(f'{stage.name}  <- {", ".join(stage.needs) if stage.needs else "(nothing)"}')
        if stage.args is not None:
            lines.append('    $ python ' + shlex.join(stage.args(lambda name, key: f'<{name}.{key}>')))
        else:
            lines.append(f'    {stage.describe}')
    runs = [s for s in stages if s.args is not None and s.args(lambda n, k: '<x>')[0] == 'train.py']
    lines.append(f'{len(stages)} stages, {len(runs)} GAN training runs')
    return '\n'.join(lines)
