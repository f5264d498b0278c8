"""Evaluation and report of benchmarks/smart_digits.py: detectors, score-source band error, metrics of snapshots
(through metrics/: FD, PR, KID, class-histogram KL), the table, grids and curves."""

import io
import json
import os
import re
import statistics

import numpy as np
import PIL.Image
import PIL.ImageDraw
import torch

import dnnlib
from dataset_io.reader import ImageFolderDataset
from edm_bridge import load_denoiser
from edm_bridge.schedules import parse_schedule
from metrics import classifier_features, frechet_inception_distance, kernel_inception_distance, metric_utils
from metrics import precision_recall
from torch_utils import image_io
from training import snapshot

GRID = 8  # grids of GRID x GRID images per arm


def read_digits(data: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [N, C, H, W], int64 [N] class) of a labelled dataset zip."""
    dataset = ImageFolderDataset(data, use_labels=True)
    images = np.stack([dataset[i][0] for i in range(len(dataset))])
    labels = np.array([int(np.argmax(dataset.get_label(i))) for i in range(len(dataset))], np.int64)
    dataset.close()
    return images, labels


def train_detectors(data: str, outdir: str, epochs: int) -> dict:
    """Train the digit classifier on the real digits; save classifier.pt and pixels.pt (TorchScript)."""
    images, labels = read_digits(data)
    net, accuracy, split = classifier_features.train_classifier(images, labels, epochs=epochs, seed=0)
    classifier_features.save_torchscript(net, os.path.join(outdir, 'classifier.pt'))
    classifier_features.save_torchscript(classifier_features.PixelFeatures(), os.path.join(outdir, 'pixels.pt'))
    return dict(test_accuracy=accuracy, split=split, epochs=epochs)


def snapshot_kimg(name: str) -> float:
    match = re.fullmatch(r'network-snapshot-(\d+(?:\.\d+)?)\.pkl', name)
    return float(match.group(1)) if match else -1.0


def snapshots(folder: str) -> list:
    """[(kimg, path)] of every network-snapshot-*.pkl under folder (one run dir deep), ascending."""
    found = []
    for root, _dirs, files in os.walk(folder):
        found += [(snapshot_kimg(name), os.path.join(root, name)) for name in files if snapshot_kimg(name) >= 0]
    return sorted(found)


def last_snapshot(folder: str) -> str:
    found = snapshots(folder)
    if not found:
        raise FileNotFoundError(f'{folder}: the run wrote no network-snapshot-*.pkl')
    return found[-1][1]


@torch.no_grad()
def band_error(pkl: str, data: str, band: dict, num: int = 512) -> float:
    """E||D(x + sigma n; sigma) - x||^2 / E[sigma^2], sigma log-uniform in the band, on `num` real digits."""
    grid = parse_schedule(band['schedule']).sigma_grid
    lo_t, hi_t = (int(v) for v in band['t'].split(','))
    lo, hi = float(grid[lo_t]), float(grid[hi_t])
    denoiser = load_denoiser(pkl, device='cpu')
    images, _ = read_digits(data)
    x = torch.from_numpy(images[:num]).to(torch.float32) / 127.5 - 1
    gen = torch.Generator().manual_seed(12345)
    sigma = lo * (hi / lo) ** torch.rand([x.shape[0], 1, 1, 1], generator=gen)
    noisy = x + sigma * torch.randn(x.shape, generator=gen)
    err = (denoiser(noisy, sigma.flatten()) - x).square().mean()
    return float(err / sigma.square().mean())


def _load_G(pkl: str) -> torch.nn.Module:
    return snapshot.load_network_pkl(pkl)['G_ema'].eval().requires_grad_(False)


def _opts(G, data: str, detector: str) -> metric_utils.MetricOptions:
    return metric_utils.MetricOptions(G=G, dataset_kwargs=dict(class_name='training.dataset.ImageFolderDataset',
                                                               path=data), device='cpu', cache=False,
                                      detector=detector, detector_vgg16=detector, num_workers=0, random_seed=0)


def _fd(G, data: str, outdir: str, num_gen: int) -> float:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return frechet_inception_distance.compute_fid(_opts(G, data, os.path.join(outdir, 'classifier.pt')),
                                                      None, num_gen)


def evaluate(pkl: str, data: str, outdir: str, num_gen: int) -> dict:
    """FD, precision, recall (classifier features), KID (pixels), class-histogram KL of a snapshot's G_ema."""
    G = _load_G(pkl)
    opts = _opts(G, data, os.path.join(outdir, 'classifier.pt'))
    result = dict(pkl=pkl, fd=_fd(G, data, outdir, num_gen))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        result['precision'], result['recall'] = precision_recall.compute_pr(opts, None, num_gen, 3, 10000, 10000)
        result['kid'] = kernel_inception_distance.compute_kid(_opts(G, data, os.path.join(outdir, 'pixels.pt')),
                                                              None, num_gen, 100, 1000)
        result['class_kl'], result['p_gen'], result['p_real'] = \
            classifier_features.compute_class_histogram_kl(opts, num_gen)
    return result


def fd_curve(base_pkl: str, run_dir: str, data: str, outdir: str, num_gen: int, base_kimg: float) -> list:
    """[(fine-tuning kimg, FD)] from the base snapshot (0) over every snapshot of the arm's run; kimg as the
    snapshot names give it (train.py rounds it down to whole kimg, or to the image below 1 kimg apart)."""
    points = [(0.0, _fd(_load_G(base_pkl), data, outdir, num_gen))]
    for kimg, pkl in snapshots(run_dir):
        if kimg > base_kimg + 1e-9:
            points.append((round(kimg - base_kimg, 6), _fd(_load_G(pkl), data, outdir, num_gen)))
    return points


def _mean_std(values: list, digits: int) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f'{statistics.mean(values):.{digits}f} +- {std:.{digits}f}'


COLUMNS = (('fd', 'FD (classifier)', 3), ('kid', 'KID (pixels)', 4), ('precision', 'precision', 3),
           ('recall', 'recall', 3), ('class_kl', 'class-hist KL', 4), ('time', 'time (s)', 0))


def make_table(rows: dict, arms: tuple) -> str:
    """Markdown table: per arm, mean +- std over seeds of each column, and the paired FD difference to control."""
    header = ['arm'] + [title for _, title, _ in COLUMNS] + ['FD - control (paired)']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for arm in arms:
        cells = [arm] + [_mean_std([r[key] for r in rows[arm]], digits) for key, _, digits in COLUMNS]
        if arm == 'control':
            cells.append('-')
        else:
            cells.append(_mean_std([r['fd'] - c['fd'] for r, c in zip(rows[arm], rows['control'])], 3))
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def _grid(images: np.ndarray, label: str, scale: int = 2) -> PIL.Image.Image:
    """uint8 [N, C, H, W] -> a GRID x GRID grey/RGB tile image with a caption band on top."""
    n, c, h, w = images.shape
    tiles = images[:GRID * GRID].reshape(GRID, GRID, c, h, w).transpose(0, 3, 1, 4, 2).reshape(GRID * h, GRID * w, c)
    tile = PIL.Image.fromarray(tiles[:, :, 0] if c == 1 else tiles).convert('RGB')
    tile = tile.resize((tile.width * scale, tile.height * scale), PIL.Image.Resampling.NEAREST)
    canvas = PIL.Image.new('RGB', (tile.width, tile.height + 14), 'white')
    canvas.paste(tile, (0, 14))
    PIL.ImageDraw.Draw(canvas).text((2, 1), label, fill='black')
    return canvas


@torch.no_grad()
def write_grids(path: str, data: str, pkls: dict) -> None:
    """Reals and every arm's G_ema (the same latents: seeds 0..63) side by side in one PNG."""
    reals, _ = read_digits(data)
    panels = [_grid(reals, 'reals')]
    for arm, pkl in pkls.items():
        G = _load_G(pkl)
        z = torch.from_numpy(np.stack([np.random.RandomState(s).randn(G.z_dim) for s in range(GRID * GRID)]))
        images = image_io.quantize(G(z.float(), torch.zeros([len(z), G.c_dim]))).numpy()
        panels.append(_grid(images, arm))
    gap = 6
    canvas = PIL.Image.new('RGB', (sum(p.width for p in panels) + gap * (len(panels) - 1), panels[0].height), 'white')
    x = 0
    for panel in panels:
        canvas.paste(panel, (x, 0))
        x += panel.width + gap
    buffer = io.BytesIO()
    canvas.save(buffer, format='PNG')
    dnnlib.util.write_atomically(path, buffer.getvalue())


def write_curves(path: str, curves: dict) -> None:
    """FD over the fine-tuning kimg: per arm, each seed thin and the mean over seeds thick."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for index, (arm, per_seed) in enumerate(curves.items()):
        color = f'C{index}'
        for points in per_seed:
            ax.plot([p[0] for p in points], [p[1] for p in points], color=color, alpha=0.3, lw=1)
        length = min(len(points) for points in per_seed)
        mean = [statistics.mean(points[i][1] for points in per_seed) for i in range(length)]
        ax.plot([p[0] for p in per_seed[0][:length]], mean, color=color, lw=2, label=arm)
    ax.set_xlabel('fine-tuning kimg (after the base snapshot)')
    ax.set_ylabel('FD in classifier features (fewer images)')
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png', dpi=100)
    plt.close(fig)
    dnnlib.util.write_atomically(path, buffer.getvalue())


def report(study, o: dict, arms: tuple, data: str) -> dict:
    """The table (printed and table.md), results.json, grids.png and curves.png."""
    rows = {arm: [] for arm in arms}
    curves = {arm: [] for arm in arms}
    for seed in range(o['seeds']):
        for arm in arms:
            result = dict(study.result(f'eval-{arm}-s{seed}'), time=study.result(f'{arm}-s{seed}')['time'], seed=seed)
            rows[arm].append(result)
            curves[arm].append(result['curve'])
    classifier, dpm = study.result('classifier'), study.result('dpm')
    table = make_table(rows, arms)
    total = sum(r.get('time', 0) for r in study.state['stages'].values() if isinstance(r, dict))
    notes = (f'Classifier test accuracy {classifier["test_accuracy"]:.4f} on {classifier["split"]["test"]} held-out '
             f'digits; score-source band error {dpm["band_error"]:.4f} (1 = identity); {o["seeds"]} seed(s), base '
             f'{o["base_kimg"]:g} kimg, arms {o["arm_kimg"]:g} kimg, {o["num_gen"]} generated images per evaluation; time = wall time of the arm\'s train.py process, '
             f'start-up included; FD - control: per seed, then mean +- std over seeds.')
    table = table + '\n\n' + notes
    out = study.outdir
    dnnlib.util.write_atomically(os.path.join(out, 'table.md'), (table + '\n').encode('utf-8'))
    dnnlib.util.write_atomically(os.path.join(out, 'results.json'), json.dumps(
        dict(options=o, classifier=classifier, dpm=dpm, rows=rows), indent=2).encode('utf-8'))
    write_grids(os.path.join(out, 'grids.png'), data, {arm: rows[arm][0]['pkl'] for arm in arms})
    write_curves(os.path.join(out, 'curves.png'), curves)
    return dict(table=table, files='table.md, results.json, grids.png, curves.png', total_time=total)
