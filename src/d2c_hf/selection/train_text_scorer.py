"""A caption-conditioned difficulty scorer trained from scratch on the user's own captioned data: a small
PixArt-style transformer (diffusers ``PixArtTransformer2DModel``: adaLN-single timestep conditioning,
cross-attention to T5 caption tokens), saved as a PixArt pipeline folder that
:meth:`d2c_hf.TextDifficultyScorer.from_pretrained` loads directly. What :func:`d2c_hf.train_scorer` trains when
given ``caption_column``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..utils.checks import check_new_output_dir, check_positive_int, check_positive_number, check_seed
from ..utils.files import staged_dir, write_json
from ..utils.hub import load_pretrained, model_provenance, resolve_device
from .caption_encoders import T5CaptionEncoder
from .denoisers import dit_ddpm_scheduler
from .scorer import SCORER_INFO_FILE
from .training_loop import check_patch_size, denoising_steps, init_transformer_weights, training_inputs

logger = logging.getLogger(__name__)

#: the PixArt ``model_index.json`` of a pixel-space scorer (no VAE), readable by the scorer's loader
PIXEL_PIPELINE = "PixArtAlphaPipeline"


def train_text_scorer(
    dataset: Any,
    output_dir: str | os.PathLike,
    *,
    caption_column: str = "text",
    text_encoder: Any = None,
    tokenizer: Any = None,
    caption_max_length: int | None = None,
    vae: Any = None,
    resolution: int | None = None,
    image_column: str = "image",
    num_steps: int = 500,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    seed: int = 0,
    device: str | torch.device | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
) -> Path:
    """Train a small caption-conditioned PixArt-style transformer on a captioned ``dataset`` to use as the
    difficulty scorer (:class:`~d2c_hf.TextDifficultyScorer`).

    The model is trained with the DDPM epsilon loss on DiT's linear schedule, conditioned on the row's caption
    (the first of a list) encoded once by the frozen ``text_encoder`` (a T5 encoder, as PixArt's), with the
    training recipe of the class-conditional :func:`~d2c_hf.train_scorer` (AdamW, clipping, constant learning
    rate) and one local ``torch.Generator(seed)`` for everything random (weights, data order, noise,
    timesteps): deterministic on CPU, the global RNG untouched. No caption dropout: the model is a scorer, not a
    sampler (it is never asked for an unconditional prediction).

    Default model: hidden size 128 (4 heads x 32), 4 layers, patch size 2 (4 for inputs of 16 or more),
    cross-attention to the caption tokens; ``model_kwargs`` overrides any ``PixArtTransformer2DModel``
    argument except those fixed by the data (``in_channels``, ``out_channels``, ``sample_size``,
    ``caption_channels``).

    Output: a PixArt pipeline folder (``model_index.json``, ``transformer/``, ``text_encoder/``, ``tokenizer/``,
    ``scheduler/``, ``vae/`` in latent space) plus ``d2c_scorer.json``, written atomically.

    Args:
        dataset: a ``datasets.Dataset`` with an image column and ``caption_column`` (strings or lists).
        output_dir: the folder to create; it must not exist or be empty.
        text_encoder: a T5 encoder (folder, Hub id, or a loaded ``T5EncoderModel`` with ``tokenizer=``), saved
            with the scorer; required.
        caption_max_length: tokens per caption (``None``: the longest caption, at most PixArt's 120). Padding
            is masked, so the scorer may encode with another length.
        the other arguments: as :func:`~d2c_hf.train_scorer`.

    Returns:
        ``Path(output_dir)``.
    """
    from datasets import Dataset
    from diffusers import PixArtAlphaPipeline, PixArtTransformer2DModel
    from transformers import AutoTokenizer, T5EncoderModel

    from ..version import __version__
    from .captions import check_caption_column, choose_captions

    # ---- cheap checks -----------------------------------------------------------------------------
    output_dir = check_new_output_dir(output_dir)
    num_steps = check_positive_int(num_steps, "num_steps")
    batch_size = check_positive_int(batch_size, "batch_size")
    check_positive_number(learning_rate, "learning_rate")
    check_seed(seed)
    if caption_max_length is not None:
        check_positive_int(caption_max_length, "caption_max_length")
    if not isinstance(dataset, Dataset):
        raise TypeError(
            f"train_scorer needs a datasets.Dataset (it preprocesses all rows once), got {type(dataset).__name__}"
        )
    if text_encoder is None:
        raise ValueError(
            "train_scorer(..., caption_column=...) trains a caption-conditioned scorer: pass text_encoder=<a T5 "
            "encoder folder or Hub id> (frozen, saved with the scorer)"
        )
    check_caption_column(dataset, caption_column)
    model_kwargs = dict(model_kwargs or {})
    fixed = {"in_channels", "out_channels", "sample_size", "caption_channels"} & set(model_kwargs)
    if fixed:
        raise ValueError(
            f"model_kwargs must not set {sorted(fixed)}: train_scorer derives them from the data"
        )
    if isinstance(text_encoder, (str, os.PathLike)):
        source = text_encoder
        text_encoder = load_pretrained(T5EncoderModel, source, role="text_encoder")
        tokenizer = tokenizer or load_pretrained(AutoTokenizer, source, role="the text tokenizer")
    elif tokenizer is None:
        raise ValueError("pass tokenizer= with a loaded text encoder")

    # ---- data: the images in the scorer's space, the captions encoded once ------------------------------
    device_ = resolve_device(device)
    inputs = training_inputs(dataset, image_column, vae, resolution, device_, "train_scorer")
    values = dataset.select_columns([caption_column])[caption_column]
    captions = choose_captions(values, [0] * len(values), column=caption_column)
    probe = tokenizer([c.lower().strip() for c in captions], truncation=False)["input_ids"]
    length = min(caption_max_length or T5CaptionEncoder.default_max_length, max(map(len, probe)))
    encoder = T5CaptionEncoder(text_encoder, tokenizer, max_length=length, device=device_)
    embeds, masks = [], []
    for start in range(0, len(captions), 64):
        (hidden, mask), _ = encoder.encode(captions[start : start + 64])
        embeds.append(hidden.float())
        masks.append(mask)
    embeds, masks = torch.cat(embeds), torch.cat(masks)
    width = int(embeds.shape[-1])

    # ---- model (one local generator for everything random) ----------------------------------------------
    heads, head_dim = model_kwargs.pop("num_attention_heads", 4), model_kwargs.pop("attention_head_dim", 32)
    config = {
        "num_attention_heads": heads,
        "attention_head_dim": head_dim,
        "num_layers": 4,
        "patch_size": 2 if inputs.sample_size < 16 else 4,
        "cross_attention_dim": heads * head_dim,
        "norm_num_groups": 32,
        "use_additional_conditions": False,
        **model_kwargs,
        "in_channels": inputs.channels,
        "out_channels": inputs.channels,
        "sample_size": inputs.sample_size,
        "caption_channels": width,
    }
    check_patch_size(inputs.sample_size, config["patch_size"])
    generator = torch.Generator("cpu").manual_seed(int(seed))
    with torch.random.fork_rng(devices=[]):  # construction's default inits are overwritten below
        model = PixArtTransformer2DModel(**config)
    init_transformer_weights(model, generator)
    model = model.to(device_).train()
    scheduler = dit_ddpm_scheduler()
    no_size = {"resolution": None, "aspect_ratio": None}

    def condition(index: torch.Tensor) -> dict[str, Any]:
        rows = index.to(device_)
        return {
            "encoder_hidden_states": embeds[rows],
            "encoder_attention_mask": masks[rows],
            "added_cond_kwargs": no_size,
        }

    smoothed = denoising_steps(
        model,
        inputs.data,
        condition,
        scheduler=scheduler,
        num_steps=num_steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        generator=generator,
    )

    # ---- save atomically ----------------------------------------------------------------------------------
    model = model.eval().to("cpu")
    text_encoder = text_encoder.to("cpu")
    record = {
        "d2c_hf_version": __version__,
        "kind": "caption-conditioned",
        "dataset_fingerprint": getattr(dataset, "_fingerprint", None),
        "num_rows": len(inputs.data),
        "caption_column": caption_column,
        "caption_choice": "first",
        "caption_max_length": length,
        "text_encoder": model_provenance(text_encoder),
        "space": "latent" if inputs.vae is not None else "pixel",
        "vae": model_provenance(inputs.vae) if inputs.vae is not None else None,
        "resolution": inputs.resolution,
        "model_config": config,
        "num_steps": num_steps,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "seed": int(seed),
        "final_loss": smoothed,
    }
    with staged_dir(output_dir, "the trained scorer") as tmp:
        if inputs.vae is not None:
            PixArtAlphaPipeline(
                tokenizer=tokenizer,
                text_encoder=text_encoder,
                vae=inputs.vae.to("cpu"),
                transformer=model,
                scheduler=scheduler,
            ).save_pretrained(tmp)
        else:  # a pipeline folder without vae/ (PixArtAlphaPipeline itself needs one): written by component
            from diffusers import __version__ as diffusers_version

            model.save_pretrained(tmp / "transformer")
            text_encoder.save_pretrained(tmp / "text_encoder")
            tokenizer.save_pretrained(tmp / "tokenizer")
            scheduler.save_pretrained(tmp / "scheduler")
            index = {
                "_class_name": PIXEL_PIPELINE,
                "_diffusers_version": diffusers_version,
                "scheduler": ["diffusers", type(scheduler).__name__],
                "text_encoder": ["transformers", type(text_encoder).__name__],
                "tokenizer": ["transformers", type(tokenizer).__name__],
                "transformer": ["diffusers", type(model).__name__],
                "vae": [None, None],
            }
            (tmp / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        write_json(tmp / SCORER_INFO_FILE, record)
    return output_dir


__all__ = ["train_text_scorer"]
