"""The dataset classes a `training_set_kwargs` / `dataset_kwargs` dict may name, and the one way to build a dataset.

Snapshots store the dataset as NVIDIA does: a dict with a dotted `class_name` and its keyword arguments. Passed to
`dnnlib.util.construct_class_by_name`, such a dict read from a file could name (and import) any callable, e.g.
`torch.hub.load`. `open_dataset` therefore builds only the classes below, with their known keys and plain values
(nothing else the dict names is imported); anything else needs trusted=True (the CLIs' trust flag), which restores
the released behaviour for dataset classes of your own. Here, on the floor of the package layout, because metrics/
and dpm/ open datasets too; the allowed class is still found by its name, so nothing here imports dataset_io/.
"""

import numbers
import os
from typing import Any

import dnnlib

# The image-folder reader's name as snapshots store it (NVIDIA's): training/dataset.py re-exports dataset_io's reader
# under it. Code that writes training_set_kwargs / dataset_kwargs, or keys a statistics cache by them, uses this name.
IMAGE_FOLDER_DATASET = 'training.dataset.ImageFolderDataset'

# Dotted class names (as snapshots store them) that may be built; the same names as NVIDIA's StyleGAN2-ADA / StyleGAN3.
DATASET_CLASSES = (IMAGE_FOLDER_DATASET,)

# Keyword arguments of those classes, with the plain types their values may have (None allowed for the ints).
_KEYS: dict[str, tuple[type, ...]] = {'path': (str, os.PathLike), 'resolution': (numbers.Integral, type(None)),
                                      'max_size': (numbers.Integral, type(None)), 'use_labels': (bool,),
                                      'xflip': (bool,), 'random_seed': (numbers.Integral,)}


class UntrustedDatasetError(ValueError):
    """The dataset kwargs name a class or key outside the allow-list (and the caller did not trust them)."""


def check_dataset_kwargs(kwargs: Any, origin: str = 'dataset_kwargs', trust_flag: str | None = None) -> None:
    """Raise UntrustedDatasetError unless `kwargs` names a class of DATASET_CLASSES with known keys and plain
    values; `origin` says where the dict came from and `trust_flag` is the caller's flag that accepts it anyway."""
    hint = (f'pass {trust_flag} only if you trust the file (it will import and call what it names)' if trust_flag
            else 'this tool builds only the known dataset classes')
    if not isinstance(kwargs, dict):
        raise UntrustedDatasetError(f'{origin} is a {type(kwargs).__name__}; expected a dict with class_name, path, '
                                    f'...')
    class_name = kwargs.get('class_name')
    if not isinstance(class_name, str) or class_name not in DATASET_CLASSES:
        raise UntrustedDatasetError(f'{origin} names the dataset class {class_name!r}, which is not one of '
                                    f'{list(DATASET_CLASSES)}; {hint}')
    unknown = sorted(str(key) for key in kwargs if key != 'class_name' and key not in _KEYS)
    if unknown:
        raise UntrustedDatasetError(f'{origin} has the unknown key(s) {unknown} for {class_name}; expected some of '
                                    f'{sorted(_KEYS)}; {hint}')
    for key, types in _KEYS.items():
        value = kwargs.get(key)
        if key in kwargs and (not isinstance(value, types) or (isinstance(value, bool) and bool not in types)):
            raise UntrustedDatasetError(f'{origin}: {key} is {type(value).__name__} {value!r}; expected '
                                        f'{" or ".join(t.__name__ for t in types)}')


def open_dataset(kwargs: dict, trusted: bool = False, origin: str = 'dataset_kwargs',
                 trust_flag: str | None = None) -> Any:
    """Build the dataset `kwargs` describes (class_name + keyword arguments). Untrusted (default): only the classes
    of DATASET_CLASSES with their keys and plain values; trusted: any class, by dotted name."""
    if not trusted:
        check_dataset_kwargs(kwargs, origin, trust_flag)
    return dnnlib.util.construct_class_by_name(**kwargs)
