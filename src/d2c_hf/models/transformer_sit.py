# Copyright 2025 The d2c-hf authors. Apache-2.0.
"""SiT (Scalable Interpolant Transformer) in the diffusers style, with REPA projectors and D2C's DC-Embedding.

One self-contained file, like ``diffusers/models/transformers/dit_transformer_2d.py``: a DiT/SiT backbone
(patch embedding + fixed 2D sin-cos positions, adaLN-Zero transformer blocks, adaLN final layer) built
from diffusers' own building blocks, plus the two optional parts D2C trains with:

* **REPA projectors** (``z_dims``): one 3-layer SiLU MLP per vision encoder, applied to every token of
  the hidden states after block ``encoder_depth``; they feed the alignment loss and are never needed to
  sample. Forward computes them only with ``return_projections=True``.
* **DC-Embedding** (``text_embed_dim``): the class's masked T5 token embeddings ``t_c`` (L x D_t) are
  pooled and projected by one ``Conv1d`` whose kernel spans all L tokens, ``t~ = Conv1d(t_c * mask)``,
  then ``y_text = MLP(t~) + t~ + e_c`` replaces the class embedding ``e_c`` in the adaLN conditioning.
  The per-class text table is stored in the model (persistent float16 buffers) so sampling needs only labels.
* **Caption conditioning** (``caption_embed_dim``): a text-to-image SiT. Each row's caption tokens (a text
  encoder's last hidden states, ``(B, L, D_c)`` with a mask) enter every block through **cross-attention** (as
  PixArt-alpha: ``h = h + CrossAttn(LN(h), MLP(c))`` after the self-attention, output projection zero-initialised),
  and their masked mean through the adaLN conditioning (as the pooled text vector of SD3/MMDiT). Such a model has
  no classes (``num_classes=0``); caption dropout (training mode) replaces a row's caption by the **empty
  caption** (the text encoder's encoding of ``""``, stored in the model), which is also the unconditional branch
  of classifier-free guidance.

Conventions (REPA, identical to diffusers' flow-matching schedulers with ``sigma = t``):

    x_t = (1 - t) * x + t * eps,   t in [0, 1]  (t = 0 data, t = 1 noise)
    the model predicts the velocity  v = eps - x

``timestep`` is the float ``t`` itself (not ``t * 1000``); the pipeline divides the scheduler's
``sigma * num_train_timesteps`` back. The null (unconditional, CFG) class id is ``num_classes``; the
unconditional caption is the empty caption.

The parameter names map 1:1 onto the original REPA / SiT (willisma) checkpoints, see :mod:`d2c_hf.interop.convert`.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention import AttentionMixin, AttentionModuleMixin, FeedForward
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.embeddings import (
    LabelEmbedding,
    PatchEmbed,
    PixArtAlphaTextProjection,
    TimestepEmbedding,
    Timesteps,
)
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.normalization import AdaLayerNormContinuous, AdaLayerNormZero
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import maybe_allow_in_graph
from torch import nn

__all__ = [
    "SIT_PRESETS",
    "ModelMixin",  # diffusers resolves saved pipelines' components through this module (see hf-ecosystem §1.1)
    "SiTAttention",
    "SiTAttnProcessor",
    "SiTTransformer2DModel",
    "SiTTransformer2DModelOutput",
    "SiTTransformerBlock",
    "default_encoder_depth",
    "preset_config",
]

# SiT / DiT model sizes (depth, width, heads), each with patch sizes 2, 4 and 8 (SiT and REPA ``SiT_models``).
_SIZES = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}

#: ``"SiT-XL/2"`` -> ``{"depth", "hidden_size", "num_attention_heads", "patch_size"}`` for S/B/L/XL x 2/4/8.
SIT_PRESETS: dict[str, dict[str, int]] = {
    f"SiT-{size}/{patch}": {
        "depth": depth,
        "hidden_size": width,
        "num_attention_heads": heads,
        "patch_size": patch,
    }
    for size, (depth, width, heads) in _SIZES.items()
    for patch in (2, 4, 8)
}


def default_encoder_depth(preset_or_depth: str | int) -> int:
    """REPA's alignment depth: the (1-based) block whose output the projectors read.

    8 for SiT-L and SiT-XL (24 / 28 blocks), 4 for SiT-B and SiT-S (12 blocks), as the REPA authors
    state in REPA issue #5. For other depths: a third of the depth, at least 1 and at most 8
    (``max(1, min(8, depth // 3))``, which reproduces 4 / 8 / 8 for 12 / 24 / 28 blocks).

    Args:
        preset_or_depth: a preset name from :data:`SIT_PRESETS` or a number of blocks.
    """
    if isinstance(preset_or_depth, str):
        depth = preset_config(preset_or_depth)["depth"]
    else:
        depth = int(preset_or_depth)
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {preset_or_depth}")
    return max(1, min(8, depth // 3))


def preset_config(name: str) -> dict[str, int]:
    """A copy of ``SIT_PRESETS[name]`` (depth, width, heads, patch size); an unknown name raises with the closest
    matches and the list of presets."""
    if name not in SIT_PRESETS:
        close = difflib.get_close_matches(name, SIT_PRESETS, n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"Unknown SiT preset {name!r}.{hint} Available presets: {', '.join(SIT_PRESETS)}.")
    return dict(SIT_PRESETS[name])


@dataclass
class SiTTransformer2DModelOutput(BaseOutput):
    """Output of :class:`SiTTransformer2DModel`.

    Args:
        sample: ``(B, out_channels, H, W)``, the predicted velocity ``eps - x`` in the first
            ``in_channels`` channels (a ``learn_sigma`` model has ``2 * in_channels``; the second half is unused).
        projections: with ``return_projections=True``, one ``(B, T, z_dim)`` tensor per entry of ``z_dims``
            (T = number of tokens); else ``None``.
    """

    sample: torch.Tensor
    projections: list[torch.Tensor] | None = None


class SiTAttnProcessor:
    """Attention through diffusers' :func:`dispatch_attention_fn` (SDPA by default; any registered backend).

    ``softmax(q k^T / sqrt(d)) v`` per head, with q, k, v laid out ``(B, S, H, D)`` as the dispatcher expects;
    optional LayerNorm on q and k (``qk_norm``, as timm's ``Attention``). Self-attention by default; with
    ``encoder_hidden_states`` (``(B, L, D)``) it is cross-attention: queries from ``hidden_states``, keys and values
    from the encoder states, ``attention_mask`` ``(B, L)`` (True = attend) hiding their padding. A row whose mask
    hides every token attends to nothing: its output is 0.
    """

    _attention_backend = None
    _parallel_config = None

    def __call__(
        self,
        attn: SiTAttention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        empty_rows = None
        if encoder_hidden_states is None:
            if attn.fused_projections:
                query, key, value = attn.to_qkv(hidden_states).chunk(3, dim=-1)
            else:
                query, key, value = (
                    attn.to_q(hidden_states),
                    attn.to_k(hidden_states),
                    attn.to_v(hidden_states),
                )
        else:
            query = attn.to_q(hidden_states)
            if attn.fused_projections:
                key, value = attn.to_kv(encoder_hidden_states).chunk(2, dim=-1)
            else:
                key, value = attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)
        if attention_mask is not None:
            attention_mask = attention_mask.bool()
            empty_rows = ~attention_mask.any(dim=-1)  # (B,): no token to attend to
            attention_mask = (attention_mask | empty_rows.unsqueeze(-1))[:, None, None, :]  # (B, 1, 1, L)
        query = attn.norm_q(query.unflatten(-1, (attn.heads, -1)))
        key = attn.norm_k(key.unflatten(-1, (attn.heads, -1)))
        value = value.unflatten(-1, (attn.heads, -1))
        hidden_states = dispatch_attention_fn(
            query,
            key,
            value,
            attn_mask=attention_mask,
            backend=self._attention_backend,
            parallel_config=self._parallel_config,
        )
        hidden_states = hidden_states.flatten(2, 3).to(query.dtype)
        if empty_rows is not None:
            hidden_states = hidden_states.masked_fill(empty_rows[:, None, None], 0.0)
        hidden_states = attn.to_out[0](hidden_states)
        return attn.to_out[1](hidden_states)


class SiTAttention(nn.Module, AttentionModuleMixin):
    """Multi-head self-attention with separate q/k/v projections (fusable with ``fuse_qkv_projections``).

    Maps 1:1 onto timm's ``Attention`` used by SiT/REPA: ``qkv`` splits into ``to_q``/``to_k``/``to_v``,
    ``proj`` is ``to_out.0`` and ``q_norm``/``k_norm`` (LayerNorm over the head dim, eps 1e-5) are
    ``norm_q``/``norm_k``.
    """

    _default_processor_cls = SiTAttnProcessor
    _available_processors: ClassVar[list[type]] = [SiTAttnProcessor]

    def __init__(
        self,
        dim: int,
        heads: int,
        qk_norm: bool = False,
        bias: bool = True,
        processor=None,
        cross_attention: bool = False,
    ) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.inner_dim = dim
        self.use_bias = bias
        self.is_cross_attention = cross_attention  # fuse_projections then fuses only k and v (to_kv)
        self.to_q = nn.Linear(dim, dim, bias=bias)
        self.to_k = nn.Linear(dim, dim, bias=bias)
        self.to_v = nn.Linear(dim, dim, bias=bias)
        self.norm_q = nn.LayerNorm(self.head_dim, eps=1e-5) if qk_norm else nn.Identity()
        self.norm_k = nn.LayerNorm(self.head_dim, eps=1e-5) if qk_norm else nn.Identity()
        self.to_out = nn.ModuleList([nn.Linear(dim, dim, bias=True), nn.Dropout(0.0)])
        self.set_processor(processor if processor is not None else self._default_processor_cls())

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if encoder_hidden_states is None and attention_mask is None:
            return self.processor(self, hidden_states)
        return self.processor(self, hidden_states, encoder_hidden_states, attention_mask)


@maybe_allow_in_graph
class SiTTransformerBlock(nn.Module):
    """A SiT/DiT block with adaLN-Zero conditioning, and optional cross-attention to caption tokens.

    With ``(shift1, scale1, gate1, shift2, scale2, gate2) = Linear(SiLU(c))`` (zero-initialised)::

        h = h + gate1 * Attn(LN(h) * (1 + scale1) + shift1)
        h = h + CrossAttn(LN'(h), caption tokens)                 only with cross_attention (PixArt-alpha)
        h = h + gate2 * MLP(LN(h) * (1 + scale2) + shift2)       MLP: Linear -> GELU(tanh) -> Linear
    """

    def __init__(
        self,
        dim: int,
        num_attention_heads: int,
        mlp_ratio: float = 4.0,
        qk_norm: bool = False,
        cross_attention: bool = False,
    ) -> None:
        super().__init__()
        self.norm1 = AdaLayerNormZero(dim)  # SiLU + Linear(dim, 6 dim), chunk order as SiT's adaLN_modulation
        self.attn = SiTAttention(dim, num_attention_heads, qk_norm=qk_norm)
        self.norm_cross = nn.LayerNorm(dim, eps=1e-6) if cross_attention else None
        self.attn2 = (
            SiTAttention(dim, num_attention_heads, qk_norm=qk_norm, cross_attention=True)
            if cross_attention
            else None
        )
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ff = FeedForward(dim, inner_dim=int(dim * mlp_ratio), activation_fn="gelu-approximate")

    def forward(
        self,
        hidden_states: torch.Tensor,
        emb: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``hidden_states`` (B, T, D), ``emb`` (B, D), caption tokens (B, L, D) and mask (B, L) -> (B, T, D)."""
        norm_hidden, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.norm1(hidden_states, emb=emb)
        hidden_states = hidden_states + gate_msa.unsqueeze(1) * self.attn(norm_hidden)
        if self.attn2 is not None:
            hidden_states = hidden_states + self.attn2(
                self.norm_cross(hidden_states), encoder_hidden_states, encoder_attention_mask
            )
        norm_hidden = self.norm2(hidden_states) * (1 + scale_mlp.unsqueeze(1)) + shift_mlp.unsqueeze(1)
        return hidden_states + gate_mlp.unsqueeze(1) * self.ff(norm_hidden)


class DCTextEmbedding(nn.Module):
    """D2C's DC-Embedding: fuse a class's T5 token embeddings with its learnable class embedding.

    ::

        t~     = Conv1d(t_c * mask)          kernel = all L tokens: (B, D_t, L) -> (B, D, 1)
        y_text = MLP(t~) + t~ + e_c          MLP: Linear -> SiLU -> Linear (D -> D -> D)

    A masked (padding) token is zeroed before the convolution, so it cannot change the output.
    """

    def __init__(self, text_embed_dim: int, text_seq_len: int, hidden_size: int) -> None:
        super().__init__()
        self.text_pool = nn.Conv1d(text_embed_dim, hidden_size, kernel_size=text_seq_len)
        self.mlp = nn.Sequential(
            nn.Linear(hidden_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    def forward(
        self, text_embeds: torch.Tensor, text_mask: torch.Tensor, class_emb: torch.Tensor
    ) -> torch.Tensor:
        """``text_embeds`` (B, L, D_t), ``text_mask`` (B, L), ``class_emb`` (B, D) -> ``y_text`` (B, D)."""
        dtype = self.text_pool.weight.dtype
        masked = text_embeds.to(dtype) * text_mask.to(dtype).unsqueeze(-1)
        pooled = self.text_pool(masked.transpose(1, 2)).squeeze(-1)
        return self.mlp(pooled) + pooled + class_emb


def _build_projector(hidden_size: int, projector_dim: int, z_dim: int) -> nn.Sequential:
    """REPA's projector: ``Linear(D, P) -> SiLU -> Linear(P, P) -> SiLU -> Linear(P, z_dim)`` on every token."""
    return nn.Sequential(
        nn.Linear(hidden_size, projector_dim),
        nn.SiLU(),
        nn.Linear(projector_dim, projector_dim),
        nn.SiLU(),
        nn.Linear(projector_dim, z_dim),
    )


class SiTTransformer2DModel(ModelMixin, ConfigMixin, AttentionMixin):
    r"""SiT: a class- or caption-conditional latent flow (velocity) transformer, REPA convention.

    Args:
        sample_size: latent height = width (32 for 256 px images and an 8x VAE).
        patch_size: side of the square patches (2, 4, 8); ``T = (sample_size / patch_size) ** 2`` tokens.
        in_channels: latent channels (4 for the SD VAEs, 3 in pixel space).
        out_channels: output channels; default ``in_channels`` (``2 * in_channels`` with ``learn_sigma``).
        hidden_size, depth, num_attention_heads, mlp_ratio: width, number of blocks, heads, MLP expansion.
        num_classes: number of classes; the null (CFG) class id is ``num_classes``. 0 for a text-conditioned model
            (``caption_embed_dim`` set), which has no class table.
        class_dropout_prob: probability of replacing a label by the null class, **in training mode only**.
            The class table has a null row only when this is > 0 (as in DiT/SiT/REPA).
        learn_sigma: original-SiT compatibility: ``2 * in_channels`` output channels, the second half unused.
        qk_norm: LayerNorm on queries and keys.
        text_embed_dim, text_seq_len: enable DC-Embedding for T5 token embeddings of width ``text_embed_dim``
            and ``text_seq_len`` tokens (paper: 2048 x 16).
        encoder_depth: the 1-based block whose output the projectors read; default
            :func:`default_encoder_depth` of ``depth`` when ``z_dims`` is non-empty.
        projector_dim: hidden width of the projectors (REPA: 2048).
        z_dims: output width of each projector, one per vision encoder (768 for DINOv2-B); empty = no projector.
        caption_embed_dim: make the model **text-conditioned**: the width of the caption tokens it cross-attends
            to (a text encoder's last hidden states: 4096 for T5-XXL, 768 for CLIP-L). Needs ``num_classes=0`` and
            no DC-Embedding; the model then takes ``encoder_hidden_states`` instead of ``class_labels``.
        caption_seq_len: L, the caption tokens per row (padded; the tokenizer's ``max_length``).
        caption_dropout_prob: probability of replacing a caption by the empty caption (:meth:`set_empty_caption`),
            **in training mode only**: the unconditional branch of classifier-free guidance (REPA: 10 %).

    Inputs of :meth:`forward` are validated without reading device memory (shapes, dtypes; the label range when
    the labels are on the CPU), so forward never synchronises with the GPU and compiles with
    ``torch.compile(fullgraph=True)``. Parameter names map 1:1 onto REPA/SiT checkpoints (:mod:`d2c_hf.interop.convert`).
    """

    _supports_gradient_checkpointing = True
    _no_split_modules: ClassVar[list[str]] = ["SiTTransformerBlock"]
    _repeated_blocks: ClassVar[list[str]] = ["SiTTransformerBlock"]
    _skip_layerwise_casting_patterns: ClassVar[list[str]] = [
        "patch_embed",
        "norm",
        "class_embedder",
        "text_embedder",
        "caption_",
    ]

    @register_to_config
    def __init__(
        self,
        sample_size: int = 32,
        patch_size: int = 2,
        in_channels: int = 4,
        out_channels: int | None = None,
        hidden_size: int = 1152,
        depth: int = 28,
        num_attention_heads: int = 16,
        mlp_ratio: float = 4.0,
        num_classes: int = 1000,
        class_dropout_prob: float = 0.1,
        learn_sigma: bool = False,
        qk_norm: bool = False,
        text_embed_dim: int | None = None,
        text_seq_len: int = 16,
        encoder_depth: int | None = None,
        projector_dim: int = 2048,
        z_dims: Sequence[int] = (),
        caption_embed_dim: int | None = None,
        caption_seq_len: int = 120,
        caption_dropout_prob: float = 0.1,
    ) -> None:
        super().__init__()
        captioned = caption_embed_dim is not None
        for name, value in (
            ("sample_size", sample_size),
            ("patch_size", patch_size),
            ("in_channels", in_channels),
            ("hidden_size", hidden_size),
            ("depth", depth),
            ("num_attention_heads", num_attention_heads),
            *([] if captioned else [("num_classes", num_classes)]),
            ("text_seq_len", text_seq_len),
            ("projector_dim", projector_dim),
            ("caption_seq_len", caption_seq_len),
            *([("caption_embed_dim", caption_embed_dim)] if captioned else []),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if captioned and num_classes != 0:
            raise ValueError(
                f"a text-conditioned model (caption_embed_dim={caption_embed_dim}) has no classes: pass "
                f"num_classes=0, got {num_classes!r}"
            )
        if captioned and text_embed_dim is not None:
            raise ValueError(
                "caption_embed_dim (per-row captions) and text_embed_dim (DC-Embedding of class text) exclude each "
                "other: a text-conditioned model has no classes"
            )
        if not 0.0 <= caption_dropout_prob < 1.0:
            raise ValueError(f"caption_dropout_prob must be in [0, 1), got {caption_dropout_prob}")
        if sample_size % patch_size:
            raise ValueError(f"sample_size ({sample_size}) must be divisible by patch_size ({patch_size})")
        if hidden_size % num_attention_heads:
            raise ValueError(
                f"hidden_size ({hidden_size}) must be divisible by num_attention_heads ({num_attention_heads})"
            )
        if not 0.0 <= class_dropout_prob < 1.0:
            raise ValueError(f"class_dropout_prob must be in [0, 1), got {class_dropout_prob}")
        if mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be > 0, got {mlp_ratio}")
        default_out = 2 * in_channels if learn_sigma else in_channels
        if out_channels is None:
            out_channels = default_out
            self.register_to_config(out_channels=out_channels)
        elif learn_sigma and out_channels != default_out:
            raise ValueError(
                f"learn_sigma=True needs out_channels = 2 * in_channels = {default_out}, got {out_channels}"
            )
        z_dims = [int(z) for z in z_dims]
        if any(z < 1 for z in z_dims):
            raise ValueError(f"z_dims must be positive ints, got {z_dims}")
        if z_dims and encoder_depth is None:
            encoder_depth = default_encoder_depth(depth)
            self.register_to_config(encoder_depth=encoder_depth)
        if encoder_depth is not None and not 1 <= encoder_depth <= depth:
            raise ValueError(
                f"encoder_depth must satisfy 1 <= encoder_depth <= depth ({depth}), got {encoder_depth}"
            )
        if text_embed_dim is not None and (not isinstance(text_embed_dim, int) or text_embed_dim < 1):
            raise ValueError(f"text_embed_dim must be a positive int or None, got {text_embed_dim!r}")

        self.out_channels = out_channels
        self.gradient_checkpointing = False

        self.patch_embed = PatchEmbed(
            height=sample_size,
            width=sample_size,
            patch_size=patch_size,
            in_channels=in_channels,
            embed_dim=hidden_size,
            pos_embed_type="sincos",  # fixed 2D sin-cos, a non-persistent buffer (not saved)
        )
        # DiT/SiT timestep embedding: [cos(t f), sin(t f)] with f_k = 10000^(-k/128), then Linear-SiLU-Linear.
        # downscale_freq_shift=0 matches SiT; diffusers' CombinedTimestepLabelEmbeddings uses 1 (different).
        self.time_proj = Timesteps(num_channels=256, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.timestep_embedder = TimestepEmbedding(in_channels=256, time_embed_dim=hidden_size)
        self.class_embedder = (
            None if captioned else LabelEmbedding(num_classes, hidden_size, class_dropout_prob)
        )
        self.text_embedder = (
            DCTextEmbedding(text_embed_dim, text_seq_len, hidden_size) if text_embed_dim is not None else None
        )
        if text_embed_dim is not None:
            # per-class text table (float16 storage halves it; cast to the compute dtype in forward)
            self.register_buffer(
                "class_text_embeds",
                torch.zeros(num_classes, text_seq_len, text_embed_dim, dtype=torch.float16),
            )
            self.register_buffer("class_text_mask", torch.zeros(num_classes, text_seq_len, dtype=torch.bool))
            self.register_load_state_dict_pre_hook(self._reset_text_table_check)
        self._text_table_ready = False
        # caption conditioning: tokens -> cross-attention (PixArt-alpha's caption MLP), masked mean -> adaLN
        self.caption_projection = (
            PixArtAlphaTextProjection(caption_embed_dim, hidden_size, act_fn="gelu_tanh")
            if captioned
            else None
        )
        self.caption_pooled_projection = (
            PixArtAlphaTextProjection(caption_embed_dim, hidden_size, act_fn="silu") if captioned else None
        )
        if captioned:
            # the empty caption (the text encoder's encoding of ""): caption dropout's replacement, CFG's null
            self.register_buffer(
                "empty_caption_embeds", torch.zeros(caption_seq_len, caption_embed_dim, dtype=torch.float16)
            )
            self.register_buffer("empty_caption_mask", torch.zeros(caption_seq_len, dtype=torch.bool))
            self.register_load_state_dict_pre_hook(self._reset_empty_caption_check)
        self._empty_caption_ready = False

        self.transformer_blocks = nn.ModuleList(
            [
                SiTTransformerBlock(
                    hidden_size, num_attention_heads, mlp_ratio, qk_norm, cross_attention=captioned
                )
                for _ in range(depth)
            ]
        )
        self.projectors = nn.ModuleList([_build_projector(hidden_size, projector_dim, z) for z in z_dims])
        # final layer: adaLN (shift/scale from c) + Linear to patch_size^2 * out_channels
        self.norm_out = AdaLayerNormContinuous(hidden_size, hidden_size, elementwise_affine=False, eps=1e-6)
        self.proj_out = nn.Linear(hidden_size, patch_size * patch_size * out_channels)

        self._init_weights()

    # ------------------------------------------------------------------------------------------------
    # construction helpers
    # ------------------------------------------------------------------------------------------------

    @classmethod
    def extract_init_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> tuple:
        """``ConfigMixin.extract_init_dict`` without the ``auto_map`` entry of a saved ``config.json`` (it tells
        ``diffusers.AutoModel`` where this code lives; it is not a constructor argument, so it is not warned about)."""
        config_dict = {key: value for key, value in config_dict.items() if key != "auto_map"}
        return super().extract_init_dict(config_dict, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, **kwargs: Any) -> Any:
        """``ModelMixin.from_pretrained``; a local folder saved with a checksum record (``d2c_checksums.json``,
        written by ``SiTPipeline.save_pretrained`` and ``d2c convert-*``) is verified first (the ``subfolder``
        only): weights damaged in place are refused by name instead of loading silently."""
        import os
        from pathlib import Path

        from ..utils.checksums import verify_record

        if isinstance(pretrained_model_name_or_path, (str, os.PathLike)):
            folder = Path(os.fspath(pretrained_model_name_or_path)).expanduser()
            if folder.is_dir():
                verify_record(folder, "the SiT model", prefix=kwargs.get("subfolder"))
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> SiTTransformer2DModel:
        """Build a randomly initialised model from a named size (``"SiT-XL/2"``, ``"SiT-B/4"``, ...).

        ``overrides`` replace or add config entries (``num_classes=10``, ``z_dims=[768]``, ...). An unknown
        name raises, listing the presets. With projectors and no ``encoder_depth``, the REPA default
        :func:`default_encoder_depth` (8 for L/XL, 4 for S/B) is used.
        """
        return cls(**{**preset_config(name), **overrides})

    @torch.no_grad()
    def _init_weights(self) -> None:
        """SiT/REPA initialisation.

        Xavier-uniform Linear weights with zero biases (q/k/v drawn as one fused ``(3D, D)`` matrix, like
        timm's ``qkv``), the patch projection initialised like a Linear, class table N(0, 0.02), timestep MLP
        weights N(0, 0.02), and zero adaLN modulations and output projection (adaLN-Zero: the model starts
        as the identity on the residual stream and predicts 0).
        """
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for block in self.transformer_blocks:
            attn = block.attn
            fused = torch.empty(3 * attn.inner_dim, attn.inner_dim, device=attn.to_q.weight.device)
            nn.init.xavier_uniform_(fused)
            for linear, weight in zip((attn.to_q, attn.to_k, attn.to_v), fused.chunk(3)):
                linear.weight.copy_(weight)
            nn.init.zeros_(block.norm1.linear.weight)
            nn.init.zeros_(block.norm1.linear.bias)
            if (
                block.attn2 is not None
            ):  # PixArt-alpha: cross-attention starts as the identity on the residual
                nn.init.zeros_(block.attn2.to_out[0].weight)
                nn.init.zeros_(block.attn2.to_out[0].bias)
        proj = self.patch_embed.proj
        nn.init.xavier_uniform_(proj.weight.view(proj.weight.shape[0], -1))
        nn.init.zeros_(proj.bias)
        if self.class_embedder is not None:
            nn.init.normal_(self.class_embedder.embedding_table.weight, std=0.02)
        for projection in (self.caption_projection, self.caption_pooled_projection):
            if projection is not None:  # PixArt-alpha: the caption MLP N(0, 0.02)
                nn.init.normal_(projection.linear_1.weight, std=0.02)
                nn.init.normal_(projection.linear_2.weight, std=0.02)
        nn.init.normal_(self.timestep_embedder.linear_1.weight, std=0.02)
        nn.init.normal_(self.timestep_embedder.linear_2.weight, std=0.02)
        if self.text_embedder is not None:
            pool = self.text_embedder.text_pool
            nn.init.xavier_uniform_(pool.weight.view(pool.weight.shape[0], -1))
            nn.init.zeros_(pool.bias)
        for module in (self.norm_out.linear, self.proj_out):
            nn.init.zeros_(module.weight)
            nn.init.zeros_(module.bias)

    # ------------------------------------------------------------------------------------------------
    # DC-Embedding text table
    # ------------------------------------------------------------------------------------------------

    def set_class_text_table(self, text_embeds: torch.Tensor, text_mask: torch.Tensor) -> None:
        """Store every class's T5 token embeddings in the model (persistent float16 buffers).

        Afterwards :meth:`forward` looks the text up by label, so sampling needs only class labels; the
        table is saved by ``save_pretrained``. The null class (id ``num_classes``) has no text.

        Args:
            text_embeds: ``(num_classes, text_seq_len, text_embed_dim)`` float, row c = class c's tokens.
            text_mask: ``(num_classes, text_seq_len)`` bool/0-1, 1 for real tokens, 0 for padding.
        """
        if self.text_embedder is None:
            raise ValueError("This model has no DC-Embedding (text_embed_dim=None); it takes no text table.")
        text_embeds = torch.as_tensor(text_embeds)
        text_mask = torch.as_tensor(text_mask)
        cfg = self.config
        expected = (cfg.num_classes, cfg.text_seq_len, cfg.text_embed_dim)
        if tuple(text_embeds.shape) != expected:
            raise ValueError(
                f"text_embeds must be (num_classes, text_seq_len, text_embed_dim) = {expected}, "
                f"got {tuple(text_embeds.shape)}"
            )
        if tuple(text_mask.shape) != expected[:2]:
            raise ValueError(
                f"text_mask must be (num_classes, text_seq_len) = {expected[:2]}, got {tuple(text_mask.shape)}"
            )
        if not text_embeds.is_floating_point():
            raise ValueError(f"text_embeds must be a float tensor, got {text_embeds.dtype}")
        stored = text_embeds.detach().to(
            device=self.class_text_embeds.device, dtype=self.class_text_embeds.dtype
        )
        if not torch.isfinite(stored).all():
            raise ValueError(
                f"text_embeds must be finite and within the range of {self.class_text_embeds.dtype} "
                f"(|x| <= {torch.finfo(self.class_text_embeds.dtype).max:g})"
            )
        with torch.no_grad():
            self.class_text_embeds.copy_(stored)
            self.class_text_mask.copy_(text_mask.detach().to(device=self.class_text_mask.device) != 0)
        self._text_table_ready = False

    def _reset_text_table_check(self, *args: Any, **kwargs: Any) -> None:
        self._text_table_ready = False

    def _text_for_labels(
        self, labels: torch.Tensor, text_embeds: torch.Tensor | None, text_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Explicit text, or the table rows of ``labels``; zero text and mask for the null class."""
        cfg = self.config
        if text_embeds is None:
            if text_mask is not None:
                raise ValueError(
                    "text_mask was given without text_embeds; pass both, or neither to use the table."
                )
            if not self._text_table_ready and not torch.compiler.is_compiling():
                # one host read per model (cached), never inside a compiled graph
                if not bool(self.class_text_mask.any()):
                    raise ValueError(
                        "This model uses DC-Embedding but has no class text table: call "
                        "model.set_class_text_table(text_embeds, text_mask) or pass text_embeds= and text_mask=."
                    )
                self._text_table_ready = True
            rows = labels.clamp(max=cfg.num_classes - 1)
            text_embeds = self.class_text_embeds[rows]
            text_mask = self.class_text_mask[rows]
        else:
            batch = labels.shape[0]
            expected = (batch, cfg.text_seq_len, cfg.text_embed_dim)
            if tuple(text_embeds.shape) != expected:
                raise ValueError(
                    f"text_embeds must be (batch, text_seq_len, text_embed_dim) = {expected}, got {tuple(text_embeds.shape)}"
                )
            if text_mask is None:
                text_mask = torch.ones(expected[:2], dtype=torch.bool, device=text_embeds.device)
            elif tuple(text_mask.shape) != expected[:2]:
                raise ValueError(
                    f"text_mask must be (batch, text_seq_len) = {expected[:2]}, got {tuple(text_mask.shape)}"
                )
        keep = (labels != cfg.num_classes).unsqueeze(-1)  # the null class has no text
        text_mask = (text_mask != 0) & keep
        return text_embeds, text_mask

    # ------------------------------------------------------------------------------------------------
    # caption conditioning (text-to-image)
    # ------------------------------------------------------------------------------------------------

    @property
    def is_text_conditioned(self) -> bool:
        """True for a text-to-image model (``caption_embed_dim`` set): it takes caption tokens, not class labels."""
        return self.config.caption_embed_dim is not None

    def set_empty_caption(self, embeds: torch.Tensor, mask: torch.Tensor) -> None:
        """Store the empty caption (the text encoder's encoding of ``""``) in the model (persistent buffers).

        Caption dropout replaces a row's caption by it in training mode; it is also what the unconditional branch
        of classifier-free guidance sees (``SiTPipeline`` encodes its negative prompt, ``""`` by default, with the
        same encoder). Saved by ``save_pretrained``.

        Args:
            embeds: ``(caption_seq_len, caption_embed_dim)`` float (a leading batch dimension of 1 is accepted).
            mask: ``(caption_seq_len,)`` bool/0-1, 1 for real tokens; at least one (the tokenizer's special tokens).
        """
        if not self.is_text_conditioned:
            raise ValueError(
                "This model is class-conditional (caption_embed_dim=None); it has no empty caption."
            )
        embeds, mask = torch.as_tensor(embeds), torch.as_tensor(mask)
        if embeds.ndim == 3 and embeds.shape[0] == 1:
            embeds = embeds[0]
        if mask.ndim == 2 and mask.shape[0] == 1:
            mask = mask[0]
        expected = tuple(self.empty_caption_embeds.shape)
        if tuple(embeds.shape) != expected:
            raise ValueError(
                f"the empty caption's embeds must be (caption_seq_len, caption_embed_dim) = {expected}, "
                f"got {tuple(embeds.shape)}"
            )
        if tuple(mask.shape) != expected[:1]:
            raise ValueError(
                f"the empty caption's mask must be (caption_seq_len,) = {expected[:1]}, got {tuple(mask.shape)}"
            )
        if not embeds.is_floating_point():
            raise ValueError(f"the empty caption's embeds must be floats, got {embeds.dtype}")
        if not bool((mask != 0).any()):
            raise ValueError(
                "the empty caption's mask has no token: encode \"\" with the tokenizer's special tokens "
                "(T5: </s>, CLIP: <|startoftext|><|endoftext|>)"
            )
        stored = embeds.detach().to(
            device=self.empty_caption_embeds.device, dtype=self.empty_caption_embeds.dtype
        )
        if not torch.isfinite(stored).all():
            raise ValueError("the empty caption's embeds must be finite and within the range of float16")
        with torch.no_grad():
            self.empty_caption_embeds.copy_(stored)
            self.empty_caption_mask.copy_(mask.detach().to(device=self.empty_caption_mask.device) != 0)
        self._empty_caption_ready = False

    def _reset_empty_caption_check(self, *args: Any, **kwargs: Any) -> None:
        self._empty_caption_ready = False

    def _check_empty_caption(self) -> None:
        if not self._empty_caption_ready and not torch.compiler.is_compiling():
            # one host read per model (cached), never inside a compiled graph
            if not bool(self.empty_caption_mask.any()):
                raise ValueError(
                    "caption dropout needs the empty caption, but this model has none: call "
                    'model.set_empty_caption(embeds, mask) with the text encoder\'s encoding of "" '
                    "(or train with caption_dropout_prob=0)"
                )
            self._empty_caption_ready = True

    def _check_captions(
        self, batch: int, embeds: torch.Tensor | None, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Shapes and dtypes of the caption inputs (metadata only); the mask defaults to all ones."""
        cfg = self.config
        expected = (batch, cfg.caption_seq_len, cfg.caption_embed_dim)
        if embeds is None:
            raise ValueError(
                "this model is text-conditioned: pass encoder_hidden_states (B, caption_seq_len, caption_embed_dim) "
                "= the caption tokens (and encoder_attention_mask), not class_labels"
            )
        if tuple(embeds.shape) != expected:
            raise ValueError(
                f"encoder_hidden_states must be (batch, caption_seq_len, caption_embed_dim) = {expected}, "
                f"got {tuple(embeds.shape)}"
            )
        if not embeds.is_floating_point():
            raise ValueError(f"encoder_hidden_states must be floats, got {embeds.dtype}")
        if mask is None:
            mask = torch.ones(expected[:2], dtype=torch.bool, device=embeds.device)
        elif tuple(mask.shape) != expected[:2]:
            raise ValueError(
                f"encoder_attention_mask must be (batch, caption_seq_len) = {expected[:2]}, got {tuple(mask.shape)}"
            )
        return embeds, mask.to(embeds.device) != 0

    def _caption_condition(
        self, embeds: torch.Tensor, mask: torch.Tensor, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Caption dropout (training), then ``(tokens (B, L, D), mask (B, L), pooled (B, D))``::

        tokens = MLP_gelu(c)                         pooled = MLP_silu(sum_l m_l c_l / max(1, sum_l m_l))
        """
        cfg = self.config
        if self.training and cfg.caption_dropout_prob > 0:
            self._check_empty_caption()
            drop = torch.rand(embeds.shape[0], device=embeds.device) < cfg.caption_dropout_prob
            empty = self.empty_caption_embeds.to(device=embeds.device, dtype=embeds.dtype)
            embeds = torch.where(drop[:, None, None], empty.unsqueeze(0), embeds)
            mask = torch.where(drop[:, None], self.empty_caption_mask.to(embeds.device).unsqueeze(0), mask)
        embeds = embeds.to(dtype)
        weights = mask.to(dtype).unsqueeze(-1)
        pooled = (embeds * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return self.caption_projection(embeds), mask, self.caption_pooled_projection(pooled)

    # ------------------------------------------------------------------------------------------------
    # forward
    # ------------------------------------------------------------------------------------------------

    def check_class_labels(self, class_labels: torch.Tensor | Sequence[int]) -> None:
        """Raise a ``ValueError`` naming the bad labels unless all are in ``[0, num_classes)`` (or equal the null
        class ``num_classes``, when the model has one).

        This reads the label values: for labels on an accelerator it waits for the device. :meth:`forward` therefore
        checks only labels that are on the CPU (where it costs a reduction and no sync); check labels that are
        already on a GPU with this method, before the hot loop. ``SiTPipeline`` checks its labels itself.
        """
        cfg = self.config
        if self.is_text_conditioned:
            raise ValueError(
                "this model is text-conditioned (caption_embed_dim set): it takes caption tokens "
                "(encoder_hidden_states), not class labels"
            )
        labels = torch.as_tensor(class_labels)
        top = cfg.num_classes if cfg.class_dropout_prob > 0 else cfg.num_classes - 1
        bad = labels[(labels < 0) | (labels > top)]
        if bad.numel():
            null = f", or {cfg.num_classes} for the null class" if cfg.class_dropout_prob > 0 else ""
            why = (
                "" if cfg.class_dropout_prob > 0 else " (this model has no null class: class_dropout_prob=0)"
            )
            raise ValueError(
                f"class_labels must be in [0, {cfg.num_classes - 1}]{null}{why}; got {bad[:5].tolist()}"
            )

    def _check_inputs(self, hidden_states: torch.Tensor, class_labels: torch.Tensor | None) -> None:
        """Shapes and dtypes only: metadata, so no device sync and no graph break under ``torch.compile``."""
        cfg = self.config
        expected = (cfg.in_channels, cfg.sample_size, cfg.sample_size)
        if hidden_states.ndim != 4 or tuple(hidden_states.shape[1:]) != expected:
            raise ValueError(
                f"hidden_states must be (batch, {expected[0]}, {expected[1]}, {expected[2]}) for this model "
                f"(in_channels={cfg.in_channels}, sample_size={cfg.sample_size}), got {tuple(hidden_states.shape)}"
            )
        if class_labels is None:
            return
        if class_labels.shape != (hidden_states.shape[0],):
            raise ValueError(
                f"class_labels must be a 1-D tensor of {hidden_states.shape[0]} labels (one per sample), "
                f"got shape {tuple(class_labels.shape)}"
            )
        if class_labels.is_floating_point() or class_labels.is_complex():
            raise ValueError(f"class_labels must be integers, got {class_labels.dtype}")

    def _timesteps(self, timestep: torch.Tensor | float, batch: int, device: torch.device) -> torch.Tensor:
        if not torch.is_tensor(timestep):
            value = float(timestep)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"timestep must be in [0, 1] (t = sigma; 0 = data, 1 = noise), got {value}")
            timestep = torch.tensor(value)
        if timestep.is_complex() or not timestep.is_floating_point():
            raise ValueError(
                f"timestep must be a float tensor of t in [0, 1] (not an integer scheduler step), got {timestep.dtype}"
            )
        timestep = timestep.to(device)
        if timestep.ndim == 0:
            return timestep.expand(batch)
        if timestep.shape != (batch,):
            raise ValueError(
                f"timestep must be a scalar or have shape ({batch},), got {tuple(timestep.shape)}"
            )
        return timestep

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor | float,
        class_labels: torch.Tensor | None = None,
        text_embeds: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        return_projections: bool = False,
        return_dict: bool = True,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
    ) -> SiTTransformer2DModelOutput | tuple:
        r"""Predict the velocity ``v = eps - x`` at ``x_t = (1 - t) x + t eps``.

        Args:
            hidden_states: ``(B, in_channels, sample_size, sample_size)`` noisy latents ``x_t``.
            timestep: ``t`` in ``[0, 1]`` (float tensor ``(B,)`` or scalar); 0 = data, 1 = noise.
            class_labels: class-conditional models: ``(B,)`` int64 labels in ``[0, num_classes)``; ``num_classes`` =
                null class (CFG). In training mode each label is replaced by the null class with probability
                ``class_dropout_prob``. Their range is checked when they are on the CPU; labels already on an
                accelerator are not read (that would stall the device): see :meth:`check_class_labels`. A
                text-conditioned model takes none.
            text_embeds: DC-Embedding only: ``(B, text_seq_len, text_embed_dim)`` per-sample T5 tokens; default:
                looked up in the class text table by label.
            text_mask: ``(B, text_seq_len)`` 1 = token, 0 = padding (default all ones when ``text_embeds`` given).
            return_projections: also return the REPA projector outputs (computed only then).
            return_dict: return a :class:`SiTTransformer2DModelOutput` instead of a tuple ``(sample,)`` or,
                with ``return_projections``, ``(sample, projections)``.
            encoder_hidden_states: text-conditioned models: ``(B, caption_seq_len, caption_embed_dim)`` caption
                tokens (the text encoder's last hidden states). In training mode each row is replaced by the empty
                caption with probability ``caption_dropout_prob``.
            encoder_attention_mask: ``(B, caption_seq_len)`` 1 = token, 0 = padding (default all ones).
        """
        cfg = self.config
        batch = hidden_states.shape[0]
        if self.is_text_conditioned:
            if class_labels is not None or text_embeds is not None or text_mask is not None:
                raise ValueError(
                    "this model is text-conditioned (caption_embed_dim set): pass the caption tokens as "
                    "encoder_hidden_states (and encoder_attention_mask), not class_labels / text_embeds"
                )
            self._check_inputs(hidden_states, None)
            caption_embeds, caption_mask = self._check_captions(
                batch, encoder_hidden_states, encoder_attention_mask
            )
        else:
            if encoder_hidden_states is not None or encoder_attention_mask is not None:
                raise ValueError(
                    "encoder_hidden_states were given but this model is class-conditional (caption_embed_dim=None): "
                    "pass class_labels"
                )
            if class_labels is None:
                raise ValueError("this model is class-conditional: pass class_labels (B,) int64")
            class_labels = torch.as_tensor(class_labels)
            self._check_inputs(hidden_states, class_labels)
            if class_labels.device.type == "cpu" and not torch.compiler.is_compiling():
                self.check_class_labels(class_labels)  # label values on the host: cheap, no device sync
            class_labels = class_labels.to(hidden_states.device)
        if text_embeds is not None and self.text_embedder is None:
            raise ValueError(
                "text_embeds was given but this model has no DC-Embedding (text_embed_dim=None)."
            )
        if return_projections and not self.projectors:
            raise ValueError("return_projections=True but this model has no projectors (z_dims is empty).")
        timestep = self._timesteps(timestep, batch, hidden_states.device)

        hidden_states = self.patch_embed(hidden_states)  # (B, T, D)
        dtype = hidden_states.dtype
        emb = self.timestep_embedder(self.time_proj(timestep).to(dtype))
        caption_tokens = caption_token_mask = None
        if self.is_text_conditioned:
            caption_tokens, caption_token_mask, pooled = self._caption_condition(
                caption_embeds, caption_mask, dtype
            )
            emb = emb + pooled  # (B, D) adaLN conditioning
        else:
            labels = class_labels.long()
            if self.training and cfg.class_dropout_prob > 0:
                labels = self.class_embedder.token_drop(labels)  # to the null id, before the text lookup
            class_emb = self.class_embedder.embedding_table(labels)
            if self.text_embedder is not None:
                text_embeds, text_mask = self._text_for_labels(labels, text_embeds, text_mask)
                class_emb = self.text_embedder(text_embeds, text_mask, class_emb)
            emb = emb + class_emb  # (B, D) adaLN conditioning

        projections = None
        for index, block in enumerate(self.transformer_blocks):
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                hidden_states = self._gradient_checkpointing_func(
                    block, hidden_states, emb, caption_tokens, caption_token_mask
                )
            else:
                hidden_states = block(hidden_states, emb, caption_tokens, caption_token_mask)
            if return_projections and index + 1 == cfg.encoder_depth:
                projections = [projector(hidden_states) for projector in self.projectors]

        hidden_states = self.norm_out(hidden_states, emb)
        hidden_states = self.proj_out(hidden_states)  # (B, T, p * p * out_channels)
        sample = self._unpatchify(hidden_states)

        if not return_dict:
            return (sample, projections) if return_projections else (sample,)
        return SiTTransformer2DModelOutput(sample=sample, projections=projections)

    def _unpatchify(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, T, p * p * C)`` (channel fastest, as SiT) -> ``(B, C, H, W)``."""
        p = self.config.patch_size
        grid = self.config.sample_size // p
        tokens = tokens.reshape(tokens.shape[0], grid, grid, p, p, self.out_channels)
        tokens = torch.einsum("nhwpqc->nchpwq", tokens)
        return tokens.reshape(tokens.shape[0], self.out_channels, grid * p, grid * p)

    # ------------------------------------------------------------------------------------------------
    # saving: what diffusers needs to load the folder without d2c-hf (d2c_hf.interop.remote_code)
    # ------------------------------------------------------------------------------------------------

    def to_json_string(self) -> str:
        """The saved ``config.json``, plus ``"auto_map": {"AutoModel": "d2c_hf.SiTTransformer2DModel"}`` naming the
        self-contained ``d2c_hf.py`` that :meth:`save_config` writes beside it."""
        from ..interop.remote_code import add_auto_map

        return add_auto_map(super().to_json_string(), type(self).__name__)

    def save_config(
        self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs: Any
    ) -> None:
        """``ConfigMixin.save_config`` (called by ``save_pretrained``), after writing ``d2c_hf.py``: this model's
        code, generated from d2c-hf's source, so ``diffusers.AutoModel.from_pretrained(folder,
        trust_remote_code=True)`` loads the folder where d2c-hf is not installed."""
        from ..interop.remote_code import write_component_file

        write_component_file(save_directory)
        super().save_config(save_directory, push_to_hub=push_to_hub, **kwargs)
