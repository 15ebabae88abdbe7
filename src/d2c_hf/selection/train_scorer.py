"""A difficulty scorer trained from scratch on the user's own data (the paper's "scorer trained from
scratch" setting), for datasets that no pretrained class-conditional model covers.

:func:`train_scorer` trains a small diffusers ``DiTTransformer2DModel`` with the DDPM loss, from one local
``torch.Generator`` (deterministic, the global RNG untouched), and saves it in a layout that
:meth:`d2c_hf.DifficultyScorer.from_pretrained` loads directly, in the right space.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..utils.checks import check_new_output_dir, check_positive_int, check_positive_number, check_seed
from ..utils.checksums import write_record
from ..utils.columns import formatted_column
from ..utils.files import staged_dir, write_json
from ..utils.hub import model_provenance, resolve_device
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
from .denoisers import dit_ddpm_scheduler
from .scorer import SCORER_INFO_FILE

logger = logging.getLogger(__name__)


def _init_dit_weights(model: torch.nn.Module, generator: torch.Generator) -> None:
    """DiT's initialisation, drawn from ``generator`` (no global RNG), over *every* parameter.

    Linear layers and the patch projection: Xavier-uniform weights, zero biases; label tables and
    timestep MLPs: N(0, 0.02); adaLN modulation (``AdaLayerNormZero.linear``) and the output layers
    (``proj_out_1``, ``proj_out_2``): zero (adaLN-Zero, so every block starts as the identity).
    """
    from diffusers.models.embeddings import TimestepEmbedding
    from diffusers.models.normalization import AdaLayerNormZero

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

    zero_modules = {id(getattr(model, name)) for name in ("proj_out_1", "proj_out_2") if hasattr(model, name)}
    normal_modules: set[int] = set()
    for module in model.modules():
        if isinstance(module, AdaLayerNormZero):
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
    missed = [name for name, p in model.named_parameters() if id(p) not in done]
    if missed:  # a parameter left at a global-RNG init would break determinism
        raise RuntimeError(f"no deterministic initialisation for parameters {missed[:5]}")


@contextlib.contextmanager
def _own_label_dropout(model: torch.nn.Module):
    """Switch off the model's label dropout (drawn from the global RNG, independently in every DiT
    block) for the duration; the caller drops labels itself with its generator. Yields the dropout
    probability and the null class id."""
    from diffusers.models.embeddings import LabelEmbedding

    tables = [m for m in model.modules() if isinstance(m, LabelEmbedding)]
    probs = [m.dropout_prob for m in tables]
    prob = max(probs, default=0.0)
    null_id = tables[0].num_classes if tables else None
    for m in tables:
        m.dropout_prob = 0.0
    try:
        yield prob, null_id
    finally:
        for m, p in zip(tables, probs):
            m.dropout_prob = p


def train_scorer(
    dataset: Any,
    output_dir: str | os.PathLike,
    *,
    vae: Any = None,
    resolution: int | None = None,
    image_column: str = "image",
    label_column: str = "label",
    num_steps: int = 500,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    seed: int = 0,
    device: str | torch.device | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
) -> Path:
    """Train a small class-conditional DiT on ``dataset`` to use as the difficulty scorer
    (the paper's "scorer trained from scratch" setting).

    A diffusers ``DiTTransformer2DModel`` (epsilon prediction, no learned sigma) is trained with the
    DDPM loss ``|| eps - model(sqrt(abar_t) x + sqrt(1 - abar_t) eps, t, c) ||^2``, t uniform over the
    1000 steps of DiT's linear schedule (betas 1e-4..0.02), AdamW (betas 0.9/0.999, no weight decay,
    gradient clipping 1.0), constant learning rate, and class dropout (labels replaced by the null class
    with the model's own probability, 0.1) for the conditioning. x is the ADM centre crop in ``[-1, 1]``
    (``vae=None``, pixel space) or the VAE latent mean times ``scaling_factor`` (what the scorer scores).
    The whole dataset is preprocessed once into one tensor, so this suits small datasets.

    Everything random (weight init, data order, noise, timesteps, label dropout) comes from one CPU
    ``torch.Generator(seed)``: the result is deterministic given ``seed`` on CPU, and the global RNG is
    neither seeded nor advanced.

    Default model: hidden size 128 (4 heads x 32), 4 layers, patch size 4 (2 for inputs smaller than
    16): 16 tokens for 16 px digits, 64 for 32 px or 32x32 latents. ``model_kwargs`` overrides any
    ``DiTTransformer2DModel`` argument except the ones fixed by the data (``in_channels``,
    ``out_channels``, ``sample_size``, ``num_embeds_ada_norm``).

    Output layout (written to a temporary folder next to ``output_dir`` and renamed into place, so a
    crash never leaves a half-written folder): ``transformer/`` + ``scheduler/`` (a ``DDPMScheduler``),
    plus ``vae/`` and ``model_index.json`` (a ``DiTPipeline`` folder, like facebook/DiT-XL-2-256) in
    latent space, plus ``d2c_scorer.json`` (training record: data, settings, final loss, class names).
    ``DifficultyScorer.from_pretrained(output_dir)`` loads it directly, in the right space.

    Args:
        dataset: a ``datasets.Dataset`` with an image and an integer/``ClassLabel`` label column.
        output_dir: the folder to create; it must not exist or be empty.
        vae: ``None`` / ``"pixel"`` = pixel space; an ``AutoencoderKL`` (folder, Hub id or loaded) = its
            latent space (the VAE is saved with the scorer).
        resolution: training (and scoring) image side; ``None`` = the short side of the first image.
        num_steps, batch_size, learning_rate: optimisation settings.
        seed: seed of the local generator.
        device: ``None`` = CUDA if available, else CPU.
        model_kwargs: ``DiTTransformer2DModel`` arguments.

    Returns:
        ``Path(output_dir)``.
    """
    from datasets import Dataset
    from diffusers import DiTPipeline, DiTTransformer2DModel
    from tqdm.auto import tqdm

    from ..data.inputs import prepare_dataset
    from ..version import __version__

    # ---- cheap checks -----------------------------------------------------------------------------
    output_dir = check_new_output_dir(output_dir)
    num_steps = check_positive_int(num_steps, "num_steps")
    batch_size = check_positive_int(batch_size, "batch_size")
    check_positive_number(learning_rate, "learning_rate")
    check_seed(seed)
    if not isinstance(dataset, Dataset):
        raise TypeError(
            f"train_scorer needs a datasets.Dataset (it preprocesses all rows once), got {type(dataset).__name__}"
        )
    dataset, info = prepare_dataset(dataset, image_column, label_column)
    model_kwargs = dict(model_kwargs or {})
    fixed = {"in_channels", "out_channels", "sample_size", "num_embeds_ada_norm"} & set(model_kwargs)
    if fixed:
        raise ValueError(
            f"model_kwargs must not set {sorted(fixed)}: train_scorer derives them from the data"
        )

    device_ = resolve_device(device)
    vae_model = None if is_pixel_space(vae) else load_vae(vae)
    factor = downsample_factor(vae_model)
    if resolution is None:
        resolution = first_image_side(dataset, image_column) // factor * factor
    resolution = check_positive_int(resolution, "resolution")
    if resolution % factor:
        raise ValueError(
            f"resolution={resolution} is not a multiple of the VAE's downsampling factor {factor}"
        )
    sample_size = resolution // factor
    channels = latent_channels(vae_model)
    config = {
        "num_attention_heads": 4,
        "attention_head_dim": 32,
        "num_layers": 4,
        "patch_size": 2 if sample_size < 16 else 4,
        **model_kwargs,
        "in_channels": channels,
        "out_channels": channels,
        "sample_size": sample_size,
        "num_embeds_ada_norm": info.num_classes,
    }
    if sample_size % config["patch_size"]:
        raise ValueError(
            f"the model input side {sample_size} is not divisible by patch_size={config['patch_size']}"
        )

    # ---- data: the whole dataset as one tensor -----------------------------------------------------------
    pixels = dataset_pixels(dataset, image_column, resolution, what="train_scorer")
    labels = torch.from_numpy(formatted_column(dataset, label_column))
    labels = labels.to(torch.int64)
    if vae_model is not None:
        vae_model = vae_model.to(device_)
        scale, shift = latent_scale(vae_model)
        parts = []
        for start in range(0, len(pixels), 64):
            mean, _ = encode_posterior(vae_model, pixels_to_tensor(pixels[start : start + 64]).to(device_))
            parts.append(scale_latents(mean, scale, shift))
        data = torch.cat(parts)
    else:
        data = pixels_to_tensor(pixels).to(device_)

    # ---- model, schedule, optimiser (one local generator for everything random) -----------------------
    generator = torch.Generator("cpu").manual_seed(int(seed))
    # construction draws PyTorch's default inits from the global RNG: fork it so that it is left as it
    # was, then overwrite every parameter from our generator
    with torch.random.fork_rng(devices=[]):
        model = DiTTransformer2DModel(**config)
    _init_dit_weights(model, generator)
    model = model.to(device_).train()
    scheduler = dit_ddpm_scheduler()
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, betas=(0.9, 0.999), weight_decay=0.0)
    n = len(data)
    order = torch.empty(0, dtype=torch.int64)
    smoothed = None
    bar = tqdm(range(num_steps), desc="Training scorer", unit="step")
    with _own_label_dropout(model) as (drop_prob, null_id):
        for _ in bar:
            while len(order) < batch_size:  # epoch-wise shuffles, concatenated
                order = torch.cat([order, torch.randperm(n, generator=generator)])
            index, order = order[:batch_size], order[batch_size:]
            x0 = data[index.to(device_)]
            noise = torch.randn(x0.shape, generator=generator).to(device_)
            t = torch.randint(0, scheduler.config.num_train_timesteps, (len(index),), generator=generator)
            y = labels[index]
            if drop_prob > 0:
                y = torch.where(torch.rand(len(index), generator=generator) < drop_prob, null_id, y)
            x_t = scheduler.add_noise(x0, noise, t.to(device_))
            out = model(x_t, timestep=t.to(device_), class_labels=y.to(device_)).sample
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

    # ---- save atomically ----------------------------------------------------------------------------------
    model = model.eval().to("cpu")
    record = {
        "d2c_hf_version": __version__,
        "dataset_fingerprint": getattr(dataset, "_fingerprint", None),
        "num_rows": n,
        "num_classes": info.num_classes,
        "class_names": list(info.names),
        "space": "latent" if vae_model is not None else "pixel",
        "vae": model_provenance(vae_model) if vae_model is not None else None,
        "resolution": resolution,
        "model_config": config,
        "num_steps": num_steps,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "seed": int(seed),
        "final_loss": smoothed,
    }
    with staged_dir(output_dir, "the trained scorer") as tmp:
        if vae_model is not None:
            DiTPipeline(transformer=model, vae=vae_model.to("cpu"), scheduler=scheduler).save_pretrained(tmp)
        else:
            model.save_pretrained(tmp / "transformer")
            scheduler.save_pretrained(tmp / "scheduler")
        write_json(tmp / SCORER_INFO_FILE, record)
        write_record(tmp)  # content checksums, verified when the scorer loads (utils.hub.load_pretrained)
    return output_dir
