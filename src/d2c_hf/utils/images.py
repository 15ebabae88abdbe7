"""Image decoding and preprocessing: the one crop every model sees.

Everything that turns a user's images into model-ready pixels lives here, so the scorer, the attachers
and the training code all see the same crop of the same image. :func:`decode_image` / :func:`to_rgb` /
:func:`center_crop` implement the ADM ("center-crop-dhariwal") preprocessing used by DiT, SiT and REPA.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image as PILImage

logger = logging.getLogger(__name__)


def decode_image(value: Any, row: int | None = None) -> PILImage.Image:
    """Decode one image cell: a PIL image, a ``{"bytes", "path"}`` dict (``Image(decode=False)``),
    raw bytes, a path, or an ``(H, W[, C])`` uint8 array. Errors name the row."""
    where = f" at row {row}" if row is not None else ""
    if value is None:
        raise ValueError(f"missing image (None){where}")
    if isinstance(value, PILImage.Image):
        return value
    try:
        if isinstance(value, dict):
            if value.get("bytes") is not None:
                value = value["bytes"]
            elif value.get("path"):
                value = value["path"]
            else:
                raise ValueError("image dict has neither bytes nor path")
        if isinstance(value, (bytes, bytearray, memoryview)):
            image = PILImage.open(io.BytesIO(value))
        elif isinstance(value, str):
            image = PILImage.open(value)
        elif isinstance(value, np.ndarray):
            return PILImage.fromarray(value)
        else:
            raise TypeError(f"unsupported image value of type {type(value).__name__}")
        image.load()
    except Exception as err:  # PIL raises several types; re-raise with the row
        raise ValueError(f"could not decode the image{where}: {err}") from err
    return image


def to_rgb(image: PILImage.Image) -> PILImage.Image:
    """Convert any PIL mode to 8-bit RGB.

    Transparent images (RGBA, LA, P with transparency) are composited on white; 16/32-bit
    integer and float images (``I;16``, ``I``, ``F``) are rescaled from their value range
    instead of being clipped; CMYK/YCbCr/L/1 use PIL's own conversion.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = PILImage.new("RGBA", rgba.size, (255, 255, 255, 255))
        return PILImage.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        arr = np.asarray(image, dtype=np.float64)
        if mode.startswith("I;16"):
            lo, hi = 0.0, 65535.0
        else:
            lo, hi = float(arr.min()), float(arr.max())
        scaled = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo)
        gray = np.clip(np.rint(scaled * 255.0), 0, 255).astype(np.uint8)
        return PILImage.fromarray(gray, mode="L").convert("RGB")
    return image.convert("RGB")


def center_crop(image: PILImage.Image, resolution: int) -> np.ndarray:
    """ADM centre crop: halve with a box filter while the short side is >= 2x the target,
    resize (bicubic) so the short side equals ``resolution``, then crop the centre square.

    Returns an ``(resolution, resolution, 3)`` uint8 array. Smaller images are upsampled
    (bicubic) by the same rule; callers warn about it.
    """
    image = to_rgb(image)
    while min(image.size) >= 2 * resolution:
        image = image.resize(tuple(s // 2 for s in image.size), resample=PILImage.BOX)
    scale = resolution / min(image.size)
    image = image.resize(tuple(round(s * scale) for s in image.size), resample=PILImage.BICUBIC)
    arr = np.asarray(image)
    top = (arr.shape[0] - resolution) // 2
    left = (arr.shape[1] - resolution) // 2
    return arr[top : top + resolution, left : left + resolution]


def preprocess_images(
    values: Iterable[Any], resolution: int, rows: Sequence[int] | None = None
) -> tuple[np.ndarray, int]:
    """Decode and centre-crop a batch of image cells.

    Returns ``(pixels, n_upsampled)``: ``pixels`` is ``(B, resolution, resolution, 3)`` uint8,
    ``n_upsampled`` counts images whose short side was below ``resolution``.
    """
    out, upsampled = [], 0
    for i, value in enumerate(values):
        image = decode_image(value, None if rows is None else rows[i])
        if min(image.size) < resolution:
            upsampled += 1
        out.append(center_crop(image, resolution))
    if not out:
        return np.zeros((0, resolution, resolution, 3), np.uint8), 0
    return np.stack(out), upsampled


def dataset_pixels(
    dataset: Any, image_column: str, resolution: int, *, batch_size: int = 256, what: str = "dataset_pixels"
) -> np.ndarray:
    """Decode and centre-crop every image of a (small) ``datasets.Dataset``: ``(N, R, R, 3)`` uint8.

    For trainers that hold a whole dataset in memory (:func:`d2c_hf.train_scorer`,
    :func:`d2c_hf.train_vision_encoder`). Errors name the row; images smaller than ``resolution``
    are upsampled (bicubic) with one warning that starts with ``what``.
    """
    from datasets import Image

    feature = dataset.features[image_column]
    raw = dataset.cast_column(image_column, Image(decode=False)) if feature.decode else dataset
    raw = raw.select_columns([image_column]).with_format(None)
    out, upsampled = [], 0
    for start in range(0, len(raw), batch_size):
        rows = list(range(start, min(start + batch_size, len(raw))))
        pixels, n = preprocess_images(raw[start : start + batch_size][image_column], resolution, rows=rows)
        out.append(pixels)
        upsampled += n
    if upsampled:
        logger.warning(
            "%s: %d of %d images are smaller than %dpx and are upsampled (bicubic)",
            what,
            upsampled,
            len(raw),
            resolution,
        )
    if not out:
        return np.zeros((0, resolution, resolution, 3), np.uint8)
    return np.concatenate(out)


def first_image_side(dataset: Any, image_column: str) -> int:
    """The short side, in pixels, of the first image of ``dataset`` (a default training resolution)."""
    from datasets import Image

    feature = dataset.features[image_column]
    raw = dataset.cast_column(image_column, Image(decode=False)) if feature.decode else dataset
    return min(decode_image(raw[0][image_column], 0).size)


def pixels_to_tensor(pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``(B, H, W, 3)`` uint8 -> ``(B, 3, H, W)`` float32 in ``[-1, 1]`` (the VAE/model input range)."""
    x = torch.as_tensor(pixels)
    return x.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def tensor_to_pixels(x: torch.Tensor) -> np.ndarray:
    """``(B, 3, H, W)`` float in ``[-1, 1]`` -> ``(B, H, W, 3)`` uint8 (inverse of :func:`pixels_to_tensor`)."""
    x = ((x.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()
