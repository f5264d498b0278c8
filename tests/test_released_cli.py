"""Released command lines (StyleGAN2-ADA's and Diffusion-GAN's READMEs, paths swapped for tiny fixtures) resolve, in
--dry-run, to exactly the options of the same command in our spellings; boolean flags take bare/=1/0/true/false."""

import json
import os
import sys

import pytest
from click.testing import CliRunner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import calc_metrics  # noqa: E402  (top-level scripts, importable from the repository root)
import dataset_tool  # noqa: E402
import train  # noqa: E402
from tiny_datasets import make_zip  # noqa: E402
from training import networks, preflight, snapshot  # noqa: E402


@pytest.fixture(scope='module')
def ds(tmp_path_factory):
    root = tmp_path_factory.mktemp('data')
    return dict(ds=make_zip(root / 'mydataset.zip', num=8, res=32, seed=1),
                cond=make_zip(root / 'cifar10.zip', num=8, res=32, num_classes=10, seed=2))


def _dry_run(outdir, args):
    result = CliRunner().invoke(train.main, ['--outdir', str(outdir), *args, '--dry-run'])
    assert result.exit_code == 0, result.output
    return json.loads(result.output.split('Training options:\n', 1)[1].split('\nOutput directory: ', 1)[0])


# (released command line, ours). '{ds}' / '{cond}' stand for the dataset paths of the README.
RELEASED = [
    # StyleGAN2-ADA README: custom dataset on 1 GPU; paper configs; CIFAR-10; transfer learning with --resume.
    ('--data={ds} --gpus=1', '--data={ds}'),
    ('--gpus=8 --data={ds} --cfg=paper1024 --mirror=1', '--gpus=8 --data={ds} --cfg=paper1024 --mirror'),
    ('--gpus=8 --data={ds} --cfg=paper512 --mirror=1', '--gpus=8 --data={ds} --cfg=paper512 --mirror'),
    ('--gpus=8 --data={ds} --cfg=paper256 --mirror=1', '--gpus=8 --data={ds} --cfg=paper256 --mirror'),
    ('--gpus=8 --data={ds} --cfg=stylegan2 --mirror=1 --aug=noaug',
     '--gpus=8 --data={ds} --cfg=stylegan2 --mirror --aug=noaug'),
    ('--gpus=2 --data={cond} --cfg=cifar --cond=1', '--gpus=2 --data={cond} --cfg=cifar --cond'),
    ('--gpus=8 --data={ds} --cfg=paper1024 --mirror=1 --resume=ffhq1024 --snap=10',
     '--gpus=8 --data={ds} --cfg=paper1024 --mirror --resume=ffhq1024 --snap=10'),
    ('--gpus=8 --data={ds} --cfg=paper512 --mirror=1 --resume=ffhq512 --snap=10',
     '--gpus=8 --data={ds} --cfg=paper512 --mirror --resume=ffhq512 --snap=10'),
    ('--data={ds} --gpus=1 --cfg=auto --mirror=0 --cond=0 --fp32=1 --nhwc=0 --nobench=1 --allow-tf32=true',
     '--data={ds} --fp32 --nobench --allow-tf32'),
    # Diffusion-GAN's other released option names (its train.py), each an alias of a --diffgan-* option.
    ('--data={ds} --ada_kimg 50 --beta_schedule linear --beta_start 0.0002 --beta_end 0.01 --aug ada --ada_maxp 0.5',
     '--data={ds} --diffgan --diffgan-ada-kimg=50 --diffgan-beta-schedule=linear --diffgan-beta-start=0.0002 '
     '--diffgan-beta-end=0.01 --aug=ada --diffgan-ada-maxp=0.5'),
    # With --diffgan, --target is Diffusion-GAN's target, as released (ADA then follows the diffusion p).
    ('--data={ds} --diffgan --aug=ada --target=0.5', '--data={ds} --diffgan --aug=ada --diffgan-target=0.5'),
    # Diffusion-GAN README (CIFAR-10, Diffusion-StyleGAN2): its own names and the space-separated form.
    ('--data={cond} --gpus=4 --cfg cifar --kimg 50000 --aug no --target 0.6 --noise_sd 0.05 --ts_dist priority',
     '--data={cond} --gpus=4 --cfg=cifar --kimg=50000 --aug=noaug --diffgan --diffgan-target=0.6 '
     '--diffgan-noise-sd=0.05 --diffgan-ts-dist=priority'),
]


@pytest.fixture
def resume_shortcuts(tmp_path, monkeypatch):
    """--resume=ffhq1024/ffhq512 point at a local weights-only pickle instead of the CDN (no network in tests)."""
    path = tmp_path / 'transfer-source.pkl'
    G = networks.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=8, img_channels=3,
                           mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=64, channel_max=16))
    snapshot.save_network_pkl(path, dict(G_ema=G))
    for name in ('ffhq1024', 'ffhq512'):
        monkeypatch.setitem(train.RESUME_SPECS, name, str(path))
    # The stand-in cannot fill the official 1024/512 networks; whether a resume fits is tested in test_train.py.
    monkeypatch.setattr(preflight, 'check_resume_fit', lambda *args, **kwargs: None)


@pytest.mark.parametrize('released, ours', RELEASED, ids=[r.split('--cfg')[-1][:40] for r, _ in RELEASED])
def test_released_command_resolves_as_ours(ds, tmp_path, resume_shortcuts, released, ours):
    outdir = tmp_path / 'runs'
    released_opts = _dry_run(outdir, released.format(**ds).split())
    ours_opts = _dry_run(outdir, ours.format(**ds).split())
    assert released_opts == ours_opts
    assert not outdir.exists()  # A dry run creates nothing, --gpus=N included (no processes are started).


def test_resolved_values_of_the_released_lines(ds, tmp_path, resume_shortcuts):
    opts = _dry_run(tmp_path, RELEASED[5][0].format(**ds).split())  # --gpus=2 --cfg=cifar --cond=1
    assert opts['training_set_kwargs']['use_labels'] and opts['num_gpus'] == 2
    assert (opts['batch_size'], opts['batch_gpu']) == (64, 32)
    opts = _dry_run(tmp_path, RELEASED[-1][0].format(**ds).split())  # Diffusion-GAN on 4 GPUs
    assert opts['plugins']['diffgan'] | dict(enabled=True, noise_sd=0.05, ts_dist='priority', target=0.6) == \
        opts['plugins']['diffgan']
    assert opts['augment_kwargs'] is None and opts['ada_target'] is None
    # The released loop splits the 16 per-process images into rounds of batch_gpu=32: one round of 16.
    assert (opts['num_gpus'], opts['batch_size'], opts['batch_gpu']) == (4, 64, 16)
    assert os.path.basename(opts['run_dir']) == '00000-cifar10-cifar-kimg50000-noaug-diffgan'
    opts = _dry_run(tmp_path, RELEASED[6][0].format(**ds).split())  # MetFaces transfer learning
    assert (opts['ada_kimg'], opts['ema_rampup'], opts['image_snapshot_ticks']) == (100, None, 10)
    assert os.path.basename(opts['run_dir']) == '00000-mydataset-mirror-paper1024-resumeffhq1024'


@pytest.mark.parametrize('flag, path, on', [
    ('--mirror', ('training_set_kwargs', 'xflip'), True),
    ('--fp32', ('G_kwargs', 'synthesis_kwargs', 'num_fp16_res'), 0),
    ('--nhwc', ('D_kwargs', 'block_kwargs', 'fp16_channels_last'), True),
    ('--nobench', ('cudnn_benchmark',), False),
    ('--allow-tf32', ('allow_tf32',), True),
    ('--cond', ('training_set_kwargs', 'use_labels'), True),
])
def test_boolean_flag_forms(ds, tmp_path, flag, path, on):
    def value(*args):
        opts = _dry_run(tmp_path, ['--data', ds['cond'], *args])
        for key in path:
            opts = opts.get(key) if isinstance(opts, dict) else None
        return opts
    off = value()
    assert off != on
    for form in ([flag], [f'{flag}=1'], [f'{flag}=true'], [f'{flag}=yes'], [flag, '1']):
        assert value(*form) == on, form
    for form in ([f'{flag}=0'], [f'{flag}=false'], [flag, 'no']):
        assert value(*form) == off, form
    result = CliRunner().invoke(train.main, ['--outdir', str(tmp_path), '--data', ds['ds'], f'{flag}=maybe'])
    assert result.exit_code != 0 and f"Invalid value for '{flag}': 'maybe' is not a valid boolean" in result.output


def test_aliases_are_in_help_and_conflicts_name_both():
    text = CliRunner().invoke(train.main, ['--help']).output
    for alias in ('--noise_sd', '--ts_dist', 'no = noaug', 'with --diffgan the Diffusion-GAN', '--mirror [=BOOL]'):
        assert alias in text, alias
    assert "Diffusion-GAN's name for --diffgan-noise-sd and turns on --diffgan" in ' '.join(text.split())


def test_alias_conflicts(ds, tmp_path):
    result = CliRunner().invoke(train.main, ['--outdir', str(tmp_path), '--data', ds['ds'], '--dry-run',
                                             '--noise_sd', '0.1', '--diffgan-noise-sd', '0.2'])
    assert result.exit_code != 0
    assert '--noise_sd: 0.1 conflicts with --diffgan-noise-sd=0.2 (the same option)' in result.output
    result = CliRunner().invoke(train.main, ['--outdir', str(tmp_path), '--data', ds['ds'], '--dry-run',
                                             '--diffgan', '--target', '0.5', '--diffgan-target', '0.7'])
    assert result.exit_code != 0 and '--target: 0.5 conflicts with --diffgan-target=0.7' in result.output
    opts = _dry_run(tmp_path, ['--data', ds['ds'], '--noise_sd', '0.2', '--diffgan-noise-sd', '0.2'])
    assert opts['plugins']['diffgan']['noise_sd'] == 0.2


def _plan(args):
    result = CliRunner().invoke(dataset_tool.main, [*args, '--dry-run'])
    assert result.exit_code == 0, result.output
    return json.loads(result.output.split('\nDry run:', 1)[0])


def test_dataset_tool_width_height_and_max_images(ds, tmp_path):
    dest = str(tmp_path / 'out.zip')
    released = _plan([f'--source={ds["ds"]}', f'--dest={dest}', '--transform=center-crop', '--width=16',
                      '--height=16', '--max_images=5'])
    ours = _plan([f'--source={ds["ds"]}', f'--dest={dest}', '--transform=center-crop', '--resolution=16x16',
                  '--max-images=5'])
    assert released == ours and released['resolution'] == '16x16' and released['max_images'] == 5
    for args, message in ((['--width=16'], '--height: missing: --width and --height go together'),
                          (['--width=16', '--height=16', '--resolution=32x32'],
                           '--resolution: 32x32 conflicts with --width=16 --height=16')):
        result = CliRunner().invoke(dataset_tool.main, [f'--source={ds["ds"]}', f'--dest={dest}', *args, '-n'])
        assert result.exit_code != 0 and message in result.output, result.output


def test_calc_metrics_mirror_forms(tmp_path):
    pkl = tmp_path / 'net.pkl'
    pkl.write_bytes(b'')
    def mirror(*args):
        result = CliRunner().invoke(calc_metrics.main, ['--network', str(pkl), '--metrics=fid50k_full', *args, '-n'])
        assert result.exit_code == 0, result.output
        return json.loads(result.output)['mirror']
    assert (mirror(), mirror('--mirror=1'), mirror('--mirror'), mirror('--mirror=0'), mirror('--no-mirror')) == \
        (None, True, True, False, False)


def test_quoted_home_paths_are_expanded(ds, tmp_path, monkeypatch):
    home = tmp_path / 'home'
    home.mkdir()
    (home / 'cifar10.zip').write_bytes(open(ds['cond'], 'rb').read())
    monkeypatch.setenv('HOME', str(home))
    opts = _dry_run('~/training-runs', ['--data=~/cifar10.zip', '--cfg', 'cifar'])  # As quoted in Diffusion-GAN's.
    assert opts['training_set_kwargs']['path'] == str(home / 'cifar10.zip')
    assert opts['run_dir'] == str(home / 'training-runs' / '00000-cifar10-cifar')
