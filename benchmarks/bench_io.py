"""Training reads of a condensed dataset: ``CondensedDataset.training_arrays`` vs the default torch format.

Writes N synthetic rows shaped like an ImageNet-256 condensed set (``latents`` (8, 32, 32) and
``visual_embeds`` (256, 768), both float16: ~410 KB a row, 8.2 GB for 20k rows) to an Arrow
file, memory-maps it like ``load_from_disk`` does, warms the page cache, then times:

* **fast**: ``training_arrays(["latents", "visual_embeds"])`` — the whole columns through Arrow
  (each chunk's value buffer, zero-copy over the memory map, copied once into the output),
  then shuffled batches gathered from those tensors;
* **torch format**: ``dataset.with_format("torch")`` batches, the default ``datasets`` route
  (float16 upcast to float32, a new tensor per batch);
* **numpy f16 batches**: ``with_format("numpy", columns=..., dtype=float16)`` batches, the best
  per-batch route of hf-ecosystem.md §5b, for reference.

Two measurements: reading every row once in order, and one training epoch of shuffled batches
(the fast path pays its load once, then every epoch only gathers). Rates are rows/s (higher is
better); the per-batch paths are timed on ``--slow-rows`` rows.

    python benchmarks/bench_io.py                       # 20k rows, ImageNet-256 shapes
    python benchmarks/bench_io.py --rows 5000 --visual-shape 256 384
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def write_rows(
    path: Path, rows: int, latent_shape: tuple[int, ...], visual_shape: tuple[int, ...], seed: int = 0
):
    """Write ``rows`` synthetic rows with ``datasets``' ArrowWriter (chunked: bounded memory)."""
    from datasets import Array2D, Array3D, ClassLabel, Dataset, Features
    from datasets.arrow_writer import ArrowWriter

    features = Features(
        {
            "label": ClassLabel(num_classes=1000),
            "latents": Array3D(latent_shape, "float16"),
            "visual_embeds": Array2D(visual_shape, "float16"),
        }
    )
    rng = np.random.default_rng(seed)
    chunk = 500
    with ArrowWriter(features=features, path=str(path)) as writer:
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            writer.write_batch(
                {
                    "label": rng.integers(0, 1000, n).tolist(),
                    "latents": rng.standard_normal((n, *latent_shape), dtype=np.float32).astype(np.float16),
                    "visual_embeds": rng.standard_normal((n, *visual_shape), dtype=np.float32).astype(
                        np.float16
                    ),
                }
            )
        writer.finalize()
    return Dataset.from_file(str(path))


def report(title: str, fast: float, torch_rate: float, numpy_rate: float) -> None:
    print(f"\n{title}")
    print(f"  {'path':<46} {'rows/s':>10} {'vs torch format':>16}")
    for name, rate in (
        ("training_arrays (arrow buffers, one copy)", fast),
        ('with_format("torch")[i:j] (default)', torch_rate),
        ('with_format("numpy", dtype=float16)[i:j]', numpy_rate),
    ):
        print(f"  {name:<46} {rate:>10,.0f} {rate / torch_rate:>15.1f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--latent-shape", type=int, nargs=3, default=(8, 32, 32))
    parser.add_argument("--visual-shape", type=int, nargs=2, default=(256, 768))
    parser.add_argument("--slow-rows", type=int, default=2_000, help="rows timed for the slow paths")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where to write the Arrow file (default: temp)"
    )
    args = parser.parse_args(argv)

    from d2c_hf.condensed.dataset import CondensedDataset

    workdir = Path(tempfile.mkdtemp(prefix="d2c-bench-io-", dir=args.workdir))
    try:
        t0 = time.perf_counter()
        dataset = write_rows(
            workdir / "samples.arrow", args.rows, tuple(args.latent_shape), tuple(args.visual_shape)
        )
        row_mb = (np.prod(args.latent_shape) + np.prod(args.visual_shape)) * 2 / 1e6
        print(
            f"wrote {args.rows:,} rows ({row_mb * args.rows / 1e3:.2f} GB, {row_mb * 1e3:.0f} KB/row) "
            f"in {time.perf_counter() - t0:.1f}s; torch {torch.__version__}, {torch.get_num_threads()} threads"
        )
        condensed = CondensedDataset(dataset, info={"num_classes": 1000})
        columns = ["latents", "visual_embeds"]
        condensed.training_arrays(columns)  # warm the page cache
        slow_rows = min(args.slow_rows, args.rows)
        torch_ds = dataset.with_format("torch", columns=columns)
        numpy_ds = dataset.with_format("numpy", columns=columns, dtype=np.float16)

        # 1. reading every row once, in order
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            arrays = condensed.training_arrays(columns)
            times.append(time.perf_counter() - t0)
        load_s = min(times)
        assert arrays["latents"].dtype == torch.float16 and arrays["latents"].shape[0] == args.rows
        t0 = time.perf_counter()
        for start in range(0, slow_rows, args.batch_size):
            batch = torch_ds[start : min(start + args.batch_size, slow_rows)]
        torch_pass = slow_rows / (time.perf_counter() - t0)
        assert batch["latents"].dtype == torch.float32  # the default format upcasts
        t0 = time.perf_counter()
        for start in range(0, slow_rows, args.batch_size):
            batch = {
                k: torch.from_numpy(v)
                for k, v in numpy_ds[start : min(start + args.batch_size, slow_rows)].items()
            }
        numpy_pass = slow_rows / (time.perf_counter() - t0)
        report(
            "read every row once, in order (training_arrays: whole columns)",
            args.rows / load_s,
            torch_pass,
            numpy_pass,
        )

        # 2. a training epoch: shuffled batches. The fast path pays its load once, then gathers
        # each batch from the tensors it holds.
        order = torch.randperm(args.rows, generator=torch.Generator().manual_seed(0))
        batches = [order[s : s + args.batch_size] for s in range(0, args.rows, args.batch_size)]
        t0 = time.perf_counter()
        for idx in batches:
            batch = {k: v[idx] for k, v in arrays.items()}
        gather_new = args.rows / (time.perf_counter() - t0)
        slow_batches = [idx.tolist() for idx in batches][: max(1, slow_rows // args.batch_size)]
        slow_count = sum(len(idx) for idx in slow_batches)
        t0 = time.perf_counter()
        for idx in slow_batches:
            batch = torch_ds[idx]
        torch_epoch = slow_count / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for idx in slow_batches:
            batch = {k: torch.from_numpy(v) for k, v in numpy_ds[idx].items()}
        numpy_epoch = slow_count / (time.perf_counter() - t0)
        print("\none training epoch of shuffled batches (after the fast path's one-time load)")
        print(f"  {'path':<46} {'rows/s':>10} {'vs torch format':>16}")
        for name, rate in (
            ("training_arrays, then v[idx] per batch", gather_new),
            ('with_format("torch")[idx] (default)', torch_epoch),
            ('with_format("numpy", dtype=float16)[idx]', numpy_epoch),
        ):
            print(f"  {name:<46} {rate:>10,.0f} {rate / torch_epoch:>15.1f}x")
        first = args.rows / (load_s + args.rows / gather_new)
        print(
            f"\nfirst epoch including the load: {first:,.0f} rows/s ({first / torch_epoch:.1f}x the torch format)"
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
