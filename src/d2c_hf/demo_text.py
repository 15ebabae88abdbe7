"""``d2c demo --text``: text-to-image D2C end to end on the captioned digits, offline, in minutes on a CPU.

What it runs (every step is the library's public code path, at toy scale; docs/text-to-image.md):

1. **Data**: :func:`d2c_hf.data.captions.load_captioned_digits` at 16 px: each digit with a caption computed
   from what can be measured on it ("a thick, right-slanted handwritten seven"); train split to condense and
   train on, test split's 360 captions as the prompts of the evaluation.
2. **Text encoder**: a tiny, randomly initialised T5 stand-in whose vocabulary holds the captions' words (the Hub
   is offline; random weights still give every word its own code). **Vision encoder**: a tiny DINOv2 trained
   self-supervised on the training images (:func:`d2c_hf.train_vision_encoder`), as in ``d2c demo``.
3. **Scorer**: :func:`d2c_hf.selection.train_scorer.train_scorer` trains a small caption-conditioned transformer
   from scratch (``caption_column``).
4. **Select + Attach**: :func:`d2c_hf.condense` with ``caption_column="text"`` scores every training image by its
   caption-conditioned denoising loss, groups the rows, keeps ~10 % by interval sampling within groups and
   attaches pixel-space latents, visual tokens and each row's caption tokens.
5. **Baselines**: random subsets of the same size, with the same Attach (*Random + Attach*) and without the visual
   tokens (*Random*: latents and captions only; a text-to-image model cannot train without its captions).
6. **Train**: ``examples/train_sit.py`` (launched in a subprocess, :func:`d2c_hf.demo.train_sit_run`) trains the
   same text-conditioned SiT on each set.
7. **Evaluate**: one sample per test caption, measured by
   :class:`~d2c_hf.evaluation.caption_following.CaptionFollowing`: does the independent digit classifier see the
   prompted digit, do the measured stroke weight and slant fall in the prompted tertiles, how do they correlate
   with the prompt's; plus FD. Real images frame the numbers (each caption's own image; a random image of the
   right digit).
8. **Report**: ``metrics.md``/``metrics.json``, prompt grids, metric-vs-step curves and a ``README.md``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .demo import (
    RUN_SLUGS,
    SiTSettings,
    build_stand_in_text_encoder,
    image_grid,
    load_pipeline,
    plot_curves,
    train_sit_run,
)
from .utils.files import json_round_trip, staged_dir

logger = logging.getLogger(__name__)

TEXT_STAND_IN_NOTE = (
    "The caption encoder (T5) is a tiny, randomly initialised stand-in built by `d2c demo --text` because the Hub "
    "is offline; its vocabulary holds the captions' words, so each word has its own (random, untrained) code. "
    "Use a pretrained T5 or CLIP text encoder for real captions."
)
#: words of the captions (d2c_hf.data.captions), whole pieces of the stand-in tokenizer
CAPTION_VOCAB = (
    "a handwritten zero one two three four five six seven eight nine thin regular thick left right upright"
).split()
#: the prompt grid's columns: (stroke weight, slant) of each column
GRID_STYLES = (
    ("thin", "upright"),
    ("thick", "upright"),
    ("regular", "left-slanted"),
    ("regular", "right-slanted"),
)
TEXT_METRIC_LABELS = {
    "class_accuracy": "class acc. ↑",
    "weight_accuracy": "weight acc. ↑",
    "slant_accuracy": "slant acc. ↑",
    "caption_accuracy": "caption acc. ↑",
    "ink_correlation": "ink r ↑",
    "slant_correlation": "slant r ↑",
    "fd": "FD ↓",
}


@dataclass(frozen=True)
class TextDemoSettings:
    """One mode of ``d2c demo --text``. ``TEXT_FULL`` is the demo; ``TEXT_QUICK`` (``--quick``) the smoke test."""

    resolution: int = 16
    ratio: float = 0.1
    caption_max_length: int = 16
    scorer_steps: int = 400
    scorer_batch_size: int = 64
    num_timesteps: int = 10
    num_draws: int = 6
    standardize_timesteps: bool = True
    sit: SiTSettings = field(default_factory=SiTSettings)
    guidance_scale: float = 1.0
    encoder_steps: int = 600
    encoder_batch_size: int = 128
    max_prompts: int | None = None  # None: every test caption


TEXT_FULL = TextDemoSettings()
TEXT_QUICK = TextDemoSettings(
    scorer_steps=20,
    num_timesteps=2,
    num_draws=2,
    encoder_steps=3,
    encoder_batch_size=16,
    sit=SiTSettings(
        model_config_overrides={"depth": 2, "hidden_size": 32, "num_attention_heads": 2},
        encoder_depth=1,
        projector_dim=32,
        train_batch_size=16,
        max_train_steps=6,
        validation_steps=3,
        num_inference_steps=4,
    ),
    max_prompts=80,  # more than the 64 feature dimensions (FD)
)


def build_caption_text_encoder(folder: str | os.PathLike, seed: int = 0) -> Path:
    """:func:`d2c_hf.demo.build_stand_in_text_encoder` with the captions' words in its vocabulary
    (``folder / "t5-stand-in"``); deterministic in ``seed``, the global RNG untouched."""
    return build_stand_in_text_encoder(folder, seed, words=CAPTION_VOCAB, pieces=("slanted", "-", ","))


def sit_patch_size(sit: SiTSettings) -> int:
    """The SiT's patch size (its overrides', else its preset's): the visual tokens must match its token grid."""
    from .models.transformer_sit import SIT_PRESETS

    return int(sit.model_config_overrides.get("patch_size", SIT_PRESETS[sit.model]["patch_size"]))


def grid_prompts(rows: int = 10) -> list[str]:
    """The prompt grid, row-major: one row per digit, one column per :data:`GRID_STYLES` entry."""
    from .data.captions import CAPTION_TEMPLATE
    from .data.digits import DIGIT_NAMES

    return [
        CAPTION_TEMPLATE.format(weight=weight, slant=slant, name=DIGIT_NAMES[digit])
        for digit in range(rows)
        for weight, slant in GRID_STYLES
    ]


def run_text_demo(
    output: Path,
    settings: TextDemoSettings = TEXT_FULL,
    *,
    seed: int = 0,
    train_script: str | os.PathLike | None = None,
    quick: bool = False,
) -> dict[str, Any]:
    """Run the text-to-image demo into a staging folder beside ``output``, moved into place when complete.

    Returns the metrics record (also ``metrics.json``) with ``"table"`` (Markdown).
    """
    with staged_dir(output, "the demo output") as staging:
        record = _run(staging, settings, seed=seed, train_script=train_script, quick=quick)
    return record


def _run(
    out: Path, settings: TextDemoSettings, *, seed: int, train_script: str | os.PathLike | None, quick: bool
) -> dict[str, Any]:
    from .attach.train_encoder import train_vision_encoder
    from .data.captions import load_captioned_digits
    from .evaluation import DigitsFeatureExtractor
    from .evaluation.caption_following import CaptionFollowing
    from .run.condense import condense
    from .selection.train_scorer import train_scorer

    timings: dict[str, float] = {}
    t_total = time.perf_counter()

    def stage(name: str, started: float) -> None:
        timings[name] = time.perf_counter() - started
        logger.info("demo --text: %s done in %.1f s", name, timings[name])

    # 1. data, evaluator, text encoder -------------------------------------------------------------------
    t = time.perf_counter()
    digits = load_captioned_digits(image_size=settings.resolution)
    train, test = digits["train"], digits["test"]
    if settings.max_prompts is not None:
        test = test.select(range(min(settings.max_prompts, len(test))))
    models = out / "models"
    models.mkdir()
    extractor = DigitsFeatureExtractor.from_dataset(digits["train"])
    extractor.save(models / "digits_extractor.safetensors")
    following = CaptionFollowing(
        test,
        extractor=extractor,
        image_size=settings.resolution,
        num_inference_steps=settings.sit.num_inference_steps,
        guidance_scale=settings.guidance_scale,
        seed=seed,
    )
    t5_dir = build_caption_text_encoder(models, seed=seed)
    patch_size = sit_patch_size(settings.sit)
    stage("data, evaluator and text encoder", t)

    t = time.perf_counter()
    dino_dir = train_vision_encoder(
        train,
        models / "dinov2-trained",
        num_tokens=(settings.resolution // patch_size) ** 2,
        resolution=settings.resolution,
        num_steps=settings.encoder_steps,
        batch_size=settings.encoder_batch_size,
        seed=seed,
    )
    stage("vision encoder", t)

    # 2. the caption-conditioned scorer ------------------------------------------------------------------
    t = time.perf_counter()
    scorer_dir = train_scorer(
        train,
        models / "scorer",
        resolution=settings.resolution,
        num_steps=settings.scorer_steps,
        batch_size=settings.scorer_batch_size,
        seed=seed,
        caption_column="text",
        text_encoder=t5_dir,
        caption_max_length=settings.caption_max_length,
    )
    stage("scorer", t)

    # 3. Select + Attach, and the random baselines of the same size ----------------------------------------
    t = time.perf_counter()
    common = dict(
        caption_column="text",
        vae=None,
        text_encoder=t5_dir,
        resolution=settings.resolution,
        patch_size=patch_size,
        part_options={"caption": {"max_length": settings.caption_max_length}},
        seed=seed,
    )
    condensed = condense(
        train,
        ratio=settings.ratio,
        scorer=scorer_dir,
        vision_encoder=dino_dir,
        strategy="interval",
        num_timesteps=settings.num_timesteps,
        num_draws=settings.num_draws,
        standardize_timesteps=settings.standardize_timesteps,
        notes=[TEXT_STAND_IN_NOTE, "Made by `d2c demo --text` (pixel space, 16 px captioned digits)."],
        **common,
    )
    condensed.save_to_disk(out / "condensed")
    stage("condense", t)
    # a captioned run's groups come from its scorer (k-means on the scorer's caption features): the baselines
    # pass the same scorer, so they get the same groups and budget, with one timestep and one draw (the random
    # strategy ignores the scores)
    t = time.perf_counter()
    baseline = dict(common, scorer=scorer_dir, strategy="random", num_timesteps=1, num_draws=1)
    random_attach = condense(
        train,
        ratio=settings.ratio,
        vision_encoder=dino_dir,
        notes=[TEXT_STAND_IN_NOTE, "Random + Attach baseline of `d2c demo --text`: no Select."],
        **baseline,
    )
    random_attach.save_to_disk(out / "random_attach", card=False)
    random_subset = condense(
        train,
        ratio=settings.ratio,
        attach=("latents", "caption"),
        notes=[TEXT_STAND_IN_NOTE, "Random baseline of `d2c demo --text`: no Select, no visual tokens."],
        **baseline,
    )
    random_subset.save_to_disk(out / "random_subset", card=False)
    sizes = {len(condensed), len(random_attach), len(random_subset)}
    if len(sizes) != 1:
        logger.warning("demo --text: the three sets differ in size: %s", sorted(sizes))
    stage("random subsets", t)

    # 4. training --------------------------------------------------------------------------------------
    runs: dict[str, dict[str, Any]] = {}
    for name, folder, visual in (
        ("D2C", "condensed", True),
        ("Random + Attach", "random_attach", True),
        ("Random", "random_subset", False),
    ):
        t = time.perf_counter()
        logger.info(
            "demo --text: training the SiT on the %s set (%d steps)", name, settings.sit.max_train_steps
        )
        runs[name] = train_sit_run(
            out / folder,
            out / "runs" / RUN_SLUGS[name],
            settings.sit,
            use_text=False,
            use_visual=visual,
            seed=seed,
            quality=following,
            train_script=train_script,
        )
        stage(f"train {name}", t)

    # 5. grids + metrics ------------------------------------------------------------------------------
    t = time.perf_counter()
    grids = out / "grids"
    grids.mkdir()
    prompts = grid_prompts()
    rows, cols = 10, len(GRID_STYLES)
    metrics: dict[str, dict[str, float]] = {}
    for name, run in runs.items():
        pipeline = load_pipeline(run["pipeline_dir"])  # what a user loads: checks the saved pipeline
        images = following.sample(pipeline, prompts, seed=seed + 1)
        image_grid(images, rows, cols).save(grids / f"{RUN_SLUGS[name]}.png")
        metrics[name] = dict(run["curve"][-1])
    references = following.reference_scores(train, seed=seed)
    plot_curves(
        {name: run["curve"] for name, run in runs.items()},
        out / "curves.png",
        title=f"captioned digits, {len(condensed)} training images, {len(following.prompts)} test captions",
        keys=("class_accuracy", "weight_accuracy", "ink_correlation"),
    )
    stage("evaluate", t)
    timings["total"] = time.perf_counter() - t_total

    table = metrics_table(metrics, references)
    record = {
        "mode": "quick" if quick else "full",
        "seed": seed,
        "settings": json_round_trip(asdict(settings)),
        "condensed_size": len(condensed),
        "set_sizes": {
            "D2C": len(condensed),
            "Random + Attach": len(random_attach),
            "Random": len(random_subset),
        },
        "groups": (condensed.info.get("text_to_image") or {}).get("groups"),
        "reliability": (condensed.info.get("scoring") or {}).get("reliability"),
        "num_prompts": len(following.prompts),
        "metrics": metrics,
        "references": references,
        "curves": {name: run["curve"] for name, run in runs.items()},
        "final_loss": {name: run.get("final_loss") for name, run in runs.items()},
        "pipelines": {
            name: Path(os.path.relpath(run["pipeline_dir"], out)).as_posix() for name, run in runs.items()
        },
        "grid_prompts": prompts,
        "timings": timings,
        "torch_threads": torch.get_num_threads(),
    }
    (out / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / "metrics.md").write_text(table + "\n")
    (out / "README.md").write_text(_readme(record, table, settings))
    return {**record, "table": table}


def _fmt(value: float | None, key: str) -> str:
    if value is None or not np.isfinite(value):
        return "—"
    return f"{value:.3f}"


def metrics_table(metrics: dict[str, dict[str, float]], references: dict[str, dict[str, float]]) -> str:
    """The Markdown table: one row per training set, then the real-image references."""
    keys = list(TEXT_METRIC_LABELS)
    lines = [
        "| training set | " + " | ".join(TEXT_METRIC_LABELS[k] for k in keys) + " |",
        "|---" * (len(keys) + 1) + "|",
    ]
    for name, values in metrics.items():
        lines.append(f"| {name} | " + " | ".join(_fmt(values.get(k), k) for k in keys) + " |")
    for name, values in references.items():
        lines.append(f"| *real: {name}* | " + " | ".join(_fmt(values.get(k), k) for k in keys) + " |")
    return "\n".join(lines)


def _readme(record: dict[str, Any], table: str, settings: TextDemoSettings) -> str:
    sit = settings.sit
    timing_rows = "\n".join(f"| {k} | {v:.1f} |" for k, v in record["timings"].items())
    mode = (
        "`d2c demo --text --quick` (smoke-test settings)"
        if record["mode"] == "quick"
        else "`d2c demo --text`"
    )
    groups = record.get("groups") or {}
    lines = [
        "# Text-to-image D2C demo on the captioned digits",
        "",
        f"Made by {mode} with seed {record['seed']}, offline, on {record['torch_threads']} CPU thread(s) in "
        f"{record['timings']['total']:.0f} s.",
        "",
        "## What happened",
        "",
        f"1. The digits at {settings.resolution} px with captions computed from each image (digit, stroke weight, "
        "slant; `d2c_hf.data.captions`).",
        "2. A caption-conditioned scorer was trained from scratch (`models/scorer/`), a tiny DINOv2 self-supervised on "
        f"the training images (`models/dinov2-trained/`). {TEXT_STAND_IN_NOTE}",
        f"3. **Select**: every training image scored by its caption-conditioned denoising loss, the rows grouped "
        f"({groups.get('num_groups', '?')} groups by {groups.get('source', '?')}) and D2C interval sampling kept "
        f"{record['condensed_size']} (~{settings.ratio:.0%}); **Attach**: pixel latents, visual tokens, caption tokens.",
        "4. Baselines of the same size: **Random + Attach** (no Select) and **Random** (no Select, no visual tokens; "
        "captions are kept: they are the condition).",
        f"5. The same text-conditioned SiT ({sit.model}, overrides `{json.dumps(dict(sit.model_config_overrides))}`, "
        f"cross-attention to the caption tokens) trained on each set for {sit.max_train_steps} steps with "
        "`examples/train_sit.py`.",
        f"6. One sample per test caption ({record['num_prompts']}), {sit.num_inference_steps} SDE steps, guidance "
        f"{settings.guidance_scale}, measured against its caption.",
        "",
        "## Does each model follow its captions?",
        "",
        table,
        "",
        "class acc.: the independent digit classifier sees the prompted digit (chance 0.1); weight / slant acc.: the "
        "sample's measured ink / slant falls in the prompted tertile of its digit (chance 1/3); caption acc.: all "
        "three; ink r / slant r: correlation with the prompt row's measurement, within the digit's class (0 when "
        "the style words are ignored); FD: quality against the test images (digit classifier features). The real "
        "rows: each caption's own image, and a random real image of the prompted digit (style ignored).",
        "",
        "This is one seed; docs/text-to-image.md reports several.",
        "",
        "![metrics vs training step](curves.png)",
        "",
        "## Samples from prompts",
        "",
        "One row per digit; columns: " + ", ".join(f"{w}, {s}" for w, s in GRID_STYLES) + ".",
        "",
        "| D2C | Random + Attach | Random |",
        "|---|---|---|",
        "| ![D2C](grids/d2c.png) | ![Random + Attach](grids/random_attach.png) | ![Random](grids/random.png) |",
        "",
        "## What is where",
        "",
        "| path | contents |",
        "|---|---|",
        "| `metrics.md`, `metrics.json` | the table; every number, curve, setting and timing |",
        "| `condensed/`, `random_attach/`, `random_subset/` | the three captioned training sets (`CondensedDataset`) |",
        "| `runs/*/` | each run's final `SiTPipeline` (takes `prompt=`; text encoder and tokenizer inside) |",
        "| `models/` | the scorer, the vision encoder, the stand-in text encoder, the digit classifier |",
        "",
        "## Timings (seconds)",
        "",
        "| stage | s |",
        "|---|---|",
        timing_rows,
        "",
        "```python",
        "from d2c_hf import SiTPipeline",
        "",
        f'pipe = SiTPipeline.from_pretrained("{record["pipelines"]["D2C"]}")  # inside this folder',
        'images = pipe(prompt=["a thick, upright handwritten seven"], num_inference_steps=20).images',
        "```",
        "",
    ]
    return "\n".join(lines)
