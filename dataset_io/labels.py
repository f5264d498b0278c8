"""The labels of a StyleGAN2-ADA dataset (dataset.json, Karras et al. 2020): one validator shared by the dataset reader
(dataset_io/reader.py) and dataset_tool.py, so that the tool never writes a dataset the reader refuses.

dataset.json is {"labels": [[relpath, label], ...]} or {"labels": null}. A valid label set covers every image exactly
once, names no other file, and is of one kind: integer class indices in [0, MAX_CLASSES) (the reader turns them into
one-hot vectors of length max + 1), or lists of finite numbers, all of one length >= 1.
"""

import json
import math

import numpy as np

from dataset_io.images import ImageFileError

# One-hot labels are max + 1 floats per image and per generated sample: 1e9 would try to allocate terabytes.
MAX_CLASSES = 100_000


def parse_label_file(data: bytes, json_name: str) -> list | None:
    """The "labels" value of dataset.json bytes: a list of entries, or None for {"labels": null}."""
    try:
        meta = json.loads(data)
    except ValueError as err:  # Also UnicodeDecodeError, and an integer of more than 4300 digits.
        reason = 'an integer of more than 4300 digits' if 'integer string conversion' in str(err) else str(err)[:200]
        raise ImageFileError(f'{json_name}: malformed JSON ({reason})') from None
    except RecursionError:
        raise ImageFileError(f'{json_name}: malformed JSON (nested too deeply)') from None
    if not isinstance(meta, dict) or 'labels' not in meta:
        raise ImageFileError(f'{json_name}: expected an object {{"labels": [[relpath, label], ...]}} or '
                             f'{{"labels": null}}, got {str(meta)[:80]}')
    entries = meta['labels']
    if entries is not None and not isinstance(entries, list):
        raise ImageFileError(f'{json_name}: "labels" must be a list of [relpath, label] pairs or null, '
                             f'got {type(entries).__name__}')
    return entries


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x) -> bool:
    return (_is_int(x) or isinstance(x, float)) and math.isfinite(x)


def _label_error(label, dim: int | None) -> str | None:
    """Why `label` is not a valid label of the kind the first label set (dim None = class index), or None."""
    if dim is None:
        if not _is_int(label):
            return 'expected an integer class index like the first image'
        if not 0 <= label < MAX_CLASSES:
            return f'expected a class index in [0, {MAX_CLASSES})'
        return None
    if not isinstance(label, list) or len(label) != dim:
        return f'expected a list of {dim} numbers like the first image'
    if not all(_is_number(v) for v in label):
        return 'expected finite numbers (no NaN, Infinity, strings or booleans)'
    return None


def validate_labels(entries: list, image_names: list, json_name: str) -> np.ndarray:
    """Labels of `image_names` (relative paths, forward slashes) from dataset.json entries: int64 [N] class indices
    or float32 [N, D]; raises ImageFileError naming `json_name` and the first offending entry."""
    by_name = {}
    for i, entry in enumerate(entries):
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)):
            raise ImageFileError(f'{json_name}: labels[{i}] = {str(entry)[:80]} is not a [relpath, label] pair')
        if entry[0] in by_name:
            raise ImageFileError(f'{json_name}: labels[{i}]: {entry[0]!r} is labelled twice')
        by_name[entry[0]] = entry[1]
    unknown = sorted(set(by_name) - set(image_names))
    if unknown:
        raise ImageFileError(f'{json_name}: the label entry {unknown[0]!r} names no image file of the dataset '
                             f'({len(unknown)} such entries)')
    missing = [name for name in image_names if name not in by_name]
    if missing:
        raise ImageFileError(f'{json_name}: image {missing[0]!r} has no label while {len(by_name)} others have '
                             f'one ({len(missing)} unlabelled); every image needs a label')
    labels = [by_name[name] for name in image_names]
    first = labels[0]
    if isinstance(first, list) and len(first) >= 1:
        dim = len(first)
    elif _is_int(first):
        dim = None
    else:
        raise ImageFileError(f'{json_name}: image {image_names[0]!r} has the label {str(first)[:80]}; expected an '
                             f'integer class index or a non-empty list of numbers')
    for name, label in zip(image_names, labels):
        problem = _label_error(label, dim)
        if problem is not None:
            raise ImageFileError(f'{json_name}: image {name!r} has the label {str(label)[:80]}; {problem}')
    if dim is None:
        return np.array(labels, dtype=np.int64)  # [N]
    with np.errstate(over='ignore'):
        array = np.array(labels, dtype=np.float32)  # [N, D]
    if not np.isfinite(array).all():  # A finite float64 beyond float32's range.
        row = int(np.flatnonzero(~np.isfinite(array).all(axis=1))[0])
        raise ImageFileError(f'{json_name}: image {image_names[row]!r} has the label {str(labels[row])[:80]}; '
                             f'its values overflow float32')
    return array
