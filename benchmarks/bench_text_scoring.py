"""Caption-conditioned scoring throughput: ``TextDifficultyScorer`` against the bare forward pass of the same
model.

The caption-conditioned difficulty is T forward passes of a text-to-image denoiser per image, plus what a class
score does not need: each batch's captions chosen, tokenized and run through the scorer's own text encoder (once
per batch, then repeated over the T timesteps), and the caption features kept for the groups. This benchmark
measures, side by side in one process, in (image, timestep) pairs per second:

* **bare forward**: ``model(x_t, t, caption tokens)`` on a ready ``(B*T, C, h, w)`` batch and ready caption
  embeddings (what the denoiser costs alone);
* **score_pixels**: ``scorer.score_pixels(pixels, captions)`` on ``B`` preprocessed uint8 images and their
  captions: the caption encoding, keys, common-random-number noise, noising, the same ``B*T`` forward, the MSE;
* **apply**: ``scorer.apply(dataset)`` on PNG-encoded captioned digits: adds ``datasets.map``, PNG decoding,
  the ADM crop, the caption choice and checks, the k-means groups and the reliability;
* **encode only**: the text encoder on the batch's captions alone (what the caption conditioning adds),

and prints each as a ratio of the bare forward's throughput (1.0 = no overhead). Timings alternate between
them (median of ``--repeats``), so load drifts affect all alike.

Models (random weights: a score's cost does not depend on their quality), on 32 x 32 RGB pixels (the captioned
digits):

* ``pixart-s``: ``PixArtTransformer2DModel`` with PixArt-S's width and depth (hidden 384, 6 heads, 12 layers,
  patch 4: 64 tokens) and a T5 encoder of t5-small's shape (d_model 512, 6 layers, 8 heads), 32 caption tokens;
* ``sd-small``: ``UNet2DConditionModel`` (blocks 64/128/128, cross-attention) and a CLIP text encoder (hidden
  512, 6 layers), 32 caption tokens;
* ``tiny``: a 4-layer PixArt (hidden 128) and a 2-layer T5 (d_model 64): the worst case for the ratio (the
  least denoiser compute per caption).

    python benchmarks/bench_text_scoring.py                          # all presets, B=8, T=10, CPU
    python benchmarks/bench_text_scoring.py --preset pixart-s --batch-size 16 --repeats 5
    python benchmarks/bench_text_scoring.py --device cuda --dtype bf16 --batch-size 64
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

PRESETS = ("pixart-s", "sd-small", "tiny")
CAPTION_TOKENS = 32


def _t5_tokenizer(folder: Path):
    """A SentencePiece T5 tokenizer over the captioned digits' words (a real T5's is not needed offline)."""
    from transformers import T5Tokenizer

    words = "a thin regular thick left-slanted upright right-slanted handwritten zero one two three four five"
    words += " six seven eight nine ,"
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(f"\u2581{w}", -1.0 - i * 0.01) for i, w in enumerate(words.split())]
    vocab += [(c, -10.0) for c in "abcdefghijklmnopqrstuvwxyz,-\u2581"]
    tokenizer = T5Tokenizer(vocab=vocab, extra_ids=0)
    tokenizer.save_pretrained(folder)
    return tokenizer


def _clip_tokenizer(folder: Path):
    """A character-level CLIP BPE tokenizer (no merges)."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz0123456789,.-'!? ":
        for token in (c, c + "</w>"):
            vocab.setdefault(token, len(vocab))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=CAPTION_TOKENS
    )


def build_scorer_folder(preset: str, folder: Path) -> Path:
    """A random text-to-image pipeline folder in pixel space (32 x 32 RGB): transformer/unet, text encoder,
    tokenizer, scheduler and ``model_index.json`` (no VAE)."""
    from diffusers import DDPMScheduler, PixArtTransformer2DModel, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # benchmark-side: reproducible random weights
        if preset == "sd-small":
            tokenizer = _clip_tokenizer(folder / "tokenizer")
            encoder = CLIPTextModel(
                CLIPTextConfig(
                    vocab_size=len(tokenizer),
                    hidden_size=512,
                    intermediate_size=2048,
                    num_hidden_layers=6,
                    num_attention_heads=8,
                    max_position_embeddings=CAPTION_TOKENS,
                    bos_token_id=0,
                    eos_token_id=1,
                    pad_token_id=1,
                )
            )
            denoiser, name = (
                UNet2DConditionModel(
                    sample_size=32,
                    in_channels=3,
                    out_channels=3,
                    layers_per_block=1,
                    block_out_channels=(64, 128, 128),
                    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                    cross_attention_dim=512,
                    attention_head_dim=8,
                ),
                "unet",
            )
        else:
            tokenizer = _t5_tokenizer(folder / "tokenizer")
            width, layers, heads, t5_layers = (384, 12, 6, 6) if preset == "pixart-s" else (128, 4, 4, 2)
            d_model = 512 if preset == "pixart-s" else 64
            encoder = T5EncoderModel(
                T5Config(
                    vocab_size=len(tokenizer),
                    d_model=d_model,
                    d_kv=64 if preset == "pixart-s" else 16,
                    d_ff=4 * d_model,
                    num_layers=t5_layers,
                    num_heads=8 if preset == "pixart-s" else 4,
                    decoder_start_token_id=0,
                    pad_token_id=0,
                    eos_token_id=1,
                )
            )
            denoiser, name = (
                PixArtTransformer2DModel(
                    num_attention_heads=heads,
                    attention_head_dim=width // heads,
                    in_channels=3,
                    out_channels=6,
                    num_layers=layers,
                    cross_attention_dim=width,
                    sample_size=32,
                    patch_size=4,
                    caption_channels=d_model,
                ),
                "transformer",
            )
    denoiser.save_pretrained(folder / name)
    encoder.save_pretrained(folder / "text_encoder")
    DDPMScheduler().save_pretrained(folder / "scheduler")
    library = {"unet": "UNet2DConditionModel", "transformer": "PixArtTransformer2DModel"}[name]
    index = {
        "_class_name": "StableDiffusionPipeline" if name == "unet" else "PixArtAlphaPipeline",
        name: ["diffusers", library],
        "text_encoder": ["transformers", type(encoder).__name__],
        "tokenizer": ["transformers", type(tokenizer).__name__],
        "scheduler": ["diffusers", "DDPMScheduler"],
        "vae": [None, None],
    }
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder


def captioned_dataset(num_rows: int):
    """``num_rows`` captioned digits (PNG images; cycled if more rows than digits are asked for)."""
    from d2c_hf.data.captions import load_captioned_digits

    train = load_captioned_digits(image_size=32)["train"]
    return train.select([i % len(train) for i in range(num_rows)])


def timed(function: Callable[[], Any]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def _sync(scorer) -> None:
    if scorer.device.type == "cuda":
        torch.cuda.synchronize()


def bare_forward(scorer, captions: list[str]) -> Callable[[], Any]:
    """The denoiser alone on a ready (B*T) batch with ready caption conditions, chunked like the scorer."""
    steps = scorer.num_timesteps
    n = len(captions) * scorer.forward_passes_per_image
    generator = torch.Generator().manual_seed(0)
    shape = (n, scorer.channels, scorer.latent_size, scorer.latent_size)
    x = torch.randn(shape, generator=generator).to(scorer.device)
    t = scorer.adapter.timesteps[torch.arange(steps, device=scorer.device).repeat(n // steps)]
    conditions, _ = scorer.encode_captions(captions)
    rows = torch.arange(len(captions), device=scorer.device).repeat_interleave(n // len(captions))
    conditions = tuple(c[rows] for c in conditions)
    chunk = scorer.max_forward_batch or n

    def run() -> None:
        with torch.inference_mode(), scorer._autocast():
            for start in range(0, n, chunk):
                part = slice(start, start + chunk)
                scorer._call_model(
                    x[part], scorer.adapter.model_timesteps(t[part]), tuple(c[part] for c in conditions)
                )
        _sync(scorer)

    return run


def benchmark(
    preset: str,
    *,
    batch_size: int = 8,
    num_timesteps: int = 10,
    apply_rows: int | None = None,
    repeats: int = 3,
    device: str | None = None,
    dtype: str | None = None,
) -> dict[str, Any]:
    """Throughputs in (image, timestep) pairs per second and their ratios to the bare forward."""
    import datasets

    from d2c_hf.selection.text_scorer import TextDifficultyScorer
    from d2c_hf.utils.images import preprocess_images

    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory(prefix="bench-text-") as folder:
        scorer = TextDifficultyScorer.from_pretrained(
            build_scorer_folder(preset, Path(folder)),
            num_timesteps=num_timesteps,
            batch_size=batch_size,
            max_length=CAPTION_TOKENS,
            device=device,
            dtype=dtype,
            num_groups=4,
            # the one-draw probe re-scores up to 512 rows (a fixed cost per dataset, nothing at scale): left out
            # here so that apply's pairs/s count every forward pass it makes
            reliability_probe=0,
        )
    apply_rows = apply_rows or 4 * batch_size
    dataset = captioned_dataset(apply_rows)
    head = dataset.select(range(batch_size))
    pixels, _ = preprocess_images(head["image"], scorer.resolution)
    captions = list(head["text"])
    passes = scorer.forward_passes_per_image

    def score() -> None:
        scorer.score_pixels(pixels, captions)
        _sync(scorer)

    def apply() -> None:
        scorer.apply(dataset, keep_in_memory=True, load_from_cache_file=False, desc=None)

    def encode() -> None:
        with torch.inference_mode():
            scorer.encode_captions(captions)
        _sync(scorer)

    runs = {
        "bare_forward": (bare_forward(scorer, captions), batch_size * passes),
        "score_pixels": (score, batch_size * passes),
        "apply": (apply, apply_rows * passes),
        "encode_only": (encode, batch_size * passes),
    }
    for function, _ in runs.values():  # warm-up (allocator, oneDNN kernels, lazy imports)
        function()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, (function, _) in runs.items():
            times[name].append(timed(function))
    seconds = {name: statistics.median(values) for name, values in times.items()}
    rates = {name: runs[name][1] / seconds[name] for name in runs}
    return {
        "preset": preset,
        "family": scorer.family.name,
        "denoiser_params": sum(p.numel() for p in scorer.model.parameters()),
        "text_encoder_params": sum(
            p.numel() for e in scorer.caption_encoder.text_encoders for p in e.parameters()
        ),
        "caption_tokens": scorer.caption_encoder.max_length,
        "batch_size": batch_size,
        "num_timesteps": num_timesteps,
        "apply_rows": apply_rows,
        "repeats": repeats,
        "device": str(scorer.device),
        "dtype": str(scorer.dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "pairs_per_s": {k: v for k, v in rates.items() if k != "encode_only"},
        "seconds_per_batch": {k: seconds[k] for k in ("bare_forward", "score_pixels", "encode_only")},
        "ratio_score_pixels": rates["score_pixels"] / rates["bare_forward"],
        "ratio_apply": rates["apply"] / rates["bare_forward"],
        "encode_fraction": seconds["encode_only"] / seconds["score_pixels"],
    }


def report(result: dict[str, Any]) -> str:
    rates = result["pairs_per_s"]
    return "\n".join(
        [
            f"{result['preset']} ({result['family']}: denoiser {result['denoiser_params'] / 1e6:.1f} M, text encoder "
            f"{result['text_encoder_params'] / 1e6:.1f} M params, {result['caption_tokens']} tokens), "
            f"B={result['batch_size']} x T={result['num_timesteps']}, {result['device']} {result['dtype']}, "
            f"{result['threads']} threads, median of {result['repeats']}",
            f"  bare forward  {rates['bare_forward']:9.1f} pairs/s",
            f"  score_pixels  {rates['score_pixels']:9.1f} pairs/s   ratio {result['ratio_score_pixels']:.3f}",
            f"  apply         {rates['apply']:9.1f} pairs/s   ratio {result['ratio_apply']:.3f}"
            f"  ({result['apply_rows']} PNG rows, groups and reliability included)",
            f"  caption encoding: {100 * result['encode_fraction']:.1f} % of score_pixels' time",
        ]
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=PRESETS, nargs="*", default=list(PRESETS))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-timesteps", type=int, default=10)
    parser.add_argument("--apply-rows", type=int, default=None, help="rows of the apply run (default 4 x B)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    for preset in args.preset:
        result = benchmark(
            preset,
            batch_size=args.batch_size,
            num_timesteps=args.num_timesteps,
            apply_rows=args.apply_rows,
            repeats=args.repeats,
            device=args.device,
            dtype=args.dtype,
        )
        results.append(result)
        print(report(result), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
