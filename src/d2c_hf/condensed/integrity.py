"""What a save records about each table of a condensed dataset, and the check of a loaded one against it.

A save writes ``{table: {"num_rows", "columns", "fingerprint"}}`` under ``d2c_info.json``'s ``tables`` key
(:func:`tables_record`); :func:`verify_tables` compares the tables read back with it and refuses a
damaged, partly copied or stale folder, naming the table and what differs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

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


def tables_record(tables: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """What a save records about each table (``None`` tables are left out), to check a folder on load:
    ``{table: {"num_rows", "columns", "fingerprint"}}``.

    The fingerprint is a SHA-256 over the table's column names and features and the values of its
    scalar columns (``label``, ``source_index``, ``difficulty``, ``name``, ``prompt``...): it
    identifies *which* rows a table holds (a selection, its labels and scores) and costs one read
    of those small columns, not of the images or arrays.
    """
    return {
        name: {
            "num_rows": len(table),
            "columns": list(table.column_names),
            "fingerprint": table_fingerprint(table),
        }
        for name, table in tables.items()
        if table is not None
    }


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


__all__ = ["table_fingerprint", "tables_record", "verify_tables"]
