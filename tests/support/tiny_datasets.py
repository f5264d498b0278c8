"""Tiny random-image datasets in the StyleGAN2-ADA zip format, for training tests.

This directory is on pytest's `pythonpath`, so tests `from tiny_datasets import make_zip`.
"""

import io
import json
import zipfile

import numpy as np
import PIL.Image


def make_zip(path, num=16, res=8, num_classes=None, seed=0):
    """Write `num` random RGB res x res PNGs (labels i % num_classes in dataset.json if given); return the path."""
    rnd = np.random.RandomState(seed)
    with zipfile.ZipFile(path, 'w') as zf:
        for i in range(num):
            buffer = io.BytesIO()
            PIL.Image.fromarray(rnd.randint(0, 256, size=(res, res, 3), dtype=np.uint8)).save(buffer, format='PNG')
            zf.writestr(f'img{i:04d}.png', buffer.getvalue())
        if num_classes is not None:
            labels = [[f'img{i:04d}.png', i % num_classes] for i in range(num)]
            zf.writestr('dataset.json', json.dumps({'labels': labels}))
    return str(path)
