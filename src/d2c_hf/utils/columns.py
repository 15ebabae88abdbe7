"""Whole columns of a ``datasets.Dataset`` read through Arrow: no per-row Python objects and no float16
-> float32 upcast (hf-ecosystem.md §5b; ``benchmarks/bench_io.py`` measures the difference)."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch


def arrow_column(dataset, column: str):
    """The column as a ``pyarrow.ChunkedArray`` in the dataset's row order (zero-copy unless the
    dataset has an indices mapping from ``select``/``shuffle``)."""
    return dataset.with_format("arrow", columns=[column])[:].column(column)


def column_numpy(dataset, column: str) -> np.ndarray:
    """A scalar column as a numpy array, read through Arrow (no Python objects)."""
    return arrow_column(dataset, column).to_numpy()


def column_array(dataset, column: str) -> np.ndarray:
    """A scalar or fixed-shape column as one numpy array ``(N, *shape)`` in its stored dtype, read through
    Arrow (a columnar read: no per-row Python objects, no float16 -> float32 upcast)."""
    shape = fixed_shape(dataset.features[column])
    if shape is None:
        return column_numpy(dataset, column)
    dtype = np.dtype(leaf_dtype(dataset.features[column]))
    return read_fixed_shape(dataset, column, shape, dtype, torch.device("cpu")).numpy()


def formatted_column(dataset, column: str) -> np.ndarray:
    """``np.asarray(dataset.with_format("numpy")[:][column])`` of a numeric column, read through Arrow.

    The same array as ``datasets``' numpy formatter gives (integers as int64, floats as float32, other
    dtypes as stored; ``(N,)`` for scalars, ``(N, *shape)`` for fixed-shape features and for lists of one
    length per row), without its per-row Python objects. A column it cannot read that way (missing values,
    ragged or nested lists, strings) goes through the formatter itself, so every result stays as before.
    """
    from datasets import List, Sequence

    feature = dataset.features[column]
    column_values = arrow_column(dataset, column)
    values = None
    if len(column_values) and not column_values.null_count:  # (an empty column: the formatter's (0,) float32)
        if fixed_shape(feature) is not None or _numeric_value(feature):
            values = column_array(dataset, column)
        elif isinstance(feature, (List, Sequence)) and _numeric_value(feature.feature):
            values = _uniform_list(column_values)
    if values is None or values.dtype == object:
        return np.asarray(dataset.with_format("numpy", columns=[column])[:][column])
    if np.issubdtype(values.dtype, np.integer):
        return values.astype(np.int64, copy=False)
    if np.issubdtype(values.dtype, np.floating):
        return values.astype(np.float32, copy=False)
    return values


def _numeric_value(feature: Any) -> bool:
    from datasets import ClassLabel, Value

    if isinstance(feature, ClassLabel):
        return True
    return isinstance(feature, Value) and (
        feature.dtype.startswith(("int", "uint", "float")) or feature.dtype == "bool"
    )


def _uniform_list(chunked) -> np.ndarray | None:
    """A list column whose rows all hold the same number of values -> ``(N, d)``; else None."""
    import pyarrow.compute as pc

    array = chunked.combine_chunks()
    lengths = pc.list_value_length(array).to_numpy(zero_copy_only=False)
    if lengths.size and (lengths != lengths[0]).any():
        return None
    values = array.flatten()  # honours slicing offsets
    if values.null_count:
        return None
    width = int(lengths[0]) if lengths.size else 0
    return values.to_numpy(zero_copy_only=False).reshape(len(array), width)


def fixed_shape(feature: Any) -> tuple[int, ...] | None:
    """The per-row shape of a fixed-shape feature (``Array2D/3D``, fixed-length ``List``), else None."""
    from datasets import Array2D, Array3D, Array4D, Array5D, List, Sequence, Value

    if isinstance(feature, (Array2D, Array3D, Array4D, Array5D)):
        return tuple(feature.shape)
    if isinstance(feature, (List, Sequence)) and getattr(feature, "length", -1) not in (-1, None):
        inner = feature.feature
        if isinstance(inner, Value):
            return (feature.length,)
        sub = fixed_shape(inner)
        return None if sub is None else (feature.length, *sub)
    return None


def read_fixed_shape(
    dataset, column: str, shape: tuple[int, ...], dtype: np.dtype, device: torch.device
) -> torch.Tensor:
    """Whole fixed-shape column -> one ``(N, *shape)`` tensor on ``device``, with a single copy.

    Each Arrow chunk's nested lists are flattened to their contiguous value buffer (zero-copy
    over the memory-mapped file) and copied once into a tensor preallocated on ``device`` (so
    a CUDA target gets no host-side staging copy): no per-row Python objects and no
    float16 -> float32 upcast (hf-ecosystem.md §5b).
    """
    import pyarrow as pa

    chunks = arrow_column(dataset, column).chunks
    n = sum(len(chunk) for chunk in chunks)
    out = torch.empty((n, *shape), dtype=torch.from_numpy(np.empty(0, dtype)).dtype, device=device)
    per_row = math.prod(shape)
    start = 0
    for chunk in chunks:
        if chunk.null_count:
            raise ValueError(f"column {column!r} has missing values; it cannot be read as one array")
        values = chunk.storage if isinstance(chunk, pa.ExtensionArray) else chunk
        for _ in shape:
            values = values.flatten()
        flat = values.to_numpy(zero_copy_only=False)
        if flat.size != len(chunk) * per_row:
            raise ValueError(
                f"column {column!r}: {flat.size} values for {len(chunk)} rows of shape {shape}; the column is ragged"
            )
        with warnings.catch_warnings():
            # `flat` is a read-only view of the memory map; it is only read from, never written
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            source = torch.from_numpy(flat)
        out[start : start + len(chunk)].copy_(source.view(len(chunk), *shape))
        start += len(chunk)
    return out


def leaf_dtype(feature: Any) -> str:
    """The scalar dtype inside a (possibly nested) feature, e.g. ``"float16"`` for ``Array2D(..., "float16")``."""
    dtype = getattr(feature, "dtype", None)
    if isinstance(dtype, str) and not hasattr(feature, "feature"):
        return dtype
    return leaf_dtype(feature.feature)


def feature_summary(feature: Any) -> str:
    """A short readable form of a feature: ``Array3D((8, 32, 32), float16)``, ``ClassLabel(10 names)``, ``int64``."""
    name = type(feature).__name__
    if hasattr(feature, "shape") and hasattr(feature, "dtype"):
        return f"{name}({tuple(feature.shape)}, {feature.dtype})"
    if name == "ClassLabel":
        return f"ClassLabel({feature.num_classes} names)"
    if name == "Value":
        return feature.dtype
    if name == "List":
        return f"List({feature_summary(feature.feature)}, length={feature.length})"
    return name
