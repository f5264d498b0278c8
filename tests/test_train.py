"""train.py through click's CliRunner: --help, --dry-run presets and run names, every user error naming its flag,
a tiny end-to-end run with SMaRt (Gaussian score source) whose snapshot generate.py renders and train.py resumes,
and --metrics with tiny detectors writing metric-<name>.jsonl at the snapshot."""

import json
import os
import pickle
import sys
import types

import PIL.Image
import pytest
import requests
import torch
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
                 '--batch-gpu', '--dry-run', '--resume', '--diffgan-t-embed', '--diffgan-ada-kimg',
                 '--diffgan-ada-maxp', '--diffgan-beta-schedule', '--diffgan-beta-start', '--diffgan-beta-end'):
        assert flag in result.output


def test_dry_run_cifar_preset_and_run_name(data, tmp_path):
    options = _dry_run(tmp_path, '--data', data.ds, '--cfg', 'cifar', '--kimg', '1', '--batch', '8')
    assert os.path.basename(options['run_dir']) == '00000-ds-cifar-kimg1-batch8'  # docs/spec/stylegan2-ada.md 3.6
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
    # docs/spec/stylegan2-ada.md 3.5: auto at 32x32 on 1 GPU gives mb 32, mbstd 4, gamma 0.0064, ema 10, fmaps 0.5.
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
                       '--smart-param', 'x0', '--smart-draws', '4', '--smart-antithetic', '--smart-grad', 'sds',
                       '--smart-diagnostics', '--diffgan', '--diffgan-ts-dist', 'uniform')
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
    assert {key: options['plugins']['smart'][key] for key in ('draws', 'antithetic', 'grad', 'diagnostics')} == dict(
        draws=4, antithetic=True, grad='sds', diagnostics=True)
    # --aug=fixed stays the loop's own augmentation next to Diffusion-GAN (ours; the release has no fixed p).
    assert options['plugins']['diffgan'] == dict(enabled=True, noise_sd=0.05, t_min=10, t_max=1000,
                                                 ts_dist='uniform', t_embed='raw', target=0.6, ada_kimg=100,
                                                 interval=4, beta_schedule='linear', beta_start=0.0001,
                                                 beta_end=0.02, ada_augpipe=None, ada_maxp=0.25)


def test_dry_run_prints_smarts_startup_line_and_band_warning(data, tmp_path):
    result = _invoke('--outdir', tmp_path, '--dry-run', '--data', data.ds, '--smart-lambda', '0.1',
                     '--smart-t', '25,35')
    assert result.exit_code == 0, result.output
    tail = result.output.split('\nOutput directory: ', 1)[1].splitlines()[1:]
    assert tail[0] == ("SMaRt: lambda 0.1 (eps form), every 8 steps, t 25..35 on karras-1000 -> sigma "
                       "0.003625..0.004538 (schedule not given: the score source's own), score source gaussian "
                       '(per-pixel fit to 16 images), 1 draw per sample, grad full')
    assert tail[1].startswith('WARNING: SMaRt: the sigma band ends at 0.004538') and tail[2:] == ['Dry run; exiting.']
    assert _dry_run(tmp_path, '--data', data.ds)  # SMaRt off: no line.
    assert 'SMaRt' not in _invoke('--outdir', tmp_path, '--dry-run', '--data', data.ds).output.split('Output dir')[1]
    assert not os.listdir(tmp_path)


def test_dry_run_diffgan_alone_has_no_ada(data, tmp_path):
    options = _dry_run(tmp_path, '--data', data.ds, '--diffgan')  # The released default: --aug no.
    assert (options['augment_kwargs'], options['augment_p'], options['ada_target']) == (None, 0, None)
    assert options['plugins']['diffgan']['ada_augpipe'] is None and options['plugins']['diffgan']['t_embed'] == 'raw'
    assert os.path.basename(options['run_dir']) == '00000-ds-auto1-diffgan'
    options = _dry_run(tmp_path, '--data', data.ds)  # Without --diffgan, ADA stays the default.
    assert options['ada_target'] == 0.6 and options['augment_kwargs'] is not None and options['plugins'] == {}


def test_dry_run_diffgan_with_ada_couples_it_and_takes_every_flag(data, tmp_path):
    options = _dry_run(tmp_path, '--data', data.ds, '--diffgan', '--aug', 'ada')
    # The released coupling: no separate ADA controller; the plugin runs bgc at min(p, 0.25).
    assert (options['augment_kwargs'], options['augment_p'], options['ada_target']) == (None, 0, None)
    assert options['plugins']['diffgan']['ada_augpipe'] == 'bgc' and options['plugins']['diffgan']['ada_maxp'] == 0.25
    options = _dry_run(tmp_path, '--data', data.ds, '--diffgan', '--aug', 'ada', '--augpipe', 'blit',
                       '--diffgan-ada-maxp', '0.5', '--diffgan-t-embed', 'scaled', '--diffgan-ada-kimg', '50',
                       '--diffgan-beta-schedule', 'quad', '--diffgan-beta-start', '2e-4', '--diffgan-beta-end', '0.01')
    assert options['plugins']['diffgan'] == dict(enabled=True, noise_sd=0.05, t_min=10, t_max=1000,
                                                 ts_dist='priority', t_embed='scaled', target=0.6, ada_kimg=50,
                                                 interval=4, beta_schedule='quad', beta_start=0.0002,
                                                 beta_end=0.01, ada_augpipe='blit', ada_maxp=0.5)
    assert os.path.basename(options['run_dir']) == '00000-ds-auto1-ada-blit-diffgan'


def test_resume_refuses_a_diffgan_state_trained_on_scaled_t(data, tmp_path):
    first = _invoke('--outdir', tmp_path / 'first', '--data', data.ds, '--kimg', '0.004', '--diffgan',
                    '--diffgan-t-embed', 'scaled', *TINY)
    assert first.exit_code == 0, first.output
    (run,) = os.listdir(tmp_path / 'first')
    written = snapshot.load_network_pkl(tmp_path / 'first' / run / 'network-snapshot-000000.pkl')
    old_state = {'p': 0.01, 'T': 20, 'step': 8, 't_table': [0] * 32 + [5] * 32}  # Version 1 (no 'version' key).
    pkl = tmp_path / 'old.pkl'
    snapshot.save_network_pkl(pkl, dict(written, plugins={'diffgan': old_state}))
    result = _invoke('--outdir', tmp_path / 'out', '--data', data.ds, '--diffgan', '--resume', pkl, '--dry-run',
                     *TINY)
    assert result.exit_code != 0 and not os.path.exists(tmp_path / 'out')
    assert ("--diffgan-t-embed: --resume=" in result.output and "(a snapshot from before raw-t conditioning) was "
            "trained with D's t input 'scaled', this run has t_embed 'raw'" in result.output), result.output
    options = _dry_run(tmp_path / 'out', '--data', data.ds, '--diffgan', '--diffgan-t-embed', 'scaled',
                       '--resume', pkl, *TINY)
    assert options['resume_pkl'] == str(pkl) and options['plugins']['diffgan']['t_embed'] == 'scaled'


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
    (['--data', '{ds}', '--smart-lambda', '0.1', '--smart-t', '25,1000'], '--smart-t',
     'SMaRtOptions.t_hi is 1000; expected an integer < 1000, the number of steps of schedule karras'),
    (['--data', '{ds}', '--smart-batch', '0'], '--smart-batch', 'None (whole round) or an integer >= 1'),
    (['--data', '{ds}', '--smart-lambda', '0.1', '--smart-dpm', '{missing}.pkl'], '--smart-dpm', 'does not exist'),
    (['--data', '{ds}', '--smart-draws', '0'], '--smart-draws', 'SMaRtOptions.draws is 0; expected an integer >= 1'),
    (['--data', '{ds}', '--smart-draws', '3', '--smart-antithetic'], '--smart-draws',
     'SMaRtOptions.draws is 3; expected an even number with antithetic=True (pairs eps, -eps)'),
    (['--data', '{ds}', '--smart-grad', 'exact'], '--smart-grad', "'exact' is not one of 'full', 'sds'"),
    (['--data', '{ds}', '--diffgan-noise-sd', '0'], '--diffgan-noise-sd', 'expected a finite number > 0'),
    (['--data', '{ds}', '--diffgan-tmin', '0'], '--diffgan-tmin', 'expected an integer >= 1'),
    (['--data', '{ds}', '--diffgan-tmax', '5'], '--diffgan-tmax', 'expected an integer >= t_min (10)'),
    (['--data', '{ds}', '--diffgan-target', '2'], '--diffgan-target', 'expected a number in [0, 1]'),
    (['--data', '{ds}', '--cfg', 'bogus'], '--cfg', "'bogus' is not one of"),
    (['--data', '{ds}', '--diffgan-ada-maxp', '0.5'], '--diffgan-ada-maxp',
     'only applies with --diffgan --aug=ada (got --aug=ada without --diffgan)'),
    (['--data', '{ds}', '--diffgan', '--diffgan-ada-maxp', '0.5'], '--diffgan-ada-maxp',
     'only applies with --diffgan --aug=ada (got --aug=noaug)'),
    (['--data', '{ds}', '--diffgan-ada-maxp', '0'], '--diffgan-ada-maxp', '0<x<=1'),
    (['--data', '{ds}', '--diffgan-ada-kimg', '0'], '--diffgan-ada-kimg', 'x>0'),
    (['--data', '{ds}', '--diffgan-beta-start', '1'], '--diffgan-beta-start', '0<x<1'),
    (['--data', '{ds}', '--diffgan-beta-end', '1e-5'], '--diffgan-beta-end',
     'DiffGANOptions.beta_end is 1e-05; expected a number in [beta_start (0.0001), 1)'),
    (['--data', '{ds}', '--diffgan-beta-schedule', 'cos'], '--diffgan-beta-schedule', "'cos' is not one of"),
    (['--data', '{ds}', '--diffgan-t-embed', 'sin'], '--diffgan-t-embed', "'sin' is not one of 'raw', 'scaled'"),
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
    # Ticks at 4, 12, 20 and 24 images: the released name once, then kimg to the image; nothing overwritten.
    files = [name for name in os.listdir(run_dir) if not name.startswith('events.out.tfevents.')]  # If tensorboard.
    assert sorted(files) == ['fakes000000.012.png', 'fakes000000.020.png', 'fakes000000.024.png',
                             'fakes000000.png', 'fakes_init.png', 'log.txt',
                             'network-snapshot-000000.012.pkl', 'network-snapshot-000000.020.pkl',
                             'network-snapshot-000000.024.pkl', 'network-snapshot-000000.pkl',
                             'reals.png', 'stats.jsonl', 'training_options.json']
    options = json.loads((run_dir / 'training_options.json').read_text())
    assert options['plugins']['smart']['lam'] == 0.1 and options['run_dir'] == str(run_dir)
    stats = [json.loads(line) for line in (run_dir / 'stats.jsonl').read_text().splitlines()]
    assert [s['Progress/kimg']['mean'] for s in stats] == [0.004, 0.012, 0.02, 0.024]
    # SMaRt runs at steps 0, 2, 4 (one per tick of 2 steps); tick 3 (step 5) repeats tick 2 (keep_previous).
    assert [s['SMaRt/loss']['num'] for s in stats] == [4, 4, 4, 4]
    assert stats[3]['SMaRt/loss'] == stats[2]['SMaRt/loss'] and stats[1]['SMaRt/loss'] != stats[0]['SMaRt/loss']
    log = (run_dir / 'log.txt').read_text()
    assert 'SMaRt: lambda 0.1 (eps form), every 2 steps' in log and 'Exiting...' in log
    # No --smart-t / --smart-schedule: the Gaussian source's default band, above one grey level (no WARNING).
    assert options['plugins']['smart']['t_lo'] is None and options['plugins']['smart']['schedule'] is None
    assert 't 40..60 on ddpm-linear-1000 -> sigma 0.1437..0.2085 (default for this score source' in log
    assert 'WARNING: SMaRt' not in log
    assert snapshot.load_network_pkl(run_dir / 'network-snapshot-000000.pkl')['plugins']['smart']['cur_nimg'] == 4
    pkl = run_dir / 'network-snapshot-000000.024.pkl'  # The last one; --resume takes it like any other.
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
    options = _dry_run(tmp_path, '--data', data.ds, '--cfg', 'paper256', *TINY[2:], '--resume', tmp_path / 'weights.pkl')
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
                       inception, '--detector-vgg16', vgg16, *TINY)
    assert options['metrics'] == ['fid2k_full', 'pr2k3_full']
    assert options['metric_kwargs'] == dict(detector=inception, detector_vgg16=vgg16, trust_detector=False,
                                            num_workers=0)
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
    assert not (tmp_path / '00000-ds-stylegan2-kimg0.004-batch4').exists()  # Found in pre-flight.
    # Also under --dry-run, and PPL asks for the VGG16 detector (the metric registry says which one each needs).
    inception = tiny_metrics.save_torchscript(tmp_path / 'inception.pt')
    for metric, flag in (('fid50k_full', '--detector'), ('ppl2_wend_2k', '--detector-vgg16')):
        result = _invoke('--outdir', tmp_path / 'dry', '--data', data.ds, '--metrics', metric, '--dry-run', *TINY)
        assert result.exit_code == 1 and f'Error: {flag}: the {flag[11:] or "inception"} detector' in result.output
        assert 'Training options' not in result.output and not (tmp_path / 'dry').exists()
    result = _invoke('--outdir', tmp_path / 'dry', '--data', data.ds, '--metrics', 'ppl2_wend_2k', '--dry-run',
                     '--detector', inception, *TINY)
    assert result.output.startswith('Error: --detector: no metric in --metrics=ppl2_wend_2k uses this detector')


def test_official_ncsnv2_checkpoint_as_score_source(data, tmp_path):
    from shared_fixtures import fixture_dir
    root = fixture_dir('ncsnv2')
    ckpt = os.path.join(root, 'ncsnv2-cifar10-ngf16-32px', 'checkpoint.pth')  # 32x32, config.yml beside it
    result = _invoke('--outdir', tmp_path / 'small', '--data', data.ds, '--smart-lambda', '0.1', '--smart-dpm', ckpt)
    assert result.exit_code != 0 and not os.path.exists(tmp_path / 'small')  # Checked before the run dir exists.
    assert '--smart-dpm: denoiser is 32x32 but the generator outputs 8x8' in result.output, result.output
    import torch
    torch.save({'begin.weight': torch.zeros(1)}, tmp_path / 'other.pt')  # A state dict that is no known format.
    result = _invoke('--outdir', tmp_path / 'other', '--data', data.ds32, '--smart-lambda', '0.1', '--smart-dpm',
                     tmp_path / 'other.pt')
    assert result.exit_code != 0 and not os.path.exists(tmp_path / 'other')
    assert 'without the input_blocks.* / time_embed.* tensors of an ADM (guided-diffusion) checkpoint, nor an NCSNv2 ' \
        'checkpoint.pth list' in result.output and 'ADM checkpoint (a plain' not in result.output
    result = _invoke('--outdir', tmp_path / 'run', '--data', data.ds32, '--kimg', '0.004', '--smart-lambda', '0.1',
                     '--smart-dpm', ckpt, '--smart-freq', '1', '--smart-t', '900,950', *TINY)
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / 'run' / os.listdir(tmp_path / 'run')[0]
    log = (run_dir / 'log.txt').read_text()
    assert f'score source {ckpt}' in log
    stats = [json.loads(line) for line in (run_dir / 'stats.jsonl').read_text().splitlines()]
    assert stats[0]['SMaRt/loss']['num'] == 4 and stats[0]['SMaRt/loss']['mean'] > 0


def test_untrusted_pickle_in_the_download_cache_is_refused_before_it_runs(data, tmp_path, monkeypatch):
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    monkeypatch.delenv('SMART_DETECTOR_DIR', raising=False)
    downloads = tmp_path / 'cache' / 'downloads'
    downloads.mkdir(parents=True)
    marker = tmp_path / 'payload-ran'
    cached = tiny_metrics.save_payload(downloads / 'a866f8d678872dcf6fcf60ddd09807ab_inception-2015-12-05.pt', marker)
    result = _invoke('--outdir', tmp_path / 'out', '--data', data.ds, '--kimg', '0.004', '--metrics', 'is2k', *TINY)
    assert result.exit_code == 1 and not marker.exists()
    assert (f'Error: --detector: {cached} (found in the download cache {downloads}) is not a TorchScript archive'
            in result.output and 'pass --trust-detector' in result.output), result.output


def _nan_score_source(monkeypatch):
    """Make the Gaussian score source answer NaN for every sample."""
    from edm_bridge import factory
    fit = factory.fit_gaussian_denoiser

    def broken_fit(training_set):
        denoiser = fit(training_set)
        forward = denoiser.forward
        denoiser.forward = lambda x, sigma, labels=None: forward(x, sigma, labels) * float('nan')
        return denoiser
    monkeypatch.setattr(factory, 'fit_gaussian_denoiser', broken_fit)


def test_nonfinite_score_source_stops_the_run(data, tmp_path, monkeypatch):
    """Before: NaN from the score source zeroed every G step silently, rc 0."""
    _nan_score_source(monkeypatch)
    result = _invoke('--outdir', tmp_path, '--data', data.ds, '--kimg', '0.024', '--smart-lambda', '0.1',
                     '--smart-dpm', 'gaussian', '--smart-freq', '1', *TINY)
    assert result.exit_code == 1, result.output
    last = tmp_path / '00000-ds-stylegan2-kimg0.024-batch4-smart0.1' / 'network-snapshot-000000.pkl'
    assert result.output.strip().splitlines()[-1] == (
        'Error: --smart-dpm: the score source (gaussian) gave NaN/Inf for 4 of 4 SMaRt samples this tick, more than '
        'the 25% allowed; the score source is broken for these images (check it with python -m edm_bridge info) '
        f'(at kimg 0.004; the last good snapshot is {last})')


def test_nonfinite_weights_refused_at_snapshot_and_resume(data, tmp_path, monkeypatch):
    """Before: NaN weights went into new snapshots (and black fakes grids), and a NaN snapshot resumed as 'exact'."""
    from training import run_outputs, training_loop
    real_update, calls = training_loop.ema_update, []

    def poisoning_update(G_ema, *args):  # The 3rd EMA update (tick 1) turns one G_ema weight into NaN.
        real_update(G_ema, *args)
        calls.append(1)
        if len(calls) == 3:
            with torch.no_grad():
                G_ema.mapping.fc0.weight[0, 0] = float('nan')

    monkeypatch.setattr(training_loop, 'ema_update', poisoning_update)
    result = _invoke('--outdir', tmp_path / 'a', '--data', data.ds, '--kimg', '0.024', *TINY)
    pkl = tmp_path / 'a' / '00000-ds-stylegan2-kimg0.024-batch4' / 'network-snapshot-000000.pkl'
    assert result.exit_code == 1 and result.output.strip().splitlines()[-1] == (
        'Error: training: fakes000000.012.png not written: G_ema.mapping.fc0.weight holds 1 NaN/Inf value(s) '
        f'(at kimg 0.012; the last good snapshot is {pkl})')
    monkeypatch.setattr(run_outputs, 'save_fakes', lambda *args: None)  # Now the snapshot's own check.
    calls.clear()
    result = _invoke('--outdir', tmp_path, '--data', data.ds, '--kimg', '0.024', *TINY)
    assert result.exit_code == 1, result.output
    pkl = tmp_path / '00000-ds-stylegan2-kimg0.024-batch4' / 'network-snapshot-000000.pkl'
    assert result.output.strip().splitlines()[-1] == (
        'Error: training: snapshot at kimg 0.012 not written: G_ema.mapping.fc0.weight holds 1 NaN/Inf value(s) '
        f'(at kimg 0.012; the last good snapshot is {pkl})')
    good = snapshot.load_network_pkl(pkl)
    assert good['training_state']['cur_nimg'] == 4 and bool(torch.isfinite(good['G_ema'].mapping.fc0.weight).all())

    with torch.no_grad():
        good['G'].mapping.fc1.bias[3] = float('inf')
    snapshot.save_network_pkl(tmp_path / 'nan.pkl', good)
    result = _invoke('--outdir', tmp_path, '--data', data.ds, '--kimg', '0.024', '--resume', tmp_path / 'nan.pkl',
                     *TINY)
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines()[-1] == (
        f'Error: --resume: {tmp_path / "nan.pkl"}: refusing to resume from non-finite weights: G.mapping.fc1.bias '
        f'holds 1 NaN/Inf value(s)')


@pytest.mark.parametrize('label, problem', [([float('nan')], 'expected finite numbers (no NaN, Infinity, strings or '
                                                             'booleans)'),
                                            (10 ** 9, 'expected a class index in [0, 100000)')])
def test_cond_refuses_bad_labels_before_training(tmp_path, label, problem):
    """Before: NaN labels trained with rc 0 (NaN in w_avg and the snapshot); class 1e9 tried to allocate 2 TB."""
    import zipfile
    path = tmp_path / 'bad.zip'
    with zipfile.ZipFile(_make_zip(tmp_path / 'src.zip', num=4)) as src, zipfile.ZipFile(path, 'w') as dst:
        names = sorted(n for n in src.namelist() if n.endswith('.png'))
        for name in names:
            dst.writestr(name, src.read(name))
        good = [0.5] if isinstance(label, list) else 0
        dst.writestr('dataset.json', json.dumps({'labels': [[n, label if i == 2 else good]
                                                            for i, n in enumerate(names)]}))
    result = _invoke('--outdir', tmp_path / 'out', '--data', path, '--cond', '--dry-run')
    assert result.exit_code == 1 and not (tmp_path / 'out').exists()
    assert result.output.strip().splitlines()[-1] == (
        f"Error: --data: {path}/dataset.json: image {names[2]!r} has the label {str(label)}; {problem} (--cond needs "
        f"valid labels)")


def _damaged_zip(src, path, kind):
    """A copy of the zip `src` whose second image has a flipped pixel byte (bad CRC) or is cut after its header."""
    import zipfile
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as zout:
        names = zin.namelist()
        images = sorted(n for n in names if n.endswith('.png'))
        for name in names:
            data = zin.read(name)
            if name == images[1]:
                data = data[:40] if kind == 'truncated' else data
            zout.writestr(name, data)
    if kind == 'crc':
        raw = bytearray(open(path, 'rb').read())
        with zipfile.ZipFile(path) as z:
            info = z.getinfo(images[1])
        start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
        raw[start + 60] ^= 0xFF  # Inside the image data, past the 26 header bytes the reader probes.
        open(path, 'wb').write(bytes(raw))
    return path, images[1]


@pytest.mark.parametrize('kind, message', [('crc', 'cannot read the file (BadZipFile: Bad CRC-32'),
                                           ('truncated', 'cannot decode the image')])
def test_damaged_image_at_train_time_names_the_file(data, tmp_path, kind, message):
    """Before: a traceback from the data loader."""
    path, member = _damaged_zip(data.ds, tmp_path / 'damaged.zip', kind)
    result = _invoke('--outdir', tmp_path / 'out', '--data', path, '--kimg', '0.016', *TINY)
    assert result.exit_code == 1, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith(f'Error: --data: {path}/{member}: {message}'), last


def test_score_source_load_error_names_the_flag(data, tmp_path):
    """Before: a traceback from inside the training loop. Now the file is read before the run dir is made."""
    torch.save({'conv.weight': torch.zeros(2)}, tmp_path / 'other.pt')
    result = _invoke('--outdir', tmp_path / 'out', '--data', data.ds, '--kimg', '0.004', '--smart-lambda', '0.1',
                     '--smart-dpm', tmp_path / 'other.pt', *TINY)
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines()[-1].startswith(
        f"Error: --smart-dpm: {tmp_path / 'other.pt'} is a torch.save state dict of 1 tensors")
    assert not (tmp_path / 'out').exists()  # Checked before the run dir is made.


def test_resume_errors_name_the_flag(data, tmp_path):
    """Before: a pickle without networks resumed from nothing, a wrong-resolution snapshot failed in the optimizer,
    and resuming at --kimg exited 0 without a word."""
    import pickle
    (tmp_path / 'empty.pkl').write_bytes(pickle.dumps({'foo': 1}))
    result = _invoke('--outdir', tmp_path / 'a', '--data', data.ds, '--resume', tmp_path / 'empty.pkl', *TINY)
    assert result.exit_code == 1 and result.output.strip().splitlines()[-1] == (
        f"Error: --resume: {tmp_path / 'empty.pkl'} holds no networks (keys ['foo']); expected a network snapshot "
        f"with G, D and G_ema")
    first = _invoke('--outdir', tmp_path / 'b', '--data', data.ds, '--kimg', '0.004', *TINY)
    assert first.exit_code == 0, first.output
    pkl = tmp_path / 'b' / '00000-ds-stylegan2-kimg0.004-batch4' / 'network-snapshot-000000.pkl'
    result = _invoke('--outdir', tmp_path / 'c', '--data', data.ds, '--kimg', '0.004', '--resume', pkl, *TINY)
    assert result.exit_code == 1 and result.output.strip().splitlines()[-1] == (
        f'Error: --kimg: 0.004, but the --resume snapshot {pkl} is already at kimg 0.004: nothing to train; pass a '
        f'larger --kimg')
    result = _invoke('--outdir', tmp_path / 'd', '--data', data.ds32, '--kimg', '0.008', '--resume', pkl, *TINY)
    assert result.exit_code == 1 and result.output.strip().splitlines()[-1] == (
        f'Error: --resume: {pkl}: G has img_resolution 8 but this run needs 32 (set by --data and --cond); resume '
        f'with a snapshot trained on data like this')


def test_resume_that_leaves_weights_out_stops_before_training(data, tmp_path):
    first = _invoke('--outdir', tmp_path, '--data', data.ds, '--kimg', '0.004', *TINY)
    assert first.exit_code == 0, first.output
    pkl = tmp_path / '00000-ds-stylegan2-kimg0.004-batch4' / 'network-snapshot-000000.pkl'
    args = ['--outdir', tmp_path / 'deeper', '--data', data.ds, '--kimg', '0.008', *TINY, '--map-depth', '3',
            '--resume', pkl]
    refused = _invoke(*args)
    assert refused.exit_code == 1 and 'Training for' not in refused.output
    assert refused.output.startswith(f"Error: --resume: resume_pkl '{pkl}' does not match the configured networks "
                                     'one to one:\n  G: 0 tensor(s) of the snapshot not used: -; 2 of the network '
                                     'not filled: mapping.fc2.weight, mapping.fc2.bias'), refused.output
    assert '--map-depth (mapping layers)' in refused.output and not (tmp_path / 'deeper').exists()
    partial = _invoke(*args, '--resume-partial')
    assert partial.exit_code == 0 and 'Partial resume from' in partial.output, partial.output
    dry = _invoke(*args, '--dry-run')  # --dry-run makes the same check.
    assert dry.exit_code == 1 and dry.output.startswith('Error: --resume: ') and 'Training options' not in dry.output
    refused = _invoke('--outdir', tmp_path, '--data', data.ds, '--dry-run', '--resume-partial')
    assert refused.exit_code == 1 and 'Error: --resume-partial: only applies with --resume' in refused.output


def test_score_source_of_the_wrong_resolution_fails_before_the_run_dir(data, tmp_path):
    import edm_tiny_nets
    from edm_bridge import edm_networks
    net = edm_tiny_nets.tiny(edm_networks.EDMPrecond, res=16, attn_resolutions=[])
    dpm = tmp_path / 'edm16.pkl'
    dpm.write_bytes(pickle.dumps(dict(ema=net, loss_fn=None, augment_pipe=None, dataset_kwargs={})))
    for extra in (['--dry-run'], []):
        result = _invoke('--outdir', tmp_path / 'out', '--data', data.ds, '--kimg', '0.004', '--smart-lambda', '0.1',
                         '--smart-dpm', dpm, *TINY, *extra)
        assert result.exit_code == 1 and not (tmp_path / 'out').exists(), result.output
        assert result.output == ('Error: --smart-dpm: denoiser is 16x16 but the generator outputs 8x8; use a 8x8 '
                                 'model\n'), result.output


def test_late_failure_is_in_log_txt_and_setup_interrupt_exits_130(data, tmp_path, monkeypatch):
    from training import train_state

    def fail(*args, **kwargs):
        raise RuntimeError('simulated failure in set-up')

    monkeypatch.setattr(train_state, 'build_phases', fail)  # After the run dir exists: nothing checks it earlier.
    result = _invoke('--outdir', tmp_path, '--data', data.ds, '--kimg', '0.004', *TINY)
    assert result.exit_code == 1 and isinstance(result.exception, RuntimeError)
    log = (tmp_path / '00000-ds-stylegan2-kimg0.004-batch4' / 'log.txt').read_text()
    assert log.startswith('Training set: 16 images') and log.endswith('RuntimeError: simulated failure in set-up\n')

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_state, 'build_networks', interrupt)  # Ctrl-C while validating, before the run dir.
    result = _invoke('--outdir', tmp_path / 'int', '--data', data.ds, '--kimg', '0.004', *TINY)
    assert result.exit_code == 130 and result.output == 'Interrupted during set-up; exiting.\n', result.output
    assert not (tmp_path / 'int').exists()


def test_every_flag_is_declared_once_on_an_option_field():
    """train.py's flags come from the option dataclasses (training/option_fields.py), each declared once;
    the error -> flag map is generated from the same fields."""
    from smart_plugin import DiffGANOptions, SMaRtOptions
    from training.option_fields import option_fields, param_name
    from training.train_options import TrainOptions
    fields = [field for cls in (TrainOptions, SMaRtOptions, DiffGANOptions) for field in option_fields(cls)]
    declared = [param_name(field.metadata['flag']) for field in fields if field.metadata['cli']]
    params = [param.name for param in train.main.params if not param.name.startswith('released_alias__')]
    assert sorted(params) == sorted(declared + ['threads']) and len(set(declared)) == len(declared)
    assert train.PLUGIN_FLAGS['t_lo'] == train.PLUGIN_FLAGS['t_hi'] == '--smart-t'
    assert (train.PLUGIN_FLAGS['enabled'], train.PLUGIN_FLAGS['ada_augpipe']) == ('--diffgan', '--augpipe')
    assert set(train.PLUGIN_FLAGS) == {field.name for cls in (SMaRtOptions, DiffGANOptions)
                                       for field in option_fields(cls)}
