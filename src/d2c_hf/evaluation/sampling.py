"""Generating FID-50K sample sets: protocols, class labels or prompts, per-sample seeds, shards (``examples/sample_sit.py``).

The counterpart of REPA's ``generate.py``, built so that a result is a function of its settings alone:

* **Protocols** (:data:`SAMPLING_PRESETS`) name the published settings: REPA's FID command (SDE,
  250 steps, CFG 1.8 applied for ``t <= 0.7``) and the same sampler without guidance.
* **Labels** (:func:`plan_labels`) are drawn for all ``N`` samples at once from the seed: uniform
  over classes (REPA: ``randint``), balanced (each class ``N / C`` times, shuffled), or read from a
  file (:func:`read_label_file`, ids or class names). A text-conditioned pipeline takes a prompt file instead
  (:func:`read_prompt_file`, one prompt per line; sample ``i`` takes prompt ``i mod P``, :func:`plan_prompts`).
* **Seeds** (:func:`sample_generators`): sample ``i`` draws its initial noise and every SDE step's
  noise from its own generator seeded with ``(seed, i)``, so it does not depend on the batch it lands
  in, on the number of processes, or on a restart.
* **Shards** (:func:`plan_shards`): samples are cut into consecutive shards of ``shard_size`` (a
  multiple of ``batch_size``); shard ``k`` belongs to process ``k % world_size`` and batches never
  straddle shards, so every batch holds the same samples whatever the number of processes. Finished
  shards are atomic files; a rerun skips them.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

SAMPLERS = ("sde", "euler", "heun")
LABEL_MODES = ("uniform", "balanced")

#: The published sampling protocols. ``repa-cfg`` is REPA's FID command (``generate.py --mode sde
#: --num-steps 250 --cfg-scale 1.8 --guidance-high 0.7``, FID 1.42 for SiT-XL/2 + REPA at 4M steps);
#: ``repa-no-cfg`` the same sampler without guidance (REPA's / SiT's "w/o CFG" rows).
SAMPLING_PRESETS: dict[str, dict[str, Any]] = {
    "repa-cfg": {"sampler": "sde", "num_inference_steps": 250, "guidance_scale": 1.8, "guidance_interval": (0.0, 0.7)},
    "repa-no-cfg": {"sampler": "sde", "num_inference_steps": 250, "guidance_scale": 1.0, "guidance_interval": (0.0, 1.0)},
}  # fmt: skip

# keys mixed into the seed so that label draws and noise draws are independent streams
LABEL_STREAM = 0x1ABE1
NOISE_STREAM = 0x5A3F1E


# --------------------------------------------------------------------------------------
# labels
# --------------------------------------------------------------------------------------


def plan_labels(num_samples: int, num_classes: int, mode: str = "uniform", seed: int = 0) -> np.ndarray:
    """``(num_samples,)`` int64 class labels, a function of ``(num_samples, num_classes, mode, seed)`` only.

    ``uniform``: i.i.d. uniform over classes (REPA's ``generate.py``). ``balanced``: class ``c``
    appears ``floor(N / C)`` or ``ceil(N / C)`` times (exactly 50 each for 50,000 ImageNet samples), in
    a seeded random order.
    """
    if mode not in LABEL_MODES:
        raise ValueError(f"label mode must be one of {LABEL_MODES} or a file, got {mode!r}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), LABEL_STREAM]))
    if mode == "uniform":
        return rng.integers(0, num_classes, size=num_samples, dtype=np.int64)
    return rng.permutation(np.arange(num_samples, dtype=np.int64) % num_classes)


def read_label_file(path: str | os.PathLike) -> list[tuple[int, int | str]]:
    """``[(line, label), ...]`` from a label file: ``.npy`` (integers), ``.json`` (a list of ids and/or
    names), or text with one class id or name per line (blank lines and ``#`` comments skipped).

    ``line`` is the 1-based line (text) or position (``.npy``/``.json``) for error messages.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--labels {path}: no such file (or pass 'uniform' or 'balanced')")
    if path.suffix == ".npy":
        values = np.load(path, allow_pickle=False)
        if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer):
            raise ValueError(
                f"{path} must hold a 1-D integer array of class ids, got {values.dtype} {values.shape}"
            )
        return [(i + 1, int(v)) for i, v in enumerate(values)]
    if path.suffix == ".json":
        values = json.loads(path.read_text())
        if not isinstance(values, list):
            raise ValueError(
                f"{path} must hold a JSON list of class ids or names, got {type(values).__name__}"
            )
        out = []
        for i, value in enumerate(values):
            if isinstance(value, bool) or not isinstance(value, (int, str)):
                raise ValueError(
                    f"{path}: entry {i + 1} is {value!r}; expected a class id (int) or name (str)"
                )
            out.append((i + 1, value))
        return out
    out = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if text:
            out.append((number, int(text) if text.lstrip("-").isdigit() else text))
    return out


def resolve_labels(
    entries: Sequence[tuple[int, int | str]],
    *,
    num_samples: int,
    num_classes: int,
    name_to_id: Callable[[str], int] | None,
    source: str = "labels file",
) -> np.ndarray:
    """Turn ``read_label_file`` entries into ``(num_samples,)`` int64 ids, refusing bad ones with their lines.

    Args:
        entries: ``[(line, id or name), ...]``.
        num_samples: the file must hold exactly this many labels.
        num_classes: ids must lie in ``[0, num_classes)``.
        name_to_id: maps a class name to its id (raises ``ValueError`` for unknown names), e.g.
            ``lambda name: pipe.get_label_ids(name)[0]``; ``None`` when the pipeline has no ``id2label``.
    """
    if len(entries) != num_samples:
        raise ValueError(f"the {source} holds {len(entries)} labels but --num_samples is {num_samples}")
    names = sorted({value for _, value in entries if isinstance(value, str)})
    if names and name_to_id is None:
        line = next(line for line, value in entries if isinstance(value, str))
        raise ValueError(
            f"the {source} names classes (e.g. {names[0]!r} at line {line}) but the pipeline has no id2label; "
            "give class ids instead, or save the pipeline with SiTPipeline(..., id2label={...})"
        )
    ids: dict[str, int] = {}
    bad: list[str] = []
    for name in names:
        try:
            ids[name] = int(name_to_id(name))  # type: ignore[misc]
        except ValueError as err:
            bad.append(f"{name!r} (line {_first_line(entries, name)}): {err}")
    out = np.empty(len(entries), np.int64)
    for i, (line, value) in enumerate(entries):
        if isinstance(value, str):
            out[i] = ids.get(value, -1)
        elif not 0 <= value < num_classes:
            bad.append(f"class id {value} at line {line} is outside [0, {num_classes - 1}]")
        else:
            out[i] = value
    if bad:
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise ValueError(f"the {source} has unknown classes: {'; '.join(bad[:5])}{more}")
    return out


def _first_line(entries: Sequence[tuple[int, int | str]], name: str) -> int:
    return next(line for line, value in entries if value == name)


# --------------------------------------------------------------------------------------
# prompts (text-conditioned pipelines)
# --------------------------------------------------------------------------------------


def read_prompt_file(path: str | os.PathLike) -> list[str]:
    """The prompts of a prompt file: UTF-8 text, one prompt per line, taken verbatim (surrounding whitespace
    stripped; ``#`` is part of a prompt). A blank line is refused with its number (an empty prompt is the
    unconditional caption: sample without guidance for that, not from a file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--prompt_file {path}: no such file")
    lines = path.read_text(encoding="utf-8").splitlines()
    blank = [number for number, line in enumerate(lines, start=1) if not line.strip()]
    if blank:
        raise ValueError(
            f"--prompt_file {path}: line{'s' if len(blank) > 1 else ''} {', '.join(map(str, blank[:5]))} "
            f"{'are' if len(blank) > 1 else 'is'} blank; give one non-empty prompt per line"
        )
    if not lines:
        raise ValueError(f"--prompt_file {path} holds no prompts; give one prompt per line")
    return [line.strip() for line in lines]


def plan_prompts(num_samples: int, num_prompts: int) -> np.ndarray:
    """``(num_samples,)`` int64 prompt indices: sample ``i`` takes prompt ``i % num_prompts`` (the file's order,
    cycled; ``num_samples = num_prompts`` gives one image per prompt)."""
    if num_prompts < 1:
        raise ValueError("no prompts")
    return np.arange(num_samples, dtype=np.int64) % num_prompts


# --------------------------------------------------------------------------------------
# samplers and seeds
# --------------------------------------------------------------------------------------


def make_scheduler(sampler: str, config: Any = None) -> Any:
    """A fresh scheduler for ``sampler`` (``"sde"``: REPA's Euler–Maruyama, ``"euler"``/``"heun"``: the
    diffusers flow-matching ODE solvers), keeping ``num_train_timesteps`` (and the SDE's settings) of
    the pipeline's scheduler ``config``."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler

    from ..schedulers.scheduling_flow_match_euler_maruyama import FlowMatchEulerMaruyamaScheduler

    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    classes = {
        "sde": FlowMatchEulerMaruyamaScheduler,
        "euler": FlowMatchEulerDiscreteScheduler,
        "heun": FlowMatchHeunDiscreteScheduler,
    }
    config = dict(config or {})
    if sampler == "sde" and config.get("_class_name") != FlowMatchEulerMaruyamaScheduler.__name__:
        config = {"num_train_timesteps": config.get("num_train_timesteps", 1000)}
    if sampler != "sde":
        config = {"num_train_timesteps": config.get("num_train_timesteps", 1000), "shift": 1.0}
    return classes[sampler].from_config(config)


def sampler_sigmas(sampler: str, num_inference_steps: int) -> np.ndarray | None:
    """Explicit grids: REPA's Euler grid ``linspace(1, 0, N + 1)`` for ``"euler"`` (the scheduler appends
    the 0); ``None`` for the SDE (its own ``linspace(1, 0.04, N)`` + mean step) and Heun."""
    if sampler == "euler":
        return np.linspace(1.0, 1.0 / num_inference_steps, num_inference_steps)
    return None


def sample_generators(seed: int, indices: Sequence[int], device: str | torch.device) -> list[torch.Generator]:
    """One generator per sample, seeded from ``(seed, index)``: the sample's noise does not depend on
    its batch, the number of processes, or a restart."""
    from ..train.losses import seeded_generator

    return [seeded_generator(seed, NOISE_STREAM, int(i), device=device) for i in indices]


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``(B, C, H, W)`` float in ``[0, 1]`` (``output_type="pt"``) -> ``(B, H, W, 3)`` uint8 on the host,
    rounded like ``diffusers``' PIL conversion (``(x * 255).round()``); greyscale is repeated to RGB."""
    pixels = (images.float().clamp(0, 1) * 255).round().to(torch.uint8)
    if pixels.shape[1] == 1:
        pixels = pixels.expand(-1, 3, -1, -1)
    if pixels.shape[1] != 3:
        raise ValueError(f"the pipeline returned {pixels.shape[1]}-channel images; FID needs RGB")
    return pixels.permute(0, 2, 3, 1).contiguous().cpu().numpy()


# --------------------------------------------------------------------------------------
# layout
# --------------------------------------------------------------------------------------


def check_layout(num_samples: int, batch_size: int, world_size: int, shard_size: int | None = None) -> int:
    """Validate the sizes and return the shard size (default: the multiple of ``batch_size`` nearest
    above 1,000 samples, capped at ``num_samples``).

    ``num_samples`` must be a multiple of ``batch_size * world_size`` (every batch full, every process
    the same number of batches, as REPA's ``generate.py`` requires) and ``shard_size`` a multiple of
    ``batch_size``.
    """
    for name, value in (("num_samples", num_samples), ("batch_size", batch_size), ("world_size", world_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"--{name} must be a positive integer, got {value!r}")
    if num_samples % batch_size:
        lower = num_samples // batch_size * batch_size
        raise ValueError(
            f"--num_samples {num_samples} is not divisible by --batch_size {batch_size}: every batch must be full "
            f"(e.g. --num_samples {lower or batch_size} or {lower + batch_size})"
        )
    if num_samples % (batch_size * world_size):
        raise ValueError(
            f"--num_samples {num_samples} is not divisible by the world size ({world_size} processes) x --batch_size "
            f"{batch_size} = {batch_size * world_size}: each process must get the same number of full batches; "
            "change --num_samples, --batch_size or the number of processes"
        )
    if shard_size is None:
        shard_size = min(batch_size * math.ceil(1000 / batch_size), num_samples)
    if shard_size < 1 or shard_size % batch_size:
        raise ValueError(
            f"--shard_size {shard_size} must be a positive multiple of --batch_size {batch_size}"
        )
    return shard_size


def plan_shards(num_samples: int, shard_size: int) -> list[range]:
    """Consecutive sample ranges of ``shard_size`` (the last may be shorter)."""
    return [range(start, min(start + shard_size, num_samples)) for start in range(0, num_samples, shard_size)]


__all__ = [
    "LABEL_MODES",
    "SAMPLERS",
    "SAMPLING_PRESETS",
    "check_layout",
    "make_scheduler",
    "plan_labels",
    "plan_shards",
    "read_label_file",
    "resolve_labels",
    "sample_generators",
    "sampler_sigmas",
    "to_uint8",
]
