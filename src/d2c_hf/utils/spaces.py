"""What a ``vae=`` argument may name: pixel space, ``"auto"`` or a VAE (no heavy import: the option
classes and ``d2c <command> --help`` read these)."""

from __future__ import annotations

from typing import Any

#: ``vae=PIXEL_SPACE`` (or ``None``) means pixel space everywhere: no VAE, models see the image itself.
PIXEL_SPACE = "pixel"
#: ``vae=AUTO`` means "the scorer's own": the ``vae/`` a scorer ships with, else pixel space for a
#: 3-channel scorer, else :data:`DEFAULT_VAE` (the paper's SD VAE).
AUTO = "auto"
#: the VAE of the paper (DiT and REPA): SD-VAE-ft-EMA (its encoder is the same as SD-VAE-ft-MSE's)
DEFAULT_VAE = "stabilityai/sd-vae-ft-ema"
#: spellings of pixel space accepted at the edges (the CLI, option files), normalised to PIXEL_SPACE
_PIXEL_SPELLINGS = ("", "pixel", "none")


def normalise_vae(vae: Any) -> Any:
    """The one notion of pixel space: ``None``, ``""``, ``"pixel"`` and ``"none"`` (any case) become
    :data:`PIXEL_SPACE`; ``"auto"`` stays :data:`AUTO`; anything else (a Hub id, a folder, a loaded
    ``AutoencoderKL``) is returned unchanged."""
    if vae is None:
        return PIXEL_SPACE
    if isinstance(vae, str) and vae.strip().lower() in (*_PIXEL_SPELLINGS, AUTO):
        return AUTO if vae.strip().lower() == AUTO else PIXEL_SPACE
    return vae


def is_pixel_space(vae: Any) -> bool:
    """Whether ``vae`` names pixel space (see :func:`normalise_vae`)."""
    return normalise_vae(vae) == PIXEL_SPACE


__all__ = ["AUTO", "DEFAULT_VAE", "PIXEL_SPACE", "is_pixel_space", "normalise_vae"]
