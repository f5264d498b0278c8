"""What SMaRt optimizes, measured on every run of benchmarks/smart_study.py: the score-matching loss of the final
G_ema's samples under the study's trained score source, beside the same loss of real digits.

    python benchmarks/smart_study_manifold.py --outdir=runs/smart-study [--num 2000] [--json PATH]

Loss: SMaRt's eps form, mean over pixels of ((D(x + sigma n; sigma) - x) / sigma)^2 (smart_plugin/regularizer.py's
score_matching_loss), t uniform on 40..60 of DDPM-linear (the study's band), one draw per image, the same t and n for
every run (seed 0); G_ema's latents seeded too. A run whose samples lie where the source has learned the data scores
near the real digits' value; SMaRt lowers it by moving G there (or onto the few places where it is lowest).
"""

import json
import os
import sys

import click
import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, 'benchmarks')]
from edm_bridge.loading import load_denoiser  # noqa: E402
from edm_bridge.schedules import parse_schedule  # noqa: E402
from smart_digits_eval import read_digits  # noqa: E402
from smart_plugin.regularizer import draw_noise, score_matching_loss  # noqa: E402
from smart_study import BAND  # noqa: E402
from smart_study_stages import latest_snapshot  # noqa: E402
from training import snapshot  # noqa: E402


@torch.no_grad()
def band_loss(denoiser, images: torch.Tensor, seed: int = 0, batch: int = 500) -> float:
    """Mean SMaRt eps-form loss of images [N, C, H, W] in [-1, 1] over the band, draws seeded."""
    grid = torch.as_tensor(parse_schedule(BAND['schedule']).sigma_grid, dtype=torch.float32)
    lo, hi = (int(t) for t in BAND['t'].split(','))
    t, eps = draw_noise(images, lo, hi, generator=torch.Generator().manual_seed(seed))   # SMaRt's own draws.
    losses = [score_matching_loss(denoiser, images[i:i + batch], grid[t[i:i + batch]], eps[i:i + batch])
              for i in range(0, images.shape[0], batch)]
    return float(torch.cat(losses).mean())


@torch.no_grad()
def samples(pkl: str, num: int, seed: int = 0) -> torch.Tensor:
    G = snapshot.load_network_pkl(pkl)['G_ema'].eval()
    z = torch.randn([num, G.z_dim], generator=torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)                                   # G's noise inputs.
    return torch.cat([G(z[i:i + 500], None, noise_mode='const') for i in range(0, num, 500)]).clamp(-1, 1)


@click.command()
@click.option('--outdir', required=True, metavar='DIR', help='The study folder (state.json, runs/)')
@click.option('--num', type=click.IntRange(min=16), default=2000, show_default=True, help='Images per run')
@click.option('--json', 'json_path', default=None, metavar='PATH', help='Also write the numbers as JSON')
def main(outdir, num, json_path):
    torch.set_num_threads(1)
    with open(os.path.join(outdir, 'state.json')) as f:
        state = json.load(f)
    stages = state['stages']
    denoiser = load_denoiser(stages['dpm']['result']['pkl'], device='cpu')
    data = os.path.join(outdir, f'{state["options"]["data"]}-{state["options"]["resolution"]}.zip')
    real, _ = read_digits(data)
    real = torch.as_tensor(real[np.random.default_rng(0).permutation(len(real))[:num]], dtype=torch.float32)
    result = {'real digits': band_loss(denoiser, real / 127.5 - 1)}
    print(f'real digits: {result["real digits"]:.4f}', flush=True)
    runs = sorted(name for name in os.listdir(os.path.join(outdir, 'runs')) if name != 'dpm')
    todo = [(name, latest_snapshot(os.path.join(outdir, 'runs', name))) for name in runs if name in stages]
    todo += [(name, stages[name]['result']['pkl']) for name in sorted(stages) if name.startswith('scratch-control')]
    for name, pkl in todo:                                    # Finished stages only; base-sS = the fine-tunes' start.
        result[name] = band_loss(denoiser, samples(pkl, num))
        print(f'{name}: {result[name]:.4f}', flush=True)
    if json_path:
        with open(json_path, 'w') as f:
            json.dump(result, f, indent=1)


if __name__ == '__main__':
    main()
