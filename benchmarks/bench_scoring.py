"""Scoring throughput: ``DifficultyScorer`` against the raw forward pass of the same model.

The difficulty score is T forward passes per image; everything else the scorer does (decoding,
centre crop, content hash, common-random-number noise, DDPM noising, the MSE) is overhead. This
benchmark measures, side by side in one process, in (image, timestep) pairs per second:

* **raw forward**: ``model(x_t, t, y)`` on a ready ``(B*T, C, h, w)`` batch under ``inference_mode``;
* **score_pixels**: ``scorer.score_pixels(pixels, labels)`` on ``B`` preprocessed uint8 images
  (keys, noise, noising, the same ``B*T`` forward, MSE);
* **apply**: ``scorer.apply(dataset)`` on PNG-encoded digits (adds ``datasets.map``, PNG decoding and
  the ADM crop, and writing the column),
* **end_to_end**: ``d2c score``'s engine (:func:`d2c_hf.run.sharded.run_score`) on ``--e2e-rows`` encoded
  images (``--image-format png|jpeg``): decoding and cropping in ``--num-workers`` DataLoader workers, the
  scorer, atomic shard files and the final merge into ``scores/``,

and prints each as a ratio of the raw forward throughput (1.0 = no overhead). Timings alternate
between the three (median of ``--repeats``) so that a machine whose load drifts affects them alike.

The estimator options (``--num-draws``, ``--antithetic``, ``--timestep-grid stratified``) multiply the
forward passes per image; pairs/s count every forward pass, so the ratios stay comparable. With
``--num-draws >= 2`` the benchmark also measures what the split-half **reliability** costs, side by side:
``score_batch`` (the draws' mean *and* the two halves) against ``draw_errors`` plus the mean alone, and
the dataset-level step (:func:`d2c_hf.selection.scorer.finish_scores`: standardisation statistics and the
within-class rank correlation) on ``--finish-rows`` rows, as a fraction of scoring those rows.

Models: random diffusers ``DiTTransformer2DModel`` s (scores do not depend on the weights' quality):
``dit-s`` has DiT-S's width and depth (hidden 384, 6 heads, 12 layers) with patch 4 on 32x32 RGB
pixels (64 tokens), ``tiny`` (hidden 128, 4 layers, patch 4, 64 tokens) is the worst case for the
ratio: the least compute per byte of overhead.

    python benchmarks/bench_scoring.py                      # both presets, B=8, T=10, CPU
    python benchmarks/bench_scoring.py --preset dit-s --batch-size 16 --repeats 5
    python benchmarks/bench_scoring.py --device cuda --dtype bf16 --batch-size 64
    python benchmarks/bench_scoring.py --preset dit-s --batch-size 16 --e2e-rows 512 --num-workers 1
    python benchmarks/bench_scoring.py --preset dit-s --num-draws 2 --repeats 5   # + the reliability's cost
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

PRESETS: dict[str, dict[str, int]] = {
    "dit-s": {"num_attention_heads": 6, "attention_head_dim": 64, "num_layers": 12, "patch_size": 4},
    "tiny": {"num_attention_heads": 4, "attention_head_dim": 32, "num_layers": 4, "patch_size": 4},
}


def build_model(preset: str, resolution: int = 32, num_classes: int = 10, seed: int = 0):
    """A random pixel-space DiT (3 channels in, learned sigma: 6 out) in eval mode."""
    from diffusers import DiTTransformer2DModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # benchmark-side: reproducible random weights
        model = DiTTransformer2DModel(
            in_channels=3,
            out_channels=6,
            sample_size=resolution,
            num_embeds_ada_norm=num_classes,
            **PRESETS[preset],
        )
    return model.eval()


def digits_dataset(num_rows: int, resolution: int = 32):
    """``num_rows`` scikit-learn digits as PNG images (cycled if more rows than digits are asked for)."""
    from d2c_hf.data.digits import load_digits_dataset

    train = load_digits_dataset(image_size=resolution)["train"]
    return train.select([i % len(train) for i in range(num_rows)])


def timed(function: Callable[[], Any]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def raw_forward(scorer, batch_size: int) -> Callable[[], Any]:
    """The model alone on a ready (B*T) batch, chunked like the scorer."""
    model, steps = scorer.model, scorer.num_timesteps
    n = batch_size * scorer.forward_passes_per_image
    generator = torch.Generator().manual_seed(0)
    x = torch.randn((n, scorer.channels, scorer.latent_size, scorer.latent_size), generator=generator)
    x = x.to(scorer.device)
    t = scorer.adapter.timesteps[torch.arange(steps, device=scorer.device).repeat(n // steps)]
    y = torch.randint(0, scorer.num_classes, (n,), generator=generator).to(scorer.device)
    chunk = scorer.max_forward_batch or n

    def run() -> None:
        with torch.inference_mode(), scorer._autocast():
            for start in range(0, n, chunk):
                model(
                    x[start : start + chunk],
                    timestep=t[start : start + chunk],
                    class_labels=y[start : start + chunk],
                )
        if scorer.device.type == "cuda":
            torch.cuda.synchronize()

    return run


def score_pixels(scorer, pixels: np.ndarray, labels: np.ndarray) -> Callable[[], Any]:
    def run() -> None:
        scorer.score_pixels(pixels, labels)
        if scorer.device.type == "cuda":
            torch.cuda.synchronize()

    return run


def apply(scorer, dataset) -> Callable[[], Any]:
    def run() -> None:
        scorer.apply(dataset, keep_in_memory=True, load_from_cache_file=False, desc=None)

    return run


def encoded_dataset(dataset, image_format: str):
    """The dataset with its images re-encoded as ``png`` or ``jpeg`` bytes (quality 90)."""
    import io

    from datasets import Image

    if image_format == "png":
        return dataset

    def encode(batch):
        out = []
        for image in batch["image"]:
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, format="JPEG", quality=90)
            out.append({"bytes": buffer.getvalue(), "path": None})
        return {"image": out}

    return dataset.map(
        encode, batched=True, features=dataset.features.copy(), keep_in_memory=True
    ).cast_column("image", Image())


def end_to_end(scorer, dataset, *, batch_size: int, num_workers: int, workdir: str) -> Callable[[], Any]:
    """``d2c score``'s engine (:func:`d2c_hf.run.sharded.run_score`) on ``dataset`` into a fresh output folder
    each call (no resume)."""
    import shutil
    import uuid
    from pathlib import Path

    from accelerate import PartialState

    from d2c_hf.run.options import CondenseOptions, RunOptions, ScoreOptions
    from d2c_hf.run.rows import source_from_dataset
    from d2c_hf.run.sharded import ShardedRunner, run_score

    state = PartialState(cpu=scorer.device.type == "cpu")
    source = source_from_dataset(dataset, {"dataset": "bench-digits"})
    rows = len(dataset)
    options = CondenseOptions(
        score=ScoreOptions(scorer=scorer), resolution=scorer.resolution, batch_size=batch_size
    )

    def run() -> None:
        out = Path(workdir) / f"run-{uuid.uuid4().hex[:8]}"
        shard_size = max(batch_size, rows // 4 // batch_size * batch_size)
        run_options = RunOptions(output_dir=out, shard_size=shard_size, num_workers=num_workers)
        run_score(ShardedRunner(options, run_options, state, source))
        shutil.rmtree(out)

    return run


def reliability_cost(
    scorer, pixels: np.ndarray, labels: np.ndarray, repeats: int, finish_rows: int
) -> dict[str, Any]:
    """What the split-half reliability adds to scoring, measured side by side.

    * per batch: ``score_batch`` (mean + halves) against ``draw_errors`` + the mean only (alternating,
      median of ``repeats``);
    * per dataset: :func:`finish_scores` on ``finish_rows`` synthetic rows, against the time scoring
      those rows takes at the measured ``score_batch`` rate.
    """
    from d2c_hf.selection.noise import pixel_keys
    from d2c_hf.selection.scorer import finish_scores

    x0, keys = scorer.encode(pixels), pixel_keys(pixels)
    draws = range(scorer.num_draws)

    def plain() -> None:
        errors = scorer.draw_errors(x0, labels, keys, draws)
        errors.mean(dim=2).mean(dim=1).cpu().numpy()

    def tracked() -> None:
        scorer.score_batch(x0, labels, keys)

    plain(), tracked()  # warm-up
    times: dict[str, list[float]] = {"plain": [], "tracked": []}
    for _ in range(repeats):
        times["plain"].append(timed(plain))
        times["tracked"].append(timed(tracked))
    plain_s, tracked_s = statistics.median(times["plain"]), statistics.median(times["tracked"])
    rng = np.random.default_rng(0)
    steps = scorer.num_timesteps
    halves = rng.random((finish_rows, steps, 2), dtype=np.float32)
    per_timestep = halves.mean(2)
    finish_labels = np.arange(finish_rows) % scorer.num_classes
    finish_s = timed(lambda: finish_scores(per_timestep, halves, finish_labels, scorer.config))
    scoring_s = tracked_s * finish_rows / len(pixels)
    return {
        "batch_plain_s": plain_s,
        "batch_tracked_s": tracked_s,
        "ratio_batch": tracked_s / plain_s,
        "finish_rows": finish_rows,
        "finish_s": finish_s,
        "finish_fraction": finish_s / scoring_s,
    }


def benchmark(
    preset: str,
    *,
    batch_size: int = 8,
    num_timesteps: int = 10,
    apply_rows: int | None = None,
    repeats: int = 3,
    device: str | None = None,
    dtype: str | None = None,
    max_forward_batch: int | None = None,
    e2e_rows: int | None = None,
    num_workers: int = 1,
    image_format: str = "png",
    num_draws: int = 1,
    antithetic: bool = False,
    timestep_grid: str = "midpoints",
    finish_rows: int = 100_000,
) -> dict[str, Any]:
    """Throughputs in (image, timestep) pairs per second and their ratios to the raw forward."""
    import datasets

    from d2c_hf.selection.scorer import DifficultyScorer
    from d2c_hf.utils.images import preprocess_images

    datasets.disable_progress_bars()
    scorer = DifficultyScorer.from_pretrained(
        build_model(preset),
        num_timesteps=num_timesteps,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        max_forward_batch=max_forward_batch,
        num_draws=num_draws,
        antithetic=antithetic,
        timestep_grid=timestep_grid,
    )
    passes = scorer.forward_passes_per_image
    apply_rows = apply_rows or 2 * batch_size
    dataset = digits_dataset(apply_rows, scorer.resolution)
    pixels, _ = preprocess_images(dataset.select(range(batch_size))["image"], scorer.resolution)
    labels = np.asarray(dataset.select(range(batch_size))["label"])
    e2e_rows = e2e_rows or 16 * batch_size
    e2e_data = encoded_dataset(digits_dataset(e2e_rows, scorer.resolution), image_format)
    workdir = tempfile.mkdtemp(prefix="bench-e2e-")
    runs = {
        "raw_forward": (raw_forward(scorer, batch_size), batch_size * passes),
        "score_pixels": (score_pixels(scorer, pixels, labels), batch_size * passes),
        "apply": (apply(scorer, dataset), apply_rows * passes),
        "end_to_end": (
            end_to_end(scorer, e2e_data, batch_size=batch_size, num_workers=num_workers, workdir=workdir),
            e2e_rows * passes,
        ),
    }
    try:
        for function, _ in runs.values():  # warm-up (allocator, oneDNN kernels, lazy imports)
            function()
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(repeats):
            for name, (function, _) in runs.items():
                times[name].append(timed(function))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rates = {name: runs[name][1] / statistics.median(times[name]) for name in runs}
    params = sum(p.numel() for p in scorer.model.parameters())
    reliability = (
        reliability_cost(scorer, pixels, labels, repeats, finish_rows) if scorer.num_draws >= 2 else None
    )
    return {
        "num_draws": num_draws,
        "antithetic": antithetic,
        "timestep_grid": timestep_grid,
        "forward_passes_per_image": passes,
        "reliability": reliability,
        "preset": preset,
        "params": params,
        "tokens": (scorer.latent_size // scorer.model.config.patch_size) ** 2,
        "batch_size": batch_size,
        "num_timesteps": num_timesteps,
        "apply_rows": apply_rows,
        "device": str(scorer.device),
        "dtype": str(scorer.dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "pairs_per_s": rates,
        "ratio_score_pixels": rates["score_pixels"] / rates["raw_forward"],
        "ratio_apply": rates["apply"] / rates["raw_forward"],
        "e2e_rows": e2e_rows,
        "num_workers": num_workers,
        "image_format": image_format,
        "e2e_images_per_s": rates["end_to_end"] / passes,
        "ratio_end_to_end": rates["end_to_end"] / rates["raw_forward"],
    }


def report(result: dict[str, Any]) -> str:
    rates = result["pairs_per_s"]
    lines = [
        f"{result['preset']}: {result['params'] / 1e6:.2f}M params, {result['tokens']} tokens, "
        f"B={result['batch_size']} x T={result['num_timesteps']} x {result['num_draws']} draw(s)"
        f"{' antithetic' if result['antithetic'] else ''} ({result['timestep_grid']}) = "
        f"{result['forward_passes_per_image']} passes/image, {result['device']} {result['dtype']}, "
        f"{result['threads']} threads",
        f"  raw forward   {rates['raw_forward']:9.1f} (image, timestep) pairs/s",
        f"  score_pixels  {rates['score_pixels']:9.1f} pairs/s   ratio {result['ratio_score_pixels']:.3f}",
        f"  apply         {rates['apply']:9.1f} pairs/s   ratio {result['ratio_apply']:.3f}"
        f"   ({result['apply_rows']} PNG rows through datasets.map)",
        f"  end_to_end    {rates['end_to_end']:9.1f} pairs/s   ratio {result['ratio_end_to_end']:.3f}"
        f"   ({result['e2e_images_per_s']:.1f} images/s; {result['e2e_rows']} {result['image_format']} rows, "
        f"{result['num_workers']} decode workers, shards + merge)",
    ]
    rel = result.get("reliability")
    if rel:
        lines.append(
            f"  reliability   score_batch (mean + halves) / mean only: ratio {rel['ratio_batch']:.3f} per batch; "
            f"finish_scores on {rel['finish_rows']:,} rows {rel['finish_s']:.3f} s = "
            f"{100 * rel['finish_fraction']:.3f} % of scoring them"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=[*PRESETS, "all"], default="all")
    parser.add_argument("--batch-size", type=int, default=8, help="images per scoring step (B)")
    parser.add_argument("--num-timesteps", type=int, default=10, help="timestep grid size (T)")
    parser.add_argument("--apply-rows", type=int, default=None, help="rows for apply (default 2B)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None, help="fp32 | bf16 | fp16 (default: bf16 on CUDA, else fp32)")
    parser.add_argument("--max-forward-batch", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--e2e-rows", type=int, default=None, help="rows for end_to_end (default 16B)")
    parser.add_argument("--num-workers", type=int, default=1, help="DataLoader decode workers for end_to_end")
    parser.add_argument(
        "--image-format", choices=["png", "jpeg"], default="png", help="end_to_end input encoding"
    )
    parser.add_argument("--num-draws", type=int, default=1, help="noise draws per timestep")
    parser.add_argument("--antithetic", action="store_true", help="antithetic pairs (eps, -eps)")
    parser.add_argument("--timestep-grid", choices=["midpoints", "stratified"], default="midpoints")
    parser.add_argument(
        "--finish-rows", type=int, default=100_000, help="rows for the dataset-level reliability step"
    )
    parser.add_argument("--json", default=None, help="also write the results to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    presets = list(PRESETS) if args.preset == "all" else [args.preset]
    results = []
    for preset in presets:
        result = benchmark(
            preset,
            batch_size=args.batch_size,
            num_timesteps=args.num_timesteps,
            apply_rows=args.apply_rows,
            repeats=args.repeats,
            device=args.device,
            dtype=args.dtype,
            max_forward_batch=args.max_forward_batch,
            e2e_rows=args.e2e_rows,
            num_workers=args.num_workers,
            image_format=args.image_format,
            num_draws=args.num_draws,
            antithetic=args.antithetic,
            timestep_grid=args.timestep_grid,
            finish_rows=args.finish_rows,
        )
        print(report(result), flush=True)
        results.append(result)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
