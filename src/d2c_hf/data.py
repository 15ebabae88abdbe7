"""Input data: column checks, image decoding and preprocessing, and the embedded digits dataset.

Everything that turns a user's ``datasets`` object into model-ready pixels lives here, so the
scorer, the attachers and the training code all see the same crop of the same image.

* :func:`prepare_dataset` checks the image and label columns *before* any expensive work
  and returns the class names (string labels are encoded, with a warning).
* :func:`decode_image` / :func:`to_rgb` / :func:`center_crop` implement the ADM
  ("center-crop-dhariwal") preprocessing used by DiT, SiT and REPA.
* :func:`load_digits_dataset` builds a small, real, offline ``DatasetDict`` from
  scikit-learn's bundled 8x8 digits: the project's embedded default.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from PIL import Image as PILImage

logger = logging.getLogger(__name__)

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


# --------------------------------------------------------------------------------------
# column checks
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassInfo:
    """What the label column says about the classes.

    Attributes:
        num_classes: number of classes (``len(names)``).
        names: one display name per class id (``ClassLabel`` names, or ``"0"``, ``"1"``, ...
            for plain integer labels).
    """

    num_classes: int
    names: tuple[str, ...]


def _features_of(dataset: Any):
    features = getattr(dataset, "features", None)
    if features is None:
        raise TypeError(
            f"expected a datasets.Dataset or IterableDataset with known features, got {type(dataset).__name__}; "
            "pass `features=` when building an IterableDataset"
        )
    return features


def prepare_dataset(
    dataset: Any,
    image_column: str = "image",
    label_column: str = "label",
    num_classes: int | None = None,
) -> tuple[Any, ClassInfo]:
    """Check the image and label columns and return the dataset with integer labels.

    Cheap (Arrow metadata and column statistics only; images are not decoded), so every
    entry point calls it before loading a model.

    Args:
        dataset: a ``datasets.Dataset`` (fully checked) or ``IterableDataset`` (schema only:
            rows are checked as they stream).
        image_column: column holding images (``datasets.Image`` feature).
        label_column: column holding class labels: ``ClassLabel``, an integer ``Value``, or a
            string ``Value`` (encoded to a ``ClassLabel`` with a warning).
        num_classes: classes the downstream model knows (e.g. a scorer's ``num_classes``);
            labels must lie in ``[0, num_classes)``.

    Returns:
        ``(dataset, ClassInfo)``; the dataset is unchanged unless string labels were encoded.

    Raises:
        ValueError / TypeError naming the column (and the first offending row) for: a missing
        column, a non-image column, a label column of another type, an empty dataset, ``None``
        images or labels, negative labels (e.g. ImageNet's unlabeled test split, ``-1``),
        labels ``>= num_classes``, or more classes than ``num_classes``.
    """
    from datasets import ClassLabel, Dataset, Image, Value

    features = _features_of(dataset)
    available = list(features)
    for role, column in (("image_column", image_column), ("label_column", label_column)):
        if column not in features:
            raise ValueError(
                f"{role}={column!r} is not a column of the dataset; available columns: {available}. "
                f"Pass {role}=... to name the right one."
            )
    if not isinstance(features[image_column], Image):
        raise TypeError(
            f"column {image_column!r} has feature {features[image_column]!r}, expected datasets.Image(); "
            f"cast it with dataset.cast_column({image_column!r}, datasets.Image())"
        )

    label_feature = features[label_column]
    if isinstance(label_feature, Value) and label_feature.dtype in ("string", "large_string"):
        if not isinstance(dataset, Dataset):
            raise TypeError(
                f"column {label_column!r} holds strings; encode it before streaming, e.g. "
                f"cast_column({label_column!r}, ClassLabel(names=[...]))"
            )
        logger.warning(
            "label column %r holds strings: encoding it to a ClassLabel (sorted names). "
            "Cast it yourself to choose the class order.",
            label_column,
        )
        _check_no_nulls(dataset, label_column, "label")
        dataset = dataset.class_encode_column(label_column)
        label_feature = dataset.features[label_column]

    if isinstance(label_feature, ClassLabel):
        names = tuple(str(n) for n in label_feature.names)
    elif isinstance(label_feature, Value) and (
        label_feature.dtype.startswith("int") or label_feature.dtype.startswith("uint")
    ):
        names = None
    else:
        raise TypeError(
            f"column {label_column!r} has feature {label_feature!r}; expected ClassLabel, an integer Value "
            "or a string Value"
        )

    if isinstance(dataset, Dataset):
        if len(dataset) == 0:
            raise ValueError("the dataset is empty: nothing to condense")
        _check_no_nulls(dataset, image_column, "image")
        _check_no_nulls(dataset, label_column, "label")
        labels = _column_array(dataset, label_column)
        low, high = pc.min_max(labels).values()
        low, high = low.as_py(), high.as_py()
        if low < 0:
            row = int(pc.index(labels, low).as_py())
            raise ValueError(
                f"column {label_column!r} has a negative label {low} at row {row} (an unlabeled split such as "
                "ImageNet's test split uses -1); drop those rows first, e.g. dataset.filter(lambda y: y >= 0, "
                f"input_columns={label_column!r})"
            )
        if names is None:
            names = tuple(str(i) for i in range(high + 1))
        elif high >= len(names):
            row = int(pc.index(labels, high).as_py())
            raise ValueError(
                f"column {label_column!r} has label {high} at row {row} but its ClassLabel has only "
                f"{len(names)} names"
            )
    elif names is None:
        if num_classes is None:
            raise ValueError(
                f"cannot infer the number of classes of a streaming dataset from the integer column "
                f"{label_column!r}: cast it to a ClassLabel or pass num_classes"
            )
        names = tuple(str(i) for i in range(num_classes))

    if num_classes is not None and len(names) > num_classes:
        raise ValueError(
            f"the dataset has {len(names)} classes (column {label_column!r}) but the model knows only "
            f"{num_classes}; use a model trained on these classes (e.g. train_scorer)"
        )
    return dataset, ClassInfo(num_classes=len(names), names=names)


def _view_order(dataset: Any, values: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """Reorder an array computed on the underlying table into the dataset's row order
    (``select``/``shuffle``/``filter`` leave an indices mapping instead of copying data)."""
    if dataset._indices is None:
        return values
    return pc.take(values, dataset._indices.column(0))


def _column_array(dataset: Any, column: str) -> pa.ChunkedArray:
    return _view_order(dataset, dataset.data.column(column))


def _check_no_nulls(dataset: Any, column: str, what: str) -> None:
    data = dataset.data.column(column)
    if not data.null_count:  # fast path: no nulls anywhere in the underlying table
        return
    is_null = _view_order(dataset, pc.is_null(data))
    if pc.any(is_null).as_py():
        row = int(pc.index(is_null, True).as_py())
        raise ValueError(f"column {column!r} has a missing {what} (None) at row {row}; drop or fix that row")


def check_labels(labels: Sequence[int] | np.ndarray, num_classes: int, column: str, rows=None) -> np.ndarray:
    """Validate one batch of labels (for streaming input); returns them as int64."""
    arr = np.asarray(labels)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"column {column!r} must hold integer labels, got {arr.dtype}")
    bad = np.flatnonzero((arr < 0) | (arr >= num_classes))
    if bad.size:
        row = bad[0] if rows is None else rows[bad[0]]
        raise ValueError(
            f"column {column!r} has label {arr[bad[0]]} at row {row}, outside [0, {num_classes})"
        )
    return arr.astype(np.int64)


# --------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------


def decode_image(value: Any, row: int | None = None) -> PILImage.Image:
    """Decode one image cell: a PIL image, a ``{"bytes", "path"}`` dict (``Image(decode=False)``),
    raw bytes, a path, or an ``(H, W[, C])`` uint8 array. Errors name the row."""
    where = f" at row {row}" if row is not None else ""
    if value is None:
        raise ValueError(f"missing image (None){where}")
    if isinstance(value, PILImage.Image):
        return value
    try:
        if isinstance(value, dict):
            if value.get("bytes") is not None:
                value = value["bytes"]
            elif value.get("path"):
                value = value["path"]
            else:
                raise ValueError("image dict has neither bytes nor path")
        if isinstance(value, (bytes, bytearray, memoryview)):
            image = PILImage.open(io.BytesIO(value))
        elif isinstance(value, str):
            image = PILImage.open(value)
        elif isinstance(value, np.ndarray):
            return PILImage.fromarray(value)
        else:
            raise TypeError(f"unsupported image value of type {type(value).__name__}")
        image.load()
    except Exception as err:  # PIL raises several types; re-raise with the row
        raise ValueError(f"could not decode the image{where}: {err}") from err
    return image


def to_rgb(image: PILImage.Image) -> PILImage.Image:
    """Convert any PIL mode to 8-bit RGB.

    Transparent images (RGBA, LA, P with transparency) are composited on white; 16/32-bit
    integer and float images (``I;16``, ``I``, ``F``) are rescaled from their value range
    instead of being clipped; CMYK/YCbCr/L/1 use PIL's own conversion.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = PILImage.new("RGBA", rgba.size, (255, 255, 255, 255))
        return PILImage.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        arr = np.asarray(image, dtype=np.float64)
        if mode.startswith("I;16"):
            lo, hi = 0.0, 65535.0
        else:
            lo, hi = float(arr.min()), float(arr.max())
        scaled = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo)
        gray = np.clip(np.rint(scaled * 255.0), 0, 255).astype(np.uint8)
        return PILImage.fromarray(gray, mode="L").convert("RGB")
    return image.convert("RGB")


def center_crop(image: PILImage.Image, resolution: int) -> np.ndarray:
    """ADM centre crop: halve with a box filter while the short side is >= 2x the target,
    resize (bicubic) so the short side equals ``resolution``, then crop the centre square.

    Returns an ``(resolution, resolution, 3)`` uint8 array. Smaller images are upsampled
    (bicubic) by the same rule; callers warn about it.
    """
    image = to_rgb(image)
    while min(image.size) >= 2 * resolution:
        image = image.resize(tuple(s // 2 for s in image.size), resample=PILImage.BOX)
    scale = resolution / min(image.size)
    image = image.resize(tuple(round(s * scale) for s in image.size), resample=PILImage.BICUBIC)
    arr = np.asarray(image)
    top = (arr.shape[0] - resolution) // 2
    left = (arr.shape[1] - resolution) // 2
    return arr[top : top + resolution, left : left + resolution]


def preprocess_images(
    values: Iterable[Any], resolution: int, rows: Sequence[int] | None = None
) -> tuple[np.ndarray, int]:
    """Decode and centre-crop a batch of image cells.

    Returns ``(pixels, n_upsampled)``: ``pixels`` is ``(B, resolution, resolution, 3)`` uint8,
    ``n_upsampled`` counts images whose short side was below ``resolution``.
    """
    out, upsampled = [], 0
    for i, value in enumerate(values):
        image = decode_image(value, None if rows is None else rows[i])
        if min(image.size) < resolution:
            upsampled += 1
        out.append(center_crop(image, resolution))
    if not out:
        return np.zeros((0, resolution, resolution, 3), np.uint8), 0
    return np.stack(out), upsampled


def dataset_pixels(
    dataset: Any, image_column: str, resolution: int, *, batch_size: int = 256, what: str = "dataset_pixels"
) -> np.ndarray:
    """Decode and centre-crop every image of a (small) ``datasets.Dataset``: ``(N, R, R, 3)`` uint8.

    For trainers that hold a whole dataset in memory (:func:`d2c_hf.train_scorer`,
    :func:`d2c_hf.train_vision_encoder`). Errors name the row; images smaller than ``resolution``
    are upsampled (bicubic) with one warning that starts with ``what``.
    """
    from datasets import Image

    feature = dataset.features[image_column]
    raw = dataset.cast_column(image_column, Image(decode=False)) if feature.decode else dataset
    raw = raw.select_columns([image_column]).with_format(None)
    out, upsampled = [], 0
    for start in range(0, len(raw), batch_size):
        rows = list(range(start, min(start + batch_size, len(raw))))
        pixels, n = preprocess_images(raw[start : start + batch_size][image_column], resolution, rows=rows)
        out.append(pixels)
        upsampled += n
    if upsampled:
        logger.warning(
            "%s: %d of %d images are smaller than %dpx and are upsampled (bicubic)",
            what,
            upsampled,
            len(raw),
            resolution,
        )
    if not out:
        return np.zeros((0, resolution, resolution, 3), np.uint8)
    return np.concatenate(out)


def first_image_side(dataset: Any, image_column: str) -> int:
    """The short side, in pixels, of the first image of ``dataset`` (a default training resolution)."""
    from datasets import Image

    feature = dataset.features[image_column]
    raw = dataset.cast_column(image_column, Image(decode=False)) if feature.decode else dataset
    return min(decode_image(raw[0][image_column], 0).size)


def pixels_to_tensor(pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``(B, H, W, 3)`` uint8 -> ``(B, 3, H, W)`` float32 in ``[-1, 1]`` (the VAE/model input range)."""
    x = torch.as_tensor(pixels)
    return x.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def tensor_to_pixels(x: torch.Tensor) -> np.ndarray:
    """``(B, 3, H, W)`` float in ``[-1, 1]`` -> ``(B, H, W, 3)`` uint8 (inverse of :func:`pixels_to_tensor`)."""
    x = ((x.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


# --------------------------------------------------------------------------------------
# the embedded default: scikit-learn's digits
# --------------------------------------------------------------------------------------


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
