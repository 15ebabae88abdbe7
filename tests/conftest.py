"""Shared fixtures: an offline local "Hub" of tiny models and the digits dataset."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))

sys.path.insert(0, str(Path(__file__).parent))

from local_hub import LocalHub, build_local_hub  # noqa: E402


@pytest.fixture(scope="session")
def local_hub(tmp_path_factory) -> LocalHub:
    """Tiny random models saved with ``save_pretrained``; load them with ``from_pretrained(path)``."""
    return build_local_hub(tmp_path_factory.mktemp("local_hub"))


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's digits as a DatasetDict (train/test), 32x32 PNG images, ClassLabel names."""
    from d2c_hf.data.digits import load_digits_dataset

    return load_digits_dataset(image_size=32)


@pytest.fixture(scope="session")
def digits_small(digits):
    """200 training digits (all 10 classes), for tests that run models."""
    return digits["train"].select(range(200))
