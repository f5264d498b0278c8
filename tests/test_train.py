"""train.py through click's CliRunner: --help, --dry-run presets and run names, every user error naming its flag,
a tiny end-to-end run with SMaRt (Gaussian score source) whose snapshot generate.py renders and train.py resumes,
and --metrics with tiny detectors writing metric-<name>.jsonl at the snapshot."""

import json
import os
import sys
import types

import PIL.Image
import pytest
import requests
from click.testing import CliRunner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import generate  # noqa: E402  (top-level scripts, importable from the repository root)
import tiny_metrics  # noqa: E402
import train  # noqa: E402
from tiny_datasets import make_zip  # noqa: E402
from training import snapshot  # noqa: E402


def _make_zip(path, num=16, res=8, num_classes=None):
    return make_zip(path, num=num, res=res, num_classes=num_classes, seed=7)


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp('data')
    return types.SimpleNamespace(ds=_make_zip(root / 'ds.zip'), cond=_make_zip(root / 'cond.zip', num_classes=2),
                                 ds32=_make_zip(root / 'ds32.zip', num=4, res=32))


def _invoke(*args):
    return CliRunner().invoke(train.main, [str(arg) for arg in args])


def _dry_run(outdir, *args):
    result = _invoke('--outdir', outdir, '--dry-run', *args)
    assert result.exit_code == 0, result.output
    text = result.output.split('Training options:\n', 1)[1]
    options = json.loads(text.split('\nOutput directory: ', 1)[0])
    assert result.output.rstrip().endswith('Dry run; exiting.')
    return options


def test_help():
    result = _invoke('--help')
    assert result.exit_code == 0
    for flag in ('--outdir', '--data', '--cfg', '--smart-lambda', '--smart-t', '--smart-dpm', '--diffgan-ts-dist',
                 '--batch-gpu', '--dry-run', '--resume'):
        assert flag in result.output


def test_dry_run_cifar_preset_and_run_name(data, tmp_path):
    options = _dry_run(tmp_path, '--data', data.ds, '--cfg', 'cifar', '--kimg', '1', '--batch', '8')
    assert os.path.basename(options['run_dir']) == '00000-ds-cifar-kimg1-batch8'  # the official name (spec 3.6)
    assert not os.listdir(tmp_path)  # A dry run creates nothing.
    assert (options['batch_size'], options['batch_gpu'], options['total_kimg']) == (8, 8, 1)
    assert options['loss_kwargs'] == dict(r1_gamma=0.01, pl_no_weight_grad=True, pl_weight=0, style_mixing_prob=0)
    assert options['D_kwargs']['architecture'] == 'orig' and options['D_kwargs']['epilogue_kwargs'] == dict(
        mbstd_group_size=32)
    assert (options['ema_kimg'], options['ema_rampup'], options['G_opt_kwargs']['lr']) == (500, 0.05, 0.0025)
    assert options['G_kwargs']['synthesis_kwargs'] == dict(channel_base=32768, channel_max=512, num_fp16_res=4,
                                                           conv_clamp=256)
    assert options['G_kwargs']['mapping_kwargs'] == dict(num_layers=2) and options['G_kwargs']['z_dim'] == 512
    assert options['augment_kwargs']['rotate'] == 1 and options['ada_target'] == 0.6 and options['ada_kimg'] == 500
    assert options['plugins'] == {} and options['metrics'] == [] and options['resume_pkl'] is None
    options = _dry_run(tmp_path, '--data', data.ds, '--cfg', 'cifar')
    assert (options['batch_size'], options['batch_gpu']) == (64, 32)  # batch_gpu = mb // ref_gpus (not --gpus)


def test_dry_run_auto_preset_at_32(data, tmp_path):
    options = _dry_run(tmp_path, '--data', data.ds32)
    # spec 3.5: auto at 32x32 on 1 GPU gives mb 32, mbstd 4, gamma 0.0064, ema 10, fmaps 0.5.
    assert (options['batch_size'], options['batch_gpu']) == (32, 32)
    assert options['D_kwargs']['epilogue_kwargs']['mbstd_group_size'] == 4
    assert options['loss_kwargs']['r1_gamma'] == pytest.approx(0.0064) and options['ema_kimg'] == 10
    assert options['G_kwargs']['synthesis_kwargs']['channel_base'] == 16384 and options['ema_rampup'] == 0.05
    assert os.path.basename(options['run_dir']) == '00000-ds32-auto1'


def test_dry_run_suffixes_overrides_and_plugins(data, tmp_path):
    os.makedirs(tmp_path / '00007-old')
    (tmp_path / '00009-notadir').write_text('')
    options = _dry_run(tmp_path, '--data', data.cond, '--cond', '--mirror', '--subset', '12', '--gamma', '0.5',
                       '--aug', 'fixed', '--p', '0.25', '--augpipe', 'blit', '--cbase', '256', '--cmax', '32',
                       '--map-depth', '3', '--mbstd-group', '2', '--glr', '0.001', '--dlr', '0.002', '--tick', '0.5',
                       '--snap', '3', '--seed', '5', '--fp32', '--smart-lambda', '0.01', '--smart-t', '40,60',
                       '--smart-param', 'x0', '--diffgan', '--diffgan-ts-dist', 'uniform')
    assert os.path.basename(options['run_dir']) == ('00010-cond-cond-subset12-mirror-auto1-gamma0.5-fixed-p0.25-blit'
                                                    '-smart0.01-diffgan')
    assert options['training_set_kwargs'] == dict(class_name='training.dataset.ImageFolderDataset', path=data.cond,
                                                  use_labels=True, max_size=12, xflip=True, resolution=8,
                                                  random_seed=5)
    assert options['augment_kwargs'] == dict(xflip=1, rotate90=1, xint=1) and options['augment_p'] == 0.25
    assert options['ada_target'] is None and options['loss_kwargs']['r1_gamma'] == 0.5
    assert options['G_kwargs']['synthesis_kwargs'] == dict(channel_base=256, channel_max=32, num_fp16_res=0,
                                                           conv_clamp=None)
    assert options['G_kwargs']['mapping_kwargs']['num_layers'] == 3 and options['D_opt_kwargs']['lr'] == 0.002
    assert (options['kimg_per_tick'], options['image_snapshot_ticks'], options['random_seed']) == (0.5, 3, 5)
    assert options['plugins']['smart']['t_lo'] == 40 and options['plugins']['smart']['param'] == 'x0'
    assert options['plugins']['diffgan'] == dict(enabled=True, noise_sd=0.05, t_min=10, t_max=1000,
                                                 ts_dist='uniform', target=0.6, ada_kimg=100, interval=4,
                                                 beta_start=0.0001, beta_end=0.02)


ERRORS = [
    (['--data', '{missing}'], '--data', 'does not exist'),
    (['--data', '{ds}', '--cond'], '--cond', 'has no labels'),
    (['--data', '{ds}', '--p', '0.2'], '--p', 'only applies with --aug=fixed'),
    (['--data', '{ds}', '--aug', 'fixed'], '--aug', '--aug=fixed needs --p'),
    (['--data', '{ds}', '--aug', 'noaug', '--target', '0.5'], '--target', 'only applies with --aug=ada'),
    (['--data', '{ds}', '--aug', 'noaug', '--augpipe', 'bgc'], '--augpipe', 'cannot be used with --aug=noaug'),
    (['--data', '{ds}', '--batch', '6', '--batch-gpu', '4'], '--batch-gpu', 'not a multiple of the per-round'),
    (['--data', '{ds}', '--batch', '8', '--batch-gpu', '4', '--mbstd-group', '3'], '--mbstd-group', 'does not divide'),
    (['--data', '{ds}', '--gpus', '3'], '--gpus', '3 processes; expected a power of two'),
    (['--data', '{ds}', '--metrics', 'fid50k_full,fid1k'], '--metrics', "unknown metric 'fid1k'; valid metrics: "
                                                                       'fid50k_full, kid50k_full, pr50k3_full, is50k'),
    (['--data', '{ds}', '--detector', '{missing}.pt'], '--detector', 'is neither an existing file nor a URL'),
    (['--data', '{ds}', '--detector-vgg16', '{missing}'], '--detector-vgg16', 'is neither an existing file nor a URL'),
    (['--data', '{ds}', '--detector', '{ds}'], '--detector', 'no metric in --metrics=none uses this detector'),
    (['--data', '{ds}', '--metrics', 'fid2k_full', '--detector-vgg16', '{ds}'], '--detector-vgg16',
     'no metric in --metrics=fid2k_full uses this detector'),
    (['--data', '{ds}', '--resume', '{missing}'], '--resume', 'is neither an existing file, a URL nor one of'),
    (['--data', '{ds}', '--resume', '{ds}'], '--resume', 'cannot read'),
    (['--data', '{ds}', '--subset', '17'], '--subset', '17 exceeds the 16 images'),
    (['--data', '{ds}', '--smart-lambda', '-1'], '--smart-lambda', 'expected a finite number >= 0'),
    (['--data', '{ds}', '--smart-freq', '0'], '--smart-freq', 'expected an integer >= 1'),
    (['--data', '{ds}', '--smart-t', '35,25'], '--smart-t', 'expected an integer >= t_lo (35)'),
    (['--data', '{ds}', '--smart-t', '25'], '--smart-t', 'is not a range LO,HI'),
    (['--data', '{ds}', '--smart-schedule', 'bogus'], '--smart-schedule', 'SMaRtOptions.schedule'),
    (['--data', '{ds}', '--smart-batch', '0'], '--smart-batch', 'None (whole round) or an integer >= 1'),
    (['--data', '{ds}', '--smart-lambda', '0.1', '--smart-dpm', '{missing}.pkl'], '--smart-dpm', 'does not exist'),
    (['--data', '{ds}', '--diffgan-noise-sd', '0'], '--diffgan-noise-sd', 'expected a finite number > 0'),
    (['--data', '{ds}', '--diffgan-tmin', '0'], '--diffgan-tmin', 'expected an integer >= 1'),
    (['--data', '{ds}', '--diffgan-tmax', '5'], '--diffgan-tmax', 'expected an integer >= t_min (10)'),
    (['--data', '{ds}', '--diffgan-target', '2'], '--diffgan-target', 'expected a number in [0, 1]'),
    (['--data', '{ds}', '--cfg', 'bogus'], '--cfg', "'bogus' is not one of"),
]


@pytest.mark.parametrize('args, flag, message', ERRORS, ids=[e[1] + '-' + str(i) for i, e in enumerate(ERRORS)])
def test_user_errors_name_the_flag(data, tmp_path, args, flag, message):
    paths = dict(ds=data.ds, missing=str(tmp_path / 'missing'))
    result = _invoke('--outdir', tmp_path / 'out', '--dry-run', *[arg.format(**paths) for arg in args])
    assert result.exit_code != 0
    assert f"{flag}" in result.output and message in result.output, result.output
    assert not os.path.exists(tmp_path / 'out')


@pytest.mark.parametrize('world_size, args, message', [
    ('2', ['--batch', '7'], '--batch: 7 is not divisible by the 2 processes'),
    ('3', [], '--gpus: 3 processes; expected a power of two'),
    ('2', ['--gpus', '4'], '--gpus: 4, but 2 process(es) were started; launch with torchrun --nproc_per_node=4'),
])
def test_process_count_errors(data, tmp_path, monkeypatch, world_size, args, message):
    monkeypatch.setenv('WORLD_SIZE', world_size)  # As torchrun sets it; --dry-run stops before any process group.
    monkeypatch.setenv('RANK', '0')
    result = _invoke('--outdir', tmp_path, '--data', data.ds, '--dry-run', *args)
    assert result.exit_code != 0 and message in result.output, result.output


def test_multi_process_dry_run_splits_the_batch(data, tmp_path, monkeypatch):
    monkeypatch.setenv('WORLD_SIZE', '2')
    monkeypatch.setenv('RANK', '0')
    options = _dry_run(tmp_path, '--data', data.ds32, '--batch', '16')
    assert (options['num_gpus'], options['batch_size'], options['batch_gpu']) == (2, 16, 8)
    assert os.path.basename(options['run_dir']) == '00000-ds32-auto2-batch16'


def test_outdir_that_is_a_file(data, tmp_path):
    (tmp_path / 'file').write_text('')
    result = _invoke('--outdir', tmp_path / 'file', '--data', data.ds, '--dry-run')
    assert result.exit_code != 0 and '--outdir' in result.output and 'is not a directory' in result.output


TINY = ['--cfg', 'stylegan2', '--batch', '4', '--cbase', '128', '--cmax', '16', '--map-depth', '2', '--mbstd-group',
        '2', '--workers', '0', '--tick', '0.008', '--snap', '1']


def test_end_to_end_with_smart_then_generate_and_resume(data, tmp_path):
    result = _invoke('--outdir', tmp_path, '--data', data.ds, '--kimg', '0.024', '--smart-lambda', '0.1',
                     '--smart-dpm', 'gaussian', '--smart-freq', '2', *TINY)
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / '00000-ds-stylegan2-kimg0.024-batch4-smart0.1'
    files = [name for name in os.listdir(run_dir) if not name.startswith('events.out.tfevents.')]  # If tensorboard.
    assert sorted(files) == ['fakes000000.png', 'fakes_init.png', 'log.txt',
                                           'network-snapshot-000000.pkl', 'reals.png', 'stats.jsonl',
                                           'training_options.json']
    options = json.loads((run_dir / 'training_options.json').read_text())
    assert options['plugins']['smart']['lam'] == 0.1 and options['run_dir'] == str(run_dir)
    stats = [json.loads(line) for line in (run_dir / 'stats.jsonl').read_text().splitlines()]
    assert [s['Progress/kimg']['mean'] for s in stats] == [0.004, 0.012, 0.02, 0.024]
    # SMaRt runs at steps 0, 2, 4 (one per tick of 2 steps); tick 3 (step 5) repeats tick 2 (keep_previous).
    assert [s['SMaRt/loss']['num'] for s in stats] == [4, 4, 4, 4]
    assert stats[3]['SMaRt/loss'] == stats[2]['SMaRt/loss'] and stats[1]['SMaRt/loss'] != stats[0]['SMaRt/loss']
    log = (run_dir / 'log.txt').read_text()
    assert 'SMaRt: lambda 0.1 (eps form), every 2 steps' in log and 'Exiting...' in log
    pkl = run_dir / 'network-snapshot-000000.pkl'
    assert snapshot.load_network_pkl(pkl)['plugins'] == {'smart': {'step': 6, 'cur_nimg': 24}}

    rendered = CliRunner().invoke(generate.main, ['--network', str(pkl), '--seeds', '0-1', '--outdir',
                                                  str(tmp_path / 'images')])
    assert rendered.exit_code == 0, rendered.output
    assert PIL.Image.open(tmp_path / 'images' / 'seed0001.png').size == (8, 8)

    resumed = _invoke('--outdir', tmp_path, '--data', data.ds, '--kimg', '0.032', '--smart-lambda', '0.1',
                      '--smart-dpm', 'gaussian', '--smart-freq', '2', '--resume', pkl, *TINY)
    assert resumed.exit_code == 0, resumed.output
    run_dir = tmp_path / '00001-ds-stylegan2-kimg0.032-batch4-resumecustom-smart0.1'
    options = json.loads((run_dir / 'training_options.json').read_text())
    assert options['ada_kimg'] == 500 and options['ema_rampup'] is None  # exact resume keeps the configured values
    assert 'weights and training state (exact)' in resumed.output and 'from kimg 0.024' in resumed.output
    stats = [json.loads(line) for line in (run_dir / 'stats.jsonl').read_text().splitlines()]
    assert [s['Progress/kimg']['mean'] for s in stats] == [0.032] and stats[0]['Progress/tick']['mean'] == 4

    # A weights-only pickle (like NVIDIA's) resumes as transfer learning: ada_kimg 100, no EMA ramp-up.
    data_only = snapshot.load_network_pkl(pkl)
    snapshot.save_network_pkl(tmp_path / 'weights.pkl', dict(G=data_only['G'], D=data_only['D'],
                                                             G_ema=data_only['G_ema']))
    options = _dry_run(tmp_path, '--data', data.ds, '--cfg', 'paper256', '--resume', tmp_path / 'weights.pkl')
    assert options['ada_kimg'] == 100 and options['ema_rampup'] is None


def test_plugin_option_error_found_at_setup_names_the_flag(data, tmp_path):
    result = _invoke('--outdir', tmp_path, '--data', data.ds, '--kimg', '0.004', '--smart-lambda', '0.1',
                     '--smart-t', '10,1000', *TINY)
    assert result.exit_code != 0
    assert '--smart-t: SMaRtOptions.t_hi is 1000; expected an integer < 1000' in result.output, result.output


def test_metrics_at_each_snapshot_with_tiny_detectors(data, tmp_path, monkeypatch):
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    inception = tiny_metrics.save_torchscript(tmp_path / 'inception.pt')
    vgg16 = tiny_metrics.save_torchscript(tmp_path / 'vgg16.pt', num_features=6, seed=1)
    options = _dry_run(tmp_path / 'dry', '--data', data.ds, '--metrics', 'fid2k_full,pr2k3_full', '--detector',
                       inception, *TINY)
    assert options['metrics'] == ['fid2k_full', 'pr2k3_full']
    assert options['metric_kwargs'] == dict(detector=inception, detector_vgg16=None, num_workers=0)
    result = _invoke('--outdir', tmp_path, '--data', data.ds, '--kimg', '0.004', '--metrics', 'fid2k_full,pr2k3_full',
                     '--detector', inception, '--detector-vgg16', vgg16, *TINY)
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / '00000-ds-stylegan2-kimg0.004-batch4'
    fid_lines = [json.loads(line) for line in (run_dir / 'metric-fid2k_full.jsonl').read_text().splitlines()]
    pr_lines = [json.loads(line) for line in (run_dir / 'metric-pr2k3_full.jsonl').read_text().splitlines()]
    assert len(fid_lines) == len(pr_lines) == 1  # tick 0, which is also the last one, writes the snapshot
    assert all(line['snapshot_pkl'] == 'network-snapshot-000000.pkl' for line in fid_lines + pr_lines)
    assert sorted(pr_lines[0]['results']) == ['pr2k3_full_precision', 'pr2k3_full_recall']
    stats = [json.loads(line) for line in (run_dir / 'stats.jsonl').read_text().splitlines()]
    assert [s['Metrics/fid2k_full']['mean'] for s in stats] == [line['results']['fid2k_full'] for line in fid_lines]
    assert '"metric": "fid2k_full"' in (run_dir / 'log.txt').read_text()


def test_missing_detector_offline_names_the_flag(data, tmp_path, monkeypatch):
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    monkeypatch.delenv('SMART_DETECTOR_DIR', raising=False)

    def refuse(self, url, **kwargs):
        raise requests.ConnectionError('offline')

    monkeypatch.setattr(requests.Session, 'get', refuse)
    result = _invoke('--outdir', tmp_path, '--data', data.ds, '--kimg', '0.004', '--metrics', 'is2k', *TINY)
    assert result.exit_code != 0
    assert ('--detector: the inception detector file inception-2015-12-05.pt is not available offline'
            in result.output), result.output
