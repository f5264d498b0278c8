"""SMaRt's start-up line as --dry-run prints it (smart_plugin/preview.py) equals the line a run prints at set-up, for
the bands a user can give or leave to the defaults, and it carries the band warning."""

import types

import pytest
import torch

from dataset_io.reader import ImageFolderDataset
from edm_bridge import registry
from smart_plugin import OptionError, SMaRt, SMaRtOptions
from smart_plugin.preview import startup_lines
from tiny_datasets import make_zip


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    return ImageFolderDataset(make_zip(tmp_path_factory.mktemp('data') / 'ds.zip', num=6, res=8))


def _run_lines(capsys, options, dataset):
    """What SMaRt.setup prints for a run with these options (the Gaussian score source fitted to the dataset)."""
    G = types.SimpleNamespace(img_resolution=8, img_channels=3, c_dim=0)
    SMaRt(options).setup(G=G, D=None, training_set=dataset, device=torch.device('cpu'), rank=0, num_gpus=1)
    return capsys.readouterr().out.splitlines()


@pytest.mark.parametrize('band', [{}, dict(t_lo=40, t_hi=60, schedule='ddpm-linear'), dict(t_lo=25, t_hi=35),
                                  dict(schedule='karras'), dict(schedule='ddpm-cosine')])
def test_preview_equals_the_runs_line(capsys, dataset, band):
    options = SMaRtOptions(lam=0.1, dpm='gaussian', param='x0', draws=4, **band)
    assert startup_lines(options, None, len(dataset)) == _run_lines(capsys, options, dataset)


def test_default_band_how_chosen_and_the_warning(dataset):
    line, = startup_lines(SMaRtOptions(lam=0.1), None, 6)
    assert line == ('SMaRt: lambda 0.1 (eps form), every 8 steps, t 40..60 on ddpm-linear-1000 -> sigma 0.1437..0.2085 '
                    '(default for this score source: its own schedule, karras-1000, is not a DDPM one), score source '
                    'gaussian (per-pixel fit to 6 images), 1 draw per sample, grad full')
    line, warning = startup_lines(SMaRtOptions(lam=0.1, t_lo=25, t_hi=35), None, 6)
    assert "t 25..35 on karras-1000 -> sigma 0.003625..0.004538 (schedule not given: the score source's own)" in line
    assert warning.startswith('WARNING: SMaRt: the sigma band ends at 0.004538, below one grey level')
    assert startup_lines(SMaRtOptions(lam=0.0), None, 6) == [] and startup_lines(None) == []


def test_a_registry_entry_gives_its_own_schedule():
    entry, _ = registry.resolve('adm-imagenet64-cond')   # An ADM checkpoint: the paper's band on its own steps.
    line, = startup_lines(SMaRtOptions(lam=0.1, dpm='adm-imagenet64-cond'), entry)
    assert "t 25..35 on ddpm-cosine-1000 -> sigma 0.05154..0.06753 (default for this score source: the paper's band" \
           in line and 'score source adm-imagenet64-cond' in line


def test_a_t_beyond_the_schedule_is_refused():
    with pytest.raises(OptionError, match='SMaRtOptions.t_hi is 1000; expected an integer < 1000'):
        startup_lines(SMaRtOptions(lam=0.1, t_lo=25, t_hi=1000), None, 6)
