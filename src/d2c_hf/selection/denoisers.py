"""Select, the model side of the score: how a denoiser's input is built and its output read.

An adapter per prediction type (:class:`EpsilonAdapter`: DDPM's ``x_t = sqrt(abar) x + sqrt(1 - abar) eps``,
noise target; :class:`FlowAdapter`: the linear path of :mod:`d2c_hf.schedulers.paths`, velocity target), the
timestep grid, the contract a class-conditional model must meet, and the loading of a scorer from a pipeline
folder, a folder with ``transformer/``, a bare model folder or a Hub id.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch

from ..schedulers.paths import interpolate
from ..utils.checks import check_positive_int
from ..utils.hub import (
    load_pretrained,
    read_repo_json,
)
from ..utils.spaces import AUTO, DEFAULT_VAE
from ..utils.vae import downsample_factor, latent_channels, load_vae
from .estimator import (
    MIDPOINTS,
    STRATIFIED,
)

logger = logging.getLogger(__name__)

PREDICTION_TYPES = ("epsilon", "v_prediction", "flow")
#: Model classes whose prediction type is known (matched by class name, nothing is imported).
KNOWN_MODEL_CLASSES: dict[str, str] = {
    "DiTTransformer2DModel": "epsilon",
    "Transformer2DModel": "epsilon",  # the Hub config of facebook/DiT-XL-2-256 (remapped by diffusers)
    "SiTTransformer2DModel": "flow",
    "UNet2DModel": "epsilon",  # with num_class_embeds (class-conditional), e.g. a DDPM UNet
}
#: Text-to-image denoisers (scored on captions by :class:`~d2c_hf.selection.text_scorer.TextDifficultyScorer`),
#: refused as class-conditional scorers even where their config has a class-count key (PixArt's
#: ``num_embeds_ada_norm`` is its timestep table).
TEXT_TO_IMAGE_MODEL_CLASSES = ("UNet2DConditionModel", "PixArtTransformer2DModel", "SD3Transformer2DModel")
#: config keys that give a model's number of classes (DiT/SiT, diffusers' DiT remap, UNet2DModel)
NUM_CLASSES_KEYS = ("num_classes", "num_embeds_ada_norm", "num_class_embeds")


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
    """DDPM path with epsilon prediction (DiT, PixArt, Stable Diffusion 1.x / 2.x base).

    ``x_t = sqrt(abar_t) x + sqrt(1 - abar_t) eps`` (``DDPMScheduler.add_noise``), target ``eps``,
    integer timesteps ``t_i = floor((i + 0.5) * N / T)``.

    Args:
        num_timesteps: T, the grid size.
        scheduler: a ``DDPMScheduler`` (or any diffusers scheduler / config dict with the same beta
            parameters, e.g. DiT's saved ``DDIMScheduler``); ``None`` = DiT's linear schedule
            (betas 1e-4..0.02, 1000 steps).
    """

    prediction_type = "epsilon"
    target_name = "epsilon"

    def __init__(
        self, num_timesteps: int, scheduler: Any = None, grid: str | Sequence[float] = MIDPOINTS
    ) -> None:
        from diffusers import DDPMScheduler

        if scheduler is None:
            scheduler = dit_ddpm_scheduler()
        elif not isinstance(scheduler, DDPMScheduler):
            config = scheduler if isinstance(scheduler, Mapping) else scheduler.config
            scheduler = DDPMScheduler.from_config(dict(config))
        declared = scheduler.config.prediction_type
        if declared != self.prediction_type:
            if self.prediction_type == "epsilon" or declared != "epsilon":
                raise ValueError(
                    f"the scheduler says prediction_type={declared!r}; the {self.prediction_type} adapter needs "
                    f"a {self.prediction_type}-prediction model (pass prediction_type='flow' for flow models, "
                    "'v_prediction' for v-prediction DDPM models)"
                )
            # a scheduler saved without prediction_type (DiT's default) and an explicit v_prediction
            scheduler = DDPMScheduler.from_config(
                {**dict(scheduler.config), "prediction_type": self.prediction_type}
            )
        self.scheduler = scheduler
        self.num_train_timesteps = int(scheduler.config.num_train_timesteps)
        self.grid = grid
        if isinstance(grid, str):
            self.timesteps = timestep_grid(num_timesteps, "epsilon", self.num_train_timesteps)
        else:
            values = [float(t) for t in grid]
            if any(t != int(t) or not 0 <= t < self.num_train_timesteps for t in values):
                raise ValueError(
                    f"timestep_grid for an epsilon model must hold integer timesteps in [0, "
                    f"{self.num_train_timesteps}), got {list(grid)}"
                )
            self.timesteps = torch.tensor([int(t) for t in values], dtype=torch.int64)

    def to(self, device: torch.device) -> EpsilonAdapter:
        # add_noise caches alphas_cumprod on the samples' device; do it once, outside inference mode
        self.scheduler.alphas_cumprod = self.scheduler.alphas_cumprod.to(device)
        self.timesteps = self.timesteps.to(device)
        return self

    def interpolate(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` float32 clean samples and noise, ``(N,)`` int64 timesteps -> x_t ``(N, C, H, W)``."""
        return self.scheduler.add_noise(x0, noise, t)

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The regression target: ``eps``."""
        return noise

    def model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """``(N,)`` int64 timesteps for the model (as given)."""
        return t

    def stratified(self, offsets: torch.Tensor) -> torch.Tensor:
        """``(..., T)`` uniform offsets in [0, 1) -> one integer timestep in each of T equal bins,
        ``floor(i N / T) + floor(u (floor((i+1) N / T) - floor(i N / T)))``, int64."""
        steps = offsets.shape[-1]
        edges = torch.div(torch.arange(steps + 1) * self.num_train_timesteps, steps, rounding_mode="floor")
        width = (edges[1:] - edges[:-1]).to(torch.float64)
        return (edges[:-1] + (offsets.cpu() * width).floor().to(torch.int64)).clamp(
            max=self.num_train_timesteps - 1
        )

    @property
    def config(self) -> dict[str, Any]:
        c = self.scheduler.config
        return {
            "path": "ddpm",
            "target": self.target_name,
            "num_train_timesteps": self.num_train_timesteps,
            "beta_schedule": c.beta_schedule,
            "beta_start": float(c.beta_start),
            "beta_end": float(c.beta_end),
            "trained_betas": None if c.trained_betas is None else [float(b) for b in c.trained_betas],
            "timesteps": [int(t) for t in self.timesteps.tolist()]
            if self.grid != STRATIFIED
            else "stratified",
        }


class VelocityAdapter(EpsilonAdapter):
    """DDPM path with v-prediction (Stable Diffusion 2.x at 768 px, ``prediction_type="v_prediction"``).

    The path and the timesteps are :class:`EpsilonAdapter`'s; the target is the velocity
    ``v = sqrt(abar_t) eps - sqrt(1 - abar_t) x`` (``DDPMScheduler.get_velocity``), what such a model predicts.
    """

    prediction_type = "v_prediction"
    target_name = "v"

    def to(self, device: torch.device) -> VelocityAdapter:
        super().to(device)
        return self

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The regression target: ``sqrt(abar_t) eps - sqrt(1 - abar_t) x``."""
        return self.scheduler.get_velocity(x0, noise, t)


class FlowAdapter:
    """Linear flow path with velocity prediction (SiT / REPA convention; SD3's rectified flow).

    ``x_t = (1 - t) x + t eps``, target ``eps - x``, ``t_i = (i + 0.5) / T``; the model is given
    ``t * timestep_scale`` as float32 (1 for SiT, which takes t in [0, 1]; 1000 for SD3, which takes ``sigma *
    num_train_timesteps``).
    """

    prediction_type = "flow"

    def __init__(
        self, num_timesteps: int, grid: str | Sequence[float] = MIDPOINTS, timestep_scale: float = 1.0
    ) -> None:
        self.timestep_scale = float(timestep_scale)
        self.grid = grid
        if isinstance(grid, str):
            self.timesteps = timestep_grid(num_timesteps, "flow")
        else:
            values = [float(t) for t in grid]
            if any(not 0.0 <= t <= 1.0 for t in values):
                raise ValueError(
                    f"timestep_grid for a flow model must hold times t in [0, 1], got {list(grid)}"
                )
            self.timesteps = torch.tensor(values, dtype=torch.float32)

    def to(self, device: torch.device) -> FlowAdapter:
        self.timesteps = self.timesteps.to(device)
        return self

    def interpolate(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` clean samples and noise, ``(N,)`` float32 times -> ``(1 - t) x + t eps``
        (the training loss's interpolant, :func:`d2c_hf.schedulers.paths.interpolate`)."""
        return interpolate(x0, noise, t)[0]

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The regression target: the velocity ``eps - x``."""
        return noise - x0

    def model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """``(N,)`` float32 ``t * timestep_scale`` (``t`` in ``[0, 1]``; as given for SiT)."""
        return t if self.timestep_scale == 1.0 else t * self.timestep_scale

    def stratified(self, offsets: torch.Tensor) -> torch.Tensor:
        """``(..., T)`` uniform offsets in [0, 1) -> ``t_i = (i + u_i) / T``, float32."""
        steps = offsets.shape[-1]
        return ((torch.arange(steps, dtype=torch.float64) + offsets.cpu()) / steps).to(torch.float32)

    @property
    def config(self) -> dict[str, Any]:
        config = {
            "path": "linear",
            "target": "velocity",
            "timesteps": [float(t) for t in self.timesteps.tolist()]
            if self.grid != STRATIFIED
            else "stratified",
        }
        if self.timestep_scale != 1.0:  # only then: the records of SiT scorers stay as they were
            config["model_timestep_scale"] = self.timestep_scale
        return config


def make_adapter(
    prediction_type: str,
    num_timesteps: int,
    grid: str | Sequence[float] = MIDPOINTS,
    scheduler: Any = None,
    timestep_scale: float = 1.0,
) -> EpsilonAdapter | VelocityAdapter | FlowAdapter:
    """The adapter of a prediction type: ``"epsilon"`` (:class:`EpsilonAdapter`), ``"v_prediction"``
    (:class:`VelocityAdapter`) or ``"flow"`` (:class:`FlowAdapter`, with ``timestep_scale``)."""
    if prediction_type == "epsilon":
        return EpsilonAdapter(num_timesteps, scheduler, grid)
    if prediction_type == "v_prediction":
        return VelocityAdapter(num_timesteps, scheduler, grid)
    if prediction_type == "flow":
        return FlowAdapter(num_timesteps, grid, timestep_scale)
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


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


def text_to_image_refusal(name: str) -> str:
    """The message refusing a text-to-image model (``name``) as a class-conditional scorer."""
    return (
        f"the scorer is a text-to-image model ({name}), conditioned on captions, not class labels: pass "
        "caption_column=<the dataset's caption column> to condense() (--caption_column to d2c), or use "
        "TextDifficultyScorer; a class-labelled dataset needs a class-conditional scorer (a DiT or SiT pipeline, "
        "a UNet2DModel with num_class_embeds, or train_scorer's output)"
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
    declared = config_value(model, "prediction_type")
    if declared in PREDICTION_TYPES:
        return declared
    raise ValueError(
        f"cannot tell whether {name} predicts noise or a flow velocity: pass prediction_type='epsilon' "
        "(DDPM noising, eps target, integer timesteps) or prediction_type='flow' (x_t = (1-t) x + t eps, "
        "target eps - x, t in [0, 1])"
    )


class DenoiserContract(NamedTuple):
    """What a scorer reads off its model (and VAE): see :func:`read_contract`."""

    prediction_type: str
    channels: int  # C, the model's input channels (3 in pixel space, the VAE's latent channels otherwise)
    learned_sigma: bool  # out_channels == 2C: only the first half is compared
    num_classes: int
    factor: int  # the VAE's downsampling factor (1 in pixel space)
    resolution: int  # side of the ADM centre crop in pixels
    latent_size: int  # side of the model's input: resolution // factor


class SpaceContract(NamedTuple):
    """What any scorer reads off its denoiser (and VAE): the space it scores in (see :func:`read_space`)."""

    prediction_type: str
    channels: int  # C, the model's input channels (3 in pixel space, the VAE's latent channels otherwise)
    learned_sigma: bool  # out_channels == 2C: only the first half is compared
    factor: int  # the VAE's downsampling factor (1 in pixel space)
    resolution: int  # side of the ADM centre crop in pixels
    latent_size: int  # side of the model's input: resolution // factor


def read_space(
    model: Any,
    vae: Any,
    resolution: int | None,
    prediction_type: str,
    *,
    fixed_size: bool = True,
) -> SpaceContract:
    """Check that ``model`` can score in ``vae``'s space (``None``: pixel space) at ``resolution`` (``None``:
    the model's ``sample_size`` times the VAE's factor) and read its space. ``fixed_size=False`` for models
    that take other input sizes than their ``sample_size`` (a UNet, PixArt and SD3 interpolate or crop their
    position embeddings): a different resolution is then logged, not refused. Raises ``ValueError`` naming
    the mismatch and the fix."""
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(
            f"prediction_type must be one of {PREDICTION_TYPES} or None, got {prediction_type!r}"
        )
    model_name = type(model).__name__
    in_channels = config_value(model, "in_channels")
    if in_channels is None:
        raise ValueError(f"{model_name} has no config.in_channels; a scorer needs a diffusers-style config")
    channels = int(in_channels)
    expected = latent_channels(vae)
    if channels != expected:
        if vae is None:
            space, hint = (
                "pixel space (3 channels)",
                "pass vae=... (an AutoencoderKL with that many latent channels)",
            )
        else:
            space = f"the VAE's latent space ({expected} channels)"
            hint = "pass the VAE the model was trained with, or vae='pixel' for a pixel-space model"
        raise ValueError(f"{model_name} takes {channels} input channels but scores in {space}; {hint}")
    out_channels = config_value(model, "out_channels")
    if out_channels is not None and int(out_channels) not in (channels, 2 * channels):
        raise ValueError(
            f"{model_name} has out_channels={out_channels} for in_channels={channels}; expected "
            f"{channels} or {2 * channels} (learned sigma)"
        )
    factor = downsample_factor(vae)
    sample_size = config_value(model, "sample_size", "input_size")
    if isinstance(sample_size, (list, tuple)):
        sample_size = sample_size[0]
    if resolution is None:
        if sample_size is None:
            raise ValueError(f"{model_name} has no config.sample_size; pass resolution=...")
        resolution = int(sample_size) * factor
    resolution = check_positive_int(resolution, "resolution")
    if resolution % factor:
        raise ValueError(
            f"resolution={resolution} is not a multiple of the VAE's downsampling factor {factor}"
        )
    if sample_size is not None and resolution // factor != int(sample_size):
        built = (
            f"{model_name} was built for {sample_size}x{sample_size} (resolution {int(sample_size) * factor})"
        )
        if fixed_size:
            raise ValueError(
                f"resolution={resolution} gives {resolution // factor}x{resolution // factor} model inputs "
                f"but {built}; pass resolution={int(sample_size) * factor} or None"
            )
        logger.info("scoring at resolution %d: %s", resolution, built)
    return SpaceContract(
        prediction_type=prediction_type,
        channels=channels,
        learned_sigma=out_channels is not None and int(out_channels) == 2 * channels,
        factor=factor,
        resolution=resolution,
        latent_size=resolution // factor,
    )


def read_contract(
    model: Any, vae: Any, resolution: int | None, prediction_type: str | None
) -> DenoiserContract:
    """Check that ``model`` is a class-conditional denoiser that can score in ``vae``'s space (``None``: pixel
    space) at ``resolution`` (``None``: the model's ``sample_size`` times the VAE's factor), and read its
    contract (:func:`read_space` and the number of classes). Raises ``ValueError`` naming the mismatch and the
    fix."""
    model_name = type(model).__name__
    if model_name in TEXT_TO_IMAGE_MODEL_CLASSES:
        raise ValueError(text_to_image_refusal(model_name))
    if prediction_type is None:
        prediction_type = detect_prediction_type(model)
    space = read_space(model, vae, resolution, prediction_type)
    num_classes = config_value(model, *NUM_CLASSES_KEYS)
    if num_classes is None:
        raise ValueError(
            f"{model_name} is not class-conditional: its config has none of {', '.join(NUM_CLASSES_KEYS)}. "
            "The difficulty is the denoising loss given each image's label, so the scorer must take class "
            "labels: use a class-conditional DiT/SiT, a UNet2DModel with num_class_embeds, or train one on "
            "your data with train_scorer"
        )
    return DenoiserContract(
        prediction_type=space.prediction_type,
        channels=space.channels,
        learned_sigma=space.learned_sigma,
        num_classes=int(num_classes),
        factor=space.factor,
        resolution=space.resolution,
        latent_size=space.latent_size,
    )


# --------------------------------------------------------------------------------------
# loading: pipeline folder | folder with transformer/ | bare model folder, Hub id or local
# --------------------------------------------------------------------------------------


def config_value(model: Any, *names: str) -> Any:
    config = getattr(model, "config", None)
    for name in names:
        if isinstance(config, Mapping):
            value = config.get(name)
        else:
            value = getattr(config, name, None)
        if value is not None:
            return value
    return None


def model_class(library: str | None, class_name: str) -> type:
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


def load_model(repo: str) -> tuple[Any, dict[str, Any] | None, bool]:
    """Load the denoiser of a repo: ``(model, scheduler_config_or_None, repo_has_vae)``.

    Layouts: a diffusers pipeline (``model_index.json`` + ``transformer/`` [+ ``vae/``, ``scheduler/``],
    exactly facebook/DiT-XL-2-256), a folder with a ``transformer/`` subfolder, or a bare model folder
    (``config.json`` at the root).
    """
    from ..utils.hub import check_reference

    check_reference(repo, "scorer")
    index = read_repo_json(repo, "model_index.json", role="scorer")
    if index is not None:
        denoiser = index.get("transformer") or index.get("unet") or [None, None]
        if denoiser[1] in TEXT_TO_IMAGE_MODEL_CLASSES or index.get("text_encoder"):
            raise ValueError(
                f"{repo!r}: " + text_to_image_refusal(str(denoiser[1] or index.get("_class_name")))
            )
        entry = index.get("transformer")
        if not entry or entry[0] is None:
            raise ValueError(
                f"the pipeline {repo!r} has no transformer component ({index.get('_class_name')}); "
                "DifficultyScorer needs a class-conditional diffusion transformer (DiT or SiT)"
            )
        cls = model_class(entry[0], entry[1])
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
    if config["_class_name"] in TEXT_TO_IMAGE_MODEL_CLASSES:
        raise ValueError(f"{repo!r}: " + text_to_image_refusal(config["_class_name"]))
    cls = model_class(None, config["_class_name"])
    kwargs = {"subfolder": subfolder} if subfolder else {}
    model = load_pretrained(cls, repo, role="scorer", **kwargs)
    scheduler = read_repo_json(repo, "scheduler_config.json", "scheduler") if subfolder else None
    has_vae = subfolder is not None and read_repo_json(repo, "config.json", "vae") is not None
    return model, scheduler, has_vae


def resolve_scorer(model: Any, vae: Any, prediction_type: str | None) -> tuple[Any, Any, Any, str]:
    """What :meth:`DifficultyScorer.from_pretrained <d2c_hf.selection.scorer.DifficultyScorer.from_pretrained>`
    loads: ``(model, vae_or_None, scheduler_config_or_None, prediction_type)`` from a Hub id / local folder
    or a loaded model, and ``vae`` (normalised: ``"auto"``, ``None`` for pixel space, a reference or a
    loaded ``AutoencoderKL``). ``"auto"`` is the repo's own ``vae/``, else pixel space for a 3-channel
    model, else the paper's SD VAE."""
    import os

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
    if scheduled not in (None, "epsilon", "v_prediction") and not flow_scheduler:
        raise ValueError(
            f"the scorer's scheduler declares prediction_type={scheduled!r}; DifficultyScorer scores epsilon "
            "(noise), v-prediction and flow (velocity) models only"
        )
    if prediction_type is None and scheduled == "v_prediction":
        prediction_type = "v_prediction"  # the scheduler says what the model predicts
    if prediction_type is None:
        try:
            prediction_type = detect_prediction_type(model)
        except ValueError:
            if not flow_scheduler:
                raise
            prediction_type = "flow"  # an unknown model class shipped with a flow-matching scheduler
    if prediction_type == "flow" or flow_scheduler:
        scheduler = None  # the DDPM betas apply to epsilon models only
    return model, vae_model, scheduler, prediction_type
