"""Evaluate generated images: FID/FD, KID, precision/recall, Inception Score, class accuracy, CLIP score.

Everything works offline. Metrics take feature arrays (:mod:`.metrics`); feature extractors
turn images into features: the FID Inception-v3 from a local weights file (:mod:`.inception`),
an MLP fitted on the bundled digits (:mod:`.digits`), or any callable (:mod:`.extractors`).
:mod:`.adm` writes and reads ``.npz`` files for the standard ADM evaluator (streaming, for 50K
samples), :func:`evaluate_samples` runs the whole suite on images in memory, and :mod:`.fid` (the
``d2c fid`` command) scores a sample ``.npz`` or folder against a reference batch the way papers
report FID-50K; :mod:`.clip_score` (``d2c clip-score``) scores text-to-image samples against their prompts with a
given CLIP model. :mod:`.comparison` compares training runs (paired bootstrap differences, steps to a
threshold, area under a metric-vs-log-step curve). See docs/evaluation.md.
"""

from .adm import (
    ReferenceBatch,
    iter_npz_images,
    load_reference_npz,
    npz_images_shape,
    save_npz,
    save_npz_batches,
)
from .clip_score import CLIPScore, evaluate_clip_score
from .comparison import (
    PairedDifference,
    bootstrap_mean_ci,
    log_step_area,
    paired_difference,
    separation,
    steps_to_reach,
)
from .digits import DigitsFeatureExtractor
from .extractors import CallableFeatureExtractor, FeatureExtractor, as_feature_extractor
from .fid import Reference, compute_metrics, open_reference
from .images import to_uint8_images
from .inception import FIDInceptionV3, InceptionV3FeatureExtractor
from .metrics import (
    InceptionScoreResult,
    KIDResult,
    PrecisionRecall,
    UnreliableEstimateWarning,
    feature_statistics,
    fid_from_features,
    frechet_distance,
    inception_score,
    kid,
    mmd2_unbiased,
    precision_recall,
)
from .sources import ImageSource, open_images
from .suite import evaluate_samples, load_fid_metric

__all__ = [
    "CLIPScore",
    "CallableFeatureExtractor",
    "DigitsFeatureExtractor",
    "FIDInceptionV3",
    "FeatureExtractor",
    "ImageSource",
    "InceptionScoreResult",
    "InceptionV3FeatureExtractor",
    "KIDResult",
    "PairedDifference",
    "PrecisionRecall",
    "Reference",
    "ReferenceBatch",
    "UnreliableEstimateWarning",
    "as_feature_extractor",
    "bootstrap_mean_ci",
    "compute_metrics",
    "evaluate_clip_score",
    "evaluate_samples",
    "feature_statistics",
    "fid_from_features",
    "frechet_distance",
    "inception_score",
    "iter_npz_images",
    "kid",
    "load_fid_metric",
    "load_reference_npz",
    "log_step_area",
    "mmd2_unbiased",
    "npz_images_shape",
    "open_images",
    "open_reference",
    "paired_difference",
    "precision_recall",
    "save_npz",
    "save_npz_batches",
    "separation",
    "steps_to_reach",
    "to_uint8_images",
]
