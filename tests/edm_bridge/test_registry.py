"""Tests for edm_bridge/registry.py: the table of released models and name/path/URL resolution (no network)."""

import re

import pytest

import dnnlib
from edm_bridge import registry
from edm_bridge.registry import MODELS, ModelEntry, get_entry, resolve

EDM = 'https://nvlabs-fi-cdn.nvidia.com/edm/pretrained/'
ADM = 'https://openaipublic.blob.core.windows.net/diffusion/jul-2021/'


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError('the registry must not open or download anything')
    monkeypatch.setattr(dnnlib.util, 'open_url', refuse)


def test_table_contents():
    # name: (resolution, label_dim, architecture, schedule, license)
    expected = {
        'edm-cifar10-32x32-cond-vp': (32, 10, 'DDPM++', 'karras', 'CC BY-NC-SA 4.0'),
        'edm-cifar10-32x32-uncond-vp': (32, 0, 'DDPM++', 'karras', 'CC BY-NC-SA 4.0'),
        'edm-cifar10-32x32-cond-ve': (32, 10, 'NCSN++', 'karras', 'CC BY-NC-SA 4.0'),
        'edm-cifar10-32x32-uncond-ve': (32, 0, 'NCSN++', 'karras', 'CC BY-NC-SA 4.0'),
        'edm-ffhq-64x64-uncond-vp': (64, 0, 'DDPM++', 'karras', 'CC BY-NC-SA 4.0'),
        'edm-ffhq-64x64-uncond-ve': (64, 0, 'NCSN++', 'karras', 'CC BY-NC-SA 4.0'),
        'edm-afhqv2-64x64-uncond-vp': (64, 0, 'DDPM++', 'karras', 'CC BY-NC-SA 4.0'),
        'edm-afhqv2-64x64-uncond-ve': (64, 0, 'NCSN++', 'karras', 'CC BY-NC-SA 4.0'),
        'edm-imagenet-64x64-cond-adm': (64, 1000, 'ADM', 'karras', 'CC BY-NC-SA 4.0'),
        'adm-imagenet64-cond': (64, 1000, 'ADM', 'ddpm-cosine', 'MIT'),
        'adm-imagenet128-cond': (128, 1000, 'ADM', 'ddpm-linear', 'MIT'),
        'adm-lsun-bedroom256': (256, 0, 'ADM', 'ddpm-linear', 'MIT'),
    }
    ncsnv2 = {'ncsnv2-cifar10': (32, 'NCSNv2'), 'ncsnv2-celeba': (64, 'NCSNv2'), 'ncsnv2-church': (64, 'NCSNv2Deeper'),
              'ncsnv2-bedroom': (128, 'NCSNv2Deeper'), 'ncsnv2-tower': (128, 'NCSNv2Deeper'),
              'ncsnv2-ffhq': (256, 'NCSNv2Deepest')}
    assert list(MODELS) == list(expected) + list(ncsnv2)
    for name, (resolution, architecture) in ncsnv2.items():
        entry = MODELS[name]
        assert (entry.img_resolution, entry.label_dim, entry.architecture, entry.format, entry.url) == (
            resolution, 0, architecture, 'ncsnv2-checkpoint', registry.NCSNV2_URL)
        assert entry.ncsnv2_config['data']['image_size'] == resolution and entry.ncsnv2_config['model']['ema']
    for name, (resolution, label_dim, architecture, schedule, license) in expected.items():
        entry = MODELS[name]
        assert (entry.name, entry.img_resolution, entry.label_dim, entry.architecture, entry.schedule,
                entry.license, entry.img_channels) == (name, resolution, label_dim, architecture, schedule, license, 3)
        if name.startswith('edm-'):
            assert (entry.url, entry.format, entry.preconditioning, entry.adm_preset) == (
                f'{EDM}{name}.pkl', 'edm-pickle', 'EDMPrecond', None)
        else:
            assert (entry.format, entry.preconditioning, entry.adm_preset) == ('adm-checkpoint', 'ADM', name)
    assert MODELS['adm-imagenet64-cond'].url == ADM + '64x64_diffusion.pt'
    assert MODELS['adm-imagenet128-cond'].url == ADM + '128x128_diffusion.pt'
    assert MODELS['adm-lsun-bedroom256'].url == ADM + 'lsun_bedroom.pt'


def test_resolve_names_and_urls(tmp_path):
    name = 'edm-cifar10-32x32-cond-vp'
    assert resolve(name) == (MODELS[name], f'{EDM}{name}.pkl')
    assert resolve(ADM + 'lsun_bedroom.pt') == (MODELS['adm-lsun-bedroom256'], ADM + 'lsun_bedroom.pt')
    assert resolve('https://example.com/other.pkl') == (None, 'https://example.com/other.pkl')
    manual = tmp_path / '128x128_diffusion.pt'  # A manual download keeps its entry (and so its ADM preset).
    manual.write_bytes(b'')
    assert resolve(manual) == (MODELS['adm-imagenet128-cond'], str(manual))
    other = tmp_path / 'mine.pkl'
    other.write_bytes(b'')
    assert resolve(str(other)) == (None, str(other))
    assert resolve(f'file://{other}') == (None, f'file://{other}')


def test_resolve_errors(tmp_path):
    known = ', '.join(MODELS)
    with pytest.raises(ValueError, match=re.escape(f"unknown model 'edm-cifar10': not a known name, an existing "
                                                   f"file or a URL; known names: {known}")):
        resolve('edm-cifar10')
    missing = tmp_path / 'missing.pkl'
    with pytest.raises(FileNotFoundError, match=re.escape(f"model file {str(missing)!r} does not exist (nor is it a "
                                                          f"URL); known model names: {known}")):
        resolve(missing)
    with pytest.raises(TypeError, match='name_or_path is int; expected a model name, path or URL'):
        resolve(3)
    with pytest.raises(ValueError, match=re.escape(f"unknown model name 'nope'; known names: {known}")):
        get_entry('nope')
    assert get_entry('adm-imagenet64-cond') is MODELS['adm-imagenet64-cond']


def test_entry_validation():
    base = dict(name='x', url='https://a/x.pkl', img_resolution=32, label_dim=0, architecture='DDPM++',
                preconditioning='EDMPrecond', license=registry.EDM_LICENSE)
    with pytest.raises(ValueError, match=re.escape("x: format 'zip'; expected one of ['edm-pickle', "
                                                   "'adm-checkpoint', 'ncsnv2-checkpoint']")):
        ModelEntry(format='zip', schedule='karras', **base)
    with pytest.raises(ValueError, match=re.escape("x: schedule 'sqrt'; expected one of ['karras', 'ddpm-cosine', "
                                                   "'ddpm-linear']")):
        ModelEntry(format='edm-pickle', schedule='sqrt', **base)
    with pytest.raises(ValueError, match='x: an adm_preset is needed exactly for adm-checkpoint entries'):
        ModelEntry(format='adm-checkpoint', schedule='ddpm-linear', **base)
    with pytest.raises(ValueError, match='x: an ncsnv2_config is needed exactly for ncsnv2-checkpoint entries'):
        ModelEntry(format='ncsnv2-checkpoint', schedule='karras', **base)
