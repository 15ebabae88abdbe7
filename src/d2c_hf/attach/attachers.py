"""Attach: everything training needs, computed once for the selected samples.

D2C's second stage ("Attach", method.md §2) stores, next to each selected image, what the
training loop would otherwise recompute every step, and stores one text embedding per class:

* :class:`LatentEncoder` -> column ``latents``: the raw VAE posterior ``mean | std``
  concatenated on channels, ``Array3D((2C, h, w), "float16")`` (REPA's layout), so training
  draws a fresh latent ``z = ((mean + std * n) - shift_factor) * scaling_factor`` each step
  (:func:`d2c_hf.utils.vae.sample_posterior`). ``vae=None`` stores pixels (``mean`` = image in
  ``[-1, 1]``, ``std`` = 0, scale 1) so pixel-space models train through the same code.
* :class:`VisualAttacher` -> column ``visual_embeds``: the patch tokens of a self-supervised
  vision encoder (DINOv2-B by default), ``Array2D((h, d), "float16")``, h = the diffusion
  transformer's token count; they are the targets of REPA's projection loss.
* :class:`TextAttacher` -> the ``classes`` table: one row per class with its name, prompt
  ("a photo of a {name}"), the T5 token embeddings ``Array2D((L, D), "float16")`` and mask.

The two image transforms are ``datasets`` map transforms, like
:class:`d2c_hf.selection.scorer.DifficultyScorer`: a callable over a batch that returns the new column,
a ``features`` property declaring it, and ``apply(dataset)`` which is
``dataset.map(transform, batched=True, with_indices=True, features=..., new_fingerprint=...)``
with a fingerprint derived from the transform's provenance (model weights' revision or hash,
resolution, dtype), so a disk-backed dataset hits the ``datasets`` cache on re-runs.

All three default to float32 compute: Attach runs on the *condensed* set (10K images for
ImageNet at 0.8 %), so full precision costs little, and T5 is known to overflow in float16.
"""

from __future__ import annotations

import logging
import math
import os
import string
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..utils.checks import check_positive_int
from ..utils.hub import check_fork_safe, load_pretrained, model_provenance, resolve_device, resolve_dtype
from ..utils.images import pixels_to_tensor, preprocess_images
from ..utils.maps import join_columns, map_new_columns
from ..utils.vae import downsample_factor, encode_posterior, latent_channels, latent_scale, load_vae

logger = logging.getLogger(__name__)


def resolve_attach_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """``None`` -> float32 (see the module docstring); otherwise a torch dtype or an alias like ``"bf16"``."""
    return torch.float32 if dtype is None else resolve_dtype(dtype, torch.device("cpu"))


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def check_finite(array: torch.Tensor, what: str, rows: Sequence[int], hint: str) -> None:
    """Raise naming the first row whose float16 values are inf/NaN (float16 overflows above 65504)."""
    bad = ~torch.isfinite(array.reshape(array.shape[0], -1)).all(dim=1)
    if bool(bad.any()):
        first = int(torch.nonzero(bad)[0, 0])
        raise ValueError(
            f"{what} of row {rows[first]} contains inf/NaN after the float16 cast "
            f"({int(bad.sum())} of {array.shape[0]} rows in this batch); {hint}"
        )


# --------------------------------------------------------------------------------------
# shared datasets-map plumbing for the image transforms
# --------------------------------------------------------------------------------------


class ImageTransform:
    """Base for the per-image Attach transforms (``datasets`` map transforms).

    Subclasses set ``output_column``, implement ``_encode(images, rows) -> np.ndarray`` and
    ``features``/``config``.
    """

    output_column: str = ""
    #: bump when the output of a transform changes for the same config (invalidates caches)
    fingerprint_version: int = 1

    image_column: str
    batch_size: int

    # -- to implement ----------------------------------------------------------------
    @property
    def features(self):  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def config(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _encode(self, images: Sequence[Any], rows: Sequence[int]) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        """Hash of everything that determines the output column (``config`` + class + version)."""
        from datasets.fingerprint import Hasher

        return Hasher.hash([type(self).__name__, self.fingerprint_version, self.config])

    def __call__(
        self, batch: Mapping[str, Any], indices: Sequence[int] | None = None
    ) -> dict[str, np.ndarray]:
        """Encode one batch of rows (a ``datasets`` batched map function).

        Args:
            batch: a batch dict whose ``image_column`` holds PIL images, ``{"bytes", "path"}``
                dicts (``Image(decode=False)``), bytes or paths.
            indices: the rows' indices in the dataset (``with_indices=True``), used in error messages.

        Returns:
            ``{output_column: float16 array}`` with one entry per row (see ``features``).
        """
        images = list(batch[self.image_column])
        rows = list(indices) if indices is not None else list(range(len(images)))
        parts = [
            self._encode(images[i : i + self.batch_size], rows[i : i + self.batch_size])
            for i in range(0, len(images), self.batch_size)
        ]
        if not parts:
            shape = self.features[self.output_column].shape
            return {self.output_column: np.zeros((0, *shape), np.float16)}
        return {self.output_column: np.concatenate(parts)}

    def apply(self, dataset, **map_kwargs):
        """Add the output column to ``dataset`` (``Dataset`` or ``IterableDataset``).

        Equivalent to ``dataset.map(self, batched=True, with_indices=True, features=...,
        new_fingerprint=...)``. The image column is cast to ``Image(decode=False)`` during the
        map, so that this code decodes every image and names the row of a broken one, and is
        restored afterwards. Extra ``map_kwargs`` (``num_proc``, ``desc``, ``cache_file_name``,
        ``load_from_cache_file``, ...) are passed through; ``batch_size`` defaults to the
        transform's.

        Raises:
            ValueError: the image column is missing or not an ``Image`` feature, or the output
                column already exists (remove it to recompute).
        """
        from datasets import Dataset, Image, IterableDataset

        if not isinstance(dataset, (Dataset, IterableDataset)):
            raise TypeError(f"expected a datasets.Dataset or IterableDataset, got {type(dataset).__name__}")
        features = dataset.features
        if features is None or self.image_column not in features:
            available = list(features or [])
            raise ValueError(
                f"image_column={self.image_column!r} is not a column of the dataset; available columns: "
                f"{available}"
            )
        image_feature = features[self.image_column]
        if not isinstance(image_feature, Image):
            raise TypeError(
                f"column {self.image_column!r} has feature {image_feature!r}, expected datasets.Image()"
            )
        if self.output_column in features:
            raise ValueError(
                f"the dataset already has a {self.output_column!r} column; remove it first "
                f"(dataset.remove_columns({self.output_column!r})) to recompute it"
            )
        for key in ("function", "batched", "with_indices", "features", "input_columns"):
            if key in map_kwargs:
                raise TypeError(f"apply() sets {key!r} itself; do not pass it")

        map_kwargs.setdefault("batch_size", self.batch_size)
        check_fork_safe(map_kwargs.get("num_proc"), self.device, f"{type(self).__name__}.apply")
        is_map_style = isinstance(dataset, Dataset)
        original_format = dataset.format if is_map_style else None
        raw = dataset.cast_column(self.image_column, Image(decode=False)) if image_feature.decode else dataset
        if is_map_style:
            raw = raw.with_format(None)
            map_kwargs.setdefault("desc", f"{type(self).__name__} -> {self.output_column}")
            map_kwargs.setdefault("new_fingerprint", self._new_fingerprint(raw))
        if is_map_style:  # only the new column is written, then joined (utils/maps.py)
            added, joined = map_new_columns(raw, self, self.features, **map_kwargs)
            out = join_columns(raw, added, joined)
        else:
            out_features = raw.features.copy()
            out_features.update(self.features)
            out = raw.map(self, batched=True, with_indices=True, features=out_features, **map_kwargs)
        if image_feature.decode:
            out = out.cast_column(self.image_column, image_feature)
        if is_map_style and original_format["type"] is not None:
            columns = original_format["columns"]
            out = out.with_format(
                original_format["type"],
                columns=None if columns is None else [*columns, self.output_column],
                output_all_columns=original_format["output_all_columns"],
                **original_format["format_kwargs"],
            )
        return out

    def _new_fingerprint(self, dataset) -> str:
        from datasets.fingerprint import Hasher

        return Hasher.hash([dataset._fingerprint, self.fingerprint])

    def _preprocess(self, images: Sequence[Any], rows: Sequence[int], resolution: int) -> np.ndarray:
        pixels, upsampled = preprocess_images(images, resolution, rows=rows)
        if upsampled and not getattr(self, "_warned_upsampling", False):
            logger.warning(
                "%s: some images are smaller than %dpx and are upsampled (first seen in rows %s..%s)",
                type(self).__name__,
                resolution,
                rows[0],
                rows[-1],
            )
            self._warned_upsampling = True
        return pixels


# --------------------------------------------------------------------------------------
# latents
# --------------------------------------------------------------------------------------


def _place(module: Any, device: torch.device, dtype: torch.dtype):
    """Move a module to ``device`` and cast it to ``dtype`` only if needed (diffusers warns on every
    ``.to(dtype=...)``, even a no-op one)."""
    if module is None:
        return None
    module = module.to(device)
    if next(module.parameters()).dtype != dtype:
        module = module.to(dtype=dtype)
    return module


class LatentEncoder(ImageTransform):
    """Store each image's raw VAE posterior so training never touches pixels again.

    For an image x (ADM centre crop at ``resolution``, scaled to ``[-1, 1]``) the column
    ``latents`` holds ``concat([mean(x), std(x)], dim=0)`` of ``vae.encode(x).latent_dist``,
    shape ``(2C, h, w)`` float16 with ``h = w = resolution / downsample_factor`` (REPA's layout;
    ``(8, 32, 32)`` for the SD VAEs at 256 px). Training samples
    ``z = ((mean + std * n) - shift_factor) * scaling_factor``, ``n ~ N(0, I)``, with the
    factors recorded in :attr:`config` (read from ``vae.config``, never hard-coded).

    ``vae=None`` is pixel space: ``mean`` = the image in ``[-1, 1]``, ``std`` = 0, scale 1,
    shape ``(6, resolution, resolution)``.

    Args:
        vae: a loaded ``AutoencoderKL`` (or ``None``).
        resolution: side of the centre crop, in pixels.
        batch_size: images per VAE forward pass (and the default ``map`` batch size).
        dtype, device: compute dtype (default float32) and device (default: CUDA if available).
        image_column: the ``datasets.Image`` column to encode.
    """

    output_column = "latents"

    def __init__(
        self,
        vae: Any = None,
        *,
        resolution: int = 256,
        batch_size: int = 32,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
        image_column: str = "image",
    ) -> None:
        self.device = resolve_device(device)
        self.dtype = resolve_attach_dtype(dtype)
        self.vae = _place(load_vae(vae), self.device, self.dtype) if vae is not None else None
        factor = downsample_factor(self.vae)
        if not isinstance(resolution, int) or resolution < 1 or resolution % factor:
            raise ValueError(
                f"resolution must be a positive multiple of the VAE's downsampling factor {factor}, got {resolution!r}"
            )
        self.resolution = resolution
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.image_column = image_column
        self.latent_size = resolution // factor
        self.latent_channels = latent_channels(self.vae)
        self.scaling_factor, self.shift_factor = latent_scale(self.vae)
        self._provenance = model_provenance(self.vae) if self.vae is not None else None

    @classmethod
    def from_pretrained(
        cls,
        vae: Any = None,
        *,
        resolution: int = 256,
        batch_size: int = 32,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
        image_column: str = "image",
    ) -> LatentEncoder:
        """Load the VAE from a Hub id or local folder (an ``AutoencoderKL`` folder, or a pipeline
        folder with a ``vae/`` subfolder), or wrap a loaded one; ``None`` = pixel space."""
        device_ = resolve_device(device)
        dtype_ = resolve_attach_dtype(dtype)
        model = load_vae(vae, dtype=dtype_, device=device_)
        return cls(
            model,
            resolution=resolution,
            batch_size=batch_size,
            dtype=dtype_,
            device=device_,
            image_column=image_column,
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(2C, h, w)`` of one stored posterior."""
        return (2 * self.latent_channels, self.latent_size, self.latent_size)

    @property
    def features(self):
        """The new column: ``{"latents": Array3D((2C, h, w), "float16")}``."""
        from datasets import Array3D, Features

        return Features({self.output_column: Array3D(self.shape, "float16")})

    @property
    def config(self) -> dict[str, Any]:
        """JSON-able provenance: the VAE (revision or weights hash), crop, layout and latent scale."""
        return {
            "vae": self._provenance,
            "space": "pixel" if self.vae is None else "latent",
            "layout": "mean_std",
            "resolution": self.resolution,
            "crop": "adm_center",
            "latent_channels": self.latent_channels,
            "latent_size": self.latent_size,
            "downsample_factor": downsample_factor(self.vae),
            "scaling_factor": self.scaling_factor,
            "shift_factor": self.shift_factor,
            "dtype": _dtype_name(self.dtype),
            "storage_dtype": "float16",
        }

    @torch.no_grad()
    def encode(self, pixels: np.ndarray) -> torch.Tensor:
        """``(B, H, W, 3)`` uint8 (already cropped) -> ``(B, 2C, h, w)`` float32 posterior ``mean | std``."""
        x = pixels_to_tensor(pixels).to(self.device)
        mean, std = encode_posterior(self.vae, x)
        return torch.cat([mean, std], dim=1)

    def compute(self, pixels: np.ndarray, rows: Sequence[int]) -> np.ndarray:
        """``(B, S, S, 3)`` uint8 crops -> the stored ``(B, 2C, h, w)`` float16 posteriors, checked finite
        (the per-batch code of both runners)."""
        moments = self.encode(pixels).to("cpu", torch.float16)
        check_finite(moments, "the VAE posterior", rows, "check the VAE or run it in float32")
        return moments.numpy()

    def _encode(self, images: Sequence[Any], rows: Sequence[int]) -> np.ndarray:
        return self.compute(self._preprocess(images, rows, self.resolution), rows)

    def __repr__(self) -> str:
        name = (self._provenance or {}).get("name_or_path") or "pixel space"
        return f"{type(self).__name__}(vae={name!r}, resolution={self.resolution}, shape={self.shape})"


# --------------------------------------------------------------------------------------
# visual tokens
# --------------------------------------------------------------------------------------


def _square(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise ValueError(f"non-square {what} {value} is not supported")
        value = value[0]
    return int(value)


def encoder_inputs(
    pixels: np.ndarray | torch.Tensor,
    *,
    image_mean: Sequence[float],
    image_std: Sequence[float],
    input_size: int,
    rescale_factor: float = 1 / 255,
) -> torch.Tensor:
    """``(B, S, S, 3)`` uint8 crops -> ``(B, 3, input_size, input_size)`` float32 vision-encoder input.

    Rescale (``x * rescale_factor``), normalise (``(x - mean) / std``), then a bicubic resize
    (``F.interpolate``, no antialias) to ``input_size``: REPA's order. What :class:`VisualAttacher`
    feeds its encoder, and what :func:`d2c_hf.train_vision_encoder` trains on.
    """
    x = torch.as_tensor(pixels).permute(0, 3, 1, 2).float() * rescale_factor
    mean = torch.tensor([float(v) for v in image_mean]).view(1, 3, 1, 1)
    std = torch.tensor([float(v) for v in image_std]).view(1, 3, 1, 1)
    x = (x - mean) / std
    if x.shape[-1] != input_size:
        x = F.interpolate(x, size=(input_size, input_size), mode="bicubic", align_corners=False)
    return x


class VisualAttacher(ImageTransform):
    """Store each image's vision-encoder patch tokens, the targets of REPA's projection loss.

    Preprocessing follows REPA: ADM centre crop at the dataset ``resolution``, ``x / 255``,
    normalise with the checkpoint's own ``image_mean``/``image_std`` (from its
    ``AutoImageProcessor``; bare ``BitImageProcessor`` defaults are CLIP's, not DINOv2's), then a
    bicubic resize (``F.interpolate``, no antialias) to ``input_size = g * patch_size`` where
    ``g * g = num_tokens`` is the diffusion transformer's token grid (224 px for 256 tokens with
    DINOv2's patch 14).

    Which tokens are stored (``h = num_tokens`` of them, ``Array2D((h, d), "float16")`` in
    ``visual_embeds``, ``d`` = the encoder width):

    * transformer encoders (``last_hidden_state`` of shape ``(B, T, d)``): the patch tokens are
      the **last** ``(input_size / patch_size)**2`` tokens; everything before them (CLS,
      distillation and register tokens) is dropped. For the DINOv2 family this is checked
      against the config: ``last_hidden_state[:, 1 + num_register_tokens:]``;
    * convolutional encoders (``(B, d, H, W)`` feature maps): the ``H * W`` positions, row-major;
    * models with a ``vision_model`` tower (e.g. ``CLIPModel``): that tower.

    If the grid is larger than ``num_tokens`` (a fixed ``input_size``), the first h tokens are
    kept (method.md §2); fewer tokens than h is an error.

    Args:
        encoder: a loaded ``transformers`` vision model (``AutoModel``).
        image_mean, image_std: per-channel normalisation of ``[0, 1]`` pixels.
        num_tokens: h, a perfect square (the diffusion transformer's ``(latent / patch)**2``).
        resolution: ADM crop size in pixels before the resize (the dataset resolution);
            ``None`` crops directly at ``input_size``.
        input_size: encoder input side; default ``sqrt(num_tokens) * patch_size``.
        rescale_factor: pixel scale before normalisation (the processor's, 1/255).
        batch_size, dtype, device, image_column: as for :class:`LatentEncoder`.
    """

    output_column = "visual_embeds"

    def __init__(
        self,
        encoder: Any,
        *,
        image_mean: Sequence[float],
        image_std: Sequence[float],
        num_tokens: int = 256,
        resolution: int | None = None,
        input_size: int | None = None,
        rescale_factor: float = 1 / 255,
        batch_size: int = 32,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
        image_column: str = "image",
    ) -> None:
        check_positive_int(num_tokens, "num_tokens")
        grid = math.isqrt(num_tokens)
        if grid * grid != num_tokens:
            raise ValueError(
                f"num_tokens={num_tokens} is not a perfect square: the diffusion transformer's token grid is "
                "square ((resolution / vae factor / patch_size)**2, e.g. 256 = 16x16)"
            )
        if len(image_mean) != 3 or len(image_std) != 3 or min(image_std) <= 0:
            raise ValueError(
                f"image_mean/image_std must hold 3 values (std > 0), got {image_mean}, {image_std}"
            )
        self.device = resolve_device(device)
        self.dtype = resolve_attach_dtype(dtype)
        if hasattr(encoder, "vision_model") and hasattr(encoder, "get_image_features"):
            encoder = encoder.vision_model  # a dual-tower model (CLIP, SigLIP): keep the vision tower
        self.encoder = _place(encoder.eval().requires_grad_(False), self.device, self.dtype)
        config = getattr(encoder, "config", None)
        self.model_type = getattr(config, "model_type", type(encoder).__name__)
        if getattr(config, "mask_ratio", 0):
            raise ValueError(
                f"encoder {self.model_type!r} masks patches at random (mask_ratio={config.mask_ratio}); load it "
                "with mask_ratio=0.0 or use another encoder"
            )
        self.patch_size = _square(getattr(config, "patch_size", None), "patch_size")
        self.num_tokens = num_tokens
        self.grid = grid
        if input_size is None:
            if self.patch_size is None:
                raise ValueError(
                    f"encoder {self.model_type!r} has no config.patch_size; pass input_size= (the input side "
                    "in pixels whose feature grid has at least num_tokens positions)"
                )
            input_size = grid * self.patch_size
        self.input_size = int(input_size)
        self.resolution = resolution
        if resolution is not None and (not isinstance(resolution, int) or resolution < 1):
            raise ValueError(f"resolution must be a positive integer or None, got {resolution!r}")
        self.image_mean = [float(v) for v in image_mean]
        self.image_std = [float(v) for v in image_std]
        self.rescale_factor = float(rescale_factor)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.image_column = image_column
        self._provenance = model_provenance(encoder)
        self.num_prefix_tokens, self.hidden_size, self.encoder_tokens = self._probe()

    @classmethod
    def from_pretrained(
        cls,
        encoder: Any = "facebook/dinov2-base",
        *,
        num_tokens: int = 256,
        resolution: int | None = None,
        input_size: int | None = None,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        batch_size: int = 32,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
        image_column: str = "image",
    ) -> VisualAttacher:
        """Load a vision encoder with ``AutoModel`` (Hub id or local folder) or wrap a loaded one.

        The normalisation comes from the checkpoint's ``AutoImageProcessor`` unless
        ``image_mean``/``image_std`` are given (required for a loaded model without a path).
        """
        dtype_ = resolve_attach_dtype(dtype)
        source = encoder if isinstance(encoder, (str, os.PathLike)) else None
        if source is not None:
            from transformers import AutoModel

            encoder = load_pretrained(AutoModel, source, role="vision_encoder", dtype=dtype_)
        elif not isinstance(encoder, torch.nn.Module):
            raise TypeError(
                f"encoder must be a Hub id, a local folder or a loaded model, got {type(encoder).__name__}"
            )
        else:
            source = getattr(getattr(encoder, "config", None), "_name_or_path", None) or None
        rescale_factor = 1 / 255
        if image_mean is None or image_std is None:
            processor = _load_image_processor(source)
            image_mean = image_mean if image_mean is not None else processor.image_mean
            image_std = image_std if image_std is not None else processor.image_std
            rescale_factor = float(getattr(processor, "rescale_factor", None) or rescale_factor)
        return cls(
            encoder,
            image_mean=image_mean,
            image_std=image_std,
            num_tokens=num_tokens,
            resolution=resolution,
            input_size=input_size,
            rescale_factor=rescale_factor,
            batch_size=batch_size,
            dtype=dtype_,
            device=device,
            image_column=image_column,
        )

    # -- token layout ---------------------------------------------------------------
    @torch.no_grad()
    def _forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.encoder(pixel_values=pixel_values.to(device=self.device, dtype=self.dtype))
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        if hidden.ndim == 4:  # (B, d, H, W) feature map -> (B, H*W, d)
            hidden = hidden.flatten(2).transpose(1, 2)
        return hidden

    def _probe(self) -> tuple[int, int, int]:
        """One forward pass on a blank input: the prefix-token count, the width d and the grid size."""
        blank = torch.zeros(1, 3, self.input_size, self.input_size)
        out = self.encoder(pixel_values=blank.to(device=self.device, dtype=self.dtype))
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        if hidden.ndim == 4:
            prefix, width, tokens = 0, hidden.shape[1], hidden.shape[2] * hidden.shape[3]
        elif hidden.ndim == 3:
            width = hidden.shape[-1]
            if self.patch_size is None:
                raise ValueError(
                    f"encoder {self.model_type!r} returns a token sequence but has no config.patch_size, so its "
                    "patch tokens cannot be told apart from CLS/register tokens"
                )
            tokens = (self.input_size // self.patch_size) ** 2
            prefix = hidden.shape[1] - tokens
            if prefix < 0:
                raise ValueError(
                    f"encoder {self.model_type!r} returned {hidden.shape[1]} tokens at input size {self.input_size}, "
                    f"fewer than its {tokens} patches"
                )
            if self.model_type.startswith("dinov2"):
                expected = 1 + int(getattr(self.encoder.config, "num_register_tokens", 0) or 0)
                if prefix != expected:
                    raise ValueError(
                        f"{self.model_type} returned {hidden.shape[1]} tokens; expected 1 CLS + "
                        f"{expected - 1} register tokens + {tokens} patches"
                    )
        else:
            raise ValueError(f"unsupported encoder output of shape {tuple(hidden.shape)}")
        if tokens < self.num_tokens:
            raise ValueError(
                f"encoder {self.model_type!r} yields {tokens} patch tokens at input size {self.input_size}px but "
                f"num_tokens={self.num_tokens} were requested (the diffusion transformer's token count); raise "
                "input_size or lower num_tokens"
            )
        if tokens > self.num_tokens:
            logger.warning(
                "VisualAttacher: the encoder's grid has %d tokens; keeping the first %d (num_tokens)",
                tokens,
                self.num_tokens,
            )
        return prefix, int(width), tokens

    @property
    def features(self):
        """The new column: ``{"visual_embeds": Array2D((h, d), "float16")}``."""
        from datasets import Array2D, Features

        return Features({self.output_column: Array2D((self.num_tokens, self.hidden_size), "float16")})

    @property
    def config(self) -> dict[str, Any]:
        """JSON-able provenance: the encoder, its token layout and the preprocessing."""
        return {
            "encoder": self._provenance,
            "model_type": self.model_type,
            "num_tokens": self.num_tokens,
            "grid": self.grid,
            "hidden_size": self.hidden_size,
            "patch_size": self.patch_size,
            "input_size": self.input_size,
            "num_prefix_tokens": self.num_prefix_tokens,
            "resolution": self.resolution,
            "crop": "adm_center",
            "resize": "bicubic",
            "image_mean": self.image_mean,
            "image_std": self.image_std,
            "rescale_factor": self.rescale_factor,
            "dtype": _dtype_name(self.dtype),
            "storage_dtype": "float16",
        }

    def pixel_values(self, pixels: np.ndarray) -> torch.Tensor:
        """``(B, S, S, 3)`` uint8 crops -> ``(B, 3, input_size, input_size)`` float32 encoder input
        (:func:`encoder_inputs` with this attacher's normalisation and size)."""
        return encoder_inputs(
            pixels,
            image_mean=self.image_mean,
            image_std=self.image_std,
            input_size=self.input_size,
            rescale_factor=self.rescale_factor,
        )

    @torch.no_grad()
    def encode(self, pixels: np.ndarray) -> torch.Tensor:
        """``(B, S, S, 3)`` uint8 crops -> ``(B, h, d)`` float32 patch tokens (no CLS/registers)."""
        hidden = self._forward(self.pixel_values(pixels))
        if hidden.shape[-1] != self.hidden_size:
            raise ValueError(
                f"encoder output width {hidden.shape[-1]} differs from the declared {self.hidden_size}"
            )
        tokens = hidden[:, self.num_prefix_tokens :]
        if tokens.shape[1] < self.num_tokens:
            raise ValueError(
                f"encoder returned {tokens.shape[1]} patch tokens, fewer than num_tokens={self.num_tokens}"
            )
        return tokens[:, : self.num_tokens].float()

    def compute(self, pixels: np.ndarray, rows: Sequence[int]) -> np.ndarray:
        """``(B, S, S, 3)`` uint8 crops -> the stored ``(B, h, d)`` float16 tokens, checked finite (the
        per-batch code of both runners)."""
        tokens = self.encode(pixels).to("cpu", torch.float16)
        check_finite(tokens, "the visual tokens", rows, "run the encoder in float32 or bfloat16")
        return tokens.numpy()

    def _encode(self, images: Sequence[Any], rows: Sequence[int]) -> np.ndarray:
        return self.compute(self._preprocess(images, rows, self.resolution or self.input_size), rows)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(encoder={self._provenance.get('name_or_path')!r}, num_tokens={self.num_tokens}, "
            f"hidden_size={self.hidden_size}, input_size={self.input_size})"
        )


def _load_image_processor(source: Any):
    if source is None:
        raise ValueError(
            "cannot find the encoder's image processor (a loaded model without a path): pass image_mean= and "
            "image_std= (e.g. ImageNet's (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225) for DINOv2)"
        )
    from transformers import AutoImageProcessor

    try:
        processor = AutoImageProcessor.from_pretrained(str(source))
    except (OSError, ValueError) as err:
        raise ValueError(
            f"could not load the image processor of {source!r} ({err}); pass image_mean= and image_std="
        ) from err
    if getattr(processor, "image_mean", None) is None or getattr(processor, "image_std", None) is None:
        raise ValueError(
            f"the image processor of {source!r} has no image_mean/image_std; pass them explicitly"
        )
    return processor


# --------------------------------------------------------------------------------------
# class text
# --------------------------------------------------------------------------------------

UNIQUE_RULES = ("synonym", "number", "error")


def clean_class_name(name: str) -> str:
    """The display name of a class: its first comma-separated synonym, stripped
    (``"tench, Tinca tinca"`` -> ``"tench"``)."""
    return name.split(",")[0].strip()


def _synonyms(name: str) -> list[str]:
    return [s.strip() for s in name.split(",") if s.strip()]


def check_class_names(names: Sequence[str] | Mapping[int, str]) -> list[str]:
    """Validate class names (a sequence indexed by label, or a ``{label: name}`` mapping covering 0..C-1)."""
    if isinstance(names, str):
        raise TypeError("class names must be a sequence of strings (one per class id), not a single string")
    if isinstance(names, Mapping):
        ids = sorted(int(k) for k in names)
        negative = [k for k in ids if k < 0]
        if negative:
            raise ValueError(f"class names are given for negative class ids {negative}; ids run 0..C-1")
        # every id up to the largest one given, at once (not one error per fix)
        missing = sorted(set(range(ids[-1] + 1)) - set(ids)) if ids else []
        if missing:
            shown = ", ".join(map(str, missing[:20])) + (", ..." if len(missing) > 20 else "")
            raise ValueError(
                f"class names are missing for {len(missing)} class id(s) [{shown}] of 0..{ids[-1]} (names were "
                f"given for {len(ids)} ids, the largest {ids[-1]}); give one name per id 0..C-1, or remap sparse "
                "labels to 0..C-1 first (e.g. cast the label column to a ClassLabel)"
            )
        names = [names[k] if k in names else names[str(k)] for k in range(len(ids))]
    names = list(names)
    if not names:
        raise ValueError("no class names given")
    for label, name in enumerate(names):
        if name is None or not isinstance(name, str) or not clean_class_name(name):
            raise ValueError(
                f"class {label} has no usable name ({name!r}); every class needs a non-empty name "
                "(pass class_names=[...])"
            )
    return list(names)


def class_prompts(
    names: Sequence[str] | Mapping[int, str],
    prompt_template: str = "a photo of a {}",
    unique: str = "synonym",
) -> tuple[list[str], list[str]]:
    """Display names and prompts for classes, made unique across classes.

    Each name is cleaned to its first synonym (:func:`clean_class_name`). Names that collide
    (equal ignoring case: ImageNet's two "crane" classes 134/517, "maillot" 638/639,
    "Cardigan"/"cardigan" 264/474) are resolved by ``unique``:

    * ``"synonym"`` (default): every class in a collision group that has a further synonym
      not used by any other class switches to the first such synonym
      (639 "maillot, tank suit" -> "tank suit"; 264 "Cardigan, Cardigan Welsh corgi" ->
      "Cardigan Welsh corgi"); classes still colliding then get the ``"number"`` rule;
    * ``"number"``: the first class (lowest id) keeps the name, later ones get " (2)",
      " (3)", ... (ImageNet's 517 -> "crane (2)": its names carry no synonym to tell the
      machine from the bird; pass better ``class_names`` for such cases);
    * ``"error"``: raise a ``ValueError`` listing the colliding classes.

    Returns:
        ``(display_names, prompts)``, one per class id; prompts are pairwise distinct.
    """
    if unique not in UNIQUE_RULES:
        raise ValueError(f"unique must be one of {UNIQUE_RULES}, got {unique!r}")
    _check_template(prompt_template)
    raw = check_class_names(names)
    display = [clean_class_name(n) for n in raw]

    def groups() -> list[list[int]]:
        by_key: dict[str, list[int]] = {}
        for label, name in enumerate(display):
            by_key.setdefault(name.casefold(), []).append(label)
        return [ids for ids in by_key.values() if len(ids) > 1]

    collisions = groups()
    if collisions and unique == "error":
        listing = "; ".join(" / ".join(f"{i}: {raw[i]!r}" for i in ids) for ids in collisions[:10])
        raise ValueError(
            f"{len(collisions)} class names collide after cleaning to the first synonym ({listing}); pass "
            "distinct class_names or unique='synonym'/'number'"
        )
    if unique == "synonym":
        for ids in collisions:
            for label in ids:
                used = {d.casefold() for j, d in enumerate(display) if j != label}
                alternative = next((s for s in _synonyms(raw[label])[1:] if s.casefold() not in used), None)
                if alternative is not None:
                    display[label] = alternative
        collisions = groups()
    for ids in collisions:  # the "number" rule, also the fallback of "synonym"
        used = {d.casefold() for d in display}
        for k, label in enumerate(ids[1:], start=2):
            candidate, n = f"{display[label]} ({k})", k
            while candidate.casefold() in used:
                n += 1
                candidate = f"{display[label]} ({n})"
            used.add(candidate.casefold())
            display[label] = candidate
    prompts = [prompt_template.format(name) for name in display]
    if len(set(prompts)) != len(prompts):  # cannot happen for a one-placeholder template; keep the promise
        raise AssertionError("class prompts are not unique")
    renamed = [i for i, (r, d) in enumerate(zip(raw, display)) if clean_class_name(r) != d]
    if renamed:
        logger.info(
            "class names made unique (%s rule): %s",
            unique,
            ", ".join(f"{i}: {clean_class_name(raw[i])!r} -> {display[i]!r}" for i in renamed[:10]),
        )
    return display, prompts


def _check_template(template: str) -> None:
    if not isinstance(template, str):
        raise TypeError(f"prompt_template must be a string, got {type(template).__name__}")
    fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    if fields != [""]:
        raise ValueError(
            f"prompt_template must contain exactly one '{{}}' placeholder for the class name, got {template!r}"
        )


class TextAttacher:
    """Encode one prompt per class with a T5 encoder: the ``classes`` table of a condensed set.

    For class c with prompt p_c = ``prompt_template.format(name_c)``, the stored
    ``text_embeds`` are the encoder's ``last_hidden_state`` for p_c tokenized to exactly
    ``max_length`` tokens (padded, truncated), ``(L, D)`` float16, and ``text_mask`` the
    attention mask ``(L,)`` int8. Training uses ``t_c * mask`` (method.md §2, DC-Embedding).

    Args:
        text_encoder: a loaded ``T5EncoderModel`` (any encoder returning ``last_hidden_state``).
        tokenizer: its tokenizer.
        prompt_template: a ``str.format`` template with one ``{}`` for the class name.
        max_length: L, tokens per prompt (the paper: 16).
        unique: how colliding class names are made unique (see :func:`class_prompts`).
        batch_size: prompts per forward pass.
        dtype, device: compute dtype (default float32: T5 v1.1/flan overflow in float16) and device.
    """

    def __init__(
        self,
        text_encoder: Any,
        tokenizer: Any,
        *,
        prompt_template: str = "a photo of a {}",
        max_length: int = 16,
        unique: str = "synonym",
        batch_size: int = 32,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        _check_template(prompt_template)
        if unique not in UNIQUE_RULES:
            raise ValueError(f"unique must be one of {UNIQUE_RULES}, got {unique!r}")
        check_positive_int(max_length, "max_length")
        self.device = resolve_device(device)
        self.dtype = resolve_attach_dtype(dtype)
        if self.dtype == torch.float16:
            logger.warning("TextAttacher: T5 activations can overflow in float16; prefer bfloat16 or float32")
        self.text_encoder = _place(text_encoder.eval().requires_grad_(False), self.device, self.dtype)
        self.tokenizer = tokenizer
        self.prompt_template = prompt_template
        self.max_length = max_length
        self.unique = unique
        self.batch_size = check_positive_int(batch_size, "batch_size")
        config = text_encoder.config
        self.hidden_size = int(getattr(config, "d_model", None) or config.hidden_size)
        self._provenance = model_provenance(text_encoder)

    @classmethod
    def from_pretrained(
        cls,
        text_encoder: Any = "google/flan-t5-xl",
        *,
        tokenizer: Any = None,
        prompt_template: str = "a photo of a {}",
        max_length: int = 16,
        unique: str = "synonym",
        batch_size: int = 32,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
    ) -> TextAttacher:
        """Load ``T5EncoderModel`` + ``AutoTokenizer`` from a Hub id or local folder, or wrap loaded ones.

        ``T5EncoderModel`` is used explicitly: ``AutoModel`` on a T5 folder builds the whole
        encoder-decoder. A loaded model without ``tokenizer=`` takes the tokenizer from its path.
        """
        from transformers import AutoTokenizer, T5EncoderModel

        dtype_ = resolve_attach_dtype(dtype)
        source = text_encoder if isinstance(text_encoder, (str, os.PathLike)) else None
        if source is not None:
            from ..utils.roles import check_model_role

            check_model_role(source, "text_encoder", tokenizer=tokenizer is None)  # before any weights load
            text_encoder = load_pretrained(T5EncoderModel, source, role="text_encoder", dtype=dtype_)
        else:
            source = getattr(getattr(text_encoder, "config", None), "_name_or_path", None) or None
        if tokenizer is None or isinstance(tokenizer, (str, os.PathLike)):
            tokenizer_source = tokenizer or source
            if not tokenizer_source:
                raise ValueError("pass tokenizer= for a loaded text encoder without a path")
            tokenizer = load_pretrained(AutoTokenizer, tokenizer_source, role="the text tokenizer")
        return cls(
            text_encoder,
            tokenizer,
            prompt_template=prompt_template,
            max_length=max_length,
            unique=unique,
            batch_size=batch_size,
            dtype=dtype_,
            device=device,
        )

    @property
    def features(self):
        """Features of the ``classes`` table."""
        from datasets import Array2D, Features, List, Value

        return Features(
            {
                "label": Value("int64"),
                "name": Value("string"),
                "prompt": Value("string"),
                "text_embeds": Array2D((self.max_length, self.hidden_size), "float16"),
                "text_mask": List(Value("int8"), length=self.max_length),
            }
        )

    @property
    def config(self) -> dict[str, Any]:
        """JSON-able provenance: the encoder, the template and the token budget."""
        return {
            "text_encoder": self._provenance,
            "prompt_template": self.prompt_template,
            "max_length": self.max_length,
            "hidden_size": self.hidden_size,
            "unique": self.unique,
            "name_rule": "first_synonym",
            "dtype": _dtype_name(self.dtype),
            "storage_dtype": "float16",
        }

    def prompts(self, names: Sequence[str] | Mapping[int, str]) -> tuple[list[str], list[str]]:
        """``(display_names, prompts)`` for the classes (see :func:`class_prompts`)."""
        return class_prompts(names, self.prompt_template, self.unique)

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode prompts -> ``(embeds (N, L, D) float32, mask (N, L) int8)`` on the CPU."""
        embeds, masks = [], []
        truncated = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = list(prompts[start : start + self.batch_size])
            full = self.tokenizer(chunk, truncation=False)["input_ids"]
            truncated += [start + i for i, ids in enumerate(full) if len(ids) > self.max_length]
            tokens = self.tokenizer(
                chunk, padding="max_length", max_length=self.max_length, truncation=True, return_tensors="pt"
            )
            hidden = self.text_encoder(
                input_ids=tokens["input_ids"].to(self.device),
                attention_mask=tokens["attention_mask"].to(self.device),
            ).last_hidden_state
            embeds.append(hidden.float().cpu())
            masks.append(tokens["attention_mask"].to(torch.int8))
        if truncated:
            logger.warning(
                "TextAttacher: %d prompts are longer than max_length=%d tokens and were truncated (e.g. %r)",
                len(truncated),
                self.max_length,
                prompts[truncated[0]],
            )
        return torch.cat(embeds), torch.cat(masks)

    def encode_classes(self, names: Sequence[str] | Mapping[int, str]):
        """The ``classes`` table: one row per class id, sorted by label.

        Columns: ``label`` int64, ``name`` (unique display name), ``prompt``, ``text_embeds``
        ``Array2D((max_length, D), "float16")``, ``text_mask`` int8 list of length ``max_length``.

        Raises:
            ValueError: a missing/empty name (naming the class id), colliding names with
                ``unique="error"``, or inf/NaN embeddings after the float16 cast.
        """
        from datasets import Dataset

        display, prompts = self.prompts(names)
        embeds, masks = self.encode(prompts)
        embeds16 = embeds.to(torch.float16)
        check_finite(embeds16, "the text embedding", list(range(len(prompts))), "run the encoder in float32")
        return Dataset.from_dict(
            {
                "label": list(range(len(display))),
                "name": display,
                "prompt": prompts,
                "text_embeds": embeds16.numpy(),
                "text_mask": masks.numpy(),
            },
            features=self.features,
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(text_encoder={self._provenance.get('name_or_path')!r}, "
            f"prompt_template={self.prompt_template!r}, max_length={self.max_length})"
        )
