""":func:`condense`: D2C end to end in one call, for map-style, streaming and ``DatasetDict`` input.

(The module is not named ``condense``: a submodule of that name would shadow the function
``d2c_hf.condense`` once imported.)

It builds the typed options of :mod:`d2c_hf.run.pipeline` from its arguments and runs the one pipeline
(validate -> score -> select -> attach -> assemble): in memory for a map-style ``Dataset``
(:class:`~d2c_hf.run.pipeline.MemoryRunner`), over shard files in a work folder for a streaming one
(:class:`~d2c_hf.run.sharded.ShardedRunner`, the engine of ``d2c condense``, in this process).
"""

from __future__ import annotations

import inspect
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from ..condensed.dataset import CondensedDataset
from ..utils.checks import check_positive_int
from ..utils.spaces import AUTO
from .options import (
    DEFAULT_CAPTION_ATTACH,
    AttachOptions,
    CaptionOptions,
    CondenseOptions,
    DataOptions,
    ScoreOptions,
    SelectOptions,
)
from .pipeline import MemoryRunner

logger = logging.getLogger(__name__)

#: scorer options a streaming run takes (what ``d2c condense`` has flags for)
STREAMING_SCORER_KWARGS = ("key_column", "max_forward_batch")
#: rows per shard of a streaming condense() run (rounded down to a multiple of batch_size)
STREAMING_SHARD_ROWS = 2048


def condense(
    dataset,
    ratio: float | None = SelectOptions.ratio,
    images_per_class: int | None = SelectOptions.images_per_class,
    *,
    scorer: Any = ScoreOptions.scorer,
    vae: Any = ScoreOptions.vae,
    text_encoder: Any = AttachOptions.text_encoder,
    vision_encoder: Any = AttachOptions.vision_encoder,
    strategy: str = SelectOptions.strategy,
    interval: int | str = SelectOptions.interval,
    attach: str | Sequence[str] | None = AttachOptions.parts,
    resolution: int = CondenseOptions.resolution,
    patch_size: int = AttachOptions.patch_size,
    num_visual_tokens: int | None = AttachOptions.num_visual_tokens,
    image_column: str = DataOptions.image_column,
    label_column: str = DataOptions.label_column,
    caption_column: str | None = None,
    caption_choice: str = CaptionOptions.choice,
    group_by: str = CaptionOptions.group_by,
    num_groups: int | None = CaptionOptions.num_groups,
    class_names: Sequence[str] | Mapping[int, str] | None = DataOptions.class_names,
    prompt_template: str = AttachOptions.prompt_template,
    seed: int = ScoreOptions.seed,
    num_timesteps: int | None = ScoreOptions.num_timesteps,
    timestep_grid: str | Sequence[float] = ScoreOptions.timestep_grid,
    num_draws: int = ScoreOptions.num_draws,
    antithetic: bool = ScoreOptions.antithetic,
    standardize_timesteps: bool = ScoreOptions.standardize_timesteps,
    reliability_probe: int = ScoreOptions.reliability_probe,
    warn_reliability: float | None = ScoreOptions.warn_reliability,
    min_reliability: float | None = ScoreOptions.min_reliability,
    batch_size: int = CondenseOptions.batch_size,
    device: str | torch.device | None = CondenseOptions.device,
    dtype: str | torch.dtype | None = ScoreOptions.dtype,
    selection_kwargs: Mapping[str, Any] | None = None,
    part_options: Mapping[str, Mapping[str, Any]] | None = None,
    notes: Sequence[str] | None = None,
    num_rows: int | None = None,
    work_dir: str | os.PathLike | None = None,
    options: CondenseOptions | None = None,
    **scorer_kwargs: Any,
) -> CondensedDataset:
    """D2C end to end: score, select, attach — with the paper's defaults.

    1. **Select.** Score every image's diffusion difficulty with ``scorer`` (default DiT-XL/2
       256, CC BY-NC, in its own VAE's latent space; reused if the dataset already has a
       ``difficulty`` column, and cached by fingerprint for disk-backed datasets), then keep
       ``images_per_class`` per class (``ratio`` -> ``round(ratio * N / C)``, C = classes with rows)
       with ``strategy`` (interval sampling with stride ``interval``; see :func:`d2c_hf.selection.strategies.select`).
    2. **Attach** (``attach`` parts): ``latents`` (VAE posterior mean|std, with the scorer's VAE),
       ``visual`` (patch tokens of ``vision_encoder``; h = ``(resolution / vae factor / patch_size)**2``
       tokens unless ``num_visual_tokens`` is given) and ``text`` (T5 embeddings of ``prompt_template``
       per class).

    **Captioned datasets** (text-to-image, ``docs/text-to-image.md``): with ``caption_column`` the dataset needs
    no labels. ``scorer`` must be a text-to-image model (Stable Diffusion, PixArt, SD3 pipeline; the difficulty
    is conditioned on each image's caption, :class:`~d2c_hf.TextDifficultyScorer`), the rows are grouped
    (``group_by``, ``num_groups``) and the groups play the classes' part (budget per group, stored as
    ``label``); the samples keep their ``caption``, and the default parts are ``latents``, ``visual`` and
    ``caption`` (each image's caption embedded by ``text_encoder``).

    Every model argument is a Hub id, a local folder (``save_pretrained`` layout) or a loaded
    object. Everything cheap is checked before any model is loaded: columns, labels, budget,
    ``attach`` parts, class names and prompt uniqueness, strategy name, keyword arguments, and that
    local model paths exist.

    **Streaming.** An ``IterableDataset`` (or an ``IterableDatasetDict``: its ``train`` split) is
    condensed by the sharded engine of ``d2c condense`` (:mod:`d2c_hf.run.sharded`) in this process:
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
        vae: the VAE for scoring and latents. ``"auto"`` (default): the scorer's own ``vae/`` if it
            ships one, else pixel space for a 3-channel scorer, else the paper's
            ``stabilityai/sd-vae-ft-ema``; ``None`` / ``"pixel"``: pixel space; or a VAE, which must
            encode like the scorer's own VAE when the scorer ships one (else it is refused).
        text_encoder, vision_encoder: models for the ``text`` and ``visual`` parts.
        strategy, interval, seed, selection_kwargs: passed to :func:`d2c_hf.selection.strategies.select`.
        attach: any of ``"latents"``, ``"visual"``, ``"text"`` and the registered parts
            (:func:`~d2c_hf.attach.parts.register_attach_part`); ``()`` for select-only.
        part_options: ``{part: {option: value}}``, the options of registered parts.
        resolution: image side (ADM centre crop) for scoring and latents.
        patch_size: the diffusion transformer's patch size (for the visual token count).
        image_column, label_column: input columns (stored as ``image``/``label``).
        caption_column: a captioned dataset's caption column (a string or a list of strings per image);
            ``None`` = a class-labelled dataset.
        caption_choice: which caption of a list: ``"first"`` or ``"random"`` (per row, keyed like the noise).
        group_by: the groups of a captioned dataset: ``"captions"`` (k-means on the scorer's caption
            features), ``"images"`` or ``"label"`` (the ``label_column``).
        num_groups: k of the k-means (``None``: ``round(sqrt(N / 2))`` in ``[1, 100]``).
        class_names: names per class id (default: the ``ClassLabel`` names), needed for ``text``.
        prompt_template: the class prompt, with one ``{}``.
        num_timesteps: scoring timestep grid size (``None``: 10, or the length of ``timestep_grid``).
        timestep_grid, num_draws, antithetic, standardize_timesteps: the difficulty estimator (see
            :class:`~d2c_hf.DifficultyScorer` and ``docs/scoring.md``); the defaults are the paper's (10
            evenly spaced timesteps, one noise draw each, the raw mean).
        reliability_probe: with one draw, rows re-scored with fresh noise to measure the score's reliability
            (default 512, T forward passes each; 0 = none); with ``num_draws >= 2`` the split-half
            reliability costs nothing. The result is ``info["scoring"]["reliability"]``, on the card.
        warn_reliability: log a warning (and say so on the card) when the reliability is below this.
        min_reliability: stop with :class:`~d2c_hf.selection.reliability.ReliabilityError` before selecting when
            the reliability is below this, or cannot be computed (opt-in).
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
        **scorer_kwargs: forwarded to ``DifficultyScorer.from_pretrained`` (``prediction_type``,
            ``key_column``, ``max_forward_batch``, ``return_per_timestep``; streaming: only
            ``key_column`` and ``max_forward_batch``).

    Returns:
        the :class:`CondensedDataset`.
    """
    from datasets import Dataset, IterableDataset

    from ..selection.scorer_base import ScorerBase

    # ---- the input, and the arguments that only make sense for one kind of it -----------
    dataset, split = pick_split(dataset)
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
    if options is not None:  # the typed options instead of the keyword arguments
        if not isinstance(options, CondenseOptions):
            raise TypeError(f"options must be a CondenseOptions, got {type(options).__name__}")
        arguments = locals()
        given = sorted(
            name
            for name, param in inspect.signature(condense).parameters.items()
            if param.default is not inspect.Parameter.empty
            and name not in ("options", "num_rows", "work_dir")
            and not _same(arguments[name], param.default)
        )
        if given or scorer_kwargs:
            raise TypeError(
                f"pass either options= or the option arguments, not both: {given + sorted(scorer_kwargs)}"
            )
        if options.select is None:
            raise ValueError("options.select is None: a condense run needs a budget (SelectOptions)")
        return _run(dataset, split, options, streaming, num_rows=num_rows, work_dir=work_dir)
    if isinstance(scorer, ScorerBase) and scorer_kwargs:
        raise TypeError(
            f"scorer is already a {type(scorer).__name__}; {sorted(scorer_kwargs)} would be ignored"
        )
    estimator = {
        name: (value, getattr(ScoreOptions, name))
        for name, value in (
            ("num_timesteps", num_timesteps),
            ("timestep_grid", timestep_grid),
            ("num_draws", num_draws),
            ("antithetic", antithetic),
            ("standardize_timesteps", standardize_timesteps),
        )
    }
    if isinstance(scorer, ScorerBase):
        ignored = sorted(k for k, (value, default) in estimator.items() if not _same(value, default))
        if ignored:
            kind = type(scorer).__name__
            raise TypeError(
                f"scorer is already a {kind}, which has its own estimator; {ignored} would be ignored: "
                f"pass them to {kind}.from_pretrained instead"
            )
    captions = None
    if caption_column is not None:
        captions = CaptionOptions(
            column=caption_column, choice=caption_choice, group_by=group_by, num_groups=num_groups
        )
        if attach is AttachOptions.parts:  # the default parts of a captioned run (not asked for by name)
            attach = DEFAULT_CAPTION_ATTACH
    else:
        given = [
            name
            for name, value in (
                ("caption_choice", caption_choice),
                ("group_by", group_by),
                ("num_groups", num_groups),
            )
            if not _same(value, getattr(CaptionOptions, name.removeprefix("caption_")))
        ]
        if given:
            raise ValueError(f"{given} are options of a captioned dataset: pass caption_column=... too")
    strategy_options = dict(selection_kwargs or {})
    features = strategy_options.pop("features", None)
    feature_column = strategy_options.pop("feature_column", None)

    # ---- the typed options: each validates itself, nothing is loaded yet -----------------
    options = CondenseOptions(
        data=DataOptions(
            image_column=image_column,
            label_column=label_column,
            key_column=scorer_kwargs.get("key_column"),
            class_names=class_names,
        ),
        score=ScoreOptions(
            scorer=scorer,
            vae=vae,
            num_timesteps=num_timesteps,
            timestep_grid=timestep_grid,
            num_draws=num_draws,
            antithetic=antithetic,
            standardize_timesteps=standardize_timesteps,
            reliability_probe=reliability_probe,
            warn_reliability=warn_reliability,
            min_reliability=min_reliability,
            seed=seed,
            dtype=dtype,
            max_forward_batch=scorer_kwargs.get("max_forward_batch"),
            prediction_type=scorer_kwargs.get("prediction_type"),
            return_per_timestep=bool(scorer_kwargs.get("return_per_timestep", False)),
        ),
        select=SelectOptions(
            images_per_class=images_per_class,
            ratio=ratio,
            strategy=strategy,
            interval=interval,
            seed=seed,
            strategy_options=strategy_options,
            feature_column=feature_column,
            features=features,
        ),
        attach=AttachOptions(
            parts=attach,
            vision_encoder=vision_encoder,
            text_encoder=text_encoder,
            patch_size=patch_size,
            num_visual_tokens=num_visual_tokens,
            prompt_template=prompt_template,
            dtype=dtype,
            part_options=dict(part_options or {}),
        ),
        resolution=resolution,
        batch_size=batch_size,
        device=device,
        notes=tuple(notes or ()),
        captions=captions,
    )
    return _run(dataset, split, options, streaming, num_rows=num_rows, work_dir=work_dir)


def _run(
    dataset, split, options: CondenseOptions, streaming: bool, *, num_rows, work_dir
) -> CondensedDataset:
    if streaming:
        if options.select.features is not None:
            raise TypeError(
                "selection features given as an array are not supported for a streaming dataset: store them in a "
                "column and pass selection_kwargs={'feature_column': ...}"
            )
        return _condense_stream(dataset, split, options, num_rows=num_rows, work_dir=work_dir)
    return MemoryRunner(dataset, split, options).run()


def _same(value: Any, default: Any) -> bool:
    return value is default or (isinstance(value, type(default)) and value == default)


def pick_split(dataset):
    """A ``DatasetDict`` / ``IterableDatasetDict`` -> its ``train`` split (or its only split), with its name."""
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
    :data:`STREAMING_SCORER_KWARGS`), suggesting the closest known name: a misspelt
    ``imagesper_class`` is named as such, not reported as a missing budget."""
    import difflib

    from ..selection.scorer import DifficultyScorer

    scorer_options = [
        p
        for p in inspect.signature(DifficultyScorer.from_pretrained).parameters
        if p not in ("cls", "model", "vae")
    ]
    allowed = STREAMING_SCORER_KWARGS if streaming else scorer_options
    unknown = sorted(set(kwargs) - set(allowed))
    clash = sorted(set(kwargs) & set(inspect.signature(condense).parameters))
    if clash:
        raise TypeError(f"condense() got {clash} twice (as its own argument and as a scorer option)")
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
            f"condense() on a streaming dataset takes only {list(STREAMING_SCORER_KWARGS)} as scorer options, "
            f"got {unknown}{hint}"
        )
    raise TypeError(
        f"condense() got unexpected keyword argument(s) {unknown}{hint}; extra keywords are forwarded to "
        "DifficultyScorer.from_pretrained, which does not take them either"
    )


# --------------------------------------------------------------------------------------
# streaming: the sharded engine in this process
# --------------------------------------------------------------------------------------


def _model_reference(name: str, value: Any) -> None:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(
            f"{name} is a loaded {type(value).__name__}; condense() on a streaming dataset runs the sharded engine, "
            f"which loads its models itself: pass {name} as a Hub id or a local save_pretrained folder"
        )


def streaming_size(data, split: str | None, num_rows: int | None) -> int:
    """The number of rows to condense from a stream: ``num_rows``, else the split metadata's count."""
    if num_rows is not None:
        return check_positive_int(num_rows, "num_rows")
    splits = getattr(data.info, "splits", None) or {}
    if split in splits and splits[split].num_examples:
        return int(splits[split].num_examples)
    raise ValueError(
        f"the size of the streaming dataset (split {split!r}) is unknown: its metadata records no number of "
        "examples. Pass num_rows=N (the number of rows to condense)."
    )


def _condense_stream(
    data,
    split: str | None,
    options: CondenseOptions,
    *,
    num_rows: int | None,
    work_dir: str | os.PathLike | None,
) -> CondensedDataset:
    """condense() of an ``IterableDataset``: the sharded engine of ``d2c condense``, in this process."""
    from datasets import ClassLabel

    from ..attach.parts import get_part
    from ..utils.files import staged_dir
    from ..utils.hub import resolve_device
    from ..utils.spaces import PIXEL_SPACE
    from .options import RunOptions
    from .rows import source_from_dataset
    from .sharded import CONDENSED_DIR, ShardedRunner, run_condense
    from .workdir import OneProcess

    # ---- cheap checks (no model, no row read) -------------------------------------------
    if options.score.scorer is None:
        raise ValueError(
            "a streaming dataset is scored as it is read: pass scorer=<Hub id or folder> (a 'difficulty' "
            "column is not reused when streaming)"
        )
    _model_reference("scorer", options.score.scorer)
    if options.score.vae not in (AUTO, PIXEL_SPACE):
        _model_reference("vae", options.score.vae)
    for part in options.attach.parts:
        for role, value in get_part(part).references(options):
            _model_reference(role, value)
    size = streaming_size(data, split, num_rows)
    features = getattr(data, "features", None) or {}
    label_column = options.data.label_column
    captions = options.captions
    with_labels = captions is None or captions.group_by == "label"
    bare_labels = (
        with_labels and label_column in features and not isinstance(features[label_column], ClassLabel)
    )
    names = options.data.class_names
    if names is None and bare_labels:
        raise ValueError(
            f"column {label_column!r} is not a ClassLabel, so the classes of a streaming dataset are unknown "
            "before it is read: pass class_names=[...] (one per class id) or cast the column to a ClassLabel"
        )
    info = data.info
    name = getattr(info, "dataset_name", None) or getattr(info, "builder_name", None) or "IterableDataset"
    identity = {"dataset": name, "config": getattr(info, "config_name", None), "split": split or "train"}
    source = source_from_dataset(
        data,
        identity,
        num_rows=size,
        streaming=True,
        image_column=options.data.image_column,
        label_column=label_column if with_labels else None,
        key_column=options.data.key_column,
        num_classes=len(names) if names is not None and bare_labels else None,
        feature_column=options.select.feature_column,
        caption_column=None if captions is None else captions.column,
    )
    shard_size = options.batch_size * max(1, STREAMING_SHARD_ROWS // options.batch_size)
    latent_space = options.score.vae != PIXEL_SPACE
    with (
        tempfile.TemporaryDirectory(prefix="d2c-condense-")
        if work_dir is None
        else nullcontext(work_dir) as folder
    ):
        run = RunOptions(
            output_dir=Path(folder),
            shard_size=shard_size,
            num_workers=0,  # decode in this process: no forked workers inside the caller's program
            store_posterior=bool(
                options.attach.reuse_latents and "latents" in options.attach.parts and latent_space
            ),
            card=False,  # the card is written by save_to_disk / push_to_hub
        )
        runner = ShardedRunner(options, run, OneProcess(resolve_device(options.device)), source)
        condensed = run_condense(runner)
        if work_dir is not None:
            return condensed
        # the result outlives the temporary shards: it moves into the datasets cache, as a map's result
        # would (written shard by shard, so memory never holds the whole set)
        del condensed
        target = _result_cache(options, source.identity)
        with staged_dir(target, "the condensed dataset") as staging:
            Path(staging).rmdir()
            shutil.move(str(Path(folder) / CONDENSED_DIR), str(staging))
    return CondensedDataset.load(target)


def _result_cache(options: CondenseOptions, identity: Mapping[str, Any]) -> Path:
    """Where a streaming condense() without ``work_dir`` keeps its result: the ``datasets`` cache, by a
    hash of the options and the source."""
    from datasets import config
    from datasets.fingerprint import Hasher

    key = Hasher.hash([options.to_record(), dict(identity)])
    return Path(config.HF_DATASETS_CACHE) / "d2c_hf" / f"condensed-{key}"


__all__ = ["condense", "pick_split", "streaming_size"]
