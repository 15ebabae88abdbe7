"""Training SiT on a condensed set: REPA's losses and a fast, resumable batch source.

The objective (REPA ``SILoss``, linear interpolant, ``t = 0`` data, ``t = 1`` noise)::

    x_t    = (1 - t) x + t eps,          target v = eps - x,          t ~ U(0, 1) or logit-normal(0, 1)
    L_diff = mean over samples of mean_flat((v_theta(x_t, t, y) - v)^2)
    L_proj = mean over projectors, samples and tokens of -cos(phi(h_i), v_i)     (normalised in float32)
    L      = L_diff + proj_coeff * L_proj,                                         proj_coeff = 0.5

:class:`BatchSource` feeds it from a :class:`~d2c_hf.condensed.CondensedDataset` (or any
``datasets.Dataset`` with a ``latents`` column, so random-subset baselines train through the same
code): whole columns are read once through Arrow when they fit in memory (else batched reads), each
process takes its shard of a seeded per-epoch permutation, and every batch draws a fresh latent
``((mean + std * n) - shift) * scale`` from the stored VAE posterior.

Randomness is *counter based*: the permutation of epoch ``e`` is drawn from a generator seeded with
``(seed, e)`` and the noise of a batch from one seeded with ``(seed, process_index, position)``, so
:meth:`BatchSource.state_dict` (the stream position) restores every random draw exactly, whichever
process's state a checkpoint kept. :func:`seeded_generator` gives the training loop the same property
for its timesteps and interpolation noise.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "DEFAULT_PROJ_COEFF",
    "WEIGHTINGS",
    "BatchSource",
    "compute_loss",
    "flow_matching_loss",
    "interpolate",
    "projection_loss",
    "sample_timesteps",
    "seeded_generator",
    "total_loss",
]

logger = logging.getLogger(__name__)

#: REPA's weight of the projection loss (train.py ``--proj-coeff``).
DEFAULT_PROJ_COEFF = 0.5
#: time-sampling schemes (REPA's ``--weighting``; the name is REPA's, the loss itself is never reweighted)
WEIGHTINGS = ("uniform", "lognormal")
#: default limit for holding whole columns in memory (beyond it: batched Arrow reads)
DEFAULT_MAX_IN_MEMORY_BYTES = 8 * 1024**3


# --------------------------------------------------------------------------------------
# randomness
# --------------------------------------------------------------------------------------


def seeded_generator(seed: int, *keys: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded from ``(seed, *keys)`` (mixed by numpy's ``SeedSequence``).

    Counter-based randomness: the draws for, e.g., ``(seed, process_index, step)`` do not depend on
    what ran before, so a resumed run repeats them exactly.
    """
    entropy = [int(seed) & 0xFFFFFFFFFFFFFFFF, *(int(k) for k in keys)]
    value = int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]) & 0x7FFFFFFFFFFFFFFF
    return torch.Generator(device=device).manual_seed(value)


def sample_timesteps(
    batch_size: int,
    weighting: str = "uniform",
    *,
    generator: torch.Generator | None = None,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Draw ``t`` in ``[0, 1]`` per sample, float32 ``(batch_size,)``.

    ``uniform``: ``t ~ U(0, 1)`` (REPA's default). ``lognormal``: ``sigma = exp(N(0, 1))``,
    ``t = sigma / (1 + sigma)``, i.e. logit-normal(0, 1) (REPA's ``lognormal``; diffusers'
    ``logit_normal`` with mean 0, std 1).
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    if device is None:
        device = generator.device if generator is not None else "cpu"
    if weighting == "uniform":
        return torch.rand(batch_size, generator=generator, device=device)
    return torch.sigmoid(torch.randn(batch_size, generator=generator, device=device))


# --------------------------------------------------------------------------------------
# losses
# --------------------------------------------------------------------------------------


def interpolate(x: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The linear interpolant and its velocity: ``x_t = (1 - t) x + t noise``, ``v = noise - x``.

    ``t`` is ``(B,)`` (broadcast over the other axes) or a scalar.
    """
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    t = t.reshape(-1, *([1] * (x.ndim - 1))) if t.ndim else t
    return (1 - t) * x + t * noise, noise - x


def flow_matching_loss(pred: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """REPA's denoising loss: per-sample ``mean_flat((pred - target)^2)`` in float32, then the batch mean.

    ``reduction="none"`` returns the ``(B,)`` per-sample losses.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    per_sample = (pred.float() - target.float()).pow(2).flatten(1).mean(1)
    if reduction == "none":
        return per_sample
    if reduction != "mean":
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    return per_sample.mean()


def projection_loss(
    projections: Sequence[torch.Tensor] | torch.Tensor, targets: Sequence[torch.Tensor] | torch.Tensor
) -> torch.Tensor:
    """REPA's alignment loss: ``-cos(projection_i, target_i)`` averaged over tokens, samples and projectors.

    Both sides are L2-normalised per token in float32 (REPA issue #46: in fp16 this overflows).

    Args:
        projections: one ``(B, T, z)`` tensor per projector (``model(..., return_projections=True)``).
        targets: the matching ``(B, T, z)`` visual tokens, one per projector.

    Returns:
        a scalar in ``[-1, 1]``.
    """
    if torch.is_tensor(projections):
        projections = [projections]
    if torch.is_tensor(targets):
        targets = [targets]
    projections, targets = list(projections), list(targets)
    if not projections or len(projections) != len(targets):
        raise ValueError(
            f"need one target per projection and at least one: got {len(projections)} projections, "
            f"{len(targets)} targets"
        )
    losses = []
    for i, (z_hat, z) in enumerate(zip(projections, targets)):
        if z_hat.shape != z.shape:
            raise ValueError(
                f"projection {i} has shape {tuple(z_hat.shape)} but its visual target {tuple(z.shape)}"
            )
        cos = (F.normalize(z_hat.float(), dim=-1) * F.normalize(z.float(), dim=-1)).sum(-1)
        losses.append(-cos.mean())
    return torch.stack(losses).mean()


def total_loss(
    denoising: torch.Tensor, projection: torch.Tensor | None, proj_coeff: float = DEFAULT_PROJ_COEFF
) -> torch.Tensor:
    """``denoising + proj_coeff * projection`` (``projection=None``: the denoising loss alone)."""
    if projection is None:
        return denoising
    return denoising + proj_coeff * projection


def compute_loss(
    model: torch.nn.Module,
    batch: Mapping[str, torch.Tensor],
    *,
    generator: torch.Generator | None = None,
    weighting: str = "uniform",
    proj_coeff: float = DEFAULT_PROJ_COEFF,
) -> dict[str, torch.Tensor]:
    """One REPA training objective on a batch from :class:`BatchSource`.

    Draws ``t`` and ``eps`` from ``generator`` (on the batch's device), forms ``x_t`` and the
    velocity target, runs ``model`` (a :class:`~d2c_hf.models.SiTTransformer2DModel`, possibly
    wrapped by DDP) with the batch's labels, text (if present) and projections (if the batch has
    ``visual_embeds``). Label dropout for CFG is the model's own (training mode).

    Returns:
        ``{"loss", "denoising_loss", "projection_loss"}`` (the last is absent without visual tokens).
    """
    x = batch["latents"]
    t = sample_timesteps(x.shape[0], weighting, generator=generator, device=x.device)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    x_t, target = interpolate(x, noise, t)
    visual = batch.get("visual_embeds")
    kwargs: dict[str, Any] = {}
    if batch.get("text_embeds") is not None:
        kwargs["text_embeds"] = batch["text_embeds"]
        kwargs["text_mask"] = batch["text_mask"]
    out = model(
        x_t, t.to(x.dtype), batch["labels"], return_projections=visual is not None, return_dict=True, **kwargs
    )
    pred = out.sample[:, : x.shape[1]]  # drop a learned-sigma half
    denoising = flow_matching_loss(pred, target)
    result = {"denoising_loss": denoising}
    projection = None
    if visual is not None:
        projection = projection_loss(out.projections, [visual] * len(out.projections))
        result["projection_loss"] = projection
    result["loss"] = total_loss(denoising, projection, proj_coeff)
    return result


# --------------------------------------------------------------------------------------
# batch source
# --------------------------------------------------------------------------------------


def _as_condensed(data: Any, info: Mapping[str, Any] | None):
    from datasets import Dataset

    from .condensed import CondensedDataset

    if isinstance(data, CondensedDataset):
        return data
    if isinstance(data, Dataset):
        return CondensedDataset(data, None, info or {})
    raise TypeError(
        f"BatchSource takes a CondensedDataset or a datasets.Dataset with a 'latents' column, got {type(data).__name__}"
    )


def _row_bytes(feature: Any) -> int:
    from .condensed import _fixed_shape, _leaf_dtype

    shape = _fixed_shape(feature)
    if shape is None:
        return 8
    return math.prod(shape) * np.dtype(_leaf_dtype(feature)).itemsize


class BatchSource:
    """Batches for flow-matching training from a condensed set (or a plain ``Dataset`` with ``latents``).

    Each call of :meth:`next_batch` returns this process's share of the next global batch of the
    sample stream (seeded permutation of every row, epoch after epoch; a global batch may span an
    epoch boundary, so sets smaller than a batch work), as a dict on ``device``:

    * ``latents`` ``(b, C, h, w)`` float32: a fresh draw ``((mean + std * n) - shift) * scale`` from
      the stored posterior (pixel space: ``std`` = 0, scale 1, so the image in ``[-1, 1]``);
    * ``labels`` ``(b,)`` int64 and ``indices`` ``(b,)`` int64 (rows of ``samples``, for error reports);
    * ``visual_embeds`` ``(b, T, d)`` float16, with ``use_visual``;
    * ``text_embeds`` ``(b, L, D)`` float16 and ``text_mask`` ``(b, L)`` bool, looked up by label, with ``use_text``.

    Args:
        data: a :class:`~d2c_hf.condensed.CondensedDataset`, or a ``datasets.Dataset`` with ``latents``
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
                "condense(..., attach=('latents', ...)) or d2c_hf.attach.LatentEncoder(vae).apply(dataset)"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if num_processes < 1 or not 0 <= process_index < num_processes:
            raise ValueError(f"process_index {process_index} is not in [0, num_processes={num_processes})")
        if batch_size % num_processes:
            raise ValueError(
                f"the global batch_size {batch_size} must be divisible by the number of processes {num_processes}"
            )
        if len(samples) == 0:
            raise ValueError("the dataset has no rows")
        has_visual = "visual_embeds" in samples.column_names
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

        columns = ["latents", "labels", *(["visual_embeds"] if self.use_visual else [])]
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
            from .condensed import _fixed_shape

            latents_shape = _fixed_shape(features["latents"])
        if latents_shape is None or len(latents_shape) != 3 or latents_shape[0] % 2:
            raise ValueError(
                f"'latents' must be fixed-shape (2C, h, w) rows (VAE posterior mean|std), got shape {latents_shape}"
            )
        self.latent_shape = (latents_shape[0] // 2, *latents_shape[1:])
        self.visual_shape = None
        if self.use_visual:
            from .condensed import _fixed_shape

            self.visual_shape = _fixed_shape(features["visual_embeds"])
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
        latent channels / size, number of classes, text width / length, visual token count / projector width."""
        cfg = model.config
        channels, size, width = self.latent_shape
        if size != width:
            raise ValueError(f"latents must be square, got {size}x{width}")
        if (cfg.in_channels, cfg.sample_size) != (channels, size):
            raise ValueError(
                f"the model takes {cfg.in_channels}x{cfg.sample_size}x{cfg.sample_size} inputs but the dataset's "
                f"latents are {channels}x{size}x{size}"
            )
        if cfg.num_classes != self.num_classes:
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
            f"visual={self.visual_shape}, text={self.text_shape}, in_memory={self.in_memory}, position={self.position})"
        )
