"""Select, the score over a whole dataset: the ``datasets`` map of a :class:`~.scorer.DifficultyScorer` and the
dataset-level finish (per-timestep standardisation, the reliability and its gate).

:func:`apply_scorer` is :meth:`DifficultyScorer.apply <d2c_hf.selection.scorer.DifficultyScorer.apply>`;
:func:`finish_scores` is also what the sharded runner calls when it merges its score shards, so both
runners finish the scores with the same code.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..utils.hub import check_fork_safe
from ..utils.images import preprocess_images
from .monte_carlo import ScoredBatch
from .noise import pixel_keys, value_keys
from .reliability import Standardization, check_reliability, not_computable, reliability_from_halves

logger = logging.getLogger(__name__)

DIFFICULTY_COLUMN = "difficulty"
PER_TIMESTEP_COLUMN = "difficulty_per_timestep"
HALVES_COLUMN = "difficulty_halves"


def finish_scores(
    per_timestep: np.ndarray | None, halves: np.ndarray | None, labels: np.ndarray, config: Mapping[str, Any]
):
    """The dataset-level step after every row is scored: the per-timestep standardisation (with
    ``standardize_timesteps``) and the reliability.

    Args:
        per_timestep: ``(N, T)`` raw per-timestep errors (needed with ``standardize_timesteps``).
        halves: ``(N, T, 2)`` what :meth:`~.monte_carlo.MonteCarlo.score` returned, or ``None``.
        labels: ``(N,)`` class ids.
        config: the scorer's :attr:`DifficultyScorer.config` (``num_draws``, ``antithetic``,
            ``standardize_timesteps``, ``reliability_probe``, ``num_timesteps``): a merge of score shards
            has only the recorded config.

    Returns:
        ``(difficulty or None, standardization or None, reliability)``: the standardised scores when
        ``standardize_timesteps`` (else ``None``: the raw mean stands), the statistics used, and the
        :class:`~d2c_hf.selection.reliability.Reliability` report (not computable, with the reason, when nothing
        tracked it).
    """
    stats = difficulty = None
    if bool(config.get("standardize_timesteps")):
        if per_timestep is None:
            raise ValueError("standardize_timesteps needs the per-timestep errors of every row")
        stats = Standardization.fit(per_timestep)
        difficulty = stats.apply(per_timestep)
    details: dict[str, Any] = {
        "num_timesteps": int(config["num_timesteps"]),
        "antithetic": bool(config.get("antithetic")),
        "standardized": bool(config.get("standardize_timesteps")),
    }
    if halves is None or len(halves) == 0:
        reason = (
            "one noise draw per timestep and no probe: score with num_draws >= 2 (split halves, no extra "
            "forward pass) or reliability_probe > 0"
        )
        if halves is not None:
            reason = "no rows"
        report = not_computable(reason, num_draws=int(config.get("num_draws", 1)), **details)
    else:
        probed = int(config.get("num_draws", 1)) == 1
        probe = (
            config.get("reliability_probe") if isinstance(config.get("reliability_probe"), Mapping) else {}
        )
        if probed:
            details.update(
                probe_rows=probe.get("rows"),
                probe_classes=probe.get("classes"),
                extra_forward_passes=int(np.isfinite(halves[:, 0, 1]).sum())
                * int(config["num_timesteps"])
                * (2 if bool(config.get("antithetic")) else 1),
            )
        report = reliability_from_halves(
            halves,
            labels,
            num_draws=int(config.get("num_draws", 1)),
            standardization=stats,
            probe=probed,
            details=details,
        )
    return difficulty, stats, report


def score_rows(
    scorer: Any, batch: Mapping[str, Any], indices: Sequence[int] | None = None
) -> dict[str, np.ndarray]:
    """:meth:`ScorerBase.__call__ <d2c_hf.selection.scorer_base.ScorerBase.__call__>`: one batch of rows
    (images decoded, preprocessed and keyed in chunks of ``scorer.batch_size``, each chunk scored by
    ``scorer.score_chunk`` with its conditioning values) -> the scorer's columns."""
    images = list(batch[scorer.image_column])
    values = scorer.condition_values(batch)
    rows = list(indices) if indices is not None else list(range(len(images)))
    key_values = list(batch[scorer.key_column]) if scorer.key_column else None
    parts: list[ScoredBatch] = []
    extras: list[dict[str, np.ndarray]] = []
    for start in range(0, len(images), scorer.batch_size):
        part = slice(start, start + scorer.batch_size)
        part_rows = rows[part]
        pixels, upsampled = preprocess_images(images[part], scorer.resolution, rows=part_rows)
        scorer.note_upsampled(upsampled, len(pixels), part_rows)
        if key_values is None:
            keys = pixel_keys(pixels)
        else:
            keys = value_keys(key_values[part], part_rows, scorer.key_column)
        scored, extra = scorer.score_chunk(pixels, values[part], keys, part_rows)
        parts.append(scored)
        extras.append(extra)
    steps = scorer.num_timesteps
    out = {
        DIFFICULTY_COLUMN: np.concatenate([p.difficulty for p in parts])
        if parts
        else np.zeros(0, np.float32),
    }
    if PER_TIMESTEP_COLUMN in scorer.features:
        out[PER_TIMESTEP_COLUMN] = (
            np.concatenate([p.per_timestep for p in parts]) if parts else np.zeros((0, steps), np.float32)
        )
    if scorer.tracks_reliability:
        out[HALVES_COLUMN] = (
            np.concatenate([p.halves for p in parts]) if parts else np.zeros((0, steps, 2), np.float32)
        )
    for column in scorer.extra_features:  # a subclass's own columns (e.g. a captioned score's group features)
        out[column] = np.concatenate([e[column] for e in extras]) if extras else []
    return out


def apply_scorer(scorer: Any, dataset: Any, **map_kwargs: Any) -> Any:
    """Add ``difficulty`` to a ``Dataset`` (or ``IterableDataset``): checks, then one ``map``.

    Checks the columns first (``scorer.prepare``: for class labels, missing columns, label types, empty
    dataset, ``None``, negative labels, labels ``>= num_classes`` naming the row), before any
    forward pass. The image column is cast to ``Image(decode=False)`` for the map so that this code
    decodes every image and names the row of an undecodable one; it is restored afterwards.

    For a ``Dataset`` this is ``map(scorer, batched=True, with_indices=True, features=<existing +
    difficulty>, new_fingerprint=hash(previous fingerprint, scorer.fingerprint), desc="Scoring
    difficulty", batch_size=scorer.batch_size)``, so re-running on a disk-backed dataset loads the
    cached result. ``map_kwargs`` (``num_proc``, ``batch_size``, ``cache_file_name``,
    ``load_from_cache_file``, ...) are passed on. An ``IterableDataset`` is mapped lazily
    (schema checks only; rows are checked as they stream).

    Returns:
        the dataset with the new column(s), in its original format.
    """
    from datasets import Dataset, Image, IterableDataset

    from ..utils.maps import join_columns, map_new_columns

    if not isinstance(dataset, (Dataset, IterableDataset)):
        raise TypeError(f"expected a datasets.Dataset or IterableDataset, got {type(dataset).__name__}")
    for key in ("function", "batched", "with_indices", "features", "input_columns"):
        if key in map_kwargs:
            raise TypeError(f"apply() sets {key!r} itself; do not pass it")
    is_map_style = isinstance(dataset, Dataset)
    if not is_map_style and scorer.standardize_timesteps:
        raise ValueError(
            "standardize_timesteps needs every row's errors before any score is final, which a lazily "
            "mapped IterableDataset cannot give: score a Dataset, or stream through `d2c score` / "
            "condense() (which standardise when the scores are merged)"
        )
    dataset = scorer.prepare(dataset, is_map_style)  # columns and values checked, probe planned
    features = dataset.features
    scorer.reliability = scorer.standardization = None
    for column in scorer.features:
        if column in features:
            raise ValueError(
                f"the dataset already has a {column!r} column; remove it first "
                f"(dataset.remove_columns({column!r})) to score again"
            )
    if scorer.key_column is not None and scorer.key_column not in features:
        raise ValueError(
            f"key_column={scorer.key_column!r} is not a column of the dataset; columns: {list(features)}"
        )

    image_feature = features[scorer.image_column]
    raw = dataset.cast_column(scorer.image_column, Image(decode=False)) if image_feature.decode else dataset
    map_kwargs.setdefault("batch_size", scorer.batch_size)
    out_features = raw.features.copy()
    out_features.update(scorer.features)
    if not is_map_style:
        out = raw.map(scorer, batched=True, with_indices=True, features=out_features, **map_kwargs)
        return out.cast_column(scorer.image_column, image_feature) if image_feature.decode else out

    check_fork_safe(map_kwargs.get("num_proc"), scorer.device, "DifficultyScorer.apply")
    original_format = dataset.format
    raw = raw.with_format(None)
    map_kwargs.setdefault("desc", "Scoring difficulty")
    map_kwargs.setdefault("new_fingerprint", scorer.map_fingerprint(raw))
    seen = scorer.num_upsampled
    scorer.defer_upsampling_warning = (map_kwargs.get("num_proc") or 1) <= 1
    try:  # only the new columns are written (no second copy of the images): utils/maps.py
        scores, joined = map_new_columns(raw, scorer, scorer.features, **map_kwargs)
    finally:
        scorer.defer_upsampling_warning = False
    upsampled = scorer.num_upsampled - seen
    if upsampled:
        logger.warning(
            "%d of %d images were smaller than %dpx and were upsampled (bicubic) before scoring",
            upsampled,
            len(dataset),
            scorer.resolution,
        )
    groups = scorer.dataset_groups(raw, scores)  # the classes (or groups) the reliability is computed within
    kept = [] if joined else list(raw.column_names)
    out = join_columns(raw, finish_dataset(scorer, scores, groups, kept), joined)
    if image_feature.decode:
        out = out.cast_column(scorer.image_column, image_feature)
    if original_format["type"] is not None:
        columns = original_format["columns"]
        out = out.with_format(
            original_format["type"],
            columns=None if columns is None else [*columns, *scorer.output_columns],
            output_all_columns=original_format["output_all_columns"],
            **original_format["format_kwargs"],
        )
    return out


def finish_dataset(scorer: Any, out: Any, labels: np.ndarray, input_columns: list[str]) -> Any:
    """After the map (``out``: the ``input_columns`` and the added columns): standardise
    (``standardize_timesteps``), measure the reliability, log and warn, drop the helper columns;
    ``difficulty`` keeps its place after the input columns."""
    from datasets import Value
    from datasets.fingerprint import Hasher

    from ..utils.columns import read_fixed_shape

    cpu, steps = torch.device("cpu"), scorer.num_timesteps
    per_timestep = halves = None
    if PER_TIMESTEP_COLUMN in out.column_names:
        per_timestep = read_fixed_shape(out, PER_TIMESTEP_COLUMN, (steps,), np.float32, cpu).numpy()
    if HALVES_COLUMN in out.column_names:
        halves = read_fixed_shape(out, HALVES_COLUMN, (steps, 2), np.float32, cpu).numpy()
    difficulty, scorer.standardization, scorer.reliability = scorer.finish(per_timestep, halves, labels)
    check_reliability(
        scorer.reliability, warn_below=scorer.warn_reliability, where=f"{type(scorer).__name__}.apply"
    )
    out = scorer.finish_columns(out, labels)
    helpers = [c for c in scorer.helper_columns if c in out.column_names]
    if helpers:
        out = out.remove_columns(helpers)
    if difficulty is not None:  # the standardised score replaces the raw mean
        fingerprint = Hasher.hash([out._fingerprint, "standardized", scorer.standardization.to_dict()])
        staged = f"{DIFFICULTY_COLUMN}_standardized"  # added first: a table keeps at least one column
        out = out.add_column(staged, difficulty, feature=Value("float32"), new_fingerprint=fingerprint)
        out = out.remove_columns(DIFFICULTY_COLUMN).rename_column(staged, DIFFICULTY_COLUMN)
        out = out.select_columns([*input_columns, *scorer.output_columns])
    return out


def check_label_range(scorer: Any, dataset: Any, dataset_classes: int) -> None:
    import pyarrow.compute as pc

    labels = dataset.select_columns([scorer.label_column]).with_format("arrow")[:][scorer.label_column]
    too_big = pc.greater_equal(labels, scorer.num_classes)
    if pc.any(too_big).as_py():
        row = int(pc.index(too_big, True).as_py())
        raise ValueError(
            f"column {scorer.label_column!r} has label {labels[row].as_py()} at row {row} but the scorer knows "
            f"only {scorer.num_classes} classes (0..{scorer.num_classes - 1}); use a scorer trained on these "
            "classes (e.g. train_scorer) or remap the labels"
        )
    if dataset_classes > scorer.num_classes:
        raise ValueError(
            f"the dataset has {dataset_classes} classes (column {scorer.label_column!r}) but the scorer knows "
            f"only {scorer.num_classes}; use a scorer trained on these classes (e.g. train_scorer)"
        )


__all__ = [
    "DIFFICULTY_COLUMN",
    "HALVES_COLUMN",
    "PER_TIMESTEP_COLUMN",
    "apply_scorer",
    "check_label_range",
    "finish_dataset",
    "finish_scores",
    "score_rows",
]
