"""benchmarks/bench_reliability.py: its analyses give known answers, and --quick runs end to end."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location(
        "bench_reliability", ROOT / "benchmarks" / "bench_reliability.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def _pool_errors(n=3000, steps=4, draws=8, noise=(0.5, 0.5, 3.0, 0.5), seed=0):
    """Errors = image signal (sd 1 at every timestep) + draw noise whose sd differs per timestep."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=(n, 1, 1))
    return signal + rng.normal(size=(n, steps, draws)) * np.asarray(noise)[None, :, None], np.arange(n) % 10


def test_curve_split_half_predicts_test_retest(bench):
    errors, labels = _pool_errors()
    curve = bench.reliability_curve(errors, labels, bench.Pool(4, 8))
    assert [row["draws"] for row in curve] == [1, 2, 4] and [row["passes"] for row in curve] == [4, 8, 16]
    for row in curve:
        # raw mean: noise variance (0.25 * 3 + 9) / 16 per draw; the signal is 1
        pearson = 1 / (1 + (0.75 + 9) / 16 / row["draws"])
        theory = 6 / np.pi * np.arcsin(pearson / 2)  # Spearman's rho of a bivariate normal
        assert row["retest_raw"] == pytest.approx(theory, abs=0.04)
        if row["draws"] >= 2:
            assert row["split_raw"] == pytest.approx(row["retest_raw"], abs=0.04)
    # standardisation shrinks the noisy timestep's weight: more reliable at every D
    assert all(row["retest_std"] > row["retest_raw"] for row in curve)
    best = bench.cheapest(curve, 0.8)
    assert best["passes"] == min(r["passes"] for r in curve if max(r["retest_raw"], r["retest_std"]) >= 0.8)
    assert bench.cheapest(curve, 0.999) is None


def test_timestep_signal_finds_the_noisy_timestep(bench):
    errors, labels = _pool_errors()
    rows = bench.timestep_signal(errors, labels, [50, 150, 250, 350])
    assert [round(r["signal_sd"], 1) for r in rows] == [1.0, 1.0, 1.0, 1.0]
    assert rows[2]["noise_sd_per_draw"] == pytest.approx(3.0, abs=0.1)
    own = [next(v for k, v in r.items() if k.startswith("reliability_")) for r in rows]
    assert own[2] < min(own[0], own[1], own[3])
    assert sum(r["share_of_raw_variance"] for r in rows) == pytest.approx(1.0)


def test_quick_mode_runs_end_to_end_and_resumes(bench, tmp_path, capsys):
    out = tmp_path / "quick.json"
    assert bench.main(["--quick", "--cache", str(tmp_path / "cache"), "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    entry = results["scorers"][0]
    assert results["rows"] == 40 and set(entry["pools"]) == {"T2", "T2-antithetic", "T2-stratified"}
    assert "| T2 | 2 | 4 |" in capsys.readouterr().out
    cached = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert bench.main(["--quick", "--cache", str(tmp_path / "cache")]) == 0  # everything from the cache
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == cached
