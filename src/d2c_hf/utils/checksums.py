"""Content checksums of what d2c-hf writes and later trusts, written at save time and verified on load.

A file damaged in place (bytes flipped by a bad disk or a careless edit, same size, valid header) would
otherwise load and train silently. Everything the project writes and reads back carries a record of its
files' checksums:

* a saved model or pipeline folder (``SiTPipeline.save_pretrained``, ``train_scorer``,
  ``train_vision_encoder``, ``d2c convert-*``) and a training checkpoint (``checkpoint-N/``): a
  :data:`RECORD_FILE` (``d2c_checksums.json``) at the folder's root, listing every file but the card
  (:func:`write_record` / :func:`verify_record`);
* the merged scores of a work folder (``scores/``): the same record;
* small JSON records that steer later steps (``selection.json``): a checksum of their own content
  (:func:`write_checked_json` / :func:`read_checked_json`);
* a condensed dataset: the checksums of its data files (and of each column inside them) in
  ``d2c_info.json`` (see :mod:`d2c_hf.condensed.integrity`).

The checksum is XXH3-128 (``xxhash``, which ``datasets`` itself depends on): it detects accidental
damage, not deliberate tampering, at memory speed (~17 GB/s on one core, SHA-256 ~1 GB/s), so
verifying costs about one read of the files (see docs/errors.md for the measured cost). A folder
written before these records existed carries none and loads as before.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .files import json_round_trip, jsonable, read_json, write_json

ALGORITHM = "xxh3_128"
#: the record of a folder's files: ``{"algorithm": ..., "files": {relative path: {"size", "xxh3_128"}}}``
RECORD_FILE = "d2c_checksums.json"
#: never recorded: the record itself and decoration (a card may be rewritten after the save)
UNRECORDED = (RECORD_FILE, "README.md")
UNRECORDED_DIRS = ("figures",)
#: the key of a JSON record that holds the checksum of its own content
CHECKSUM_KEY = "checksum"


def new_hasher():
    import xxhash

    return xxhash.xxh3_128()


def buffer_checksum(data: Any) -> str:
    """The checksum of a bytes-like object."""
    hasher = new_hasher()
    hasher.update(data)
    return hasher.hexdigest()


#: bytes read at a time by :func:`file_checksum`
READ_CHUNK = 1 << 23


def file_checksum(path: str | os.PathLike) -> str:
    """The checksum of a file's bytes, read in 8 MiB chunks into one reused buffer: not memory-mapped, so hashing
    a set of many GB adds no file-backed pages to the process's RSS (0.96x the speed of a mapped read here)."""
    hasher = new_hasher()
    buffer = bytearray(READ_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while read := handle.readinto(buffer):
            hasher.update(view[:read])
    return hasher.hexdigest()


def file_entry(path: str | os.PathLike) -> dict[str, Any]:
    """``{"size", "xxh3_128"}`` of one file."""
    return {"size": os.path.getsize(path), ALGORITHM: file_checksum(path)}


def recorded_files(folder: Path) -> list[Path]:
    """The files of ``folder`` a record lists: all but :data:`UNRECORDED` and what lies under
    :data:`UNRECORDED_DIRS` or a hidden name, sorted."""
    out = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if not path.is_file() or path.name in UNRECORDED:
            continue
        if relative.parts[0] in UNRECORDED_DIRS or any(part.startswith(".") for part in relative.parts):
            continue
        out.append(path)
    return out


def folder_record(folder: str | os.PathLike, files: Iterable[Path] | None = None) -> dict[str, Any]:
    """``{"algorithm", "files": {relative path: {"size", "xxh3_128"}}}`` of ``folder`` (or of ``files``
    in it)."""
    folder = Path(folder)
    chosen = recorded_files(folder) if files is None else [Path(f) for f in files]
    return {
        "algorithm": ALGORITHM,
        "files": {path.relative_to(folder).as_posix(): file_entry(path) for path in chosen},
    }


def write_record(folder: str | os.PathLike, files: Iterable[Path] | None = None) -> Path:
    """Write :data:`RECORD_FILE` into ``folder``, listing its files (or ``files`` in it); call it last, once
    they are complete."""
    folder = Path(folder)
    return write_json(folder / RECORD_FILE, folder_record(folder, files), sort_keys=True)


def check_files(folder: Path, files: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, str]]:
    """``[(relative path, problem)]`` for the recorded ``files`` of ``folder`` that are missing, of another
    size or whose content differs (an empty list when all match)."""
    problems = []
    for name, entry in sorted(files.items()):
        path = folder / name
        if not path.is_file():
            problems.append((name, "is missing"))
        elif os.path.getsize(path) != entry.get("size"):
            problems.append((name, f"has {os.path.getsize(path)} bytes, {entry.get('size')} were written"))
        elif ALGORITHM in entry and file_checksum(path) != entry[ALGORITHM]:
            problems.append(
                (name, "is damaged: its content differs from what was written (checksum mismatch)")
            )
    return problems


def read_record(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The :data:`RECORD_FILE` of ``folder``, or None for a folder written without one."""
    path = Path(folder) / RECORD_FILE
    if not path.is_file():
        return None
    record = read_json(path, f"the checksum record of {folder}")
    if record.get("algorithm") != ALGORITHM or not isinstance(record.get("files"), dict):
        raise ValueError(
            f"{path} is not a checksum record this d2c-hf reads (algorithm {record.get('algorithm')!r}); "
            "upgrade d2c-hf, or delete the file to load the folder unverified"
        )
    return record


def verify_record(
    folder: str | os.PathLike,
    what: str,
    *,
    prefix: str | None = None,
    fix: str = "restore it from a copy or re-create it",
) -> bool:
    """Check the files of ``folder`` against its :data:`RECORD_FILE` (only ``prefix`` when given: a file, or
    a subfolder's files). A folder without a record whose parent's record lists it (a component folder such
    as ``pipeline/vae`` given alone) is checked against that. Returns False when no record covers the
    folder (written before records existed), True when every listed file matches.

    Raises:
        ValueError naming ``what``, the damaged or missing file(s) and ``fix``.
    """
    folder = Path(folder)
    record = read_record(folder)
    if record is None:
        parent = folder.parent
        if folder.name and not (parent / RECORD_FILE).is_file():
            return False
        prefix = f"{folder.name}/{prefix.strip('/')}" if prefix else folder.name
        folder, record = parent, read_record(parent)
        if record is None:
            return False
    files = record["files"]
    if prefix:
        start = prefix.strip("/")
        files = {
            name: entry for name, entry in files.items() if name == start or name.startswith(start + "/")
        }
        if not files:
            return False
    problems = check_files(folder, files)
    if problems:
        listing = "; ".join(f"{folder / name} {problem}" for name, problem in problems)
        raise ValueError(f"{what} {folder} is damaged: {listing} (checked against {RECORD_FILE}); {fix}")
    return True


# --------------------------------------------------------------------------------------
# JSON records that carry their own checksum
# --------------------------------------------------------------------------------------


def _canonical(obj: Any) -> bytes:
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=jsonable
    ).encode()


def write_checked_json(path: str | os.PathLike, obj: Mapping[str, Any]) -> Path:
    """``write_json`` of ``obj`` plus a ``checksum`` key over its content (verified by :func:`read_checked_json`)."""
    content = json_round_trip(dict(obj))
    content.pop(CHECKSUM_KEY, None)
    return write_json(
        path, {**content, CHECKSUM_KEY: {ALGORITHM: buffer_checksum(_canonical(content))}}, sort_keys=True
    )


def read_checked_json(path: str | os.PathLike, what: str, fix: str) -> dict[str, Any]:
    """A JSON record written by :func:`write_checked_json`, its checksum verified (a record without one,
    written before, is returned as it is).

    Raises:
        ValueError naming ``path``, ``what`` it is and ``fix`` when the content differs from its checksum.
    """
    record = read_json(path, what)
    stored = record.pop(CHECKSUM_KEY, None)
    if isinstance(stored, Mapping) and stored.get(ALGORITHM) != buffer_checksum(_canonical(record)):
        raise ValueError(
            f"{path} is damaged: its content differs from its checksum (the file was changed after it was "
            f"written); {what} cannot be trusted: {fix}"
        )
    return record


__all__ = [
    "ALGORITHM",
    "CHECKSUM_KEY",
    "RECORD_FILE",
    "buffer_checksum",
    "check_files",
    "file_checksum",
    "file_entry",
    "folder_record",
    "read_checked_json",
    "read_record",
    "recorded_files",
    "verify_record",
    "write_checked_json",
    "write_record",
]
