"""Perceptual path length: slerp, crop, the percentile filter and one batch's distances against a hand computation
with the tiny VGG16 stand-in; the registry metrics through calc_metric and calc_metrics.py."""

import json
import math
import os
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import tiny_metrics
from metrics import detectors, metric_main, perceptual_path_length as ppl
from training import snapshot

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_slerp_keeps_unit_length_and_the_angle():
    a, b = torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([[0.0, 3.0, 0.0]])
    mid = ppl.slerp(a, b, torch.tensor([[0.5]]))
    assert torch.allclose(mid, torch.tensor([[math.sqrt(0.5), math.sqrt(0.5), 0.0]]), atol=1e-6)
    third = ppl.slerp(a, b, torch.tensor([[1 / 3]]))
    assert torch.allclose(third, torch.tensor([[math.cos(math.pi / 6), math.sin(math.pi / 6), 0.0]]), atol=1e-6)
    assert torch.allclose(ppl.slerp(a, b, torch.zeros([1, 1])), torch.tensor([[1.0, 0.0, 0.0]]))


def test_face_crop_takes_the_central_face_region():
    img = torch.arange(16 * 16, dtype=torch.float32).reshape(1, 1, 16, 16)
    out = ppl.face_crop(img)
    assert out.shape == (1, 1, 8, 8) and out[0, 0, 0, 0] == 6 * 16 + 4 and out[0, 0, -1, -1] == 13 * 16 + 11
    with pytest.raises(ValueError, match='needs square images, got 16x8'):
        ppl.face_crop(img[..., :8])


def test_filtered_mean_drops_values_outside_the_1st_99th_percentile():
    dist = np.concatenate([np.arange(1.0, 199.0), [1e9, -1e9]])  # 200 values, two wild outliers.
    # numpy: 1st percentile 'lower' = the 2nd smallest (1.0), 99th 'higher' = the 2nd largest (198.0).
    assert ppl.filtered_mean(dist) == pytest.approx(np.arange(1.0, 199.0).mean())
    assert ppl.filtered_mean(np.full(7, 2.5)) == 2.5


def _vgg(detector_files):
    return detectors.load_detector_file(detector_files.vgg16, torch.device('cpu'))


@pytest.mark.parametrize('space, crop', [('w', False), ('z', True)])
@torch.no_grad()
def test_path_lengths_against_a_hand_computation(detector_files, tiny_G, space, crop):
    vgg, eps = _vgg(detector_files), 1e-4
    gen = torch.Generator().manual_seed(5)
    z0, z1 = torch.randn([3, 8], generator=gen), torch.randn([3, 8], generator=gen)
    t, c = torch.tensor([0.0, 0.3, 0.9]), torch.zeros([3, 0])
    ws0, ws1 = ppl.interpolated_ws(tiny_G, z0, z1, c, t, eps, space)
    got = ppl.path_lengths(tiny_G, vgg, ws0, ws1, eps, crop)
    for i in range(3):  # One sample at a time, every step written out with numpy where possible.
        if space == 'w':
            w0, w1 = (tiny_G.mapping(z[i:i + 1], c[:1]).double().numpy() for z in (z0, z1))
            ends = [w0 + (w1 - w0) * s for s in (t[i].item(), t[i].item() + eps)]
            ends = [torch.from_numpy(w).float() for w in ends]
        else:
            a, b = z0[i].double().numpy(), z1[i].double().numpy()
            a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
            omega = np.arccos(a @ b)
            zs = [(np.sin((1 - s) * omega) * a + np.sin(s * omega) * b) / np.sin(omega)  # The textbook slerp.
                  for s in (t[i].item(), t[i].item() + eps)]
            ends = [tiny_G.mapping(torch.from_numpy(z).float()[None], c[:1]) for z in zs]
        imgs = [tiny_G.synthesis(w, noise_mode='const', force_fp32=True) for w in ends]  # [1, 3, 8, 8]
        if crop:
            imgs = [img[:, :, 3:7, 2:6] for img in imgs]  # 8 px: rows 3..6, columns 2..5.
        feats = [vgg((img + 1) * 127.5, resize_images=False, return_lpips=True).double() for img in imgs]
        expected = ((feats[0] - feats[1]) ** 2).sum().item() / eps ** 2
        # fp32 images differ in their last bits at eps = 1e-4 (as officially): agreement to ~1%.
        assert got[i].item() == pytest.approx(expected, rel=2e-2), (i, got[i].item(), expected)
    assert got.min() > 0


def test_registry_names_and_calc_metric(metric_env, dataset_zip, tiny_G):
    for name in ('ppl2_wend', 'ppl_zfull', 'ppl_wfull', 'ppl_zend', 'ppl_wend', 'ppl2_wend_2k'):
        assert metric_main.is_valid_metric(name)
    kwargs = dict(G=tiny_G, dataset_kwargs=dict(class_name='training.dataset.ImageFolderDataset', path=dataset_zip),
                  device='cpu')
    result = metric_main.calc_metric('ppl2_wend_2k', **kwargs)
    value = result.results.ppl2_wend_2k
    assert set(result.results) == {'ppl2_wend_2k'} and math.isfinite(value) and value > 0


def test_calc_metrics_cli_ppl(metric_env, dataset_zip, tiny_G, tmp_path, monkeypatch):
    sys.path.insert(0, ROOT)
    import calc_metrics
    pkl = tmp_path / 'net.pkl'
    snapshot.save_network_pkl(pkl, dict(G_ema=tiny_G, training_set_kwargs=dict(
        class_name='training.dataset.ImageFolderDataset', path=dataset_zip)))
    result = CliRunner().invoke(calc_metrics.main, ['--network', str(pkl), '--metrics', 'ppl2_wend_2k', '--quiet',
                                                    '--detector-vgg16', metric_env.vgg16])
    assert result.exit_code == 0, result.output
    line = json.loads(result.output.strip().splitlines()[-1])
    assert line['metric'] == 'ppl2_wend_2k' and line['results']['ppl2_wend_2k'] > 0


def test_train_py_metrics_ppl_at_the_snapshot(detector_files, tmp_path, monkeypatch):
    sys.path.insert(0, ROOT)
    import train
    from tiny_datasets import make_zip
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    data = make_zip(tmp_path / 'ds.zip', num=8, res=8, seed=7)
    tiny = ['--cfg', 'stylegan2', '--batch', '4', '--cbase', '128', '--cmax', '16', '--map-depth', '2',
            '--mbstd-group', '2', '--workers', '0', '--tick', '0.008', '--snap', '1', '--kimg', '0.004']
    result = CliRunner().invoke(train.main, ['--outdir', str(tmp_path), '--data', data, '--metrics', 'ppl2_wend_2k',
                                             '--detector', detector_files.inception, '--dry-run', *tiny])
    assert result.exit_code != 0 and '--detector: no metric in --metrics=ppl2_wend_2k uses this detector' in \
        result.output, result.output
    result = CliRunner().invoke(train.main, ['--outdir', str(tmp_path), '--data', data, '--metrics', 'ppl2_wend_2k',
                                             '--detector-vgg16', detector_files.vgg16, *tiny])
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / '00000-ds-stylegan2-kimg0.004-batch4'
    lines = [json.loads(line) for line in (run_dir / 'metric-ppl2_wend_2k.jsonl').read_text().splitlines()]
    assert len(lines) == 1 and lines[0]['results']['ppl2_wend_2k'] > 0
    stats = [json.loads(line) for line in (run_dir / 'stats.jsonl').read_text().splitlines()]
    assert stats[-1]['Metrics/ppl2_wend_2k']['mean'] == lines[0]['results']['ppl2_wend_2k']
