"""Official NCSNv2 checkpoints as score sources: the clean-room networks' state_dict names equal the release's for
all six configs, the three reduced reference models reproduce the released code's raw and EMA scores, and
load_denoiser / describe / the registry / the CLIs accept checkpoint.pth with its config.yml (shared/fixtures/ncsnv2).

Tolerance: the golden scores are s = f / sigma in fp32; at sigma_L = 0.01 |s| reaches ~180 and fp32 rounding of
the reference itself is ~3e-4 there (measured against our float64 forward), so the comparison is to 1e-5 in units
of the network output f = sigma s and to 1e-5 relative to max |s|.
"""

import dataclasses
import json
import os
import re
import shutil

import pytest
import torch
from click.testing import CliRunner

import dnnlib
from edm_bridge import loading, ncsnv2_checkpoint, ncsnv2_official, registry, samplers
from edm_bridge.__main__ import cli
from shared_fixtures import fixture_dir

MODELS = ['ncsnv2-cifar10-ngf16-32px', 'ncsnv2-church-ngf16-32px', 'ncsnv2-ffhq-ngf8-32px']
ARCHITECTURES = {'ncsnv2-cifar10-ngf16-32px': 'NCSNv2', 'ncsnv2-church-ngf16-32px': 'NCSNv2Deeper',
                 'ncsnv2-ffhq-ngf8-32px': 'NCSNv2Deepest'}
TOL = 1e-5


@pytest.fixture(scope='module')
def root():
    return fixture_dir('ncsnv2')


def _golden(root, model):
    return torch.load(os.path.join(root, model, 'golden.pt'), weights_only=True)


def _max_errors(score, golden, sigmas):
    """(max |ds| in f = sigma s units, max |ds| / max |s|, max |ds|)."""
    diff = (score.double() - golden.double()).abs()
    return (float((diff * sigmas.double().reshape(-1, 1, 1, 1)).max()), float(diff.max() / golden.abs().max()),
            float(diff.max()))


def test_state_dict_names_and_shapes_equal_the_release(root):
    with open(os.path.join(root, 'ncsnv2_official_state_dicts.json')) as f:
        release = json.load(f)
    assert list(release) == ['cifar10', 'celeba', 'church', 'bedroom', 'tower', 'ffhq']
    for name, entry in release.items():
        config = ncsnv2_checkpoint.parse_config(entry['config'], name)
        arch = ncsnv2_checkpoint.architecture_for(config, {})
        assert arch == entry['architecture']
        with torch.device('meta'):
            net = ncsnv2_official.NCSNv2Net(arch, torch.zeros(config.num_classes), config.channels, config.ngf)
        assert [[k, list(v.shape)] for k, v in net.state_dict().items()] == entry['state_dict'], name
        assert sum(p.numel() for p in net.parameters()) == entry['num_params']
        reg = registry.MODELS[f'ncsnv2-{name}']  # The registry carries the same released config.
        from_registry = ncsnv2_checkpoint.parse_config(reg.ncsnv2_config, reg.name)
        assert dataclasses.replace(from_registry, step_lr=None, n_steps_each=None) == config  # JSON: data, model.
        assert (reg.architecture, reg.img_resolution, reg.format) == (arch, config.image_size, 'ncsnv2-checkpoint')


@pytest.mark.parametrize('model', MODELS)
def test_golden_raw_and_ema_scores(root, model):
    path = os.path.join(root, model, 'checkpoint.pth')
    config = ncsnv2_checkpoint.read_config(os.path.join(root, model, 'config.yml'))
    ckpt = ncsnv2_checkpoint.read_checkpoint(path, path)
    golden = _golden(root, model)
    sigmas = golden['sigmas'][golden['labels']]
    for ema, key in ((False, 'score_raw'), (True, 'score_ema')):
        D = ncsnv2_checkpoint.build_denoiser(ckpt, config, path, ema=ema)
        assert D.net.architecture == ARCHITECTURES[model] and torch.equal(D.net.sigmas, golden['sigmas'])
        with torch.no_grad():
            score = D.net(golden['x_noisy'], golden['labels'])  # The release's call: s(x, y) = f(x) / sigmas[y].
        f_err, rel_err, abs_err = _max_errors(score, golden[key], sigmas)
        print(f'{model} {key}: max |d(sigma s)| {f_err:.3g}, max |ds| / max |s| {rel_err:.3g}, max |ds| {abs_err:.3g}')
        assert f_err <= TOL and rel_err <= TOL
    assert (golden['score_raw'] - golden['score_ema']).abs().max() > 1  # EMA and raw weights really differ.


@pytest.mark.parametrize('model', MODELS)
def test_load_denoiser_is_tweedie_on_minus_one_one_with_ema_weights(root, model):
    D = loading.load_denoiser(os.path.join(root, model, 'checkpoint.pth'))  # config.yml beside it; model.ema: true
    golden = _golden(root, model)
    sigma01 = golden['sigmas'][golden['labels']].reshape(-1, 1, 1, 1)
    assert (D.img_resolution, D.img_channels, D.label_dim) == (32, 3, 0)
    assert (D.sigma_min, D.sigma_max) == pytest.approx((2 * 0.01, 2 * float(golden['sigmas'][0])), rel=1e-6)
    x = 2 * golden['x_noisy'] - 1  # [0, 1] data -> our [-1, 1] units; noise levels double.
    with torch.no_grad():
        denoised = D(x, 2 * sigma01.flatten())
    # D = 2 (x01 + sigma01^2 s) - 1 = x + 2 sigma01 f: compare f = (D - x) / (2 sigma01) with the golden sigma01 s.
    f = (denoised.double() - x.double()) / (2 * sigma01.double())
    assert (f - sigma01.double() * golden['score_ema'].double()).abs().max() <= TOL


def test_describe_and_info_cli(root):
    path = os.path.join(root, 'ncsnv2-church-ngf16-32px', 'checkpoint.pth')
    info = loading.describe(path)
    assert {k: info[k] for k in ('format', 'backbone', 'img_resolution', 'label_dim', 'num_params')} == dict(
        format='ncsnv2-checkpoint', backbone='NCSNv2Deeper', img_resolution=32, label_dim=0, num_params=1307603)
    assert info['architecture']['weights'] == 'ema' and info['architecture']['num_scales'] == 788
    assert (info['sigma_min'], info['sigma_max']) == pytest.approx((0.02, 280.0), rel=1e-6)
    assert loading.describe(path, ncsnv2_ema=False)['architecture']['weights'] == 'raw'
    result = CliRunner().invoke(cli, ['info', path])
    assert result.exit_code == 0, result.output
    assert 'format:          ncsnv2-checkpoint' in result.output and 'backbone:        NCSNv2Deeper' in result.output
    assert 'sigma range:     [0.02, 280]' in result.output


def test_config_given_explicitly_or_missing(root, tmp_path):
    model = os.path.join(root, 'ncsnv2-cifar10-ngf16-32px')
    shutil.copy(os.path.join(model, 'checkpoint.pth'), tmp_path / 'checkpoint_1000.pth')
    path = tmp_path / 'checkpoint_1000.pth'
    with pytest.raises(FileNotFoundError, match=re.escape(
            f"{path} is an NCSNv2 checkpoint, but no config.yml was found beside it ({tmp_path / 'config.yml'}); "
            "pass ncsnv2_config (CLI: --ncsnv2-config)")):
        loading.load_denoiser(path)
    D = loading.load_denoiser(path, ncsnv2_config=os.path.join(model, 'config.yml'))
    assert D.net.num_scales == 232
    result = CliRunner().invoke(cli, ['info', str(path), '--ncsnv2-config', os.path.join(model, 'config.yml')])
    assert result.exit_code == 0 and 'backbone:        NCSNv2' in result.output, result.output
    wrong = os.path.join(root, 'ncsnv2-church-ngf16-32px', 'config.yml')  # Another architecture and ladder.
    with pytest.raises(ValueError, match=re.escape("the stored tensors do not match NCSNv2Deeper (ngf 16, 788 noise "
                                                   "levels) built from the config (missing [")):
        loading.load_denoiser(path, ncsnv2_config=wrong)


def _write_config(tmp_path, root, **changes):
    import yaml
    with open(os.path.join(root, 'ncsnv2-cifar10-ngf16-32px', 'config.yml')) as f:
        config = yaml.safe_load(f)
    for key, value in changes.items():
        section, name = key.split('__')
        config[section][name] = value
    (tmp_path / 'config.yml').write_text(yaml.safe_dump(config))
    return tmp_path / 'config.yml'


@pytest.mark.parametrize('changes, message', [
    (dict(data__logit_transform=True), 'data.logit_transform is True; this loader supports false'),
    (dict(model__normalization='GroupNorm'), "model.normalization is 'GroupNorm'; this loader supports "
                                             "'InstanceNorm++'"),
    (dict(model__ngf='wide'), "model.ngf is 'wide'; expected int"),
    (dict(model__nonlinearity='gelu'), "model.nonlinearity is 'gelu'; expected one of ['elu', 'relu', 'lrelu'"),
])
def test_config_errors(root, tmp_path, changes, message):
    path = _write_config(tmp_path, root, **changes)
    with pytest.raises(ValueError, match=re.escape(f'{path}: {message}')):
        ncsnv2_checkpoint.read_config(path)


def test_rescaled_data_use_the_model_units_directly(root, tmp_path):
    model = os.path.join(root, 'ncsnv2-cifar10-ngf16-32px')
    D01 = loading.load_denoiser(os.path.join(model, 'checkpoint.pth'))
    Dpm = loading.load_denoiser(os.path.join(model, 'checkpoint.pth'),
                                ncsnv2_config=_write_config(tmp_path, root, data__rescaled=True))
    assert (Dpm.sigma_min, Dpm.sigma_max) == pytest.approx((0.01, 50.0), rel=1e-6)
    x = torch.linspace(-1, 1, 4 * 3 * 32 * 32).reshape(4, 3, 32, 32)
    sigma = torch.tensor([0.05, 0.5, 5.0, 50.0])
    with torch.no_grad():  # Rescaled: the net sees x itself (no 2x - 1) and D = x + sigma f(x).
        f = Dpm.net.net.features(x)
        assert torch.allclose(Dpm(x, sigma), x + sigma.reshape(-1, 1, 1, 1) * f, atol=1e-5)
        f01 = D01.net.net.features((x + 1) / 2)
        assert torch.allclose(D01(x, sigma), x + sigma.reshape(-1, 1, 1, 1) * f01, atol=1e-5)  # u sigma_m = sigma


def test_sniffing_names_what_it_found(tmp_path):
    torch.save({'begin.weight': torch.zeros(2)}, tmp_path / 'other.pt')
    with pytest.raises(ValueError, match=re.escape(
            f"{tmp_path / 'other.pt'} holds a state dict of 1 tensors (first keys ['begin.weight']) that is neither "
            "ADM's nor NCSNv2's; expected an EDM network pickle, an ADM (guided-diffusion) checkpoint (a state dict "
            "with time_embed.*, input_blocks.*) or an NCSNv2 checkpoint.pth (a list [model state_dict, optimizer, "
            "epoch, step, EMA shadow]) with its config.yml")):
        loading.load_denoiser(tmp_path / 'other.pt')
    torch.save([{'module.begin_conv.weight': torch.zeros(1)}, {}, 3, 1000], tmp_path / 'short.pth')  # No EMA entry.
    with pytest.raises(ValueError, match=re.escape("short.pth holds a list of 4 items (['dict', 'dict', 'int', "
                                                   "'int']), not a state dict of tensors nor an NCSNv2")):
        loading.describe(tmp_path / 'short.pth')


def test_registry_names_without_a_local_copy_fail_clearly(root, tmp_path, monkeypatch):
    monkeypatch.setattr(dnnlib.util, '_cache_dir', str(tmp_path / 'cache'))
    monkeypatch.setattr(dnnlib.util, 'open_url', lambda *a, **k: (_ for _ in ()).throw(AssertionError('no network')))
    with pytest.raises(FileNotFoundError, match=re.escape(
            f"ncsnv2-cifar10: no local copy at {tmp_path / 'cache' / 'ncsnv2' / 'ncsnv2-cifar10' / 'checkpoint.pth'}. "
            f"The NCSNv2 checkpoints are published only as a shared folder ({registry.NCSNV2_URL}), which cannot be "
            "downloaded automatically: fetch the CIFAR10 checkpoint")):
        loading.load_denoiser('ncsnv2-cifar10')


def test_registry_name_with_a_local_copy_loads(root, tmp_path, monkeypatch):
    monkeypatch.setattr(dnnlib.util, '_cache_dir', str(tmp_path / 'cache'))
    local = registry.MODELS['ncsnv2-church'].local_path()
    os.makedirs(os.path.dirname(local))
    for name in ('checkpoint.pth', 'config.yml'):  # The reduced model stands in for the release.
        shutil.copy(os.path.join(root, 'ncsnv2-church-ngf16-32px', name), os.path.join(os.path.dirname(local), name))
    info = loading.describe('ncsnv2-church')
    assert (info['name'], info['backbone'], info['source']) == ('ncsnv2-church', 'NCSNv2Deeper', local)
    os.remove(os.path.join(os.path.dirname(local), 'config.yml'))  # Then the registry's config (ngf 128) applies.
    with pytest.raises(ValueError, match=re.escape('the stored tensors do not match NCSNv2Deeper (ngf 128, 788 noise '
                                                   'levels) built from the config')):
        loading.load_denoiser('ncsnv2-church')


def test_langevin_defaults_come_from_the_config(root):
    D = loading.load_denoiser(os.path.join(root, 'ncsnv2-church-ngf16-32px', 'checkpoint.pth'))
    config = samplers.resolve_config(D)
    assert (config.sampler, config.num_steps, config.n_steps_each) == ('langevin', 788, 4)
    assert config.step_lr == pytest.approx(4 * 4.9e-6)  # [0, 1]-unit step size, in [-1, 1] units.
    assert (config.sigma_min, config.sigma_max) == pytest.approx((0.02, 280.0), rel=1e-6)
    ladder = config.sigmas()
    assert torch.allclose(ladder, D.net.sigmas().double(), rtol=1e-6)
    assert samplers.resolve_config(D, n_steps_each=2, step_lr=1e-5).n_steps_each == 2


def test_legacy_torch_save_format_is_read_too(root, tmp_path):
    """Checkpoints written before PyTorch 1.6 (the release dates from 2020) use torch.save's legacy format."""
    model = os.path.join(root, 'ncsnv2-ffhq-ngf8-32px')
    ckpt = torch.load(os.path.join(model, 'checkpoint.pth'), weights_only=True)
    torch.save(ckpt, tmp_path / 'checkpoint.pth', _use_new_zipfile_serialization=False)
    shutil.copy(os.path.join(model, 'config.yml'), tmp_path / 'config.yml')
    assert (tmp_path / 'checkpoint.pth').read_bytes()[:2] == b'\x80\x02'  # A pickle, not a zip.
    golden = _golden(root, 'ncsnv2-ffhq-ngf8-32px')
    D = loading.load_denoiser(tmp_path / 'checkpoint.pth')
    with torch.no_grad():
        score = D.net.net(golden['x_noisy'], golden['labels'])
    assert _max_errors(score, golden['score_ema'], golden['sigmas'][golden['labels']])[0] <= TOL
