"""The condense pipeline over shard files: sharded, resumable, streaming (``d2c score | select | attach |
condense``, and :func:`d2c_hf.condense` on a streaming dataset).

The phases are those of :mod:`d2c_hf.run.pipeline`; this runner keeps their results in a work folder
instead of memory, so that each phase can run as its own command, over many processes
(:mod:`d2c_hf.run.workdir`), and resume after a crash.

**Bitwise equality.** Batches never straddle shards and ``shard_size`` is a multiple of ``batch_size``,
so every batch holds the same rows whatever the number of processes (and the same rows as
:meth:`DifficultyScorer.apply` on the whole dataset). The noise of a sample comes from its key (pixel
hash or ``key_column``), not from its position, so the merged scores (in shard order) are bitwise those
of a single process.

Work folder::

    d2c_run.json                          run config per phase (the resume fingerprint)
    score/shard-00000-of-00626.npz        rows, label, difficulty, per_timestep, key, corrupt
                                          [, halves: (rows, T, 2) what the reliability needs]
                                          [, posterior: VAE mean|std float16, with store_posterior]
    score/manifest.json                   counts of the last run (skipped / computed shards, corrupt rows)
    scores/                               merged scores (datasets.save_to_disk) + reliability.json
    selection.json                        selected source rows + the selection record
    attach/shard-00000-of-00003.npz       rows, image bytes, latents, visual_embeds
    attach/manifest.json
    condensed/                            the CondensedDataset (save_to_disk)

See ``docs/scale.md`` for the ImageNet-1k recipe.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..attach.parts import PartContext, get_part, needs_vae
from ..condensed.dataset import CondensedDataset
from ..utils.checksums import read_checked_json, verify_record, write_checked_json, write_record
from ..utils.files import absolute, read_json, staged_dir, write_json
from ..utils.spaces import AUTO, DEFAULT_VAE, PIXEL_SPACE
from .options import CondenseOptions, RunOptions, SelectOptions
from .pipeline import (
    Attached,
    Plan,
    Scores,
    assemble,
    attach_classes,
    check_class_setup,
    check_scorer_conditioning,
    load_scorer,
    part_context,
    select_rows,
    text_to_image_record,
    token_count,
)
from .rows import BatchPrep, Source, make_loader, plan_batches
from .workdir import (
    iter_shards,
    load_all_shards,
    load_shard,
    open_phase,
    phase_config,
    read_run,
    run_shards,
    sha256_hex,
    shard_path,
    shard_plan,
    write_manifest,
)

logger = logging.getLogger(__name__)

SCORE_DIR, SCORES_DIR, ATTACH_DIR, CONDENSED_DIR = "score", "scores", "attach", "condensed"
SELECTION_FILE = "selection.json"
RELIABILITY_FILE = "reliability.json"
GROUPS_FILE = "groups.json"
SCORE_REQUIRED = ("rows", "difficulty", "label", "corrupt")
#: the arrays of a score shard that the merge reads
MERGE_ARRAYS = (
    "rows",
    "label",
    "difficulty",
    "per_timestep",
    "halves",
    "corrupt",
    "features",
    "group_features",
)
ATTACH_REQUIRED = ("rows", "bytes", "offsets", "label")
#: what to do about damaged merged scores: the score shards are kept, only the merge is redone
SCORES_FIX = "delete that scores/ folder and run `d2c score` again (finished score shards are reused)"
#: rows per Arrow batch when the merged scores are written (bounded memory)
MERGE_BATCH_ROWS = 65536
#: rows per Arrow batch when the condensed samples are written from an attach shard
ASSEMBLE_BATCH_ROWS = 256


def _vae_reference(options: CondenseOptions, scorer: Any) -> str:
    """What loads the VAE the scorer used again (recorded so that ``d2c attach`` reuses it): a Hub id,
    an absolute folder, or ``"pixel"``."""
    if scorer.vae is None:
        return PIXEL_SPACE
    vae = options.score.vae
    if vae == AUTO:
        own = (scorer.config.get("vae") or {}).get("subfolder") == "vae"
        vae = options.score.scorer if own else DEFAULT_VAE
    if not isinstance(vae, (str, os.PathLike)):
        raise TypeError("a sharded run loads its models itself: pass vae as a Hub id or a local folder")
    text = os.fspath(vae)
    return str(absolute(text)) if Path(text).expanduser().exists() else text


class ShardedRunner:
    """The pipeline's phases over shard files in ``run.output_dir`` (see the module docstring)."""

    def __init__(
        self, options: CondenseOptions, run: RunOptions, state: Any = None, source: Source | None = None
    ) -> None:
        run.check_batch(options.batch_size)
        self.options = options
        self.run = run
        self.state = state
        self.source = source
        self.output_dir = run.output_dir

    # -- validate ------------------------------------------------------------------------
    def plan(self, scoring: bool = True) -> Plan:
        """Check the source against the options (class names, prompts, paths) before any model loads."""
        from datasets import ClassLabel

        source = self.source
        if source is None:
            raise ValueError("this phase reads the source dataset: pass it")
        captions = self.options.captions
        if captions is not None:
            if source.caption_column != captions.column:
                raise ValueError(
                    f"caption_column={captions.column!r} but the source was opened with caption column "
                    f"{source.caption_column!r}"
                )
            names = list(source.class_names)  # group_by='label': the label's classes; else none until merged
        else:
            names = check_class_setup(
                self.options, source.class_names, not isinstance(source.label_feature, ClassLabel)
            )
        self.options.check_references(run_scorer=scoring)
        check_scorer_conditioning(self.options, scoring)
        identity = source.identity
        record = {
            "name": identity.get("dataset"),
            "config": identity.get("config"),
            "split": identity.get("split"),
            "num_rows": identity.get("num_rows"),
            "fingerprint": identity.get("fingerprint"),
            "image_column": source.image_column,
            "label_column": source.label_column,
        }
        if captions is not None:
            record["caption_column"] = captions.column
            if captions.group_by != "label":
                del record["label_column"]
        return Plan(self.options, len(source.class_names), names, source.label_feature, record, True, False)

    # -- phase 1: score -----------------------------------------------------------------
    def score(self, plan: Plan, check_tokens: bool = False) -> dict[str, Any]:
        """Score this rank's shards, then (main process) merge them into ``scores/``. Returns the manifest.

        ``check_tokens``: a run that attaches next checks the visual token grid against the scorer's VAE
        first, so that a bad ``resolution`` / ``patch_size`` fails before the data is scored.
        """
        from ..selection.groups import image_features
        from ..utils.vae import scale_latents

        options, state, source = self.options, self.state, self.source
        scorer, _ = load_scorer(options, state.device, return_per_timestep=True)
        if check_tokens and {"latents", "visual"} & set(options.attach.parts):
            token_count(options, scorer.vae)
        captions = options.captions
        if captions is None and not source.streaming:
            scorer.check_label_range(source.data, len(source.class_names))
        # a function of the keys: shard-invariant (a captioned run's probe spreads over all rows)
        scorer.plan_probe(source.num_rows, len(source.class_names) if captions is None else None)
        config = scorer.config
        config.pop("return_per_timestep", None)
        columns = {"image": source.image_column, "label": source.label_column, "key": source.key_column}
        if captions is not None:
            columns["caption"] = captions.column
        config = {
            "source": source.identity,
            "columns": columns,
            "scorer": config,
            "vae_source": _vae_reference(options, scorer),
            "shard_size": self.run.shard_size,
            "batch_size": options.batch_size,
            "max_forward_batch": options.score.max_forward_batch,
            "compile": bool(options.score.compile),
            "skip_corrupt": bool(options.data.skip_corrupt),
            "class_names": list(plan.class_names),
        }
        if source.feature_column is not None:  # only then: work folders of earlier runs still resume
            config["feature_column"] = source.feature_column
        if captions is not None:
            config["captions"] = captions.to_record()
        folder = open_phase(self.output_dir, SCORE_DIR, config, state)
        ranges = shard_plan(source.num_rows, self.run.shard_size)
        num_shards = len(ranges)
        shard_rows = {k: np.arange(a, b, dtype=np.int64) for k, (a, b) in enumerate(ranges)}
        store_posterior = self.run.store_posterior and scorer.vae is not None
        prep = BatchPrep(
            source.image_column,
            source.label_column,
            source.key_column,
            scorer.resolution,
            scorer.num_classes if captions is None else len(source.class_names),
            bool(options.data.skip_corrupt),
            keep_bytes=False,
            feature_column=source.feature_column,
            feature_dtype=source.feature_dtype,
            **_caption_prep(None if captions is None else captions.to_record(), options.score.seed),
        )
        upsampled = 0

        def compute(todo: dict[int, np.ndarray]) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
            nonlocal upsampled
            batches, per_shard = plan_batches(todo, options.batch_size)
            parts: dict[int, list[dict[str, np.ndarray]]] = {k: [] for k in todo}
            for item in make_loader(source, batches, prep, self.run.num_workers, state.device):
                shard = int(item["shard"])
                upsampled += item["upsampled"]
                part = {"rows": item["rows"].numpy(), "corrupt": item["corrupt"].numpy()}
                part["label"] = item["labels"].numpy()
                part["key"] = item["keys"].numpy().view(np.uint64)
                if "features" in item:
                    part["features"] = np.asarray(item["features"])
                if len(item["rows"]):
                    pixels = item["pixels"].to(state.device, non_blocking=True)
                    if store_posterior:
                        mean, std = scorer.encode_posterior(pixels)
                        x0 = scale_latents(mean, scorer.scaling_factor, scorer.shift_factor)
                        part["posterior"] = torch.cat([mean, std], dim=1).to("cpu", torch.float16).numpy()
                    else:
                        x0 = scorer.encode(pixels)
                    if captions is None:
                        scored = scorer.score_batch(x0, part["label"], part["key"])
                    else:
                        scored, features = scorer.score_captions(x0, item["captions"], part["key"])
                        if captions.group_by != "label":
                            features = image_features(x0) if captions.group_by == "images" else features
                            part["group_features"] = features.to("cpu", torch.float16).numpy()
                else:
                    empty = torch.zeros((0, scorer.channels, scorer.latent_size, scorer.latent_size))
                    if captions is None:
                        scored = scorer.score_batch(empty, np.zeros(0, np.int64), np.zeros(0, np.uint64))
                    else:
                        scored = scorer.score_batch(empty, [], np.zeros(0, np.uint64))
                        if captions.group_by != "label":
                            part["group_features"] = np.zeros((0, scorer.group_feature_size), np.float16)
                    if store_posterior:
                        shape = (2 * scorer.channels, scorer.latent_size, scorer.latent_size)
                        part["posterior"] = np.zeros((0, *shape), np.float16)
                part["difficulty"], part["per_timestep"] = scored.difficulty, scored.per_timestep
                if scored.halves is not None:
                    part["halves"] = scored.halves
                parts[shard].append(part)
                if len(parts[shard]) == per_shard[shard]:
                    yield shard, _concat_score_parts(parts.pop(shard))

        counts = run_shards(folder, shard_rows, num_shards, SCORE_REQUIRED, state, compute)
        if upsampled:
            logger.warning(
                "rank %d: %d images were smaller than %dpx and were upsampled",
                state.process_index,
                upsampled,
                scorer.resolution,
            )
        state.wait_for_everyone()
        manifest = write_manifest(folder, state, counts, num_shards, {"phase": "score"})
        if state.is_main_process:
            merged = merge_scores(self.output_dir)
            manifest["corrupt_rows"] = merged["corrupt_rows"]
            manifest["scored_rows"] = merged["scored_rows"]
            manifest["reliability"] = merged["reliability"]
            write_json(folder / "manifest.json", manifest, sort_keys=True)
        state.wait_for_everyone()
        manifest["reliability"] = self.check_reliability(warn=state.is_main_process)
        return manifest

    def check_reliability(self, warn: bool = True) -> dict[str, Any] | None:
        """The gate on the merged scores (every process reads the same record, so all stop together):
        log the reliability, warn below ``warn_reliability``, raise below ``min_reliability``."""
        from ..selection.reliability import Reliability, check_reliability

        record = load_reliability(self.output_dir).get("reliability")
        report = Reliability.from_dict(record) if record else None
        score = self.options.score
        check_reliability(
            report,
            warn_below=score.warn_reliability if warn else None,
            min_reliability=score.min_reliability,
            where="d2c score",
        )
        return record

    # -- phase 2: select (main process only; cheap) -------------------------------------
    def select(self, check: bool = True) -> dict[str, Any]:
        """Select from the merged scores and write ``selection.json``; returns its record. ``check``: pass
        the scores' reliability through the gate first (``d2c condense`` did so when it scored)."""
        if self.options.select is None:
            raise ValueError("no budget: pass images_per_class or ratio")
        config = phase_config(self.output_dir, SCORE_DIR)
        if not (self.output_dir / SCORES_DIR).is_dir():
            merge_scores(self.output_dir)
        arrays = load_scores(self.output_dir)
        wanted, stored = self.options.select.feature_column, config.get("feature_column")
        if wanted is not None and wanted != stored:
            raise ValueError(
                f"feature_column={wanted!r} was not stored with the scores "
                f"({'they hold ' + repr(stored) if stored else 'they hold no features'}): score again with "
                f"--feature_column {wanted} (d2c score reads it while scoring)"
            )
        scores = Scores(
            source_index=arrays["source_index"].astype(np.int64),
            labels=arrays["label"].astype(np.int64),
            difficulty=arrays["difficulty"].astype(np.float32),
            info=config["scorer"],
            features=arrays.get("features") if wanted is not None else None,
        )
        if check:
            self.check_reliability()
        names = load_groups(self.output_dir)["names"] if "captions" in config else config["class_names"]
        result, rows = select_rows(self.options, scores, len(names))
        record = {
            "source_indices": rows.tolist(),
            "positions": np.asarray(result.indices, np.int64).tolist(),
            "result": result.to_dict(),
            "options": self.options.select.to_record(),
        }
        write_checked_json(self.output_dir / SELECTION_FILE, record)
        return record

    # -- phase 3: attach ------------------------------------------------------------------
    def attach(self, plan: Plan) -> dict[str, Any]:
        """Latents and visual tokens (and the image bytes) of the selected rows, on this rank's shards."""
        from ..utils.vae import load_vae

        options, state, source = self.options, self.state, self.source
        selection_file = self.output_dir / SELECTION_FILE
        if not selection_file.is_file():
            raise FileNotFoundError(f"{selection_file} not found: run `d2c select` first")
        selected = np.asarray(read_selection(self.output_dir)["source_indices"], dtype=np.int64)
        score_cfg = phase_config(self.output_dir, SCORE_DIR)
        if ("captions" in score_cfg) != (options.captions is not None):
            raise ValueError(
                "the scores of this folder were computed "
                + (
                    f"on captions (column {score_cfg['columns']['caption']!r}): pass caption_column"
                    if "captions" in score_cfg
                    else "on class labels: drop caption_column"
                )
            )
        rows_parts = [p for p in options.attach.parts if get_part(p).column is not None]
        vae_ref = score_cfg.get("vae_source", PIXEL_SPACE) if options.score.vae == AUTO else options.score.vae
        needs = needs_vae(options.attach.parts)
        vae = load_vae(vae_ref, dtype=torch.float32, device=state.device) if needs else None
        context = part_context(options, state.device, vae)
        built = {name: get_part(name).load(options, context) for name in rows_parts}
        reuse = False
        config: dict[str, Any] = {
            "source": source.identity,
            "selection_sha": sha256_hex(selected.tobytes()),
            "parts": rows_parts,
            "shard_size": self.run.shard_size,
            "batch_size": options.batch_size,
            "skip_corrupt": bool(options.data.skip_corrupt),
        }
        for name, part in built.items():
            config[name] = part.config
            if name == "latents":
                same_space = (
                    score_cfg["scorer"].get("vae") == part.config["vae"]
                    and options.resolution == score_cfg["scorer"]["resolution"]
                )
                if options.attach.reuse_latents and same_space:  # else another VAE or crop: encode again
                    reuse = _posterior_available(self.output_dir, selected)
                config["latents_from"] = "scorer posterior" if reuse else "vae"
        folder = open_phase(self.output_dir, ATTACH_DIR, config, state)

        ranges = shard_plan(len(selected), self.run.shard_size)
        num_shards = len(ranges)
        shard_rows = {k: selected[a:b] for k, (a, b) in enumerate(ranges)}
        prep = BatchPrep(
            source.image_column,
            source.label_column,
            _attach_key_column(options, source, score_cfg),  # a random caption choice is keyed like the noise
            options.resolution,
            len(source.class_names),
            bool(options.data.skip_corrupt),
            keep_bytes=True,
            **_caption_prep(score_cfg.get("captions"), score_cfg["scorer"]["seed"]),
        )

        def compute(todo: dict[int, np.ndarray]) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
            batches, per_shard = plan_batches(todo, options.batch_size)
            acc: dict[int, list[dict[str, np.ndarray]]] = {k: [] for k in todo}
            posteriors: dict[int, np.ndarray] = {}  # the reused latents of the shards in progress
            for item in make_loader(source, batches, prep, self.run.num_workers, state.device):
                shard = int(item["shard"])
                rows = item["rows"].numpy()
                if reuse and shard not in posteriors:  # one attach shard's posteriors at a time
                    posteriors[shard] = _posterior_lookup(self.output_dir, todo[shard], required=True)
                pixels = item["pixels"]
                blobs = item["bytes"]
                part = {
                    "rows": rows,
                    "label": item["labels"].numpy(),
                    "corrupt": item["corrupt"].numpy(),
                    "bytes": np.frombuffer(b"".join(blobs), np.uint8),
                    "offsets": np.cumsum([0, *map(len, blobs)]).astype(np.int64),
                }
                if "captions" in item:
                    part["caption"] = np.asarray(item["captions"], dtype=str).reshape(-1)
                for name, step in built.items():  # the parts' own per-batch code (as in memory)
                    if name == "latents" and reuse:
                        part[step.column] = posteriors[shard][np.searchsorted(todo[shard], rows)]
                    else:
                        inputs = item["captions"] if type(step).reads == "captions" else pixels.numpy()
                        part.update(step.compute_columns(inputs, rows))
                acc[shard].append(part)
                if len(acc[shard]) == per_shard[shard]:
                    posteriors.pop(shard, None)
                    yield shard, _concat_parts(acc.pop(shard))

        counts = run_shards(folder, shard_rows, num_shards, ATTACH_REQUIRED, state, compute)
        state.wait_for_everyone()
        manifest = write_manifest(
            folder, state, counts, num_shards, {"phase": "attach", "latents_from": config.get("latents_from")}
        )
        state.wait_for_everyone()
        return manifest

    # -- phase 4: assemble (main process) -------------------------------------------------
    def assemble(self) -> CondensedDataset:
        """Build the :class:`CondensedDataset` from the finished phases, save it to ``condensed/``
        (atomically) and return it: the same tables and ``info`` keys as :func:`d2c_hf.condense`."""
        from datasets import ClassLabel, Features, Image, Value

        from ..utils.tables import write_batches

        run = read_run(self.output_dir)["phases"]
        score_cfg, attach_cfg = run[SCORE_DIR], run[ATTACH_DIR]
        selection = read_selection(self.output_dir)
        # the selection as it was made (by `d2c select` or this run), for the record
        options = replace(self.options, select=SelectOptions.from_record(selection["options"]))
        captioned = "captions" in score_cfg
        groups = load_groups(self.output_dir) if captioned else None
        names = groups["names"] if captioned else score_cfg["class_names"]
        num_shards = len(shard_plan(len(selection["source_indices"]), attach_cfg["shard_size"]))
        arrays = load_scores(self.output_dir)
        class_label = ClassLabel(names=names)
        features = {
            "image": Image(),
            "label": class_label,
            "source_index": Value("int64"),
            "difficulty": Value("float32"),
            **({"caption": Value("string")} if captioned else {}),
        }
        attached = Attached(None)
        row_parts = [get_part(name) for name in attach_cfg.get("parts", [])]
        for part in row_parts:  # each row part's column, typed from its recorded config
            features.update(part.features(attach_cfg[part.name]))
            attached.records[part.name] = attach_cfg[part.name]

        def batches() -> Iterator[dict[str, Any]]:
            # one attach shard in memory at a time, converted to Arrow in slices of it: the peak is the
            # shard's arrays plus one slice's copy (0.84 GB + 0.1 GB for 2,048 ImageNet-sized rows)
            for got in iter_shards(self.output_dir / ATTACH_DIR, num_shards, ATTACH_REQUIRED):
                rows, offsets = got["rows"], got["offsets"]
                position = np.searchsorted(arrays["source_index"], rows)
                # a captioned run's label is its group, assigned when the scores merged
                labels = arrays["label"][position] if captioned else got["label"]
                difficulty = arrays["difficulty"][position].astype(np.float32)
                for a in range(0, len(rows), ASSEMBLE_BATCH_ROWS):
                    b = min(a + ASSEMBLE_BATCH_ROWS, len(rows))
                    yield {
                        "image": [
                            {"bytes": got["bytes"][offsets[i] : offsets[i + 1]].tobytes(), "path": None}
                            for i in range(a, b)
                        ],
                        "label": labels[a:b],
                        "source_index": rows[a:b],
                        "difficulty": difficulty[a:b],
                        **({"caption": got["caption"][a:b].tolist()} if captioned else {}),
                        **{column: got[column][a:b] for part in row_parts for column in part.columns()},
                    }
                del got

        scratch = self.output_dir / ".condensed-samples.arrow"
        attached.samples = write_batches(scratch, Features(features), batches(), owned=True)  # moved on save
        attached.extra["distributed"] = {
            "score_shards": len(shard_plan(score_cfg["source"]["num_rows"], score_cfg["shard_size"])),
            "attach_shards": num_shards,
            "latents_from": attach_cfg.get("latents_from"),
        }
        class_parts = [p for p in options.attach.parts if get_part(p).column is None]
        if class_parts:
            context = PartContext(self.state.device)
            built = {name: get_part(name).load(options, context) for name in class_parts}
            attach_classes(built, names, attached)
        source = score_cfg["source"]
        record = {
            "name": source["dataset"],
            "config": source.get("config"),
            "split": source["split"],
            "num_rows": source["num_rows"],
            "fingerprint": source.get("fingerprint"),
            "image_column": score_cfg["columns"]["image"],
            "label_column": score_cfg["columns"]["label"],
        }
        if captioned:
            record["caption_column"] = score_cfg["columns"]["caption"]
            if score_cfg["captions"]["group_by"] != "label":
                del record["label_column"]
            attached.extra["text_to_image"] = text_to_image_record(options, groups, attach_cfg.get("caption"))
        plan = Plan(options, len(names), names, class_label, record, True, False)
        scores = Scores(
            source_index=arrays["source_index"],
            labels=arrays["label"],
            difficulty=arrays["difficulty"],
            info={
                **score_cfg["scorer"],
                **load_reliability(self.output_dir),
                "warn_reliability": self.options.score.warn_reliability,
            },
        )
        condensed = assemble(plan, scores, selection["result"], attached)
        try:
            condensed.save_to_disk(self.output_dir / CONDENSED_DIR, overwrite=True, card=self.run.card)
        finally:
            del condensed, attached  # release the memory map of the scratch file before removing it
            scratch.unlink(missing_ok=True)
        return CondensedDataset.load(self.output_dir / CONDENSED_DIR)


# --------------------------------------------------------------------------------------
# merged scores
# --------------------------------------------------------------------------------------


def merge_scores(output_dir: str | os.PathLike) -> dict[str, Any]:
    """Concatenate the score shards in shard order into ``scores/`` (a ``datasets`` folder with
    ``source_index``, ``label``, ``difficulty``, ``difficulty_per_timestep`` [, ``difficulty_halves``]),
    atomically, with ``reliability.json`` beside the table.

    The dataset-level step happens here, once every row is scored: with ``standardize_timesteps`` the
    merged ``difficulty`` is the mean z-score of the per-timestep errors over all scored rows (the shards
    keep the raw mean), and the reliability is computed from the halves
    (:func:`d2c_hf.selection.score_dataset.finish_scores`)."""
    from datasets import Array2D, ClassLabel, Features, List, Value

    from ..selection.score_dataset import finish_scores
    from ..utils.tables import save_owned, write_batches

    output_dir = Path(output_dir)
    config = phase_config(output_dir, SCORE_DIR)
    num_shards = len(shard_plan(config["source"]["num_rows"], config["shard_size"]))
    # only what the merge reads: not the posteriors (16 KB per image with the SD VAE, 21 GB for ImageNet)
    shards = load_all_shards(output_dir / SCORE_DIR, num_shards, SCORE_REQUIRED, MERGE_ARRAYS)
    cat = {name: np.concatenate([s[name] for s in shards]) for name in ("rows", "label", "difficulty")}
    per_timestep = np.concatenate([s["per_timestep"] for s in shards])
    steps = config["scorer"]["num_timesteps"]
    halves = np.concatenate([s["halves"] for s in shards]) if all("halves" in s for s in shards) else None
    corrupt = np.concatenate([s["corrupt"] for s in shards]).astype(np.int64)
    features_values = None
    if config.get("feature_column") is not None:  # the selection features, as the source stored them
        features_values = np.concatenate([s["features"] for s in shards if len(s["features"])])
    group_features = None
    if "captions" in config and config["captions"]["group_by"] != "label":
        group_features = np.concatenate([s["group_features"] for s in shards])
    del shards  # from here on one copy of the arrays
    names = config["class_names"]
    groups_record = None
    if "captions" in config:  # the groups of a captioned run: k-means (or its labels), as in memory
        cat["label"], names, groups_record = _assign_groups(config, cat["label"], group_features)
        del group_features
    labels = cat["label"].astype(np.int64, copy=False)
    standardized, stats, report = finish_scores(per_timestep, halves, labels, config["scorer"])
    difficulty = cat["difficulty"] if standardized is None else standardized
    columns = {
        "source_index": cat["rows"],
        "label": cat["label"],
        "difficulty": difficulty.astype(np.float32, copy=False),
        "difficulty_per_timestep": per_timestep.astype(np.float32, copy=False),
    }
    features = {
        "source_index": Value("int64"),
        "label": ClassLabel(names=names),
        "difficulty": Value("float32"),
        "difficulty_per_timestep": List(Value("float32"), length=steps),
    }
    if halves is not None:
        columns["difficulty_halves"] = halves.astype(np.float32, copy=False)
        features["difficulty_halves"] = Array2D((steps, 2), "float32")
    if features_values is not None:
        columns["features"] = features_values
        features["features"] = List(Value(str(features_values.dtype)), length=features_values.shape[1])
    record = {"reliability": report.to_dict(), "standardization": None if stats is None else stats.to_dict()}
    scratch = output_dir / f".{SCORES_DIR}-merge.arrow"  # written in batches (bounded memory), then saved
    try:
        table = write_batches(
            scratch, Features(features), _row_batches(columns, MERGE_BATCH_ROWS), owned=True
        )
        with staged_dir(output_dir / SCORES_DIR, "the merged scores") as staging:
            save_owned(table, staging)  # the scratch file moved into place, not copied
            write_json(Path(staging) / RELIABILITY_FILE, record, sort_keys=True)
            if groups_record is not None:
                write_json(Path(staging) / GROUPS_FILE, groups_record, sort_keys=True)
            write_record(staging)  # content checksums, verified by load_scores / load_reliability
    finally:
        scratch.unlink(missing_ok=True)
    if len(corrupt):
        logger.warning(
            "%d corrupt images were skipped (rows %s...); they are excluded from selection",
            len(corrupt),
            corrupt[:5].tolist(),
        )
    return {
        "scored_rows": len(table),
        "corrupt_rows": corrupt.tolist(),
        "num_shards": num_shards,
        "reliability": record["reliability"],
    }


def _assign_groups(
    config: dict[str, Any], labels: np.ndarray, features: np.ndarray | None
) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    """The groups of a captioned run's merged scores: ``(groups, names, record)``, with the code of the
    in-memory scorer (:func:`~d2c_hf.selection.groups.assign_groups` on the rows' features in source order, or
    the label column for ``group_by="label"``), so both runners group alike."""
    from ..selection.groups import assign_groups, group_names, group_record

    captions = config["captions"]
    seed = int(config["scorer"]["seed"])
    if captions["group_by"] == "label":
        groups, names = labels.astype(np.int64), list(config["class_names"])
    else:
        groups = assign_groups(features, captions["num_groups"], seed)
        names = group_names(int(groups.max()) + 1)
    return groups, names, group_record(captions["group_by"], groups, names, captions["num_groups"], seed)


def load_groups(output_dir: str | os.PathLike) -> dict[str, Any]:
    """The groups record of a captioned run's merged scores (``scores/groups.json``), its checksum verified."""
    path = Path(output_dir) / SCORES_DIR / GROUPS_FILE
    verify_record(path.parent, "the merged scores", prefix=GROUPS_FILE, fix=SCORES_FIX)
    return read_json(path, "the groups of the merged scores")


def _caption_prep(captions: dict[str, Any] | None, seed: int) -> dict[str, Any]:
    """The caption arguments of a :class:`~d2c_hf.run.rows.BatchPrep` from a captions record (none for a
    class-labelled run): the attach phase passes the scoring's record, so it picks the captions the rows were
    scored with."""
    if captions is None:
        return {}
    return {
        "caption_column": captions["column"],
        "caption_choice": captions["choice"],
        "caption_seed": int(seed),
    }


def _attach_key_column(options: CondenseOptions, source: Source, score_cfg: dict[str, Any]) -> str | None:
    """The key column the attach phase reads: a captioned run's random caption choice is keyed like the
    noise, so it needs the scoring's key column (a class-labelled run needs none)."""
    key = score_cfg["columns"].get("key")
    if options.captions is None or key is None:
        return None
    if key not in source.columns():
        raise ValueError(
            f"the scores were keyed by column {key!r}: pass --key_column {key} to attach as well"
        )
    return key


def _row_batches(columns: dict[str, np.ndarray], rows: int) -> Iterator[dict[str, np.ndarray]]:
    n = len(next(iter(columns.values())))
    for start in range(0, max(n, 1), rows):
        yield {name: values[start : start + rows] for name, values in columns.items()}


def load_scores(output_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """The merged scores as arrays: ``source_index``, ``label``, ``difficulty``, ``difficulty_per_timestep``
    [, ``features``: the selection features, when ``d2c score`` stored a feature column]."""
    from ..utils.tables import read_saved_columns

    verify_record(Path(output_dir) / SCORES_DIR, "the merged scores", fix=SCORES_FIX)
    names = ("source_index", "label", "difficulty", "difficulty_per_timestep", "features")
    return read_saved_columns(Path(output_dir) / SCORES_DIR, names)


def load_reliability(output_dir: str | os.PathLike) -> dict[str, Any]:
    """``{"reliability": ..., "standardization": ...}`` of the merged scores (``scores/reliability.json``);
    empty for scores merged before reliability was recorded."""
    path = Path(output_dir) / SCORES_DIR / RELIABILITY_FILE
    if not path.is_file():
        return {}
    verify_record(path.parent, "the merged scores", prefix=RELIABILITY_FILE, fix=SCORES_FIX)
    return read_json(path, "the scores' reliability record")


def read_selection(output_dir: str | os.PathLike) -> dict[str, Any]:
    """``selection.json`` of a work folder, its checksum verified (see :func:`~d2c_hf.utils.checksums.read_checked_json`)."""
    path = Path(output_dir) / SELECTION_FILE
    return read_checked_json(path, "the selection", "run `d2c select` again (it rewrites the file)")


def _score_shards(output_dir: Path, rows: np.ndarray) -> list[tuple[int, Path]]:
    """``[(shard index, path), ...]`` of the score shards that hold the sorted source ``rows``."""
    config = phase_config(output_dir, SCORE_DIR)
    shard_size = config["shard_size"]
    num_shards = len(shard_plan(config["source"]["num_rows"], shard_size))
    return [
        (k, shard_path(output_dir / SCORE_DIR, k, num_shards)) for k in np.unique(rows // shard_size).tolist()
    ]


def _posterior_available(output_dir: Path, rows: np.ndarray) -> bool:
    """Whether every score shard of ``rows`` holds the scorer's VAE posteriors (reads the zip indexes only;
    scored without ``store_posterior``: the latents are encoded again, quietly)."""
    return all(_holds(path, "posterior") for _, path in _score_shards(output_dir, rows))


def _posterior_lookup(output_dir: Path, rows: np.ndarray, required: bool = False) -> np.ndarray | None:
    """The scorer's stored VAE posteriors of the sorted ``rows`` (``(len(rows), 2C, h, w)`` float16) if every
    score shard holds them, else None (``required``: a RuntimeError naming the shard). Attach calls it once
    per attach shard, so memory holds one shard's posteriors, not the whole selection's."""
    shard_size = phase_config(output_dir, SCORE_DIR)["shard_size"]
    out = None
    for k, path in _score_shards(output_dir, rows):
        shard = load_shard(path, ("rows", "posterior")) if _holds(path, "posterior") else None
        if shard is None:
            if required:
                raise RuntimeError(
                    f"score shard {path} cannot be read or no longer holds the stored posteriors (it changed "
                    "during d2c attach)"
                )
            return None
        want = rows[rows // shard_size == k]
        where = np.searchsorted(shard["rows"], want)
        if out is None:
            out = np.empty((len(rows), *shard["posterior"].shape[1:]), np.float16)
        out[np.searchsorted(rows, want)] = shard["posterior"][where]
    return out


def _holds(path: Path, name: str) -> bool:
    """Whether the shard file ``path`` holds the array ``name`` (reads the zip index only)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return name in data.files
    except (OSError, ValueError):
        return False


def _concat_score_parts(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One score shard from its batches (an all-corrupt batch's features are ``(0, 0)``: left out)."""
    out = {name: np.concatenate([p[name] for p in parts]) for name in parts[0] if name != "features"}
    if "features" in parts[0]:
        full = [p["features"] for p in parts if len(p["features"])] or [parts[0]["features"]]
        out["features"] = np.concatenate(full)
    return out


def _concat_parts(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    out = {name: np.concatenate([p[name] for p in parts]) for name in parts[0] if name != "offsets"}
    offsets, base = [np.zeros(1, np.int64)], 0
    for p in parts:
        offsets.append(p["offsets"][1:] + base)
        base += int(p["offsets"][-1])
    out["offsets"] = np.concatenate(offsets)
    return out


# --------------------------------------------------------------------------------------
# whole runs (what the d2c commands and condense() on a stream call)
# --------------------------------------------------------------------------------------


def run_score(runner: ShardedRunner) -> dict[str, Any]:
    """``d2c score``: phase 1 (every process)."""
    return runner.score(runner.plan())


def run_condense(runner: ShardedRunner) -> CondensedDataset | None:
    """``d2c condense``: every phase; returns the condensed dataset on the main process (else None)."""
    plan = runner.plan()
    runner.score(plan, check_tokens=True)
    if runner.state.is_main_process:
        runner.select(check=False)
    runner.state.wait_for_everyone()
    runner.attach(plan)
    condensed = runner.assemble() if runner.state.is_main_process else None
    runner.state.wait_for_everyone()
    return condensed


def run_attach(runner: ShardedRunner) -> CondensedDataset | None:
    """``d2c attach``: phase 3 (every process), then the assembly (main process)."""
    plan = runner.plan(scoring=False)
    runner.attach(plan)
    condensed = runner.assemble() if runner.state.is_main_process else None
    runner.state.wait_for_everyone()
    return condensed


__all__ = [
    "ATTACH_DIR",
    "CONDENSED_DIR",
    "SCORES_DIR",
    "SCORE_DIR",
    "SELECTION_FILE",
    "ShardedRunner",
    "load_groups",
    "load_reliability",
    "load_scores",
    "merge_scores",
    "run_attach",
    "run_condense",
    "run_score",
]
