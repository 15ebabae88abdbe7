"""Select, the caption column of a captioned dataset: its checks and the caption each row is scored with.

A caption column holds, per image, a string or a list of strings (COCO has five captions per image). The
caption a row is conditioned on (and stored with, in the condensed set) is chosen by ``caption_choice``:

* ``"first"`` (default): the string itself, or the first of the list;
* ``"random"``: one of the list, drawn uniformly by a hash of ``(seed, key)``, the key being the row's noise
  key (the pixel hash or the ``key_column`` value, :mod:`.noise`): the same row gets the same caption whatever
  the batch, order, shard or process, like its noise.

Bad captions are refused naming the column and the row: a missing (``None``) or empty caption, an empty list, a
value that is not a string (or a list of strings). For a map-style dataset :func:`check_caption_column` checks
every row from Arrow before any model is loaded; a stream is checked as its rows are read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

CAPTION_CHOICES = ("first", "random")


def check_caption_choice(choice: Any) -> str:
    if choice not in CAPTION_CHOICES:
        raise ValueError(f"caption_choice must be one of {CAPTION_CHOICES}, got {choice!r}")
    return choice


def check_caption_feature(features: Any, column: str) -> None:
    """The column exists and holds strings or lists of strings (its ``datasets`` feature), else raise naming it."""
    from datasets import LargeList, List, Value

    available = list(features or {})
    if column not in available:
        raise ValueError(
            f"caption_column={column!r} is not a column of the dataset; available columns: {available}. "
            "Pass caption_column=... to name the column holding each image's caption(s)"
        )
    feature = features[column]
    inner = feature.feature if isinstance(feature, (List, LargeList)) else feature
    if not (isinstance(inner, Value) and inner.dtype in ("string", "large_string")):
        raise TypeError(
            f"caption column {column!r} has feature {feature!r}; it must hold a string, or a list of strings, "
            "per image"
        )


def check_caption_column(dataset: Any, column: str) -> None:
    """Check every caption of a map-style ``Dataset`` from Arrow (no Python object per row): the column's
    feature, then that no row is ``None``, an empty string, an empty list, or a list with a missing or empty
    caption, naming the first bad row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    check_caption_feature(dataset.features, column)
    if len(dataset) == 0:
        raise ValueError("the dataset is empty: nothing to condense")
    values = dataset.select_columns([column]).with_format("arrow")[:][column]
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    if pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
        bad = pc.or_(pc.is_null(values), pc.equal(pc.list_value_length(values), 0))
        flat = values.flatten()
        inner_bad = pc.or_(pc.is_null(flat), pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(flat)), 0))
        if pc.any(inner_bad).as_py():
            parents = pc.list_parent_indices(values)
            rows = pc.filter(parents, inner_bad)
            row = int(rows[0].as_py())
            raise ValueError(
                f"caption column {column!r} has a missing or empty caption in the list at row {row}; drop or "
                "fix that row"
            )
        what = "a missing (None) or empty list of captions"
    else:
        bad = pc.or_(pc.is_null(values), pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(values)), 0))
        what = "a missing (None) or empty caption"
    bad = pc.fill_null(bad, True)
    if pc.any(bad).as_py():
        row = int(pc.index(bad, True).as_py())
        raise ValueError(f"caption column {column!r} has {what} at row {row}; drop or fix that row")


def _caption_draw(key: int, seed: int) -> int:
    digest = hashlib.blake2b(digest_size=8)
    for part in (b"d2c-caption", int(seed).to_bytes(8, "little"), int(key).to_bytes(8, "little")):
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return int.from_bytes(digest.digest(), "little")


def choose_captions(
    values: Sequence[Any],
    keys: Sequence[int] | np.ndarray,
    *,
    choice: str = "first",
    seed: int = 0,
    column: str = "text",
    rows: Sequence[int] | None = None,
) -> list[str]:
    """The caption of each row (see the module docstring), checked.

    Args:
        values: the caption column's values of a batch: strings or lists of strings.
        keys: ``(B,)`` uint64 noise keys of the rows (used by ``choice="random"``).
        choice: ``"first"`` or ``"random"``.
        seed: the seed of the ``"random"`` draw (the scorer's seed).
        column, rows: named in errors.

    Raises:
        ValueError / TypeError naming the column and the row of a missing, empty or non-string caption.
    """
    keys = np.asarray(keys, dtype=np.uint64)
    out = []
    for i, value in enumerate(values):
        row = i if rows is None else rows[i]
        if isinstance(value, (list, tuple, np.ndarray)):
            options = list(value)
            if not options:
                raise ValueError(f"caption column {column!r} has an empty list of captions at row {row}")
            for option in options:
                _check_caption(option, column, row)
            pick = 0 if choice == "first" else _caption_draw(int(keys[i]), seed) % len(options)
            out.append(options[pick])
        else:
            _check_caption(value, column, row)
            out.append(value)
    return out


def _check_caption(value: Any, column: str, row: Any) -> None:
    if value is None:
        raise ValueError(f"caption column {column!r} has a missing caption (None) at row {row}")
    if not isinstance(value, str):
        raise TypeError(
            f"caption column {column!r} has a {type(value).__name__} ({value!r}) at row {row}; captions must be "
            "strings (or lists of strings)"
        )
    if not value.strip():
        raise ValueError(f"caption column {column!r} has an empty caption at row {row}")


__all__ = [
    "CAPTION_CHOICES",
    "check_caption_choice",
    "check_caption_column",
    "check_caption_feature",
    "choose_captions",
]
