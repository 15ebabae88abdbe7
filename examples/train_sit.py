#!/usr/bin/env python
# Copyright 2025 The d2c-hf authors. Apache-2.0.
"""Train a SiT on a D2C condensed dataset with the REPA recipe (diffusers-examples style).

    accelerate launch examples/train_sit.py --dataset path/or/hub-id --output_dir sit-d2c

Flow matching (``x_t = (1 - t) x + t eps``, velocity target ``eps - x``) plus REPA's projection loss on
the dataset's stored visual tokens, with DC-Embedding of the class text (D2C). AdamW 1e-4, betas
(0.9, 0.999), no weight decay, clip 1.0, EMA 0.9999, global batch 256, class dropout 0.1 (CFG).

A captioned set (text-to-image: per-row ``caption_embeds``/``caption_mask``, docs/text-to-image.md) trains a
text-conditioned SiT instead: caption tokens through cross-attention, caption dropout 0.1 (``--cfg_prob``) to the
empty caption, the same REPA loss; the set's text encoder (``info["text_to_image"]["text_encoder"]``, or
``--text_encoder``) encodes the empty caption and is saved with the pipeline, which then takes prompts.

Checkpoints (``checkpoint-N/``, written whole, then renamed into place) restore the model, EMA,
optimizer, grad scaler, every process's RNG and the data stream exactly: N steps + resume + N steps
equals 2N steps bit for bit; a checkpoint with a missing or damaged file is refused by name (see
docs/training.md, "Errors and recovery"). The final ``SiTPipeline`` (EMA weights, class text table set, the
dataset's VAE or none in pixel space, ``id2label`` from the class names) is saved to ``output_dir``.
See docs/training.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

# the checkpoint layout and its checks live in the library (d2c_hf.train.checkpoints, unit-tested there)
from d2c_hf.train.checkpoints import (
    CHECKPOINT_RE,
    DATA_STATE_NAME,
    EMA_STATE_NAME,
    VALIDATION_DIR,
    WEIGHTS_NAME,
    check_checkpoint_config,
    find_checkpoint,
    list_checkpoints,
    prune_checkpoints,
    resume_verdict,
)
from d2c_hf.utils.files import staged_dir

logger = logging.getLogger("train_sit")


#: arguments never written to disk, logged, sent to a tracker or put in the model card
SECRET_ARGS = ("hub_token",)
#: model config keys set from the dataset's shapes (an override of one can only mismatch)
DATASET_DECIDES = {
    "sample_size",
    "in_channels",
    "num_classes",
    "text_embed_dim",
    "text_seq_len",
    "z_dims",
    "caption_embed_dim",
    "caption_seq_len",
}


# --------------------------------------------------------------------------------------
# arguments
# --------------------------------------------------------------------------------------


def parse_args(input_args: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train SiT on a D2C condensed dataset (REPA recipe).")
    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset", required=True, help="CondensedDataset folder (save_to_disk / Hub layout) or Hub id."
    )
    data.add_argument("--revision", default=None, help="Hub revision of --dataset.")
    data.add_argument(
        "--vae",
        default=None,
        help="VAE for sampling (folder or Hub id); default: the one recorded in the dataset's info (none in pixel "
        'space); "none" saves the pipeline without a VAE (it then returns model-space latents as images).',
    )
    data.add_argument(
        "--text_encoder",
        default=None,
        help="Captioned sets: the caption encoder (folder or Hub id; its tokenizer beside it); default: the one "
        "recorded in the dataset's info. Checked against the stored caption tokens before training.",
    )
    data.add_argument(
        "--data_max_in_memory_gb",
        type=float,
        default=8.0,
        help="Hold whole columns in memory up to this size; beyond it read batches through Arrow.",
    )
    model = parser.add_argument_group("model")
    model.add_argument("--model", default="SiT-XL/2", help="SiT preset (SiT-{S,B,L,XL}/{2,4,8}).")
    model.add_argument(
        "--model_config_overrides",
        default=None,
        help='JSON dict of SiTTransformer2DModel config overrides, e.g. \'{"depth":4,"hidden_size":96,"num_attention_heads":4}\'.',
    )
    model.add_argument(
        "--encoder_depth",
        type=int,
        default=None,
        help="Block whose output the projector reads (default: 8 for L/XL, 4 for S/B; depth//3 capped to [1, 8]).",
    )
    model.add_argument("--projector_dim", type=int, default=2048, help="REPA projector hidden width.")
    model.add_argument(
        "--use_visual",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="REPA projection loss on the stored visual tokens (default: on if the dataset has them).",
    )
    model.add_argument(
        "--use_text",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="DC-Embedding of the class text (default: on if the dataset has a classes table with text).",
    )
    model.add_argument("--proj_coeff", type=float, default=0.5, help="Weight of the projection loss.")
    model.add_argument(
        "--weighting",
        choices=("uniform", "lognormal"),
        default="uniform",
        help="Time sampling: t ~ U(0,1) or logit-normal(0,1).",
    )
    model.add_argument(
        "--cfg_prob",
        type=float,
        default=0.1,
        help="Class dropout probability (null class, for CFG); for a captioned set the caption dropout "
        "probability (to the empty caption).",
    )
    model.add_argument("--gradient_checkpointing", action="store_true", help="Trade compute for memory.")
    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--learning_rate", type=float, default=1e-4)
    opt.add_argument("--adam_beta1", type=float, default=0.9)
    opt.add_argument("--adam_beta2", type=float, default=0.999)
    opt.add_argument("--adam_weight_decay", type=float, default=0.0)
    opt.add_argument("--adam_epsilon", type=float, default=1e-8)
    opt.add_argument("--max_grad_norm", type=float, default=1.0)
    opt.add_argument(
        "--train_batch_size",
        type=int,
        default=256,
        help="Global batch per forward pass, split over processes (REPA's semantics); x gradient_accumulation_steps per update.",
    )
    opt.add_argument("--gradient_accumulation_steps", type=int, default=1)
    opt.add_argument("--max_train_steps", type=int, default=400_000, help="Optimizer steps.")
    opt.add_argument(
        "--mixed_precision",
        choices=("no", "fp16", "bf16"),
        default=None,
        help="Default: accelerate's config if set, else fp16 on CUDA (REPA) and no on CPU.",
    )
    opt.add_argument("--ema_decay", type=float, default=0.9999)
    opt.add_argument("--allow_tf32", action="store_true", help="Allow TF32 matmuls on Ampere+ GPUs.")
    opt.add_argument("--seed", type=int, default=0)
    run = parser.add_argument_group("run")
    run.add_argument("--output_dir", default="sit-d2c")
    run.add_argument("--checkpointing_steps", type=int, default=50_000)
    run.add_argument("--checkpoints_total_limit", type=int, default=None)
    run.add_argument(
        "--resume_from_checkpoint",
        default=None,
        help='A checkpoint-N folder (a path, or a name in --output_dir), or "latest" in --output_dir.',
    )
    run.add_argument(
        "--allow_inexact_resume",
        action="store_true",
        help="Resume even when a process's random_states_<rank>.pkl is missing or unreadable (with a warning): "
        "the run then no longer matches an uninterrupted one. Without it such a resume is refused.",
    )
    run.add_argument("--validation_steps", type=int, default=10_000, help="Sample a grid every N steps.")
    run.add_argument("--num_validation_images", type=int, default=16)
    run.add_argument(
        "--save_validation_pipelines",
        action="store_true",
        help="Also save the EMA pipeline at every validation step (and the last) under "
        f"<output_dir>/{VALIDATION_DIR}/step-NNNNNN, to evaluate them outside the training process "
        "(what `d2c demo` and `d2c benchmark` do).",
    )
    run.add_argument(
        "--validation_classes",
        nargs="+",
        default=None,
        help="Class names or ids of the grid (default: cycle through the classes).",
    )
    run.add_argument(
        "--validation_prompts",
        nargs="+",
        default=None,
        help="Captioned sets: the prompts of the grid (default: captions of evenly spaced rows of the set).",
    )
    run.add_argument("--num_inference_steps", type=int, default=50, help="Sampler steps for the grids.")
    run.add_argument(
        "--validation_guidance_scale",
        type=float,
        default=1.0,
        help="CFG scale of the grids: >= 1 (1 = no guidance); above 1 needs --cfg_prob > 0 (the null class).",
    )
    run.add_argument("--logging_steps", type=int, default=100, help="Loss averaging/logging window.")
    run.add_argument(
        "--report_to", default="none", help='"none", "tensorboard", "wandb", ... (optional trackers).'
    )
    run.add_argument("--logging_dir", default="logs")
    run.add_argument("--tracker_project_name", default="d2c-sit")
    run.add_argument("--push_to_hub", action="store_true")
    run.add_argument("--hub_model_id", default=None)
    run.add_argument(
        "--skip_checksums",
        action="store_true",
        help="Do not verify the content checksums of --dataset and of the checkpoint resumed from (each costs one "
        "read of its files, see docs/errors.md); for huge sets. Row counts, fingerprints and headers are still "
        "checked.",
    )
    run.add_argument(
        "--debug", action="store_true", help="On an error, show the traceback (default: one line)."
    )
    run.add_argument(
        "--hub_token",
        default=None,
        help="Deprecated: log in with `hf auth login` or set HF_TOKEN instead (a token on the command line shows "
        "in the process list and shell history). Kept for compatibility; never written to args.json, logs, "
        "trackers or the model card.",
    )
    args = parser.parse_args(input_args)

    for name in (
        "train_batch_size",
        "gradient_accumulation_steps",
        "max_train_steps",
        "checkpointing_steps",
        "validation_steps",
        "logging_steps",
        "num_inference_steps",
    ):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.num_validation_images < 0:
        parser.error("--num_validation_images must be >= 0")
    for name in (
        "data_max_in_memory_gb",
        "proj_coeff",
        "cfg_prob",
        "learning_rate",
        "adam_beta1",
        "adam_beta2",
        "adam_weight_decay",
        "adam_epsilon",
        "max_grad_norm",
        "ema_decay",
        "validation_guidance_scale",
    ):
        if not math.isfinite(getattr(args, name)):
            parser.error(f"--{name} must be a finite number, got {getattr(args, name)}")
    for name, hint in (
        ("learning_rate", ""),
        ("adam_epsilon", ""),
        ("max_grad_norm", " (gradient clipping; 0 or less would zero or flip the gradients)"),
    ):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be > 0{hint}, got {getattr(args, name)}")
    for name in ("adam_beta1", "adam_beta2"):
        if not 0.0 <= getattr(args, name) < 1.0:
            parser.error(f"--{name} must be in [0, 1), got {getattr(args, name)}")
    for name in ("adam_weight_decay", "proj_coeff", "data_max_in_memory_gb"):
        if getattr(args, name) < 0:
            parser.error(f"--{name} must be >= 0, got {getattr(args, name)}")
    if not 0.0 <= args.cfg_prob < 1.0:
        parser.error(f"--cfg_prob must be in [0, 1), got {args.cfg_prob}")
    # the sampling pipeline's rules (SiTPipeline.check_inputs, applied again to the built pipeline in main):
    # checked now, not at the first validation grid hours later
    if args.validation_guidance_scale < 1.0:
        parser.error(
            f"--validation_guidance_scale must be >= 1 (1 = no guidance), got {args.validation_guidance_scale}"
        )
    if args.validation_guidance_scale > 1.0 and args.cfg_prob <= 0:
        parser.error(
            f"--validation_guidance_scale {args.validation_guidance_scale} needs the null class, which --cfg_prob 0 "
            "never trains: pass --cfg_prob > 0 (REPA: 0.1) or --validation_guidance_scale 1"
        )
    if args.validation_classes and not args.num_validation_images:
        parser.error("--validation_classes needs --num_validation_images > 0 (no grid is drawn without it)")
    if not 0.0 <= args.ema_decay <= 1.0:
        parser.error(f"--ema_decay must be in [0, 1], got {args.ema_decay}")
    if not 0 <= args.seed < 2**32:
        parser.error(f"--seed must be in [0, 2**32), got {args.seed}")
    if args.checkpoints_total_limit is not None and args.checkpoints_total_limit < 1:
        parser.error("--checkpoints_total_limit must be >= 1")
    if args.encoder_depth is not None and args.encoder_depth < 1:
        parser.error(f"--encoder_depth must be >= 1 (a 1-based block index), got {args.encoder_depth}")
    if args.projector_dim < 1:
        parser.error(f"--projector_dim must be >= 1, got {args.projector_dim}")
    from accelerate.utils import LoggerType

    trackers = ("none", *LoggerType.list())
    if args.report_to not in trackers:
        parser.error(f"--report_to must be one of {', '.join(trackers)}; got {args.report_to!r}")
    if args.model_config_overrides:
        try:
            overrides = json.loads(args.model_config_overrides)
        except json.JSONDecodeError as err:
            parser.error(f"--model_config_overrides is not valid JSON: {err}")
        if not isinstance(overrides, dict):
            parser.error("--model_config_overrides must be a JSON object")
    return args


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def model_config(args: argparse.Namespace, source: Any) -> dict[str, Any]:
    """The SiTTransformer2DModel config: preset + dataset shapes + REPA/D2C parts + overrides."""
    from d2c_hf.models.transformer_sit import SIT_PRESETS, default_encoder_depth

    if args.model not in SIT_PRESETS:
        default_encoder_depth(args.model)  # raises, listing the presets
    overrides = model_config_overrides(args)
    channels, size, _ = source.latent_shape
    config: dict[str, Any] = {
        **SIT_PRESETS[args.model],
        "sample_size": size,
        "in_channels": channels,
        "num_classes": source.num_classes,
        "class_dropout_prob": args.cfg_prob,
        "projector_dim": args.projector_dim,
    }
    if source.use_text:
        length, dim = source.text_shape
        config.update(text_embed_dim=dim, text_seq_len=length)
    if source.captioned:  # text-to-image: no classes; the groups of a captioned set are not a condition
        length, dim = source.caption_shape
        config.update(
            num_classes=0, caption_embed_dim=dim, caption_seq_len=length, caption_dropout_prob=args.cfg_prob
        )
    if source.use_visual:
        config["z_dims"] = [source.visual_shape[1]]
    config.update(overrides)
    if config.get("z_dims"):
        config["encoder_depth"] = (
            args.encoder_depth
            if args.encoder_depth is not None
            else config.get("encoder_depth") or default_encoder_depth(int(config["depth"]))
        )
    return config


def model_config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``--model_config_overrides`` as a dict; unknown keys raise, listing the model's config keys."""
    import inspect

    from d2c_hf.models.transformer_sit import SiTTransformer2DModel

    overrides = json.loads(args.model_config_overrides) if args.model_config_overrides else {}
    known = [n for n in inspect.signature(SiTTransformer2DModel.__init__).parameters if n != "self"]
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise ValueError(
            f"--model_config_overrides has unknown keys {unknown}; SiTTransformer2DModel takes {', '.join(known)}"
        )
    return overrides


def recorded_args(args: argparse.Namespace) -> dict[str, Any]:
    """The arguments as written to ``args.json`` and sent to trackers: everything but :data:`SECRET_ARGS`."""
    return {k: v for k, v in vars(args).items() if k not in SECRET_ARGS}


def report_to_trackers(args: argparse.Namespace) -> list[Any] | None:
    """``Accelerator(log_with=...)`` for ``--report_to``; refuses a tracker whose package is missing (accelerate
    would only warn, and the run would log nothing)."""
    if args.report_to == "none":
        return None
    from accelerate.tracking import get_available_trackers

    available = [str(t) for t in get_available_trackers()]
    if args.report_to == "all" and not available:
        raise ValueError(
            "--report_to all: no tracker package is installed; install one or pass --report_to none"
        )
    if args.report_to != "all" and args.report_to not in available:
        package = {"comet_ml": "comet-ml"}.get(args.report_to, args.report_to)
        raise ValueError(
            f"--report_to {args.report_to}: the {args.report_to} package is not installed (accelerate would "
            f"only warn and log nothing); pip install {package}, or pass --report_to none"
        )
    return [args.report_to]


def check_run_inputs(args: argparse.Namespace) -> None:
    """Cheap checks of the run's surroundings, before anything is loaded or written."""
    from d2c_hf.models.transformer_sit import SIT_PRESETS, default_encoder_depth

    if args.model not in SIT_PRESETS:
        default_encoder_depth(args.model)  # raises ValueError listing the presets
    model_config_overrides(args)
    output_dir = Path(args.output_dir)
    for folder in (output_dir, *output_dir.parents):
        if folder.exists():
            if not folder.is_dir():
                where = "is a file" if folder == output_dir else f"is inside {folder}, which is a file"
                raise ValueError(f"--output_dir {output_dir} {where}; pass a folder path")
            break
    check_outputs_apart(args)
    if args.vae is not None:
        from d2c_hf.utils.roles import check_model_role
        from d2c_hf.utils.spaces import is_pixel_space

        if not is_pixel_space(args.vae):
            check_model_role(args.vae, "vae", "--vae")
    report_to_trackers(args)
    if args.hub_token is not None:
        logger.warning(
            "--hub_token is deprecated (a token on the command line shows in the process list and shell "
            "history): log in once with `hf auth login`, or set HF_TOKEN"
        )
    if args.push_to_hub:
        from huggingface_hub import constants, get_token

        if constants.is_offline_mode():
            raise ValueError(
                "--push_to_hub cannot upload while HF_HUB_OFFLINE=1 is set; unset it, or train without "
                "--push_to_hub and upload output_dir later with `hf upload`"
            )
        if args.hub_token is None and get_token() is None:
            raise ValueError(
                "--push_to_hub needs a Hub token and none is set: log in with `hf auth login` or set HF_TOKEN "
                "(checked now so that the upload does not fail after training)"
            )
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        repo_id = args.hub_model_id or Path(args.output_dir).name
        try:  # the name the upload will use, checked now rather than after training
            validate_repo_id(repo_id)
        except HFValidationError as err:
            flag = "--hub_model_id" if args.hub_model_id else "the --output_dir name (the default repo name)"
            raise ValueError(f"{flag} {repo_id!r} is not a valid Hub repo id: {err}") from err


def check_outputs_apart(args: argparse.Namespace) -> None:
    """Refuse an --output_dir that is, contains or lies inside an input (the dataset, the VAE, a checkpoint of
    another run): the model card, sample grids and checkpoints would land among them. Resuming from a
    checkpoint inside --output_dir (the run's own) is the exception."""
    from d2c_hf.utils.files import check_apart

    output_dir = Path(args.output_dir)
    inputs = {"--dataset": args.dataset, "--vae": args.vae}
    resume = args.resume_from_checkpoint
    if resume and resume != "latest" and Path(resume).exists():
        own = Path(os.path.realpath(output_dir)) in Path(os.path.realpath(resume)).parents
        if not own:
            inputs["--resume_from_checkpoint"] = resume
    check_apart(output_dir, inputs, "--output_dir")


def load_sampling_vae(args: argparse.Namespace, condensed: Any):
    """The dataset's VAE (from --vae, else the info record), or None in pixel space."""
    from d2c_hf.utils.spaces import is_pixel_space
    from d2c_hf.utils.vae import load_vae

    latents = condensed.info.get("latents") or {}
    if (args.vae is None and latents.get("space") == "pixel") or (
        args.vae is not None and is_pixel_space(args.vae)
    ):
        return None
    record = latents.get("vae") or {}
    name = args.vae or record.get("name_or_path")
    if not name:
        raise ValueError(
            "the dataset's info records no VAE (info['latents']['vae']); pass --vae (folder or Hub id)"
        )
    if args.vae is None and record.get("subfolder"):
        name = os.path.join(name, record["subfolder"]) if os.path.isdir(name) else name
    try:
        return load_vae(name, dtype=torch.float32, device=torch.device("cpu"))
    except (OSError, ValueError) as err:
        raise ValueError(
            f"could not load the dataset's VAE {name!r} ({err}); pass --vae with a local folder or Hub id"
        ) from err


def labeled_grid(images: list, names: list[str], columns: int | None = None):
    """A PIL grid of ``images`` with each class name written under its tile."""
    from PIL import Image, ImageDraw

    columns = columns or min(len(images), 8)
    rows = math.ceil(len(images) / columns)
    width, height = images[0].size
    caption = 12
    grid = Image.new("RGB", (columns * width, rows * (height + caption)), "white")
    draw = ImageDraw.Draw(grid)
    for i, (image, name) in enumerate(zip(images, names)):
        x, y = (i % columns) * width, (i // columns) * (height + caption)
        grid.paste(image.convert("RGB"), (x, y))
        draw.text((x + 1, y + height), name[: max(1, width // 6)], fill="black")
    return grid


def write_model_card(
    output_dir: Path, args: argparse.Namespace, condensed: Any, result: dict[str, Any]
) -> None:
    from huggingface_hub import ModelCard, ModelCardData

    from d2c_hf.pipelines.sit.model_card import licence_section, text_tags, usage_section

    selection = condensed.info.get("selection") or {}
    budget = condensed.info.get("budget") or {}
    license = condensed.info.get("license") or "other"  # the weights inherit the training data's licence
    captioned = result["use_captions"]
    data = ModelCardData(
        library_name="diffusers",
        license=license,
        tags=text_tags()
        if captioned
        else ["d2c", "d2c-hf", "sit", "repa", "flow-matching", "class-conditional", "image-generation"],
        datasets=[args.dataset]
        if args.dataset.count("/") == 1 and not os.path.exists(args.dataset)
        else None,
    )
    where = args.hub_model_id or args.output_dir
    if captioned:
        prompts = (
            list(condensed.samples.select(evenly_spaced_rows(len(condensed), 2))["caption"])
            if ("caption" in condensed.samples.column_names)
            else ["a photo"]
        )
        usage = usage_section(where, None, prompts=prompts)
        groups = ((condensed.info.get("text_to_image") or {}).get("groups") or {}).get("num_groups")
        content = f"{len(condensed)} captioned images in {groups or condensed.num_classes} groups"
        conditioning = (
            f"captions (cross-attention to the saved `text_encoder`'s tokens; caption dropout {args.cfg_prob} to the "
            "empty caption, for guidance)"
        )
    else:
        usage = usage_section(where, list(condensed.class_names[:2]))
        content = (
            f"{budget.get('images_per_class')} images per class, {len(condensed)} images, "
            f"{condensed.num_classes} classes"
        )
        conditioning = f"class text (DC-Embedding): {result['use_text']}"
    licence = licence_section(
        license,
        [args.dataset],
        notes=[
            "The condensed dataset's card names the source dataset's licence, and carries a non-commercial note "
            "when its difficulty scores came from DiT (CC BY-NC 4.0)."
        ],
    )
    kind = "text-to-image " if captioned else ""
    text = f"""---
{data.to_yaml()}
---

# SiT {kind}trained on a D2C condensed dataset

A `{args.model}` SiT (overrides: `{args.model_config_overrides or "none"}`) trained with
`examples/train_sit.py` of d2c-hf (REPA recipe) on the condensed dataset **`{args.dataset}`**
(strategy `{selection.get("strategy")}`, {content}).

* steps: {result["global_step"]}, global batch {args.train_batch_size} x {args.gradient_accumulation_steps}
  accumulation, lr {args.learning_rate}, EMA {args.ema_decay}, mixed precision `{result["mixed_precision"]}`
* visual alignment (REPA): {result["use_visual"]} (proj_coeff {args.proj_coeff}); conditioning: {conditioning}
* final loss (mean of the last {args.logging_steps} steps): {result["final_loss"]:.4f}
* weights: EMA; sampler: `FlowMatchEulerMaruyamaScheduler` (REPA's SDE)

{usage}
{licence}"""
    ModelCard(text).save(output_dir / "README.md")


def evenly_spaced_rows(num_rows: int, count: int) -> list[int]:
    """``count`` distinct rows spread over ``range(num_rows)`` (all of them when there are fewer)."""
    if count >= num_rows:
        return list(range(num_rows))
    return sorted(set(np.linspace(0, num_rows - 1, count).round().astype(int).tolist()))


def validation_captions(args: argparse.Namespace, condensed: Any) -> list[str]:
    """The grid's prompts: ``--validation_prompts``, else the captions of evenly spaced rows of a captioned set."""
    if args.validation_prompts:
        return list(args.validation_prompts)
    if not args.num_validation_images:
        return []
    if "caption" not in condensed.samples.column_names:
        raise ValueError(
            "the captioned dataset has no 'caption' column to draw validation prompts from; pass "
            "--validation_prompts or --num_validation_images 0"
        )
    rows = evenly_spaced_rows(len(condensed), args.num_validation_images)
    captions = condensed.samples.select(rows)["caption"]
    return [captions[i % len(captions)] for i in range(args.num_validation_images)]


def prepare_caption_encoder(
    args: argparse.Namespace, condensed: Any, model: Any, device: torch.device
) -> tuple[tuple[Any, Any], tuple[torch.Tensor, torch.Tensor]]:
    """Load the captioned set's text encoder (``--text_encoder`` or the one its info names), check that it re-encodes
    a few stored captions to their stored tokens, and encode the empty caption.

    Returns ``((text_encoder, tokenizer), (empty_embeds (L, D), empty_mask (L,)))`` (the caption tensors on the CPU).
    """
    from d2c_hf.pipelines import FlowMatchEulerMaruyamaScheduler, SiTPipeline
    from d2c_hf.train.captions import caption_info, check_caption_encoder, load_caption_encoder

    record = caption_info(condensed.info).get("text_encoder")
    with torch.random.fork_rng(devices=[]):  # loading draws no training randomness
        text_encoder, tokenizer = load_caption_encoder(record, args.text_encoder)
    text_encoder.to(device)
    probe = SiTPipeline(
        transformer=model,
        scheduler=FlowMatchEulerMaruyamaScheduler(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
    )
    name = f"--text_encoder {args.text_encoder}" if args.text_encoder else "the dataset's text encoder"
    if "caption" in condensed.samples.column_names:
        rows = evenly_spaced_rows(len(condensed), 4)
        stored = condensed.samples.select(rows).with_format(
            "numpy", columns=["caption", "caption_embeds", "caption_mask"]
        )
        check_caption_encoder(
            lambda prompts: probe.encode_prompt(prompts, device),
            list(stored["caption"]),
            stored["caption_embeds"],
            stored["caption_mask"],
            rows,
            name=name,
        )
    else:
        logger.warning("the captioned dataset has no 'caption' column: the text encoder cannot be checked")
    embeds, mask = probe.encode_prompt([""], device)
    return (text_encoder, tokenizer), (embeds[0].cpu(), mask[0].cpu())


# --------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------


def main(args: argparse.Namespace, eval_callback=None) -> dict[str, Any]:
    """Train; returns ``{"output_dir", "global_step", "final_loss", "loss_history", "pipeline_dir",
    "samples", "steps_per_second", "use_visual", "use_text", "checkpoints"}``.

    ``eval_callback(step, pipeline)`` runs on the main process every ``--validation_steps`` steps and
    after the last one, with a ``SiTPipeline`` on the EMA weights in eval mode; it cannot change the
    training RNG or data order. The main process holds ``--output_dir``'s lock (one run per folder) from
    its first write to the end.
    """
    with contextlib.ExitStack() as lock:
        return train(args, eval_callback, lock)


def train(args: argparse.Namespace, eval_callback: Any, lock: contextlib.ExitStack) -> dict[str, Any]:
    """:func:`main`'s body; ``lock`` holds the output folder's lock once taken."""
    from accelerate import Accelerator
    from accelerate.logging import get_logger
    from accelerate.utils import DistributedType, ProjectConfiguration, broadcast_object_list, set_seed
    from diffusers.training_utils import EMAModel
    from safetensors.torch import load_file

    from d2c_hf.condensed.dataset import CondensedDataset
    from d2c_hf.models.transformer_sit import SiTTransformer2DModel
    from d2c_hf.pipelines import FlowMatchEulerMaruyamaScheduler, SiTPipeline
    from d2c_hf.run.workdir import work_lock
    from d2c_hf.train.batches import BatchSource
    from d2c_hf.train.checkpoints import STALE_PATTERNS
    from d2c_hf.train.losses import compute_loss, seeded_generator
    from d2c_hf.utils.checksums import write_record
    from d2c_hf.utils.files import atomic_write, renamed_os_error, staged_entries, write_json

    check_run_inputs(args)  # presets, override keys, output_dir, trackers, Hub login: before anything starts
    output_dir = Path(args.output_dir)
    mixed_precision = args.mixed_precision
    if mixed_precision is None and "ACCELERATE_MIXED_PRECISION" not in os.environ:
        mixed_precision = "fp16" if torch.cuda.is_available() else "no"
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=mixed_precision,
        log_with=report_to_trackers(args),
        project_config=ProjectConfiguration(
            project_dir=str(output_dir), logging_dir=str(output_dir / args.logging_dir)
        ),
    )
    if accelerator.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        raise ValueError(
            "--mixed_precision fp16 (or accelerate's config) needs a GPU; on the CPU accelerate would silently "
            "train in float32. Use --mixed_precision bf16 or no on the CPU"
        )
    log = get_logger("train_sit")
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if args.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    # ---- the checkpoint to resume from: complete and readable, or refused (before data loads) ----
    resume_path = None
    if args.resume_from_checkpoint:
        resume_path = find_checkpoint(output_dir, args.resume_from_checkpoint)
        if resume_path is None:
            log.info(f"no checkpoint in {output_dir}; starting a new run", main_process_only=True)
        else:
            step = int(CHECKPOINT_RE.match(resume_path.name).group(1))
            if args.max_train_steps < step:
                raise ValueError(
                    f"--max_train_steps {args.max_train_steps} is below the step of {resume_path} ({step}): "
                    f"nothing to train; pass --max_train_steps above {step}"
                )
            verdict = None
            if accelerator.is_main_process:  # one reader; every process gets the same verdict
                verdict = resume_verdict(
                    resume_path,
                    accelerator.num_processes,
                    allow_inexact=args.allow_inexact_resume,
                    verify=not args.skip_checksums,
                    needs_scaler=accelerator.scaler is not None,
                    check_optimizer=accelerator.distributed_type
                    not in (DistributedType.FSDP, DistributedType.DEEPSPEED, DistributedType.MEGATRON_LM),
                )
            error, warning = broadcast_object_list([verdict])[0]
            if error:
                raise ValueError(error)
            if warning:
                log.warning(warning, main_process_only=True)
    else:
        earlier = list_checkpoints(output_dir) if output_dir.is_dir() else []
        if earlier:
            raise ValueError(
                f"--output_dir {output_dir} already holds checkpoints of an earlier run "
                f"({', '.join(p.name for p in earlier)}); a new run there would mix with them (and "
                "--checkpoints_total_limit could prune the new ones). Continue it with --resume_from_checkpoint "
                "latest, or pass a new --output_dir (or delete those folders)"
            )

    # ---- data (all cheap checks before the model is built) ------------------------------
    try:
        condensed = CondensedDataset.load(
            args.dataset, revision=args.revision, verify=not args.skip_checksums
        )
    except (OSError, ValueError) as err:
        raise ValueError(f"--dataset {args.dataset}: {err}") from err
    source = BatchSource(
        condensed,
        args.train_batch_size,
        seed=args.seed,
        process_index=accelerator.process_index,
        num_processes=accelerator.num_processes,
        use_visual=args.use_visual,
        use_text=args.use_text,
        device=accelerator.device,
        max_in_memory_bytes=int(args.data_max_in_memory_gb * 1024**3),
    )
    config = model_config(args, source)
    vae = load_sampling_vae(args, condensed) if accelerator.is_main_process else None
    if vae is not None:
        vae.to(accelerator.device)
    channels = int(config["in_channels"])
    if (
        accelerator.is_main_process
        and vae is None
        and args.num_validation_images
        and channels not in (1, 3, 4)
    ):
        raise ValueError(
            f"--num_validation_images {args.num_validation_images} without a VAE: the model makes {channels}-channel "
            "latents, which cannot be drawn as a grid image; pass --vae (the dataset's VAE) or --num_validation_images 0"
        )
    id2label = None if source.captioned else dict(enumerate(condensed.class_names))
    validation_labels: list[Any] = []
    validation_prompts = validation_captions(args, condensed) if source.captioned else []
    if args.validation_prompts and not source.captioned:
        raise ValueError(
            "--validation_prompts needs a captioned dataset (caption_embeds per row); this one is class-conditional: "
            "pass --validation_classes"
        )
    if source.captioned:
        if args.validation_classes:
            raise ValueError(
                "--validation_classes: the dataset is captioned (a text-to-image model has no classes); pass "
                "--validation_prompts"
            )
    elif args.validation_classes:
        validation_labels = [int(c) if c.isdigit() else c for c in args.validation_classes]
    else:
        validation_labels = [i % condensed.num_classes for i in range(args.num_validation_images)]

    # ---- model, EMA, optimiser ----------------------------------------------------------
    set_seed(args.seed)  # the same initial weights on every process
    overridden = sorted(set(model_config_overrides(args)) & DATASET_DECIDES)
    hint = (
        f" (--model_config_overrides sets {overridden}, which the dataset decides: drop them from the overrides)"
        if overridden
        else ""
    )
    try:
        model = SiTTransformer2DModel(**config)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"cannot build the model from --model {args.model} and --model_config_overrides "
            f"{args.model_config_overrides or '{}'}: {err}{hint}"
        ) from err
    try:
        source.check_model(model)
    except ValueError as err:
        raise ValueError(f"{err}{hint}") from err
    if source.use_text:
        model.set_class_text_table(*source.class_text_table())
    caption_encoder = (None, None)  # (text_encoder, tokenizer) on the main process, for the pipeline
    if source.captioned:
        outcome = None
        if accelerator.is_main_process:  # one loader and checker; every process gets the empty caption
            try:
                caption_encoder, empty = prepare_caption_encoder(args, condensed, model, accelerator.device)
                outcome = (None, empty)
            except (OSError, ValueError) as err:
                outcome = (str(err), None)
        error, empty = broadcast_object_list([outcome])[0]
        if error:
            raise ValueError(error)
        model.set_empty_caption(*empty)
    set_seed(args.seed, device_specific=True)  # the global RNG now only drives the model's label dropout
    model.to(accelerator.device).train()
    if args.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    ema = EMAModel(
        model.parameters(),
        decay=args.ema_decay,
        min_decay=args.ema_decay,  # constant decay, as REPA (no warmup)
        foreach=True,
        model_cls=SiTTransformer2DModel,
        model_config=model.config,
    )
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.adam_weight_decay,
        eps=args.adam_epsilon,
    )
    param_names = [name for name, _ in model.named_parameters()]

    def save_model_hook(models, weights, checkpoint_dir):
        for saved in models:
            unwrapped = accelerator.unwrap_model(saved)
            if accelerator.is_main_process:
                unwrapped.save_pretrained(Path(checkpoint_dir) / "transformer", max_shard_size="10000GB")
                ema.store(unwrapped.parameters())
                ema.copy_to(unwrapped.parameters())
                unwrapped.save_pretrained(Path(checkpoint_dir) / "transformer_ema", max_shard_size="10000GB")
                ema.restore(unwrapped.parameters())
                state = {k: v for k, v in ema.state_dict().items() if k != "shadow_params"}
                (Path(checkpoint_dir) / "transformer_ema" / EMA_STATE_NAME).write_text(json.dumps(state))
                (Path(checkpoint_dir) / DATA_STATE_NAME).write_text(json.dumps(source.state_dict()))
            if weights:
                weights.pop()

    def load_model_hook(models, checkpoint_dir):
        while models:
            unwrapped = accelerator.unwrap_model(models.pop())
            unwrapped.load_state_dict(load_file(str(Path(checkpoint_dir) / "transformer" / WEIGHTS_NAME)))
            ema_weights = load_file(str(Path(checkpoint_dir) / "transformer_ema" / WEIGHTS_NAME))
            state = json.loads((Path(checkpoint_dir) / "transformer_ema" / EMA_STATE_NAME).read_text())
            state["shadow_params"] = [ema_weights[n].to(accelerator.device) for n in param_names]
            ema.load_state_dict(state)

    accelerator.register_save_state_pre_hook(save_model_hook)
    accelerator.register_load_state_pre_hook(load_model_hook)
    model, optimizer = accelerator.prepare(model, optimizer)

    def make_pipeline():
        return SiTPipeline(
            transformer=accelerator.unwrap_model(model),
            scheduler=FlowMatchEulerMaruyamaScheduler(),
            vae=vae,
            id2label=id2label,
            text_encoder=caption_encoder[0],
            tokenizer=caption_encoder[1],
        )

    if validation_labels and args.num_validation_images:
        try:  # the pipeline's own name matching, now rather than at the first grid
            make_pipeline().get_label_ids(validation_labels)
        except ValueError as err:
            raise ValueError(f"--validation_classes: {err}") from err
    try:  # every rule the grids' pipeline call applies, now rather than at the first grid
        make_pipeline().check_inputs(
            max(1, len(validation_labels)), args.num_inference_steps, args.validation_guidance_scale,
            (0.0, 1.0), None, None, "pil", None,
        )  # fmt: skip
    except ValueError as err:
        raise ValueError(
            f"the validation grids would fail: {err} (--validation_guidance_scale {args.validation_guidance_scale}, "
            f"--num_inference_steps {args.num_inference_steps}, --cfg_prob {args.cfg_prob})"
        ) from err

    global_step = 0
    if resume_path is not None:
        check_checkpoint_config(resume_path, dict(accelerator.unwrap_model(model).config))
        try:
            accelerator.load_state(str(resume_path))
            source.load_state_dict(json.loads((resume_path / DATA_STATE_NAME).read_text()))
        except (OSError, RuntimeError, KeyError, ValueError) as err:
            others = ", ".join(p.name for p in list_checkpoints(resume_path.parent))
            raise ValueError(
                f"cannot resume from {resume_path}: {type(err).__name__}: {err}. Its files read but do not fit "
                "this run: resume with the dataset, --seed and model flags it was trained with, or from another "
                f"checkpoint (checkpoints in {resume_path.parent}: {others})"
            ) from err
        global_step = int(CHECKPOINT_RE.match(resume_path.name).group(1))
        log.info(f"resumed from {resume_path} at step {global_step}", main_process_only=True)

    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        lock.enter_context(
            work_lock(output_dir, None, f"train_sit.py --output_dir {output_dir}", STALE_PATTERNS)
        )
        write_json(output_dir / "args.json", recorded_args(args))
        if args.report_to != "none":
            accelerator.init_trackers(
                args.tracker_project_name, config={k: str(v) for k, v in recorded_args(args).items()}
            )
    accelerator.wait_for_everyone()  # leftovers are gone before any process stages a checkpoint

    samples: list[str] = []

    def validate(step: int) -> None:
        """Grid (and eval_callback) from the EMA weights in eval mode; training state untouched."""
        wanted = args.num_validation_images or eval_callback is not None or args.save_validation_pipelines
        if accelerator.is_main_process and wanted:
            unwrapped = accelerator.unwrap_model(model)
            ema.store(unwrapped.parameters())
            ema.copy_to(unwrapped.parameters())
            unwrapped.eval()
            devices = [accelerator.device] if accelerator.device.type == "cuda" else []
            try:
                with torch.random.fork_rng(devices=devices):
                    pipeline = make_pipeline()
                    pipeline.set_progress_bar_config(disable=True)
                    if (validation_labels or validation_prompts) and args.num_validation_images:
                        generator = torch.Generator(accelerator.device).manual_seed(args.seed)
                        condition = (
                            {"prompt": validation_prompts}
                            if validation_prompts
                            else {"class_labels": validation_labels}
                        )
                        images = pipeline(
                            **condition,
                            num_inference_steps=args.num_inference_steps,
                            guidance_scale=args.validation_guidance_scale,
                            generator=generator,
                        ).images
                        names = validation_prompts or [
                            id2label[i] for i in pipeline.get_label_ids(validation_labels)
                        ]
                        path = output_dir / "samples" / f"step-{step:06d}.png"
                        grid = labeled_grid(images, names)
                        atomic_write(path, lambda handle: grid.save(handle, format="PNG"))
                        samples.append(str(path))
                    if eval_callback is not None:
                        eval_callback(step, pipeline)
                    if args.save_validation_pipelines:
                        target = output_dir / VALIDATION_DIR / f"step-{step:06d}"
                        with staged_dir(target, f"the validation pipeline of step {step}") as staging:
                            pipeline.save_pretrained(staging)
            finally:
                ema.restore(unwrapped.parameters())
                unwrapped.train()
        accelerator.wait_for_everyone()

    checkpoints: list[str] = []

    def save_checkpoint(step: int) -> None:
        final = output_dir / f"checkpoint-{step}"
        staging = output_dir / f".checkpoint-{step}.tmp"
        if accelerator.is_main_process and staging.exists():
            shutil.rmtree(staging)
        accelerator.wait_for_everyone()
        try:
            accelerator.save_state(str(staging))  # every process: its own RNG file
        except (
            OSError
        ) as err:  # a full disk: nothing under checkpoint-N, the error names it (not the staging)
            shutil.rmtree(staging, ignore_errors=True)
            raise renamed_os_error(err, f"could not write checkpoint {final}") from err
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            try:
                write_record(staging)  # content checksums, verified on resume (checkpoint_problems)
            except OSError as err:
                shutil.rmtree(staging, ignore_errors=True)
                raise renamed_os_error(err, f"could not write checkpoint {final}") from err
            if final.exists():
                shutil.rmtree(final)
            os.replace(staging, final)
            prune_checkpoints(output_dir, args.checkpoints_total_limit)
            log.info(f"saved {final}")
        checkpoints.append(str(final))
        accelerator.wait_for_everyone()

    # ---- train ------------------------------------------------------------------------------
    log.info(
        f"training {args.model} ({sum(p.numel() for p in model.parameters()):,} parameters) on {len(condensed)} "
        f"samples, {source!r}; steps {global_step} -> {args.max_train_steps}",
        main_process_only=True,
    )
    loss_history: list[list[float]] = []
    window: list[float] = []
    last_window: list[float] = []
    step_seconds = 0.0
    timed_steps = 0
    while global_step < args.max_train_steps:
        tick = time.perf_counter()
        for micro in range(args.gradient_accumulation_steps):
            batch = source.next_batch()
            generator = seeded_generator(
                args.seed,
                0x57E9,
                accelerator.process_index,
                global_step * args.gradient_accumulation_steps + micro,
                device=accelerator.device,
            )
            with accelerator.accumulate(model):
                losses = compute_loss(
                    model, batch, generator=generator, weighting=args.weighting, proj_coeff=args.proj_coeff
                )
                loss = losses["loss"]
                all_losses = accelerator.gather(loss.detach().float().reshape(1))
                if not bool(torch.isfinite(all_losses).all()):
                    rows = accelerator.gather(batch["indices"].to(accelerator.device)).reshape(
                        accelerator.num_processes, -1
                    )
                    bad = [
                        rows[p].tolist()
                        for p in range(accelerator.num_processes)
                        if not math.isfinite(all_losses[p].item())
                    ]
                    last = checkpoints[-1] if checkpoints else "none (no checkpoint was written)"
                    raise FloatingPointError(
                        f"non-finite loss {all_losses.tolist()} at step {global_step + 1} (micro-batch {micro}); "
                        f"sample rows of the offending batch: {bad}; stopped without saving; last good checkpoint: {last}"
                    )
                window.append(all_losses.mean().item())
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        ema.step(accelerator.unwrap_model(model).parameters())
        global_step += 1
        if global_step > 1:  # the first step warms up kernels and caches
            step_seconds += time.perf_counter() - tick
            timed_steps += 1

        if global_step % args.logging_steps == 0 or global_step == args.max_train_steps:
            mean = float(np.mean(window))
            loss_history.append([global_step, mean])
            last_window, window = window, []
            accelerator.log({"loss": mean}, step=global_step)
            log.info(f"step {global_step}: loss {mean:.4f}", main_process_only=True)
        if global_step % args.checkpointing_steps == 0:
            save_checkpoint(global_step)
        if global_step % args.validation_steps == 0 and global_step != args.max_train_steps:
            validate(global_step)

    # ---- final pipeline -----------------------------------------------------------------------
    validate(global_step)
    final_loss = float(np.mean(last_window)) if last_window else float("nan")
    result = {
        "output_dir": str(output_dir),
        "global_step": global_step,
        "final_loss": final_loss,
        "loss_history": loss_history,
        "pipeline_dir": str(output_dir),
        "samples": samples,
        "steps_per_second": timed_steps / step_seconds if step_seconds > 0 else float("nan"),
        "use_visual": source.use_visual,
        "use_text": source.use_text,
        "use_captions": source.captioned,
        "checkpoints": checkpoints,
        "mixed_precision": str(accelerator.mixed_precision),
    }
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        ema.copy_to(unwrapped.parameters())
        unwrapped.eval()
        # written whole beside output_dir, then moved in (model_index.json last: a pipeline only when complete)
        with staged_entries(output_dir, "the trained pipeline", last=("model_index.json",)) as staging:
            make_pipeline().save_pretrained(staging)
            write_model_card(staging, args, condensed, result)
        if args.push_to_hub:
            from huggingface_hub import HfApi

            api = HfApi(token=args.hub_token)
            repo_id = args.hub_model_id or output_dir.name
            api.create_repo(repo_id, exist_ok=True)
            api.upload_folder(
                repo_id=repo_id,
                folder_path=str(output_dir),
                commit_message=f"SiT trained on {args.dataset} (d2c-hf train_sit.py, step {global_step})",
                ignore_patterns=[  # hidden entries: the lock, staging folders
                    "checkpoint-*",
                    ".*",
                    f"{VALIDATION_DIR}/*",
                    f"{args.logging_dir}/*",
                ],
            )
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return result


if __name__ == "__main__":
    from d2c_hf.cli import run_script

    arguments = parse_args()
    outcome = run_script("train_sit.py", lambda: main(arguments), arguments.debug, (FloatingPointError,))
    # one JSON line, the last on stdout: what a launcher (d2c demo, d2c benchmark) reads back
    print(json.dumps({k: outcome[k] for k in ("output_dir", "global_step", "final_loss", "samples")}))
