"""Does SMaRt help a StyleGAN2 that learns? The image-level study as one resumable command.

    python benchmarks/smart_study.py --outdir=runs/smart-study                  # MNIST-5k 16x16, 3 seeds
    python benchmarks/smart_study.py --outdir=runs/smart-study --dry-run        # the stage graph and its commands

Stages (each drives the project's CLIs; logs in <outdir>/logs/; a finished stage is recorded with its wall time in
<outdir>/state.json and skipped on a rerun; an interrupted training stage resumes from its last snapshot (bit for
bit), any other starts over; `--jobs` stages run at once, each as soon as every stage it needs has finished):

  dataset            dataset_tool.py --source=mnist5k --resolution=16x16 (or --data=ZIP, used as it is)
  detector           python -m metrics.train_classifier (the digit classifier whose features every metric uses)
  dpm                train_dpm.py with band sampling on SMaRt's band; its band error is printed (1 = identity)
  base-sS            per seed S, train.py with --gan-flags (default --cfg=cpu) for --base-kimg, a snapshot every
                     --snap-kimg
  ft-*-sS            resumed from base-sS for --arm-kimg: ft-control (plain), ft-smart-l<lambda>-d<K> (trained
                     source, every --lambdas value at every --draws count), ft-gauss-l<lambda> (closed-form Gaussian)
  pick               the two --scratch-lambdas ('auto': the two 1-draw fine-tune lambdas of lowest paired FD)
  scratch-*-sS       from kimg 0 for --scratch-kimg: scratch-smart-A / -B at the picked lambdas, and
                     scratch-diffgan (Diffusion-GAN, released settings; it changes D's inputs, so it cannot resume a
                     plain D).
  scratch-control-sS their paired control: base-sS's snapshot at --scratch-kimg, a plain run of the same seed and
                     length (a run's state at kimg K does not depend on its --kimg; resumes continue bit for bit,
                     tests/training/test_training_loop.py)
  eval-*-sS          python -m metrics.compare on the run: FD, KID, precision, recall, class KL, recognisable
  trajectory-sS      the control's metrics at its snapshots (base then ft-control), for the first --ref-seeds seeds
  truncation-sS      the control's final G_ema at truncation psi 1.0 .. 0.5 (--psis)
  report             table.md (paired differences), frontier.png / frontier.json, timing.md, results.json

SMaRt uses the eps form at t 40..60 on DDPM-linear (sigma 0.144..0.209), every --smart-freq steps; the eps form
weighs the x0 error by 1 / sigma^2, 23.0 .. 48.4 over this band (mean 33.5), so eps-form lambda L is x0-form lambda
33.5 L. The metric commands are reached only through benchmarks/smart_study_metrics.py.
"""

import os
import shlex
import sys
import threading
import time
from typing import Callable

import click

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, 'benchmarks')]
import smart_study_metrics as sm  # noqa: E402  (the adapter to the metric commands)
import smart_study_report as report  # noqa: E402
from edm_bridge.schedules import parse_schedule  # noqa: E402
from smart_digits_eval import band_error, last_snapshot, snapshots  # noqa: E402
from smart_study_stages import Stage, Study, describe_graph, order_stages, run_graph  # noqa: E402

BAND = dict(schedule='ddpm-linear', t='40,60')
SOURCES = ('mnist5k', 'sklearn-digits')              # --data names that dataset_tool.py makes.
SCRATCH_ARMS = ('scratch-smart-A', 'scratch-smart-B', 'scratch-diffgan')
GAN_FLAGS = dict(default='--cfg=cpu')                # The base GAN's train.py flags (--gan-flags overrides).
FULL = dict(base_kimg=200.0, arm_kimg=10.0, scratch_kimg=96.0, snap_kimg=8.0, dpm_kimg=16.0, seeds=3, num_gen=5000,
            lambdas='0.01,0.1,0.3,1,3,10', draws='1,4', gauss_lambda=0.3, scratch_lambdas='auto',
            psis='1,0.9,0.8,0.7,0.6,0.5', ref_seeds=1, trajectory_points=8)
QUICK = dict(FULL, base_kimg=0.064, arm_kimg=0.032, scratch_kimg=0.032, snap_kimg=0.032, dpm_kimg=0.016, seeds=1,
             num_gen=256, lambdas='0.1,1', draws='1', psis='1,0.5', trajectory_points=3)


def x0_per_eps() -> float:
    """Mean of 1 / sigma_t^2 over SMaRt's band (t uniform): the eps form's weight on the x0 error, i.e. eps-form
    lambda L ~ x0-form lambda L * this (33.5 for t 40..60 on DDPM-linear)."""
    sigma = parse_schedule(BAND['schedule']).sigma_grid.astype('float64')
    lo, hi = (int(t) for t in BAND['t'].split(','))
    return float((1 / sigma[lo:hi + 1] ** 2).mean())


def parse_floats(text: str, flag: str) -> list:
    try:
        values = [float(v) for v in text.split(',') if v.strip()]
    except ValueError:
        values = []
    if not values or any(not v > 0 for v in values):
        raise click.BadParameter(f'{text!r}: expected comma-separated numbers > 0', param_hint=flag)
    return values


def ft_arms(o: dict) -> list:
    """[(arm, extra train.py flags)] of the fine-tune arms; the dpm path is '{dpm}'."""
    arms = [('control', [])]
    for draws in parse_floats(o['draws'], '--draws'):
        for lam in parse_floats(o['lambdas'], '--lambdas'):
            arms.append((f'smart-l{lam:g}-d{draws:g}', smart_flags(lam, o) + ['--smart-dpm={dpm}',
                                                                               f'--smart-draws={draws:g}']))
    arms.append((f'gauss-l{o["gauss_lambda"]:g}', smart_flags(o['gauss_lambda'], o) + ['--smart-dpm=gaussian']))
    return [(f'ft-{name}', flags) for name, flags in arms]


def smart_flags(lam, o: dict) -> list:
    """SMaRt's train.py flags at lambda `lam` (a number, or a --dry-run placeholder string)."""
    lam = lam if isinstance(lam, str) else format(lam, 'g')
    return [f'--smart-lambda={lam}', f'--smart-freq={o["smart_freq"]}', f'--smart-schedule={BAND["schedule"]}',
            f'--smart-t={BAND["t"]}']


def gan_args(o: dict, data: str, folder: str, seed: int, kimg: float, tick: float) -> list:
    return (['train.py', f'--outdir={folder}', f'--data={data}'] + shlex.split(o['gan_flags']) +
            ['--workers=0', f'--threads={o["threads"]}', f'--seed={seed}', f'--kimg={kimg:g}', f'--tick={tick:g}',
             '--snap=1'])


def _run_result(folder: str) -> Callable:
    """A training stage's result: its run dir (train.py makes <folder>/<id>-<desc>) and last snapshot."""
    def collect(lookup):
        pkl = last_snapshot(folder)
        return dict(run_dir=os.path.dirname(pkl), pkl=pkl)
    return collect


def build_graph(o: dict, outdir: str) -> list:
    """The study's stages, every stage after those it needs."""
    given_zip = o['data'] not in SOURCES
    data = o['data'] if given_zip else os.path.join(outdir, f'{o["data"]}-{o["resolution"]}.zip')
    detector = os.path.join(outdir, 'detector.pt')
    runs = os.path.join(outdir, 'runs')
    d = () if given_zip else ('dataset',)
    total_kimg = o['base_kimg'] + o['arm_kimg']
    snap = o['snap_kimg']
    stages = [] if given_zip else [Stage('dataset', (), args=lambda lk: [
        'dataset_tool.py', f'--source={o["data"]}', f'--resolution={o["resolution"]}', f'--dest={data}'],
        collect=lambda lk: dict(path=data))]
    stages.append(Stage('detector', d, args=lambda lk: sm.detector_args(data, detector),
                        collect=lambda lk: dict(path=detector)))
    dpm_dir = os.path.join(runs, 'dpm')
    stages.append(Stage('dpm', d, folder=dpm_dir, collect=lambda lk: score_source(dpm_dir, data), args=lambda lk: [
        'train_dpm.py', f'--outdir={dpm_dir}', f'--data={data}', '--preset=tiny', '--band-share=0.5',
        f'--band-schedule={BAND["schedule"]}', f'--band-t={BAND["t"]}', f'--duration={o["dpm_kimg"]:g}',
        f'--tick={o["dpm_kimg"]:g}', '--snap=1', '--workers=0', f'--threads={o["threads"]}']))
    trained = []                                     # Every arm's stage name.
    for seed in range(o['seeds']):
        base = f'base-s{seed}'
        folder = os.path.join(runs, base)
        stages.append(Stage(base, d, folder=folder, collect=_run_result(folder), resumable=True,
                            args=lambda lk, s=seed, f=folder: gan_args(o, data, f, s, o['base_kimg'], snap)))
        for arm, flags in ft_arms(o):
            name, folder = f'{arm}-s{seed}', os.path.join(runs, f'{arm}-s{seed}')
            needs = (base, 'dpm') if '--smart-dpm={dpm}' in flags else (base,)
            stages.append(Stage(name, needs, folder=folder, collect=_run_result(folder), resumable=True,
                                args=lambda lk, s=seed,
                                f=folder, x=flags, b=base: gan_args(o, data, f, s, total_kimg, o['arm_kimg'] / 4) +
                                [f'--resume={lk(b, "pkl")}'] + [v.format(dpm=lk('dpm', 'pkl')) for v in x]))
            trained.append(name)
    pick_needs = ()
    if o['scratch_lambdas'] == 'auto':
        pick_needs = tuple(f'eval-{arm}-s{s}' for s in range(o['seeds']) for arm, _ in ft_arms(o)
                           if arm == 'ft-control' or arm.startswith('ft-smart-') and arm.endswith('-d1'))
    stages.append(Stage('pick', pick_needs, fn=lambda lk: pick_lambdas(o, lk),
                        describe=f'the two from-scratch lambdas: {o["scratch_lambdas"]}'))
    for seed in range(o['seeds']):
        name = f'scratch-control-s{seed}'
        stages.append(Stage(name, (f'base-s{seed}',), describe=f'base-s{seed}\'s snapshot at {o["scratch_kimg"]:g}'
                                                                f' kimg',
                            fn=lambda lk, s=seed: snapshot_at(stage_folder(lk, f'base-s{s}'), o['scratch_kimg'])))
        stages.append(Stage(f'eval-{name}', (name, 'detector'), describe=f'metrics of {name} (evaluate_snapshot)',
                            fn=lambda lk, n=name: evaluate_locked(lk(n, 'pkl'), detector, o['num_gen'])))
        for arm in SCRATCH_ARMS:
            name, folder = f'{arm}-s{seed}', os.path.join(runs, f'{arm}-s{seed}')
            diffgan = arm.endswith('diffgan')
            extra = (lambda lk: ['--diffgan']) if diffgan else (lambda lk, i='AB'.index(arm[-1]): smart_flags(
                _item(lk('pick', 'lambdas'), i), o) + [f'--smart-dpm={lk("dpm", "pkl")}'])
            stages.append(Stage(name, d if diffgan else d + ('pick', 'dpm'), folder=folder, resumable=True,
                                collect=_run_result(folder), args=lambda lk, s=seed, f=folder, x=extra:
                                gan_args(o, data, f, s, o['scratch_kimg'], snap) + x(lk)))
            trained.append(name)
    evals = [f'eval-scratch-control-s{s}' for s in range(o['seeds'])]
    for name in trained:
        folder = os.path.join(outdir, 'eval', name)
        out = os.path.join(folder, 'compare.json')
        stages.append(Stage(f'eval-{name}', (name, 'detector'), folder=folder, args=lambda lk, n=name, j=out:
                            sm.compare_args([lk(n, 'run_dir')], detector, o['num_gen'], j),
                            collect=lambda lk, n=name, j=out: sm.read_compare(j)[_key(lk(n, 'run_dir'))]))
        evals.append(f'eval-{name}')
    refs = []
    for seed in range(min(o['ref_seeds'], o['seeds'])):
        ctl = f'ft-control-s{seed}'
        stages.append(Stage(f'trajectory-s{seed}', (f'base-s{seed}', ctl, 'detector'), describe=(
            f'metrics of up to {o["trajectory_points"]} snapshots of base-s{seed} then {ctl} (evaluate_snapshot)'),
            fn=lambda lk, s=seed: trajectory(o, lk, detector, s)))
        stages.append(Stage(f'truncation-s{seed}', (ctl, 'detector') + d, describe=(
            f'metrics of {ctl} at truncation psi {o["psis"]} (evaluate_truncated)'),
            fn=lambda lk, c=ctl: truncation(o, lk(c, 'pkl'), detector, data)))
        refs += [f'trajectory-s{seed}', f'truncation-s{seed}']
    stages.append(Stage('report', ('dpm', 'pick') + tuple(evals) + tuple(refs), describe=(
        'table.md, frontier.png, frontier.json, timing.md, results.json'),
        fn=lambda lk: report.write_report(o, lk, outdir, trained + [f'scratch-control-s{s}' for s in range(o['seeds'])],
                                          x0_per_eps())))
    return order_stages(stages)


def _item(values, i: int):
    """values[i], or the placeholder '<stage.key>[i]' under --dry-run."""
    return f'{values}[{i}]' if isinstance(values, str) else values[i]


def _key(run_dir: str) -> str:
    return os.path.normpath(os.path.abspath(run_dir))


def pick_lambdas(o: dict, lookup: Callable) -> dict:
    """The two lambdas for the from-scratch arms: given, or the two 1-draw fine-tune lambdas with the lowest mean
    FD difference from their control (ties: the smaller lambda)."""
    if o['scratch_lambdas'] != 'auto':
        values = parse_floats(o['scratch_lambdas'], '--scratch-lambdas')
        return dict(lambdas=values, how='given')
    score = {}
    for lam in parse_floats(o['lambdas'], '--lambdas'):
        diffs = [lookup(f'eval-ft-smart-l{lam:g}-d1-s{s}', 'fd') - lookup(f'eval-ft-control-s{s}', 'fd')
                 for s in range(o['seeds'])]
        score[lam] = sum(diffs) / len(diffs)
    best = sorted(score, key=lambda lam: (score[lam], lam))[:2]
    return dict(lambdas=best, how='auto', mean_fd_difference=score)


# In-process evaluations one at a time: G's noise inputs draw from torch's global RNG, which the metric code seeds;
# two threads drawing from it at once would make the numbers depend on the interleaving.
EVAL_LOCK = threading.Lock()


def trajectory(o: dict, lookup: Callable, detector: str, seed: int) -> dict:
    """The control's metrics at up to trajectory_points of its snapshots (base run, then ft-control), evenly spaced."""
    found = snapshots(stage_folder(lookup, f'base-s{seed}')) + [
        (k, p) for k, p in snapshots(stage_folder(lookup, f'ft-control-s{seed}')) if k > o['base_kimg'] + 1e-9]
    count = min(o['trajectory_points'], len(found))
    picks = sorted({round(i * (len(found) - 1) / max(count - 1, 1)) for i in range(count)})
    with EVAL_LOCK:
        points = [dict(kimg=found[i][0], **sm.evaluate(found[i][1], detector, o['num_gen'])) for i in picks]
    return dict(points=points)


def stage_folder(lookup: Callable, stage: str) -> str:
    """A training stage's folder: every run dir it wrote (a resumed stage has several) is under it."""
    return os.path.dirname(lookup(stage, 'run_dir'))


def snapshot_at(folder: str, kimg: float) -> dict:
    """The snapshot of the run under `folder` at `kimg` (with its run dir); one line if it wrote none there."""
    found = [path for k, path in snapshots(folder) if abs(k - kimg) < 1e-6]
    if not found:
        raise click.ClickException(f'{folder}: no network-snapshot at {kimg:g} kimg (it has '
                                   f'{[k for k, _ in snapshots(folder)]}); --scratch-kimg must be a multiple of '
                                   f'--snap-kimg')
    return dict(pkl=found[-1], run_dir=os.path.dirname(found[-1]))


def evaluate_locked(pkl: str, detector: str, num_gen: int) -> dict:
    with EVAL_LOCK:
        return sm.evaluate(pkl, detector, num_gen)


def truncation(o: dict, pkl: str, detector: str, data: str) -> dict:
    """The control's final metrics at every truncation psi of --psis."""
    with EVAL_LOCK:
        return dict(points=[dict(psi=psi, **sm.evaluate_truncated(pkl, detector, data, o['num_gen'], psi))
                            for psi in parse_floats(o['psis'], '--psis')])


def score_source(folder: str, data: str) -> dict:
    """The trained score source's last snapshot and its band error on the real images (1 = identity denoiser)."""
    pkl = last_snapshot(folder)
    return dict(pkl=pkl, band_error=band_error(pkl, data, BAND))


def check_options(o: dict) -> None:
    """One line naming the flag for a list option that does not parse or does not fit the study."""
    for flag in ('lambdas', 'draws', 'psis') + (() if o['scratch_lambdas'] == 'auto' else ('scratch_lambdas',)):
        parse_floats(o[flag], '--' + flag.replace('_', '-'))
    if any(k != int(k) for k in parse_floats(o['draws'], '')):
        raise click.BadParameter(f'{o["draws"]!r}: expected whole numbers of draws', param_hint='--draws')
    if o['scratch_lambdas'] != 'auto' and len(parse_floats(o['scratch_lambdas'], '')) != 2:
        raise click.BadParameter(f'{o["scratch_lambdas"]!r}: expected two lambdas or auto',
                                 param_hint='--scratch-lambdas')
    if o['scratch_lambdas'] == 'auto' and len(parse_floats(o['lambdas'], '')) < 2:
        raise click.BadParameter(f'{o["lambdas"]!r}: --scratch-lambdas=auto picks two of them; give at least two',
                                 param_hint='--lambdas')
    if o['scratch_kimg'] > o['base_kimg'] or abs(o['scratch_kimg'] / o['snap_kimg'] -
                                                 round(o['scratch_kimg'] / o['snap_kimg'])) > 1e-6:
        raise click.BadParameter(f'{o["scratch_kimg"]:g}: expected at most --base-kimg ({o["base_kimg"]:g}) and a '
                                 f'multiple of --snap-kimg ({o["snap_kimg"]:g}), where base-sS has a snapshot',
                                 param_hint='--scratch-kimg')
    if any(psi > 1 for psi in parse_floats(o['psis'], '')):
        raise click.BadParameter(f'{o["psis"]!r}: expected truncations in (0, 1]', param_hint='--psis')


@click.command(help=__doc__)
@click.option('--outdir', required=True, metavar='DIR', help='Study folder (state.json, runs/, logs/, results)')
@click.option('--data', default='mnist5k', show_default=True, metavar='ZIP|SOURCE',
              help=f'A dataset zip, or a dataset_tool.py source made at --resolution: {", ".join(SOURCES)}')
@click.option('--resolution', default='16x16', show_default=True, help='dataset_tool.py --resolution for a source')
@click.option('--gan-flags', default=GAN_FLAGS['default'], show_default=True,
              help='train.py flags of every GAN run (the base GAN preset)')
@click.option('--quick', is_flag=True, help='Tiny budgets for a smoke test (numbers meaningless)')
@click.option('--base-kimg', type=click.FloatRange(min=0, min_open=True), default=None,
              help=f'Base GAN training  [default: {FULL["base_kimg"]}]')
@click.option('--arm-kimg', type=click.FloatRange(min=0, min_open=True), default=None,
              help=f'Fine-tuning per arm  [default: {FULL["arm_kimg"]}]')
@click.option('--scratch-kimg', type=click.FloatRange(min=0, min_open=True), default=None,
              help=f'Length of the from-scratch arms  [default: {FULL["scratch_kimg"]}]')
@click.option('--snap-kimg', type=click.FloatRange(min=0, min_open=True), default=None,
              help=f'Snapshot interval of the base and from-scratch runs  [default: {FULL["snap_kimg"]}]')
@click.option('--dpm-kimg', type=click.FloatRange(min=0, min_open=True), default=None,
              help=f'Score-source training  [default: {FULL["dpm_kimg"]}]')
@click.option('--seeds', type=click.IntRange(min=1), default=None, help=f'Seeds  [default: {FULL["seeds"]}]')
@click.option('--num-gen', type=click.IntRange(min=16), default=None,
              help=f'Generated images per evaluation  [default: {FULL["num_gen"]}]')
@click.option('--lambdas', default=None, help=f'Fine-tune SMaRt lambda ladder (eps form)  [default: {FULL["lambdas"]}]')
@click.option('--draws', default=None, help=f'--smart-draws counts, each with the whole ladder  [default: '
                                            f'{FULL["draws"]}]')
@click.option('--gauss-lambda', type=click.FloatRange(min=0, min_open=True), default=None,
              help=f'Lambda of the closed-form Gaussian source arm  [default: {FULL["gauss_lambda"]}]')
@click.option('--scratch-lambdas', default=None, help='Two lambdas for the from-scratch arms, or auto (the two '
                                                      '1-draw fine-tune lambdas of lowest paired FD)  [default: auto]')
@click.option('--smart-freq', type=click.IntRange(min=1), default=4, show_default=True)
@click.option('--psis', default=None, help=f'Truncation sweep of the control  [default: {FULL["psis"]}]')
@click.option('--ref-seeds', type=click.IntRange(min=1), default=None,
              help=f'Seeds with trajectory and truncation references  [default: {FULL["ref_seeds"]}]')
@click.option('--trajectory-points', type=click.IntRange(min=2), default=None,
              help=f'Control snapshots evaluated for its trajectory  [default: {FULL["trajectory_points"]}]')
@click.option('--threads', type=click.IntRange(min=1), default=1, show_default=True, help='Threads per process')
@click.option('--jobs', type=click.IntRange(min=1), default=min(2, os.cpu_count() or 1), show_default=True,
              help='Stages at once (each starts when the stages it needs are done)')
@click.option('-n', '--dry-run', is_flag=True, help='Print the stage graph and the commands; run nothing')
def main(outdir, quick, jobs, dry_run, **given):
    preset = QUICK if quick else FULL
    o = {k: (preset[k] if k in preset and v is None else v) for k, v in given.items()}
    o['quick'] = quick
    check_options(o)
    if o['data'] not in SOURCES and not os.path.isfile(o['data']):
        raise click.BadParameter(f'{o["data"]!r}: expected a dataset zip or one of {", ".join(SOURCES)}',
                                 param_hint='--data')
    if o['data'] not in SOURCES:
        o['data'] = os.path.abspath(o['data'])
    outdir = os.path.abspath(os.path.expanduser(outdir))
    stages = build_graph(o, outdir)
    if dry_run:
        print(describe_graph(stages))
        return
    import torch
    torch.set_num_threads(o['threads'])
    study = Study(outdir, o)                         # --jobs changes the speed, not the results: not stored.
    stale = study.forget_stale(stages)
    if stale:
        print(f'Running again, as a stage they need is not finished: {", ".join(stale)}')
    start = time.time()
    total = len(stages)
    earlier = {s.name for s in stages if study.done(s.name)}
    if earlier:
        print(f'{len(earlier)} of {total} stages finished in an earlier invocation (state.json)', flush=True)

    def on_done(name: str) -> None:
        if name in earlier:
            return
        note = {'dpm': lambda: f'; band error {study.lookup("dpm", "band_error"):.4f} (1 = identity denoiser)',
                'pick': lambda: f'; from-scratch lambdas {study.lookup("pick", "lambdas")}'}.get(name, lambda: '')()
        print(f'[{sum(study.done(s.name) for s in stages)}/{total}] {name} ({study.lookup(name, "time_sec"):.0f} s)'
              f'{note}', flush=True)
    run_graph(stages, study.run_stage, jobs, on_done=on_done)
    print(open(os.path.join(outdir, 'table.md')).read())
    print(f'Wrote table.md, frontier.png, frontier.json, timing.md, results.json to {outdir}; this invocation took '
          f'{time.time() - start:.0f} s')


if __name__ == '__main__':
    main()
