"""The StyleGAN2-ADA training loop (Karras et al., "Training Generative Adversarial Networks with Limited Data",
NeurIPS 2020) with loss plugins such as SMaRt (Xia et al., ICML 2024), on CUDA or the CPU, single- or multi-process.

`training_loop` = set-up (train_state.setup_training) + repeated `training_step` + per-tick maintenance (status
line, image grid, snapshot and metrics, stats.jsonl). One step: fetch reals, draw z and c for every phase, run each
phase that is due (lazy regularization), average gradients over ranks, step the optimizer, update G_ema, count
images, let ADA and the plugins adapt. The loop never names a plugin: it builds D with their extra label entries, passes
them to the loss, calls `end_of_step` and saves their state in snapshots. Behaviour follows
docs/spec/stylegan2-ada.md sections 4.5 and 5.
"""

import contextlib
import os
import traceback

import numpy as np
import torch

import dnnlib
from metrics import metric_main
from torch_utils import distributed, loop_helpers, signals
from torch_utils.ema import ema_update
from torch_utils.finite import NonFiniteError
from torch_utils.ops import conv2d_gradfix, grid_sample_gradfix
from torch_utils.tick_report import TickReporter
from training import run_outputs
from training.train_state import TrainState, setup_training

_record = torch.autograd.profiler.record_function


def _fetch_batch(state: TrainState):
    """Reals of this rank and z / c for every phase, each split into batch_gpu chunks."""
    device, batch_gpu = state.device, state.batch_gpu
    batch = state.batch_size // state.num_gpus
    real_img, real_c = next(state.data_iter)  # uint8 [batch, C, H, W], float32 [batch, c_dim]
    real_img = (real_img.to(device).to(torch.float32) / 127.5 - 1).split(batch_gpu)  # [-1, 1]
    real_c = real_c.to(device).split(batch_gpu)
    # Each phase gets its own z and c; c comes from random dataset labels, so G sees the label distribution.
    num = len(state.phases) * batch
    gen_z = torch.randn([num, state.G.z_dim], device=device)  # [phases * batch, z_dim]
    gen_c = np.stack([state.training_set.get_label(np.random.randint(len(state.training_set))) for _ in range(num)])
    gen_c = torch.from_numpy(gen_c.astype(np.float32)).to(device)  # [phases * batch, c_dim]
    gen_z = [z.split(batch_gpu) for z in gen_z.split(batch)]
    gen_c = [c.split(batch_gpu) for c in gen_c.split(batch)]
    return real_img, real_c, gen_z, gen_c


def _run_phase(state: TrainState, phase: dnnlib.EasyDict, real_img, real_c, gen_z, gen_c) -> None:
    """Accumulate one phase's gradients over the batch_gpu rounds, average them over ranks and step."""
    state.timer.start(phase.name)
    phase.opt.zero_grad(set_to_none=True)
    phase.module.requires_grad_(True)
    for round_img, round_c, round_z, round_gen_c in zip(real_img, real_c, gen_z, gen_c):
        state.loss.accumulate_gradients(phase=phase.name, real_img=round_img, real_c=round_c, gen_z=round_z,
                                        gen_c=round_gen_c, gain=phase.interval, cur_nimg=state.cur_nimg)
    phase.module.requires_grad_(False)
    with _record(phase.name + '_opt'):
        state.grad_monitor.record(phase.name, *distributed.reduce_gradients(phase.module.parameters()))
        phase.opt.step()
    state.timer.stop(phase.name)


def update_ema(state: TrainState) -> None:
    """G_ema <- lerp(G, G_ema, beta) with a half-life of ema_kimg, capped at cur_nimg * ema_rampup during the ramp-up;
    buffers (w_avg, noise) are copied (torch_utils.ema)."""
    ema_update(state.G_ema, state.G, state.batch_size, state.ema_kimg, state.ema_rampup, state.cur_nimg)


def training_step(state: TrainState) -> None:
    """Advance `state` (from train_state.setup_training) by one iteration of batch_size images over all ranks."""
    with _record('data_fetch'):
        real_img, real_c, gen_z, gen_c = _fetch_batch(state)
    for phase, phase_gen_z, phase_gen_c in zip(state.phases, gen_z, gen_c):
        if state.batch_idx % phase.interval == 0:
            _run_phase(state, phase, real_img, real_c, phase_gen_z, phase_gen_c)
    with _record('Gema'):
        update_ema(state)
    state.cur_nimg += state.batch_size
    state.batch_idx += 1
    if state.ada is not None:
        state.ada.after_step(state.batch_idx)
    for plugin in state.plugins:
        plugin.end_of_step(state.cur_nimg, state.batch_size)


def _end_tick(state: TrainState, run: dnnlib.EasyDict, done: bool) -> bool:
    """Status line, abort check, image grid, snapshot and stats.jsonl of the tick that just ended; returns done."""
    augment_p = None if state.augment_pipe is None else float(state.augment_pipe.p)
    run.log(state.reporter.status_line(state.cur_tick, state.cur_nimg, state.tick_start_nimg, augment_p))
    for line in state.grad_monitor.end_tick():  # Raises NonFiniteError when a phase no longer trains.
        run.log(line)
    if not done and run.abort_fn is not None and run.abort_fn():
        done = True
        run.log('Aborting: abort_fn asked to stop; writing the final snapshot...')

    def due(interval):
        return interval is not None and (done or state.cur_tick % interval == 0)

    if run.grid is not None and due(run.image_snapshot_ticks):
        run_outputs.save_fakes(state, run.grid, run_outputs.fakes_path(run.run_dir, state.cur_nimg))
    if due(run.network_snapshot_ticks) and (run.run_dir is not None or run.metrics):
        path = None
        if run.run_dir is not None:
            path = run_outputs.save_snapshot(state, run.run_dir, next_tick=state.cur_tick + 1)
            run.result.snapshot_pkl = path or run.result.snapshot_pkl
        run_outputs.evaluate_metrics(state, run.metrics, run.metric_kwargs, run.run_dir, path, run.log)
    state.timer.report_events()
    stats = state.reporter.write_stats()
    for plugin in state.plugins:
        for line in plugin.end_of_tick(stats):
            run.log(line)
    if run.progress_fn is not None:
        run.progress_fn(state.cur_nimg // 1000, run.total_kimg)
    state.cur_tick += 1
    state.tick_start_nimg = state.cur_nimg
    state.reporter.start_next_tick()
    return done


def _train(state: TrainState, run: dnnlib.EasyDict) -> dnnlib.EasyDict:
    """Steps and ticks until total_kimg (or abort_fn); a KeyboardInterrupt ends it cleanly between writes."""
    total_nimg, tick_nimg = loop_helpers.kimg_to_nimg(run.total_kimg), loop_helpers.kimg_to_nimg(run.kimg_per_tick)
    done = state.cur_nimg >= total_nimg
    try:
        while not done:
            training_step(state)
            done = state.cur_nimg >= total_nimg
            if loop_helpers.tick_ends(state.cur_tick, state.cur_nimg, state.tick_start_nimg, tick_nimg, done):
                done = _end_tick(state, run, done)
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM under torch_utils.signals.sigterm_as_interrupt.
        run.result.interrupted = True
        run.result.exit_code = signals.exit_code(err)
        run.log(loop_helpers.interrupted_line(err, state.cur_nimg, run.result.snapshot_pkl))
    except NonFiniteError as err:  # NaN/Inf policy: stop with the cause and the last good snapshot.
        raise loop_helpers.nonfinite_at(err, state.cur_nimg, run.result.snapshot_pkl) from None
    except OSError as err:  # Disk full or read-only run dir: say so, with the snapshot to resume from.
        error = run_outputs.output_write_error(err, run.run_dir, run.result.snapshot_pkl)
        if error is None:
            raise
        raise error from None
    run.result.cur_nimg = state.cur_nimg
    return run.result


@contextlib.contextmanager
def speed_flags(cudnn_benchmark: bool, allow_tf32: bool):
    """Set the global speed switches of the official loop for the duration of training, then restore them (also used
    by the benchmarks that call training_step directly, so that they time what train.py runs)."""
    saved = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             conv2d_gradfix.enabled, grid_sample_gradfix.enabled)
    torch.backends.cudnn.benchmark = cudnn_benchmark
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32
    conv2d_gradfix.enabled = True  # Lets R1 and path length skip conv weight gradients (no_weight_gradients).
    grid_sample_gradfix.enabled = True
    try:
        yield
    finally:
        (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
         conv2d_gradfix.enabled, grid_sample_gradfix.enabled) = saved


def _remove_stale_temp_files(run_dir: str, resume_pkl: str | None, log) -> None:
    """Delete temp files that killed writes left in the run dir and in the folder of the snapshot resumed from
    (dnnlib.util.remove_stale_temp_files); one line per folder that had any."""
    for folder in loop_helpers.temp_file_folders([os.path.abspath(run_dir)], resume_pkl):
        removed = dnnlib.util.remove_stale_temp_files(folder)
        if removed:
            log(f'Removed {len(removed)} stale temp file(s) of interrupted writes in {folder}: {", ".join(removed)}')


def training_loop(
    run_dir: str | None = '.',                  # Output directory, written by rank 0; None = write nothing.
    total_kimg: float = 25000,                  # Train until this many thousand images have been shown.
    kimg_per_tick: float = 4,                   # Status line, stats and snapshots are per tick of this many kimg.
    image_snapshot_ticks: int | None = 50,      # Save a fakes grid every this many ticks; None = no image grids.
    network_snapshot_ticks: int | None = 50,    # Save a network snapshot every this many ticks; None = never.
    cudnn_benchmark: bool = True,               # torch.backends.cudnn.benchmark during training.
    allow_tf32: bool = False,                   # TF32 matmuls / convolutions on Ampere+ GPUs.
    abort_fn=None,                              # Callable () -> bool checked every tick; True = finish now.
    progress_fn=None,                           # Callable (cur_kimg, total_kimg) called after every tick.
    metrics=(),                                 # Metric names (metrics.metric_main) evaluated at each snapshot.
    metric_kwargs: dict | None = None,          # Extra MetricOptions, e.g. detector, detector_vgg16, num_workers.
    **setup_kwargs,                             # Data, networks, optimizers, loss, plugins, resume, rank, ...:
                                                # see training.train_state.setup_training.
) -> dnnlib.EasyDict:
    """Train; return EasyDict(cur_nimg, snapshot_pkl (last one written, rank 0), interrupted, exit_code (130 for
    SIGINT, 143 for SIGTERM, when interrupted))."""
    rank = setup_kwargs.get('rank', 0)
    metrics = list(metrics)
    for metric in metrics:
        metric_main.check_metric(metric)  # Fail before training, not at the first snapshot.
    log = distributed.print0(rank)
    writes = run_dir is not None and rank == 0
    logger = loop_helpers.open_run_log(run_dir, rank)
    if writes:
        _remove_stale_temp_files(run_dir, setup_kwargs.get('resume_pkl'), log)
    try:
        with speed_flags(cudnn_benchmark, allow_tf32):
            loop_helpers.init_stats(rank)
            state = setup_training(**setup_kwargs, log=log)
            grid = None
            if writes and image_snapshot_ticks is not None:
                grid = run_outputs.prepare_grid(state, run_dir, log)
            state.reporter = TickReporter(run_dir, rank, state.device, elapsed_sec=state.elapsed_sec)
            run = dnnlib.EasyDict(run_dir=run_dir, total_kimg=total_kimg, kimg_per_tick=kimg_per_tick,
                                  image_snapshot_ticks=image_snapshot_ticks, grid=grid, abort_fn=abort_fn,
                                  network_snapshot_ticks=network_snapshot_ticks, progress_fn=progress_fn, log=log,
                                  metrics=metrics, metric_kwargs=dict(metric_kwargs or {}),
                                  result=dnnlib.EasyDict(cur_nimg=state.cur_nimg, snapshot_pkl=None,
                                                         interrupted=False, exit_code=0))
            log(f'Training for {total_kimg} kimg from kimg {state.cur_nimg / 1e3:.3f} '
                f'(batch {state.batch_size}, {state.rounds} round(s) of {state.batch_gpu} per rank)...')
            result = _train(state, run)
            state.reporter.close()
            log('Exiting...' if not result.interrupted else 'Stopped.')
            return result
    except BaseException as err:
        if logger is not None and logger.file is not None:  # The caller reports it; log.txt keeps it as well.
            logger.file.write('Interrupted during set-up.\n' if isinstance(err, KeyboardInterrupt) else
                              ''.join(traceback.format_exception(err)))
        raise
    finally:
        if logger is not None:
            logger.close()
