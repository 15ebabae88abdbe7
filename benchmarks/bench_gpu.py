"""The two GPU numbers D2C's cost rests on, in bf16 on one GPU, with model FLOPs utilisation (MFU).

1. **Scoring** (Select): DiT-XL/2-256 difficulty scoring throughput in (image, timestep) pairs/s:
   ``DifficultyScorer.score_inputs`` on latents (what ``d2c score`` runs 1.28M x 10 times on
   ImageNet), and the bare model forward on the same ``B x T`` batch, over a batch sweep, eager and
   ``torch.compile``; plus the SD-VAE encoder's images/s (once per image, at 256 px).
2. **Training** (Train): images/s of one ``examples/train_sit.py`` step of SiT-XL/2 + REPA
   (projector at block 8 onto 768-d DINOv2-B tokens) + DC-Embedding (T5-XL 16 x 2048 class text):
   REPA loss, backward, gradient clipping, AdamW, EMA, under bf16 autocast, over per-GPU batches.

MFU = model FLOPs / second / the device's peak dense bf16 FLOP/s. Model FLOPs are analytic
(:func:`dit_forward_flops`, :func:`sit_forward_flops`: 2 per multiply-add of every matmul and
convolution, attention included; training = 3 x forward), checked against
``torch.utils.flop_counter`` in ``tests/test_bench_gpu.py``. Weights are random: throughput does not
depend on their values, and no download is needed.

Projections printed at the end (docs/benchmarks.md gives the formulas): ImageNet-1k scoring on 8 GPUs
and the paper's 40k-step training run at batch 256 on 8 GPUs, assuming linear scaling.

    python benchmarks/bench_gpu.py --json bench_gpu.json            # on a CUDA GPU (~5-10 min on an H100)
    python benchmarks/bench_gpu.py --tiny                           # tiny models on the CPU (seconds)

Without CUDA the tiny configuration runs (what the test suite does), so the script stays tested.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

IMAGENET_TRAIN_IMAGES = 1_281_167
SCORING_TIMESTEPS = 10
PAPER_TRAIN_STEPS, PAPER_GLOBAL_BATCH, NUM_GPUS = 40_000, 256, 8
TIMESTEP_CHANNELS = 256  # sinusoidal timestep features of DiT/SiT

#: Peak dense (no sparsity) bf16 tensor-core TFLOP/s from NVIDIA's data sheets; first match wins.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989.4),
    ("H100 PCIe", 756.5),
    ("H100", 989.4),  # SXM
    ("A100", 312.0),
    ("L40S", 362.05),
    ("L4", 121.0),
)

# facebook/DiT-XL-2-256's transformer and stabilityai/sd-vae-ft-ema's VAE (their config.json values)
DIT_XL_2_256 = dict(
    num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8, num_layers=28,
    sample_size=32, patch_size=2, num_embeds_ada_norm=1000,
)  # fmt: skip
SD_VAE = dict(
    in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
    latent_channels=4, norm_num_groups=32, sample_size=256, scaling_factor=0.18215,
)  # fmt: skip
# SiT-XL/2 as D2C trains it: REPA projector (depth 8, 2048 -> 768) and DC-Embedding (flan-T5-XL, 16 tokens)
SIT_XL_2_D2C = dict(
    sample_size=32, patch_size=2, in_channels=4, hidden_size=1152, depth=28, num_attention_heads=16,
    num_classes=1000, encoder_depth=8, projector_dim=2048, z_dims=[768], text_embed_dim=2048, text_seq_len=16,
)  # fmt: skip

TINY_DIT = dict(DIT_XL_2_256, num_attention_heads=2, attention_head_dim=16, num_layers=2, sample_size=8, num_embeds_ada_norm=10)  # fmt: skip
TINY_VAE = dict(SD_VAE, down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                block_out_channels=(8, 16, 16), layers_per_block=1, norm_num_groups=8, sample_size=32)  # fmt: skip
TINY_SIT = dict(SIT_XL_2_D2C, sample_size=8, hidden_size=32, depth=2, num_attention_heads=2, num_classes=10,
                encoder_depth=1, projector_dim=32, z_dims=[16], text_embed_dim=12, text_seq_len=4)  # fmt: skip


# --------------------------------------------------------------------------------------
# FLOP counts
# --------------------------------------------------------------------------------------


def dit_forward_flops(config: Mapping[str, Any], batch: int) -> int:
    """FLOPs of one forward of diffusers' ``DiTTransformer2DModel`` (``norm_type="ada_norm_zero"``) on ``batch`` inputs.

    With ``N`` = batch, ``T = (sample_size / p)^2`` tokens, width ``D = heads * head_dim``, ``L`` blocks::

        patch embedding   2 N T (C_in p^2) D
        per block         2 N (256 D + D^2)          timestep MLP (diffusers recomputes it in every block)
                          + 2 N D 6D                 adaLN-Zero modulation
                          + 8 N T D^2                q, k, v, out projections
                          + 4 N T^2 D                softmax(q k^T) v
                          + 16 N T D^2               MLP (4x)
        output            2 N (256 D + D^2) + 2 N D 2D + 2 N T D (p^2 C_out)

    i.e. 2 x the multiply-adds of every matmul/convolution (DiT-XL/2: 118.6 GMACs per image, the DiT paper's "Gflops").
    """
    n = batch
    d = config["num_attention_heads"] * config["attention_head_dim"]
    p, layers = config["patch_size"], config["num_layers"]
    tokens = (config["sample_size"] // p) ** 2
    c_in = config["in_channels"]
    c_out = config.get("out_channels") or c_in
    timestep_mlp = 2 * n * (TIMESTEP_CHANNELS * d + d * d)
    block = timestep_mlp + 2 * n * d * 6 * d + 24 * n * tokens * d * d + 4 * n * tokens * tokens * d
    head = timestep_mlp + 2 * n * d * 2 * d + 2 * n * tokens * d * p * p * c_out
    return 2 * n * tokens * c_in * p * p * d + layers * block + head


def sit_forward_flops(config: Mapping[str, Any], batch: int, *, projections: bool = True) -> int:
    """FLOPs of one forward of :class:`~d2c_hf.models.SiTTransformer2DModel` on ``batch`` inputs.

    Same terms as :func:`dit_forward_flops` (MLP width ``mlp_ratio * D``), the timestep MLP computed once,
    plus the DC-Embedding (``Conv1d`` over the ``L_t`` text tokens and a D x D MLP) and, with
    ``projections``, REPA's projectors on every token (``D -> P -> P -> z``).
    """
    n = batch
    d, p, layers = config["hidden_size"], config["patch_size"], config["depth"]
    hidden = int(d * config.get("mlp_ratio", 4.0))
    tokens = (config["sample_size"] // p) ** 2
    c_in = config["in_channels"]
    c_out = config.get("out_channels") or (2 * c_in if config.get("learn_sigma") else c_in)
    flops = 2 * n * tokens * c_in * p * p * d + 2 * n * (TIMESTEP_CHANNELS * d + d * d)
    if config.get("text_embed_dim"):
        flops += 2 * n * d * config["text_embed_dim"] * config.get("text_seq_len", 16) + 2 * n * 2 * d * d
    block = (
        2 * n * d * 6 * d + 8 * n * tokens * d * d + 4 * n * tokens * tokens * d + 4 * n * tokens * d * hidden
    )
    flops += layers * block + 2 * n * d * 2 * d + 2 * n * tokens * d * p * p * c_out
    if projections:
        width = config.get("projector_dim", 2048)
        for z in config.get("z_dims") or ():
            flops += 2 * n * tokens * (d * width + width * width + width * z)
    return flops


def train_step_flops(config: Mapping[str, Any], batch: int) -> int:
    """Model FLOPs of a training step: 3 x forward (backward = 2 x forward), the usual MFU convention."""
    return 3 * sit_forward_flops(config, batch, projections=bool(config.get("z_dims")))


def peak_for_name(name: str) -> float | None:
    """Peak dense bf16 TFLOP/s of a CUDA device name (``torch.cuda.get_device_name``), ``None`` if unknown."""
    return next((value for key, value in PEAK_BF16_TFLOPS if key in name), None)


def peak_tflops(device: torch.device, override: float | None = None) -> tuple[float | None, str]:
    """``(peak dense bf16 TFLOP/s, device name)``; ``None`` when unknown (pass ``--peak_tflops``)."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "cpu")
    if override is not None:
        return override, name
    return (peak_for_name(name) if device.type == "cuda" else None), name


# --------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, iters: int, warmup: int) -> float:
    """Seconds per call of ``fn`` after ``warmup`` calls (synchronised on CUDA)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / iters


def _mfu(flops_per_second: float, peak: float | None) -> float | None:
    return None if peak is None else flops_per_second / (peak * 1e12)


# --------------------------------------------------------------------------------------
# 1. scoring
# --------------------------------------------------------------------------------------


def bench_scoring(args: argparse.Namespace, device: torch.device, peak: float | None) -> dict[str, Any]:
    from diffusers import AutoencoderKL, DiTTransformer2DModel

    from d2c_hf.selection.scorer import DifficultyScorer

    dit_config, vae_config = (TINY_DIT, TINY_VAE) if args.tiny else (DIT_XL_2_256, SD_VAE)
    with torch.device(device):
        model = DiTTransformer2DModel(**dit_config).eval()
        vae = AutoencoderKL(**vae_config).eval()
    scorer = DifficultyScorer(
        model,
        vae,
        num_timesteps=SCORING_TIMESTEPS,
        dtype=args.dtype,
        device=device,
        batch_size=max(args.score_batches),
    )
    steps, size, channels = scorer.num_timesteps, scorer.latent_size, scorer.channels
    rows = []
    for compiled in [False, True] if args.compile else [False]:
        if compiled:
            scorer.model = torch.compile(model, backend=args.compile_backend)
        for batch in args.score_batches:
            g = torch.Generator().manual_seed(batch)
            x0 = torch.randn(batch, channels, size, size, generator=g).to(device)
            labels = torch.randint(0, scorer.num_classes, (batch,), generator=g).numpy()
            keys = np.arange(batch, dtype=np.uint64)
            pairs = batch * steps
            x_t = torch.randn(pairs, channels, size, size, generator=g).to(device)
            t = torch.randint(0, 1000, (pairs,), generator=g).to(device)
            y = torch.as_tensor(labels, device=device).repeat_interleave(steps)

            @torch.inference_mode()
            def forward(x_t=x_t, t=t, y=y):
                with torch.autocast(device.type, dtype=args.dtype, enabled=args.dtype != torch.float32):
                    return scorer.model(x_t, timestep=t, class_labels=y).sample

            tick = time.perf_counter()
            scorer.score_inputs(x0, labels, keys)  # first call: compiles when compiled
            first_call = time.perf_counter() - tick
            score_s = timed(lambda x0=x0, labels=labels, keys=keys: scorer.score_inputs(x0, labels, keys), device,
                            args.iters, args.warmup)  # fmt: skip
            forward_s = timed(forward, device, args.iters, args.warmup)
            flops = dit_forward_flops(dit_config, pairs)
            rows.append({
                "compile": compiled, "images": batch, "pairs_per_forward": pairs,
                "score_pairs_per_s": pairs / score_s, "forward_pairs_per_s": pairs / forward_s,
                "score_mfu": _mfu(flops / score_s, peak), "forward_mfu": _mfu(flops / forward_s, peak),
                "first_call_s": first_call,
            })  # fmt: skip
    scorer.model = model
    vae_batch = args.vae_batch
    pixels = torch.randint(0, 256, (vae_batch, scorer.resolution, scorer.resolution, 3), dtype=torch.uint8)
    encode_s = timed(lambda: scorer.encode(pixels), device, args.iters, args.warmup)
    return {
        "model": "tiny DiT" if args.tiny else "DiT-XL/2-256 (random weights)",
        "config": dit_config,
        "timesteps": steps,
        "gflops_per_pair": dit_forward_flops(dit_config, 1) / 1e9,
        "rows": rows,
        "vae_encode_images_per_s": vae_batch / encode_s,
        "vae_batch": vae_batch,
    }


# --------------------------------------------------------------------------------------
# 2. training
# --------------------------------------------------------------------------------------


def bench_training(args: argparse.Namespace, device: torch.device, peak: float | None) -> dict[str, Any]:
    from diffusers.training_utils import EMAModel

    from d2c_hf.models.transformer_sit import SiTTransformer2DModel
    from d2c_hf.train.losses import compute_loss, seeded_generator

    config = TINY_SIT if args.tiny else SIT_XL_2_D2C
    with torch.device(device):
        model = SiTTransformer2DModel(**config)
    g = torch.Generator().manual_seed(0)
    text = torch.randn(config["num_classes"], config["text_seq_len"], config["text_embed_dim"], generator=g)
    model.set_class_text_table(text.half(), torch.ones(text.shape[:2], dtype=torch.bool))
    model.to(device).train()
    if args.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.999), weight_decay=0.0)
    ema = EMAModel(model.parameters(), decay=0.9999, min_decay=0.9999, foreach=True)
    tokens = (config["sample_size"] // config["patch_size"]) ** 2
    rows = []
    for batch in args.train_batches:
        data = {
            "latents": torch.randn(batch, config["in_channels"], config["sample_size"], config["sample_size"], generator=g).to(device),
            "labels": torch.randint(0, config["num_classes"], (batch,), generator=g).to(device),
            "visual_embeds": torch.randn(batch, tokens, config["z_dims"][0], generator=g).half().to(device),
        }  # fmt: skip

        generator = seeded_generator(0, batch, device=device)  # advances: fresh t and noise every step

        def step(data=data, generator=generator):
            with torch.autocast(device.type, dtype=args.dtype, enabled=args.dtype != torch.float32):
                loss = compute_loss(model, data, generator=generator)["loss"]
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            ema.step(model.parameters())

        try:
            seconds = timed(step, device, args.iters, args.warmup)
        except torch.OutOfMemoryError:
            rows.append({"images": batch, "error": "out of memory"})
            optimizer.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            continue
        flops = train_step_flops(config, batch)
        rows.append(
            {
                "images": batch,
                "images_per_s": batch / seconds,
                "step_s": seconds,
                "mfu": _mfu(flops / seconds, peak),
            }
        )
    return {
        "model": "tiny SiT + REPA + DC-Embedding"
        if args.tiny
        else "SiT-XL/2 + REPA + DC-Embedding (random weights)",
        "config": config,
        "gflops_per_image_step": train_step_flops(config, 1) / 1e9,
        "parameters": sum(p.numel() for p in model.parameters()),
        "gradient_checkpointing": bool(args.gradient_checkpointing),
        "rows": rows,
    }


# --------------------------------------------------------------------------------------
# projections
# --------------------------------------------------------------------------------------


def projections(scoring: Mapping[str, Any], training: Mapping[str, Any]) -> dict[str, Any]:
    """ImageNet-1k scoring and the 40k-step training run on ``NUM_GPUS`` GPUs from the measured rates,
    assuming linear scaling across GPUs (scoring shards are independent; DDP at batch 32/GPU)."""
    best_pairs = max(r["score_pairs_per_s"] for r in scoring["rows"])
    score_h = IMAGENET_TRAIN_IMAGES * SCORING_TIMESTEPS / (NUM_GPUS * best_pairs) / 3600
    encode_h = IMAGENET_TRAIN_IMAGES / (NUM_GPUS * scoring["vae_encode_images_per_s"]) / 3600
    fitting = [r for r in training["rows"] if "images_per_s" in r]
    out = {
        "scoring_hours_8gpu": score_h,
        "vae_encode_hours_8gpu": encode_h,
        "select_hours_8gpu": score_h + encode_h,
    }
    if fitting:
        rate = max(r["images_per_s"] for r in fitting)
        out["train_40k_hours_8gpu"] = PAPER_TRAIN_STEPS * PAPER_GLOBAL_BATCH / (NUM_GPUS * rate) / 3600
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny models (default when CUDA is unavailable)")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument(
        "--score_batches", type=int, nargs="+", default=None, help="images per scoring batch (x10 pairs)"
    )
    parser.add_argument(
        "--train_batches", type=int, nargs="+", default=None, help="images per GPU per training step"
    )
    parser.add_argument("--vae_batch", type=int, default=None)
    parser.add_argument("--iters", type=int, default=None, help="timed calls per setting")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls first")
    parser.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, default=None, help="also torch.compile the scorer"
    )
    parser.add_argument("--compile_backend", default="inductor", help="torch.compile backend (tests: eager)")
    parser.add_argument("--gradient_checkpointing", action="store_true")
    parser.add_argument(
        "--dtype",
        choices=("bf16", "fp32"),
        default=None,
        help="autocast dtype (default: bf16 on CUDA, fp32 on CPU)",
    )
    parser.add_argument(
        "--peak_tflops", type=float, default=None, help="the device's peak dense bf16 TFLOP/s"
    )
    parser.add_argument("--skip", nargs="*", choices=("scoring", "training"), default=[])
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    args.device = device
    args.tiny = args.tiny or device.type != "cuda"
    # bf16 autocast on a CPU is emulated and slower than fp32: the CPU run checks the code path, not speed
    args.dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[
        args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    ]
    defaults = (
        {"score_batches": [2, 4], "train_batches": [2, 4], "vae_batch": 2, "iters": 1, "warmup": 1, "compile": False}
        if args.tiny
        else {"score_batches": [8, 16, 32, 64], "train_batches": [32, 64], "vae_batch": 64, "iters": 10, "warmup": 3, "compile": True}
    )  # fmt: skip
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = args.device
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    peak, name = peak_tflops(device, args.peak_tflops)
    result: dict[str, Any] = {
        "device": name, "device_type": device.type, "peak_bf16_tflops": peak, "tiny": args.tiny,
        "torch": torch.__version__, "dtype": f"{str(args.dtype).removeprefix('torch.')} autocast",
    }  # fmt: skip
    if "scoring" not in args.skip:
        result["scoring"] = bench_scoring(args, device, peak)
    if "training" not in args.skip:
        result["training"] = bench_training(args, device, peak)
    if "scoring" in result and "training" in result:
        result["projections"] = projections(result["scoring"], result["training"])
    report(result)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2, default=str)
    return result


def _pct(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:.1f}%"


def report(result: Mapping[str, Any]) -> None:
    print(f"device: {result['device']} ({result['device_type']}), peak bf16 {result['peak_bf16_tflops']} TFLOP/s, "
          f"torch {result['torch']}{', TINY configuration' if result['tiny'] else ''}")  # fmt: skip
    if "scoring" in result:
        s = result["scoring"]
        print(
            f"\n[scoring] {s['model']}: {s['gflops_per_pair']:.1f} GFLOP per (image, timestep) pair, T = {s['timesteps']}"
        )
        print(
            f"{'compile':>8} {'images':>7} {'pairs':>6} {'score pairs/s':>14} {'MFU':>7} {'forward pairs/s':>16} {'MFU':>7}"
        )
        for r in s["rows"]:
            print(f"{r['compile']!s:>8} {r['images']:>7} {r['pairs_per_forward']:>6} {r['score_pairs_per_s']:>14.1f} "
                  f"{_pct(r['score_mfu']):>7} {r['forward_pairs_per_s']:>16.1f} {_pct(r['forward_mfu']):>7}")  # fmt: skip
        print(f"VAE encoder: {s['vae_encode_images_per_s']:.1f} images/s (batch {s['vae_batch']})")
    if "training" in result:
        t = result["training"]
        print(
            f"\n[training] {t['model']}: {t['parameters'] / 1e6:.1f} M parameters, {t['gflops_per_image_step']:.1f} GFLOP per image-step"
        )
        for r in t["rows"]:
            if "error" in r:
                print(f"  batch {r['images']:>4}: {r['error']}")
            else:
                print(
                    f"  batch {r['images']:>4}: {r['images_per_s']:.1f} images/s, {r['step_s'] * 1e3:.1f} ms/step, MFU {_pct(r['mfu'])}"
                )
    if "projections" in result:
        p = result["projections"]
        note = " (tiny models: not a projection)" if result["tiny"] else ""
        print(f"\nprojections on {NUM_GPUS} GPUs{note}: ImageNet-1k scoring {p['scoring_hours_8gpu']:.2f} h "
              f"+ VAE encoding {p['vae_encode_hours_8gpu']:.2f} h; 40k steps x batch {PAPER_GLOBAL_BATCH}: "
              f"{p.get('train_40k_hours_8gpu', float('nan')):.2f} h")  # fmt: skip


if __name__ == "__main__":
    main()
