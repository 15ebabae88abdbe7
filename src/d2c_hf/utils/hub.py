"""Loading models from the Hub *or* a local directory through one code path, and recording
what was loaded (for provenance in dataset cards and fingerprints).

Every model argument in d2c-hf accepts a Hub id (``"facebook/DiT-XL-2-256"``), a local
directory written by ``save_pretrained`` (the same layout), or an already-loaded model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors",)

# dtype names accepted wherever an argument takes a dtype as a string
DTYPE_ALIASES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}


def looks_like_path(name: str | os.PathLike) -> bool:
    """A name that can only be a filesystem path, not a Hub id (``name`` or ``org/name``): absolute,
    starting with ``.`` or ``~``, or with more than one ``/``. Such a name that does not exist is a typo,
    never something to look up on the Hub."""
    text = os.fspath(name)
    return os.path.isabs(text) or text.startswith((".", "~")) or text.count("/") > 1 or text.endswith("/")


def is_local_path(name: str | os.PathLike | None) -> bool:
    """A name that refers to the local filesystem (an existing path, or one that looks like a path)."""
    if not name:
        return True
    return looks_like_path(name) or Path(os.fspath(name)).expanduser().exists()


def normalise_reference(value: Any) -> Any:
    """A model argument as recorded and compared on resume: an existing local folder becomes its absolute
    path (``./dit`` and ``/abs/dit`` are one model); Hub ids and loaded objects are returned unchanged."""
    if isinstance(value, (str, os.PathLike)) and Path(os.fspath(value)).expanduser().exists():
        return os.path.abspath(Path(os.fspath(value)).expanduser())
    return value


def check_reference(name: str | os.PathLike, role: str) -> None:
    """Refuse a local-looking path that does not exist before anything is loaded (``./nope`` is a typo,
    not a Hub repo), naming the argument's ``role``."""
    path = Path(os.fspath(name)).expanduser()
    if looks_like_path(name) and not path.exists():
        raise FileNotFoundError(f"{role}: no such folder {os.fspath(name)!r}")


def has_file(
    name_or_path: str | os.PathLike, filename: str, subfolder: str | None = None, role: str = "the model"
) -> bool:
    """Whether ``name_or_path[/subfolder]/filename`` exists, in a local folder or a Hub repo (cached or online).

    Raises:
        OSError saying what to do when the repo cannot be reached (offline without a cached copy, no such
        repo): a file that cannot be looked up is never reported as absent.
    """
    path = Path(os.fspath(name_or_path)).expanduser()
    if path.is_dir():
        return (path / (subfolder or "") / filename).is_file()
    check_reference(name_or_path, role)
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        hf_hub_download(os.fspath(name_or_path), filename, subfolder=subfolder)
        return True
    except LocalEntryNotFoundError as err:  # offline, or the Hub unreachable, and nothing cached
        raise OSError(explain_unreachable(name_or_path, role, err)) from err
    except EntryNotFoundError:
        return False
    except (RepositoryNotFoundError, HFValidationError) as err:
        raise OSError(explain_unreachable(name_or_path, role, err)) from err


def read_repo_json(
    name_or_path: str | os.PathLike, filename: str, subfolder: str | None = None, role: str = "the model"
) -> dict | None:
    """A JSON file of a local folder or Hub repo, or None if it has none.

    Raises:
        OSError naming the repo when it is neither a local folder nor a Hub repo that can be reached.
    """
    from .files import read_json

    path = Path(os.fspath(name_or_path)).expanduser()
    if path.is_dir():
        target = path / (subfolder or "") / filename
        return read_json(target, f"{filename} of {name_or_path}") if target.is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        local = hf_hub_download(os.fspath(name_or_path), filename, subfolder=subfolder)
    except LocalEntryNotFoundError as err:  # offline, or the Hub unreachable, and nothing cached
        raise OSError(explain_unreachable(name_or_path, role, err)) from err
    except EntryNotFoundError:
        return None
    except (RepositoryNotFoundError, HFValidationError, OSError) as err:
        raise OSError(explain_unreachable(name_or_path, role, err)) from err
    return read_json(local, f"{filename} of {name_or_path}")


def hub_offline() -> bool:
    """Whether the Hugging Face Hub is switched off (``HF_HUB_OFFLINE=1``)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


#: what else a user can do when a model of this role cannot be reached
ROLE_HINTS = {
    "scorer": "or train a scorer on your own data with d2c_hf.train_scorer",
    "vae": "or pass vae=None (--vae pixel) to work in pixel space",
    "text_encoder": "or leave 'text' out of attach",
    "vision_encoder": "or leave 'visual' out of attach",
}


def explain_unreachable(name: str | os.PathLike, role: str, err: BaseException, hint: str = "") -> str:
    """Why ``name`` could not be loaded, and what to do: a local folder, offline mode, or the Hub's answer."""
    hint = hint or ROLE_HINTS.get(role, "")
    text = os.fspath(name)
    if Path(text).expanduser().exists():
        return f"could not load {role} from the folder {text!r}: {err}"
    if hub_offline():
        why = (
            f"{role} {text!r} is not a local folder, and the Hugging Face Hub is offline (HF_HUB_OFFLINE=1) with no "
            f"cached copy: download it once where the Hub is reachable (`hf download {text}`), or pass a local "
            "folder written by save_pretrained"
        )
    else:
        why = (
            f"{role} {text!r} is not a local folder and could not be loaded from the Hugging Face Hub ({err})"
        )
    return why + (f"; {hint}" if hint else "")


def load_pretrained(cls: Any, name: str | os.PathLike, *, role: str, hint: str = "", **kwargs: Any) -> Any:
    """``cls.from_pretrained(name, **kwargs)`` with errors that say what to do: a mistyped local path is
    named as such (never looked up on the Hub), and a Hub id that cannot be reached says whether the Hub is
    offline and how to get the model. ``role`` names the argument (``"scorer"``, ``"vae"``, ...); a folder
    that holds another kind of model than the role needs is refused before loading
    (:func:`~d2c_hf.utils.roles.check_model_role`), and a folder with a checksum record written at save time
    is verified first (:func:`~d2c_hf.utils.checksums.verify_record`, the component's ``subfolder`` only)."""
    from .checksums import verify_record
    from .roles import check_model_role

    check_reference(name, role)
    check_model_role(name, role)
    folder = Path(os.fspath(name)).expanduser()
    if folder.is_dir():
        verify_record(folder, f"the {role} folder", prefix=kwargs.get("subfolder"))
    try:
        # some classes draw default inits from the global RNG before the weights replace them (diffusers'
        # PixArtTransformer2DModel does): loading must leave the caller's random state as it was
        with torch.random.fork_rng(devices=[]):
            return cls.from_pretrained(os.fspath(name), **kwargs)
    except OSError as err:
        raise OSError(explain_unreachable(name, role, err, hint)) from err


def _sha256_files(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def mark_subfolder(model: Any, subfolder: str | None) -> Any:
    """Remember which subfolder of its repo a model was loaded from (``from_pretrained(...,
    subfolder="vae")`` keeps only the repo root in ``config._name_or_path``), so that
    :func:`model_provenance` hashes that component's weights, not the whole pipeline's."""
    if subfolder:
        model._d2c_subfolder = str(subfolder)
    return model


def model_provenance(model: Any) -> dict[str, Any]:
    """Describe a loaded model for provenance: where it came from and which exact weights.

    Returns ``{"class", "name_or_path", ["subfolder"], "revision" | "sha256"}``. For a Hub
    snapshot the revision is the commit hash in its cache path; for a local folder it is the
    SHA-256 of its weight files (of the component's subfolder when the model was loaded from
    one, see :func:`mark_subfolder`); for an in-memory model without a path, the SHA-256 of its
    state dict.
    """
    config = getattr(model, "config", None)
    name = None
    if config is not None:
        name = getattr(config, "_name_or_path", None)
        if name is None and isinstance(config, dict):
            name = config.get("_name_or_path")
    info: dict[str, Any] = {"class": type(model).__name__, "name_or_path": str(name) if name else None}
    subfolder = getattr(model, "_d2c_subfolder", None)
    if subfolder:
        info["subfolder"] = subfolder
    path = Path(name) if name else None
    if path is not None and subfolder and (path / subfolder).is_dir():
        path = path / subfolder
    if path is not None and path.exists():
        parts = path.resolve().parts
        if "snapshots" in parts:  # ~/.cache/huggingface/hub/models--org--name/snapshots/<commit>/...
            i = parts.index("snapshots")
            info["revision"] = parts[i + 1]
            repo = parts[i - 1]
            if repo.startswith("models--"):
                info["name_or_path"] = repo[len("models--") :].replace("--", "/")
            return info
        files = [p for p in (path.rglob("*") if path.is_dir() else [path]) if p.suffix in WEIGHT_SUFFIXES]
        if files:
            info["sha256"] = _sha256_files(files)
            return info
    info["sha256"] = state_dict_sha256(model)
    return info


def state_dict_sha256(model: torch.nn.Module) -> str:
    """SHA-256 over a module's state dict (names, dtypes, shapes and values)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> the first CUDA device if available, else MPS, else CPU."""
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``None`` -> bfloat16 on CUDA devices that support it, else float32. Strings like ``"bf16"`` accepted.

    Only float32, bfloat16 and float16 are compute dtypes here (``torch.autocast`` has no others): any
    other dtype is refused, never run in float32 behind a warning while provenance records it.
    """
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPE_ALIASES.values():
            raise ValueError(
                f"dtype {dtype} is not supported: pass torch.float32, torch.bfloat16 or torch.float16 "
                "(or 'fp32' / 'bf16' / 'fp16')"
            )
        return dtype
    if dtype is None:
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype not in DTYPE_ALIASES:
        raise ValueError(f"dtype must be one of {sorted(DTYPE_ALIASES)} or a torch.dtype, got {dtype!r}")
    return DTYPE_ALIASES[dtype]


def check_fork_safe(num_proc: int | None, device: torch.device, caller: str) -> None:
    """Refuse ``datasets.map(num_proc > 1)`` when its workers would be forked from a process that
    has already run torch: a forked child deadlocks in torch's OpenMP pool once the parent ran
    multi-threaded ops, and cannot re-initialise CUDA. Checked before any work starts.

    Args:
        num_proc: the ``num_proc`` passed to ``map``.
        device: the device the transform's model is on.
        caller: named in the error, e.g. ``"DifficultyScorer.apply"``.
    """
    if not num_proc or num_proc <= 1:
        return
    import multiprocess  # the multiprocessing flavour datasets uses (not torch.multiprocessing)

    method = multiprocess.get_start_method(allow_none=True) or multiprocess.get_all_start_methods()[0]
    if method == "fork" and (torch.get_num_threads() > 1 or device.type == "cuda"):
        raise RuntimeError(
            f"{caller}(num_proc={num_proc}) would fork worker processes, which hang in torch's thread pool "
            f"(or cannot use CUDA) after the parent ran torch: call multiprocess.set_start_method('spawn') "
            "under `if __name__ == '__main__':` first (the datasets multi-GPU recipe), or "
            "torch.set_num_threads(1) on CPU"
        )
