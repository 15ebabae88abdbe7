#!/usr/bin/env python
# Copyright 2025 The d2c-hf authors. Apache-2.0.
"""Generate an FID-50K sample set from a SiT pipeline on any number of GPUs (REPA's ``generate.py``, diffusers style).

    accelerate launch examples/sample_sit.py --pipeline sit-xl-d2c --preset repa-cfg --output_dir samples/sit-xl-d2c
    d2c fid samples/sit-xl-d2c/samples.npz VIRTUAL_imagenet256_labeled.npz --inception_weights <file>

A text-conditioned pipeline samples from a prompt file instead of class labels (one prompt per line; sample ``i``
takes prompt ``i mod P``, so ``--num_samples P`` gives one image per prompt):

    python examples/sample_sit.py --pipeline sit-t2i --prompt_file prompts.txt --num_samples 64 --output_dir out

Writes ``output_dir/samples.npz`` in the ADM evaluator's layout (``arr_0`` = ``(N, H, W, 3)`` uint8,
``arr_1`` = labels, or each sample's prompt index, the 0-based line) and ``output_dir/samples.json`` with every
setting (protocol, sampler, steps, CFG scale
and interval, seed, labels, dtype, the pipeline's weights and revision). The images are a function of
those settings only: sample ``i`` has its own noise generator seeded with ``(seed, i)`` and every batch
holds the same samples whatever the number of processes, so 1 or 8 GPUs (or a run killed and restarted)
give the same file. Finished shards (``output_dir/samples/shard-*.npz``, written atomically) are skipped
when the same command is run again; a folder made with other settings is refused. See docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger("sample_sit")

PHASE = "samples"  # the shard folder and the run-config entry in output_dir/d2c_run.json
NPZ_NAME, SIDECAR_NAME = "samples.npz", "samples.json"
SHARD_ARRAYS = ("images", "labels", "indices")


def parse_args(input_args: list[str] | None = None) -> argparse.Namespace:
    from d2c_hf.evaluation.sampling import LABEL_MODES, SAMPLERS, SAMPLING_PRESETS

    parser = argparse.ArgumentParser(description="Generate an FID sample set (ADM .npz) from a SiT pipeline.")
    parser.add_argument("--pipeline", required=True, help="SiTPipeline folder (save_pretrained) or Hub id.")
    parser.add_argument("--revision", default=None, help="Hub revision of --pipeline.")
    parser.add_argument("--output_dir", required=True)
    proto = parser.add_argument_group("protocol")
    proto.add_argument(
        "--preset",
        choices=sorted(SAMPLING_PRESETS),
        default="repa-cfg",
        help="repa-cfg: REPA's FID command (SDE, 250 steps, CFG 1.8 for t <= 0.7); repa-no-cfg: no guidance. "
        "The flags below override single settings.",
    )
    proto.add_argument("--sampler", choices=SAMPLERS, default=None, help="sde (REPA), euler or heun (ODE).")
    proto.add_argument("--num_inference_steps", type=int, default=None)
    proto.add_argument("--guidance_scale", type=float, default=None, help="CFG scale (1 = no guidance).")
    proto.add_argument(
        "--guidance_interval", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"), help="CFG only for LOW <= t <= HIGH."
    )  # fmt: skip
    data = parser.add_argument_group("samples")
    data.add_argument("--num_samples", type=int, default=50_000)
    data.add_argument(
        "--labels",
        default="uniform",
        help=f"{' | '.join(LABEL_MODES)} | a file (.txt: one class id or name per line; .json list; .npy ids).",
    )
    data.add_argument(
        "--prompt_file",
        default=None,
        help="Text-conditioned pipelines: a UTF-8 file with one prompt per line (instead of --labels).",
    )
    data.add_argument(
        "--negative_prompt",
        default=None,
        help="Text-conditioned pipelines: the prompt guidance steers away from (default: the empty caption).",
    )
    data.add_argument("--seed", type=int, default=0)
    run = parser.add_argument_group("run")
    run.add_argument("--batch_size", type=int, default=64, help="Images per forward pass and process.")
    run.add_argument(
        "--shard_size", type=int, default=None, help="Images per shard file (a multiple of --batch_size)."
    )
    run.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32", help="Weights' dtype.")
    run.add_argument("--allow_tf32", action="store_true", help="TF32 matmuls on Ampere+ GPUs.")
    run.add_argument("--cpu", action="store_true", help="Run on the CPU even if a GPU is available.")
    run.add_argument(
        "--debug", action="store_true", help="On an error, show the traceback (default: one line)."
    )
    args = parser.parse_args(input_args)
    if not 0 <= args.seed < 2**32:
        parser.error(f"--seed must be in [0, 2**32), got {args.seed}")
    return args


def resolve_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The preset with the explicit flags applied, checked."""
    from d2c_hf.evaluation.sampling import SAMPLING_PRESETS

    settings = dict(SAMPLING_PRESETS[args.preset])
    for name in ("sampler", "num_inference_steps", "guidance_scale", "guidance_interval"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    settings["guidance_interval"] = [float(v) for v in settings["guidance_interval"]]
    low, high = settings["guidance_interval"]
    if settings["num_inference_steps"] < 1:
        raise ValueError(f"--num_inference_steps must be >= 1, got {settings['num_inference_steps']}")
    if not settings["guidance_scale"] >= 1.0:
        raise ValueError(f"--guidance_scale must be >= 1 (1 = no guidance), got {settings['guidance_scale']}")
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"--guidance_interval must satisfy 0 <= LOW <= HIGH <= 1, got {low} {high}")
    return {"preset": args.preset, **settings}


def shard_done(path: Path, verify: bool = True) -> bool:
    """A finished shard: written atomically, so an existing, readable archive with every array, whose members
    pass their CRC-32 check (``verify``: a shard damaged in place since it was written is sampled again)."""
    try:
        with zipfile.ZipFile(path) as archive:
            if not {f"{name}.npy" for name in SHARD_ARRAYS} <= set(archive.namelist()):
                return False
            damaged = archive.testzip() if verify else None
    except (OSError, zipfile.BadZipFile):
        return False
    if damaged is not None:
        logger.warning("%s is damaged (%s fails its CRC check); it will be sampled again", path, damaged)
    return damaged is None


def check_inputs(args: argparse.Namespace) -> None:
    """Cheap checks of the folders, before any config or weight is read: --output_dir apart from the inputs,
    --pipeline a SiTPipeline folder."""
    from d2c_hf.utils.files import check_apart
    from d2c_hf.utils.roles import check_model_role

    check_apart(
        args.output_dir,
        {"--pipeline": args.pipeline, "--labels": args.labels, "--prompt_file": args.prompt_file},
        "--output_dir",
    )
    output_dir = Path(args.output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"--output_dir {output_dir} is a file; pass a folder path")
    check_model_role(args.pipeline, "pipeline", "--pipeline")


def main(args: argparse.Namespace) -> dict[str, Any]:
    from accelerate import PartialState

    from d2c_hf.evaluation.sampling import (
        LABEL_MODES,
        check_layout,
        make_scheduler,
        plan_labels,
        plan_prompts,
        read_label_file,
        read_prompt_file,
        resolve_labels,
        sampler_sigmas,
    )
    from d2c_hf.models.transformer_sit import SiTTransformer2DModel
    from d2c_hf.pipelines import SiTPipeline
    from d2c_hf.run.workdir import work_lock
    from d2c_hf.utils.hub import DTYPE_ALIASES, model_provenance

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    check_inputs(args)
    settings = resolve_settings(args)
    state = PartialState(cpu=args.cpu)
    shard_size = check_layout(args.num_samples, args.batch_size, state.num_processes, args.shard_size)
    if args.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    # ---- cheap checks from the configs, before any weights are read ---------------------------
    pipe_config = SiTPipeline.load_config(args.pipeline, revision=args.revision)
    model_config = SiTTransformer2DModel.load_config(
        args.pipeline, subfolder="transformer", revision=args.revision
    )
    num_classes = int(model_config["num_classes"])
    text_model = model_config.get("caption_embed_dim") is not None
    prompts: list[str] | None = None
    if text_model:
        if args.prompt_file is None:
            raise ValueError(
                "the pipeline is text-conditioned: pass --prompt_file (one prompt per line) instead of --labels"
            )
        if args.labels != "uniform":
            raise ValueError(
                "--labels: the pipeline is text-conditioned (no classes); pass --prompt_file only"
            )
        if settings["guidance_scale"] > 1.0 and not model_config.get("caption_dropout_prob", 0.1) > 0:
            raise ValueError(
                "guidance needs the empty caption, but this model was trained without caption dropout "
                "(caption_dropout_prob=0); use --preset repa-no-cfg"
            )
        prompts = read_prompt_file(args.prompt_file)
    elif args.prompt_file is not None or args.negative_prompt is not None:
        raise ValueError(
            "--prompt_file/--negative_prompt: the pipeline is class-conditional; pass --labels (class ids or names)"
        )
    elif settings["guidance_scale"] > 1.0 and not model_config.get("class_dropout_prob", 0.1) > 0:
        raise ValueError(
            "guidance needs the null class, but this model has none (class_dropout_prob=0); use --preset repa-no-cfg"
        )
    vae_entry = pipe_config.get("vae")
    has_vae = isinstance(vae_entry, (list, tuple)) and bool(vae_entry) and vae_entry[0] is not None
    if not has_vae and int(model_config.get("in_channels", 3)) not in (1, 3):
        raise ValueError(
            f"--pipeline {args.pipeline} has no VAE and its transformer makes {model_config.get('in_channels')}-channel "
            "latents, not images: save the pipeline with its VAE (train_sit.py --vae, or d2c convert-* --pipeline --vae)"
        )
    entries = None
    if prompts is not None:
        labels = plan_prompts(args.num_samples, len(prompts))  # each sample's prompt index
    elif args.labels in LABEL_MODES:
        labels = plan_labels(args.num_samples, num_classes, args.labels, args.seed)
    else:
        entries = read_label_file(args.labels)
        has_names = any(isinstance(value, str) for _, value in entries)
        has_id2label = bool(pipe_config.get("id2label"))
        if not has_names or not has_id2label or len(entries) != args.num_samples:
            labels = resolve_labels(
                entries, num_samples=args.num_samples, num_classes=num_classes, name_to_id=None
            )
            entries = None

    # ---- the pipeline ------------------------------------------------------------------------
    pipe = SiTPipeline.from_pretrained(args.pipeline, revision=args.revision, dtype=DTYPE_ALIASES[args.dtype])
    pipe.scheduler = make_scheduler(settings["sampler"], pipe.scheduler.config)
    pipe.to(state.device)
    pipe.set_progress_bar_config(disable=True)
    if entries is not None:  # class names: resolved by the pipeline's own id2label lookup
        labels = resolve_labels(
            entries,
            num_samples=args.num_samples,
            num_classes=num_classes,
            name_to_id=lambda n: pipe.get_label_ids(n)[0],
        )
    sigmas = sampler_sigmas(settings["sampler"], settings["num_inference_steps"])

    # ---- the run config: a folder made with other settings is refused ---------------------------
    output_dir = Path(args.output_dir)
    config = {
        "pipeline": {
            "name_or_path": args.pipeline,
            "revision": args.revision,
            "transformer": model_provenance(pipe.transformer),
            "vae": model_provenance(pipe.vae) if pipe.vae is not None else None,
            **(
                {"text_encoder": model_provenance(pipe.text_encoder)}
                if getattr(pipe, "text_encoder", None) is not None
                else {}
            ),
        },
        "sampling": {
            **settings,
            "scheduler": {k: v for k, v in pipe.scheduler.config.items() if not k.startswith("_")},
        },
        "num_samples": args.num_samples,
        "labels": {"source": args.labels, "sha256": hashlib.sha256(labels.tobytes()).hexdigest()}
        if prompts is None
        else {
            "source": "prompt indices",
            "prompt_file": args.prompt_file,
            "num_prompts": len(prompts),
            "prompts_sha256": hashlib.sha256("\n".join(prompts).encode()).hexdigest(),
            "negative_prompt": args.negative_prompt,
        },
        "seed": args.seed,
        "batch_size": args.batch_size,
        "shard_size": shard_size,
        "dtype": args.dtype,
    }
    with work_lock(output_dir, state, f"sample_sit.py --output_dir {output_dir}"):
        return sample(args, state, pipe, config, labels, prompts, settings, sigmas, shard_size, output_dir)


def sample(
    args, state, pipe, config, labels, prompts, settings, sigmas, shard_size, output_dir
) -> dict[str, Any]:
    """:func:`main` once the run config is known, holding the output folder's lock (main process); ``labels``
    are prompt indices when ``prompts`` is given."""
    from tqdm.auto import tqdm

    from d2c_hf.evaluation.adm import damaged_npz, save_npz_batches
    from d2c_hf.evaluation.sampling import plan_shards, sample_generators, to_uint8
    from d2c_hf.run.workdir import open_phase, shard_path
    from d2c_hf.utils.files import atomic_write

    folder = open_phase(output_dir, PHASE, config, state)

    # ---- sample this process's unfinished shards ----------------------------------------------
    shards = plan_shards(args.num_samples, shard_size)
    mine = [k for k in range(len(shards)) if k % state.num_processes == state.process_index]
    todo = []
    for k in mine:
        path = shard_path(folder, k, len(shards))
        for stale in folder.glob(f".{path.name}.tmp-*"):  # left by a killed run (this process owns shard k)
            stale.unlink(missing_ok=True)
        if not shard_done(path):
            todo.append(k)
    logger.info(
        "process %d/%d: %d shards of %d images, %d done earlier, %d to sample",
        state.process_index, state.num_processes, len(mine), shard_size, len(mine) - len(todo), len(todo),
    )  # fmt: skip
    bar = tqdm(total=sum(len(shards[k]) for k in todo), unit="img", disable=not state.is_local_main_process)
    start = time.perf_counter()
    for k in todo:
        parts = []
        for first in range(shards[k].start, shards[k].stop, args.batch_size):
            index = np.arange(first, first + args.batch_size)
            condition = (
                {"class_labels": labels[index].tolist()}
                if prompts is None
                else {"prompt": [prompts[j] for j in labels[index]], "negative_prompt": args.negative_prompt}
            )
            images = pipe(
                **condition,
                num_inference_steps=settings["num_inference_steps"],
                guidance_scale=settings["guidance_scale"],
                guidance_interval=tuple(settings["guidance_interval"]),
                generator=sample_generators(args.seed, index, state.device),
                output_type="pt",
                sigmas=sigmas,
            ).images
            parts.append(to_uint8(images))
            bar.update(len(index))
        arrays = {
            "images": np.concatenate(parts),
            "labels": labels[shards[k]],
            "indices": np.asarray(shards[k]),
        }
        atomic_write(shard_path(folder, k, len(shards)), lambda handle, a=arrays: np.savez(handle, **a))
    bar.close()
    seconds = time.perf_counter() - start
    sampled = sum(len(shards[k]) for k in todo)
    state.wait_for_everyone()

    # ---- merge into the ADM .npz + the sidecar (main process) ------------------------------------
    result = {
        "npz": str(output_dir / NPZ_NAME),
        "sidecar": str(output_dir / SIDECAR_NAME),
        "sampled_here": sampled,
        "seconds_here": seconds,
        "images_per_second_here": sampled / seconds if sampled else None,
    }
    if state.is_main_process:
        paths = [shard_path(folder, k, len(shards)) for k in range(len(shards))]
        missing = [p.name for p in paths if not shard_done(p, verify=False)]  # the merge checks the CRCs
        if missing:
            raise RuntimeError(
                f"{len(missing)} shards are missing (e.g. {missing[0]}): rerun the same command"
            )
        npz = output_dir / NPZ_NAME
        if npz.is_file() and npz.stat().st_mtime >= max(p.stat().st_mtime for p in paths):
            logger.info("%s is up to date with its %d shards; nothing to merge", npz, len(shards))
            state.wait_for_everyone()
            return result
        with np.load(paths[0]) as first, damaged_npz(paths[0]):
            height, width = first["images"].shape[1:3]

        def shard_images():
            for path in paths:
                with np.load(path) as shard, damaged_npz(path):
                    yield shard["images"]

        save_npz_batches(npz, shard_images(), args.num_samples, (height, width), labels=labels)
        sidecar = {
            **config,
            "npz": NPZ_NAME,
            "image_shape": [int(height), int(width), 3],
            "world_size": state.num_processes,
            "device": str(state.device),
            "device_name": torch.cuda.get_device_name(state.device)
            if state.device.type == "cuda"
            else platform.processor(),
            "versions": _versions(),
            "last_run": {"sampled_images": sampled, "seconds_main_process": round(seconds, 3)},
        }
        text = json.dumps(sidecar, indent=2) + "\n"
        atomic_write(output_dir / SIDECAR_NAME, lambda handle: handle.write(text.encode()))
        logger.info("wrote %s (%d images) and %s", output_dir / NPZ_NAME, args.num_samples, SIDECAR_NAME)
    state.wait_for_everyone()
    return result


def _versions() -> dict[str, str]:
    import diffusers

    import d2c_hf

    return {"d2c_hf": d2c_hf.__version__, "diffusers": diffusers.__version__, "torch": torch.__version__}


if __name__ == "__main__":
    from d2c_hf.cli import run_script

    arguments = parse_args()
    outcome = run_script("sample_sit.py", lambda: main(arguments), arguments.debug)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(outcome, indent=2))
