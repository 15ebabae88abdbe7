"""Training SiT on a condensed set: REPA's losses (the batches come from :mod:`d2c_hf.train.batches`).

The objective (REPA ``SILoss``, linear interpolant, ``t = 0`` data, ``t = 1`` noise)::

    x_t    = (1 - t) x + t eps,          target v = eps - x,          t ~ U(0, 1) or logit-normal(0, 1)
    L_diff = mean over samples of mean_flat((v_theta(x_t, t, y) - v)^2)
    L_proj = mean over projectors, samples and tokens of -cos(phi(h_i), v_i)     (normalised in float32)
    L      = L_diff + proj_coeff * L_proj,                                         proj_coeff = 0.5

Randomness is *counter based* (:func:`seeded_generator`): the training loop draws its timesteps and
interpolation noise from generators seeded with ``(seed, process_index, step)``, so a resumed run draws
exactly what an uninterrupted one would (:class:`d2c_hf.train.batches.BatchSource` does the same for batches).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..schedulers.paths import interpolate

__all__ = [
    "DEFAULT_PROJ_COEFF",
    "WEIGHTINGS",
    "compute_loss",
    "flow_matching_loss",
    "interpolate",
    "projection_loss",
    "sample_timesteps",
    "seeded_generator",
    "total_loss",
]

logger = logging.getLogger(__name__)

#: REPA's weight of the projection loss (train.py ``--proj-coeff``).
DEFAULT_PROJ_COEFF = 0.5
#: time-sampling schemes (REPA's ``--weighting``; the name is REPA's, the loss itself is never reweighted)
WEIGHTINGS = ("uniform", "lognormal")


# --------------------------------------------------------------------------------------
# randomness
# --------------------------------------------------------------------------------------


def seeded_generator(seed: int, *keys: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded from ``(seed, *keys)`` (mixed by numpy's ``SeedSequence``).

    Counter-based randomness: the draws for, e.g., ``(seed, process_index, step)`` do not depend on
    what ran before, so a resumed run repeats them exactly.
    """
    entropy = [int(seed) & 0xFFFFFFFFFFFFFFFF, *(int(k) for k in keys)]
    value = int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]) & 0x7FFFFFFFFFFFFFFF
    return torch.Generator(device=device).manual_seed(value)


def sample_timesteps(
    batch_size: int,
    weighting: str = "uniform",
    *,
    generator: torch.Generator | None = None,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Draw ``t`` in ``[0, 1]`` per sample, float32 ``(batch_size,)``.

    ``uniform``: ``t ~ U(0, 1)`` (REPA's default). ``lognormal``: ``sigma = exp(N(0, 1))``,
    ``t = sigma / (1 + sigma)``, i.e. logit-normal(0, 1) (REPA's ``lognormal``; diffusers'
    ``logit_normal`` with mean 0, std 1).
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    if device is None:
        device = generator.device if generator is not None else "cpu"
    if weighting == "uniform":
        return torch.rand(batch_size, generator=generator, device=device)
    return torch.sigmoid(torch.randn(batch_size, generator=generator, device=device))


# --------------------------------------------------------------------------------------
# losses
# --------------------------------------------------------------------------------------


def flow_matching_loss(pred: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """REPA's denoising loss: per-sample ``mean_flat((pred - target)^2)`` in float32, then the batch mean.

    ``reduction="none"`` returns the ``(B,)`` per-sample losses.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    per_sample = (pred.float() - target.float()).pow(2).flatten(1).mean(1)
    if reduction == "none":
        return per_sample
    if reduction != "mean":
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    return per_sample.mean()


def projection_loss(
    projections: Sequence[torch.Tensor] | torch.Tensor, targets: Sequence[torch.Tensor] | torch.Tensor
) -> torch.Tensor:
    """REPA's alignment loss: ``-cos(projection_i, target_i)`` averaged over tokens, samples and projectors.

    Both sides are L2-normalised per token in float32 (REPA issue #46: in fp16 this overflows).

    Args:
        projections: one ``(B, T, z)`` tensor per projector (``model(..., return_projections=True)``).
        targets: the matching ``(B, T, z)`` visual tokens, one per projector.

    Returns:
        a scalar in ``[-1, 1]``.
    """
    if torch.is_tensor(projections):
        projections = [projections]
    if torch.is_tensor(targets):
        targets = [targets]
    projections, targets = list(projections), list(targets)
    if not projections or len(projections) != len(targets):
        raise ValueError(
            f"need one target per projection and at least one: got {len(projections)} projections, "
            f"{len(targets)} targets"
        )
    losses = []
    for i, (z_hat, z) in enumerate(zip(projections, targets)):
        if z_hat.shape != z.shape:
            raise ValueError(
                f"projection {i} has shape {tuple(z_hat.shape)} but its visual target {tuple(z.shape)}"
            )
        cos = (F.normalize(z_hat.float(), dim=-1) * F.normalize(z.float(), dim=-1)).sum(-1)
        losses.append(-cos.mean())
    return torch.stack(losses).mean()


def total_loss(
    denoising: torch.Tensor, projection: torch.Tensor | None, proj_coeff: float = DEFAULT_PROJ_COEFF
) -> torch.Tensor:
    """``denoising + proj_coeff * projection`` (``projection=None``: the denoising loss alone)."""
    if projection is None:
        return denoising
    return denoising + proj_coeff * projection


def compute_loss(
    model: torch.nn.Module,
    batch: Mapping[str, torch.Tensor],
    *,
    generator: torch.Generator | None = None,
    weighting: str = "uniform",
    proj_coeff: float = DEFAULT_PROJ_COEFF,
) -> dict[str, torch.Tensor]:
    """One REPA training objective on a batch from :class:`BatchSource`.

    Draws ``t`` and ``eps`` from ``generator`` (on the batch's device), forms ``x_t`` and the
    velocity target, runs ``model`` (a :class:`~d2c_hf.models.SiTTransformer2DModel`, possibly
    wrapped by DDP) with the batch's labels and class text (if present), or with its ``caption_embeds`` /
    ``caption_mask`` (a captioned batch: a text-conditioned model, no labels), and projections (if the batch
    has ``visual_embeds``). Label and caption dropout for CFG are the model's own (training mode).

    Returns:
        ``{"loss", "denoising_loss", "projection_loss"}`` (the last is absent without visual tokens).
    """
    x = batch["latents"]
    t = sample_timesteps(x.shape[0], weighting, generator=generator, device=x.device)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    x_t, target = interpolate(x, noise, t)
    visual = batch.get("visual_embeds")
    kwargs: dict[str, Any] = {}
    if batch.get("caption_embeds") is not None:
        kwargs["encoder_hidden_states"] = batch["caption_embeds"]
        kwargs["encoder_attention_mask"] = batch.get("caption_mask")
    else:
        kwargs["class_labels"] = batch["labels"]
    if batch.get("text_embeds") is not None:
        kwargs["text_embeds"] = batch["text_embeds"]
        kwargs["text_mask"] = batch["text_mask"]
    out = model(x_t, t.to(x.dtype), return_projections=visual is not None, return_dict=True, **kwargs)
    pred = out.sample[:, : x.shape[1]]  # drop a learned-sigma half
    denoising = flow_matching_loss(pred, target)
    result = {"denoising_loss": denoising}
    projection = None
    if visual is not None:
        projection = projection_loss(out.projections, [visual] * len(out.projections))
        result["projection_loss"] = projection
    result["loss"] = total_loss(denoising, projection, proj_coeff)
    return result
