"""The cost of text conditioning: a training step of a text-conditioned SiT against the class-conditional one.

Builds the same SiT twice, class-conditional (``num_classes`` classes) and text-conditioned (cross-attention to
``L`` caption tokens of width ``D``, plus the pooled caption in the adaLN conditioning; docs/text-to-image.md),
and times forward + backward of the flow-matching loss on random inputs, the two interleaved in one process so
both see the same machine state. Prints the median seconds per step of each and their ratio, next to the
multiply-add ratio of the blocks (per block: ``12 T D^2 + 2 T^2 D`` for the SiT block, plus ``2 T D^2 + 2 L D^2 +
2 T L D`` for the cross-attention).

    python benchmarks/bench_text_sit.py                                  # SiT-S/2 at 256 px (T = 256), CLIP-L text
    python benchmarks/bench_text_sit.py --preset SiT-XL/2 --batch 4 --device cuda
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def block_macs(tokens: int, width: int, caption_tokens: int | None) -> float:
    """Multiply-adds of one SiT block per sample (attention + MLP), plus its cross-attention when captioned."""
    base = 12 * tokens * width**2 + 2 * tokens**2 * width
    if caption_tokens is None:
        return float(base)
    cross = 2 * tokens * width**2 + 2 * caption_tokens * width**2 + 2 * tokens * caption_tokens * width
    return float(base + cross)


def main() -> None:
    from d2c_hf.models.transformer_sit import SiTTransformer2DModel, preset_config
    from d2c_hf.train.losses import flow_matching_loss, interpolate

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="SiT-S/2")
    parser.add_argument(
        "--sample_size", type=int, default=32, help="latent side (32 = 256 px with an 8x VAE)"
    )
    parser.add_argument("--caption_tokens", type=int, default=77, help="L (77 for CLIP, 120 for PixArt's T5)")
    parser.add_argument(
        "--caption_dim", type=int, default=768, help="D of the caption tokens (768 CLIP-L, 4096 T5-XXL)"
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    device = torch.device(args.device)
    preset = preset_config(args.preset)
    common = {**preset, "sample_size": args.sample_size, "in_channels": 4}
    models = {
        "class": SiTTransformer2DModel(**common, num_classes=1000),
        "text": SiTTransformer2DModel(
            **common, num_classes=0, caption_embed_dim=args.caption_dim, caption_seq_len=args.caption_tokens
        ),
    }
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 4, args.sample_size, args.sample_size, generator=generator).to(device)
    eps = torch.randn(x.shape, generator=generator).to(device)
    t = torch.rand(args.batch, generator=generator).to(device)
    labels = torch.randint(0, 1000, (args.batch,), generator=generator).to(device)
    captions = torch.randn(args.batch, args.caption_tokens, args.caption_dim, generator=generator).to(device)
    mask = torch.ones(args.batch, args.caption_tokens, dtype=torch.bool, device=device)
    inputs = {
        "class": {"class_labels": labels},
        "text": {"encoder_hidden_states": captions, "encoder_attention_mask": mask},
    }
    for model in models.values():
        model.to(device).train()  # training mode: class and caption dropout included, as in train_sit.py
    models["text"].set_empty_caption(
        torch.zeros(args.caption_tokens, args.caption_dim), torch.ones(args.caption_tokens)
    )

    def step(name: str) -> float:
        model = models[name]
        x_t, target = interpolate(x, eps, t)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss = flow_matching_loss(model(x_t, t, **inputs[name]).sample, target)
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    for name in models:  # warm-up
        step(name)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.repeats):
        for name in models:
            times[name].append(step(name))
    median = {name: statistics.median(values) for name, values in times.items()}
    tokens = (args.sample_size // preset["patch_size"]) ** 2
    width = preset["hidden_size"]
    result = {
        "preset": args.preset,
        "tokens": tokens,
        "caption_tokens": args.caption_tokens,
        "caption_dim": args.caption_dim,
        "batch": args.batch,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "parameters": {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()},
        "seconds_per_step": median,
        "step_time_ratio_text_over_class": median["text"] / median["class"],
        "block_macs_ratio_text_over_class": block_macs(tokens, width, args.caption_tokens)
        / block_macs(tokens, width, None),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
