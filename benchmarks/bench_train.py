"""Benchmark of examples/train_sit.py and d2c_hf.train.losses.BatchSource.

(a) overhead: optimizer steps/s of the script's whole inner step (batch draw, timesteps, REPA loss, gather
    for the NaN check, backward, clipping, AdamW, EMA) vs a bare forward + backward + AdamW step of the
    same model on the same batch (ratio = bare / script; target <= 1.1).
(b) delivery: rows/s of BatchSource.next_batch() vs the default torch-format DataLoader over the same
    columns, on ImageNet-like rows (latents 8x32x32 fp16, visual tokens 256x768 fp16; target >= 10x),
    and vs the rows/s the training step of (a) consumes (steps/s x batch; target >= 10x).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_train.py [--rows 512] [--steps 30] [--device cpu]
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
    spec = importlib.util.spec_from_file_location("train_sit", ROOT / "examples" / "train_sit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_condensed(
    rows: int, latent: tuple[int, int, int], visual: tuple[int, int], classes: int, seed: int = 0
):
    from datasets import Array2D, Array3D, ClassLabel, Dataset, Features

    from d2c_hf.condensed.dataset import CondensedDataset

    rng = np.random.default_rng(seed)
    features = Features(
        {
            "label": ClassLabel(names=[f"class {i}" for i in range(classes)]),
            "latents": Array3D(latent, "float16"),
            "visual_embeds": Array2D(visual, "float16"),
        }
    )

    def chunks():
        for start in range(0, rows, 64):
            n = min(64, rows - start)
            moments = rng.standard_normal((n, *latent)).astype(np.float16)
            moments[:, latent[0] // 2 :] = np.abs(moments[:, latent[0] // 2 :]) * 0.1
            yield {
                "label": (np.arange(start, start + n) % classes).tolist(),
                "latents": moments,
                "visual_embeds": rng.standard_normal((n, *visual)).astype(np.float16),
            }

    from datasets import concatenate_datasets

    samples = concatenate_datasets([Dataset.from_dict(c, features=features) for c in chunks()])
    info = {"latents": {"space": "latent", "scaling_factor": 0.18215, "shift_factor": 0.0, "vae": None}}
    return CondensedDataset(samples, None, info)


def bench_overhead(args) -> dict:
    """(a): the script vs a bare step, same model config and batch."""
    from d2c_hf.models.transformer_sit import SiTTransformer2DModel
    from d2c_hf.train.batches import BatchSource
    from d2c_hf.train.losses import flow_matching_loss, projection_loss

    train_sit = load_script()
    overrides = {"depth": args.depth, "hidden_size": args.hidden, "num_attention_heads": args.heads}
    with tempfile.TemporaryDirectory() as tmp:
        condensed = make_condensed(args.batch * 4, (8, 16, 16), (64, 128), 10)
        condensed.save_to_disk(Path(tmp) / "data", card=False)
        script_args = train_sit.parse_args(
            [
                "--dataset", str(Path(tmp) / "data"), "--output_dir", str(Path(tmp) / "run"),
                "--model", "SiT-S/2", "--model_config_overrides", json.dumps(overrides), "--vae", "none",
                "--train_batch_size", str(args.batch), "--max_train_steps", str(args.steps),
                "--checkpointing_steps", str(10 * args.steps), "--validation_steps", str(10 * args.steps),
                "--num_validation_images", "0", "--logging_steps", str(args.steps), "--mixed_precision", "no",
            ]
        )  # fmt: skip
        result = train_sit.main(script_args)
        script_sps = result["steps_per_second"]

        device = torch.device(args.device)
        source = BatchSource(condensed, args.batch, device=device)
        config = train_sit.model_config(script_args, source)
        torch.manual_seed(0)  # benchmark-side seeding
        model = SiTTransformer2DModel(**config).to(device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        batch = source.next_batch()
        x, labels, visual = batch["latents"], batch["labels"], batch["visual_embeds"]
        t = torch.rand(x.shape[0], device=device)
        noise = torch.randn_like(x)

        def bare_step():
            out = model(x, t, labels, return_projections=True)
            loss = flow_matching_loss(out.sample, noise) + 0.5 * projection_loss(out.projections, visual)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        bare_step()
        best = float("inf")
        for _ in range(2):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(args.steps - 1):
                bare_step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, (time.perf_counter() - start) / (args.steps - 1))
    bare_sps = 1.0 / best
    return {
        "model": f"SiT depth {args.depth}, width {args.hidden}, 16x16x4 latents, patch 2 (64 tokens), projector 2048",
        "batch": args.batch,
        "script_steps_per_s": round(script_sps, 3),
        "bare_steps_per_s": round(bare_sps, 3),
        "overhead_ratio": round(bare_sps / script_sps, 3),
    }


def bench_delivery(args) -> dict:
    """(b): BatchSource vs DataLoader(ds.with_format('torch')) on ImageNet-like rows."""
    from datasets import load_from_disk
    from torch.utils.data import DataLoader

    from d2c_hf.condensed.dataset import CondensedDataset
    from d2c_hf.train.batches import BatchSource

    with tempfile.TemporaryDirectory() as tmp:
        make_condensed(args.rows, (8, 32, 32), (256, 768), 1000).save_to_disk(Path(tmp) / "data", card=False)
        condensed = CondensedDataset.load(Path(tmp) / "data")
        batch = 256
        start = time.perf_counter()
        source = BatchSource(condensed, batch)
        setup = time.perf_counter() - start
        batches = max(4, 2 * args.rows // batch)
        start = time.perf_counter()
        for _ in range(batches):
            source.next_batch()
        source_rate = batches * batch / (time.perf_counter() - start)

        samples = load_from_disk(str(Path(tmp) / "data" / "samples"))
        loader = DataLoader(
            samples.with_format("torch", columns=["latents", "visual_embeds", "label"]),
            batch_size=batch,
            shuffle=True,
            generator=torch.Generator().manual_seed(0),
        )
        start = time.perf_counter()
        rows = 0
        for item in loader:
            rows += item["latents"].shape[0]
        loader_rate = rows / (time.perf_counter() - start)
    return {
        "rows": args.rows,
        "row": "latents 8x32x32 fp16 + visual 256x768 fp16 + label",
        "batch_source_setup_s": round(setup, 3),
        "batch_source_rows_per_s": round(source_rate),
        "dataloader_torch_format_rows_per_s": round(loader_rate),
        "speedup": round(source_rate / loader_rate, 1),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=512, help="rows for the delivery benchmark")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--skip", choices=("overhead", "delivery"), default=None)
    args = parser.parse_args(argv)
    out = {"device": args.device, "torch_threads": torch.get_num_threads()}
    if args.skip != "delivery":
        out["delivery"] = bench_delivery(args)
        print(json.dumps(out["delivery"]), flush=True)
    if args.skip != "overhead":
        out["overhead"] = bench_overhead(args)
        print(json.dumps(out["overhead"]), flush=True)
    if "delivery" in out and "overhead" in out:
        # what the training step eats: rows/s = optimizer steps/s x global batch
        consumed = out["overhead"]["script_steps_per_s"] * out["overhead"]["batch"]
        out["delivery_vs_consumption"] = {
            "step_consumes_rows_per_s": round(consumed, 2),
            "batch_source_rows_per_s": out["delivery"]["batch_source_rows_per_s"],
            "ratio": round(out["delivery"]["batch_source_rows_per_s"] / consumed, 1),
        }
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
