"""projector.py and gan_tools.projection on a tiny snapshot with the tiny VGG16 stand-in: the projection lowers the
LPIPS and pixel distances to the target; the CLI writes the released outputs (target/proj PNGs, projected_w.npz,
proj.mp4 with one frame per step)."""

import os
import sys

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

# A required dependency (pyproject.toml); absent only on machines that run this suite from a bare checkout, such as a
# lent GPU machine running `pytest -m cuda`, where collection must not stop at this module.
imageio_ffmpeg = pytest.importorskip('imageio_ffmpeg')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import projector  # noqa: E402  (a top-level script, importable from the repository root)
import tiny_metrics  # noqa: E402
from gan_tools import projection  # noqa: E402
from metrics import detectors  # noqa: E402
from torch_utils import image_io  # noqa: E402
from training import snapshot  # noqa: E402


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp('proj')
    G = tiny_metrics.make_generator(seed=3)
    with torch.no_grad():
        z = torch.randn([1, G.z_dim], generator=torch.Generator().manual_seed(11))
        target = image_io.quantize(G(z, torch.zeros([1, 0]), noise_mode='const'))[0]  # [3, 8, 8] uint8, reachable.
    pkl = root / 'net.pkl'
    snapshot.save_network_pkl(pkl, dict(G_ema=G))
    vgg_path = tiny_metrics.save_torchscript(root / 'vgg16.pt', num_features=6, seed=1)
    PIL.Image.fromarray(target.permute(1, 2, 0).numpy()).resize((12, 10)).save(root / 'target.png')
    return dict(G=G, target=target, pkl=str(pkl), vgg=vgg_path, target_png=str(root / 'target.png'))


def test_projection_lowers_lpips_and_pixel_distance(setup):
    G, target = setup['G'], setup['target']
    vgg = detectors.load_detector_file(setup['vgg'], torch.device('cpu'))
    torch.manual_seed(0)
    ws, dists = projection.project(G, target, vgg, num_steps=80, w_avg_samples=1000)
    assert ws.shape == (80, G.num_ws, G.w_dim) and len(dists) == 80
    assert dists[-1] < 0.5 * dists[0], dists[::10]
    with torch.no_grad():
        first, last = (image_io.quantize(G.synthesis(w[None], noise_mode='const'))[0].float() for w in (ws[0], ws[-1]))
    pixel = [float((img - target.float()).abs().mean()) for img in (first, last)]
    assert pixel[1] < pixel[0], pixel
    assert torch.equal(G.synthesis.b4.conv1.noise_const, setup['G'].synthesis.b4.conv1.noise_const)  # G unchanged.


def test_projection_schedule_and_errors(setup):
    lr = [projection.learning_rate(s, 100, 0.1, 0.25, 0.05) for s in (0, 1, 5, 50, 90, 99)]
    assert lr[0] == 0 and lr[1] == pytest.approx(0.1 / 5) and lr[2] == lr[3] == pytest.approx(0.1)
    assert lr[4] == pytest.approx(0.1 * (0.5 - 0.5 * np.cos(0.4 * np.pi))) and 0 < lr[5] < lr[4]
    white = [torch.randn([16, 16], generator=torch.Generator().manual_seed(0))]
    smooth = [torch.ones([16, 16])]
    assert projection.noise_regularization(smooth) == pytest.approx(4.0)  # 2 scales x 2 shifts x 1^2.
    assert projection.noise_regularization(white) < 0.01
    vgg = detectors.load_detector_file(setup['vgg'], torch.device('cpu'))
    with pytest.raises(ValueError, match=r'target has shape \[3, 4, 4\]; expected \[3, 8, 8\]'):
        projection.project(setup['G'], setup['target'][:, :4, :4], vgg, num_steps=1)


def test_cli_writes_the_released_outputs(setup, tmp_path):
    outdir = tmp_path / 'out'
    result = CliRunner().invoke(projector.main, ['--network', setup['pkl'], '--target', setup['target_png'],
                                                 '--num-steps', '12', '--outdir', str(outdir),
                                                 '--detector-vgg16', setup['vgg'], '--device', 'cpu'])
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(outdir)) == ['proj.mp4', 'proj.png', 'projected_w.npz', 'target.png']
    w = np.load(outdir / 'projected_w.npz')['w']
    assert w.shape == (1, setup['G'].num_ws, setup['G'].w_dim)
    assert np.asarray(PIL.Image.open(outdir / 'target.png')).shape == (8, 8, 3)
    with torch.no_grad():
        expected = image_io.to_uint8(setup['G'].synthesis(torch.from_numpy(w), noise_mode='const'))[0]
    assert np.array_equal(np.asarray(PIL.Image.open(outdir / 'proj.png')), expected)
    reader = imageio_ffmpeg.read_frames(str(outdir / 'proj.mp4'))
    meta = next(reader)
    assert meta['size'] == (16, 8) and sum(1 for _ in reader) == 12  # target | projection, one frame per step.
    result = CliRunner().invoke(projector.main, ['--network', setup['pkl'], '--target', setup['target_png'],
                                                 '--num-steps', '2', '--outdir', str(tmp_path / 'nv'),
                                                 '--detector-vgg16', setup['vgg'], '--save-video=0'])
    assert result.exit_code == 0 and 'proj.mp4' not in os.listdir(tmp_path / 'nv'), result.output


def test_generate_renders_projected_w(setup, tmp_path):
    import generate
    ws = np.random.RandomState(0).randn(2, setup['G'].num_ws, setup['G'].w_dim).astype(np.float32)
    np.savez(tmp_path / 'projected_w.npz', w=ws)
    result = CliRunner().invoke(generate.main, ['--network', setup['pkl'], '--outdir', str(tmp_path / 'out'),
                                                '--projected-w', str(tmp_path / 'projected_w.npz')])
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(tmp_path / 'out')) == ['proj00.png', 'proj01.png']
    with torch.no_grad():
        expected = image_io.to_uint8(setup['G'].synthesis(torch.from_numpy(ws[1:]), noise_mode='const'))[0]
    assert np.array_equal(np.asarray(PIL.Image.open(tmp_path / 'out' / 'proj01.png')), expected)
    np.savez(tmp_path / 'bad.npz', w=ws[:, :2])
    result = CliRunner().invoke(generate.main, ['--network', setup['pkl'], '--outdir', str(tmp_path / 'o2'),
                                                '--projected-w', str(tmp_path / 'bad.npz')])
    assert result.exit_code != 0 and '--projected-w' in result.output and 'expected [N, 4, 8]' in result.output
    result = CliRunner().invoke(generate.main, ['--network', setup['pkl'], '--outdir', str(tmp_path / 'o3')])
    assert result.exit_code != 0 and '--seeds: give either --seeds or --projected-w' in result.output
