"""Select, a text-to-image scorer's own caption encoders: captions -> what its denoiser is conditioned on.

Each encoder runs the model's own tokenizer(s) and text encoder(s) exactly as its diffusers pipeline encodes a
prompt, once per batch of captions, and returns

* the **conditions**, a tuple of per-row tensors that :class:`~d2c_hf.selection.monte_carlo.MonteCarlo` repeats
  with the (timestep, noise) pairs of each row;
* the **caption features** ``(B, D)`` float32, one vector per caption, that the default grouping clusters
  (:mod:`.groups`).

Captions are always padded to the encoder's fixed ``max_length``, so a row's encoding never depends on the
other captions of its batch (batch-size and order invariance, as for the noise).

============================  =========================================  ======================================
encoder                       conditions                                 caption features
============================  =========================================  ======================================
:class:`ClipCaptionEncoder`   ``(hidden (B, 77, D),)`` (SD 1.x / 2.x)    CLIP ``pooler_output`` (the EOS token)
:class:`T5CaptionEncoder`     ``(hidden (B, L, D), mask (B, L))``        mean of the hidden states over the
                              (PixArt, 120 tokens)                       caption's tokens
:class:`SD3CaptionEncoder`    ``(hidden (B, 77 + L, 4096), pooled)``     the pooled CLIP projections
============================  =========================================  ======================================
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from ..utils.checks import check_positive_int
from ..utils.hub import model_provenance

logger = logging.getLogger(__name__)


def tokenize(
    tokenizer: Any, captions: Sequence[str], max_length: int
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(input_ids (B, L), attention_mask (B, L), truncated count)``: padded to exactly ``max_length``."""
    tokens = tokenizer(
        list(captions),
        padding="max_length",
        max_length=max_length,
        truncation=True,
        add_special_tokens=True,
        return_tensors="pt",
    )
    # one token more than the budget tells a truncated caption (without tokenizing, or warning about, all of it)
    longer = tokenizer(list(captions), truncation=True, max_length=max_length + 1, add_special_tokens=True)
    truncated = sum(len(ids) > max_length for ids in longer["input_ids"])
    return tokens["input_ids"], tokens["attention_mask"], truncated


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(B, L, D)`` hidden states, ``(B, L)`` mask -> ``(B, D)`` float32 mean over the masked tokens."""
    weights = mask.to(torch.float32).unsqueeze(-1)
    return (hidden.float() * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class CaptionEncoder:
    """Base: the tokenizer(s) and text encoder(s) of a text-to-image model, frozen and in eval mode.

    Args:
        text_encoder: a loaded ``transformers`` text encoder (or a tuple of them, for SD3).
        tokenizer: its tokenizer (or a tuple, in the same order).
        max_length: tokens per caption (``None``: the family's default).
        device: where the encoder runs.
    """

    #: the conditions' names, in order (documentation and ``config``)
    condition_names: tuple[str, ...] = ()
    default_max_length: int = 77

    def __init__(
        self, text_encoder: Any, tokenizer: Any, *, max_length: int | None = None, device: Any = "cpu"
    ) -> None:
        encoders = text_encoder if isinstance(text_encoder, (tuple, list)) else (text_encoder,)
        tokenizers = tokenizer if isinstance(tokenizer, (tuple, list)) else (tokenizer,)
        self.text_encoders = tuple(e.eval().requires_grad_(False).to(device) for e in encoders)
        self.tokenizers = tuple(tokenizers)
        self.max_length = check_positive_int(
            self.default_max_length if max_length is None else max_length, "max_length"
        )
        self.device = torch.device(device)
        self._warned_truncation = False

    @property
    def text_encoder(self) -> Any:
        return self.text_encoders[0]

    @property
    def config(self) -> dict[str, Any]:
        """JSON-able provenance: the encoders, the token budget and what the model is given."""
        return {
            "class": type(self).__name__,
            "text_encoders": [model_provenance(e) for e in self.text_encoders],
            "max_length": self.max_length,
            "conditions": list(self.condition_names),
            "padding": "max_length",
        }

    def _warn_truncated(self, count: int, captions: Sequence[str]) -> None:
        if count and not self._warned_truncation:
            self._warned_truncation = True
            logger.warning(
                "%d captions of a batch are longer than the scorer's %d tokens and are truncated, as its pipeline "
                "would (e.g. %r)",
                count,
                self.max_length,
                captions[0],
            )

    @torch.inference_mode()
    def encode(self, captions: Sequence[str]) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """``(conditions, caption features (B, D) float32)`` on the encoder's device (see the module table)."""
        raise NotImplementedError  # pragma: no cover - abstract


class ClipCaptionEncoder(CaptionEncoder):
    """Stable Diffusion 1.x / 2.x: ``CLIPTextModel`` ``last_hidden_state`` of the caption padded to the
    tokenizer's ``model_max_length`` (77), as ``StableDiffusionPipeline.encode_prompt`` (no clip skip); the
    attention mask is given to the encoder only when its config says ``use_attention_mask``, and never to the
    UNet."""

    condition_names = ("encoder_hidden_states",)

    def __init__(
        self, text_encoder: Any, tokenizer: Any, *, max_length: int | None = None, device: Any = "cpu"
    ) -> None:
        if max_length is None:
            max_length = int(getattr(tokenizer, "model_max_length", 77) or 77)
            max_length = max_length if max_length < 10_000 else 77  # "no limit" sentinel of some tokenizers
        super().__init__(text_encoder, tokenizer, max_length=max_length, device=device)

    @torch.inference_mode()
    def encode(self, captions: Sequence[str]) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        ids, mask, truncated = tokenize(self.tokenizers[0], captions, self.max_length)
        self._warn_truncated(truncated, captions)
        use_mask = bool(getattr(self.text_encoder.config, "use_attention_mask", False))
        out = self.text_encoder(
            ids.to(self.device), attention_mask=mask.to(self.device) if use_mask else None
        )
        pooled = getattr(out, "pooler_output", None)
        features = pooled.float() if pooled is not None else masked_mean(out[0], mask.to(self.device))
        return (out[0],), features


class T5CaptionEncoder(CaptionEncoder):
    """PixArt-alpha / -Sigma: ``T5EncoderModel`` hidden states of the caption padded to ``max_length`` tokens
    (120 for PixArt-alpha, 300 for -Sigma) with the attention mask, both given to the transformer, as
    ``PixArtAlphaPipeline.encode_prompt`` (without its optional caption cleaning)."""

    condition_names = ("encoder_hidden_states", "encoder_attention_mask")
    default_max_length = 120

    @torch.inference_mode()
    def encode(self, captions: Sequence[str]) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        captions = [
            c.lower().strip() for c in captions
        ]  # the pipeline's preprocessing without caption cleaning
        ids, mask, truncated = tokenize(self.tokenizers[0], captions, self.max_length)
        self._warn_truncated(truncated, captions)
        mask = mask.to(self.device)
        hidden = self.text_encoder(ids.to(self.device), attention_mask=mask)[0]
        return (hidden, mask), masked_mean(hidden, mask)


class SD3CaptionEncoder(CaptionEncoder):
    """Stable Diffusion 3: two CLIP encoders (``CLIPTextModelWithProjection``, penultimate hidden states, 77
    tokens, concatenated on features and zero-padded to the T5 width) followed on the sequence axis by the T5
    encoder's hidden states (``max_length`` tokens, default 256), and the two CLIP text projections
    concatenated as ``pooled_projections``, as ``StableDiffusion3Pipeline.encode_prompt``. A pipeline saved
    without its T5 (``text_encoder_3 = None``) gets zeros in its place, as diffusers does."""

    condition_names = ("encoder_hidden_states", "pooled_projections")
    default_max_length = 256

    def __init__(
        self,
        text_encoder: Any,
        tokenizer: Any,
        *,
        max_length: int | None = None,
        device: Any = "cpu",
        joint_attention_dim: int = 4096,
    ) -> None:
        encoders = list(text_encoder)
        tokenizers = list(tokenizer)
        if len(encoders) not in (2, 3) or len(tokenizers) != len(encoders):
            raise ValueError(
                "an SD3 scorer needs text_encoder=(clip_l, clip_g[, t5]) and tokenizer=(tok_l, tok_g[, tok_t5])"
            )
        super().__init__(tuple(encoders), tuple(tokenizers), max_length=max_length, device=device)
        self.clip_length = int(getattr(tokenizers[0], "model_max_length", 77) or 77)
        self.joint_attention_dim = int(joint_attention_dim)

    @torch.inference_mode()
    def encode(self, captions: Sequence[str]) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        hidden, pooled = [], []
        for encoder, tokenizer in zip(self.text_encoders[:2], self.tokenizers[:2]):
            ids, _, _ = tokenize(tokenizer, captions, self.clip_length)
            out = encoder(ids.to(self.device), output_hidden_states=True)
            pooled.append(out[0])
            hidden.append(out.hidden_states[-2])
        clip = torch.cat(hidden, dim=-1)
        if len(self.text_encoders) == 3:
            ids, _, truncated = tokenize(self.tokenizers[2], captions, self.max_length)
            self._warn_truncated(truncated, captions)
            t5 = self.text_encoders[2](ids.to(self.device))[0]
        else:
            shape = (len(captions), self.max_length, self.joint_attention_dim)  # diffusers' zeros without T5
            t5 = torch.zeros(shape, device=self.device, dtype=clip.dtype)
        clip = torch.nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
        pooled_projections = torch.cat(pooled, dim=-1)
        return (torch.cat([clip, t5], dim=-2), pooled_projections), pooled_projections.float()


__all__ = [
    "CaptionEncoder",
    "ClipCaptionEncoder",
    "SD3CaptionEncoder",
    "T5CaptionEncoder",
    "masked_mean",
    "tokenize",
]
