"""What a model folder holds, and whether that fits the argument it was given to, before anything loads.

Every model argument has a role (``scorer``, ``vae``, ``text_encoder``, ``vision_encoder``, ``pipeline``).
:func:`check_model_role` reads the folder's ``model_index.json`` / ``config.json`` (a local folder, or a
Hub repo already in the local cache; nothing is downloaded) and refuses a folder that holds another kind
of model, a file, or no model at all, in one line: which argument, what the folder holds, what was
expected. A DINOv2 folder passed as the text encoder would otherwise be accepted, the whole score phase
would run, and transformers would fail with advice about installing sentencepiece.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

#: what each role expects, as said in messages
EXPECTED = {
    "scorer": "a class-conditional diffusion model (a DiT or SiT pipeline or transformer folder, a UNet2DModel "
    "with num_class_embeds, or the output of train_scorer) or, with a caption column, a text-to-image pipeline "
    "(Stable Diffusion, PixArt, SD3, or the output of train_text_scorer)",
    "vae": "an AutoencoderKL folder (config.json with _class_name AutoencoderKL), or a pipeline folder with a vae/ "
    "subfolder",
    "text_encoder": "a T5 encoder folder (transformers, model_type 't5', with its tokenizer), like google/flan-t5-xl",
    "vision_encoder": "a transformers vision encoder folder (e.g. DINOv2, model_type 'dinov2', with its image "
    "processor), like facebook/dinov2-base",
    "clip_model": "a transformers CLIPModel folder (config.json with model_type 'clip', with its processor), like "
    "openai/clip-vit-large-patch14",
    "pipeline": "a SiTPipeline folder (model_index.json with a SiTTransformer2DModel transformer), as "
    "examples/train_sit.py or `d2c convert-repa --pipeline` write it",
}
#: T5-family model types whose weights T5EncoderModel loads
T5_TYPES = ("t5", "mt5")
#: top-level config keys that only vision models' configs have
VISION_KEYS = ("image_size", "num_channels", "patch_size")
TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "tokenizer_config.json")


def _reader(value: str | os.PathLike):
    """``read(relative path) -> dict | None`` for a local folder, or for a Hub repo's cached files (None
    when the repo is neither a local folder nor cached: its loader will say why)."""
    path = Path(os.fspath(value)).expanduser()
    if path.is_dir():

        def read_local(name: str) -> dict[str, Any] | None:
            file = path / name
            if not file.is_file():
                return None
            try:
                data = json.loads(file.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                return {"_unreadable": str(file)}
            return data if isinstance(data, dict) else {"_unreadable": str(file)}

        def exists_local(name: str) -> bool:
            return (path / name).is_file()

        return read_local, exists_local
    from huggingface_hub import try_to_load_from_cache

    def cached(name: str) -> str | None:
        try:
            found = try_to_load_from_cache(os.fspath(value), name)
        except Exception:  # not a valid repo id: the loader's own message applies
            return None
        return found if isinstance(found, str) else None

    if cached("config.json") is None and cached("model_index.json") is None:
        return None

    def read_cached(name: str) -> dict[str, Any] | None:
        file = cached(name)
        if file is None:
            return None
        try:
            data = json.loads(Path(file).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return {"_unreadable": file}
        return data if isinstance(data, dict) else {"_unreadable": file}

    return read_cached, lambda name: cached(name) is not None


def _class_of(entry: Any) -> str | None:
    """The class name of a ``model_index.json`` entry (``["diffusers", "DiTTransformer2DModel"]``) or
    ``_class_name`` value (a string, or d2c-hf's ``["pipeline_sit", "SiTPipeline"]``)."""
    if isinstance(entry, (list, tuple)) and entry:
        return None if entry[-1] is None else str(entry[-1])
    return str(entry) if entry else None


def _a(name: Any) -> str:
    text = str(name)
    return f"{'an' if text[:1].lower() in 'aeiou' else 'a'} {text}"


def _transformers_name(config: dict[str, Any]) -> str:
    architectures = config.get("architectures") or []
    kind = architectures[0] if architectures else f"{config.get('model_type')} model"
    return f"{_a(kind)} (transformers, model_type {config.get('model_type')!r})"


def describe(value: str | os.PathLike) -> str | None:
    """What a model folder holds, in words (``"a DiTPipeline pipeline (transformer, vae, scheduler)"``,
    ``"a Dinov2Model (transformers, model_type 'dinov2')"``, ``"a file"``, ``"no model ..."``), or None when
    it cannot be told without a download."""
    path = Path(os.fspath(value)).expanduser()
    if path.exists() and not path.is_dir():
        return "a file, not a model folder"
    reader = _reader(value)
    if reader is None:
        return None
    read, _ = reader
    index = read("model_index.json")
    if index is not None:
        components = [k for k, v in index.items() if not k.startswith("_") and isinstance(v, list) and v[0]]
        return (
            f"{_a(_class_of(index.get('_class_name')))} pipeline ({', '.join(components) or 'no components'})"
        )
    config = read("config.json")
    if config is None:
        return "no model (no config.json or model_index.json)"
    if "_unreadable" in config:
        return f"an unreadable config.json ({config['_unreadable']})"
    if "_class_name" in config:
        return f"{_a(config['_class_name'])} (diffusers)"
    if "model_type" in config:
        return _transformers_name(config)
    return "a config.json of no known library (no _class_name or model_type)"


#: the pipeline components that hold a denoiser
DENOISER_PARTS = ("transformer", "unet")


def _fits(role: str, read, exists) -> bool:
    index = read("model_index.json")
    config = read("config.json")
    if role == "pipeline":
        return index is not None and _class_of(index.get("_class_name")) == "SiTPipeline"
    if role == "vae":
        if config is not None and str(config.get("_class_name", "")).startswith("AutoencoderKL"):
            return True
        sub = read("vae/config.json")
        return sub is not None and str(sub.get("_class_name", "")).startswith("AutoencoderKL")
    if role == "scorer":  # a denoiser: a transformer or a UNet (class- or text-conditional), or its pipeline
        if index is not None:
            return any(_class_of(index.get(part)) is not None for part in DENOISER_PARTS)
        for part in DENOISER_PARTS:
            sub = read(f"{part}/config.json")
            if sub is not None and "_class_name" in sub:
                return True
        name = str((config or {}).get("_class_name", ""))
        return bool(name) and not name.startswith(("Autoencoder", "VQModel", "ConsistencyDecoder"))
    if role == "text_encoder":
        return config is not None and config.get("model_type") in T5_TYPES
    if role == "clip_model":
        return config is not None and config.get("model_type") == "clip"
    if role == "vision_encoder":
        if config is None or "model_type" not in config or "_class_name" in config:
            return False
        return any(key in config for key in VISION_KEYS) and "text_config" not in config
    return True


def check_model_role(value: Any, role: str, name: str | None = None, *, tokenizer: bool = False) -> None:
    """Refuse a model argument whose folder does not hold what ``role`` needs (see :data:`EXPECTED`),
    before any weights load. Loaded models, Hub ids that are not cached (the loader says what to do) and
    roles not in :data:`EXPECTED` pass.

    Args:
        value: the argument (a Hub id or a folder).
        role: ``"scorer"``, ``"vae"``, ``"text_encoder"``, ``"vision_encoder"``, ``"clip_model"`` or ``"pipeline"``.
        name: how to name the argument in the message (default: ``role``; e.g. ``"--vae"``).
        tokenizer: a ``text_encoder`` folder must also hold its tokenizer (it is loaded from there).

    Raises:
        ValueError: ``"<name>: <value> holds <what>; expected <what role needs>"``.
    """
    if role not in EXPECTED or not isinstance(value, (str, os.PathLike)):
        return
    name = name or role
    path = Path(os.fspath(value)).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"{name}: {os.fspath(value)} is a file; expected {EXPECTED[role]}")
    reader = _reader(value)
    if reader is None:
        return
    read, exists = reader
    if not _fits(role, read, exists):
        hint = ""
        if role == "scorer" and str((read("config.json") or {}).get("_class_name", "")).startswith(
            "Autoencoder"
        ):
            hint = " (a VAE: pass it as vae=... / --vae)"
        raise ValueError(
            f"{name}: {os.fspath(value)} holds {describe(value)}{hint}; expected {EXPECTED[role]}"
        )
    if role == "text_encoder" and tokenizer and not any(exists(f) for f in TOKENIZER_FILES):
        raise ValueError(
            f"{name}: {os.fspath(value)} holds {describe(value)} but no tokenizer ({', '.join(TOKENIZER_FILES)}); "
            "save the tokenizer beside the model (tokenizer.save_pretrained(folder))"
        )


__all__ = ["EXPECTED", "check_model_role", "describe"]
