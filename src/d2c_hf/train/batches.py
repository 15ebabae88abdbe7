"""Batches for training SiT on a condensed set: :class:`BatchSource`.

It feeds the losses of :mod:`d2c_hf.train.losses` from a :class:`~d2c_hf.condensed.dataset.CondensedDataset` (or
any ``datasets.Dataset`` with a ``latents`` column, so random-subset baselines train through the same
code): whole columns are read once through Arrow when they fit in memory (else batched reads), each
process takes its shard of a seeded per-epoch permutation, and every batch draws a fresh latent
``((mean + std * n) - shift) * scale`` from the stored VAE posterior. A captioned set (text-to-image: per-row
``caption_embeds`` / ``caption_mask``, see docs/text-to-image.md) delivers each row's caption tokens with it.

Randomness is *counter based*: the permutation of epoch ``e`` is drawn from a generator seeded with
``(seed, e)`` and the noise of a batch from one seeded with ``(seed, process_index, position)``, so
:meth:`BatchSource.state_dict` (the stream position) restores every random draw exactly, whichever
process's state a checkpoint kept.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..condensed.dataset import CondensedDataset
from ..utils.checks import check_positive_int
from ..utils.columns import fixed_shape, leaf_dtype
from .losses import seeded_generator

__all__ = ["DEFAULT_MAX_IN_MEMORY_BYTES", "BatchSource"]

logger = logging.getLogger(__name__)

#: default limit for holding whole columns in memory (beyond it: batched Arrow reads)
DEFAULT_MAX_IN_MEMORY_BYTES = 8 * 1024**3


# --------------------------------------------------------------------------------------
# batch source
# --------------------------------------------------------------------------------------


def _as_condensed(data: Any, info: Mapping[str, Any] | None):
    from datasets import Dataset

    if isinstance(data, CondensedDataset):
        return data
    if isinstance(data, Dataset):
        return CondensedDataset(data, None, info or {})
    raise TypeError(
        f"BatchSource takes a CondensedDataset or a datasets.Dataset with a 'latents' column, got {type(data).__name__}"
    )


def _row_bytes(feature: Any) -> int:

    shape = fixed_shape(feature)
    if shape is None:
        return 8
    return math.prod(shape) * np.dtype(leaf_dtype(feature)).itemsize


class BatchSource:
    """Batches for flow-matching training from a condensed set (or a plain ``Dataset`` with ``latents``).

    Each call of :meth:`next_batch` returns this process's share of the next global batch of the
    sample stream (seeded permutation of every row, epoch after epoch; a global batch may span an
    epoch boundary, so sets smaller than a batch work), as a dict on ``device``:

    * ``latents`` ``(b, C, h, w)`` float32: a fresh draw ``((mean + std * n) - shift) * scale`` from
      the stored posterior (pixel space: ``std`` = 0, scale 1, so the image in ``[-1, 1]``);
    * ``labels`` ``(b,)`` int64 and ``indices`` ``(b,)`` int64 (rows of ``samples``, for error reports);
    * ``visual_embeds`` ``(b, T, d)`` float16, with ``use_visual``;
    * ``text_embeds`` ``(b, L, D)`` float16 and ``text_mask`` ``(b, L)`` bool, looked up by label, with ``use_text``;
    * ``caption_embeds`` ``(b, L, D)`` float16 and ``caption_mask`` ``(b, L)`` bool, each row's own caption tokens,
      when the set is captioned (it has a ``caption_embeds`` column; ``labels`` are then its groups).

    Args:
        data: a :class:`~d2c_hf.condensed.dataset.CondensedDataset`, or a ``datasets.Dataset`` with ``latents``
            and ``label`` (wrapped with ``info``).
        batch_size: the *global* batch (all processes together), divisible by ``num_processes``.
        seed: seeds the permutations and the latent noise.
        process_index, num_processes: this process's shard (``accelerator.process_index`` / ``num_processes``).
        use_visual, use_text: return visual tokens / class text; ``None`` = if the dataset has them.
        device: where batches are delivered.
        scaling_factor, shift_factor: latent scale; default from ``info["latents"]`` (required there
            or here).
        info: provenance for a plain ``Dataset``.
        max_in_memory_bytes: hold whole columns in memory up to this size, else read batches
            through Arrow per step.

    State: :meth:`state_dict` / :meth:`load_state_dict` hold the stream position as plain integers
    (``examples/train_sit.py`` stores them as JSON in each checkpoint); all randomness is a
    function of ``(seed, epoch)`` and ``(seed, process_index, position)``, so it resumes exactly.
    """

    def __init__(
        self,
        data: Any,
        batch_size: int,
        *,
        seed: int = 0,
        process_index: int = 0,
        num_processes: int = 1,
        use_visual: bool | None = None,
        use_text: bool | None = None,
        device: str | torch.device | None = None,
        scaling_factor: float | None = None,
        shift_factor: float | None = None,
        info: Mapping[str, Any] | None = None,
        max_in_memory_bytes: int = DEFAULT_MAX_IN_MEMORY_BYTES,
    ) -> None:
        condensed = _as_condensed(data, info)
        samples = condensed.samples
        if "latents" not in samples.column_names:
            raise ValueError(
                f"the dataset has no 'latents' column (columns: {samples.column_names}); add it with "
                "condense(..., attach=('latents', ...)) or d2c_hf.attach.attachers.LatentEncoder(vae).apply(dataset)"
            )
        check_positive_int(batch_size, "batch_size")
        if num_processes < 1 or not 0 <= process_index < num_processes:
            raise ValueError(f"process_index {process_index} is not in [0, num_processes={num_processes})")
        if batch_size % num_processes:
            raise ValueError(
                f"the global batch_size {batch_size} must be divisible by the number of processes {num_processes}"
            )
        if len(samples) == 0:
            raise ValueError("the dataset has no rows")
        has_visual = "visual_embeds" in samples.column_names
        self.captioned = "caption_embeds" in samples.column_names
        if self.captioned and "caption_mask" not in samples.column_names:
            raise ValueError(
                "the captioned set has 'caption_embeds' but no 'caption_mask' column (columns: "
                f"{samples.column_names}); condense it again with caption_column=..."
            )
        has_text = condensed.classes is not None and "text_embeds" in condensed.classes.column_names
        if use_visual is None:
            use_visual = has_visual
        if use_text is None:
            use_text = has_text
        if use_visual and not has_visual:
            raise ValueError(
                "use_visual=True but the dataset has no 'visual_embeds' column; add it with "
                "condense(..., attach=(..., 'visual')) or train with use_visual=False (--no-use_visual)"
            )
        if use_text and not has_text:
            raise ValueError(
                "use_text=True but the dataset has no classes table with 'text_embeds'; add it with "
                "condense(..., attach=(..., 'text')) or train with use_text=False (--no-use_text)"
            )
        latents_info = (condensed.info or {}).get("latents") or {}
        if scaling_factor is None:
            scaling_factor = latents_info.get("scaling_factor")
            if scaling_factor is None:
                raise ValueError(
                    "the latent scale is unknown: the dataset's info has no latents.scaling_factor; pass "
                    "scaling_factor= (the VAE's config.scaling_factor, e.g. 0.18215; 1.0 in pixel space)"
                )
        if shift_factor is None:
            shift_factor = latents_info.get("shift_factor") or 0.0
        self.condensed = condensed
        self.batch_size = batch_size
        self.local_batch_size = batch_size // num_processes
        self.seed = int(seed)
        self.process_index = int(process_index)
        self.num_processes = int(num_processes)
        self.use_visual = bool(use_visual)
        self.use_text = bool(use_text)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.scaling_factor = float(scaling_factor)
        self.shift_factor = float(shift_factor)
        self.num_rows = len(samples)
        self.position = 0  # samples of the global stream consumed so far
        self._perm_cache: tuple[int, torch.Tensor] | None = None

        columns = [
            "latents",
            "labels",
            *(["visual_embeds"] if self.use_visual else []),
            *(["caption_embeds", "caption_mask"] if self.captioned else []),
        ]
        features = samples.features
        nbytes = self.num_rows * sum(_row_bytes(features[c]) for c in columns if c != "labels")
        self.in_memory = nbytes <= max_in_memory_bytes
        if self.in_memory:
            self._arrays = condensed.training_arrays(columns)
        else:
            logger.info(
                "BatchSource: %.1f GB of columns exceed max_in_memory_bytes; reading batches through Arrow",
                nbytes / 1e9,
            )
            self._arrays = condensed.training_arrays(["labels"])
        self._table = samples
        latents_shape = tuple(self._arrays["latents"].shape[1:]) if self.in_memory else None
        if latents_shape is None:
            latents_shape = fixed_shape(features["latents"])
        if latents_shape is None or len(latents_shape) != 3 or latents_shape[0] % 2:
            raise ValueError(
                f"'latents' must be fixed-shape (2C, h, w) rows (VAE posterior mean|std), got shape {latents_shape}"
            )
        self.latent_shape = (latents_shape[0] // 2, *latents_shape[1:])
        self.visual_shape = None
        if self.use_visual:
            self.visual_shape = fixed_shape(features["visual_embeds"])
        self.caption_shape = None
        if self.captioned:
            self.caption_shape = fixed_shape(features["caption_embeds"])
            mask_shape = fixed_shape(features["caption_mask"])
            if (
                self.caption_shape is None
                or len(self.caption_shape) != 2
                or mask_shape != self.caption_shape[:1]
            ):
                raise ValueError(
                    f"'caption_embeds' must be fixed-shape (L, D) rows and 'caption_mask' (L,) rows, got "
                    f"{self.caption_shape} and {mask_shape}"
                )
        self._text = condensed.training_arrays(["text_embeds", "text_mask"]) if self.use_text else None
        if self._text is not None:
            self._text = {
                "text_embeds": self._text["text_embeds"].to(self.device),
                "text_mask": (self._text["text_mask"] != 0).to(self.device),
            }

    # -- description and checks ----------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return self.condensed.num_classes

    @property
    def text_shape(self) -> tuple[int, int] | None:
        """``(L, D)`` of the class text embeddings, or None without text."""
        return None if self._text is None else tuple(self._text["text_embeds"].shape[1:])

    @property
    def epoch(self) -> int:
        return self.position // self.num_rows

    def class_text_table(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(text_embeds (C, L, D), text_mask (C, L))`` for ``SiTTransformer2DModel.set_class_text_table``."""
        if self._text is None:
            raise ValueError("this BatchSource was built with use_text=False; it has no class text table")
        return self._text["text_embeds"], self._text["text_mask"]

    def check_model(self, model: Any) -> None:
        """Raise a ``ValueError`` naming the mismatch if ``model``'s config cannot train on these batches:
        latent channels / size, number of classes, text width / length, visual token count / projector width,
        captions (a captioned set needs a text-conditioned model of its caption width and length, and only it)."""
        cfg = model.config
        caption_dim = getattr(cfg, "caption_embed_dim", None)
        if self.captioned and caption_dim is None:
            raise ValueError(
                f"the dataset is captioned (caption_embeds {self.caption_shape[0]} x {self.caption_shape[1]} per row) but "
                "the model is class-conditional (caption_embed_dim=None): build it with caption_embed_dim="
                f"{self.caption_shape[1]}, caption_seq_len={self.caption_shape[0]}, num_classes=0"
            )
        if not self.captioned and caption_dim is not None:
            raise ValueError(
                "the model is text-conditioned (caption_embed_dim set) but the dataset has no 'caption_embeds' "
                "column: condense a captioned dataset with caption_column=..., or train a class-conditional model"
            )
        if self.captioned and (cfg.caption_seq_len, caption_dim) != tuple(self.caption_shape):
            raise ValueError(
                f"the model takes caption_seq_len x caption_embed_dim = {cfg.caption_seq_len} x {caption_dim} but the "
                f"dataset's caption_embeds are {self.caption_shape[0]} x {self.caption_shape[1]}"
            )
        channels, size, width = self.latent_shape
        if size != width:
            raise ValueError(f"latents must be square, got {size}x{width}")
        if (cfg.in_channels, cfg.sample_size) != (channels, size):
            raise ValueError(
                f"the model takes {cfg.in_channels}x{cfg.sample_size}x{cfg.sample_size} inputs but the dataset's "
                f"latents are {channels}x{size}x{size}"
            )
        if not self.captioned and cfg.num_classes != self.num_classes:
            raise ValueError(
                f"the model has num_classes={cfg.num_classes} but the dataset has {self.num_classes} classes"
            )
        if self.use_text:
            length, dim = self.text_shape
            if (cfg.text_embed_dim, cfg.text_seq_len) != (dim, length):
                raise ValueError(
                    f"the model's DC-Embedding takes text_seq_len x text_embed_dim = {cfg.text_seq_len} x "
                    f"{cfg.text_embed_dim} but the classes table has text_embeds of {length} x {dim}"
                )
        if self.use_visual:
            tokens = (cfg.sample_size // cfg.patch_size) ** 2
            count, dim = self.visual_shape
            z_dims = list(cfg.z_dims)
            if count != tokens:
                raise ValueError(
                    f"visual_embeds has {count} tokens per image but the model's token grid is "
                    f"({cfg.sample_size}/{cfg.patch_size})^2 = {tokens}; condense with patch_size={cfg.patch_size} "
                    "(or num_visual_tokens) matching the model, or train with --no-use_visual"
                )
            if z_dims != [dim]:
                raise ValueError(
                    f"visual_embeds are {dim} wide but the model's projector z_dims are {z_dims}; "
                    f"build the model with z_dims=[{dim}]"
                )

    # -- sampling --------------------------------------------------------------------------
    def _permutation(self, epoch: int) -> torch.Tensor:
        if self._perm_cache is None or self._perm_cache[0] != epoch:
            generator = seeded_generator(self.seed, 0x5EED, epoch)
            self._perm_cache = (epoch, torch.randperm(self.num_rows, generator=generator))
        return self._perm_cache[1]

    def _global_indices(self, start: int, count: int) -> torch.Tensor:
        parts = []
        while count > 0:
            epoch, offset = divmod(start, self.num_rows)
            take = min(count, self.num_rows - offset)
            parts.append(self._permutation(epoch)[offset : offset + take])
            start, count = start + take, count - take
        return torch.cat(parts)

    def _read(self, column: str, indices: torch.Tensor) -> torch.Tensor:
        if self.in_memory:
            return self._arrays[column][indices]
        # batched Arrow read: sorted rows (sequential access), then back to the batch order
        order = torch.argsort(indices)
        rows = indices[order].tolist()
        values = self._table.with_format("numpy", columns=[column], dtype=np.float16)[rows][column]
        tensor = torch.from_numpy(np.ascontiguousarray(values))
        out = torch.empty_like(tensor)
        out[order] = tensor
        return out

    def peek_indices(self) -> torch.Tensor:
        """The sample rows of this process's next batch (without consuming it)."""
        global_batch = self._global_indices(self.position, self.batch_size)
        start = self.process_index * self.local_batch_size
        return global_batch[start : start + self.local_batch_size]

    def next_batch(self) -> dict[str, torch.Tensor]:
        """This process's part of the next global batch (see the class docstring); advances the stream."""
        indices = self.peek_indices()
        generator = seeded_generator(self.seed, 0xA7E, self.process_index, self.position, device=self.device)
        self.position += self.batch_size
        non_blocking = self.device.type == "cuda"
        moments = self._read("latents", indices).to(self.device, non_blocking=non_blocking).float()
        mean, std = moments.chunk(2, dim=1)
        noise = torch.randn(mean.shape, generator=generator, device=self.device)
        latents = ((mean + std * noise) - self.shift_factor) * self.scaling_factor
        labels = self._arrays["labels"][indices].to(self.device, non_blocking=non_blocking)
        batch = {"latents": latents, "labels": labels, "indices": indices}
        if self.use_visual:
            batch["visual_embeds"] = self._read("visual_embeds", indices).to(
                self.device, non_blocking=non_blocking
            )
        if self._text is not None:
            batch["text_embeds"] = self._text["text_embeds"][labels]
            batch["text_mask"] = self._text["text_mask"][labels]
        if self.captioned:
            batch["caption_embeds"] = self._read("caption_embeds", indices).to(
                self.device, non_blocking=non_blocking
            )
            batch["caption_mask"] = (
                self._read("caption_mask", indices).to(self.device, non_blocking=non_blocking) != 0
            )
        return batch

    def __iter__(self):
        while True:
            yield self.next_batch()

    # -- checkpointing ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The stream position plus what it is only valid with (seed, rows, global batch) and the number of
        processes that wrote it (for messages: the position is global, any process count can resume it)."""
        return {
            "position": self.position,
            "epoch": self.epoch,
            "seed": self.seed,
            "num_rows": self.num_rows,
            "batch_size": self.batch_size,
            "num_processes": self.num_processes,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the stream at ``state["position"]``; refuses a state of another seed or dataset size,
        or one that lacks ``position``, ``seed`` or ``num_rows`` (a damaged checkpoint)."""
        missing = [key for key in ("position", "seed", "num_rows") if key not in state]
        if missing:
            raise ValueError(
                f"the BatchSource state lacks {missing} (keys: {sorted(state)}); it is not a "
                "BatchSource.state_dict(), or its file is damaged"
            )
        for key in ("seed", "num_rows"):
            if int(state[key]) != getattr(self, key):
                raise ValueError(
                    f"cannot resume this BatchSource: the checkpoint has {key}={state[key]}, this one "
                    f"{getattr(self, key)} (another dataset or seed)"
                )
        self.position = int(state["position"])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(rows={self.num_rows}, batch_size={self.batch_size}, "
            f"process={self.process_index}/{self.num_processes}, latent_shape={self.latent_shape}, "
            f"visual={self.visual_shape}, text={self.text_shape}, captions={self.caption_shape}, "
            f"in_memory={self.in_memory}, position={self.position})"
        )
