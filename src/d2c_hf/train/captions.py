"""Text-to-image training: the caption encoder of a captioned condensed set (docs/text-to-image.md).

A captioned set stores each row's caption tokens (``caption_embeds``, ``caption_mask``: the text encoder's last
hidden states, padded to ``max_length``) and names the encoder in ``info["text_to_image"]["text_encoder"]`` (a
:func:`d2c_hf.utils.hub.model_provenance` record). Training needs that encoder twice: to encode the empty caption
(caption dropout's replacement, CFG's unconditional branch) and as the ``text_encoder`` + ``tokenizer`` components
of the saved ``SiTPipeline``, so that new prompts are encoded as the training captions were. This module loads it
(:func:`load_caption_encoder`) and checks that it *is* that encoder, by re-encoding a few stored captions
(:func:`check_caption_encoder`), before any training step.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..utils.hub import load_pretrained, mark_subfolder

__all__ = [
    "MIN_TOKEN_COSINE",
    "caption_info",
    "check_caption_encoder",
    "load_caption_encoder",
    "tokenizer_subfolder",
]

logger = logging.getLogger(__name__)

#: re-encoded caption tokens must match the stored ones to this cosine similarity (each real token): float16
#: storage and another device or dtype move it by ~1e-3; another encoder gives ~0 (random) to ~0.9 (a sibling)
MIN_TOKEN_COSINE = 0.99


def caption_info(info: Mapping[str, Any]) -> dict[str, Any]:
    """``info["text_to_image"]`` of a captioned set (``{}`` if absent)."""
    record = info.get("text_to_image") or {}
    if not isinstance(record, Mapping):
        raise ValueError(f"info['text_to_image'] must be a mapping, got {type(record).__name__}")
    return dict(record)


def tokenizer_subfolder(subfolder: str | None) -> str | None:
    """Where a pipeline keeps the tokenizer of the encoder in ``subfolder``: ``text_encoder`` -> ``tokenizer``,
    ``text_encoder_2`` -> ``tokenizer_2`` (the diffusers layout); other subfolders hold both."""
    if subfolder and subfolder.startswith("text_encoder"):
        return "tokenizer" + subfolder.removeprefix("text_encoder")
    return subfolder


def load_caption_encoder(
    record: Mapping[str, Any] | None,
    override: str | os.PathLike | None = None,
    *,
    dtype: torch.dtype = torch.float32,
) -> tuple[Any, Any]:
    """Load the text encoder (eval mode, no gradients) and its tokenizer.

    Args:
        record: the set's ``info["text_to_image"]["text_encoder"]``: ``{"class", "name_or_path", ["subfolder"],
            ["revision"]}``. ``class`` must be a ``transformers`` model class (``T5EncoderModel``,
            ``CLIPTextModel``, ...); nothing is loaded with remote code.
        override: load from this folder or Hub id instead of ``record["name_or_path"]`` (same class; the record's
            subfolder is not applied). :func:`check_caption_encoder` still checks that it encodes like the set.
        dtype: the encoder's dtype (float32 by default: T5 overflows in float16).

    Returns:
        ``(text_encoder, tokenizer)``.
    """
    import transformers

    record = dict(record or {})
    name = override or record.get("name_or_path")
    if not name:
        raise ValueError(
            "the dataset does not name its caption encoder (info['text_to_image']['text_encoder']['name_or_path']); "
            "pass --text_encoder (the folder or Hub id the captions were encoded with)"
        )
    class_name = record.get("class") or "AutoModel"
    cls = getattr(transformers, class_name, None)
    if cls is None or not hasattr(cls, "from_pretrained") or not class_name[0].isupper():
        raise ValueError(
            f"the caption encoder's class {class_name!r} (info['text_to_image']['text_encoder']['class']) is not a "
            "transformers model class"
        )
    subfolder = None if override else record.get("subfolder")
    kwargs: dict[str, Any] = {"dtype": dtype}
    revision = None if override else record.get("revision")
    if revision:
        kwargs["revision"] = revision
    if subfolder:
        kwargs["subfolder"] = subfolder
    encoder = load_pretrained(cls, name, role="the caption text encoder", **kwargs)
    mark_subfolder(encoder, subfolder)
    encoder.eval().requires_grad_(False)
    tokenizer_kwargs = {k: v for k, v in kwargs.items() if k == "revision"}
    where = tokenizer_subfolder(subfolder)
    if where:
        tokenizer_kwargs["subfolder"] = where
    tokenizer = load_pretrained(
        transformers.AutoTokenizer, name, role="the caption tokenizer", **tokenizer_kwargs
    )
    return encoder, tokenizer


def check_caption_encoder(
    encode: Callable[[list[str]], tuple[torch.Tensor, torch.Tensor]],
    captions: Sequence[str],
    stored_embeds: torch.Tensor | np.ndarray,
    stored_mask: torch.Tensor | np.ndarray,
    rows: Sequence[int],
    *,
    name: str = "the text encoder",
    min_cosine: float = MIN_TOKEN_COSINE,
) -> float:
    """Re-encode ``captions`` (the set's rows ``rows``) and compare with their stored tokens.

    Raises a ``ValueError`` naming the first row whose mask differs (another tokenizer or ``max_length``) or whose
    real tokens' cosine similarity falls below ``min_cosine`` (another encoder): a pipeline with that encoder would
    condition the model on tokens it never saw. Returns the smallest cosine similarity found.

    Args:
        encode: prompts -> ``(embeds (B, L, D), mask (B, L))`` (``SiTPipeline.encode_prompt``).
        captions, stored_embeds, stored_mask, rows: the captions, their stored ``(B, L, D)`` tokens and ``(B, L)``
            masks, and their row numbers (for the message).
    """
    embeds, mask = encode(list(captions))
    stored_embeds = torch.as_tensor(np.asarray(stored_embeds)).float()
    stored_mask = torch.as_tensor(np.asarray(stored_mask)) != 0
    embeds, mask = embeds.detach().float().cpu(), mask.detach().cpu() != 0
    if embeds.shape != stored_embeds.shape:
        raise ValueError(
            f"{name} encodes the set's captions to {tuple(embeds.shape[1:])} tokens x width, but the set stores "
            f"{tuple(stored_embeds.shape[1:])}: it is not the encoder the captions were encoded with"
        )
    worst = 1.0
    for i, row in enumerate(rows):
        if not torch.equal(mask[i], stored_mask[i]):
            raise ValueError(
                f"{name} tokenizes caption row {row} ({captions[i]!r}) into {int(mask[i].sum())} tokens, the set "
                f"stores {int(stored_mask[i].sum())}: not the tokenizer the captions were encoded with"
            )
        real = mask[i]
        cosine = torch.nn.functional.cosine_similarity(embeds[i][real], stored_embeds[i][real], dim=-1)
        low = float(cosine.min()) if cosine.numel() else 1.0
        worst = min(worst, low)
        if not low >= min_cosine:
            raise ValueError(
                f"{name} encodes caption row {row} ({captions[i]!r}) differently from the set's stored tokens "
                f"(token cosine similarity {low:.3f} < {min_cosine}): it is not the encoder the captions were "
                "encoded with (info['text_to_image']['text_encoder']); pass that one with --text_encoder"
            )
    logger.info("caption encoder check: %d captions re-encoded, token cosine >= %.4f", len(rows), worst)
    return worst
