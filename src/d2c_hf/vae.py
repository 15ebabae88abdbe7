"""The VAE side of the pipeline, shared by scoring, Attach, training and sampling.

Conventions (REPA / DiT):

* images enter the VAE in ``[-1, 1]``, ``(B, 3, H, W)``;
* the stored posterior is the *raw* (unscaled) ``latent_dist.mean`` and ``latent_dist.std``,
  concatenated on the channel axis: ``(B, 2C, h, w)``, so training can draw a fresh latent
  every step;
* a model-space latent is ``(z - shift_factor) * scaling_factor`` with the factors read from
  ``vae.config`` (0.18215 and 0 for the SD VAEs), never hard-coded.

``vae=None`` means *pixel space*: the "posterior" is the image itself with zero std and
scale 1, so pixel-space models go through exactly the same code.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from .hub import mark_subfolder


def load_vae(vae: Any, *, subfolder: str | None = None, dtype: torch.dtype | None = None, device=None):
    """Load an ``AutoencoderKL`` from a Hub id or local folder (or pass a loaded one through), in eval mode."""
    if vae is None:
        return None
    if isinstance(vae, (str, os.PathLike)):
        from diffusers import AutoencoderKL

        kwargs = {"subfolder": subfolder} if subfolder else {}
        vae = mark_subfolder(AutoencoderKL.from_pretrained(str(vae), **kwargs), subfolder)
    vae = vae.eval().requires_grad_(False)
    if device is not None or dtype is not None:
        vae = vae.to(device=device, dtype=dtype)
    return vae


def latent_scale(vae: Any) -> tuple[float, float]:
    """``(scaling_factor, shift_factor)`` from the VAE config (``(1.0, 0.0)`` in pixel space)."""
    if vae is None:
        return 1.0, 0.0
    config = vae.config
    scale = getattr(config, "scaling_factor", None)
    shift = getattr(config, "shift_factor", None)
    return float(scale if scale is not None else 1.0), float(shift if shift is not None else 0.0)


def downsample_factor(vae: Any) -> int:
    """Pixels per latent along each axis (8 for the SD VAEs, 1 in pixel space)."""
    if vae is None:
        return 1
    return 2 ** (len(vae.config.block_out_channels) - 1)


def latent_channels(vae: Any, image_channels: int = 3) -> int:
    return image_channels if vae is None else int(vae.config.latent_channels)


@torch.no_grad()
def encode_posterior(vae: Any, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode ``(B, 3, H, W)`` images in ``[-1, 1]`` to the raw posterior ``(mean, std)``, each ``(B, C, h, w)``.

    Runs in the VAE's dtype/device; returns float32 tensors on the same device.
    """
    if vae is None:
        return images.float(), torch.zeros_like(images, dtype=torch.float32)
    param = next(vae.parameters())
    dist = vae.encode(images.to(device=param.device, dtype=param.dtype)).latent_dist
    return dist.mean.float(), dist.std.float()


def scale_latents(raw: torch.Tensor, scaling_factor: float, shift_factor: float = 0.0) -> torch.Tensor:
    """Raw VAE latents -> model space: ``(z - shift) * scale``."""
    return (raw - shift_factor) * scaling_factor


def unscale_latents(latents: torch.Tensor, scaling_factor: float, shift_factor: float = 0.0) -> torch.Tensor:
    """Model space -> raw VAE latents (inverse of :func:`scale_latents`), ready for ``vae.decode``."""
    return latents / scaling_factor + shift_factor


def sample_posterior(
    mean: torch.Tensor,
    std: torch.Tensor,
    scaling_factor: float,
    shift_factor: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw a model-space latent ``((mean + std * n) - shift) * scale`` with ``n ~ N(0, I)`` (REPA's ``sample_posterior``)."""
    noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return scale_latents(mean + std * noise, scaling_factor, shift_factor)
