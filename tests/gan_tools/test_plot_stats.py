"""Training curves: TensorBoard events with the scalars of stats.jsonl (when tensorboard is installed), and
gan_tools.plot_stats drawing the main curves of a run directory to a PNG."""

import json
import os
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
from click.testing import CliRunner

from gan_tools import plot_stats
from tiny_datasets import make_zip
from torch_utils import tfevents

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _stat(mean):
    return dict(num=1, mean=mean, std=0.0)


def _write_run(run_dir, ticks=4):
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, 'stats.jsonl'), 'w') as f:
        for tick in range(ticks):
            line = {'Progress/kimg': _stat(4.0 * tick), 'Progress/augment': _stat(0.01 * tick),
                    'Loss/G/loss': _stat(1.0 - 0.1 * tick), 'Loss/D/loss': _stat(0.5), 'Loss/r1_penalty': _stat(0.2),
                    'SMaRt/loss': _stat(0.3), 'DiffGAN/p': _stat(0.1 * tick), 'DiffGAN/T': _stat(10.0 + tick),
                    'Timing/sec_per_tick': _stat(3.0), 'timestamp': 1.0 + tick}
            if tick == 2:
                line['Metrics/fid50k_full'] = _stat(12.5)
                line['Loss/G/reg'] = _stat(float('nan'))
            f.write(json.dumps(line) + '\n')


def test_curves_groups_the_main_stats(tmp_path):
    _write_run(tmp_path / 'run')
    panels = plot_stats.curves(plot_stats.load_stats(str(tmp_path / 'run')))
    assert list(panels) == ['Losses', 'Regularizers', 'SMaRt', 'Diffusion-GAN', 'ADA p', 'Metrics']
    assert panels['Losses']['Loss/G/loss'] == ([0.0, 4.0, 8.0, 12.0], [1.0, 0.9, 0.8, 0.7])
    assert sorted(panels['Diffusion-GAN']) == ['DiffGAN/T', 'DiffGAN/p']
    assert panels['Metrics'] == {'Metrics/fid50k_full': ([8.0], [12.5])}
    assert 'Loss/G/reg' not in panels['Regularizers']  # NaN only: nothing to draw.


def test_plot_stats_module_writes_a_png(tmp_path):
    run_dir = tmp_path / 'run'
    _write_run(run_dir)
    proc = subprocess.run([sys.executable, '-m', 'gan_tools.plot_stats', str(run_dir)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    image = PIL.Image.open(run_dir / 'curves.png')
    assert image.size == (int(4.2 * 3 * 80), int(3.0 * 2 * 80))  # 6 panels in 3 columns at 80 dpi.
    assert np.asarray(image.convert('L')).std() > 10  # Not a blank canvas.
    result = CliRunner().invoke(plot_stats.main, [str(tmp_path)])
    assert result.exit_code != 0 and 'stats.jsonl does not exist; expected a run directory' in result.output


def test_no_tensorboard_no_events(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, 'torch.utils.tensorboard', None)  # Makes the import fail.
    assert tfevents.open_writer(str(tmp_path)) is None
    assert tfevents.open_writer(None) is None


def test_training_writes_the_stats_jsonl_scalars_as_events(tmp_path):
    pytest.importorskip('tensorboard')
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    sys.path.insert(0, ROOT)
    import train
    data = make_zip(tmp_path / 'ds.zip', num=16, res=8, seed=7)
    result = CliRunner().invoke(train.main, [
        '--outdir', str(tmp_path / 'runs'), '--data', data, '--kimg', '0.012', '--cfg', 'stylegan2', '--batch', '4',
        '--cbase', '128', '--cmax', '16', '--map-depth', '2', '--mbstd-group', '2', '--workers', '0', '--tick',
        '0.008', '--snap', '1', '--diffgan', '--smart-lambda', '0.1', '--smart-dpm', 'gaussian'])
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / 'runs' / os.listdir(tmp_path / 'runs')[0]
    assert any(name.startswith('events.out.tfevents.') for name in os.listdir(run_dir))
    stats = [json.loads(line) for line in (run_dir / 'stats.jsonl').read_text().splitlines()]
    events = EventAccumulator(str(run_dir), size_guidance={'scalars': 0})
    events.Reload()
    names = {name for line in stats for name in line if name != 'timestamp'}
    assert set(events.Tags()['scalars']) == names
    assert {'SMaRt/loss', 'DiffGAN/p', 'DiffGAN/T', 'Progress/augment', 'Loss/G/loss'} <= names
    for name in ('Loss/G/loss', 'DiffGAN/T', 'SMaRt/loss'):
        points = events.Scalars(name)
        assert [p.step for p in points] == [int(line['Progress/kimg']['mean']) for line in stats]
        np.testing.assert_allclose([p.value for p in points], [line[name]['mean'] for line in stats], rtol=1e-6)
