"""Shared pytest configuration: CUDA-marked tests skip on machines without a GPU."""

import pytest
import torch

# Tests use tiny tensors: one thread avoids OpenMP spin contention that slows the suite many-fold on 2 cores.
torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
