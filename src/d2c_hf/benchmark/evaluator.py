"""The benchmark's evaluator: a feature space and a classifier fitted on the training split, and the
sampler that scores a trained ``SiTPipeline`` with them against the held-out reference.

Three kinds (:func:`build_evaluator`), all fitted on the *whole* training split and never on a subset,
so every arm is measured with the same ruler:

* ``"pixels"``: :class:`~d2c_hf.evaluation.probes.PixelMLPProbe`, an MLP classifier on the pixels
  area-resized to ``probe_size``; FD in its hidden layer, class accuracy from its predictions. It
  shares nothing with the scorer, the selection encoder or the SiT.
* ``"encoder"``: a tiny DINOv2 trained self-supervised on the training split
  (:func:`~d2c_hf.attach.train_encoder.train_vision_encoder`, seed 1; the selection encoder uses seed 0)
  for the features, and a :class:`~d2c_hf.evaluation.probes.LinearProbe` on them for class accuracy.
  Feature-based selectors select in a similar space: read their FD with that in mind.
* a folder: an encoder the user names (anything ``VisualAttacher.from_pretrained`` loads), its mean
  patch token as features, with a linear probe.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["EncoderFeatures", "SampleQuality", "build_evaluator", "load_evaluator"]

METRIC_KEYS = ("fd", "kid_mean", "precision", "recall", "class_accuracy")
_PIXELS_FILE = "pixel_probe.safetensors"
_LINEAR_FILE = "linear_probe.safetensors"
_ENCODER_DIR = "encoder"


class EncoderFeatures:
    """``images -> (N, d)``: the mean of an encoder's patch tokens, as ``VisualAttacher`` computes them
    (images at the benchmark's resolution, ``num_tokens`` tokens)."""

    def __init__(
        self, encoder: str | Path, *, num_tokens: int, resolution: int, batch_size: int = 256
    ) -> None:
        from ..attach.attachers import VisualAttacher

        self.attacher = VisualAttacher.from_pretrained(
            str(encoder), num_tokens=num_tokens, resolution=resolution
        )
        self.resolution = resolution
        self.batch_size = batch_size

    def __call__(self, images: Any) -> np.ndarray:
        from ..evaluation.images import to_uint8_images

        pixels = to_uint8_images(images, size=self.resolution)
        parts = [
            self.attacher.encode(pixels[i : i + self.batch_size]).mean(dim=1).numpy()
            for i in range(0, len(pixels), self.batch_size)
        ]
        return np.concatenate(parts).astype(np.float64)


class _Evaluator:
    def __init__(self, features: Any, classifier: Any, kind: str) -> None:
        self.features, self.classifier, self.kind = features, classifier, kind


def build_evaluator(
    kind: str,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    folder: Path,
    *,
    train_dataset: Any = None,
    probe_size: int,
    num_tokens: int,
    resolution: int,
    encoder_steps: int,
) -> dict[str, Any]:
    """Fit the evaluator of ``kind`` on the training images (``(N, R, R, 3)`` uint8) and save it under
    ``folder``; returns its record (kind, what it is, dimension, training accuracy)."""
    from ..evaluation.probes import LinearProbe, PixelMLPProbe

    folder.mkdir(parents=True, exist_ok=True)
    if kind == "pixels":
        probe = PixelMLPProbe(image_size=probe_size).fit(train_images, train_labels)
        probe.save(folder / _PIXELS_FILE)
        return {
            "kind": kind,
            "what": f"MLP classifier on {'grey' if probe.grey else 'colour'} pixels at {probe_size} px "
            f"({probe.hidden_size} hidden units), fitted on the training split",
            "dim": probe.hidden_size,
            "train_accuracy": float((probe.predict(train_images) == train_labels).mean()),
        }
    if kind == "encoder":
        from ..attach.train_encoder import train_vision_encoder

        train_vision_encoder(
            train_dataset,
            folder / _ENCODER_DIR,
            num_tokens=num_tokens,
            resolution=resolution,
            num_steps=encoder_steps,
            seed=1,
        )
        encoder, what = (
            folder / _ENCODER_DIR,
            f"tiny DINOv2 trained on the training split ({encoder_steps} steps, seed 1)",
        )
    else:
        encoder, what = Path(kind).expanduser(), f"encoder {kind}"
        if not encoder.is_dir():
            raise FileNotFoundError(f"evaluator {kind!r} is neither 'pixels', 'encoder' nor a folder")
    features = EncoderFeatures(encoder, num_tokens=num_tokens, resolution=resolution)
    train_features = features(train_images)
    probe = LinearProbe(features).fit_features(train_features, train_labels)
    probe.save(folder / _LINEAR_FILE)
    # a trained encoder is named relative to the folder (which is built under another name, then renamed)
    (folder / "encoder_path.txt").write_text(
        (_ENCODER_DIR if kind == "encoder" else str(encoder.resolve())) + "\n"
    )
    return {
        "kind": "encoder" if kind == "encoder" else "named encoder",
        "what": f"mean patch token of a {what}, with a logistic probe for class accuracy",
        "dim": int(train_features.shape[1]),
        "train_accuracy": float((probe.predict_features(train_features) == train_labels).mean()),
    }


def load_evaluator(folder: Path, *, num_tokens: int, resolution: int) -> _Evaluator:
    """The evaluator :func:`build_evaluator` saved under ``folder``."""
    from ..evaluation.probes import LinearProbe, PixelMLPProbe

    if (folder / _PIXELS_FILE).is_file():
        probe = PixelMLPProbe.load(folder / _PIXELS_FILE)
        return _Evaluator(probe, probe, "pixels")
    encoder = folder / (folder / "encoder_path.txt").read_text().strip()  # an absolute path stays as it is
    features = EncoderFeatures(encoder, num_tokens=num_tokens, resolution=resolution)
    return _Evaluator(features, LinearProbe.load(folder / _LINEAR_FILE, features), "encoder")


def class_allocation(reference_labels: np.ndarray, num_classes: int, total: int) -> np.ndarray:
    """``(C,)`` images to generate per class: ``total`` shared in proportion to the reference's class
    frequencies (largest remainders; ties to the lower class id), so the generated set has the
    reference's class mix."""
    counts = np.bincount(np.asarray(reference_labels, np.int64), minlength=num_classes).astype(np.float64)
    share = counts / counts.sum() * total
    alloc = np.floor(share).astype(np.int64)
    order = np.lexsort((np.arange(num_classes), -(share - alloc)))
    alloc[order[: total - int(alloc.sum())]] += 1
    return alloc


class SampleQuality:
    """Scores a ``SiTPipeline``: FD, KID, precision/recall (k = 3) in the evaluator's feature space against
    the reference images, and the classifier's accuracy on the requested class.

    ``samples_per_class * C`` images are generated, shared between classes as the reference's class
    frequencies (:func:`class_allocation`), from a fixed ``seed``: every model is sampled from the same
    noise. Calling it scores one sampling; :meth:`evaluate` another seed or guidance scale.
    """

    def __init__(
        self,
        evaluator: _Evaluator,
        reference_images: np.ndarray,
        reference_labels: np.ndarray,
        *,
        num_classes: int,
        samples_per_class: int,
        num_inference_steps: int,
        seed: int = 0,
        guidance_scale: float = 1.0,
        kid_num_subsets: int = 20,
    ) -> None:
        self.evaluator = evaluator
        self.real_features = evaluator.features(reference_images)
        alloc = class_allocation(reference_labels, num_classes, samples_per_class * num_classes)
        self.labels = np.repeat(np.arange(num_classes), alloc)
        self.num_inference_steps = num_inference_steps
        self.seed = seed
        self.guidance_scale = guidance_scale
        self.kid_num_subsets = kid_num_subsets

    def score_images(self, images: np.ndarray, labels: Sequence[int] | None = None) -> dict[str, float]:
        from ..evaluation import evaluate_samples

        labels = self.labels if labels is None else np.asarray(labels)
        return evaluate_samples(
            images,
            None,
            self.evaluator.features,
            real_features=self.real_features,
            classifier=self.evaluator.classifier,
            requested_labels=labels,
            kid_num_subsets=self.kid_num_subsets,
            seed=self.seed,
        )

    def evaluate(
        self, pipeline: Any, *, seed: int | None = None, guidance_scale: float | None = None
    ) -> dict[str, float]:
        from ..demo import sample_images

        images = sample_images(
            pipeline,
            self.labels,
            seed=self.seed if seed is None else seed,
            num_inference_steps=self.num_inference_steps,
            guidance_scale=self.guidance_scale if guidance_scale is None else guidance_scale,
        )
        return self.score_images(images)

    def __call__(self, pipeline: Any) -> dict[str, float]:
        return self.evaluate(pipeline)

    def real_reference(self, images: np.ndarray, labels: np.ndarray, seed: int = 0) -> dict[str, float]:
        """The metrics of real training images in the generated class mix (without replacement, at most a
        whole class): what a perfect generator scores at this sample size."""
        rng = np.random.default_rng(seed)
        per_class = np.bincount(self.labels, minlength=int(labels.max()) + 1)
        rows = np.concatenate(
            [
                rng.choice(np.flatnonzero(labels == c), size=min(n, int((labels == c).sum())), replace=False)
                for c, n in enumerate(per_class)
            ]
        )
        return self.score_images(images[rows], labels[rows])
