"""Figures of the 2-D toy (SMaRt, Xia et al., ICML 2024, Figure 2), drawn with PIL only (matplotlib is not a
dependency): scatter panels of samples and line charts of the metrics over training.
"""

import numpy as np
from PIL import Image, ImageDraw

PANEL = 320        # Panel side in pixels.
TITLE = 18         # Title strip height.
MARGIN = 36        # Space for the axis labels of a chart.
COLORS = {'vanilla': (31, 119, 180), 'diffgan': (255, 127, 14), 'smart': (44, 160, 44),
          'smart_diffgan': (214, 39, 40)}
EXTRA_COLORS = [(148, 103, 189), (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
CURVES = {'hq_share': 'high-quality share', 'modes10': 'modes with >= 10% of balanced share', 'kl_hq': 'KL over hq',
          'churn': 'churn (nearest centre changed)'}   # Curve keys and panel titles.


def _color(name: str, index: int) -> tuple:
    return COLORS.get(name, EXTRA_COLORS[index % len(EXTRA_COLORS)])


def scatter_panels(panels: list[tuple[str, np.ndarray]], half_width: float) -> Image.Image:
    """One square panel per (title, points [N, 2]) side by side; the view is [-half_width, half_width]^2."""
    img = Image.new('RGB', (PANEL * len(panels), PANEL + TITLE), 'white')
    draw = ImageDraw.Draw(img)
    for i, (title, points) in enumerate(panels):
        x0 = i * PANEL
        draw.text((x0 + 6, 3), title, fill='black')
        draw.rectangle([x0, TITLE, x0 + PANEL - 1, TITLE + PANEL - 1], outline=(180, 180, 180))
        pix = (np.asarray(points, dtype=np.float64) / half_width + 1) / 2 * (PANEL - 1)   # [N, 2] in pixels
        inside = np.all((pix >= 0) & (pix <= PANEL - 1), axis=1)
        for px, py in pix[inside]:
            u, v = x0 + px, TITLE + (PANEL - 1 - py)   # y axis points up
            draw.rectangle([u - 0.5, v - 0.5, u + 0.5, v + 0.5], fill=(20, 60, 160))
    return img


def _chart(draw: ImageDraw.ImageDraw, box: tuple, title: str, series: dict[str, tuple[list, list]],
           colors: dict) -> None:
    """A line chart of {name: (steps, values)} inside box (left, top, right, bottom) with min/max labels."""
    left, top, right, bottom = box
    draw.text((left + MARGIN, top + 2), title, fill='black')
    x_lo, x_hi = left + MARGIN, right - 8
    y_lo, y_hi = bottom - MARGIN // 2, top + TITLE
    draw.rectangle([x_lo, y_hi, x_hi, y_lo], outline=(160, 160, 160))
    series = {name: (np.asarray(s, float)[[v is not None for v in vals]], np.asarray([v for v in vals if v is not None],
                                                                                   float))
              for name, (s, vals) in series.items()}
    series = {name: sv for name, sv in series.items() if len(sv[0])}
    if not series:
        return
    xs = np.concatenate([s for s, _ in series.values()])
    ys = np.concatenate([v for _, v in series.values()])
    x_min, x_max = float(xs.min()), max(float(xs.max()), float(xs.min()) + 1)
    v_min, v_max = float(ys.min()), float(ys.max())
    v_max = v_max if v_max > v_min else v_min + 1
    draw.text((left + 2, y_hi), f'{v_max:.3g}', fill='black')
    draw.text((left + 2, y_lo - 10), f'{v_min:.3g}', fill='black')
    draw.text((x_hi - 40, y_lo + 3), f'{x_max:.0f}', fill='black')
    for name, (steps, values) in series.items():
        color = colors[name]
        u = x_lo + (np.asarray(steps, float) - x_min) / (x_max - x_min) * (x_hi - x_lo)
        v = y_lo - (np.asarray(values, float) - v_min) / (v_max - v_min) * (y_lo - y_hi)
        points = list(zip(u.tolist(), v.tolist()))
        if len(points) > 1:
            draw.line(points, fill=color, width=2)
        else:
            draw.ellipse([points[0][0] - 2, points[0][1] - 2, points[0][0] + 2, points[0][1] + 2], fill=color)


def curve_panels(curves: dict[str, dict]) -> Image.Image:
    """Charts of CURVES over training steps (x axis), one line per run label, with a colour legend below."""
    legend_rows = (len(curves) + 3) // 4
    img = Image.new('RGB', (PANEL * len(CURVES), PANEL + TITLE * legend_rows), 'white')
    draw = ImageDraw.Draw(img)
    colors = {name: _color(name, j) for j, name in enumerate(curves)}
    for i, (key, title) in enumerate(CURVES.items()):
        series = {m: (c['step'], c.get(key, [None] * len(c['step']))) for m, c in curves.items()}
        _chart(draw, (i * PANEL, 0, (i + 1) * PANEL, PANEL), title + ' (x: step)', series, colors)
    for j, name in enumerate(curves):
        draw.text((MARGIN + PANEL * (j % 4), PANEL + 2 + TITLE * (j // 4)), name, fill=colors[name])
    return img
