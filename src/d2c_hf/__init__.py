"""d2c-hf: D2C (Diffusion Dataset Condensation) on the Hugging Face stack.

Select a tiny, well-chosen subset of a class-labelled image dataset by a diffusion
difficulty score and interval sampling, attach text and visual embeddings, and train a
SiT on it with a REPA alignment loss.

The public API is re-exported here. Submodules are imported lazily so that
``import d2c_hf`` stays cheap (no model code, no matplotlib) until a name is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .version import __version__

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    # data
    "load_digits_dataset": "data.digits",
    "load_captioned_digits": "data.captions",
    "prepare_dataset": "data.inputs",
    # Select
    "DifficultyScorer": "selection.scorer",
    "TextDifficultyScorer": "selection.text_scorer",
    "Reliability": "selection.reliability",
    "ReliabilityError": "selection.reliability",
    "score_reliability": "selection.reliability",
    "train_scorer": "selection.train_scorer",
    "PIXEL_SPACE": "utils.spaces",
    "images_per_class_from_ratio": "selection.strategies",
    "select_indices": "selection.strategies",
    "select": "selection.strategies",
    "SelectionResult": "selection.strategies",
    "Selector": "selection.strategies",
    "STRATEGIES": "selection.strategies",
    # Attach + product
    "LatentEncoder": "attach.attachers",
    "VisualAttacher": "attach.attachers",
    "TextAttacher": "attach.attachers",
    "train_vision_encoder": "attach.train_encoder",
    "CondensedDataset": "condensed.dataset",
    "condense": "run.condense",
    "CondenseOptions": "run.options",
    "ATTACH_PARTS": "attach.parts",
    "AttachPart": "attach.parts",
    "PartContext": "attach.parts",
    "register_attach_part": "attach.parts",
    # models, pipelines, schedulers
    "SiTTransformer2DModel": "models.transformer_sit",
    "SIT_PRESETS": "models.transformer_sit",
    "default_encoder_depth": "models.transformer_sit",
    "preset_config": "models.transformer_sit",
    "SiTPipeline": "pipelines.sit.pipeline_sit",
    "FlowMatchEulerMaruyamaScheduler": "schedulers.scheduling_flow_match_euler_maruyama",
    "load_repa_checkpoint": "interop.convert",
    "load_sit_checkpoint": "interop.convert",
    # evaluation
    "evaluate_samples": "evaluation",
    "frechet_distance": "evaluation",
    "fid_from_features": "evaluation",
    "kid": "evaluation",
    "precision_recall": "evaluation",
    "inception_score": "evaluation",
    "DigitsFeatureExtractor": "evaluation",
    "InceptionV3FeatureExtractor": "evaluation",
    "CallableFeatureExtractor": "evaluation",
}

__all__ = ["__version__", *sorted(_EXPORTS)]

# Saved pipelines record d2c-hf components under the library name "d2c_hf" (see d2c_hf.interop.remote_code). diffusers
# looks up its base classes in that module to choose how to load or check a component, so they resolve here
# too (lazily, and outside __all__: they are diffusers', not part of this API).
_DIFFUSERS_BASES: dict[str, str] = {
    "ModelMixin": "diffusers.models.modeling_utils",
    "SchedulerMixin": "diffusers.schedulers.scheduling_utils",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        if name in _DIFFUSERS_BASES:
            return getattr(importlib.import_module(_DIFFUSERS_BASES[name]), name)
        raise AttributeError(f"module 'd2c_hf' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .attach.attachers import LatentEncoder, TextAttacher, VisualAttacher
    from .attach.parts import ATTACH_PARTS, AttachPart, PartContext, register_attach_part
    from .attach.train_encoder import train_vision_encoder
    from .condensed.dataset import CondensedDataset
    from .data.captions import load_captioned_digits
    from .data.digits import load_digits_dataset
    from .data.inputs import prepare_dataset
    from .evaluation import (
        CallableFeatureExtractor,
        DigitsFeatureExtractor,
        InceptionV3FeatureExtractor,
        evaluate_samples,
        fid_from_features,
        frechet_distance,
        inception_score,
        kid,
        precision_recall,
    )
    from .interop.convert import load_repa_checkpoint, load_sit_checkpoint
    from .models.transformer_sit import (
        SIT_PRESETS,
        SiTTransformer2DModel,
        default_encoder_depth,
        preset_config,
    )
    from .pipelines.sit.pipeline_sit import SiTPipeline
    from .run.condense import condense
    from .run.options import CondenseOptions
    from .schedulers.scheduling_flow_match_euler_maruyama import FlowMatchEulerMaruyamaScheduler
    from .selection.reliability import Reliability, ReliabilityError, score_reliability
    from .selection.scorer import DifficultyScorer
    from .selection.strategies import (
        STRATEGIES,
        SelectionResult,
        Selector,
        images_per_class_from_ratio,
        select,
        select_indices,
    )
    from .selection.text_scorer import TextDifficultyScorer
    from .selection.train_scorer import train_scorer
    from .utils.spaces import PIXEL_SPACE
