"""Image quality per training step at a tiny data budget, on the bundled digits (offline, CPU).

The question of the D2C paper, asked on data everyone has: train the same small SiT for the same
number of steps on subsets chosen by different strategies, and score what it generates.

* **Data**: scikit-learn's digits at 16 px (:func:`d2c_hf.data.load_digits_dataset`): the train split
  (1,437 images) is condensed and trained on, the test split (360 images) is the reference.
* **Scorer**: one class-conditional DiT trained from scratch on the train split
  (:func:`d2c_hf.train_scorer`); its difficulty scores are computed once and reused by every
  strategy (``condense`` reuses an existing ``difficulty`` column).
* **Strategies** (``d2c_hf.selection.STRATEGIES``), trained without Attach (pixel latents only):
  ``random``, ``herding``, ``kcenter`` (on grey 16 px pixels as features), ``min``, ``max``, ``medium``,
  ``ccs`` and D2C ``interval``.
* **D2C ablation**: *select only* = ``interval`` without Attach (the row above), *attach only* =
  ``random`` + class text (DC-Embedding) + visual tokens (REPA loss), *select + attach* = ``interval`` +
  text + visual. The Hub is offline, so the T5 and DINOv2 are tiny random stand-ins
  (:func:`d2c_hf.demo.build_stand_in_encoders`): Attach here tests the machinery, not pretrained
  semantics.
* **Reference**: the full train split, same model and steps.
* **Budgets** 5 % and 10 % (``ratio``: 7 and 14 images per class), **seeds** 0, 1, 2 (selection and
  training), **fixed steps**.
* **Metrics** (:class:`d2c_hf.demo.DigitsQuality`): Fréchet distance and KID in the feature space of an
  MLP digit classifier fitted on the real train split (independent of every trained/attached model),
  precision/recall (k = 3) and that classifier's accuracy at recognising the requested class, on 360
  generated images (36 per class, fixed noise) against the test split; mean ± std over seeds.

Writes ``quality_digits.md`` (tables, command, runtime), ``quality_digits.json`` (every number and
curve) and one PNG per budget (FD and class accuracy vs training step per strategy) to
``--output-dir`` (default ``docs/benchmarks``).

    python benchmarks/quality_digits.py                         # full run (~25 min on 2 CPU cores)
    python benchmarks/quality_digits.py --quick --output-dir /tmp/q   # smoke test (< 1 min)
    python benchmarks/quality_digits.py --budgets 0.1 --seeds 0 --strategies random interval --steps 500
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from d2c_hf.demo import (
    METRIC_KEYS,
    METRIC_LABELS,
    DigitsQuality,
    SiTSettings,
    build_stand_in_encoders,
    fmt_metric,
    load_train_script,
    plot_curves,
    train_sit_run,
)

logger = logging.getLogger("quality_digits")

ALL_STRATEGIES = ("random", "herding", "kcenter", "min", "max", "medium", "ccs", "interval")
RESOLUTION = 16
PATCH_SIZE = 4


@dataclass(frozen=True)
class Settings:
    budgets: tuple[float, ...] = (0.05, 0.1)
    seeds: tuple[int, ...] = (0, 1, 2)
    strategies: tuple[str, ...] = ALL_STRATEGIES
    ablation: bool = True
    full_data: bool = True
    train_rows: int | None = None  # None: the whole train split; --quick uses its first 300 rows
    scorer_steps: int = 400
    num_timesteps: int = 10
    samples_per_class: int = 36
    sit: SiTSettings = field(
        default_factory=lambda: SiTSettings(
            model_config_overrides={"depth": 4, "hidden_size": 64, "num_attention_heads": 4},
            train_batch_size=64,
            max_train_steps=800,
            ema_decay=0.99,
            validation_steps=200,
            num_inference_steps=20,
        )
    )


QUICK = Settings(
    budgets=(0.1,),
    seeds=(0,),
    strategies=("random", "interval"),
    train_rows=300,
    scorer_steps=20,
    num_timesteps=2,
    samples_per_class=7,
    sit=SiTSettings(
        model_config_overrides={"depth": 2, "hidden_size": 32, "num_attention_heads": 2},
        encoder_depth=1,
        projector_dim=32,
        train_batch_size=16,
        max_train_steps=4,
        validation_steps=2,
        num_inference_steps=4,
    ),
)


@dataclass(frozen=True)
class Variant:
    """One row of the table: a selection strategy, with or without Attach."""

    name: str
    strategy: str
    attach: bool

    @property
    def key(self) -> str:
        return f"{self.strategy}+attach" if self.attach else self.strategy


def variants(settings: Settings) -> list[Variant]:
    rows = [
        Variant("D2C interval (select only)" if s == "interval" else s, s, attach=False)
        for s in settings.strategies
    ]
    if settings.ablation:
        rows.append(Variant("random + attach (attach only)", "random", attach=True))
        rows.append(Variant("D2C interval + attach (select + attach)", "interval", attach=True))
    return rows


FULL_DATA = Variant("full train split (reference)", "all", attach=False)


# --------------------------------------------------------------------------------------
# one run
# --------------------------------------------------------------------------------------


def build_set(
    scored: Any,
    variant: Variant,
    budget: float | None,
    seed: int,
    *,
    features: np.ndarray,
    encoders: tuple[Path, Path],
    folder: Path,
) -> tuple[Path, int]:
    """Condense the scored train split with ``variant`` at ``budget`` (``None`` = every image) and save it."""
    from d2c_hf.condensing import condense
    from d2c_hf.selection import STRATEGIES

    if budget is None:  # the whole split: random with a per-class budget above every class size
        strategy, budget_kw = "random", {"images_per_class": int(np.bincount(scored["label"]).max())}
    else:
        strategy, budget_kw = variant.strategy, {"ratio": budget}
    selection_kwargs = {"features": features} if STRATEGIES[strategy].needs_features else None
    condensed = condense(
        scored,
        **budget_kw,
        scorer=None,
        vae=None,
        text_encoder=encoders[0],
        vision_encoder=encoders[1],
        strategy=strategy,
        attach=("latents", "visual", "text") if variant.attach else ("latents",),
        resolution=RESOLUTION,
        patch_size=PATCH_SIZE,
        prompt_template="a photo of the digit {}",
        seed=seed,
        selection_kwargs=selection_kwargs,
    )
    condensed.save_to_disk(folder, card=False)
    return folder, len(condensed)


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample std (ddof 1; 0 for one seed) over seeds of the final metrics and the curves."""
    finals = {k: np.array([r["final"][k] for r in runs], dtype=float) for k in METRIC_KEYS}
    mean = {k: float(v.mean()) for k, v in finals.items()}
    std = {k: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for k, v in finals.items()}
    steps = [c["step"] for c in runs[0]["curve"]]
    curve_mean, curve_std = [], []
    for i, step in enumerate(steps):
        values = {k: np.array([r["curve"][i][k] for r in runs], dtype=float) for k in METRIC_KEYS}
        curve_mean.append({"step": step, **{k: float(v.mean()) for k, v in values.items()}})
        curve_std.append(
            {"step": step, **{k: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for k, v in values.items()}}
        )
    return {
        "mean": mean,
        "std": std,
        "num_images": runs[0]["num_images"],
        "curve_mean": curve_mean,
        "curve_std": curve_std,
    }


# --------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------


def budget_label(budget: float | None) -> str:
    return "full" if budget is None else f"{budget * 100:g}%"


def table(rows: list[tuple[str, dict[str, Any]]], num_seeds: int) -> str:
    header = "| training set | images | " + " | ".join(METRIC_LABELS[k] for k in METRIC_KEYS) + " |"
    lines = [header, "|---" * (len(METRIC_KEYS) + 2) + "|"]
    for name, cell in rows:
        values = [
            fmt_metric(cell["mean"][k], k, cell["std"][k] if num_seeds > 1 else None) for k in METRIC_KEYS
        ]
        lines.append(f"| {name} | {cell['num_images']} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def write_report(
    output_dir: Path,
    settings: Settings,
    results: dict[str, Any],
    *,
    command: str,
    runtime: float,
    real_reference: dict[str, float],
    interval_strides: dict[str, Any],
) -> Path:
    output_dir.mkdir(parents=True, exist_ok=True)
    sit = settings.sit
    n_seeds = len(settings.seeds)
    full = results.get("full")
    lines = [
        "# Quality benchmark on the digits",
        "",
        "Same small SiT, same training steps, subsets chosen by different strategies; scored on what it "
        "generates. Produced by `benchmarks/quality_digits.py` (see its docstring for the protocol).",
        "",
        "```bash",
        command,
        "```",
        "",
        f"Runtime: **{runtime / 60:.1f} min** on {torch.get_num_threads()} CPU thread(s) "
        f"({platform.processor() or platform.machine()}), torch {torch.__version__}.",
        "",
        "## Setup",
        "",
        f"* Data: digits at {RESOLUTION} px; condense/train on the train split "
        f"({settings.train_rows or 1437} images), reference = the test split (360 images).",
        f"* Scorer: DiT trained from scratch ({settings.scorer_steps} steps), {settings.num_timesteps} timesteps; "
        "scores computed once, reused by every strategy.",
        f"* Model: `{sit.model}` with `{json.dumps(dict(sit.model_config_overrides))}` ({PATCH_SIZE}x{PATCH_SIZE} "
        f"patches, {(RESOLUTION // PATCH_SIZE) ** 2} tokens, pixel space); {sit.max_train_steps} steps, batch "
        f"{sit.train_batch_size}, AdamW lr {sit.learning_rate}, EMA {sit.ema_decay}; attach runs add the "
        f"DC-Embedding and the REPA loss (lambda {sit.proj_coeff}, block {sit.encoder_depth}).",
        f"* Sampling: the EMA model, SDE Euler-Maruyama (REPA's sampler) with {sit.num_inference_steps} steps, "
        f"no guidance; {settings.samples_per_class} images per class with fixed noise.",
        "* Metrics: FD and KID in the 64-d hidden space of an MLP digit classifier fitted on the real train split "
        "(`DigitsFeatureExtractor`, shares nothing with the trained or attached models), precision/recall "
        "(k = 3), class acc. = that classifier's accuracy on the requested class. "
        f"Mean ± std over seeds {list(settings.seeds)} (selection and training seed).",
        "* herding/kcenter select on grey 16 px pixels; the T5/DINOv2 of *attach* runs are tiny random stand-ins "
        "(the Hub is offline), so *attach* measures the machinery, not pretrained semantics.",
        "",
    ]
    for budget in settings.budgets:
        label = budget_label(budget)
        rows = [(v["name"], v["cell"]) for v in results["budgets"][label].values()]
        if full is not None:
            rows.append((FULL_DATA.name, full["cell"]))
        stride = interval_strides.get(label)
        lines += [
            f"## Budget {label}" + (f" (interval stride k = {stride})" if stride else ""),
            "",
            table(rows, n_seeds),
            "",
            f"![metrics vs step, budget {label}](quality_digits_{_file_label(budget)}.png)",
            "",
        ]
    lines += [
        "*Real-data floor*: "
        + ", ".join(f"{METRIC_LABELS[k]} {fmt_metric(real_reference[k], k)}" for k in METRIC_KEYS)
        + f" for {settings.samples_per_class * 10} real training digits scored the same "
        "way (what a perfect generator would get at this sample size).",
        "",
        "Raw numbers, per-seed values and curves: `quality_digits.json`.",
        "",
    ]
    path = output_dir / "quality_digits.md"
    _write_atomic(path, "\n".join(lines))
    _write_atomic(
        output_dir / "quality_digits.json",
        json.dumps(
            {
                "settings": _jsonable(asdict(settings)),
                "command": command,
                "runtime_seconds": runtime,
                "torch_threads": torch.get_num_threads(),
                "real_reference": real_reference,
                "interval_strides": interval_strides,
                "results": results,
            },
            indent=1,
        )
        + "\n",
    )
    return path


def _file_label(budget: float) -> str:
    return f"budget{budget * 100:g}pct".replace(".", "_")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def plot_budget(
    output_dir: Path, budget: float, cells: dict[str, dict[str, Any]], full: dict[str, Any] | None
):
    curves = {v["name"]: v["cell"]["curve_mean"] for v in cells.values()}
    spreads = {v["name"]: v["cell"]["curve_std"] for v in cells.values()}
    styles = {}
    if full is not None:
        curves[FULL_DATA.name] = full["cell"]["curve_mean"]
        spreads[FULL_DATA.name] = full["cell"]["curve_std"]
        styles[FULL_DATA.name] = {"linestyle": "--", "color": "black"}
    for name in curves:
        if "attach" in name:
            styles[name] = {"linestyle": ":"}
    # a tmp name + rename keeps the published PNG whole
    final = output_dir / f"quality_digits_{_file_label(budget)}.png"
    tmp = plot_curves(
        curves,
        output_dir / f".{final.stem}.tmp.png",
        title=f"digits, budget {budget_label(budget)}: mean over seeds (band: ± std)",
        spreads=spreads,
        styles=styles,
    )
    os.replace(tmp, final)


# --------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="tiny smoke test: 1 budget, 1 seed, 2 strategies"
    )
    parser.add_argument("--output-dir", default=None, help="where the report goes (default: docs/benchmarks)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default: 0 1 2 (quick: 0)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per run (default 800)")
    parser.add_argument("--validation-steps", type=int, default=None, help="evaluate every N steps")
    parser.add_argument("--budgets", type=float, nargs="+", default=None, help="ratios, default: 0.05 0.1")
    parser.add_argument(
        "--strategies", nargs="+", default=None, choices=ALL_STRATEGIES, help="default: all eight"
    )
    parser.add_argument(
        "--no-ablation", action="store_true", help="skip the attach-only / select+attach rows"
    )
    parser.add_argument("--no-full-data", action="store_true", help="skip the full-data reference")
    parser.add_argument("--work-dir", default=None, help="scratch folder (default: a temporary one, removed)")
    parser.add_argument("--train-script", default=None, help="path of examples/train_sit.py")
    parser.add_argument(
        "--report-from",
        default=None,
        metavar="JSON",
        help="only re-render the report and plots from a quality_digits.json (no training)",
    )
    args = parser.parse_args(argv)
    if args.quick and args.output_dir is None and args.report_from is None:
        parser.error("--quick needs --output-dir (the default, docs/benchmarks, holds the full results)")
    for name in ("steps", "validation_steps"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.budgets is not None and not all(0 < b < 1 for b in args.budgets):
        parser.error(f"--budgets must be ratios in (0, 1), got {args.budgets}")
    if args.seeds is not None and any(s < 0 for s in args.seeds):
        parser.error("--seeds must be non-negative")
    return args


def settings_from_args(args: argparse.Namespace) -> Settings:
    settings = QUICK if args.quick else Settings()
    sit = settings.sit
    if args.steps is not None:
        validation = args.validation_steps or max(1, args.steps // 4)
        sit = replace(sit, max_train_steps=args.steps, validation_steps=validation)
    elif args.validation_steps is not None:
        sit = replace(sit, validation_steps=args.validation_steps)
    return replace(
        settings,
        sit=sit,
        seeds=tuple(args.seeds) if args.seeds else settings.seeds,
        budgets=tuple(args.budgets) if args.budgets else settings.budgets,
        strategies=tuple(args.strategies) if args.strategies else settings.strategies,
        ablation=settings.ablation and not args.no_ablation,
        full_data=settings.full_data and not args.no_full_data,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = settings_from_args(args)
    output_dir = Path(args.output_dir or Path(__file__).resolve().parents[1] / "docs" / "benchmarks")
    if args.report_from:
        return render_from_json(Path(args.report_from), output_dir)
    load_train_script(args.train_script)  # fail before any work if it is missing
    command = "python benchmarks/quality_digits.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="d2c-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        record = run(settings, work, train_script=args.train_script)
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    return render(
        output_dir, settings, record, command=command.strip(), runtime=time.perf_counter() - started
    )


def render(
    output_dir: Path, settings: Settings, record: dict[str, Any], *, command: str, runtime: float
) -> int:
    """Write the per-budget plots and ``quality_digits.md`` from a run record, and print the report."""
    for budget in settings.budgets:
        plot_budget(
            output_dir,
            budget,
            record["results"]["budgets"][budget_label(budget)],
            record["results"].get("full"),
        )
    path = write_report(
        output_dir,
        settings,
        record["results"],
        command=command,
        runtime=runtime,
        real_reference=record["real_reference"],
        interval_strides=record["interval_strides"],
    )
    print(path.read_text())
    return 0


def render_from_json(path: Path, output_dir: Path) -> int:
    """Re-render ``quality_digits.md`` and the plots from a saved ``quality_digits.json``."""
    saved = json.loads(path.read_text())
    fields = dict(saved["settings"])
    fields["sit"] = SiTSettings(**fields["sit"])
    for name in ("budgets", "seeds", "strategies"):
        fields[name] = tuple(fields[name])
    settings = Settings(**fields)
    return render(output_dir, settings, saved, command=saved["command"], runtime=saved["runtime_seconds"])


def run(settings: Settings, work: Path, *, train_script: str | None = None) -> dict[str, Any]:
    # import everything up front: a long run should not import modules half-way through
    for module in ("d2c_hf.condensed", "d2c_hf.attach", "d2c_hf.training", "d2c_hf.pipelines.pipeline_sit"):
        importlib.import_module(module)
    from d2c_hf.data import load_digits_dataset
    from d2c_hf.evaluation import to_uint8_images
    from d2c_hf.scorer_training import train_scorer
    from d2c_hf.scoring import DifficultyScorer
    from d2c_hf.selection import select
    from d2c_hf.vae import PIXEL_SPACE

    digits = load_digits_dataset(image_size=RESOLUTION)
    train, test = digits["train"], digits["test"]
    quality = DigitsQuality(
        train,  # the evaluation feature space is always fitted on the whole train split
        test,
        samples_per_class=settings.samples_per_class,
        num_inference_steps=settings.sit.num_inference_steps,
        seed=0,
    )
    if settings.train_rows is not None:
        train = train.select(range(min(settings.train_rows, len(train))))
    encoders = build_stand_in_encoders(work / "models", seed=0, image_size=(RESOLUTION // PATCH_SIZE) * 14)
    scorer_dir = train_scorer(
        train, work / "models" / "scorer", resolution=RESOLUTION, num_steps=settings.scorer_steps, seed=0
    )
    scorer = DifficultyScorer.from_pretrained(
        scorer_dir, vae=PIXEL_SPACE, resolution=RESOLUTION, num_timesteps=settings.num_timesteps, seed=0
    )
    scored = scorer.apply(train)
    grey = to_uint8_images(train["image"]).astype(np.float32).mean(axis=-1) / 255.0
    features = grey.reshape(len(grey), -1)

    def one(variant: Variant, budget: float | None, seed: int) -> dict[str, Any]:
        label = budget_label(budget)
        tag = f"{label}-{variant.key}-seed{seed}".replace("%", "pct")
        logger.info("run %s", tag)
        folder, n = build_set(
            scored, variant, budget, seed, features=features, encoders=encoders, folder=work / "sets" / tag
        )
        out = train_sit_run(
            folder,
            work / "runs" / tag,
            replace(settings.sit),
            use_text=variant.attach,
            use_visual=variant.attach,
            seed=seed,
            quality=quality,
            train_script=train_script,
        )
        shutil.rmtree(work / "runs" / tag, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)
        final = out["curve"][-1]
        logger.info("run %s: %s", tag, ", ".join(f"{k}={final[k]:.4g}" for k in METRIC_KEYS))
        return {
            "seed": seed,
            "num_images": n,
            "final": {k: final[k] for k in METRIC_KEYS},
            "curve": [{"step": c["step"], **{k: c[k] for k in METRIC_KEYS}} for c in out["curve"]],
            "final_loss": out.get("final_loss"),
            "train_seconds": out["train_seconds"],
        }

    results: dict[str, Any] = {"budgets": {}}
    strides: dict[str, Any] = {}
    for budget in settings.budgets:
        label = budget_label(budget)
        cells = {}
        for variant in variants(settings):
            runs = [one(variant, budget, seed) for seed in settings.seeds]
            cells[variant.key] = {"name": variant.name, "runs": runs, "cell": aggregate(runs)}
        results["budgets"][label] = cells
        ipc_result = select(
            np.asarray(scored["difficulty"]), np.asarray(scored["label"]), ratio=budget, strategy="interval"
        )
        strides[label] = ipc_result.params.get("interval")
    if settings.full_data:
        runs = [one(FULL_DATA, None, seed) for seed in settings.seeds]
        results["full"] = {"name": FULL_DATA.name, "runs": runs, "cell": aggregate(runs)}
    real_reference = quality.real_reference(digits["train"], seed=0)
    return {
        "results": results,
        "real_reference": {k: real_reference[k] for k in METRIC_KEYS},
        "interval_strides": strides,
    }


if __name__ == "__main__":
    sys.exit(main())
