"""An offline feature space for the bundled digits: a small MLP classifier fitted on real digits.

FID needs a feature network trained on real data. For ImageNet that is Inception-v3; for the
bundled scikit-learn digits (8x8 greyscale, 10 classes), which Inception has never seen, this
module fits a one-hidden-layer MLP (scikit-learn's ``MLPClassifier``) on a real split and uses
its hidden ReLU activations as features. It shares nothing with the models D2C trains or
attaches (difficulty scorer, VAE, DINOv2, T5), so scores measured with it are not
self-confirming, and it doubles as the classifier for "class accuracy": how often a generated
image is recognised as the class it was requested for.

After fitting, the network is evaluated in numpy from its weights, which is also what
:meth:`DigitsFeatureExtractor.save` stores (safetensors + JSON metadata, no pickle).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .images import ImagesArg, to_uint8_images

logger = logging.getLogger(__name__)

_FORMAT = "d2c_hf.DigitsFeatureExtractor/1"
_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R 601-2, as PIL's "L" conversion


def fit_mlp(
    x: np.ndarray, y: np.ndarray, hidden_size: int, alpha: float, max_iter: int, random_state: int, who: str
) -> tuple[dict[str, np.ndarray], np.ndarray, float]:
    """Fit scikit-learn's one-hidden-layer ReLU ``MLPClassifier`` (Adam) on ``x`` -> ``y``; returns its weights
    (``w1``, ``b1``, ``w2``, ``b2``), its classes and the train accuracy. Not converging in ``max_iter`` epochs
    is a warning naming ``who``."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    mlp = MLPClassifier(
        hidden_layer_sizes=(hidden_size,),
        activation="relu",
        alpha=alpha,
        max_iter=max_iter,
        random_state=random_state,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        mlp.fit(x, y)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        logger.warning("%s: the MLP did not converge in %d epochs", who, max_iter)
    weights = {"w1": mlp.coefs_[0], "b1": mlp.intercepts_[0], "w2": mlp.coefs_[1], "b2": mlp.intercepts_[1]}
    return weights, np.asarray(mlp.classes_), float(mlp.score(x, y))


def class_accuracy(predict: Any, classes: np.ndarray, images: ImagesArg, requested_labels: Any) -> float:
    """Fraction of ``images`` that ``predict`` assigns to the class they were generated for; ``requested_labels``
    must be one per image and among ``classes``."""
    pixels = to_uint8_images(images)
    requested = np.asarray(requested_labels).reshape(-1)
    if len(requested) != len(pixels):
        raise ValueError(f"requested_labels has {len(requested)} entries for {len(pixels)} images")
    unknown = np.setdiff1d(requested, classes)
    if unknown.size:
        raise ValueError(
            f"requested_labels contains {unknown[:5].tolist()}, not among the classifier's classes {classes.tolist()}"
        )
    return float((predict(pixels) == requested).mean())


class DigitsFeatureExtractor:
    """Images -> hidden activations of an MLP digit classifier fitted on real images.

    Preprocessing (:meth:`inputs`): RGB -> grey (ITU-R 601 luma) -> ``[0, 1]`` -> area-resize to
    ``image_size`` x ``image_size`` (8 = the digits' native resolution) -> flatten. The
    classifier is ``softmax(W2 relu(W1 x + b1) + b2)``; features are ``relu(W1 x + b1)``.

    Args:
        hidden_size: hidden units = feature dimension.
        image_size: side of the resized greyscale input.
        alpha: L2 penalty of ``MLPClassifier``.
        max_iter: Adam epochs of ``MLPClassifier``.
        random_state: seeds the MLP's initialisation and shuffling (deterministic fits).

    Example::

        extractor = DigitsFeatureExtractor().fit(train["image"], train["label"])
        feats = extractor(test["image"])  # (N, 64) float64
        extractor.class_accuracy(generated_images, requested_labels)
    """

    def __init__(
        self,
        hidden_size: int = 64,
        image_size: int = 8,
        alpha: float = 1e-4,
        max_iter: int = 1000,
        random_state: int = 0,
    ):
        if hidden_size < 1 or image_size < 1:
            raise ValueError(f"hidden_size and image_size must be >= 1, got {hidden_size}, {image_size}")
        self.hidden_size = hidden_size
        self.image_size = image_size
        self.alpha = alpha
        self.max_iter = max_iter
        self.random_state = random_state
        self.weights: dict[str, np.ndarray] | None = None
        self.classes_: np.ndarray | None = None

    # ---- preprocessing -------------------------------------------------------------

    def inputs(self, images: ImagesArg) -> np.ndarray:
        """``(N, image_size**2)`` float64 grey pixels in ``[0, 1]``: the classifier's input."""
        pixels = to_uint8_images(images)
        grey = (pixels.astype(np.float64) @ _LUMA) / 255.0  # (N, H, W)
        resized = F.adaptive_avg_pool2d(torch.from_numpy(grey)[:, None], self.image_size)
        return resized.reshape(len(pixels), -1).numpy()

    # ---- fitting -------------------------------------------------------------------

    def fit(self, images: ImagesArg, labels: Any) -> DigitsFeatureExtractor:
        """Fit the MLP on real ``images`` with integer class ``labels``; returns ``self``."""
        x = self.inputs(images)
        y = np.asarray(list(labels) if not isinstance(labels, (np.ndarray, torch.Tensor)) else labels)
        if y.ndim != 1 or len(y) != len(x):
            raise ValueError(
                f"labels must be a 1-D sequence with one label per image ({len(x)}), got shape {y.shape}"
            )
        if not np.issubdtype(y.dtype, np.integer):
            raise TypeError(f"labels must be integers, got dtype {y.dtype}")
        if len(np.unique(y)) < 2:
            raise ValueError("labels must contain at least two classes to fit a classifier")
        self.weights, self.classes_, accuracy = fit_mlp(
            x, y, self.hidden_size, self.alpha, self.max_iter, self.random_state, "DigitsFeatureExtractor"
        )
        logger.info(
            "DigitsFeatureExtractor: fitted on %d images, %d classes, train accuracy %.3f",
            len(x),
            len(self.classes_),
            accuracy,
        )
        return self

    @classmethod
    def from_dataset(
        cls, dataset: Any, image_column: str = "image", label_column: str = "label", **kwargs: Any
    ) -> DigitsFeatureExtractor:
        """Fit on a ``datasets.Dataset`` (e.g. ``load_digits_dataset()["train"]``)."""
        for column in (image_column, label_column):
            if column not in dataset.column_names:
                raise ValueError(f"column {column!r} not in the dataset; available: {dataset.column_names}")
        return cls(**kwargs).fit(dataset[image_column], np.asarray(dataset[label_column]))

    # ---- inference -----------------------------------------------------------------

    def _require_fitted(self) -> dict[str, np.ndarray]:
        if self.weights is None:
            raise RuntimeError(
                "DigitsFeatureExtractor is not fitted: call .fit(images, labels) or .load(path)"
            )
        return self.weights

    def _hidden(self, x: np.ndarray) -> np.ndarray:
        w = self._require_fitted()
        return np.maximum(x @ w["w1"] + w["b1"], 0.0)

    def __call__(self, images: ImagesArg) -> np.ndarray:
        """``(N, hidden_size)`` float64 hidden activations (the feature space)."""
        self._require_fitted()
        return self._hidden(self.inputs(images))

    def predict_proba(self, images: ImagesArg) -> np.ndarray:
        """``(N, num_classes)`` class probabilities, columns in the order of ``classes_``."""
        w = self._require_fitted()
        logits = self._hidden(self.inputs(images)) @ w["w2"] + w["b2"]
        if logits.shape[1] == 1:  # binary MLPClassifier: one logistic output for classes_[1]
            p = 1.0 / (1.0 + np.exp(-logits[:, 0]))
            return np.stack([1.0 - p, p], axis=1)
        logits = logits - logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        return probs / probs.sum(axis=1, keepdims=True)

    def predict(self, images: ImagesArg) -> np.ndarray:
        """``(N,)`` predicted labels."""
        self._require_fitted()
        return self.classes_[self.predict_proba(images).argmax(axis=1)]

    def class_accuracy(self, images: ImagesArg, requested_labels: Any) -> float:
        """Fraction of ``images`` that the classifier assigns to the class they were generated for."""
        self._require_fitted()
        return class_accuracy(self.predict, self.classes_, images, requested_labels)

    # ---- persistence ---------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> Path:
        """Write the fitted weights and settings to one ``.safetensors`` file."""
        from safetensors.numpy import save

        from ..utils.files import atomic_write

        weights = self._require_fitted()
        path = Path(path)
        tensors = {name: np.ascontiguousarray(value) for name, value in weights.items()}
        tensors["classes"] = np.ascontiguousarray(self.classes_)
        config = {
            "hidden_size": self.hidden_size,
            "image_size": self.image_size,
            "alpha": self.alpha,
            "max_iter": self.max_iter,
            "random_state": self.random_state,
        }
        data = save(tensors, metadata={"format": _FORMAT, "config": json.dumps(config)})
        return atomic_write(path, lambda handle: handle.write(data))  # never a partial file under path

    @classmethod
    def load(cls, path: str | os.PathLike) -> DigitsFeatureExtractor:
        """Load a file written by :meth:`save`."""
        from safetensors import safe_open
        from safetensors.numpy import load_file

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no DigitsFeatureExtractor file at {path}")
        with safe_open(str(path), framework="numpy") as handle:
            metadata = handle.metadata() or {}
        if metadata.get("format") != _FORMAT:
            raise ValueError(
                f"{path} was not written by DigitsFeatureExtractor.save (format {metadata.get('format')!r})"
            )
        tensors = load_file(str(path))
        extractor = cls(**json.loads(metadata["config"]))
        extractor.classes_ = tensors.pop("classes")
        extractor.weights = tensors
        return extractor

    def __repr__(self) -> str:
        state = "fitted" if self.weights is not None else "not fitted"
        return f"{type(self).__name__}(hidden_size={self.hidden_size}, image_size={self.image_size}, {state})"
