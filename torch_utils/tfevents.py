"""TensorBoard events of a training run: the scalars of stats.jsonl, one point per tick, when tensorboard is installed.

As StyleGAN2-ADA's loop does: each stat's tick mean under its own name (Loss/G/loss, SMaRt/loss, DiffGAN/T,
Progress/augment, Metrics/fid50k_full, ...), at global step = kimg (rounded down) and wall time since the start.
Optional: `pip install tensorboard` (the `curves` extra); without it nothing is written and training is unchanged.
"""

import dnnlib


def open_writer(run_dir: str | None):
    """A SummaryWriter on run_dir, or None when run_dir is None or tensorboard cannot be imported."""
    if run_dir is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter  # Deferred: tensorboard is an optional extra.
    except ImportError:
        return None
    return SummaryWriter(run_dir)


def write_tick(writer, stats: dict[str, dnnlib.EasyDict], timestamp: float, start_time: float) -> None:
    """Add each stat's mean of this tick (finite or not, as stats.jsonl holds it) and flush the events file."""
    kimg = stats.get('Progress/kimg')
    global_step = int(kimg.mean) if kimg is not None else None
    for name, value in stats.items():
        writer.add_scalar(name, value.mean, global_step=global_step, walltime=timestamp - start_time)
    writer.flush()
