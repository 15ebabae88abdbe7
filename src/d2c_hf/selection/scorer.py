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
import os
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from ..data.inputs import check_labels
from ..utils.checks import check_positive_int, check_seed
from ..utils.hub import (
    check_fork_safe,
    model_provenance,
    resolve_device,
    resolve_dtype,
)
from ..utils.images import pixels_to_tensor, preprocess_images
from ..utils.spaces import AUTO, DEFAULT_VAE, normalise_vae
from ..utils.vae import (
    downsample_factor,
    encode_posterior,
    latent_channels,
    latent_scale,
    load_vae,
    scale_latents,
)
from .denoisers import (
    NUM_CLASSES_KEYS,
    PREDICTION_TYPES,
    EpsilonAdapter,
    FlowAdapter,
    check_denoiser,
    config_value,
    detect_prediction_type,
    load_model,
    model_prediction,
)
from .estimator import (
    DEFAULT_PROBE_ROWS,
    MIDPOINTS,
    PROBE_CLASSES,
    STRATIFIED,
    check_estimator,
)
from .noise import pixel_keys, probe_draws, sample_bin_offsets, sample_noise, value_keys
from .reliability import (
    DEFAULT_WARN_RELIABILITY,
    Reliability,
    Standardization,
    check_reliability,
    check_threshold,
    not_computable,
    reliability_from_halves,
)

logger = logging.getLogger(__name__)

DIFFICULTY_COLUMN = "difficulty"
PER_TIMESTEP_COLUMN = "difficulty_per_timestep"
#: Bump when the scores change for the same config (invalidates ``datasets`` caches).
FINGERPRINT_VERSION = 1
SCORER_INFO_FILE = "d2c_scorer.json"
HALVES_COLUMN = "difficulty_halves"


# --------------------------------------------------------------------------------------
# the scorer
# --------------------------------------------------------------------------------------


def finish_scores(
    per_timestep: np.ndarray | None, halves: np.ndarray | None, labels: np.ndarray, config: Mapping[str, Any]
):
    """The dataset-level step after every row is scored: the per-timestep standardisation (with
    ``standardize_timesteps``) and the reliability.

    Args:
        per_timestep: ``(N, T)`` raw per-timestep errors (needed with ``standardize_timesteps``).
        halves: ``(N, T, 2)`` what :meth:`score_batch` returned, or ``None``.
        labels: ``(N,)`` class ids.
        config: the scorer's :attr:`DifficultyScorer.config` (``num_draws``, ``antithetic``,
            ``standardize_timesteps``, ``reliability_probe``, ``num_timesteps``): a merge of score shards
            has only the recorded config.

    Returns:
        ``(difficulty or None, standardization or None, reliability)``: the standardised scores when
        ``standardize_timesteps`` (else ``None``: the raw mean stands), the statistics used, and the
        :class:`~d2c_hf.selection.reliability.Reliability` report (not computable, with the reason, when nothing
        tracked it).
    """
    stats = difficulty = None
    if bool(config.get("standardize_timesteps")):
        if per_timestep is None:
            raise ValueError("standardize_timesteps needs the per-timestep errors of every row")
        stats = Standardization.fit(per_timestep)
        difficulty = stats.apply(per_timestep)
    details: dict[str, Any] = {
        "num_timesteps": int(config["num_timesteps"]),
        "antithetic": bool(config.get("antithetic")),
        "standardized": bool(config.get("standardize_timesteps")),
    }
    if halves is None or len(halves) == 0:
        reason = (
            "one noise draw per timestep and no probe: score with num_draws >= 2 (split halves, no extra "
            "forward pass) or reliability_probe > 0"
        )
        if halves is not None:
            reason = "no rows"
        report = not_computable(reason, num_draws=int(config.get("num_draws", 1)), **details)
    else:
        probed = int(config.get("num_draws", 1)) == 1
        probe = (
            config.get("reliability_probe") if isinstance(config.get("reliability_probe"), Mapping) else {}
        )
        if probed:
            details.update(
                probe_rows=probe.get("rows"),
                probe_classes=probe.get("classes"),
                extra_forward_passes=int(np.isfinite(halves[:, 0, 1]).sum())
                * int(config["num_timesteps"])
                * (2 if bool(config.get("antithetic")) else 1),
            )
        report = reliability_from_halves(
            halves,
            labels,
            num_draws=int(config.get("num_draws", 1)),
            standardization=stats,
            probe=probed,
            details=details,
        )
    return difficulty, stats, report


class ScoredBatch(NamedTuple):
    """One batch's scores: ``difficulty`` ``(B,)`` and ``per_timestep`` ``(B, T)`` float32 (means over the
    draws), and ``halves`` ``(B, T, 2)`` float32 or ``None`` (what the reliability needs; see
    :meth:`DifficultyScorer.score_batch`)."""

    difficulty: np.ndarray
    per_timestep: np.ndarray
    halves: np.ndarray | None


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

        # ---- the model's contract: channels, classes, size, prediction type ------------------------
        if prediction_type is None:
            prediction_type = detect_prediction_type(model)
        elif prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"prediction_type must be one of {PREDICTION_TYPES} or None, got {prediction_type!r}"
            )
        self.prediction_type = prediction_type
        model_name = type(model).__name__
        in_channels = config_value(model, "in_channels")
        if in_channels is None:
            raise ValueError(
                f"{model_name} has no config.in_channels; DifficultyScorer needs a diffusers-style config"
            )
        self.channels = int(in_channels)
        expected = latent_channels(vae)
        if self.channels != expected:
            if vae is None:
                space, hint = (
                    "pixel space (3 channels)",
                    "pass vae=... (an AutoencoderKL with that many latent channels)",
                )
            else:
                space = f"the VAE's latent space ({expected} channels)"
                hint = "pass the VAE the model was trained with, or vae='pixel' for a pixel-space model"
            raise ValueError(
                f"{model_name} takes {self.channels} input channels but scores in {space}; {hint}"
            )
        out_channels = config_value(model, "out_channels")
        if out_channels is not None and int(out_channels) not in (self.channels, 2 * self.channels):
            raise ValueError(
                f"{model_name} has out_channels={out_channels} for in_channels={self.channels}; expected "
                f"{self.channels} or {2 * self.channels} (learned sigma)"
            )
        self.learned_sigma = out_channels is not None and int(out_channels) == 2 * self.channels
        num_classes = config_value(model, *NUM_CLASSES_KEYS)
        if num_classes is None:
            raise ValueError(
                f"{model_name} is not class-conditional: its config has none of {', '.join(NUM_CLASSES_KEYS)}. "
                "The difficulty is the denoising loss given each image's label, so the scorer must take class "
                "labels: use a class-conditional DiT/SiT, a UNet2DModel with num_class_embeds, or train one on "
                "your data with train_scorer"
            )
        self.num_classes = int(num_classes)

        self.factor = downsample_factor(vae)
        sample_size = config_value(model, "sample_size", "input_size")
        if isinstance(sample_size, (list, tuple)):
            sample_size = sample_size[0]
        if resolution is None:
            if sample_size is None:
                raise ValueError(f"{model_name} has no config.sample_size; pass resolution=...")
            resolution = int(sample_size) * self.factor
        resolution = check_positive_int(resolution, "resolution")
        if resolution % self.factor:
            raise ValueError(
                f"resolution={resolution} is not a multiple of the VAE's downsampling factor {self.factor}"
            )
        if sample_size is not None and resolution // self.factor != int(sample_size):
            raise ValueError(
                f"resolution={resolution} gives {resolution // self.factor}x{resolution // self.factor} model inputs "
                f"but {model_name} was built for {sample_size}x{sample_size} (resolution "
                f"{int(sample_size) * self.factor}); pass resolution={int(sample_size) * self.factor} or None"
            )
        self.resolution = resolution
        self.latent_size = resolution // self.factor

        # ---- placement ------------------------------------------------------------------------------
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.model = model.eval().to(self.device)  # eval: no label dropout
        self.vae = load_vae(vae).to(self.device) if vae is not None else None
        self.scaling_factor, self.shift_factor = latent_scale(self.vae)
        if prediction_type == "epsilon":
            self.adapter: EpsilonAdapter | FlowAdapter = EpsilonAdapter(
                self.num_timesteps, scheduler, self.timestep_grid
            )
        else:
            self.adapter = FlowAdapter(self.num_timesteps, self.timestep_grid)
        self.adapter.to(self.device)
        self._model_provenance = model_provenance(model)
        self._vae_provenance = model_provenance(self.vae) if self.vae is not None else None
        self.num_upsampled = 0  # images smaller than `resolution` seen by this instance (upsampled)
        self._warned_upsampling = False
        self._defer_upsampling_warning = False

    # ---- construction ---------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        model: Any,
        vae: Any = AUTO,
        *,
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
    ) -> DifficultyScorer:
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
            other arguments: see the class docstring.
        """
        # cheap checks first: nothing is loaded for an argument that would be refused anyway
        check_estimator(num_timesteps, timestep_grid, num_draws, antithetic, reliability_probe)
        check_threshold(warn_reliability, "warn_reliability")
        check_positive_int(batch_size, "batch_size")
        if max_forward_batch is not None:
            check_positive_int(max_forward_batch, "max_forward_batch")
        check_seed(seed)
        if prediction_type is not None and prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"prediction_type must be one of {PREDICTION_TYPES} or None, got {prediction_type!r}"
            )
        resolve_dtype(dtype, torch.device("cpu"))
        vae = normalise_vae(vae)
        scheduler = None
        repo: str | None = None
        repo_has_vae = False
        if isinstance(model, (str, os.PathLike)):
            repo = str(model)
            model, scheduler, repo_has_vae = load_model(repo)
        elif not isinstance(model, torch.nn.Module):
            raise TypeError(
                f"model must be a Hub id, a local folder or a loaded model, got {type(model).__name__}"
            )
        check_denoiser(model)
        if isinstance(vae, str) and vae == AUTO:
            if repo_has_vae:
                vae_model = load_vae(repo)
            elif int(config_value(model, "in_channels") or 3) == 3:
                vae_model = None  # a pixel-space model
            else:
                vae_model = load_vae(DEFAULT_VAE)
        else:
            vae_model = load_vae(vae)
        scheduler_class = str((scheduler or {}).get("_class_name", ""))
        flow_scheduler = scheduler_class.startswith("FlowMatch")
        scheduled = (scheduler or {}).get("prediction_type")
        if scheduled not in (None, "epsilon") and not flow_scheduler:
            raise ValueError(
                f"the scorer's scheduler declares prediction_type={scheduled!r}; DifficultyScorer scores epsilon "
                "(noise) and flow (velocity) models only"
            )
        if prediction_type is None:
            try:
                prediction_type = detect_prediction_type(model)
            except ValueError:
                if not flow_scheduler:
                    raise
                prediction_type = "flow"  # an unknown model class shipped with a flow-matching scheduler
        if prediction_type == "flow" or flow_scheduler:
            scheduler = None  # the DDPM betas apply to epsilon models only
        return cls(
            model,
            vae_model,
            scheduler=scheduler,
            num_timesteps=num_timesteps,
            timestep_grid=timestep_grid,
            num_draws=num_draws,
            antithetic=antithetic,
            standardize_timesteps=standardize_timesteps,
            reliability_probe=reliability_probe,
            warn_reliability=warn_reliability,
            seed=seed,
            resolution=resolution,
            batch_size=batch_size,
            dtype=dtype,
            device=device,
            prediction_type=prediction_type,
            image_column=image_column,
            label_column=label_column,
            key_column=key_column,
            return_per_timestep=return_per_timestep,
            max_forward_batch=max_forward_batch,
        )

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
        """Score a batch and keep what the reliability needs.

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
        steps, draws = self.num_timesteps, self.num_draws
        track = draws >= 2 or (probe and self.probe is not None)
        if len(x0) == 0:
            empty = np.zeros((0, steps), np.float32)
            return ScoredBatch(
                np.zeros(0, np.float32), empty, np.zeros((0, steps, 2), np.float32) if track else None
            )
        errors = self.draw_errors(x0, labels, keys, range(draws))  # (B, T, D)
        per_timestep = errors.mean(dim=2) if draws > 1 else errors[:, :, 0]
        difficulty = per_timestep.mean(dim=1)
        halves = None
        if draws >= 2:
            half = draws // 2
            halves = (
                torch.stack(
                    [errors[:, :, 0 : 2 * half : 2].mean(dim=2), errors[:, :, 1 : 2 * half : 2].mean(dim=2)],
                    dim=2,
                )
                .cpu()
                .numpy()
            )
        elif track:
            halves = np.full((len(x0), steps, 2), np.nan, np.float32)
            halves[:, :, 0] = per_timestep.cpu().numpy()
            mask = self.probe_mask(labels, keys)
            if mask.any():
                where = torch.as_tensor(np.flatnonzero(mask), device=x0.device)
                fresh = self.draw_errors(x0[where], labels[mask], keys[mask], [draws])  # draw 1: fresh noise
                halves[mask, :, 1] = fresh[:, :, 0].cpu().numpy()
        return ScoredBatch(difficulty.cpu().numpy(), per_timestep.cpu().numpy(), halves)

    def draw_errors(
        self,
        x0: torch.Tensor,
        labels: np.ndarray,
        keys: np.ndarray,
        draws: Sequence[int] | range,
    ) -> torch.Tensor:
        """The per-(sample, timestep, draw) denoising errors.

        For draw d the noise is :func:`sample_noise` ``(..., draw=d)`` (with ``antithetic``, also its
        negation: the error is the mean of the two), and the timesteps are the grid, or with
        ``timestep_grid="stratified"`` one per bin from :func:`sample_bin_offsets` ``(..., draw=d)``. All
        ``B * T * S`` pairs (S = draws, times 2 if antithetic) go through the model in
        ``ceil(B * T * S / max_forward_batch)`` calls; one draw without antithetic builds exactly the
        pairs, in the same order, as a one-draw score always has.

        Returns:
            ``(B, T, len(draws))`` float32 on the scorer's device.
        """
        draws = [int(d) for d in draws]
        batch, steps = len(x0), self.num_timesteps
        signs = 2 if self.antithetic else 1
        per_sample = len(draws) * signs * steps  # pairs per sample, ordered (draw, sign, timestep)
        if self.model.training:  # a caller may have switched it back: label dropout must stay off
            self.model.eval()
        x0 = x0.to(self.device)
        shape = tuple(x0.shape[1:])
        noise = torch.empty((batch, len(draws), signs, steps, *shape), dtype=torch.float32)
        times = []
        for j, d in enumerate(draws):
            eps = sample_noise(keys, self.seed, steps, shape, draw=d)  # (B, T, C, h, w)
            noise[:, j, 0] = eps
            if signs == 2:
                noise[:, j, 1] = eps.neg()
            if self.timestep_grid == STRATIFIED:
                t = self.adapter.stratified(sample_bin_offsets(keys, self.seed, steps, d))  # (B, T)
            else:
                t = self.adapter.timesteps.cpu().expand(batch, steps)
            times.append(t.unsqueeze(1).expand(batch, signs, steps))
        timesteps = torch.stack(times, dim=1).reshape(batch * per_sample).to(self.device)
        noise = noise.to(self.device).flatten(0, 3)  # (B*S*T, ...), sample-major
        sample = torch.arange(batch, device=self.device).repeat_interleave(per_sample)
        y = torch.as_tensor(labels, device=self.device).repeat_interleave(per_sample)
        param_dtype = next(self.model.parameters()).dtype
        errors = torch.empty(batch * per_sample, dtype=torch.float32, device=self.device)
        chunk = self.max_forward_batch or batch * per_sample
        with torch.inference_mode():
            for start in range(0, batch * per_sample, chunk):
                part = slice(start, start + chunk)
                x, eps, t = x0[sample[part]], noise[part], timesteps[part]
                x_t = self.adapter.interpolate(x, eps, t)
                with self._autocast():
                    out = self.model(
                        x_t.to(param_dtype), timestep=self.adapter.model_timesteps(t), class_labels=y[part]
                    )
                prediction = model_prediction(out, self.channels).float()
                target = self.adapter.target(x, eps)
                errors[part] = (prediction - target).square().mean(dim=(1, 2, 3))
        errors = errors.view(batch, len(draws), signs, steps)
        errors = errors.mean(dim=2) if signs == 2 else errors[:, :, 0]
        return errors.permute(0, 2, 1)  # (B, T, draws)

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
        images = list(batch[self.image_column])
        labels = list(batch[self.label_column])
        rows = list(indices) if indices is not None else list(range(len(images)))
        key_values = list(batch[self.key_column]) if self.key_column else None
        parts: list[ScoredBatch] = []
        for start in range(0, len(images), self.batch_size):
            part = slice(start, start + self.batch_size)
            part_rows = rows[part]
            part_labels = labels[part]
            for label, row in zip(part_labels, part_rows):
                if label is None:
                    raise ValueError(f"column {self.label_column!r} has a missing label (None) at row {row}")
            y = check_labels(np.asarray(part_labels), self.num_classes, self.label_column, rows=part_rows)
            pixels, upsampled = preprocess_images(images[part], self.resolution, rows=part_rows)
            self._note_upsampled(upsampled, len(pixels), part_rows)
            if key_values is None:
                keys = pixel_keys(pixels)
            else:
                keys = value_keys(key_values[part], part_rows, self.key_column)
            parts.append(self.score_batch(self.encode(pixels), y, keys))
        steps = self.num_timesteps
        out = {
            DIFFICULTY_COLUMN: np.concatenate([p.difficulty for p in parts])
            if parts
            else np.zeros(0, np.float32),
        }
        if PER_TIMESTEP_COLUMN in self.features:
            out[PER_TIMESTEP_COLUMN] = (
                np.concatenate([p.per_timestep for p in parts]) if parts else np.zeros((0, steps), np.float32)
            )
        if self.tracks_reliability:
            out[HALVES_COLUMN] = (
                np.concatenate([p.halves for p in parts]) if parts else np.zeros((0, steps, 2), np.float32)
            )
        return out

    def finish(self, per_timestep: np.ndarray | None, halves: np.ndarray | None, labels: np.ndarray):
        """:func:`finish_scores` with this scorer's options."""
        return finish_scores(per_timestep, halves, labels, self.config)

    def _note_upsampled(self, count: int, total: int, rows: Sequence[int]) -> None:
        if not count:
            return
        self.num_upsampled += count
        if self._defer_upsampling_warning or self._warned_upsampling:
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
        from datasets import Dataset, Image, IterableDataset

        from ..data.inputs import prepare_dataset
        from ..utils.columns import column_numpy
        from ..utils.maps import join_columns, map_new_columns

        if not isinstance(dataset, (Dataset, IterableDataset)):
            raise TypeError(f"expected a datasets.Dataset or IterableDataset, got {type(dataset).__name__}")
        for key in ("function", "batched", "with_indices", "features", "input_columns"):
            if key in map_kwargs:
                raise TypeError(f"apply() sets {key!r} itself; do not pass it")
        is_map_style = isinstance(dataset, Dataset)
        dataset, info = prepare_dataset(
            dataset,
            self.image_column,
            self.label_column,
            num_classes=None if is_map_style else self.num_classes,
        )
        features = dataset.features
        if is_map_style:
            self.check_label_range(dataset, info.num_classes)
            self.plan_probe(len(dataset), info.num_classes)
        else:
            if self.standardize_timesteps:
                raise ValueError(
                    "standardize_timesteps needs every row's errors before any score is final, which a lazily "
                    "mapped IterableDataset cannot give: score a Dataset, or stream through `d2c score` / "
                    "condense() (which standardise when the scores are merged)"
                )
            self.probe = None  # a stream's size is unknown; with num_draws >= 2 the halves column stays
        self.reliability = self.standardization = None
        for column in self.features:
            if column in features:
                raise ValueError(
                    f"the dataset already has a {column!r} column; remove it first "
                    f"(dataset.remove_columns({column!r})) to score again"
                )
        if self.key_column is not None and self.key_column not in features:
            raise ValueError(
                f"key_column={self.key_column!r} is not a column of the dataset; columns: {list(features)}"
            )

        image_feature = features[self.image_column]
        raw = dataset.cast_column(self.image_column, Image(decode=False)) if image_feature.decode else dataset
        map_kwargs.setdefault("batch_size", self.batch_size)
        out_features = raw.features.copy()
        out_features.update(self.features)
        if not is_map_style:
            out = raw.map(self, batched=True, with_indices=True, features=out_features, **map_kwargs)
            return out.cast_column(self.image_column, image_feature) if image_feature.decode else out

        check_fork_safe(map_kwargs.get("num_proc"), self.device, "DifficultyScorer.apply")
        original_format = dataset.format
        raw = raw.with_format(None)
        map_kwargs.setdefault("desc", "Scoring difficulty")
        map_kwargs.setdefault("new_fingerprint", self.map_fingerprint(raw))
        seen = self.num_upsampled
        self._defer_upsampling_warning = (map_kwargs.get("num_proc") or 1) <= 1
        try:  # only the new columns are written (no second copy of the images): utils/maps.py
            scores, joined = map_new_columns(raw, self, self.features, **map_kwargs)
        finally:
            self._defer_upsampling_warning = False
        upsampled = self.num_upsampled - seen
        if upsampled:
            logger.warning(
                "%d of %d images were smaller than %dpx and were upsampled (bicubic) before scoring",
                upsampled,
                len(dataset),
                self.resolution,
            )
        labels = column_numpy(raw, self.label_column).astype(np.int64)
        kept = [] if joined else list(raw.column_names)
        out = join_columns(raw, self._finish_dataset(scores, labels, kept), joined)
        if image_feature.decode:
            out = out.cast_column(self.image_column, image_feature)
        if original_format["type"] is not None:
            columns = original_format["columns"]
            out = out.with_format(
                original_format["type"],
                columns=None if columns is None else [*columns, *self.output_columns],
                output_all_columns=original_format["output_all_columns"],
                **original_format["format_kwargs"],
            )
        return out

    @property
    def output_columns(self) -> list[str]:
        """The columns :meth:`apply` adds to a map-style dataset: ``difficulty`` [+ ``difficulty_per_timestep``
        with ``return_per_timestep``]."""
        return [DIFFICULTY_COLUMN, *([PER_TIMESTEP_COLUMN] if self.return_per_timestep else [])]

    def _finish_dataset(self, out: Any, labels: np.ndarray, input_columns: list[str]) -> Any:
        """After the map (``out``: the ``input_columns`` and the added columns): standardise
        (``standardize_timesteps``), measure the reliability, log and warn, drop the helper columns;
        ``difficulty`` keeps its place after the input columns."""
        from datasets import Value
        from datasets.fingerprint import Hasher

        from ..utils.columns import read_fixed_shape

        cpu, steps = torch.device("cpu"), self.num_timesteps
        per_timestep = halves = None
        if PER_TIMESTEP_COLUMN in out.column_names:
            per_timestep = read_fixed_shape(out, PER_TIMESTEP_COLUMN, (steps,), np.float32, cpu).numpy()
        if HALVES_COLUMN in out.column_names:
            halves = read_fixed_shape(out, HALVES_COLUMN, (steps, 2), np.float32, cpu).numpy()
        difficulty, self.standardization, self.reliability = self.finish(per_timestep, halves, labels)
        check_reliability(self.reliability, warn_below=self.warn_reliability, where="DifficultyScorer.apply")
        helpers = [
            c
            for c in (HALVES_COLUMN, PER_TIMESTEP_COLUMN)
            if c in out.column_names and c not in self.output_columns
        ]
        if helpers:
            out = out.remove_columns(helpers)
        if difficulty is not None:  # the standardised score replaces the raw mean
            fingerprint = Hasher.hash([out._fingerprint, "standardized", self.standardization.to_dict()])
            staged = f"{DIFFICULTY_COLUMN}_standardized"  # added first: a table keeps at least one column
            out = out.add_column(staged, difficulty, feature=Value("float32"), new_fingerprint=fingerprint)
            out = out.remove_columns(DIFFICULTY_COLUMN).rename_column(staged, DIFFICULTY_COLUMN)
            out = out.select_columns([*input_columns, *self.output_columns])
        return out

    def map_fingerprint(self, dataset: Any) -> str:
        """The ``new_fingerprint`` of ``apply``: hash of the input's fingerprint and :attr:`fingerprint`."""
        from datasets.fingerprint import Hasher

        return Hasher.hash([dataset._fingerprint, self.fingerprint, self.probe])

    def check_label_range(self, dataset: Any, dataset_classes: int) -> None:
        import pyarrow.compute as pc

        labels = dataset.select_columns([self.label_column]).with_format("arrow")[:][self.label_column]
        too_big = pc.greater_equal(labels, self.num_classes)
        if pc.any(too_big).as_py():
            row = int(pc.index(too_big, True).as_py())
            raise ValueError(
                f"column {self.label_column!r} has label {labels[row].as_py()} at row {row} but the scorer knows "
                f"only {self.num_classes} classes (0..{self.num_classes - 1}); use a scorer trained on these "
                "classes (e.g. train_scorer) or remap the labels"
            )
        if dataset_classes > self.num_classes:
            raise ValueError(
                f"the dataset has {dataset_classes} classes (column {self.label_column!r}) but the scorer knows "
                f"only {self.num_classes}; use a scorer trained on these classes (e.g. train_scorer)"
            )
