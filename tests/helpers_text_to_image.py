"""Captioned condensed sets built directly from arrays (the issue-25 contract, item 2), for the text-to-image
training tests: each row's caption encoded with a tiny T5 saved in a local folder, as condense(caption_column=)
stores it (the encoder's last hidden states at max_length tokens, float16; the attention mask, int8)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from datasets import Array2D, Array3D, ClassLabel, Dataset, Features, List, Value

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
MAX_LENGTH = 8
#: the model of the tests: tiny, fast, patch 2 over 8x8 latents (16 tokens)
TINY = '{"depth":2,"hidden_size":32,"num_attention_heads":2}'


def captions_for(rows: int) -> list[str]:
    """Distinct-enough captions from words the tiny T5 tokenizer knows."""
    return [f"a photo of the {WORDS[i % 10]}" + (" white" if i % 3 == 0 else "") for i in range(rows)]


@torch.no_grad()
def encode_captions(encoder_dir: Path, captions: list[str], max_length: int = MAX_LENGTH):
    """``(embeds (N, L, D) float16, mask (N, L) int8)`` as the contract stores them."""
    from transformers import AutoTokenizer, T5EncoderModel

    encoder = T5EncoderModel.from_pretrained(encoder_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(encoder_dir)
    tokens = tokenizer(
        captions, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt"
    )
    hidden = encoder(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).last_hidden_state
    return hidden.to(torch.float16).numpy(), tokens["attention_mask"].to(torch.int8).numpy()


def make_captioned(
    path: Path,
    encoder_dir: Path,
    *,
    rows: int = 12,
    groups: int = 3,
    visual: bool = True,
    space: str = "latent",
    max_length: int = MAX_LENGTH,
) -> Path:
    """A captioned CondensedDataset saved at ``path``: latents 8x8x8 (mean|std of 4x8x8), 16 visual tokens x 32,
    captions of the tiny T5 at ``encoder_dir`` (the recorded text encoder), groups as ``label``."""
    from d2c_hf.condensed.dataset import CondensedDataset
    from d2c_hf.utils.hub import model_provenance

    rng = np.random.default_rng(0)
    captions = captions_for(rows)
    embeds, mask = encode_captions(encoder_dir, captions, max_length)
    channels = 4 if space == "latent" else 3
    moments = [
        rng.normal(size=(rows, channels, 8, 8)),
        np.full((rows, channels, 8, 8), 0.1 if space == "latent" else 0.0),
    ]
    columns = {
        "label": np.arange(rows) % groups,
        "source_index": np.arange(rows) * 2,
        "difficulty": rng.gamma(2.0, 1.0, rows).astype(np.float32),
        "caption": captions,
        "caption_embeds": embeds,
        "caption_mask": mask,
        "latents": np.concatenate(moments, 1).astype(np.float16),
    }
    features = {
        "label": ClassLabel(names=[f"group {g}" for g in range(groups)]),
        "source_index": Value("int64"),
        "difficulty": Value("float32"),
        "caption": Value("string"),
        "caption_embeds": Array2D(embeds.shape[1:], "float16"),
        "caption_mask": List(Value("int8"), length=max_length),
        "latents": Array3D((2 * channels, 8, 8), "float16"),
    }
    if visual:
        columns["visual_embeds"] = rng.normal(size=(rows, 16, 32)).astype(np.float16)
        features["visual_embeds"] = Array2D((16, 32), "float16")
    samples = Dataset.from_dict(columns, features=Features(features))
    from transformers import T5EncoderModel

    info = {
        "latents": {
            "space": space,
            "vae": None,
            "scaling_factor": 0.5 if space == "latent" else 1.0,
            "shift_factor": 0.0,
        },
        "text_to_image": {
            "caption_column": "text",
            "caption_choice": "first",
            "groups": {
                "source": "label",
                "num_groups": groups,
                "sizes": np.bincount(columns["label"]).tolist(),
                "seed": 0,
            },
            "text_encoder": model_provenance(T5EncoderModel.from_pretrained(encoder_dir)),
            "max_length": max_length,
        },
    }
    CondensedDataset(samples, None, info).save_to_disk(path, card=False)
    return path


def train_args(dataset: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--dataset", str(dataset), "--output_dir", str(out), "--model", "SiT-S/2",
        "--model_config_overrides", TINY, "--projector_dim", "32", "--train_batch_size", "4",
        "--max_train_steps", "2", "--logging_steps", "1", "--checkpointing_steps", "100",
        "--num_validation_images", "0", "--vae", "none", "--report_to", "none", *extra,
    ]  # fmt: skip


def save_tiny_clip(folder: Path, seed: int = 0) -> Path:
    """A tiny random ``CLIPModel`` + ``CLIPProcessor`` (byte-level BPE over single characters, 32 px images),
    saved with ``save_pretrained``: what ``CLIPScore.from_pretrained`` loads."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # GPT-2's byte -> printable character map (CLIP's byte-level BPE alphabet)
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    extra = [b for b in range(256) if b not in printable]
    chars = [chr(b) for b in printable] + [chr(256 + i) for i in range(len(extra))]
    tokens = [*chars, *(c + "</w>" for c in chars), "<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(tokens)}
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
    )
    config = CLIPConfig(
        text_config={"vocab_size": len(vocab), "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 20, "projection_dim": 8,
                     "bos_token_id": vocab["<|startoftext|>"], "eos_token_id": vocab["<|endoftext|>"],
                     "pad_token_id": vocab["<|endoftext|>"]},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8, "projection_dim": 8},
        projection_dim=8,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config).eval()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
