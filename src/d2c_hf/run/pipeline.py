"""The one condense pipeline: validate -> score -> select -> attach -> assemble.

Every way of condensing runs these phases with the typed options below:

* :func:`d2c_hf.condense` on a map-style ``Dataset`` runs them in memory (:class:`MemoryRunner`):
  scoring and Attach are ``datasets`` map transforms, cached by fingerprint for disk-backed data;
* :func:`d2c_hf.condense` on a streaming dataset, and ``d2c score | select | attach | condense``, run
  them over shard files in a work folder (:class:`d2c_hf.run.sharded.ShardedRunner`): resumable, one or
  many processes, bitwise the same scores and selection.

What is shared, and so written once: the options and their checks (all before any model loads), the
scorer and VAE resolution (:func:`load_scorer`), the selection, the class-text table and the assembly of
the :class:`~d2c_hf.condensed.dataset.CondensedDataset` with its ``info`` (:func:`assemble`). A runner only
decides where rows are read and where scores and attached arrays are kept.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..attach.attachers import class_prompts
from ..attach.parts import (
    BUILTIN_PARTS,
    AttachPart,
    PartContext,
    all_part_columns,
    get_part,
    needs_vae,
    part_transform,
)
from ..condensed.dataset import CondensedDataset
from ..condensed.info import build_info, scores_features
from ..selection.reliability import Reliability, check_reliability
from ..utils.columns import column_numpy
from ..utils.spaces import AUTO, DEFAULT_VAE, PIXEL_SPACE
from .options import CondenseOptions, needs_scores

logger = logging.getLogger(__name__)

#: a realised fraction further than this (relative) from the requested ratio is a warning
REALISED_RATIO_TOLERANCE = 0.2


# --------------------------------------------------------------------------------------
# the scorer and its VAE
# --------------------------------------------------------------------------------------


def _scorer_ships_vae(scorer: Any) -> bool:
    """Whether a scorer given by name carries its own ``vae/`` (a DiT pipeline, a latent ``train_scorer``)."""
    from ..utils.hub import has_file, read_repo_json

    if not isinstance(scorer, (str, os.PathLike)):
        return False
    index = read_repo_json(scorer, "model_index.json", role="scorer")
    if index is not None:
        entry = index.get("vae")
        return bool(entry and entry[0] is not None)
    return has_file(scorer, "config.json", "transformer", role="scorer") and has_file(
        scorer, "config.json", "vae", role="scorer"
    )


def load_scorer(options: CondenseOptions, device: torch.device, *, return_per_timestep: bool = False):
    """The scorer, in the latent space it was trained in, and the VAE it shares with Attach.

    ``vae="auto"`` uses the scorer's own ``vae/`` when it ships one (see
    :meth:`DifficultyScorer.from_pretrained`); an explicit VAE is compared with the scorer's own and
    refused unless it encodes alike (SD-VAE-ft-EMA and -MSE share their encoder), and pixel space is
    refused for a scorer that ships a VAE. A loaded ``DifficultyScorer`` is used as it is.
    Returns ``(scorer, vae_or_None)``.
    """
    from ..selection.scorer import DifficultyScorer
    from ..selection.text_scorer import TextDifficultyScorer
    from ..utils.vae import load_vae, same_encoder

    score = options.score
    if isinstance(score.scorer, (DifficultyScorer, TextDifficultyScorer)):
        if score.vae != AUTO:
            raise ValueError(
                "scorer is a loaded DifficultyScorer, which already scores in its own space: leave vae at 'auto' "
                "(Attach then uses the scorer's VAE)"
            )
        return score.scorer, score.scorer.vae
    vae: Any = score.vae
    if vae != AUTO and _scorer_ships_vae(score.scorer):
        where = f"scorer {os.fspath(score.scorer)!r} ships its own VAE (vae/) and was trained in that latent space"
        if vae == PIXEL_SPACE:
            raise ValueError(
                f"{where}; scoring it in pixel space (vae='pixel' or None) gives meaningless difficulties: leave "
                "vae at 'auto'"
            )
        vae = load_vae(vae, dtype=torch.float32, device=device)
        if not same_encoder(vae, load_vae(score.scorer, dtype=torch.float32, device=device)):
            raise ValueError(
                f"{where}; vae={_describe(score.vae)} encodes differently, so difficulties in its space are "
                "meaningless. Leave vae at 'auto' to use the scorer's VAE (for scoring and Attach), or pass that "
                "same VAE"
            )
    captions = options.captions
    kind = TextDifficultyScorer if captions is not None else DifficultyScorer
    conditioning: dict[str, Any] = {"label_column": options.data.label_column}
    if captions is not None:
        conditioning.update(
            caption_column=captions.column,
            caption_choice=captions.choice,
            group_by=captions.group_by,
            num_groups=captions.num_groups,
        )
    scorer = kind.from_pretrained(
        score.scorer,
        vae=vae,
        num_timesteps=score.num_timesteps,
        timestep_grid=score.timestep_grid,
        num_draws=score.num_draws,
        antithetic=score.antithetic,
        standardize_timesteps=score.standardize_timesteps,
        reliability_probe=score.reliability_probe,
        warn_reliability=score.warn_reliability,
        seed=score.seed,
        resolution=options.resolution,
        batch_size=options.batch_size,
        dtype=score.dtype,
        device=device,
        prediction_type=score.prediction_type,
        image_column=options.data.image_column,
        key_column=options.data.key_column,
        return_per_timestep=return_per_timestep,
        max_forward_batch=score.max_forward_batch,
        **conditioning,
    )
    if score.compile:
        scorer.model = torch.compile(scorer.model)
    return scorer, scorer.vae


def check_scorer_conditioning(options: CondenseOptions, run_scorer: bool) -> None:
    """A captioned run needs a text-to-image scorer and a class-labelled run a class-conditional one: read
    from the scorer's folder (``model_index.json`` / ``config.json``) or object before any model loads, and
    refused naming the argument and the fix."""
    from ..selection.denoisers import text_to_image_refusal
    from ..selection.text_denoisers import class_conditional_refusal, scorer_conditioning

    if not run_scorer:
        return
    scorer = options.score.scorer
    kind = scorer_conditioning(scorer)
    name = os.fspath(scorer) if isinstance(scorer, (str, os.PathLike)) else type(scorer).__name__
    if options.captions is not None and kind == "class":
        raise ValueError(
            f"caption_column={options.captions.column!r} asks for a caption-conditioned score, but scorer={name!r} "
            f"is class-conditional. " + class_conditional_refusal(name)
        )
    if options.captions is None and kind == "text":
        raise ValueError(
            f"scorer={name!r} is a text-to-image model and no caption_column was given: "
            + (text_to_image_refusal(name))
        )


def text_to_image_record(
    options: CondenseOptions, group_record: Mapping[str, Any], caption_part: Mapping[str, Any] | None
) -> dict[str, Any]:
    """``info["text_to_image"]`` of a captioned run: the caption column and choice, the groups, and the text
    encoder of the stored ``caption_embeds`` (so a trained model can encode new prompts alike)."""
    captions = options.captions
    return {
        "caption_column": captions.column,
        "caption_choice": captions.choice,
        "groups": dict(group_record),
        "text_encoder": (caption_part or {}).get("text_encoder"),
        "max_length": (caption_part or {}).get("max_length"),
    }


def group_plan(plan: Plan, names: Sequence[str]) -> Plan:
    """The plan of a captioned run once its groups are known: the groups are its classes."""
    from dataclasses import replace

    from datasets import ClassLabel

    return replace(
        plan, num_classes=len(names), class_names=list(names), label_feature=ClassLabel(names=list(names))
    )


def attach_vae(options: CondenseOptions, device: torch.device, scorer_vae: Any = None, scored: bool = False):
    """The VAE Attach encodes latents with: the scorer's when scoring ran, else ``vae`` (``"auto"`` = the
    paper's SD VAE), ``None`` in pixel space."""
    from ..utils.vae import load_vae

    if scored:
        return scorer_vae
    vae = options.score.vae
    if vae == AUTO:
        vae = DEFAULT_VAE
    return load_vae(vae, dtype=torch.float32, device=device)


def token_count(options: CondenseOptions, vae: Any) -> int:
    """h, the number of visual tokens: ``num_visual_tokens``, or the diffusion transformer's token grid
    ``(resolution / vae factor / patch_size) ** 2`` (checked to divide evenly)."""
    from ..utils.vae import downsample_factor

    factor = downsample_factor(vae)
    patch = options.attach.patch_size
    if options.resolution % factor or (options.resolution // factor) % patch:
        raise ValueError(
            f"resolution={options.resolution} must be divisible by the VAE factor {factor} times patch_size={patch} "
            "(the diffusion transformer's token grid)"
        )
    if options.attach.num_visual_tokens is not None:
        return options.attach.num_visual_tokens
    return ((options.resolution // factor) // patch) ** 2


def _describe(value: Any) -> str:
    if isinstance(value, (str, os.PathLike)):
        return repr(os.fspath(value))
    return f"<loaded {type(value).__name__}>"


def scoring_record(
    config: dict[str, Any], reliability: Any, standardization: Any, warn_reliability: float | None
) -> dict[str, Any]:
    """``info["scoring"]``: the scorer's config, the reliability report (and the threshold the card warns
    below) and the standardisation statistics."""
    record = dict(config)
    record["reliability"] = None if reliability is None else reliability.to_dict()
    record["warn_reliability"] = warn_reliability
    if standardization is not None:
        record["standardization"] = standardization.to_dict()
    return record


# --------------------------------------------------------------------------------------
# phase results
# --------------------------------------------------------------------------------------


@dataclass
class Scores:
    """The score phase's result: one row per scored image (corrupt images left out).

    Attributes:
        source_index: ``(N,)`` int64 rows in the source split.
        labels: ``(N,)`` int64.
        difficulty: ``(N,)`` float32, or None when no scores were computed or reused.
        info: what ``info["scoring"]`` records (the scorer's config, or why nothing was scored).
        features: ``(N, d)`` selection features of feature-based strategies, when given.
    """

    source_index: np.ndarray
    labels: np.ndarray
    difficulty: np.ndarray | None
    info: dict[str, Any]
    features: np.ndarray | None = None


@dataclass
class Attached:
    """The attach phase's result: the samples table, each part's ``info`` record (by part name, in
    ``attach`` order) and the ``classes`` table of a class part (``text``)."""

    samples: Any
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    classes: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Plan:
    """What :func:`validate` established about the data, before any model is loaded."""

    options: CondenseOptions
    num_classes: int
    class_names: list[str]  # one per class id: the names used for the card and the prompts
    label_feature: Any
    source: dict[str, Any]  # info["source"]
    run_scorer: bool
    reuse_scores: bool

    @property
    def class_label(self):
        """The ``ClassLabel`` of the stored ``label`` column: the source's, else one of unique display names."""
        from datasets import ClassLabel

        if isinstance(self.label_feature, ClassLabel):
            return self.label_feature
        return ClassLabel(names=class_prompts(self.class_names)[0])


def check_class_setup(options: CondenseOptions, source_names: Sequence[str], bare_labels: bool) -> list[str]:
    """The class names of the run: ``class_names`` (same count as the source's classes) or the source's;
    for ``text``, checks that names exist for bare integer labels and that prompts are unique."""
    names = list(options.data.class_names) if options.data.class_names is not None else list(source_names)
    if len(names) != len(source_names):
        raise ValueError(
            f"class_names has {len(names)} names but the dataset has {len(source_names)} classes"
        )
    if "text" in options.attach.parts:
        if options.data.class_names is None and bare_labels:
            raise ValueError(
                f"column {options.data.label_column!r} holds bare integers, so there are no class names for the "
                "text prompts: pass class_names=[...] (one per class id) or leave 'text' out of attach"
            )
        class_prompts(
            names, options.attach.prompt_template
        )  # missing/duplicate names, before any model loads
    return names


# --------------------------------------------------------------------------------------
# select, class text, assemble: the same for every runner
# --------------------------------------------------------------------------------------


def select_rows(options: CondenseOptions, scores: Scores, num_classes: int):
    """Run the selection on the scored rows: ``(SelectionResult, source rows (M,) int64)``."""
    from ..selection.strategies import select

    sel = options.select
    result = select(
        scores.difficulty,
        scores.labels,
        images_per_class=sel.images_per_class,
        ratio=sel.ratio,
        strategy=sel.strategy,
        interval=sel.interval,
        features=scores.features,
        seed=sel.seed,
        num_classes=num_classes,
        **sel.strategy_options,
    )
    rows = scores.source_index[np.asarray(result.indices, dtype=np.int64)].astype(np.int64)
    logger.info("condense: selected %d of %d images (%s)", len(rows), len(scores.labels), sel.strategy)
    if sel.ratio is not None and len(scores.labels):
        realised = len(rows) / len(scores.labels)
        if abs(realised / sel.ratio - 1) > REALISED_RATIO_TOLERANCE:
            logger.warning(
                "ratio=%g keeps %d of %d images, a realised fraction of %.3g: the budget is %d per class "
                "(round(ratio x %d rows / %d classes)), %s",
                sel.ratio,
                len(rows),
                len(scores.labels),
                realised,
                result.images_per_class,
                len(scores.labels),
                int(np.count_nonzero(result.class_sizes)),
                "at least 1 per class" if result.images_per_class == 1 else "short in the small classes",
            )
    return result, rows


def load_parts(options: CondenseOptions, context: PartContext) -> dict[str, AttachPart]:
    """Every Attach part of the run, built (models loaded) in ``attach`` order."""
    return {name: get_part(name).load(options, context) for name in options.attach.parts}


def attach_classes(parts: Mapping[str, AttachPart], names: Sequence[str], attached: Attached) -> None:
    """The class-level parts (``text``): the ``classes`` table and their records, into ``attached``."""
    for name, part in parts.items():
        if type(part).column is None:
            attached.classes = part.classes(list(names))
            attached.records[name] = part.config


def part_context(options: CondenseOptions, device: torch.device, vae: Any) -> PartContext:
    """What the parts are built with: the device, the run's VAE and (when a part needs the VAE) h."""
    return PartContext(device, vae, token_count(options, vae) if needs_vae(options.attach.parts) else None)


def assemble(
    plan: Plan, scores: Scores, selection: Any, attached: Attached, **extra: Any
) -> CondensedDataset:
    """The condensed dataset: the attached samples, the class table, every scored row and the ``info``."""
    from datasets import Dataset

    options = plan.options
    score_table = None
    if scores.difficulty is not None:
        score_table = Dataset.from_dict(
            {"source_index": scores.source_index, "label": scores.labels, "difficulty": scores.difficulty},
            features=scores_features(plan.class_label),
        )
    samples = attached.samples
    records = {name: attached.records.get(name) for name in options.attach.parts}
    for name in options.attach.parts:  # a part from outside the package describes itself in its record
        if name not in BUILTIN_PARTS:
            part = get_part(name)
            records[name] = {**records[name], "column": part.column, "description": part.description}
    info = build_info(
        source=plan.source,
        class_names=list(plan.class_names),
        ratio=options.select.ratio,
        selection=selection.to_dict() if hasattr(selection, "to_dict") else dict(selection),
        interval=options.select.interval,
        feature_column=options.select.feature_column,
        labels=column_numpy(samples, "label").astype(np.int64),
        scoring=scores.info,
        parts=records,
        attach=options.attach.parts,
        resolution=options.resolution,
        patch_size=options.attach.patch_size,
        seed=options.select.seed,
        notes=options.notes,
        **{**attached.extra, **extra},
    )
    classes = attached.classes
    return CondensedDataset(samples, classes, info, scores=score_table)


# --------------------------------------------------------------------------------------
# the in-memory runner (map-style datasets)
# --------------------------------------------------------------------------------------


class MemoryRunner:
    """The phases over a map-style ``Dataset`` held by ``datasets``: scoring and Attach are map
    transforms (:meth:`DifficultyScorer.apply`, :meth:`LatentEncoder.apply`, ...), so a disk-backed
    dataset hits the ``datasets`` cache when the same run is repeated."""

    def __init__(self, dataset: Any, split: str | None, options: CondenseOptions) -> None:
        self.options = options
        self.dataset = dataset
        self.split = split

    # -- validate ------------------------------------------------------------------------
    def validate(self) -> Plan:
        """Every cheap check (columns, labels, names, prompts, an existing ``difficulty`` column, feature
        columns, paths), before any model loads."""
        from datasets import ClassLabel, Value

        from ..data.inputs import prepare_dataset

        options = self.options
        data_opts = options.data
        if options.captions is not None:
            return self.validate_captioned()
        dataset, class_info = prepare_dataset(
            self.dataset, image_column=data_opts.image_column, label_column=data_opts.label_column
        )
        self.dataset = dataset
        columns = dataset.column_names
        sel = options.select
        if sel.feature_column is not None and sel.feature_column not in columns:
            raise ValueError(
                f"feature_column={sel.feature_column!r} is not a column of the dataset; columns: {columns}"
            )
        if sel.features is not None and len(sel.features) != len(dataset):
            raise ValueError(
                f"selection features have {len(sel.features)} rows but the dataset has {len(dataset)}"
            )
        for column, part in all_part_columns(options.attach.parts).items():
            if column in columns:
                raise ValueError(
                    f"the dataset already has a {column!r} column; remove it or leave {part!r} out of attach"
                )
        label_feature = dataset.features[data_opts.label_column]
        names = check_class_setup(options, class_info.names, not isinstance(label_feature, ClassLabel))
        reuse = "difficulty" in columns
        run_scorer = not reuse and (options.score.scorer is not None or needs_scores(options))
        if reuse:
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
        elif run_scorer and options.score.scorer is None:
            raise ValueError(
                f"strategy {sel.strategy!r} needs difficulty scores: pass a scorer, or a dataset with a "
                "'difficulty' column"
            )
        options.check_references(run_scorer)
        check_scorer_conditioning(options, run_scorer)
        info = dataset.info
        source = {
            "name": getattr(info, "dataset_name", None) or getattr(info, "builder_name", None),
            "config": getattr(info, "config_name", None),
            "split": self.split,
            "num_rows": len(dataset),
            "fingerprint": dataset._fingerprint,
            "image_column": data_opts.image_column,
            "label_column": data_opts.label_column,
        }
        return Plan(options, class_info.num_classes, names, label_feature, source, run_scorer, reuse)

    def validate_captioned(self) -> Plan:
        """A captioned run's cheap checks: the image column, every caption (missing, empty, not a string:
        naming the row), the labels of ``group_by="label"``, feature columns, paths and that the scorer is a
        text-to-image model; the groups (its classes) are known only after scoring."""
        from datasets import Image

        from ..selection.captions import check_caption_column

        options, dataset = self.options, self.dataset
        data_opts, captions = options.data, options.captions
        features = dataset.features
        if data_opts.image_column not in features:
            raise ValueError(
                f"image_column={data_opts.image_column!r} is not a column of the dataset; available columns: "
                f"{list(features)}. Pass image_column=... to name the right one."
            )
        if not isinstance(features[data_opts.image_column], Image):
            raise TypeError(
                f"column {data_opts.image_column!r} has feature {features[data_opts.image_column]!r}, expected "
                "datasets.Image()"
            )
        check_caption_column(dataset, captions.column)
        if captions.group_by == "label":
            from ..data.inputs import prepare_dataset

            dataset, _ = prepare_dataset(dataset, data_opts.image_column, data_opts.label_column)
            self.dataset = dataset
        if "difficulty" in dataset.column_names:
            raise ValueError(
                "the dataset already has a 'difficulty' column; a captioned run scores again (its groups come from "
                "the scorer's caption encoding): drop it first (dataset.remove_columns('difficulty'))"
            )
        if options.score.scorer is None:
            raise ValueError(
                "a captioned run needs a text-to-image scorer (its groups and scores come from it): pass scorer=..."
            )
        sel = options.select
        if sel.feature_column is not None and sel.feature_column not in dataset.column_names:
            raise ValueError(
                f"feature_column={sel.feature_column!r} is not a column of the dataset; columns: {dataset.column_names}"
            )
        if sel.features is not None and len(sel.features) != len(dataset):
            raise ValueError(
                f"selection features have {len(sel.features)} rows but the dataset has {len(dataset)}"
            )
        options.check_references(True)
        check_scorer_conditioning(options, True)
        info = dataset.info
        source = {
            "name": getattr(info, "dataset_name", None) or getattr(info, "builder_name", None),
            "config": getattr(info, "config_name", None),
            "split": self.split,
            "num_rows": len(dataset),
            "fingerprint": dataset._fingerprint,
            "image_column": data_opts.image_column,
            "caption_column": captions.column,
        }
        return Plan(options, 0, [], None, source, True, False)

    # -- the phases ---------------------------------------------------------------------
    def run(self) -> CondensedDataset:
        from ..utils.hub import resolve_device

        plan = self.validate()
        options = self.options
        device = resolve_device(options.device)
        scorer, scorer_vae = (
            load_scorer(options, device, return_per_timestep=options.score.return_per_timestep)
            if (plan.run_scorer)
            else (None, None)
        )
        needs = needs_vae(options.attach.parts)
        vae = attach_vae(options, device, scorer_vae, scored=scorer is not None) if needs else None
        context = part_context(options, device, vae)

        scored, scores = self.score(plan, scorer)
        if options.captions is not None:  # the groups, assigned by the scorer, are the classes from here on
            plan = group_plan(plan, scorer.group_names)
        selection, rows = select_rows(options, scores, plan.num_classes)
        parts = load_parts(options, context)
        self.device = device
        attached = self.attach(plan, scored, rows, scores, parts)
        attach_classes(parts, plan.class_names, attached)
        if options.captions is not None:
            attached.extra["text_to_image"] = text_to_image_record(
                options, scorer.group_record, attached.records.get("caption")
            )
        return assemble(plan, scores, selection, attached)

    def score(self, plan: Plan, scorer: Any) -> tuple[Any, Scores]:
        options = self.options
        dataset = self.dataset
        if plan.reuse_scores:
            scored, info = dataset, {"reused_column": True}
        elif scorer is None:
            scored = dataset
            info = {"skipped": f"strategy {options.select.strategy!r} does not use difficulty scores"}
        else:
            scored, info = (
                scorer.apply(dataset),
                scoring_record(
                    scorer.config, scorer.reliability, scorer.standardization, scorer.warn_reliability
                ),
            )
        if options.score.min_reliability is not None and "skipped" not in info:  # the opt-in gate
            check_reliability(
                Reliability.from_dict(info["reliability"]) if info.get("reliability") else None,
                warn_below=None,
                min_reliability=options.score.min_reliability,
                where="condense",
            )
        has_scores = "difficulty" in scored.column_names
        features = options.select.features
        if options.select.feature_column is not None:
            column = options.select.feature_column
            features = np.asarray(scored.with_format("numpy", columns=[column])[:][column])
        label_column = "group" if options.captions is not None else options.data.label_column
        scores = Scores(
            source_index=np.arange(len(scored), dtype=np.int64),
            labels=column_numpy(scored, label_column).astype(np.int64),
            difficulty=column_numpy(scored, "difficulty").astype(np.float32) if has_scores else None,
            info=info,
            features=None if features is None else np.asarray(features),
        )
        return scored, scores

    def attach(
        self, plan: Plan, scored: Any, rows: np.ndarray, scores: Scores, parts: Mapping[str, AttachPart]
    ) -> Attached:
        from datasets import Value

        options = self.options
        image, label = options.data.image_column, options.data.label_column
        captioned = options.captions is not None
        if captioned:  # the group is the label; the caption each image was scored with is kept
            label = "group"
        has_scores = scores.difficulty is not None
        caption = ["scored_caption"] if captioned else []
        kept = [image, label, *(["difficulty"] if has_scores else []), *caption]
        samples = scored.select_columns(kept).select(rows)
        samples = samples.add_column("source_index", rows.tolist(), feature=Value("int64"))
        samples = samples.rename_columns(
            {image: "image", label: "label", **dict.fromkeys(caption, "caption")}
        )
        samples = samples.cast_column("label", plan.class_label)
        if has_scores:
            samples = samples.cast_column("difficulty", Value("float32"))
        samples = samples.select_columns(
            [
                "image",
                "label",
                "source_index",
                *(["difficulty"] if has_scores else []),
                *(["caption"] * captioned),
            ]
        )
        attached = Attached(samples)
        for name, part in parts.items():  # the row parts, each a datasets map over the selected rows
            if type(part).column is not None:
                attached.samples = part_transform(part, options, self.device).apply(attached.samples)
                attached.records[name] = part.config
        return attached


__all__ = [
    "Attached",
    "MemoryRunner",
    "Plan",
    "Scores",
    "assemble",
    "attach_classes",
    "attach_vae",
    "check_class_setup",
    "check_scorer_conditioning",
    "group_plan",
    "load_parts",
    "load_scorer",
    "part_context",
    "scoring_record",
    "select_rows",
    "text_to_image_record",
    "token_count",
]
