"""Select, the model side of a caption-conditioned score: the text-to-image families, how each denoiser is
called, and the loading of a scorer from a diffusers pipeline folder or Hub id.

=====================  ==============================  =======================  ==============================
family                 denoiser                        text encoder(s)          prediction
=====================  ==============================  =======================  ==============================
``stable-diffusion``   ``UNet2DConditionModel``        CLIP (``text_encoder``)  epsilon or v_prediction (the
                       (SD 1.x, 2.x)                                            scheduler's ``prediction_type``)
``pixart``             ``PixArtTransformer2DModel``    T5 (``text_encoder``)    epsilon (learned sigma: the
                       (PixArt-alpha, -Sigma)                                   first half of the output)
``sd3``                ``SD3Transformer2DModel``       CLIP-L, CLIP-G, T5       flow (rectified flow, ``x_t = (1
                                                       (``text_encoder[_2,_3]``) - t) x + t eps``, target ``eps
                                                                                - x``, model time ``1000 t``)
=====================  ==============================  =======================  ==============================

Nothing is imported on a repo's say-so beyond diffusers' and transformers' own classes (no remote code).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from ..utils.hub import load_pretrained, read_repo_json
from .caption_encoders import CaptionEncoder, ClipCaptionEncoder, SD3CaptionEncoder, T5CaptionEncoder
from .denoisers import (
    KNOWN_MODEL_CLASSES,
    PREDICTION_TYPES,
    SpaceContract,
    check_denoiser,
    config_value,
    model_class,
    read_space,
)

logger = logging.getLogger(__name__)

#: the transformers classes a pipeline's text encoder may name (nothing else is resolved from a folder)
TEXT_ENCODER_CLASSES = ("CLIPTextModel", "CLIPTextModelWithProjection", "T5EncoderModel")


def _call_unet(model: Any, x_t: torch.Tensor, t: torch.Tensor, condition: tuple, resolution: int) -> Any:
    return model(x_t, t, encoder_hidden_states=condition[0])


def _call_pixart(model: Any, x_t: torch.Tensor, t: torch.Tensor, condition: tuple, resolution: int) -> Any:
    hidden, mask = condition
    added = {"resolution": None, "aspect_ratio": None}
    if getattr(
        model, "use_additional_conditions", False
    ):  # PixArt-alpha 1024: size conditioning, as the pipeline
        n = len(x_t)
        added = {
            "resolution": torch.tensor(
                [[resolution, resolution]], dtype=hidden.dtype, device=x_t.device
            ).repeat(n, 1),
            "aspect_ratio": torch.ones((n, 1), dtype=hidden.dtype, device=x_t.device),
        }
    return model(
        x_t, encoder_hidden_states=hidden, encoder_attention_mask=mask, timestep=t, added_cond_kwargs=added
    )


def _call_sd3(model: Any, x_t: torch.Tensor, t: torch.Tensor, condition: tuple, resolution: int) -> Any:
    hidden, pooled = condition
    return model(hidden_states=x_t, encoder_hidden_states=hidden, pooled_projections=pooled, timestep=t)


@dataclass(frozen=True)
class TextFamily:
    """A text-to-image model family: its denoiser component, caption encoder and forward call."""

    name: str
    denoiser_component: str  # "unet" or "transformer" in model_index.json
    encoder: type[CaptionEncoder]
    encoder_components: tuple[str, ...]  # text_encoder[, text_encoder_2, text_encoder_3]
    call: Any  # (model, x_t, t, condition, resolution) -> output
    prediction_type: str | None  # None: the scheduler's prediction_type
    width_key: str  # the denoiser's config key for the text width it takes

    @property
    def tokenizer_components(self) -> tuple[str, ...]:
        return tuple(c.replace("text_encoder", "tokenizer") for c in self.encoder_components)


#: denoiser class name -> its family
TEXT_FAMILIES: dict[str, TextFamily] = {
    "UNet2DConditionModel": TextFamily(
        "stable-diffusion",
        "unet",
        ClipCaptionEncoder,
        ("text_encoder",),
        _call_unet,
        None,
        "cross_attention_dim",
    ),
    "PixArtTransformer2DModel": TextFamily(
        "pixart", "transformer", T5CaptionEncoder, ("text_encoder",), _call_pixart, None, "caption_channels"
    ),
    "SD3Transformer2DModel": TextFamily(
        "sd3",
        "transformer",
        SD3CaptionEncoder,
        ("text_encoder", "text_encoder_2", "text_encoder_3"),
        _call_sd3,
        "flow",
        "joint_attention_dim",
    ),
}


def text_family(model: Any) -> TextFamily:
    """The family of a loaded denoiser, or a ``ValueError`` naming what it is (a class-conditional model is
    refused with the fix: condense class labels, or give a text-to-image scorer)."""
    check_denoiser(model)
    name = type(model).__name__
    if name in TEXT_FAMILIES:
        return TEXT_FAMILIES[name]
    raise ValueError(
        class_conditional_refusal(name)
        if is_class_conditional_name(name)
        else (
            f"{name} is not a supported text-to-image denoiser; TextDifficultyScorer scores "
            f"{', '.join(TEXT_FAMILIES)} (Stable Diffusion 1.x/2.x, PixArt, SD3)"
        )
    )


def is_class_conditional_name(name: str) -> bool:
    return name in KNOWN_MODEL_CLASSES or name in ("DiTPipeline", "SiTPipeline")


def class_conditional_refusal(name: str) -> str:
    """The message refusing a class-conditional model (``name``) as a caption-conditioned scorer."""
    return (
        f"the scorer is a class-conditional model ({name}), which cannot be conditioned on captions: give a "
        "text-to-image scorer (a Stable Diffusion, PixArt or SD3 pipeline folder or Hub id, or train_scorer(..., "
        "caption_column=...)'s output), or drop caption_column to condense by class labels"
    )


def read_text_contract(
    model: Any, vae: Any, resolution: int | None, prediction_type: str | None, scheduler: Any
) -> tuple[TextFamily, SpaceContract]:
    """The family and space of a text-to-image denoiser (``prediction_type`` ``None``: the family's, else the
    scheduler's ``prediction_type``, else epsilon)."""
    family = text_family(model)
    if prediction_type is None:
        prediction_type = family.prediction_type
    if prediction_type is None:
        config = scheduler if isinstance(scheduler, Mapping) else getattr(scheduler, "config", None) or {}
        prediction_type = dict(config).get("prediction_type") or "epsilon"
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(
            f"the scorer's scheduler declares prediction_type={prediction_type!r}; TextDifficultyScorer scores "
            f"{', '.join(PREDICTION_TYPES)} models"
        )
    return family, read_space(model, vae, resolution, prediction_type, fixed_size=False)


def check_text_width(model: Any, family: TextFamily, encoder: CaptionEncoder) -> None:
    """The denoiser takes the width the caption encoder gives (e.g. a PixArt's ``caption_channels`` = its T5's
    ``d_model``), else raise naming both."""
    expected = config_value(model, family.width_key)
    config = encoder.text_encoders[-1 if family.name == "sd3" else 0].config
    width = getattr(config, "d_model", None) or getattr(config, "hidden_size", None)
    if family.name == "sd3":  # the T5 (or the padded CLIP features) give joint_attention_dim
        width = width if len(encoder.text_encoders) == 3 else expected
    if expected is not None and width is not None and int(expected) != int(width):
        raise ValueError(
            f"{type(model).__name__} takes text features of width {family.width_key}={expected} but its text "
            f"encoder ({type(encoder.text_encoders[0]).__name__}) gives {width}: pass the text encoder the model "
            "was trained with"
        )


# --------------------------------------------------------------------------------------
# loading: a diffusers pipeline folder or Hub id
# --------------------------------------------------------------------------------------


class LoadedTextScorer(NamedTuple):
    """What :func:`load_text_model` reads from a pipeline folder."""

    model: Any
    text_encoders: tuple[Any, ...]
    tokenizers: tuple[Any, ...]
    scheduler: dict[str, Any] | None
    has_vae: bool


def scorer_conditioning(scorer: Any) -> str | None:
    """``"text"``, ``"class"`` or ``None`` (unknown) for a scorer reference or object, read cheaply (a folder's
    ``model_index.json`` / ``config.json``, a loaded object's class): what condense() checks against the
    data before any model loads."""
    from ..utils.hub import check_reference

    if scorer is None:
        return None
    if isinstance(scorer, (str, os.PathLike)):
        check_reference(scorer, "scorer")
        index = read_repo_json(scorer, "model_index.json", role="scorer")
        if index is not None:
            names = [str((index.get(c) or [None, None])[1]) for c in ("unet", "transformer")]
            if any(n in TEXT_FAMILIES for n in names) or index.get("text_encoder"):
                return "text"
            return "class"
        for subfolder in ("transformer", None):
            config = (
                read_repo_json(scorer, "config.json", subfolder)
                if subfolder
                else read_repo_json(scorer, "config.json", role="scorer")
            )
            if config and "_class_name" in config:
                return "text" if config["_class_name"] in TEXT_FAMILIES else "class"
        return None
    kind = type(scorer).__name__
    if kind == "TextDifficultyScorer" or kind in TEXT_FAMILIES:
        return "text"
    if kind == "DifficultyScorer" or isinstance(scorer, torch.nn.Module):
        return "class"
    return None


def _text_encoder_class(name: str) -> type:
    import transformers

    if name not in TEXT_ENCODER_CLASSES:
        raise ValueError(
            f"unsupported text encoder class {name!r}: a text-to-image scorer loads {', '.join(TEXT_ENCODER_CLASSES)}"
        )
    return getattr(transformers, name)


def load_text_model(repo: str | os.PathLike) -> LoadedTextScorer:
    """The denoiser, text encoder(s), tokenizer(s) and scheduler config of a diffusers text-to-image pipeline
    folder or Hub id (``model_index.json`` with ``unet`` or ``transformer``, ``text_encoder`` [``_2``, ``_3``],
    ``tokenizer`` [...], ``scheduler`` and optionally ``vae``)."""
    from transformers import AutoTokenizer

    from ..utils.hub import check_reference

    repo = os.fspath(repo)
    check_reference(repo, "scorer")
    index = read_repo_json(repo, "model_index.json", role="scorer")
    if index is None:
        raise ValueError(
            f"scorer {repo!r} is not a diffusers text-to-image pipeline folder: a caption-conditioned scorer loads "
            "from model_index.json with its denoiser (unet/ or transformer/), text_encoder/, tokenizer/ and "
            "scheduler/ (e.g. a Stable Diffusion or PixArt pipeline, or train_scorer(..., caption_column=...)'s "
            "output); or build TextDifficultyScorer from loaded models"
        )
    denoiser = next((c for c in ("unet", "transformer") if (index.get(c) or [None])[0] is not None), None)
    if denoiser is None:
        raise ValueError(
            f"the pipeline {repo!r} has no unet or transformer component ({index.get('_class_name')})"
        )
    library, class_name = index[denoiser]
    if class_name not in TEXT_FAMILIES:
        if is_class_conditional_name(class_name) or not index.get("text_encoder"):
            raise ValueError(f"{repo!r}: " + class_conditional_refusal(class_name))
        raise ValueError(
            f"{repo!r}: unsupported denoiser {class_name!r}; TextDifficultyScorer scores {', '.join(TEXT_FAMILIES)}"
        )
    family = TEXT_FAMILIES[class_name]
    model = load_pretrained(model_class(library, class_name), repo, role="scorer", subfolder=denoiser)
    encoders, tokenizers = [], []
    for component, tokenizer in zip(family.encoder_components, family.tokenizer_components):
        entry = index.get(component) or [None, None]
        if entry[0] is None:
            if component == "text_encoder_3":  # SD3 saved without its T5: zeros in its place, as diffusers
                continue
            raise ValueError(
                f"the pipeline {repo!r} has no {component} component; its captions cannot be encoded"
            )
        encoders.append(
            load_pretrained(
                _text_encoder_class(entry[1]), repo, role=f"scorer's {component}", subfolder=component
            )
        )
        tokenizers.append(
            load_pretrained(AutoTokenizer, repo, role=f"scorer's {tokenizer}", subfolder=tokenizer)
        )
    scheduler = read_repo_json(repo, "scheduler_config.json", "scheduler") if index.get("scheduler") else None
    vae_entry = index.get("vae")
    return LoadedTextScorer(
        model, tuple(encoders), tuple(tokenizers), scheduler, bool(vae_entry and vae_entry[0] is not None)
    )


def scheduler_kind(scheduler: Mapping[str, Any] | None) -> tuple[bool, int]:
    """``(is a flow-matching scheduler, num_train_timesteps)`` of a scheduler config (``None``: DDPM, 1000)."""
    config = dict(scheduler or {})
    flow = str(config.get("_class_name", "")).startswith("FlowMatch")
    return flow, int(config.get("num_train_timesteps", 1000))


__all__ = [
    "TEXT_ENCODER_CLASSES",
    "TEXT_FAMILIES",
    "LoadedTextScorer",
    "TextFamily",
    "check_text_width",
    "class_conditional_refusal",
    "is_class_conditional_name",
    "load_text_model",
    "read_text_contract",
    "scheduler_kind",
    "scorer_conditioning",
    "text_family",
]
