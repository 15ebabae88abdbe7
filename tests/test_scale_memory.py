"""Memory is part of the contract (issue 23): merging the scores and assembling the condensed set of a
sharded run hold one batch / one shard, not the whole table. Measured in a fresh process (peak RSS above
the baseline after imports) on a synthetic work folder; the bounds are a few times the arrays themselves."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

N, T, SHARD = 60_000, 10, 4096

SETUP = textwrap.dedent(
    """
    import json, resource, sys
    from pathlib import Path
    import numpy as np
    from d2c_hf.run.sharded import SCORE_DIR
    from d2c_hf.run.workdir import check_run_config, save_shard, shard_path, shard_plan

    out = Path(sys.argv[1]); n, steps, shard = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    config = {
        "source": {"dataset": "synthetic", "split": "train", "num_rows": n},
        "columns": {"image": "image", "label": "label", "key": None},
        "scorer": {"num_timesteps": steps, "num_draws": 1, "reliability_probe": 0},
        "shard_size": shard,
        "class_names": [f"c{i}" for i in range(1000)],
    }
    out.mkdir(parents=True, exist_ok=True)
    check_run_config(out, SCORE_DIR, config, write=True)
    ranges = shard_plan(n, shard)
    rng = np.random.default_rng(0)
    for k, (a, b) in enumerate(ranges):
        rows = np.arange(a, b, dtype=np.int64)
        per = rng.random((len(rows), steps), dtype=np.float32)
        save_shard(shard_path(out / SCORE_DIR, k, len(ranges)), {
            "rows": rows, "label": rows % 1000, "difficulty": per.mean(1), "per_timestep": per,
            "key": rows.astype(np.uint64), "corrupt": np.zeros(0, np.int64),
        })
    """
)
# a fresh process: everything the merge imports is imported before the baseline
MEASURE = textwrap.dedent(
    """
    import json, resource, sys
    from pathlib import Path
    import d2c_hf.selection.scorer
    from d2c_hf.run.sharded import load_scores, merge_scores

    out, n = Path(sys.argv[1]), int(sys.argv[2])
    merge_scores(Path(sys.argv[3]))  # a small run first: every lazy import and cache is warm
    load_scores(Path(sys.argv[3]))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    merge_scores(out)
    assert len(load_scores(out)["difficulty"]) == n
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"base": base, "peak": peak}))
    """
)


@pytest.mark.parametrize("rows", [N])
def test_merging_the_scores_holds_a_few_bytes_per_row(tmp_path, rows):
    """Merging and reading back the scores held 1,342 bytes per row here before issue 23 (Dataset.from_dict,
    then a row-by-row read), ~2.6 KB at ImageNet's size; now a few copies of the arrays themselves: 4 (T + 1)
    + 16 bytes of data per row (~400 bytes measured at T = 10)."""
    (tmp_path / "make.py").write_text(SETUP)
    (tmp_path / "merge.py").write_text(MEASURE)
    run = [str(tmp_path / "run"), str(rows)]
    subprocess.run([sys.executable, str(tmp_path / "make.py"), *run, str(T), str(SHARD)], check=True)
    warm = [str(tmp_path / "warm"), str(SHARD)]
    subprocess.run([sys.executable, str(tmp_path / "make.py"), *warm, str(T), str(SHARD)], check=True)
    done = subprocess.run(
        [sys.executable, str(tmp_path / "merge.py"), *run, warm[0]],
        capture_output=True,
        text=True,
        check=True,
    )
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    per_row = (measured["peak"] - measured["base"]) / rows
    data = 4 * (T + 1) + 16
    print(f"merge + read back: {per_row:.0f} bytes per row")
    assert per_row < 10 * data, f"{per_row:.0f} bytes per row for {data} bytes of data"
