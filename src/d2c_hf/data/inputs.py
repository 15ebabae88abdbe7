"""An input dataset's image and label columns, checked before any expensive work.

:func:`prepare_dataset` checks the image and label columns and returns the class names (string labels
are encoded, with a warning); :func:`check_labels` checks label ids against the class count.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

logger = logging.getLogger(__name__)

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
