"""Diagnostic of the 2-D toy (SMaRt, Xia et al., ICML 2024, Figure 2): how far does SMaRt's pull alone take G?

A vanilla GAN is trained for `gan_steps`; then G is trained on SMaRt's term alone (no adversarial loss, same plugin,
same closed-form score) for `pull_steps`, and the toy metrics are measured along the way. The score-matching term is
minimised by *any* distribution supported on the grid points, one mode included; this shows which of those a
parametric MLP generator actually reaches under gradient descent: python -m smart_plugin.toy.pull_only.
"""

import dataclasses
import json

import click
import torch

from smart_plugin.toy import metrics
from smart_plugin.toy.config import ToyConfig
from smart_plugin.toy.engine import BatchedToy, RunSpec
from smart_plugin.toy.workers import FINAL_DATA_SEED, FINAL_SEED


def pull_only(cfg: ToyConfig, seed: int, gan_steps: int, pull_steps: int, num_evals: int = 4,
              num_samples: int = 5000) -> list[dict]:
    """Metrics after the GAN phase and at num_evals evenly spaced points of the pull-only phase; each entry has
    'phase' ('gan' | 'pull'), 'step' (steps of that phase) and the toy metrics. Both phases train with the batched
    engine: vanilla for gan_steps, then a SMaRt run branched from that state (weights, Adam, random streams) whose G
    steps on SMaRt's penalty alone (BatchedToy.pull_step)."""
    for name, value, low in (('gan_steps', gan_steps, 0), ('pull_steps', pull_steps, 1), ('num_evals', num_evals, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f'{name} is {value!r}; expected an integer >= {low}')
    cfg = dataclasses.replace(cfg, smart_start=0.0, num_samples=num_samples)
    gan = BatchedToy([RunSpec('vanilla', seed, cfg, 'gan')])
    for _ in range(gan_steps):
        gan.step()
    mixture = gan.runs[0].mixture
    data = mixture.sample(num_samples, torch.Generator().manual_seed(FINAL_DATA_SEED + seed)).numpy()

    def measure(toy: BatchedToy, phase: str, step: int) -> dict:
        samples = toy.sample(num_samples, FINAL_SEED)[0].numpy()
        return {'phase': phase, 'step': step, **metrics.all_metrics(samples, data, mixture.centers.numpy(), cfg.std)}

    history = [measure(gan, 'gan', gan_steps)]
    pull = BatchedToy([RunSpec('smart', seed, cfg, 'pull')], [gan.export_state(0)], phase_steps=pull_steps)
    evals = {round(pull_steps * (i + 1) / num_evals) for i in range(num_evals)}
    for step in range(1, pull_steps + 1):
        pull.pull_step()
        if step in evals:
            history.append(measure(pull, 'pull', step))
    return history


@click.command()
@click.option('--seed', type=click.IntRange(min=0), default=0, show_default=True, help='Random seed')
@click.option('--gan-steps', type=click.IntRange(min=0), default=6000, show_default=True, help='Vanilla GAN steps first')
@click.option('--pull-steps', type=click.IntRange(min=1), default=4000, show_default=True, help='SMaRt-only G steps')
@click.option('--smart-lam', type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help='SMaRt lambda (x0 form, as the toy default)')
def main(seed, gan_steps, pull_steps, smart_lam):
    """Train a vanilla GAN, then G on SMaRt's term alone; print the toy metrics as JSON lines."""
    for entry in pull_only(ToyConfig(smart_lam=smart_lam), seed, gan_steps, pull_steps):
        click.echo(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in entry.items()}))


if __name__ == '__main__':
    main()
