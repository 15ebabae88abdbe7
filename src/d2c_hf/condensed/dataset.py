"""The product of D2C: a condensed dataset (the view; its storage, integrity record and info live beside it).

A :class:`CondensedDataset` holds three ``datasets.Dataset`` tables and a JSON record:

* ``samples`` — one row per selected image: ``image``, ``label`` (``ClassLabel``),
  ``source_index`` (row in the source split), ``difficulty``, and what Attach added:
  ``latents`` ``Array3D((2C, h, w), float16)`` and ``visual_embeds`` ``Array2D((h, d), float16)``;
  a captioned set (text-to-image, ``docs/text-to-image.md``) has ``label`` = the row's *group*, ``caption``,
  and, attached, ``caption_embeds`` ``Array2D((L, D), float16)`` and ``caption_mask`` (int8, length L);
* ``classes`` — one row per class id: ``label``, ``name``, ``prompt``, ``text_embeds``
  ``Array2D((L, D), float16)``, ``text_mask`` (int8, length L); optional;
* ``scores`` — the difficulty of *every* scored image (``source_index``, ``label``,
  ``difficulty``), for the card's figures and for re-selecting without re-scoring; optional;
* ``info`` — provenance: format version, budget, strategy, realised counts, seed, every
  model's id and revision or weights hash, latent scale, resolution, token layout, template,
  library versions (:mod:`.info`).

It is saved in one of two layouts, both loaded by :meth:`CondensedDataset.load` (:mod:`.storage`), and
checked on load against the record its save wrote (:mod:`.integrity`). :func:`d2c_hf.condense` makes one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils.columns import column_numpy, feature_summary, fixed_shape, leaf_dtype, read_fixed_shape
from . import storage
from .info import FORMAT_VERSION, check_format_version, normalise_info
from .integrity import tables_record, verify_tables

logger = logging.getLogger(__name__)

#: what training_arrays can return: name -> (table, column)
TRAINING_ARRAYS = {
    "latents": ("samples", "latents"),
    "labels": ("samples", "label"),
    "visual_embeds": ("samples", "visual_embeds"),
    "difficulty": ("samples", "difficulty"),
    "text_embeds": ("classes", "text_embeds"),
    "text_mask": ("classes", "text_mask"),
    "caption_embeds": ("samples", "caption_embeds"),
    "caption_mask": ("samples", "caption_mask"),
}
DEFAULT_TRAINING_ARRAYS = (
    "latents",
    "labels",
    "visual_embeds",
    "text_embeds",
    "text_mask",
    "caption_embeds",
    "caption_mask",
)


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
        info = normalise_info(info or {})
        info.setdefault("format_version", FORMAT_VERSION)
        check_format_version(info, "info")
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
        roles = ("scoring", "latents", "visual", "text", "caption")
        for role, record in iter_models({k: info.get(k) for k in roles}):
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
        captioned = info.get("text_to_image") or {}
        if captioned:
            groups = captioned.get("groups") or {}
            lines.append(
                f"  captions: column {captioned.get('caption_column')!r} ({captioned.get('caption_choice')}), "
                f"{groups.get('num_groups')} groups from {groups.get('source')} (sizes min/median/max "
                f"{_min_median_max(np.asarray(groups.get('sizes') or [], np.int64))}), caption tokens "
                f"{captioned.get('max_length')}"
            )
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
                tables, indexed by label), ``caption_embeds`` ``(N, L, D)`` float16 and ``caption_mask``
                ``(N, L)`` int8 (a captioned set, per row). Default: all of ``latents, labels, visual_embeds,
                text_embeds, text_mask, caption_embeds, caption_mask`` that exist.
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

    # -- saving and loading (the layouts: storage.py; the integrity record: integrity.py) ----------
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
        return storage.save_to_disk(self, path, overwrite=overwrite, card=card)

    def hub_configs(self) -> list[dict[str, Any]]:
        """The README ``configs:`` entries of the Hub layout."""
        return storage.hub_configs(self)

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
        return storage.save_hub_folder(
            self, folder, repo_id=repo_id, max_shard_size=max_shard_size, card=card
        )

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
        return storage.push_to_hub(
            self,
            repo_id,
            private=private,
            token=token,
            api=api,
            commit_message=commit_message,
            revision=revision,
            create_pr=create_pr,
            max_shard_size=max_shard_size,
        )

    def tables_record(self) -> dict[str, dict[str, Any]]:
        """What a save records about each table, to check a folder on load: ``{table: {"num_rows",
        "columns", "fingerprint"}}`` (see :func:`d2c_hf.condensed.integrity.tables_record`)."""
        return tables_record(storage.tables_of(self))

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
        tables, info, record, where = storage.read_condensed(
            path_or_repo_id, revision=revision, token=token, **load_kwargs
        )
        condensed = cls(tables["samples"], tables["classes"], info, scores=tables["scores"])
        verify_tables(tables, condensed.info, where, record)
        return condensed


def _min_median_max(counts: np.ndarray) -> str:
    if not counts.size:
        return "-/-/-"
    return f"{int(counts.min())}/{float(np.median(counts)):g}/{int(counts.max())}"


__all__ = ["DEFAULT_TRAINING_ARRAYS", "TRAINING_ARRAYS", "CondensedDataset"]
