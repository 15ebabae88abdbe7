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

__version__ = "0.1.0"

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    # data
    "load_digits_dataset": "data",
    "prepare_dataset": "data",
    # Select
    "DifficultyScorer": "scoring",
    "Reliability": "reliability",
    "ReliabilityError": "reliability",
    "score_reliability": "reliability",
    "train_scorer": "scorer_training",
    "PIXEL_SPACE": "vae",
    "images_per_class_from_ratio": "selection",
    "select_indices": "selection",
    "select": "selection",
    "SelectionResult": "selection",
    "Selector": "selection",
    "STRATEGIES": "selection",
    # Attach + product
    "LatentEncoder": "attach",
    "VisualAttacher": "attach",
    "TextAttacher": "attach",
    "CondensedDataset": "condensed",
    "condense": "condensing",
    "CondenseOptions": "pipeline",
    # models, pipelines, schedulers
    "SiTTransformer2DModel": "models.transformer_sit",
    "SIT_PRESETS": "models.transformer_sit",
    "default_encoder_depth": "models.transformer_sit",
    "preset_config": "models.transformer_sit",
    "SiTPipeline": "pipelines.pipeline_sit",
    "FlowMatchEulerMaruyamaScheduler": "pipelines.scheduling_sde",
    "load_repa_checkpoint": "convert",
    "load_sit_checkpoint": "convert",
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

# Saved pipelines record d2c-hf components under the library name "d2c_hf" (see d2c_hf.remote_code). diffusers
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
    from .attach import LatentEncoder, TextAttacher, VisualAttacher
    from .condensed import CondensedDataset
    from .condensing import condense
    from .convert import load_repa_checkpoint, load_sit_checkpoint
    from .data import load_digits_dataset, prepare_dataset
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
    from .models.transformer_sit import (
        SIT_PRESETS,
        SiTTransformer2DModel,
        default_encoder_depth,
        preset_config,
    )
    from .pipeline import CondenseOptions
    from .pipelines.pipeline_sit import SiTPipeline
    from .pipelines.scheduling_sde import FlowMatchEulerMaruyamaScheduler
    from .reliability import Reliability, ReliabilityError, score_reliability
    from .scorer_training import train_scorer
    from .scoring import DifficultyScorer
    from .selection import (
        STRATEGIES,
        SelectionResult,
        Selector,
        images_per_class_from_ratio,
        select,
        select_indices,
    )
    from .vae import PIXEL_SPACE
