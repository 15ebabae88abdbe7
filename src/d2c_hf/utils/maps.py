"""The ``datasets`` map that adds columns, shared by the score and the Attach transforms.

A batched map writes every column of its output to the cache, so a map that returns only new columns
would still write a second copy of the input (images included: ~140 GB for ImageNet). Here the map writes
only the columns it adds, and :func:`join_columns` joins them to the input without copying it (an Arrow
concatenation along the columns). A dataset with an indices mapping (after ``select`` / ``shuffle``)
cannot be joined without flattening it, which copies every column anyway: its map keeps the input
columns itself, as before.
"""

from __future__ import annotations

from typing import Any


def map_new_columns(raw: Any, function: Any, new_features: Any, **map_kwargs: Any) -> tuple[Any, bool]:
    """``raw.map(function, batched=True, with_indices=True)`` for a ``function`` that returns only new
    columns: ``(out, joined)``. ``joined``: ``out`` holds the new columns alone (pass it to
    :func:`join_columns`); otherwise ``out`` is the whole table."""
    from datasets import Features

    joined = raw._indices is None  # no public accessor; datasets' own concatenation reads it too
    features = Features(new_features) if joined else Features({**raw.features, **new_features})
    out = raw.map(
        function,
        batched=True,
        with_indices=True,
        features=features,
        remove_columns=list(raw.column_names) if joined else None,
        **map_kwargs,
    )
    return out, joined


def join_columns(raw: Any, added: Any, joined: bool) -> Any:
    """The input with the added columns after its own (``added`` unchanged when it is the whole table).
    The new table comes first in the concatenation, so its cache file is the dataset's first."""
    from datasets import concatenate_datasets

    if not joined:
        return added
    out = concatenate_datasets([added, raw], axis=1)
    return out.select_columns([*raw.column_names, *added.column_names])


__all__ = ["join_columns", "map_new_columns"]
