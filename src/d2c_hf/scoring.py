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

The timestep grid is fixed and evenly spaced: the midpoints of T equal bins,
``t_i = floor((i + 0.5) * N / T)`` for DDPM (N = ``num_train_timesteps``; 50, 150, ..., 950 for
T = 10) and ``t_i = (i + 0.5) / T`` for flow (0.05, ..., 0.95).

**Common random numbers.** The noise ``eps_i`` of a sample is slice ``i`` of one stream of N(0, 1)
draws from a CPU ``torch.Generator`` seeded with ``blake2b(seed, key)``, where the key is a 64-bit
blake2b hash of the sample's preprocessed uint8 pixels (or of a ``key_column`` value). A sample's
score therefore depends only on (model, seed, grid, its pixels, its label): not on batch size, row
order, shuffling, sharding, the number of processes or restarts.

See ``docs/scoring.md`` for the user guide and :func:`train_scorer` for a scorer trained from scratch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .checks import check_positive_int, check_seed
from .data import check_labels, pixels_to_tensor, preprocess_images
from .hub import (
    check_fork_safe,
    load_pretrained,
    model_provenance,
    read_repo_json,
    resolve_device,
    resolve_dtype,
)
from .training import interpolate
from .vae import (
    AUTO,
    DEFAULT_VAE,
    downsample_factor,
    encode_posterior,
    latent_channels,
    latent_scale,
    load_vae,
    normalise_vae,
    scale_latents,
)

logger = logging.getLogger(__name__)

DIFFICULTY_COLUMN = "difficulty"
PER_TIMESTEP_COLUMN = "difficulty_per_timestep"
PREDICTION_TYPES = ("epsilon", "flow")
#: Model classes whose prediction type is known (matched by class name, nothing is imported).
KNOWN_MODEL_CLASSES: dict[str, str] = {
    "DiTTransformer2DModel": "epsilon",
    "Transformer2DModel": "epsilon",  # the Hub config of facebook/DiT-XL-2-256 (remapped by diffusers)
    "SiTTransformer2DModel": "flow",
    "UNet2DModel": "epsilon",  # with num_class_embeds (class-conditional), e.g. a DDPM UNet
}
#: config keys that give a model's number of classes (DiT/SiT, diffusers' DiT remap, UNet2DModel)
NUM_CLASSES_KEYS = ("num_classes", "num_embeds_ada_norm", "num_class_embeds")
#: Bump when the scores change for the same config (invalidates ``datasets`` caches).
FINGERPRINT_VERSION = 1
SCORER_INFO_FILE = "d2c_scorer.json"


# --------------------------------------------------------------------------------------
# timestep grid
# --------------------------------------------------------------------------------------


def timestep_grid(num_timesteps: int, prediction_type: str, num_train_timesteps: int = 1000) -> torch.Tensor:
    """The fixed, evenly spaced timestep grid: midpoints of ``num_timesteps`` equal bins.

    Returns:
        ``"epsilon"``: int64 ``(T,)``, ``t_i = floor((i + 0.5) * N / T)`` with N = ``num_train_timesteps``
        (``[50, 150, ..., 950]`` for T = 10, N = 1000); ``"flow"``: float32 ``(T,)``, ``t_i = (i + 0.5) / T``.
    """
    check_positive_int(num_timesteps, "num_timesteps")
    i = torch.arange(num_timesteps, dtype=torch.int64)
    if prediction_type == "epsilon":
        if num_timesteps > num_train_timesteps:
            raise ValueError(
                f"num_timesteps={num_timesteps} exceeds the model's {num_train_timesteps} training timesteps"
            )
        # exact integer arithmetic: floor((2i + 1) * N / (2T))
        return torch.div((2 * i + 1) * num_train_timesteps, 2 * num_timesteps, rounding_mode="floor")
    if prediction_type == "flow":
        return (i.to(torch.float64) + 0.5).div(num_timesteps).to(torch.float32)
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


# --------------------------------------------------------------------------------------
# common random numbers
# --------------------------------------------------------------------------------------


def _hash64(*parts: bytes) -> int:
    digest = hashlib.blake2b(digest_size=8)
    for part in parts:
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return int.from_bytes(digest.digest(), "little")


def pixel_keys(pixels: np.ndarray) -> np.ndarray:
    """Stable per-sample keys: a 64-bit blake2b hash of each image's preprocessed pixels.

    Args:
        pixels: ``(B, H, W, 3)`` uint8 (the centre crop the model sees).

    Returns:
        ``(B,)`` uint64. Identical pixels give identical keys whatever the row, split or process.
    """
    pixels = np.ascontiguousarray(pixels)
    shape = json.dumps(list(pixels.shape[1:])).encode()
    return np.array([_hash64(b"pixels", shape, image.tobytes()) for image in pixels], dtype=np.uint64)


def value_keys(values: Sequence[Any], rows: Sequence[int] | None = None, column: str = "key") -> np.ndarray:
    """Per-sample keys from a user's key column (ints, strings or bytes, e.g. an image id or path).

    Returns:
        ``(B,)`` uint64 hashes; ``None`` or other types raise, naming the row.
    """
    keys = np.empty(len(values), dtype=np.uint64)
    for i, value in enumerate(values):
        if isinstance(value, (bool, np.bool_)) or value is None:
            kind = None
        elif isinstance(value, (int, np.integer)):
            kind, data = b"int", str(int(value)).encode()
        elif isinstance(value, str):
            kind, data = b"str", value.encode("utf-8")
        elif isinstance(value, (bytes, bytearray)):
            kind, data = b"bytes", bytes(value)
        else:
            kind = None
        if kind is None:
            row = i if rows is None else rows[i]
            raise ValueError(
                f"key column {column!r} has {value!r} at row {row}; keys must be integers, strings or bytes"
            )
        keys[i] = _hash64(kind, data)
    return keys


def noise_seed(seed: int, key: int) -> int:
    """The CPU generator seed of one sample: a 64-bit blake2b hash of ``(seed, key)``."""
    return _hash64(b"d2c-difficulty-noise", int(seed).to_bytes(8, "little"), int(key).to_bytes(8, "little"))


def sample_noise(
    keys: Sequence[int] | np.ndarray, seed: int, num_timesteps: int, shape: Sequence[int]
) -> torch.Tensor:
    """Common random numbers: the noise of every (sample, timestep index).

    Sample b gets ``torch.randn((T, *shape), generator=torch.Generator("cpu").manual_seed(noise_seed(seed,
    keys[b])))``; timestep index i uses slice i. Generated on CPU so every device sees the same numbers.

    Returns:
        ``(B, T, *shape)`` float32 on CPU.
    """
    keys = np.asarray(keys, dtype=np.uint64)
    out = torch.empty((len(keys), num_timesteps, *shape), dtype=torch.float32)
    generator = torch.Generator("cpu")
    for b, key in enumerate(keys.tolist()):
        generator.manual_seed(noise_seed(seed, key))
        torch.randn((num_timesteps, *shape), generator=generator, out=out[b])
    return out


# --------------------------------------------------------------------------------------
# adapters: path (how x_t is built) + prediction (what the output is compared with)
# --------------------------------------------------------------------------------------


def dit_ddpm_scheduler():
    """DiT's training schedule as a diffusers ``DDPMScheduler``: linear betas 1e-4..0.02 over 1000 steps,
    epsilon prediction (used when a scorer ships no scheduler, and by :func:`d2c_hf.train_scorer`)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="linear",
        beta_start=1e-4,
        beta_end=0.02,
        prediction_type="epsilon",
        clip_sample=False,
    )


class EpsilonAdapter:
    """DDPM path with epsilon prediction (DiT).

    ``x_t = sqrt(abar_t) x + sqrt(1 - abar_t) eps`` (``DDPMScheduler.add_noise``), target ``eps``,
    integer timesteps ``t_i = floor((i + 0.5) * N / T)``.

    Args:
        num_timesteps: T, the grid size.
        scheduler: a ``DDPMScheduler`` (or any diffusers scheduler / config dict with the same beta
            parameters, e.g. DiT's saved ``DDIMScheduler``); ``None`` = DiT's linear schedule
            (betas 1e-4..0.02, 1000 steps).
    """

    prediction_type = "epsilon"

    def __init__(self, num_timesteps: int, scheduler: Any = None) -> None:
        from diffusers import DDPMScheduler

        if scheduler is None:
            scheduler = dit_ddpm_scheduler()
        elif not isinstance(scheduler, DDPMScheduler):
            config = scheduler if isinstance(scheduler, Mapping) else scheduler.config
            scheduler = DDPMScheduler.from_config(dict(config))
        if scheduler.config.prediction_type != "epsilon":
            raise ValueError(
                f"the scheduler says prediction_type={scheduler.config.prediction_type!r}; the epsilon adapter "
                "needs an epsilon-prediction model (pass prediction_type='flow' for flow/velocity models)"
            )
        self.scheduler = scheduler
        self.num_train_timesteps = int(scheduler.config.num_train_timesteps)
        self.timesteps = timestep_grid(num_timesteps, "epsilon", self.num_train_timesteps)

    def to(self, device: torch.device) -> EpsilonAdapter:
        # add_noise caches alphas_cumprod on the samples' device; do it once, outside inference mode
        self.scheduler.alphas_cumprod = self.scheduler.alphas_cumprod.to(device)
        self.timesteps = self.timesteps.to(device)
        return self

    def interpolate(self, x0: torch.Tensor, noise: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` float32 clean samples and noise, ``(N,)`` grid indices -> x_t ``(N, C, H, W)``."""
        return self.scheduler.add_noise(x0, noise, self.timesteps[step])

    def target(self, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The regression target: ``eps``."""
        return noise

    def model_timesteps(self, step: torch.Tensor) -> torch.Tensor:
        """``(N,)`` int64 timesteps for the model."""
        return self.timesteps[step]

    @property
    def config(self) -> dict[str, Any]:
        c = self.scheduler.config
        return {
            "path": "ddpm",
            "target": "epsilon",
            "num_train_timesteps": self.num_train_timesteps,
            "beta_schedule": c.beta_schedule,
            "beta_start": float(c.beta_start),
            "beta_end": float(c.beta_end),
            "trained_betas": None if c.trained_betas is None else [float(b) for b in c.trained_betas],
            "timesteps": [int(t) for t in self.timesteps.tolist()],
        }


class FlowAdapter:
    """Linear flow path with velocity prediction (SiT / REPA convention).

    ``x_t = (1 - t) x + t eps``, target ``eps - x``, ``t_i = (i + 0.5) / T`` passed as float32.
    """

    prediction_type = "flow"

    def __init__(self, num_timesteps: int) -> None:
        self.timesteps = timestep_grid(num_timesteps, "flow")

    def to(self, device: torch.device) -> FlowAdapter:
        self.timesteps = self.timesteps.to(device)
        return self

    def interpolate(self, x0: torch.Tensor, noise: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` clean samples and noise, ``(N,)`` grid indices -> ``(1 - t) x + t eps``
        (the training loss's interpolant, :func:`d2c_hf.training.interpolate`)."""
        return interpolate(x0, noise, self.timesteps[step])[0]

    def target(self, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The regression target: the velocity ``eps - x``."""
        return noise - x0

    def model_timesteps(self, step: torch.Tensor) -> torch.Tensor:
        """``(N,)`` float32 ``t`` in ``[0, 1]``."""
        return self.timesteps[step]

    @property
    def config(self) -> dict[str, Any]:
        return {
            "path": "linear",
            "target": "velocity",
            "timesteps": [float(t) for t in self.timesteps.tolist()],
        }


def model_prediction(output: Any, channels: int) -> torch.Tensor:
    """The comparable part of a model output: ``output.sample`` (or ``output[0]``), and of a
    learned-sigma output ``(N, 2C, H, W)`` only the first C channels (the ``eps``/velocity half)."""
    sample = getattr(output, "sample", None)
    if sample is None:
        sample = output[0] if isinstance(output, (tuple, list)) else output
    if sample.shape[1] == channels:
        return sample
    if sample.shape[1] == 2 * channels:
        return sample[:, :channels]
    raise ValueError(
        f"the model returned {sample.shape[1]} channels for {channels}-channel inputs; expected {channels} or "
        f"{2 * channels} (learned sigma)"
    )


def check_denoiser(model: Any) -> None:
    """Refuse models that are not diffusion denoisers (a VAE passed as the scorer, say), naming the fix."""
    name = type(model).__name__
    if name.startswith(("Autoencoder", "VQModel", "AsymmetricAutoencoder", "ConsistencyDecoder")):
        raise ValueError(
            f"the scorer is a {name}, an autoencoder, not a diffusion denoiser: pass it as vae=..., and a "
            "class-conditional diffusion model (a DiT or SiT pipeline or transformer, a UNet2DModel with "
            "num_class_embeds, or the output of train_scorer) as the scorer"
        )


def detect_prediction_type(model: Any) -> str:
    """``"epsilon"`` or ``"flow"`` from the model's class name or ``config.prediction_type``."""
    check_denoiser(model)
    name = type(model).__name__
    if name in KNOWN_MODEL_CLASSES:
        return KNOWN_MODEL_CLASSES[name]
    declared = _config_value(model, "prediction_type")
    if declared in PREDICTION_TYPES:
        return declared
    raise ValueError(
        f"cannot tell whether {name} predicts noise or a flow velocity: pass prediction_type='epsilon' "
        "(DDPM noising, eps target, integer timesteps) or prediction_type='flow' (x_t = (1-t) x + t eps, "
        "target eps - x, t in [0, 1])"
    )


# --------------------------------------------------------------------------------------
# loading: pipeline folder | folder with transformer/ | bare model folder, Hub id or local
# --------------------------------------------------------------------------------------


def _config_value(model: Any, *names: str) -> Any:
    config = getattr(model, "config", None)
    for name in names:
        if isinstance(config, Mapping):
            value = config.get(name)
        else:
            value = getattr(config, name, None)
        if value is not None:
            return value
    return None


def _model_class(library: str | None, class_name: str) -> type:
    """Resolve a model class named in ``model_index.json`` / ``config.json`` (diffusers or d2c_hf only:
    nothing else is imported on a repo's say-so)."""
    import importlib

    if library in (None, "diffusers"):
        import diffusers

        if hasattr(diffusers, class_name):
            return getattr(diffusers, class_name)
    if library is None or library == "d2c_hf" or library.startswith("d2c_hf."):
        try:  # an ImportError (e.g. a broken model module) propagates as is
            return getattr(importlib.import_module(library or "d2c_hf"), class_name)
        except AttributeError:
            pass
    raise ValueError(
        f"unsupported model class {class_name!r} (library {library!r}): DifficultyScorer loads diffusers and "
        "d2c_hf models; load the model yourself and pass it (with prediction_type=...)"
    )


def _load_model(repo: str) -> tuple[Any, dict[str, Any] | None, bool]:
    """Load the denoiser of a repo: ``(model, scheduler_config_or_None, repo_has_vae)``.

    Layouts: a diffusers pipeline (``model_index.json`` + ``transformer/`` [+ ``vae/``, ``scheduler/``],
    exactly facebook/DiT-XL-2-256), a folder with a ``transformer/`` subfolder, or a bare model folder
    (``config.json`` at the root).
    """
    from .hub import check_reference

    check_reference(repo, "scorer")
    index = read_repo_json(repo, "model_index.json", role="scorer")
    if index is not None:
        entry = index.get("transformer")
        if not entry or entry[0] is None:
            raise ValueError(
                f"the pipeline {repo!r} has no transformer component ({index.get('_class_name')}); "
                "DifficultyScorer needs a class-conditional diffusion transformer (DiT or SiT)"
            )
        cls = _model_class(entry[0], entry[1])
        model = load_pretrained(cls, repo, role="scorer", subfolder="transformer")
        scheduler = (
            read_repo_json(repo, "scheduler_config.json", "scheduler") if index.get("scheduler") else None
        )
        vae_entry = index.get("vae")
        return model, scheduler, bool(vae_entry and vae_entry[0] is not None)

    config = read_repo_json(repo, "config.json", "transformer")
    subfolder: str | None = "transformer"
    if config is None:
        config, subfolder = read_repo_json(repo, "config.json"), None
    if config is None or "_class_name" not in config:
        raise ValueError(
            f"scorer {repo!r} is not a model folder: expected model_index.json (a diffusers pipeline such as "
            "facebook/DiT-XL-2-256), transformer/config.json, or a config.json written by save_pretrained"
        )
    cls = _model_class(None, config["_class_name"])
    kwargs = {"subfolder": subfolder} if subfolder else {}
    model = load_pretrained(cls, repo, role="scorer", **kwargs)
    scheduler = read_repo_json(repo, "scheduler_config.json", "scheduler") if subfolder else None
    has_vae = subfolder is not None and read_repo_json(repo, "config.json", "vae") is not None
    return model, scheduler, has_vae


# --------------------------------------------------------------------------------------
# the scorer
# --------------------------------------------------------------------------------------


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
        num_timesteps: T, the size of the evenly spaced timestep grid.
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
        num_timesteps: int = 10,
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
        self.num_timesteps = check_positive_int(num_timesteps, "num_timesteps")
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
        in_channels = _config_value(model, "in_channels")
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
        out_channels = _config_value(model, "out_channels")
        if out_channels is not None and int(out_channels) not in (self.channels, 2 * self.channels):
            raise ValueError(
                f"{model_name} has out_channels={out_channels} for in_channels={self.channels}; expected "
                f"{self.channels} or {2 * self.channels} (learned sigma)"
            )
        self.learned_sigma = out_channels is not None and int(out_channels) == 2 * self.channels
        num_classes = _config_value(model, *NUM_CLASSES_KEYS)
        if num_classes is None:
            raise ValueError(
                f"{model_name} is not class-conditional: its config has none of {', '.join(NUM_CLASSES_KEYS)}. "
                "The difficulty is the denoising loss given each image's label, so the scorer must take class "
                "labels: use a class-conditional DiT/SiT, a UNet2DModel with num_class_embeds, or train one on "
                "your data with train_scorer"
            )
        self.num_classes = int(num_classes)

        self.factor = downsample_factor(vae)
        sample_size = _config_value(model, "sample_size", "input_size")
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
            self.adapter: EpsilonAdapter | FlowAdapter = EpsilonAdapter(self.num_timesteps, scheduler)
        else:
            self.adapter = FlowAdapter(self.num_timesteps)
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
        num_timesteps: int = 10,
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
                3-channel model, else the paper's SD VAE (:data:`~d2c_hf.vae.DEFAULT_VAE`); ``"pixel"`` or
                ``None`` = pixel space; a folder / Hub id (an ``AutoencoderKL``, or a pipeline with ``vae/``)
                or a loaded ``AutoencoderKL`` overrides.
            other arguments: see the class docstring.
        """
        # cheap checks first: nothing is loaded for an argument that would be refused anyway
        check_positive_int(num_timesteps, "num_timesteps")
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
            model, scheduler, repo_has_vae = _load_model(repo)
        elif not isinstance(model, torch.nn.Module):
            raise TypeError(
                f"model must be a Hub id, a local folder or a loaded model, got {type(model).__name__}"
            )
        check_denoiser(model)
        if isinstance(vae, str) and vae == AUTO:
            if repo_has_vae:
                vae_model = load_vae(repo)
            elif int(_config_value(model, "in_channels") or 3) == 3:
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
    def features(self):
        """The new columns: ``difficulty`` ``Value("float32")`` [+ ``difficulty_per_timestep``
        ``List(Value("float32"), length=T)``]."""
        from datasets import Features, Value

        columns = {DIFFICULTY_COLUMN: Value("float32")}
        if self.return_per_timestep:
            from datasets import List

            columns[PER_TIMESTEP_COLUMN] = List(Value("float32"), length=self.num_timesteps)
        return Features(columns)

    @property
    def config(self) -> dict[str, Any]:
        """JSON-able provenance: everything that determines the scores."""
        from . import __version__

        return {
            "d2c_hf_version": __version__,
            "model": self._model_provenance,
            "vae": self._vae_provenance,
            "space": "latent" if self.vae is not None else "pixel",
            "prediction_type": self.prediction_type,
            "learned_sigma": self.learned_sigma,
            "num_classes": self.num_classes,
            "num_timesteps": self.num_timesteps,
            "timestep_grid": "bin midpoints",
            "noising": self.adapter.config,
            "seed": self.seed,
            "noise": "torch.randn on a CPU generator seeded with blake2b(seed, key); slice i = timestep i",
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
        """Hash of :attr:`config` (and the transform's version): equal fingerprints give equal scores."""
        from datasets.fingerprint import Hasher

        return Hasher.hash([type(self).__name__, FINGERPRINT_VERSION, self.config])

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
            pixels: ``(B, resolution, resolution, 3)`` uint8 (e.g. from ``d2c_hf.data.preprocess_images``), a
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
            ``(difficulty (B,), per_timestep (B, T))`` as for :meth:`score_pixels`.
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
        batch, steps = len(x0), self.num_timesteps
        if batch == 0:
            return np.zeros(0, np.float32), np.zeros((0, steps), np.float32)

        if self.model.training:  # a caller may have switched it back: label dropout must stay off
            self.model.eval()
        x0 = x0.to(self.device)
        noise = sample_noise(keys, self.seed, steps, x0.shape[1:]).to(self.device)  # (B, T, C, h, w)
        noise = noise.flatten(0, 1)  # (B*T, ...), sample-major
        sample = torch.arange(batch, device=self.device).repeat_interleave(steps)  # (B*T,)
        step = torch.arange(steps, device=self.device).repeat(batch)  # (B*T,)
        y = torch.as_tensor(labels, device=self.device).repeat_interleave(steps)
        param_dtype = next(self.model.parameters()).dtype
        errors = torch.empty(batch * steps, dtype=torch.float32, device=self.device)
        chunk = self.max_forward_batch or batch * steps
        with torch.inference_mode():
            for start in range(0, batch * steps, chunk):
                part = slice(start, start + chunk)
                x, eps, i = x0[sample[part]], noise[part], step[part]
                x_t = self.adapter.interpolate(x, eps, i)
                with self._autocast():
                    out = self.model(
                        x_t.to(param_dtype), timestep=self.adapter.model_timesteps(i), class_labels=y[part]
                    )
                prediction = model_prediction(out, self.channels).float()
                target = self.adapter.target(x, eps)
                errors[part] = (prediction - target).square().mean(dim=(1, 2, 3))
        per_timestep = errors.view(batch, steps)
        difficulty = per_timestep.mean(dim=1)
        return difficulty.cpu().numpy(), per_timestep.cpu().numpy()

    def __call__(
        self, batch: Mapping[str, Any], indices: Sequence[int] | None = None
    ) -> dict[str, np.ndarray]:
        """Score one batch of rows (a ``datasets`` batched map function; use ``with_indices=True``).

        Args:
            batch: a batch dict with ``image_column`` (PIL images, ``{"bytes", "path"}`` dicts from
                ``Image(decode=False)``, bytes or paths) and ``label_column`` (integers).
            indices: the rows' indices, used in error messages.

        Returns:
            ``{"difficulty": float32 (B,)}`` [+ ``{"difficulty_per_timestep": float32 (B, T)}``].
        """
        images = list(batch[self.image_column])
        labels = list(batch[self.label_column])
        rows = list(indices) if indices is not None else list(range(len(images)))
        key_values = list(batch[self.key_column]) if self.key_column else None
        difficulty, per_timestep = [], []
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
            d, p = self.score_pixels(pixels, y, keys)
            difficulty.append(d)
            per_timestep.append(p)
        out = {
            DIFFICULTY_COLUMN: np.concatenate(difficulty) if difficulty else np.zeros(0, np.float32),
        }
        if self.return_per_timestep:
            out[PER_TIMESTEP_COLUMN] = (
                np.concatenate(per_timestep)
                if per_timestep
                else np.zeros((0, self.num_timesteps), np.float32)
            )
        return out

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

        from .data import prepare_dataset

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
        try:
            out = raw.map(self, batched=True, with_indices=True, features=out_features, **map_kwargs)
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
        if image_feature.decode:
            out = out.cast_column(self.image_column, image_feature)
        if original_format["type"] is not None:
            columns = original_format["columns"]
            out = out.with_format(
                original_format["type"],
                columns=None if columns is None else [*columns, *self.features],
                output_all_columns=original_format["output_all_columns"],
                **original_format["format_kwargs"],
            )
        return out

    def map_fingerprint(self, dataset: Any) -> str:
        """The ``new_fingerprint`` of ``apply``: hash of the input's fingerprint and :attr:`fingerprint`."""
        from datasets.fingerprint import Hasher

        return Hasher.hash([dataset._fingerprint, self.fingerprint])

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
