"""fid.py (EDM-style reference statistics) through click's CliRunner with a tiny TorchScript detector."""

import os
import re
import sys

import numpy as np
import pytest
from click.testing import CliRunner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import fid  # noqa: E402  (a top-level script, importable from the repository root)
import tiny_metrics  # noqa: E402
from metrics import frechet_inception_distance  # noqa: E402
from tiny_datasets import make_zip  # noqa: E402


def _invoke(*args):
    return CliRunner().invoke(fid.main, [str(arg) for arg in args])


def _fid(output):
    return float(re.search(r'FID of \d+ images: (\S+)', output).group(1))


def test_ref_then_calc(tmp_path, monkeypatch):
    monkeypatch.delenv('SMART_DETECTOR_DIR', raising=False)
    detector = tiny_metrics.save_torchscript(tmp_path / 'inception.pt')
    data, other = make_zip(tmp_path / 'a.zip', num=10, seed=1), make_zip(tmp_path / 'b.zip', num=10, seed=2)
    result = _invoke('ref', '--data', data, '--dest', tmp_path / 'refs' / 'a.npz', '--detector', detector,
                     '--workers', 0)
    assert result.exit_code == 0, result.output
    assert f'Saved reference statistics of 10 images to {tmp_path / "refs" / "a.npz"}' in result.output
    with np.load(tmp_path / 'refs' / 'a.npz') as refs:
        assert sorted(refs.keys()) == ['mu', 'sigma'] and refs['mu'].shape == (8,) and refs['sigma'].dtype == np.float64
    same = _invoke('calc', '--images', data, '--ref', tmp_path / 'refs' / 'a.npz', '--detector', detector,
                   '--workers', 0)
    assert same.exit_code == 0 and abs(_fid(same.output)) < 1e-6, same.output
    different = _invoke('calc', '--images', other, '--ref', tmp_path / 'refs' / 'a.npz', '--detector', detector,
                        '--workers', 0, '--num', 6)
    assert 'FID of 6 images' in different.output
    mu_a, sigma_a = frechet_inception_distance.load_ref_stats(str(tmp_path / 'refs' / 'a.npz'))
    mu_b, sigma_b, _ = frechet_inception_distance.dataset_moments(other, detector=detector, max_items=6,
                                                                  num_workers=0)
    expected = frechet_inception_distance.fid_from_stats(mu_a, sigma_a, mu_b, sigma_b)
    assert _fid(different.output) == pytest.approx(expected, rel=1e-5) and expected > 0.01


@pytest.mark.parametrize('args, message', [
    (['ref', '--data', '{missing}', '--dest', '{tmp}/r.npz'], "--data: '{missing}' does not exist"),
    (['ref', '--data', '{missing}', '--dest', '{tmp}/r.npz', '--detector', '{missing}'], '--detector: '),
    (['calc', '--images', '{missing}', '--ref', '{missing}'], "--images: '{missing}' does not exist"),
    (['calc', '--images', '{data}', '--ref', '{missing}'], '--ref: '),
    (['ref', '--data', '{data}', '--dest', '{tmp}/r.npz', '--detector', '{junk}', '--workers', '0', '--trust-detector'],
     "--detector: detector '{junk}' is neither a TorchScript archive"),
    (['ref', '--data', '{data}', '--dest', '{tmp}/r.npz', '--detector', '{junk}', '--workers', '0'],
     '--detector: {junk} (given by --detector) is not a TorchScript archive, so loading it means unpickling it'),
])
def test_errors_name_the_flag(tmp_path, args, message):
    (tmp_path / 'junk.pt').write_bytes(b'not a detector')
    paths = dict(missing=str(tmp_path / 'missing'), tmp=str(tmp_path), junk=str(tmp_path / 'junk.pt'),
                 data=make_zip(tmp_path / 'a.zip', num=4, seed=1))
    result = _invoke(*[arg.format(**paths) for arg in args])
    assert result.exit_code != 0 and f'Error: {message.format(**paths)}' in result.output, result.output


@pytest.mark.parametrize('command', ['ref', 'calc'])
def test_untrusted_pickle_in_the_detector_folder_is_refused_before_it_runs(tmp_path, monkeypatch, command):
    marker = tmp_path / 'payload-ran'
    monkeypatch.setenv('SMART_DETECTOR_DIR', str(tmp_path))
    tiny_metrics.save_payload(tmp_path / 'inception-2015-12-05.pt', marker)
    data = make_zip(tmp_path / 'a.zip', num=4, seed=1)
    frechet_inception_distance.save_ref_stats(tmp_path / 'r.npz', np.zeros(8), np.eye(8))
    args = ['--data', data, '--dest', tmp_path / 'out.npz'] if command == 'ref' else ['--images', data, '--ref',
                                                                                      tmp_path / 'r.npz']
    result = _invoke(command, *args, '--workers', 0)
    assert result.exit_code == 1 and not marker.exists() and not (tmp_path / 'out.npz').exists()
    assert (f'Error: --detector: {tmp_path}/inception-2015-12-05.pt (found in $SMART_DETECTOR_DIR={tmp_path}) is '
            'not a TorchScript archive' in result.output and '--trust-detector' in result.output), result.output


@pytest.mark.parametrize('bad', ['mu', 'sigma'])
def test_nan_reference_is_refused(tmp_path, bad):
    """Before: a NaN mu printed 'FID ... nan' with rc 0."""
    mu, sigma = np.zeros(4), np.eye(4)
    (mu if bad == 'mu' else sigma)[1] = np.nan
    frechet_inception_distance.save_ref_stats(tmp_path / 'ref.npz', mu, sigma)
    data = make_zip(tmp_path / 'a.zip', num=4, seed=1)
    result = _invoke('calc', '--images', data, '--ref', tmp_path / 'ref.npz')
    assert result.exit_code == 1, result.output
    count = 1 if bad == 'mu' else 4
    assert (f"Error: --ref: reference statistics '{tmp_path / 'ref.npz'}': {bad} holds {count} NaN/Inf value(s)"
            in result.output), result.output
    with pytest.raises(ValueError, match='generated mu holds NaN/Inf'):
        frechet_inception_distance.fid_from_stats(np.zeros(4), np.eye(4), np.full(4, np.nan), np.eye(4))
