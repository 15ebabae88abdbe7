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

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils.columns import column_numpy, feature_summary, fixed_shape, leaf_dtype, read_fixed_shape
from ..utils.files import json_round_trip, read_json, staged_dir, write_json

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
#: the ``info`` keys of the built-in Attach parts (always present; ``None`` when not attached)
BUILTIN_INFO_KEYS = ("latents", "visual", "text")
DEFAULT_TRAINING_ARRAYS = ("latents", "labels", "visual_embeds", "text_embeds", "text_mask")


# --------------------------------------------------------------------------------------
# arrow helpers
# --------------------------------------------------------------------------------------


def _normalise_info(info: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON round trip, so that ``info`` after load equals ``info`` before save."""
    return json_round_trip(dict(info))


def _check_format_version(info: Mapping[str, Any], where: str) -> None:
    from ..version import __version__

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
            :meth:`d2c_hf.attach.attachers.TextAttacher.encode_classes`).
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

    @property
    def reliability(self):
        """The difficulty score's reliability (:class:`~d2c_hf.selection.reliability.Reliability`) recorded when the
        scores were computed, or ``None`` (scores reused, not measured, or not scored)."""
        from ..selection.reliability import Reliability

        record = (self.info.get("scoring") or {}).get("reliability")
        return Reliability.from_dict(record) if record else None

    def summary(self) -> str:
        """A readable multi-line description (what ``d2c info`` prints)."""
        from .card import describe_model, estimator_text, iter_models, reliability_text

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
            columns = ", ".join(f"{c} [{feature_summary(f)}]" for c, f in table.features.items())
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
        scoring = info.get("scoring") or {}
        if "prediction_type" in scoring:
            lines.append(f"  difficulty estimator: {estimator_text(scoring)}")
        if "reliability" in scoring:
            lines.append(f"  score {reliability_text(scoring)}")
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
            shape = fixed_shape(table.features[column])
            if shape is not None:
                dtype = np.dtype(leaf_dtype(table.features[column]))
                tensor = read_fixed_shape(table, column, shape, dtype, target)
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
        with staged_dir(path, "the condensed dataset") as staging:
            self._write_disk_layout(staging, card=card)
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
        write_json(folder / INFO_FILENAME, self._info_with_tables())

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
        write_json(folder / INFO_FILENAME, self._info_with_tables())
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
            info = read_json(info_file, "the condensed dataset's info")
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
            info = read_json(_hub_info_file(name, revision=revision, token=token), f"the info of {name!r}")
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
    parts: Mapping[str, Mapping[str, Any] | None],
    attach: Sequence[str],
    resolution: int,
    patch_size: int,
    seed: int,
    notes: Sequence[str] | None,
    **extra: Any,
) -> dict[str, Any]:
    """The ``info`` record of a condensed dataset (``d2c_info.json``), shared by :func:`condense`
    and the sharded ``d2c condense`` so both describe a result in exactly the same keys.

    ``selection`` is :meth:`SelectionResult.to_dict`; ``labels`` are the selected rows' labels (for
    the realised per-class counts); ``parts`` is each attached part's record by name (the built-in parts'
    keys ``latents``, ``visual``, ``text`` are always there, ``None`` when not attached; a registered part's
    record follows them under its name); ``extra`` keys (e.g. ``distributed``) are appended."""
    from ..version import __version__

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
        **{name: parts.get(name) for name in BUILTIN_INFO_KEYS},
        "attach": list(attach),
        "resolution": resolution,
        "patch_size": patch_size,
        "num_visual_tokens": (parts.get("visual") or {}).get("num_tokens"),
        "seed": seed,
        "notes": list(notes or []),
        **{name: record for name, record in parts.items() if name not in BUILTIN_INFO_KEYS},
        **extra,
    }


def scores_features(class_label):
    """The features of the ``scores`` table: ``source_index`` int64, ``label`` (``class_label``), ``difficulty`` float32."""
    from datasets import Features, Value

    return Features({"source_index": Value("int64"), "label": class_label, "difficulty": Value("float32")})
