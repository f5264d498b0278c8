"""SMaRt on scikit-learn's handwritten digits: a small image-level study with paired controls, as one resumable command.

\b
    python benchmarks/smart_digits.py --outdir=runs/smart-digits            # the study (3 seeds)
    python benchmarks/smart_digits.py --outdir=runs/smart-digits-quick --quick  # a smoke run (minutes)

Stages, each driving the project's own CLIs as subprocesses (logs in <outdir>/logs/); a finished stage is recorded in
<outdir>/state.json and skipped when the command is run again, so an interrupted study continues where it stopped:

\b
1. `dataset_tool.py --source=sklearn-digits`: 1797 digits, 16x16 grey (nearest-neighbour upscaling), labels.
2. A small CNN classifier trained here on 80% of the real digits (test accuracy on the other 20% is reported),
   saved as TorchScript (<outdir>/classifier.pt) with a raw-pixel extractor (<outdir>/pixels.pt): any metric of
   metrics/ and `calc_metrics.py --detector=<outdir>/classifier.pt` use them as detectors.
3. `train_dpm.py --preset=tiny --band-share=0.5 --band-schedule=ddpm-linear --band-t=40,60` for --dpm-kimg: the
   trained score source; its band error (E||D(x + sigma n) - x||^2 / E[sigma^2] on the real digits, sigma
   log-uniform in the band, as benchmarks/dpm_band_error.py reports it; 1 = the identity denoiser) is printed.
4. Per seed, `train.py` (16x16, --cbase/--cmax small, batch 16, no augmentation) for --base-kimg: the base snapshot.
5. Per seed, four arms continue that snapshot with `--resume` for --arm-kimg more: `control` (plain, the paired
   control), `smart-dpm-d1` and `smart-dpm-d4` (SMaRt with the trained score source, --smart-draws 1 and 4), and
   `smart-gauss` (SMaRt with --smart-dpm=gaussian, the closed-form denoiser of a per-pixel Gaussian fitted to the
   data). Every arm of a seed starts from the same snapshot, which carries the RNG state, so all arms see the same
   data order and latents until SMaRt's own draws first diverge them.
6. Evaluation of every arm's final G_ema (--num-gen images, fixed latents): Frechet distance (FD) and precision /
   recall (k=3) on the classifier's 64 penultimate features, KID on raw pixels, and KL(p_gen || p_real) of the
   classifier's class histograms (mode balance); FD at every fine-tuning snapshot for the curves.
7. Report: one table (mean +- std over seeds, and the paired difference arm - control per seed, mean +- std),
   <outdir>/table.md, results.json, grids.png (reals and every arm's fakes side by side), curves.png.

SMaRt settings (why): the eps-form loss at t 40..60 on the DDPM-linear schedule, i.e. sigma 0.144..0.209 in [-1, 1]
units (18 to 27 grey levels), train.py's default for these score sources (docs/training.md): on Karras-1000
(what EDM-type nets and `gaussian` map a --smart-t alone to) t 25..35 is sigma 0.004, below one grey level of 8-bit
data, where the eps-form loss is huge and meaningless (train.py warns at start-up). The score source is trained with band sampling on exactly this
band. lambda 0.1 every 4th iteration (--smart-lambda, --smart-freq): the README's tiny CPU example uses lambda 0.1;
the paper's 0.01 every 8 iterations was set for long CIFAR-10 runs, and in a fine-tuning of a few kimg would give
SMaRt only a handful of steps. train.py prints a second warning if lambda x loss exceeds 10x G's adversarial loss.

Budgets: --base-kimg, --arm-kimg, --dpm-kimg, --seeds, --num-gen; --quick sets tiny ones (1 seed) for a smoke test
whose numbers mean nothing. The defaults took 21.5 minutes on 2 cores with one training process at a time
(`--jobs 1`); `--jobs` (default 2) runs two at once.
"""

import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import threading
import time

import click
import torch
import tqdm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, 'benchmarks')]
import dnnlib  # noqa: E402
import smart_study_stages  # noqa: E402
import smart_digits_eval as ev  # noqa: E402  (the evaluation and report, beside this script)

BAND = dict(schedule='ddpm-linear', t='40,60')
ARMS = ('control', 'smart-dpm-d1', 'smart-dpm-d4', 'smart-gauss')
QUICK = dict(base_kimg=0.064, arm_kimg=0.032, dpm_kimg=0.016, seeds=1, num_gen=256, classifier_epochs=5)
FULL = dict(base_kimg=10.0, arm_kimg=5.0, dpm_kimg=2.0, seeds=3, num_gen=10000, classifier_epochs=30)


class Study:
    """The outdir, its state.json (finished stages with their results) and the stage runner."""

    def __init__(self, outdir: str, options: dict):
        self.outdir = outdir
        self.state_path, self.state = smart_study_stages.open_state(outdir, options)

    def done(self, stage: str) -> bool:
        return stage in self.state['stages']

    def result(self, stage: str):
        return self.state['stages'][stage]

    def record(self, stage: str, result) -> None:
        self.state['stages'][stage] = result
        dnnlib.util.write_atomically(self.state_path, json.dumps(self.state, indent=2).encode('utf-8'))

    def run_cli(self, stage: str, args: list) -> float:
        """Run `python <args>` in the repository root, output to logs/<stage>.log; return the wall time."""
        log_path = os.path.join(self.outdir, 'logs', f'{stage}.log')
        env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
        start = time.time()
        with open(log_path, 'w') as log:
            log.write('$ python ' + ' '.join(args) + '\n')
            log.flush()
            proc = subprocess.run([sys.executable] + args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            with open(log_path) as f:
                tail = f.read()[-3000:]
            raise click.ClickException(f'stage {stage}: `python {" ".join(args[:1])}` exited with {proc.returncode}; '
                                       f'log {log_path} ends with:\n{tail}')
        return time.time() - start

    def fresh_dir(self, *parts) -> str:
        """An empty folder <outdir>/<parts> (a stage that did not finish starts over there)."""
        path = os.path.join(self.outdir, *parts)
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
        return path


def _stage_list(seeds: int) -> list:
    stages = ['dataset', 'classifier', 'dpm']
    for seed in range(seeds):
        stages += [f'base-s{seed}'] + [f'{arm}-s{seed}' for arm in ARMS]
    stages += [f'eval-{arm}-s{seed}' for seed in range(seeds) for arm in ARMS]
    return stages + ['report']


def _gan_args(data: str, outdir: str, seed: int, kimg: float, tick: float, o: dict) -> list:
    return ['train.py', f'--outdir={outdir}', f'--data={data}', f'--cbase={o["cbase"]}', f'--cmax={o["cmax"]}',
            '--map-depth=2', '--batch=16', '--aug=noaug', '--workers=0', f'--threads={o["threads"]}',
            f'--seed={seed}', f'--kimg={kimg:g}', f'--tick={tick:g}', '--snap=1']


def _arm_args(arm: str, dpm_pkl: str, o: dict) -> list:
    if arm == 'control':
        return []
    smart = [f'--smart-lambda={o["smart_lambda"]:g}', f'--smart-freq={o["smart_freq"]}',
             f'--smart-schedule={BAND["schedule"]}', f'--smart-t={BAND["t"]}']
    if arm == 'smart-gauss':
        return smart + ['--smart-dpm=gaussian']
    return smart + [f'--smart-dpm={dpm_pkl}', f'--smart-draws={arm.rsplit("-d", 1)[1]}']


def run_parallel(tasks: dict, jobs: int, stage, bar: tqdm.tqdm) -> None:
    """Run stage(name, fn) for every task {name: (needed stage or None, fn)}, at most `jobs` at once, a task once the
    stage it needs has finished, in the dict's order otherwise. The first failure is raised once the running tasks
    have ended (their finished results are kept in state.json)."""
    pending, running, failure = dict(tasks), {}, None
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        while pending or running:
            ready = [name for name, (need, _) in pending.items() if need is None or need not in pending and
                     need not in running.values()] if failure is None else []
            for name in ready[:jobs - len(running)]:
                running[pool.submit(stage, name, pending.pop(name)[1])] = name
            if not running:
                break
            done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                running.pop(future)
                if future.exception() is not None and failure is None:
                    failure = future.exception()
    if failure is not None:
        raise failure


def run_study(study: Study, o: dict, bar: tqdm.tqdm) -> dict:
    data = os.path.join(study.outdir, 'digits-16x16.zip')
    lock = threading.Lock()

    def stage(name: str, fn):
        if not study.done(name):
            with lock:
                bar.set_description(name)
            result = fn()
            with lock:
                study.record(name, result)
        with lock:
            bar.update(1)
        return study.result(name)

    def make_dataset():
        if os.path.exists(data):
            os.remove(data)  # Left by an interrupted stage: dataset_tool.py refuses to overwrite without a flag.
        return dict(time=study.run_cli('dataset', ['dataset_tool.py', '--source=sklearn-digits', f'--dest={data}']))
    stage('dataset', make_dataset)
    classifier = stage('classifier', lambda: ev.train_detectors(data, study.outdir, o['classifier_epochs']))
    bar.write(f'Classifier test accuracy: {classifier["test_accuracy"]:.4f} ({classifier["split"]["test"]} '
              f'held-out real digits)')

    def train_dpm():
        folder = study.fresh_dir('runs', 'dpm')
        wall = study.run_cli('dpm', ['train_dpm.py', f'--outdir={folder}', f'--data={data}', '--preset=tiny',
                                     '--band-share=0.5', f'--band-schedule={BAND["schedule"]}',
                                     f'--band-t={BAND["t"]}', f'--duration={o["dpm_kimg"]:g}',
                                     f'--tick={o["dpm_kimg"]:g}', '--snap=1', '--workers=0',
                                     f'--threads={o["threads"]}'])
        pkl = ev.last_snapshot(folder)
        return dict(pkl=pkl, time=wall, band_error=ev.band_error(pkl, data, BAND))
    dpm = stage('dpm', train_dpm)
    bar.write(f'Score source band error (1 = identity denoiser): {dpm["band_error"]:.4f}')

    tasks = {}   # Training stages: name -> (the stage it needs, fn); `--jobs` of them run at once.
    for seed in range(o['seeds']):
        def train_base(seed=seed):
            folder = study.fresh_dir('runs', f'base-s{seed}')
            wall = study.run_cli(f'base-s{seed}', _gan_args(data, folder, seed, o['base_kimg'], o['base_kimg'], o))
            return dict(pkl=ev.last_snapshot(folder), time=wall)
        tasks[f'base-s{seed}'] = (None, train_base)
        for arm in ARMS:
            def train_arm(arm=arm, seed=seed):
                base = study.result(f'base-s{seed}')
                folder = study.fresh_dir('runs', f'{arm}-s{seed}')
                args = _gan_args(data, folder, seed, o['base_kimg'] + o['arm_kimg'], o['arm_kimg'] / 4, o)
                wall = study.run_cli(f'{arm}-s{seed}', args + [f'--resume={base["pkl"]}'] +
                                     _arm_args(arm, dpm['pkl'], o))
                return dict(run_dir=folder, pkl=ev.last_snapshot(folder), time=wall)
            tasks[f'{arm}-s{seed}'] = (f'base-s{seed}', train_arm)
    run_parallel(tasks, o['jobs'], stage, bar)

    for seed in range(o['seeds']):
        for arm in ARMS:
            def evaluate(arm=arm, seed=seed):
                trained = study.result(f'{arm}-s{seed}')
                result = ev.evaluate(trained['pkl'], data, study.outdir, o['num_gen'])
                result['curve'] = ev.fd_curve(study.result(f'base-s{seed}')['pkl'], trained['run_dir'], data,
                                              study.outdir, min(o['num_gen'], 2000), o['base_kimg'])
                return result
            stage(f'eval-{arm}-s{seed}', evaluate)
    return stage('report', lambda: ev.report(study, o, ARMS, data))


@click.command(help=__doc__)
@click.option('--outdir', required=True, metavar='DIR', help='Study folder (state.json, runs/, logs/, results)')
@click.option('--quick', is_flag=True, help=f'Tiny budgets for a smoke test: {QUICK}')
@click.option('--base-kimg', type=click.FloatRange(min=0, min_open=True), default=None,
              help=f'GAN training before the arms  [default: {FULL["base_kimg"]}]')
@click.option('--arm-kimg', type=click.FloatRange(min=0, min_open=True), default=None,
              help=f'Fine-tuning per arm  [default: {FULL["arm_kimg"]}]')
@click.option('--dpm-kimg', type=click.FloatRange(min=0, min_open=True), default=None,
              help=f'Score-source training  [default: {FULL["dpm_kimg"]}]')
@click.option('--seeds', type=click.IntRange(min=1), default=None,
              help=f'Seeds 0..N-1, the same in every arm  [default: {FULL["seeds"]}]')
@click.option('--num-gen', type=click.IntRange(min=16), default=None,
              help=f'Generated images per final evaluation  [default: {FULL["num_gen"]}]')
@click.option('--smart-lambda', type=click.FloatRange(min=0, min_open=True), default=0.1, show_default=True)
@click.option('--smart-freq', type=click.IntRange(min=1), default=4, show_default=True)
@click.option('--cbase', type=click.IntRange(min=1), default=256, show_default=True, help='train.py --cbase')
@click.option('--cmax', type=click.IntRange(min=1), default=32, show_default=True, help='train.py --cmax')
@click.option('--threads', type=click.IntRange(min=1), default=1, show_default=True,
              help='CPU threads of each training process')
@click.option('--jobs', type=click.IntRange(min=1), default=min(2, os.cpu_count() or 1), show_default=True,
              help='Training processes at once (a seed\'s arms start when its base is done); 1 = one after another')
def main(outdir, quick, **given):
    preset = QUICK if quick else FULL
    o = {k: (preset[k] if k in preset and v is None else v) for k, v in given.items()}
    o['classifier_epochs'] = preset['classifier_epochs']
    outdir = os.path.abspath(os.path.expanduser(outdir))
    torch.set_num_threads(o['threads'])
    study = Study(outdir, {k: v for k, v in dict(o, quick=quick).items() if k != 'jobs'})   # Speed, not results.
    start = time.time()
    stages = _stage_list(o['seeds'])
    with tqdm.tqdm(total=len(stages), unit='stage', dynamic_ncols=True) as bar:
        report = run_study(study, o, bar)
    print(report['table'])
    print(f'Wrote {report["files"]} to {outdir}; this invocation took {time.time() - start:.0f} s '
          f'(wall time of the training stages, summed over invocations: {report["total_time"]:.0f} s)')


if __name__ == '__main__':
    main()
