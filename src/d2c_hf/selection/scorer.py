"""Select, step 1: the diffusion difficulty score, as a ``datasets`` map transform.

For an image x with label c, and a frozen class-conditional diffusion model, the score is the
model's mean denoising error on that sample, conditioned on its *true* label::

    difficulty(x, c) = 1/T * sum_{i=0}^{T-1} mean_{C,H,W} ( target(x, eps_i, t_i) - model(x_{t_i}, t_i, c) )^2

stored as the float32 column ``difficulty``: positive, **higher = harder**, ascending order =
easiest first (method.md §1). x is the image's ADM centre crop in ``[-1, 1]`` (pixel space) or
its deterministic VAE latent ``(vae.encode(x).latent_dist.mean - shift) * scaling_factor``
(latent space), encoded once per image.

Three adapters, each a *path* (how x_t is built) and a *prediction* (what the output is compared with):

* ``"epsilon"`` (diffusers ``DiTTransformer2DModel``, e.g. ``facebook/DiT-XL-2-256``): the DDPM
  path ``x_t = sqrt(abar_t) x + sqrt(1 - abar_t) eps`` through diffusers' ``DDPMScheduler.add_noise``
  (schedule read from the repo's ``scheduler/`` folder, else DiT's linear betas 1e-4..0.02 over 1000
  steps), target ``eps``, integer timesteps. A learned-sigma model (``out_channels == 2 * in_channels``)
  is compared on the first (epsilon) half only.
* ``"v_prediction"`` (a DDPM model predicting ``v = sqrt(abar_t) eps - sqrt(1 - abar_t) x``, declared by its
  scheduler): the DDPM path, target ``v`` (``DDPMScheduler.get_velocity``).
* ``"flow"`` (d2c-hf's ``SiTTransformer2DModel``, REPA convention): ``x_t = (1 - t) x + t eps``, target
  ``eps - x`` (the velocity), ``t`` in ``[0, 1]`` passed to the model as a float.

The timestep grid is by default fixed and evenly spaced: the midpoints of T equal bins,
``t_i = floor((i + 0.5) * N / T)`` for DDPM (N = ``num_train_timesteps``; 50, 150, ..., 950 for
T = 10) and ``t_i = (i + 0.5) / T`` for flow (0.05, ..., 0.95); ``"stratified"`` draws one timestep
inside each bin per sample and draw, and an explicit list is used as given.

**The estimator.** With ``num_draws = D`` the mean runs over T x D (timestep, noise) pairs (each draw
also as ``-eps`` with ``antithetic``); ``standardize_timesteps`` z-scores each timestep's error over the
dataset before averaging (a dataset-level step, :func:`finish_scores`). Each row keeps two independent
half-estimates (``difficulty_halves``) so that the score's split-half reliability
(:mod:`d2c_hf.selection.reliability`) needs no extra forward pass; a one-draw run can re-score a probe of rows
with fresh noise instead.

**Common random numbers.** The noise ``eps_i`` of draw d of a sample is slice ``i`` of one stream of
N(0, 1) draws from a CPU ``torch.Generator`` seeded with ``blake2b(seed, key)`` for draw 0 (so one draw
reproduces every earlier score bitwise) and ``blake2b(seed, key, d)`` for draw d >= 1, where the key is
a 64-bit blake2b hash of the sample's preprocessed uint8 pixels (or of a ``key_column`` value). A
sample's score therefore depends only on (model, seed, estimator, its pixels, its label): not on batch
size, row order, shuffling, sharding, the number of processes or restarts.

What every scorer shares (the estimator, the space, the ``datasets`` map) is :class:`~.scorer_base.ScorerBase`;
this class adds the class label as the condition. The caption-conditioned scorer is
:class:`~d2c_hf.selection.text_scorer.TextDifficultyScorer`. See ``docs/scoring.md`` for the user guide and
:func:`train_scorer` for a scorer trained from scratch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..data.inputs import check_labels
from ..utils.signatures import forwards_options_to
from ..utils.spaces import AUTO, normalise_vae
from .denoisers import check_denoiser, read_contract, resolve_scorer
from .estimator import DEFAULT_PROBE_ROWS, MIDPOINTS
from .monte_carlo import ScoredBatch
from .reliability import DEFAULT_WARN_RELIABILITY
from .score_dataset import check_label_range, finish_scores
from .scorer_base import FINGERPRINT_VERSION, ScorerBase, check_scorer_options

logger = logging.getLogger(__name__)

SCORER_INFO_FILE = "d2c_scorer.json"


class DifficultyScorer(ScorerBase):
    """The D2C diffusion difficulty score as a ``datasets`` map transform.

    ``scorer(batch, indices)`` returns ``{"difficulty": float32 (B,)}`` (plus
    ``"difficulty_per_timestep"``, float32 ``(B, T)``, with ``return_per_timestep=True``);
    ``scorer.apply(ds)`` is ``ds.map(scorer, batched=True, with_indices=True, features=...,
    new_fingerprint=...)`` with input checks first. See the module docstring for the equation.

    Build it with :meth:`from_pretrained` (Hub id or local folder); the constructor takes loaded
    objects.

    Args:
        model: a loaded class-conditional denoiser, ``forward(x_t, timestep=, class_labels=)`` returning
            ``.sample`` (or a tuple / tensor) of shape ``(N, C or 2C, h, w)``; its config must give
            ``in_channels``, ``num_classes`` (or ``num_embeds_ada_norm``) and ``sample_size`` (or pass
            ``resolution``). Put in eval mode (no label dropout) and moved to ``device``.
        vae: a loaded ``AutoencoderKL`` (latent space) or ``None`` (pixel space).
        scheduler: DDPM models only: a diffusers scheduler or scheduler config giving the betas
            (``None`` = DiT's linear schedule).
        num_timesteps: T, the number of timesteps per draw (``None`` = 10, or the length of an explicit grid).
        timestep_grid: ``"midpoints"`` (default: the paper's evenly spaced bins, their midpoints),
            ``"stratified"`` (one random timestep in each of T equal bins, per sample and draw: an unbiased
            estimate of the average over all timesteps) or an explicit sequence of timesteps.
        num_draws: independent noise draws per timestep (D); the score averages the T x D errors. Draw 0
            is the noise of a one-draw score, so D = 1 gives the scores of earlier versions bitwise.
        antithetic: pair every draw ``eps`` with ``-eps`` (2 T D forward passes per image).
        standardize_timesteps: z-score each timestep's error over the dataset before averaging (done by
            :meth:`apply` and the sharded runner, which see the whole dataset; beyond the paper).
        reliability_probe: with one draw, the rows (spread over up to 8 classes) that :meth:`apply`
            re-scores with fresh noise to measure the score's reliability (default 512; 0 = none). With
            ``num_draws >= 2`` the reliability is the split-half one and costs no extra forward pass.
        warn_reliability: :meth:`apply` warns when the reliability is below this (``None`` = never).
        seed: seed of the common random numbers (an int in ``[0, 2**64)``).
        resolution: side of the ADM centre crop in pixels; ``None`` = ``sample_size * vae factor``.
        batch_size: images per scoring step (and the default ``map`` batch size).
        dtype: compute dtype; ``None`` = bfloat16 on CUDA, float32 otherwise. Weights keep their dtype;
            a half dtype runs the VAE and the model under ``torch.autocast``.
        device: ``None`` = CUDA if available, else CPU.
        prediction_type: ``"epsilon"``, ``"v_prediction"`` or ``"flow"``; ``None`` = from the model class /
            config.
        image_column, label_column: input columns.
        key_column: optional column whose value (int/str/bytes) replaces the pixel hash as the sample key.
        return_per_timestep: also return the ``(B, T)`` per-timestep errors.
        max_forward_batch: most (sample, timestep) pairs per forward call; ``None`` = all ``B * T`` at once.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        vae: Any = None,
        *,
        scheduler: Any = None,
        num_timesteps: int | None = None,
        timestep_grid: str | Sequence[float] = MIDPOINTS,
        num_draws: int = 1,
        antithetic: bool = False,
        standardize_timesteps: bool = False,
        reliability_probe: int = DEFAULT_PROBE_ROWS,
        warn_reliability: float | None = DEFAULT_WARN_RELIABILITY,
        seed: int = 0,
        resolution: int | None = None,
        batch_size: int = 32,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
        prediction_type: str | None = None,
        image_column: str = "image",
        label_column: str = "label",
        key_column: str | None = None,
        return_per_timestep: bool = False,
        max_forward_batch: int | None = None,
    ) -> None:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a loaded torch.nn.Module, got {type(model).__name__}")
        check_denoiser(model)
        # the model's contract: channels, classes, size, prediction type (denoisers.read_contract)
        contract = read_contract(model, vae, resolution, prediction_type)
        self.num_classes = contract.num_classes
        self.label_column = label_column
        super().__init__(
            model,
            vae,
            contract,
            scheduler=scheduler,
            num_timesteps=num_timesteps,
            timestep_grid=timestep_grid,
            num_draws=num_draws,
            antithetic=antithetic,
            standardize_timesteps=standardize_timesteps,
            reliability_probe=reliability_probe,
            warn_reliability=warn_reliability,
            seed=seed,
            batch_size=batch_size,
            dtype=dtype,
            device=device,
            image_column=image_column,
            key_column=key_column,
            return_per_timestep=return_per_timestep,
            max_forward_batch=max_forward_batch,
        )

    # ---- construction ---------------------------------------------------------------------------------
    @classmethod
    @forwards_options_to(__init__, drop=("scheduler",))
    def from_pretrained(cls, model: Any, vae: Any = AUTO, **options: Any) -> DifficultyScorer:
        """Load a scorer from a Hub id or local folder, or wrap a loaded model.

        Args:
            model: ``"facebook/DiT-XL-2-256"`` (CC BY-NC) or any folder/repo with one of the layouts: a
                diffusers pipeline (``model_index.json``, ``transformer/``, optional ``vae/`` and
                ``scheduler/``), a folder with a ``transformer/`` subfolder (optional ``scheduler/``,
                ``vae/``; what :func:`train_scorer` writes), or a bare model folder (``config.json`` at the
                root). Or a loaded model.
            vae: ``"auto"`` (default) = the repo's own ``vae/`` if it has one, else pixel space for a
                3-channel model, else the paper's SD VAE (:data:`~d2c_hf.utils.spaces.DEFAULT_VAE`); ``"pixel"`` or
                ``None`` = pixel space; a folder / Hub id (an ``AutoencoderKL``, or a pipeline with ``vae/``)
                or a loaded ``AutoencoderKL`` overrides.
            other keyword arguments: the class's, with the same defaults (declared once, on ``__init__``).
        """
        # cheap checks first: nothing is loaded for an argument that would be refused anyway
        check_scorer_options(options, cls.__init__, "DifficultyScorer.from_pretrained", drop=("scheduler",))
        model, vae_model, scheduler, prediction_type = resolve_scorer(
            model, normalise_vae(vae), options.get("prediction_type")
        )
        return cls(model, vae_model, scheduler=scheduler, **{**options, "prediction_type": prediction_type})

    # ---- description ----------------------------------------------------------------------------------
    def _conditioning_config(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes}

    def _column_config(self) -> dict[str, Any]:
        return {"label_column": self.label_column}

    # ---- scoring ----------------------------------------------------------------------------------------
    def score_pixels(
        self,
        pixels: np.ndarray,
        labels: Sequence[int] | np.ndarray | torch.Tensor,
        keys: Sequence[int] | np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Score a batch of preprocessed images.

        All ``B * T`` (sample, timestep) pairs go through the model in ``ceil(B * T / max_forward_batch)``
        forward calls (one by default); each image is encoded once.

        Args:
            pixels: ``(B, resolution, resolution, 3)`` uint8 (e.g. from ``d2c_hf.utils.images.preprocess_images``), a
                numpy array or a tensor (which may already be on the scorer's device: pinned host memory
                copied with ``non_blocking=True`` by a data loader).
            labels: ``(B,)`` integer class ids in ``[0, num_classes)``.
            keys: ``(B,)`` uint64 sample keys; ``None`` = :func:`pixel_keys` of ``pixels``.

        Returns:
            ``(difficulty (B,), per_timestep (B, T))``, float32 numpy arrays; ``difficulty`` is the
            row mean of ``per_timestep``.
        """
        from .noise import pixel_keys

        pixels = self.check_pixels(pixels)
        if keys is None:
            keys = pixel_keys(pixels.cpu().numpy() if isinstance(pixels, torch.Tensor) else pixels)
        if len(pixels) == 0:
            return np.zeros(0, np.float32), np.zeros((0, self.num_timesteps), np.float32)
        return self.score_inputs(self.encode(pixels), labels, keys)  # each image encoded once

    def score_inputs(
        self,
        x0: torch.Tensor,
        labels: Sequence[int] | np.ndarray | torch.Tensor,
        keys: Sequence[int] | np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Score a batch of clean model inputs (what :meth:`encode` returns), e.g. latents whose
        posterior the caller keeps for later use.

        Args:
            x0: ``(B, C, h, w)`` float32 on the scorer's device.
            labels: ``(B,)`` integer class ids.
            keys: ``(B,)`` uint64 sample keys (the common random numbers' seeds).

        Returns:
            ``(difficulty (B,), per_timestep (B, T))`` as for :meth:`score_pixels` (raw errors: the
            per-timestep standardisation is a dataset-level step, see :meth:`apply`).
        """
        batch = self.score_batch(x0, labels, keys, probe=False)
        return batch.difficulty, batch.per_timestep

    def score_batch(
        self,
        x0: torch.Tensor,
        labels: Sequence[int] | np.ndarray | torch.Tensor,
        keys: Sequence[int] | np.ndarray,
        *,
        probe: bool = True,
    ) -> ScoredBatch:
        """Score a batch and keep what the reliability needs (:meth:`MonteCarlo.score
        <d2c_hf.selection.monte_carlo.MonteCarlo.score>` with this scorer's model and labels).

        ``difficulty`` and ``per_timestep`` average the ``num_draws`` draws (each with its antithetic
        mirror); ``halves`` ``(B, T, 2)`` holds the per-timestep errors of two independent estimates: the
        even and the odd draws (``floor(D / 2)`` each) when ``num_draws >= 2``, or, with one draw and a
        planned probe (``probe=True``), the estimate and a fresh draw (draw 1) for the probed rows, NaN
        for the others. ``None`` when neither applies.
        """
        labels = check_labels(np.asarray(labels), self.num_classes, self.label_column)
        keys = self.check_inputs(x0, len(labels), "labels", keys)
        probed = probe and self.probe is not None and self.num_draws == 1
        mask = (
            self.probe_mask(labels, keys) if probed and len(x0) else (np.zeros(0, bool) if probed else None)
        )
        return self.score_conditioned(x0, self._conditions(labels), keys, mask)

    def draw_errors(
        self,
        x0: torch.Tensor,
        labels: np.ndarray,
        keys: np.ndarray,
        draws: Sequence[int] | range,
    ) -> torch.Tensor:
        """The per-(sample, timestep, draw) denoising errors ``(B, T, len(draws))`` float32 on the scorer's
        device: :meth:`MonteCarlo.draw_errors <d2c_hf.selection.monte_carlo.MonteCarlo.draw_errors>` with this
        scorer's model and labels."""
        return self.errors_conditioned(x0, self._conditions(labels), keys, draws)

    def _conditions(self, labels: Any) -> torch.Tensor:
        return torch.as_tensor(np.asarray(labels), device=self.device)

    def _call_model(self, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> Any:
        return self.model(x_t, timestep=t, class_labels=labels)

    # ---- one batch of rows ------------------------------------------------------------------------------
    def condition_values(self, batch: Mapping[str, Any]) -> list[Any]:
        return list(batch[self.label_column])

    def score_chunk(
        self, pixels: np.ndarray, values: Sequence[Any], keys: np.ndarray, rows: Sequence[int]
    ) -> tuple[ScoredBatch, dict[str, np.ndarray]]:
        """Check the labels (naming the row of a missing or out-of-range one) and score the images."""
        for label, row in zip(values, rows):
            if label is None:
                raise ValueError(f"column {self.label_column!r} has a missing label (None) at row {row}")
        y = check_labels(np.asarray(values), self.num_classes, self.label_column, rows=rows)
        return self.score_batch(self.encode(pixels), y, keys), {}

    # ---- datasets ---------------------------------------------------------------------------------------
    def prepare(self, dataset: Any, is_map_style: bool) -> Any:
        """The image and label columns checked (:func:`~d2c_hf.data.inputs.prepare_dataset`: missing columns,
        label types, empty dataset, ``None``, negative labels, labels ``>= num_classes`` naming the row), and
        the probe planned over the classes."""
        from ..data.inputs import prepare_dataset

        dataset, info = prepare_dataset(
            dataset,
            self.image_column,
            self.label_column,
            num_classes=None if is_map_style else self.num_classes,
        )
        if is_map_style:
            self.check_label_range(dataset, info.num_classes)
            self.plan_probe(len(dataset), info.num_classes)
        else:
            self.probe = None  # a stream's size is unknown; with num_draws >= 2 the halves column stays
        return dataset

    def dataset_groups(self, dataset: Any, scores: Any) -> np.ndarray:
        from ..utils.columns import column_numpy

        return column_numpy(dataset, self.label_column).astype(np.int64)

    def check_label_range(self, dataset: Any, dataset_classes: int) -> None:
        """Refuse a dataset whose labels or class count exceed the scorer's classes, naming the row."""
        check_label_range(self, dataset, dataset_classes)


__all__ = ["FINGERPRINT_VERSION", "SCORER_INFO_FILE", "DifficultyScorer", "finish_scores"]
