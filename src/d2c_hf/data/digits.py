"""The embedded default data: scikit-learn's bundled handwritten digits as a ``DatasetDict``.

:func:`load_digits_dataset` builds a small, real, offline ``DatasetDict`` from scikit-learn's 8x8 digits.
"""

from __future__ import annotations

import numpy as np
from PIL import Image as PILImage

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def load_digits_dataset(image_size: int = 32, test_size: float = 0.2, seed: int = 0):
    """scikit-learn's bundled handwritten digits (1,797 images, 10 classes) as a ``DatasetDict``.

    The 8x8, 17-level images are rescaled to ``0..255`` and upsampled (bicubic) to
    ``image_size`` pixels, stored as PNG through ``datasets.Image()``; labels are a
    ``ClassLabel(names=["zero", ..., "nine"])``. The train/test split is stratified by class
    and fixed by ``seed``, so every run and every machine sees the same split.

    Returns:
        ``DatasetDict`` with ``train`` and ``test`` splits, columns ``image`` and ``label``.
    """
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if image_size < 8:
        raise ValueError(f"image_size must be >= 8 (the digits are 8x8), got {image_size}")
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must lie in (0, 1), got {test_size}")
    digits = load_digits()
    pixels = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    images = [
        PILImage.fromarray(p, mode="L").resize((image_size, image_size), PILImage.BICUBIC) for p in pixels
    ]
    labels = digits.target.astype(np.int64)
    index = np.arange(len(labels))
    train_idx, test_idx = train_test_split(index, test_size=test_size, stratify=labels, random_state=seed)
    features = Features({"image": Image(), "label": ClassLabel(names=list(DIGIT_NAMES))})

    def build(idx: np.ndarray) -> Dataset:
        idx = np.sort(idx)
        return Dataset.from_dict(
            {"image": [images[i] for i in idx], "label": labels[idx].tolist()}, features=features
        )

    return DatasetDict({"train": build(train_idx), "test": build(test_idx)})
