"""Tiny text-to-image pipelines saved with ``save_pretrained`` into a local folder and loaded back through
``TextDifficultyScorer.from_pretrained`` like Hub repos: Stable Diffusion (``UNet2DConditionModel`` + CLIP,
epsilon and v-prediction), PixArt (``PixArtTransformer2DModel`` + T5) and SD3 (``SD3Transformer2DModel`` + two
CLIPs + T5, flow matching). Shapes follow the real models where it matters (PixArt's learned sigma, SD's
scaled-linear betas, SD3's padded CLIP features); everything else is as small as possible.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from local_hub import tiny_t5, tiny_vae

CLIP_LENGTH = 24  # the tiny CLIP tokenizer's model_max_length (the real one: 77)


@dataclass(frozen=True)
class TextHub:
    sd: Path  # StableDiffusionPipeline folder, epsilon
    sd_v: Path  # the same with a v_prediction scheduler
    pixart: Path  # PixArtAlphaPipeline folder
    sd3: Path  # StableDiffusion3Pipeline folder
    t5: Path  # T5EncoderModel + tokenizer for the caption Attach part (width 16)


def tiny_clip_tokenizer(folder: Path):
    """A character-level CLIP BPE tokenizer (no merges): every character, and every character ending a word."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz0123456789,.-'!? ":
        for token in (c, c + "</w>"):
            vocab.setdefault(token, len(vocab))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=CLIP_LENGTH)


def tiny_clip(vocab_size: int, projection: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=CLIP_LENGTH,
        projection_dim=8,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def tiny_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=4,
        norm_num_groups=4,
    )


def tiny_pixart():
    from diffusers import PixArtTransformer2DModel

    return PixArtTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,  # learned sigma, as PixArt-alpha
        num_layers=2,
        cross_attention_dim=16,
        sample_size=8,
        patch_size=2,
        caption_channels=16,
        norm_num_groups=4,
    )


def build_text_hub(root: Path) -> TextHub:
    """Build every tiny pipeline under ``root`` (deterministic weights)."""
    from diffusers import (
        DDPMScheduler,
        FlowMatchEulerDiscreteScheduler,
        PixArtAlphaPipeline,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
        StableDiffusionPipeline,
    )
    from transformers import T5Config, T5EncoderModel

    root = Path(root)
    torch.manual_seed(0)  # test-side seeding only: the same tiny weights every session
    tokenizer = tiny_clip_tokenizer(root / "clip_tokenizer")
    vae = tiny_vae().eval()
    clip, unet = tiny_clip(len(tokenizer)), tiny_unet()
    for folder, prediction in (("sd", "epsilon"), ("sd_v", "v_prediction")):
        scheduler = DDPMScheduler(
            beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type=prediction
        )
        StableDiffusionPipeline(
            vae=vae,
            text_encoder=clip,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        ).save_pretrained(root / folder)

    t5, t5_tokenizer = tiny_t5()
    PixArtAlphaPipeline(
        tokenizer=t5_tokenizer, text_encoder=t5, vae=vae, transformer=tiny_pixart(), scheduler=DDPMScheduler()
    ).save_pretrained(root / "pixart")
    t5.save_pretrained(root / "t5")
    t5_tokenizer.save_pretrained(root / "t5")

    wide_t5 = T5EncoderModel(T5Config(**{**t5.config.to_dict(), "d_model": 32}))  # joint_attention_dim 32
    StableDiffusion3Pipeline(
        transformer=SD3Transformer2DModel(
            sample_size=8,
            patch_size=2,
            in_channels=4,
            num_layers=1,
            attention_head_dim=8,
            num_attention_heads=2,
            joint_attention_dim=32,
            caption_projection_dim=16,
            pooled_projection_dim=16,
            out_channels=4,
            pos_embed_max_size=16,
        ),
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=tiny_clip(len(tokenizer), projection=True),
        tokenizer=tokenizer,
        text_encoder_2=tiny_clip(len(tokenizer), projection=True),
        tokenizer_2=tokenizer,
        text_encoder_3=wide_t5,
        tokenizer_3=t5_tokenizer,
    ).save_pretrained(root / "sd3")
    return TextHub(root / "sd", root / "sd_v", root / "pixart", root / "sd3", root / "t5")
