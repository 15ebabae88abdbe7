"""``datasets`` tables written batch by batch, with bounded memory.

``Dataset.from_dict`` holds the whole table as Python objects and Arrow buffers at once (about 2.6 KB per
score row, 5.8x the payload of a condensed set, measured in issue 23); :func:`write_batches` streams
``{column: array}`` batches through ``datasets``' own ``ArrowWriter`` into one Arrow file and returns the
memory-mapped ``Dataset`` over it, so the peak is one batch.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

#: the attribute by which a dataset returned by ``write_batches(..., owned=True)`` names the file it alone reads
OWNED_FILE = "_d2c_owned_file"
#: the one data file of a ``save_to_disk`` folder
SINGLE_DATA_FILE = "data-00000-of-00001.arrow"


def write_batches(
    path: str | os.PathLike, features: Any, batches: Iterable[Mapping[str, Any]], *, owned: bool = False
):
    """Write ``batches`` (each ``{column: values}`` with the same columns, numpy arrays or lists) to the Arrow
    file ``path`` with ``features`` and return ``Dataset.from_file(path)`` (memory-mapped).

    The caller owns ``path``: keep it while the returned dataset is used (``save_to_disk`` copies it). With
    ``owned=True`` the file is a scratch file nothing else reads: :func:`save_owned` may move it into a
    ``save_to_disk`` folder instead of copying it."""
    from datasets import Dataset, Features
    from datasets.arrow_writer import ArrowWriter

    from .files import renamed_os_error

    features = Features(features)
    path = Path(path)
    try:
        with ArrowWriter(path=str(path), features=features) as writer:
            wrote = False
            for batch in batches:
                if len(next(iter(batch.values()))):
                    writer.write_batch(dict(batch))
                    wrote = True
            if not wrote:  # an empty table still has its schema
                writer.write_batch({name: [] for name in features})
            writer.finalize()
    except OSError as err:  # a full disk: no partial file, and the error names it
        path.unlink(missing_ok=True)
        raise renamed_os_error(err, f"could not write {path}") from err
    dataset = Dataset.from_file(str(path))
    if owned:
        setattr(dataset, OWNED_FILE, str(path))
    return dataset


def owned_file(dataset: Any) -> Path | None:
    """The scratch file of a dataset from ``write_batches(..., owned=True)`` if the dataset is still exactly that
    file (no indices mapping, no other file, the file still in place), else ``None``."""
    path = getattr(dataset, OWNED_FILE, None)
    if path is None or getattr(dataset, "_indices", None) is not None or not os.path.isfile(path):
        return None
    if [entry.get("filename") for entry in dataset.cache_files] != [path]:
        return None
    return Path(path)


def save_owned(dataset: Any, folder: str | os.PathLike) -> None:
    """``dataset.save_to_disk(folder)`` for a dataset whose one Arrow file is an owned scratch file
    (:func:`owned_file`): the file is **moved** into ``folder`` as its single data file instead of being copied
    (a copy writes the whole table again, and reads it through a memory map whose pages count in the process's
    RSS: 4.4 GB for 10,240 ImageNet-sized rows). ``datasets`` writes the folder's ``state.json`` and
    ``dataset_info.json`` itself, for the same features with no rows; only the data file list and the fingerprint
    are set here (``datasets`` has no call that adopts an existing Arrow file). The moved file is what
    ``ArrowWriter`` wrote, so ``load_from_disk`` reads the same table."""
    import json

    source = owned_file(dataset)
    if source is None:
        raise ValueError("save_owned needs a dataset from write_batches(..., owned=True), unchanged")
    folder = Path(folder)
    dataset.select([]).save_to_disk(str(folder), num_shards=1)  # the metadata, in datasets' own format
    for empty in folder.glob("*.arrow"):
        empty.unlink()
    os.replace(source, folder / SINGLE_DATA_FILE)
    state_path = folder / "state.json"
    state = json.loads(state_path.read_text())
    state["_data_files"] = [{"filename": SINGLE_DATA_FILE}]
    state["_fingerprint"] = dataset._fingerprint
    state_path.write_text(json.dumps(state, indent=2, sort_keys=True))


def dataset_from_arrays(columns: Mapping[str, Any], features: Any):
    """``Dataset.from_dict(columns, features=features)`` (in memory) for one-dimensional numpy columns,
    converted column by column through Arrow: ``from_dict`` encodes every value as a Python object first
    (3.3 s and ~220 bytes per row for 1.28M rows of three scalar columns, against 0.07 s here). The same
    table: each column is cast to its feature by ``datasets`` itself."""
    import numpy as np
    import pyarrow as pa
    from datasets import Dataset, Features

    arrays = {}
    for name, values in columns.items():
        values = np.asarray(values)
        if values.ndim != 1:
            raise ValueError(
                f"column {name!r} has shape {values.shape}; dataset_from_arrays takes 1-D columns"
            )
        arrays[name] = pa.array(values)
    return Dataset.from_dict(arrays, features=Features(features))


def read_saved_columns(folder: str | os.PathLike, names: Iterable[str]) -> dict[str, Any]:
    """The columns ``names`` (those it has) of a ``Dataset.save_to_disk`` folder as numpy arrays, read with
    pyarrow alone: the same arrays as ``column_array(load_from_disk(folder), name)`` for scalar and
    fixed-length list columns (``(N, *shape)`` in the stored dtype, no per-row objects).

    ``datasets`` is not imported, on purpose: ``d2c select`` reads three columns of the merged scores (0.1 s
    for 1.28M rows) and importing ``datasets`` cost it 2-3 s more on this machine, most of the command. The
    folder is ``save_to_disk``'s layout: Arrow IPC stream files listed in ``state.json``. A folder with
    anything else (an indices mapping) is read through ``datasets`` instead."""
    import json

    import pyarrow as pa

    folder = Path(folder)
    state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    files = [folder / entry["filename"] for entry in state.get("_data_files") or []]
    if not files or state.get("_indices_data_files") or not all(f.is_file() for f in files):
        from datasets import load_from_disk

        from .columns import column_array

        table = load_from_disk(str(folder))
        return {name: column_array(table, name) for name in names if name in table.column_names}
    tables = [pa.ipc.open_stream(pa.memory_map(str(f))).read_all() for f in files]
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    return {
        name: _fixed_shape_numpy(table.column(name), name) for name in names if name in table.column_names
    }


def _fixed_shape_numpy(column: Any, name: str):
    """A scalar or fixed-size-list ``pyarrow.ChunkedArray`` -> ``(N, *shape)`` numpy array, one copy."""
    import numpy as np
    import pyarrow as pa

    parts = []
    empty = column.type.storage_type if isinstance(column.type, pa.ExtensionType) else column.type
    for chunk in column.chunks or [pa.array([], type=empty)]:  # an empty table may have no chunk
        if chunk.null_count:
            raise ValueError(f"column {name!r} has missing values; it cannot be read as one array")
        values = chunk.storage if isinstance(chunk, pa.ExtensionArray) else chunk
        shape = []
        while pa.types.is_fixed_size_list(values.type):
            shape.append(values.type.list_size)
            values = values.flatten()  # honours the chunk's offset
        if pa.types.is_nested(values.type):
            raise ValueError(f"column {name!r} ({column.type}) is not a scalar or fixed-length list column")
        if pa.types.is_integer(values.type) or pa.types.is_floating(values.type):
            # a view of the values buffer (copied below): pyarrow's to_numpy imports pandas (1-2 s)
            dtype = np.dtype(values.type.to_pandas_dtype())
            flat = np.frombuffer(values.buffers()[1], dtype, len(values), values.offset * dtype.itemsize)
        else:
            flat = values.to_numpy(zero_copy_only=False)
        parts.append(flat.reshape(len(chunk), *shape))
    return parts[0].copy() if len(parts) == 1 else np.concatenate(parts)


__all__ = ["dataset_from_arrays", "read_saved_columns", "write_batches"]
