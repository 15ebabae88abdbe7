"""Model definitions (diffusers ``ModelMixin`` classes)."""

from .transformer_sit import (
    SIT_PRESETS,
    SiTTransformer2DModel,
    SiTTransformer2DModelOutput,
    default_encoder_depth,
    preset_config,
)

__all__ = [
    "SIT_PRESETS",
    "SiTTransformer2DModel",
    "SiTTransformer2DModelOutput",
    "default_encoder_depth",
    "preset_config",
]
