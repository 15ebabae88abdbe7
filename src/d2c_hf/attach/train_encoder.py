"""A small vision encoder trained from scratch, self-supervised, on the user's own images: Attach's
visual encoder when no pretrained one fits the data.

The paper's Attach transfers what DINOv2 learnt from far more images (LVD-142M) than the condensed set
holds. :func:`train_vision_encoder` is that idea at the scale of a small dataset: a tiny DINOv2-shaped
``transformers.Dinov2Model`` trained on the *whole* training split (every image, no labels), so the
visual tokens attached to a 10 % subset carry what the encoder learnt from all of it. The folder it
writes is an ordinary ``save_pretrained`` checkpoint with an image processor, so
``VisualAttacher.from_pretrained(folder)`` and ``AutoModel.from_pretrained(folder)`` load it like any
Hub encoder.

The objective is a miniature of DINOv2's own two parts, an image-level and a patch-level one, written in
their simplest well-known forms:

* **image level** (SimCLR, Chen et al. 2020): two random affine views of each image; the mean of each
  view's patch tokens goes through a small projection head ``g``; NT-Xent with temperature ``tau``
  pulls the two views of an image together and pushes the other ``2B - 2`` views of the batch away::

      L_con = -1/(2B) * sum_i log( exp(s(z_i, z_i') / tau) / sum_{k != i} exp(s(z_i, z_k) / tau) )

* **patch level** (SimMIM, Xie et al. 2022): a random ``mask_ratio`` of the first view's patches is
  replaced by DINOv2's mask token (``bool_masked_pos``); a linear head predicts each masked patch's input
  pixels from its output token: ``L_mim = mean over masked patches of || head(h_i) - x_i ||^2``.

``L = L_con + mim_weight * L_mim``. The two heads are training-only and are not saved (like REPA's
projector). Labels are never read: the encoder knows the images, not the classes.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..utils.checks import check_new_output_dir, check_positive_int, check_positive_number, check_seed
from ..utils.checksums import write_record
from ..utils.columns import column_array
from ..utils.files import staged_dir, write_json
from ..utils.hub import resolve_device

logger = logging.getLogger(__name__)

#: DINOv2's normalisation (ImageNet statistics), stored in the saved image processor.
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)
#: The tiny DINOv2 of the digits demo and benchmark: 2 layers, width 64, patch 4 (16 px -> 4x4 tokens).
TINY_DINOV2: dict[str, Any] = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "patch_size": 4,
}
ENCODER_INFO_FILE = "d2c_encoder.json"
#: rows per float32 chunk when the mean patch features are computed
MEAN_CHUNK_ROWS = 1024


def tiny_dinov2(num_tokens: int, **overrides: Any):
    """A ``Dinov2Config`` of :data:`TINY_DINOV2` (plus ``overrides``) whose patch grid at its native
    ``image_size`` holds exactly ``num_tokens`` tokens (a perfect square: the SiT's token grid)."""
    from transformers import Dinov2Config

    grid = math.isqrt(check_positive_int(num_tokens, "num_tokens"))
    if grid * grid != num_tokens:
        raise ValueError(f"num_tokens={num_tokens} is not a perfect square (the SiT's token grid is square)")
    config = {**TINY_DINOV2, **overrides}
    if "image_size" in overrides:
        raise ValueError("image_size is set by num_tokens (grid * patch_size); do not override it")
    return Dinov2Config(**config, image_size=grid * int(config["patch_size"]))


def save_image_processor(folder: str | os.PathLike, input_size: int) -> None:
    """Save DINOv2's image processor (ImageNet mean/std, bicubic, centre crop) for ``input_size`` px
    inputs into ``folder``: what ``VisualAttacher.from_pretrained`` reads the normalisation from."""
    from transformers import BitImageProcessor

    BitImageProcessor(
        size={"shortest_edge": input_size},
        crop_size={"height": input_size, "width": input_size},
        resample=3,  # bicubic
        image_mean=list(IMAGE_MEAN),
        image_std=list(IMAGE_STD),
        do_center_crop=True,
    ).save_pretrained(folder)


def random_affine(x: torch.Tensor, generator: torch.Generator, *, shift: float, scale: float, degrees: float):
    """A random affine view of each image of ``x`` ``(B, C, H, W)``: rotation in ``±degrees``, zoom in
    ``1 ± scale``, translation in ``±shift`` of the side; border pixels extend outwards."""
    b = x.shape[0]
    u = torch.rand(b, 4, generator=generator) * 2 - 1  # in [-1, 1)
    angle = u[:, 0] * math.radians(degrees)
    zoom = 1.0 + u[:, 1] * scale
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(
        [torch.stack([cos, -sin, u[:, 2] * 2 * shift], 1), torch.stack([sin, cos, u[:, 3] * 2 * shift], 1)], 1
    )
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid.to(x.device), mode="bilinear", padding_mode="border", align_corners=False)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent for two views ``(B, d)`` of a batch: cross-entropy of each view against its pair
    among the other ``2B - 1`` (cosine similarities / ``temperature``)."""
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    b = len(z1)
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    return F.cross_entropy(logits, target)


def patchify(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, (H/p)*(W/p), p*p*C)``, row-major patches (DINOv2's token order)."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // patch_size, patch_size, w // patch_size, patch_size)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch_size) * (w // patch_size), -1)


def train_vision_encoder(
    dataset: Any,
    output_dir: str | os.PathLike,
    *,
    num_tokens: int = 16,
    resolution: int | None = None,
    image_column: str = "image",
    num_steps: int = 600,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    mask_ratio: float = 0.5,
    mim_weight: float = 1.0,
    temperature: float = 0.2,
    augment: Mapping[str, float] | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    config_overrides: Mapping[str, Any] | None = None,
) -> Path:
    """Train a tiny DINOv2 on every image of ``dataset`` (self-supervised, labels unused) and save it
    where ``VisualAttacher.from_pretrained(output_dir)`` loads it.

    The model is a ``transformers.Dinov2Model`` of :data:`TINY_DINOV2` (``config_overrides`` change any
    entry but ``image_size``) whose native input, ``sqrt(num_tokens) * patch_size`` px, yields exactly
    ``num_tokens`` patch tokens: pass the SiT's token count (16 for 16 px images with patch 4). Inputs are
    prepared exactly as :class:`~d2c_hf.VisualAttacher` prepares them (:func:`~d2c_hf.attach.attachers.encoder_inputs`:
    ADM crop at ``resolution``, ImageNet normalisation, bicubic resize). The loss is SimCLR's NT-Xent on
    the mean patch token of two random affine views plus SimMIM's masked-patch pixel regression (see the
    module docstring); AdamW (betas 0.9/0.999, weight decay 0.05), cosine learning-rate decay after a 5 %
    warm-up, gradient clipping 1.0.

    Everything random (initialisation, batches, views, masks) comes from ``seed``: the weights are drawn
    inside a forked global RNG (left as it was) and the rest from a local ``torch.Generator``, so the
    same data and seed give the same files on CPU.

    Output (built under a hidden name and renamed into place): ``config.json`` +
    ``model.safetensors`` (``save_pretrained``), ``preprocessor_config.json`` (DINOv2's normalisation)
    and ``d2c_encoder.json`` (the training record: data, settings, the loss curve).

    Args:
        dataset: a ``datasets.Dataset`` with an image column (every row is used; labels are not read).
        output_dir: the folder to create; it must not exist or be empty.
        num_tokens: patch tokens per image (a perfect square).
        resolution: ADM crop side in pixels; ``None`` = the short side of the first image.
        num_steps, batch_size, learning_rate: optimisation settings.
        mask_ratio: fraction of the first view's patches replaced by the mask token (at least one).
        mim_weight: weight of the masked-patch loss (0 = contrastive only).
        temperature: NT-Xent temperature.
        augment: ``{"shift", "scale", "degrees"}`` of the random affine views (default 0.1, 0.1, 10).
        seed: the seed of everything random.
        device: ``None`` = CUDA if available, else CPU.
        config_overrides: ``Dinov2Config`` entries to change.

    Returns:
        ``Path(output_dir)``.
    """
    from datasets import Dataset
    from tqdm.auto import tqdm
    from transformers import Dinov2Model

    from ..utils.images import dataset_pixels, first_image_side
    from ..version import __version__
    from .attachers import encoder_inputs

    # ---- cheap checks ----------------------------------------------------------------------------
    output_dir = check_new_output_dir(output_dir)
    num_steps = check_positive_int(num_steps, "num_steps")
    batch_size = check_positive_int(batch_size, "batch_size")
    check_positive_number(learning_rate, "learning_rate")
    check_positive_number(temperature, "temperature")
    check_seed(seed)
    if not 0.0 < mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must lie in (0, 1), got {mask_ratio}")
    if mim_weight < 0:
        raise ValueError(f"mim_weight must be >= 0, got {mim_weight}")
    views = {"shift": 0.1, "scale": 0.1, "degrees": 10.0, **dict(augment or {})}
    unknown = set(views) - {"shift", "scale", "degrees"}
    if unknown:
        raise ValueError(f"augment has unknown keys {sorted(unknown)}; use shift, scale and degrees")
    if not isinstance(dataset, Dataset):
        raise TypeError(
            "train_vision_encoder needs a datasets.Dataset (it preprocesses all rows once), got "
            f"{type(dataset).__name__}"
        )
    if image_column not in dataset.column_names:
        raise ValueError(
            f"image_column={image_column!r} is not a column of the dataset; available: {dataset.column_names}"
        )
    if len(dataset) < 2:
        raise ValueError(
            f"train_vision_encoder needs at least 2 images (contrastive pairs), got {len(dataset)}"
        )
    config = tiny_dinov2(num_tokens, **dict(config_overrides or {}))
    patch = int(config.patch_size)
    input_size = int(config.image_size)
    device_ = resolve_device(device)

    # ---- data: every image, once, as the encoder sees it ----------------------------------------
    if resolution is None:
        resolution = first_image_side(dataset, image_column)
    resolution = check_positive_int(resolution, "resolution")
    pixels = dataset_pixels(dataset, image_column, resolution, what="train_vision_encoder")
    inputs = encoder_inputs(pixels, image_mean=IMAGE_MEAN, image_std=IMAGE_STD, input_size=input_size)
    n, tokens = len(inputs), num_tokens

    # ---- model and heads (initialised from the seed inside a forked RNG), optimiser ------------------
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = Dinov2Model(config)
        width = int(config.hidden_size)
        projection = torch.nn.Sequential(
            torch.nn.Linear(width, width), torch.nn.GELU(), torch.nn.Linear(width, width)
        )
        pixel_head = torch.nn.Linear(width, patch * patch * 3)
    model.to(device_).train()
    projection.to(device_).train()
    pixel_head.to(device_).train()
    params = [*model.parameters(), *projection.parameters(), *pixel_head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, betas=(0.9, 0.999), weight_decay=0.05)
    warmup = max(1, num_steps // 20)

    def lr_at(step: int) -> float:  # linear warm-up, then cosine decay to 0
        if step < warmup:
            return learning_rate * (step + 1) / warmup
        progress = (step - warmup) / max(1, num_steps - warmup)
        return learning_rate * 0.5 * (1.0 + math.cos(math.pi * progress))

    generator = torch.Generator("cpu").manual_seed(int(seed))
    num_masked = max(1, round(mask_ratio * tokens))
    order = torch.empty(0, dtype=torch.int64)
    history: list[dict[str, float]] = []
    smoothed: dict[str, float] = {}
    bar = tqdm(range(num_steps), desc="Training vision encoder", unit="step")
    for step in bar:
        while len(order) < batch_size:  # epoch-wise shuffles, concatenated
            order = torch.cat([order, torch.randperm(n, generator=generator)])
        index, order = order[: min(batch_size, n)], order[min(batch_size, n) :]
        x = inputs[index]
        view_a = random_affine(x, generator, **views).to(device_)
        view_b = random_affine(x, generator, **views).to(device_)
        masked = torch.rand(len(index), tokens, generator=generator).argsort(dim=1)[:, :num_masked]
        mask = torch.zeros(len(index), tokens, dtype=torch.bool).scatter_(1, masked, True).to(device_)
        hidden_a = model(pixel_values=view_a, bool_masked_pos=mask).last_hidden_state[:, -tokens:]
        hidden_b = model(pixel_values=view_b).last_hidden_state[:, -tokens:]
        loss_con = nt_xent(projection(hidden_a.mean(1)), projection(hidden_b.mean(1)), temperature)
        target = patchify(view_a, patch)
        loss_mim = (pixel_head(hidden_a[mask]) - target[mask]).square().mean()
        loss = loss_con + mim_weight * loss_mim
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        values = {"loss": loss.item(), "contrastive": loss_con.item(), "masked_patches": loss_mim.item()}
        if not math.isfinite(values["loss"]):
            raise FloatingPointError(f"train_vision_encoder diverged at step {step} (loss {values['loss']})")
        smoothed = {k: v if k not in smoothed else 0.95 * smoothed[k] + 0.05 * v for k, v in values.items()}
        if (step + 1) % max(1, num_steps // 20) == 0 or step + 1 == num_steps:
            history.append({"step": step + 1, **smoothed})
        bar.set_postfix(loss=f"{smoothed['loss']:.4f}")
    logger.info(
        "train_vision_encoder: %d steps on %d images, final smoothed losses %s",
        num_steps,
        n,
        ", ".join(f"{k} {v:.4f}" for k, v in smoothed.items()),
    )

    # ---- save atomically -------------------------------------------------------------------------------
    model = model.eval().to("cpu")
    record = {
        "d2c_hf_version": __version__,
        "objective": "SimCLR NT-Xent on the mean patch token of two affine views + SimMIM masked-patch pixels",
        "dataset_fingerprint": getattr(dataset, "_fingerprint", None),
        "num_rows": n,
        "labels_used": False,
        "resolution": resolution,
        "input_size": input_size,
        "num_tokens": num_tokens,
        "num_steps": num_steps,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "mask_ratio": mask_ratio,
        "mim_weight": mim_weight,
        "temperature": temperature,
        "augment": views,
        "seed": int(seed),
        "loss_curve": history,
    }
    with staged_dir(output_dir, "the trained vision encoder") as tmp:
        model.save_pretrained(tmp)
        save_image_processor(tmp, input_size)
        write_json(tmp / ENCODER_INFO_FILE, record)
        write_record(tmp)  # content checksums, verified when the encoder loads (utils.hub.load_pretrained)
    return output_dir


def mean_patch_features(encoder_dir: str | os.PathLike, dataset: Any, *, num_tokens: int, resolution: int):
    """``(N, d)`` float32: the mean of each image's visual tokens, as ``VisualAttacher`` stores them, for
    every row of ``dataset`` (a feature space for herding / k-center, or a linear probe)."""
    from .attachers import VisualAttacher

    attacher = VisualAttacher.from_pretrained(encoder_dir, num_tokens=num_tokens, resolution=resolution)
    out = attacher.apply(dataset.select_columns([attacher.image_column]))
    tokens = column_array(out, "visual_embeds")  # (N, h, d) float16, read columnar
    means = np.empty((len(tokens), tokens.shape[-1]), np.float32)
    for start in range(0, len(tokens), MEAN_CHUNK_ROWS):  # float32 one chunk at a time (each row alone)
        means[start : start + MEAN_CHUNK_ROWS] = (
            tokens[start : start + MEAN_CHUNK_ROWS].astype(np.float32).mean(axis=1)
        )
    return means
