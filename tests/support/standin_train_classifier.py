"""Stand-in for `python -m metrics.train_classifier --data=ZIP --out=PATH.pt` in the study's wiring test:
the small digit classifier of metrics/classifier_features.py, 3 epochs, saved as TorchScript."""

import sys

import click

sys.path.insert(0, '.')
sys.path.insert(0, 'benchmarks')


@click.command()
@click.option('--data', required=True)
@click.option('--out', required=True)
def main(data: str, out: str) -> None:
    from metrics import classifier_features
    from smart_digits_eval import read_digits
    images, labels = read_digits(data)
    net, accuracy, split = classifier_features.train_classifier(images, labels, epochs=3, seed=0)
    classifier_features.save_torchscript(net, out)
    print(f'held-out accuracy {accuracy:.4f} on {split["test"]} images')


if __name__ == '__main__':
    main()
