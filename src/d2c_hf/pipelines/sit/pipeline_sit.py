# Copyright 2025 The d2c-hf authors. Apache-2.0.
"""``SiTPipeline``: class- or text-conditional sampling from a :class:`~d2c_hf.models.SiTTransformer2DModel`.

The transformer predicts the velocity ``v = eps - x`` at ``x_sigma = (1 - sigma) x + sigma eps`` (REPA
convention, the same as diffusers' flow-matching schedulers), so any of these samplers works:

* ``FlowMatchEulerDiscreteScheduler`` (Euler ODE; pass ``sigmas=np.linspace(1, 1 / N, N)`` for REPA's exact
  Euler grid ``linspace(1, 0, N + 1)``),
* ``FlowMatchHeunDiscreteScheduler`` (Heun ODE, 2N - 1 model calls),
* :class:`~d2c_hf.schedulers.scheduling_flow_match_euler_maruyama.FlowMatchEulerMaruyamaScheduler` (REPA's SDE sampler).

A class-conditional transformer takes ``class_labels`` (ids or names); a text-conditioned one (``caption_embed_dim``
set) takes ``prompt`` strings, encoded with the pipeline's ``text_encoder`` + ``tokenizer`` components (saved and
loaded as diffusers pipelines do: ``text_encoder/``, ``tokenizer/``) exactly as the training captions were: padded
to ``caption_seq_len`` tokens, the encoder's last hidden states, rounded to float16 as stored in the condensed set.

Classifier-free guidance is batched (conditional and null class, or the negative/empty prompt, in one forward),
applied to all latent channels, and only where ``sigma`` lies inside ``guidance_interval`` (REPA's guidance interval;
outside it a conditional-only forward is made):

    v = v_null + guidance_scale * (v_cond - v_null)

Load saved pipelines with ``SiTPipeline.from_pretrained(path)``. A saved folder also carries self-contained copies
of this code (:mod:`d2c_hf.interop.remote_code`), so ``diffusers.DiffusionPipeline.from_pretrained(path,
trust_remote_code=True)`` loads it where d2c-hf is not installed; ``SiTPipeline`` never runs those copies.
"""

from __future__ import annotations

import difflib
import inspect
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from diffusers.image_processor import VaeImageProcessor
from diffusers.pipelines.pipeline_utils import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor

from ...models.transformer_sit import SiTTransformer2DModel
from ...utils.vae import downsample_factor, latent_scale, unscale_latents

__all__ = ["SiTPipeline"]

OUTPUT_TYPES = ("pil", "np", "pt", "latent")


def _label_index(id2label: Mapping[int, str]) -> tuple[dict[str, int], dict[str, list[int]]]:
    """Name -> id for every full name and comma-separated synonym (``"tench, Tinca tinca"``), plus names
    that several classes share (``"crane"`` in ImageNet) -> their ids."""
    index: dict[str, int] = {}
    shared: dict[str, set[int]] = {}
    for class_id, name in sorted(id2label.items()):
        names = {name.strip(), *(part.strip() for part in name.split(","))} - {""}
        for synonym in names:
            if synonym in index and index[synonym] != class_id:
                shared.setdefault(synonym, {index[synonym]}).add(class_id)
            else:
                index[synonym] = class_id
    for synonym in shared:
        index.pop(synonym, None)
    return dict(sorted(index.items())), {name: sorted(ids) for name, ids in sorted(shared.items())}


class SiTPipeline(DiffusionPipeline):
    r"""Class- or text-conditional image generation with a SiT velocity transformer (optionally in a VAE latent space).

    Args:
        transformer: a :class:`~d2c_hf.models.SiTTransformer2DModel` (REPA convention, ``t`` in [0, 1]).
        scheduler: a flow-matching scheduler (Euler, Heun or :class:`FlowMatchEulerMaruyamaScheduler`); the
            model receives ``t = timestep / scheduler.config.num_train_timesteps`` (= sigma).
        vae: an ``AutoencoderKL`` to decode latents (scaling/shift from ``vae.config``); ``None`` = pixel space,
            the transformer's output is the image in ``[-1, 1]``.
        id2label: class id -> name (ImageNet style, comma-separated synonyms allowed). Registered to the
            pipeline config, so it survives ``save_pretrained``/``from_pretrained``. Class-conditional models only.
        text_encoder, tokenizer: text-conditioned models: the ``transformers`` encoder (its ``last_hidden_state``
            are the caption tokens) and tokenizer the training captions were encoded with. Without them the pipeline
            takes ``prompt_embeds`` only.
    """

    model_cpu_offload_seq = "text_encoder->transformer->vae"
    _optional_components: ClassVar[list[str]] = ["vae", "text_encoder", "tokenizer"]

    def __init__(
        self,
        transformer: SiTTransformer2DModel,
        scheduler: Any,
        vae: Any = None,
        id2label: dict[int, str] | dict[str, str] | None = None,
        text_encoder: Any = None,
        tokenizer: Any = None,
    ) -> None:
        super().__init__()
        text_conditioned = getattr(transformer.config, "caption_embed_dim", None) is not None
        if text_conditioned and id2label:
            raise ValueError(
                "id2label was given but the transformer is text-conditioned (caption_embed_dim set): it has no classes"
            )
        if not text_conditioned and (text_encoder is not None or tokenizer is not None):
            raise ValueError(
                "text_encoder/tokenizer were given but the transformer is class-conditional (caption_embed_dim=None): "
                "it takes class labels, not prompts"
            )
        if (text_encoder is None) != (tokenizer is None):
            raise ValueError(
                "pass text_encoder and tokenizer together (the tokenizer the encoder was trained with)"
            )
        self.register_modules(
            transformer=transformer,
            scheduler=scheduler,
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
        )
        num_classes = int(transformer.config.num_classes)
        normalized: dict[int, str] = {}
        for key, name in (id2label or {}).items():
            try:
                class_id = int(key)
            except (TypeError, ValueError):
                raise ValueError(f"id2label keys must be class ids (ints), got {key!r}") from None
            if not 0 <= class_id < num_classes:
                raise ValueError(
                    f"id2label has class id {class_id}, outside [0, {num_classes - 1}] for this transformer"
                )
            if not isinstance(name, str):
                raise ValueError(f"id2label[{class_id}] must be a string, got {type(name).__name__}")
            normalized[class_id] = name
        self.id2label = dict(sorted(normalized.items()))
        self.register_to_config(id2label={str(k): v for k, v in self.id2label.items()} if id2label else None)
        self.labels, self._shared_labels = _label_index(self.id2label)
        self.image_processor = VaeImageProcessor(vae_scale_factor=downsample_factor(vae), do_resize=False)

    # ------------------------------------------------------------------------------------------------
    # saving and loading: the files for loading without d2c-hf (d2c_hf.interop.remote_code)
    # ------------------------------------------------------------------------------------------------

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        safe_serialization: bool = True,
        variant: str | None = None,
        max_shard_size: int | str | None = None,
        push_to_hub: bool = False,
        *,
        model_card: Any = None,
        **kwargs: Any,
    ) -> None:
        """``DiffusionPipeline.save_pretrained``, plus a model card ``README.md``.

        The folder also gets ``pipeline_sit.py`` and ``<component>/d2c_hf.py``, so diffusers loads it without
        d2c-hf (see :meth:`save_config`).

        Args:
            model_card: the card to write (a ``huggingface_hub.ModelCard`` or its text). Default: one that shows
                how to load the folder with and without d2c-hf, with REPA's FID sampler call
                (:func:`d2c_hf.pipelines.sit.model_card.model_card`); it does not know the training data, so its
                licence is "other" (``examples/train_sit.py`` passes the training data's). Without
                ``model_card`` an existing ``README.md`` in ``save_directory`` is kept.
            push_to_hub, kwargs: as diffusers (``repo_id``, ``token``, ``private``, ``commit_message``,
                ``create_pr``); the folder is uploaded with this card, not diffusers' generic one.
        """
        from huggingface_hub import ModelCard

        from ...utils.checksums import write_record
        from ...utils.files import staged_entries
        from .model_card import model_card as default_card

        hub = {key: kwargs.pop(key, None) for key in ("repo_id", "token", "private", "commit_message")}
        create_pr = kwargs.pop("create_pr", False)
        repo_id = None
        if push_to_hub:
            from huggingface_hub import create_repo

            name = hub["repo_id"] or os.path.basename(os.path.normpath(save_directory))
            repo_id = create_repo(name, exist_ok=True, private=hub["private"], token=hub["token"]).repo_id
        keep_card = model_card is None and os.path.exists(os.path.join(save_directory, "README.md"))
        # written whole under a hidden name beside save_directory, then moved in (model_index.json last):
        # a full disk or a kill never leaves a half-written pipeline under the name asked for
        with staged_entries(save_directory, "the pipeline", last=("model_index.json",)) as staging:
            super().save_pretrained(
                staging,
                safe_serialization=safe_serialization,
                variant=variant,
                max_shard_size=max_shard_size,
                push_to_hub=False,
                **kwargs,
            )
            if not keep_card:
                card = (
                    model_card
                    if model_card is not None
                    else default_card(self, repo_id or str(save_directory))
                )
                ModelCard(str(card)).save(staging / "README.md")
            write_record(staging)  # content checksums of this pipeline's files, verified by from_pretrained
        if push_to_hub:
            from huggingface_hub import upload_folder

            upload_folder(
                repo_id=repo_id,
                folder_path=save_directory,
                token=hub["token"],
                commit_message=hub["commit_message"] or "Upload SiTPipeline (d2c-hf)",
                create_pr=create_pr,
            )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, **kwargs: Any) -> Any:
        """``DiffusionPipeline.from_pretrained``; a local folder saved with a checksum record
        (``d2c_checksums.json``, written by :meth:`save_pretrained`) is verified first: a file damaged in place
        is refused by name instead of loading silently."""
        from ...utils.checksums import verify_record

        if isinstance(pretrained_model_name_or_path, (str, os.PathLike)):
            folder = Path(os.fspath(pretrained_model_name_or_path)).expanduser()
            if folder.is_dir():
                verify_record(
                    folder, "the pipeline", fix="restore the folder from a copy or save the pipeline again"
                )
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    def to_json_string(self) -> str:
        """The saved ``model_index.json``: ``"_class_name": ["pipeline_sit", "SiTPipeline"]`` and d2c-hf
        components as ``["d2c_hf", "<Class>"]``, the entries diffusers' remote-code loading reads."""
        from ...interop.remote_code import pipeline_index

        return pipeline_index(super().to_json_string(), self.components)

    def save_config(
        self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs: Any
    ) -> None:
        """``ConfigMixin.save_config`` (the last step of ``save_pretrained``, before any upload), after writing
        ``pipeline_sit.py`` and ``<component>/d2c_hf.py``, generated from d2c-hf's source."""
        from ...interop.remote_code import write_pipeline_files

        write_pipeline_files(save_directory, self.components)
        super().save_config(save_directory, push_to_hub=push_to_hub, **kwargs)

    @classmethod
    def load_config(cls, *args: Any, **kwargs: Any) -> Any:
        """``ConfigMixin.load_config``, with the saved d2c-hf entries of ``model_index.json`` mapped to the
        installed classes (:func:`d2c_hf.interop.remote_code.resolve_index`): nothing is run from the folder."""
        from ...interop.remote_code import resolve_index

        loaded = super().load_config(*args, **kwargs)
        if isinstance(loaded, tuple):
            return (resolve_index(loaded[0]), *loaded[1:])
        return resolve_index(loaded)

    @classmethod
    def _dict_from_json_file(cls, json_file: str | os.PathLike) -> dict[str, Any]:
        # diffusers' DiffusionPipeline.download reads model_index.json through this hook, not load_config: map
        # "_class_name": ["pipeline_sit", ...] back to this class there too, or a Hub download would ask for
        # trust_remote_code to run pipeline_sit.py
        from ...interop.remote_code import resolve_class_name

        return resolve_class_name(super()._dict_from_json_file(json_file))

    # ------------------------------------------------------------------------------------------------
    # labels
    # ------------------------------------------------------------------------------------------------

    def get_label_ids(self, label: int | str | Sequence[int | str]) -> list[int]:
        """Map class names (or ids) to class ids.

        A single ``str`` is one name (never split into characters); names match a full ``id2label`` entry
        or any of its comma-separated synonyms, exactly or else case-insensitively. Unknown names raise with
        the closest matches; ids outside ``[0, num_classes)`` raise.
        """
        if isinstance(label, (str, int, np.integer)) or (torch.is_tensor(label) and label.ndim == 0):
            items: list[Any] = [label]
        elif torch.is_tensor(label) or isinstance(label, np.ndarray):
            items = list(label.reshape(-1).tolist())
        else:
            items = list(label)
        if not items:
            raise ValueError("class_labels is empty: pass at least one class id or name")
        if self.is_text_conditioned:
            raise ValueError(
                f"this pipeline's transformer is text-conditioned: pass prompt=[...] (strings), not class labels "
                f"(got {items[:3]!r})"
            )
        num_classes = int(self.transformer.config.num_classes)
        ids = []
        for item in items:
            if torch.is_tensor(item):
                item = item.item()
            if isinstance(item, str):
                ids.append(self._name_to_id(item))
            elif isinstance(item, (int, np.integer)) and not isinstance(item, bool):
                if not 0 <= int(item) < num_classes:
                    raise ValueError(
                        f"class id {int(item)} is out of range: this model has classes 0..{num_classes - 1}"
                    )
                ids.append(int(item))
            else:
                raise ValueError(f"class labels must be ints or class names, got {item!r}")
        return ids

    def _name_to_id(self, name: str) -> int:
        key = name.strip()
        if key in self._shared_labels:
            raise ValueError(
                f"{name!r} names several classes {self._shared_labels[key]}; pass the class id instead"
            )
        if key in self.labels:
            return self.labels[key]
        folded = [n for n in self.labels if n.casefold() == key.casefold()]
        if len({self.labels[n] for n in folded}) == 1:
            return self.labels[folded[0]]
        if not self.labels:
            raise ValueError(
                f"Unknown class name {name!r}: this pipeline has no id2label; pass class ids, or build it with "
                "SiTPipeline(..., id2label={0: 'tench', ...})"
            )
        lower = {n.casefold(): n for n in self.labels}
        close = [lower[n] for n in difflib.get_close_matches(key.casefold(), list(lower), n=5, cutoff=0.6)]
        hint = f" Close matches: {', '.join(map(repr, close))}." if close else ""
        raise ValueError(
            f"Unknown class name {name!r}.{hint} See pipe.labels for all {len(self.labels)} names."
        )

    # ------------------------------------------------------------------------------------------------
    # prompts (text-conditioned transformers)
    # ------------------------------------------------------------------------------------------------

    @property
    def is_text_conditioned(self) -> bool:
        """True when the transformer takes captions (``caption_embed_dim`` set) instead of class labels."""
        return getattr(self.transformer.config, "caption_embed_dim", None) is not None

    @staticmethod
    def _prompt_list(prompt: str | Sequence[str], what: str = "prompt") -> list[str]:
        items = [prompt] if isinstance(prompt, str) else list(prompt)
        if not items:
            raise ValueError(f"{what} is empty: pass at least one string")
        for index, item in enumerate(items):
            if not isinstance(item, str):
                raise ValueError(f"{what}[{index}] must be a string, got {type(item).__name__} {item!r}")
        return items

    @torch.no_grad()
    def encode_prompt(
        self, prompt: str | Sequence[str], device: torch.device | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode prompts as the training captions were: ``(embeds (B, L, D), mask (B, L) bool)``.

        The tokenizer pads and truncates to ``L = caption_seq_len`` tokens; the embeds are the text encoder's
        ``last_hidden_state`` with that attention mask, rounded to float16 (how a condensed set stores them), then
        cast to the transformer's dtype.
        """
        if not self.is_text_conditioned:
            raise ValueError(
                "this pipeline's transformer is class-conditional: pass class_labels (ids or names), not prompts"
            )
        if self.text_encoder is None or self.tokenizer is None:
            raise ValueError(
                "this pipeline has no text_encoder/tokenizer to encode prompts: load them (the encoder the training "
                "captions were encoded with) and pass SiTPipeline(..., text_encoder=, tokenizer=), or pass prompt_embeds="
            )
        prompts = self._prompt_list(prompt)
        device = device or self._execution_device
        cfg = self.transformer.config
        tokens = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=cfg.caption_seq_len,
            truncation=True,
            return_tensors="pt",
        )
        encoder_dtype = getattr(self.text_encoder, "dtype", torch.float32)
        hidden = self.text_encoder(
            input_ids=tokens["input_ids"].to(device), attention_mask=tokens["attention_mask"].to(device)
        ).last_hidden_state
        if hidden.shape[-1] != cfg.caption_embed_dim:
            raise ValueError(
                f"the text encoder returns {hidden.shape[-1]}-wide tokens but the transformer takes "
                f"caption_embed_dim={cfg.caption_embed_dim}: use the encoder the training captions were encoded with"
            )
        embeds = hidden.to(encoder_dtype).to(torch.float16)
        if not torch.isfinite(embeds).all():
            raise ValueError("the prompt embeddings overflow float16: run the text encoder in float32")
        mask = tokens["attention_mask"].to(device) != 0
        return embeds.to(self.transformer.dtype), mask

    def _caption_inputs(
        self,
        prompt: str | Sequence[str] | None,
        prompt_embeds: torch.Tensor | None,
        prompt_attention_mask: torch.Tensor | None,
        device: torch.device,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.transformer.config
        if prompt is not None and prompt_embeds is not None:
            raise ValueError("pass prompt or prompt_embeds, not both")
        if prompt is not None:
            return self.encode_prompt(prompt, device)
        if prompt_embeds is None:
            raise ValueError(
                "this pipeline's transformer is text-conditioned: pass prompt=[...] (strings) or prompt_embeds="
            )
        expected = (cfg.caption_seq_len, cfg.caption_embed_dim)
        if prompt_embeds.ndim != 3 or tuple(prompt_embeds.shape[1:]) != expected:
            raise ValueError(
                f"prompt_embeds must be (batch, caption_seq_len, caption_embed_dim) = (B, {expected[0]}, "
                f"{expected[1]}), got {tuple(prompt_embeds.shape)}"
            )
        if prompt_attention_mask is None:
            prompt_attention_mask = torch.ones(prompt_embeds.shape[:2], dtype=torch.bool)
        elif tuple(prompt_attention_mask.shape) != tuple(prompt_embeds.shape[:2]):
            raise ValueError(
                f"prompt_attention_mask must be {tuple(prompt_embeds.shape[:2])}, got {tuple(prompt_attention_mask.shape)}"
            )
        return prompt_embeds.to(device=device, dtype=self.transformer.dtype), prompt_attention_mask.to(
            device
        ) != 0

    def _negative_inputs(
        self, negative_prompt: str | Sequence[str] | None, batch: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The unconditional branch of CFG: the encoded ``negative_prompt`` (one, or one per prompt), or the
        transformer's stored empty caption (what caption dropout trained it on)."""
        if negative_prompt is None:
            model = self.transformer
            if not bool(model.empty_caption_mask.any()):
                raise ValueError(
                    "guidance needs the empty caption, but the transformer has none stored "
                    '(set_empty_caption was never called); pass negative_prompt="" to encode it'
                )
            embeds = model.empty_caption_embeds.to(device=device, dtype=model.dtype)
            mask = model.empty_caption_mask.to(device)
            return embeds.unsqueeze(0).expand(batch, -1, -1), mask.unsqueeze(0).expand(batch, -1)
        negatives = self._prompt_list(negative_prompt, "negative_prompt")
        if len(negatives) not in (1, batch):
            raise ValueError(
                f"got {len(negatives)} negative prompts for {batch} prompts; pass one or one per prompt"
            )
        embeds, mask = self.encode_prompt(negatives, device)
        if len(negatives) == 1:
            embeds, mask = embeds.expand(batch, -1, -1), mask.expand(batch, -1)
        return embeds, mask

    # ------------------------------------------------------------------------------------------------
    # sampling
    # ------------------------------------------------------------------------------------------------

    def check_inputs(
        self,
        batch: int,
        num_inference_steps: int,
        guidance_scale: float,
        guidance_interval: Sequence[float],
        generator: Any,
        latents: torch.Tensor | None,
        output_type: str,
        sigmas: Sequence[float] | None,
    ) -> tuple[float, float]:
        """The rules :meth:`__call__` applies to its arguments (raises ``ValueError`` naming the argument);
        returns the guidance interval ``(low, high)``. Public so that scripts check their sampling flags
        against this pipeline before hours of work (``examples/train_sit.py`` does before step 1)."""
        cfg = self.transformer.config
        if sigmas is None and (
            isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, (int, np.integer))
        ):
            raise ValueError(f"num_inference_steps must be an int >= 1, got {num_inference_steps!r}")
        if sigmas is None and num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        if not math.isfinite(guidance_scale) or guidance_scale < 1.0:
            raise ValueError(f"guidance_scale must be >= 1 (1 = no guidance), got {guidance_scale}")
        if len(guidance_interval) != 2:
            raise ValueError(f"guidance_interval must be (low, high), got {guidance_interval!r}")
        low, high = (float(v) for v in guidance_interval)
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(
                f"guidance_interval must satisfy 0 <= low <= high <= 1 (sigma, 1 = noise), got {(low, high)}"
            )
        if guidance_scale > 1.0 and not self.is_text_conditioned and cfg.class_dropout_prob <= 0:
            raise ValueError(
                "guidance_scale > 1 needs the null class, but this transformer has none (class_dropout_prob=0); "
                "use guidance_scale=1"
            )
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        if isinstance(generator, list) and len(generator) != batch:
            raise ValueError(f"got {len(generator)} generators for {batch} images; pass one or one per image")
        shape = (batch, cfg.in_channels, cfg.sample_size, cfg.sample_size)
        if latents is not None and tuple(latents.shape) != shape:
            raise ValueError(
                f"latents must have shape {shape} (batch, in_channels, size, size), got {tuple(latents.shape)}"
            )
        if sigmas is not None and "sigmas" not in inspect.signature(self.scheduler.set_timesteps).parameters:
            raise ValueError(f"{type(self.scheduler).__name__}.set_timesteps does not accept sigmas")
        return low, high

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | str | Sequence[int | str] | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 1.0,
        guidance_interval: tuple[float, float] = (0.0, 1.0),
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        sigmas: Sequence[float] | None = None,
        *,
        prompt: str | Sequence[str] | None = None,
        negative_prompt: str | Sequence[str] | None = None,
        prompt_embeds: torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
    ) -> ImagePipelineOutput | tuple:
        r"""Generate one image per class label (class-conditional transformer) or per prompt (text-conditioned).

        Args:
            class_labels: class ids and/or names (see :meth:`get_label_ids`), or a single one. Class-conditional only.
            num_inference_steps: sampler steps (model calls for Euler / SDE; Heun makes 2N - 1), >= 1.
            guidance_scale: classifier-free guidance scale, >= 1 (1 = conditional only, no null forward).
            guidance_interval: ``(low, high)`` in ``[0, 1]``: guidance is applied only while
                ``low <= sigma <= high`` (REPA's best setting: ``(0, 0.7)`` with scale 1.8 and the SDE sampler).
            generator: RNG(s) for the initial noise and for stochastic schedulers' steps (one per image allowed).
            latents: optional initial noise ``(B, in_channels, sample_size, sample_size)``; default ``N(0, I)``.
            output_type: ``"pil"``, ``"np"`` (``(B, H, W, C)`` in [0, 1]), ``"pt"`` (``(B, C, H, W)`` in [0, 1]) or
                ``"latent"`` (the final model-space latents, not decoded).
            return_dict: return an :class:`ImagePipelineOutput` (else a tuple ``(images,)``).
            sigmas: optional explicit noise levels for schedulers whose ``set_timesteps`` takes them (Euler, SDE),
                e.g. ``np.linspace(1, 1 / N, N)`` for REPA's Euler grid (the scheduler appends 0).
            prompt: text-conditioned transformers: a string or a list of strings, encoded by :meth:`encode_prompt`.
            negative_prompt: the unconditional branch of guidance: one string or one per prompt; default: the
                empty caption stored in the transformer (the text encoder's ``""``, what caption dropout trained on).
            prompt_embeds, prompt_attention_mask: already encoded prompts ``(B, caption_seq_len, caption_embed_dim)``
                and their mask ``(B, caption_seq_len)`` (default all ones), instead of ``prompt``.

        Returns:
            :class:`~diffusers.ImagePipelineOutput` with ``images``.
        """
        device = self._execution_device
        cfg = self.transformer.config
        if self.is_text_conditioned:
            if class_labels is not None:
                strings = isinstance(class_labels, str) or (
                    isinstance(class_labels, (list, tuple)) and any(isinstance(c, str) for c in class_labels)
                )
                hint = " (the first argument is class_labels; pass prompts as prompt=...)" if strings else ""
                raise ValueError(
                    "this pipeline's transformer is text-conditioned: pass prompt=[...] (strings), not class_labels"
                    + hint
                )
            cond, cond_mask = self._caption_inputs(prompt, prompt_embeds, prompt_attention_mask, device)
            batch = cond.shape[0]
        else:
            if prompt is not None or prompt_embeds is not None or negative_prompt is not None:
                raise ValueError(
                    "this pipeline's transformer is class-conditional: pass class_labels (ids or names), not prompts"
                )
            if class_labels is None:
                raise ValueError("pass class_labels: class ids and/or names, one per image")
            labels = self.get_label_ids(class_labels)
            batch = len(labels)
        low, high = self.check_inputs(
            batch,
            num_inference_steps,
            guidance_scale,
            guidance_interval,
            generator,
            latents,
            output_type,
            sigmas,
        )
        if self.is_text_conditioned:
            null, null_mask = (
                self._negative_inputs(negative_prompt, batch, device)
                if guidance_scale > 1.0
                else (None, None)
            )
        else:
            cond = torch.tensor(labels, device=device, dtype=torch.long)
            null = torch.full_like(cond, cfg.num_classes)
        dtype = self.transformer.dtype
        shape = (batch, cfg.in_channels, cfg.sample_size, cfg.sample_size)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
            latents = latents * getattr(self.scheduler, "init_noise_sigma", 1.0)
        else:
            latents = latents.to(device=device, dtype=dtype)

        if sigmas is not None:
            self.scheduler.set_timesteps(sigmas=list(np.asarray(sigmas, dtype=np.float64)), device=device)
        else:
            self.scheduler.set_timesteps(int(num_inference_steps), device=device)
        num_train_timesteps = float(self.scheduler.config.num_train_timesteps)
        step_kwargs = {}
        if "generator" in inspect.signature(self.scheduler.step).parameters:
            step_kwargs["generator"] = generator

        sigma_values = (self.scheduler.timesteps.detach().cpu().double() / num_train_timesteps).tolist()
        for t, sigma in zip(self.progress_bar(self.scheduler.timesteps), sigma_values):
            guided = guidance_scale > 1.0 and low <= sigma <= high
            model_input = torch.cat([latents, latents]) if guided else latents
            timestep = (t.float() / num_train_timesteps).expand(model_input.shape[0])
            if self.is_text_conditioned:
                velocity = self.transformer(
                    model_input,
                    timestep=timestep,
                    encoder_hidden_states=torch.cat([cond, null]) if guided else cond,
                    encoder_attention_mask=torch.cat([cond_mask, null_mask]) if guided else cond_mask,
                ).sample
            else:
                model_labels = torch.cat([cond, null]) if guided else cond
                velocity = self.transformer(model_input, timestep=timestep, class_labels=model_labels).sample
            velocity = velocity[:, : cfg.in_channels]  # drop a learned-sigma half
            if guided:
                v_cond, v_null = velocity.chunk(2)
                velocity = v_null + guidance_scale * (v_cond - v_null)
            latents = self.scheduler.step(velocity, t, latents, **step_kwargs).prev_sample

        if output_type == "latent":
            images = latents
        else:
            if self.vae is not None:
                raw = unscale_latents(latents, *latent_scale(self.vae))
                images = self.vae.decode(raw.to(self.vae.dtype)).sample
            else:
                images = latents  # pixel space: the model's output is the image in [-1, 1]
            images = self.image_processor.postprocess(images.float(), output_type=output_type)

        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)
