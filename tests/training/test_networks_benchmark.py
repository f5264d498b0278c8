"""benchmarks/networks.py: the CLI's help, its user-facing errors and the preset it times."""

import importlib.util
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

SCRIPT = Path(__file__).resolve().parents[2] / 'benchmarks' / 'networks.py'


@pytest.fixture(scope='module')
def bench():
    spec = importlib.util.spec_from_file_location('benchmark_networks', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_help_lists_the_options(bench):
    result = CliRunner().invoke(bench.main, ['--help'])
    assert result.exit_code == 0
    for flag in ('--device', '--batch', '--reps', '--warmup', '--threads'):
        assert flag in result.output


@pytest.mark.skipif(torch.cuda.is_available(), reason='the error needs a machine without CUDA')
def test_cuda_without_gpu_names_the_flag(bench):
    result = CliRunner().invoke(bench.main, ['--device', 'cuda'])
    assert result.exit_code == 1 and 'Error: --device cuda: no CUDA device is available' in result.output


@pytest.mark.parametrize('args,flag', [(['--batch', '40'], '--batch 40: '), (['--reps', '0'], "'--reps'"),
                                       (['--warmup', '-1'], "'--warmup'"), (['--device', 'tpu'], "'--device'")])
def test_bad_values_name_the_flag(bench, args, flag):
    result = CliRunner().invoke(bench.main, args)
    assert result.exit_code != 0 and flag in result.output


def test_preset_has_the_official_cifar_parameter_counts(bench):
    G, D = bench.Generator(**bench.CIFAR['G']), bench.Discriminator(**bench.CIFAR['D'])
    assert (bench._num_params(G), bench._num_params(D)) == (19_947_539, 20_720_641)
    assert D.b4.mbstd.group_size == 32 and G.mapping.num_layers == 2
