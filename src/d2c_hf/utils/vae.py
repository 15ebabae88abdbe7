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
from .spaces import AUTO, PIXEL_SPACE, normalise_vae


def load_vae(vae: Any, *, subfolder: str | None = None, dtype: torch.dtype | None = None, device: Any = None):
    """The one VAE loader: an ``AutoencoderKL`` in eval mode, frozen, on ``device`` in ``dtype``.

    ``vae`` is a Hub id or local folder holding an ``AutoencoderKL`` (``config.json`` at its root) or a
    pipeline with a ``vae/`` subfolder (e.g. ``facebook/DiT-XL-2-256``, or what :func:`train_scorer`
    writes in latent space), or a loaded ``AutoencoderKL``; pixel space (see :func:`normalise_vae`)
    gives ``None``. ``"auto"`` is resolved by the caller, never here. ``subfolder`` names the component
    folder explicitly (found by itself otherwise).
    """
    vae = normalise_vae(vae)
    if vae == PIXEL_SPACE:
        return None
    if isinstance(vae, str) and vae == AUTO:
        raise ValueError(
            "vae='auto' means the scorer's own VAE: resolve it against the scorer first (DifficultyScorer.from_pretrained does)"
        )
    if isinstance(vae, (str, os.PathLike)):
        from diffusers import AutoencoderKL

        from .hub import has_file, load_pretrained
        from .roles import check_model_role

        name = os.fspath(vae)
        check_model_role(name, "vae")
        root = subfolder is None and has_file(name, "config.json", role="vae")
        if subfolder is None and not root and has_file(name, "config.json", "vae", role="vae"):
            subfolder = "vae"
        if subfolder is None and not root:
            raise ValueError(
                f"vae={name!r} has neither config.json nor vae/config.json: pass an AutoencoderKL folder or Hub id, "
                "a pipeline with a vae/ subfolder, a loaded AutoencoderKL, or vae='pixel' for pixel space"
            )
        kwargs = {"subfolder": subfolder} if subfolder else {}
        vae = mark_subfolder(load_pretrained(AutoencoderKL, name, role="vae", **kwargs), subfolder)
    if not hasattr(vae, "encode") or not hasattr(getattr(vae, "config", None), "latent_channels"):
        raise TypeError(
            f"vae must be an AutoencoderKL (a folder, a Hub id or a loaded one), got {type(vae).__name__}"
        )
    vae = vae.eval().requires_grad_(False)
    if device is not None:
        vae = vae.to(device)
    if dtype is not None and next(vae.parameters()).dtype != dtype:  # diffusers warns on every .to(dtype)
        vae = vae.to(dtype=dtype)
    return vae


def same_encoder(a: Any, b: Any) -> bool:
    """Whether two loaded ``AutoencoderKL`` encode alike: the same latent scale and bitwise the same encoder
    weights (``encoder`` + ``quant_conv``). SD-VAE-ft-EMA and -MSE differ only in their decoders, so they
    encode alike."""
    if a is b:
        return True
    if latent_scale(a) != latent_scale(b):
        return False
    sa, sb = a.state_dict(), b.state_dict()
    keys = [k for k in sa if k.startswith(("encoder.", "quant_conv."))]
    if sorted(keys) != sorted(k for k in sb if k.startswith(("encoder.", "quant_conv."))):
        return False
    return all(sa[k].shape == sb[k].shape and torch.equal(sa[k].cpu(), sb[k].cpu()) for k in keys)


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
