"""Memory is part of the contract (issue 23): merging the scores of a sharded run holds a few copies of the
score arrays (a few bytes per row), and assembling the condensed set holds one attach shard at a time, not
the whole set. Each measurement runs in a fresh process on a synthetic work folder, after a small warm-up
run (every lazy import and cache is warm).

Peak RSS is the process's own ``VmHWM`` (``/proc/self/status``): ``ru_maxrss`` would not do, since Linux
carries the parent's high-water mark (here pytest's) over ``fork`` + ``exec`` into the child's, so a child
smaller than pytest would measure nothing. The assembly is measured in allocated bytes (the peak traced by
``tracemalloc``, which sees numpy's buffers, plus the peak of Arrow's memory pool): its RSS also counts the
pages of the memory-mapped Arrow files it reads, which the kernel may drop at any time."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/status").is_file(), reason="reads VmHWM from /proc/self/status (Linux)"
)

N, T, SHARD, ATTACH_SHARD = 60_000, 10, 4096, 256
POSTERIOR = (2, 8, 16)  # float16: 512 bytes per row that the merge must not read

MAKE = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import numpy as np
    from d2c_hf.run.sharded import ATTACH_DIR, SCORE_DIR, SELECTION_FILE, merge_scores
    from d2c_hf.run.workdir import check_run_config, save_shard, shard_path, shard_plan
    from d2c_hf.utils.files import write_json

    def scores(out, n, steps, shard, posterior):
        config = {
            "source": {"dataset": "synthetic", "split": "train", "num_rows": n},
            "columns": {"image": "image", "label": "label", "key": None},
            "scorer": {"num_timesteps": steps, "num_draws": 1, "reliability_probe": 0, "resolution": 32},
            "shard_size": shard,
            "class_names": [f"c{i}" for i in range(100)],
        }
        out.mkdir(parents=True, exist_ok=True)
        check_run_config(out, SCORE_DIR, config, write=True)
        ranges = shard_plan(n, shard)
        rng = np.random.default_rng(0)
        for k, (a, b) in enumerate(ranges):
            rows = np.arange(a, b, dtype=np.int64)
            per = rng.random((len(rows), steps), dtype=np.float32)
            arrays = {
                "rows": rows, "label": rows % 100, "difficulty": per.mean(1), "per_timestep": per,
                "key": rows.astype(np.uint64), "corrupt": np.zeros(0, np.int64),
            }
            if posterior:  # what --store_posterior keeps for Attach (16 KB per row with the SD VAE)
                arrays["posterior"] = np.ones((len(rows), *posterior), np.float16)
            save_shard(shard_path(out / SCORE_DIR, k, len(ranges)), arrays)

    def attach(out, n, shard, tokens, dim):
        # a finished attach phase: every 4th row selected, tokens + latents + JPEG-sized bytes
        merge_scores(out)
        selected = np.arange(0, n, 4, dtype=np.int64)
        rows = len(selected)
        write_json(out / SELECTION_FILE, {
            "source_indices": selected.tolist(), "positions": selected.tolist(),
            "result": {"strategy": "interval", "params": {"interval": 4}, "images_per_class": rows // 100,
                       "num_classes": 100, "total": rows, "counts": [rows // 100] * 100,
                       "class_sizes": [n // 100] * 100, "strides": None, "shortfall": [0] * 100,
                       "realised_ratio": 0.25},
            "options": {"ratio": None, "images_per_class": rows // 100, "strategy": "interval",
                        "interval": "auto", "seed": 0},
        })
        blob = bytes(range(256)) * 4
        check_run_config(out, ATTACH_DIR, {
            "source": {"dataset": "synthetic", "split": "train", "num_rows": n}, "selection_sha": "synthetic",
            "parts": ["latents", "visual"], "shard_size": shard, "batch_size": 32, "skip_corrupt": False,
            "latents": {"latent_channels": 2, "latent_size": 8},
            "visual": {"num_tokens": tokens, "hidden_size": dim}, "latents_from": "vae",
        }, write=True)
        ranges = shard_plan(rows, shard)
        rng = np.random.default_rng(0)
        for k, (a, b) in enumerate(ranges):
            m = b - a
            save_shard(shard_path(out / ATTACH_DIR, k, len(ranges)), {
                "rows": selected[a:b], "label": selected[a:b] % 100, "corrupt": np.zeros(0, np.int64),
                "bytes": np.frombuffer(blob * m, np.uint8),
                "offsets": np.arange(m + 1, dtype=np.int64) * len(blob),
                "latents": rng.standard_normal((m, 4, 8, 8), np.float32).astype(np.float16),
                "visual_embeds": rng.standard_normal((m, tokens, dim), np.float32).astype(np.float16),
            })
        return rows * (tokens * dim * 2 + 4 * 8 * 8 * 2 + len(blob))

    root, spec = Path(sys.argv[1]), json.loads(sys.argv[2])
    payload = {}
    for name, (n, steps, posterior, attach_shape) in spec.items():
        scores(root / name, n, steps, 4096, posterior)
        if attach_shape:
            payload[name] = attach(root / name, n, *attach_shape)
    print(json.dumps(payload))
    """
)

# argv: merge|assemble, the warm-up folder, attach shard size, then the folders to measure in order
MEASURE = textwrap.dedent(
    """
    import json, sys, tracemalloc
    from pathlib import Path
    import pyarrow as pa
    import torch
    import d2c_hf.selection.scorer
    from d2c_hf.run.options import AttachOptions, CondenseOptions, RunOptions, ScoreOptions, SelectOptions
    from d2c_hf.run.sharded import ShardedRunner, load_scores, merge_scores
    from d2c_hf.run.workdir import OneProcess

    def vm_hwm():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))

    def merge(folder):
        merge_scores(folder)
        return len(load_scores(folder)["difficulty"])

    def assemble(folder):
        options = CondenseOptions(
            score=ScoreOptions(scorer=None, vae=None),
            select=SelectOptions(images_per_class=1),
            attach=AttachOptions(parts=("latents", "visual")),
        )
        run = RunOptions(output_dir=folder, shard_size=int(sys.argv[3]), card=False)
        return len(ShardedRunner(options, run, OneProcess(torch.device("cpu"))).assemble().samples)

    step = {"merge": merge, "assemble": assemble}[sys.argv[1]]
    step(Path(sys.argv[2]))  # the warm-up run
    # each later folder is measured after the earlier ones: VmHWM and Arrow's pool peak only grow, so what
    # a folder adds over the one before is what it needs beyond it
    out = {}
    tracemalloc.start()
    for folder in sys.argv[4:]:
        base = vm_hwm()
        tracemalloc.reset_peak()
        rows = step(Path(folder))
        traced = tracemalloc.get_traced_memory()[1]
        out[Path(folder).name] = {
            "rows": rows, "rss": vm_hwm() - base, "allocated": traced + pa.default_memory_pool().max_memory()
        }
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Every synthetic work folder, made in one process: the merge's (N rows, T timesteps) and its warm-up,
    and three finished attach phases (256 / 1,024 / 4,096 selected rows, ~9 KB each, shards of 256)."""
    root = tmp_path_factory.mktemp("scale")
    attach = [ATTACH_SHARD, 32, 128]
    spec = {
        "merge": [N, T, POSTERIOR, None],
        "merge-warm": [SHARD, T, POSTERIOR, None],
        "assemble-warm": [1024, 1, None, attach],
        "assemble-small": [4096, 1, None, attach],
        "assemble-large": [16384, 1, None, attach],
    }
    (root / "make.py").write_text(MAKE)
    (root / "measure.py").write_text(MEASURE)
    payload = json.loads(_python(root / "make.py", root, json.dumps(spec)))
    return root, payload


def _python(script: Path, *args) -> str:
    done = subprocess.run(
        [sys.executable, str(script), *map(str, args)], capture_output=True, text=True, check=True
    )
    return (done.stdout.strip().splitlines() or [""])[-1]


def test_merging_the_scores_holds_a_few_bytes_per_row(work):
    """Merging and reading back the scores held 2,635 bytes of RSS per row here before issue 23
    (Dataset.from_dict, then a row-by-row read); now a few copies of the arrays themselves: 4 (T + 1) + 16
    bytes of data per row (~220 bytes of RSS measured at T = 10). The shards also hold the stored
    posteriors (512 bytes per row here, 16 KB with the SD VAE), which the merge never reads: it read every
    array of every shard until issue 23 (21 GB for ImageNet)."""
    root, _ = work
    measured = json.loads(
        _python(root / "measure.py", "merge", root / "merge-warm", ATTACH_SHARD, root / "merge")
    )["merge"]
    assert measured["rows"] == N
    per_row, allocated = measured["rss"] / N, measured["allocated"] / N
    data = 4 * (T + 1) + 16
    print(f"merge + read back: {per_row:.0f} bytes of RSS per row, {allocated:.0f} allocated")
    assert per_row < 10 * data, f"{per_row:.0f} bytes of RSS per row for {data} bytes of data"
    assert allocated < 10 * data, f"{allocated:.0f} bytes allocated per row for {data} bytes of data"


def test_assembling_holds_one_shard_not_the_set(work):
    """The condensed set is written attach shard by attach shard: four times the selected rows (and the
    payload) take no more memory. Before issue 23 the assembly built the whole set with Dataset.from_dict
    (5.8x its payload), so each selected row added several times its own bytes."""
    root, payload = work
    got = json.loads(
        _python(
            root / "measure.py",
            "assemble",
            root / "assemble-warm",
            ATTACH_SHARD,
            root / "assemble-small",
            root / "assemble-large",
        )
    )
    assert got["assemble-small"]["rows"] == 1024 and got["assemble-large"]["rows"] == 4096
    small, large = got["assemble-small"]["allocated"], got["assemble-large"]["allocated"]
    more = payload["assemble-large"] - payload["assemble-small"]
    print(f"assemble: {small:,} / {large:,} bytes allocated for {payload} bytes of selected rows")
    assert large - small < 0.25 * more, (
        f"{large - small:,} more bytes allocated for {more:,} more bytes of rows"
    )
