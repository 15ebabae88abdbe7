"""Evaluate generated images: FID/FD, KID, precision/recall, Inception Score, class accuracy.

Everything works offline. Metrics take feature arrays (:mod:`.metrics`); feature extractors
turn images into features: the FID Inception-v3 from a local weights file (:mod:`.inception`),
an MLP fitted on the bundled digits (:mod:`.digits`), or any callable (:mod:`.extractors`).
:mod:`.adm` writes and reads ``.npz`` files for the standard ADM evaluator, and
:func:`evaluate_samples` runs the whole suite. See docs/evaluation.md.
"""

from .adm import ReferenceBatch, load_reference_npz, save_npz
from .digits import DigitsFeatureExtractor
from .extractors import CallableFeatureExtractor, FeatureExtractor, as_feature_extractor
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
from .suite import evaluate_samples, load_fid_metric

__all__ = [
    "CallableFeatureExtractor",
    "DigitsFeatureExtractor",
    "FIDInceptionV3",
    "FeatureExtractor",
    "InceptionScoreResult",
    "InceptionV3FeatureExtractor",
    "KIDResult",
    "PrecisionRecall",
    "ReferenceBatch",
    "UnreliableEstimateWarning",
    "as_feature_extractor",
    "evaluate_samples",
    "feature_statistics",
    "fid_from_features",
    "frechet_distance",
    "inception_score",
    "kid",
    "load_fid_metric",
    "load_reference_npz",
    "mmd2_unbiased",
    "precision_recall",
    "save_npz",
    "to_uint8_images",
]
