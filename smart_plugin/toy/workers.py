"""Training a group of toy runs (SMaRt, Xia et al., ICML 2024, Figure 2) in this process or in worker processes.

A group (runs of one network shape) is split into contiguous shards, one per worker; each worker trains its shard as
one batched computation with one intra-op thread (a run's result does not depend on its shard). Workers report
progress and finished runs through a queue; the parent shows one progress bar for the whole command.
"""

import multiprocessing
import time
import traceback

import numpy as np
import torch
import tqdm

from smart_plugin.toy import metrics
from smart_plugin.toy.engine import BatchedToy, RunSpec
from smart_plugin.toy.frontier import PSI
from torch_utils import cpu_threads

PROGRESS_EVERY = 25   # Steps between progress messages of a worker.
EVAL_SEED, FINAL_SEED, EVAL_DATA_SEED, FINAL_DATA_SEED = 20_000, 30_000, 10_000, 40_000   # Offsets from a run's seed.


class Progress:
    """One tqdm bar over all run-steps of a command, with an ETA (a no-op when disabled)."""

    def __init__(self, total: int, enabled: bool = True) -> None:
        self.bar = tqdm.tqdm(total=total, unit='run-step', unit_scale=True, disable=not enabled, smoothing=0.1,
                             bar_format='{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}]')

    def update(self, n: int) -> None:
        self.bar.update(n)

    def write(self, line: str) -> None:
        self.bar.write(line) if not self.bar.disable else None

    def __enter__(self) -> 'Progress':
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()


def _evaluate(toy: BatchedToy, eval_data: list, centers: list, prev_k: list, curves: list, step: int) -> None:
    """Append one curve point per run (fixed latents) and remember each point's nearest centre for churn."""
    points = toy.sample(toy.specs[0].cfg.eval_samples, EVAL_SEED).numpy()   # [R, M, 2]
    for r, spec in enumerate(toy.specs):
        m = metrics.mode_metrics(points[r], centers[r], spec.cfg.std)
        k, _ = metrics.nearest_center(points[r].astype(np.float64), centers[r])
        m['w1'] = metrics.sliced_w1(points[r], eval_data[r])
        m['churn'] = None if prev_k[r] is None else metrics.churn(prev_k[r], k)
        prev_k[r] = k
        curves[r]['step'].append(step)
        for key, value in m.items():
            curves[r].setdefault(key, []).append(value)


def _reference(toy: BatchedToy, centers: list, key: str, x, records: dict, psi: float = 1.0) -> None:
    """Append mode metrics of every vanilla run's final latents (scaled by psi) to records[r][key] at x."""
    vanilla = [r for r, spec in enumerate(toy.specs) if spec.method == 'vanilla']
    if not vanilla:
        return
    points = toy.sample(toy.specs[0].cfg.num_samples, FINAL_SEED, psi).numpy()   # [R, num_samples, 2]
    for r in vanilla:
        record = records.setdefault(r, {}).setdefault(key, {})
        record.setdefault('step' if key == 'trajectory' else 'psi', []).append(x)
        for k, v in metrics.mode_metrics(points[r], centers[r], toy.specs[r].cfg.std).items():
            record.setdefault(k, []).append(v)


def train_local(specs: list[RunSpec], steps: int, report=None, init: list | None = None, export: bool = False,
                evaluate: bool = True):
    """Train the runs `specs` as one batched computation for `steps`; yield (index, result) per run at the end.

    result: samples [num_samples, 2] float32, final metrics, curves, train_sec, and `state` (with export); vanilla
    runs also the mode metrics of their final latents over training (`trajectory`, at the curve steps, counted from
    the first step of their first phase) and, with evaluate, with the latents scaled by each of frontier.PSI
    (`truncation`)."""
    start = time.time()
    toy = BatchedToy(specs, init, phase_steps=steps)
    centers = [run.mixture.centers.numpy() for run in toy.runs]
    eval_data = [run.mixture.sample(s.cfg.eval_samples, torch.Generator().manual_seed(EVAL_DATA_SEED + s.seed)).numpy()
                 for run, s in zip(toy.runs, specs)]
    curves, prev_k, references = [{'step': []} for _ in specs], [None] * len(specs), {}
    eval_every = specs[0].cfg.eval_every
    for step in range(1, steps + 1):
        toy.step()
        if step % eval_every == 0 or step == steps:
            _reference(toy, centers, 'trajectory', toy.opt_G.t, references)
            if evaluate:
                _evaluate(toy, eval_data, centers, prev_k, curves, step)
        if report is not None and (step % PROGRESS_EVERY == 0 or step == steps):
            report(len(specs) * (PROGRESS_EVERY if step % PROGRESS_EVERY == 0 else step % PROGRESS_EVERY))
    if evaluate:
        for psi in PSI:
            _reference(toy, centers, 'truncation', psi, references, psi)
    train_sec = time.time() - start
    final = toy.sample(specs[0].cfg.num_samples, FINAL_SEED).numpy().astype(np.float32) if evaluate else None
    for r, spec in enumerate(specs):
        result = {'train_sec': train_sec, 'setup': toy.runs[r].setup_lines, **references.get(r, {})}
        if evaluate:
            data = toy.runs[r].mixture.sample(spec.cfg.num_samples,
                                              torch.Generator().manual_seed(FINAL_DATA_SEED + spec.seed)).numpy()
            m = metrics.all_metrics(final[r], data, centers[r], spec.cfg.std)
            churns = [c for c in curves[r].get('churn', []) if c is not None]
            late = churns[len(churns) // 2:]
            m['churn'] = float(np.mean(late)) if late else 0.0   # Mean over the second half of the curve points.
            result.update(samples=final[r], metrics=m, curves=curves[r])
        if export:
            result['state'] = toy.export_state(r)
        yield r, result


def _plain(obj):
    """obj with tensors as numpy arrays: a tensor sent through a multiprocessing queue is shared through its sender,
    which may have exited by the time the receiver unpickles it."""
    if isinstance(obj, torch.Tensor):
        return ('__tensor__', obj.detach().numpy())
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    return obj


def _tensors(obj):
    """Undo _plain."""
    if isinstance(obj, tuple) and len(obj) == 2 and obj[0] == '__tensor__':
        return torch.from_numpy(obj[1])
    if isinstance(obj, dict):
        return {k: _tensors(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_tensors(v) for v in obj]
    return obj


def _worker(specs, indices, steps, init, export, evaluate, queue) -> None:
    torch.set_num_threads(1)
    cpu_threads.keep_freed_memory()
    try:
        for r, result in train_local(specs, steps, lambda n: queue.put(('progress', n)), init, export, evaluate):
            queue.put(('result', indices[r], _plain(result)))
        queue.put(('done',))
    except KeyboardInterrupt:
        pass
    except BaseException:
        queue.put(('error', traceback.format_exc()))


def run_cost(spec: RunSpec) -> float:
    """Relative cost of a run per step, measured on one core (6 runs of one method, SMaRt on at every step): a
    vanilla step 1, Diffusion-GAN's D-input noise +0.8, SMaRt's penalty +0.8 (+0.06 per extra draw) for the share
    of steps it is on."""
    diffgan, smart = 'diffgan' in spec.method, 'smart' in spec.method   # The plugins of config.METHODS.
    smart_cost = 0.8 + 0.06 * (spec.cfg.smart_draws - 1)   # 16 draws: 2.5x a vanilla step, measured.
    return 1 + 0.8 * diffgan + smart_cost * smart * (1 - spec.cfg.smart_start)


def _shards(specs: list[RunSpec], workers: int) -> list[list[int]]:
    """Indices of the runs per worker, balanced by run_cost (longest first onto the least loaded worker; ties keep
    the original order), each list ascending. The wall time of a group is that of its slowest worker."""
    k = min(workers, len(specs))
    shards, load = [[] for _ in range(k)], [0.0] * k
    for i in sorted(range(len(specs)), key=lambda i: -run_cost(specs[i])):
        w = min(range(k), key=lambda w: (load[w], len(shards[w])))
        shards[w].append(i)
        load[w] += run_cost(specs[i])
    return [sorted(shard) for shard in shards]


def train(specs: list[RunSpec], steps: int, bar: Progress, workers: int = 1, init: list | None = None,
          export: bool = False, evaluate: bool = True):
    """Train one group split over `workers` processes (1 = in this process); yield (spec, result) as runs finish."""
    if workers <= 1 or len(specs) == 1:
        cpu_threads.keep_freed_memory()
        for r, result in train_local(specs, steps, bar.update, init, export, evaluate):
            yield specs[r], result
        return
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context('fork' if 'fork' in methods else 'spawn')
    queue, procs, shards = ctx.Queue(), [], _shards(specs, workers)
    try:
        for shard in shards:
            sub_init = None if init is None else [init[i] for i in shard]
            args = ([specs[i] for i in shard], shard, steps, sub_init, export, evaluate, queue)
            proc = ctx.Process(target=_worker, args=args, daemon=True)
            proc.start()
            procs.append((proc, shard))
        pending = len(procs)
        while pending:
            msg = queue.get()
            if msg[0] == 'progress':
                bar.update(msg[1])
            elif msg[0] == 'result':
                yield specs[msg[1]], _tensors(msg[2])
            elif msg[0] == 'done':
                pending -= 1
            else:
                raise RuntimeError(f'a toy worker failed:\n{msg[1]}')
    finally:
        for proc, _ in procs:
            if proc.is_alive():
                proc.terminate()
            proc.join()
