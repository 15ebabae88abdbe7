"""ImageNet at its real shape: wall time, rows/s, peak RSS and disk of both condense routes and `d2c select`.

    python benchmarks/bench_scale.py --rows 12800 128000 1281167 --threads 1 --work-dir /tmp/d2c-scale --json scale.json
    python benchmarks/bench_scale.py --assemble --work-dir /tmp/d2c-scale --json assemble.json

The set is generated here (so anyone can reproduce it): N rows over ImageNet-1k's 1000 ``ClassLabel``
classes with its class-size profile (732-1300 images per class, 1,281,167 in all; scaled to N), an
``Image()`` column of real JPEG bytes (a pool of 2,000 distinct small JPEGs reused across rows) in a
shuffled class order, written with bounded memory to one Arrow file. The models are tiny (a 2-layer
pixel-space DiT for 1000 classes at 16 px, one timestep, no probe), so what is measured is the pipeline's
own cost, not a model's. Each route runs in a fresh process:

* ``stream``: the sharded engine on ``Dataset.from_file(...).to_iterable_dataset()`` (the route
  ``condense()`` takes on a stream), phase by phase, so the scoring phase's share of the total is
  reported, and where the time goes inside the phases (the merge, the reads of the merged scores);
* ``stream-files``: the same on ``load_dataset("arrow", data_files=..., streaming=True)``, what ``d2c
  condense --streaming`` opens: record batches read into private memory and freed (as from the Hub),
  where the first route's table is memory-mapped;
* ``select``: ``d2c select`` alone on the stream's work folder, in its own process (reads the merged
  scores, selects, writes ``selection.json``);
* ``memory``: ``condense()`` on the disk-backed ``Dataset``, with the disk its cache files add next to the
  dataset, against the size of what it adds (the ``difficulty`` column, and the condensed rows).

Peak RSS is each process's own ``VmHWM``; a sampler splits it into private (``RssAnon``) and file-backed
(``RssFile``: shared libraries and the pages of memory-mapped Arrow files, which the kernel drops when it
needs the memory) pages. Scaling exponents are ``log(t2 / t1) / log(n2 / n1)`` between consecutive sizes.
``--assemble`` measures the assembly alone (``ShardedRunner.assemble``) of 10,240 selected rows with
ImageNet-sized synthetic arrays (256 x 768 float16 tokens, 8 x 32 x 32 float16 latents) in a fresh
process, from attach shards another process wrote. The machine is shared: compare times only inside one
run; ``--threads 1`` keeps torch from spinning on cores other jobs hold.
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
ROUTES = ("stream", "select", "memory", "stream-files")


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


def child_stream(data: Path, scorer: Path, work: Path, reader: str = "mmap") -> dict:
    """The sharded engine over a stream of the set. ``reader``: ``"mmap"``, ``Dataset.from_file(...)
    .to_iterable_dataset()`` (the table memory-mapped: the pages read stay in this process's RSS as
    file-backed pages until the kernel needs them); ``"files"``, ``load_dataset("arrow", data_files=...,
    streaming=True)`` (what ``d2c condense --streaming`` opens: record batches read into private memory
    and freed, as from the Hub)."""
    import torch
    from datasets import Dataset, load_dataset

    from d2c_hf.run import sharded
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

    inner = _timed(sharded, "merge_scores", "load_scores")  # inside the score / select / assemble phases
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
    num_rows = int(data.stem.rsplit("-", 1)[1])  # from build_dataset's name: opening the table maps its pages
    times = {}
    start = time.perf_counter()
    if reader == "mmap":
        stream = Dataset.from_file(str(data)).to_iterable_dataset()
    else:
        stream = load_dataset("arrow", data_files=str(data), split="train", streaming=True)
    source = source_from_dataset(
        stream, {"dataset": data.name, "split": "train"}, num_rows=num_rows, streaming=True
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
    times.update({f"in {name}": value for name, value in inner.items()})
    counts = np.bincount(np.asarray(result.samples["label"]), minlength=NUM_CLASSES)
    return {
        "times": times,
        "disk_bytes": _du(work),
        "selected": int(counts.sum()),
        "per_class": [int(counts.min()), int(counts.max())],
        "selection_digest": _selection_digest(result.samples),
    }


def child_select(work: Path) -> dict:
    """``d2c select`` as a user runs it: this fresh process does nothing else (its wall time includes the
    interpreter start and the imports); the time inside the command is split into reading the scores and
    the rest."""
    t = time.perf_counter()
    from d2c_hf.cli import main as d2c
    from d2c_hf.run import sharded

    imported = time.perf_counter() - t
    timed = _timed(sharded, "load_scores")
    code = d2c(["select", "--output_dir", str(work), "--ratio", "0.008"])
    if code:
        raise RuntimeError(f"d2c select exited with {code}")
    selection = json.loads((work / sharded.SELECTION_FILE).read_text())
    return {
        "times": {"imports": imported, "load_scores": timed["load_scores"], "total": time.perf_counter() - t},
        "selected": len(selection["source_indices"]),
    }


def _selection_digest(samples) -> str:
    """SHA-256 of the condensed rows' source indices and scores, in order (the routes must agree)."""
    import hashlib

    from d2c_hf.utils.columns import column_numpy

    digest = hashlib.sha256()
    for column in ("source_index", "difficulty"):
        digest.update(column_numpy(samples, column).tobytes())
    return digest.hexdigest()


def _du(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def child_memory(data: Path, scorer: Path) -> dict:
    from datasets import Dataset

    from d2c_hf import condense
    from d2c_hf.run import pipeline

    dataset = Dataset.from_file(str(data))
    before = _du(data.parent)
    phases = _timed(pipeline.MemoryRunner, "validate", "score", "attach")
    _timed(pipeline, "load_scorer", "load_parts", "select_rows", "assemble", into=phases)
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
    samples = (
        condensed.samples.data.nbytes
    )  # the condensed rows' own columns (image bytes, label, ..., latents)
    return {
        "times": {**phases, "total": total},
        "selected": len(condensed),
        "selection_digest": _selection_digest(condensed.samples),
        "extra_disk_bytes": added,
        "score_map_disk_bytes": whole,
        "added_column_bytes": columns,
        "score_map_disk_ratio": whole / columns,
        "selected_rows_disk_bytes": added - whole,
        "condensed_samples_bytes": samples,
        "selected_rows_disk_ratio": (added - whole) / samples,
        "extra_disk_ratio": added / (columns + samples),
    }


ASSEMBLE_ROWS, ASSEMBLE_SHARD = 10_240, 2048


def child_make_assemble(work: Path, rows: int = ASSEMBLE_ROWS) -> dict:
    """The work folder of a finished attach phase: ``rows`` selected images with ImageNet-sized arrays
    (synthetic), in shards of 2,048 rows (``condense()``'s shard size), written one chunk at a time."""
    from d2c_hf.run.sharded import ATTACH_DIR, SCORE_DIR, SELECTION_FILE, merge_scores
    from d2c_hf.run.workdir import check_run_config, save_shard, shard_path, shard_plan
    from d2c_hf.utils.files import write_json

    n, shard = rows * 10, ASSEMBLE_SHARD
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
         "result": {"strategy": "interval", "params": {"interval": 10}, "images_per_class": rows // 1000, "num_classes": 1000,
                    "total": rows, "counts": [rows // 1000] * 1000, "class_sizes": [n // 1000] * 1000,
                    "strides": None, "shortfall": [0] * 1000, "realised_ratio": 0.1},
         "options": {"ratio": None, "images_per_class": rows // 1000, "strategy": "interval", "interval": "auto", "seed": 0}},
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
        latents, tokens = np.empty((m, 8, 32, 32), np.float16), np.empty((m, 256, 768), np.float16)
        for c in range(0, m, 128):  # float32 draws one chunk at a time
            latents[c : c + 128] = rng.standard_normal(latents[c : c + 128].shape, np.float32)
            tokens[c : c + 128] = rng.standard_normal(tokens[c : c + 128].shape, np.float32)
        save_shard(
            shard_path(work / ATTACH_DIR, k, len(arng)),
            {"rows": selected[a:b], "label": selected[a:b] % NUM_CLASSES, "corrupt": np.zeros(0, np.int64),
             "bytes": np.frombuffer(jpeg * m, np.uint8), "offsets": np.arange(m + 1, dtype=np.int64) * len(jpeg),
             "latents": latents, "visual_embeds": tokens},
        )  # fmt: skip
        del latents, tokens
    return {"rows": rows, "payload_bytes": rows * (256 * 768 * 2 + 8 * 32 * 32 * 2 + len(jpeg))}


def child_assemble(work: Path) -> dict:
    """The assembly alone (``ShardedRunner.assemble``) of the work folder :func:`child_make_assemble`
    wrote, in a fresh process: where its time goes and its own peak RSS (``VmHWM``) above the imports."""
    import torch

    from d2c_hf.condensed.dataset import CondensedDataset
    from d2c_hf.run import sharded
    from d2c_hf.run.options import AttachOptions, CondenseOptions, RunOptions, ScoreOptions, SelectOptions
    from d2c_hf.run.workdir import OneProcess
    from d2c_hf.utils import tables

    options = CondenseOptions(
        score=ScoreOptions(scorer=None, vae=None),
        select=SelectOptions(images_per_class=10),
        attach=AttachOptions(parts=("latents", "visual")),
    )
    runner = sharded.ShardedRunner(
        options,
        RunOptions(output_dir=work, shard_size=ASSEMBLE_SHARD, card=False),
        OneProcess(torch.device("cpu")),
    )
    phases = _timed(sharded, "load_scores")
    _timed(tables, "write_batches", into=phases)  # the samples, written shard by shard
    _timed(CondensedDataset, "save_to_disk", "load", into=phases)
    base = _status("self")["VmHWM"]
    t = time.perf_counter()
    condensed = runner.assemble()
    total = time.perf_counter() - t
    return {
        "times": {**phases, "total": total},
        "selected": len(condensed),
        "rss_before_bytes": base,
        "disk_bytes": _du(work / sharded.CONDENSED_DIR),
    }


def _timed(owner, *names: str, into: dict[str, float] | None = None) -> dict[str, float]:
    """Wrap ``owner.<name>`` (a module function or a method) to add its wall time, per call, to the
    returned dict (``into`` if given; instrumentation only: the wrapped call is unchanged)."""
    import functools

    totals = into if into is not None else {}
    totals.update(dict.fromkeys(names, 0.0))
    for name in names:
        function = getattr(owner, name)

        @functools.wraps(function)
        def wrapper(*args, _function=function, _name=name, **kwargs):
            t = time.perf_counter()
            try:
                return _function(*args, **kwargs)
            finally:
                totals[_name] += time.perf_counter() - t

        setattr(owner, name, wrapper)
    return totals


def _status(pid: int | str) -> dict[str, int]:
    """``VmHWM``, ``VmRSS``, ``RssAnon``, ``RssFile`` of a process in bytes (``/proc/<pid>/status``)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"):
                    out[key] = int(value.split()[0]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def _run_child(args: list[str]) -> dict:
    """Run one route in a fresh process: its result, wall time and memory.

    ``peak_rss_bytes`` is the child's own ``VmHWM`` (read by the child at its end). Not ``ru_maxrss``: Linux
    carries the parent's high-water mark over ``fork`` + ``exec`` into the child's ``ru_maxrss``, so every
    child of this (large) parent would report at least the parent's RSS. A thread samples the child's
    ``RssAnon`` (private memory) and ``RssFile`` (pages of memory-mapped files: the Arrow tables, which
    the kernel can drop and re-read at any time) every 50 ms: ``peak_rss_anon_bytes`` /
    ``peak_rss_file_bytes`` are the largest samples."""
    import threading

    start, load = time.perf_counter(), os.getloadavg()[0]
    proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True)
    peaks = {"RssAnon": 0, "RssFile": 0, "VmRSS": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            now = _status(proc.pid)
            for key in peaks:
                peaks[key] = max(peaks[key], now.get(key, 0))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out = proc.stdout.read()
    proc.wait()
    done.set()
    sampler.join()
    if proc.returncode:
        raise RuntimeError(f"{args} failed (exit {proc.returncode})")
    result = json.loads(out.strip().splitlines()[-1])
    result["wall_s"] = time.perf_counter() - start
    result["load_average"] = [load, os.getloadavg()[0]]  # 1-minute load at the start and the end (2 cores)
    result["peak_rss_bytes"] = result.pop("vm_hwm_bytes")
    result["peak_rss_anon_bytes"] = peaks["RssAnon"]
    result["peak_rss_file_bytes"] = peaks["RssFile"]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--rows",
        type=int,
        nargs="*",
        default=None,
        help="set sizes (default 12800 128000; none with --assemble)",
    )
    parser.add_argument("--routes", nargs="+", default=list(ROUTES), choices=ROUTES)
    parser.add_argument(
        "--assemble",
        type=int,
        nargs="*",
        default=None,
        help="also measure the assembly of this many selected rows (default 10240; several: one after another)",
    )
    parser.add_argument("--work-dir", type=Path, default=None, help="where the sets, models and runs go")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads in each route (OMP_NUM_THREADS); 1 on a loaded machine: spinning OpenMP threads "
        "that wait for a busy core cost more than they compute",
    )
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        route, *rest = args.child
        result = {
            "stream": lambda: child_stream(Path(rest[0]), Path(rest[1]), Path(rest[2])),
            "stream-files": lambda: child_stream(Path(rest[0]), Path(rest[1]), Path(rest[2]), "files"),
            "select": lambda: child_select(Path(rest[0])),
            "memory": lambda: child_memory(Path(rest[0]), Path(rest[1])),
            "make-assemble": lambda: child_make_assemble(Path(rest[0]), int(rest[1])),
            "assemble": lambda: child_assemble(Path(rest[0])),
        }[route]()
        result["vm_hwm_bytes"] = _status("self")["VmHWM"]  # this process's own peak RSS
        print(json.dumps(result))
        return 0
    if args.work_dir is None:
        parser.error("--work-dir is required")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:  # read by torch when each child starts
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    work = args.work_dir.expanduser().resolve()
    scorer = build_scorer(work)
    report = {"rows": {}, "assemble": None, "threads": args.threads, "cpus": os.cpu_count()}
    previous = None
    if args.assemble is not None and not args.assemble:
        args.assemble = [ASSEMBLE_ROWS]
    sizes = args.rows if args.rows is not None else ([] if args.assemble else [12_800, 128_000])
    for rows in sizes:
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
        if "stream-files" in args.routes:
            import shutil

            files_dir = work / f"run-files-{rows}"
            shutil.rmtree(files_dir, ignore_errors=True)
            entry["stream-files"] = _run_child(
                ["--child", "stream-files", str(data), str(scorer), str(files_dir)]
            )
            shutil.rmtree(files_dir, ignore_errors=True)
        if "memory" in args.routes:
            for stale in data.parent.glob("cache-*.arrow"):
                stale.unlink()
            entry["memory"] = _run_child(["--child", "memory", str(data), str(scorer)])
        digests = {
            r: entry[r]["selection_digest"] for r in ("stream", "stream-files", "memory") if r in entry
        }
        entry["same_selection"] = len(set(digests.values())) <= 1  # bitwise the same rows and scores
        if previous is not None:
            n0, e0 = previous
            entry["exponent"] = {
                route: math.log(entry[route]["times"]["total"] / e0[route]["times"]["total"])
                / math.log(rows / n0)
                for route in args.routes
                if route in entry and route in e0
            }
            for route in ("stream", "stream-files"):  # the scoring phase alone
                if route in entry and route in e0:
                    ratio = entry[route]["times"]["score"] / e0[route]["times"]["score"]
                    entry["exponent"][f"{route} score"] = math.log(ratio) / math.log(rows / n0)
        report["rows"][rows] = entry
        previous = (rows, entry)
        print(json.dumps({rows: entry}, indent=1), flush=True)
    for selected in args.assemble or ():
        import shutil

        folder = work / f"assemble-{selected}"
        shutil.rmtree(folder, ignore_errors=True)
        made = _run_child(["--child", "make-assemble", str(folder), str(selected)])
        measured = _run_child(["--child", "assemble", str(folder)])
        measured.update(rows=made["rows"], payload_bytes=made["payload_bytes"])
        report["assemble"] = {**(report["assemble"] or {}), selected: measured}
        shutil.rmtree(folder, ignore_errors=True)
        print(json.dumps({"assemble": {selected: measured}}, indent=1), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
