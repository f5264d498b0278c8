"""Train the digit classifier on a labelled dataset zip and save it as a TorchScript detector for the digit metrics.

    python -m metrics.train_classifier --data=datasets/mnist5k-16x16.zip --out=detectors/mnist5k-16.pt

The file works as `calc_metrics.py --detector=PATH --detector-vgg16=PATH`, `train.py --metrics=... --detector=PATH`
and `python -m metrics.compare --detector=PATH` (metrics/digit_metrics.py). It is trained at the dataset's resolution
and refused for generators of another one.
"""

import json

import click

from metrics import digit_metrics


@click.command(help=__doc__)
@click.option('--data', required=True, metavar='ZIP', help='Labelled dataset (zip or folder with dataset.json)')
@click.option('--out', required=True, metavar='PATH.pt', help='Where to write the TorchScript detector')
@click.option('--seed', type=click.IntRange(min=0), default=0, show_default=True, help='Split and weight seed')
@click.option('--epochs', type=click.IntRange(min=1), default=30, show_default=True, help='Training epochs')
def main(data: str, out: str, seed: int, epochs: int) -> None:
    try:
        info = digit_metrics.train_detector(data, out, seed=seed, epochs=epochs)
    except (OSError, ValueError) as err:  # Damaged images raise dataset_io.images.ImageFileError, an OSError.
        flag = '--out' if isinstance(err, OSError) and out in str(err) else '--data'
        raise click.ClickException(f'{flag}: {err}') from None
    print(json.dumps(dict(info.__dict__), indent=2))
    print(f'Held-out accuracy {info.accuracy:.4f} on {info.test} digits ({info.train} for training, '
          f'{info.resolution}x{info.resolution}); wrote {out}')


if __name__ == '__main__':
    main()
