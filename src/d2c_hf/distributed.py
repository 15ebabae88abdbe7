"""D2C at scale: sharded, resumable, streaming ``d2c score | select | attach | condense``.

The commands run unchanged as one process or under ``accelerate launch`` (many processes, many
machines): :class:`accelerate.PartialState` gives the rank and the world size, nothing else is
shared between ranks but the output folder (and one barrier plus one small gather at the end).

**Shards.** The rows to process are cut into contiguous shards of ``--shard_size`` rows (the score
phase: source rows ``[k*S, (k+1)*S)``; the attach phase: the same slices of the sorted selected
rows). Shard ``k`` belongs to rank ``k % world_size``. A rank writes each finished shard as one
``.npz`` file, atomically (temporary file, ``fsync``, ``os.replace``): a shard file exists if and
only if the shard is complete, so a killed run, a dead rank or a full disk never leaves a shard that
looks done. Re-running the same command skips finished shards and computes the rest.

**Bitwise equality.** Batches never straddle shards and ``shard_size`` is a multiple of
``batch_size``, so every batch holds the same rows whatever the number of processes (and the same
rows as :meth:`DifficultyScorer.apply` on the whole dataset). The noise of a sample comes from
its key (pixel hash or ``--key_column``), not from its position, so the merged scores (in shard
order) are bitwise those of a single process.

**Run config.** ``d2c_run.json`` records, per phase, everything that changes the outputs (dataset
identity and size, model provenance, options). A rerun with another config is refused, naming the
differing keys.

**Streaming.** ``--streaming`` reads the source as an ``IterableDataset`` (never materialised).
Decoding, RGB conversion and the ADM centre crop run in ``torch.utils.data.DataLoader`` workers
(``--num_workers``): worker ``w`` of ``W`` decodes batches ``w, w + W, ...``; the model process only
receives uint8 crops (pinned memory and ``non_blocking`` copies on CUDA).

Output folder::

    d2c_run.json                          run config per phase (the resume fingerprint)
    score/shard-00000-of-00626.npz        rows, label, difficulty, per_timestep, key, corrupt
                                          [, posterior: VAE mean|std float16, --store_posterior]
    score/manifest.json                   counts of the last run (skipped / computed shards, corrupt rows)
    scores/                               merged scores (datasets.save_to_disk)
    selection.json                        selected source rows + the selection record
    attach/shard-00000-of-00003.npz       rows, image bytes, latents, visual_embeds
    attach/manifest.json
    condensed/                            the CondensedDataset (save_to_disk), `d2c condense` only

See ``docs/scale.md`` for the ImageNet-1k recipe.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

RUN_FILE = "d2c_run.json"
SELECTION_FILE = "selection.json"
MANIFEST_FILE = "manifest.json"
SCORE_DIR, SCORES_DIR, ATTACH_DIR, CONDENSED_DIR = "score", "scores", "attach", "condensed"
RUN_FORMAT_VERSION = 1
DIGITS = "digits"


# --------------------------------------------------------------------------------------
# atomic files
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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _write_json_atomic(path: Path, obj: Any) -> None:
    data = (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()
    atomic_write(path, lambda handle: handle.write(data))


def _save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    atomic_write(path, lambda handle: np.savez(handle, **arrays))


def shard_path(folder: Path, shard: int, num_shards: int) -> Path:
    return folder / f"shard-{shard:05d}-of-{num_shards:05d}.npz"


def load_shard(path: Path, required: Sequence[str]) -> dict[str, np.ndarray] | None:
    """A finished shard's arrays, or None if the file is missing or unreadable (then it is recomputed)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except Exception as err:  # a damaged file (e.g. truncated by hand): recompute, never trust it
        logger.warning("shard file %s is unreadable (%s); it will be recomputed", path, err)
        return None
    missing = [name for name in required if name not in arrays]
    if missing:
        logger.warning("shard file %s lacks %s; it will be recomputed", path, missing)
        return None
    return arrays


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


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def check_run_config(output_dir: Path, phase: str, config: Mapping[str, Any], *, write: bool) -> None:
    """Refuse to mix phase outputs of different configs; record ``config`` for the phase.

    Raises:
        ValueError naming the differing keys if ``d2c_run.json`` holds another config for ``phase``,
        or if the phase folder has shard files but no recorded config.
    """
    config = _jsonable(config)
    run_file = output_dir / RUN_FILE
    run = json.loads(run_file.read_text()) if run_file.is_file() else {"format_version": RUN_FORMAT_VERSION}
    old = run.get("phases", {}).get(phase)
    if old is not None:
        diff = config_diff(old, config)
        if diff:
            raise ValueError(
                f"{output_dir} holds {phase} results of a different run config (differing keys: {', '.join(diff)}); "
                f"use another --output_dir, or delete {output_dir / phase} and the {phase!r} entry of {run_file} to "
                "start over"
            )
        return
    folder = output_dir / phase
    if folder.is_dir() and any(folder.glob("shard-*.npz")):
        raise ValueError(
            f"{folder} has shard files but {run_file} records no {phase} config, so they cannot be trusted; "
            "use another --output_dir or remove that folder"
        )
    if write:
        run.setdefault("phases", {})[phase] = config
        _write_json_atomic(run_file, run)


def open_phase(output_dir: Path, phase: str, config: Mapping[str, Any], state: Any) -> Path:
    """Record (main process) and check (every process) ``phase``'s run config, then return its shard folder."""
    if state.is_main_process:
        check_run_config(output_dir, phase, config, write=True)
    state.wait_for_everyone()
    check_run_config(output_dir, phase, config, write=False)
    folder = output_dir / phase
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _read_run(output_dir: Path) -> dict[str, Any]:
    run_file = output_dir / RUN_FILE
    if not run_file.is_file():
        raise FileNotFoundError(f"{run_file} not found: run `d2c score` (or `d2c condense`) first")
    return json.loads(run_file.read_text())


# --------------------------------------------------------------------------------------
# the source dataset
# --------------------------------------------------------------------------------------


@dataclass
class Source:
    """The rows to process: ``data`` is a map-style ``Dataset`` or an ``IterableDataset`` whose image
    column is not decoded (``Image(decode=False)``), ``num_rows`` its length."""

    data: Any
    num_rows: int
    streaming: bool
    class_names: tuple[str, ...]
    label_feature: Any
    identity: dict[str, Any]
    image_column: str
    label_column: str
    key_column: str | None

    def columns(self) -> list[str]:
        return [c for c in (self.image_column, self.label_column, self.key_column) if c]


def open_source(
    dataset: str,
    *,
    split: str = "train",
    streaming: bool = False,
    image_column: str = "image",
    label_column: str = "label",
    key_column: str | None = None,
    max_samples: int | None = None,
    num_rows: int | None = None,
    num_classes: int | None = None,
) -> Source:
    """Open ``dataset`` (``"digits"``, a ``save_to_disk`` folder, or a ``load_dataset`` name/path) and
    check its columns before any model is loaded.

    Streaming needs the split's size (from the dataset's metadata, or ``num_rows``) so that shards
    can be assigned before reading; a ``save_to_disk`` folder or ``digits`` is streamed through
    ``to_iterable_dataset()`` (same row order).
    """
    from datasets import Dataset, DatasetDict, load_dataset, load_from_disk

    from .data import load_digits_dataset

    path = Path(dataset)
    if dataset == DIGITS:
        data = load_digits_dataset()
    elif path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file()):
        data = load_from_disk(str(path))
    else:
        data = load_dataset(dataset, split=split, streaming=streaming)
    if isinstance(data, DatasetDict):
        if split not in data:
            raise ValueError(f"--split {split!r} is not a split of {dataset!r}; splits: {list(data)}")
        data = data[split]
    size = len(data) if isinstance(data, Dataset) else None
    if size is None:
        splits = getattr(data.info, "splits", None) or {}
        size = splits[split].num_examples if split in splits and splits[split].num_examples else num_rows
        if size is None:
            raise ValueError(
                f"the size of the streaming split {split!r} of {dataset!r} is unknown: pass --num_rows N"
            )
    if max_samples is not None:
        if max_samples < 1:
            raise ValueError(f"--max_samples must be positive, got {max_samples}")
        size = min(size, max_samples)
        data = data.select(range(size)) if isinstance(data, Dataset) else data.take(size)
    identity: dict[str, Any] = {"dataset": dataset, "split": split, "num_rows": int(size)}
    return source_from_dataset(
        data,
        identity,
        num_rows=size,
        streaming=streaming,
        image_column=image_column,
        label_column=label_column,
        key_column=key_column,
        num_classes=num_classes,
    )


def source_from_dataset(
    data: Any,
    identity: Mapping[str, Any],
    *,
    num_rows: int | None = None,
    streaming: bool = False,
    image_column: str = "image",
    label_column: str = "label",
    key_column: str | None = None,
    num_classes: int | None = None,
) -> Source:
    """A :class:`Source` over an already-loaded ``Dataset`` / ``IterableDataset`` (columns checked);
    ``identity`` names it in the run config (add what identifies the data, e.g. a fingerprint)."""
    from datasets import Dataset, Image, IterableDataset

    from .data import prepare_dataset

    size = len(data) if isinstance(data, Dataset) else num_rows
    if size is None:
        raise ValueError("pass num_rows for an IterableDataset")
    identity = {**identity, "num_rows": int(size)}
    if isinstance(data, Dataset):
        identity["fingerprint"] = data._fingerprint
    data, info = prepare_dataset(
        data,
        image_column,
        label_column,
        num_classes=None if isinstance(data, Dataset) else num_classes,
    )
    if key_column is not None and key_column not in data.features:
        raise ValueError(f"--key_column {key_column!r} is not a column; columns: {list(data.features)}")
    label_feature = data.features[label_column]
    columns = [c for c in (image_column, label_column, key_column) if c]
    data = data.select_columns(columns)
    if data.features[image_column].decode:
        data = data.cast_column(image_column, Image(decode=False))
    if streaming and isinstance(data, Dataset):
        data = data.to_iterable_dataset()
    if isinstance(data, Dataset):
        data = data.with_format(None)
    return Source(
        data=data,
        num_rows=int(size),
        streaming=isinstance(data, IterableDataset),
        class_names=info.names,
        label_feature=label_feature,
        identity=identity,
        image_column=image_column,
        label_column=label_column,
        key_column=key_column,
    )


# --------------------------------------------------------------------------------------
# the data loader: decoding and cropping in worker processes
# --------------------------------------------------------------------------------------


def _image_bytes(value: Any) -> bytes:
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            return bytes(value["bytes"])
        if value.get("path"):
            return Path(value["path"]).read_bytes()
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    raise ValueError(f"unsupported image value {type(value).__name__}")


@dataclass
class _Prep:
    """What a worker does to one batch of raw rows (picklable for worker processes)."""

    image_column: str
    label_column: str
    key_column: str | None
    resolution: int
    num_classes: int
    skip_corrupt: bool
    keep_bytes: bool

    def __call__(self, rows: np.ndarray, raw: Mapping[str, list]) -> dict[str, Any]:
        from .data import center_crop, check_labels, decode_image
        from .scoring import pixel_keys, value_keys

        keep, pixels, blobs, corrupt, upsampled = [], [], [], [], 0
        labels = raw[self.label_column]
        for i, (row, value) in enumerate(zip(rows.tolist(), raw[self.image_column])):
            if labels[i] is None:
                raise ValueError(f"column {self.label_column!r} has a missing label (None) at row {row}")
            try:
                image = decode_image(value, row)
                crop = center_crop(image, self.resolution)
            except Exception as err:
                if not self.skip_corrupt:
                    raise ValueError(
                        f"corrupt image in column {self.image_column!r} at row {row}: {err} "
                        "(pass --skip_corrupt to skip such rows)"
                    ) from err
                corrupt.append(row)
                continue
            upsampled += min(image.size) < self.resolution
            keep.append(i)
            pixels.append(crop)
            if self.keep_bytes:
                blobs.append(_image_bytes(value))
        r = self.resolution
        pixels_arr = np.stack(pixels) if pixels else np.zeros((0, r, r, 3), np.uint8)
        kept_rows = rows[keep]
        y = check_labels(
            np.asarray([labels[i] for i in keep], dtype=np.int64),
            self.num_classes,
            self.label_column,
            rows=kept_rows,
        )
        if self.key_column:
            keys = value_keys([raw[self.key_column][i] for i in keep], kept_rows, self.key_column)
        else:
            keys = pixel_keys(pixels_arr)
        out = {
            "rows": torch.from_numpy(kept_rows.astype(np.int64)),
            "pixels": torch.from_numpy(pixels_arr),
            "labels": torch.from_numpy(y),
            "keys": torch.from_numpy(keys.view(np.int64)),  # torch has no uint64 collate; viewed back later
            "corrupt": torch.tensor(corrupt, dtype=torch.int64),
            "upsampled": int(upsampled),
        }
        if self.keep_bytes:
            out["bytes"] = blobs
        return out


class BatchStream(torch.utils.data.IterableDataset):
    """The batches ``[(shard, rows), ...]`` of a rank, read and preprocessed in ``DataLoader`` workers.

    Worker ``w`` of ``W`` handles batches ``w, w + W, ...`` so the DataLoader's round-robin returns
    them in order. A map-style source is read by row index; a streaming source is walked once per
    worker without decoding the rows it does not own (and the walk stops after its last row).
    """

    def __init__(self, source: Source, batches: Sequence[tuple[int, np.ndarray]], prep: _Prep) -> None:
        self.source, self.batches, self.prep = source, list(batches), prep

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        mine = list(range(worker, len(self.batches), workers))
        reader = self._read_stream if self.source.streaming else self._read_map
        for j, raw in reader(mine):
            shard, rows = self.batches[j]
            out = self.prep(rows, raw)
            out["shard"], out["batch"] = shard, j
            yield out

    def _read_map(self, mine: list[int]) -> Iterator[tuple[int, dict[str, list]]]:
        data = self.source.data
        for j in mine:
            rows = self.batches[j][1]
            if len(rows) and rows[-1] - rows[0] + 1 == len(rows):  # contiguous: a slice is cheapest
                yield j, data[int(rows[0]) : int(rows[-1]) + 1]
            else:
                yield j, data[rows.tolist()]

    def _read_stream(self, mine: list[int]) -> Iterator[tuple[int, dict[str, list]]]:
        if not mine:
            return
        columns = self.source.columns()
        position = 0  # global row index of the next streamed row
        cursor = 0  # index into `mine`
        wanted = self.batches[mine[0]][1]
        got: dict[str, list] = {c: [] for c in columns}
        for chunk in self.source.data.iter(batch_size=256):
            n = len(chunk[columns[0]])
            while cursor < len(mine):
                first = np.searchsorted(wanted, position)
                last = np.searchsorted(wanted, position + n)
                for c in columns:
                    got[c].extend(chunk[c][int(wanted[k] - position)] for k in range(first, last))
                if len(got[columns[0]]) < len(wanted):
                    break  # the batch continues in the next chunk
                yield mine[cursor], got
                cursor += 1
                got = {c: [] for c in columns}
                if cursor < len(mine):
                    wanted = self.batches[mine[cursor]][1]
            if cursor >= len(mine):
                return
            position += n
        if cursor < len(mine):
            raise RuntimeError(
                f"the stream ended at row {position} but batch rows up to {int(wanted[-1])} were expected; "
                "--num_rows is larger than the dataset"
            )


def make_loader(
    source: Source,
    batches: Sequence[tuple[int, np.ndarray]],
    prep: _Prep,
    num_workers: int,
    device: torch.device,
):
    return torch.utils.data.DataLoader(
        BatchStream(source, batches, prep),
        batch_size=None,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if num_workers else None,
        persistent_workers=False,
    )


def plan_batches(
    shard_rows: Mapping[int, np.ndarray], batch_size: int
) -> tuple[list[tuple[int, np.ndarray]], dict[int, int]]:
    """Cut each shard's rows into batches (never across shards): ``(batches, batches per shard)``."""
    batches, counts = [], {}
    for shard in sorted(shard_rows):
        rows = shard_rows[shard]
        parts = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
        batches += [(shard, part) for part in parts]
        counts[shard] = len(parts)
    return batches, counts


# --------------------------------------------------------------------------------------
# shard bookkeeping shared by the phases
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


def _shard_plan(num_items: int, shard_size: int) -> list[tuple[int, int]]:
    return [(start, min(start + shard_size, num_items)) for start in range(0, num_items, shard_size)]


def _run_shards(
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
            _save_npz(shard_path(folder, k, num_shards), arrays)
            counts.computed += 1
            counts.rows += len(arrays["rows"])
            counts.corrupt += len(arrays.get("corrupt", ()))
            logger.info("rank %d: %s shard %d/%d written", rank, folder.name, k + 1, num_shards)
    return counts


def _write_manifest(
    folder: Path, state: Any, counts: PhaseCounts, num_shards: int, extra: Mapping[str, Any]
) -> dict:
    from accelerate.utils import gather_object

    per_rank = gather_object([counts.__dict__]) if state.num_processes > 1 else [counts.__dict__]
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
        _write_json_atomic(folder / MANIFEST_FILE, manifest)
        logger.info(
            "%s: %d shards, %d skipped (done earlier), %d computed",
            folder.name,
            num_shards,
            manifest["skipped_shards"],
            manifest["computed_shards"],
        )
    return manifest


def _load_all_shards(folder: Path, num_shards: int, required: Sequence[str]) -> list[dict[str, np.ndarray]]:
    shards, missing = [], []
    for k in range(num_shards):
        arrays = load_shard(shard_path(folder, k, num_shards), required)
        if arrays is None:
            missing.append(k)
        shards.append(arrays)
    if missing:
        raise RuntimeError(
            f"{len(missing)} of {num_shards} shards in {folder} are not finished (e.g. shard {missing[0]}, "
            "whose rank died?): rerun the same command to compute only those"
        )
    return shards


# --------------------------------------------------------------------------------------
# phase 1: score
# --------------------------------------------------------------------------------------


def _dtype_option(value: str | None) -> str | None:
    return None if value in (None, "auto") else value


def load_scorer_and_vae(args: argparse.Namespace, device: torch.device):
    """The scorer (and the VAE it shares with Attach), loaded like :func:`d2c_hf.condense` does."""
    from .attach import load_vae_any
    from .scoring import PIXEL_SPACE, DifficultyScorer

    vae = (
        None if args.vae in (None, "", PIXEL_SPACE, "none") else load_vae_any(args.vae, torch.float32, device)
    )
    scorer = DifficultyScorer.from_pretrained(
        args.scorer,
        vae=vae if vae is not None else PIXEL_SPACE,
        num_timesteps=args.num_timesteps,
        seed=args.seed,
        resolution=args.resolution,
        batch_size=args.batch_size,
        dtype=_dtype_option(args.dtype),
        device=device,
        image_column=args.image_column,
        label_column=args.label_column,
        key_column=args.key_column,
        return_per_timestep=True,
        max_forward_batch=args.max_forward_batch,
    )
    if args.compile:
        scorer.model = torch.compile(scorer.model)
    return scorer, vae


def _score_config(args: argparse.Namespace, source: Source, scorer: Any) -> dict[str, Any]:
    config = dict(scorer.config)
    config.pop("return_per_timestep", None)
    return {
        "source": source.identity,
        "columns": {"image": source.image_column, "label": source.label_column, "key": source.key_column},
        "scorer": config,
        "shard_size": args.shard_size,
        "batch_size": args.batch_size,
        "max_forward_batch": args.max_forward_batch,
        "compile": bool(args.compile),
        "skip_corrupt": bool(args.skip_corrupt),
        "class_names": list(source.class_names),
    }


def _check_sizes(args: argparse.Namespace) -> None:
    for name in ("batch_size", "shard_size", "num_timesteps"):
        value = getattr(args, name)
        if value is None or value < 1:
            raise ValueError(f"--{name} must be a positive integer, got {value}")
    if args.shard_size % args.batch_size:
        raise ValueError(
            f"--shard_size {args.shard_size} must be a multiple of --batch_size {args.batch_size} (so that every "
            "batch holds the same rows whatever the number of processes)"
        )
    if args.num_workers < 0:
        raise ValueError(f"--num_workers must be >= 0, got {args.num_workers}")


def run_score(
    args: argparse.Namespace, state: Any, source: Source | None = None, scorer: Any = None
) -> dict[str, Any]:
    """Phase 1 on this rank, then (main process) merge into ``scores/``. Returns the manifest."""
    from .vae import scale_latents

    _check_sizes(args)
    output_dir = Path(args.output_dir)
    source = source or _open_from_args(args)
    device = state.device
    if scorer is None:
        scorer, _ = load_scorer_and_vae(args, device)
    if not source.streaming:
        scorer._check_label_range(source.data, len(source.class_names))
    config = _score_config(args, source, scorer)
    folder = open_phase(output_dir, SCORE_DIR, config, state)

    ranges = _shard_plan(source.num_rows, args.shard_size)
    num_shards = len(ranges)
    shard_rows = {k: np.arange(a, b, dtype=np.int64) for k, (a, b) in enumerate(ranges)}
    store_posterior = bool(getattr(args, "store_posterior", False))
    prep = _Prep(
        source.image_column,
        source.label_column,
        source.key_column,
        scorer.resolution,
        scorer.num_classes,
        bool(args.skip_corrupt),
        keep_bytes=False,
    )
    upsampled = 0

    def compute(todo: dict[int, np.ndarray]) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        nonlocal upsampled
        batches, per_shard = plan_batches(todo, args.batch_size)
        parts: dict[int, list[dict[str, np.ndarray]]] = {k: [] for k in todo}
        for item in make_loader(source, batches, prep, args.num_workers, device):
            shard = int(item["shard"])
            upsampled += item["upsampled"]
            n = len(item["rows"])
            part = {"rows": item["rows"].numpy(), "corrupt": item["corrupt"].numpy()}
            part["label"] = item["labels"].numpy()
            part["key"] = item["keys"].numpy().view(np.uint64)
            if n:
                pixels = item["pixels"].to(device, non_blocking=True)
                if store_posterior:
                    mean, std = scorer.encode_posterior(pixels)
                    x0 = (
                        scale_latents(mean, scorer.scaling_factor, scorer.shift_factor)
                        if scorer.vae
                        else mean
                    )
                    part["posterior"] = torch.cat([mean, std], dim=1).to("cpu", torch.float16).numpy()
                else:
                    x0 = scorer.encode(pixels)
                d, p = scorer.score_inputs(x0, part["label"], part["key"])
            else:
                d, p = np.zeros(0, np.float32), np.zeros((0, scorer.num_timesteps), np.float32)
                if store_posterior:
                    shape = (2 * scorer.channels, scorer.latent_size, scorer.latent_size)
                    part["posterior"] = np.zeros((0, *shape), np.float16)
            part["difficulty"], part["per_timestep"] = d, p
            parts[shard].append(part)
            if len(parts[shard]) == per_shard[shard]:
                done = parts.pop(shard)
                yield shard, {name: np.concatenate([q[name] for q in done]) for name in done[0]}

    counts = _run_shards(
        folder, shard_rows, num_shards, ("rows", "difficulty", "label", "corrupt"), state, compute
    )
    if upsampled:
        logger.warning(
            "rank %d: %d images were smaller than %dpx and were upsampled",
            state.process_index,
            upsampled,
            scorer.resolution,
        )
    state.wait_for_everyone()
    manifest = _write_manifest(folder, state, counts, num_shards, {"phase": "score"})
    if state.is_main_process:
        merged = merge_scores(output_dir)
        manifest["corrupt_rows"] = merged["corrupt_rows"]
        manifest["scored_rows"] = merged["scored_rows"]
        _write_json_atomic(folder / MANIFEST_FILE, manifest)
    state.wait_for_everyone()
    return manifest


def merge_scores(output_dir: str | os.PathLike) -> dict[str, Any]:
    """Concatenate the score shards in shard order into ``scores/`` (a ``datasets`` folder with
    ``source_index``, ``label``, ``difficulty``, ``difficulty_per_timestep``), atomically."""
    from datasets import ClassLabel, Dataset, Features, List, Value

    output_dir = Path(output_dir)
    config = _read_run(output_dir)["phases"][SCORE_DIR]
    num_rows, shard_size = config["source"]["num_rows"], config["shard_size"]
    num_shards = len(_shard_plan(num_rows, shard_size))
    shards = _load_all_shards(output_dir / SCORE_DIR, num_shards, ("rows", "difficulty", "label", "corrupt"))
    cat = {name: np.concatenate([s[name] for s in shards]) for name in ("rows", "label", "difficulty")}
    per_timestep = np.concatenate([s["per_timestep"] for s in shards])
    corrupt = np.concatenate([s["corrupt"] for s in shards]).astype(np.int64)
    names = config["class_names"]
    steps = config["scorer"]["num_timesteps"]
    table = Dataset.from_dict(
        {
            "source_index": cat["rows"],
            "label": cat["label"],
            "difficulty": cat["difficulty"].astype(np.float32),
            "difficulty_per_timestep": per_timestep.astype(np.float32),
        },
        features=Features(
            {
                "source_index": Value("int64"),
                "label": ClassLabel(names=names),
                "difficulty": Value("float32"),
                "difficulty_per_timestep": List(Value("float32"), length=steps),
            }
        ),
    )
    target = output_dir / SCORES_DIR
    staging = output_dir / f".{SCORES_DIR}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        table.save_to_disk(str(staging))
        from .condensed import _replace_dir

        _replace_dir(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if len(corrupt):
        logger.warning(
            "%d corrupt images were skipped (rows %s...); they are excluded from selection",
            len(corrupt),
            corrupt[:5].tolist(),
        )
    return {"scored_rows": len(table), "corrupt_rows": corrupt.tolist(), "num_shards": num_shards}


def load_scores(output_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """The merged scores as arrays: ``source_index``, ``label``, ``difficulty``, ``difficulty_per_timestep``."""
    from datasets import load_from_disk

    table = load_from_disk(str(Path(output_dir) / SCORES_DIR)).with_format("numpy")
    return {
        name: np.asarray(table[name])
        for name in ("source_index", "label", "difficulty", "difficulty_per_timestep")
    }


# --------------------------------------------------------------------------------------
# phase 2: select
# --------------------------------------------------------------------------------------


def run_select(args: argparse.Namespace) -> dict[str, Any]:
    """Select from the merged scores (main process only; cheap) and write ``selection.json``."""
    from .selection import select

    output_dir = Path(args.output_dir)
    run = _read_run(output_dir)
    if SCORE_DIR not in run.get("phases", {}):
        raise FileNotFoundError(f"{output_dir} has no scores: run `d2c score` first")
    if not (output_dir / SCORES_DIR).is_dir():
        merge_scores(output_dir)
    scores = load_scores(output_dir)
    num_classes = len(run["phases"][SCORE_DIR]["class_names"])
    result = select(
        scores["difficulty"].astype(np.float32),
        scores["label"].astype(np.int64),
        images_per_class=args.images_per_class,
        ratio=args.ratio,
        strategy=args.strategy,
        interval=_interval_option(args.interval),
        seed=args.seed,
        num_classes=num_classes,
    )
    source_rows = scores["source_index"][result.indices].astype(np.int64)
    record = {
        "source_indices": source_rows.tolist(),
        "positions": np.asarray(result.indices, np.int64).tolist(),
        "result": _jsonable(result.to_dict()),
        "options": {
            "ratio": args.ratio,
            "images_per_class": args.images_per_class,
            "strategy": args.strategy,
            "interval": _interval_option(args.interval),
            "seed": args.seed,
        },
    }
    _write_json_atomic(output_dir / SELECTION_FILE, record)
    logger.info(
        "select: kept %d of %d scored rows (%s)", len(source_rows), len(scores["difficulty"]), args.strategy
    )
    return record


def _interval_option(value: Any) -> int | str:
    if value in (None, "auto"):
        return "auto"
    return int(value)


# --------------------------------------------------------------------------------------
# phase 3: attach
# --------------------------------------------------------------------------------------


def _posterior_lookup(output_dir: Path, rows: np.ndarray) -> np.ndarray | None:
    """The scorer's stored VAE posteriors of ``rows`` if every score shard holds them, else None."""
    run = _read_run(output_dir)["phases"][SCORE_DIR]
    num_shards = len(_shard_plan(run["source"]["num_rows"], run["shard_size"]))
    shard_size = run["shard_size"]
    out = None
    for k in np.unique(rows // shard_size).tolist():
        shard = load_shard(shard_path(output_dir / SCORE_DIR, k, num_shards), ("rows", "posterior"))
        if shard is None:
            return None
        want = rows[rows // shard_size == k]
        where = np.searchsorted(shard["rows"], want)
        if out is None:
            out = np.empty((len(rows), *shard["posterior"].shape[1:]), np.float16)
        out[np.searchsorted(rows, want)] = shard["posterior"][where]
    return out


def run_attach(args: argparse.Namespace, state: Any, source: Source | None = None) -> dict[str, Any]:
    """Phase 3 on this rank: latents and visual tokens (and the image bytes) of the selected rows."""
    from .attach import LatentEncoder, VisualAttacher, _check_finite, load_vae_any, parse_attach

    _check_sizes(args)
    output_dir = Path(args.output_dir)
    selection_file = output_dir / SELECTION_FILE
    if not selection_file.is_file():
        raise FileNotFoundError(f"{selection_file} not found: run `d2c select` first")
    selected = np.asarray(json.loads(selection_file.read_text())["source_indices"], dtype=np.int64)
    parts = parse_attach(args.attach)
    source = source or _open_from_args(args)
    device = state.device
    attach_dtype = _dtype_option(args.attach_dtype)
    vae = None
    needs_vae = "latents" in parts or "visual" in parts
    if needs_vae and args.vae not in (None, "", "pixel", "none"):
        vae = load_vae_any(args.vae, torch.float32, device)
    from .vae import downsample_factor

    factor = downsample_factor(vae)
    if args.resolution % factor or (args.resolution // factor) % args.patch_size:
        raise ValueError(
            f"--resolution {args.resolution} must be divisible by the VAE factor {factor} times --patch_size "
            f"{args.patch_size}"
        )
    tokens = args.num_visual_tokens or ((args.resolution // factor) // args.patch_size) ** 2
    encoder = visual = None
    reuse = None
    config: dict[str, Any] = {
        "source": source.identity,
        "selection_sha": _sha(selected.tobytes()),
        "parts": [p for p in parts if p != "text"],
        "shard_size": args.shard_size,
        "batch_size": args.batch_size,
        "skip_corrupt": bool(args.skip_corrupt),
    }
    if "latents" in parts:
        encoder = LatentEncoder(
            vae, resolution=args.resolution, batch_size=args.batch_size, dtype=attach_dtype, device=device
        )
        config["latents"] = encoder.config
        reuse = _posterior_lookup(output_dir, selected) if args.reuse_latents else None
        if reuse is not None:
            score_vae = _read_run(output_dir)["phases"][SCORE_DIR]["scorer"]["vae"]
            if (
                score_vae != encoder.config["vae"]
                or args.resolution != _read_run(output_dir)["phases"][SCORE_DIR]["scorer"]["resolution"]
            ):
                reuse = None  # another VAE or crop: encode again
        config["latents_from"] = "scorer posterior" if reuse is not None else "vae"
    if "visual" in parts:
        visual = VisualAttacher.from_pretrained(
            args.vision_encoder,
            num_tokens=tokens,
            resolution=args.resolution,
            batch_size=args.batch_size,
            dtype=attach_dtype,
            device=device,
        )
        config["visual"] = visual.config
    folder = open_phase(output_dir, ATTACH_DIR, config, state)

    ranges = _shard_plan(len(selected), args.shard_size)
    num_shards = len(ranges)
    shard_rows = {k: selected[a:b] for k, (a, b) in enumerate(ranges)}
    prep = _Prep(
        source.image_column,
        source.label_column,
        None,
        args.resolution,
        len(source.class_names),
        bool(args.skip_corrupt),
        keep_bytes=True,
    )

    def compute(todo: dict[int, np.ndarray]) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        batches, per_shard = plan_batches(todo, args.batch_size)
        acc: dict[int, list[dict[str, np.ndarray]]] = {k: [] for k in todo}
        for item in make_loader(source, batches, prep, args.num_workers, device):
            shard = int(item["shard"])
            rows = item["rows"].numpy()
            pixels = item["pixels"]
            blobs = item["bytes"]
            part = {
                "rows": rows,
                "label": item["labels"].numpy(),
                "corrupt": item["corrupt"].numpy(),
                "bytes": np.frombuffer(b"".join(blobs), np.uint8),
                "offsets": np.cumsum([0, *map(len, blobs)]).astype(np.int64),
            }
            if encoder is not None:
                if reuse is not None:
                    part["latents"] = reuse[np.searchsorted(selected, rows)]
                else:
                    moments = encoder.encode(pixels.numpy()).to("cpu", torch.float16)
                    _check_finite(moments, "the VAE posterior", rows, "run the VAE in float32")
                    part["latents"] = moments.numpy()
            if visual is not None:
                embeds = visual.encode(pixels.numpy()).to("cpu", torch.float16)
                _check_finite(embeds, "the visual tokens", rows, "run the encoder in float32 or bfloat16")
                part["visual_embeds"] = embeds.numpy()
            acc[shard].append(part)
            if len(acc[shard]) == per_shard[shard]:
                yield shard, _concat_parts(acc.pop(shard))

    counts = _run_shards(
        folder, shard_rows, num_shards, ("rows", "bytes", "offsets", "label"), state, compute
    )
    state.wait_for_everyone()
    manifest = _write_manifest(
        folder, state, counts, num_shards, {"phase": "attach", "latents_from": config.get("latents_from")}
    )
    state.wait_for_everyone()
    return manifest


def _concat_parts(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    out = {name: np.concatenate([p[name] for p in parts]) for name in parts[0] if name != "offsets"}
    offsets, base = [np.zeros(1, np.int64)], 0
    for p in parts:
        offsets.append(p["offsets"][1:] + base)
        base += int(p["offsets"][-1])
    out["offsets"] = np.concatenate(offsets)
    return out


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------
# phase 4: assemble the condensed dataset
# --------------------------------------------------------------------------------------


def assemble(args: argparse.Namespace) -> Any:
    """Build the :class:`CondensedDataset` from the merged phases (main process) and save it to
    ``output_dir/condensed`` atomically; returns it. Same tables and info keys as :func:`d2c_hf.condense`."""
    from datasets import Array2D, Array3D, ClassLabel, Dataset, Features, Image, Value

    from .attach import TextAttacher, class_prompts, parse_attach
    from .condensed import CondensedDataset, _scores_features, build_info

    output_dir = Path(args.output_dir)
    run = _read_run(output_dir)["phases"]
    score_cfg, attach_cfg = run[SCORE_DIR], run[ATTACH_DIR]
    selection = json.loads((output_dir / SELECTION_FILE).read_text())
    parts = parse_attach(args.attach)
    names = score_cfg["class_names"]
    num_shards = len(_shard_plan(len(selection["source_indices"]), attach_cfg["shard_size"]))
    shards = _load_all_shards(output_dir / ATTACH_DIR, num_shards, ("rows", "bytes", "offsets", "label"))
    got = _concat_parts(shards) if shards else {}
    rows = got.get("rows", np.zeros(0, np.int64))
    scores = load_scores(output_dir)
    position = np.searchsorted(scores["source_index"], rows)
    images = [
        {"bytes": got["bytes"][got["offsets"][i] : got["offsets"][i + 1]].tobytes(), "path": None}
        for i in range(len(rows))
    ]
    class_label = ClassLabel(names=names)
    columns: dict[str, Any] = {
        "image": images,
        "label": got.get("label", np.zeros(0, np.int64)),
        "source_index": rows,
        "difficulty": scores["difficulty"][position].astype(np.float32),
    }
    features = {
        "image": Image(),
        "label": class_label,
        "source_index": Value("int64"),
        "difficulty": Value("float32"),
    }
    if "latents" in parts:
        columns["latents"] = got["latents"]
        lat = attach_cfg["latents"]
        shape = (2 * lat["latent_channels"], lat["latent_size"], lat["latent_size"])
        features["latents"] = Array3D(shape, "float16")
    if "visual" in parts:
        columns["visual_embeds"] = got["visual_embeds"]
        vis = attach_cfg["visual"]
        features["visual_embeds"] = Array2D((vis["num_tokens"], vis["hidden_size"]), "float16")
    samples = Dataset.from_dict(columns, features=Features(features))
    classes = text_info = None
    if "text" in parts:
        text = TextAttacher.from_pretrained(
            args.text_encoder, prompt_template=args.prompt_template, dtype=_dtype_option(args.attach_dtype)
        )
        class_prompts(names, args.prompt_template)
        classes = text.encode_classes(names)
        text_info = text.config
    score_table = Dataset.from_dict(
        {
            "source_index": scores["source_index"],
            "label": scores["label"],
            "difficulty": scores["difficulty"],
        },
        features=_scores_features(class_label),
    )
    source = score_cfg["source"]
    info = build_info(
        source={
            "name": source["dataset"],
            "config": None,
            "split": source["split"],
            "num_rows": source["num_rows"],
            "fingerprint": source.get("fingerprint"),
            "image_column": score_cfg["columns"]["image"],
            "label_column": score_cfg["columns"]["label"],
        },
        class_names=names,
        ratio=args.ratio,
        selection=selection["result"],
        interval=selection["options"]["interval"],
        feature_column=None,
        labels=np.asarray(columns["label"], np.int64),
        scoring=score_cfg["scorer"],
        latents=attach_cfg.get("latents"),
        visual=attach_cfg.get("visual"),
        text=text_info,
        attach=parts,
        resolution=args.resolution,
        patch_size=args.patch_size,
        num_visual_tokens=attach_cfg["visual"]["num_tokens"] if "visual" in parts else None,
        seed=selection["options"]["seed"],
        notes=args.note,
        distributed={
            "score_shards": len(_shard_plan(source["num_rows"], score_cfg["shard_size"])),
            "attach_shards": num_shards,
            "latents_from": attach_cfg.get("latents_from"),
        },
    )
    condensed = CondensedDataset(samples, classes, info, scores=score_table)
    condensed.save_to_disk(output_dir / CONDENSED_DIR, overwrite=True, card=not args.no_card)
    return condensed


# --------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------


def _open_from_args(args: argparse.Namespace) -> Source:
    return open_source(
        args.dataset,
        split=args.split,
        streaming=args.streaming,
        image_column=args.image_column,
        label_column=args.label_column,
        key_column=getattr(args, "key_column", None),
        max_samples=args.max_samples,
        num_rows=args.num_rows,
        num_classes=args.num_classes,
    )


def _add_data_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("data")
    g.add_argument(
        "--dataset", required=True, help="'digits', a save_to_disk folder, or a load_dataset name/path"
    )
    g.add_argument("--split", default="train")
    g.add_argument("--streaming", action="store_true", help="read the source as an IterableDataset")
    g.add_argument("--image_column", default="image")
    g.add_argument("--label_column", default="label")
    g.add_argument("--max_samples", type=int, default=None, help="only the first N rows")
    g.add_argument("--num_rows", type=int, default=None, help="size of a streaming split without metadata")
    g.add_argument(
        "--num_classes", type=int, default=None, help="classes of a streaming integer label column"
    )
    g.add_argument(
        "--skip_corrupt", action="store_true", help="skip undecodable images (default: fail, naming the row)"
    )


def _add_run_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("run")
    g.add_argument("--output_dir", required=True)
    g.add_argument("--resolution", type=int, default=256)
    g.add_argument("--batch_size", type=int, default=32)
    g.add_argument("--shard_size", type=int, default=2048, help="rows per shard (a multiple of --batch_size)")
    g.add_argument("--num_workers", type=int, default=4, help="DataLoader workers decoding images")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--cpu", action="store_true", help="run on the CPU even if a GPU is available")


def _add_score_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("scoring")
    g.add_argument("--scorer", default="facebook/DiT-XL-2-256")
    g.add_argument("--vae", default="stabilityai/sd-vae-ft-ema", help="AutoencoderKL, or 'pixel'")
    g.add_argument("--num_timesteps", type=int, default=10)
    g.add_argument(
        "--key_column", default=None, help="column whose value replaces the pixel hash as the noise key"
    )
    g.add_argument(
        "--dtype", default=None, help="scorer autocast dtype: fp32 | bf16 | fp16 (default: bf16 on CUDA)"
    )
    g.add_argument(
        "--max_forward_batch", type=int, default=None, help="most (image, timestep) pairs per forward"
    )
    g.add_argument("--compile", action="store_true", help="torch.compile the scorer")


def _add_select_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("selection")
    budget = g.add_mutually_exclusive_group(required=True)
    budget.add_argument("--ratio", type=float, default=None)
    budget.add_argument("--images_per_class", type=int, default=None)
    g.add_argument("--strategy", default="interval")
    g.add_argument("--interval", default="auto")


def _add_attach_args(parser: argparse.ArgumentParser, default_vae: bool = True) -> None:
    g = parser.add_argument_group("attach")
    if not default_vae:
        g.add_argument("--vae", default="stabilityai/sd-vae-ft-ema", help="AutoencoderKL, or 'pixel'")
    g.add_argument("--attach", nargs="*", default=["latents", "visual", "text"])
    g.add_argument("--text_encoder", default="google/flan-t5-xl")
    g.add_argument("--vision_encoder", default="facebook/dinov2-base")
    g.add_argument("--patch_size", type=int, default=2)
    g.add_argument("--num_visual_tokens", type=int, default=None)
    g.add_argument("--prompt_template", default="a photo of a {}")
    g.add_argument("--attach_dtype", default=None, help="Attach models' dtype (default float32)")
    g.add_argument(
        "--no_reuse_latents",
        dest="reuse_latents",
        action="store_false",
        help="encode the selected images again instead of reusing the scorer's VAE posterior",
    )
    g.add_argument("--no_card", action="store_true", help="skip the dataset card (README + figures)")
    g.add_argument("--note", action="append", help="a line recorded in the condensed info (repeatable)")


def _state(args: argparse.Namespace):
    from accelerate import PartialState

    return PartialState(cpu=bool(getattr(args, "cpu", False)))


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=prog, description=description)


def score_main(argv: list[str] | None = None) -> int:
    """``d2c score``: difficulty of every row, sharded over the processes, resumable; merged into ``scores/``."""
    parser = _parser("d2c score", score_main.__doc__)
    _add_data_args(parser)
    _add_run_args(parser)
    _add_score_args(parser)
    parser.add_argument(
        "--store_posterior", action="store_true", help="keep each image's VAE posterior for Attach"
    )
    args = parser.parse_args(argv)
    state = _state(args)
    manifest = run_score(args, state)
    if state.is_main_process:
        print(json.dumps({k: v for k, v in manifest.items() if k not in ("per_rank", "corrupt_rows")}))
    return 0


def select_main(argv: list[str] | None = None) -> int:
    """``d2c select``: select from the merged scores of ``--output_dir``; writes ``selection.json``."""
    parser = _parser("d2c select", select_main.__doc__)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--seed", type=int, default=0)
    _add_select_args(parser)
    args = parser.parse_args(argv)
    record = run_select(args)
    print(json.dumps({"selected": len(record["source_indices"]), "counts": record["result"]["counts"]}))
    return 0


def attach_main(argv: list[str] | None = None) -> int:
    """``d2c attach``: latents / visual tokens of the selected rows (sharded), then the condensed dataset."""
    parser = _parser("d2c attach", attach_main.__doc__)
    _add_data_args(parser)
    _add_run_args(parser)
    _add_attach_args(parser, default_vae=False)
    parser.add_argument("--ratio", type=float, default=None, help="recorded in the condensed info only")
    args = parser.parse_args(argv)
    state = _state(args)
    run_attach(args, state)
    if state.is_main_process:
        condensed = assemble(args)
        print(json.dumps({"condensed": str(Path(args.output_dir) / CONDENSED_DIR), "rows": len(condensed)}))
    state.wait_for_everyone()
    return 0


def condense_parser() -> argparse.ArgumentParser:
    """The options of ``d2c condense`` (also what :func:`d2c_hf.condense` builds for a streaming dataset)."""
    parser = _parser("d2c condense", condense_main.__doc__)
    _add_data_args(parser)
    _add_run_args(parser)
    _add_score_args(parser)
    _add_select_args(parser)
    _add_attach_args(parser)
    return parser


def condense_main(argv: list[str] | None = None) -> int:
    """``d2c condense``: score + select + attach in one resumable run; writes ``output_dir/condensed``."""
    args = condense_parser().parse_args(argv)
    from .attach import parse_attach

    parts = parse_attach(args.attach)
    args.store_posterior = bool(
        args.reuse_latents and "latents" in parts and args.vae not in (None, "", "pixel")
    )
    state = _state(args)
    source = _open_from_args(args)
    run_score(args, state, source)
    if state.is_main_process:
        run_select(args)
    state.wait_for_everyone()
    run_attach(args, state, source)
    if state.is_main_process:
        condensed = assemble(args)
        print(json.dumps({"condensed": str(Path(args.output_dir) / CONDENSED_DIR), "rows": len(condensed)}))
    state.wait_for_everyone()
    return 0


__all__ = [
    "BatchStream",
    "Source",
    "assemble",
    "atomic_write",
    "attach_main",
    "check_run_config",
    "condense_main",
    "condense_parser",
    "config_diff",
    "load_scores",
    "merge_scores",
    "open_source",
    "run_attach",
    "run_score",
    "run_select",
    "score_main",
    "select_main",
]
