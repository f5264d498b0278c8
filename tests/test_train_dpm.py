"""train_dpm.py through click's CliRunner: --help, --dry-run (prints, writes nothing), presets, every user error
naming its flag, and an end-to-end tiny run on a Gaussian-mixture image dataset whose snapshot denoises held-out data
at the SMaRt band far better than the identity, loads safely and drives a train.py SMaRt run; resume through the CLI."""

import glob
import io
import json
import os
import sys
import zipfile

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import train  # noqa: E402  (top-level scripts, importable from the repository root)
import train_dpm  # noqa: E402
from dpm import sigma_dist
from edm_bridge import loading  # noqa: E402
from tiny_datasets import make_zip  # noqa: E402


def gmm_images(num, seed, K=4, res=8, noise=6.0):
    """uint8 [num, res, res, 3]: one of K fixed random templates (values 30..225) plus N(0, noise^2) per pixel."""
    templates = np.random.RandomState(123).randint(30, 226, size=(K, res, res, 3)).astype(np.float64)
    rnd = np.random.RandomState(seed)
    images = templates[rnd.randint(K, size=num)] + noise * rnd.randn(num, res, res, 3)
    return np.clip(np.rint(images), 0, 255).astype(np.uint8)


def write_zip(path, images):
    with zipfile.ZipFile(path, 'w') as zf:
        for i, image in enumerate(images):
            buffer = io.BytesIO()
            PIL.Image.fromarray(image).save(buffer, format='PNG')
            zf.writestr(f'img{i:04d}.png', buffer.getvalue())
    return str(path)


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp('data')
    return dict(ds=make_zip(root / 'ds.zip', num=16, res=8, seed=1),
                cond=make_zip(root / 'cond.zip', num=16, res=8, num_classes=2, seed=2),
                gmm=write_zip(root / 'gmm.zip', gmm_images(64, seed=0)))


def _invoke(*args):
    return CliRunner().invoke(train_dpm.main, [str(arg) for arg in args])


def _dry_run(outdir, *args):
    result = _invoke('--outdir', outdir, '--dry-run', *args)
    assert result.exit_code == 0, result.output
    assert result.output.rstrip().endswith('Dry run; exiting.')
    return json.loads(result.output.split('Training options:\n', 1)[1].split('\nSMaRt band:', 1)[0]
                      .split('\nOutput directory: ', 1)[0])


def test_help_lists_the_flags():
    result = _invoke('--help')
    assert result.exit_code == 0
    for flag in ('--outdir', '--data', '--cond', '--arch', '--precond', '--preset', '--batch-gpu', '--lr-rampup-kimg',
                 '--ema-halflife-kimg', '--ema-rampup-ratio', '--dropout', '--augment', '--duration', '--stf',
                 '--rbatch', '--stf-chunk', '--band-schedule', '--band-t', '--band-share', '--resume', '--dry-run'):
        assert flag in result.output


def test_dry_run_prints_the_config_and_writes_nothing(data, tmp_path):
    outdir = tmp_path / 'runs'
    options = _dry_run(outdir, '--data', data['ds'], '--preset', 'cifar', '--stf', '--band-share', '0.5',
                       '--batch-gpu', '64')
    assert not outdir.exists()
    assert os.path.basename(options['run_dir']) == '00000-ds-uncond-ddpmpp-edm-cifar-batch512-stf-band0.5'
    assert (options['batch_size'], options['batch_gpu'], options['rbatch'], options['total_kimg']) == (512, 64, 1024,
                                                                                                      200000)
    assert options['optimizer_kwargs'] == dict(lr=1e-3, betas=[0.9, 0.999], eps=1e-8)
    assert options['network_kwargs'] == dict(model_type='SongUNet', embedding_type='positional',
                                             encoder_type='standard', decoder_type='standard', channel_mult_noise=1,
                                             resample_filter=[1, 1], model_channels=128, channel_mult=[2, 2, 2],
                                             dropout=0.13, augment_dim=9)
    assert options['augment_kwargs'] == dict(p=0.12) and options['loss_kwargs'] == dict(stf=True, stf_chunk=256)
    band = options['smart_band']
    assert (band['sigma_lo'], band['sigma_hi']) == pytest.approx((0.1437, 0.2085), abs=1e-4)
    assert band['band_mass'] == pytest.approx(0.5 + 0.5 * band['base_mass']) and options['sigma_dist']['share'] == 0.5


def test_dry_run_tiny_ncsnv2_and_vp(data, tmp_path):
    options = _dry_run(tmp_path, '--data', data['ds'], '--preset', 'tiny', '--arch', 'ncsnv2')
    assert options['precond'] == 'ncsnv2' and options['augment_kwargs'] is None
    assert options['sigma_dist']['name'] == 'ladder' and len(options['sigma_dist']['sigmas']) == 50
    assert options['sigma_dist']['sigmas'][0] == pytest.approx(20.0)  # 2 * sigma_max in [-1, 1] units.
    options = _dry_run(tmp_path, '--data', data['cond'], '--cond', '--preset', 'tiny', '--precond', 'vp',
                       '--arch', 'adm', '--augment', '0.1', '--duration', '1', '--ema-rampup-ratio', '0')
    assert options['network_kwargs']['model_type'] == 'DhariwalUNet' and options['network_kwargs']['augment_dim'] == 9
    assert (options['precond'], options['total_kimg'], options['ema_rampup_ratio']) == ('vp', 1, None)
    assert options['dataset_kwargs']['use_labels'] is True and options['sigma_dist'] is None


@pytest.mark.parametrize('args, flag, message', [
    (['--data', '{missing}'], '--data', 'does not exist'),
    (['--data', '{ds}', '--cond'], '--cond', 'has no labels'),
    (['--data', '{ds}', '--preset', 'tiny', '--batch-gpu', '5'], '--batch-gpu', 'does not divide'),
    (['--data', '{ds}', '--arch', 'ncsnv2', '--precond', 'vp'], '--precond', 'has its own score parameterization'),
    (['--data', '{ds}', '--arch', 'ncsnv2', '--stf'], '--stf', 'NCSNv2 trains on its own DSM target'),
    (['--data', '{ds}', '--preset', 'tiny', '--stf', '--rbatch', '8'], '--rbatch', 'smaller than the per-round'),
    (['--data', '{ds}', '--band-share', '0.5', '--band-t', '40,1000'], '--band-t', 't_max=1000: expected < 1000'),
    (['--data', '{ds}', '--band-share', '0.5', '--band-t', '60,40'], '--band-t', 't_min=60, t_max=40'),
    (['--data', '{ds}', '--band-share', '0.5', '--band-schedule', 'bogus'], '--band-schedule', "unknown name"),
    (['--data', '{ds}', '--band-t', '40'], '--band-t', 'is not a range LO,HI'),
    (['--data', '{ds}', '--precond', 'vp', '--p-mean', '-1'], '--p-mean', 'applies to --precond=edm only'),
    (['--data', '{ds}', '--resume', '{missing}'], '--resume', 'is not an existing training-state-*.pt'),
    (['--data', '{ds}', '--band-share', '1.5'], '--band-share', 'not in the range'),
    # Flags that would silently do nothing.
    (['--data', '{ds}', '--arch', 'ncsnv2', '--dropout', '0.1'], '--dropout', 'the NCSNv2 network has no dropout'),
    (['--data', '{ds}', '--rbatch', '64'], '--rbatch', 'has no effect without --stf'),
    (['--data', '{ds}', '--stf-chunk', '64'], '--stf-chunk', 'has no effect without --stf'),
    (['--data', '{ds}', '--band-t', '25,35'], '--band-t', 'has no effect without --band-share > 0'),
    (['--data', '{ds}', '--band-schedule', 'karras'], '--band-schedule', 'has no effect without --band-share > 0'),
])
def test_user_errors_name_the_flag(data, tmp_path, args, flag, message):
    args = [a.format(ds=data['ds'], missing=tmp_path / 'missing.pt') for a in args]
    result = _invoke('--outdir', tmp_path / 'runs', '--dry-run', *args)
    assert result.exit_code != 0 and flag in result.output and message in result.output, result.output
    assert not (tmp_path / 'runs').exists()


def test_outdir_that_is_a_file(data, tmp_path):
    (tmp_path / 'file').write_text('')
    result = _invoke('--outdir', tmp_path / 'file', '--data', data['ds'], '--dry-run')
    assert result.exit_code != 0 and '--outdir: ' in result.output and 'is not a directory' in result.output


def test_resume_from_a_foreign_file_names_the_flag(data, tmp_path):
    (tmp_path / 'bad.pt').write_bytes(b'not a checkpoint')
    result = _invoke('--outdir', tmp_path / 'runs', '--data', data['ds'], '--preset', 'tiny', '--workers', '0',
                     '--resume', tmp_path / 'bad.pt')
    assert result.exit_code != 0 and '--resume: resume state' in result.output, result.output


def _band_error(D, held_out, seed=0):
    """(E ||D(x + sigma n; sigma) - x||^2, E sigma^2) per element, sigma log-uniform in the DDPM-linear 40..60 band."""
    lo, hi = sigma_dist.smart_band('ddpm-linear', 40, 60)
    gen = torch.Generator().manual_seed(seed)
    sigma = lo * (hi / lo) ** torch.rand([held_out.shape[0], 1, 1, 1], generator=gen)
    noisy = held_out + sigma * torch.randn(held_out.shape, generator=gen)
    with torch.no_grad():
        return float((D(noisy, sigma.flatten()) - held_out).square().mean()), float(sigma.square().mean())


def test_tiny_model_denoises_better_than_identity_and_drives_smart(data, tmp_path):
    outdir = tmp_path / 'runs'
    result = _invoke('--outdir', outdir, '--data', data['gmm'], '--preset', 'tiny', '--workers', '0', '--band-share',
                     '0.5', '--stf', '--rbatch', '48', '--duration', '2.4', '--tick', '1.2')
    assert result.exit_code == 0, result.output
    run_dir = glob.glob(str(outdir / '*'))[0]
    assert os.path.basename(run_dir) == '00000-gmm-uncond-ddpmpp-edm-tiny-batch16-stf-band0.5'
    files = [name for name in os.listdir(run_dir) if not name.startswith('events.out.tfevents.')]  # If tensorboard.
    assert sorted(files) == ['log.txt', 'network-snapshot-000000.pkl', 'network-snapshot-000002.pkl',
                                           'stats.jsonl', 'training-state-000000.pt', 'training-state-000002.pt',
                                           'training_options.json']
    stats = [json.loads(line) for line in open(os.path.join(run_dir, 'stats.jsonl'))]
    assert [s['Progress/kimg']['mean'] for s in stats] == [0.016, 1.216, 2.4]
    assert all(key in stats[-1] for key in ('Loss/loss', 'Timing/sec_per_kimg', 'Timing/sec_per_step'))
    assert stats[-1]['Loss/loss']['num'] == 74 * 16 * 3 * 64  # The last tick's 74 steps of 16 images, per element.
    pkl = os.path.join(run_dir, 'network-snapshot-000002.pkl')
    held_out = torch.from_numpy(gmm_images(128, seed=1)).permute(0, 3, 1, 2).float() / 127.5 - 1
    trained, identity = _band_error(loading.load_denoiser(pkl), held_out)
    untrained, _ = _band_error(loading.load_denoiser(os.path.join(run_dir, 'network-snapshot-000000.pkl')), held_out)
    assert trained < 0.5 * identity and trained < 0.6 * untrained, (trained, untrained, identity)

    gan = CliRunner().invoke(train.main, ['--outdir', str(tmp_path / 'gan'), '--data', data['gmm'], '--kimg', '0.008',
                                          '--smart-lambda', '0.1', '--smart-dpm', pkl, '--smart-freq', '1',
                                          '--smart-schedule', 'ddpm-linear', '--smart-t', '40,60', '--cfg', 'stylegan2',
                                          '--batch', '4', '--cbase', '128', '--cmax', '16', '--map-depth', '2',
                                          '--mbstd-group', '2', '--workers', '0', '--tick', '0.004', '--snap', '10'])
    assert gan.exit_code == 0, gan.output
    assert 'sigma 0.1437..0.2085, score source' in gan.output
    gan_stats = [json.loads(line) for line in open(glob.glob(str(tmp_path / 'gan' / '*' / 'stats.jsonl'))[0])]
    assert [s['SMaRt/loss']['num'] for s in gan_stats] == [4, 4] and all(
        np.isfinite(s['SMaRt/loss']['mean']) for s in gan_stats)


def test_cli_resume_continues_the_run(data, tmp_path):
    common = ['--data', data['ds'], '--preset', 'tiny', '--workers', '0', '--tick', '0.016', '--batch', '8']
    first = _invoke('--outdir', tmp_path, '--duration', '0.016', *common)
    assert first.exit_code == 0, first.output
    state = glob.glob(str(tmp_path / '00000-*' / 'training-state-000000.pt'))[0]
    resumed = _invoke('--outdir', tmp_path, '--duration', '0.032', '--resume', state, *common)
    assert resumed.exit_code == 0, resumed.output
    assert f'Resumed from {state} at kimg 0.016' in resumed.output
    stats = [json.loads(line) for line in open(glob.glob(str(tmp_path / '00001-*' / 'stats.jsonl'))[0])]
    assert [(s['Progress/kimg']['mean'], s['Progress/tick']['mean']) for s in stats] == [(0.032, 2)]


def test_resume_at_the_training_length_is_an_error(data, tmp_path):
    """Before: resuming at or past --duration exited 0 without training or a word."""
    common = ['--data', data['ds'], '--preset', 'tiny', '--workers', '0', '--tick', '0.016', '--batch', '8']
    first = _invoke('--outdir', tmp_path, '--duration', '0.016', *common)
    assert first.exit_code == 0, first.output
    state = glob.glob(str(tmp_path / '00000-*' / 'training-state-000000.pt'))[0]
    pkl = glob.glob(str(tmp_path / '00000-*' / 'network-snapshot-000000.pkl'))[0]
    for resume in (state, pkl):  # The snapshot names its state.
        result = _invoke('--outdir', tmp_path, '--duration', '0.016', '--resume', resume, *common)
        assert result.exit_code == 1 and result.output.strip().splitlines()[-1] == (
            f"Error: --resume: resume state {state!r} is already at kimg 0.016, at or past the training length 0.016 "
            f"kimg (--duration): nothing to train"), result.output
