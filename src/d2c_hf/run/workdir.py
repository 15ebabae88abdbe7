"""Sharded, resumable work over many processes: shard files, the run config that guards a resume, and the
per-phase manifest. The condense pipeline (:mod:`d2c_hf.condense`) runs its score and attach phases on
top of this; nothing here knows what a phase computes.

The same code runs as one process or under ``accelerate launch`` (many processes, many machines):
a ``state`` (:class:`accelerate.PartialState`, or :class:`OneProcess` in-process) gives the rank and the
world size; nothing is shared between ranks but the output folder (and one barrier plus one small gather
at the end of a phase).

**Shards.** The items to process are cut into contiguous shards of ``shard_size`` items. Shard ``k``
belongs to rank ``k % world_size``. A rank writes each finished shard as one ``.npz`` file, atomically
(:func:`d2c_hf.utils.files.atomic_write`): a shard file exists if and only if the shard is complete, so a
killed run, a dead rank or a full disk never leaves a shard that looks done. Running again skips
finished shards and computes the rest.

**Run config.** ``d2c_run.json`` records, per phase, everything that changes the phase's outputs. A rerun
with another config is refused, naming the differing keys (:func:`check_run_config`). The file carries a
checksum of its content (a damaged one is refused as such, not read as another config).

**Lock.** One run at a time per work folder: :func:`work_lock` holds an exclusive ``flock`` on
``.d2c.lock`` for the whole command (the main process), so a second run on the same folder is refused,
naming the process that holds it; the lock dies with its process, so a killed run never blocks a rerun,
and the rerun removes the hidden staging leftovers the kill left behind.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils.checksums import read_checked_json, write_checked_json
from ..utils.files import atomic_write, json_round_trip, remove_stale_staging, write_json

logger = logging.getLogger(__name__)

RUN_FILE = "d2c_run.json"
MANIFEST_FILE = "manifest.json"
RUN_FORMAT_VERSION = 1
LOCK_FILE = ".d2c.lock"
#: hidden leftovers of the main process's staged writes (a killed merge or assembly) in a work folder
STALE_PATTERNS = (".*.tmp-*", ".condensed-samples.arrow", ".scores-merge.arrow")
RUN_FILE_FIX = "restore it, or start over in a new output folder"


@dataclass
class OneProcess:
    """The part of ``accelerate.PartialState`` the sharded phases use, for one process on ``device``
    (what :func:`d2c_hf.condense` runs in: it takes a device and needs no process group)."""

    device: torch.device
    process_index: int = 0
    num_processes: int = 1
    is_main_process: bool = True

    def wait_for_everyone(self) -> None:
        pass


# --------------------------------------------------------------------------------------
# shard files
# --------------------------------------------------------------------------------------


def shard_path(folder: Path, shard: int, num_shards: int) -> Path:
    return folder / f"shard-{shard:05d}-of-{num_shards:05d}.npz"


def save_shard(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write one finished shard atomically."""
    atomic_write(path, lambda handle: np.savez(handle, **arrays))


def load_shard(
    path: Path, required: Sequence[str], names: Sequence[str] | None = None
) -> dict[str, np.ndarray] | None:
    """A finished shard's arrays, or None if the file is missing or unreadable (then it is recomputed).
    ``names``: read only these arrays (those the file holds; the ``.npz`` members are read one by one, so
    the others, e.g. a score shard's 16 KB-per-row posteriors, are never read)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            wanted = data.files if names is None else [n for n in data.files if n in names or n in required]
            arrays = {name: data[name] for name in wanted}
    except Exception as err:  # a damaged file (e.g. truncated by hand): recompute, never trust it
        logger.warning("shard file %s is unreadable (%s); it will be recomputed", path, err)
        return None
    missing = [name for name in required if name not in arrays]
    if missing:
        logger.warning("shard file %s lacks %s; it will be recomputed", path, missing)
        return None
    return arrays


def shard_plan(num_items: int, shard_size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` of the contiguous shards of ``num_items`` items."""
    return [(start, min(start + shard_size, num_items)) for start in range(0, num_items, shard_size)]


def load_all_shards(
    folder: Path, num_shards: int, required: Sequence[str], names: Sequence[str] | None = None
) -> list[dict[str, np.ndarray]]:
    """Every shard of a finished phase, in shard order (``names``: only these arrays, as :func:`load_shard`).

    Raises:
        RuntimeError naming how many (and which first) shard is missing, and that rerunning computes it.
    """
    shards, missing = [], []
    for k in range(num_shards):
        arrays = load_shard(shard_path(folder, k, num_shards), required, names)
        if arrays is None:
            missing.append(k)
        shards.append(arrays)
    _raise_missing(folder, num_shards, missing)
    return shards


def iter_shards(folder: Path, num_shards: int, required: Sequence[str]) -> Iterator[dict[str, np.ndarray]]:
    """Every shard of a finished phase, in shard order, one at a time (memory bounded by one shard).

    Raises:
        RuntimeError as :func:`load_all_shards` (checked for the files before the first is yielded).
    """
    _raise_missing(
        folder, num_shards, [k for k in range(num_shards) if not shard_path(folder, k, num_shards).is_file()]
    )
    for k in range(num_shards):
        arrays = load_shard(shard_path(folder, k, num_shards), required)
        _raise_missing(folder, num_shards, [k] if arrays is None else [])
        yield arrays
        del arrays  # before the next shard is read: one shard in memory, not two


def _raise_missing(folder: Path, num_shards: int, missing: Sequence[int]) -> None:
    if missing:
        raise RuntimeError(
            f"{len(missing)} of {num_shards} shards in {folder} are not finished (e.g. shard {missing[0]}, "
            "whose rank died?): rerun the same command to compute only those"
        )


# --------------------------------------------------------------------------------------
# run config (the resume fingerprint)
# --------------------------------------------------------------------------------------


def config_diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two JSON-like configs."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                out.append(name)
            else:
                out.extend(config_diff(old[key], new[key], name))
        return out
    return [] if old == new else [prefix or "<root>"]


def read_run(output_dir: Path) -> dict[str, Any]:
    """The run config of ``output_dir`` (``d2c_run.json``)."""
    run_file = Path(output_dir) / RUN_FILE
    if not run_file.is_file():
        raise FileNotFoundError(f"{run_file} not found: run `d2c score` (or `d2c condense`) first")
    return read_checked_json(run_file, "the run config", RUN_FILE_FIX)


def phase_config(output_dir: Path, phase: str) -> dict[str, Any]:
    """The recorded config of one phase, or an error naming the command that records it."""
    phases = read_run(output_dir).get("phases", {})
    if phase not in phases:
        raise FileNotFoundError(
            f"{output_dir} has no {phase} results: run `d2c {phase}` (or `d2c condense`) first"
        )
    return phases[phase]


def check_run_config(output_dir: Path, phase: str, config: Mapping[str, Any], *, write: bool) -> None:
    """Refuse to mix phase outputs of different configs; record ``config`` for the phase.

    Raises:
        ValueError naming the differing keys if ``d2c_run.json`` holds another config for ``phase``,
        or if the phase folder has shard files but no recorded config.
    """
    config = json_round_trip(config)
    run_file = output_dir / RUN_FILE
    run = (
        read_checked_json(run_file, "the run config", RUN_FILE_FIX)
        if run_file.is_file()
        else {"format_version": RUN_FORMAT_VERSION}
    )
    old = run.get("phases", {}).get(phase)
    if old is not None:
        diff = config_diff(old, config)
        if diff:
            raise ValueError(
                f"{output_dir} holds {phase} results of a different run config (differing keys: {', '.join(diff)}); "
                f"use another output folder, or delete {output_dir / phase} and the {phase!r} entry of {run_file} to "
                "start over"
            )
        return
    folder = output_dir / phase
    if folder.is_dir() and any(folder.glob("shard-*.npz")):
        raise ValueError(
            f"{folder} has shard files but {run_file} records no {phase} config, so they cannot be trusted; "
            "use another output folder or remove that folder"
        )
    if write:
        run.setdefault("phases", {})[phase] = config
        write_checked_json(run_file, run)


def open_phase(output_dir: Path, phase: str, config: Mapping[str, Any], state: Any) -> Path:
    """Record (main process) and check (every process) ``phase``'s run config, then return its shard folder."""
    if state.is_main_process:
        check_run_config(output_dir, phase, config, write=True)
    state.wait_for_everyone()
    check_run_config(output_dir, phase, config, write=False)
    folder = output_dir / phase
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# --------------------------------------------------------------------------------------
# one run at a time per work folder
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def work_lock(
    output_dir: str | os.PathLike,
    state: Any = None,
    command: str = "d2c",
    stale: Sequence[str] = STALE_PATTERNS,
) -> Iterator[None]:
    """Hold the exclusive lock of ``output_dir`` (``.d2c.lock``, an ``fcntl.flock``) while the block runs.

    Taken by the main process only (``state.is_main_process``; other ranks write only their own shards).
    Once held, the hidden leftovers of a hard-killed run matching ``stale`` are removed (no other process
    can be writing them). A run that wrote nothing into a folder it created leaves no lock file behind.
    The lock is released when the block ends or the process dies (SIGKILL included), so it never
    outlives its run; on a filesystem without ``flock`` support, see docs/scale.md.

    Raises:
        BlockingIOError (an ``OSError``) naming the folder and the process, host, start time and command
        that hold it.
    """
    if state is not None and not state.is_main_process:
        yield
        return
    import fcntl
    import socket
    import time

    folder = Path(output_dir)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    while True:
        handle = open(path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            text = handle.read()
            handle.close()
            raise BlockingIOError(_busy_message(folder, text)) from None
        except BaseException:
            handle.close()
            raise
        try:  # the file may have been removed (and another created) between open and flock: lock that one
            same = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        handle.close()
    try:
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": command,
        }
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(holder) + "\n")
        handle.flush()
        for leftover in remove_stale_staging(folder, tuple(stale)):
            logger.info("removed %s, left by an interrupted run", leftover)
        yield
    finally:
        try:
            if [p.name for p in folder.iterdir()] == [LOCK_FILE]:  # nothing was written: leave nothing
                path.unlink(missing_ok=True)
                if created:
                    folder.rmdir()
        except OSError:
            pass
        handle.close()


def _busy_message(folder: Path, text: str) -> str:
    try:
        holder = json.loads(text)
        who = (
            f"process {holder.get('pid')} on {holder.get('host')} (`{holder.get('command')}`, started "
            f"{holder.get('started')})"
        )
    except (json.JSONDecodeError, AttributeError):
        who = "another process"
    return (
        f"{folder} is in use by {who}: two runs on one folder would both compute every shard. Wait for it to "
        f"finish, or use another output folder (the lock, {folder / LOCK_FILE}, is released when that "
        "process ends, even if it is killed)"
    )


# --------------------------------------------------------------------------------------
# running a phase's shards
# --------------------------------------------------------------------------------------


@dataclass
class PhaseCounts:
    """What one rank did in one run of a phase."""

    rank: int
    assigned: int = 0
    skipped: int = 0  # finished by an earlier run
    computed: int = 0
    corrupt: int = 0
    rows: int = 0


def run_shards(
    folder: Path,
    shard_rows: Mapping[int, np.ndarray],
    num_shards: int,
    required: Sequence[str],
    state: Any,
    compute: Callable[[dict[int, np.ndarray]], Iterator[tuple[int, dict[str, np.ndarray]]]],
) -> PhaseCounts:
    """Compute this rank's unfinished shards (``compute`` yields finished shards' arrays) and write them."""
    rank, world = state.process_index, state.num_processes
    counts = PhaseCounts(rank=rank)
    mine = {k: rows for k, rows in shard_rows.items() if k % world == rank}
    counts.assigned = len(mine)
    todo = {}
    for k, rows in mine.items():
        path = shard_path(folder, k, num_shards)
        for stale in folder.glob(f".{path.name}.tmp-*"):  # left by a killed run (this rank owns shard k)
            stale.unlink(missing_ok=True)
        if load_shard(path, required) is not None:
            counts.skipped += 1
        else:
            todo[k] = rows
    logger.info(
        "rank %d/%d, %s: %d shards assigned, %d already done (skipped), %d to compute",
        rank,
        world,
        folder.name,
        counts.assigned,
        counts.skipped,
        len(todo),
    )
    if todo:
        for k, arrays in compute(todo):
            save_shard(shard_path(folder, k, num_shards), arrays)
            counts.computed += 1
            counts.rows += len(arrays["rows"])
            counts.corrupt += len(arrays.get("corrupt", ()))
            logger.info("rank %d: %s shard %d/%d written", rank, folder.name, k + 1, num_shards)
    return counts


def write_manifest(
    folder: Path, state: Any, counts: PhaseCounts, num_shards: int, extra: Mapping[str, Any]
) -> dict[str, Any]:
    """Gather every rank's counts and (main process) write ``folder/manifest.json``; returns the manifest."""
    from accelerate.utils import gather_object

    per_rank = gather_object([asdict(counts)]) if state.num_processes > 1 else [asdict(counts)]
    manifest = {
        "world_size": state.num_processes,
        "num_shards": num_shards,
        "skipped_shards": sum(c["skipped"] for c in per_rank),
        "computed_shards": sum(c["computed"] for c in per_rank),
        "computed_rows": sum(c["rows"] for c in per_rank),
        "per_rank": per_rank,
        **extra,
    }
    if state.is_main_process:
        write_json(folder / MANIFEST_FILE, manifest, sort_keys=True)
        logger.info(
            "%s: %d shards, %d skipped (done earlier), %d computed",
            folder.name,
            num_shards,
            manifest["skipped_shards"],
            manifest["computed_shards"],
        )
    return manifest


def sha256_hex(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()
