"""The checkpoints of ``examples/train_sit.py``: their layout, finding one, checking that it is complete
before resuming, and pruning old ones.

A ``checkpoint-N/`` folder holds the model and EMA weights (``transformer/``, ``transformer_ema/`` with
``ema_state.json``), the optimizer (and, under fp16, the grad scaler), each process's RNG state
(``random_states_<rank>.pkl``) and the data stream's position (``data_state.json``). A resume from a folder
that lacks any of them is refused by name (:func:`resume_verdict`): accelerate would go on with a fresh RNG
state and log one INFO line, and the run would silently stop matching an uninterrupted one. Messages name
the script's flags (``--resume_from_checkpoint``, ``--allow_inexact_resume``), which they are about.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
EMA_STATE_NAME = "ema_state.json"
# The batch source's position is plain integers: stored as JSON rather than through
# accelerator.register_for_checkpointing, whose loader unpickles with weights_only=False.
DATA_STATE_NAME = "data_state.json"
#: where ``--save_validation_pipelines`` writes the EMA pipeline of each validation step (``step-NNNNNN``)
VALIDATION_DIR = "validation"


def list_checkpoints(folder: Path) -> list[Path]:
    """The ``checkpoint-N`` folders in ``folder``, oldest (smallest N) first."""
    found = [(int(m.group(1)), p) for p in folder.glob("checkpoint-*") if (m := CHECKPOINT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def find_checkpoint(output_dir: Path, resume: str) -> Path | None:
    """The folder ``--resume_from_checkpoint`` names: a path, a ``checkpoint-N`` in ``output_dir``, or
    ``"latest"`` (the newest there; None when there is none)."""
    if resume == "latest":
        found = list_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not path.is_dir() and (output_dir / resume).is_dir():
        path = output_dir / resume
    if not path.is_dir():
        found = [p.name for p in list_checkpoints(output_dir)]
        raise FileNotFoundError(
            f"--resume_from_checkpoint {resume}: no such checkpoint folder (checkpoints in {output_dir}: "
            f"{', '.join(found) or 'none'}); pass one of them, a checkpoint-N path, or latest"
        )
    if not CHECKPOINT_RE.match(path.name):
        raise ValueError(
            f"--resume_from_checkpoint {resume}: the folder must be named checkpoint-N (its step N is read from "
            "the name); pass the checkpoint-N folder itself, under its original name"
        )
    return path


EMA_STATE_KEYS = (
    "decay",
    "min_decay",
    "optimization_step",
    "update_after_step",
    "use_ema_warmup",
    "inv_gamma",
    "power",
)
DATA_STATE_KEYS = ("position", "seed", "num_rows")
RNG_STATE_KEYS = ("random_state", "numpy_random_seed", "torch_manual_seed")


def checkpoint_problems(
    path: Path, num_processes: int, *, needs_scaler: bool = False, check_optimizer: bool = True
) -> tuple[list[str], list[str]]:
    """What stops a resume from ``path`` (``damage``) and what makes it inexact (``inexact``).

    Damage: a missing or unreadable model, EMA, optimizer, grad-scaler (fp16) or data-stream file, or a
    JSON file without the keys it needs. Inexact: ``random_states_<rank>.pkl`` missing or unreadable for
    a process of this run (accelerate would log one INFO line and go on with a fresh random state).
    Reads the JSON and RNG files and the safetensors headers, and CRC-checks the zip files written by
    ``torch.save`` (optimizer, scaler), so a truncated or corrupted file is named before anything loads.
    """
    import zipfile

    from accelerate.utils import OPTIMIZER_NAME, RNG_STATE_NAME, SCALER_NAME
    from accelerate.utils import load as accelerate_load
    from safetensors import SafetensorError, safe_open

    damage: list[str] = []
    inexact: list[str] = []

    def read_json(name: str, keys: tuple[str, ...]) -> dict[str, Any] | None:
        file = path / name
        if not file.is_file():
            damage.append(f"{name} is missing")
            return None
        try:
            value = json.loads(file.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            damage.append(f"{name} is not valid JSON ({err})")
            return None
        missing = [k for k in keys if k not in value] if isinstance(value, dict) else list(keys)
        if not isinstance(value, dict) or missing:
            damage.append(f"{name} lacks {missing or 'a JSON object'}")
            return None
        return value

    read_json("transformer/config.json", ())
    read_json(f"transformer_ema/{EMA_STATE_NAME}", EMA_STATE_KEYS)
    data_state = read_json(DATA_STATE_NAME, DATA_STATE_KEYS)
    for sub in ("transformer", "transformer_ema"):
        file = path / sub / WEIGHTS_NAME
        if not file.is_file():
            damage.append(f"{sub}/{WEIGHTS_NAME} is missing")
            continue
        try:
            with safe_open(str(file), framework="pt"):
                pass
        except (OSError, SafetensorError) as err:
            damage.append(f"{sub}/{WEIGHTS_NAME} is not a readable safetensors file ({err})")
    zipped = ([f"{OPTIMIZER_NAME}.bin"] if check_optimizer else []) + ([SCALER_NAME] if needs_scaler else [])
    for name in zipped:
        file = path / name
        if not file.is_file():
            hint = (
                " (was it written without fp16? resume with the same --mixed_precision)"
                if name == SCALER_NAME
                else ""
            )
            damage.append(f"{name} is missing{hint}")
            continue
        try:
            with zipfile.ZipFile(file) as archive:
                bad = archive.testzip()
        except (OSError, zipfile.BadZipFile) as err:
            damage.append(f"{name} is not a readable torch file ({err})")
            continue
        if bad is not None:
            damage.append(f"{name} is corrupted (entry {bad} fails its CRC check)")

    written_by = data_state.get("num_processes") if data_state else None
    needed = list(RNG_STATE_KEYS) + (["torch_cuda_manual_seed"] if torch.cuda.is_available() else [])
    for rank in range(num_processes):
        name = f"{RNG_STATE_NAME}_{rank}.pkl"
        file = path / name
        if not file.is_file():
            why = (
                f" (the checkpoint was written by {written_by} process(es), this run has {num_processes})"
                if written_by is not None and rank >= int(written_by)
                else ""
            )
            inexact.append(f"{name} is missing{why}")
            continue
        try:
            states = accelerate_load(file)
        except Exception as err:  # torch.load raises many types for a damaged file
            inexact.append(f"{name} cannot be read ({type(err).__name__}: {err})")
            continue
        missing = [k for k in needed if k not in states] if isinstance(states, dict) else needed
        if missing:
            inexact.append(f"{name} lacks {missing} (written on another kind of device?)")
    return damage, inexact


def resume_verdict(
    path: Path,
    num_processes: int,
    *,
    allow_inexact: bool = False,
    needs_scaler: bool = False,
    check_optimizer: bool = True,
) -> tuple[str | None, str | None]:
    """``(error, warning)`` for resuming from ``path``: both None when the checkpoint is complete.

    The error names the checkpoint, its damaged or missing files, the checkpoints beside it and the
    newest complete earlier one to resume from instead (never chosen silently).
    """
    options = dict(needs_scaler=needs_scaler, check_optimizer=check_optimizer)
    damage, inexact = checkpoint_problems(path, num_processes, **options)
    if not damage and (not inexact or allow_inexact):
        warning = None
        if inexact:
            warning = (
                f"--allow_inexact_resume: resuming from {path} although {'; '.join(inexact)}; those processes' "
                "random state (label dropout) restarts from --seed, so this run will not match an "
                "uninterrupted one bit for bit"
            )
        return None, warning
    siblings = list_checkpoints(path.parent)
    step = int(CHECKPOINT_RE.match(path.name).group(1))
    earlier = [p for p in siblings if int(CHECKPOINT_RE.match(p.name).group(1)) < step]
    previous = next(
        (p for p in reversed(earlier) if checkpoint_problems(p, num_processes, **options) == ([], [])), None
    )
    listing = f"checkpoints in {path.parent}: {', '.join(p.name for p in siblings) or 'none'}"
    if previous is not None:
        advice = f"resume from the previous complete checkpoint with --resume_from_checkpoint {previous}"
        if siblings and siblings[-1] == path:
            advice += f", or delete {path} and rerun with --resume_from_checkpoint latest"
    else:
        advice = f"delete {path} and train from the start (there is no complete earlier checkpoint)"
    if damage:
        return (
            f"cannot resume from {path}: the checkpoint is damaged or incomplete: {'; '.join(damage + inexact)}. "
            f"({listing}.) To continue, {advice}.",
            None,
        )
    same_count = (
        "resume with as many processes as wrote it, " if any("written by" in p for p in inexact) else ""
    )
    return (
        f"cannot resume exactly from {path}: {'; '.join(inexact)}. Without that state a process's random state "
        f"(label dropout) restarts from --seed and the run no longer matches an uninterrupted one. To continue, "
        f"{same_count}pass --allow_inexact_resume to accept that, or {advice}. ({listing}.)",
        None,
    )


def check_checkpoint_config(path: Path, config: dict[str, Any]) -> None:
    """Refuse a checkpoint whose transformer config differs from this run's (names the keys)."""
    saved_file = path / "transformer" / "config.json"
    if not saved_file.is_file():
        raise ValueError(f"{path} is not a train_sit.py checkpoint (no transformer/config.json)")
    saved = json.loads(saved_file.read_text())
    differ = []
    for key, value in sorted(config.items()):
        if key.startswith("_"):
            continue
        other = saved.get(key)
        if isinstance(value, (tuple, list)) or isinstance(other, (tuple, list)):
            value, other = list(value or []), list(other or [])
        if value != other:
            differ.append(f"{key}: checkpoint {other!r} vs now {value!r}")
    if differ:
        raise ValueError(
            f"cannot resume from {path}: it was trained with another model config ({'; '.join(differ)}); "
            "use the same --model/--model_config_overrides/dataset flags, or a new --output_dir"
        )


def prune_checkpoints(output_dir: Path, keep: int | None) -> None:
    """Delete the oldest ``checkpoint-N`` folders of ``output_dir`` beyond the newest ``keep``."""
    if keep is None:
        return
    found = list_checkpoints(output_dir)
    for path in found[: max(0, len(found) - keep)]:
        logger.info("removing old checkpoint %s", path)
        shutil.rmtree(path)
