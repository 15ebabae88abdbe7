"""Feature spaces and classifiers fitted on a labelled dataset's real images, for scoring generated ones.

FD, KID and precision/recall need a feature space that knows the data; class accuracy needs a classifier.
When no pretrained network fits the data (a small or unusual dataset, offline), both can be fitted on the
real training images:

* :class:`PixelMLPProbe`: a one-hidden-layer MLP classifier (scikit-learn's ``MLPClassifier``) on the
  images area-resized to ``image_size`` px (grey or colour); features are its hidden ReLU activations,
  class accuracy its predictions. For the digits at ``image_size=8`` in grey it computes what
  :class:`~d2c_hf.evaluation.DigitsFeatureExtractor` computes, for any labelled images.
* :class:`LinearProbe`: a multinomial logistic regression on standardised features of any extractor
  (e.g. an encoder's mean patch token): ``probe.predict(images)`` for class accuracy.

Both are evaluated in numpy from their weights after fitting, and save to one ``.safetensors`` file
(weights + JSON settings, no pickle).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .digits import class_accuracy, fit_mlp
from .images import ImagesArg, to_uint8_images

logger = logging.getLogger(__name__)

__all__ = ["LinearProbe", "PixelMLPProbe"]

_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R 601-2, as PIL's "L" conversion
_PIXEL_FORMAT = "d2c_hf.PixelMLPProbe/1"
_LINEAR_FORMAT = "d2c_hf.LinearProbe/1"


def _check_labels(labels: Any, n: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"labels must be a 1-D sequence with one label per image ({n}), got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"labels must be integers, got dtype {y.dtype}")
    if len(np.unique(y)) < 2:
        raise ValueError("labels must contain at least two classes to fit a classifier")
    return y


def _save(path: str | os.PathLike, tensors: dict[str, np.ndarray], fmt: str, config: dict[str, Any]) -> Path:
    from safetensors.numpy import save_file

    path = Path(path)
    save_file(
        {k: np.ascontiguousarray(v) for k, v in tensors.items()},
        str(path),
        metadata={"format": fmt, "config": json.dumps(config)},
    )
    return path


def _load(path: str | os.PathLike, fmt: str, what: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    from safetensors import safe_open
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} file at {path}")
    with safe_open(str(path), framework="numpy") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("format") != fmt:
        raise ValueError(f"{path} was not written by {what}.save (format {metadata.get('format')!r})")
    return load_file(str(path)), json.loads(metadata["config"])


class _Classifier:
    """``class_accuracy`` from ``predict`` (shared by both probes)."""

    classes_: np.ndarray | None

    def predict(self, images: ImagesArg) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def class_accuracy(self, images: ImagesArg, requested_labels: Any) -> float:
        """Fraction of ``images`` that the classifier assigns to the class they were generated for."""
        return class_accuracy(self.predict, self.classes_, images, requested_labels)


class PixelMLPProbe(_Classifier):
    """Images -> hidden activations of an MLP classifier fitted on real images of the same data.

    Preprocessing: ``[0, 1]`` pixels (grey by ITU-R 601 luma when ``grey``, else the three channels) ->
    area-resize to ``image_size`` x ``image_size`` -> flatten. The classifier is
    ``softmax(W2 relu(W1 x + b1) + b2)``; features are ``relu(W1 x + b1)``.

    Args:
        image_size: side of the resized input.
        grey: use one luma channel (``None``: decided by :meth:`fit`, grey when every training image has
            equal channels).
        hidden_size: hidden units = feature dimension.
        alpha, max_iter, random_state: ``MLPClassifier``'s L2 penalty, Adam epochs and seed.
    """

    def __init__(
        self,
        image_size: int = 16,
        grey: bool | None = None,
        hidden_size: int = 64,
        alpha: float = 1e-4,
        max_iter: int = 1000,
        random_state: int = 0,
    ) -> None:
        if image_size < 1 or hidden_size < 1:
            raise ValueError(f"image_size and hidden_size must be >= 1, got {image_size}, {hidden_size}")
        self.image_size = int(image_size)
        self.grey = grey
        self.hidden_size = int(hidden_size)
        self.alpha = float(alpha)
        self.max_iter = int(max_iter)
        self.random_state = int(random_state)
        self.weights: dict[str, np.ndarray] | None = None
        self.classes_ = None

    def inputs(self, images: ImagesArg) -> np.ndarray:
        """``(N, channels * image_size**2)`` float64 pixels in ``[0, 1]``: the classifier's input."""
        pixels = to_uint8_images(images).astype(np.float64)
        if self.grey:
            x = torch.from_numpy((pixels @ _LUMA) / 255.0)[:, None]  # (N, 1, H, W)
        else:
            x = torch.from_numpy(pixels / 255.0).permute(0, 3, 1, 2)
        return F.adaptive_avg_pool2d(x, self.image_size).reshape(len(pixels), -1).numpy()

    def fit(self, images: ImagesArg, labels: Any) -> PixelMLPProbe:
        """Fit on real ``images`` with integer class ``labels``; returns ``self``."""
        pixels = to_uint8_images(images)
        y = _check_labels(labels, len(pixels))
        if self.grey is None:
            self.grey = bool(
                (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
            )
        x = self.inputs(pixels)
        self.weights, self.classes_, accuracy = fit_mlp(
            x, y, self.hidden_size, self.alpha, self.max_iter, self.random_state, "PixelMLPProbe"
        )
        logger.info(
            "PixelMLPProbe: fitted on %d images (%s, %d px), train accuracy %.3f",
            len(x),
            "grey" if self.grey else "colour",
            self.image_size,
            accuracy,
        )
        return self

    def _weights(self) -> dict[str, np.ndarray]:
        if self.weights is None:
            raise RuntimeError("PixelMLPProbe is not fitted: call .fit(images, labels) or .load(path)")
        return self.weights

    def __call__(self, images: ImagesArg) -> np.ndarray:
        """``(N, hidden_size)`` float64 hidden activations (the feature space)."""
        w = self._weights()
        return np.maximum(self.inputs(images) @ w["w1"] + w["b1"], 0.0)

    def predict_proba(self, images: ImagesArg) -> np.ndarray:
        w = self._weights()
        logits = self(images) @ w["w2"] + w["b2"]
        if logits.shape[1] == 1:  # binary MLPClassifier: one logistic output for classes_[1]
            p = 1.0 / (1.0 + np.exp(-logits[:, 0]))
            return np.stack([1.0 - p, p], axis=1)
        logits = logits - logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        return probs / probs.sum(axis=1, keepdims=True)

    def predict(self, images: ImagesArg) -> np.ndarray:
        return self.classes_[self.predict_proba(images).argmax(axis=1)]

    def save(self, path: str | os.PathLike) -> Path:
        config = {
            k: getattr(self, k)
            for k in ("image_size", "grey", "hidden_size", "alpha", "max_iter", "random_state")
        }
        return _save(path, {**self._weights(), "classes": self.classes_}, _PIXEL_FORMAT, config)

    @classmethod
    def load(cls, path: str | os.PathLike) -> PixelMLPProbe:
        tensors, config = _load(path, _PIXEL_FORMAT, "PixelMLPProbe")
        probe = cls(**config)
        probe.classes_ = tensors.pop("classes")
        probe.weights = tensors
        return probe

    def __repr__(self) -> str:
        state = "fitted" if self.weights is not None else "not fitted"
        return f"PixelMLPProbe(image_size={self.image_size}, grey={self.grey}, hidden_size={self.hidden_size}, {state})"


class LinearProbe(_Classifier):
    """A logistic-regression classifier on the standardised features of ``extractor``.

    ``extractor`` is any ``images -> (N, d)`` callable (it is not saved: pass it again to :meth:`load`).
    Fitting: features standardised by their training mean and standard deviation, then scikit-learn's
    ``LogisticRegression`` (L2, ``C``, lbfgs); prediction is the argmax of the linear scores.
    """

    def __init__(
        self, extractor: Callable[[ImagesArg], np.ndarray], C: float = 1.0, max_iter: int = 3000
    ) -> None:
        if not callable(extractor):
            raise TypeError(f"extractor must be callable, got {type(extractor).__name__}")
        self.extractor = extractor
        self.C = float(C)
        self.max_iter = int(max_iter)
        self.weights: dict[str, np.ndarray] | None = None
        self.classes_ = None

    def fit_features(self, features: np.ndarray, labels: Any) -> LinearProbe:
        """Fit on precomputed training ``features`` ``(N, d)`` (from the same extractor)."""
        from sklearn.linear_model import LogisticRegression

        x = np.asarray(features, dtype=np.float64)
        y = _check_labels(labels, len(x))
        mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
        model = LogisticRegression(C=self.C, max_iter=self.max_iter).fit((x - mean) / std, y)
        coef, bias = model.coef_, model.intercept_
        if coef.shape[0] == 1:  # binary: one score for classes_[1]
            coef, bias = np.concatenate([-coef, coef]) / 2, np.concatenate([-bias, bias]) / 2
        self.weights = {"mean": mean, "std": std, "coef": coef, "bias": bias}
        self.classes_ = np.asarray(model.classes_)
        logger.info(
            "LinearProbe: fitted on %d rows, train accuracy %.3f", len(x), model.score((x - mean) / std, y)
        )
        return self

    def fit(self, images: ImagesArg, labels: Any) -> LinearProbe:
        return self.fit_features(self.extractor(images), labels)

    def predict_features(self, features: np.ndarray) -> np.ndarray:
        if self.weights is None:
            raise RuntimeError(
                "LinearProbe is not fitted: call .fit(images, labels) or .load(path, extractor)"
            )
        w = self.weights
        scores = ((np.asarray(features, np.float64) - w["mean"]) / w["std"]) @ w["coef"].T + w["bias"]
        return self.classes_[scores.argmax(axis=1)]

    def predict(self, images: ImagesArg) -> np.ndarray:
        return self.predict_features(self.extractor(images))

    def save(self, path: str | os.PathLike) -> Path:
        if self.weights is None:
            raise RuntimeError("LinearProbe is not fitted")
        config = {"C": self.C, "max_iter": self.max_iter}
        return _save(path, {**self.weights, "classes": self.classes_}, _LINEAR_FORMAT, config)

    @classmethod
    def load(cls, path: str | os.PathLike, extractor: Callable[[ImagesArg], np.ndarray]) -> LinearProbe:
        tensors, config = _load(path, _LINEAR_FORMAT, "LinearProbe")
        probe = cls(extractor, **config)
        probe.classes_ = tensors.pop("classes")
        probe.weights = tensors
        return probe
