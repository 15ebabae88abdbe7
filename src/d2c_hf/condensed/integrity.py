"""What a save records about each table of a condensed dataset, and the check of a loaded one against it.

A save writes ``{table: {"num_rows", "columns", "fingerprint", "files"}}`` under ``d2c_info.json``'s
``tables`` key (:func:`tables_record`); :func:`verify_tables` compares the tables read back with it and
refuses a damaged, partly copied or stale folder, naming the table and what differs.

``files`` holds the content checksums of the table's data files as written (``samples/data-*.arrow`` in
the ``save_to_disk`` layout, ``data/train-*.parquet`` in the Hub layout): each file's size and XXH3-128,
and the checksum of each column's bytes inside it (:func:`data_files_record`). :func:`verify_data_files`
checks a local folder's files against them before its tables are read, so bytes flipped in place (in an
array column the fingerprint does not read) are refused naming the file, the table and the column. A
folder written before ``files`` existed is checked as before (row counts and fingerprint).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..utils.checksums import ALGORITHM, READ_CHUNK, check_files, file_entry, new_hasher
from ..utils.columns import column_numpy
from .info import INFO_FILENAME


def table_fingerprint(table) -> str:
    """SHA-256 of a table's column names, features and scalar columns' values (see :func:`tables_record`)."""
    from datasets import ClassLabel, Value

    digest = hashlib.sha256()
    digest.update(json.dumps(table.features.to_dict(), sort_keys=True).encode())
    for column, feature in table.features.items():
        if not isinstance(feature, (Value, ClassLabel)):
            continue
        values = column_numpy(table, column)
        if values.dtype == object:
            data = "\x00".join("\x01" if v is None else str(v) for v in values.tolist()).encode()
        else:
            data = np.ascontiguousarray(values).tobytes()
        digest.update(f"{column}:{values.dtype}:{len(values)}:".encode())
        digest.update(data)
    return digest.hexdigest()


def tables_record(
    tables: Mapping[str, Any],
    root: Path | None = None,
    files: Mapping[str, Sequence[Path]] | None = None,
) -> dict[str, dict[str, Any]]:
    """What a save records about each table (``None`` tables are left out), to check a folder on load:
    ``{table: {"num_rows", "columns", "fingerprint"[, "files"]}}``.

    The fingerprint is a SHA-256 over the table's column names and features and the values of its
    scalar columns (``label``, ``source_index``, ``difficulty``, ``name``, ``prompt``...): it
    identifies *which* rows a table holds (a selection, its labels and scores) and costs one read
    of those small columns, not of the images or arrays. ``files`` (``{table: [data file, ...]}`` under
    ``root``, given by a save once the files are written) adds each table's content checksums
    (:func:`data_files_record`).
    """
    record = {}
    for name, table in tables.items():
        if table is None:
            continue
        record[name] = {
            "num_rows": len(table),
            "columns": list(table.column_names),
            "fingerprint": table_fingerprint(table),
        }
        if files is not None and root is not None:
            record[name]["files"] = data_files_record(root, files[name])
    return record


# --------------------------------------------------------------------------------------
# content checksums of the data files
# --------------------------------------------------------------------------------------


def column_checksums(path: Path) -> dict[str, str]:
    """The checksum of each top-level column's bytes in one data file: an Arrow stream
    (``datasets.save_to_disk``: every buffer of the column, batch after batch) or a Parquet file (the
    byte ranges of the column's chunks, row group after row group)."""
    hashers: dict[str, Any] = {}
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        metadata = pq.ParquetFile(str(path)).metadata
        buffer = bytearray(READ_CHUNK)
        with open(path, "rb", buffering=0) as handle:
            for group in range(metadata.num_row_groups):
                row_group = metadata.row_group(group)
                for index in range(row_group.num_columns):
                    chunk = row_group.column(index)
                    start = chunk.data_page_offset
                    if chunk.has_dictionary_page and chunk.dictionary_page_offset:
                        start = min(start, chunk.dictionary_page_offset)
                    column = chunk.path_in_schema.split(".")[0]
                    hasher = hashers.setdefault(column, new_hasher())
                    handle.seek(start)
                    left = chunk.total_compressed_size
                    while left > 0 and (read := handle.readinto(memoryview(buffer)[: min(left, READ_CHUNK)])):
                        hasher.update(memoryview(buffer)[:read])
                        left -= read
    else:
        import pyarrow as pa

        # read, not memory-mapped: one record batch in memory at a time, and no file-backed pages left in the
        # process's RSS (a mapped read of a 4 GB table counted 4 GB there)
        with pa.OSFile(str(path)) as source:
            for batch in pa.ipc.open_stream(source):
                for column, array in zip(batch.schema.names, batch.columns):
                    hasher = hashers.setdefault(column, new_hasher())
                    for buffer in array.buffers():
                        if buffer is not None:
                            hasher.update(buffer)
    return {column: hasher.hexdigest() for column, hasher in hashers.items()}


def data_files_record(root: Path, files: Sequence[Path]) -> dict[str, dict[str, Any]]:
    """``{path relative to root: {"size", "xxh3_128", "columns": {column: checksum}}}`` of a table's data files."""
    return {
        Path(path).relative_to(root).as_posix(): {**file_entry(path), "columns": column_checksums(Path(path))}
        for path in sorted(files)
    }


def verify_data_files(root: Path, record: Mapping[str, Any], where: str) -> None:
    """Check a local folder's data files against the content checksums its save recorded (tables whose
    record has no ``files``, written before, are skipped): every recorded file present, of its size and
    content, and no unrecorded data file beside them.

    Raises:
        ValueError naming the folder, the table, the file and (for damaged bytes) the column(s).
    """
    fix = "restore the folder from a copy (copy it again whole) or re-create the dataset"
    for table, entry in record.items():
        files = entry.get("files") if isinstance(entry, Mapping) else None
        if not files or not any((root / name).is_file() for name in files):
            continue  # a table gone whole is named as a missing table by verify_tables
        folders = {(root / name).parent for name in files}
        suffixes = {Path(name).suffix for name in files}
        present = {
            path.relative_to(root).as_posix()
            for folder in folders
            for suffix in suffixes
            for path in folder.glob(f"*{suffix}")
        }
        extra = sorted(present - set(files))
        if extra:
            raise ValueError(
                f"{where}: the {table!r} table's folder holds data file(s) {extra} that its {INFO_FILENAME} "
                f"does not record (a file added or left from another save); {fix}"
            )
        for name, problem in check_files(root, files):
            if problem.startswith("is damaged"):
                try:
                    got = column_checksums(root / name)
                except Exception:  # the file no longer parses: the file is named, that is all we can say
                    got = {}
                recorded = files[name].get("columns") or {}
                columns = sorted(c for c in recorded if got.get(c) != recorded[c])
                if got and columns:
                    problem = (
                        f"is damaged in column(s) {columns}: their bytes differ from the content checksums "
                        f"({ALGORITHM}) recorded at save time"
                    )
                elif got:
                    problem = "is damaged outside its column data (its metadata): its checksum differs"
            raise ValueError(f"{where}: the {table!r} table's data file {name} {problem}; {fix}")


def verify_tables(
    tables: Mapping[str, Any], info: Mapping[str, Any], where: str, record: Mapping[str, Any] | None
) -> None:
    """Check the tables read from ``where`` against the ``record`` written at save time (see
    :func:`tables_record`); without a record (a folder written before it existed), check what ``info``
    implies. Raises ``ValueError`` naming the table and what differs."""
    samples, classes = tables["samples"], tables.get("classes")
    if record is None:
        if "text" in (info.get("attach") or []) and classes is None:
            raise ValueError(
                f"{where} is damaged: its {INFO_FILENAME} says class text was attached, but the classes "
                "table is missing; restore it or re-create the dataset"
            )
        counts = info.get("counts")
        if isinstance(counts, list) and sum(counts) != len(samples):
            raise ValueError(
                f"{where} is damaged: samples has {len(samples)} rows but its {INFO_FILENAME} "
                f"records {sum(counts)}; restore the folder or re-create the dataset"
            )
        return
    got = tables_record(tables)
    for name, expected in record.items():
        if name not in got:
            raise ValueError(
                f"{where} is damaged: the {name!r} table ({expected['num_rows']} rows) recorded in its "
                f"{INFO_FILENAME} is missing; restore it from a copy or re-create the dataset"
            )
        if got[name]["num_rows"] != expected["num_rows"]:
            raise ValueError(
                f"{where}: the {name!r} table has {got[name]['num_rows']} rows but its {INFO_FILENAME} "
                f"records {expected['num_rows']}; the data files were changed or partly copied after the "
                "save: copy the folder again whole, or re-create the dataset"
            )
        if got[name]["fingerprint"] != expected["fingerprint"]:
            raise ValueError(
                f"{where}: the {name!r} table read is not the one saved with this {INFO_FILENAME} (content "
                "fingerprint differs): the data files were modified, or a stale cache answered for them. "
                "Copy the folder again whole or re-create it; read local folders with "
                "CondensedDataset.load(folder), which reads the folder's own files"
            )
    extra = sorted(set(got) - set(record))
    if extra:
        raise ValueError(
            f"{where} holds table(s) {extra} that its {INFO_FILENAME} does not record; the folder mixes "
            "two saves: re-create it"
        )


__all__ = [
    "column_checksums",
    "data_files_record",
    "table_fingerprint",
    "tables_record",
    "verify_data_files",
    "verify_tables",
]
