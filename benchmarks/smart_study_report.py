"""Report of benchmarks/smart_study.py: the paired table (the table.md that docs/smart-study/README.md describes),
the frontier's data and plot (precision vs recall, FD vs lambda, with the control's trajectory and truncation sweep),
stage timings."""

import io
import json
import os
import re
import statistics
from typing import Callable

import dnnlib

CONTROL = 'ft-control'                  # The fine-tune arms' control: the base continued plainly.
SCRATCH_CONTROL = 'scratch-control'     # The from-scratch arms' control: the base's snapshot at their length.
CONTROLS = (CONTROL, SCRATCH_CONTROL)
COLUMNS = (('fd', 'FD', 2), ('kid', 'KID', 4), ('precision', 'precision', 3), ('recall', 'recall', 3),
           ('class_kl', 'class KL', 4), ('recognisable', 'recognisable', 3), ('time_sec', 'train time (s)', 0))
PAIRED = (('fd', 2), ('recall', 3), ('class_kl', 4))


def arm_of(run: str) -> tuple:
    """'ft-smart-l0.3-d4-s2' -> ('ft-smart-l0.3-d4', 2)."""
    match = re.fullmatch(r'(.+)-s(\d+)', run)
    if match is None:
        raise ValueError(f'run {run!r}: expected <arm>-s<seed>')
    return match.group(1), int(match.group(2))


def arm_meta(arm: str, scratch_lambdas: list) -> dict:
    """What an arm is: kind (fine-tune / from scratch), source, lambda (eps form) and draws; None where it has none."""
    kind = 'from scratch' if arm.startswith('scratch-') else 'fine-tune'
    match = re.fullmatch(r'ft-smart-l([0-9.e+-]+)-d(\d+)', arm)
    if match:
        return dict(kind=kind, source='trained', lam=float(match.group(1)), draws=int(match.group(2)))
    match = re.fullmatch(r'ft-gauss-l([0-9.e+-]+)', arm)
    if match:
        return dict(kind=kind, source='gaussian', lam=float(match.group(1)), draws=1)
    if arm in ('scratch-smart-A', 'scratch-smart-B'):
        return dict(kind=kind, source='trained', lam=float(scratch_lambdas['AB'.index(arm[-1])]), draws=1)
    if arm == 'scratch-diffgan':
        return dict(kind=kind, source='diffgan', lam=None, draws=None)
    if arm == CONTROL:
        return dict(kind='control', source=None, lam=None, draws=None)
    if arm == SCRATCH_CONTROL:
        return dict(kind='control (from scratch)', source=None, lam=None, draws=None)
    raise ValueError(f'arm {arm!r}: not one of the study\'s arms')


def _mean_std(values: list) -> tuple:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _fmt(values: list, digits: int, sign: bool = False) -> str:
    if any(v is None for v in values):              # E.g. the train time of a control that is a base snapshot.
        return '-'
    mean, std = _mean_std(values)
    return f'{mean:{"+" if sign else ""}.{digits}f} ± {std:.{digits}f}'


def control_of(arm: str) -> str:
    """The arm every row of `arm` is paired with: the from-scratch arms' own control, else ft-control."""
    return SCRATCH_CONTROL if arm.startswith('scratch-') and arm != SCRATCH_CONTROL else CONTROL


def paired(rows: dict, arm: str, key: str) -> list:
    """Per seed, arm minus its control (rows: {arm: {seed: metrics}}), over the seeds both have."""
    control = rows.get(control_of(arm), {})
    seeds = sorted(set(rows[arm]) & set(control))
    return [rows[arm][s][key] - control[s][key] for s in seeds]


def better_than_spread(rows: dict, arm: str) -> bool | None:
    """Whether the arm's mean paired FD difference is an improvement larger than the std of the control's FD over
    seeds; None with fewer than two paired seeds (no spread to compare with)."""
    diffs = paired(rows, arm, 'fd')
    if len(diffs) < 2:
        return None
    spread = _mean_std([m['fd'] for m in rows[control_of(arm)].values()])[1]
    return -statistics.mean(diffs) > spread


def paired_table(rows: dict, scratch_lambdas: list, x0_per_eps: float) -> str:
    """Markdown: per arm, mean ± std over seeds of every column, and arm - control per seed (mean ± std) for FD,
    recall and class KL; the last column says whether the FD improvement exceeds the control's seed spread."""
    header = (['arm', 'lambda (eps; x0 equiv.)'] + [title for _, title, _ in COLUMNS] +
              [f'{title} - control' for title in ('FD', 'recall', 'class KL')] + ['FD better > seed spread'])
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for arm in rows:
        meta = arm_meta(arm, scratch_lambdas)
        lam = '-' if meta['lam'] is None else f'{meta["lam"]:g}; {meta["lam"] * x0_per_eps:.3g}'
        per_seed = [rows[arm][s] for s in sorted(rows[arm])]
        cells = [f'{arm} ({meta["kind"]})' if arm not in CONTROLS else arm, lam]
        cells += [_fmt([m[key] for m in per_seed], digits) for key, _, digits in COLUMNS]
        if arm in CONTROLS:
            cells += ['-'] * (len(PAIRED) + 1)
        else:
            cells += [_fmt(paired(rows, arm, key), digits, sign=True) for key, digits in PAIRED]
            cells.append({True: '**yes**', False: 'no', None: 'n/a (1 seed)'}[better_than_spread(rows, arm)])
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def frontier_data(rows: dict, scratch_lambdas: list, trajectories: list, truncations: list) -> dict:
    """Series of the frontier plot: every arm's mean precision / recall / FD (with FD's std), the control's, FD
    against lambda per (source, draws) of the fine-tune ladder, and the references (the control's trajectory and
    truncation sweep: a list of points per reference seed)."""
    def point(arm):
        per_seed = list(rows[arm].values())
        fd, fd_std = _mean_std([m['fd'] for m in per_seed])
        return dict(arm=arm, precision=statistics.mean(m['precision'] for m in per_seed),
                    recall=statistics.mean(m['recall'] for m in per_seed), fd=fd, fd_std=fd_std,
                    **arm_meta(arm, scratch_lambdas))
    arms = [point(arm) for arm in rows if arm not in CONTROLS]
    ladders = {}
    for p in arms:
        if p['kind'] == 'fine-tune':
            ladders.setdefault(f'{p["source"]}, {p["draws"]} draw(s)', []).append((p['lam'], p['fd'], p['fd_std']))
    keep = ('kimg', 'psi', 'precision', 'recall', 'fd')
    scratch = dict(scratch_control=point(SCRATCH_CONTROL)) if SCRATCH_CONTROL in rows else {}
    return dict(arms=arms, control=point(CONTROL), **scratch, fd_vs_lambda={k: sorted(v) for k, v in ladders.items()},
                trajectory=[[{k: q[k] for k in keep if k in q} for q in t] for t in trajectories],
                truncation=[[{k: q[k] for k in keep if k in q} for q in t] for t in truncations])


def write_frontier(path: str, data: dict) -> None:
    """Two panels: precision vs recall (arms, control, its trajectory and truncation sweep), FD vs lambda."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    for i, points in enumerate(data['trajectory']):
        left.plot([q['recall'] for q in points], [q['precision'] for q in points], 'o-', color='0.6', ms=3,
                  label='control: training trajectory' if i == 0 else None)
    for i, points in enumerate(data['truncation']):
        left.plot([q['recall'] for q in points], [q['precision'] for q in points], 's--', color='C3', ms=3,
                  label='control: truncation psi 1 .. 0.5' if i == 0 else None)
    left.plot(data['control']['recall'], data['control']['precision'], 'k*', ms=12, label='control')
    for i, p in enumerate(data['arms']):
        left.plot(p['recall'], p['precision'], 'o', color=f'C{i % 10}', label=p['arm'])
    left.set_xlabel('recall')
    left.set_ylabel('precision')
    left.legend(fontsize=6)
    c = data['control']
    right.axhspan(c['fd'] - c['fd_std'], c['fd'] + c['fd_std'], color='0.85', label='control ± seed std')
    right.axhline(c['fd'], color='k', lw=1)
    for name, points in data['fd_vs_lambda'].items():
        right.errorbar([q[0] for q in points], [q[1] for q in points], [q[2] for q in points], marker='o',
                       capsize=3, label=name)
    right.set_xscale('log')
    right.set_xlabel('lambda (eps form)')
    right.set_ylabel('FD (detector features)')
    right.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png', dpi=100)
    plt.close(fig)
    dnnlib.util.write_atomically(path, buffer.getvalue())


def timing_table(state_stages: dict) -> str:
    """Markdown: every finished stage's wall time, and the sum."""
    lines = ['| stage | wall time (s) |', '|---|---|']
    lines += [f'| {name} | {entry["time_sec"]:.0f} |' for name, entry in state_stages.items()]
    total = sum(entry['time_sec'] for entry in state_stages.values())
    return '\n'.join(lines + [f'| total (all invocations) | {total:.0f} |'])


def write_report(o: dict, lookup: Callable, outdir: str, runs: list, x0_per_eps: float) -> dict:
    """table.md, frontier.json, frontier.png, timing.md, results.json from the finished stages."""
    rows = {}
    for run in runs:
        arm, seed = arm_of(run)
        metrics = {key: lookup(f'eval-{run}', key) for key, _, _ in COLUMNS if key != 'time_sec'}
        train_sec = None if arm == SCRATCH_CONTROL else lookup(run, 'time_sec')
        rows.setdefault(arm, {})[seed] = dict(metrics, time_sec=train_sec)
    rows = {**{c: rows.pop(c) for c in CONTROLS if c in rows}, **rows}
    scratch = lookup('pick', 'lambdas')
    refs = range(min(o['ref_seeds'], o['seeds']))
    data = frontier_data(rows, scratch, [lookup(f'trajectory-s{s}', 'points') for s in refs],
                         [lookup(f'truncation-s{s}', 'points') for s in refs])
    notes = (f'{o["seeds"]} seed(s); base {o["base_kimg"]:g} kimg (`{o["gan_flags"]}`), fine-tune {o["arm_kimg"]:g} '
             f'kimg, from scratch {o["scratch_kimg"]:g} kimg; {o["num_gen"]} generated images per '
             f'evaluation; score-source band error {lookup("dpm", "band_error"):.4f} (1 = identity). SMaRt: eps form, '
             f't 40..60 on DDPM-linear, every {o["smart_freq"]} steps; x0 equiv. = lambda x mean(1 / sigma^2) over '
             f'the band. Differences: per seed arm - control, then mean ± std. "FD better > seed spread": the mean '
             f'FD difference is an improvement larger than the std of the control\'s FD over seeds. The '
             f'from-scratch arms\' control is scratch-control: the base run\'s snapshot at their length (plain, same '
             f'seed and length).')
    table = paired_table(rows, scratch, x0_per_eps) + '\n\n' + notes + '\n'
    with open(os.path.join(outdir, 'state.json')) as f:
        timing = timing_table(json.load(f)['stages'])
    for name, text in (('table.md', table), ('timing.md', timing + '\n'),
                       ('frontier.json', json.dumps(data, indent=2)),
                       ('results.json', json.dumps(dict(options=o, rows=rows), indent=2))):
        dnnlib.util.write_atomically(os.path.join(outdir, name), text.encode('utf-8'))
    write_frontier(os.path.join(outdir, 'frontier.png'), data)
    flagged = [arm for arm in rows if arm not in CONTROLS and better_than_spread(rows, arm) is True]
    return dict(table='table.md', flagged=flagged)
