"""Speed of ``examples/sample_sit.py`` against the bare ``SiTPipeline`` call loop, same batch, one run.

Both generate the same number of images with the same pipeline, sampler, steps, guidance and batch:

* **bare**: ``pipe(labels, ..., generator=torch.Generator().manual_seed(b), output_type="np")`` per
  batch, images kept in memory;
* **script**: ``sample_sit.main(...)`` end to end: config checks, loading the pipeline from disk,
  per-sample generators, uint8 conversion, atomic shard files, the merged ADM ``.npz`` and the sidecar.

Ratio = script images/s / bare images/s (target >= 0.9), best of ``--repeats`` alternating runs, on
both clocks: wall time, and the process's CPU time (``time.process_time``), which other jobs on a
shared machine disturb far less. One intra-op thread by default (``--threads``) so that CPU time is
not inflated by OpenMP threads spinning while they wait for a busy core.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_sampling.py
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("sample_sit", ROOT / "examples" / "sample_sit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num_samples", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8, help="SDE steps (the repa-cfg protocol has 250)")
    parser.add_argument("--guidance_scale", type=float, default=1.8)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=192)
    parser.add_argument("--sample_size", type=int, default=16, help="pixel-space SiT, patch 2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    from d2c_hf.evaluation.sampling import plan_labels
    from d2c_hf.models.transformer_sit import SiTTransformer2DModel
    from d2c_hf.pipelines import FlowMatchEulerMaruyamaScheduler, SiTPipeline

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    sample_sit = load_script()
    model = SiTTransformer2DModel(
        sample_size=args.sample_size, patch_size=2, in_channels=3, hidden_size=args.hidden, depth=args.depth,
        num_attention_heads=4, num_classes=10,
    ).eval()  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "pipe"
        SiTPipeline(
            model, FlowMatchEulerMaruyamaScheduler(), id2label={i: f"class {i}" for i in range(10)}
        ).save_pretrained(folder)
        pipe = SiTPipeline.from_pretrained(folder)
        pipe.set_progress_bar_config(disable=True)
        labels = plan_labels(args.num_samples, 10, "uniform", seed=0)

        def bare() -> tuple[float, float]:
            start, cpu = time.perf_counter(), time.process_time()
            for b, first in enumerate(range(0, args.num_samples, args.batch_size)):
                pipe(
                    labels[first : first + args.batch_size].tolist(), num_inference_steps=args.steps,
                    guidance_scale=args.guidance_scale, guidance_interval=(0.0, 0.7),
                    generator=torch.Generator().manual_seed(b), output_type="np",
                )  # fmt: skip
            return time.perf_counter() - start, time.process_time() - cpu

        def script(run: int) -> tuple[float, float, float]:
            out = Path(tmp) / f"samples-{run}"
            start, cpu = time.perf_counter(), time.process_time()
            outcome = sample_sit.main(
                sample_sit.parse_args([
                    "--pipeline", str(folder), "--output_dir", str(out), "--num_samples", str(args.num_samples),
                    "--batch_size", str(args.batch_size), "--num_inference_steps", str(args.steps),
                    "--guidance_scale", str(args.guidance_scale), "--cpu",
                ])
            )  # fmt: skip
            times = time.perf_counter() - start, time.process_time() - cpu, outcome["seconds_here"]
            with np.load(out / "samples.npz") as data:
                assert data["arr_0"].shape[0] == args.num_samples
            return times

        bare()  # warm-up (allocator, kernels)
        runs = {"bare": [], "script": []}
        for run in range(args.repeats):
            runs["bare"].append(bare())
            runs["script"].append(script(run))
    n = args.num_samples
    result = {"settings": vars(args), "parameters": sum(p.numel() for p in model.parameters())}
    for clock, column in (("wall", 0), ("cpu", 1)):
        for name in ("bare", "script"):
            result[f"{name}_images_per_s_{clock}"] = n / min(t[column] for t in runs[name])
        result[f"ratio_{clock}"] = (
            result[f"script_images_per_s_{clock}"] / result[f"bare_images_per_s_{clock}"]
        )
    # the script's sampling loop alone (wall), without loading, checks, the merge and the sidecar
    result["script_loop_images_per_s_wall"] = n / min(t[2] for t in runs["script"])
    result["ratio_loop_wall"] = result["script_loop_images_per_s_wall"] / result["bare_images_per_s_wall"]
    result["runs_seconds_wall_cpu"] = runs
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
