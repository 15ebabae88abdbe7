"""Select, step 1 for a captioned dataset: the caption-conditioned diffusion difficulty, as a ``datasets`` map
transform.

For an image x with caption s, and a frozen text-to-image diffusion model with its own text encoder E, the score
is the model's mean denoising error on that sample conditioned on its caption (the D2C paper's appendix)::

    difficulty(x, s) = 1/T * sum_i mean_{C,H,W} ( target(x, eps_i, t_i) - model(x_{t_i}, t_i, E(s)) )^2

with exactly the estimator of the class-conditional score (:class:`~d2c_hf.selection.scorer.DifficultyScorer`):
the same timestep grid, noise draws, antithetic pairs, common random numbers (a row's noise is a function of
(seed, its key)), reliability (within groups instead of classes) and gate. Only the condition differs: the
caption, chosen per row (:mod:`.captions`), encoded once per batch by the scorer's own tokenizer and text
encoder(s) (:mod:`.caption_encoders`), padded to a fixed length so that a row's encoding never depends on its
batch. The families (Stable Diffusion 1.x/2.x, epsilon or v-prediction; PixArt; SD3, flow matching) are in
:mod:`.text_denoisers`.

Groups (:mod:`.groups`) replace classes: :meth:`TextDifficultyScorer.apply` assigns every row a group (k-means on
the caption features by default) after scoring, and the reliability is measured within groups.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..utils.signatures import forwards_options_to
from ..utils.spaces import AUTO, DEFAULT_VAE, normalise_vae
from ..utils.vae import load_vae
from .captions import check_caption_choice, check_caption_column, check_caption_feature, choose_captions
from .estimator import DEFAULT_PROBE_ROWS, MIDPOINTS
from .groups import (
    GROUP_SOURCES,
    assign_groups,
    check_group_options,
    group_names,
    group_record,
    image_features,
)
from .monte_carlo import ScoredBatch
from .reliability import DEFAULT_WARN_RELIABILITY
from .scorer_base import ScorerBase, check_scorer_options
from .text_denoisers import check_text_width, load_text_model, read_text_contract, scheduler_kind

logger = logging.getLogger(__name__)

GROUP_COLUMN = "group"
SCORED_CAPTION_COLUMN = "scored_caption"
GROUP_FEATURES_COLUMN = "group_features"


def _auto_vae(vae: Any, model: Any, repo_with_vae: Any) -> Any:
    """``vae="auto"``: the pipeline's own ``vae/`` (``repo_with_vae``), else pixel space for a 3-channel model,
    else :data:`~d2c_hf.utils.spaces.DEFAULT_VAE`; anything else is loaded as given (``None``: pixel space)."""
    if not (isinstance(vae, str) and vae == AUTO):
        return load_vae(vae)
    if repo_with_vae is not None:
        return load_vae(repo_with_vae)
    if int(getattr(model.config, "in_channels", 3)) == 3:
        return None
    return load_vae(DEFAULT_VAE)


class TextDifficultyScorer(ScorerBase):
    """The caption-conditioned D2C difficulty score as a ``datasets`` map transform.

    ``scorer.apply(ds)`` adds ``difficulty`` (float32, higher = harder), ``group`` (``ClassLabel`` ``group 0``..:
    what selection treats as classes) and ``scored_caption`` (the caption each score is conditioned on) to a
    captioned ``Dataset``, after checking its columns. See the module docstring for the equation.

    Build it with :meth:`from_pretrained` (a pipeline folder or Hub id); the constructor takes loaded objects.

    Args:
        model: a loaded text-to-image denoiser (``UNet2DConditionModel``, ``PixArtTransformer2DModel``,
            ``SD3Transformer2DModel``).
        text_encoder, tokenizer: its text encoder and tokenizer (SD3: tuples ``(clip_l, clip_g[, t5])``).
        vae: a loaded ``AutoencoderKL`` (latent space) or ``None`` (pixel space).
        scheduler: its scheduler (or config): the DDPM betas, ``prediction_type``, or flow matching.
        max_length: tokens per caption (``None``: the family's: 77 for CLIP, 120 for PixArt's T5, 256 for SD3's).
        caption_column: the column holding each image's caption (a string or a list of strings).
        caption_choice: ``"first"`` (default) or ``"random"`` (a per-row draw keyed like the noise), for lists.
        group_by: ``"captions"`` (k-means on the caption features, default), ``"images"`` (k-means on the
            pooled clean inputs) or ``"label"`` (``label_column``'s classes).
        num_groups: k of the k-means (``None``: ``round(sqrt(N / 2))`` in ``[1, 100]``).
        label_column: the label column of ``group_by="label"``.
        the estimator and placement options: as :class:`~d2c_hf.selection.scorer.DifficultyScorer`'s (the
            reliability probe, with one draw, is spread over all rows: the groups are known only after scoring).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        text_encoder: Any,
        tokenizer: Any,
        vae: Any = None,
        *,
        scheduler: Any = None,
        max_length: int | None = None,
        caption_column: str = "text",
        caption_choice: str = "first",
        group_by: str = "captions",
        num_groups: int | None = None,
        label_column: str = "label",
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
        key_column: str | None = None,
        return_per_timestep: bool = False,
        max_forward_batch: int | None = None,
    ) -> None:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a loaded torch.nn.Module, got {type(model).__name__}")
        if not isinstance(caption_column, str) or not caption_column:
            raise ValueError(f"caption_column must be a column name, got {caption_column!r}")
        self.caption_column = caption_column
        self.caption_choice = check_caption_choice(caption_choice)
        check_group_options(group_by, num_groups)
        self.group_by, self.num_groups, self.label_column = group_by, num_groups, label_column
        family, contract = read_text_contract(model, vae, resolution, prediction_type, scheduler)
        self.family = family
        flow_scheduler, num_train = scheduler_kind(
            scheduler if isinstance(scheduler, Mapping) or scheduler is None else dict(scheduler.config)
        )
        super().__init__(
            model,
            vae,
            contract,
            scheduler=None if contract.prediction_type == "flow" or flow_scheduler else scheduler,
            timestep_scale=float(num_train) if family.name == "sd3" else 1.0,
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
        extra = {"joint_attention_dim": int(model.config.joint_attention_dim)} if family.name == "sd3" else {}
        self.caption_encoder = family.encoder(
            text_encoder, tokenizer, max_length=max_length, device=self.device, **extra
        )
        check_text_width(model, family, self.caption_encoder)
        if group_by == "images":
            self.group_feature_size = self.channels * 16
        else:  # the caption features' width, from one encoding (e.g. CLIP's projection or T5's d_model)
            self.group_feature_size = int(self.encode_captions(["a"])[1].shape[-1])
        self.groups: np.ndarray | None = None  # of the last apply()
        self.group_names: list[str] | None = None
        self.group_record: dict[str, Any] | None = None

    # ---- construction ---------------------------------------------------------------------------------
    @classmethod
    @forwards_options_to(__init__, drop=("scheduler",))
    def from_pretrained(cls, model: Any, vae: Any = AUTO, **options: Any) -> TextDifficultyScorer:
        """Load a caption-conditioned scorer from a diffusers text-to-image pipeline folder or Hub id.

        Args:
            model: e.g. ``"stable-diffusion-v1-5/stable-diffusion-v1-5"``,
                ``"stabilityai/stable-diffusion-2-1-base"``, ``"PixArt-alpha/PixArt-XL-2-512x512"``,
                ``"stabilityai/stable-diffusion-3-medium-diffusers"``, or a local folder with the same layout
                (``model_index.json``, ``unet/`` or ``transformer/``, ``text_encoder/``, ``tokenizer/``,
                ``scheduler/``, optional ``vae/``; what ``train_scorer(..., caption_column=...)`` writes).
            vae: ``"auto"`` (default) = the pipeline's own ``vae/``, else pixel space for a 3-channel model,
                else :data:`~d2c_hf.utils.spaces.DEFAULT_VAE`; ``"pixel"`` / ``None`` = pixel space; or a VAE.
            other keyword arguments: the class's (declared once, on ``__init__``), e.g. ``text_encoder=`` /
                ``tokenizer=`` to replace the pipeline's own.
        """
        drop = ("scheduler",)
        given = {k: v for k, v in options.items() if k not in ("text_encoder", "tokenizer")}
        check_scorer_options(given, cls.__init__, "TextDifficultyScorer.from_pretrained", drop=drop)
        check_caption_choice(given.get("caption_choice", "first"))
        check_group_options(given.get("group_by", "captions"), given.get("num_groups"))
        vae = normalise_vae(vae)
        if isinstance(model, torch.nn.Module):
            if "text_encoder" not in options or "tokenizer" not in options:
                raise TypeError("a loaded text-to-image model needs text_encoder= and tokenizer= as well")
            return cls(model, vae=_auto_vae(vae, model, None), **options)
        loaded = load_text_model(model)
        vae_model = _auto_vae(vae, loaded.model, model if loaded.has_vae else None)
        return cls(
            loaded.model,
            options.pop(
                "text_encoder",
                loaded.text_encoders if len(loaded.text_encoders) > 1 else loaded.text_encoders[0],
            ),
            options.pop(
                "tokenizer", loaded.tokenizers if len(loaded.tokenizers) > 1 else loaded.tokenizers[0]
            ),
            vae_model,
            scheduler=loaded.scheduler,
            **options,
        )

    # ---- description ----------------------------------------------------------------------------------
    @property
    def extra_features(self) -> dict[str, Any]:
        """``scored_caption`` (string) and, for k-means groups, ``group_features`` (``List(float16, D)``: the
        caption features or the pooled images, dropped by :meth:`apply` once the groups are assigned)."""
        from datasets import List, Value

        columns: dict[str, Any] = {SCORED_CAPTION_COLUMN: Value("string")}
        if self.group_by != "label":
            columns[GROUP_FEATURES_COLUMN] = List(Value("float16"), length=self.group_feature_size)
        return columns

    def _conditioning_config(self) -> dict[str, Any]:
        return {
            "conditioning": "caption",
            "family": self.family.name,
            "caption_encoder": self.caption_encoder.config,
            "caption_choice": self.caption_choice,
            "groups": {
                "group_by": self.group_by,
                "source": GROUP_SOURCES[self.group_by],
                "num_groups": self.num_groups,
            },
        }

    def _column_config(self) -> dict[str, Any]:
        columns = {"caption_column": self.caption_column}
        if self.group_by == "label":
            columns["label_column"] = self.label_column
        return columns

    # ---- scoring ----------------------------------------------------------------------------------------
    def encode_captions(self, captions: Sequence[str]) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """Captions -> ``(conditions, caption features (B, D) float32)``, once per batch, with the scorer's own
        tokenizer and text encoder under its autocast dtype."""
        with self._autocast():
            return self.caption_encoder.encode(list(captions))

    def score_captions(
        self,
        x0: torch.Tensor,
        captions: Sequence[str],
        keys: Sequence[int] | np.ndarray,
        *,
        probe: bool = True,
    ) -> tuple[ScoredBatch, torch.Tensor]:
        """Score clean inputs ``x0`` ``(B, C, h, w)`` with their captions: ``(ScoredBatch, caption features)``
        (see :meth:`DifficultyScorer.score_batch <d2c_hf.selection.scorer.DifficultyScorer.score_batch>` for
        the halves; the probe, with one draw, takes rows of any caption)."""
        captions = choose_captions(captions, np.zeros(len(captions), np.uint64), column=self.caption_column)
        keys = self.check_inputs(x0, len(captions), "captions", keys)
        if len(x0) == 0:
            empty = torch.zeros((0, 0))
            return self.score_conditioned(x0, (), keys, np.zeros(0, bool) if probe else None), empty
        conditions, features = self.encode_captions(captions)
        param_dtype = next(self.model.parameters()).dtype
        conditions = tuple(c.to(param_dtype) if c.is_floating_point() else c for c in conditions)
        probed = probe and self.probe is not None and self.num_draws == 1
        mask = self.probe_mask(None, keys) if probed else None
        return self.score_conditioned(x0, conditions, keys, mask), features

    def score_batch(
        self,
        x0: torch.Tensor,
        captions: Sequence[str],
        keys: Sequence[int] | np.ndarray,
        *,
        probe: bool = True,
    ) -> ScoredBatch:
        """:meth:`score_captions` without the caption features."""
        return self.score_captions(x0, captions, keys, probe=probe)[0]

    def score_pixels(
        self, pixels: np.ndarray, captions: Sequence[str], keys: Sequence[int] | np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Score preprocessed images ``(B, resolution, resolution, 3)`` uint8 with their captions (strings):
        ``(difficulty (B,), per_timestep (B, T))`` float32; ``keys`` ``None`` = the pixel hashes."""
        from .noise import pixel_keys

        pixels = self.check_pixels(pixels)
        if keys is None:
            keys = pixel_keys(pixels.cpu().numpy() if isinstance(pixels, torch.Tensor) else pixels)
        if len(pixels) == 0:
            return np.zeros(0, np.float32), np.zeros((0, self.num_timesteps), np.float32)
        scored = self.score_batch(self.encode(pixels), captions, keys, probe=False)
        return scored.difficulty, scored.per_timestep

    def _call_model(self, x_t: torch.Tensor, t: torch.Tensor, condition: tuple) -> Any:
        return self.family.call(self.model, x_t, t, condition, self.resolution)

    # ---- one batch of rows ------------------------------------------------------------------------------
    def condition_values(self, batch: Mapping[str, Any]) -> list[Any]:
        return list(batch[self.caption_column])

    def choose(self, values: Sequence[Any], keys: np.ndarray, rows: Sequence[int]) -> list[str]:
        """The caption each row is scored with (:func:`~.captions.choose_captions` with this scorer's choice
        and seed), checked naming the row."""
        return choose_captions(
            values, keys, choice=self.caption_choice, seed=self.seed, column=self.caption_column, rows=rows
        )

    def score_chunk(
        self, pixels: np.ndarray, values: Sequence[Any], keys: np.ndarray, rows: Sequence[int]
    ) -> tuple[ScoredBatch, dict[str, np.ndarray]]:
        """Choose and check the captions (naming the row of a bad one), score the images, and return the
        ``scored_caption`` and ``group_features`` columns."""
        captions = self.choose(values, keys, rows)
        x0 = self.encode(pixels)
        scored, features = self.score_captions(x0, captions, keys)
        extra: dict[str, Any] = {SCORED_CAPTION_COLUMN: captions}
        if self.group_by == "images":
            features = image_features(x0)
        if self.group_by != "label":
            extra[GROUP_FEATURES_COLUMN] = (
                features.to("cpu", torch.float16).numpy()
                if len(captions)
                else np.zeros((0, self.group_feature_size), np.float16)
            )
        return scored, extra

    # ---- datasets ---------------------------------------------------------------------------------------
    def prepare(self, dataset: Any, is_map_style: bool) -> Any:
        """The image column, the captions (every row of a map-style dataset, from Arrow: ``None``, empty, not a
        string, naming the row) and, for ``group_by="label"``, the labels; the probe planned over all rows."""
        from datasets import Image

        features = dataset.features
        if features is None or self.image_column not in features:
            raise ValueError(
                f"image_column={self.image_column!r} is not a column of the dataset; available columns: "
                f"{list(features or [])}"
            )
        if not isinstance(features[self.image_column], Image):
            raise TypeError(
                f"column {self.image_column!r} has feature {features[self.image_column]!r}, expected datasets.Image()"
            )
        if GROUP_COLUMN in features:
            raise ValueError(
                f"the dataset already has a {GROUP_COLUMN!r} column; remove it first "
                f"(dataset.remove_columns({GROUP_COLUMN!r})) to score again"
            )
        if is_map_style:
            check_caption_column(dataset, self.caption_column)
        else:
            check_caption_feature(features, self.caption_column)
        if self.group_by == "label":
            from ..data.inputs import prepare_dataset

            dataset, _ = prepare_dataset(dataset, self.image_column, self.label_column)
        if is_map_style:
            self.plan_probe(len(dataset), None)
        else:
            self.probe = None
        return dataset

    def assign(
        self, features: np.ndarray | None, labels: np.ndarray | None, label_names: Sequence[str] | None
    ):
        """The groups of the scored rows (``features`` ``(N, D)`` for k-means, ``labels`` for ``group_by="label"``):
        ``(groups (N,) int64, names)``, also kept in :attr:`groups`, :attr:`group_names`, :attr:`group_record`."""
        if self.group_by == "label":
            groups = np.asarray(labels, np.int64)
            names = (
                list(label_names)
                if label_names is not None
                else [str(i) for i in range(int(groups.max()) + 1)]
            )
        else:
            groups = assign_groups(features, self.num_groups, self.seed)
            names = group_names(int(groups.max()) + 1)
        self.groups, self.group_names = groups, names
        self.group_record = group_record(self.group_by, groups, names, self.num_groups, self.seed)
        return groups, names

    def dataset_groups(self, dataset: Any, scores: Any) -> np.ndarray:
        from datasets import ClassLabel

        from ..utils.columns import column_numpy, read_fixed_shape

        if self.group_by == "label":
            feature = dataset.features[self.label_column]
            names = feature.names if isinstance(feature, ClassLabel) else None
            groups, _ = self.assign(None, column_numpy(dataset, self.label_column), names)
            return groups
        features = read_fixed_shape(
            scores, GROUP_FEATURES_COLUMN, (self.group_feature_size,), np.float16, torch.device("cpu")
        ).numpy()
        groups, _ = self.assign(features, None, None)
        return groups

    def finish_columns(self, out: Any, groups: np.ndarray) -> Any:
        """Add ``group`` (``ClassLabel`` of :attr:`group_names`)."""
        from datasets import ClassLabel
        from datasets.fingerprint import Hasher

        fingerprint = Hasher.hash([out._fingerprint, "groups", self.group_record])
        return out.add_column(
            GROUP_COLUMN, groups, feature=ClassLabel(names=self.group_names), new_fingerprint=fingerprint
        )

    @property
    def output_columns(self) -> list[str]:
        """``difficulty`` [+ ``difficulty_per_timestep``], ``group``, ``scored_caption``."""
        return [*super().output_columns, GROUP_COLUMN, SCORED_CAPTION_COLUMN]

    @property
    def helper_columns(self) -> list[str]:
        return [*super().helper_columns, GROUP_FEATURES_COLUMN]


__all__ = ["GROUP_COLUMN", "GROUP_FEATURES_COLUMN", "SCORED_CAPTION_COLUMN", "TextDifficultyScorer"]
