"""The 2-D toy experiment of SMaRt (Xia et al., ICML 2024, Figure 2): one call that trains every arm (a method and
its config overrides) for several seeds and writes results.json, samples-<label>-seed<k>.npz and the figures.

All runs of one network shape train as one batched computation (smart_plugin.toy.engine), split over `workers`
processes (one intra-op thread each). With `finetune_from` > 0, a vanilla GAN per seed trains that many steps first
and every arm branches from that same state (weights, Adam moments, random streams); the continued vanilla run is
each seed's paired control, `paired` holds each arm's difference from it and `frontier` (smart_plugin.toy.frontier)
the data of frontier.png.
"""

import dataclasses
import hashlib
import json
import os
import time

import numpy as np
import torch

from smart_plugin.toy import frontier, metrics, plots, workers as pool
from smart_plugin.toy.config import FRONTIER, METHODS, PRESETS, SHAPE_FIELDS, Arm, ToyConfig, build_plugins
from smart_plugin.toy.frontier import method_of
from smart_plugin.toy.engine import RunSpec
from smart_plugin.toy.mixture import GridMixture

__all__ = ['METHODS', 'PRESETS', 'FRONTIER', 'Arm', 'ToyConfig', 'build_plugins', 'plan_runs', 'run_toy', 'summarize',
           'paired']
PRETRAIN_FIELDS = ('grid', 'spacing', 'std', 'z_dim', 'width', 'depth', 'batch', 'lr_G', 'lr_D', 'betas',
                   'finetune_from')   # What the shared vanilla start of a fine-tune study depends on.
UNUSED = {'vanilla': ('smart_', 'diffgan_'), 'diffgan': ('smart_',), 'smart': ('diffgan_',), 'smart_diffgan': ()}
DEFAULTS = ToyConfig()


def effective_key(spec: RunSpec) -> tuple:
    """(method, seed, config with the options the method does not use at their defaults): runs with equal keys are
    the same computation (e.g. the vanilla control at every point of a SMaRt sweep) and train once."""
    unused = {f.name: getattr(DEFAULTS, f.name) for f in dataclasses.fields(ToyConfig)
              if f.name.startswith(UNUSED[spec.method])}
    return spec.method, spec.seed, dataclasses.replace(spec.cfg, **unused)


def plan_runs(cfg: ToyConfig, seeds: list[int], arms: tuple) -> list:
    """RunSpecs of every (arm, seed): each arm's overrides replace those fields of cfg."""
    for arm in arms:
        if not isinstance(arm, Arm):
            raise TypeError(f'arms holds {arm!r}; expected smart_plugin.toy.config.Arm instances')
    return [RunSpec(arm.method, seed, dataclasses.replace(cfg, **dict(arm.overrides)), arm.label)
            for arm in arms for seed in seeds]


def summarize(runs: dict) -> dict:
    """Per label: mean and standard deviation over seeds of every final metric."""
    out = {}
    for label, by_seed in runs.items():
        keys = next(iter(by_seed.values()))['metrics'].keys()
        out[label] = {k: {'mean': float(np.mean([r['metrics'][k] for r in by_seed.values()])),
                          'std': float(np.std([r['metrics'][k] for r in by_seed.values()]))} for k in keys}
    return out


def paired(runs: dict) -> dict:
    """Per label (its control excluded): mean and std over seeds of (metric - the same seed's vanilla control), the
    control being the vanilla run at the same sweep point, else the plain 'vanilla' arm."""
    out = {}
    for label, by_seed in runs.items():
        control_name = frontier.control_label(label, runs)
        if control_name is None or control_name == label or method_of(label) == 'vanilla':
            continue
        control = runs[control_name]
        common = [s for s in by_seed if s in control]
        if not common:
            continue
        keys = by_seed[common[0]]['metrics'].keys()
        diffs = {k: [by_seed[s]['metrics'][k] - control[s]['metrics'][k] for s in common] for k in keys}
        out[label] = {k: {'mean': float(np.mean(d)), 'std': float(np.std(d)), 'n': len(d)} for k, d in diffs.items()}
    return out


def _groups(specs: list[RunSpec]) -> list[list[RunSpec]]:
    """Specs split by network shape (each group one batched computation), in order of first appearance."""
    groups = {}
    for spec in specs:
        groups.setdefault(tuple(getattr(spec.cfg, f) for f in SHAPE_FIELDS), []).append(spec)
    return list(groups.values())


def _atomic_write(path: str, write) -> None:
    tmp = path + '.tmp'
    write(tmp)
    os.replace(tmp, path)


class ResultWriter:
    """Keeps results.json and the npz files in outdir up to date as runs finish (an interrupt keeps what is done)."""

    def __init__(self, outdir: str, header: dict, order: list[str] | None = None) -> None:
        self.outdir, self.header, self.runs, self.order = outdir, header, {}, order or []

    def add(self, spec: RunSpec, result: dict) -> None:
        self.runs.setdefault(spec.label, {})[spec.seed] = result
        rank = {label: i for i, label in enumerate(self.order)}
        self.runs = {label: dict(sorted(self.runs[label].items()))
                     for label in sorted(self.runs, key=lambda lb: rank.get(lb, len(rank)))}
        mixture = GridMixture(spec.cfg.grid, spec.cfg.spacing, spec.cfg.std)
        name = os.path.join(self.outdir, f'samples-{spec.label}-seed{spec.seed}.npz')

        def save(tmp: str) -> None:
            with open(tmp, 'wb') as f:
                np.savez(f, samples=result['samples'], centers=mixture.centers.numpy(), std=np.float64(spec.cfg.std))
        _atomic_write(name, save)
        self.write()

    def results(self) -> dict:
        results = {**self.header, 'finished_runs': sum(len(by_seed) for by_seed in self.runs.values()),
                   'runs': {label: {str(s): {k: v for k, v in r.items() if k != 'samples'} for s, r in by_seed.items()}
                            for label, by_seed in self.runs.items()},
                   'summary': summarize(self.runs)}
        if self.header['config']['finetune_from'] > 0:
            results['paired'] = paired(self.runs)
        results['frontier'] = frontier.frontier_data(self.runs)
        return results

    def write(self) -> None:
        def save(tmp: str) -> None:
            with open(tmp, 'w') as f:
                json.dump(self.results(), f, indent=1)
        _atomic_write(os.path.join(self.outdir, 'results.json'), save)


def _figures(outdir: str, specs: list[RunSpec], runs: dict, front: dict | None) -> None:
    """figure.png (real data and every distinct arm, first seed), curves.png and, with a control, frontier.png."""
    first = specs[0]
    cfg = first.cfg
    mixture = GridMixture(cfg.grid, cfg.spacing, cfg.std)
    real = mixture.sample(cfg.num_samples, torch.Generator().manual_seed(pool.FINAL_DATA_SEED + first.seed)).numpy()
    control = front['control'] if front else None
    labels = [lb for lb in dict.fromkeys(s.label for s in specs if s.seed == first.seed)
              if first.seed in runs.get(lb, {})][:plots.MAX_PANELS - 1]
    centers = mixture.centers.numpy()
    panels = [('real data', real, plots.panel_caption(metrics.mode_metrics(real, centers, cfg.std)))]
    panels += [(frontier.display_name(lb, control), runs[lb][first.seed]['samples'],
                plots.panel_caption(runs[lb][first.seed]['metrics'])) for lb in labels]
    half_width = cfg.spacing * (cfg.grid + 1) / 2
    _atomic_write(os.path.join(outdir, 'figure.png'),
                  lambda tmp: plots.scatter_panels(panels, half_width, centers).save(tmp, format='PNG'))
    curves = {frontier.display_name(lb, control): runs[lb][first.seed]['curves'] for lb in labels}
    colors = plots.arm_colors([frontier.display_name(lb, control) for lb in labels], labels)
    _atomic_write(os.path.join(outdir, 'curves.png'),
                  lambda tmp: plots.curve_panels(curves, colors).save(tmp, format='PNG'))
    if front is not None:
        names = {lb: frontier.display_name(lb, control) for lb in front['arms']}
        _atomic_write(os.path.join(outdir, 'frontier.png'),
                      lambda tmp: plots.frontier_panels(front, names, len(runs[control]),
                                                        plots.arm_colors(list(names.values()), list(names))
                                                        ).save(tmp, format='PNG'))


def run_toy(cfg: ToyConfig, outdir: str, seeds: list[int], arms: tuple = FRONTIER, progress: bool = True,
            workers: int = 1, pretrain_dir: str | None = None) -> dict:
    """Train every (arm, seed); write results.json, samples-<label>-seed<k>.npz (as each run finishes), figure.png,
    curves.png and (with a plain vanilla control) frontier.png into outdir; return the results.

    With cfg.finetune_from > 0 the vanilla starts are saved as pretrain-seed<k>-<hash>.pt in pretrain_dir (default
    outdir) and reused by later commands with the same pretraining config."""
    all_specs = plan_runs(cfg, seeds, arms)
    same = {}
    for spec in all_specs:
        same.setdefault(effective_key(spec), []).append(spec)
    specs = [group[0] for group in same.values()]
    os.makedirs(outdir, exist_ok=True)
    header = {'config': dataclasses.asdict(cfg), 'seeds': list(seeds), 'arms': [arm.label for arm in arms],
              'methods': list(dict.fromkeys(arm.method for arm in arms)), 'train_sec': None}
    writer = ResultWriter(outdir, header, [spec.label for spec in all_specs])
    start = time.time()
    groups = _groups(specs)
    steps = sum(len(g) * g[0].cfg.steps for g in groups)
    pre = _pretrain_specs(specs) if cfg.finetune_from > 0 else []
    states = _load_pretrained(pretrain_dir or outdir, pre)
    pre = [spec for spec in pre if _pretrain_key(spec) not in states]
    steps += sum(len(g) * cfg.finetune_from for g in _groups(pre))
    with pool.Progress(steps, progress) as bar:
        for group in _groups(pre):
            for spec, result in pool.train(group, cfg.finetune_from, bar, workers, export=True, evaluate=False):
                state = {**result['state'], 'trajectory': result['trajectory']}
                states[_pretrain_key(spec)] = state
                _save_pretrained(pretrain_dir or outdir, spec, state)
        for group in groups:
            init = [states[_pretrain_key(s)] for s in group] if cfg.finetune_from > 0 else None
            for spec, result in pool.train(group, group[0].cfg.steps, bar, workers, init=init):
                if init is not None and 'trajectory' in result:
                    before = states[_pretrain_key(spec)].get('trajectory', {})
                    result['trajectory'] = {k: list(before.get(k, [])) + v for k, v in result['trajectory'].items()}
                for twin in same[effective_key(spec)]:
                    writer.add(twin, result)
                if progress:
                    bar.write(f'{spec.label:14s} seed {spec.seed}: ' +
                              ', '.join(f'{k} {v:.4g}' for k, v in result['metrics'].items()))
    writer.header['train_sec'] = time.time() - start
    writer.write()
    results = writer.results()
    _figures(outdir, all_specs, writer.runs, results['frontier'])
    return results


def _pretrain_key(spec: RunSpec) -> tuple:
    return (spec.seed,) + tuple(getattr(spec.cfg, f) for f in PRETRAIN_FIELDS)


def _pretrain_path(folder: str, spec: RunSpec) -> str:
    digest = hashlib.sha1(repr(_pretrain_key(spec)).encode()).hexdigest()[:12]
    return os.path.join(folder, f'pretrain-seed{spec.seed}-{digest}.pt')


def _load_pretrained(folder: str, specs: list[RunSpec]) -> dict:
    """The saved vanilla starts of specs found in folder (tensors only: torch.load with weights_only)."""
    found = {}
    for spec in specs:
        path = _pretrain_path(folder, spec)
        if os.path.exists(path):
            found[_pretrain_key(spec)] = torch.load(path, weights_only=True)
    return found


def _save_pretrained(folder: str, spec: RunSpec, state: dict) -> None:
    os.makedirs(folder, exist_ok=True)
    _atomic_write(_pretrain_path(folder, spec), lambda tmp: torch.save(state, tmp))


def _pretrain_specs(specs: list[RunSpec]) -> list[RunSpec]:
    """One vanilla run per distinct (seed, pretraining config) of the fine-tune specs."""
    out = {}
    for spec in specs:
        out.setdefault(_pretrain_key(spec), RunSpec('vanilla', spec.seed, spec.cfg, 'pretrain'))
    return list(out.values())
