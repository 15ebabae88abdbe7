"""What the content checksums cost: loading a condensed dataset with and without verification.

Writes N synthetic rows shaped like an ImageNet-256 condensed set (``latents`` (8, 32, 32) and
``visual_embeds`` (256, 768), both float16: ~410 KB a row) with ``save_to_disk`` (which records the
checksums of every data file and column), then times, in this one process, alternating runs:

* **plain load**: ``CondensedDataset.load(path, verify=False)`` — memory-maps the tables, checks the
  row counts and the scalar columns' fingerprint (what a load cost before checksums existed);
* **verifying load**: ``CondensedDataset.load(path)`` — the same plus XXH3-128 of every data file
  (one read of every byte);
* **full read**: ``training_arrays(["latents", "visual_embeds"])`` after a plain load — what
  ``examples/train_sit.py``'s batch source does when the columns fit in memory (the read that
  training pays anyway), for scale;
* **save**: ``save_to_disk`` with the checksum record vs the same save with the record's file
  checksums stubbed out (what a save cost before).

Each is timed with the files in the page cache (warm) and, for the loads, with this benchmark's own
files evicted from it (``posix_fadvise(DONTNEED)``: cold, as the first load after a copy). Times are the
median of ``--repeats`` runs.

    python benchmarks/bench_integrity.py                  # 3,000 rows (1.2 GB)
    python benchmarks/bench_integrity.py --rows 500       # quick
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def write_set(folder: Path, rows: int, visual: tuple[int, int], batch: int = 250) -> Path:
    """A condensed set of ``rows`` synthetic rows, saved with ``save_to_disk`` (card off)."""
    from datasets import Array2D, Array3D, ClassLabel, Features, Value

    from d2c_hf.condensed.dataset import CondensedDataset
    from d2c_hf.utils.tables import write_batches

    features = Features(
        {
            "label": ClassLabel(names=[f"c{i}" for i in range(100)]),
            "source_index": Value("int64"),
            "difficulty": Value("float32"),
            "latents": Array3D((8, 32, 32), "float16"),
            "visual_embeds": Array2D(visual, "float16"),
        }
    )
    rng = np.random.default_rng(0)

    def batches():
        for start in range(0, rows, batch):
            n = min(batch, rows - start)
            yield {
                "label": np.arange(start, start + n) % 100,
                "source_index": np.arange(start, start + n, dtype=np.int64),
                "difficulty": rng.random(n, dtype=np.float32),
                "latents": rng.standard_normal((n, 8, 32, 32), dtype=np.float32).astype(np.float16),
                "visual_embeds": rng.standard_normal((n, *visual), dtype=np.float32).astype(np.float16),
            }

    scratch = folder / "scratch.arrow"
    samples = write_batches(scratch, features, batches())
    path = CondensedDataset(samples, info={"num_classes": 100}).save_to_disk(folder / "set", card=False)
    del samples
    scratch.unlink()
    return path


def evict(path: Path) -> None:
    """Drop this folder's files from the page cache (only ours: other processes' caches are untouched)."""
    for file in path.rglob("*"):
        if file.is_file():
            fd = os.open(file, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def timed(function, *args, **kwargs) -> float:
    start = time.perf_counter()
    function(*args, **kwargs)
    return time.perf_counter() - start


def read_columns(path: Path) -> None:
    from d2c_hf.condensed.dataset import CondensedDataset

    CondensedDataset.load(path, verify=False).training_arrays(["latents", "visual_embeds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--visual-shape", type=int, nargs=2, default=(256, 768))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--workdir", default=None, help="where to write the set (default: a temporary folder)"
    )
    args = parser.parse_args()

    from unittest import mock

    import d2c_hf.condensed.integrity as integrity
    from d2c_hf.condensed.dataset import CondensedDataset

    root = Path(tempfile.mkdtemp(prefix="d2c-bench-integrity-", dir=args.workdir))
    try:
        path = write_set(root, args.rows, tuple(args.visual_shape))
        size = sum(f.stat().st_size for f in path.rglob("*.arrow"))
        print(f"{args.rows} rows, data files {size / 1e9:.2f} GB ({size / args.rows / 1e3:.0f} KB a row)")
        CondensedDataset.load(path)  # warm the page cache and every import
        results: dict[str, list[float]] = {
            k: [] for k in ("plain", "verify", "plain cold", "verify cold", "read")
        }
        for _ in range(args.repeats):
            results["plain"].append(timed(CondensedDataset.load, path, verify=False))
            results["verify"].append(timed(CondensedDataset.load, path))
            results["read"].append(timed(read_columns, path) - results["plain"][-1])
            evict(path)
            results["plain cold"].append(timed(CondensedDataset.load, path, verify=False))
            evict(path)
            results["verify cold"].append(timed(CondensedDataset.load, path))
        source = CondensedDataset.load(path, verify=False)
        saves: dict[str, list[float]] = {"save with checksums": [], "save without": []}
        stub = {"size": 0, "xxh3_128": "", "columns": {}}
        unrecorded = mock.patch.object(
            integrity, "data_files_record", lambda r, files: {str(f): stub for f in files}
        )
        for i in range(args.repeats):  # alternating, so that neither gets the warmer page cache
            for name in (
                ("save with checksums", "save without") if i % 2 else ("save without", "save with checksums")
            ):
                target = root / f"save-{i}-{name.split()[1]}"
                with unrecorded if name == "save without" else contextlib.nullcontext():
                    saves[name].append(timed(source.save_to_disk, target, card=False))
                if name == "save with checksums":  # the record of the files just written, timed alone
                    files = sorted((target / "samples").glob("*.arrow"))
                    saves.setdefault("record alone", []).append(
                        timed(integrity.data_files_record, target, files)
                    )
                shutil.rmtree(target)
        median = {k: statistics.median(v) for k, v in {**results, **saves}.items()}
        for name, value in median.items():
            print(f"  {name:<22} {value:8.3f} s")
        warm_cost = median["verify"] - median["plain"]
        print(
            f"verifying load / plain load: warm {median['verify'] / median['plain']:.1f}x "
            f"(+{warm_cost:.2f} s, {size / 1e9 / max(warm_cost, 1e-9):.1f} GB/s), "
            f"cold {median['verify cold'] / median['plain cold']:.1f}x "
            f"(+{median['verify cold'] - median['plain cold']:.2f} s)"
        )
        print(
            f"verification / a full read of the columns (what training reads anyway): warm "
            f"{warm_cost / median['read']:.2f}x"
        )
        print(
            f"save with / without the checksum record: {median['save with checksums'] / median['save without']:.2f}x; "
            f"the record alone, timed again on the files just written: {median['record alone']:.2f} s"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
