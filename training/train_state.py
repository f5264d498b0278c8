"""Set-up and exact resume of a StyleGAN2-ADA training run (Karras et al., NeurIPS 2020), with loss plugins.

`setup_training` builds everything the loop needs (dataset and loader, G, D, G_ema, augmentation, optimizers and
phases, loss, plugins) into one `TrainState`, the *state*, that `training_loop.training_step` advances.
Resume: the weights of G, D and G_ema are copied by name (training/resume.py). Our snapshots also carry a
'training_state' entry (optimizers, counters, pl_mean, augment p, ADA statistics, RNG states, sampler position), so
that a resumed run continues exactly: on CPU, 2 steps + snapshot + resume + 2 steps equal 4 steps bit for bit.
"""

import contextlib
import copy
import dataclasses
import io
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

import dnnlib
from torch_utils import dataset_classes, distributed, misc, training_stats
from torch_utils.data_iter import check_batch, make_data_iterator, resolve_device
from torch_utils.loop_helpers import seed_rngs
from torch_utils.nonfinite_grads import NonFiniteGradMonitor
from torch_utils.tick_report import PhaseTimer, TickReporter
from training import networks
from training.ada_controller import AdaController
from training.loss import StyleGAN2Loss
from training.loss_plugin import LossPlugin
from training.resume import (ResumeCoverageError, ResumeDataError, ResumeError, coverage_report,  # noqa: F401
                             load_resume, read_resume)

if TYPE_CHECKING:
    from training.augment import AugmentPipe

TRAINING_STATE_VERSION = 1


class AdaTuner:
    """ADA's feedback loop on the augment pipe's p: every `interval` steps an AdaController (training/ada_controller.py,
    clamp 'floor': p >= 0, no upper clamp, as in the official code) moves p by the sign of E[sign D(real)] - target.

    The signs reported since the last adjustment are kept as an exact integer count and sum (they are -1, 0 or 1),
    which a snapshot saves, so that a resume in the middle of an interval adjusts p exactly as an uninterrupted run
    would. p itself lives in the pipe's buffer (saved as the snapshot's augment_p).
    """

    STAT = 'Loss/signs/real'

    def __init__(self, augment_pipe: torch.nn.Module, target: float, interval: int, kimg: float, batch_size: int):
        self.augment_pipe = augment_pipe
        self.controller = AdaController(float(target), int(interval), float(kimg), clamp='floor')
        self.batch_size = int(batch_size)
        self.collector = training_stats.Collector(regex=self.STAT)
        self.num = 0    # Signs reported since the last adjustment (all ranks).
        self.total = 0  # Their sum, an integer.

    def _drain(self) -> None:
        self.collector.update()  # Collective with several ranks: every rank calls it at the same steps.
        num = self.collector.num(self.STAT)
        if num > 0:
            self.num += num
            self.total += round(self.collector.mean(self.STAT) * num)  # Sum of signs: an integer, recovered exactly.

    def after_step(self, batch_idx: int) -> None:
        """Adjust p when `batch_idx` (steps done) is a multiple of the interval."""
        if batch_idx % self.controller.interval != 0:
            return
        self._drain()
        if self.num == 0:
            return
        self.controller.p = float(self.augment_pipe.p)  # The pipe's buffer is p's home (a resume restores it there).
        p = self.controller.update(self.total / self.num, self.batch_size)
        self.augment_pipe.p.copy_(torch.as_tensor(p))
        self.num, self.total = 0, 0

    def state_dict(self) -> dict:
        """The signs gathered since the last adjustment (collective with several ranks: it drains the Collector)."""
        self._drain()
        return dict(num=self.num, total=self.total)

    def load_state_dict(self, state: dict) -> None:
        """Restore what state_dict returned."""
        self.num, self.total = int(state['num']), int(state['total'])


@dataclasses.dataclass(slots=True, eq=False)
class TrainState:
    """The run state of the GAN loop: what set-up built and what the steps advance (setup_training builds it)."""

    device: torch.device                        # Where this rank trains.
    rank: int                                   # This process's rank, 0 .. num_gpus - 1.
    num_gpus: int                               # Number of processes.
    random_seed: int                            # Seed of the RNG streams, the data order and the image grid.
    batch_size: int                             # Images a step over all ranks.
    batch_gpu: int                              # Images a round on one rank.
    rounds: int                                 # Accumulation rounds a step: batch_size / (num_gpus * batch_gpu).
    ema_kimg: float                             # G_ema half-life in kimg.
    ema_rampup: float | None                    # EMA ramp-up ratio (half-life <= cur_nimg * ratio); None = no ramp.
    plugins: list[LossPlugin]                   # The loss plugins (SMaRt, Diffusion-GAN), in loss order.
    training_set_kwargs: dict                   # The dataset's construction arguments, stored in snapshots.
    training_set: Any                           # The dataset (training.dataset.ImageFolderDataset or a view of it).
    G: networks.Generator                       # The generator being trained.
    D: networks.Discriminator                   # The discriminator (its labels include the plugins' entries).
    G_ema: networks.Generator                   # The moving average of G that is evaluated and sampled.
    augment_pipe: 'AugmentPipe | None'          # ADA's pipeline on D's inputs; None = no augmentation.
    ada: AdaTuner | None                        # ADA's feedback on augment_pipe.p; None = a fixed p.
    opts: dict[str, torch.optim.Optimizer]      # Adam of 'G' and of 'D'.
    phases: list[dnnlib.EasyDict]               # Gmain / Greg / Dmain / Dreg (or *both): name, module, opt, interval.
    loss: StyleGAN2Loss                         # The loss, which calls the plugins.
    timer: PhaseTimer                           # Wall time per phase, reported each tick.
    grad_monitor: NonFiniteGradMonitor          # Counts NaN/Inf gradient elements scrubbed per phase.
    data_iter: Iterator | None = None           # Batches of (uint8 images, labels); made last, at the resumed batch.
    reporter: TickReporter | None = None        # Status line and stats.jsonl; the loop opens it (None = no ticks).
    cur_nimg: int = 0                           # Images shown so far (all ranks).
    batch_idx: int = 0                          # Steps done.
    cur_tick: int = 0                           # The tick in progress.
    tick_start_nimg: int = 0                    # cur_nimg when that tick began.
    elapsed_sec: float = 0.0                    # Training time before this process (a resumed run continues it).

    def __getitem__(self, name: str) -> Any:
        """A field by name (state['G']), for code that picks networks by name."""
        return getattr(self, name)


def build_networks(training_set, G_kwargs: dict, D_kwargs: dict, extra_c_dim: int, device: torch.device):
    """G, D (with extra_c_dim more label entries for plugins) and G_ema = a copy of G, on `device`, without grads."""
    common = dict(img_resolution=training_set.resolution, img_channels=training_set.num_channels)
    G = networks.Generator(c_dim=training_set.label_dim, **G_kwargs, **common)
    D = networks.Discriminator(c_dim=training_set.label_dim + extra_c_dim, **D_kwargs, **common)
    G = G.train().requires_grad_(False).to(device)
    D = D.train().requires_grad_(False).to(device)
    G_ema = copy.deepcopy(G).eval()
    return G, D, G_ema


# CPU fast path: Adam's fused kernel (one pass over each parameter instead of ~8 operators; the same update to
# float32 round-off, docs/speed.md). Only for networks on the CPU and only where the options leave `fused` and `foreach`
# unset; False = torch's default implementation everywhere.
CPU_FUSED_ADAM = True


def build_phases(G, D, G_opt_kwargs: dict, D_opt_kwargs: dict, G_reg_interval, D_reg_interval):
    """Optimizers {'G', 'D'} and the phases [Gmain, Greg, Dmain, Dreg] (or Gboth / Dboth when an interval is None).

    Lazy regularization (StyleGAN2 appendix B): with a regularizer every k steps, Adam's lr and betas are scaled by
    mb_ratio = k / (k + 1) so that main + reg steps together move the weights as one step per minibatch would.
    """
    opts, phases = {}, []
    for name, module, opt_kwargs, reg_interval in [('G', G, G_opt_kwargs, G_reg_interval),
                                                   ('D', D, D_opt_kwargs, D_reg_interval)]:
        kwargs = dict(opt_kwargs, betas=[float(beta) for beta in opt_kwargs['betas']])  # Adam wants floats.
        if reg_interval is not None:
            if isinstance(reg_interval, bool) or not isinstance(reg_interval, int) or reg_interval < 1:
                raise ValueError(f'{name}_reg_interval must be an int >= 1 or None, got {reg_interval!r}')
            mb_ratio = reg_interval / (reg_interval + 1)
            kwargs['lr'] = kwargs['lr'] * mb_ratio
            kwargs['betas'] = [beta ** mb_ratio for beta in kwargs['betas']]
        kwargs.setdefault('eps', 1e-8)
        on_cpu = all(param.device.type == 'cpu' for param in module.parameters())
        if CPU_FUSED_ADAM and on_cpu and 'fused' not in kwargs and 'foreach' not in kwargs:
            kwargs['fused'] = True
        opts[name] = torch.optim.Adam(module.parameters(), **kwargs)
        if reg_interval is None:
            phases.append(dnnlib.EasyDict(name=name + 'both', module=module, opt=opts[name], interval=1))
        else:
            phases.append(dnnlib.EasyDict(name=name + 'main', module=module, opt=opts[name], interval=1))
            phases.append(dnnlib.EasyDict(name=name + 'reg', module=module, opt=opts[name], interval=reg_interval))
    return opts, phases


def build_augment_pipe(augment_kwargs: dict | None, augment_p: float, device: torch.device):
    """The ADA AugmentPipe with p = augment_p, or None without augmentation (augment_kwargs None)."""
    if augment_kwargs is None:
        return None
    from training.augment import AugmentPipe  # Deferred: runs without augmentation never import it.
    augment_pipe = AugmentPipe(**augment_kwargs).train().requires_grad_(False).to(device)
    augment_pipe.p.copy_(torch.as_tensor(augment_p))
    return augment_pipe


def to_cpu(obj):
    """Deep copy of nested dicts/lists/tuples with every tensor cloned to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {key: to_cpu(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(value) for value in obj)
    return obj


def _rng_state(device: torch.device) -> dict:
    state = dict(torch=torch.get_rng_state(), numpy=np.random.get_state(), cuda=None)
    if device.type == 'cuda':
        state['cuda'] = torch.cuda.get_rng_state(device)
    return state


def capture_training_state(state: TrainState, next_tick: int) -> dict:
    """Everything beyond the weights that an exact resume needs, as plain values and CPU tensors.

    Collective with several ranks (ADA statistics, RNG states of every rank): all ranks must call it together.
    `next_tick` is the tick number the resumed run continues with.
    """
    return dict(
        version=TRAINING_STATE_VERSION,
        cur_nimg=state.cur_nimg, batch_idx=state.batch_idx, cur_tick=next_tick, tick_start_nimg=state.cur_nimg,
        elapsed_sec=state.reporter.elapsed_sec() if state.reporter is not None else 0.0,
        num_gpus=state.num_gpus, batch_size=state.batch_size,
        optimizers={name: to_cpu(opt.state_dict()) for name, opt in state.opts.items()},
        loss=to_cpu(state.loss.state_dict()),
        augment_p=None if state.augment_pipe is None else float(state.augment_pipe.p),
        ada=None if state.ada is None else state.ada.state_dict(),
        rng=distributed.gather_objects(to_cpu(_rng_state(state.device))),
    )


def restore_training_state(state: TrainState, saved: dict, log=print) -> None:
    """Restore what capture_training_state saved (counters, optimizers, pl_mean, p, ADA statistics, RNG states)."""
    if not isinstance(saved, dict) or saved.get('version') != TRAINING_STATE_VERSION:
        got = saved.get('version') if isinstance(saved, dict) else type(saved).__name__
        raise ValueError(f"resume_pkl: training_state version {got!r}; expected {TRAINING_STATE_VERSION}")
    for key in ('cur_nimg', 'batch_idx', 'cur_tick', 'tick_start_nimg', 'elapsed_sec'):
        setattr(state, key, saved[key])
    for name, opt in state.opts.items():
        opt.load_state_dict(saved['optimizers'][name])
    state.loss.load_state_dict(saved['loss'])
    if state.augment_pipe is not None and saved['augment_p'] is not None:
        state.augment_pipe.p.copy_(torch.as_tensor(saved['augment_p']))
    if state.ada is not None and saved['ada'] is not None:
        state.ada.load_state_dict(saved['ada'])
    if saved['batch_size'] != state.batch_size:
        log(f'Note: resuming with batch {state.batch_size}, the snapshot was trained with {saved["batch_size"]}')
    if len(saved['rng']) != state.num_gpus:
        log(f'Note: the snapshot ran on {len(saved["rng"])} processes, this run on {state.num_gpus}: RNG streams are '
            'seeded afresh (the resume is not bit-exact)')
        return
    rng = saved['rng'][state.rank]
    torch.set_rng_state(rng['torch'])
    np.random.set_state(tuple(rng['numpy']))
    if state.device.type == 'cuda' and rng['cuda'] is not None:
        torch.cuda.set_rng_state(rng['cuda'], state.device)


def _restore_plugins(plugins: list, saved: dict | None, log) -> None:
    """Load each plugin's saved state by name; plugins the snapshot does not know start fresh."""
    saved = saved or {}
    for plugin in plugins:
        if plugin.name in saved:
            plugin.load_state_dict(saved[plugin.name])
        else:
            log(f'Note: the snapshot has no state for plugin {plugin.name!r}; it starts fresh')
    ignored = sorted(set(saved) - {plugin.name for plugin in plugins})
    if ignored:
        log(f'Note: the snapshot holds states of plugins not in this run, ignored: {ignored}')


def setup_training(*, training_set_kwargs: dict, G_kwargs: dict, D_kwargs: dict, G_opt_kwargs: dict,
                   D_opt_kwargs: dict, data_loader_kwargs: dict | None = None, augment_kwargs: dict | None = None,
                   loss_kwargs: dict | None = None, plugins=(), random_seed: int = 0, num_gpus: int = 1,
                   rank: int = 0, device=None, batch_size: int = 4, batch_gpu: int = 4, ema_kimg: float = 10,
                   ema_rampup: float | None = 0.05, G_reg_interval: int | None = 4, D_reg_interval: int | None = 16,
                   augment_p: float = 0, ada_target: float | None = None, ada_interval: int = 4,
                   ada_kimg: float = 500, resume_pkl: str | None = None, resume_partial: bool = False,
                   training_set=None, resume_data: dict | None = None, log=print) -> TrainState:
    """Build the training state (see the module docstring); `log` prints one line per set-up phase (rank 0).

    Arguments as in StyleGAN2-ADA's training_loop; G_kwargs / D_kwargs are the Generator / Discriminator kwargs
    without the dataset-given c_dim, img_resolution and img_channels; augment_kwargs None = no augmentation.
    training_set / resume_data: the dataset built from training_set_kwargs and train_state.read_resume(resume_pkl),
    when the caller already has them (train.py's pre-flight read them); None = read them here.
    The pieces are built in the official order (the RNG streams depend on it), the state is made once from them,
    then a resume restores its counters, optimizers and RNG states, and the data iterator starts at its batch.
    """
    rounds = check_batch(batch_size, batch_gpu, num_gpus)
    device = resolve_device(device, rank)
    seed_rngs(random_seed, num_gpus, rank)
    plugins = list(plugins)
    training_set_kwargs = dict(training_set_kwargs)
    if training_set is None:
        training_set = dataset_classes.open_dataset(training_set_kwargs, origin='training_set_kwargs')
    log(f'Training set: {len(training_set)} images of shape {training_set.image_shape}, '
        f'label dim {training_set.label_dim} ({training_set_kwargs.get("path")})')
    G, D, G_ema, resume_data = _setup_networks(training_set, plugins, G_kwargs, D_kwargs, batch_gpu, device,
                                               resume_pkl, resume_partial, resume_data, log)
    augment_pipe, ada = _setup_augment(augment_kwargs, augment_p, ada_target, ada_interval, ada_kimg, batch_size,
                                       device)
    for plugin in plugins:
        plugin.setup(G=G, D=D, training_set=training_set, device=device, rank=rank, num_gpus=num_gpus)
    opts, phases = build_phases(G, D, G_opt_kwargs, D_opt_kwargs, G_reg_interval, D_reg_interval)
    loss = StyleGAN2Loss(device=device, G=G, D=D, augment_pipe=augment_pipe, plugins=plugins, **(loss_kwargs or {}))
    log(f'Phases: {", ".join(f"{p.name}/{p.interval}" for p in phases)}; plugins: '
        f'{", ".join(p.name for p in plugins) or "none"}')
    state = TrainState(device=device, rank=rank, num_gpus=num_gpus, random_seed=random_seed, batch_size=batch_size,
                       batch_gpu=batch_gpu, rounds=rounds, ema_kimg=ema_kimg, ema_rampup=ema_rampup, plugins=plugins,
                       training_set_kwargs=training_set_kwargs, training_set=training_set, G=G, D=D, G_ema=G_ema,
                       augment_pipe=augment_pipe, ada=ada, opts=opts, phases=phases, loss=loss,
                       timer=PhaseTimer(device), grad_monitor=NonFiniteGradMonitor())
    restored = resume_data is not None and resume_data.get('training_state') is not None
    if restored:
        _restore_plugins(state.plugins, resume_data.get('plugins'), log)
        restore_training_state(state, resume_data['training_state'], log)
    log('Augmentation: ' + ('none' if state.augment_pipe is None else  # After the restore: the p this run starts at.
                            f'p = {float(state.augment_pipe.p):.3f}' + (', adaptive' if state.ada else ', fixed') +
                            (', restored from the snapshot' if restored else '')))
    for module in (state.G, state.D, state.G_ema, state.augment_pipe):
        if module is not None:
            distributed.broadcast_module(module)  # Ranks were seeded differently; rank 0's weights win.
    state.data_iter = make_data_iterator(state.training_set, rank, num_gpus, random_seed, batch_size // num_gpus,
                                         state.batch_idx, data_loader_kwargs or {}, device)
    return state


def network_summary(G, D, batch_gpu: int, device: torch.device) -> str:
    """The per-layer tables of G and D (torch_utils.misc.print_module_summary) for one batch_gpu batch, as the
    released loop prints at start-up. Zero inputs, eval mode (so G's w_avg does not move) and a forked RNG, so the
    run continues exactly as without it."""
    z = torch.zeros([batch_gpu, G.z_dim], device=device)
    c = torch.zeros([batch_gpu, D.c_dim], device=device)
    modes = G.training, D.training
    out = io.StringIO()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == 'cuda' else []), \
                contextlib.redirect_stdout(out):
            img = misc.print_module_summary(G.eval(), [z, c[:, :G.c_dim]])
            misc.print_module_summary(D.eval(), [img, c])
    finally:
        G.train(modes[0])
        D.train(modes[1])
    return re.sub(r'\n{3,}', '\n\n', out.getvalue()).strip('\n')  # One blank line between the two tables.


def _setup_networks(training_set, plugins: list, G_kwargs: dict, D_kwargs: dict, batch_gpu: int,
                    device: torch.device, resume_pkl: str | None, resume_partial: bool, resume_data: dict | None,
                    log) -> tuple:
    """(G, D, G_ema, the loaded resume snapshot or None): the networks, with resumed weights copied in."""
    extra_c_dim = sum(plugin.extra_c_dim for plugin in plugins)
    G, D, G_ema = build_networks(training_set, G_kwargs, D_kwargs, extra_c_dim, device)
    log(network_summary(G, D, batch_gpu, device))
    log(f'Networks: G {_num_params(G):,} parameters, D {_num_params(D):,} (label dim {D.c_dim}), on {device}')
    if resume_pkl is None:
        return G, D, G_ema, None
    resume_data = load_resume(resume_pkl, G, D, G_ema, partial=resume_partial, log=log, data=resume_data)
    exact = resume_data.get('training_state') is not None
    log(f'Resuming from "{resume_pkl}": ' + ('weights and training state (exact)' if exact else
                                             'weights only (counters, optimizers and augment p start afresh)'))
    return G, D, G_ema, resume_data


def _setup_augment(augment_kwargs, augment_p, ada_target, ada_interval, ada_kimg, batch_size: int,
                   device: torch.device) -> tuple:
    """(the augment pipe or None, the ADA tuner when ada_target is set, else None)."""
    augment_pipe = build_augment_pipe(augment_kwargs, augment_p, device)
    if ada_target is None:
        return augment_pipe, None
    if augment_pipe is None:
        raise ValueError(f'ada_target={ada_target!r} needs an augment pipe; pass augment_kwargs or ada_target=None')
    return augment_pipe, AdaTuner(augment_pipe, ada_target, ada_interval, ada_kimg, batch_size)


def _num_params(module: torch.nn.Module) -> int:
    return sum(param.numel() for param in module.parameters())
