"""The captioned digits: the offline test bed of text-to-image condensation.

scikit-learn's handwritten digits (:func:`~d2c_hf.data.digits.load_digits_dataset`), each with a caption computed
from what can be measured on the image, so that a caption carries information a model can learn and a metric
can check:

* the digit's name (``"seven"``);
* its **stroke weight**, from the ink mass ``ink = mean(pixels) / 255`` of the stored image: ``"thin"``,
  ``"regular"`` or ``"thick"`` by the tertiles of ``ink`` among the digits of the same class (a one has less ink
  than an eight; the words say how this one compares with its kind);
* its **slant**, from the image moments: ``slant = -mu11 / mu02`` (the shear of the ink about its centroid, in
  image coordinates scaled to ``[0, 1]``, positive when the top leans right), ``"left-slanted"``,
  ``"upright"`` or ``"right-slanted"`` by the tertiles of ``slant`` within the class.

A caption reads ``"a thick, right-slanted handwritten seven"``. The tertiles are computed on all 1,797 digits at
the requested ``image_size`` (:func:`caption_thresholds`), so the words of a generated sample can be checked with
:func:`measure_digits` and :func:`describe_digit` against the prompt it was made from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .digits import DIGIT_NAMES

WEIGHT_WORDS = ("thin", "regular", "thick")
SLANT_WORDS = ("left-slanted", "upright", "right-slanted")
CAPTION_TEMPLATE = "a {weight}, {slant} handwritten {name}"


@dataclass(frozen=True)
class CaptionThresholds:
    """The per-class tertiles that turn measurements into words.

    Attributes:
        ink: ``(10, 2)`` float64, the 1/3 and 2/3 quantiles of ``ink`` per digit class.
        slant: ``(10, 2)`` float64, the same for ``slant``.
    """

    ink: np.ndarray
    slant: np.ndarray


def measure_digits(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stroke weight and slant of grey digit images.

    Args:
        images: ``(N, H, W)`` grey images, uint8 in ``0..255`` or floats in ``[0, 1]`` (white ink on black,
            as the digits are stored); an RGB ``(N, H, W, 3)`` array is averaged over its channels.

    Returns:
        ``(ink (N,), slant (N,))`` float64: ``ink`` the mean intensity in ``[0, 1]``; ``slant = -mu11 / mu02``
        with the central moments of the intensity over pixel centres ``((j + 0.5) / W, (i + 0.5) / H)``
        (positive = the top leans right). An image without ink has slant 0.
    """
    a = np.asarray(images)
    if a.ndim == 4:
        a = a.mean(axis=-1)
    if a.ndim != 3:
        raise ValueError(f"images must be (N, H, W) or (N, H, W, 3), got shape {a.shape}")
    a = a.astype(np.float64) / (255.0 if np.issubdtype(np.asarray(images).dtype, np.integer) else 1.0)
    _, h, w = a.shape
    ys, xs = np.mgrid[0:h, 0:w]
    xs, ys = (xs + 0.5) / w, (ys + 0.5) / h
    mass = a.sum(axis=(1, 2))
    safe = np.where(mass > 0, mass, 1.0)
    cx = (a * xs).sum(axis=(1, 2)) / safe
    cy = (a * ys).sum(axis=(1, 2)) / safe
    dx, dy = xs[None] - cx[:, None, None], ys[None] - cy[:, None, None]
    mu11 = (a * dx * dy).sum(axis=(1, 2)) / safe
    mu02 = (a * dy * dy).sum(axis=(1, 2)) / safe
    slant = np.where((mass > 0) & (mu02 > 0), -mu11 / np.where(mu02 > 0, mu02, 1.0), 0.0)
    return a.mean(axis=(1, 2)), slant


def _digit_images(image_size: int) -> tuple[list, np.ndarray]:
    """The 1,797 digits as PIL images at ``image_size`` (bicubic, as ``load_digits_dataset`` stores them)."""
    from PIL import Image as PILImage
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    images = [
        PILImage.fromarray(p, mode="L").resize((image_size, image_size), PILImage.BICUBIC) for p in pixels
    ]
    return images, digits.target.astype(np.int64)


def caption_thresholds(image_size: int = 32) -> CaptionThresholds:
    """The per-class tertiles of ``ink`` and ``slant`` over all 1,797 digits stored at ``image_size``."""
    images, labels = _digit_images(image_size)
    ink, slant = measure_digits(np.stack([np.asarray(im) for im in images]))
    q = (1 / 3, 2 / 3)
    return CaptionThresholds(
        ink=np.stack([np.quantile(ink[labels == c], q) for c in range(len(DIGIT_NAMES))]),
        slant=np.stack([np.quantile(slant[labels == c], q) for c in range(len(DIGIT_NAMES))]),
    )


def attribute_words(
    labels: Sequence[int] | np.ndarray, ink: np.ndarray, slant: np.ndarray, thresholds: CaptionThresholds
) -> tuple[list[str], list[str]]:
    """``(weight words, slant words)`` of each digit: its tertile of ``ink`` and ``slant`` within its class."""
    labels = np.asarray(labels, np.int64)
    weight = np.sum(np.asarray(ink)[:, None] > thresholds.ink[labels], axis=1)
    lean = np.sum(np.asarray(slant)[:, None] > thresholds.slant[labels], axis=1)
    return [WEIGHT_WORDS[i] for i in weight], [SLANT_WORDS[i] for i in lean]


def describe_digit(
    labels: Sequence[int] | np.ndarray, ink: np.ndarray, slant: np.ndarray, thresholds: CaptionThresholds
) -> list[str]:
    """The caption of each digit, e.g. ``"a thick, right-slanted handwritten seven"``."""
    weights, slants = attribute_words(labels, ink, slant, thresholds)
    return [
        CAPTION_TEMPLATE.format(weight=w, slant=s, name=DIGIT_NAMES[int(y)])
        for w, s, y in zip(weights, slants, np.asarray(labels))
    ]


def load_captioned_digits(image_size: int = 32, test_size: float = 0.2, seed: int = 0):
    """The digits with captions computed from each image's measurable content (see the module docstring).

    The same images, labels and split as :func:`~d2c_hf.data.digits.load_digits_dataset` (stratified by class,
    fixed by ``seed``).

    Returns:
        ``DatasetDict`` with ``train`` and ``test`` splits and columns ``image`` (``Image``), ``text`` (the
        caption, a string), ``label`` (``ClassLabel`` of the digit, for evaluation only), ``ink`` and
        ``slant`` (``float32``, the measurements the caption's words come from).
    """
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value
    from sklearn.model_selection import train_test_split

    if not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size must be an integer >= 8 (the digits are 8x8), got {image_size!r}")
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must lie in (0, 1), got {test_size}")
    images, labels = _digit_images(image_size)
    ink, slant = measure_digits(np.stack([np.asarray(im) for im in images]))
    thresholds = caption_thresholds(image_size)
    captions = describe_digit(labels, ink, slant, thresholds)
    index = np.arange(len(labels))
    train_idx, test_idx = train_test_split(index, test_size=test_size, stratify=labels, random_state=seed)
    features = Features(
        {
            "image": Image(),
            "text": Value("string"),
            "label": ClassLabel(names=list(DIGIT_NAMES)),
            "ink": Value("float32"),
            "slant": Value("float32"),
        }
    )

    def build(idx: np.ndarray) -> Dataset:
        idx = np.sort(idx)
        return Dataset.from_dict(
            {
                "image": [images[i] for i in idx],
                "text": [captions[i] for i in idx],
                "label": labels[idx].tolist(),
                "ink": ink[idx].astype(np.float32),
                "slant": slant[idx].astype(np.float32),
            },
            features=features,
        )

    return DatasetDict({"train": build(train_idx), "test": build(test_idx)})


__all__ = [
    "CAPTION_TEMPLATE",
    "SLANT_WORDS",
    "WEIGHT_WORDS",
    "CaptionThresholds",
    "attribute_words",
    "caption_thresholds",
    "describe_digit",
    "load_captioned_digits",
    "measure_digits",
]
