"""Train a StyleGAN2-ADA GAN, optionally with the SMaRt score-matching regularizer and Diffusion-GAN noise.

Options follow StyleGAN2-ADA's train.py (docs/spec/stylegan2-ada.md sections 3.5-3.6) plus StyleGAN3's --batch-gpu,
--cbase, --cmax, --map-depth, --mbstd-group, --glr, --dlr, --tick. A run goes to <outdir>/<id>-<desc>: training_options.json, log.txt,
stats.jsonl, image grids and network snapshots. Examples:

\b
  # CIFAR-10 with SMaRt at the paper's CIFAR-10 setting and the Gaussian score source.
  python train.py --outdir=runs --data=datasets/cifar10-32x32.zip --cfg=cifar --cond \\
      --smart-lambda=0.01 --smart-schedule=ddpm-linear --smart-t=40,60 --smart-freq=8 --smart-dpm=gaussian
  # Two processes (GPUs, or CPU processes with gloo): started by train.py itself, or by torchrun.
  python train.py --outdir=runs --data=ds.zip --gpus=2 --batch=32
  torchrun --standalone --nproc_per_node=2 train.py --outdir=runs --data=ds.zip --gpus=2 --batch=32
  # FID at every snapshot, the Inception detector from a local file (see calc_metrics.py for the detectors).
  python train.py --outdir=runs --data=ds.zip --metrics=fid50k_full --detector=inception-2015-12-05.pt
  # Print the resolved options only; continue a run exactly from one of its snapshots.
  python train.py --outdir=runs --data=ds.zip --dry-run
  python train.py --outdir=runs --data=ds.zip --resume=runs/00000-ds-auto1/network-snapshot-000200.pkl
"""

from torch_utils import cpu_threads  # noqa: F401  (first: it sets OpenMP's wait policy before torch loads)

import os
import sys

import click
import torch

from cli import self_launch
from cli.common import FlagError, create_run_dir, launch_tail, next_run_dir, show_options, threads_option
from cli.compat import expand_user_paths, released_aliases, resolve_aliases
from cli.options import click_options
from dataset_io.images import ImageFileError
from metrics.detectors import DetectorUnavailableError
from smart_plugin import DiffGANOptions, DiffusionGAN, OptionError, SMaRt, SMaRtOptions
from smart_plugin import preview as smart_preview
from torch_utils import distributed
from torch_utils.finite import NonFiniteError
from training import config, preflight, run_outputs, train_state, training_loop
from training.config import CONFIG_SPECS, RESUME_SPECS  # noqa: F401  (the tables, where users and tests look)
from training.option_fields import ConfigError, flag_map, from_params
from training.train_options import RESUME_HINT_FLAGS, SETUP_ARG_FLAGS, TrainOptions

PLUGINS = (SMaRt, DiffusionGAN)
# Plugin option fields (SMaRtOptions, DiffGANOptions) -> the flag that sets them, for error messages.
PLUGIN_FLAGS = flag_map(SMaRtOptions, DiffGANOptions)


def plugin_options(opts: TrainOptions) -> dict:
    """{plugin name: options} of the enabled plugins, from the --smart-* / --diffgan-* flags (errors name the flag)."""
    try:
        smart = from_params(SMaRtOptions, opts.extra)
        diffgan = from_params(DiffGANOptions, opts.extra, ada_augpipe=config.diffgan_augpipe(opts))
    except OptionError as err:
        raise FlagError(PLUGIN_FLAGS.get(err.field, '--smart-*/--diffgan-*'), str(err)) from None
    return {name: value for name, value in ((SMaRt.name, smart), (DiffusionGAN.name, diffgan)) if value.enabled}


def build_plugins(options: dict) -> list:
    """The enabled loss plugins (disabled ones are left out: the run is then the plain baseline)."""
    classes = {cls.name: cls for cls in PLUGINS}
    return [classes[name](value) for name, value in options.items()]


def build_config(opts: TrainOptions, num_gpus: int) -> tuple[config.RunPlan, preflight.Inputs]:
    """The run plan and what pre-flight read, from the parsed options; errors name the flag."""
    try:
        inputs = preflight.read_inputs(opts)
        plan = config.build_plan(opts, num_gpus, inputs.data, inputs.resume, inputs.metrics, inputs.detector_kinds,
                                 plugin_options(opts))
    except ConfigError as err:
        raise FlagError(err.flag, str(err)) from None
    return plan, inputs


def validate_setup(plan: config.RunPlan, inputs: preflight.Inputs, plugins: list) -> None:
    """Every check that can be made before training (training/preflight.py); errors name the flag."""
    try:
        preflight.validate(plan, inputs, plugins, PLUGIN_FLAGS)
    except ConfigError as err:
        raise FlagError(err.flag, str(err)) from None


def _num_gpus(opts: TrainOptions, world_size: int) -> int:
    if opts.gpus is not None and opts.gpus != world_size:
        raise FlagError('--gpus', f'{opts.gpus}, but {world_size} process(es) were started; launch with torchrun '
                                  f'--nproc_per_node={opts.gpus} train.py ...')
    if world_size & (world_size - 1):
        raise FlagError('--gpus', f'{world_size} processes; expected a power of two')
    return world_size


def _self_launch(num_procs: int) -> None:
    """Re-run this command line in num_procs processes through torch's launcher (cli/self_launch.py)."""
    if os.path.abspath(sys.argv[0]) != os.path.abspath(__file__):
        raise FlagError('--gpus', f'{num_procs} processes can be started only when train.py runs as a script; '
                                  f'use torchrun --nproc_per_node={num_procs} train.py ...')
    try:
        self_launch.launch(num_procs, __file__, sys.argv[1:])
    except RuntimeError as err:
        raise click.ClickException(f'--gpus={num_procs}: {err}; see the log above') from None


def _launch(plan: config.RunPlan, inputs: preflight.Inputs, plugins: list, run_dir: str, ranks: tuple) -> None:
    """Join the process group, create the run dir (rank 0), train, leave the group."""
    rank, local_rank, world_size = ranks
    with distributed.process_group(rank, world_size, local_rank=local_rank):  # Left synchronised (distributed.py).
        try:
            run_dir = create_run_dir(run_dir, plan.options_json(run_dir), rank)
            device = f'cuda:{local_rank}' if torch.cuda.is_available() else 'cpu'
            result = training_loop.training_loop(**plan.loop_kwargs, run_dir=run_dir, rank=rank, device=device,
                                                 plugins=plugins, training_set=inputs.training_set,
                                                 resume_data=inputs.resume_data)
        except OptionError as err:  # Plugin options that only fail against the data or model (e.g. --smart-t).
            raise FlagError(PLUGIN_FLAGS.get(err.field, '--smart-*/--diffgan-*'), str(err)) from None
        except DetectorUnavailableError as err:  # Found at a metric evaluation.
            raise FlagError(err.flag, str(err)) from None
        except NonFiniteError as err:  # docs/nan-policy.md: resume weights, snapshots, the SMaRt score source.
            raise FlagError(SETUP_ARG_FLAGS.get(err.flag, err.flag or 'training'), str(err)) from None
        except train_state.ResumeDataError as err:  # Pre-flight finds these first; its hint worded with our flags.
            raise FlagError('--resume', err.message(RESUME_HINT_FLAGS['data'])) from None
        except train_state.ResumeError as err:
            raise FlagError('--resume', str(err)) from None
        except run_outputs.OutputWriteError as err:  # Disk full / read-only: the last good snapshot named.
            raise FlagError('--outdir', str(err)) from None
        except ImageFileError as err:  # A damaged image found while training; from a DataLoader worker, the last line.
            raise FlagError('--data', str(err).strip().splitlines()[-1].split('ImageFileError: ')[-1]) from None
    if result.interrupted:
        raise SystemExit(result.exit_code)


@released_aliases
@click.command(help=__doc__)
@click_options(TrainOptions)
@threads_option
@click_options(SMaRtOptions, DiffGANOptions)
def main(**kwargs):
    params = expand_user_paths(resolve_aliases(click.get_current_context(), kwargs), ('outdir', 'data'))
    try:
        _main(TrainOptions.from_params(params))
    except KeyboardInterrupt:  # During set-up; once training runs, the loop ends cleanly and exits 130 itself.
        print('Interrupted during set-up; exiting.', file=sys.stderr)
        raise SystemExit(130) from None


def _main(opts: TrainOptions) -> None:
    try:
        ranks = distributed.env_ranks()
    except ValueError as err:
        raise FlagError('--gpus', str(err)) from None
    self_launch_procs = opts.gpus if opts.gpus and opts.gpus > 1 and not self_launch.under_launcher() else None
    plan, inputs = build_config(opts, _num_gpus(opts, self_launch_procs or ranks[2]))
    plugins = build_plugins(plan.plugin_options)
    validate_setup(plan, inputs, plugins)
    if self_launch_procs and not opts.dry_run:  # StyleGAN2-ADA's --gpus=N: start the N processes ourselves.
        _self_launch(self_launch_procs)
        return
    run_dir = next_run_dir(opts.outdir, plan.desc) if ranks[0] == 0 else None
    show_options(plan.options_json(run_dir), run_dir, ranks[0])
    if opts.dry_run:
        if ranks[0] == 0:
            try:
                smart_lines = smart_preview.plugin_startup_lines(plugins, len(inputs.training_set))
            except OptionError as err:
                raise FlagError(PLUGIN_FLAGS.get(err.field, '--smart-*'), str(err)) from None
            print('\n'.join([*smart_lines, 'Dry run; exiting.']))
        return
    launch_tail(opts.threads, lambda: _launch(plan, inputs, plugins, run_dir, ranks))


if __name__ == '__main__':
    main()
