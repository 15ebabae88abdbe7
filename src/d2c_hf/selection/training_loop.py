"""Select, training a scorer from scratch: the pieces both kinds share (the class-conditional DiT of
:func:`~d2c_hf.selection.train_scorer.train_scorer` and the caption-conditioned PixArt-style model of
:func:`~d2c_hf.selection.train_text_scorer.train_text_scorer`): the data as one tensor in the scorer's space, a
deterministic initialisation from a local generator, and the DDPM training loop.
"""

from __future__ import annotations

import logging
import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from ..utils.checks import check_positive_int
from ..utils.images import dataset_pixels, first_image_side, pixels_to_tensor
from ..utils.spaces import is_pixel_space
from ..utils.vae import (
    downsample_factor,
    encode_posterior,
    latent_channels,
    latent_scale,
    load_vae,
    scale_latents,
)

logger = logging.getLogger(__name__)


def init_transformer_weights(model: torch.nn.Module, generator: torch.Generator) -> None:
    """DiT's initialisation (also PixArt's), drawn from ``generator`` (no global RNG), over *every* parameter.

    Linear layers and the patch projection: Xavier-uniform weights, zero biases; label tables and
    timestep MLPs: N(0, 0.02); adaLN modulation (``AdaLayerNormZero.linear``, PixArt's ``AdaLayerNormSingle``
    output) and the output layers (``proj_out_1``, ``proj_out_2``, ``proj_out``): zero (adaLN-Zero, so every
    block starts as the identity); PixArt's ``scale_shift_table`` parameters: ``N(0, 1) / sqrt(dim)`` as PixArt
    builds them.
    """
    from diffusers.models.embeddings import TimestepEmbedding
    from diffusers.models.normalization import AdaLayerNormSingle, AdaLayerNormZero

    done: set[int] = set()

    def init(tensor: torch.Tensor, how: str) -> None:
        if how == "zeros":
            torch.nn.init.zeros_(tensor)
        elif how == "ones":
            torch.nn.init.ones_(tensor)
        elif how == "normal":
            torch.nn.init.normal_(tensor, std=0.02, generator=generator)
        else:  # xavier on the (out, fan_in) view, as DiT does for its conv patch embedding
            torch.nn.init.xavier_uniform_(tensor.view(tensor.shape[0], -1), generator=generator)
        done.add(id(tensor))

    zero_modules = {
        id(getattr(model, name)) for name in ("proj_out_1", "proj_out_2", "proj_out") if hasattr(model, name)
    }
    normal_modules: set[int] = set()
    for module in model.modules():
        if isinstance(module, (AdaLayerNormZero, AdaLayerNormSingle)):
            zero_modules.add(id(module.linear))
        if isinstance(module, TimestepEmbedding):
            normal_modules.update(id(m) for m in module.modules() if isinstance(m, torch.nn.Linear))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
                if id(module) in zero_modules:
                    init(module.weight, "zeros")
                elif id(module) in normal_modules:
                    init(module.weight, "normal")
                else:
                    init(module.weight, "xavier")
                if module.bias is not None:
                    init(module.bias, "zeros")
            elif isinstance(module, torch.nn.Embedding):
                init(module.weight, "normal")
            elif isinstance(module, (torch.nn.LayerNorm, torch.nn.GroupNorm)):
                if module.weight is not None:
                    init(module.weight, "ones")
                if module.bias is not None:
                    init(module.bias, "zeros")
        for name, param in model.named_parameters():
            if name.endswith("scale_shift_table") and id(param) not in done:
                param.copy_(torch.randn(param.shape, generator=generator) / param.shape[-1] ** 0.5)
                done.add(id(param))
    missed = [name for name, p in model.named_parameters() if id(p) not in done]
    if missed:  # a parameter left at a global-RNG init would break determinism
        raise RuntimeError(f"no deterministic initialisation for parameters {missed[:5]}")


class TrainingInputs(NamedTuple):
    """A whole (small) dataset as one tensor in the scorer's space, and that space."""

    data: torch.Tensor  # (N, C, S, S): the ADM crops in [-1, 1], or the scaled VAE latent means
    vae: Any  # the loaded VAE, or None (pixel space)
    resolution: int
    sample_size: int  # S = resolution // the VAE factor
    channels: int  # C


def training_inputs(
    dataset: Any, image_column: str, vae: Any, resolution: int | None, device: torch.device, what: str
) -> TrainingInputs:
    """Every image of ``dataset`` preprocessed once: the ADM centre crop at ``resolution`` (``None``: the
    first image's short side, rounded down to the VAE factor) in ``[-1, 1]`` (``vae`` ``None`` / ``"pixel"``)
    or its VAE latent mean times ``scaling_factor`` (what the scorer scores), on ``device``."""
    vae_model = None if is_pixel_space(vae) else load_vae(vae)
    factor = downsample_factor(vae_model)
    if resolution is None:
        resolution = first_image_side(dataset, image_column) // factor * factor
    resolution = check_positive_int(resolution, "resolution")
    if resolution % factor:
        raise ValueError(
            f"resolution={resolution} is not a multiple of the VAE's downsampling factor {factor}"
        )
    pixels = dataset_pixels(dataset, image_column, resolution, what=what)
    if vae_model is not None:
        vae_model = vae_model.to(device)
        scale, shift = latent_scale(vae_model)
        parts = []
        for start in range(0, len(pixels), 64):
            mean, _ = encode_posterior(vae_model, pixels_to_tensor(pixels[start : start + 64]).to(device))
            parts.append(scale_latents(mean, scale, shift))
        data = torch.cat(parts)
    else:
        data = pixels_to_tensor(pixels).to(device)
    return TrainingInputs(data, vae_model, resolution, resolution // factor, latent_channels(vae_model))


def check_patch_size(sample_size: int, patch_size: int) -> None:
    if sample_size % patch_size:
        raise ValueError(f"the model input side {sample_size} is not divisible by patch_size={patch_size}")


def denoising_steps(
    model: torch.nn.Module,
    data: torch.Tensor,
    condition: Any,
    *,
    scheduler: Any,
    num_steps: int,
    batch_size: int,
    learning_rate: float,
    generator: torch.Generator,
) -> float:
    """Train ``model`` with the DDPM loss ``|| eps - model(sqrt(abar_t) x + sqrt(1 - abar_t) eps, t, c) ||^2``
    (``t`` uniform over the scheduler's steps), AdamW (betas 0.9/0.999, no weight decay, gradient clipping
    1.0), constant learning rate, on batches of ``data`` drawn epoch-wise; ``condition(index)`` gives the
    model's conditioning keyword arguments for the batch rows ``index``. Everything random comes from
    ``generator``, in a fixed order per step (data order, noise, timesteps, then whatever ``condition`` draws).
    Returns the final smoothed loss."""
    from tqdm.auto import tqdm

    device = data.device
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, betas=(0.9, 0.999), weight_decay=0.0)
    n = len(data)
    order = torch.empty(0, dtype=torch.int64)
    smoothed = None
    bar = tqdm(range(num_steps), desc="Training scorer", unit="step")
    for _ in bar:
        while len(order) < batch_size:  # epoch-wise shuffles, concatenated
            order = torch.cat([order, torch.randperm(n, generator=generator)])
        index, order = order[:batch_size], order[batch_size:]
        x0 = data[index.to(device)]
        noise = torch.randn(x0.shape, generator=generator).to(device)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(index),), generator=generator)
        kwargs = condition(index)
        x_t = scheduler.add_noise(x0, noise, t.to(device))
        out = model(x_t, timestep=t.to(device), **kwargs).sample
        loss = F.mse_loss(out.float(), noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(f"train_scorer diverged (loss {value}); lower learning_rate")
        smoothed = value if smoothed is None else 0.98 * smoothed + 0.02 * value
        bar.set_postfix(loss=f"{smoothed:.4f}")
    logger.info("train_scorer: %d steps, final smoothed loss %.4f", num_steps, smoothed)
    return float(smoothed)


__all__ = [
    "TrainingInputs",
    "check_patch_size",
    "denoising_steps",
    "init_transformer_weights",
    "training_inputs",
]
