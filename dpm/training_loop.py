"""Training loop of the diffusion-model trainer (train_dpm.py): EDM's recipe (Karras et al. 2022, section 5 and
Appendix F) with Stable Target Field references (Xu et al. 2023), SMaRt-band sigma sampling and NCSNv2.

`training_loop` = `setup` + repeated `training_step` + per-tick `_end_tick` (status line, stats.jsonl, snapshots).
One step: fetch this rank's minibatch (and the STF reference extras), run the loss over the gradient-accumulation
rounds, average gradients over ranks and scrub NaN/Inf (torch_utils.distributed.reduce_gradients), Adam with the
learning-rate ramp lr * min(nimg / rampup_nimg, 1), then the EMA with a half-life in images:

    beta = 0.5 ** (batch / max(halflife_nimg, 1e-8)),  halflife_nimg = min(halflife_kimg * 1000, nimg * rampup_ratio)

(EDM's training_loop.py). Multi-process runs follow train.py: torchrun ranks, gloo on the CPU, NCCL on GPUs,
identical replicas without a DDP wrapper. Exact resume: training-state-*.pt (dpm.snapshot).
"""

import copy
import os
import time

import torch

import dnnlib
from dpm import losses as dpm_losses, snapshot as dpm_snapshot
from dpm.sigma_dist import sigma_dist_from_dict
from edm_bridge import edm_networks
from torch_utils import dataset_classes, distributed, loop_helpers, signals, training_stats
from torch_utils.data_iter import check_batch, make_data_iterator, resolve_device
from torch_utils.ema import ema_update
from torch_utils.finite import NonFiniteError
from torch_utils.nonfinite_grads import NonFiniteGradMonitor
from torch_utils.tick_report import TickReporter

PRECONDS = ('edm', 'vp', 've', 'ncsnv2')  # Preconditioning (and loss) names.


def _precond_class(precond: str):
    if precond == 'ncsnv2':
        from edm_bridge import ncsnv2  # Deferred: only NCSNv2 runs need it.
        return ncsnv2.NCSNv2Precond
    classes = dict(edm=edm_networks.EDMPrecond, vp=edm_networks.VPPrecond, ve=edm_networks.VEPrecond)
    if precond not in classes:
        raise ValueError(f'precond={precond!r}: expected one of {list(PRECONDS)}')
    return classes[precond]


def build_network(precond: str, network_kwargs: dict, training_set) -> torch.nn.Module:
    """The preconditioned denoiser for the dataset's resolution, channels and labels (train mode, on the CPU)."""
    cls = _precond_class(precond)
    return cls(img_resolution=training_set.resolution, img_channels=training_set.num_channels,
               label_dim=training_set.label_dim, **network_kwargs).train()


def build_loss(precond: str, sigma_dist: dict | None, loss_kwargs: dict):
    """The loss of `precond` with p(sigma) from its description (None = the loss's default)."""
    dist = None if sigma_dist is None else sigma_dist_from_dict(sigma_dist)
    if precond not in dpm_losses.LOSSES:
        raise ValueError(f'precond={precond!r}: expected one of {list(PRECONDS)}')
    return dpm_losses.LOSSES[precond](sigma_dist=dist, **loss_kwargs)


def _build_augment_pipe(augment_kwargs: dict | None):
    if augment_kwargs is None:
        return None
    from dpm.augment import AugmentPipe  # Deferred: runs without augmentation never import it.
    return AugmentPipe(**augment_kwargs)


def setup(*, dataset_kwargs: dict, precond: str = 'edm', network_kwargs: dict | None = None,
          sigma_dist: dict | None = None, loss_kwargs: dict | None = None, augment_kwargs: dict | None = None,
          optimizer_kwargs: dict | None = None, data_loader_kwargs: dict | None = None, batch_size: int = 16,
          batch_gpu: int | None = None, rbatch: int | None = None, lr_rampup_kimg: float = 10000,
          ema_halflife_kimg: float = 500, ema_rampup_ratio: float | None = 0.05, seed: int = 0, num_gpus: int = 1,
          rank: int = 0, device=None, resume_state: str | None = None, log=print) -> dnnlib.EasyDict:
    """Build the training state (dataset, net, ema, loss, augment pipe, optimizer, data iterators, counters).

    rbatch: STF reference batch per accumulation round and rank (None = no STF); its first batch_gpu images are
    the round's own minibatch, the rest are drawn from the dataset by an independent sampler on this rank.
    """
    batch_gpu = batch_size // num_gpus if batch_gpu is None else batch_gpu
    rounds = check_batch(batch_size, batch_gpu, num_gpus)
    if rbatch is not None and (isinstance(rbatch, bool) or not isinstance(rbatch, int) or rbatch < batch_gpu):
        raise ValueError(f'rbatch={rbatch!r}: expected an integer >= batch_gpu ({batch_gpu}), or None without STF')
    device = resolve_device(device, rank)
    loop_helpers.seed_rngs(seed, num_gpus, rank, numpy=False)  # Nothing here draws from numpy's global RNG.
    s = dnnlib.EasyDict(device=device, rank=rank, num_gpus=num_gpus, seed=seed, batch_size=batch_size,
                        batch_gpu=batch_gpu, rounds=rounds, rbatch=rbatch, lr_rampup_kimg=lr_rampup_kimg,
                        ema_halflife_kimg=ema_halflife_kimg, ema_rampup_ratio=ema_rampup_ratio, cur_nimg=0,
                        batch_idx=0, cur_tick=0, tick_start_nimg=0, elapsed_sec=0.0, dataset_kwargs=dataset_kwargs)
    s.training_set = dataset_classes.open_dataset(dataset_kwargs)
    log(f'Dataset: {len(s.training_set)} images of shape {s.training_set.image_shape}, label dim '
        f'{s.training_set.label_dim} ({dataset_kwargs.get("path")})')
    s.net = build_network(precond, dict(network_kwargs or {}), s.training_set).requires_grad_(True).to(device)
    s.ema = copy.deepcopy(s.net).eval().requires_grad_(False)
    s.loss_fn = build_loss(precond, sigma_dist, dict(loss_kwargs or {}))
    if bool(getattr(s.loss_fn, 'stf', False)) != (rbatch is not None):
        raise ValueError(f'rbatch={rbatch!r} with a loss that has stf={getattr(s.loss_fn, "stf", False)}: pass an '
                         'rbatch exactly when the loss uses STF')
    s.augment_pipe = _build_augment_pipe(augment_kwargs)
    s.optimizer = torch.optim.Adam(s.net.parameters(), **{'betas': (0.9, 0.999), 'eps': 1e-8, 'lr': 1e-3,
                                                           **(optimizer_kwargs or {})})
    s.base_lr = s.optimizer.param_groups[0]['lr']
    log(f'Network: {type(s.net).__name__} ({sum(p.numel() for p in s.net.parameters()):,} parameters) on {device}; '
        f'loss {s.loss_fn.describe()}; augmentation {augment_kwargs}')
    if resume_state is not None:
        _restore(s, dpm_snapshot.load_training_state(resume_state), resume_state, log)
    for module in (s.net, s.ema):
        distributed.broadcast_module(module)  # Ranks were seeded differently; rank 0's weights win.
    loader_kwargs = dict(data_loader_kwargs or {})
    s.data_iter = make_data_iterator(s.training_set, rank, num_gpus, seed, batch_size // num_gpus, s.batch_idx,
                                     loader_kwargs, device)
    s.ref_iter = None
    if rbatch is not None and rbatch > batch_gpu:
        s.ref_iter = make_data_iterator(s.training_set, rank, num_gpus, seed + 1, rounds * (rbatch - batch_gpu),
                                        s.batch_idx, loader_kwargs, device)
    return s


def capture_state(s: dnnlib.EasyDict, next_tick: int, elapsed_sec: float) -> dict:
    """Everything an exact resume needs (collective with several ranks: the RNG states of every rank)."""
    return dict(net=s.net.state_dict(), ema=s.ema.state_dict(), optimizer=s.optimizer.state_dict(),
                cur_nimg=s.cur_nimg, batch_idx=s.batch_idx, cur_tick=next_tick, elapsed_sec=elapsed_sec,
                batch_size=s.batch_size, rng=distributed.gather_objects(dpm_snapshot.rng_state(s.device)),
                loss=s.loss_fn.describe(), rbatch=s.rbatch)


def _restore(s: dnnlib.EasyDict, saved: dict, path: str, log) -> None:
    try:
        s.net.load_state_dict(saved['net'])
        s.ema.load_state_dict(saved['ema'])
        s.optimizer.load_state_dict(saved['optimizer'])
    except (RuntimeError, ValueError, KeyError) as err:
        raise ValueError(f'resume state {path!r} does not fit the configured network (same --arch, --precond, '
                         f'preset, --cond and --augment needed): {str(err)[:300]}') from None
    for key in ('cur_nimg', 'batch_idx', 'cur_tick', 'elapsed_sec'):
        s[key] = saved[key]
    s.tick_start_nimg = s.cur_nimg
    if saved['batch_size'] != s.batch_size or len(saved['rng']) != s.num_gpus:
        log(f'Note: the state was saved with batch {saved["batch_size"]} on {len(saved["rng"])} process(es); '
            'the resume is not bit-exact')
    saved_setup, setup_now = (saved.get('loss'), saved.get('rbatch')), (s.loss_fn.describe(), s.rbatch)
    if 'loss' in saved and saved_setup != setup_now:  # E.g. --stf / --band-* not repeated: the weights still fit.
        log(f'Note: the state was trained with loss {saved_setup[0]} and STF reference batch {saved_setup[1]}, this '
            f'run uses {setup_now[0]} and {setup_now[1]}; repeat the original options for an exact resume')
    if len(saved['rng']) == s.num_gpus:
        dpm_snapshot.set_rng_state(saved['rng'][s.rank], s.device)
    log(f'Resumed from {path} at kimg {s.cur_nimg / 1e3:.3f}')


def _fetch(s: dnnlib.EasyDict):
    """This rank's minibatch in [-1, 1] [batch / num_gpus, C, H, W], labels or None, STF extras or None."""
    images, labels = next(s.data_iter)
    images = images.to(s.device).to(torch.float32) / 127.5 - 1
    labels = labels.to(s.device).to(torch.float32) if s.training_set.label_dim > 0 else None
    extras = None
    if s.ref_iter is not None:
        ref_images, ref_labels = next(s.ref_iter)
        extras = (ref_images.to(s.device).to(torch.float32) / 127.5 - 1,
                  ref_labels.to(s.device).to(torch.float32) if labels is not None else None)
    return images, labels, extras


def _round_inputs(s, images, labels, extras, r: int) -> dict:
    """Loss arguments of accumulation round r (with its STF reference: own images first, then extras)."""
    sl = slice(r * s.batch_gpu, (r + 1) * s.batch_gpu)
    kwargs = dict(images=images[sl], labels=None if labels is None else labels[sl])
    if s.rbatch is not None:
        n_extra = s.rbatch - s.batch_gpu
        ref, ref_labels = [images[sl]], [labels[sl]] if labels is not None else None
        if extras is not None:
            ref.append(extras[0][r * n_extra:(r + 1) * n_extra])
            if labels is not None:
                ref_labels.append(extras[1][r * n_extra:(r + 1) * n_extra])
        kwargs['reference'] = torch.cat(ref)
        if labels is not None:
            kwargs['reference_labels'] = torch.cat(ref_labels)
    return kwargs


def update_ema(s: dnnlib.EasyDict) -> None:
    """ema <- lerp(net, ema, beta) with EDM's half-life and ramp (module docstring; torch_utils.ema); buffers copied."""
    ema_update(s.ema, s.net, s.batch_size, s.ema_halflife_kimg, s.ema_rampup_ratio, s.cur_nimg)


def training_step(s: dnnlib.EasyDict) -> None:
    """Advance the state by one optimizer step over batch_size images (all ranks together)."""
    for group in s.optimizer.param_groups:  # EDM's ramp: lr 0 at the very first step.
        group['lr'] = s.base_lr * min(s.cur_nimg / max(s.lr_rampup_kimg * 1000, 1e-8), 1)
    s.optimizer.zero_grad(set_to_none=True)
    images, labels, extras = _fetch(s)
    batch_per_rank = s.batch_size // s.num_gpus
    for r in range(s.rounds):
        loss = s.loss_fn(s.net, augment_pipe=s.augment_pipe, **_round_inputs(s, images, labels, extras, r))
        training_stats.report('Loss/loss', loss)
        loss.sum().mul(1 / batch_per_rank).backward()
    scrubbed = distributed.reduce_gradients(s.net.parameters())  # Mean over ranks; NaN -> 0, +-Inf -> +-1e5.
    if s.get('grad_monitor') is None:
        s.grad_monitor = NonFiniteGradMonitor()
    s.grad_monitor.record('net', *scrubbed)
    s.optimizer.step()
    update_ema(s)
    s.cur_nimg += s.batch_size
    s.batch_idx += 1


def _save(s: dnnlib.EasyDict, run: dnnlib.EasyDict) -> None:
    """Network snapshot and training state (rank 0 writes; the state capture is collective)."""
    state = capture_state(s, s.cur_tick + 1, s.reporter.elapsed_sec())
    if s.rank != 0 or run.run_dir is None:
        return
    # The state first, then the snapshot that names it: whenever a kill comes, the newest files resume (dpm_snapshot).
    state_path = dpm_snapshot.training_state_path(run.run_dir, s.cur_nimg)
    dpm_snapshot.save_training_state(state_path, state)
    run.result.state_pt = state_path
    data = dpm_snapshot.snapshot_data(s.ema, s.loss_fn, s.augment_pipe, s.dataset_kwargs,
                                      training_state=os.path.basename(state_path))
    dpm_snapshot.save_network_snapshot(dpm_snapshot.network_snapshot_path(run.run_dir, s.cur_nimg), data)
    run.result.snapshot_pkl = dpm_snapshot.network_snapshot_path(run.run_dir, s.cur_nimg)


def _end_tick(s: dnnlib.EasyDict, run: dnnlib.EasyDict, done: bool, steps: int) -> None:
    """Status line, snapshot, stats.jsonl of the tick that just ended."""
    augment_p = None if s.augment_pipe is None else float(s.augment_pipe.p)
    line = s.reporter.status_line(s.cur_tick, s.cur_nimg, s.tick_start_nimg, augment_p)
    sec_per_step = (s.reporter.tick_end_time - s.reporter.tick_start_time) / max(steps, 1)
    line += f' sec/step {training_stats.report0("Timing/sec_per_step", sec_per_step):<7.3f}'
    run.log(line)
    for warning in s.grad_monitor.end_tick():  # Raises NonFiniteError when the update is wholly non-finite.
        run.log(warning)
    if run.snapshot_ticks is not None and (done or s.cur_tick % run.snapshot_ticks == 0):
        _save(s, run)
    s.reporter.write_stats()
    s.cur_tick += 1
    s.tick_start_nimg = s.cur_nimg
    s.reporter.start_next_tick()


def _train(s: dnnlib.EasyDict, run: dnnlib.EasyDict) -> None:
    """Steps and ticks until total_kimg; a KeyboardInterrupt (Ctrl-C, or SIGTERM under sigterm_as_interrupt) ends
    it with the last snapshot named (its writes are atomic, so an interrupted one leaves nothing)."""
    total_nimg, tick_nimg = loop_helpers.kimg_to_nimg(run.total_kimg), loop_helpers.kimg_to_nimg(run.kimg_per_tick)
    done, steps = s.cur_nimg >= total_nimg, 0
    try:
        while not done:
            training_step(s)
            steps += 1
            done = s.cur_nimg >= total_nimg
            if loop_helpers.tick_ends(s.cur_tick, s.cur_nimg, s.tick_start_nimg, tick_nimg, done):
                _end_tick(s, run, done, steps)
                steps = 0
    except KeyboardInterrupt as err:
        run.result.update(interrupted=True, exit_code=signals.exit_code(err))
        run.log(loop_helpers.interrupted_line(err, s.cur_nimg, run.result.snapshot_pkl) +
                (f' (resume with --resume={run.result.state_pt})' if run.result.state_pt else ''))
    except NonFiniteError as err:  # NaN/Inf policy: stop with the cause and the last good snapshot.
        raise loop_helpers.nonfinite_at(err, s.cur_nimg, run.result.snapshot_pkl) from None


def training_loop(
    run_dir: str | None = '.',              # Output directory (rank 0 writes); None = write nothing.
    total_kimg: float = 200000,             # Train until this many thousand images have been shown.
    kimg_per_tick: float = 50,              # Status line, stats.jsonl and snapshot checks every this many kimg.
    snapshot_ticks: int | None = 50,        # Network snapshot + training state every this many ticks; None = never.
    **setup_kwargs,                         # See `setup`.
) -> dnnlib.EasyDict:
    """Train; return EasyDict(state, snapshot_pkl and state_pt (the last ones written on rank 0, else None),
    interrupted, exit_code (130 for SIGINT, 143 for SIGTERM, when interrupted))."""
    rank = setup_kwargs.get('rank', 0)
    log = setup_kwargs.pop('log', None) or distributed.print0(rank)
    logger = loop_helpers.open_run_log(run_dir, rank)
    try:
        loop_helpers.init_stats(rank)
        s = setup(**setup_kwargs, log=log)
        if setup_kwargs.get('resume_state') is not None and s.cur_nimg >= loop_helpers.kimg_to_nimg(total_kimg):
            raise ValueError(f'resume state {setup_kwargs["resume_state"]!r} is already at kimg {s.cur_nimg / 1e3:g}, '
                             f'at or past the training length {total_kimg:g} kimg (--duration): nothing to train')
        s.reporter = TickReporter(run_dir, rank, s.device, elapsed_sec=s.elapsed_sec)
        run = dnnlib.EasyDict(run_dir=run_dir, total_kimg=total_kimg, kimg_per_tick=kimg_per_tick,
                              snapshot_ticks=snapshot_ticks, log=log,
                              result=dnnlib.EasyDict(snapshot_pkl=None, state_pt=None, interrupted=False, exit_code=0))
        log(f'Training for {total_kimg} kimg from kimg {s.cur_nimg / 1e3:.3f} (batch {s.batch_size}, {s.rounds} '
            f'round(s) of {s.batch_gpu} per rank{f", STF reference {s.rbatch} per round" if s.rbatch else ""})...')
        start = time.time()
        _train(s, run)
        s.reporter.close()
        log(f'Exiting after {time.time() - start:.1f} s.' if not run.result.interrupted else 'Stopped.')
        run.result.state = s
        return run.result
    finally:
        if logger is not None:
            logger.close()
