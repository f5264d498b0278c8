"""`train.py --gpus=N` without torchrun: start N copies of the script through torch's elastic launcher.

StyleGAN2-ADA's train.py spawns its processes itself; here torch.distributed's own launcher (the machinery behind
torchrun) does it, with a c10d rendezvous on 127.0.0.1 (a free port) and no restarts. Each copy then runs as
under torchrun (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT in its environment), so the process group uses gloo
on CPU and NCCL on GPUs exactly as a torchrun launch does.
"""

import os
import sys
import uuid

TORCHRUN_ENV = ('WORLD_SIZE', 'TORCHELASTIC_RUN_ID')  # Set in every process that torchrun (or we) started.


def under_launcher() -> bool:
    """True inside a process started by torchrun or by `launch`."""
    return any(name in os.environ for name in TORCHRUN_ENV)


def launch(num_procs: int, script: str, argv: list[str]) -> None:
    """Run `python script *argv` in num_procs processes on this machine and wait for all of them.

    Raises RuntimeError naming the failed rank(s) and their exit codes when any process fails.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=num_procs, run_id=f'smart-gan-{uuid.uuid4().hex}',
                          rdzv_backend='c10d', rdzv_endpoint='127.0.0.1:0', local_addr='127.0.0.1', max_restarts=0,
                          monitor_interval=0.2)
    os.environ.setdefault('OMP_NUM_THREADS', '1')  # torchrun's default: CPU ranks do not oversubscribe the cores.
    try:
        elastic_launch(config, entrypoint=sys.executable)(os.path.abspath(script), *argv)
    except ChildFailedError as err:
        failures = ', '.join(f'rank {rank}: exit code {failure.exitcode}' for rank, failure in err.failures.items())
        raise RuntimeError(f'{num_procs} processes started, and {failures}') from None
