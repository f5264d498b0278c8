"""The lambda frontier of the 2-D toy (SMaRt, Xia et al., ICML 2024, Figure 2): every arm's high-quality share
against its modes and its kl_hq, mean and std over seeds, beside two reference curves that cost no training: the
vanilla control's own trajectory over its training steps, and the control with its latent scaled by psi (the toy's
truncation trick). An arm *beats the control* when its paired difference from the same seed's control is positive
in hq_share and in modes on every seed.
"""

import numpy as np

AXES = ('hq_share', 'modes', 'kl_hq')    # The frontier's metrics: y, then the two x axes.
PSI = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3)   # Latent scales of the truncation reference curve.
TABLE = ('hq_share', 'modes', 'modes10', 'kl_hq', 'w1', 'churn')   # Columns of the printed table.
NAMES = {'vanilla': 'vanilla GAN', 'diffgan': 'Diffusion-GAN', 'smart': 'SMaRt', 'smart_diffgan': 'SMaRt+DiffGAN'}
SHORT = {'smart_lam': 'lam', 'smart_draws': 'draws', 'diffgan_t_max': 'tmax'}


def method_of(label: str) -> str:
    return label.split('[', 1)[0]


def display_name(label: str, control: str | None = None) -> str:
    """A label as a reader sees it: 'smart[smart_lam=10.0,smart_draws=1]' -> 'SMaRt lam 10, draws 1'."""
    method = method_of(label)
    name = 'control (vanilla)' if label == control else NAMES.get(method, method)
    if '[' in label:
        parts = []
        for item in label[len(method) + 1:-1].split(','):
            key, _, value = item.partition('=')
            try:
                value = f'{float(value):g}'
            except ValueError:
                pass
            parts.append(f'{SHORT.get(key, key.removeprefix("smart_").removeprefix("diffgan_"))} {value}')
        name += ' ' + ', '.join(parts)
    return name


def control_label(label: str, labels) -> str | None:
    """The paired control of `label`: the vanilla run at the same sweep point, else the plain 'vanilla' arm."""
    same_point = 'vanilla' + label[len(method_of(label)):]
    return same_point if same_point in labels else ('vanilla' if 'vanilla' in labels else None)


def _mean_std(values) -> dict:
    return {'mean': float(np.mean(values)), 'std': float(np.std(values))}


def beats_control(runs: dict) -> list[str]:
    """Labels whose hq_share and modes exceed the same seed's control on every seed (runs: label -> seed -> run)."""
    out = []
    for label, by_seed in runs.items():
        control = control_label(label, runs)
        if control is None or control == label:
            continue
        common = [s for s in by_seed if s in runs[control]]
        if common and all(by_seed[s]['metrics'][k] > runs[control][s]['metrics'][k]
                          for s in common for k in ('hq_share', 'modes')):
            out.append(label)
    return out


def _curve(by_seed: dict, key: str, x: str) -> dict | None:
    """Mean and std over seeds of a per-seed curve runs[.][key] = {x: [...], metric: [...]} at the common x."""
    curves = [run[key] for run in by_seed.values() if key in run]
    if not curves:
        return None
    xs = [v for v in curves[0][x] if all(v in c[x] for c in curves)]
    out = {x: xs}
    for metric in AXES:
        rows = np.array([[c[metric][c[x].index(v)] for v in xs] for c in curves], dtype=float)   # [seeds, points]
        out[metric] = {'mean': rows.mean(0).tolist(), 'std': rows.std(0).tolist()}
    return out


def frontier_data(runs: dict) -> dict | None:
    """The frontier of runs (label -> seed -> run with metrics, and for the control trajectory and truncation):
    per arm the mean and std of AXES, the control's two reference curves and the arms that beat it; None without a
    plain 'vanilla' control or without the AXES metrics."""
    if 'vanilla' not in runs or any(k not in r['metrics'] for by_seed in runs.values() for r in by_seed.values()
                                    for k in AXES):
        return None
    control = runs['vanilla']
    return {'control': 'vanilla',
            'arms': {label: {k: _mean_std([r['metrics'][k] for r in by_seed.values()]) for k in AXES}
                     for label, by_seed in runs.items()},
            'trajectory': _curve(control, 'trajectory', 'step'),
            'truncation': _curve(control, 'truncation', 'psi'),
            'beats_control': beats_control(runs)}


def _cell(stat: dict) -> str:
    return f'{stat["mean"]:.3g} +- {stat["std"]:.2g}'


def table_lines(summary: dict, frontier: dict | None, seeds: int) -> list[str]:
    """The printed table: mean +- std over seeds of TABLE per arm, then the line naming the arms that beat the
    control on both frontier axes (or 'none')."""
    control = frontier['control'] if frontier else None
    names = {label: display_name(label, control) for label in summary}
    width = max(len(n) for n in names.values()) + 2
    lines = [f'mean +- std over {seeds} seed(s)', f'{"arm":{width}s}' + ''.join(f'{k:>17s}' for k in TABLE)]
    for label, stats in summary.items():
        lines.append(f'{names[label]:{width}s}' + ''.join(f'{_cell(stats[k]) if k in stats else "-":>17s}'
                                                          for k in TABLE))
    if frontier is not None:
        winners = ', '.join(names[lb] for lb in frontier['beats_control']) or 'none'
        lines.append(f'beats the control on both axes (hq_share and modes higher on every seed): {winners}'
                     + (' (1 seed: one draw of the noise)' if seeds == 1 and frontier['beats_control'] else ''))
    return lines
