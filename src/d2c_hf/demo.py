"""``d2c demo``: D2C end to end on scikit-learn's bundled digits, offline, in minutes on a CPU.

What it runs (every step is the library's public code path, at toy scale):

1. **Data**: :func:`d2c_hf.data.digits.load_digits_dataset` at 16 px (train split: 1,437 images to condense
   and train on; test split: 360 images, the reference for the metrics).
2. **Scorer**: :func:`d2c_hf.selection.scorer.train_scorer` trains a small class-conditional DiT from scratch in
   pixel space (the paper's "scorer trained from scratch" setting).
3. **Vision encoder**: :func:`d2c_hf.train_vision_encoder` trains a tiny DINOv2 self-supervised on all
   1,437 training images (labels unused): the analogue of the paper's DINOv2, which knows far more
   images than the condensed set holds. The class text encoder stays a **tiny, randomly initialised T5
   stand-in** (the Hub is offline; digit names carry no meaning to learn), recorded in the card's notes.
4. **Select + Attach**: :func:`d2c_hf.condensed.dataset.condense` scores every training image, keeps ~10 % by
   D2C interval sampling and attaches pixel-space "latents", the trained encoder's visual tokens and a
   T5 embedding per class prompt.
5. **Baselines**: a random subset of the same size with the same Attach (*Random + Attach*: what Select
   adds on top of Attach) and without Attach (the paper's *Random*).
6. **Train**: ``examples/train_sit.py`` trains the same small SiT with the same steps on each set; an
   evaluation callback scores the EMA model every ``validation_steps``.
7. **Evaluate**: sample grids (PNG), and Fréchet distance, KID, precision/recall and class accuracy in
   the independent :class:`~d2c_hf.evaluation.DigitsFeatureExtractor` space against the test split.
8. **Report**: ``metrics.md``/``metrics.json``, a metric-vs-step plot and a ``README.md`` saying what is
   where. The folder is built beside the target and renamed into place when complete.

The helpers (:func:`train_script_command`, :func:`build_stand_in_encoders`, :class:`DigitsQuality`,
:func:`train_sit_run`, ...) are shared with ``benchmarks/quality_digits.py``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .utils.files import json_round_trip, staged_dir

logger = logging.getLogger(__name__)

STAND_IN_NOTE = (
    "The text encoder (T5) is a tiny, randomly initialised stand-in built by `d2c demo` because the Hub is "
    "offline: its class embeddings carry no pretrained semantics (a fixed random code per class). The vision "
    "encoder is a tiny DINOv2 that `d2c demo` trained self-supervised on every training image "
    "(`train_vision_encoder`, labels unused). Use google/flan-t5-xl and facebook/dinov2-base for real data."
)
# words the stand-in T5 tokenizer knows as whole pieces (everything else falls back to characters)
_STAND_IN_VOCAB = "a photo of the digit zero one two three four five six seven eight nine".split()
METRIC_KEYS = ("fd", "kid_mean", "precision", "recall", "class_accuracy")
#: the demo's three training sets, and the folder / file stem of each one's run and grid
RUN_SLUGS = {"D2C": "d2c", "Random + Attach": "random_attach", "Random": "random"}
METRIC_LABELS = {
    "fd": "FD ↓",
    "kid_mean": "KID ↓",
    "precision": "precision ↑",
    "recall": "recall ↑",
    "class_accuracy": "class acc. ↑",
}


# --------------------------------------------------------------------------------------
# settings
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SiTSettings:
    """What ``examples/train_sit.py`` is told (one source of truth for the demo and the benchmark)."""

    model: str = "SiT-S/4"
    model_config_overrides: Mapping[str, Any] = field(
        default_factory=lambda: {"depth": 4, "hidden_size": 96, "num_attention_heads": 4}
    )
    encoder_depth: int = 2
    projector_dim: int = 256
    proj_coeff: float = 0.5
    train_batch_size: int = 64
    learning_rate: float = 1e-3
    max_train_steps: int = 1500
    ema_decay: float = 0.995
    validation_steps: int = 500
    num_inference_steps: int = 20

    def args(
        self,
        dataset: str | os.PathLike,
        output_dir: str | os.PathLike,
        *,
        use_text: bool,
        use_visual: bool,
        seed: int,
    ) -> list[str]:
        """Command-line arguments of ``train_sit.py`` for one run."""
        return [
            "--dataset", str(dataset),
            "--output_dir", str(output_dir),
            "--model", self.model,
            "--model_config_overrides", json.dumps(dict(self.model_config_overrides)),
            "--encoder_depth", str(self.encoder_depth),
            "--projector_dim", str(self.projector_dim),
            "--use_text" if use_text else "--no-use_text",
            "--use_visual" if use_visual else "--no-use_visual",
            "--proj_coeff", str(self.proj_coeff),
            "--train_batch_size", str(self.train_batch_size),
            "--learning_rate", str(self.learning_rate),
            "--max_train_steps", str(self.max_train_steps),
            "--ema_decay", str(self.ema_decay),
            "--validation_steps", str(self.validation_steps),
            "--num_inference_steps", str(self.num_inference_steps),
            "--checkpointing_steps", str(10 * self.max_train_steps),  # no mid-run checkpoints
            "--seed", str(seed),
            "--report_to", "none",
        ]  # fmt: skip


@dataclass(frozen=True)
class DemoSettings:
    """One demo mode. ``FULL`` is ``d2c demo``; ``QUICK`` is ``d2c demo --quick`` (the test suite)."""

    resolution: int = 16
    ratio: float = 0.1
    scorer_steps: int = 400
    scorer_batch_size: int = 64
    num_timesteps: int = 10
    # 6 draws per timestep, each timestep standardised: the demo's scorer then ranks each class with a
    # reliability of ~0.86 (docs/scoring.md, measured; one draw: ~0.42), for 60 forward passes per image
    num_draws: int = 6
    standardize_timesteps: bool = True
    sit: SiTSettings = field(default_factory=SiTSettings)
    samples_per_class: int = 36  # 360 generated images: the size of the test split
    grid_per_class: int = 10
    guidance_scale: float = 1.0
    encoder_steps: int = 600
    encoder_batch_size: int = 128


FULL = DemoSettings()
QUICK = DemoSettings(
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
    samples_per_class=7,  # 70 samples: more than the 64 feature dimensions
    grid_per_class=4,
)


# --------------------------------------------------------------------------------------
# shared helpers (also used by benchmarks/quality_digits.py)
# --------------------------------------------------------------------------------------


def train_script_command(path: str | os.PathLike | None = None) -> list[str]:
    """How to launch the training script: ``examples/train_sit.py`` as shipped in the package
    (``python -m d2c_hf.examples.train_sit``, so a wheel install runs the demo too), or a user's modified
    copy at ``path``. The library launches the script in a subprocess, as a user would; it never imports it.
    Raises ``FileNotFoundError`` naming a missing copy before any work starts."""
    if path is None:
        return [sys.executable, "-m", "d2c_hf.examples.train_sit"]
    candidate = Path(path).expanduser().resolve()
    if not candidate.is_file():
        raise FileNotFoundError(
            f"the training script {candidate} does not exist; pass a copy of examples/train_sit.py, or leave "
            "--train-script out to use the packaged one"
        )
    return [sys.executable, str(candidate)]


def build_stand_in_text_encoder(
    folder: str | os.PathLike,
    seed: int = 0,
    *,
    words: Sequence[str] = _STAND_IN_VOCAB,
    pieces: Sequence[str] = (),
) -> Path:
    """Build and ``save_pretrained`` a tiny random T5 encoder (+ tokenizer) in ``folder / "t5-stand-in"``.

    It stands in for google/flan-t5-xl when the Hub is offline: same classes and code paths, no pretrained
    semantics (a fixed random code per prompt). Weights are drawn from ``seed`` inside a forked RNG (the
    global RNG state is left untouched), so the same seed gives the same files. ``words`` are whole-word pieces
    of its tokenizer, ``pieces`` word-internal ones (``"-"``, ``","``); anything else falls back to characters.
    Returns the folder.
    """
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    t5_dir = Path(folder) / "t5-stand-in"
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(f"\u2581{w}", -1.0 - i * 0.01) for i, w in enumerate(words)]
    vocab += [(piece, -2.0) for piece in pieces]
    vocab += [(c, -10.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789\u2581"]
    t5_config = T5Config(
        vocab_size=len(vocab),
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=16,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        t5 = T5EncoderModel(t5_config).eval()
    t5.save_pretrained(t5_dir)
    T5Tokenizer(vocab=vocab, extra_ids=0).save_pretrained(t5_dir)
    return t5_dir


def build_stand_in_vision_encoder(folder: str | os.PathLike, seed: int = 0, num_tokens: int = 16) -> Path:
    """Build and ``save_pretrained`` a tiny random DINOv2 (+ DINOv2's image processor) in
    ``folder / "dinov2-stand-in"``: the architecture of :func:`d2c_hf.train_vision_encoder`'s
    (:data:`d2c_hf.attach.train_encoder.TINY_DINOV2`, ``num_tokens`` patch tokens at its native input size),
    untrained, so that "random encoder" and "trained encoder" differ only in their weights. Drawn from
    ``seed`` inside a forked RNG. Returns the folder.
    """
    from transformers import Dinov2Model

    from .attach.train_encoder import save_image_processor, tiny_dinov2

    dino_dir = Path(folder) / "dinov2-stand-in"
    config = tiny_dinov2(num_tokens)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        dino = Dinov2Model(config).eval()
    dino.save_pretrained(dino_dir)
    save_image_processor(dino_dir, int(config.image_size))
    return dino_dir


def build_stand_in_encoders(
    folder: str | os.PathLike, seed: int = 0, num_tokens: int = 16
) -> tuple[Path, Path]:
    """Both stand-ins: :func:`build_stand_in_text_encoder` and :func:`build_stand_in_vision_encoder`.

    Returns:
        ``(t5_folder, dinov2_folder)``.
    """
    return build_stand_in_text_encoder(folder, seed), build_stand_in_vision_encoder(folder, seed, num_tokens)


def to_uint8(images: Any) -> np.ndarray:
    """``SiTPipeline(output_type="np")`` images (``(B, H, W, C)`` in ``[0, 1]``) -> ``(B, H, W, 3)`` uint8."""
    arr = np.asarray(images, dtype=np.float32)
    arr = np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)
    return np.repeat(arr, 3, axis=-1) if arr.shape[-1] == 1 else arr


def sample_images(
    pipeline: Any,
    labels: Sequence[int],
    *,
    seed: int,
    num_inference_steps: int,
    guidance_scale: float = 1.0,
    batch_size: int = 512,
) -> np.ndarray:
    """Generate one image per label with a ``SiTPipeline``; ``(N, H, W, 3)`` uint8, deterministic in ``seed``."""
    generator = torch.Generator("cpu").manual_seed(int(seed))
    out = []
    for start in range(0, len(labels), batch_size):
        batch = [int(y) for y in labels[start : start + batch_size]]
        images = pipeline(
            class_labels=batch,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            generator=generator,
            output_type="np",
        ).images
        out.append(to_uint8(images))
    return np.concatenate(out)


GRID_TILE = 48  # pixels per grid cell (nearest-neighbour upscaling of the 16 px digits)
GRID_BORDER = 2  # grey frame around each cell, so neighbouring digits do not merge


def image_grid(images: np.ndarray, rows: int, cols: int, tile: int = GRID_TILE, border: int = GRID_BORDER):
    """Tile ``rows * cols`` uint8 images (row-major, one class per row) into a PIL image of
    ``(cols * (tile + 2 * border), rows * (tile + 2 * border))`` pixels."""
    from diffusers.utils import make_image_grid
    from PIL import Image, ImageOps

    if len(images) != rows * cols:
        raise ValueError(f"image_grid needs rows * cols = {rows * cols} images, got {len(images)}")
    tiles = [
        ImageOps.expand(
            Image.fromarray(img).resize((tile, tile), Image.NEAREST), border=border, fill=(96, 96, 96)
        )
        for img in images
    ]
    return make_image_grid(tiles, rows=rows, cols=cols)


class DigitsQuality:
    """Scores a ``SiTPipeline`` on the digits: Fréchet distance, KID, precision/recall (k=3) in the
    :class:`~d2c_hf.evaluation.DigitsFeatureExtractor` feature space (an MLP fitted on the real
    training digits, independent of every model D2C trains or attaches) against the test split, and
    the class accuracy of that classifier on the generated images.

    ``samples_per_class`` images are generated per class, with a fixed seed, so every model is scored
    on the same noise. KID averages ``kid_num_subsets`` subsets of the size of the smaller set (the
    360 test images); its cost grows linearly with the count.
    """

    def __init__(
        self,
        train: Any,
        test: Any,
        *,
        samples_per_class: int,
        num_inference_steps: int,
        guidance_scale: float = 1.0,
        seed: int = 0,
        extractor: Any = None,
        kid_num_subsets: int = 20,
    ) -> None:
        from .evaluation import DigitsFeatureExtractor

        # the evaluation feature space: fitted on ``train`` unless a fitted one is given
        self.extractor = DigitsFeatureExtractor.from_dataset(train) if extractor is None else extractor
        self.real_features = self.extractor(test["image"])
        self.num_classes = len(train.features["label"].names)
        self.labels = np.repeat(np.arange(self.num_classes), samples_per_class)
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = guidance_scale
        self.seed = seed
        self.kid_num_subsets = kid_num_subsets

    def sample(self, pipeline: Any, labels: Sequence[int] | None = None) -> np.ndarray:
        labels = self.labels if labels is None else labels
        return sample_images(
            pipeline,
            labels,
            seed=self.seed,
            num_inference_steps=self.num_inference_steps,
            guidance_scale=self.guidance_scale,
        )

    def score_images(self, images: np.ndarray, labels: Sequence[int] | None = None) -> dict[str, float]:
        from .evaluation import evaluate_samples

        labels = self.labels if labels is None else np.asarray(labels)
        return evaluate_samples(
            images,
            None,
            self.extractor,
            real_features=self.real_features,
            classifier=self.extractor,
            requested_labels=labels,
            kid_num_subsets=self.kid_num_subsets,
            seed=self.seed,
        )

    def __call__(self, pipeline: Any) -> dict[str, float]:
        return self.score_images(self.sample(pipeline))

    def evaluate(
        self, pipeline: Any, *, seed: int | None = None, guidance_scale: float | None = None
    ) -> dict[str, float]:
        """Like calling the evaluator, with another sampling ``seed`` and/or ``guidance_scale`` (CFG)."""
        images = sample_images(
            pipeline,
            self.labels,
            seed=self.seed if seed is None else seed,
            num_inference_steps=self.num_inference_steps,
            guidance_scale=self.guidance_scale if guidance_scale is None else guidance_scale,
        )
        return self.score_images(images)

    def real_reference(self, dataset: Any, seed: int = 0) -> dict[str, float]:
        """The metrics of as many *real* images (drawn per class from ``dataset``, e.g. the training
        split) as are generated: what a perfect generator would score at this sample size."""
        from .evaluation import to_uint8_images

        labels = np.asarray(dataset["label"])
        rng = np.random.default_rng(seed)
        per_class = np.bincount(self.labels, minlength=self.num_classes)
        rows = np.concatenate(
            [rng.choice(np.flatnonzero(labels == c), size=n, replace=False) for c, n in enumerate(per_class)]
        )
        return self.score_images(to_uint8_images(dataset.select(rows.tolist())["image"]), labels[rows])


def selection_montage(
    dataset: Any,
    scores: np.ndarray,
    labels: np.ndarray,
    images_per_class: int,
    path: str | os.PathLike,
    *,
    seed: int,
    per_class: int = 6,
) -> Path:
    """Min / D2C interval / Max side by side: for every class (one row each), ``per_class`` of the
    images each strategy keeps at the same budget, easiest to hardest. Min keeps only the easiest
    (plain, redundant), Max only the hardest (odd, often mislabelled-looking), interval spans the
    whole difficulty range. Saved as a PNG; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .selection.strategies import select

    num_classes = int(labels.max()) + 1
    columns = []
    for strategy in ("min", "interval", "max"):
        kept = select(scores, labels, images_per_class=images_per_class, strategy=strategy, seed=seed).indices
        rows = []
        for c in range(num_classes):
            members = kept[labels[kept] == c]
            members = members[np.argsort(scores[members], kind="stable")]  # easiest -> hardest
            take = np.linspace(0, len(members) - 1, num=min(per_class, len(members))).round().astype(int)
            picked = members[take]
            rows.append(np.concatenate([picked, np.full(per_class - len(picked), -1)]))
        columns.append((strategy, np.concatenate(rows)))
    blank = np.zeros_like(_real_images(dataset.select([0]))[0])
    fig, axes = plt.subplots(1, 3, figsize=(3 * per_class * 0.55 + 1, num_classes * 0.55 + 0.8))
    for ax, (strategy, order) in zip(axes, columns):
        valid = order[order >= 0]
        images = dict(zip(valid.tolist(), _real_images(dataset.select(valid.tolist()))))
        tiles = np.stack([images[i] if i >= 0 else blank for i in order.tolist()])
        ax.imshow(np.asarray(image_grid(tiles, num_classes, per_class, tile=32)))
        ax.set_title({"min": "Min (easiest)", "interval": "D2C interval", "max": "Max (hardest)"}[strategy])
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].set_ylabel("one row per class, easiest -> hardest left to right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100, format="png", metadata={"Software": None})
    plt.close(fig)
    return path


def train_sit_run(
    dataset_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    settings: SiTSettings,
    *,
    use_text: bool,
    use_visual: bool,
    seed: int,
    quality: DigitsQuality | None = None,
    train_script: str | os.PathLike | None = None,
    evaluate_at: Collection[int] | None = None,
) -> dict[str, Any]:
    """Train a SiT with ``examples/train_sit.py`` (launched in a subprocess with this process's torch thread
    count) on a condensed set; score the EMA pipeline of every validation step with ``quality`` (only at the
    steps in ``evaluate_at`` and the last one, if given).

    The script saves each validation step's pipeline (``--save_validation_pipelines``); they are scored here
    once the training has finished, then removed.

    Returns the script's result (``output_dir``, ``pipeline_dir``, ``global_step``, ``final_loss``,
    ``samples``) plus ``"curve"``: ``[{"step": s, **metrics}, ...]`` (empty without ``quality``),
    ``"train_seconds"`` and ``"eval_seconds"`` (the part of it spent scoring).
    """
    import shutil
    import subprocess

    from .train.checkpoints import VALIDATION_DIR

    argv = settings.args(dataset_dir, output_dir, use_text=use_text, use_visual=use_visual, seed=seed)
    if quality is not None:
        argv.append("--save_validation_pipelines")
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    start = time.perf_counter()
    done = subprocess.run(
        [*train_script_command(train_script), *argv], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise RuntimeError(
            f"examples/train_sit.py failed (exit code {done.returncode}) for {output_dir}:\n{tail}"
        )
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    result: dict[str, Any] = json.loads(lines[-1])
    result["pipeline_dir"] = result["output_dir"]
    curve: list[dict[str, float]] = []
    eval_seconds = 0.0
    folder = Path(output_dir) / VALIDATION_DIR
    if quality is not None:
        wanted = None if evaluate_at is None else {int(s) for s in evaluate_at} | {settings.max_train_steps}
        for path in sorted(folder.glob("step-*")):
            step = int(path.name.removeprefix("step-"))
            if wanted is not None and step not in wanted:
                continue
            begin = time.perf_counter()
            metrics = quality(load_pipeline(path))
            curve.append({"step": step, **metrics})
            eval_seconds += time.perf_counter() - begin
            logger.info(
                "step %d: %s (%.1fs)",
                step,
                ", ".join(f"{k}={metrics[k]:.4g}" for k in METRIC_KEYS),
                time.perf_counter() - begin,
            )
        shutil.rmtree(folder, ignore_errors=True)
    result["train_seconds"] = time.perf_counter() - start
    result["eval_seconds"] = eval_seconds
    result["curve"] = curve
    return result


def load_pipeline(pipeline_dir: str | os.PathLike):
    """``SiTPipeline.from_pretrained`` on CPU, in eval mode."""
    from .pipelines.sit.pipeline_sit import SiTPipeline

    pipeline = SiTPipeline.from_pretrained(str(pipeline_dir))
    pipeline.set_progress_bar_config(disable=True)
    pipeline.transformer.eval()
    return pipeline


def fmt_metric(value: float | None, key: str, spread: float | None = None) -> str:
    """A metric as table text (``—`` for missing/non-finite values), optionally ``mean ± std``."""
    if value is None or not math.isfinite(value):
        return "—"
    digits = {"fd": 3, "kid_mean": 4}.get(key, 3)
    text = f"{value:.{digits}f}"
    if spread is not None and math.isfinite(spread):
        text += f" ± {spread:.{digits}f}"
    return text


def plot_curves(
    curves: Mapping[str, Sequence[Mapping[str, float]]],
    path: str | os.PathLike,
    *,
    title: str,
    keys: Sequence[str] = ("fd", "class_accuracy"),
    spreads: Mapping[str, Sequence[Mapping[str, float]]] | None = None,
    styles: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """Metric vs training step, one line per run (optional ± bands from ``spreads``), saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, axes = plt.subplots(1, len(keys), figsize=(5.2 * len(keys), 4.2 + 0.25 * len(curves)), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for name, curve in curves.items():
            if not curve:
                continue
            steps = np.array([c["step"] for c in curve])
            values = np.array([c[key] for c in curve], dtype=float)
            (line,) = ax.plot(
                steps, values, marker="o", ms=3, label=name, **dict((styles or {}).get(name, {}))
            )
            if spreads is not None and spreads.get(name):
                band = np.array([c[key] for c in spreads[name]], dtype=float)
                ax.fill_between(steps, values - band, values + band, color=line.get_color(), alpha=0.15)
        ax.set_xlabel("training step")
        ax.set_ylabel(METRIC_LABELS.get(key, key))
        if key == "fd":
            ax.set_yscale("log")  # FD falls by orders of magnitude early in training
        ax.grid(alpha=0.3, which="both")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(
        handles, labels, loc="lower center", ncol=min(3, max(1, len(labels))), fontsize=8, frameon=False
    )
    fig.suptitle(title, fontsize=10)
    rows_of_legend = math.ceil(len(labels) / 3)
    fig.tight_layout(rect=(0, 0.06 * rows_of_legend, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def check_output_dir(path: Path, overwrite: bool) -> None:
    """Refuse an existing non-empty folder (or a file) unless ``overwrite``; never replace a file."""
    if path.exists():
        if not path.is_dir():
            raise FileExistsError(f"--output-dir {path} exists and is not a folder; choose another path")
        if any(path.iterdir()) and not overwrite:
            raise FileExistsError(
                f"--output-dir {path} exists and is not empty; pass --overwrite to replace it or choose another path"
            )


# --------------------------------------------------------------------------------------
# the demo
# --------------------------------------------------------------------------------------


def run_demo(
    output: Path,
    settings: DemoSettings = FULL,
    *,
    seed: int = 0,
    train_script: str | os.PathLike | None = None,
    quick: bool = False,
) -> dict[str, Any]:
    """Run the demo into a staging folder beside ``output`` and move it into place when complete.

    Returns the metrics record (also written to ``metrics.json``) with ``"table"`` (Markdown).
    """
    with staged_dir(output, "the demo output") as staging:
        record = _run_demo(staging, settings, seed=seed, train_script=train_script, quick=quick)
    return record


def _run_demo(
    out: Path,
    settings: DemoSettings,
    *,
    seed: int,
    train_script: str | os.PathLike | None,
    quick: bool,
) -> dict[str, Any]:
    from .attach.train_encoder import train_vision_encoder
    from .data.digits import load_digits_dataset
    from .run.condense import condense
    from .selection.train_scorer import train_scorer

    timings: dict[str, float] = {}
    t_total = time.perf_counter()

    def stage(name: str, started: float) -> None:
        timings[name] = time.perf_counter() - started
        logger.info("demo: %s done in %.1f s", name, timings[name])

    # 1. data ---------------------------------------------------------------------------------------
    t = time.perf_counter()
    digits = load_digits_dataset(image_size=settings.resolution)
    train, test = digits["train"], digits["test"]
    logger.info(
        "demo: digits at %d px: %d train / %d test images", settings.resolution, len(train), len(test)
    )
    quality = DigitsQuality(
        train,
        test,
        samples_per_class=settings.samples_per_class,
        num_inference_steps=settings.sit.num_inference_steps,
        guidance_scale=settings.guidance_scale,
        seed=seed,
    )
    models = out / "models"
    models.mkdir()
    quality.extractor.save(models / "digits_extractor.safetensors")
    patch_size = _patch_size(settings.sit)
    t5_dir = build_stand_in_text_encoder(models, seed=seed)
    stage("data and evaluator", t)

    # the vision encoder: self-supervised on every training image; its patch grid = the SiT token grid ------
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

    # 2. scorer -------------------------------------------------------------------------------------
    t = time.perf_counter()
    scorer_dir = train_scorer(
        train,
        models / "scorer",
        resolution=settings.resolution,
        num_steps=settings.scorer_steps,
        batch_size=settings.scorer_batch_size,
        seed=seed,
    )
    stage("scorer", t)

    # 3. Select + Attach ---------------------------------------------------------------------------------
    t = time.perf_counter()
    condensed = condense(
        train,
        ratio=settings.ratio,
        scorer=scorer_dir,
        vae=None,
        text_encoder=t5_dir,
        vision_encoder=dino_dir,
        strategy="interval",
        resolution=settings.resolution,
        patch_size=patch_size,
        num_timesteps=settings.num_timesteps,
        num_draws=settings.num_draws,
        standardize_timesteps=settings.standardize_timesteps,
        prompt_template="a photo of the digit {}",
        seed=seed,
        notes=[
            STAND_IN_NOTE,
            "Made by `d2c demo` (pixel space, 16 px digits, scorer and vision encoder trained from scratch).",
        ],
    )
    condensed.save_to_disk(out / "condensed")
    ipc = int(condensed.info["budget"]["images_per_class"])
    source_index = np.asarray(condensed.scores["source_index"], np.int64)  # every training row, once
    difficulty, labels = np.empty(len(train), np.float32), np.empty(len(train), np.int64)
    difficulty[source_index] = condensed.scores["difficulty"]
    labels[source_index] = condensed.scores["label"]
    selection_montage(
        train,
        difficulty,
        labels,
        ipc,
        out / "selection.png",
        seed=seed,
    )
    stage("condense", t)

    # 4. the random baselines of the same size: with the same Attach, and plain ------------------------------
    t = time.perf_counter()
    random_attach = condense(
        train,
        images_per_class=ipc,
        scorer=None,
        vae=None,
        text_encoder=t5_dir,
        vision_encoder=dino_dir,
        strategy="random",
        resolution=settings.resolution,
        patch_size=patch_size,
        prompt_template="a photo of the digit {}",
        seed=seed,
        notes=[
            STAND_IN_NOTE,
            "Random + Attach baseline of `d2c demo`: same size and Attach as the D2C set, no Select.",
        ],
    )
    random_attach.save_to_disk(out / "random_attach", card=False)
    random_subset = condense(
        train,
        images_per_class=ipc,
        scorer=None,
        vae=None,
        strategy="random",
        attach=("latents",),
        resolution=settings.resolution,
        patch_size=patch_size,
        seed=seed,
        notes=["Random baseline of `d2c demo`: same size as the D2C set, no Select, no Attach."],
    )
    random_subset.save_to_disk(out / "random_subset", card=False)
    stage("random subsets", t)

    # 5. training --------------------------------------------------------------------------------------
    runs: dict[str, dict[str, Any]] = {}
    for name, folder, attach in (
        ("D2C", "condensed", True),
        ("Random + Attach", "random_attach", True),
        ("Random", "random_subset", False),
    ):
        t = time.perf_counter()
        logger.info("demo: training the SiT on the %s set (%d steps)", name, settings.sit.max_train_steps)
        runs[name] = train_sit_run(
            out / folder,
            out / "runs" / RUN_SLUGS[name],
            settings.sit,
            use_text=attach,
            use_visual=attach,
            seed=seed,
            quality=quality,
            train_script=train_script,
        )
        stage(f"train {name}", t)

    # 6. grids + final metrics (from the saved pipelines: what a user loads) --------------------------------
    t = time.perf_counter()
    grids = out / "grids"
    grids.mkdir()
    rows, cols = quality.num_classes, settings.grid_per_class
    grid_labels = np.repeat(np.arange(rows), cols)
    real = _real_grid_images(test, cols)
    image_grid(real, rows, cols).save(grids / "real.png")
    metrics: dict[str, dict[str, float]] = {}
    for name, run in runs.items():
        pipeline = load_pipeline(run["pipeline_dir"])  # what a user loads: checks the saved pipeline
        images = sample_images(
            pipeline,
            grid_labels,
            seed=seed + 1,
            num_inference_steps=settings.sit.num_inference_steps,
            guidance_scale=settings.guidance_scale,
        )
        image_grid(images, rows, cols).save(grids / f"{RUN_SLUGS[name]}.png")
        metrics[name] = dict(run["curve"][-1])  # the EMA model after the last step
    real_metrics = quality.real_reference(train, seed=seed)
    plot_curves(
        {name: run["curve"] for name, run in runs.items()},
        out / "curves.png",
        title=f"digits, {len(condensed)} training images, metrics on {len(quality.labels)} samples vs the test split",
    )
    stage("evaluate", t)
    timings["total"] = time.perf_counter() - t_total

    # 7. report ----------------------------------------------------------------------------------------
    table = _metrics_table(metrics, real_metrics)
    record = {
        "mode": "quick" if quick else "full",
        "seed": seed,
        "settings": json_round_trip(asdict(settings)),
        "condensed_size": len(condensed),
        "images_per_class": ipc,
        "interval": condensed.info["selection"].get("interval"),
        "reliability": condensed.info["scoring"].get("reliability"),
        "num_train": len(train),
        "num_test": len(test),
        "num_generated": len(quality.labels),
        "metrics": metrics,
        "real_reference": real_metrics,
        "curves": {name: run["curve"] for name, run in runs.items()},
        "final_loss": {name: run.get("final_loss") for name, run in runs.items()},
        "pipelines": {
            name: Path(os.path.relpath(run["pipeline_dir"], out)).as_posix() for name, run in runs.items()
        },
        "timings": timings,
        "torch_threads": torch.get_num_threads(),
    }
    (out / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / "metrics.md").write_text(table + "\n")
    (out / "README.md").write_text(_readme(record, table, condensed, settings, out))
    return {**record, "table": table}


def _estimator(settings: DemoSettings) -> str:
    text = f"{settings.num_timesteps} timesteps x {settings.num_draws} noise draw{'s' if settings.num_draws > 1 else ''}"
    if settings.standardize_timesteps:
        text += ", each timestep standardised over the data"
    return text


def _reliability(record: Mapping[str, Any]) -> str:
    """The README's reliability clause: the figure, and what it means."""
    rel = record.get("reliability") or {}
    if rel.get("reliability") is None:
        return "reliability not measured"
    return (
        f"**score reliability {rel['reliability']:.2f}** ({rel['method']}: how well two independent estimates "
        "rank the images of a class alike; see docs/scoring.md)"
    )


def _patch_size(sit: SiTSettings) -> int:
    from .models.transformer_sit import SIT_PRESETS

    return int(sit.model_config_overrides.get("patch_size", SIT_PRESETS[sit.model]["patch_size"]))


def _real_images(dataset: Any) -> np.ndarray:
    from .evaluation import to_uint8_images

    return to_uint8_images(dataset["image"])


def _real_grid_images(test: Any, per_class: int) -> np.ndarray:
    labels = np.asarray(test["label"])
    rows = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(int(labels.max()) + 1)])
    return _real_images(test.select(rows.tolist()))


def _metrics_table(metrics: Mapping[str, Mapping[str, float]], real: Mapping[str, float]) -> str:
    header = "| training set | " + " | ".join(METRIC_LABELS[k] for k in METRIC_KEYS) + " |"
    lines = [header, "|---" * (len(METRIC_KEYS) + 1) + "|"]
    for name, values in metrics.items():
        lines.append(f"| {name} | " + " | ".join(fmt_metric(values.get(k), k) for k in METRIC_KEYS) + " |")
    lines.append(
        "| *real training digits (reference)* | "
        + " | ".join(fmt_metric(real.get(k), k) for k in METRIC_KEYS)
        + " |"
    )
    return "\n".join(lines)


def _readme(record: Mapping[str, Any], table: str, condensed: Any, settings: DemoSettings, out: Path) -> str:
    from .condensed.card import FIGURES

    sit = settings.sit
    figures = [
        f"condensed/figures/{name}"
        for name in FIGURES.values()
        if (out / "condensed/figures" / name).is_file()
    ]
    timing_rows = "\n".join(f"| {k} | {v:.1f} |" for k, v in record["timings"].items())
    mode = (
        "`d2c demo --quick` (smoke-test settings: the pictures are noise)"
        if record["mode"] == "quick"
        else "`d2c demo`"
    )
    lines = [
        "# D2C demo on the bundled digits",
        "",
        f"Made by {mode} with seed {record['seed']}, offline, on {record['torch_threads']} CPU thread(s) "
        f"in {record['timings']['total']:.0f} s.",
        "",
        "## What happened",
        "",
        f"1. scikit-learn's digits at {settings.resolution} px: {record['num_train']} training images "
        f"(condensed and trained on), {record['num_test']} test images (the metrics' reference).",
        f"2. A class-conditional DiT scorer was trained from scratch in pixel space ({settings.scorer_steps} steps): "
        "`models/scorer/`.",
        f"3. A tiny DINOv2 was trained self-supervised on all {record['num_train']} training images "
        f"({settings.encoder_steps} steps of `train_vision_encoder`: SimCLR + masked patches, labels unused): "
        "`models/dinov2-trained/`. It plays the part of the paper's DINOv2, which has seen far more images than "
        "the condensed set holds.",
        f"4. **Select**: every training image was scored (difficulty = mean denoising loss over "
        f"{_estimator(settings)}; {_reliability(record)}) and D2C interval sampling kept {record['images_per_class']} "
        "images "
        f"per class (stride {record['interval']}), {record['condensed_size']} in all (~{settings.ratio:.0%}). "
        "**Attach**: pixel-space latents, the trained DINOv2's visual tokens and a T5 embedding of each class "
        f"prompt. {STAND_IN_NOTE}",
        f"5. Two baselines of {record['condensed_size']} images drawn at random ({record['images_per_class']} per "
        "class): **Random + Attach** (the same Attach, no Select: the difference to D2C is what Select adds) and "
        "**Random** (no Select, no Attach: the paper's *Random*).",
        f"6. The same SiT ({sit.model} with overrides `{json.dumps(dict(sit.model_config_overrides))}`) was "
        f"trained on each set with `examples/train_sit.py` for {sit.max_train_steps} steps (batch "
        f"{sit.train_batch_size}, lr {sit.learning_rate}, EMA {sit.ema_decay}, seed {record['seed']} for all "
        f"three; the Attach runs add the DC-Embedding and the REPA projection loss, lambda {sit.proj_coeff}).",
        f"7. Each EMA model generated {record['num_generated']} images ({settings.samples_per_class} per class, "
        f"{sit.num_inference_steps} steps of REPA's SDE Euler-Maruyama sampler, guidance {settings.guidance_scale}); "
        "they were scored "
        "against the test split in the feature space of an MLP digit classifier fitted on the real training "
        "digits (`models/digits_extractor.safetensors`), which shares nothing with the models above.",
        "",
        "## Metrics",
        "",
        table,
        "",
        "FD (Fréchet distance) and KID (kernel distance, unbiased), both in the digit classifier's 64-d "
        "feature space, lower is better; precision/recall: k-NN manifolds (k = 3); class acc.: how often the classifier "
        "recognises the requested digit. The last row scores as many real training digits as were generated "
        "against the same test split: what a perfect generator would score at this sample size. `metrics.json` holds every number, the "
        "metric-vs-step curves and the timings.",
        "",
        "This is one seed of one small setting. D2C against Random + Attach shows what Select adds, Random + Attach "
        "against Random what Attach adds; which of these differences survive several seeds, a calibrated training "
        "regime and the controls (random encoders, a class-constant condition) is what the project's benchmark "
        "`docs/benchmarks/quality_digits.md` measures.",
        "",
        "![metrics vs training step](curves.png)",
        "",
        "## Samples (one row per digit, 0-9)",
        "",
        "| real test digits | D2C | Random + Attach | Random |",
        "|---|---|---|---|",
        "| ![real](grids/real.png) | ![D2C](grids/d2c.png) | ![Random + Attach](grids/random_attach.png) | "
        "![Random](grids/random.png) |",
        "",
        "## What Select keeps",
        "",
        f"At the same budget ({record['images_per_class']} per class), the easiest images (Min), D2C's interval "
        "picks and the hardest images (Max), from the scores of `models/scorer/`; rows are classes, easiest to "
        "hardest left to right:",
        "",
        "![Min / interval / Max](selection.png)",
        "",
        "## The condensed dataset",
        "",
        "`condensed/` is a `CondensedDataset` folder; its card is [`condensed/README.md`](condensed/README.md). "
        'Load it with `CondensedDataset.load("condensed")` or describe it with `d2c info condensed`.',
        "",
        *[f"![{Path(f).stem}]({f})" for f in figures],
        "",
        "## What is where",
        "",
        "| path | contents |",
        "|---|---|",
        "| `README.md` | this page |",
        "| `metrics.md`, `metrics.json` | the metrics table; all numbers, curves, settings and timings |",
        "| `curves.png` | FD and class accuracy vs training step for the three runs |",
        "| `selection.png` | what Min, D2C interval and Max keep at the same budget, per class |",
        "| `grids/real.png`, `grids/d2c.png`, `grids/random_attach.png`, `grids/random.png` | sample grids, one "
        "row per class |",
        "| `condensed/` | the D2C condensed set (Select + Attach) with its card and figures |",
        "| `random_attach/` | the Random + Attach set (random subset, same Attach) |",
        "| `random_subset/` | the Random set (latents only) |",
        "| `runs/d2c/`, `runs/random_attach/`, `runs/random/` | training outputs of `examples/train_sit.py`; each "
        "folder is the final `SiTPipeline` (EMA weights) |",
        "| `models/scorer/` | the difficulty scorer (`DifficultyScorer.from_pretrained`) |",
        "| `models/dinov2-trained/` | the vision encoder the demo trained (`VisualAttacher.from_pretrained`) |",
        "| `models/t5-stand-in/` | the random stand-in text encoder |",
        "| `models/digits_extractor.safetensors` | the evaluation feature extractor / classifier |",
        "",
        "## Timings (seconds)",
        "",
        "| stage | s |",
        "|---|---|",
        timing_rows,
        "",
        "Sample from a trained model:",
        "",
        "```python",
        "from d2c_hf import SiTPipeline",
        "",
        f'pipe = SiTPipeline.from_pretrained("{record["pipelines"]["D2C"]}")  # inside this folder',
        'images = pipe(class_labels=["seven", 3], num_inference_steps=20).images',
        "```",
        "",
    ]
    return "\n".join(lines)
