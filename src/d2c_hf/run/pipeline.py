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

from ..attach.attachers import (
    ATTACH_PARTS,
    check_class_names,
    class_prompts,
    parse_attach,
    resolve_attach_dtype,
)
from ..condensed.dataset import CondensedDataset, build_info, scores_features
from ..selection.reliability import DEFAULT_WARN_RELIABILITY, Reliability, check_reliability, check_threshold
from ..selection.scorer import DEFAULT_PROBE_ROWS, MIDPOINTS, check_estimator
from ..utils.checks import check_positive_int, check_seed
from ..utils.columns import column_numpy
from ..utils.hub import normalise_reference
from ..utils.vae import AUTO, DEFAULT_VAE, PIXEL_SPACE, normalise_vae

logger = logging.getLogger(__name__)

DEFAULT_SCORER = "facebook/DiT-XL-2-256"
DEFAULT_TEXT_ENCODER = "google/flan-t5-xl"
DEFAULT_VISION_ENCODER = "facebook/dinov2-base"
DEFAULT_PROMPT = "a photo of a {}"
DEFAULT_ATTACH = ("latents", "visual", "text")


# --------------------------------------------------------------------------------------
# typed options (argparse and condense() build these; nothing else reads a Namespace)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataOptions:
    """Which columns hold what, and how bad rows are handled.

    Attributes:
        image_column, label_column: input columns (stored as ``image`` / ``label``).
        key_column: a column whose value replaces the pixel hash as the noise key of a row.
        class_names: one name per class id, a sequence or a ``{label: name}`` mapping (default: the
            ``ClassLabel`` names); needed for ``text`` when the labels are bare integers. Stored as a tuple.
        skip_corrupt: skip undecodable images (recorded) instead of failing on the first (sharded runs).
    """

    image_column: str = "image"
    label_column: str = "label"
    key_column: str | None = None
    class_names: Sequence[str] | Mapping[int, str] | None = None
    skip_corrupt: bool = False

    def __post_init__(self) -> None:
        for name in ("image_column", "label_column"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} must be a column name, got {getattr(self, name)!r}")
        if self.class_names is not None:
            object.__setattr__(self, "class_names", tuple(check_class_names(self.class_names)))


@dataclass(frozen=True)
class ScoreOptions:
    """How the difficulty is estimated (see :class:`d2c_hf.DifficultyScorer`).

    Attributes:
        scorer: a Hub id, a local folder, a loaded model or a ``DifficultyScorer``; ``None`` = no scoring
            (an existing ``difficulty`` column is reused, or the strategy needs no scores).
        vae: ``"auto"`` = the scorer's own ``vae/``, else pixel space for a 3-channel scorer, else
            :data:`~d2c_hf.utils.vae.DEFAULT_VAE`; ``"pixel"`` / ``None`` = pixel space; or a VAE (Hub id,
            folder, loaded). A VAE that encodes differently from the one the scorer ships is refused.
        num_timesteps, seed, dtype, max_forward_batch, prediction_type: passed to the scorer
            (``num_timesteps=None``: 10, or the length of an explicit ``timestep_grid``).
        timestep_grid, num_draws, antithetic, standardize_timesteps: the estimator (see
            :class:`d2c_hf.DifficultyScorer`); the defaults are the paper's (10 evenly spaced timesteps, one
            draw each).
        reliability_probe: with one draw, the rows re-scored with fresh noise to measure the reliability
            (default 512, spread over up to 8 classes; 0 = none). With ``num_draws >= 2`` the split-half
            reliability needs no extra forward pass.
        warn_reliability: warn (and say so on the card) when the reliability is below this; ``None`` = never.
        min_reliability: stop before selecting (:class:`~d2c_hf.selection.reliability.ReliabilityError`) when the
            reliability is below this or cannot be computed; ``None`` (default) = never.
        compile: ``torch.compile`` the scorer (sharded runs).
        return_per_timestep: map-style runs: also add ``difficulty_per_timestep`` while scoring.
    """

    scorer: Any = DEFAULT_SCORER
    vae: Any = AUTO
    num_timesteps: int | None = None
    seed: int = 0
    dtype: Any = None
    max_forward_batch: int | None = None
    prediction_type: str | None = None
    compile: bool = False
    return_per_timestep: bool = False
    timestep_grid: Any = MIDPOINTS
    num_draws: int = 1
    antithetic: bool = False
    standardize_timesteps: bool = False
    reliability_probe: int = DEFAULT_PROBE_ROWS
    warn_reliability: float | None = DEFAULT_WARN_RELIABILITY
    min_reliability: float | None = None

    def __post_init__(self) -> None:
        vae = normalise_vae(self.vae)
        object.__setattr__(self, "vae", vae if vae in (AUTO, PIXEL_SPACE) else normalise_reference(vae))
        object.__setattr__(self, "scorer", normalise_reference(self.scorer))
        _, grid = check_estimator(
            self.num_timesteps, self.timestep_grid, self.num_draws, self.antithetic, self.reliability_probe
        )
        object.__setattr__(self, "timestep_grid", grid)
        object.__setattr__(
            self, "warn_reliability", check_threshold(self.warn_reliability, "warn_reliability")
        )
        object.__setattr__(self, "min_reliability", check_threshold(self.min_reliability, "min_reliability"))
        check_seed(self.seed)
        if self.max_forward_batch is not None:
            check_positive_int(self.max_forward_batch, "max_forward_batch")
        resolve_attach_dtype(self.dtype)  # refuses anything but float32 / bfloat16 / float16


@dataclass(frozen=True)
class SelectOptions:
    """The budget and the strategy (see :func:`d2c_hf.selection.strategies.select`).

    Attributes:
        images_per_class, ratio: the budget (exactly one).
        strategy, interval, seed: the selection.
        strategy_options: the strategy's own options (e.g. ``window``'s ``position``).
        feature_column: a column of per-row features for feature-based strategies (herding, k-center...).
        features: or the features themselves, ``(N, d)``, one row per dataset row.
    """

    images_per_class: int | None = None
    ratio: float | None = None
    strategy: str = "interval"
    interval: int | str = "auto"
    seed: int = 0
    strategy_options: Mapping[str, Any] = field(default_factory=dict)
    feature_column: str | None = None
    features: Any = None

    def __post_init__(self) -> None:
        from ..selection.strategies import Selector

        clash = {"images_per_class", "ratio", "strategy", "interval", "seed", "num_classes"} & set(
            self.strategy_options
        )
        if clash:
            raise TypeError(f"selection_kwargs must not repeat condense() arguments: {sorted(clash)}")
        # validates the strategy, budget, interval, seed and the strategy's options without any data
        Selector(
            self.strategy,
            images_per_class=self.images_per_class,
            ratio=self.ratio,
            interval=self.interval,
            seed=self.seed,
            feature_column=self.feature_column if self.features is None else "features",
            **self.strategy_options,
        )

    def to_record(self) -> dict[str, Any]:
        """The options as recorded with a sharded selection (``selection.json``)."""
        return {
            "ratio": self.ratio,
            "images_per_class": self.images_per_class,
            "strategy": self.strategy,
            "interval": self.interval,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class AttachOptions:
    """What Attach stores (see :mod:`d2c_hf.attach.attachers`).

    Attributes:
        parts: any of ``"latents"``, ``"visual"``, ``"text"``.
        vision_encoder, text_encoder: Hub ids, folders or loaded models.
        patch_size: the diffusion transformer's patch size (for the visual token count).
        num_visual_tokens: h; default ``(resolution / vae factor / patch_size) ** 2``.
        prompt_template: the class prompt, with one ``{}``.
        dtype: the Attach models' compute dtype (default float32).
        reuse_latents: sharded runs in a latent space: take the selected rows' latents from the
            posteriors the scorer stored (each image encoded once) instead of encoding them again.
    """

    parts: tuple[str, ...] = DEFAULT_ATTACH
    vision_encoder: Any = DEFAULT_VISION_ENCODER
    text_encoder: Any = DEFAULT_TEXT_ENCODER
    patch_size: int = 2
    num_visual_tokens: int | None = None
    prompt_template: str = DEFAULT_PROMPT
    dtype: Any = None
    reuse_latents: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "parts", parse_attach(self.parts))
        object.__setattr__(self, "vision_encoder", normalise_reference(self.vision_encoder))
        object.__setattr__(self, "text_encoder", normalise_reference(self.text_encoder))
        check_positive_int(self.patch_size, "patch_size")
        if self.num_visual_tokens is not None:
            check_positive_int(self.num_visual_tokens, "num_visual_tokens")
        resolve_attach_dtype(self.dtype)
        if "text" in self.parts:
            class_prompts(["x"], self.prompt_template)  # the template has exactly one {}


@dataclass(frozen=True)
class CondenseOptions:
    """Everything a condense run needs besides the data.

    Attributes:
        resolution: image side (ADM centre crop) for scoring and Attach.
        batch_size: images per model call, for every model.
        device: ``None`` = CUDA if available, else CPU (sharded runs: the process's device).
        notes: free-text lines recorded in ``info["notes"]`` and shown on the card.
    """

    data: DataOptions = field(default_factory=DataOptions)
    score: ScoreOptions = field(default_factory=ScoreOptions)
    select: SelectOptions | None = None  # None: a run that does not select (``d2c score``, ``d2c attach``)
    attach: AttachOptions = field(default_factory=AttachOptions)
    resolution: int = 256
    batch_size: int = 32
    device: Any = None
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_positive_int(self.resolution, "resolution")
        check_positive_int(self.batch_size, "batch_size")
        if self.resolution % self.attach.patch_size:
            raise ValueError(
                f"resolution={self.resolution} is not divisible by patch_size={self.attach.patch_size}"
            )
        object.__setattr__(self, "notes", tuple(str(n) for n in self.notes or ()))

    def check_references(self, run_scorer: bool) -> None:
        """Refuse mistyped local paths of the models this run will load, before any is loaded."""
        from ..utils.hub import check_reference

        refs = []
        if run_scorer and isinstance(self.score.scorer, (str, os.PathLike)):
            refs.append(("scorer", self.score.scorer))
        if isinstance(self.score.vae, (str, os.PathLike)) and self.score.vae not in (AUTO, PIXEL_SPACE):
            refs.append(("vae", self.score.vae))
        for part, role, value in (
            ("visual", "vision_encoder", self.attach.vision_encoder),
            ("text", "text_encoder", self.attach.text_encoder),
        ):
            if part in self.attach.parts and isinstance(value, (str, os.PathLike)):
                refs.append((role, value))
        for role, value in refs:
            check_reference(value, role)


def needs_scores(options: CondenseOptions) -> bool:
    from ..selection.strategies import STRATEGIES

    return options.select is not None and STRATEGIES[options.select.strategy].needs_scores


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
    from ..utils.vae import load_vae, same_encoder

    score = options.score
    if isinstance(score.scorer, DifficultyScorer):
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
    scorer = DifficultyScorer.from_pretrained(
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
        label_column=options.data.label_column,
        key_column=options.data.key_column,
        return_per_timestep=return_per_timestep,
        max_forward_batch=score.max_forward_batch,
    )
    if score.compile:
        scorer.model = torch.compile(scorer.model)
    return scorer, scorer.vae


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
    """The attach phase's result: the samples table and each attacher's record."""

    samples: Any
    latents: dict[str, Any] | None = None
    visual: dict[str, Any] | None = None
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
    return result, rows


def class_table(options: CondenseOptions, names: Sequence[str], device: torch.device):
    """The ``classes`` table (T5 embeddings of one prompt per class) and the text attacher's record."""
    from ..attach.attachers import TextAttacher

    text = TextAttacher.from_pretrained(
        options.attach.text_encoder,
        prompt_template=options.attach.prompt_template,
        dtype=resolve_attach_dtype(options.attach.dtype),
        device=device,
    )
    return text.encode_classes(list(names)), text.config


def assemble(
    plan: Plan,
    scores: Scores,
    selection: Any,
    attached: Attached,
    classes: Any,
    text_info: dict[str, Any] | None,
    **extra: Any,
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
    info = build_info(
        source=plan.source,
        class_names=list(plan.class_names),
        ratio=options.select.ratio,
        selection=selection.to_dict() if hasattr(selection, "to_dict") else dict(selection),
        interval=options.select.interval,
        feature_column=options.select.feature_column,
        labels=column_numpy(samples, "label").astype(np.int64),
        scoring=scores.info,
        latents=attached.latents,
        visual=attached.visual,
        text=text_info,
        attach=options.attach.parts,
        resolution=options.resolution,
        patch_size=options.attach.patch_size,
        num_visual_tokens=attached.visual["num_tokens"] if attached.visual else None,
        seed=options.select.seed,
        notes=options.notes,
        **{**attached.extra, **extra},
    )
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
        for part, column in (("latents", "latents"), ("visual", "visual_embeds")):
            if part in options.attach.parts and column in columns:
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
        needs_vae = "latents" in options.attach.parts or "visual" in options.attach.parts
        vae = attach_vae(options, device, scorer_vae, scored=scorer is not None) if needs_vae else None
        tokens = token_count(options, vae) if needs_vae else None

        scored, scores = self.score(plan, scorer)
        selection, rows = select_rows(options, scores, plan.num_classes)
        attached = self.attach(plan, scored, rows, scores, vae, tokens, device)
        classes = text_info = None
        if "text" in options.attach.parts:
            classes, text_info = class_table(options, plan.class_names, device)
        return assemble(plan, scores, selection, attached, classes, text_info)

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
        scores = Scores(
            source_index=np.arange(len(scored), dtype=np.int64),
            labels=column_numpy(scored, options.data.label_column).astype(np.int64),
            difficulty=column_numpy(scored, "difficulty").astype(np.float32) if has_scores else None,
            info=info,
            features=None if features is None else np.asarray(features),
        )
        return scored, scores

    def attach(
        self, plan: Plan, scored: Any, rows: np.ndarray, scores: Scores, vae: Any, tokens: int | None, device
    ) -> Attached:
        from datasets import Value

        from ..attach.attachers import LatentEncoder, VisualAttacher

        options = self.options
        image, label = options.data.image_column, options.data.label_column
        has_scores = scores.difficulty is not None
        kept = [image, label, *(["difficulty"] if has_scores else [])]
        samples = scored.select_columns(kept).select(rows)
        samples = samples.add_column("source_index", rows.tolist(), feature=Value("int64"))
        samples = samples.rename_columns({image: "image", label: "label"})
        samples = samples.cast_column("label", plan.class_label)
        if has_scores:
            samples = samples.cast_column("difficulty", Value("float32"))
        samples = samples.select_columns(
            ["image", "label", "source_index", *(["difficulty"] if has_scores else [])]
        )
        dtype = resolve_attach_dtype(options.attach.dtype)
        attached = Attached(samples)
        if "latents" in options.attach.parts:
            encoder = LatentEncoder(
                vae, resolution=options.resolution, batch_size=options.batch_size, dtype=dtype, device=device
            )
            attached.samples = encoder.apply(attached.samples)
            attached.latents = encoder.config
        if "visual" in options.attach.parts:
            visual = VisualAttacher.from_pretrained(
                options.attach.vision_encoder,
                num_tokens=tokens,
                resolution=options.resolution,
                batch_size=options.batch_size,
                dtype=dtype,
                device=device,
            )
            attached.samples = visual.apply(attached.samples)
            attached.visual = visual.config
        return attached


__all__ = [
    "ATTACH_PARTS",
    "AttachOptions",
    "Attached",
    "CondenseOptions",
    "DataOptions",
    "MemoryRunner",
    "Plan",
    "ScoreOptions",
    "Scores",
    "SelectOptions",
    "assemble",
    "attach_vae",
    "check_class_setup",
    "class_table",
    "load_scorer",
    "scoring_record",
    "select_rows",
    "token_count",
]
