"""Detector resolution (explicit path, SMART_DETECTOR_DIR, download cache by md5 name, one download attempt), the
offline error message, loading TorchScript and persistent pickles, and the call convention."""

import pickle
import time

import pytest
import requests
import torch

import tiny_metrics
from metrics import detectors

SPEC_MD5 = {  # docs/spec/stylegan2-ada.md 7: md5 of the official URLs, the prefixes of their download-cache file names.
    'inception-2015-12-05.pt': 'a866f8d678872dcf6fcf60ddd09807ab',
    'vgg16.pt': '5982b9427714baaab6e0a48ef3b1dbfd',
    'inception-2015-12-05.pkl': '18d9c1159d16cd4cc6adf7db0f2dd2a9',
    'vgg16.pkl': '2f86d6685359f59cdb0a2fab8c8f7f10',
}


def test_official_urls_have_the_spec_cache_names():
    urls = [url for kind in ('inception', 'vgg16') for url in detectors.DETECTORS[kind][1]]
    names = {url.rsplit('/', 1)[-1]: detectors.cache_file_name(url) for url in urls}
    assert names == {name: f'{md5}_{name}' for name, md5 in SPEC_MD5.items()}


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No detector anywhere, and every HTTP request fails like a machine without network; counts the attempts."""
    monkeypatch.delenv('SMART_DETECTOR_DIR', raising=False)
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    calls = []

    def refuse(self, url, **kwargs):
        calls.append(url)
        raise requests.ConnectionError('Name or service not known')

    monkeypatch.setattr(requests.Session, 'get', refuse)
    return calls


def test_offline_missing_detector_fails_fast_with_instructions(offline, tmp_path):
    start = time.time()
    with pytest.raises(detectors.DetectorUnavailableError) as info:
        detectors.resolve_detector('inception')
    assert time.time() - start < 5 and offline == [detectors.DETECTORS['inception'][1][0]]  # one attempt, no retries
    message = str(info.value)
    assert info.value.flag == '--detector'
    assert message.startswith('the inception detector file inception-2015-12-05.pt is not available offline and could '
                              'not be downloaded from https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/'
                              'pretrained/metrics/inception-2015-12-05.pt')
    for piece in ('pass --detector PATH', 'into the folder named by $SMART_DETECTOR_DIR',
                  str(tmp_path / 'cache' / 'downloads'), 'a866f8d678872dcf6fcf60ddd09807ab_inception-2015-12-05.pt',
                  '18d9c1159d16cd4cc6adf7db0f2dd2a9_inception-2015-12-05.pkl', 'Name or service not known'):
        assert piece in message, piece
    with pytest.raises(detectors.DetectorUnavailableError, match='5982b9427714baaab6e0a48ef3b1dbfd_vgg16.pt') as info:
        detectors.resolve_detector('vgg16')
    assert info.value.flag == '--detector-vgg16' and 'pass --detector-vgg16 PATH' in str(info.value)


def test_explicit_url_that_fails_is_one_attempt(offline):
    with pytest.raises(detectors.DetectorUnavailableError, match=r"^https://example.invalid/d.pt: open_url: could "
                                                                 r"not download .* after 1 attempt\(s\)"):
        detectors.resolve_detector('inception', 'https://example.invalid/d.pt')
    assert offline == ['https://example.invalid/d.pt']


def test_resolution_order(offline, tmp_path, monkeypatch, detector_files):
    downloads = tmp_path / 'cache' / 'downloads'
    downloads.mkdir(parents=True)
    cached = downloads / 'a866f8d678872dcf6fcf60ddd09807ab_inception-2015-12-05.pt'
    cached.write_bytes(b'x')
    assert detectors.resolve_detector('inception') == str(cached)  # the cache works offline
    cached.unlink()
    sg3_cached = downloads / '18d9c1159d16cd4cc6adf7db0f2dd2a9_inception-2015-12-05.pkl'
    sg3_cached.write_bytes(b'x')
    assert detectors.resolve_detector('inception') == str(sg3_cached)  # so does StyleGAN3's file name
    monkeypatch.setenv('SMART_DETECTOR_DIR', detector_files.dir)
    assert detectors.resolve_detector('inception') == detector_files.inception  # the folder wins over the cache
    assert detectors.resolve_detector('inception', detector_files.vgg16) == detector_files.vgg16  # the flag wins
    assert offline == []
    with pytest.raises(FileNotFoundError, match='is not an existing file'):
        detectors.resolve_detector('inception', str(tmp_path / 'missing.pt'))
    with pytest.raises(ValueError, match=r"detector kind 'clip': expected one of \['inception', 'vgg16'\]"):
        detectors.resolve_detector('clip')


def test_torchscript_and_persistent_pickle_detectors(tmp_path, detector_files):
    pkl = tiny_metrics.save_pickle(tmp_path / 'tiny.pkl')
    images = torch.randint(0, 256, [5, 3, 8, 8], dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    script, script_id = detectors.get_detector('inception', detector_files.inception, torch.device('cpu'))
    pickled, pickled_id = detectors.get_detector('inception', pkl, torch.device('cpu'), trust=True)
    assert isinstance(script, torch.jit.ScriptModule) and not isinstance(pickled, torch.jit.ScriptModule)
    assert script_id.startswith('inception-2015-12-05-') and pickled_id.startswith('tiny-')
    assert detectors.get_detector('inception', pkl, torch.device('cpu'), trust=True)[0] is pickled  # loaded once
    with pytest.raises(detectors.UntrustedDetectorError):  # ...and not handed to a caller that does not trust it.
        detectors.get_detector('inception', pkl, torch.device('cpu'))
    features = detectors.run_detector(script, images, return_features=True)
    assert features.shape == (5, 8) and torch.equal(features, detectors.run_detector(pickled, images,
                                                                                     return_features=True))
    probs = detectors.run_detector(script, images, no_output_bias=True)
    assert probs.shape == (5, 10) and torch.allclose(probs.sum(dim=1), torch.ones(5))
    gray = images[:, :1]
    assert torch.equal(detectors.run_detector(script, gray, return_features=True),
                       detectors.run_detector(script, gray.repeat(1, 3, 1, 1), return_features=True))


def test_detector_file_errors(tmp_path):
    (tmp_path / 'junk.pt').write_bytes(b'not a detector')
    with pytest.raises(ValueError, match="is neither a TorchScript archive .* nor a pickle"):
        detectors.load_detector_file(str(tmp_path / 'junk.pt'), torch.device('cpu'), trust=True)
    (tmp_path / 'dict.pkl').write_bytes(pickle.dumps({'a': 1}))
    with pytest.raises(TypeError, match='holds a dict; expected a torch.nn.Module'):
        detectors.load_detector_file(str(tmp_path / 'dict.pkl'), torch.device('cpu'), trust=True)
    with pytest.raises(ValueError, match=r'detector input must be uint8 \[N, C, H, W\], got torch.float32'):
        detectors.run_detector(torch.nn.Identity(), torch.zeros([1, 3, 4, 4]))
    with pytest.raises(ValueError, match=r'detector returned torch.Size\(\[2, 3, 4, 4\]\) for 2 images'):
        detectors.run_detector(torch.nn.Identity(), torch.zeros([2, 3, 4, 4], dtype=torch.uint8))


# Untrusted files: a pickle runs code when loaded, so nothing but TorchScript loads without trust=True.


def test_untrusted_pickles_are_refused_wherever_they_are_found(offline, tmp_path, monkeypatch, detector_files):
    marker = tmp_path / 'payload-ran'
    downloads = tmp_path / 'cache' / 'downloads'
    downloads.mkdir(parents=True)
    env_dir = tmp_path / 'env'
    env_dir.mkdir()
    given = tiny_metrics.save_payload(tmp_path / 'given.pkl', marker)
    tiny_metrics.save_payload(env_dir / 'inception-2015-12-05.pt', marker)  # a pickle under the TorchScript name
    tiny_metrics.save_payload(downloads / 'a866f8d678872dcf6fcf60ddd09807ab_inception-2015-12-05.pt', marker)
    cases = [(given, None, f'{given} (given by --detector)'),
             (None, str(env_dir), f'{env_dir}/inception-2015-12-05.pt (found in $SMART_DETECTOR_DIR={env_dir})'),
             (None, None, f'{downloads}/a866f8d678872dcf6fcf60ddd09807ab_inception-2015-12-05.pt (found in the '
                          f'download cache {downloads})')]
    for source, folder, where in cases:
        if folder is None:
            monkeypatch.delenv('SMART_DETECTOR_DIR', raising=False)
        else:
            monkeypatch.setenv('SMART_DETECTOR_DIR', folder)
        with pytest.raises(detectors.UntrustedDetectorError) as info:
            detectors.get_detector('inception', source, torch.device('cpu'))
        assert str(info.value).startswith(where + ' is not a TorchScript archive, so loading it means unpickling '
                                                  'it, which runs code stored in the file; refused. If you trust this '
                                                  'file, pass --trust-detector'), str(info.value)
        assert info.value.flag == '--detector' and not marker.exists()
    with pytest.raises(detectors.UntrustedDetectorError, match=r'vgg16.pkl \(given by --detector-vgg16\)') as info:
        detectors.get_detector('vgg16', tiny_metrics.save_payload(tmp_path / 'vgg16.pkl', marker), 'cpu')
    assert info.value.flag == '--detector-vgg16' and not marker.exists()
    script, _ = detectors.get_detector('inception', detector_files.inception, torch.device('cpu'))  # TorchScript: ok
    assert isinstance(script, torch.jit.ScriptModule)
    with pytest.raises(detectors.DetectorUnavailableError, match='holds a NoneType'):  # With trust the payload runs.
        detectors.get_detector('inception', given, torch.device('cpu'), trust=True)
    assert marker.exists()
