"""ImageNet at its real shape: wall time, rows/s, peak RSS and disk of both condense routes and `d2c select`.

    python benchmarks/bench_scale.py --rows 12800 128000 1281167 --work-dir /tmp/d2c-scale --json scale.json

The set is generated here (so anyone can reproduce it): N rows over ImageNet-1k's 1000 ``ClassLabel``
classes with its class-size profile (732-1300 images per class, 1,281,167 in all; scaled to N), an
``Image()`` column of real JPEG bytes (a pool of 2,000 distinct small JPEGs reused across rows) in a
shuffled class order, written with bounded memory to one Arrow file. The models are tiny (a 2-layer
pixel-space DiT for 1000 classes at 16 px, one timestep, no probe), so what is measured is the pipeline's
own cost, not a model's. Each route runs in a fresh process (its peak RSS is that process's
``ru_maxrss``):

* ``stream``: the sharded engine on ``to_iterable_dataset()`` (what ``condense()`` on a stream and ``d2c
  condense --streaming`` run), phase by phase, so the scoring phase's share of the total is reported;
* ``select``: ``d2c select`` alone on the stream's work folder (reads the merged scores, selects);
* ``memory``: ``condense()`` on the disk-backed ``Dataset``, with the disk its cache files add next to the
  dataset (against the size of the columns it adds).

Scaling exponents are ``log(t2 / t1) / log(n2 / n1)`` between consecutive sizes. ``--assemble`` measures
the assembly alone of 10,240 selected rows with ImageNet-sized synthetic arrays (256 x 768 float16 tokens,
8 x 32 x 32 float16 latents) in a fresh process.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

IMAGENET_ROWS = 1_281_167
NUM_CLASSES = 1000
POOL = 2000
RESOLUTION = 16
BATCH = 256
ROUTES = ("stream", "select", "memory")


def class_sizes(rows: int, seed: int = 0) -> np.ndarray:
    """ImageNet-1k's profile (most classes 1300 images, the rest down to 732; 1,281,167 in all), scaled to
    ``rows`` (at least one per class)."""
    rng = np.random.default_rng(seed)
    sizes = np.full(NUM_CLASSES, 1300, np.int64)
    small = rng.choice(NUM_CLASSES, 105, replace=False)
    sizes[small] = rng.integers(732, 1300, len(small))
    sizes[small[0]] += IMAGENET_ROWS - sizes.sum()  # the real total exactly
    scaled = np.maximum(1, np.floor(sizes * rows / IMAGENET_ROWS)).astype(np.int64)
    order = np.argsort(-(sizes * rows / IMAGENET_ROWS - scaled))  # largest remainders first
    scaled[order[: rows - scaled.sum()]] += 1
    return scaled


def jpeg_pool(seed: int = 0) -> list[bytes]:
    """2,000 distinct small JPEGs (random blobs on random backgrounds, 20-40 px a side)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    pool = []
    for _ in range(POOL):
        w, h = (int(v) for v in rng.integers(20, 41, 2))
        image = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(image)
        for _ in range(3):
            box = sorted(rng.integers(0, w, 2).tolist()), sorted(rng.integers(0, h, 2).tolist())
            draw.ellipse(
                [box[0][0], box[1][0], box[0][1], box[1][1]],
                fill=tuple(int(v) for v in rng.integers(0, 256, 3)),
            )
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=90)
        pool.append(out.getvalue())
    return pool


def build_dataset(rows: int, folder: Path) -> Path:
    """The ImageNet-shaped set as one Arrow file (``Dataset.from_file``), written 50,000 rows at a time."""
    from datasets import ClassLabel, Features, Image

    from d2c_hf.utils.tables import write_batches

    path = folder / f"imagenet-shaped-{rows}.arrow"
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    labels = np.repeat(np.arange(NUM_CLASSES), class_sizes(rows))
    labels = labels[np.random.default_rng(1).permutation(rows)]
    pool = jpeg_pool()
    features = Features(
        {"image": Image(), "label": ClassLabel(names=[f"class_{c:04d}" for c in range(NUM_CLASSES)])}
    )

    def batches():
        for start in range(0, rows, 50_000):
            stop = min(rows, start + 50_000)
            yield {
                "image": [{"bytes": pool[(r * 7919) % POOL], "path": None} for r in range(start, stop)],
                "label": labels[start:stop],
            }

    scratch = path.with_suffix(".tmp")
    write_batches(scratch, features, batches())
    scratch.rename(path)
    return path


def build_scorer(folder: Path) -> Path:
    from diffusers import DiTTransformer2DModel

    path = folder / "tiny-dit-1000"
    if not (path / "config.json").is_file():
        DiTTransformer2DModel(
            num_attention_heads=2,
            attention_head_dim=8,
            in_channels=3,
            out_channels=3,
            num_layers=2,
            sample_size=RESOLUTION,
            patch_size=4,
            num_embeds_ada_norm=NUM_CLASSES,
        ).save_pretrained(path)
    return path


def _options(scorer: Path) -> dict:
    return dict(
        ratio=0.008,
        scorer=str(scorer),
        vae=None,
        attach=("latents",),
        resolution=RESOLUTION,
        batch_size=BATCH,
        num_timesteps=1,
        reliability_probe=0,
        warn_reliability=None,
    )


# --------------------------------------------------------------------------------------
# the routes, each run in a child process (`--child ROUTE`)
# --------------------------------------------------------------------------------------


def child_stream(data: Path, scorer: Path, work: Path) -> dict:
    import torch
    from datasets import Dataset

    from d2c_hf.run.condense import _condense_stream  # noqa: F401  (the route condense() takes)
    from d2c_hf.run.options import (
        AttachOptions,
        CondenseOptions,
        DataOptions,
        RunOptions,
        ScoreOptions,
        SelectOptions,
    )
    from d2c_hf.run.rows import source_from_dataset
    from d2c_hf.run.sharded import ShardedRunner
    from d2c_hf.run.workdir import OneProcess

    o = _options(scorer)
    options = CondenseOptions(
        data=DataOptions(),
        score=ScoreOptions(
            scorer=o["scorer"], vae=None, num_timesteps=1, reliability_probe=0, warn_reliability=None
        ),
        select=SelectOptions(ratio=o["ratio"]),
        attach=AttachOptions(parts=o["attach"]),
        resolution=RESOLUTION,
        batch_size=BATCH,
    )
    dataset = Dataset.from_file(str(data))
    times = {}
    start = time.perf_counter()
    source = source_from_dataset(
        dataset.to_iterable_dataset(),
        {"dataset": data.name, "split": "train"},
        num_rows=len(dataset),
        streaming=True,
    )
    run = RunOptions(output_dir=work, shard_size=BATCH * 8, num_workers=0, card=False)
    runner = ShardedRunner(options, run, OneProcess(torch.device("cpu")), source)
    plan = runner.plan()
    times["open"] = time.perf_counter() - start
    for name, step in (
        ("score", lambda: runner.score(plan, check_tokens=True)),
        ("select", lambda: runner.select(check=False)),
        ("attach", lambda: runner.attach(plan)),
        ("assemble", runner.assemble),
    ):
        t = time.perf_counter()
        result = step()
        times[name] = time.perf_counter() - t
    times["total"] = time.perf_counter() - start
    counts = np.bincount(np.asarray(result.samples["label"]), minlength=NUM_CLASSES)
    return {
        "times": times,
        "selected": int(counts.sum()),
        "per_class": [int(counts.min()), int(counts.max())],
    }


def child_select(work: Path) -> dict:
    t = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "d2c_hf.cli", "select", "--output_dir", str(work), "--ratio", "0.008"],
        capture_output=True,
        text=True,
        check=True,
    )
    return {"times": {"total": time.perf_counter() - t}, "output": done.stdout.strip().splitlines()[-1]}


def _du(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def child_memory(data: Path, scorer: Path) -> dict:
    from datasets import Dataset

    from d2c_hf import condense

    dataset = Dataset.from_file(str(data))
    before = _du(data.parent)
    t = time.perf_counter()
    condensed = condense(dataset, **_options(scorer))
    total = time.perf_counter() - t
    added = _du(data.parent) - before
    # the score map's cache files are those with a row per source row; the rest hold the selected rows
    whole = sum(
        p.stat().st_size
        for p in data.parent.glob("cache-*.arrow")
        if len(Dataset.from_file(str(p))) == len(dataset)
    )
    columns = 4 * len(dataset)  # the column the route adds to the whole dataset: difficulty, float32
    return {
        "times": {"total": total},
        "selected": len(condensed),
        "extra_disk_bytes": added,
        "score_map_disk_bytes": whole,
        "added_column_bytes": columns,
        "score_map_disk_ratio": whole / columns,
        "selected_rows_disk_bytes": added - whole,
    }


def child_assemble(work: Path, rows: int = 10_240) -> dict:
    """The assembly of ``rows`` selected images with ImageNet-sized arrays, from synthetic shards."""
    import torch

    from d2c_hf.run.options import AttachOptions, CondenseOptions, RunOptions, ScoreOptions, SelectOptions
    from d2c_hf.run.sharded import ATTACH_DIR, SCORE_DIR, SELECTION_FILE, ShardedRunner, merge_scores
    from d2c_hf.run.workdir import OneProcess, check_run_config, save_shard, shard_path, shard_plan
    from d2c_hf.utils.files import write_json

    n, shard = rows * 10, 2048
    names = [f"class_{c:04d}" for c in range(NUM_CLASSES)]
    score_cfg = {
        "source": {"dataset": "synthetic", "split": "train", "num_rows": n},
        "columns": {"image": "image", "label": "label", "key": None},
        "scorer": {"num_timesteps": 1, "num_draws": 1, "reliability_probe": 0, "resolution": 256},
        "shard_size": shard,
        "class_names": names,
    }
    work.mkdir(parents=True, exist_ok=True)
    check_run_config(work, SCORE_DIR, score_cfg, write=True)
    ranges = shard_plan(n, shard)
    for k, (a, b) in enumerate(ranges):
        r = np.arange(a, b, dtype=np.int64)
        save_shard(
            shard_path(work / SCORE_DIR, k, len(ranges)),
            {"rows": r, "label": r % NUM_CLASSES, "difficulty": (r % 97).astype(np.float32),
             "per_timestep": (r % 97).astype(np.float32)[:, None], "key": r.astype(np.uint64),
             "corrupt": np.zeros(0, np.int64)},
        )  # fmt: skip
    merge_scores(work)
    selected = np.arange(0, n, 10, dtype=np.int64)
    write_json(
        work / SELECTION_FILE,
        {"source_indices": selected.tolist(), "positions": selected.tolist(),
         "result": {"strategy": "interval", "params": {"interval": 10}, "images_per_class": 10, "num_classes": 1000,
                    "total": rows, "counts": [rows // 1000] * 1000, "class_sizes": [n // 1000] * 1000,
                    "strides": None, "shortfall": [0] * 1000, "realised_ratio": 0.1},
         "options": {"ratio": None, "images_per_class": 10, "strategy": "interval", "interval": "auto", "seed": 0}},
    )  # fmt: skip
    jpeg = jpeg_pool()[0]
    latents = {"latent_channels": 4, "latent_size": 32}
    visual = {"num_tokens": 256, "hidden_size": 768}
    attach_cfg = {"source": score_cfg["source"], "selection_sha": "synthetic", "parts": ["latents", "visual"],
                  "shard_size": shard, "batch_size": 32, "skip_corrupt": False, "latents": latents,
                  "visual": visual, "latents_from": "vae"}  # fmt: skip
    check_run_config(work, ATTACH_DIR, attach_cfg, write=True)
    arng = shard_plan(rows, shard)
    rng = np.random.default_rng(0)
    for k, (a, b) in enumerate(arng):
        m = b - a
        save_shard(
            shard_path(work / ATTACH_DIR, k, len(arng)),
            {"rows": selected[a:b], "label": selected[a:b] % NUM_CLASSES, "corrupt": np.zeros(0, np.int64),
             "bytes": np.frombuffer(jpeg * m, np.uint8), "offsets": np.arange(m + 1, dtype=np.int64) * len(jpeg),
             "latents": rng.standard_normal((m, 8, 32, 32), np.float32).astype(np.float16),
             "visual_embeds": rng.standard_normal((m, 256, 768), np.float32).astype(np.float16)},
        )  # fmt: skip
    options = CondenseOptions(
        score=ScoreOptions(scorer=None, vae=None),
        select=SelectOptions(images_per_class=10),
        attach=AttachOptions(parts=("latents", "visual")),
    )
    runner = ShardedRunner(
        options, RunOptions(output_dir=work, shard_size=shard, card=False), OneProcess(torch.device("cpu"))
    )
    import resource

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t = time.perf_counter()
    condensed = runner.assemble()
    payload = rows * (256 * 768 * 2 + 8 * 32 * 32 * 2 + len(jpeg))
    return {
        "times": {"total": time.perf_counter() - t},
        "selected": len(condensed),
        "payload_bytes": payload,
        "rss_before_bytes": base,
    }


def _run_child(args: list[str]) -> dict:
    """Run one route in a fresh process: its result, wall time and peak RSS (``wait4``'s ``ru_maxrss``)."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"{args} failed (exit {proc.returncode})")
    result = json.loads(out.strip().splitlines()[-1])
    result["wall_s"] = time.perf_counter() - start
    result["peak_rss_bytes"] = usage.ru_maxrss * 1024
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[12_800, 128_000])
    parser.add_argument("--routes", nargs="+", default=list(ROUTES), choices=ROUTES)
    parser.add_argument("--assemble", action="store_true", help="also measure the assembly of 10,240 rows")
    parser.add_argument("--work-dir", type=Path, default=None, help="where the sets, models and runs go")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        route, *rest = args.child
        result = {
            "stream": lambda: child_stream(Path(rest[0]), Path(rest[1]), Path(rest[2])),
            "select": lambda: child_select(Path(rest[0])),
            "memory": lambda: child_memory(Path(rest[0]), Path(rest[1])),
            "assemble": lambda: child_assemble(Path(rest[0])),
        }[route]()
        print(json.dumps(result))
        return 0
    if args.work_dir is None:
        parser.error("--work-dir is required")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = args.work_dir.expanduser().resolve()
    scorer = build_scorer(work)
    report = {"rows": {}, "assemble": None}
    previous = None
    for rows in args.rows:
        t = time.perf_counter()
        data = build_dataset(rows, work / f"data-{rows}")
        entry = {"build_s": time.perf_counter() - t, "data_bytes": data.stat().st_size}
        run_dir = work / f"run-{rows}"
        if "stream" in args.routes:
            import shutil

            shutil.rmtree(run_dir, ignore_errors=True)
            entry["stream"] = _run_child(["--child", "stream", str(data), str(scorer), str(run_dir)])
        if "select" in args.routes:
            entry["select"] = _run_child(["--child", "select", str(run_dir)])
        if "memory" in args.routes:
            for stale in data.parent.glob("cache-*.arrow"):
                stale.unlink()
            entry["memory"] = _run_child(["--child", "memory", str(data), str(scorer)])
        if previous is not None:
            n0, e0 = previous
            entry["exponent"] = {
                route: math.log(entry[route]["times"]["total"] / e0[route]["times"]["total"])
                / math.log(rows / n0)
                for route in args.routes
                if route in entry and route in e0
            }
        report["rows"][rows] = entry
        previous = (rows, entry)
        print(json.dumps({rows: entry}, indent=1), flush=True)
    if args.assemble:
        import shutil

        shutil.rmtree(work / "assemble", ignore_errors=True)
        report["assemble"] = _run_child(["--child", "assemble", str(work / "assemble")])
        print(json.dumps({"assemble": report["assemble"]}, indent=1), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
