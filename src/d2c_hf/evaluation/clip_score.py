"""CLIP score: how well generated images match their prompts, with a given CLIP model (Hessel et al. 2021).

Text-to-image papers report it next to FID (REPA's text-to-image experiment on COCO-2014 among them)::

    CLIPScore(image, prompt) = w * max(cos(E_I(image), E_T(prompt)), 0),      w = 100

with ``E_I`` the CLIP image embedding (``vision_model`` pooled output -> ``visual_projection``) and ``E_T`` the text
embedding (``text_model`` pooled output -> ``text_projection``), the convention of torchmetrics'
``CLIPScore``; the score of a sample set is the mean over its (image, prompt) pairs. The model is a
``transformers.CLIPModel`` loaded from a local folder or Hub id (``openai/clip-vit-large-patch14`` is the usual
choice; the score depends on it: always name it with the number), with its processor (resize, centre crop,
normalisation; prompts truncated to the text model's positions, 77 for CLIP).

:func:`evaluate_clip_score` (``d2c clip-score``) scores an ADM ``.npz`` written by ``examples/sample_sit.py
--prompt_file`` (``arr_1`` = each sample's prompt index) against that prompt file, one batch at a time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .images import to_uint8_images

__all__ = ["CLIP_SCORE_WEIGHT", "CLIPScore", "evaluate_clip_score"]

logger = logging.getLogger(__name__)

#: the factor w of the CLIP score (torchmetrics, the text-to-image papers)
CLIP_SCORE_WEIGHT = 100.0


class CLIPScore:
    """The CLIP score of (image, prompt) pairs with one CLIP model.

    Args:
        model: a loaded ``transformers.CLIPModel``.
        processor: its processor (``CLIPProcessor``: image processor + tokenizer).
        device: where to run (default: CUDA if available, else CPU).
        batch_size: pairs per forward pass.
        weight: ``w`` (100).

    Cost: one image and one text forward pass per pair.
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        device: str | torch.device | None = None,
        batch_size: int = 64,
        weight: float = CLIP_SCORE_WEIGHT,
    ) -> None:
        from ..utils.checks import check_positive_int
        from ..utils.hub import model_provenance, resolve_device

        for part in ("vision_model", "text_model", "visual_projection", "text_projection"):
            if not hasattr(model, part):
                raise TypeError(
                    f"CLIPScore needs a transformers CLIPModel (with {part}), got {type(model).__name__}"
                )
        self.device = resolve_device(device)
        self.model = model.eval().requires_grad_(False).to(self.device)
        self.processor = processor
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.weight = float(weight)
        self.provenance = model_provenance(model)
        positions = getattr(model.config.text_config, "max_position_embeddings", None)
        self.max_length = int(positions) if positions else None

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        device: str | torch.device | None = None,
        batch_size: int = 64,
        dtype: torch.dtype = torch.float32,
    ) -> CLIPScore:
        """Load ``CLIPModel`` and its processor (``AutoProcessor``) from a folder or Hub id."""
        from transformers import AutoProcessor, CLIPModel

        from ..utils.hub import load_pretrained

        model = load_pretrained(CLIPModel, name_or_path, role="clip_model", dtype=dtype)
        processor = load_pretrained(AutoProcessor, name_or_path, role="the CLIP processor")
        return cls(model, processor, device=device, batch_size=batch_size)

    @torch.no_grad()
    def image_features(self, images: Any) -> torch.Tensor:
        """``(N, d)`` L2-normalised float32 image embeddings on the CPU; ``images``: uint8 ``(N, H, W, 3)``, PIL
        images, or anything :func:`~d2c_hf.evaluation.to_uint8_images` takes."""
        pixels = to_uint8_images(images)
        out = []
        for start in range(0, len(pixels), self.batch_size):
            batch = list(pixels[start : start + self.batch_size])
            values = self.processor(images=batch, return_tensors="pt")["pixel_values"]
            values = values.to(self.device, self.model.dtype)
            pooled = self.model.vision_model(pixel_values=values).pooler_output
            out.append(
                torch.nn.functional.normalize(self.model.visual_projection(pooled).float(), dim=-1).cpu()
            )
        return torch.cat(out)

    @torch.no_grad()
    def text_features(self, prompts: Sequence[str]) -> torch.Tensor:
        """``(N, d)`` L2-normalised float32 text embeddings on the CPU (prompts truncated to the model's positions)."""
        prompts = _check_prompts(prompts)
        out = []
        for start in range(0, len(prompts), self.batch_size):
            tokens = self.processor(
                text=list(prompts[start : start + self.batch_size]),
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            pooled = self.model.text_model(
                input_ids=tokens["input_ids"].to(self.device),
                attention_mask=tokens["attention_mask"].to(self.device),
            ).pooler_output
            out.append(
                torch.nn.functional.normalize(self.model.text_projection(pooled).float(), dim=-1).cpu()
            )
        return torch.cat(out)

    def scores(self, images: Any, prompts: Sequence[str]) -> np.ndarray:
        """``(N,)`` float64 per-pair scores ``w * max(cos, 0)``; image ``i`` goes with ``prompts[i]``."""
        prompts = _check_prompts(prompts)
        image = self.image_features(images)
        if len(image) != len(prompts):
            raise ValueError(f"got {len(image)} images but {len(prompts)} prompts; pass one prompt per image")
        text = self.text_features(prompts)
        cosine = (image * text).sum(-1).double()
        return (self.weight * cosine.clamp(min=0.0)).numpy()

    def __call__(self, images: Any, prompts: Sequence[str]) -> dict[str, Any]:
        """``{"clip_score": mean, "clip_score_std": std over pairs, "num_samples", "clip_model"}``."""
        values = self.scores(images, prompts)
        return {
            "clip_score": float(values.mean()),
            "clip_score_std": float(values.std()),
            "num_samples": len(values),
            "clip_model": self.provenance,
        }


def _check_prompts(prompts: Sequence[str]) -> list[str]:
    if isinstance(prompts, str):
        raise TypeError("prompts must be a sequence of strings (one per image), not a single string")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("no prompts given")
    for index, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise ValueError(f"prompt {index} must be a string, got {type(prompt).__name__} {prompt!r}")
    return prompts


def evaluate_clip_score(
    samples: str | os.PathLike,
    prompt_file: str | os.PathLike,
    clip_model: str | os.PathLike,
    *,
    batch_size: int = 64,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """The CLIP score of a sample ``.npz`` written by ``examples/sample_sit.py --prompt_file``.

    Image ``i`` (``arr_0[i]``) is paired with the prompt on line ``arr_1[i] + 1`` of ``prompt_file``. Both are
    checked before the model loads. Returns :meth:`CLIPScore.__call__`'s record plus ``samples`` and ``prompt_file``.
    """
    from tqdm.auto import tqdm

    from .adm import iter_npz_images, npz_images_shape
    from .sampling import read_prompt_file

    prompts = read_prompt_file(prompt_file)
    samples = Path(samples)
    num, _, _, _ = npz_images_shape(samples)
    with np.load(samples, mmap_mode="r", allow_pickle=False) as archive:
        if "arr_1" not in archive.files:
            raise ValueError(
                f"{samples} has no arr_1 (each sample's prompt index): sample it with examples/sample_sit.py --prompt_file"
            )
        indices = np.asarray(archive["arr_1"])
    if indices.shape != (num,) or not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(
            f"{samples}: arr_1 must hold {num} prompt indices, got {indices.dtype} {indices.shape}"
        )
    bad = np.flatnonzero((indices < 0) | (indices >= len(prompts)))
    if bad.size:
        raise ValueError(
            f"{samples}: sample {int(bad[0])} has prompt index {int(indices[bad[0]])}, but {prompt_file} holds "
            f"{len(prompts)} prompts: is it the prompt file the samples were made from?"
        )
    scorer = CLIPScore.from_pretrained(clip_model, device=device, batch_size=batch_size)
    values = []
    start = 0
    with tqdm(total=num, unit="img", disable=not progress, desc="CLIP score") as bar:
        for batch in iter_npz_images(samples, batch_size):
            values.append(scorer.scores(batch, [prompts[i] for i in indices[start : start + len(batch)]]))
            start += len(batch)
            bar.update(len(batch))
    values = np.concatenate(values)
    return {
        "clip_score": float(values.mean()),
        "clip_score_std": float(values.std()),
        "num_samples": len(values),
        "clip_model": scorer.provenance,
        "samples": str(samples),
        "prompt_file": str(prompt_file),
    }
