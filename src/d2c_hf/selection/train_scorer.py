"""A difficulty scorer trained from scratch on the user's own data (the paper's "scorer trained from
scratch" setting), for datasets that no pretrained class-conditional model covers.

:func:`train_scorer` trains a small diffusers ``DiTTransformer2DModel`` with the DDPM loss, from one local
``torch.Generator`` (deterministic, the global RNG untouched), and saves it in a layout that
:meth:`d2c_hf.DifficultyScorer.from_pretrained` loads directly, in the right space.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..utils.checks import check_new_output_dir, check_positive_int, check_positive_number, check_seed
from ..utils.checksums import write_record
from ..utils.columns import formatted_column
from ..utils.files import staged_dir, write_json
from ..utils.hub import model_provenance, resolve_device
from .denoisers import dit_ddpm_scheduler
from .scorer import SCORER_INFO_FILE
from .training_loop import check_patch_size, denoising_steps, init_transformer_weights, training_inputs

logger = logging.getLogger(__name__)


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
    caption_column: str | None = None,
    text_encoder: Any = None,
    caption_max_length: int | None = None,
) -> Path:
    """Train a small class-conditional DiT on ``dataset`` to use as the difficulty scorer
    (the paper's "scorer trained from scratch" setting); with ``caption_column``, a small caption-conditioned
    PixArt-style transformer instead (:func:`~d2c_hf.selection.train_text_scorer.train_text_scorer`: the
    ``text_encoder``, a T5, encodes the captions and is saved with it; ``label_column`` is not read).

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
        model_kwargs: ``DiTTransformer2DModel`` arguments (``PixArtTransformer2DModel`` ones with captions).
        caption_column, text_encoder, caption_max_length: a captioned dataset's caption column, the T5 encoder
            (folder or Hub id) and tokens per caption: train the caption-conditioned kind.

    Returns:
        ``Path(output_dir)``.
    """
    from datasets import Dataset
    from diffusers import DiTPipeline, DiTTransformer2DModel

    from ..data.inputs import prepare_dataset
    from ..version import __version__

    if caption_column is not None:
        from .train_text_scorer import train_text_scorer

        return train_text_scorer(
            dataset,
            output_dir,
            caption_column=caption_column,
            text_encoder=text_encoder,
            caption_max_length=caption_max_length,
            vae=vae,
            resolution=resolution,
            image_column=image_column,
            num_steps=num_steps,
            batch_size=batch_size,
            learning_rate=learning_rate,
            seed=seed,
            device=device,
            model_kwargs=model_kwargs,
        )
    if text_encoder is not None or caption_max_length is not None:
        raise ValueError(
            "text_encoder and caption_max_length train a caption-conditioned scorer: pass caption_column"
        )

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
    inputs = training_inputs(dataset, image_column, vae, resolution, device_, "train_scorer")
    config = {
        "num_attention_heads": 4,
        "attention_head_dim": 32,
        "num_layers": 4,
        "patch_size": 2 if inputs.sample_size < 16 else 4,
        **model_kwargs,
        "in_channels": inputs.channels,
        "out_channels": inputs.channels,
        "sample_size": inputs.sample_size,
        "num_embeds_ada_norm": info.num_classes,
    }
    check_patch_size(inputs.sample_size, config["patch_size"])
    labels = torch.from_numpy(formatted_column(dataset, label_column).astype("int64"))  # a writable copy

    # ---- model, schedule, optimiser (one local generator for everything random) -----------------------
    generator = torch.Generator("cpu").manual_seed(int(seed))
    # construction draws PyTorch's default inits from the global RNG: fork it so that it is left as it
    # was, then overwrite every parameter from our generator
    with torch.random.fork_rng(devices=[]):
        model = DiTTransformer2DModel(**config)
    init_transformer_weights(model, generator)
    model = model.to(device_).train()
    scheduler = dit_ddpm_scheduler()
    with _own_label_dropout(model) as (drop_prob, null_id):

        def condition(index: torch.Tensor) -> dict[str, Any]:  # class dropout from the same generator
            y = labels[index]
            if drop_prob > 0:
                y = torch.where(torch.rand(len(index), generator=generator) < drop_prob, null_id, y)
            return {"class_labels": y.to(device_)}

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
    vae_model, resolution, n = inputs.vae, inputs.resolution, len(inputs.data)

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
