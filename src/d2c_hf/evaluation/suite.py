"""One call that scores generated images against real ones, and the ``evaluate`` metric loader."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from .extractors import as_feature_extractor
from .images import ImagesArg, to_uint8_images
from .metrics import ShrinkageArg, as_features, feature_statistics, frechet_distance, kid, precision_recall

logger = logging.getLogger(__name__)

METRIC_DIR = Path(__file__).resolve().parent / "frechet_distance"


def evaluate_samples(
    fake_images: ImagesArg,
    real_images: ImagesArg | None,
    extractor: Any,
    *,
    real_features: Any = None,
    classifier: Any = None,
    requested_labels: Any = None,
    kid_subset_size: int | None = None,
    kid_num_subsets: int = 100,
    k: int = 3,
    shrinkage: ShrinkageArg = None,
    seed: int = 0,
) -> dict[str, float]:
    """Score generated images against real images in one feature space.

    Both sets go through ``extractor``; the result holds

    * ``"fd"``: Fréchet distance (FID when ``extractor`` is :class:`InceptionV3FeatureExtractor`);
    * ``"kid_mean"``, ``"kid_std"``: :func:`kid` (polynomial-kernel MMD², subset-averaged);
    * ``"precision"``, ``"recall"``: :func:`precision_recall` with ``k`` neighbours;
    * ``"class_accuracy"`` (when ``classifier`` is given): fraction of fake images the
      classifier assigns to their ``requested_labels``;
    * ``"num_fake"``, ``"num_real"``: sample counts (FD depends on them; report them).

    Args:
        fake_images: generated images (any :func:`to_uint8_images` input).
        real_images: real images, or ``None`` when ``real_features`` is given.
        extractor: a feature extractor or any callable (see :func:`as_feature_extractor`).
        real_features: precomputed ``(N, d)`` real features (reuse them across models).
        classifier: object with ``class_accuracy(images, labels)`` or ``predict(images)``, e.g.
            a fitted :class:`DigitsFeatureExtractor`.
        requested_labels: ``(N_fake,)`` class each fake image was generated for.
        kid_subset_size: ``None`` = ``min(1000, N_fake, N_real)``; larger values are capped
            with a warning.
        kid_num_subsets: KID subsets.
        k: precision/recall neighbourhood size.
        shrinkage: covariance shrinkage for FD (see :func:`feature_statistics`).
        seed: KID subset sampling seed.

    Returns:
        A flat ``dict`` of Python floats/ints.
    """
    if (real_images is None) == (real_features is None):
        raise ValueError("pass exactly one of real_images and real_features")
    if classifier is not None and requested_labels is None:
        raise ValueError(
            "classifier given without requested_labels: pass the class each fake image was generated for"
        )
    # decode and check everything before running any network
    fake = to_uint8_images(fake_images, name="fake_images")
    real = to_uint8_images(real_images, name="real_images") if real_images is not None else None
    if requested_labels is not None:
        requested_labels = np.asarray(requested_labels).reshape(-1)
        if len(requested_labels) != len(fake):
            raise ValueError(
                f"requested_labels has {len(requested_labels)} entries for {len(fake)} fake images"
            )
    extract = as_feature_extractor(extractor)

    fake_feats = as_features(extract(fake), "fake features", min_rows=2)
    real_feats = as_features(
        extract(real) if real is not None else real_features, "real features", min_rows=2
    )
    if fake_feats.shape[1] != real_feats.shape[1]:
        raise ValueError(
            f"fake features have {fake_feats.shape[1]} dimensions but real features {real_feats.shape[1]}; "
            "real_features must come from the same extractor"
        )
    n_fake, n_real = len(fake_feats), len(real_feats)
    subset = kid_subset_size if kid_subset_size is not None else min(1000, n_fake, n_real)
    fake_stats = feature_statistics(fake_feats, shrinkage=shrinkage, name="fake features")
    real_stats = feature_statistics(real_feats, shrinkage=shrinkage, name="real features")
    result: dict[str, float] = {"fd": frechet_distance(*fake_stats, *real_stats)}
    kid_result = kid(fake_feats, real_feats, num_subsets=kid_num_subsets, subset_size=subset, seed=seed)
    result["kid_mean"], result["kid_std"] = kid_result.mean, kid_result.std
    pr = precision_recall(real_feats, fake_feats, k=k)
    result["precision"], result["recall"] = pr.precision, pr.recall
    if classifier is not None:
        if hasattr(classifier, "class_accuracy"):
            result["class_accuracy"] = float(classifier.class_accuracy(fake, requested_labels))
        elif hasattr(classifier, "predict"):
            predicted = np.asarray(classifier.predict(fake)).reshape(-1)
            result["class_accuracy"] = float((predicted == requested_labels).mean())
        else:
            raise TypeError("classifier must have class_accuracy(images, labels) or predict(images)")
    result["num_fake"], result["num_real"] = n_fake, n_real
    logger.info("evaluate_samples: %s", {key: round(value, 5) for key, value in result.items()})
    return result


def load_fid_metric(**kwargs: Any):
    """``evaluate.load`` of the bundled Fréchet-distance metric module (works offline).

    The module takes feature rows (``predictions`` = generated, ``references`` = real) and
    returns ``{"frechet_distance": float}`` computed by :func:`fid_from_features`. It is
    loaded by absolute path, because ``evaluate.load`` treats a short relative path as a Hub
    id. ``kwargs`` go to ``evaluate.load`` (e.g. ``keep_in_memory=True``).
    """
    import evaluate

    script = METRIC_DIR / f"{METRIC_DIR.name}.py"
    if not script.is_file():
        raise FileNotFoundError(f"the metric module is missing from the installation: {script}")
    return evaluate.load(str(METRIC_DIR), **kwargs)
