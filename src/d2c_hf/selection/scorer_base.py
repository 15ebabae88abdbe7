"""Select, what every difficulty scorer shares, whatever conditions its model: the estimator, the space, the
placement and the ``datasets`` plumbing.

A difficulty scorer is a frozen denoiser, a space (pixels or a VAE's latents), an adapter (how ``x_t`` is built
and what the output is compared with, :mod:`.denoisers`) and the Monte-Carlo estimate over common random numbers
(:mod:`.monte_carlo`, :mod:`.noise`). What differs between scorers is only how a row conditions the model:

* :class:`~d2c_hf.selection.scorer.DifficultyScorer`: the row's class label (DiT, SiT, class-conditional UNets);
* :class:`~d2c_hf.selection.text_scorer.TextDifficultyScorer`: the row's caption, encoded by the scorer's own
  text encoder (Stable Diffusion, PixArt, SD3).

:class:`ScorerBase` holds the rest once. A subclass implements :meth:`ScorerBase.score_chunk` (one batch of
preprocessed images and their conditioning values -> scores), :meth:`ScorerBase.condition_values` (the values a
batch dict holds), the dataset hooks :meth:`ScorerBase.prepare` and :meth:`ScorerBase.dataset_groups`, the
``_denoise`` call, and its part of :attr:`ScorerBase.config`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..utils.checks import check_positive_int, check_seed
from ..utils.hub import model_provenance, resolve_device, resolve_dtype
from ..utils.images import pixels_to_tensor
from ..utils.signatures import check_option_names, keyword_options
from ..utils.vae import encode_posterior, latent_scale, load_vae, scale_latents
from .denoisers import PREDICTION_TYPES, SpaceContract, make_adapter, model_prediction
from .estimator import DEFAULT_PROBE_ROWS, MIDPOINTS, PROBE_CLASSES, STRATIFIED, check_estimator
from .monte_carlo import MonteCarlo, ScoredBatch
from .noise import probe_draws
from .reliability import DEFAULT_WARN_RELIABILITY, Reliability, Standardization, check_threshold
from .score_dataset import (
    DIFFICULTY_COLUMN,
    HALVES_COLUMN,
    PER_TIMESTEP_COLUMN,
    apply_scorer,
    finish_scores,
    score_rows,
)

logger = logging.getLogger(__name__)

#: Bump when the scores change for the same config (invalidates ``datasets`` caches).
FINGERPRINT_VERSION = 1


def check_scorer_options(options: Mapping[str, Any], init: Any, where: str, drop: Sequence[str] = ()) -> None:
    """The cheap checks of a scorer's ``from_pretrained`` options (names, estimator, thresholds, batch, seed,
    prediction type, dtype), before anything is loaded: ``init`` is the constructor whose keyword-only
    options (and defaults) apply."""
    check_option_names(options, init, where, drop=drop)
    given = {p.name: p.default for p in keyword_options(init)} | dict(options)
    check_estimator(
        *(given[k] for k in ("num_timesteps", "timestep_grid", "num_draws", "antithetic")),
        given["reliability_probe"],
    )
    check_threshold(given["warn_reliability"], "warn_reliability")
    check_positive_int(given["batch_size"], "batch_size")
    if given["max_forward_batch"] is not None:
        check_positive_int(given["max_forward_batch"], "max_forward_batch")
    check_seed(given["seed"])
    if given.get("prediction_type") is not None and given["prediction_type"] not in PREDICTION_TYPES:
        raise ValueError(
            f"prediction_type must be one of {PREDICTION_TYPES} or None, got {given['prediction_type']!r}"
        )
    resolve_dtype(given["dtype"], torch.device("cpu"))


class ScorerBase:
    """The estimator, space and placement of a difficulty scorer (see the module docstring).

    Args:
        model: the loaded denoiser (put in eval mode and moved to ``device``).
        vae: a loaded ``AutoencoderKL`` (latent space) or ``None`` (pixel space).
        contract: the space the model scores in (:func:`~.denoisers.read_space`).
        scheduler: DDPM models: a diffusers scheduler or config giving the betas (``None`` = DiT's schedule).
        timestep_scale: flow models: what ``t`` in ``[0, 1]`` is multiplied by for the model (1 for SiT,
            ``num_train_timesteps`` for SD3).
        the other keyword arguments: see :class:`~d2c_hf.selection.scorer.DifficultyScorer`.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        vae: Any,
        contract: SpaceContract,
        *,
        scheduler: Any = None,
        timestep_scale: float = 1.0,
        num_timesteps: int | None = None,
        timestep_grid: str | Sequence[float] = MIDPOINTS,
        num_draws: int = 1,
        antithetic: bool = False,
        standardize_timesteps: bool = False,
        reliability_probe: int = DEFAULT_PROBE_ROWS,
        warn_reliability: float | None = DEFAULT_WARN_RELIABILITY,
        seed: int = 0,
        batch_size: int = 32,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
        image_column: str = "image",
        key_column: str | None = None,
        return_per_timestep: bool = False,
        max_forward_batch: int | None = None,
    ) -> None:
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
        self.image_column, self.key_column = image_column, key_column
        self.return_per_timestep = bool(return_per_timestep)

        # ---- the space: channels, size, prediction type (denoisers.read_space) ---------------------
        self.prediction_type = contract.prediction_type
        self.channels, self.learned_sigma = contract.channels, contract.learned_sigma
        self.factor = contract.factor
        self.resolution, self.latent_size = contract.resolution, contract.latent_size

        # ---- placement ------------------------------------------------------------------------------
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.model = model.eval().to(self.device)  # eval: no label / caption dropout
        self.vae = load_vae(vae).to(self.device) if vae is not None else None
        self.scaling_factor, self.shift_factor = latent_scale(self.vae)
        self.adapter = make_adapter(
            self.prediction_type, self.num_timesteps, self.timestep_grid, scheduler, timestep_scale
        )
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

    # ---- description ----------------------------------------------------------------------------------
    @property
    def timesteps(self) -> list[float] | list[int]:
        """The timestep grid as the adapter gives it (ints for DDPM models, floats in [0, 1] for flow)."""
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
        [+ ``difficulty_halves`` ``Array2D((T, 2), "float32")`` when :attr:`tracks_reliability`] [+ the
        subclass's :attr:`extra_features`]. :meth:`apply` keeps ``difficulty_per_timestep`` only with
        ``return_per_timestep`` and drops ``difficulty_halves`` after computing the reliability (map-style
        datasets)."""
        from datasets import Array2D, Features, List, Value

        columns = {DIFFICULTY_COLUMN: Value("float32")}
        if self.return_per_timestep or self.standardize_timesteps:
            columns[PER_TIMESTEP_COLUMN] = List(Value("float32"), length=self.num_timesteps)
        if self.tracks_reliability:
            columns[HALVES_COLUMN] = Array2D((self.num_timesteps, 2), "float32")
        columns.update(self.extra_features)
        return Features(columns)

    @property
    def extra_features(self) -> dict[str, Any]:
        """Columns a subclass's :meth:`score_chunk` adds to every batch (none here)."""
        return {}

    @property
    def forward_passes_per_image(self) -> int:
        """Forward passes of the estimate per image: ``T * num_draws * (2 if antithetic else 1)``."""
        return self.num_timesteps * self.num_draws * (2 if self.antithetic else 1)

    def plan_probe(self, num_rows: int | None, num_classes: int | None) -> dict[str, Any] | None:
        """Plan the reliability probe of a one-draw score over ``num_rows`` rows of ``num_classes`` classes
        (``None``: groups that are not known before scoring, e.g. a captioned dataset's).

        The probe re-scores about ``reliability_probe`` rows with a fresh draw (draw 1): the rows of up to
        8 evenly spaced classes (every row when the classes are not known) whose ``(seed, key)`` hash falls
        below ``fraction = reliability_probe * C / (K * num_rows)`` (``reliability_probe / num_rows``), so a
        row's membership depends on its key only (not on order or sharding). Its cost is ``T`` forward passes
        per probed row. No probe with ``num_draws >= 2`` (the split halves are free), with
        ``reliability_probe=0`` or an unknown ``num_rows``.

        Returns (and stores in :attr:`probe`, recorded in :attr:`config`) the plan, or None.
        """
        self.probe = None
        if self.num_draws >= 2 or not self.reliability_probe or not num_rows:
            return None
        if num_classes is None:
            fraction = min(1.0, self.reliability_probe / int(num_rows))
            self.probe = {"rows": self.reliability_probe, "classes": None, "fraction": fraction}
            return self.probe
        if num_classes < 1:
            return None
        k = min(int(num_classes), PROBE_CLASSES)
        classes = sorted({(j * int(num_classes)) // k for j in range(k)})
        fraction = min(1.0, self.reliability_probe * int(num_classes) / (len(classes) * int(num_rows)))
        self.probe = {"rows": self.reliability_probe, "classes": classes, "fraction": fraction}
        return self.probe

    def probe_mask(self, labels: np.ndarray | None, keys: np.ndarray) -> np.ndarray:
        """``(B,)`` bool: the rows of a batch that the planned probe re-scores (``labels`` only matter when
        the probe is restricted to classes)."""
        keys = np.asarray(keys)
        if self.probe is None or len(keys) == 0:
            return np.zeros(len(keys), bool)
        if self.probe["classes"] is None:
            in_class = np.ones(len(keys), bool)
        else:
            in_class = np.isin(np.asarray(labels), self.probe["classes"])
        return in_class & (probe_draws(keys, self.seed) < self.probe["fraction"])

    def _conditioning_config(self) -> dict[str, Any]:
        """The subclass's record of what conditions the model (placed after ``learned_sigma``)."""
        return {}

    def _column_config(self) -> dict[str, Any]:
        """The subclass's input columns besides the image (placed after ``image_column``)."""
        return {}

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
            **self._conditioning_config(),
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
            **self._column_config(),
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

    # ---- the space --------------------------------------------------------------------------------------
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

    def check_pixels(self, pixels: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Refuse anything but ``(B, resolution, resolution, 3)`` uint8 (numpy or a tensor)."""
        if not isinstance(pixels, torch.Tensor):
            pixels = np.asarray(pixels)
        r = self.resolution
        is_uint8 = pixels.dtype == (torch.uint8 if isinstance(pixels, torch.Tensor) else np.uint8)
        if not is_uint8 or pixels.ndim != 4 or tuple(pixels.shape[1:]) != (r, r, 3):
            raise ValueError(
                f"pixels must be a (B, {r}, {r}, 3) uint8 array (preprocess_images at the scorer's resolution), "
                f"got {pixels.dtype} {tuple(pixels.shape)}"
            )
        return pixels

    def check_inputs(self, x0: torch.Tensor, count: int, what: str, keys: Any) -> np.ndarray:
        """Check a batch's clean inputs against ``count`` conditioning values and the keys; returns the keys
        as uint64."""
        if count != len(x0):
            raise ValueError(f"got {len(x0)} images but {count} {what}")
        keys = np.asarray(keys, dtype=np.uint64)
        if len(keys) != len(x0):
            raise ValueError(f"got {len(x0)} images but {len(keys)} keys")
        expected = (self.channels, self.latent_size, self.latent_size)
        if x0.ndim != 4 or tuple(x0.shape[1:]) != expected:
            raise ValueError(f"x0 must have shape (B, {expected}), got {tuple(x0.shape)}")
        return keys

    # ---- the estimate -------------------------------------------------------------------------------------
    def score_conditioned(
        self, x0: torch.Tensor, conditions: Any, keys: np.ndarray, probe: np.ndarray | None
    ) -> ScoredBatch:
        """:meth:`MonteCarlo.score <d2c_hf.selection.monte_carlo.MonteCarlo.score>` with this scorer's
        denoiser and adapter: ``conditions`` holds one entry per row (a tensor or a tuple of tensors)."""
        return self.monte_carlo.score(
            self._denoise, self.adapter, self._on_device(x0), conditions, keys, probe
        )

    def errors_conditioned(
        self, x0: torch.Tensor, conditions: Any, keys: np.ndarray, draws: Sequence[int] | range
    ) -> torch.Tensor:
        """:meth:`MonteCarlo.draw_errors <d2c_hf.selection.monte_carlo.MonteCarlo.draw_errors>` with this
        scorer's denoiser and adapter: ``(B, T, len(draws))`` float32 on the scorer's device."""
        return self.monte_carlo.draw_errors(
            self._denoise, self.adapter, self._on_device(x0), conditions, np.asarray(keys), draws
        )

    def _on_device(self, x0: torch.Tensor) -> torch.Tensor:
        if self.model.training:  # a caller may have switched it back: label / caption dropout must stay off
            self.model.eval()
        return x0.to(self.device)

    def _call_model(self, x_t: torch.Tensor, t: torch.Tensor, condition: Any) -> Any:  # pragma: no cover
        """The model's raw output for ``x_t`` (in the weights' dtype) at the adapter's model timesteps ``t``."""
        raise NotImplementedError

    def _denoise(self, x_t: torch.Tensor, t: torch.Tensor, condition: Any) -> torch.Tensor:
        """The model's comparable prediction for ``x_t`` at ``t`` given ``condition`` (float32)."""
        param_dtype = next(self.model.parameters()).dtype
        with self._autocast():
            out = self._call_model(x_t.to(param_dtype), self.adapter.model_timesteps(t), condition)
        return model_prediction(out, self.channels).float()

    # ---- one batch of rows (what the datasets map and the sharded runner call) ---------------------------
    def condition_values(self, batch: Mapping[str, Any]) -> list[Any]:  # pragma: no cover - abstract
        """The conditioning values of a batch dict (labels, captions), one per row."""
        raise NotImplementedError

    def score_chunk(
        self, pixels: np.ndarray, values: Sequence[Any], keys: np.ndarray, rows: Sequence[int]
    ) -> tuple[ScoredBatch, dict[str, np.ndarray]]:  # pragma: no cover - abstract
        """Score preprocessed images ``(B, S, S, 3)`` uint8 with their conditioning ``values`` (checked,
        naming ``rows``): the scores and the :attr:`extra_features` columns of the batch."""
        raise NotImplementedError

    def __call__(
        self, batch: Mapping[str, Any], indices: Sequence[int] | None = None
    ) -> dict[str, np.ndarray]:
        """Score one batch of rows (a ``datasets`` batched map function; use ``with_indices=True``).

        Args:
            batch: a batch dict with ``image_column`` (PIL images, ``{"bytes", "path"}`` dicts from
                ``Image(decode=False)``, bytes or paths) and the conditioning column(s).
            indices: the rows' indices, used in error messages.

        Returns:
            the columns of :attr:`features`: ``{"difficulty": float32 (B,)}`` [+ ``"difficulty_per_timestep"``
            float32 ``(B, T)``] [+ ``"difficulty_halves"`` float32 ``(B, T, 2)``] [+ extra columns].
            ``difficulty`` is the raw mean error here, also with ``standardize_timesteps`` (which :meth:`apply`
            applies afterwards).
        """
        return score_rows(self, batch, indices)

    def finish(self, per_timestep: np.ndarray | None, halves: np.ndarray | None, labels: np.ndarray):
        """:func:`~d2c_hf.selection.score_dataset.finish_scores` with this scorer's options (``labels``: the
        classes or groups the reliability is computed within)."""
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
    def prepare(self, dataset: Any, is_map_style: bool) -> Any:  # pragma: no cover - abstract
        """Check the dataset's columns before any forward pass (and plan the probe); returns the dataset to
        map (e.g. with string labels encoded)."""
        raise NotImplementedError

    def dataset_groups(self, dataset: Any, scores: Any) -> np.ndarray:  # pragma: no cover - abstract
        """``(N,)`` int64: the classes or groups of a scored map-style dataset (``scores``: the map's new
        columns), within which the reliability is computed."""
        raise NotImplementedError

    def finish_columns(self, out: Any, groups: np.ndarray) -> Any:
        """The map's result after the reliability: add or drop the subclass's columns (nothing here)."""
        return out

    def apply(self, dataset: Any, **map_kwargs: Any) -> Any:
        """Add ``difficulty`` to a ``Dataset`` (or ``IterableDataset``): checks, then one ``map``.

        Checks the columns first (:meth:`prepare`: missing columns, bad labels or captions naming the row),
        before any forward pass. The image column is cast to ``Image(decode=False)`` for the map so that this
        code decodes every image and names the row of an undecodable one; it is restored afterwards.

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

    @property
    def helper_columns(self) -> list[str]:
        """Columns of :attr:`features` that :meth:`apply` drops from a map-style dataset once used."""
        return [c for c in (HALVES_COLUMN, PER_TIMESTEP_COLUMN) if c not in self.output_columns]

    def map_fingerprint(self, dataset: Any) -> str:
        """The ``new_fingerprint`` of ``apply``: hash of the input's fingerprint and :attr:`fingerprint`."""
        from datasets.fingerprint import Hasher

        return Hasher.hash([dataset._fingerprint, self.fingerprint, self.probe])


__all__ = ["FINGERPRINT_VERSION", "ScorerBase", "check_scorer_options"]
