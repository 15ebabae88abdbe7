"""Feature extractors: the common interface, and a wrapper for any ``images -> features`` callable.

An extractor is any object with ``__call__(images) -> (N, d) array`` that accepts every input
of :func:`to_uint8_images` (PIL lists, uint8 arrays, float tensors).
:class:`InceptionV3FeatureExtractor` and :class:`DigitsFeatureExtractor` are extractors;
:func:`as_feature_extractor` turns a plain function or an ``nn.Module`` into one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch

from ..utils.images import pixels_to_tensor
from .images import ImagesArg, to_uint8_images
from .metrics import as_features

InputFormat = Literal["uint8", "tensor", "raw"]


@runtime_checkable
class FeatureExtractor(Protocol):
    """``extractor(images) -> (N, d)`` features for any :func:`to_uint8_images` input."""

    def __call__(self, images: ImagesArg) -> np.ndarray: ...


class CallableFeatureExtractor:
    """Wrap a callable ``batch -> features`` as a feature extractor.

    The wrapper normalises the images with :func:`to_uint8_images`, feeds them to ``fn`` in
    batches in the chosen format, and checks that ``fn`` returns one finite feature row per
    image.

    Args:
        fn: the callable; may return a numpy array or a torch tensor ``(B, d)`` (extra
            trailing dimensions are flattened, e.g. ``(B, d, 1, 1)`` pooled maps).
        input_format: what ``fn`` receives:

            * ``"uint8"``: ``(B, H, W, 3)`` uint8 numpy array;
            * ``"tensor"``: ``(B, 3, H, W)`` float32 tensor in ``[-1, 1]`` on ``device``
              (called under ``torch.no_grad()``);
            * ``"raw"``: the ``images`` argument unchanged, in one call (no batching).
        batch_size: images per call (``None`` = all at once).
        device: device for ``"tensor"`` input (default CPU).
        size: resize all images to this size first (see :func:`to_uint8_images`).
    """

    def __init__(
        self,
        fn: Callable[[Any], Any],
        *,
        input_format: InputFormat = "uint8",
        batch_size: int | None = 256,
        device: str | torch.device | None = None,
        size: int | tuple[int, int] | None = None,
    ):
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        if input_format not in ("uint8", "tensor", "raw"):
            raise ValueError(f"input_format must be 'uint8', 'tensor' or 'raw', got {input_format!r}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None, got {batch_size}")
        self.fn = fn
        self.input_format = input_format
        self.batch_size = batch_size
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.size = size

    def _run(self, batch: Any, expected_rows: int | None) -> np.ndarray:
        out = self.fn(batch)
        if isinstance(out, torch.Tensor):
            out = out.detach().float().cpu().numpy()
        out = np.asarray(out)
        if out.ndim > 2:
            out = out.reshape(out.shape[0], -1)
        features = as_features(out, "extractor output")
        if expected_rows is not None and features.shape[0] != expected_rows:
            raise ValueError(
                f"the feature extractor returned {features.shape[0]} rows for a batch of {expected_rows} images; "
                "it must return one (d,) feature vector per image"
            )
        return features

    def __call__(self, images: ImagesArg) -> np.ndarray:
        """``(N, d)`` float64 features."""
        if self.input_format == "raw":
            return self._run(images, None)
        pixels = to_uint8_images(images, size=self.size)
        step = self.batch_size or len(pixels)
        parts = []
        for start in range(0, len(pixels), step):
            batch = pixels[start : start + step]
            if self.input_format == "tensor":
                with torch.no_grad():
                    parts.append(self._run(pixels_to_tensor(batch).to(self.device), len(batch)))
            else:
                parts.append(self._run(batch, len(batch)))
        return np.concatenate(parts)

    def __repr__(self) -> str:
        name = getattr(self.fn, "__name__", type(self.fn).__name__)
        return (
            f"{type(self).__name__}({name}, input_format={self.input_format!r}, batch_size={self.batch_size})"
        )


def as_feature_extractor(extractor: Any) -> Callable[[ImagesArg], np.ndarray]:
    """Return ``extractor`` if it is one of ours, else wrap it in :class:`CallableFeatureExtractor`.

    An ``nn.Module`` is called with ``(B, 3, H, W)`` float tensors in ``[-1, 1]`` on its own
    device (``input_format="tensor"``); any other callable with ``(B, H, W, 3)`` uint8 arrays.
    Wrap it yourself to choose another format.
    """
    from .digits import DigitsFeatureExtractor
    from .inception import InceptionV3FeatureExtractor

    if isinstance(extractor, (CallableFeatureExtractor, DigitsFeatureExtractor, InceptionV3FeatureExtractor)):
        return extractor
    if isinstance(extractor, torch.nn.Module):
        param = next(extractor.parameters(), None)
        device = param.device if param is not None else None
        return CallableFeatureExtractor(extractor, input_format="tensor", device=device)
    if callable(extractor):
        return CallableFeatureExtractor(extractor)
    raise TypeError(
        f"extractor must be a feature extractor or a callable images -> (N, d) features, got "
        f"{type(extractor).__name__}"
    )
