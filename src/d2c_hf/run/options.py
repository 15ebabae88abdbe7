"""The options of a condense run, each declared once: the typed records every entry point builds.

:func:`d2c_hf.condense` takes its defaults from these classes (its signature reads them), the ``d2c``
commands take their flag defaults from them, and :class:`~d2c_hf.DifficultyScorer` shares the scorer's
(``tests/test_options.py`` compares them all). Each class checks itself on construction, so every cheap
mistake is refused before a model loads, and converts to and from a JSON record
(:meth:`to_record` / :meth:`from_record`): a sharded phase rebuilds exactly the options it was given from
its work folder.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..selection.estimator import DEFAULT_PROBE_ROWS, MIDPOINTS, check_estimator
from ..selection.reliability import DEFAULT_WARN_RELIABILITY, check_threshold
from ..utils.checks import check_non_negative_int, check_positive_int, check_seed
from ..utils.files import absolute
from ..utils.spaces import AUTO, PIXEL_SPACE, normalise_vae

# --------------------------------------------------------------------------------------
# JSON records
# --------------------------------------------------------------------------------------


def _record_value(value: Any, where: str) -> Any:
    """``value`` as JSON (tuples become lists, paths strings, dtypes their names); refuses what a record
    cannot hold (a loaded model, an array) naming the option."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if type(value).__module__ == "torch" and type(value).__name__ == "dtype":  # without importing torch
        return str(value).removeprefix("torch.")
    if isinstance(value, (list, tuple)):
        return [_record_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        return {str(k): _record_value(v, f"{where}[{k!r}]") for k, v in value.items()}
    raise TypeError(
        f"option {where} is a {type(value).__name__}, which a run record (JSON) cannot hold: pass a Hub id, a "
        "local folder or a plain value"
    )


class _Record:
    """``to_record`` / ``from_record`` for a frozen options dataclass (nested options included)."""

    #: fields left out of the record (values that only live in memory)
    _unrecorded: tuple[str, ...] = ()

    def to_record(self) -> dict[str, Any]:
        """The options as a JSON-able dict (every field, nested options as dicts)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if f.name in self._unrecorded:
                if getattr(self, f.name) is not None:
                    raise TypeError(
                        f"option {type(self).__name__}.{f.name} cannot be recorded (it lives in memory)"
                    )
                continue
            value = getattr(self, f.name)
            out[f.name] = (
                value.to_record()
                if isinstance(value, _Record)
                else _record_value(value, f"{type(self).__name__}.{f.name}")
            )
        return out

    @classmethod
    def from_record(cls, record: Mapping[str, Any]):
        """The options a :meth:`to_record` gave (missing keys take their defaults, so older records load)."""
        names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(record) - set(names))
        if unknown:
            raise ValueError(f"unknown {cls.__name__} record keys: {unknown}; known: {sorted(names)}")
        kwargs: dict[str, Any] = {}
        for name, value in record.items():
            nested = _NESTED.get((cls.__name__, name))
            if nested is not None and value is not None:
                value = nested.from_record(value)
            elif isinstance(value, list):
                value = tuple(value)
            kwargs[name] = value
        return cls(**kwargs)


def defaults(cls: type) -> dict[str, Any]:
    """``{field: default}`` of an options class (fields with a factory: the value it makes)."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


DEFAULT_SCORER = "facebook/DiT-XL-2-256"
DEFAULT_TEXT_ENCODER = "google/flan-t5-xl"
DEFAULT_VISION_ENCODER = "facebook/dinov2-base"
DEFAULT_PROMPT = "a photo of a {}"
DEFAULT_ATTACH = ("latents", "visual", "text")
#: the default parts of a captioned run: the per-row caption embeddings replace the per-class text table
DEFAULT_CAPTION_ATTACH = ("latents", "visual", "caption")


# --------------------------------------------------------------------------------------
# typed options (argparse and condense() build these; nothing else reads a Namespace)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataOptions(_Record):
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
        from ..attach.attachers import check_class_names  # torch: imported when options are built

        for name in ("image_column", "label_column"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} must be a column name, got {getattr(self, name)!r}")
        if self.class_names is not None:
            object.__setattr__(self, "class_names", tuple(check_class_names(self.class_names)))


@dataclass(frozen=True)
class ScoreOptions(_Record):
    """How the difficulty is estimated (see :class:`d2c_hf.DifficultyScorer`).

    Attributes:
        scorer: a Hub id, a local folder, a loaded model or a ``DifficultyScorer``; ``None`` = no scoring
            (an existing ``difficulty`` column is reused, or the strategy needs no scores).
        vae: ``"auto"`` = the scorer's own ``vae/``, else pixel space for a 3-channel scorer, else
            :data:`~d2c_hf.utils.spaces.DEFAULT_VAE`; ``"pixel"`` / ``None`` = pixel space; or a VAE (Hub id,
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
        from ..attach.attachers import resolve_attach_dtype  # torch: imported when options are built
        from ..utils.hub import normalise_reference

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
class SelectOptions(_Record):
    """The budget and the strategy (see :func:`d2c_hf.selection.strategies.select`).

    Attributes:
        images_per_class, ratio: the budget (exactly one).
        strategy, interval, seed: the selection.
        strategy_options: the strategy's own options (e.g. ``window``'s ``position``).
        feature_column: a column of per-row features for the feature strategies (herding, k-center, k-means, alignment...).
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

    _unrecorded = ("features",)  # an array: a sharded run reads features from feature_column

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


@dataclass(frozen=True)
class AttachOptions(_Record):
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
        part_options: ``{part: {option: value}}``, the options of registered parts
            (:class:`~d2c_hf.attach.parts.AttachPart`; ``--part_option NAME.KEY=VALUE``).
    """

    parts: tuple[str, ...] = DEFAULT_ATTACH
    vision_encoder: Any = DEFAULT_VISION_ENCODER
    text_encoder: Any = DEFAULT_TEXT_ENCODER
    patch_size: int = 2
    num_visual_tokens: int | None = None
    prompt_template: str = DEFAULT_PROMPT
    dtype: Any = None
    reuse_latents: bool = True
    part_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from ..attach.attachers import class_prompts, resolve_attach_dtype
        from ..attach.parts import parse_attach
        from ..utils.hub import normalise_reference

        object.__setattr__(self, "parts", parse_attach(self.parts))
        unknown = sorted(set(self.part_options) - set(self.parts))
        if unknown:
            raise ValueError(
                f"part_options for {unknown}, which are not attached (attach={list(self.parts)})"
            )
        object.__setattr__(self, "part_options", {k: dict(v) for k, v in self.part_options.items()})
        object.__setattr__(self, "vision_encoder", normalise_reference(self.vision_encoder))
        object.__setattr__(self, "text_encoder", normalise_reference(self.text_encoder))
        check_positive_int(self.patch_size, "patch_size")
        if self.num_visual_tokens is not None:
            check_positive_int(self.num_visual_tokens, "num_visual_tokens")
        resolve_attach_dtype(self.dtype)
        if "text" in self.parts:
            class_prompts(["x"], self.prompt_template)  # the template has exactly one {}


@dataclass(frozen=True)
class CaptionOptions(_Record):
    """A captioned dataset (text-to-image condensation, ``docs/text-to-image.md``): where its captions are, which
    one of a list is used, and how its rows are grouped (groups play the classes' part).

    Attributes:
        column: the column holding each image's caption, a string or a list of strings.
        choice: ``"first"`` (the string, or the first of the list) or ``"random"`` (one of the list, drawn per
            row by a hash of the seed and the row's noise key: shard- and order-invariant).
        group_by: ``"captions"`` (k-means on the scorer's caption features), ``"images"`` (k-means on the pooled
            clean scorer inputs) or ``"label"`` (the data's ``label_column``).
        num_groups: k of the k-means (``None``: ``round(sqrt(N / 2))`` in ``[1, 100]``).
    """

    column: str = "text"
    choice: str = "first"
    group_by: str = "captions"
    num_groups: int | None = None

    def __post_init__(self) -> None:
        from ..selection.captions import check_caption_choice
        from ..selection.groups import check_group_options

        if not isinstance(self.column, str) or not self.column:
            raise ValueError(f"caption_column must be a column name, got {self.column!r}")
        check_caption_choice(self.choice)
        check_group_options(self.group_by, self.num_groups)


@dataclass(frozen=True)
class CondenseOptions(_Record):
    """Everything a condense run needs besides the data.

    Attributes:
        resolution: image side (ADM centre crop) for scoring and Attach.
        batch_size: images per model call, for every model.
        device: ``None`` = CUDA if available, else CPU (sharded runs: the process's device).
        notes: free-text lines recorded in ``info["notes"]`` and shown on the card.
        captions: a captioned run (:class:`CaptionOptions`); ``None`` = a class-labelled run.
    """

    data: DataOptions = field(default_factory=DataOptions)
    score: ScoreOptions = field(default_factory=ScoreOptions)
    select: SelectOptions | None = None  # None: a run that does not select (``d2c score``, ``d2c attach``)
    attach: AttachOptions = field(default_factory=AttachOptions)
    resolution: int = 256
    batch_size: int = 32
    device: Any = None
    notes: tuple[str, ...] = ()
    captions: CaptionOptions | None = None

    def __post_init__(self) -> None:
        if self.captions is not None and "text" in self.attach.parts:
            raise ValueError(
                "attach part 'text' stores one prompt embedding per class, and a captioned dataset has no classes: "
                "attach 'caption' (each image's own caption embedded) instead, e.g. attach=('latents', 'visual', "
                "'caption')"
            )
        if self.captions is None and "caption" in self.attach.parts:
            raise ValueError(
                "attach part 'caption' embeds each image's caption: name the caption column with "
                "caption_column=... (--caption_column), or attach 'text' for class prompts"
            )
        check_positive_int(self.resolution, "resolution")
        check_positive_int(self.batch_size, "batch_size")
        if self.resolution % self.attach.patch_size:
            raise ValueError(
                f"resolution={self.resolution} is not divisible by patch_size={self.attach.patch_size}"
            )
        object.__setattr__(self, "notes", tuple(str(n) for n in self.notes or ()))

    def check_references(self, run_scorer: bool) -> None:
        """Refuse mistyped local paths of the models this run will load, and folders that hold another kind
        of model than the argument's role (:func:`~d2c_hf.utils.roles.check_model_role`), before any is loaded."""
        from ..utils.hub import check_reference
        from ..utils.roles import check_model_role

        refs = []
        if run_scorer and isinstance(self.score.scorer, (str, os.PathLike)):
            refs.append(("scorer", self.score.scorer))
        if isinstance(self.score.vae, (str, os.PathLike)) and self.score.vae not in (AUTO, PIXEL_SPACE):
            refs.append(("vae", self.score.vae))
        from ..attach.parts import get_part

        for name in self.attach.parts:  # each part names the models it loads
            refs += [(r, v) for r, v in get_part(name).references(self) if isinstance(v, (str, os.PathLike))]
        for role, value in refs:
            check_reference(value, role)
            check_model_role(value, role, tokenizer=role == "text_encoder")


def needs_scores(options: CondenseOptions) -> bool:
    from ..selection.strategies import STRATEGIES

    return options.select is not None and STRATEGIES[options.select.strategy].needs_scores


@dataclass(frozen=True)
class RunOptions:
    """The work folder of a sharded run and how its rows are cut and read.

    Attributes:
        output_dir: the work folder (created; a rerun with the same options resumes there).
        shard_size: rows per shard, a multiple of ``batch_size`` (so a batch never straddles shards).
        num_workers: ``DataLoader`` workers decoding and cropping images (0 = in the model process).
        store_posterior: keep each scored image's VAE posterior so Attach reuses it.
        card: write the dataset card (README + figures) of ``condensed/``.
    """

    output_dir: Path
    shard_size: int = 2048
    num_workers: int = 4
    store_posterior: bool = False
    card: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "output_dir", absolute(self.output_dir))
        check_positive_int(self.shard_size, "shard_size")
        check_non_negative_int(self.num_workers, "num_workers")
        check_output_dir(self.output_dir)

    def check_batch(self, batch_size: int) -> None:
        if self.shard_size % batch_size:
            raise ValueError(
                f"shard_size {self.shard_size} must be a multiple of batch_size {batch_size} (so that every batch "
                "holds the same rows whatever the number of processes)"
            )


def check_output_dir(path: Path) -> None:
    """An output folder must be a folder (or not exist yet): checked before any model loads."""
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"output_dir {path} exists and is a file; choose a folder")


_NESTED = {
    ("CondenseOptions", "data"): DataOptions,
    ("CondenseOptions", "score"): ScoreOptions,
    ("CondenseOptions", "select"): SelectOptions,
    ("CondenseOptions", "attach"): AttachOptions,
    ("CondenseOptions", "captions"): CaptionOptions,
}

__all__ = [
    "DEFAULT_ATTACH",
    "DEFAULT_CAPTION_ATTACH",
    "DEFAULT_PROMPT",
    "DEFAULT_SCORER",
    "DEFAULT_TEXT_ENCODER",
    "DEFAULT_VISION_ENCODER",
    "AttachOptions",
    "CaptionOptions",
    "CondenseOptions",
    "DataOptions",
    "RunOptions",
    "ScoreOptions",
    "SelectOptions",
    "check_output_dir",
    "defaults",
    "needs_scores",
]
