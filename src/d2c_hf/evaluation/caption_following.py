"""Do text-to-image samples follow their captions? A check on the captioned digits (``d2c demo --text``).

The captions of :func:`d2c_hf.data.captions.load_captioned_digits` name a digit, a stroke weight (the tertile of
the ink mass within the digit's class) and a slant (the tertile of the image-moment shear within the class), all
measurable on any image. For every prompt (the caption of a reference row: the test split) one image is sampled,
then measured with the same functions the captions were made with:

* ``class_accuracy``: the independent digit classifier (:class:`~d2c_hf.evaluation.DigitsFeatureExtractor`) sees
  the prompted digit (chance 0.1);
* ``weight_accuracy`` / ``slant_accuracy``: the sample's measured ink / slant falls in the prompted tertile of the
  *prompted* digit (chance 1/3: a model that draws the right digit in a random style scores 1/3);
* ``caption_accuracy``: all three at once (chance 1/90);
* ``ink_correlation`` / ``slant_correlation``: Pearson r between the sample's measurement and the prompt row's,
  both standardised within the prompted digit's class (so drawing the right digit alone scores ~0);
* ``fd``, ``kid_mean``, ``precision``, ``recall``: image quality against the reference images, in the digit
  classifier's feature space (:func:`~d2c_hf.evaluation.evaluate_samples`).

:meth:`CaptionFollowing.reference_scores` scores real images the same way: the reference rows' own images (what a
perfect generator scores) and real images of the right digit drawn at random (right digit, style ignored: the
level a model reaches without following the style words).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["CAPTION_METRICS", "CaptionFollowing"]

logger = logging.getLogger(__name__)

#: the metrics of :class:`CaptionFollowing`, in report order
CAPTION_METRICS = (
    "class_accuracy",
    "weight_accuracy",
    "slant_accuracy",
    "caption_accuracy",
    "ink_correlation",
    "slant_correlation",
    "fd",
)


def _within_class_z(values: np.ndarray, labels: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return (values - mean[labels]) / np.where(std[labels] > 0, std[labels], 1.0)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denominator = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denominator) if denominator > 0 else float("nan")


class CaptionFollowing:
    """Scores a text-conditioned ``SiTPipeline`` on the captioned digits (see the module docstring).

    Args:
        reference: a captioned digits split (``text``, ``label``, ``ink``, ``slant``, ``image``): its captions are
            the prompts, its images the quality reference.
        extractor: a fitted :class:`~d2c_hf.evaluation.DigitsFeatureExtractor` (features and classifier).
        image_size: the digits' size (the caption thresholds are the tertiles at this size).
        num_inference_steps, guidance_scale: sampling settings.
        seed: the sampling noise (every model is scored on the same noise).
        batch_size: prompts per pipeline call.
        kid_num_subsets: KID subsets.
    """

    def __init__(
        self,
        reference: Any,
        *,
        extractor: Any,
        image_size: int,
        num_inference_steps: int,
        guidance_scale: float = 1.0,
        seed: int = 0,
        batch_size: int = 512,
        kid_num_subsets: int = 20,
    ) -> None:
        from ..data.captions import attribute_words, caption_thresholds

        missing = [c for c in ("text", "label", "ink", "slant", "image") if c not in reference.column_names]
        if missing:
            raise ValueError(
                f"the reference split lacks {missing} (columns: {reference.column_names}); use "
                "d2c_hf.data.captions.load_captioned_digits"
            )
        self.extractor = extractor
        self.prompts = [str(t) for t in reference["text"]]
        self.labels = np.asarray(reference["label"], np.int64)
        self.ink = np.asarray(reference["ink"], np.float64)
        self.slant = np.asarray(reference["slant"], np.float64)
        self.thresholds = caption_thresholds(image_size)
        self.weight_words, self.slant_words = attribute_words(
            self.labels, self.ink, self.slant, self.thresholds
        )
        classes = int(self.labels.max()) + 1
        self.num_classes = classes
        self._stats = {
            name: (
                np.array([values[self.labels == c].mean() for c in range(classes)]),
                np.array([values[self.labels == c].std() for c in range(classes)]),
            )
            for name, values in (("ink", self.ink), ("slant", self.slant))
        }
        self.real_features = extractor(reference["image"])
        self._reference_images = reference["image"]
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = guidance_scale
        self.seed = seed
        self.batch_size = batch_size
        self.kid_num_subsets = kid_num_subsets

    def sample(
        self, pipeline: Any, prompts: Sequence[str] | None = None, *, seed: int | None = None
    ) -> np.ndarray:
        """One image per prompt (default: every reference caption), ``(N, H, W, 3)`` uint8, deterministic in ``seed``."""
        from .images import to_uint8_images

        prompts = self.prompts if prompts is None else list(prompts)
        generator = torch.Generator("cpu").manual_seed(int(self.seed if seed is None else seed))
        out = []
        for start in range(0, len(prompts), self.batch_size):
            images = pipeline(
                prompt=prompts[start : start + self.batch_size],
                num_inference_steps=self.num_inference_steps,
                guidance_scale=self.guidance_scale,
                generator=generator,
                output_type="np",
            ).images
            out.append(to_uint8_images(np.asarray(images, np.float32), value_range=(0.0, 1.0)))
        return np.concatenate(out)

    def score_images(self, images: Any) -> dict[str, float]:
        """The metrics of images generated for the reference captions, in order (see the module docstring)."""
        from ..data.captions import attribute_words, measure_digits
        from .images import to_uint8_images
        from .suite import evaluate_samples

        pixels = to_uint8_images(images)
        if len(pixels) != len(self.prompts):
            raise ValueError(
                f"got {len(pixels)} images for {len(self.prompts)} prompts; pass one per prompt, in order"
            )
        result = evaluate_samples(
            pixels,
            None,
            self.extractor,
            real_features=self.real_features,
            classifier=self.extractor,
            requested_labels=self.labels,
            kid_num_subsets=self.kid_num_subsets,
            seed=self.seed,
        )
        grey = pixels.astype(np.float64).mean(axis=-1) / 255.0
        ink, slant = measure_digits(grey)
        weights, slants = attribute_words(self.labels, ink, slant, self.thresholds)
        weight_ok = np.array(weights) == np.array(self.weight_words)
        slant_ok = np.array(slants) == np.array(self.slant_words)
        class_ok = np.asarray(self.extractor.predict(pixels)) == self.labels
        result.update(
            weight_accuracy=float(weight_ok.mean()),
            slant_accuracy=float(slant_ok.mean()),
            caption_accuracy=float((weight_ok & slant_ok & class_ok).mean()),
            ink_correlation=_pearson(
                _within_class_z(ink, self.labels, *self._stats["ink"]),
                _within_class_z(self.ink, self.labels, *self._stats["ink"]),
            ),
            slant_correlation=_pearson(
                _within_class_z(slant, self.labels, *self._stats["slant"]),
                _within_class_z(self.slant, self.labels, *self._stats["slant"]),
            ),
        )
        return result

    def __call__(self, pipeline: Any) -> dict[str, float]:
        return self.score_images(self.sample(pipeline))

    def reference_scores(self, pool: Any, seed: int = 0) -> dict[str, dict[str, float]]:
        """The metrics of real images: ``"captioned images"`` (each prompt's own image: a perfect generator) and
        ``"right digit, random style"`` (for each prompt, a random real image of the prompted digit from ``pool``,
        e.g. the training split: a model that follows the digit name only)."""
        from .images import to_uint8_images

        rng = np.random.default_rng(seed)
        pool_labels = np.asarray(pool["label"], np.int64)
        rows = np.array([rng.choice(np.flatnonzero(pool_labels == c)) for c in self.labels])
        return {
            "captioned images": self.score_images(to_uint8_images(self._reference_images)),
            "right digit, random style": self.score_images(
                to_uint8_images(pool.select(rows.tolist())["image"])
            ),
        }
