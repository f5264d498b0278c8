"""Project an image into the W space of a network snapshot (StyleGAN2-ADA's projector.py options and outputs).

Writes to --outdir: target.png (the target, centre-cropped and resized to the generator's resolution), proj.png (the
projection), projected_w.npz (w [1, num_ws, w_dim], for `generate.py --projected-w`), and, unless --save-video=0,
proj.mp4 (target | projection at every step, 10 fps, libx264 through imageio-ffmpeg). The LPIPS distance uses the
VGG16 detector (vgg16.pt; --detector-vgg16, $SMART_DETECTOR_DIR or the download cache, see metrics/detectors.py).
Examples:

\b
  python projector.py --outdir=out --target=~/mytargetimg.png --network=network-snapshot-000200.pkl
  python projector.py --outdir=out --target=face.png --network=ffhq.pkl --num-steps=500 --save-video=0 \\
      --detector-vgg16=vgg16.pt
"""

from torch_utils import cpu_threads  # noqa: F401  First: OpenMP's wait policy must be set before torch loads.

import io
import os
import tempfile

import click
import numpy as np
import PIL.Image
import torch

import dnnlib
from cli.common import load_G_ema
from cli.compat import bool_flag
from gan_tools import projection
from metrics import detectors
from torch_utils import image_io


def load_target(path: str, resolution: int, channels: int) -> np.ndarray:
    """The image at `path`, centre-cropped to a square and LANCZOS-resized, as uint8 [H, W, C] (C = channels)."""
    with PIL.Image.open(path) as image:
        image = image.convert('L' if channels == 1 else 'RGB')
        w, h = image.size
        s = min(w, h)
        image = image.crop(((w - s) // 2, (h - s) // 2, (w + s) // 2, (h + s) // 2))
        image = image.resize((resolution, resolution), PIL.Image.LANCZOS)
        return np.asarray(image, dtype=np.uint8).reshape(resolution, resolution, channels)


def synthesize_uint8(G: torch.nn.Module, ws: torch.Tensor) -> np.ndarray:
    """G.synthesis(ws [1, num_ws, w_dim], const noise) as uint8 [H, W, C]."""
    return image_io.to_uint8(G.synthesis(ws, noise_mode='const'))[0]


def write_video(G: torch.nn.Module, target: np.ndarray, ws_steps: torch.Tensor, path: str) -> None:
    """proj.mp4: one frame per step, target | projection side by side (10 fps, libx264), written atomically."""
    import imageio_ffmpeg  # Deferred: only --save-video needs it.
    h, w, _ = target.shape
    fd, tmp = tempfile.mkstemp(suffix='.mp4', dir=os.path.dirname(os.path.abspath(path)))
    os.close(fd)
    try:
        writer = imageio_ffmpeg.write_frames(tmp, (2 * w, h), fps=10, codec='libx264', bitrate='16M',
                                             macro_block_size=2, ffmpeg_log_level='error')
        writer.send(None)  # Start the ffmpeg process.
        for ws in ws_steps:
            frame = np.concatenate([target, synthesize_uint8(G, ws[None])], axis=1)  # [H, 2W, C]
            if frame.shape[2] == 1:
                frame = frame.repeat(3, axis=2)
            writer.send(np.ascontiguousarray(frame))
        writer.close()
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@click.command(help=__doc__)
@click.option('--network', 'network_pkl', metavar='PATH|URL', required=True, help='Network snapshot')
@click.option('--target', 'target_fname', metavar='FILE', type=click.Path(exists=True, dir_okay=False), required=True,
              help='Target image file to project to')
@click.option('--num-steps', type=click.IntRange(min=1), default=1000, show_default=True,
              help='Number of optimization steps')
@click.option('--seed', type=click.IntRange(min=0), default=303, show_default=True, help='Random seed')
@bool_flag('--save-video', default=True, help='Save an mp4 video of the optimization progress')
@click.option('--outdir', type=click.Path(file_okay=False), required=True, help='Where to save the output images')
@click.option('--detector-vgg16', metavar='PATH|URL', default=None, show_default='official VGG16',
              help='VGG16 detector for the LPIPS distance (.pt TorchScript, or a .pkl with --trust-detector)')
@click.option('--trust-detector', is_flag=True,
              help='Load a detector that is not TorchScript by unpickling it, RUNNING code stored in it')
@click.option('--device', type=click.Choice(['auto', 'cpu', 'cuda']), default='auto', show_default=True,
              help='Where to run')
@click.option('--trust-pickle', is_flag=True, help='Unpickle normally, RUNNING the code stored in the pickle')
def main(network_pkl, target_fname, num_steps, seed, save_video, outdir, detector_vgg16, trust_detector, device,
         trust_pickle):
    np.random.seed(seed)
    torch.manual_seed(seed)
    G, device = load_G_ema(network_pkl, trust_pickle, device)
    try:
        vgg16, _ = detectors.get_detector('vgg16', detector_vgg16, device, trust=trust_detector)
    except detectors.DetectorUnavailableError as err:
        raise click.ClickException(f'{err.flag}: {err}') from None
    try:
        target = load_target(target_fname, G.img_resolution, G.img_channels)  # [H, W, C]
    except (OSError, ValueError) as err:
        raise click.ClickException(f'--target: {target_fname}: {err}') from None
    target_chw = torch.from_numpy(target.transpose(2, 0, 1).copy())
    try:
        ws_steps, _ = projection.project(G, target_chw, vgg16, num_steps=num_steps, device=device, log=print)
    except ValueError as err:
        raise click.ClickException(f'--network: {err}') from None
    os.makedirs(outdir, exist_ok=True)
    with torch.no_grad():
        if save_video:
            print(f'Saving optimization progress video "{outdir}/proj.mp4"')
            write_video(G, target, ws_steps, os.path.join(outdir, 'proj.mp4'))
        image_io.save_png(target, os.path.join(outdir, 'target.png'))
        image_io.save_png(synthesize_uint8(G, ws_steps[-1:]), os.path.join(outdir, 'proj.png'))
    buffer = io.BytesIO()
    np.savez(buffer, w=ws_steps[-1:].cpu().numpy())  # [1, num_ws, w_dim]
    dnnlib.util.write_atomically(os.path.join(outdir, 'projected_w.npz'), buffer.getvalue())


if __name__ == '__main__':
    main()
