"""The product of D2C: a condensed dataset, and :func:`condense` which makes one.

A :class:`CondensedDataset` holds three ``datasets.Dataset`` tables and a JSON record:

* ``samples`` — one row per selected image: ``image``, ``label`` (``ClassLabel``),
  ``source_index`` (row in the source split), ``difficulty``, and what Attach added:
  ``latents`` ``Array3D((2C, h, w), float16)`` and ``visual_embeds`` ``Array2D((h, d), float16)``;
* ``classes`` — one row per class id: ``label``, ``name``, ``prompt``, ``text_embeds``
  ``Array2D((L, D), float16)``, ``text_mask`` (int8, length L); optional;
* ``scores`` — the difficulty of *every* scored image (``source_index``, ``label``,
  ``difficulty``), for the card's figures and for re-selecting without re-scoring; optional;
* ``info`` — provenance: format version, budget, strategy, realised counts, seed, every
  model's id and revision or weights hash, latent scale, resolution, token layout, template,
  library versions.

It is saved in one of two layouts, both loaded by :meth:`CondensedDataset.load`:

``save_to_disk(path)``: ``d2c_info.json``, ``samples/``, ``classes/``, ``scores/``
(``datasets.save_to_disk`` folders: memory-mapped, fastest to load), ``README.md`` + ``figures/``.

``save_hub_folder(dir)`` / ``push_to_hub(repo_id)``: the Hub layout, parquet shards for the
configs ``default`` (``data/``), ``classes`` and ``scores``, a ``README.md`` dataset card whose
YAML ``configs:`` block makes ``load_dataset(repo)`` and ``load_dataset(repo, "classes")`` work,
``d2c_info.json`` and ``figures/``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import uuid
import warnings
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .attach import (
    LatentEncoder,
    TextAttacher,
    VisualAttacher,
    check_class_names,
    class_prompts,
    load_vae_any,
    parse_attach,
    resolve_attach_dtype,
)

logger = logging.getLogger(__name__)

#: Version of the on-disk format. Bump it when a reader of the previous version would
#: misread a new dataset; :meth:`CondensedDataset.load` refuses other versions.
FORMAT_VERSION = 1
INFO_FILENAME = "d2c_info.json"
README_FILENAME = "README.md"
FIGURES_DIR = "figures"
#: config name -> folder of its parquet shards in the Hub layout
HUB_DIRS = {"default": "data", "classes": "classes", "scores": "scores"}
#: table -> folder in the save_to_disk layout
DISK_DIRS = {"samples": "samples", "classes": "classes", "scores": "scores"}
#: key of d2c_info.json that records each saved table (row count, fingerprint); see tables_record()
TABLES_KEY = "tables"
SPLIT = "train"
#: what training_arrays can return: name -> (table, column)
TRAINING_ARRAYS = {
    "latents": ("samples", "latents"),
    "labels": ("samples", "label"),
    "visual_embeds": ("samples", "visual_embeds"),
    "difficulty": ("samples", "difficulty"),
    "text_embeds": ("classes", "text_embeds"),
    "text_mask": ("classes", "text_mask"),
}
DEFAULT_TRAINING_ARRAYS = ("latents", "labels", "visual_embeds", "text_embeds", "text_mask")


# --------------------------------------------------------------------------------------
# arrow helpers
# --------------------------------------------------------------------------------------


def _arrow_column(dataset, column: str):
    """The column as a ``pyarrow.ChunkedArray`` in the dataset's row order (zero-copy unless the
    dataset has an indices mapping from ``select``/``shuffle``)."""
    return dataset.with_format("arrow", columns=[column])[:].column(column)


def column_numpy(dataset, column: str) -> np.ndarray:
    """A scalar column as a numpy array, read through Arrow (no Python objects)."""
    return _arrow_column(dataset, column).to_numpy()


def _fixed_shape(feature: Any) -> tuple[int, ...] | None:
    """The per-row shape of a fixed-shape feature (``Array2D/3D``, fixed-length ``List``), else None."""
    from datasets import Array2D, Array3D, Array4D, Array5D, List, Sequence, Value

    if isinstance(feature, (Array2D, Array3D, Array4D, Array5D)):
        return tuple(feature.shape)
    if isinstance(feature, (List, Sequence)) and getattr(feature, "length", -1) not in (-1, None):
        inner = feature.feature
        if isinstance(inner, Value):
            return (feature.length,)
        sub = _fixed_shape(inner)
        return None if sub is None else (feature.length, *sub)
    return None


def _read_fixed_shape(
    dataset, column: str, shape: tuple[int, ...], dtype: np.dtype, device: torch.device
) -> torch.Tensor:
    """Whole fixed-shape column -> one ``(N, *shape)`` tensor on ``device``, with a single copy.

    Each Arrow chunk's nested lists are flattened to their contiguous value buffer (zero-copy
    over the memory-mapped file) and copied once into a tensor preallocated on ``device`` (so
    a CUDA target gets no host-side staging copy): no per-row Python objects and no
    float16 -> float32 upcast (hf-ecosystem.md §5b).
    """
    import pyarrow as pa

    chunks = _arrow_column(dataset, column).chunks
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


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (Path, torch.dtype, torch.device)):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"info values must be JSON-serialisable, got {type(obj).__name__}: {obj!r}")


def _normalise_info(info: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON round trip, so that ``info`` after load equals ``info`` before save."""
    return json.loads(json.dumps(dict(info), default=_jsonable))


def _check_format_version(info: Mapping[str, Any], where: str) -> None:
    from . import __version__

    version = info.get("format_version")
    if version == FORMAT_VERSION:
        return
    if version is None:
        raise ValueError(
            f"{where} has no 'format_version' in its {INFO_FILENAME}; it is not a condensed dataset"
        )
    advice = (
        "upgrade d2c-hf to read it"
        if isinstance(version, int) and version > FORMAT_VERSION
        else "re-create it with this version (condense(...).save_to_disk)"
    )
    raise ValueError(
        f"{where} uses condensed-dataset format version {version!r}, but d2c-hf {__version__} reads format "
        f"version {FORMAT_VERSION}; {advice}"
    )


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose behaviour the stored data depends on."""
    import importlib.metadata as md

    out = {}
    for name in (
        "d2c-hf",
        "torch",
        "datasets",
        "diffusers",
        "transformers",
        "huggingface_hub",
        "numpy",
        "pyarrow",
    ):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return out


# --------------------------------------------------------------------------------------
# the dataset
# --------------------------------------------------------------------------------------


class CondensedDataset:
    """A condensed dataset: selected samples with attached arrays, a class table, scores and provenance.

    Args:
        samples: ``datasets.Dataset`` with at least a ``label`` column (int or ``ClassLabel``);
            usually ``image``, ``label``, ``source_index``, ``difficulty``, ``latents``,
            ``visual_embeds``.
        classes: optional class table with ``label`` = 0..C-1 in order (see
            :meth:`d2c_hf.attach.TextAttacher.encode_classes`).
        info: JSON-able provenance record (stored as a JSON round trip; ``format_version`` is
            filled in).
        scores: optional table of every scored image: ``source_index``, ``label``, ``difficulty``.

    Raises:
        ValueError / TypeError naming the table and column for a missing ``label`` column,
        labels outside ``[0, num_classes)``, a class table not ordered 0..C-1, an info record
        that is not JSON-serialisable or has another format version.
    """

    def __init__(self, samples, classes=None, info: Mapping[str, Any] | None = None, scores=None) -> None:
        from datasets import ClassLabel, Dataset

        for name, table in (("samples", samples), ("classes", classes), ("scores", scores)):
            if table is not None and not isinstance(table, Dataset):
                raise TypeError(f"{name} must be a datasets.Dataset, got {type(table).__name__}")
        if "label" not in samples.column_names:
            raise ValueError(f"samples needs a 'label' column; it has {samples.column_names}")
        info = _normalise_info(info or {})
        info.setdefault("format_version", FORMAT_VERSION)
        _check_format_version(info, "info")
        self.samples = samples
        self.classes = classes
        self.scores = scores
        self.info = info

        label_feature = samples.features["label"]
        if classes is not None:
            for column in ("label", "name"):
                if column not in classes.column_names:
                    raise ValueError(
                        f"the classes table needs a {column!r} column; it has {classes.column_names}"
                    )
            class_ids = column_numpy(classes, "label")
            if not np.array_equal(class_ids, np.arange(len(classes))):
                raise ValueError(
                    "the classes table must hold one row per class id 0..C-1, in order of 'label'"
                )
            self._num_classes = len(classes)
        elif isinstance(label_feature, ClassLabel):
            self._num_classes = label_feature.num_classes
        elif info.get("num_classes") is not None:
            self._num_classes = int(info["num_classes"])
        else:
            self._num_classes = int(column_numpy(samples, "label").max(initial=-1)) + 1
        labels = column_numpy(samples, "label")
        if labels.size and (labels.min() < 0 or labels.max() >= self._num_classes):
            bad = int(np.flatnonzero((labels < 0) | (labels >= self._num_classes))[0])
            raise ValueError(
                f"samples row {bad} has label {labels[bad]}, outside [0, {self._num_classes}) (num_classes)"
            )
        if scores is not None:
            for column in ("label", "difficulty"):
                if column not in scores.column_names:
                    raise ValueError(
                        f"the scores table needs a {column!r} column; it has {scores.column_names}"
                    )

    # -- description -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.samples)

    @property
    def num_classes(self) -> int:
        return self._num_classes

    @property
    def class_names(self) -> list[str]:
        """Display names per class id (the class table's unique names, else the ``ClassLabel``'s)."""
        from datasets import ClassLabel

        if self.classes is not None:
            return [str(n) for n in self.classes["name"]]
        feature = self.samples.features["label"]
        if isinstance(feature, ClassLabel):
            return list(feature.names)
        names = self.info.get("class_names")
        if names and len(names) == self._num_classes:
            return [str(n) for n in names]
        return [str(i) for i in range(self._num_classes)]

    @property
    def counts(self) -> np.ndarray:
        """Realised images per class, ``(num_classes,)`` int64."""
        return np.bincount(column_numpy(self.samples, "label"), minlength=self._num_classes).astype(np.int64)

    def __repr__(self) -> str:
        selection = self.info.get("selection") or {}
        budget = self.info.get("budget") or {}
        return (
            f"CondensedDataset(num_rows={len(self)}, num_classes={self.num_classes}, "
            f"images_per_class={budget.get('images_per_class')}, strategy={selection.get('strategy')!r}, "
            f"columns={self.samples.column_names}, classes={self.classes is not None}, "
            f"scores={len(self.scores) if self.scores is not None else None})"
        )

    def summary(self) -> str:
        """A readable multi-line description (what ``d2c info`` prints)."""
        from .card import describe_model, iter_models

        info = self.info
        counts = self.counts
        source = info.get("source") or {}
        budget = info.get("budget") or {}
        selection = info.get("selection") or {}
        lines = [
            f"Condensed dataset (format version {info.get('format_version')}, d2c-hf {info.get('d2c_hf_version', '?')})"
        ]
        lines.append(
            f"  samples: {len(self):,} rows, {self.num_classes} classes; images per class min/median/max "
            f"{_min_median_max(counts)}"
        )
        for name, table in (("samples", self.samples), ("classes", self.classes), ("scores", self.scores)):
            if table is None:
                continue
            columns = ", ".join(f"{c} [{_feature_summary(f)}]" for c, f in table.features.items())
            lines.append(f"  {name} columns: {columns}")
        if source:
            lines.append(
                f"  source: {source.get('name') or '?'} split {source.get('split') or '?'}, "
                f"{source.get('num_rows', '?')} rows"
            )
        if budget:
            lines.append(
                f"  budget: images_per_class={budget.get('images_per_class')} ratio={budget.get('ratio')} "
                f"total={budget.get('total')}"
            )
        if selection:
            lines.append(
                f"  selection: strategy={selection.get('strategy')!r} interval={selection.get('interval')!r} "
                f"seed={selection.get('seed')}"
            )
        for role, record in iter_models({k: info.get(k) for k in ("scoring", "latents", "visual", "text")}):
            lines.append(f"  model {role}: {describe_model(record)}")
        latents = info.get("latents") or {}
        if latents:
            lines.append(
                f"  latents: {latents.get('space')} space, scaling {latents.get('scaling_factor')}, "
                f"shift {latents.get('shift_factor')}, resolution {latents.get('resolution')}"
            )
        visual = info.get("visual") or {}
        if visual:
            lines.append(
                f"  visual tokens: {visual.get('num_tokens')} x {visual.get('hidden_size')} "
                f"(input {visual.get('input_size')}px, patch {visual.get('patch_size')})"
            )
        text = info.get("text") or {}
        if text:
            lines.append(f"  text: template {text.get('prompt_template')!r}, {text.get('max_length')} tokens")
        for note in info.get("notes") or []:
            lines.append(f"  note: {note}")
        return "\n".join(lines)

    # -- fast training reads ----------------------------------------------------------
    def training_arrays(
        self, columns: Sequence[str] | None = None, device: str | torch.device | None = None
    ) -> dict[str, torch.Tensor]:
        """Whole columns as tensors, for training loops that index them with a sampler.

        Read through Arrow (each chunk's value buffer, zero-copy over the memory-mapped file,
        copied once into the output), not the default torch format, which builds Python
        objects and upcasts float16 (about 10x slower; see ``benchmarks/bench_io.py``).

        Args:
            columns: names from ``latents`` ``(N, 2C, h, w)`` float16, ``labels`` ``(N,)`` int64,
                ``visual_embeds`` ``(N, h, d)`` float16, ``difficulty`` ``(N,)`` float32,
                ``text_embeds`` ``(C, L, D)`` float16 and ``text_mask`` ``(C, L)`` int8 (class
                tables, indexed by label). Default: all of
                ``latents, labels, visual_embeds, text_embeds, text_mask`` that exist.
            device: where to put the tensors (CPU by default); arrays are copied straight from the
                memory map into tensors allocated there.

        Returns:
            ``{name: tensor}``.
        """
        available = {
            name: (table, column)
            for name, (table, column) in TRAINING_ARRAYS.items()
            if getattr(self, table) is not None and column in getattr(self, table).column_names
        }
        if columns is None:
            columns = [name for name in DEFAULT_TRAINING_ARRAYS if name in available]
        else:
            columns = [columns] if isinstance(columns, str) else list(columns)
            missing = [c for c in columns if c not in available]
            if missing:
                raise ValueError(
                    f"training_arrays: {missing} not available; this dataset provides {sorted(available)}"
                )
        target = torch.device(device) if device is not None else torch.device("cpu")
        out: dict[str, torch.Tensor] = {}
        for name in columns:
            table_name, column = available[name]
            table = getattr(self, table_name)
            shape = _fixed_shape(table.features[column])
            if shape is not None:
                dtype = np.dtype(_leaf_dtype(table.features[column]))
                tensor = _read_fixed_shape(table, column, shape, dtype, target)
            else:
                values = column_numpy(table, column)
                if values.dtype == object:
                    raise TypeError(
                        f"column {column!r} is not a fixed-shape array (feature {table.features[column]!r}); "
                        "store it as Array2D/Array3D (pass features= to map)"
                    )
                tensor = torch.from_numpy(values.astype(np.int64) if name == "labels" else values.copy())
            out[name] = tensor.to(target)
        return out

    # -- saving ------------------------------------------------------------------------
    def save_to_disk(self, path: str | os.PathLike, overwrite: bool = False, card: bool = True) -> Path:
        """Save to a folder, atomically.

        Everything is written to a temporary folder beside ``path`` and renamed into place, so
        an interrupted save leaves no partial dataset and the previous version (with
        ``overwrite=True``) intact.

        Args:
            path: the target folder.
            overwrite: replace an existing condensed dataset at ``path``. A folder that is not a
                condensed dataset is never replaced.
            card: also write ``README.md`` and ``figures/`` (the dataset card).

        Returns:
            the path.
        """
        path = Path(path).expanduser()
        if path.exists():
            if not overwrite:
                raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
            if not path.is_dir() or (any(path.iterdir()) and not (path / INFO_FILENAME).is_file()):
                raise FileExistsError(
                    f"refusing to overwrite {path}: it is not a condensed dataset (no {INFO_FILENAME}); "
                    "choose another path or remove it yourself"
                )
        staging = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            staging.mkdir()  # (not tempfile.mkdtemp: its 0700 mode would survive the rename)
            self._write_disk_layout(staging, card=card)
            _replace_dir(staging, path)
        except OSError as err:  # name the target, not the hidden staging folder
            shutil.rmtree(staging, ignore_errors=True)
            raise renamed_os_error(err, f"could not save the condensed dataset to {path}") from err
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        logger.info("saved %r to %s", self, path)
        return path

    def _write_disk_layout(self, folder: Path, card: bool) -> None:
        for name, directory in DISK_DIRS.items():
            table = getattr(self, name)
            if table is not None:
                table.save_to_disk(str(folder / directory))
        if card:
            self._write_card(folder, repo_id=None)
        # the info file goes last: a folder without it is never mistaken for a finished dataset
        _write_json(folder / INFO_FILENAME, self._info_with_tables())

    def _write_card(self, folder: Path, repo_id: str | None) -> None:
        from .card import make_figures, render_card

        try:
            figures = make_figures(self, folder / FIGURES_DIR)
        except Exception as err:  # a figure is decoration: never lose the dataset over one
            logger.warning(
                "the dataset card's figures could not be drawn (%s: %s); writing the card without them",
                type(err).__name__,
                err,
            )
            shutil.rmtree(folder / FIGURES_DIR, ignore_errors=True)
            figures = {}
        relative = {name: f"{FIGURES_DIR}/{p.name}" for name, p in figures.items()}
        (folder / README_FILENAME).write_text(
            render_card(self, figures=relative, repo_id=repo_id), encoding="utf-8"
        )

    def hub_configs(self) -> list[dict[str, Any]]:
        """The README ``configs:`` entries of the Hub layout."""
        configs = [
            {
                "config_name": "default",
                "data_files": [{"split": SPLIT, "path": f"{HUB_DIRS['default']}/{SPLIT}-*"}],
                "default": True,
            }
        ]
        for name in ("classes", "scores"):
            if getattr(self, name) is not None:
                configs.append(
                    {
                        "config_name": name,
                        "data_files": [{"split": SPLIT, "path": f"{HUB_DIRS[name]}/{SPLIT}-*"}],
                    }
                )
        return configs

    def save_hub_folder(
        self,
        folder: str | os.PathLike,
        *,
        repo_id: str | None = None,
        max_shard_size: str | int = "500MB",
        card: bool = True,
    ) -> Path:
        """Write the Hub layout into ``folder`` (which must not exist or be empty).

        Parquet shards ``data/train-0000i-of-0000n.parquet`` (config ``default``),
        ``classes/...`` and ``scores/...`` (image bytes embedded, row groups sized for the
        dataset viewer), ``d2c_info.json``, ``figures/*.png`` and a ``README.md`` dataset card
        with the ``configs:`` block. ``load_dataset(folder)`` and ``load_dataset(folder, "classes")``
        read it back.
        """
        folder = Path(folder).expanduser()
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise FileExistsError(f"{folder} exists and is not an empty folder; choose a new folder")
        folder.mkdir(parents=True, exist_ok=True)
        _write_parquet_shards(self.samples, folder / HUB_DIRS["default"], max_shard_size)
        for name in ("classes", "scores"):
            table = getattr(self, name)
            if table is not None:
                _write_parquet_shards(table, folder / HUB_DIRS[name], max_shard_size)
        _write_json(folder / INFO_FILENAME, self._info_with_tables())
        if card:
            self._write_card(folder, repo_id=repo_id)
        else:
            from .card import render_card

            (folder / README_FILENAME).write_text(render_card(self, repo_id=repo_id), encoding="utf-8")
        return folder

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool | None = None,
        token: str | None = None,
        api: Any = None,
        commit_message: str = "Upload D2C condensed dataset (d2c-hf)",
        revision: str | None = None,
        create_pr: bool = False,
        max_shard_size: str | int = "500MB",
    ):
        """Upload to a Hub dataset repo: the :meth:`save_hub_folder` layout, in one commit.

        The folder is built in a temporary directory first (nothing is created on the Hub if
        that fails), then ``api.create_repo(repo_id, repo_type="dataset", exist_ok=True)`` and
        ``api.upload_folder(...)``; files of a previous upload under ``data/``, ``classes/``,
        ``scores/`` and ``figures/`` are deleted in the same commit so no stale shard survives.

        Args:
            repo_id: ``"user/name"``.
            private: visibility of a newly created repo.
            token: Hub token (default: the logged-in one).
            api: an ``huggingface_hub.HfApi`` (injectable for tests); default ``HfApi(token=token)``.
            commit_message, revision, create_pr: passed to ``upload_folder``.

        Returns:
            the ``CommitInfo`` of the upload.
        """
        from huggingface_hub import HfApi

        api = api if api is not None else HfApi(token=token)
        with tempfile.TemporaryDirectory(prefix="d2c-hub-") as tmp:
            folder = self.save_hub_folder(Path(tmp) / "repo", repo_id=repo_id, max_shard_size=max_shard_size)
            api.create_repo(repo_id, repo_type="dataset", exist_ok=True, private=private, token=token)
            return api.upload_folder(
                folder_path=str(folder),
                repo_id=repo_id,
                repo_type="dataset",
                commit_message=commit_message,
                token=token,
                revision=revision,
                create_pr=create_pr,
                delete_patterns=[f"{d}/*" for d in (*HUB_DIRS.values(), FIGURES_DIR)],
            )

    # -- integrity ---------------------------------------------------------------------
    def tables_record(self) -> dict[str, dict[str, Any]]:
        """What a save records about each table, to check a folder on load: ``{table: {"num_rows",
        "columns", "fingerprint"}}``.

        The fingerprint is a SHA-256 over the table's column names and features and the values of its
        scalar columns (``label``, ``source_index``, ``difficulty``, ``name``, ``prompt``...): it
        identifies *which* rows a table holds (a selection, its labels and scores) and costs one read
        of those small columns, not of the images or arrays.
        """
        record = {}
        for name in DISK_DIRS:
            table = getattr(self, name)
            if table is not None:
                record[name] = {
                    "num_rows": len(table),
                    "columns": list(table.column_names),
                    "fingerprint": table_fingerprint(table),
                }
        return record

    def _info_with_tables(self) -> dict[str, Any]:
        return {**self.info, TABLES_KEY: self.tables_record()}

    def _verify(self, where: str, record: Mapping[str, Any] | None) -> None:
        """Check what was read against the record written at save time (see :meth:`tables_record`)."""
        if record is None:  # written before the record existed: check what the info implies
            if "text" in (self.info.get("attach") or []) and self.classes is None:
                raise ValueError(
                    f"{where} is damaged: its {INFO_FILENAME} says class text was attached, but the classes "
                    "table is missing; restore it or re-create the dataset"
                )
            counts = self.info.get("counts")
            if isinstance(counts, list) and sum(counts) != len(self.samples):
                raise ValueError(
                    f"{where} is damaged: samples has {len(self.samples)} rows but its {INFO_FILENAME} "
                    f"records {sum(counts)}; restore the folder or re-create the dataset"
                )
            return
        got = self.tables_record()
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

    # -- loading -----------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        path_or_repo_id: str | os.PathLike,
        *,
        revision: str | None = None,
        token: str | None = None,
        **load_kwargs,
    ) -> CondensedDataset:
        """Load a condensed dataset from a ``save_to_disk`` folder, a Hub-layout folder or a Hub repo id.

        A local Hub-layout folder is read from its own parquet files (``datasets``' cache key for
        ``load_dataset(folder)`` follows the folder's name, not its files, so it can answer with another
        folder's rows; see ``docs/condensed-datasets.md``). Whatever the layout, the tables read are
        checked against the record written at save time (tables present, row counts, a fingerprint of
        the rows): a damaged, partly copied or stale folder is refused, naming what differs.

        Extra ``load_kwargs`` (``cache_dir``, ...) go to ``datasets.load_dataset`` for the Hub layouts.

        Raises:
            FileNotFoundError: a path that does not exist.
            ValueError: a folder that is not a condensed dataset, one written in another format version
                (both versions are named), or one whose tables do not match its ``d2c_info.json``.
        """
        path = Path(path_or_repo_id).expanduser()
        if path.exists():
            if not path.is_dir():
                raise ValueError(f"{path} is a file; a condensed dataset is a folder")
            info_file = path / INFO_FILENAME
            if not info_file.is_file():
                hint = ""
                if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
                    hint = " It looks like a plain datasets folder: use datasets.load_from_disk."
                raise ValueError(
                    f"{path} is not a condensed dataset: it has no {INFO_FILENAME} (expected a folder written by "
                    f"CondensedDataset.save_to_disk or save_hub_folder).{hint}"
                )
            info = _read_json(info_file)
            _check_format_version(info, str(path))
            record = info.pop(TABLES_KEY, None)
            if (path / DISK_DIRS["samples"] / "state.json").is_file():
                tables = _read_disk_tables(path)
            elif (path / HUB_DIRS["default"]).is_dir():
                tables = _read_local_hub_tables(path, **load_kwargs)
            else:
                raise ValueError(
                    f"{path} has a {INFO_FILENAME} but neither {DISK_DIRS['samples']}/ nor "
                    f"{HUB_DIRS['default']}/: the save is incomplete; re-create the dataset"
                )
            where = str(path)
        else:
            name = str(path_or_repo_id)
            if os.path.isabs(name) or name.startswith((".", "~")) or name.count("/") != 1:
                raise FileNotFoundError(
                    f"no condensed dataset at {name!r} (not a folder, and not a Hub id 'user/name')"
                )
            info = _read_json(_hub_info_file(name, revision=revision, token=token))
            _check_format_version(info, f"Hub dataset {name!r}")
            record = info.pop(TABLES_KEY, None)
            tables = _read_hub_tables(name, revision=revision, token=token, **load_kwargs)
            where = f"Hub dataset {name!r}"
        condensed = cls(tables["samples"], tables["classes"], info, scores=tables["scores"])
        condensed._verify(where, record)
        return condensed


def table_fingerprint(table) -> str:
    """SHA-256 of a table's column names, features and scalar columns' values (see
    :meth:`CondensedDataset.tables_record`)."""
    import hashlib

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


def _read_disk_tables(path: Path) -> dict[str, Any]:
    from datasets import load_from_disk

    tables = {}
    for name, directory in DISK_DIRS.items():
        folder = path / directory
        if not (folder / "state.json").is_file():
            tables[name] = None
            continue
        try:
            tables[name] = load_from_disk(str(folder))
        except Exception as err:  # pyarrow / datasets errors do not name the file
            raise ValueError(
                f"{folder} cannot be read ({type(err).__name__}: {err}); the condensed dataset is damaged: "
                "restore the folder from a copy or re-create the dataset"
            ) from err
    return tables


def _read_local_hub_tables(path: Path, **load_kwargs) -> dict[str, Any]:
    """A local Hub-layout folder's tables, read from its own parquet files (cache keyed by the files)."""
    from datasets import load_dataset

    tables = {}
    for (name, _), directory in zip(DISK_DIRS.items(), HUB_DIRS.values()):
        files = sorted(str(f) for f in (path / directory).glob(f"{SPLIT}-*.parquet"))
        if not files:
            tables[name] = None
            continue
        try:
            tables[name] = load_dataset("parquet", data_files={SPLIT: files}, split=SPLIT, **load_kwargs)
        except Exception as err:  # pyarrow errors do not name the file
            raise ValueError(
                f"{path / directory} cannot be read ({type(err).__name__}: {err}); the condensed dataset is "
                "damaged: restore the folder from a copy or re-create the dataset"
            ) from err
    return tables


def _hub_info_file(repo_id: str, *, revision: str | None, token: str | None) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return Path(
            hf_hub_download(repo_id, INFO_FILENAME, repo_type="dataset", revision=revision, token=token)
        )
    except (OSError, EntryNotFoundError) as err:
        raise FileNotFoundError(
            f"{repo_id!r} is not a local folder, and its {INFO_FILENAME} could not be fetched as a Hub dataset "
            f"({type(err).__name__}: {err})"
        ) from err


def _read_hub_tables(
    repo_id: str, *, revision: str | None, token: str | None, **load_kwargs
) -> dict[str, Any]:
    """A Hub repo's tables through ``load_dataset`` (cached per commit, so never stale)."""
    from datasets import get_dataset_config_names, load_dataset

    access = {k: v for k, v in (("revision", revision), ("token", token)) if v is not None}
    configs = set(get_dataset_config_names(repo_id, **access))
    return {
        name: load_dataset(repo_id, config, split=SPLIT, **access, **load_kwargs)
        if config in configs
        else None
        for name, config in zip(DISK_DIRS, HUB_DIRS)
    }


def _min_median_max(counts: np.ndarray) -> str:
    if not counts.size:
        return "-/-/-"
    return f"{int(counts.min())}/{float(np.median(counts)):g}/{int(counts.max())}"


def _leaf_dtype(feature: Any) -> str:
    dtype = getattr(feature, "dtype", None)
    if isinstance(dtype, str) and not hasattr(feature, "feature"):
        return dtype
    return _leaf_dtype(feature.feature)


def _feature_summary(feature: Any) -> str:
    from .card import _feature_str

    return _feature_str(feature)


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); the condensed dataset is damaged") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a JSON object; the condensed dataset is damaged")
    return data


def renamed_os_error(err: OSError, message: str) -> OSError:
    """An ``OSError`` of the same kind (``PermissionError``, ...) whose text is ``message: reason``, for
    errors raised on a hidden staging path that should name the user's target instead."""
    text = f"{message}: {err.strerror or err}"
    try:
        return type(err)(err.errno, text) if err.errno is not None else type(err)(text)
    except TypeError:  # an OSError subclass with another constructor
        return OSError(err.errno, text)


def _replace_dir(new: Path, target: Path) -> None:
    """Move the finished folder ``new`` to ``target``; an existing ``target`` is swapped out
    first and restored if the final rename fails (POSIX cannot rename over a non-empty folder)."""
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


def _write_parquet_shards(dataset, folder: Path, max_shard_size: str | int) -> list[Path]:
    """``datasets``' own push_to_hub sharding, written locally: shards of at most ``max_shard_size``,
    external image files embedded, row groups sized for the dataset viewer."""
    from datasets.arrow_writer import (
        get_writer_batch_size_from_data_size,
        get_writer_batch_size_from_features,
    )
    from datasets.features.features import require_decoding
    from datasets.table import embed_table_storage
    from datasets.utils.py_utils import convert_file_size_to_int

    folder.mkdir(parents=True, exist_ok=True)
    rows = len(dataset)
    table_rows = max(dataset.data.num_rows, 1)
    nbytes = int(dataset.data.nbytes * rows / table_rows)
    num_shards = max(1, min(max(rows, 1), nbytes // convert_file_size_to_int(max_shard_size) + 1))
    batch_size = get_writer_batch_size_from_features(
        dataset.features
    ) or get_writer_batch_size_from_data_size(max(rows, 1), max(nbytes, 1))
    embed = any(require_decoding(f, ignore_decode_attribute=True) for f in dataset.features.values())
    paths = []
    for index in range(num_shards):
        shard = dataset.shard(num_shards=num_shards, index=index, contiguous=True).with_format(None)
        if embed and len(shard):
            shard = shard.with_format("arrow").map(
                embed_table_storage, batched=True, batch_size=batch_size, keep_in_memory=True
            )
        path = folder / f"{SPLIT}-{index:05d}-of-{num_shards:05d}.parquet"
        shard.to_parquet(str(path), batch_size=batch_size)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------------------
# condense()
# --------------------------------------------------------------------------------------


def _pick_split(dataset):
    """A ``DatasetDict`` / ``IterableDatasetDict`` -> its ``train`` split (or its only split)."""
    from datasets import DatasetDict, IterableDatasetDict

    if isinstance(dataset, (DatasetDict, IterableDatasetDict)):
        kind = type(dataset).__name__
        splits = list(dataset)
        if "train" in dataset:
            name = "train"
        elif len(splits) == 1:
            name = splits[0]
        else:
            raise ValueError(
                f"got a {kind} with splits {splits} and no 'train': pass one split, e.g. dataset[{splits[0]!r}]"
            )
        logger.info("condense: got a %s with splits %s; condensing %r", kind, splits, name)
        return dataset[name], name
    return dataset, (str(dataset.split) if getattr(dataset, "split", None) is not None else None)


def _check_scorer_kwargs(kwargs: Mapping[str, Any], streaming: bool) -> None:
    """Refuse extra keywords of condense() that the scorer does not take (a streaming run takes only
    :data:`_STREAMING_SCORER_KWARGS`), suggesting the closest known name: a misspelt
    ``imagesper_class`` is named as such, not reported as a missing budget."""
    import difflib

    from .scoring import DifficultyScorer

    scorer_options = [
        p
        for p in inspect.signature(DifficultyScorer.from_pretrained).parameters
        if p not in ("cls", "model", "vae")
    ]
    allowed = _STREAMING_SCORER_KWARGS if streaming else scorer_options
    unknown = sorted(set(kwargs) - set(allowed))
    if not unknown:
        return
    known = [p for p in inspect.signature(condense).parameters if p != "scorer_kwargs"] + scorer_options
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        if close:
            hints.append(f"{name!r}: did you mean {close[0]!r}?")
    hint = f" ({'; '.join(hints)})" if hints else ""
    if streaming:
        raise TypeError(
            f"condense() on a streaming dataset takes only {list(_STREAMING_SCORER_KWARGS)} as scorer options, "
            f"got {unknown}{hint}"
        )
    raise TypeError(
        f"condense() got unexpected keyword argument(s) {unknown}{hint}; extra keywords are forwarded to "
        "DifficultyScorer.from_pretrained, which does not take them either"
    )


def build_info(
    *,
    source: Mapping[str, Any],
    class_names: Sequence[str],
    ratio: float | None,
    selection: Mapping[str, Any],
    interval: int | str,
    feature_column: str | None,
    labels: np.ndarray,
    scoring: Mapping[str, Any] | None,
    latents: Mapping[str, Any] | None,
    visual: Mapping[str, Any] | None,
    text: Mapping[str, Any] | None,
    attach: Sequence[str],
    resolution: int,
    patch_size: int,
    num_visual_tokens: int | None,
    seed: int,
    notes: Sequence[str] | None,
    **extra: Any,
) -> dict[str, Any]:
    """The ``info`` record of a condensed dataset (``d2c_info.json``), shared by :func:`condense`
    and the sharded ``d2c condense`` so both describe a result in exactly the same keys.

    ``selection`` is :meth:`SelectionResult.to_dict`; ``labels`` are the selected rows' labels (for
    the realised per-class counts); ``extra`` keys (e.g. ``distributed``) are appended."""
    from . import __version__

    selection_info = dict(selection)
    selection_info.update(
        {
            "interval": selection["params"].get("interval", interval)
            if selection["strategy"] == "interval"
            else None,
            "interval_requested": interval,
            "seed": seed,
            "feature_column": feature_column,
        }
    )
    counts = np.bincount(np.asarray(labels, np.int64), minlength=len(class_names))
    return {
        "format_version": FORMAT_VERSION,
        "method": "D2C",
        "paper": "arXiv:2507.05914",
        "d2c_hf_version": __version__,
        "library_versions": library_versions(),
        "source": dict(source),
        "num_classes": len(class_names),
        "class_names": list(class_names),
        "budget": {
            "ratio": ratio,
            "images_per_class": selection["images_per_class"],
            "total": selection["total"],
        },
        "counts": counts.tolist(),
        "selection": selection_info,
        "scoring": scoring,
        "latents": latents,
        "visual": visual,
        "text": text,
        "attach": list(attach),
        "resolution": resolution,
        "patch_size": patch_size,
        "num_visual_tokens": num_visual_tokens,
        "seed": seed,
        "notes": list(notes or []),
        **extra,
    }


def condense(
    dataset,
    ratio: float | None = None,
    images_per_class: int | None = None,
    *,
    scorer: Any = "facebook/DiT-XL-2-256",
    vae: Any = "stabilityai/sd-vae-ft-ema",
    text_encoder: Any = "google/flan-t5-xl",
    vision_encoder: Any = "facebook/dinov2-base",
    strategy: str = "interval",
    interval: int | str = "auto",
    attach: str | Sequence[str] | None = ("latents", "visual", "text"),
    resolution: int = 256,
    patch_size: int = 2,
    num_visual_tokens: int | None = None,
    image_column: str = "image",
    label_column: str = "label",
    class_names: Sequence[str] | Mapping[int, str] | None = None,
    prompt_template: str = "a photo of a {}",
    seed: int = 0,
    num_timesteps: int = 10,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    selection_kwargs: Mapping[str, Any] | None = None,
    notes: Sequence[str] | None = None,
    num_rows: int | None = None,
    work_dir: str | os.PathLike | None = None,
    **scorer_kwargs: Any,
) -> CondensedDataset:
    """D2C end to end: score, select, attach — with the paper's defaults.

    1. **Select.** Score every image's diffusion difficulty with ``scorer`` (default DiT-XL/2
       256, CC BY-NC, in the ``vae`` latent space; reused if the dataset already has a
       ``difficulty`` column, and cached by fingerprint for disk-backed datasets), then keep
       ``images_per_class`` per class (``ratio`` -> ``round(ratio * N / C)``) with ``strategy``
       (interval sampling with stride ``interval``; see :func:`d2c_hf.selection.select`).
    2. **Attach** (``attach`` parts): ``latents`` (VAE posterior mean|std; the EMA and MSE SD
       VAEs share their encoder, so one VAE serves scoring and latents), ``visual`` (patch
       tokens of ``vision_encoder``; h = ``(resolution / vae factor / patch_size)**2`` tokens
       unless ``num_visual_tokens`` is given) and ``text`` (T5 embeddings of
       ``prompt_template`` per class).

    Every model argument is a Hub id, a local folder (``save_pretrained`` layout) or a loaded
    object. Everything cheap is checked before any model is loaded: columns, labels, budget,
    ``attach`` parts, class names and prompt uniqueness, strategy name, keyword arguments.

    **Streaming.** An ``IterableDataset`` (or an ``IterableDatasetDict``: its ``train`` split) is
    condensed by the sharded engine of ``d2c condense`` (:mod:`d2c_hf.distributed`) in this process:
    the stream is read once to score every row and once more up to the last selected row, never
    materialised. Its model arguments must then be Hub ids or local folders (not loaded objects),
    ``scorer`` is required (a ``difficulty`` column is not reused), ``selection_kwargs`` are not
    supported, and its size must be known: from the split metadata or ``num_rows``.

    Args:
        dataset: a ``datasets.Dataset`` or a ``DatasetDict`` (its ``train`` split is condensed), or
            their streaming counterparts ``IterableDataset`` / ``IterableDatasetDict``.
        ratio, images_per_class: the budget (exactly one).
        scorer: diffusion model for the difficulty score, or a ``DifficultyScorer``; ``None``
            requires an existing ``difficulty`` column.
        vae: ``AutoencoderKL`` for scoring and latents; ``None`` = pixel space.
        text_encoder, vision_encoder: models for the ``text`` and ``visual`` parts.
        strategy, interval, seed, selection_kwargs: passed to :func:`d2c_hf.selection.select`.
        attach: any of ``"latents"``, ``"visual"``, ``"text"``; ``()`` for select-only.
        resolution: image side (ADM centre crop) for scoring and latents.
        patch_size: the diffusion transformer's patch size (for the visual token count).
        image_column, label_column: input columns (stored as ``image``/``label``).
        class_names: names per class id (default: the ``ClassLabel`` names), needed for ``text``.
        prompt_template: the class prompt, with one ``{}``.
        num_timesteps: scoring timestep grid size.
        batch_size, device: for every model.
        dtype: the scorer's autocast dtype (``None``: bfloat16 on CUDA, float32 else) and the attach
            models' dtype (``None``: float32; Attach only sees the condensed subset).
        notes: free-text lines recorded in ``info["notes"]`` and shown on the card (e.g. that
            stand-in models were used).
        num_rows: streaming only: the number of rows, when the split metadata lacks it (a stream
            shorter than this is an error; rows after it are not read). A ``Dataset`` knows its length.
        work_dir: streaming only: the folder of the run's shards (``d2c condense``'s output layout);
            a rerun with the same arguments resumes there, computing only unfinished shards. Default:
            a temporary folder, removed afterwards (the result is held in memory).
        **scorer_kwargs: forwarded to ``DifficultyScorer.from_pretrained`` (streaming: only
            ``key_column`` and ``max_forward_batch``).

    Returns:
        the :class:`CondensedDataset`.
    """
    from datasets import ClassLabel, Dataset, IterableDataset, Value

    from .data import prepare_dataset
    from .hub import resolve_device

    # ---- cheap checks: nothing is loaded before all of these pass -----------------------
    dataset, split = _pick_split(dataset)
    streaming = isinstance(dataset, IterableDataset)
    # first: a misspelt keyword lands in **scorer_kwargs and would otherwise surface as another error
    _check_scorer_kwargs(scorer_kwargs, streaming)
    if not (streaming or isinstance(dataset, Dataset)):
        raise TypeError(
            "condense() takes a datasets.Dataset, DatasetDict, IterableDataset or IterableDatasetDict, "
            f"got {type(dataset).__name__}"
        )
    if not streaming:
        if work_dir is not None:
            raise ValueError(
                "work_dir is for streaming datasets only (a Dataset's scores are cached by datasets itself)"
            )
        if num_rows is not None and num_rows != len(dataset):
            raise ValueError(f"num_rows={num_rows!r} but the dataset has {len(dataset)} rows")
    parts = parse_attach(attach)
    resolve_attach_dtype(dtype)  # refuses dtypes that are not float32 / bfloat16 / float16
    for name, value in (("resolution", resolution), ("patch_size", patch_size), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if resolution % patch_size:
        raise ValueError(f"resolution={resolution} is not divisible by patch_size={patch_size}")
    from .selection import Selector, select

    selection_kwargs = dict(selection_kwargs or {})
    clash = {"images_per_class", "ratio", "strategy", "interval", "seed", "num_classes"} & set(
        selection_kwargs
    )
    if clash:
        raise TypeError(f"selection_kwargs must not repeat condense() arguments: {sorted(clash)}")
    features = selection_kwargs.pop("features", None)
    feature_column = selection_kwargs.pop("feature_column", None)
    # validates strategy, budget, interval, seed and the strategy's options without any data
    Selector(
        strategy,
        images_per_class=images_per_class,
        ratio=ratio,
        interval=interval,
        seed=seed,
        feature_column=feature_column if features is None else "features",
        **selection_kwargs,
    )
    if streaming:
        if features is not None or feature_column is not None or selection_kwargs:
            given = sorted({*selection_kwargs, *(["features"] if features is not None else [])})
            given += ["feature_column"] if feature_column is not None else []
            raise TypeError(f"selection_kwargs {given} are not supported for a streaming dataset")
        return _condense_streaming(
            dataset,
            split,
            parts=parts,
            ratio=ratio,
            images_per_class=images_per_class,
            scorer=scorer,
            vae=vae,
            text_encoder=text_encoder,
            vision_encoder=vision_encoder,
            strategy=strategy,
            interval=interval,
            resolution=resolution,
            patch_size=patch_size,
            num_visual_tokens=num_visual_tokens,
            image_column=image_column,
            label_column=label_column,
            class_names=class_names,
            prompt_template=prompt_template,
            seed=seed,
            num_timesteps=num_timesteps,
            batch_size=batch_size,
            device=device,
            dtype=dtype,
            notes=notes,
            num_rows=num_rows,
            work_dir=work_dir,
            scorer_kwargs=scorer_kwargs,
        )

    dataset, class_info = prepare_dataset(dataset, image_column=image_column, label_column=label_column)
    num_rows, num_classes = len(dataset), class_info.num_classes
    columns = dataset.column_names
    if feature_column is not None and feature_column not in columns:
        raise ValueError(
            f"feature_column={feature_column!r} is not a column of the dataset; columns: {columns}"
        )
    if features is not None and len(features) != num_rows:
        raise ValueError(f"selection features have {len(features)} rows but the dataset has {num_rows}")
    for part, column in (("latents", "latents"), ("visual", "visual_embeds")):
        if part in parts and column in columns:
            raise ValueError(
                f"the dataset already has a {column!r} column; remove it or leave {part!r} out of attach"
            )
    names = check_class_names(class_names) if class_names is not None else list(class_info.names)
    if len(names) != num_classes:
        raise ValueError(f"class_names has {len(names)} names but the dataset has {num_classes} classes")
    label_feature = dataset.features[label_column]
    if "text" in parts:
        if class_names is None and not isinstance(label_feature, ClassLabel):
            raise ValueError(
                f"column {label_column!r} holds bare integers, so there are no class names for the text prompts: "
                "pass class_names=[...] (one per class id) or leave 'text' out of attach"
            )
        class_prompts(names, prompt_template)  # raises on missing/duplicate names before any model loads

    from .selection import STRATEGIES

    reuse_scores = "difficulty" in columns
    run_scorer = not reuse_scores and (scorer is not None or STRATEGIES[strategy].needs_scores)
    if reuse_scores:
        feature = dataset.features["difficulty"]
        if not (isinstance(feature, Value) and feature.dtype.startswith("float")):
            raise TypeError(
                f"the existing 'difficulty' column has feature {feature!r}; expected a float Value"
            )
        existing = column_numpy(dataset, "difficulty")
        if not np.all(np.isfinite(existing)):
            row = int(np.flatnonzero(~np.isfinite(existing))[0])
            raise ValueError(f"the existing 'difficulty' column has a non-finite value at row {row}")
        logger.info("condense: reusing the dataset's 'difficulty' column (drop it to re-score)")
    elif run_scorer and scorer is None:
        raise ValueError(
            f"strategy {strategy!r} needs difficulty scores: pass a scorer, or a dataset with a 'difficulty' column"
        )
    if run_scorer:
        from .scoring import DifficultyScorer

        if isinstance(scorer, DifficultyScorer) and scorer_kwargs:
            raise TypeError(f"scorer is already a DifficultyScorer; {sorted(scorer_kwargs)} would be ignored")
    elif scorer_kwargs:
        raise TypeError(f"unexpected keyword argument(s) {sorted(scorer_kwargs)}: no scoring is run")

    # ---- models ------------------------------------------------------------------------
    device_ = resolve_device(device)
    # Attach runs on the condensed subset only, so it defaults to float32 (see d2c_hf.attach); the
    # scorer keeps its weights' dtype and autocasts to `dtype` (its own default: bf16 on CUDA). The VAE
    # is loaded once, in float32, and shared by both.
    attach_dtype = resolve_attach_dtype(dtype)
    needs_vae = vae is not None and ("latents" in parts or "visual" in parts or run_scorer)
    vae_model = load_vae_any(vae, torch.float32, device_) if needs_vae else None
    from .vae import downsample_factor

    factor = downsample_factor(vae_model)
    if resolution % factor or (resolution // factor) % patch_size:
        raise ValueError(
            f"resolution={resolution} must be divisible by the VAE factor {factor} times patch_size={patch_size} "
            "(the diffusion transformer's token grid)"
        )
    tokens = (
        num_visual_tokens if num_visual_tokens is not None else ((resolution // factor) // patch_size) ** 2
    )

    scoring_info: dict[str, Any]
    if reuse_scores:
        scored, scoring_info = dataset, {"reused_column": True}
    elif not run_scorer:
        scored, scoring_info = dataset, {"skipped": f"strategy {strategy!r} does not use difficulty scores"}
    else:
        from .scoring import PIXEL_SPACE, DifficultyScorer

        if isinstance(scorer, DifficultyScorer):
            scorer_obj = scorer
        else:
            scorer_obj = DifficultyScorer.from_pretrained(
                scorer,
                vae=vae_model if vae_model is not None else PIXEL_SPACE,
                num_timesteps=num_timesteps,
                seed=seed,
                resolution=resolution,
                batch_size=batch_size,
                dtype=dtype,
                device=device_,
                image_column=image_column,
                label_column=label_column,
                **scorer_kwargs,
            )
        scored = scorer_obj.apply(dataset)
        scoring_info = dict(scorer_obj.config)

    # ---- select -------------------------------------------------------------------------
    has_scores = "difficulty" in scored.column_names
    scores = column_numpy(scored, "difficulty").astype(np.float32) if has_scores else None
    labels = column_numpy(scored, label_column).astype(np.int64)
    if feature_column is not None:
        features = np.asarray(scored.with_format("numpy", columns=[feature_column])[:][feature_column])
    result = select(
        scores,
        labels,
        images_per_class=images_per_class,
        ratio=ratio,
        strategy=strategy,
        interval=interval,
        features=features,
        seed=seed,
        num_classes=num_classes,
        **selection_kwargs,
    )
    indices = np.asarray(result.indices, dtype=np.int64)
    logger.info("condense: selected %d of %d images (%s)", len(indices), num_rows, strategy)

    class_label = (
        label_feature if isinstance(label_feature, ClassLabel) else ClassLabel(names=class_prompts(names)[0])
    )
    kept = [image_column, label_column, *(["difficulty"] if has_scores else [])]
    samples = scored.select_columns(kept).select(indices)
    samples = samples.add_column("source_index", indices.tolist(), feature=Value("int64"))
    samples = samples.rename_columns({image_column: "image", label_column: "label"})
    samples = samples.cast_column("label", class_label)
    if has_scores:
        samples = samples.cast_column("difficulty", Value("float32"))
    samples = samples.select_columns(
        ["image", "label", "source_index", *(["difficulty"] if has_scores else [])]
    )

    # ---- attach -------------------------------------------------------------------------
    latents_info = visual_info = text_info = None
    classes = None
    if "latents" in parts:
        encoder = LatentEncoder(
            vae_model, resolution=resolution, batch_size=batch_size, dtype=attach_dtype, device=device_
        )
        samples = encoder.apply(samples)
        latents_info = encoder.config
    if "visual" in parts:
        visual = VisualAttacher.from_pretrained(
            vision_encoder,
            num_tokens=tokens,
            resolution=resolution,
            batch_size=batch_size,
            dtype=attach_dtype,
            device=device_,
        )
        samples = visual.apply(samples)
        visual_info = visual.config
    if "text" in parts:
        text = TextAttacher.from_pretrained(
            text_encoder, prompt_template=prompt_template, dtype=attach_dtype, device=device_
        )
        classes = text.encode_classes(names)
        text_info = text.config

    score_table = None
    if has_scores:
        score_table = Dataset.from_dict(
            {"source_index": np.arange(num_rows, dtype=np.int64), "label": labels, "difficulty": scores},
            features=_scores_features(class_label),
        )
    info = build_info(
        source={
            "name": getattr(dataset.info, "dataset_name", None)
            or getattr(dataset.info, "builder_name", None),
            "config": getattr(dataset.info, "config_name", None),
            "split": split,
            "num_rows": num_rows,
            "fingerprint": dataset._fingerprint,
            "image_column": image_column,
            "label_column": label_column,
        },
        class_names=list(class_info.names),
        ratio=ratio,
        selection=result.to_dict(),
        interval=interval,
        feature_column=feature_column,
        labels=labels[indices],
        scoring=scoring_info,
        latents=latents_info,
        visual=visual_info,
        text=text_info,
        attach=parts,
        resolution=resolution,
        patch_size=patch_size,
        num_visual_tokens=tokens if "visual" in parts else None,
        seed=seed,
        notes=notes,
    )
    return CondensedDataset(samples, classes, info, scores=score_table)


#: scorer options the sharded engine takes (its --key_column / --max_forward_batch)
_STREAMING_SCORER_KWARGS = ("key_column", "max_forward_batch")
#: rows per shard of a streaming condense() run (rounded down to a multiple of batch_size)
_STREAMING_SHARD_ROWS = 2048


@dataclass
class _OneProcess:
    """The part of ``accelerate.PartialState`` the sharded engine uses, for one process on ``device``
    (condense() takes a device, and needs no process group)."""

    device: torch.device
    process_index: int = 0
    num_processes: int = 1
    is_main_process: bool = True

    def wait_for_everyone(self) -> None:
        pass


def _model_reference(name: str, value: Any) -> str:
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    raise TypeError(
        f"{name} is a loaded {type(value).__name__}; condense() on a streaming dataset runs the sharded engine, "
        f"which loads its models itself: pass {name} as a Hub id or a local save_pretrained folder"
    )


def _streaming_size(data, split: str | None, num_rows: int | None) -> int:
    if num_rows is not None:
        if isinstance(num_rows, bool) or not isinstance(num_rows, int) or num_rows < 1:
            raise ValueError(f"num_rows must be a positive integer, got {num_rows!r}")
        return num_rows
    splits = getattr(data.info, "splits", None) or {}
    if split in splits and splits[split].num_examples:
        return int(splits[split].num_examples)
    raise ValueError(
        f"the size of the streaming dataset (split {split!r}) is unknown: its metadata records no number of "
        "examples. Pass num_rows=N (the number of rows to condense)."
    )


def _condense_streaming(
    data,
    split: str | None,
    *,
    parts: list[str],
    ratio: float | None,
    images_per_class: int | None,
    scorer: Any,
    vae: Any,
    text_encoder: Any,
    vision_encoder: Any,
    strategy: str,
    interval: int | str,
    resolution: int,
    patch_size: int,
    num_visual_tokens: int | None,
    image_column: str,
    label_column: str,
    class_names: Sequence[str] | Mapping[int, str] | None,
    prompt_template: str,
    seed: int,
    num_timesteps: int,
    batch_size: int,
    device: str | torch.device | None,
    dtype: str | torch.dtype | None,
    notes: Sequence[str] | None,
    num_rows: int | None,
    work_dir: str | os.PathLike | None,
    scorer_kwargs: Mapping[str, Any],
) -> CondensedDataset:
    """condense() of an ``IterableDataset``: the sharded engine of ``d2c condense``, in this process."""
    from datasets import ClassLabel

    from . import distributed as engine
    from .hub import resolve_device
    from .vae import downsample_factor

    # ---- cheap checks (no model, no row read) -------------------------------------------
    if scorer is None:
        raise ValueError(
            "a streaming dataset is scored as it is read: pass scorer=<Hub id or folder> (a 'difficulty' "
            "column is not reused when streaming)"
        )
    scorer_ref = _model_reference("scorer", scorer)
    vae_ref = "pixel" if vae is None else _model_reference("vae", vae)
    text_ref = _model_reference("text_encoder", text_encoder) if "text" in parts else None
    vision_ref = _model_reference("vision_encoder", vision_encoder) if "visual" in parts else None
    size = _streaming_size(data, split, num_rows)
    features = getattr(data, "features", None) or {}
    bare_labels = label_column in features and not isinstance(features[label_column], ClassLabel)
    if class_names is None and bare_labels:
        raise ValueError(
            f"column {label_column!r} is not a ClassLabel, so the classes of a streaming dataset are unknown "
            "before it is read: pass class_names=[...] (one per class id) or cast the column to a ClassLabel"
        )
    names = check_class_names(class_names) if class_names is not None else None
    info = data.info
    name = getattr(info, "dataset_name", None) or getattr(info, "builder_name", None) or "IterableDataset"
    identity = {"dataset": name, "config": getattr(info, "config_name", None), "split": split}
    source = engine.source_from_dataset(
        data,
        identity,
        num_rows=size,
        streaming=True,
        image_column=image_column,
        label_column=label_column,
        key_column=scorer_kwargs.get("key_column"),
        num_classes=len(names) if names is not None and bare_labels else None,
    )
    if names is not None:
        if len(names) != len(source.class_names):
            raise ValueError(
                f"class_names has {len(names)} names but the dataset has {len(source.class_names)} classes"
            )
        source.class_names = tuple(names)
    if "text" in parts:
        class_prompts(list(source.class_names), prompt_template)  # missing/duplicate names, before models

    budget = ["--ratio", repr(ratio)] if ratio is not None else ["--images_per_class", str(images_per_class)]
    shard_size = batch_size * max(1, _STREAMING_SHARD_ROWS // batch_size)
    with (
        tempfile.TemporaryDirectory(prefix="d2c-condense-") if work_dir is None else nullcontext(work_dir)
    ) as folder:
        args = engine.condense_parser().parse_args(
            ["--dataset", name, "--output_dir", os.fspath(folder), *budget]
        )
        vars(args).update(
            split=split or "train",
            image_column=image_column,
            label_column=label_column,
            num_rows=size,
            resolution=resolution,
            batch_size=batch_size,
            shard_size=shard_size,
            num_workers=0,  # decode in this process: no forked workers inside the caller's program
            seed=seed,
            scorer=scorer_ref,
            vae=vae_ref,
            num_timesteps=num_timesteps,
            key_column=scorer_kwargs.get("key_column"),
            max_forward_batch=scorer_kwargs.get("max_forward_batch"),
            dtype=dtype,
            ratio=ratio,
            images_per_class=images_per_class,
            strategy=strategy,
            interval=interval,
            attach=list(parts),
            text_encoder=text_ref,
            vision_encoder=vision_ref,
            patch_size=patch_size,
            num_visual_tokens=num_visual_tokens,
            prompt_template=prompt_template,
            attach_dtype=resolve_attach_dtype(dtype),
            no_card=True,  # the card is written by save_to_disk / push_to_hub
            note=list(notes or []),
        )
        args.store_posterior = bool(args.reuse_latents and "latents" in parts and vae_ref != "pixel")
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)
        state = _OneProcess(resolve_device(device))
        scorer_obj, vae_model = engine.load_scorer_and_vae(args, state.device)
        factor = downsample_factor(vae_model)
        if resolution % factor or (resolution // factor) % patch_size:
            raise ValueError(
                f"resolution={resolution} must be divisible by the VAE factor {factor} times "
                f"patch_size={patch_size} (the diffusion transformer's token grid)"
            )
        del vae_model
        engine.run_score(args, state, source, scorer=scorer_obj)
        del scorer_obj
        engine.run_select(args)
        engine.run_attach(args, state, source)
        # built in memory (Dataset.from_dict): it outlives the temporary folder
        return engine.assemble(args)


def _scores_features(class_label):
    from datasets import Features, Value

    return Features({"source_index": Value("int64"), "label": class_label, "difficulty": Value("float32")})


# --------------------------------------------------------------------------------------
# CLI: d2c info
# --------------------------------------------------------------------------------------


def info_main(argv: list[str] | None = None) -> int:
    """``d2c info PATH``: describe a condensed dataset (folder or Hub repo id)."""
    parser = argparse.ArgumentParser(
        prog="d2c info",
        description="Describe a condensed dataset: a folder from save_to_disk/save_hub_folder, or a Hub repo id.",
    )
    parser.add_argument("path", help="folder or Hub dataset id (user/name)")
    parser.add_argument(
        "--json", action="store_true", help="print the full provenance record (d2c_info.json)"
    )
    parser.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit)")
    args = parser.parse_args(argv)
    try:
        condensed = CondensedDataset.load(args.path, revision=args.revision)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"d2c info: error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(condensed.info, indent=2, ensure_ascii=False) if args.json else condensed.summary())
    return 0
