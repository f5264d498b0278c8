"""Where a training step's CPU time goes: per phase (Gmain, Greg, Dmain, Dreg, SMaRt, ...) and per kind of work.

Runs `train.py` in this process with the given flags, but replaces the loop's tick loop (training_loop._train) by:
WARMUP untimed steps, STEPS timed steps (phase wall times), then STEPS steps under torch.profiler. The kinds of
work come from the profiler's operator self times: each operator is charged to the op wrapper (bias_act, upfirdn2d,
conv, fma, stats, data, optimizer) whose forward it ran in; a backward operator is charged to the kind of the forward
operator that created its autograd node (the profiler's sequence numbers link the two). 'other ops' is operator time
outside every wrapper (losses, the mapping net's matmuls, augmentation); 'Python overhead' is the step wall time under
the profiler minus all operator self time (interpreter, dispatch, autograd bookkeeping, profiler cost included).

    python benchmarks/train_profile.py --steps 16 -- --data=datasets/digits-16x16.zip --cbase=256 --cmax=32 \
        --map-depth=2 --batch=16

`--ab SWITCH` instead times one CPU fast path on its own: on the same training state, blocks of 16 steps alternate
with the switch on and off (A B A B ...), timed by the process's CPU clock (a shared machine disturbs it far less
than the wall clock); it prints the median of the per-pair ratios on/off. SWITCH is one of: gradfix (native conv
autograd on the CPU), upfirdn2d (strided / transposed depthwise convs), channels_last (NHWC activations), fold_batch
(upfirdn2d on few channels runs the batch as conv groups), ada (ADA skips the transforms whose gates no sample
passed), finite (the gradient scrub runs only when the gradients' sum is not finite), adam (Adam's fused CPU kernel),
all (all of them together, i.e. against the reference paths).
"""

import collections
import contextlib
import functools
import os
import sys
import tempfile
import time

import click
import statistics
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from torch_utils import distributed, training_stats  # noqa: E402
from torch_utils.ops import bias_act, conv2d_gradfix, fma, upfirdn2d  # noqa: E402
from training import augment, discriminator, networks, train_state, training_loop  # noqa: E402

KIND_PREFIX = 'kind:'
# (module, attribute, kind): forward wrappers; the innermost one wins (upfirdn2d's own convs count as upfirdn2d).
WRAPPED = [(bias_act, 'bias_act', 'bias_act'), (upfirdn2d, 'upfirdn2d', 'upfirdn2d'),
           (conv2d_gradfix, 'conv2d', 'conv'), (conv2d_gradfix, 'conv_transpose2d', 'conv'), (fma, 'fma', 'fma'),
           (training_stats, 'report', 'stats'), (training_stats, 'report0', 'stats')]


def _wrap(fn, kind):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch.autograd.profiler.record_function(KIND_PREFIX + kind):
            return fn(*args, **kwargs)
    return wrapper


@contextlib.contextmanager
def kind_wrappers():
    """Label the forward calls of the op families with record_function ranges while active."""
    saved = [(mod, name, getattr(mod, name)) for mod, name, _ in WRAPPED]
    for mod, name, kind in WRAPPED:
        setattr(mod, name, _wrap(getattr(mod, name), kind))
    try:
        yield
    finally:
        for mod, name, fn in saved:
            setattr(mod, name, fn)


def _own_kind(event) -> str | None:
    name = event.name
    if name.startswith(KIND_PREFIX):
        return name[len(KIND_PREFIX):]
    if name == 'data_fetch':
        return 'data'
    if name.endswith('_opt'):
        return 'optimizer'
    if name == 'Gema':
        return 'G_ema'
    return None


def classify(events) -> dict:
    """Operator self time (us) per kind; see the module docstring."""
    parent_kind = {}

    def kind_of(event):
        if event.id in parent_kind:
            return parent_kind[event.id]
        own = _own_kind(event)
        result = own if own is not None else (kind_of(event.cpu_parent) if event.cpu_parent is not None else None)
        parent_kind[event.id] = result
        return result

    seq_kind = {}
    for event in sorted(events, key=lambda e: e.time_range.start):
        # Forward operators carry the sequence number of the next autograd node; the last one before it is created
        # (the operator that creates it) tells its kind.
        if event.sequence_nr >= 0 and not event.name.startswith('autograd::engine') and 'Backward' not in event.name:
            seq_kind[event.sequence_nr] = kind_of(event)
    totals = collections.Counter()
    for event in events:
        if event.name.startswith(KIND_PREFIX) or event.self_cpu_time_total <= 0:
            continue
        if event.name.startswith('aten::') or event.name.startswith('mkldnn') or 'Backward' in event.name:
            kind = kind_of(event)
            node = event
            while kind is None and node is not None:  # Inside the backward: the node that ran this operator.
                if node.name.startswith('autograd::engine::evaluate_function') and node.sequence_nr >= 0:
                    kind = seq_kind.get(node.sequence_nr)
                    break
                node = node.cpu_parent
            totals[kind or 'other ops'] += event.self_cpu_time_total
    return totals


class PhaseClock:
    """Wall seconds per phase (and SMaRt's G penalty inside Gmain) while `active`."""

    def __init__(self):
        self.seconds = collections.Counter()
        self.active = False

    def wrap_phase(self, fn):
        def run_phase(state, phase, *args):
            start = time.perf_counter()
            fn(state, phase, *args)
            if self.active:
                self.seconds[phase.name] += time.perf_counter() - start
        return run_phase

    def wrap_penalty(self, plugin):
        fn = plugin.G_penalty

        def G_penalty(*args, **kwargs):
            start = time.perf_counter()
            result = fn(*args, **kwargs)
            if self.active:
                self.seconds[f'{plugin.name} (in Gmain)'] += time.perf_counter() - start
            return result
        plugin.G_penalty = G_penalty


def profile_steps(state, warmup: int, steps: int, clock: PhaseClock, report: list) -> None:
    """Run the untimed, timed and profiled steps on `state` and append the result lines to `report`."""
    for plugin in state.plugins:
        clock.wrap_penalty(plugin)
    for _ in range(warmup):
        training_loop.training_step(state)
    clock.active = True
    start = time.perf_counter()
    for _ in range(steps):
        training_loop.training_step(state)
    wall = time.perf_counter() - start
    clock.active = False
    nimg = steps * state.batch_size
    report.append(f'{steps} steps of batch {state.batch_size}: {wall / steps * 1e3:.0f} ms/step, '
                  f'{wall / nimg * 1e3:.2f} s/kimg (no profiler)')
    phases = sorted(clock.seconds.items(), key=lambda kv: -kv[1])
    other = wall - sum(s for name, s in phases if '(in ' not in name)
    for name, seconds in phases + [('rest (G_ema, data, ADA, plugins)', other)]:
        report.append(f'  phase {name:<34} {seconds / steps * 1e3:8.1f} ms/step {seconds / wall * 100:6.1f} %')

    with kind_wrappers(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            training_loop.training_step(state)
        wall_prof = time.perf_counter() - start
    totals = classify(prof.events())
    op_total = sum(totals.values()) / 1e6
    totals['Python overhead'] = max(wall_prof - op_total, 0) * 1e6
    report.append(f'under the profiler: {wall_prof / steps * 1e3:.0f} ms/step; operator self time '
                  f'{op_total / steps * 1e3:.0f} ms/step')
    for kind, us in sorted(totals.items(), key=lambda kv: -kv[1]):
        report.append(f'  kind  {kind:<34} {us / 1e3 / steps:8.1f} ms/step {us / 1e6 / wall_prof * 100:6.1f} %')
    table = prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=25)
    report.append(table)


def _set_switch(name: str, on: bool, state=None) -> None:
    """Turn one CPU fast path on or off (all: every one of them); `state`'s live optimizers follow the adam switch."""
    if name in ('gradfix', 'all'):
        conv2d_gradfix.custom_on_cpu = not on
    if name in ('upfirdn2d', 'all'):
        upfirdn2d.fast_conv = on
    if name in ('channels_last', 'all'):
        networks.CPU_CHANNELS_LAST = discriminator.CPU_CHANNELS_LAST = on
    if name in ('fold_batch', 'all'):
        upfirdn2d.fold_batch = on
    if name in ('ada', 'all'):
        augment.SKIP_CLOSED_GATES = on
    if name in ('finite', 'all'):
        distributed.CPU_CHECK_FINITE_FIRST = on
    if name in ('adam', 'all'):
        train_state.CPU_FUSED_ADAM = on
        for opt in (state.opts.values() if state is not None else []):
            for group in opt.param_groups:
                group['fused'] = True if on else None  # Adam reads it at every step.


SWITCHES = ('gradfix', 'upfirdn2d', 'channels_last', 'fold_batch', 'ada', 'finite', 'adam', 'all')


def ab_steps(state, name: str, warmup: int, pairs: int, report: list) -> None:
    """Alternate blocks of 16 steps with switch `name` on and off; append the CPU-time ratio to `report`."""
    for _ in range(warmup):
        training_loop.training_step(state)
    on, off = [], []
    for _ in range(pairs):
        for value, times in ((True, on), (False, off)):
            _set_switch(name, value, state)
            start = time.process_time()
            for _ in range(16):
                training_loop.training_step(state)
            times.append(time.process_time() - start)
    _set_switch(name, True, state)
    ratios = [a / b for a, b in zip(on, off)]
    report.append(f'{name}: on {statistics.median(on) / 16 * 1e3:.1f} ms/step, off '
                  f'{statistics.median(off) / 16 * 1e3:.1f} ms/step (CPU); on/off median '
                  f'{statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f}, '
                  f'{pairs} pairs of 16 steps)'
                  + (f'; ADA p {float(state.augment_pipe.p):.4f}' if state.augment_pipe is not None else ''))


@click.command(context_settings=dict(ignore_unknown_options=True, allow_extra_args=True))
@click.option('--warmup', type=click.IntRange(min=0), default=16, show_default=True, help='Untimed steps')
@click.option('--steps', type=click.IntRange(min=1), default=16, show_default=True,
              help='Timed steps, then as many profiled (16 = one lazy-regularization cycle)')
@click.option('--ab', type=click.Choice(SWITCHES), default=None, help='Instead: time one fast path on vs off')
@click.option('--pairs', type=click.IntRange(min=1), default=5, show_default=True, help='With --ab: on/off pairs')
@click.argument('train_args', nargs=-1, type=click.UNPROCESSED)
def main(warmup, steps, ab, pairs, train_args):
    """Profile the training steps of `train.py TRAIN_ARGS` (give them after --)."""
    import train  # The repository's train.py, imported here so --help works without its dependencies.
    clock = PhaseClock()
    report = []
    if ab is not None:
        training_loop._train = lambda state, run: (ab_steps(state, ab, warmup, pairs, report), run.result)[1]
    else:
        training_loop._run_phase = clock.wrap_phase(training_loop._run_phase)
        training_loop._train = lambda state, run: (profile_steps(state, warmup, steps, clock, report), run.result)[1]
    with tempfile.TemporaryDirectory() as tmp:
        args = [f'--outdir={tmp}', '--snap=1000', '--kimg=1000'] + list(train_args)
        train.main(args, standalone_mode=False)
    print(f'threads {torch.get_num_threads()}; train.py {" ".join(train_args)}')
    print('\n'.join(report))


if __name__ == '__main__':
    main()
