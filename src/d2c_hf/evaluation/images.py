"""One entry point that turns any batch of images into ``(N, H, W, 3)`` uint8 pixels.

Metrics are computed on what an image *looks like*, so every extractor first maps its input
to 8-bit RGB, the format the ADM evaluator reads from ``.npz`` files and the one a PNG holds.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from PIL import Image as PILImage

from ..utils.images import decode_image, to_rgb

ImagesArg = Any  # PIL images, uint8/float arrays, float tensors, or a sequence of single images


def _size_tuple(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        size = (size, size)
    if len(size) != 2 or any(int(s) < 1 for s in size):
        raise ValueError(f"size must be a positive int or an (height, width) pair, got {size!r}")
    return int(size[0]), int(size[1])


def _channels_last(arr: np.ndarray, channels_first_preferred: bool, what: str) -> np.ndarray:
    """``(N, H, W, C)`` or ``(N, C, H, W)`` -> ``(N, H, W, C)``, C in {1, 3}."""
    if arr.ndim == 3:
        raise ValueError(
            f"{what} has shape {arr.shape}: a 3-D batch is ambiguous. Pass (N, H, W, 1) for greyscale "
            "images, or add the batch axis (x[None]) for a single image."
        )
    if arr.ndim != 4:
        raise ValueError(
            f"{what} must be a 4-D image batch (N, H, W, C) or (N, C, H, W), got shape {arr.shape}"
        )
    first_ok, last_ok = arr.shape[1] in (1, 3), arr.shape[-1] in (1, 3)
    if first_ok and (channels_first_preferred or not last_ok):
        return np.moveaxis(arr, 1, -1)
    if last_ok:
        return arr
    channels = arr.shape[1] if channels_first_preferred else arr.shape[-1]
    hint = " (RGBA? drop the alpha channel or convert to RGB)" if 4 in (arr.shape[1], arr.shape[-1]) else ""
    raise ValueError(
        f"{what} has shape {arr.shape}: expected 1 (greyscale) or 3 (RGB) channels, found {channels}{hint}"
    )


def _float_to_uint8(arr: np.ndarray, value_range: tuple[float, float] | None, what: str) -> np.ndarray:
    if value_range is None:
        value_range = (-1.0, 1.0) if arr.min() < 0 else (0.0, 1.0)
    low, high = (float(v) for v in value_range)
    if not high > low:
        raise ValueError(f"value_range must be (low, high) with high > low, got {value_range}")
    tol = 1e-3 * (high - low)
    bad = np.flatnonzero(((arr < low - tol) | (arr > high + tol)).reshape(arr.shape[0], -1).any(axis=1))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"{what}: image {i} has values in [{arr[i].min():.4g}, {arr[i].max():.4g}], outside value_range "
            f"({low:g}, {high:g}). Float images must lie in [-1, 1] or [0, 1]; pass value_range= explicitly "
            "for another range."
        )
    scaled = (arr.astype(np.float64) - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _array_batch_to_uint8(
    arr: np.ndarray, channels_first_preferred: bool, value_range: tuple[float, float] | None, what: str
) -> np.ndarray:
    arr = _channels_last(arr, channels_first_preferred, what)
    if arr.shape[0] == 0:
        raise ValueError(f"{what} is empty: no images to evaluate")
    if arr.dtype == np.uint8:
        out = arr
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            i = int(np.flatnonzero(~np.isfinite(arr).reshape(arr.shape[0], -1).all(axis=1))[0])
            raise ValueError(f"{what}: image {i} has NaN or inf pixel values")
        out = _float_to_uint8(arr, value_range, what)
    else:
        raise TypeError(
            f"{what} has dtype {arr.dtype}; expected uint8 pixels in [0, 255] or floats in [-1, 1] / [0, 1]"
        )
    if out.shape[-1] == 1:
        out = np.repeat(out, 3, axis=-1)
    return np.ascontiguousarray(out)


def _resize(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bicubic resize of one ``(H, W, 3)`` uint8 image to ``size = (height, width)``."""
    if pixels.shape[:2] == size:
        return pixels
    image = PILImage.fromarray(pixels).resize((size[1], size[0]), resample=PILImage.BICUBIC)
    return np.asarray(image)


def _single_image(value: Any, index: int, value_range: tuple[float, float] | None, what: str) -> np.ndarray:
    """One image of any supported kind -> ``(H, W, 3)`` uint8."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        value = (value.float() if value.is_floating_point() else value).numpy()
        return _array_batch_to_uint8(value[None], True, value_range, f"{what}[{index}]")[0]
    if isinstance(value, np.ndarray):
        if value.ndim == 2:
            value = value[..., None]
        return _array_batch_to_uint8(value[None], False, value_range, f"{what}[{index}]")[0]
    image = decode_image(value, row=index)
    return np.asarray(to_rgb(image))


def to_uint8_images(
    images: ImagesArg,
    *,
    size: int | tuple[int, int] | None = None,
    value_range: tuple[float, float] | None = None,
    name: str = "images",
) -> np.ndarray:
    """Normalise a batch of images to ``(N, H, W, 3)`` uint8 RGB.

    Accepted inputs:

    * a ``torch.Tensor`` batch, ``(N, 3|1, H, W)`` (or channels-last), float or uint8;
    * a ``numpy`` batch, ``(N, H, W, 3|1)`` (or channels-first), uint8 or float;
    * a sequence of single images: PIL images (any mode; converted with
      :func:`d2c_hf.utils.images.to_rgb`), ``(H, W[, C])`` arrays, ``(C, H, W)`` tensors, or encoded
      image cells (bytes, paths, ``{"bytes", "path"}`` dicts, e.g. ``dataset["image"]``).

    Float pixels are mapped linearly from ``value_range`` to ``0..255`` and rounded. With
    ``value_range=None`` the range is inferred: ``[-1, 1]`` (the model/VAE convention, see
    :func:`d2c_hf.utils.images.pixels_to_tensor`) if any value is negative, else ``[0, 1]`` (what
    diffusers pipelines return for ``output_type="pt"``/``"np"``). Pass it explicitly when a
    ``[-1, 1]`` batch could be all non-negative.

    Args:
        images: see above.
        size: ``None`` requires all images to share one size (error naming the first image
            that differs); an int or ``(height, width)`` resizes every image that differs with
            PIL bicubic filtering.
        value_range: range of float inputs, see above.
        name: used in error messages.

    Returns:
        ``(N, H, W, 3)`` uint8, C-contiguous.

    Raises:
        ValueError: empty input, images of mixed sizes (without ``size``), channel counts
            other than 1 or 3, float values outside ``value_range``, NaN pixels.
        TypeError: unsupported dtypes or objects.
    """
    target = _size_tuple(size)
    if isinstance(images, torch.Tensor):
        tensor = images.detach().cpu()
        arr = (tensor.float() if tensor.is_floating_point() else tensor).numpy()
        out = _array_batch_to_uint8(arr, True, value_range, name)
    elif isinstance(images, np.ndarray):
        out = _array_batch_to_uint8(images, False, value_range, name)
    elif isinstance(images, (PILImage.Image, str, bytes)):
        raise TypeError(f"{name} must be a batch of images; wrap a single image in a list: [image]")
    elif isinstance(images, Iterable):
        items = [_single_image(value, i, value_range, name) for i, value in enumerate(images)]
        if not items:
            raise ValueError(f"{name} is empty: no images to evaluate")
        if target is None:
            first = items[0].shape[:2]
            for i, item in enumerate(items):
                if item.shape[:2] != first:
                    raise ValueError(
                        f"{name}[{i}] is {item.shape[0]}x{item.shape[1]} (HxW) but {name}[0] is "
                        f"{first[0]}x{first[1]}; pass size=... to resize all images to one size"
                    )
        return np.stack([_resize(item, target) if target else item for item in items])
    else:
        raise TypeError(
            f"{name} must be a tensor, an array or a sequence of images, got {type(images).__name__}"
        )
    if target is not None and out.shape[1:3] != target:
        out = np.stack([_resize(image, target) for image in out])
    return out
