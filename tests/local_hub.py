"""A tiny offline "Hub": random models saved with ``save_pretrained`` and loaded back through
the same ``from_pretrained`` code paths as ``facebook/DiT-XL-2-256``, ``stabilityai/sd-vae-ft-ema``,
``google/flan-t5-xl`` and ``facebook/dinov2-base``.

Shapes follow the real models where it matters (DiT with learned sigma: 8 output channels;
VAE downsampling 4x... here 32 px -> 8x8x4 latents; DINOv2 patch 14 with CLS [+ registers]);
everything else is as small as possible so tests run in seconds on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

# words the tiny tokenizer knows, so prompts tokenize into real pieces instead of <unk>
VOCAB_WORDS = (
    "a photo of the zero one two three four five six seven eight nine tench goldfish crane "
    "construction bird shark white great"
).split()


@dataclass(frozen=True)
class LocalHub:
    root: Path
    dit: Path  # DiTPipeline folder (model_index.json, transformer/, vae/, scheduler/), like facebook/DiT-XL-2-256
    vae: Path  # AutoencoderKL folder, like stabilityai/sd-vae-ft-ema
    pixel_dit: Path  # DiTTransformer2DModel folder working on 32x32 RGB pixels (no VAE)
    t5: Path  # T5EncoderModel + tokenizer, like google/flan-t5-xl
    dinov2: Path  # Dinov2Model + BitImageProcessor, like facebook/dinov2-base
    dinov2_reg: Path  # Dinov2WithRegistersModel (4 registers) + processor

    NUM_CLASSES = 10
    RESOLUTION = 32


def tiny_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(8, 16, 16),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=32,
    )


def tiny_dit(in_channels: int = 4, sample_size: int = 8, learn_sigma: bool = True, num_classes: int = 10):
    from diffusers import DiTTransformer2DModel

    return DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=in_channels,
        out_channels=2 * in_channels if learn_sigma else in_channels,
        num_layers=2,
        sample_size=sample_size,
        patch_size=2,
        num_embeds_ada_norm=num_classes,
    )


def tiny_t5():
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    config = T5Config(
        vocab_size=128,
        d_model=16,
        d_kv=4,
        d_ff=32,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=16,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(f"\u2581{w}", -1.0 - i * 0.01) for i, w in enumerate(VOCAB_WORDS)]
    vocab += [(c, -10.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789\u2581"]
    tokenizer = T5Tokenizer(vocab=vocab, extra_ids=0)
    return T5EncoderModel(config), tokenizer


def tiny_dinov2_processor():
    from transformers import BitImageProcessor

    # the real facebook/dinov2-* preprocessor settings (not BitImageProcessor's CLIP defaults)
    return BitImageProcessor(
        size={"shortest_edge": 256},
        crop_size={"height": 224, "width": 224},
        resample=3,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
        do_center_crop=True,
    )


def tiny_dinov2(registers: int = 0):
    from transformers import Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    kwargs = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        patch_size=14,
        image_size=518,
    )
    if registers:
        return Dinov2WithRegistersModel(Dinov2WithRegistersConfig(num_register_tokens=registers, **kwargs))
    return Dinov2Model(Dinov2Config(**kwargs))


def build_local_hub(root: Path) -> LocalHub:
    """Build every tiny model under ``root`` (deterministic weights) and return the paths."""
    from diffusers import DDIMScheduler, DiTPipeline

    root = Path(root)
    torch.manual_seed(0)  # test-side seeding only: gives the same tiny weights every session
    vae = tiny_vae().eval()
    vae.save_pretrained(root / "vae")

    dit = tiny_dit().eval()
    scheduler = DDIMScheduler(
        num_train_timesteps=1000, beta_schedule="linear", prediction_type="epsilon", clip_sample=False
    )
    DiTPipeline(transformer=dit, vae=vae, scheduler=scheduler).save_pretrained(root / "dit")

    tiny_dit(in_channels=3, sample_size=32, learn_sigma=False).save_pretrained(root / "pixel_dit")

    t5, tokenizer = tiny_t5()
    t5.save_pretrained(root / "t5")
    tokenizer.save_pretrained(root / "t5")

    processor = tiny_dinov2_processor()
    for name, registers in (("dinov2", 0), ("dinov2_reg", 4)):
        tiny_dinov2(registers).save_pretrained(root / name)
        processor.save_pretrained(root / name)

    return LocalHub(
        root=root,
        dit=root / "dit",
        vae=root / "vae",
        pixel_dit=root / "pixel_dit",
        t5=root / "t5",
        dinov2=root / "dinov2",
        dinov2_reg=root / "dinov2_reg",
    )


def add_to_hub_cache(cache_dir: Path, repo_id: str, folder: Path, commit: str = "d2c0" * 10) -> Path:
    """Put ``folder`` into a Hugging Face cache as model repo ``repo_id`` at ``commit`` (branch ``main``).

    With ``HF_HUB_CACHE=cache_dir`` and ``HF_HUB_OFFLINE=1``, ``from_pretrained(repo_id)`` then takes the same
    path as after a real download: ``refs/main``, ``snapshots/<commit>/`` and the tree listing
    ``trees/<commit>.json`` (huggingface_hub's documented cache layout; diffusers reads the listing offline).
    """
    import hashlib
    import json
    import shutil

    repo = Path(cache_dir) / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    shutil.copytree(folder, snapshot)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    files = {
        path.relative_to(snapshot).as_posix(): {
            "size": path.stat().st_size,
            "blob_id": hashlib.sha1(path.read_bytes()).hexdigest(),
        }
        for path in sorted(snapshot.rglob("*"))
        if path.is_file()
    }
    (repo / "trees").mkdir(exist_ok=True)
    (repo / "trees" / f"{commit}.json").write_text(json.dumps({"format_version": 1, "files": files}))
    return snapshot
