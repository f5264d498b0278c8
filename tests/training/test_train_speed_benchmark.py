"""benchmarks/train_speed.py --against (its user errors) and benchmarks/train_profile.py (its kind attribution)."""

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from torch_utils.ops import upfirdn2d

ROOT = Path(__file__).resolve().parents[2]


def _load(name):
    spec = importlib.util.spec_from_file_location(f'bench_{name}', ROOT / 'benchmarks' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def train_speed():
    return _load('train_speed')


def test_against_unknown_config_names_the_flag(train_speed):
    result = CliRunner().invoke(train_speed.main, ['--against', 'HEAD', '--configs', 'digits,foo'])
    assert result.exit_code == 1
    assert result.output.strip() == 'Error: --configs digits,foo: expected names from digits,mnist,cifar'


def test_against_bad_revision_is_one_line(train_speed, monkeypatch):
    monkeypatch.setattr(train_speed.loop_speed, 'make_datasets', lambda tmp: {})
    result = CliRunner().invoke(train_speed.main, ['--against', 'no-such-rev-h32', '--configs', 'digits'])
    assert result.exit_code == 1
    assert result.output.startswith('Error: --against no-such-rev-h32: git worktree add failed: ')
    assert len(result.output.strip().splitlines()) == 1


def test_profile_charges_forward_and_backward_to_the_right_kind():
    profile = _load('train_profile')
    x = torch.randn(4, 8, 16, 16, requires_grad=True)
    w = torch.randn(8, 8, 3, 3, requires_grad=True)
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    with profile.kind_wrappers(), torch.profiler.profile() as prof:
        y = profile.conv2d_gradfix.conv2d(x, w, padding=1)
        y = profile.upfirdn2d.upfirdn2d(y, f, down=2, padding=1)
        F.softplus(y).sum().backward()
    totals = profile.classify(prof.events())
    assert set(totals) >= {'conv', 'upfirdn2d', 'other ops'}
    assert set(totals) <= {'conv', 'upfirdn2d', 'other ops'}
    assert all(us > 0 for us in totals.values())


def test_ab_switches_each_flip_their_fast_path_and_all_flips_every_one(monkeypatch):
    profile = _load('train_profile')
    paths = {  # switch -> (module, attribute, value when the fast path is on)
        'gradfix': (profile.conv2d_gradfix, 'custom_on_cpu', False),
        'upfirdn2d': (profile.upfirdn2d, 'fast_conv', True),
        'channels_last': (profile.networks, 'CPU_CHANNELS_LAST', True),
        'fold_batch': (profile.upfirdn2d, 'fold_batch', True),
        'ada': (profile.augment, 'SKIP_CLOSED_GATES', True),
        'finite': (profile.distributed, 'CPU_CHECK_FINITE_FIRST', True),
        'adam': (profile.train_state, 'CPU_FUSED_ADAM', True),
    }
    assert set(profile.SWITCHES) == set(paths) | {'all'}
    for module, attribute, _ in paths.values():
        monkeypatch.setattr(module, attribute, getattr(module, attribute))  # restored after the test
    for name in list(paths) + ['all']:
        for on in (False, True):
            profile._set_switch(name, on)
            for switch, (module, attribute, fast) in paths.items():
                assert getattr(module, attribute) == (fast if on or name not in (switch, 'all') else not fast), \
                    (name, on, switch)
