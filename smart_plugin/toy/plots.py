"""Figures of the 2-D toy (SMaRt, Xia et al., ICML 2024, Figure 2), drawn with PIL only (matplotlib is not a
dependency): scatter panels of samples, line charts of the metrics over training, and the lambda frontier.
"""

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PANEL = 300        # Scatter panel side in pixels.
CHART = (430, 300) # Plot area of a chart (width, height) in pixels.
PAD = (70, 40, 20, 56)   # Chart margins: left (y ticks and label), top (title), right, bottom (x ticks and label).
LEGEND = 250       # Width of a legend column.
MAX_PANELS = 12    # figure.png shows at most this many panels (real data included).
BLUE, ORANGE, RED, GREY = (31, 119, 180), (255, 127, 14), (214, 39, 40), (120, 120, 120)
PURPLES = [(148, 103, 189), (227, 119, 194), (140, 86, 75)]
EXTRA_COLORS = [(23, 190, 207), (188, 189, 34), (127, 127, 127), (140, 86, 75)]
CURVES = {'hq_share': 'high-quality share', 'modes10': 'modes10 (not starved)', 'kl_hq': 'kl_hq (0 = balanced)',
          'churn': 'churn (nearest centre changed)'}   # Curve keys and y-axis labels.


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)   # Scalable when PIL has FreeType.
    except TypeError:
        return ImageFont.load_default()


def panel_caption(m: dict) -> str:
    """A scatter panel's second title line: its high-quality share and modes."""
    return f'hq share {m["hq_share"]:.2f}, {m["modes"]} modes'


GREENS = np.array([(161, 217, 155), (100, 185, 100), (35, 139, 69), (0, 95, 45), (0, 45, 20)], float)


def _greens(n: int) -> list[tuple]:
    """n greens from light to dark (a lambda ladder reads from weak to strong), spread over GREENS."""
    at = np.linspace(0, len(GREENS) - 1, n) if n > 1 else np.zeros(1)
    return [tuple(int(round(c)) for c in (GREENS[int(np.floor(a))] * (1 - a % 1) +
                                         GREENS[min(int(np.floor(a)) + 1, len(GREENS) - 1)] * (a % 1))) for a in at]


def arm_colors(names: list[str], labels: list[str]) -> dict:
    """A colour per display name: vanilla blue, Diffusion-GAN orange, SMaRt + Diffusion-GAN red, SMaRt arms greens
    from light to dark in order, SMaRt arms that change the estimator (draws, grad, antithetic) purples."""
    method = [lb.split('[', 1)[0] for lb in labels]
    estimator = ['smart_draws' in lb or 'smart_grad' in lb or 'smart_antithetic' in lb for lb in labels]
    greens = iter(_greens(sum(m == 'smart' and not e for m, e in zip(method, estimator))))
    purples, extra, out = iter(PURPLES * 4), iter(EXTRA_COLORS * 4), {}
    for name, m, e in zip(names, method, estimator):
        if m == 'vanilla':
            out[name] = BLUE
        elif m == 'diffgan':
            out[name] = ORANGE
        elif m == 'smart_diffgan':
            out[name] = RED
        elif m == 'smart':
            out[name] = next(purples) if e else next(greens)
        else:
            out[name] = next(extra)
    return out


def scatter_panels(panels: list[tuple[str, np.ndarray, str]], half_width: float,
                   centers: np.ndarray | None = None) -> Image.Image:
    """Square panels of (title, points [N, 2], caption) in a grid; the view is [-half_width, half_width]^2; the
    centres, if given, are marked by faint rings."""
    cols = math.ceil(math.sqrt(len(panels)))
    rows = math.ceil(len(panels) / cols)
    head = 44
    img = Image.new('RGB', (PANEL * cols, (PANEL + head) * rows), 'white')
    draw = ImageDraw.Draw(img)
    title_font, caption_font = _font(17), _font(15)

    def to_pixels(p: np.ndarray) -> np.ndarray:
        return (np.asarray(p, dtype=np.float64) / half_width + 1) / 2 * (PANEL - 1)   # [N, 2]

    for i, (title, points, caption) in enumerate(panels):
        x0, y0 = (i % cols) * PANEL, (i // cols) * (PANEL + head)
        draw.text((x0 + 8, y0 + 3), title, fill='black', font=title_font)
        draw.text((x0 + 8, y0 + 23), caption, fill=(60, 60, 60), font=caption_font)
        top = y0 + head
        draw.rectangle([x0 + 1, top, x0 + PANEL - 2, top + PANEL - 1], outline=(170, 170, 170))
        if centers is not None:
            for px, py in to_pixels(centers):
                u, v = x0 + px, top + (PANEL - 1 - py)
                draw.ellipse([u - 6, v - 6, u + 6, v + 6], outline=(215, 215, 215))
        pix = to_pixels(points)
        inside = np.all((pix >= 0) & (pix <= PANEL - 1), axis=1)
        for px, py in pix[inside]:
            u, v = x0 + px, top + (PANEL - 1 - py)   # y axis points up
            draw.rectangle([u - 0.5, v - 0.5, u + 0.5, v + 0.5], fill=(20, 60, 160))
    return img


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (steps of 1, 2 or 5 times a power of 10)."""
    raw = (hi - lo) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _tick_text(v: float) -> str:
    return f'{v:.0f}' if abs(v) >= 1000 or float(v).is_integer() else f'{v:.3g}'


class Axes:
    """A chart's frame, ticks and labels in box (left, top) of size CHART + PAD; maps data to pixels."""

    def __init__(self, img: Image.Image, left: int, top: int, x_range: tuple, y_range: tuple, title: str,
                 x_label: str, y_label: str) -> None:
        self.draw = draw = ImageDraw.Draw(img)
        self.x0, self.y0 = left + PAD[0], top + PAD[1]
        self.x1, self.y1 = self.x0 + CHART[0], self.y0 + CHART[1]
        (self.xa, self.xb), (self.ya, self.yb) = x_range, y_range
        font, small = _font(16), _font(13)
        draw.text((self.x0, top + 8), title, fill='black', font=font)
        draw.rectangle([self.x0, self.y0, self.x1, self.y1], outline=(130, 130, 130))
        for v in _ticks(*x_range):
            u = self.u(v)
            draw.line([u, self.y1, u, self.y1 + 4], fill=(90, 90, 90))
            draw.line([u, self.y0, u, self.y1], fill=(238, 238, 238))
            draw.text((u, self.y1 + 6), _tick_text(v), fill='black', font=small, anchor='ma')
        for v in _ticks(*y_range):
            w = self.v(v)
            draw.line([self.x0 - 4, w, self.x0, w], fill=(90, 90, 90))
            draw.line([self.x0, w, self.x1, w], fill=(238, 238, 238))
            draw.text((self.x0 - 6, w), _tick_text(v), fill='black', font=small, anchor='rm')
        draw.rectangle([self.x0, self.y0, self.x1, self.y1], outline=(130, 130, 130))
        draw.text(((self.x0 + self.x1) / 2, self.y1 + 26), x_label, fill='black', font=small, anchor='ma')
        label = Image.new('RGBA', (CHART[1], 18), (255, 255, 255, 0))
        ImageDraw.Draw(label).text((CHART[1] / 2, 9), y_label, fill='black', font=small, anchor='mm')
        label = label.rotate(90, expand=True)
        img.paste(label, (left + 4, self.y0), label)

    def u(self, x) -> np.ndarray:
        return self.x0 + (np.asarray(x, float) - self.xa) / (self.xb - self.xa) * (self.x1 - self.x0)

    def v(self, y) -> np.ndarray:
        return self.y1 - (np.asarray(y, float) - self.ya) / (self.yb - self.ya) * (self.y1 - self.y0)

    def line(self, xs, ys, color: tuple, width: int = 3, marks: int = 0) -> None:
        """A polyline through (xs, ys); a dot of radius `marks` at every point (a lone point always gets one)."""
        points = list(zip(self.u(xs).tolist(), self.v(ys).tolist()))
        if len(points) > 1:
            self.draw.line(points, fill=color, width=width, joint='curve')
        r = marks or (3 if len(points) == 1 else 0)
        for u, v in points if r else []:
            self.draw.ellipse([u - r, v - r, u + r, v + r], fill=color)

    def point(self, x: dict, y: dict, color: tuple, size: int = 6) -> None:
        """A marker at the means of x and y ({'mean', 'std'}) with +-std error bars in both directions."""
        u, v = float(self.u(x['mean'])), float(self.v(y['mean']))
        du = float(self.u(x['mean'] + x['std'])) - u
        dv = float(self.v(y['mean'] - y['std'])) - v
        self.draw.line([u - du, v, u + du, v], fill=color, width=2)
        self.draw.line([u, v - dv, u, v + dv], fill=color, width=2)
        self.draw.ellipse([u - size, v - size, u + size, v + size], fill=color, outline='black')

    def text(self, x: float, y: float, text: str, color: tuple, dx: int = 6, dy: int = -14, size: int = 12) -> None:
        self.draw.text((float(self.u(x)) + dx, float(self.v(y)) + dy), text, fill=color, font=_font(size))


def _span(values, lo: float | None = None, pad: float = 0.05) -> tuple[float, float]:
    values = np.asarray([v for v in values if v is not None and np.isfinite(v)], float)
    a = float(values.min()) if lo is None else lo
    b = float(values.max()) if len(values) else a + 1
    b = b if b > a else a + 1
    return a, b + (b - a) * pad


def _legend(draw: ImageDraw.ImageDraw, left: int, top: int, entries: list[tuple[str, tuple, str]]) -> None:
    """Rows of (text, colour, kind) at (left, top); kind 'dot', 'line' or 'dash'."""
    font = _font(14)
    for i, (text, color, kind) in enumerate(entries):
        y = top + 22 * i
        if kind == 'dot':
            draw.ellipse([left + 6, y + 3, left + 16, y + 13], fill=color, outline='black')
        else:
            for a in range(left, left + 22, 7 if kind == 'dash' else 22):
                draw.line([a, y + 8, min(a + (4 if kind == 'dash' else 22), left + 22), y + 8], fill=color, width=3)
        draw.text((left + 28, y), text, fill='black', font=font)


def curve_panels(curves: dict[str, dict], colors: dict[str, tuple]) -> Image.Image:
    """A 2 x 2 grid of charts of CURVES over training steps, one line per arm, the legend beside them."""
    width, height = PAD[0] + CHART[0] + PAD[2], PAD[1] + CHART[1] + PAD[3]
    img = Image.new('RGB', (2 * width + LEGEND, 2 * height), 'white')
    draw = ImageDraw.Draw(img)
    steps = [s for c in curves.values() for s in c['step']] or [0, 1]
    for i, (key, label) in enumerate(CURVES.items()):
        values = [v for c in curves.values() for v in c.get(key, [])]
        y_range = _span(values or [0, 1], lo=0.0)
        ax = Axes(img, (i % 2) * width, (i // 2) * height, _span(steps, lo=0.0, pad=0.02), y_range,
                  label + ', first seed', 'training step (after the branch when fine-tuning)', label)
        for name, c in curves.items():
            pairs = [(s, v) for s, v in zip(c['step'], c.get(key, [])) if v is not None]
            if pairs:
                ax.line([p[0] for p in pairs], [p[1] for p in pairs], colors[name])
    _legend(draw, 2 * width + 8, height - 11 * len(curves), [(name, colors[name], 'line') for name in curves])
    return img


def _short(name: str) -> str:
    """A point's annotation: 'SMaRt lam 30, draws 1' -> 'lam 30, draws 1', 'Diffusion-GAN' as is."""
    return name.removeprefix('SMaRt ') if name.startswith('SMaRt lam') else name


def frontier_panels(front: dict, names: dict[str, str], seeds: int, colors: dict[str, tuple]) -> Image.Image:
    """hq share against modes and against kl_hq: every arm's mean +- std over seeds, the control's trajectory over
    training (grey, step labels) and its psi truncation sweep (black, psi labels); the legend beside them."""
    width, height = PAD[0] + CHART[0] + PAD[2], PAD[1] + CHART[1] + PAD[3]
    img = Image.new('RGB', (2 * width + LEGEND, height + 30), 'white')
    draw = ImageDraw.Draw(img)
    traj, trunc = front.get('trajectory'), front.get('truncation')
    kl_values = [a['kl_hq']['mean'] + a['kl_hq']['std'] for a in front['arms'].values()]
    for ref in (traj, trunc):
        kl_values += ref['kl_hq']['mean'] if ref else []
    for i, (x_key, x_label, x_range) in enumerate((
            ('modes', 'modes (centres with >= 10 high-quality samples)', (0.0, 50.0)),
            ('kl_hq', 'kl_hq (KL from uniform over the hq samples; 0 = balanced)', _span(kl_values, lo=0.0)))):
        ax = Axes(img, i * width, 0, x_range, (0.0, 1.0), f'hq share vs {x_key}, mean +- std over {seeds} seed(s)',
                  x_label, 'high-quality share')
        if traj:
            ax.line(traj[x_key]['mean'], traj['hq_share']['mean'], GREY, marks=2)
            for j in (0, len(traj['step']) - 1):
                ax.text(traj[x_key]['mean'][j], traj['hq_share']['mean'][j], f'step {traj["step"][j]}', GREY, dy=6)
        if trunc:
            ax.line(trunc[x_key]['mean'], trunc['hq_share']['mean'], (0, 0, 0), width=2, marks=3)
            ax.text(trunc[x_key]['mean'][-1], trunc['hq_share']['mean'][-1], f'psi {trunc["psi"][-1]:g}', (0, 0, 0),
                    dx=8, dy=0)
        placed = []
        for label, stats in front['arms'].items():
            ax.point(stats[x_key], stats['hq_share'], colors[names[label]])
            u, v = float(ax.u(stats[x_key]['mean'])), float(ax.v(stats['hq_share']['mean']))
            if label != front['control'] and all(abs(u - a) > 60 or abs(v - b) > 16 for a, b in placed):
                ax.text(stats[x_key]['mean'], stats['hq_share']['mean'], _short(names[label]),
                        colors[names[label]], dx=9, dy=-18, size=13)
                placed.append((u, v))
    entries = [(names[label], colors[names[label]], 'dot') for label in front['arms']]
    if traj:
        entries.append(('control over training', GREY, 'line'))
    if trunc:
        entries.append(('control, latent x psi', (0, 0, 0), 'line'))
    _legend(draw, 2 * width + 8, PAD[1] + 10, entries)
    beats = ', '.join(names[lb] for lb in front['beats_control']) or 'none'
    beats += ' (1 seed: one draw of the noise)' if seeds == 1 and front['beats_control'] else ''
    draw.text((PAD[0], height + 4), f'beats the control on both axes (hq share and modes higher on every seed): '
              f'{beats}', fill='black', font=_font(15))
    return img
