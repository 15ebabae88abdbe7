"""Outputs that are never half-written, and the one JSON helper.

Everything d2c-hf writes goes through here:

* :func:`atomic_write` — one file: a temporary file beside the target, ``fsync``, ``os.replace``.
  A file exists if and only if it is complete (the sharded engine's shard files rely on this).
* :func:`staged_dir` — one folder: written under a hidden name beside the target and renamed into
  place when complete; an existing target is swapped out only then (and restored if the rename
  fails). Errors name the target, never the hidden staging folder.
* :func:`write_json` / :func:`read_json` / :func:`jsonable` — JSON records (provenance, run configs,
  manifests) with numpy scalars and arrays, paths, torch dtypes and sets made JSON-able, and damaged
  files reported with their path.
* :func:`check_apart` — an output path that is, contains or lies inside one of a command's inputs is
  refused before anything is read or written.
* :func:`remove_stale_staging` — the hidden ``.<name>.tmp-*`` leftovers of a hard kill, removed by a rerun
  that holds the folder's lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

# --------------------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------------------


def jsonable(obj: Any) -> Any:
    """``json.dumps(default=...)`` hook: numpy scalars/arrays, paths, torch dtypes/devices and sets.

    Raises:
        TypeError naming the type of anything else (so a record never silently holds ``repr`` text).
    """
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    module = type(obj).__module__
    if module == "torch" and type(obj).__name__ in ("dtype", "device"):
        return str(obj)
    raise TypeError(f"values must be JSON-serialisable, got {type(obj).__name__}: {obj!r}")


def json_round_trip(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples become lists, numpy scalars numbers, keys strings)."""
    return json.loads(json.dumps(obj, default=jsonable))


def write_json(path: str | os.PathLike, obj: Any, *, sort_keys: bool = False) -> Path:
    """Write ``obj`` as indented UTF-8 JSON, atomically (see :func:`atomic_write`)."""
    data = (
        json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=sort_keys, default=jsonable) + "\n"
    ).encode()
    return atomic_write(path, lambda handle: handle.write(data))


def read_json(path: str | os.PathLike, what: str = "the file") -> dict[str, Any]:
    """A JSON object from ``path``.

    Raises:
        FileNotFoundError / ValueError naming ``path`` and ``what`` it is, for a missing file, invalid
        JSON or a value that is not an object.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found ({what})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); {what} is damaged") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a JSON object; {what} is damaged")
    return data


# --------------------------------------------------------------------------------------
# atomic files and folders
# --------------------------------------------------------------------------------------


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem can fsync a directory
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None]) -> Path:
    """Write a file atomically: ``write(handle)`` into a temporary file beside ``path`` (binary mode),
    ``fsync``, then ``os.replace``. On any error (disk full, kill) the temporary file is removed (or,
    after SIGKILL, left under a ``.tmp-`` name that is never read) and ``path`` is untouched."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:  # a full disk, a read-only folder: name the file asked for, not the temporary one
        tmp.unlink(missing_ok=True)
        raise renamed_os_error(err, f"could not write {path}") from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def renamed_os_error(err: OSError, message: str) -> OSError:
    """An ``OSError`` of the same kind (``PermissionError``, ...) whose text is ``message: reason``, for
    errors raised on a hidden staging path that should name the user's target instead. ``reason`` is the
    innermost error's (``No space left on device``), so nested staged writes never show a hidden path."""
    reason = getattr(err, "d2c_reason", None) or err.strerror or str(err)
    text = f"{message}: {reason}"
    try:
        renamed = type(err)(err.errno, text) if err.errno is not None else type(err)(text)
    except TypeError:  # an OSError subclass with another constructor
        renamed = OSError(err.errno, text)
    renamed.d2c_reason = reason
    return renamed


def replace_dir(new: Path, target: Path) -> None:
    """Move the finished folder ``new`` to ``target``; an existing ``target`` is swapped out first and
    restored if the final rename fails (POSIX cannot rename over a non-empty folder)."""
    if not target.exists():
        os.replace(new, target)
        return
    old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
    os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staged_dir(target: str | os.PathLike, what: str = "the output") -> Iterator[Path]:
    """Build a folder under a hidden name beside ``target``; rename it into place when the block ends.

    ``with staged_dir(out) as tmp: ...write into tmp...``. On success ``tmp`` replaces ``target`` (an
    existing ``target`` survives until then, see :func:`replace_dir`); on any error ``tmp`` is removed
    and ``target`` is untouched. An ``OSError`` names ``target`` (and ``what`` it is), not ``tmp``.
    The caller decides beforehand whether an existing ``target`` may be replaced.
    """
    target = Path(target)
    staging = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()  # (not tempfile.mkdtemp: its 0700 mode would survive the rename)
        yield staging
        replace_dir(staging, target)
    except OSError as err:
        shutil.rmtree(staging, ignore_errors=True)
        raise renamed_os_error(err, f"could not write {what} to {target}") from err
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextlib.contextmanager
def staged_entries(
    target: str | os.PathLike, what: str = "the output", last: tuple[str, ...] = ()
) -> Iterator[Path]:
    """Like :func:`staged_dir`, for a folder that may already hold other things (a training run's
    ``output_dir``, a folder ``save_pretrained`` adds to): the block writes into a hidden folder beside
    ``target``; when it ends, the folder is renamed to ``target`` if there is none, else each entry is moved
    into ``target`` (replacing an entry of the same name), the names in ``last`` at the end
    (``model_index.json``: the folder is a pipeline only once complete). On any error nothing has moved and
    the hidden folder is removed; an ``OSError`` names ``target``. Moving is renaming (same filesystem): it
    needs no space, so a full disk fails before anything moves."""
    target = Path(target)
    staging = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
        yield staging
        if not target.exists():
            os.replace(staging, target)
            return
        order = sorted(
            staging.iterdir(), key=lambda p: (p.name in last, last.index(p.name) if p.name in last else 0)
        )
        for entry in order:
            destination = target / entry.name
            if destination.is_dir() and not destination.is_symlink():
                shutil.rmtree(destination)
            os.replace(entry, destination)
    except OSError as err:
        raise renamed_os_error(err, f"could not write {what} to {target}") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)


#: the hidden names :func:`staged_dir` and :func:`atomic_write` write under (``.<name>.tmp-<random>``)
STAGING_PATTERN = ".*.tmp-*"


def remove_stale_staging(
    folder: str | os.PathLike, patterns: tuple[str, ...] = (STAGING_PATTERN,)
) -> list[Path]:
    """Remove what a hard kill (SIGKILL, power loss) left of a staged write in ``folder``: entries matching
    ``patterns`` (hidden ``.<name>.tmp-*`` files and folders). Only safe while the caller holds the folder's
    lock (no other process is writing there). Returns the removed paths."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for pattern in patterns:
        for stale in sorted(folder.glob(pattern)):
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
            removed.append(stale)
    return removed


def check_apart(output: str | os.PathLike, inputs: Mapping[str, Any], what: str = "the output") -> None:
    """Refuse an output path that is, contains or lies inside one of the ``inputs`` (``{argument: path}``;
    values that are not existing local paths, such as Hub ids or ``None``, are skipped), before anything is
    read or written: a command would otherwise overwrite or mix with what it reads.

    Raises:
        ValueError naming both arguments and paths.
    """
    out = Path(os.path.realpath(Path(os.fspath(output)).expanduser()))
    for name, value in inputs.items():
        if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
            continue
        path = Path(os.fspath(value)).expanduser()
        if not path.exists():
            continue
        path = Path(os.path.realpath(path))
        if out == path:
            relation = "is"
        elif path in out.parents:
            relation = "lies inside"
        elif out in path.parents:
            relation = "contains"
        else:
            continue
        raise ValueError(
            f"{what} {os.fspath(output)} {relation} {name} {os.fspath(value)}: writing there would overwrite or "
            f"mix with what is read; choose an output folder apart from {name}"
        )


def absolute(path: str | os.PathLike) -> Path:
    """``path`` expanded and absolute (without resolving symlinks), for run records and messages."""
    return Path(os.path.abspath(Path(path).expanduser()))
