"""torch_utils.cpu_threads: the OpenMP wait policy, set_threads and keep_freed_memory."""

import os
import platform
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(code: str, **env) -> str:
    full_env = {k: v for k, v in os.environ.items() if k not in ('OMP_WAIT_POLICY', 'LOCAL_WORLD_SIZE', 'OMP_NUM_THREADS')
                and not k.startswith('MALLOC_')}
    full_env.update(env, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, '-c', code], env=full_env, capture_output=True, text=True, check=True,
                          timeout=300).stdout.strip()


def test_wait_policy_is_passive_unless_the_user_set_one():
    code = 'import torch_utils.cpu_threads, os; print(repr(os.environ["OMP_WAIT_POLICY"]))'
    assert _run(code) == "'PASSIVE'"
    assert _run(code, OMP_WAIT_POLICY='ACTIVE') == "'ACTIVE'"
    assert _run(code, OMP_WAIT_POLICY='') == "''"


def test_set_threads():
    code = ('from torch_utils import cpu_threads; import torch; torch.set_num_threads(4); '
            'print(cpu_threads.set_threads(None), cpu_threads.set_threads(1), torch.get_num_threads())')
    assert _run(code) == '4 1 1'
    assert _run(code, LOCAL_WORLD_SIZE='2') == '2 1 1'      # torchrun's local ranks share the cores.
    with pytest.raises(subprocess.CalledProcessError) as err:
        _run('from torch_utils import cpu_threads; cpu_threads.set_threads(0)')
    assert 'threads must be an int >= 1 or None, got 0' in err.value.stderr


@pytest.mark.skipif(platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc', reason='glibc mallopt')
def test_keep_freed_memory_stops_the_toy_steps_page_faults():
    # Two batched toy runs at the default shape: glibc returns the freed few-MiB activations to the OS after a step
    # and faults their pages in again in the next (measured ~500 faults per step); kept, almost none.
    code = '''
import resource, sys, torch
from torch_utils import cpu_threads
torch.set_num_threads(1)
if sys.argv[1] == "keep":
    assert cpu_threads.keep_freed_memory() and cpu_threads.keep_freed_memory()   # Idempotent.
from smart_plugin.toy.config import ToyConfig
from smart_plugin.toy.engine import BatchedToy, RunSpec
toy = BatchedToy([RunSpec(m, 0, ToyConfig(smart_start=0.0), m) for m in ("vanilla", "smart")])
for _ in range(3):
    toy.step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    toy.step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
'''
    default, kept = (int(_run(code.replace('sys.argv[1]', repr(mode)))) for mode in ('default', 'keep'))
    assert kept < 20 * 50 and kept <= default, (default, kept)
