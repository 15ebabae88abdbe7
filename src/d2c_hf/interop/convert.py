# Copyright 2025 The d2c-hf authors. Apache-2.0.
"""Convert original REPA (sihyun-yu/REPA) and SiT (willisma/SiT) checkpoints to :class:`SiTTransformer2DModel`.

Both codebases share DiT's module layout (timm ``PatchEmbed``/``Attention``/``Mlp``)::

    x_embedder.proj.{weight,bias}                 -> patch_embed.proj.*
    pos_embed (fixed 2D sin-cos)                  -> checked against ours, then dropped (a non-saved buffer)
    t_embedder.mlp.{0,2}.*                        -> timestep_embedder.linear_{1,2}.*
    y_embedder.embedding_table.weight             -> class_embedder.embedding_table.weight
    blocks.i.attn.qkv.*                           -> transformer_blocks.i.attn.to_{q,k,v}.* (split in 3)
    blocks.i.attn.{q,k}_norm.*                    -> transformer_blocks.i.attn.norm_{q,k}.*      (qk_norm)
    blocks.i.attn.proj.*                          -> transformer_blocks.i.attn.to_out.0.*
    blocks.i.mlp.fc{1,2}.*                        -> transformer_blocks.i.ff.net.{0.proj,2}.*
    blocks.i.adaLN_modulation.1.*                 -> transformer_blocks.i.norm1.linear.*
    final_layer.adaLN_modulation.1.*              -> norm_out.linear.*   ((shift, scale) -> (scale, shift) halves)
    final_layer.linear.*                          -> proj_out.*
    projectors.k.{0,2,4}.*                        -> projectors.k.{0,2,4}.*                      (REPA only)

**Time conventions.** REPA is already ours (t = sigma, 0 = data, v = eps - x). Original SiT runs time the
other way: ``x_t = t x + (1 - t) eps`` and predicts ``u = x - eps``, so ``t_sit = 1 - sigma`` and ``v = -u``.
:func:`convert_sit_state_dict` folds both into the weights, so the converted model is an ordinary
REPA-convention model (no flag, every pipeline and loss works unchanged):

* time reversal: the timestep embedding is ``emb(t) = [cos(t f), sin(t f)]``, and the angle-difference
  identities make ``emb(1 - sigma) = R emb(sigma)`` for a fixed block matrix R (per frequency
  ``[[cos f, sin f], [sin f, -cos f]]``); the first Linear of the timestep MLP becomes ``W R``. Exact in exact
  arithmetic; in float32 the outputs agree to ~1e-6 relative.
* sign: the velocity rows of the output projection are negated (bitwise exact).
* learned sigma: SiT's XL/2 has ``2 * in_channels`` outputs whose second half is unused; it is dropped unless
  the target config has ``learn_sigma=True``.

Checkpoints are read with ``torch.load(weights_only=True)`` (``argparse.Namespace`` allowed, for the ``args``
entry of training checkpoints) or from ``.safetensors``.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..models.transformer_sit import SIT_PRESETS, SiTTransformer2DModel, default_encoder_depth, preset_config

logger = logging.getLogger(__name__)

__all__ = [
    "convert_repa_state_dict",
    "convert_sit_state_dict",
    "load_original_checkpoint",
    "load_repa_checkpoint",
    "load_sit_checkpoint",
    "reversed_time_matrix",
    "save_converted",
]

_PREFIXES = ("module.", "_orig_mod.")  # DDP and torch.compile wrappers
_MAX_LISTED = 10


# ----------------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------------


def load_original_checkpoint(
    path: str | os.PathLike, weights: str = "ema"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a REPA/SiT checkpoint file into ``(state_dict, args)``.

    Accepts a bare state dict or a training checkpoint ``{"model", "ema", "opt", "args", ...}`` (``weights``
    picks ``"ema"`` or ``"model"``), as ``.pt``/``.pth`` (``torch.load(weights_only=True)``) or ``.safetensors``.
    ``module.``/``_orig_mod.`` key prefixes are stripped; ``args`` is the checkpoint's training arguments as a
    dict (empty when absent).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if weights not in ("ema", "model"):
        raise ValueError(f"weights must be 'ema' or 'model', got {weights!r}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        obj: Any = load_file(str(path))
    else:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    args: dict[str, Any] = {}
    if isinstance(obj, Mapping) and obj and all(torch.is_tensor(v) for v in obj.values()):
        state_dict = dict(obj)
    elif isinstance(obj, Mapping) and ("ema" in obj or "model" in obj):
        raw_args = obj.get("args")
        if isinstance(raw_args, argparse.Namespace):
            args = vars(raw_args)
        elif isinstance(raw_args, Mapping):
            args = dict(raw_args)
        if weights not in obj:
            raise ValueError(
                f"{path} has no {weights!r} entry (it has {sorted(obj)}); choose weights='model'/'ema'"
            )
        state_dict = dict(obj[weights])
    else:
        keys = sorted(obj)[:_MAX_LISTED] if isinstance(obj, Mapping) else type(obj).__name__
        raise ValueError(
            f"{path} is neither a state dict nor a checkpoint with 'ema'/'model' entries: {keys}"
        )
    cleaned = {}
    for key, value in state_dict.items():
        for prefix in _PREFIXES:
            while key.startswith(prefix):
                key = key[len(prefix) :]
        cleaned[key] = value
    return cleaned, args


# ----------------------------------------------------------------------------------------------------
# config handling
# ----------------------------------------------------------------------------------------------------

_CONFIG_KEYS = tuple(p for p in inspect.signature(SiTTransformer2DModel.__init__).parameters if p != "self")


def _resolved_config(config: Any) -> dict[str, Any]:
    """A complete config dict (defaults filled, ``out_channels``/``encoder_depth`` resolved)."""
    if isinstance(config, SiTTransformer2DModel):
        config = config.config
    defaults = {
        name: p.default
        for name, p in inspect.signature(SiTTransformer2DModel.__init__).parameters.items()
        if name != "self"
    }
    unknown = set(config) - set(defaults) - {k for k in config if str(k).startswith("_")}
    if unknown:
        raise ValueError(f"unknown SiTTransformer2DModel config keys: {sorted(unknown)}")
    cfg = {**defaults, **{k: v for k, v in config.items() if k in defaults}}
    cfg["z_dims"] = [int(z) for z in cfg["z_dims"]]
    if cfg["out_channels"] is None:
        cfg["out_channels"] = 2 * cfg["in_channels"] if cfg["learn_sigma"] else cfg["in_channels"]
    if cfg["z_dims"] and cfg["encoder_depth"] is None:
        cfg["encoder_depth"] = default_encoder_depth(cfg["depth"])
    return cfg


def _check_keys(state_dict: Mapping[str, Any], expected: set[str], optional: set[str], layout: str) -> None:
    missing = sorted(expected - set(state_dict))
    unexpected = sorted(set(state_dict) - expected - optional)
    if missing or unexpected:
        parts = []
        for name, keys in (("missing", missing), ("unexpected", unexpected)):
            if keys:
                more = f" ... and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else ""
                parts.append(f"{name} ({len(keys)}): {keys[:_MAX_LISTED]}{more}")
        raise ValueError(
            f"checkpoint keys do not match the {layout} layout for this config: " + "; ".join(parts) + ". "
            "Check the preset (depth), qk_norm, z_dims (projectors) and that this is a "
            f"{layout} checkpoint."
        )


def _original_keys(cfg: Mapping[str, Any], projectors: bool) -> set[str]:
    keys = {"x_embedder.proj.weight", "x_embedder.proj.bias", "y_embedder.embedding_table.weight"}
    keys |= {f"t_embedder.mlp.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")}
    keys |= {f"final_layer.{m}.{p}" for m in ("linear", "adaLN_modulation.1") for p in ("weight", "bias")}
    block_modules = ["attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2", "adaLN_modulation.1"]
    if cfg["qk_norm"]:
        block_modules += ["attn.q_norm", "attn.k_norm"]
    keys |= {
        f"blocks.{i}.{m}.{p}" for i in range(cfg["depth"]) for m in block_modules for p in ("weight", "bias")
    }
    if projectors:
        keys |= {
            f"projectors.{k}.{j}.{p}"
            for k in range(len(cfg["z_dims"]))
            for j in (0, 2, 4)
            for p in ("weight", "bias")
        }
    return keys


def _check_pos_embed(state_dict: Mapping[str, torch.Tensor], cfg: Mapping[str, Any]) -> None:
    from diffusers.models.embeddings import get_2d_sincos_pos_embed

    if "pos_embed" not in state_dict:
        return
    pos = state_dict["pos_embed"].float().reshape(-1, state_dict["pos_embed"].shape[-1])
    grid = cfg["sample_size"] // cfg["patch_size"]
    if tuple(pos.shape) != (grid * grid, cfg["hidden_size"]):
        tokens = pos.shape[0]
        side = math.isqrt(tokens)
        hint = (
            f" (a {side}x{side} token grid: sample_size={side * cfg['patch_size']})"
            if side * side == tokens
            else ""
        )
        raise ValueError(
            f"checkpoint pos_embed has shape {tuple(state_dict['pos_embed'].shape)}{hint}, but the config expects "
            f"{grid * grid} tokens of width {cfg['hidden_size']} (sample_size={cfg['sample_size']}, "
            f"patch_size={cfg['patch_size']}); pass the matching sample_size"
        )
    ours = get_2d_sincos_pos_embed(cfg["hidden_size"], grid, base_size=grid).float()
    if not torch.allclose(pos, ours, atol=1e-5):
        raise ValueError("checkpoint pos_embed is not the fixed 2D sin-cos embedding this model uses")


def _shape_check(key: str, tensor: torch.Tensor, shape: tuple[int, ...]) -> None:
    if tuple(tensor.shape) != tuple(shape):
        raise ValueError(
            f"checkpoint {key} has shape {tuple(tensor.shape)}, expected {tuple(shape)} for this config"
        )


def _convert_common(
    sd: Mapping[str, torch.Tensor], cfg: Mapping[str, Any], layout: str
) -> dict[str, torch.Tensor]:
    """The key mapping shared by REPA and SiT (everything but the output projection's rows)."""
    if cfg["text_embed_dim"] is not None:
        raise ValueError(f"{layout} checkpoints have no DC-Embedding; convert with text_embed_dim=None")
    hidden, patch = cfg["hidden_size"], cfg["patch_size"]
    rows = cfg["num_classes"] + (1 if cfg["class_dropout_prob"] > 0 else 0)
    _shape_check(
        "x_embedder.proj.weight", sd["x_embedder.proj.weight"], (hidden, cfg["in_channels"], patch, patch)
    )
    _shape_check("y_embedder.embedding_table.weight", sd["y_embedder.embedding_table.weight"], (rows, hidden))
    _check_pos_embed(sd, cfg)
    out = {
        "patch_embed.proj.weight": sd["x_embedder.proj.weight"],
        "patch_embed.proj.bias": sd["x_embedder.proj.bias"],
        "class_embedder.embedding_table.weight": sd["y_embedder.embedding_table.weight"],
    }
    for p in ("weight", "bias"):
        out[f"timestep_embedder.linear_1.{p}"] = sd[f"t_embedder.mlp.0.{p}"]
        out[f"timestep_embedder.linear_2.{p}"] = sd[f"t_embedder.mlp.2.{p}"]
        # SiT's final adaLN emits (shift, scale); diffusers' AdaLayerNormContinuous expects (scale, shift)
        shift, scale = sd[f"final_layer.adaLN_modulation.1.{p}"].chunk(2, dim=0)
        out[f"norm_out.linear.{p}"] = torch.cat([scale, shift], dim=0)
    for i in range(cfg["depth"]):
        src, dst = f"blocks.{i}.", f"transformer_blocks.{i}."
        _shape_check(src + "attn.qkv.weight", sd[src + "attn.qkv.weight"], (3 * hidden, hidden))
        for p in ("weight", "bias"):
            q, k, v = (part.clone() for part in sd[f"{src}attn.qkv.{p}"].chunk(3, dim=0))  # no shared storage
            out[f"{dst}attn.to_q.{p}"], out[f"{dst}attn.to_k.{p}"], out[f"{dst}attn.to_v.{p}"] = q, k, v
            out[f"{dst}attn.to_out.0.{p}"] = sd[f"{src}attn.proj.{p}"]
            out[f"{dst}ff.net.0.proj.{p}"] = sd[f"{src}mlp.fc1.{p}"]
            out[f"{dst}ff.net.2.{p}"] = sd[f"{src}mlp.fc2.{p}"]
            out[f"{dst}norm1.linear.{p}"] = sd[f"{src}adaLN_modulation.1.{p}"]
            if cfg["qk_norm"]:
                out[f"{dst}attn.norm_q.{p}"] = sd[f"{src}attn.q_norm.{p}"]
                out[f"{dst}attn.norm_k.{p}"] = sd[f"{src}attn.k_norm.{p}"]
    return out


def convert_repa_state_dict(state_dict: Mapping[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    """Map a REPA ``models/sit.py`` state dict onto :class:`SiTTransformer2DModel` keys (same conventions).

    Args:
        state_dict: the original weights (``ema`` or ``model`` entry), prefixes already stripped.
        config: the target model's config (a model, its ``config``, or a dict; defaults filled). Its ``z_dims``
            must match the checkpoint's projectors (``z_dims=()`` requires a checkpoint without projectors;
            :func:`load_repa_checkpoint` can drop them).

    Returns:
        A state dict for ``SiTTransformer2DModel(**config).load_state_dict(..., strict=True)``.

    Raises:
        ValueError: naming missing/unexpected keys or mismatched shapes.
    """
    cfg = _resolved_config(config)
    if cfg["learn_sigma"] or cfg["out_channels"] != cfg["in_channels"]:
        raise ValueError("REPA models have out_channels == in_channels; convert with learn_sigma=False")
    _check_keys(state_dict, _original_keys(cfg, projectors=True), {"pos_embed"}, "REPA")
    out = _convert_common(state_dict, cfg, "REPA")
    hidden, patch = cfg["hidden_size"], cfg["patch_size"]
    _shape_check(
        "final_layer.linear.weight",
        state_dict["final_layer.linear.weight"],
        (patch * patch * cfg["in_channels"], hidden),
    )
    out["proj_out.weight"] = state_dict["final_layer.linear.weight"]
    out["proj_out.bias"] = state_dict["final_layer.linear.bias"]
    for k, z_dim in enumerate(cfg["z_dims"]):
        _shape_check(
            f"projectors.{k}.4.weight", state_dict[f"projectors.{k}.4.weight"], (z_dim, cfg["projector_dim"])
        )
        for j in (0, 2, 4):
            for p in ("weight", "bias"):
                out[f"projectors.{k}.{j}.{p}"] = state_dict[f"projectors.{k}.{j}.{p}"]
    return out


def reversed_time_matrix(num_channels: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """The float64 ``(C, C)`` matrix R with ``emb(1 - t) = R @ emb(t)`` for ``emb(t) = [cos(t f), sin(t f)]``.

    ``f_k = exp(-ln(max_period) k / (C/2))`` in float32, as diffusers' ``Timesteps(C, flip_sin_to_cos=True,
    downscale_freq_shift=0)`` and SiT's ``TimestepEmbedder`` compute them. From
    ``cos((1-t)f) = cos f cos tf + sin f sin tf`` and ``sin((1-t)f) = sin f cos tf - cos f sin tf``.
    """
    if num_channels % 2:
        raise ValueError(f"num_channels must be even, got {num_channels}")
    half = num_channels // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half).double()
    cos, sin = torch.cos(freqs), torch.sin(freqs)
    k = torch.arange(half)
    matrix = torch.zeros(num_channels, num_channels, dtype=torch.float64)
    matrix[k, k] = cos
    matrix[k, half + k] = sin
    matrix[half + k, k] = sin
    matrix[half + k, half + k] = -cos
    return matrix


def convert_sit_state_dict(state_dict: Mapping[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    """Map an original SiT (willisma/SiT ``models.py``) state dict onto :class:`SiTTransformer2DModel`, in REPA
    convention: the converted model takes ``sigma`` and predicts ``v = eps - x``.

    The time reversal ``t_sit = 1 - sigma`` is folded into ``timestep_embedder.linear_1.weight`` (``W R``, see
    :func:`reversed_time_matrix`), the velocity sign into the output projection (negated rows). A learned-sigma
    checkpoint (``2 * in_channels`` outputs) keeps its unused second half only if ``config`` has
    ``learn_sigma=True``.

    Raises:
        ValueError: naming missing/unexpected keys or mismatched shapes.
    """
    cfg = _resolved_config(config)
    if cfg["z_dims"]:
        raise ValueError("original SiT checkpoints have no projectors; convert with z_dims=()")
    _check_keys(state_dict, _original_keys(cfg, projectors=False), {"pos_embed"}, "SiT")
    out = _convert_common(state_dict, cfg, "SiT")

    weight = state_dict["t_embedder.mlp.0.weight"]
    _shape_check("t_embedder.mlp.0.weight", weight, (cfg["hidden_size"], 256))
    out["timestep_embedder.linear_1.weight"] = (weight.double() @ reversed_time_matrix(256)).to(weight.dtype)

    hidden, patch, channels = cfg["hidden_size"], cfg["patch_size"], cfg["in_channels"]
    weight, bias = state_dict["final_layer.linear.weight"], state_dict["final_layer.linear.bias"]
    original_out, remainder = divmod(weight.shape[0], patch * patch)
    if remainder or original_out not in (channels, 2 * channels) or weight.shape[1] != hidden:
        raise ValueError(
            f"checkpoint final_layer.linear.weight has shape {tuple(weight.shape)}; expected "
            f"({patch * patch} * {channels} or {patch * patch} * {2 * channels}, {hidden}) for this config"
        )
    if cfg["out_channels"] == 2 * channels and original_out != 2 * channels:
        raise ValueError("learn_sigma=True needs a learned-sigma checkpoint (2 * in_channels outputs)")
    # rows are ordered (patch row, patch col, channel) with the channel fastest, as SiT's unpatchify
    weight = weight.reshape(patch * patch, original_out, hidden).clone()
    bias = bias.reshape(patch * patch, original_out).clone()
    weight[:, :channels].neg_()  # v = -u (bitwise exact)
    bias[:, :channels].neg_()
    keep = cfg["out_channels"]
    out["proj_out.weight"] = weight[:, :keep].reshape(patch * patch * keep, hidden).contiguous()
    out["proj_out.bias"] = bias[:, :keep].reshape(patch * patch * keep).contiguous()
    return out


# ----------------------------------------------------------------------------------------------------
# loading into a model
# ----------------------------------------------------------------------------------------------------


def _infer_config(
    state_dict: Mapping[str, torch.Tensor],
    preset: str | None,
    args: Mapping[str, Any],
    overrides: Mapping[str, Any],
) -> dict[str, Any]:
    """Model config from the checkpoint's shapes (+ preset for heads, + training args), then ``overrides``."""
    unknown = set(overrides) - set(_CONFIG_KEYS)
    if unknown:
        raise ValueError(f"unknown SiTTransformer2DModel config keys: {sorted(unknown)}")
    try:
        hidden, in_channels, patch, _ = state_dict["x_embedder.proj.weight"].shape
        depth = 1 + max(int(k.split(".")[1]) for k in state_dict if k.startswith("blocks."))
        rows = state_dict["y_embedder.embedding_table.weight"].shape[0]
    except (KeyError, ValueError) as error:
        raise ValueError(
            "not a SiT/REPA checkpoint: it lacks x_embedder.proj.weight, blocks.* or y_embedder.embedding_table.weight"
        ) from error
    found = {"depth": depth, "hidden_size": hidden, "patch_size": patch}
    matching = [name for name, p in SIT_PRESETS.items() if {k: p[k] for k in found} == found]
    if preset is None:
        preset = matching[0] if matching else None  # (depth, width, patch) identifies a preset uniquely
        if preset is None and "num_attention_heads" not in overrides:
            raise ValueError(
                f"the checkpoint (depth {depth}, width {hidden}, patch {patch}) matches no SiT preset; "
                "pass num_attention_heads (and any other config) explicitly"
            )
    if preset is not None:
        cfg = preset_config(preset)
        if {k: cfg[k] for k in found} != found:
            hint = f"; it looks like {matching[0]}" if matching else ""
            raise ValueError(
                f"the checkpoint has depth {depth}, width {hidden} and patch {patch}, which is not {preset} "
                f"(depth {cfg['depth']}, width {cfg['hidden_size']}, patch {cfg['patch_size']}){hint}"
            )
    else:
        cfg = dict(found)
    cfg["in_channels"] = int(in_channels)
    cfg["num_classes"] = int(rows) - 1  # the null row of class dropout (DiT/SiT/REPA train with p > 0)
    cfg["qk_norm"] = "blocks.0.attn.q_norm.weight" in state_dict
    if "pos_embed" in state_dict:
        side = math.isqrt(state_dict["pos_embed"].reshape(-1, hidden).shape[0])
        cfg["sample_size"] = side * int(patch)
    z_dims = []
    while f"projectors.{len(z_dims)}.4.weight" in state_dict:
        z_dims.append(int(state_dict[f"projectors.{len(z_dims)}.4.weight"].shape[0]))
    if z_dims:
        cfg["z_dims"] = z_dims
        cfg["projector_dim"] = int(state_dict["projectors.0.0.weight"].shape[0])
        if args.get("encoder_depth") is not None:
            cfg["encoder_depth"] = int(args["encoder_depth"])
    cfg.update(overrides)
    return cfg


def _build(
    config: dict[str, Any], converted: dict[str, torch.Tensor], dtype: torch.dtype | None
) -> SiTTransformer2DModel:
    from accelerate import init_empty_weights

    dtype = dtype or torch.float32
    converted = {k: v.to(dtype) if v.is_floating_point() else v for k, v in converted.items()}
    with init_empty_weights():  # parameters on the meta device: no random init of a 675M model
        model = SiTTransformer2DModel(**config)
    model.load_state_dict(converted, strict=True, assign=True)  # parameters take the converted tensors' dtype
    return model.eval()


def load_repa_checkpoint(
    path: str | os.PathLike,
    preset: str | None = None,
    *,
    weights: str = "ema",
    keep_projectors: bool = True,
    dtype: torch.dtype | None = None,
    **overrides: Any,
) -> SiTTransformer2DModel:
    """Load a REPA checkpoint (e.g. the released SiT-XL/2 ``last.pt``) as a :class:`SiTTransformer2DModel`.

    Args:
        path: ``.pt``/``.pth`` (training checkpoint or bare state dict) or ``.safetensors``.
        preset: e.g. ``"SiT-XL/2"``; default: from the checkpoint's ``args.model`` or its shapes.
        weights: ``"ema"`` (default, what REPA samples with) or ``"model"``.
        keep_projectors: keep the REPA projectors (for further REPA training); ``False`` gives an
            inference-only model.
        dtype: cast the weights (default float32).
        overrides: config entries, e.g. ``encoder_depth=8`` (default: the checkpoint's ``args.encoder_depth``,
            else :func:`default_encoder_depth`) or ``sample_size``.

    Returns:
        The model in eval mode; save it with ``save_pretrained``.
    """
    state_dict, args = load_original_checkpoint(path, weights)
    if not keep_projectors:
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("projectors.")}
        overrides = {**overrides, "z_dims": ()}
    config = _infer_config(state_dict, preset, args, overrides)
    converted = convert_repa_state_dict(state_dict, config)
    logger.info("converted REPA checkpoint %s (%s tensors)", path, len(converted))
    return _build(config, converted, dtype)


def load_sit_checkpoint(
    path: str | os.PathLike,
    preset: str | None = None,
    *,
    weights: str = "ema",
    keep_sigma_half: bool = False,
    dtype: torch.dtype | None = None,
    **overrides: Any,
) -> SiTTransformer2DModel:
    """Load an original SiT (willisma/SiT) checkpoint, e.g. ``SiT-XL-2-256x256.pt``, in REPA convention.

    See :func:`convert_sit_state_dict` for the time/sign transform. ``keep_sigma_half=True`` keeps the unused
    learned-sigma output channels (``learn_sigma=True``); by default they are dropped. Other arguments as
    :func:`load_repa_checkpoint`.
    """
    state_dict, args = load_original_checkpoint(path, weights)
    config = _infer_config(state_dict, preset, args, {"learn_sigma": keep_sigma_half, **overrides})
    converted = convert_sit_state_dict(state_dict, config)
    logger.info("converted SiT checkpoint %s (%s tensors)", path, len(converted))
    return _build(config, converted, dtype)


# ----------------------------------------------------------------------------------------------------
# saving (what `d2c convert-repa` / `d2c convert-sit` do with the converted model)
# ----------------------------------------------------------------------------------------------------


def save_converted(
    model: SiTTransformer2DModel,
    output_dir: str | os.PathLike,
    *,
    pipeline: bool = False,
    vae: str | os.PathLike | None = None,
    scheduler: str = "sde",
    id2label: Mapping[int, str] | None = None,
) -> Path:
    """Save a converted model: the model folder alone, or (``pipeline=True``) a ``SiTPipeline`` folder with
    ``scheduler`` (``"sde"``: REPA's Euler-Maruyama, ``"euler"``: the flow ODE), an optional ``vae`` and
    ``id2label``. Returns the folder."""
    from ..utils.checksums import write_record
    from ..utils.files import staged_entries

    output = Path(output_dir)
    if not pipeline:
        if vae is not None or id2label is not None:
            raise ValueError("vae and id2label need pipeline=True (--pipeline)")
        # written whole beside the folder, then moved in (config.json last), with content checksums
        with staged_entries(output, "the converted model", last=("config.json",)) as staging:
            model.save_pretrained(staging)
            write_record(staging)
        return output
    from diffusers import FlowMatchEulerDiscreteScheduler

    from ..pipelines import FlowMatchEulerMaruyamaScheduler, SiTPipeline
    from ..utils.vae import load_vae

    if scheduler not in ("sde", "euler"):
        raise ValueError(f"scheduler must be 'sde' or 'euler', got {scheduler!r}")
    flow = FlowMatchEulerMaruyamaScheduler() if scheduler == "sde" else FlowMatchEulerDiscreteScheduler()
    SiTPipeline(transformer=model, scheduler=flow, vae=load_vae(vae), id2label=id2label).save_pretrained(
        output
    )
    return output
