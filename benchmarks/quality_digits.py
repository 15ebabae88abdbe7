"""A fair test of D2C's claims on real data: image quality per training step at a tiny data budget,
on the bundled digits (offline, CPU).

The question of the D2C paper, asked so that its answer could go either way: train the same small SiT
for the same steps on subsets chosen by different strategies, with and without Attach, and score what it
generates against held-out digits.

* **Data**: scikit-learn's digits at 16 px (:func:`d2c_hf.data.digits.load_digits_dataset`): the train split
  (1,437 images) is condensed and trained on, the test split (360 images) is the reference.
* **A regime where data matters**: the SiT's width and training horizon are calibrated (``--calibrate``)
  so that the full train split beats a random 10 % subset by more than 3 seed standard deviations and
  learns class conditioning (class accuracy >= 0.8); the report prints that check at every checkpoint.
* **Select**: one class-conditional DiT scorer trained from scratch on the train split
  (:func:`d2c_hf.train_scorer`); several noise draws per timestep, each timestep's loss standardised over
  the split before averaging, so that the score passes the reliability gate (split-half reliability >= 0.8,
  :attr:`d2c_hf.DifficultyScorer.reliability`); the reliability is printed with the tables.
* **Attach with encoders that know something**: a tiny DINOv2 trained self-supervised on the *whole*
  train split (:func:`d2c_hf.train_vision_encoder`, the analogue of DINOv2 trained on far more images than
  the subset), loaded by ``VisualAttacher`` like any Hub encoder, and also the feature space of herding and
  k-center. The class text stays a tiny random T5 (digit names carry no meaning to learn).
* **Arms**: Select strategies without Attach (random, D2C interval, min, max, herding, k-center), the full
  split, and the Attach ablation {no Attach, random encoders, trained encoders, class-constant control} x
  {random, interval}. The class-constant control replaces the text and visual conditions by one random
  array per class, of the same shapes, with no encoder: it separates "more class signal" from "what the
  encoder knows".
* **Paired seeds**: seed s fixes the training noise, batch order seed and the initialisation of every arm
  with the same architecture (all no-Attach arms; all Attach arms: their encoders have the same widths);
  every model is sampled from the same noise.
* **Metrics** (:class:`d2c_hf.demo.DigitsQuality`): FD and KID in the feature space of an MLP digit
  classifier fitted on the real train split (independent of every trained or attached model),
  precision/recall (k = 3) and that classifier's accuracy on the requested class, on 1,000 generated
  images (100 per class) against the test split, at log-spaced checkpoints; at the last step also a second
  sampling seed (the evaluator's own spread) and classifier-free guidance.
* **Statistics** (:mod:`d2c_hf.evaluation.comparison`): mean ± std over seeds, paired differences against
  random with percentile-bootstrap 95 % intervals, steps for each arm to reach random's final FD, and the
  FD curve's mean over log-step.

Its Select arms are one case of ``d2c benchmark`` (:mod:`d2c_hf.benchmark`, docs/benchmark-tool.md), which runs
any strategies at any budgets on any labelled image dataset and shares this script's statistics
(:mod:`d2c_hf.benchmark.analysis`); this script stays for the Attach ablation and the horizon calibration, and
re-renders its committed reports (``--report-from``).

Each (arm, seed) result is cached under ``--work-dir`` as soon as it finishes, so an interrupted run
resumes where it stopped (the work dir remembers its settings and refuses others). ``--jobs N`` runs N
single-threaded trainings side by side (the models are tiny: two one-thread jobs beat one two-thread job).

Writes ``quality_digits.md`` (tables, protocol, command, runtime), ``quality_digits.json`` (every number
and curve) and PNG curves to ``--output-dir`` (default ``docs/benchmarks``); a hand-written
``quality_digits_reading.md`` beside them, if present, becomes the report's *Reading* section.

    python benchmarks/quality_digits.py --select random interval max herding --jobs 2  # the committed run
    python benchmarks/quality_digits.py --calibrate --widths 64 --steps 12000 --jobs 2 \
        --work-dir quality_digits_work_12000                       # the regime calibration (horizon)
    python benchmarks/quality_digits.py --steps 12000 --select random interval --no-ablation --jobs 2 \
        --work-dir quality_digits_work_12000 \
        --output-dir docs/benchmarks/quality_digits_12000_steps    # Select at that horizon (reuses it)
    python benchmarks/quality_digits.py --quick --output-dir /tmp/q  # smoke test (seconds)
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import logging
import math
import multiprocessing
import os
import platform
import shlex
import shutil
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from d2c_hf.benchmark.analysis import (
    contrast,
    evaluator_spread,
    final_metrics,
    regime_row,
    summarise,
)
from d2c_hf.demo import METRIC_KEYS, METRIC_LABELS, SiTSettings, fmt_metric

logger = logging.getLogger("quality_digits")

RESOLUTION = 16
PATCH_SIZE = 4
NUM_TOKENS = (RESOLUTION // PATCH_SIZE) ** 2
SELECT_STRATEGIES = ("random", "interval", "min", "max", "herding", "kcenter")
ATTACH_MODES = ("none", "random_encoders", "trained_encoders", "class_constant")
ATTACH_LABELS = {
    "none": "no Attach",
    "random_encoders": "random encoders",
    "trained_encoders": "trained encoders",
    "class_constant": "class-constant control",
}
#: the grid the issue asks for; the report says what a run left out of it
FULL_GRID = {"budgets": (0.05, 0.1), "select": SELECT_STRATEGIES, "seeds": 4}
PROMPT = "a photo of the digit {}"
CALIBRATION_BUDGET = 0.1


# --------------------------------------------------------------------------------------
# settings
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """Everything a run depends on. ``result_fields`` are the ones cached results must share."""

    budgets: tuple[float, ...] = (0.1,)
    seeds: tuple[int, ...] = (0, 1, 2, 3)
    select: tuple[str, ...] = ("random", "interval", "herding")
    attach_ablation: bool = True
    attach_modes: tuple[str, ...] = ("random_encoders", "trained_encoders", "class_constant")
    attach_strategies: tuple[str, ...] = ("random", "interval")
    full_data: bool = True
    widths: tuple[int, ...] = ()  # --calibrate: the widths to compare (random 10 % vs full only)
    train_rows: int | None = None  # None: the whole train split; --quick uses its first rows
    scorer_steps: int = 400
    scorer_batch_size: int = 64
    num_timesteps: int = 10
    num_draws: int = 8  # x 10 timesteps, each standardised: split-half reliability ~0.89 (docs/scoring.md)
    encoder_steps: int = 1500
    samples_per_class: int = 100
    guidance_scale: float = 1.5
    sampling_seeds: tuple[int, ...] = (0, 1)
    num_checkpoints: int = 8
    sit: SiTSettings = field(
        default_factory=lambda: SiTSettings(
            model_config_overrides={"depth": 4, "hidden_size": 64, "num_attention_heads": 4},
            encoder_depth=2,
            projector_dim=256,
            train_batch_size=64,
            learning_rate=1e-3,
            max_train_steps=6000,
            ema_decay=0.995,
            validation_steps=375,
            num_inference_steps=20,
        )
    )

    def result_key(self) -> dict[str, Any]:
        """What a cached run's numbers depend on, besides its own (budget, arm, seed, width)."""
        keep = asdict(self)
        for name in (
            "budgets",
            "seeds",
            "select",
            "attach_ablation",
            "attach_modes",
            "attach_strategies",
            "full_data",
            "widths",
        ):
            keep.pop(name)
        return json.loads(json.dumps(keep))

    @property
    def width(self) -> int:
        return int(self.sit.model_config_overrides["hidden_size"])

    def eval_steps(self) -> list[int]:
        """Log-spaced checkpoints ending at the last step, on multiples of ``validation_steps``."""
        last, every = self.sit.max_train_steps, self.sit.validation_steps
        raw = np.geomspace(every, last, self.num_checkpoints)
        steps = sorted({max(every, int(np.rint(s / every)) * every) for s in raw} | {last})
        return [s for s in steps if s <= last]


QUICK = Settings(  # the wiring, end to end, in the fewest runs: every arm kind once, one seed
    budgets=(0.1,),
    seeds=(0,),
    select=("random", "interval", "herding"),
    attach_modes=("trained_encoders", "class_constant"),
    attach_strategies=("interval",),
    train_rows=300,
    scorer_steps=20,
    num_timesteps=4,
    num_draws=2,
    encoder_steps=4,
    samples_per_class=7,
    num_checkpoints=2,
    sit=SiTSettings(
        model_config_overrides={"depth": 2, "hidden_size": 32, "num_attention_heads": 2},
        encoder_depth=1,
        projector_dim=32,
        train_batch_size=16,
        max_train_steps=4,
        ema_decay=0.9,
        validation_steps=2,
        num_inference_steps=4,
    ),
)


@dataclass(frozen=True)
class Arm:
    """One row: a selection strategy (``"full"`` = every image) and an Attach mode."""

    strategy: str
    attach: str = "none"

    @property
    def key(self) -> str:
        return self.strategy if self.attach == "none" else f"{self.strategy}+{self.attach}"

    @property
    def name(self) -> str:
        base = {"interval": "D2C interval", "full": "full train split", "kcenter": "k-center"}.get(
            self.strategy, self.strategy
        )
        return base if self.attach == "none" else f"{base} + {ATTACH_LABELS[self.attach]}"

    @classmethod
    def from_key(cls, key: str) -> Arm:
        strategy, _, attach = key.partition("+")
        return cls(strategy, attach or "none")


FULL = Arm("full")


@dataclass(frozen=True)
class RunSpec:
    """One training run: ``budget`` (``None`` = the full split), arm, seed and SiT width."""

    budget: float | None
    arm: Arm
    seed: int
    width: int

    @property
    def tag(self) -> str:
        return f"{budget_label(self.budget).replace('%', 'pct')}-{self.arm.key}-w{self.width}-seed{self.seed}"


def budget_label(budget: float | None) -> str:
    return "full" if budget is None else f"{budget * 100:g}%"


def arms_for(settings: Settings) -> list[Arm]:
    """The arms at each budget: the Select strategies, then the Attach ablation (random and interval)."""
    arms = [Arm(s) for s in settings.select]
    if settings.attach_ablation:
        for strategy in settings.attach_strategies:
            if Arm(strategy) not in arms:
                arms.append(Arm(strategy))
            arms += [Arm(strategy, mode) for mode in settings.attach_modes]
    return arms


def run_specs(settings: Settings) -> list[RunSpec]:
    """Every run, seed-major (a partial result covers every arm for the first seeds)."""
    specs = []
    for seed in settings.seeds:
        if settings.widths:  # calibration: random 10 % vs the full split at each width
            for width in settings.widths:
                specs += [
                    RunSpec(CALIBRATION_BUDGET, Arm("random"), seed, width),
                    RunSpec(None, FULL, seed, width),
                ]
            continue
        for budget in settings.budgets:
            specs += [RunSpec(budget, arm, seed, settings.width) for arm in arms_for(settings)]
        if settings.full_data:
            specs.append(RunSpec(None, FULL, seed, settings.width))
    return specs


def fingerprint(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------
# preparation: scorer + scores, encoders, features (once per work dir)
# --------------------------------------------------------------------------------------


def encoder_probes(features: Mapping[str, tuple[np.ndarray, np.ndarray]], y_train, y_test) -> dict[str, Any]:
    """What each feature space knows about the classes it never saw: test accuracy of a linear probe
    (logistic regression on standardised features) and of 5-nearest neighbours, fitted on the train split."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    out = {}
    for name, (train, test) in features.items():
        mu, sd = train.mean(0), train.std(0) + 1e-6
        a, b = (train - mu) / sd, (test - mu) / sd
        out[name] = {
            "linear_probe": float(LogisticRegression(max_iter=3000).fit(a, y_train).score(b, y_test)),
            "knn5": float(KNeighborsClassifier(5).fit(a, y_train).score(b, y_test)),
            "dim": int(train.shape[1]),
        }
    return out


def prepare(settings: Settings, work: Path) -> dict[str, Any]:
    """Scorer, scores and their reliability, stand-in and trained encoders, selection features, encoder
    probes: built once into ``work/prepared`` (staged, then renamed), reused by every run."""
    from d2c_hf.attach.train_encoder import mean_patch_features, train_vision_encoder
    from d2c_hf.data.digits import load_digits_dataset
    from d2c_hf.demo import build_stand_in_encoders
    from d2c_hf.evaluation import DigitsFeatureExtractor
    from d2c_hf.selection.scorer import DifficultyScorer
    from d2c_hf.selection.train_scorer import train_scorer
    from d2c_hf.utils.files import staged_dir
    from d2c_hf.utils.spaces import PIXEL_SPACE

    key = {
        k: v
        for k, v in settings.result_key().items()
        if k
        in ("train_rows", "scorer_steps", "scorer_batch_size", "num_timesteps", "num_draws", "encoder_steps")
    }
    folder = work / "prepared"
    record_path = folder / "prepared.json"
    if record_path.is_file():
        record = json.loads(record_path.read_text())
        if record["key"] != key:
            raise SystemExit(
                f"{folder} was prepared with {record['key']}, not {key}: pass another --work-dir or delete it"
            )
        return record
    started = time.perf_counter()
    digits = load_digits_dataset(image_size=RESOLUTION)
    train, test = digits["train"], digits["test"]
    if settings.train_rows is not None:
        train = train.select(range(min(settings.train_rows, len(train))))
    labels = np.asarray(train["label"])
    timings: dict[str, float] = {}
    with staged_dir(folder, "the prepared models and scores") as tmp:
        models = tmp / "models"
        t = time.perf_counter()
        build_stand_in_encoders(models, seed=0, num_tokens=NUM_TOKENS)
        train_vision_encoder(
            train,
            models / "dinov2-trained",
            num_tokens=NUM_TOKENS,
            resolution=RESOLUTION,
            num_steps=settings.encoder_steps,
            seed=0,
        )
        timings["encoders"] = time.perf_counter() - t
        t = time.perf_counter()
        train_scorer(
            train,
            models / "scorer",
            resolution=RESOLUTION,
            num_steps=settings.scorer_steps,
            batch_size=settings.scorer_batch_size,
            seed=0,
        )
        timings["scorer"] = time.perf_counter() - t
        t = time.perf_counter()
        scorer = DifficultyScorer.from_pretrained(
            models / "scorer",
            vae=PIXEL_SPACE,
            resolution=RESOLUTION,
            num_timesteps=settings.num_timesteps,
            num_draws=settings.num_draws,
            standardize_timesteps=True,
            seed=0,
            batch_size=64,
        )
        scored = scorer.apply(train)  # difficulty: standardised per timestep; the split-half reliability
        reliability = scorer.reliability
        timings["scoring"] = time.perf_counter() - t
        scored.save_to_disk(str(tmp / "scored"))
        t = time.perf_counter()
        feats = {
            "grey pixels": (_grey(train), _grey(test)),
            "random encoder": tuple(
                mean_patch_features(
                    models / "dinov2-stand-in", d, num_tokens=NUM_TOKENS, resolution=RESOLUTION
                )
                for d in (train, test)
            ),
            "trained encoder": tuple(
                mean_patch_features(
                    models / "dinov2-trained", d, num_tokens=NUM_TOKENS, resolution=RESOLUTION
                )
                for d in (train, test)
            ),
        }
        np.save(tmp / "features.npy", feats["trained encoder"][0])
        # the evaluation feature space, fitted once on the whole train split (never on a subset)
        DigitsFeatureExtractor.from_dataset(digits["train"]).save(tmp / "digits_extractor.safetensors")
        probes = encoder_probes(feats, labels, np.asarray(test["label"]))
        timings["features"] = time.perf_counter() - t
        record = {
            "key": key,
            "num_train": len(train),
            "num_test": len(test),
            "reliability": reliability.to_dict(),
            "reliability_summary": reliability.summary(),
            "encoder_probes": probes,
            "timings": timings,
            "seconds": time.perf_counter() - started,
        }
        record_path_tmp = tmp / "prepared.json"
        record_path_tmp.write_text(json.dumps(record, indent=1) + "\n")
    logger.info("prepared in %.0f s: %s", record["seconds"], record["reliability_summary"])
    return record


def _grey(dataset: Any) -> np.ndarray:
    from d2c_hf.evaluation import to_uint8_images

    grey = to_uint8_images(dataset["image"]).astype(np.float32).mean(axis=-1) / 255.0
    return grey.reshape(len(grey), -1)


# --------------------------------------------------------------------------------------
# one run
# --------------------------------------------------------------------------------------


def class_constant_condition(condensed: Any, seed: int) -> Any:
    """The control arm's data: ``condensed`` (built with Attach) with every image's visual tokens replaced
    by one N(0, 1) array per class and every class's text embedding by one N(0, s^2) array (s = the
    replaced embeddings' standard deviation), same shapes, same text mask. No encoder is involved: the
    condition says which class an image belongs to and nothing else."""
    from d2c_hf.condensed.dataset import CondensedDataset

    rng = np.random.default_rng([seed, 0xC0C0])
    samples, classes = condensed.samples, condensed.classes
    labels = np.asarray(samples["label"])
    visual_shape = np.asarray(samples[0]["visual_embeds"]).shape
    per_class_visual = rng.standard_normal((condensed.num_classes, *visual_shape)).astype(np.float16)
    text = np.asarray(classes["text_embeds"], dtype=np.float32)
    mask = np.asarray(classes["text_mask"], dtype=bool)
    scale = float(text[mask].std()) or 1.0
    per_class_text = (rng.standard_normal(text.shape) * scale).astype(np.float16)
    samples = samples.map(
        lambda batch, idx: {"visual_embeds": per_class_visual[labels[idx]]},
        batched=True,
        with_indices=True,
        features=samples.features,
        desc="class-constant visual condition",
    )
    classes = classes.map(
        lambda batch, idx: {"text_embeds": per_class_text[idx]},
        batched=True,
        with_indices=True,
        features=classes.features,
        desc="class-constant text condition",
    )
    info = dict(condensed.info)
    info["notes"] = [
        *info.get("notes", []),
        "class-constant control: visual_embeds and text_embeds are one random array per class (no encoder)",
    ]
    return CondensedDataset(samples=samples, classes=classes, info=info, scores=condensed.scores)


def build_set(spec: RunSpec, scored: Any, prepared_dir: Path, folder: Path) -> int:
    """Condense the scored train split for ``spec`` and save it to ``folder``; returns its size."""
    from d2c_hf.run.condense import condense
    from d2c_hf.selection.strategies import STRATEGIES

    models = prepared_dir / "models"
    if spec.budget is None:  # every image: random with a per-class budget above every class size
        strategy, budget_kw = "random", {"images_per_class": int(np.bincount(scored["label"]).max())}
    else:
        strategy, budget_kw = spec.arm.strategy, {"ratio": spec.budget}
    selection_kwargs = None
    if STRATEGIES[strategy].needs_features:
        selection_kwargs = {"features": np.load(prepared_dir / "features.npy")}
    attach = spec.arm.attach != "none"
    vision = models / ("dinov2-trained" if spec.arm.attach == "trained_encoders" else "dinov2-stand-in")
    condensed = condense(
        scored,
        **budget_kw,
        scorer=None,
        vae=None,
        text_encoder=models / "t5-stand-in",
        vision_encoder=vision,
        strategy=strategy,
        attach=("latents", "visual", "text") if attach else ("latents",),
        resolution=RESOLUTION,
        patch_size=PATCH_SIZE,
        prompt_template=PROMPT,
        seed=spec.seed,
        selection_kwargs=selection_kwargs,
    )
    if spec.arm.attach == "class_constant":
        condensed = class_constant_condition(condensed, spec.seed)
    condensed.save_to_disk(folder, card=False)
    return len(condensed)


def execute(spec: RunSpec, settings: Settings, work: Path, train_script: str | None = None) -> dict[str, Any]:
    """Train and evaluate one run, or return its cached result; the result is written atomically."""
    from datasets import load_from_disk

    from d2c_hf.data.digits import load_digits_dataset
    from d2c_hf.demo import DigitsQuality, load_pipeline, train_sit_run
    from d2c_hf.evaluation import DigitsFeatureExtractor

    path = work / "runs" / f"{spec.tag}.json"
    if path.is_file():
        return json.loads(path.read_text())
    started = time.perf_counter()
    digits = load_digits_dataset(image_size=RESOLUTION)
    quality = DigitsQuality(
        digits["train"],
        digits["test"],
        samples_per_class=settings.samples_per_class,
        num_inference_steps=settings.sit.num_inference_steps,
        seed=settings.sampling_seeds[0],
        extractor=DigitsFeatureExtractor.load(work / "prepared" / "digits_extractor.safetensors"),
    )
    scored = load_from_disk(str(work / "prepared" / "scored"))
    scratch = work / "scratch" / spec.tag
    shutil.rmtree(scratch, ignore_errors=True)
    num_images = build_set(spec, scored, work / "prepared", scratch / "set")
    overrides = {**dict(settings.sit.model_config_overrides), "hidden_size": spec.width}
    sit = replace(settings.sit, model_config_overrides=overrides)
    attach = spec.arm.attach != "none"
    logger.info("run %s: %d images", spec.tag, num_images)
    out = train_sit_run(
        scratch / "set",
        scratch / "run",
        sit,
        use_text=attach,
        use_visual=attach,
        seed=spec.seed,
        quality=quality,
        train_script=train_script,
        evaluate_at=settings.eval_steps(),
    )
    t = time.perf_counter()
    pipeline = load_pipeline(out["pipeline_dir"])
    final = {f"unguided_seed{settings.sampling_seeds[0]}": _metrics(out["curve"][-1])}
    for s in settings.sampling_seeds[1:]:
        final[f"unguided_seed{s}"] = _metrics(quality.evaluate(pipeline, seed=s))
    for s in settings.sampling_seeds:
        final[f"guided_seed{s}"] = _metrics(
            quality.evaluate(pipeline, seed=s, guidance_scale=settings.guidance_scale)
        )
    result = {
        "tag": spec.tag,
        "budget": spec.budget,
        "arm": spec.arm.key,
        "seed": spec.seed,
        "width": spec.width,
        "num_images": num_images,
        "settings_key": fingerprint(settings.result_key()),
        "curve": [{"step": c["step"], **_metrics(c)} for c in out["curve"]],
        "final": final,
        "final_loss": out.get("final_loss"),
        "train_seconds": out["train_seconds"],
        "eval_seconds": out["eval_seconds"] + time.perf_counter() - t,
        "seconds": time.perf_counter() - started,
    }
    shutil.rmtree(scratch, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, json.dumps(result, indent=1) + "\n")
    logger.info(
        "run %s done in %.0f s: %s",
        spec.tag,
        result["seconds"],
        ", ".join(f"{k}={result['curve'][-1][k]:.4g}" for k in METRIC_KEYS),
    )
    return result


def _metrics(values: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(values[k]) for k in METRIC_KEYS}


def _worker_init(threads: int) -> None:
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(threads)  # numpy's BLAS too: two jobs' thread pools would fight over the cores
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _worker(spec: RunSpec, settings: Settings, work: str, train_script: str | None) -> dict[str, Any]:
    return execute(spec, settings, Path(work), train_script)


def job_threads(jobs: int, threads: int | None = None) -> int:
    """Torch (and BLAS) threads of each of ``jobs`` parallel runs: ``threads``, else the cores shared out."""
    return threads or max(1, (os.cpu_count() or 1) // jobs)


def run_all(
    settings: Settings,
    work: Path,
    *,
    jobs: int = 1,
    train_script: str | None = None,
    threads: int | None = None,
) -> list[dict[str, Any]]:
    """Every run of ``settings`` (cached ones are read back), ``jobs`` at a time."""
    specs = run_specs(settings)
    key = fingerprint(settings.result_key())
    for spec in specs:  # a cached run of other settings is refused, not mixed in
        path = work / "runs" / f"{spec.tag}.json"
        if path.is_file() and json.loads(path.read_text())["settings_key"] != key:
            raise SystemExit(
                f"{path} was made with other settings; pass another --work-dir (or delete that folder)"
            )
    todo = [s for s in specs if not (work / "runs" / f"{s.tag}.json").is_file()]
    logger.info(
        "%d runs, %d cached, %d to do (%d at a time)", len(specs), len(specs) - len(todo), len(todo), jobs
    )
    if jobs <= 1 or len(todo) <= 1:
        for spec in todo:
            execute(spec, settings, work, train_script)
    else:
        threads = job_threads(jobs, threads)
        context = multiprocessing.get_context("spawn")  # no fork after torch's thread pools started
        with concurrent.futures.ProcessPoolExecutor(
            jobs, mp_context=context, initializer=_worker_init, initargs=(threads,)
        ) as pool:
            futures = [pool.submit(_worker, s, settings, str(work), train_script) for s in todo]
            for future in concurrent.futures.as_completed(futures):
                future.result()  # re-raise a failed run here
    return [json.loads((work / "runs" / f"{s.tag}.json").read_text()) for s in specs]


# --------------------------------------------------------------------------------------
# statistics (pure: run records in, numbers out; the per-arm statistics are d2c benchmark's,
# d2c_hf.benchmark.analysis: final_metrics, evaluator_spread, summarise, per_seed, contrast, regime_row)
# --------------------------------------------------------------------------------------


def ablation_contrasts(arm_keys: Iterable[str]) -> list[tuple[str, str, str]]:
    """(label, arm key, reference key) of the Attach ablation whose two arms are both in ``arm_keys``:
    each Attach mode against no Attach and the trained encoders against the two controls (for random
    and interval selection), then Select (interval - random) under each Attach mode."""
    rows = []
    for s in ("random", "interval"):
        rows += [
            (f"{s}: random encoders - no Attach", f"{s}+random_encoders", s),
            (f"{s}: trained encoders - no Attach", f"{s}+trained_encoders", s),
            (f"{s}: class-constant control - no Attach", f"{s}+class_constant", s),
            (f"{s}: trained encoders - random encoders", f"{s}+trained_encoders", f"{s}+random_encoders"),
            (
                f"{s}: trained encoders - class-constant control",
                f"{s}+trained_encoders",
                f"{s}+class_constant",
            ),
        ]
    for mode in ATTACH_MODES:
        suffix = "" if mode == "none" else f"+{mode}"
        rows.append(
            (f"Select (interval - random), {ATTACH_LABELS[mode]}", f"interval{suffix}", f"random{suffix}")
        )
    keys = set(arm_keys)
    return [row for row in rows if row[1] in keys and row[2] in keys]


def calibration(random_runs, full_runs) -> list[dict[str, Any]]:
    """Per checkpoint: FD and class accuracy of random 10 % and of the full split, and their gap in
    pooled seed standard deviations (the regime check: > 3 and full-data class accuracy >= 0.8)."""
    return [
        regime_row(point["step"], [r["curve"][i] for r in random_runs], [r["curve"][i] for r in full_runs])
        for i, point in enumerate(full_runs[0]["curve"])
    ]


def final_regime(random_runs, full_runs) -> dict[str, Any]:
    """The regime check on the measurement the arm tables use: each run's last-step unguided metrics
    averaged over its sampling seeds (less evaluator noise than one checkpoint evaluation)."""
    row = regime_row(
        full_runs[0]["curve"][-1]["step"],
        [final_metrics(r, "unguided") for r in random_runs],
        [final_metrics(r, "unguided") for r in full_runs],
    )
    row["num_sampling_seeds"] = min(
        sum(k.startswith("unguided_seed") for k in r["final"]) for r in [*random_runs, *full_runs]
    )
    return row


def analyse(settings: Settings, runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Group the run records and compute every table's numbers."""
    by_cell: dict[tuple[str, str, int], list[Mapping[str, Any]]] = {}
    for run in runs:
        by_cell.setdefault((budget_label(run["budget"]), run["arm"], run["width"]), []).append(run)
    for cell in by_cell.values():
        cell.sort(key=lambda r: r["seed"])
    results: dict[str, Any] = {"budgets": {}, "evaluator_spread": {}}
    for mode in ("unguided", "guided"):
        results["evaluator_spread"][mode] = evaluator_spread(runs, mode)
    if settings.widths:
        results["calibration"] = {}
        for width in settings.widths:
            random_runs = by_cell[(budget_label(CALIBRATION_BUDGET), "random", width)]
            full_runs = by_cell[("full", "full", width)]
            results["calibration"][str(width)] = {
                "checkpoints": calibration(random_runs, full_runs),
                "final": final_regime(random_runs, full_runs),
                "random": summarise(random_runs, None),
                "full": summarise(full_runs, None),
            }
        return results
    width = settings.width
    full_runs = by_cell.get(("full", "full", width))
    for budget in settings.budgets:
        label = budget_label(budget)
        random_runs = by_cell[(label, "random", width)]
        threshold = float(np.mean([r["curve"][-1]["fd"] for r in random_runs]))
        cells = {}
        for arm in arms_for(settings):
            arm_runs = by_cell[(label, arm.key, width)]
            cells[arm.key] = {"name": arm.name, "summary": summarise(arm_runs, threshold)}
            if arm.key != "random":
                cells[arm.key]["vs_random"] = contrast(arm_runs, random_runs)
        if full_runs:
            cells["full"] = {
                "name": FULL.name,
                "summary": summarise(full_runs, threshold),
                "vs_random": contrast(full_runs, random_runs),
            }
        ablation = []
        if settings.attach_ablation:
            for name, arm_key, ref_key in ablation_contrasts(a.key for a in arms_for(settings)):
                ablation.append(
                    {
                        "name": name,
                        "arm": arm_key,
                        "reference": ref_key,
                        "difference": contrast(
                            by_cell[(label, arm_key, width)], by_cell[(label, ref_key, width)]
                        ),
                    }
                )
        results["budgets"][label] = {"threshold_fd": threshold, "cells": cells, "ablation": ablation}
        if full_runs and math.isclose(budget, CALIBRATION_BUDGET):
            results["calibration"] = {
                str(width): {
                    "checkpoints": calibration(random_runs, full_runs),
                    "final": final_regime(random_runs, full_runs),
                }
            }
    return results


# --------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------


def fmt_ci(entry: Mapping[str, float], key: str) -> str:
    digits = 4 if key.startswith("kid") else 3
    seeds = len(entry.get("per_seed", ()))
    star = " *" if seeds > 1 and (entry["low"] > 0 or entry["high"] < 0) else ""
    return f"{entry['mean']:+.{digits}f} [{entry['low']:+.{digits}f}, {entry['high']:+.{digits}f}]{star}"


def fmt_steps(summary: Mapping[str, Any]) -> str:
    info = summary.get("steps_to_threshold")
    if info is None:
        return "—"
    n = len(info["per_seed"])
    if info["reached"] < n:
        return f"not reached by {n - info['reached']} of {n} seeds"
    return f"{info['median']:.0f}"


def main_table(cells: Mapping[str, Any], num_seeds: int) -> str:
    """Final metrics (unguided), guided FD / class accuracy, steps to random's final FD, FD log-step area."""
    header = (
        "| training set | images | "
        + " | ".join(METRIC_LABELS[k] for k in METRIC_KEYS)
        + " | FD ↓ (guided) | class acc. ↑ (guided) | steps to random's final FD ↓ | FD over log-step ↓ |"
    )
    lines = [header, "|---" * (len(METRIC_KEYS) + 6) + "|"]
    for cell in cells.values():
        s = cell["summary"]

        def val(mode: str, k: str, s: Mapping[str, Any] = s) -> str:
            return fmt_metric(s[mode][k]["mean"], k, s[mode][k]["std"] if num_seeds > 1 else None)

        area = s["fd_log_area"]
        lines.append(
            f"| {cell['name']} | {s['num_images']} | "
            + " | ".join(val("unguided", k) for k in METRIC_KEYS)
            + f" | {val('guided', 'fd')} | {val('guided', 'class_accuracy')} | {fmt_steps(s)} | "
            + fmt_metric(area["mean"], "fd", area["std"] if num_seeds > 1 else None)
            + " |"
        )
    return "\n".join(lines)


CONTRAST_LABELS = {
    "fd/unguided": "ΔFD",
    "kid_mean/unguided": "ΔKID",
    "precision/unguided": "Δprecision",
    "recall/unguided": "Δrecall",
    "class_accuracy/unguided": "Δclass acc.",
    "fd_log_area/unguided": "ΔFD over log-step",
    "fd/guided": "ΔFD (guided)",
    "class_accuracy/guided": "Δclass acc. (guided)",
}


def contrast_table(rows: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    keys = list(CONTRAST_LABELS)
    lines = [
        "| contrast | " + " | ".join(CONTRAST_LABELS[k] for k in keys) + " |",
        "|---" * (len(keys) + 1) + "|",
    ]
    for name, diff in rows:
        lines.append(f"| {name} | " + " | ".join(fmt_ci(diff[k], k.split("/")[0]) for k in keys) + " |")
    return "\n".join(lines)


def ablation_grid(cells: Mapping[str, Any], key: str, mode: str = "unguided") -> str:
    """Attach mode x selection (random, interval): mean ± std; ``—`` for an arm not run."""
    lines = ["| Attach | random | D2C interval |", "|---|---|---|"]
    for attach in ATTACH_MODES:
        suffix = "" if attach == "none" else f"+{attach}"
        values = []
        for strategy in ("random", "interval"):
            cell = cells.get(f"{strategy}{suffix}")
            s = cell["summary"][mode][key] if cell else None
            values.append(fmt_metric(s["mean"], key, s["std"]) if s else "—")
        lines.append(f"| {ATTACH_LABELS[attach]} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def calibration_table(rows: Sequence[Mapping[str, Any]]) -> str:
    lines = [
        "| step | FD random 10 % | FD full split | gap / pooled seed std | class acc. random 10 % | class acc. full |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        sep = "—" if r["separation"] is None else f"{r['separation']:.1f}"
        lines.append(
            f"| {r['step']} | {r['fd_random']:.3f} ± {r['fd_random_std']:.3f} | {r['fd_full']:.3f} ± "
            f"{r['fd_full_std']:.3f} | {sep} | {r['class_accuracy_random']:.3f} | {r['class_accuracy_full']:.3f} |"
        )
    return "\n".join(lines)


def regime_verdict(entry: Mapping[str, Any]) -> str:
    """The regime check (> 3 pooled seed std and full-data class accuracy >= 0.8), judged on the final
    evaluation (the arm tables' measurement: the mean over sampling seeds); the last checkpoint's single
    evaluation is printed beside it, since its extra evaluator noise can move the verdict."""
    final, last = entry.get("final"), entry["checkpoints"][-1]
    judged = final or last
    sep = judged["separation"]
    ok = sep is not None and sep > 3 and judged["class_accuracy_full"] >= 0.8
    sep_text = "—" if sep is None else f"{sep:.1f}"
    what = (
        f"the final evaluation (mean of {final['num_sampling_seeds']} sampling seeds, as in the arm tables)"
        if final
        else "the last checkpoint"
    )
    text = (
        f"On {what} the full split is ahead of random 10 % by {judged['fd_random'] - judged['fd_full']:.3f} FD "
        f"({judged['fd_random']:.3f} ± {judged['fd_random_std']:.3f} vs {judged['fd_full']:.3f} ± "
        f"{judged['fd_full_std']:.3f}), {sep_text} pooled seed standard deviations, and reaches class accuracy "
        f"{judged['class_accuracy_full']:.3f}: "
        + (
            "**the regime check passes** (> 3 std, >= 0.8)."
            if ok
            else "**the regime check fails** (needs > 3 std and >= 0.8)."
        )
    )
    if final and last["separation"] is not None:
        text += (
            f" On the last checkpoint's single evaluation (first sampling seed, the table above) the gap is "
            f"{last['separation']:.1f} std."
        )
    return text


def cut_from_grid(settings: Settings) -> list[str]:
    cut = []
    missing_budgets = [budget_label(b) for b in FULL_GRID["budgets"] if b not in settings.budgets]
    if missing_budgets:
        cut.append(f"budget {', '.join(missing_budgets)}")
    missing = [s for s in FULL_GRID["select"] if s not in settings.select]
    if missing:
        cut.append(f"Select arms {', '.join(missing)}")
    if not settings.attach_ablation:
        cut.append("the Attach ablation")
    else:
        missing = [ATTACH_LABELS[m] for m in ATTACH_MODES[1:] if m not in settings.attach_modes]
        missing += [
            f"Attach with {s} selection"
            for s in ("random", "interval")
            if s not in settings.attach_strategies
        ]
        if missing:
            cut.append(f"Attach ablation arms: {', '.join(missing)}")
    if len(settings.seeds) < FULL_GRID["seeds"]:
        cut.append(f"seeds ({len(settings.seeds)} instead of {FULL_GRID['seeds']})")
    return cut


def plot_curves_grid(path: Path, title: str, cells: Mapping[str, Any], keys: Sequence[str]) -> Path:
    """One panel per metric, one line per arm (mean over seeds, ± std band), log-step x axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRIC_KEYS), figsize=(4.2 * len(METRIC_KEYS), 4.6), squeeze=False)
    for ax, metric in zip(axes[0], METRIC_KEYS):
        for key in keys:
            curve = cells[key]["summary"]["curve"]
            steps = np.array([c["step"] for c in curve])
            mean = np.array([c[metric]["mean"] for c in curve])
            std = np.array([c[metric]["std"] for c in curve])
            style = {"linestyle": "--", "color": "black"} if key == "full" else {}
            if "+" in key:
                style = {
                    "linestyle": {"random_encoders": ":", "trained_encoders": "-", "class_constant": "-."}[
                        key.split("+")[1]
                    ]
                }
            (line,) = ax.plot(steps, mean, marker="o", ms=3, label=cells[key]["name"], **style)
            ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.12)
        _log_step_axis(ax)
        if metric in ("fd", "kid_mean"):
            ax.set_yscale("symlog", linthresh=0.01) if metric == "kid_mean" else ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_ylabel(METRIC_LABELS[metric])
        ax.grid(alpha=0.3, which="both")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(
        handles, labels, loc="lower center", ncol=min(4, max(1, len(labels))), fontsize=8, frameon=False
    )
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.05 * math.ceil(len(labels) / 4) + 0.02, 1, 1))
    return _save_figure(fig, path)


def _save_figure(fig: Any, path: Path) -> Path:
    """Write ``fig`` beside ``path`` and rename it into place (a reader never sees half a PNG); close it."""
    import matplotlib.pyplot as plt

    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _log_step_axis(ax: Any) -> None:
    """A log-scale step axis (call after plotting) labelled at 1-2-5 steps in plain numbers: matplotlib's
    default minor labels (4x10^2, 6x10^2, ...) overlap on a panel this narrow."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ax.set_xscale("log")
    low, high = ax.get_xlim()
    ticks = [m * 10**e for e in range(0, 8) for m in (1, 2, 5) if low <= m * 10**e <= high]
    ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())


def plot_calibration(path: Path, calibration_results: Mapping[str, Any]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    for width, entry in calibration_results.items():
        rows = entry["checkpoints"]
        steps = [r["step"] for r in rows]
        for which, style in (("random", ":"), ("full", "-")):
            mean = np.array([r[f"fd_{which}"] for r in rows])
            std = np.array([r[f"fd_{which}_std"] for r in rows])
            label = f"width {width}, {'random 10 %' if which == 'random' else 'full split'}"
            (line,) = axes[0].plot(steps, mean, style, marker="o", ms=3, label=label)
            axes[0].fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.12)
            axes[2].plot(
                steps, [r[f"class_accuracy_{which}"] for r in rows], style, marker="o", ms=3, label=label
            )
        axes[1].plot(steps, [r["separation"] or 0.0 for r in rows], marker="o", ms=3, label=f"width {width}")
    axes[1].axhline(3.0, color="grey", linestyle="--", linewidth=1)
    axes[2].axhline(0.8, color="grey", linestyle="--", linewidth=1)
    for ax, ylabel in zip(axes, ("FD ↓", "(FD random 10 % - FD full) / pooled seed std", "class acc. ↑")):
        _log_step_axis(ax)
        ax.set_xlabel("training step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    fig.suptitle("calibration: when does the full split beat a random 10 % subset?", fontsize=10)
    fig.tight_layout()
    return _save_figure(fig, path)


def _file_label(budget: float) -> str:
    return f"budget{budget * 100:g}pct".replace(".", "_")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def setup_lines(settings: Settings, prepared: Mapping[str, Any]) -> list[str]:
    sit = settings.sit
    rel = prepared["reliability"]
    probes = prepared["encoder_probes"]
    probe_rows = [
        f"| {name} | {p['dim']} | {p['linear_probe']:.3f} | {p['knn5']:.3f} |" for name, p in probes.items()
    ]
    return [
        "## Protocol",
        "",
        f"* **Data**: digits at {RESOLUTION} px; condense and train on the train split ({prepared['num_train']} "
        f"images); the reference is the test split ({prepared['num_test']} images), never trained on.",
        f"* **Model**: `{sit.model}` with `{json.dumps(dict(sit.model_config_overrides))}` ({PATCH_SIZE}x{PATCH_SIZE} "
        f"patches, {NUM_TOKENS} tokens, pixel space); {sit.max_train_steps} steps, batch {sit.train_batch_size}, AdamW "
        f"lr {sit.learning_rate}, EMA {sit.ema_decay}, class dropout 0.1. Attach runs add the DC-Embedding and the "
        f"REPA loss (lambda {sit.proj_coeff}, block {sit.encoder_depth}, projector {sit.projector_dim}).",
        f"* **Evaluation**: the EMA model at steps {settings.eval_steps()}; SDE Euler-Maruyama (REPA's sampler), "
        f"{sit.num_inference_steps} steps, {settings.samples_per_class} images per class "
        f"({settings.samples_per_class * 10} in all) from the same noise for every model. At the last step the "
        f"model is also sampled with a second noise seed (the table's final numbers are the mean of "
        f"{len(settings.sampling_seeds)} seeds) and with classifier-free guidance {settings.guidance_scale}. "
        "Curves, steps-to-threshold and the log-step area use the first sampling seed.",
        "* **Metrics**: FD and KID in the 64-d hidden space of an MLP digit classifier fitted on the real train "
        "split (`DigitsFeatureExtractor`: shares nothing with the scorer, the encoders or the SiT), precision/recall "
        "(k = 3), class acc. = that classifier's accuracy on the requested class.",
        f"* **Seeds** {list(settings.seeds)}: seed s fixes the selection, the batch order, the training noise and the "
        "initialisation, so arms are compared seed by seed. Arms with the same architecture (all arms without "
        "Attach; all Attach arms, whose encoders have the same widths) start from identical weights.",
        f"* **Scorer**: a DiT trained from scratch on the train split ({settings.scorer_steps} steps, batch "
        f"{settings.scorer_batch_size}); {settings.num_timesteps} timesteps x {settings.num_draws} noise draws per "
        "image, every timestep's loss z-scored over the split before averaging (`standardize_timesteps`). "
        f"**Split-half reliability of the score: {_fmt_rel(rel.get('reliability'))}** ({rel.get('method')}: even "
        f"against odd draws, within-class Spearman {_fmt_rel(rel.get('correlation'))}, Spearman-Brown corrected; "
        "`DifficultyScorer.reliability`). The gate of issue 12 asks for >= 0.8.",
        f"* **Encoders**: the class text is a tiny random T5 for every Attach arm (digit names carry no meaning). "
        "*random encoders*: a randomly initialised tiny DINOv2; *trained encoders*: the same architecture trained "
        f"self-supervised on every train image ({settings.encoder_steps} steps of "
        "`train_vision_encoder`: SimCLR on the mean patch token + SimMIM masked patches; labels never read), loaded "
        "by `VisualAttacher.from_pretrained` like a Hub checkpoint; *class-constant control*: one random array per "
        "class in place of each image's visual tokens and of the class text, same shapes, no encoder. herding and "
        "k-center select in the trained encoder's mean-patch-token space. What the feature spaces know about the "
        "classes (test accuracy, probes fitted on the train split):",
        "",
        "| feature space | dim | linear probe | 5-NN |",
        "|---|---|---|---|",
        *probe_rows,
        "",
        "* **Statistics**: mean ± std over seeds (ddof 1). Δ = arm - reference, paired by seed, mean with a "
        "percentile-bootstrap 95 % interval over seeds (10,000 resamples; with 4 seeds the interval is coarse); `*` "
        "marks intervals that exclude 0 (with at least two seeds). *Steps to random's final FD*: the median over seeds of the first step at "
        "which the arm's FD curve reaches random's final FD (mean over seeds, first sampling seed), interpolated in "
        "log-step. *FD over log-step*: the FD curve's area against log(step) divided by the log-step range (lower "
        "= better throughout training).",
        "",
    ]


def _fmt_rel(value: float | None) -> str:
    return "not computable" if value is None else f"{value:.3f}"


def write_report(output_dir: Path, settings: Settings, record: Mapping[str, Any]) -> Path:
    output_dir.mkdir(parents=True, exist_ok=True)
    results, prepared = record["results"], record["prepared"]
    name = "quality_digits_calibration" if settings.widths else "quality_digits"
    n_seeds = len(settings.seeds)
    lines = [
        "# Digits calibration: when does data matter?"
        if settings.widths
        else "# A fair test of D2C on the digits",
        "",
        "Produced by `benchmarks/quality_digits.py` (its docstring holds the protocol):",
        "",
        "```bash",
        record["command"],
        "```",
        "",
        f"Runtime: **{record['runtime_seconds'] / 60:.1f} min** wall clock for this invocation "
        f"({record['num_runs_executed']} of {record['num_runs']} runs trained now, the rest read from the cache; "
        f"preparation {prepared['seconds'] / 60:.1f} min when it ran), {record['jobs']} job(s) x "
        f"{record['threads_per_job']} thread(s) on {record['cpu_count']} CPU core(s) ({record['machine']}), "
        f"torch {record['torch']}. Sum of per-run times: {record['run_seconds_total'] / 60:.1f} min.",
        "",
    ]
    reading = output_dir / f"{name}_reading.md"
    if reading.is_file():
        lines += ["## Reading", "", reading.read_text().strip(), ""]
    cut = cut_from_grid(settings)
    if cut and not settings.widths:
        lines += [f"Not in this run (the issue's full grid has them): {'; '.join(cut)}.", ""]
    spread = results["evaluator_spread"]
    if settings.widths:
        lines += ["## Calibration", ""]
        for width, entry in results["calibration"].items():
            lines += [
                f"### width {width}",
                "",
                calibration_table(entry["checkpoints"]),
                "",
                regime_verdict(entry),
                "",
            ]
        lines += ["![calibration](quality_digits_calibration.png)", ""]
    else:
        for budget in settings.budgets:
            label = budget_label(budget)
            block = results["budgets"][label]
            cells = block["cells"]
            stride = record.get("interval_strides", {}).get(label)
            lines += [
                f"## Budget {label}" + (f" (interval stride k = {stride})" if stride else ""),
                "",
                f"Final metrics (mean ± std over {n_seeds} seeds; unguided unless marked). Random's final FD, the "
                f"threshold of the steps column: {block['threshold_fd']:.3f}.",
                "",
                main_table(cells, n_seeds),
                "",
                "Paired differences against random (arm - random, same seed), mean [95 % bootstrap interval]; for FD, "
                "KID and the log-step area negative is better, for the others positive:",
                "",
                contrast_table([(c["name"], c["vs_random"]) for k, c in cells.items() if "vs_random" in c]),
                "",
            ]
            if block["ablation"]:
                lines += [
                    "### The Attach ablation",
                    "",
                    "FD ↓ (unguided):",
                    "",
                    ablation_grid(cells, "fd"),
                    "",
                    "class acc. ↑ (unguided):",
                    "",
                    ablation_grid(cells, "class_accuracy"),
                    "",
                    "Paired contrasts:",
                    "",
                    contrast_table([(a["name"], a["difference"]) for a in block["ablation"]]),
                    "",
                ]
            lines += [f"![Select arms, budget {label}](quality_digits_{_file_label(budget)}_select.png)", ""]
            if settings.attach_ablation:
                lines += [
                    f"![Attach ablation, budget {label}](quality_digits_{_file_label(budget)}_attach.png)",
                    "",
                ]
        if "calibration" in results:
            entry = next(iter(results["calibration"].values()))
            rows = entry["checkpoints"]
            lines += [
                "## The regime check: does data matter here?",
                "",
                "The same table the calibration run prints, from this run's random 10 % and full-split arms:",
                "",
                calibration_table(rows),
                "",
                regime_verdict(entry),
                "",
            ]
    lines += [
        "## The evaluator's own spread",
        "",
        "The same final model sampled with two noise seeds: the standard deviation of one evaluation "
        "(sqrt of the mean squared half-difference over all runs). The tables average both seeds, so their "
        "evaluator noise is this divided by sqrt(2). Effects smaller than this are not resolved.",
        "",
        "| sampling | " + " | ".join(METRIC_LABELS[k] for k in METRIC_KEYS) + " |",
        "|---" * (len(METRIC_KEYS) + 1) + "|",
        *[
            f"| {mode} | " + " | ".join(fmt_metric(spread[mode][k], k) for k in METRIC_KEYS) + " |"
            for mode in ("unguided", "guided")
        ],
        "",
        "*Real-data floor*: "
        + ", ".join(f"{METRIC_LABELS[k]} {fmt_metric(record['real_reference'][k], k)}" for k in METRIC_KEYS)
        + f" for {settings.samples_per_class * 10} real training digits scored the same way (what a perfect "
        "generator would get at this sample size).",
        "",
        *setup_lines(settings, prepared),
        f"Raw numbers, per-seed values and curves: `{name}.json`.",
        "",
    ]
    path = output_dir / f"{name}.md"
    _write_atomic(path, "\n".join(lines))
    _write_atomic(output_dir / f"{name}.json", json.dumps(_jsonable(record), indent=1) + "\n")
    return path


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    return obj


def render(output_dir: Path, settings: Settings, record: Mapping[str, Any]) -> int:
    """Write the plots and the report from a run record, and print the report."""
    output_dir.mkdir(parents=True, exist_ok=True)
    results = record["results"]
    if settings.widths:
        plot_calibration(output_dir / "quality_digits_calibration.png", results["calibration"])
    else:
        for budget in settings.budgets:
            cells = results["budgets"][budget_label(budget)]["cells"]
            select_keys = [k for k in cells if "+" not in k]
            plot_curves_grid(
                output_dir / f"quality_digits_{_file_label(budget)}_select.png",
                f"digits, budget {budget_label(budget)}: Select arms (mean over seeds, band ± std)",
                cells,
                select_keys,
            )
            if settings.attach_ablation:
                attach_keys = [k for k in cells if "+" in k or k in ("random", "interval")]
                plot_curves_grid(
                    output_dir / f"quality_digits_{_file_label(budget)}_attach.png",
                    f"digits, budget {budget_label(budget)}: the Attach ablation (mean over seeds, band ± std)",
                    cells,
                    attach_keys,
                )
    path = write_report(output_dir, settings, record)
    print(path.read_text())
    return 0


# --------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke test (seconds; needs --output-dir)")
    parser.add_argument(
        "--calibrate", action="store_true", help="only random 10 %% vs full, at each --widths"
    )
    parser.add_argument("--widths", type=int, nargs="+", default=None, help="SiT widths (--calibrate)")
    parser.add_argument("--output-dir", default=None, help="where the report goes (default: docs/benchmarks)")
    parser.add_argument(
        "--work-dir",
        default=None,
        help="cache of prepared models and per-run results (default: ./quality_digits_work)",
    )
    parser.add_argument("--jobs", type=int, default=1, help="runs trained side by side")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per run (default: torch's own with one job, the cores shared out with several)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default: 0 1 2 3")
    parser.add_argument("--budgets", type=float, nargs="+", default=None, help="ratios, default: 0.1")
    parser.add_argument(
        "--select",
        nargs="+",
        default=None,
        choices=SELECT_STRATEGIES,
        help="Select arms (default: random interval herding)",
    )
    parser.add_argument("--no-ablation", action="store_true", help="skip the Attach ablation")
    parser.add_argument(
        "--attach-modes",
        nargs="+",
        default=None,
        choices=ATTACH_MODES[1:],
        help="the Attach ablation's modes (default: random_encoders trained_encoders class_constant)",
    )
    parser.add_argument("--no-full-data", action="store_true", help="skip the full-split reference")
    parser.add_argument("--steps", type=int, default=None, help="training steps per run")
    parser.add_argument("--width", type=int, default=None, help="SiT width (hidden size)")
    parser.add_argument("--train-script", default=None, help="path of a modified examples/train_sit.py")
    parser.add_argument("--report-from", default=None, metavar="JSON", help="only re-render a saved report")
    args = parser.parse_args(argv)
    if args.quick and args.output_dir is None and args.report_from is None:
        parser.error("--quick needs --output-dir (the default, docs/benchmarks, holds the full results)")
    if args.calibrate and not args.widths:
        parser.error("--calibrate needs --widths (e.g. --widths 64 96)")
    if args.widths and not args.calibrate:
        parser.error("--widths is for --calibrate; use --width for one run")
    for name in ("steps", "width", "jobs", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be >= 1")
    if args.width is not None and args.width % 4:
        parser.error("--width must be a multiple of 4 (4 attention heads)")
    if args.budgets is not None and not all(0 < b < 1 for b in args.budgets):
        parser.error(f"--budgets must be ratios in (0, 1), got {args.budgets}")
    if args.seeds is not None and any(s < 0 for s in args.seeds):
        parser.error("--seeds must be non-negative")
    return args


def settings_from_args(args: argparse.Namespace) -> Settings:
    settings = QUICK if args.quick else Settings()
    sit = settings.sit
    if args.steps is not None:
        sit = replace(sit, max_train_steps=args.steps, validation_steps=max(1, args.steps // 16))
    if args.width is not None:
        sit = replace(
            sit, model_config_overrides={**dict(sit.model_config_overrides), "hidden_size": args.width}
        )
    return replace(
        settings,
        sit=sit,
        seeds=tuple(args.seeds) if args.seeds else settings.seeds,
        budgets=tuple(args.budgets) if args.budgets else settings.budgets,
        select=tuple(args.select) if args.select else settings.select,
        attach_ablation=settings.attach_ablation and not args.no_ablation,
        attach_modes=tuple(args.attach_modes) if args.attach_modes else settings.attach_modes,
        full_data=settings.full_data and not args.no_full_data,
        widths=tuple(args.widths) if args.calibrate else (),
    )


def settings_from_json(saved: Mapping[str, Any]) -> Settings:
    fields = dict(saved)
    fields["sit"] = SiTSettings(**fields["sit"])
    for name in (
        "budgets",
        "seeds",
        "select",
        "attach_modes",
        "attach_strategies",
        "widths",
        "sampling_seeds",
    ):
        fields[name] = tuple(fields[name])
    return Settings(**fields)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    output_dir = Path(args.output_dir or Path(__file__).resolve().parents[1] / "docs" / "benchmarks")
    if args.report_from:
        saved = json.loads(Path(args.report_from).read_text())
        return render(output_dir, settings_from_json(saved["settings"]), saved)
    from d2c_hf.demo import train_script_command

    settings = settings_from_args(args)
    train_script_command(args.train_script)  # fail before any work if it is missing
    command = "python benchmarks/quality_digits.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    work = Path(args.work_dir or "quality_digits_work")
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    threads = torch.get_num_threads()
    if args.quick or args.threads:  # --quick's models are tiny: more threads only add overhead
        torch.set_num_threads(args.threads or 1)
    try:
        prepared = prepare(settings, work)
        cached_before = (
            {p.name for p in (work / "runs").glob("*.json")} if (work / "runs").is_dir() else set()
        )
        runs = run_all(settings, work, jobs=args.jobs, train_script=args.train_script, threads=args.threads)
        record = build_record(settings, runs, prepared, work)
        threads_per_job = torch.get_num_threads() if args.jobs == 1 else job_threads(args.jobs, args.threads)
    finally:
        torch.set_num_threads(threads)
    record.update(
        command=command.strip(),
        runtime_seconds=time.perf_counter() - started,
        num_runs=len(runs),
        num_runs_executed=sum(1 for r in runs if f"{r['tag']}.json" not in cached_before),
        jobs=args.jobs,
        threads_per_job=threads_per_job,
        cpu_count=os.cpu_count(),
        machine=platform.processor() or platform.machine(),
        torch=torch.__version__,
    )
    return render(output_dir, settings, record)


def build_record(
    settings: Settings, runs: Sequence[Mapping[str, Any]], prepared: Mapping[str, Any], work: Path
):
    """Everything the report shows: settings, the preparation record, every run, the analysis."""
    from datasets import load_from_disk

    from d2c_hf.data.digits import load_digits_dataset
    from d2c_hf.demo import DigitsQuality
    from d2c_hf.evaluation import DigitsFeatureExtractor
    from d2c_hf.selection.strategies import select

    digits = load_digits_dataset(image_size=RESOLUTION)
    quality = DigitsQuality(
        digits["train"],
        digits["test"],
        samples_per_class=settings.samples_per_class,
        num_inference_steps=1,
        extractor=DigitsFeatureExtractor.load(work / "prepared" / "digits_extractor.safetensors"),
    )
    real = quality.real_reference(digits["train"], seed=0)
    scored = load_from_disk(str(work / "prepared" / "scored"))
    strides = {}
    for budget in settings.budgets:
        result = select(
            np.asarray(scored["difficulty"]), np.asarray(scored["label"]), ratio=budget, strategy="interval"
        )
        strides[budget_label(budget)] = result.params.get("interval")
    return {
        "settings": asdict(settings),
        "prepared": dict(prepared),
        "real_reference": {k: real[k] for k in METRIC_KEYS},
        "interval_strides": strides,
        "runs": list(runs),
        "run_seconds_total": float(sum(r["seconds"] for r in runs)),
        "results": analyse(settings, runs),
    }


if __name__ == "__main__":
    sys.exit(main())
