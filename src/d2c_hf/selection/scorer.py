"""Select, step 1: the diffusion difficulty score, as a ``datasets`` map transform.

For an image x with label c, and a frozen class-conditional diffusion model, the score is the
model's mean denoising error on that sample, conditioned on its *true* label::

    difficulty(x, c) = 1/T * sum_{i=0}^{T-1} mean_{C,H,W} ( target(x, eps_i, t_i) - model(x_{t_i}, t_i, c) )^2

stored as the float32 column ``difficulty``: positive, **higher = harder**, ascending order =
easiest first (method.md §1). x is the image's ADM centre crop in ``[-1, 1]`` (pixel space) or
its deterministic VAE latent ``(vae.encode(x).latent_dist.mean - shift) * scaling_factor``
(latent space), encoded once per image.

Two adapters, each a *path* (how x_t is built) and a *prediction* (what the output is compared with):

* ``"epsilon"`` (diffusers ``DiTTransformer2DModel``, e.g. ``facebook/DiT-XL-2-256``): the DDPM
  path ``x_t = sqrt(abar_t) x + sqrt(1 - abar_t) eps`` through diffusers' ``DDPMScheduler.add_noise``
  (schedule read from the repo's ``scheduler/`` folder, else DiT's linear betas 1e-4..0.02 over 1000
  steps), target ``eps``, integer timesteps. A learned-sigma model (``out_channels == 2 * in_channels``)
  is compared on the first (epsilon) half only.
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

See ``docs/scoring.md`` for the user guide and :func:`train_scorer` for a scorer trained from scratch.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..data.inputs import check_labels
from ..utils.checks import check_positive_int, check_seed
from ..utils.hub import model_provenance, resolve_device, resolve_dtype
from ..utils.images import pixels_to_tensor
from ..utils.signatures import check_option_names, forwards_options_to, keyword_options
from ..utils.spaces import AUTO, normalise_vae
from ..utils.vae import encode_posterior, latent_scale, load_vae, scale_latents
from .denoisers import (
    PREDICTION_TYPES,
    EpsilonAdapter,
    FlowAdapter,
    check_denoiser,
    model_prediction,
    read_contract,
    resolve_scorer,
)
from .estimator import DEFAULT_PROBE_ROWS, MIDPOINTS, PROBE_CLASSES, STRATIFIED, check_estimator
from .monte_carlo import MonteCarlo, ScoredBatch
from .noise import pixel_keys, probe_draws
from .reliability import DEFAULT_WARN_RELIABILITY, Reliability, Standardization, check_threshold
from .score_dataset import (
    DIFFICULTY_COLUMN,
    HALVES_COLUMN,
    PER_TIMESTEP_COLUMN,
    apply_scorer,
    check_label_range,
    finish_scores,
    score_rows,
)

logger = logging.getLogger(__name__)

#: Bump when the scores change for the same config (invalidates ``datasets`` caches).
FINGERPRINT_VERSION = 1
SCORER_INFO_FILE = "d2c_scorer.json"


class DifficultyScorer:
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
        scheduler: epsilon models only: a diffusers scheduler or scheduler config giving the betas
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
        prediction_type: ``"epsilon"`` or ``"flow"``; ``None`` = from the model class / config.
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
        self.num_timesteps, self.timestep_grid = check_estimator(
            num_timesteps, timestep_grid, num_draws, antithetic, reliability_probe
        )
        self.num_draws, self.antithetic = int(num_draws), bool(antithetic)
        self.standardize_timesteps = bool(standardize_timesteps)
        self.reliability_probe = int(reliability_probe)
        self.warn_reliability = check_threshold(warn_reliability, "warn_reliability")
        self.probe: dict[str, Any] | None = None  # set by plan_probe once the data's size is known
        self.reliability: Reliability | None = None  # of the last apply()
        self.standardization: Standardization | None = None  # of the last apply(), with standardize_timesteps
        self.batch_size = check_positive_int(batch_size, "batch_size")
        if max_forward_batch is not None:
            check_positive_int(max_forward_batch, "max_forward_batch")
        self.max_forward_batch = max_forward_batch
        self.seed = check_seed(seed)
        self.image_column, self.label_column, self.key_column = image_column, label_column, key_column
        self.return_per_timestep = bool(return_per_timestep)

        # ---- the model's contract: channels, classes, size, prediction type (denoisers.read_contract) ---
        contract = read_contract(model, vae, resolution, prediction_type)
        self.prediction_type = contract.prediction_type
        self.channels, self.learned_sigma = contract.channels, contract.learned_sigma
        self.num_classes, self.factor = contract.num_classes, contract.factor
        self.resolution, self.latent_size = contract.resolution, contract.latent_size

        # ---- placement ------------------------------------------------------------------------------
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.model = model.eval().to(self.device)  # eval: no label dropout
        self.vae = load_vae(vae).to(self.device) if vae is not None else None
        self.scaling_factor, self.shift_factor = latent_scale(self.vae)
        if self.prediction_type == "epsilon":
            self.adapter: EpsilonAdapter | FlowAdapter = EpsilonAdapter(
                self.num_timesteps, scheduler, self.timestep_grid
            )
        else:
            self.adapter = FlowAdapter(self.num_timesteps, self.timestep_grid)
        self.adapter.to(self.device)
        self.monte_carlo = MonteCarlo(
            self.num_timesteps,
            self.timestep_grid,
            self.num_draws,
            self.antithetic,
            self.seed,
            self.max_forward_batch,
        )
        self._model_provenance = model_provenance(model)
        self._vae_provenance = model_provenance(self.vae) if self.vae is not None else None
        self.num_upsampled = 0  # images smaller than `resolution` seen by this instance (upsampled)
        self._warned_upsampling = False
        self.defer_upsampling_warning = False

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
        check_option_names(options, cls.__init__, "DifficultyScorer.from_pretrained", drop=("scheduler",))
        given = {p.name: p.default for p in keyword_options(cls.__init__)} | options
        check_estimator(
            *(given[k] for k in ("num_timesteps", "timestep_grid", "num_draws", "antithetic")),
            given["reliability_probe"],
        )
        check_threshold(given["warn_reliability"], "warn_reliability")
        check_positive_int(given["batch_size"], "batch_size")
        if given["max_forward_batch"] is not None:
            check_positive_int(given["max_forward_batch"], "max_forward_batch")
        check_seed(given["seed"])
        if given["prediction_type"] is not None and given["prediction_type"] not in PREDICTION_TYPES:
            raise ValueError(
                f"prediction_type must be one of {PREDICTION_TYPES} or None, got {given['prediction_type']!r}"
            )
        resolve_dtype(given["dtype"], torch.device("cpu"))
        model, vae_model, scheduler, prediction_type = resolve_scorer(
            model, normalise_vae(vae), given["prediction_type"]
        )
        return cls(model, vae_model, scheduler=scheduler, **{**options, "prediction_type": prediction_type})

    # ---- description ----------------------------------------------------------------------------------
    @property
    def timesteps(self) -> list[float] | list[int]:
        """The timestep grid as the model sees it (ints for epsilon models, floats in [0, 1] for flow)."""
        return self.adapter.config["timesteps"]

    @property
    def tracks_reliability(self) -> bool:
        """Whether each scored row carries what the reliability needs (``difficulty_halves``): with
        ``num_draws >= 2`` always, with one draw once :meth:`plan_probe` has planned a probe."""
        return self.num_draws >= 2 or self.probe is not None

    @property
    def features(self):
        """The columns a call returns: ``difficulty`` ``Value("float32")`` [+ ``difficulty_per_timestep``
        ``List(Value("float32"), length=T)`` with ``return_per_timestep`` or ``standardize_timesteps``]
        [+ ``difficulty_halves`` ``Array2D((T, 2), "float32")`` when :attr:`tracks_reliability`].
        :meth:`apply` keeps ``difficulty_per_timestep`` only with ``return_per_timestep`` and drops
        ``difficulty_halves`` after computing the reliability (map-style datasets)."""
        from datasets import Array2D, Features, List, Value

        columns = {DIFFICULTY_COLUMN: Value("float32")}
        if self.return_per_timestep or self.standardize_timesteps:
            columns[PER_TIMESTEP_COLUMN] = List(Value("float32"), length=self.num_timesteps)
        if self.tracks_reliability:
            columns[HALVES_COLUMN] = Array2D((self.num_timesteps, 2), "float32")
        return Features(columns)

    @property
    def forward_passes_per_image(self) -> int:
        """Forward passes of the estimate per image: ``T * num_draws * (2 if antithetic else 1)``."""
        return self.num_timesteps * self.num_draws * (2 if self.antithetic else 1)

    def plan_probe(self, num_rows: int | None, num_classes: int) -> dict[str, Any] | None:
        """Plan the reliability probe of a one-draw score over ``num_rows`` rows of ``num_classes`` classes.

        The probe re-scores about ``reliability_probe`` rows with a fresh draw (draw 1): the rows of up to
        8 evenly spaced classes whose ``(seed, key)`` hash falls below ``fraction = reliability_probe * C /
        (K * num_rows)``, so a row's membership depends on its key only (not on order or sharding). Its cost
        is ``T`` forward passes per probed row. No probe with ``num_draws >= 2`` (the split halves are
        free), with ``reliability_probe=0`` or an unknown ``num_rows``.

        Returns (and stores in :attr:`probe`, recorded in :attr:`config`) the plan, or None.
        """
        self.probe = None
        if self.num_draws >= 2 or not self.reliability_probe or not num_rows or num_classes < 1:
            return None
        k = min(int(num_classes), PROBE_CLASSES)
        classes = sorted({(j * int(num_classes)) // k for j in range(k)})
        fraction = min(1.0, self.reliability_probe * int(num_classes) / (len(classes) * int(num_rows)))
        self.probe = {"rows": self.reliability_probe, "classes": classes, "fraction": fraction}
        return self.probe

    def probe_mask(self, labels: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """``(B,)`` bool: the rows of a batch that the planned probe re-scores."""
        labels = np.asarray(labels)
        if self.probe is None or len(labels) == 0:
            return np.zeros(len(labels), bool)
        in_class = np.isin(labels, self.probe["classes"])
        return in_class & (probe_draws(keys, self.seed) < self.probe["fraction"])

    @property
    def config(self) -> dict[str, Any]:
        """JSON-able provenance: everything that determines the scores."""
        from ..version import __version__

        return {
            "d2c_hf_version": __version__,
            "model": self._model_provenance,
            "vae": self._vae_provenance,
            "space": "latent" if self.vae is not None else "pixel",
            "prediction_type": self.prediction_type,
            "learned_sigma": self.learned_sigma,
            "num_classes": self.num_classes,
            "num_timesteps": self.num_timesteps,
            "timestep_grid": {MIDPOINTS: "bin midpoints", STRATIFIED: "stratified in bins"}.get(
                self.timestep_grid if isinstance(self.timestep_grid, str) else "", "explicit"
            ),
            "num_draws": self.num_draws,
            "antithetic": self.antithetic,
            "forward_passes_per_image": self.forward_passes_per_image,
            "standardize_timesteps": self.standardize_timesteps,
            "reliability_probe": self.probe if self.probe is not None else self.reliability_probe,
            "noising": self.adapter.config,
            "seed": self.seed,
            "noise": (
                "torch.randn on a CPU generator seeded with blake2b(seed, key) for draw 0 and blake2b(seed, key, d) "
                "for draw d; slice i = timestep i"
                + ("; each draw also as -eps (antithetic)" if self.antithetic else "")
            ),
            "key": {"column": self.key_column} if self.key_column else "blake2b-64 of the uint8 crop",
            "resolution": self.resolution,
            "crop": "adm_center",
            "input_shape": [self.channels, self.latent_size, self.latent_size],
            "scaling_factor": self.scaling_factor,
            "shift_factor": self.shift_factor,
            "dtype": str(self.dtype).removeprefix("torch."),
            "image_column": self.image_column,
            "label_column": self.label_column,
            "return_per_timestep": self.return_per_timestep,
        }

    @property
    def fingerprint(self) -> str:
        """Hash of :attr:`config` (and the transform's version): equal fingerprints give equal scores.

        The requested probe size counts, not the probe rows :meth:`apply` planned for the last dataset (a
        scorer's fingerprint does not change by using it); :meth:`map_fingerprint` adds the plan."""
        from datasets.fingerprint import Hasher

        config = {**self.config, "reliability_probe": self.reliability_probe}
        return Hasher.hash([type(self).__name__, FINGERPRINT_VERSION, config])

    def __repr__(self) -> str:
        name = self._model_provenance.get("name_or_path") or self._model_provenance.get("class")
        return (
            f"{type(self).__name__}(model={name!r}, space={self.config['space']!r}, prediction_type="
            f"{self.prediction_type!r}, num_timesteps={self.num_timesteps}, resolution={self.resolution}, seed={self.seed})"
        )

    # ---- scoring ----------------------------------------------------------------------------------------
    def _autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def encode(self, pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``(B, H, W, 3)`` uint8 -> clean model inputs x ``(B, C, h, w)`` float32 on the scorer's device.

        Pixel space: the image in ``[-1, 1]``; latent space: ``(latent_dist.mean - shift) * scaling_factor``.
        """
        mean, _ = self.encode_posterior(pixels)
        if self.vae is None:
            return mean
        return scale_latents(mean, self.scaling_factor, self.shift_factor)

    def encode_posterior(self, pixels: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, H, W, 3)`` uint8 (numpy, or a tensor already on the device) -> the raw VAE posterior
        ``(mean, std)``, each ``(B, C, h, w)`` float32 on the scorer's device (pixel space: the image in
        ``[-1, 1]`` and zeros). The VAE runs under the scorer's autocast dtype."""
        x = pixels_to_tensor(pixels).to(self.device)
        if self.vae is None:
            return x, torch.zeros_like(x)
        with torch.inference_mode(), self._autocast():
            mean, std = encode_posterior(self.vae, x)
        return mean.float(), std.float()

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
        if not isinstance(pixels, torch.Tensor):
            pixels = np.asarray(pixels)
        r = self.resolution
        is_uint8 = pixels.dtype == (torch.uint8 if isinstance(pixels, torch.Tensor) else np.uint8)
        if not is_uint8 or pixels.ndim != 4 or tuple(pixels.shape[1:]) != (r, r, 3):
            raise ValueError(
                f"pixels must be a (B, {r}, {r}, 3) uint8 array (preprocess_images at the scorer's resolution), "
                f"got {pixels.dtype} {tuple(pixels.shape)}"
            )
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
        if len(labels) != len(x0):
            raise ValueError(f"got {len(x0)} images but {len(labels)} labels")
        keys = np.asarray(keys, dtype=np.uint64)
        if len(keys) != len(x0):
            raise ValueError(f"got {len(x0)} images but {len(keys)} keys")
        expected = (self.channels, self.latent_size, self.latent_size)
        if x0.ndim != 4 or tuple(x0.shape[1:]) != expected:
            raise ValueError(f"x0 must have shape (B, {expected}), got {tuple(x0.shape)}")
        probed = probe and self.probe is not None and self.num_draws == 1
        mask = (
            self.probe_mask(labels, keys) if probed and len(x0) else (np.zeros(0, bool) if probed else None)
        )
        return self.monte_carlo.score(
            self._denoise, self.adapter, self._on_device(x0), self._conditions(labels), keys, mask
        )

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
        return self.monte_carlo.draw_errors(
            self._denoise,
            self.adapter,
            self._on_device(x0),
            self._conditions(labels),
            np.asarray(keys),
            draws,
        )

    def _on_device(self, x0: torch.Tensor) -> torch.Tensor:
        if self.model.training:  # a caller may have switched it back: label dropout must stay off
            self.model.eval()
        return x0.to(self.device)

    def _conditions(self, labels: Any) -> torch.Tensor:
        return torch.as_tensor(np.asarray(labels), device=self.device)

    def _denoise(self, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The model's comparable prediction for ``x_t`` at ``t`` given class ``labels`` (float32)."""
        param_dtype = next(self.model.parameters()).dtype
        with self._autocast():
            out = self.model(
                x_t.to(param_dtype), timestep=self.adapter.model_timesteps(t), class_labels=labels
            )
        return model_prediction(out, self.channels).float()

    def __call__(
        self, batch: Mapping[str, Any], indices: Sequence[int] | None = None
    ) -> dict[str, np.ndarray]:
        """Score one batch of rows (a ``datasets`` batched map function; use ``with_indices=True``).

        Args:
            batch: a batch dict with ``image_column`` (PIL images, ``{"bytes", "path"}`` dicts from
                ``Image(decode=False)``, bytes or paths) and ``label_column`` (integers).
            indices: the rows' indices, used in error messages.

        Returns:
            the columns of :attr:`features`: ``{"difficulty": float32 (B,)}`` [+ ``"difficulty_per_timestep"``
            float32 ``(B, T)``] [+ ``"difficulty_halves"`` float32 ``(B, T, 2)``]. ``difficulty`` is the raw
            mean error here, also with ``standardize_timesteps`` (which :meth:`apply` applies afterwards).
        """
        return score_rows(self, batch, indices)

    def finish(self, per_timestep: np.ndarray | None, halves: np.ndarray | None, labels: np.ndarray):
        """:func:`~d2c_hf.selection.score_dataset.finish_scores` with this scorer's options."""
        return finish_scores(per_timestep, halves, labels, self.config)

    def note_upsampled(self, count: int, total: int, rows: Sequence[int]) -> None:
        """Count ``count`` upsampled images of ``total`` (rows ``rows``) and warn once (unless deferred)."""
        if not count:
            return
        self.num_upsampled += count
        if self.defer_upsampling_warning or self._warned_upsampling:
            return
        self._warned_upsampling = True
        logger.warning(
            "%d of %d images in rows %s..%s are smaller than %dpx and are upsampled (bicubic) before scoring; "
            "further ones are counted in scorer.num_upsampled",
            count,
            total,
            rows[0],
            rows[-1],
            self.resolution,
        )

    # ---- datasets ---------------------------------------------------------------------------------------
    def apply(self, dataset: Any, **map_kwargs: Any) -> Any:
        """Add ``difficulty`` to a ``Dataset`` (or ``IterableDataset``): checks, then one ``map``.

        Checks the columns and labels first (``prepare_dataset``: missing columns, label types, empty
        dataset, ``None``, negative labels, labels ``>= num_classes`` naming the row), before any
        forward pass. The image column is cast to ``Image(decode=False)`` for the map so that this code
        decodes every image and names the row of an undecodable one; it is restored afterwards.

        For a ``Dataset`` this is ``map(self, batched=True, with_indices=True, features=<existing +
        difficulty>, new_fingerprint=hash(previous fingerprint, scorer.fingerprint), desc="Scoring
        difficulty", batch_size=scorer.batch_size)``, so re-running on a disk-backed dataset loads the
        cached result. ``map_kwargs`` (``num_proc``, ``batch_size``, ``cache_file_name``,
        ``load_from_cache_file``, ...) are passed on. An ``IterableDataset`` is mapped lazily
        (schema checks only; rows are checked as they stream).

        Returns:
            the dataset with the new column(s), in its original format.
        """
        return apply_scorer(self, dataset, **map_kwargs)

    @property
    def output_columns(self) -> list[str]:
        """The columns :meth:`apply` adds to a map-style dataset: ``difficulty`` [+ ``difficulty_per_timestep``
        with ``return_per_timestep``]."""
        return [DIFFICULTY_COLUMN, *([PER_TIMESTEP_COLUMN] if self.return_per_timestep else [])]

    def map_fingerprint(self, dataset: Any) -> str:
        """The ``new_fingerprint`` of ``apply``: hash of the input's fingerprint and :attr:`fingerprint`."""
        from datasets.fingerprint import Hasher

        return Hasher.hash([dataset._fingerprint, self.fingerprint, self.probe])

    def check_label_range(self, dataset: Any, dataset_classes: int) -> None:
        """Refuse a dataset whose labels or class count exceed the scorer's classes, naming the row."""
        check_label_range(self, dataset, dataset_classes)
