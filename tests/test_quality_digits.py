"""``benchmarks/quality_digits.py``: the statistics on known run records, and ``--quick`` end to end."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "quality_digits.py"


def _load():
    spec = importlib.util.spec_from_file_location("quality_digits_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _load()


# --------------------------------------------------------------------------------------
# known inputs
# --------------------------------------------------------------------------------------


def _metrics(fd: float, acc: float = 0.5) -> dict[str, float]:
    return {"fd": fd, "kid_mean": fd / 10, "precision": 0.5, "recall": 0.4, "class_accuracy": acc}


def _run(budget, arm, seed, fd_curve, final_fd, *, acc=0.5, spread=0.2, guided_fd=None):
    """A run record as ``execute`` writes it: curve at steps 100 and 1000, two sampling seeds per mode."""
    return {
        "tag": f"{budget}-{arm}-{seed}",
        "budget": budget,
        "arm": arm,
        "seed": seed,
        "width": 64,
        "num_images": 140 if budget else 1437,
        "settings_key": "x",
        "curve": [
            {"step": 100, **_metrics(fd_curve[0], acc)},
            {"step": 1000, **_metrics(fd_curve[1], acc)},
        ],
        "final": {
            "unguided_seed0": _metrics(final_fd, acc),
            "unguided_seed1": _metrics(final_fd + spread, acc),
            "guided_seed0": _metrics(guided_fd if guided_fd is not None else final_fd - 1, acc),
            "guided_seed1": _metrics(guided_fd if guided_fd is not None else final_fd - 1, acc),
        },
        "seconds": 10.0,
    }


@pytest.fixture(scope="module")
def known(bench):
    """Four seeds of random, interval and the full split with hand-computable statistics."""
    settings = bench.Settings(seeds=(0, 1, 2, 3), select=("random", "interval"), attach_ablation=False)
    runs = []
    for s in range(4):
        runs.append(_run(0.1, "random", s, (10.0, 4.0), 4.0))
        runs.append(_run(0.1, "interval", s, (8.0, 2.0 + 0.1 * s), 2.0 + 0.1 * s, acc=0.9))
        runs.append(_run(None, "full", s, (9.0, 1.0 + 0.2 * s), 1.0 + 0.2 * s, acc=0.85))
    return settings, runs, bench.analyse(settings, runs)


def test_means_and_stds_over_seeds(known):
    _, _, results = known
    cells = results["budgets"]["10%"]["cells"]
    interval = cells["interval"]["summary"]
    # final = mean of the two sampling seeds: 2.1 + 0.1 s, over s = 0..3
    assert interval["unguided"]["fd"]["mean"] == pytest.approx(2.25)
    assert interval["unguided"]["fd"]["std"] == pytest.approx(np.std([2.1, 2.2, 2.3, 2.4], ddof=1))
    assert interval["guided"]["fd"]["mean"] == pytest.approx(1.15)
    assert interval["unguided"]["class_accuracy"]["mean"] == pytest.approx(0.9)
    assert cells["random"]["summary"]["unguided"]["fd"] == {"mean": pytest.approx(4.1), "std": 0.0}
    assert [c["step"] for c in interval["curve"]] == [100, 1000]
    assert interval["curve"][1]["fd"]["mean"] == pytest.approx(2.15)


def test_steps_to_random_final_fd_and_log_step_area(known):
    _, _, results = known
    block = results["budgets"]["10%"]
    assert block["threshold_fd"] == pytest.approx(4.0)  # random's final curve FD, mean over seeds
    steps = block["cells"]["interval"]["summary"]["steps_to_threshold"]
    # from 8 at step 100 to 2 + 0.1 s at step 1000: f = 4 / (6 - 0.1 s) of a log-decade past 100
    expected = [10 ** (2 + 4 / (6 - 0.1 * s)) for s in range(4)]
    assert [steps["per_seed"][s] for s in range(4)] == pytest.approx(expected)
    assert steps["median"] == pytest.approx(np.median(expected))
    assert steps["reached"] == 4
    # random reaches its own final FD exactly at its last evaluation
    assert block["cells"]["random"]["summary"]["steps_to_threshold"]["median"] == pytest.approx(1000)
    area = block["cells"]["interval"]["summary"]["fd_log_area"]
    assert area["mean"] == pytest.approx(np.mean([(8 + 2 + 0.1 * s) / 2 for s in range(4)]))


def test_paired_differences_against_random(known):
    _, _, results = known
    diff = results["budgets"]["10%"]["cells"]["interval"]["vs_random"]
    fd = diff["fd/unguided"]
    assert fd["per_seed"] == pytest.approx([-2.0, -1.9, -1.8, -1.7])
    assert fd["mean"] == pytest.approx(-1.85)
    assert -2.0 <= fd["low"] < fd["mean"] < fd["high"] <= -1.7
    assert diff["class_accuracy/unguided"]["mean"] == pytest.approx(0.4)
    assert diff["fd/guided"]["mean"] == pytest.approx(-1.85)
    full = results["budgets"]["10%"]["cells"]["full"]["vs_random"]["fd/unguided"]
    assert full["mean"] == pytest.approx(np.mean([1.1 + 0.2 * s for s in range(4)]) - 4.1)


def test_evaluator_spread_and_regime_check(known):
    _, _, results = known
    # every run's two sampling seeds differ by 0.2 FD: sd of one evaluation = 0.2 / sqrt(2)
    assert results["evaluator_spread"]["unguided"]["fd"] == pytest.approx(0.2 / math.sqrt(2))
    assert results["evaluator_spread"]["guided"]["fd"] == pytest.approx(0.0)
    rows = next(iter(results["calibration"].values()))["checkpoints"]
    last = rows[-1]
    full = [1.0 + 0.2 * s for s in range(4)]
    pooled = math.sqrt(3 * np.var(full, ddof=1) / 6)  # random's four runs are identical
    assert last["separation"] == pytest.approx((4.0 - np.mean(full)) / pooled)
    assert last["class_accuracy_full"] == pytest.approx(0.85)


def test_regime_check_is_judged_on_the_final_evaluation(bench):
    """One noisy checkpoint evaluation (2.4 std) must not decide the check when the mean over the
    sampling seeds (the arm tables' measurement) separates clearly, and the verdict prints both."""
    noise = [0.0, 2.0, 0.0, 2.0]  # the first sampling seed's evaluator noise, cancelled by the second
    random_runs, full_runs = [], []
    for s in range(4):
        random_runs.append(_run(0.1, "random", s, (10.0, 4.0), 4.0, spread=0.0))
        run = _run(None, "full", s, (9.0, 1.0 + noise[s]), 1.0 + noise[s], acc=0.85)
        run["final"]["unguided_seed1"] = _metrics(1.0 - noise[s] + 0.1 * s, 0.85)
        full_runs.append(run)
    final = bench.final_regime(random_runs, full_runs)
    finals = [1.0 + 0.05 * s for s in range(4)]
    assert final["num_sampling_seeds"] == 2 and final["step"] == 1000
    assert final["fd_full"] == pytest.approx(np.mean(finals))
    assert final["fd_random"] == pytest.approx(4.0) and final["fd_random_std"] == 0.0
    pooled = math.sqrt(3 * np.var(finals, ddof=1) / 6)
    assert final["separation"] == pytest.approx((4.0 - np.mean(finals)) / pooled)
    checkpoints = bench.calibration(random_runs, full_runs)
    assert checkpoints[-1]["separation"] == pytest.approx(2.0 / math.sqrt(2 / 3))  # 2.4: fails alone
    text = bench.regime_verdict({"checkpoints": checkpoints, "final": final})
    assert "the regime check passes" in text and "mean of 2 sampling seeds" in text and "2.4 std" in text
    # the single evaluation alone (a record without the final entry) fails
    assert "the regime check fails" in bench.regime_verdict({"checkpoints": checkpoints})
    # and a full split that is not better fails on the final evaluation too
    worse = bench.final_regime(full_runs, random_runs)
    assert worse["separation"] < 0
    assert "the regime check fails" in bench.regime_verdict({"checkpoints": checkpoints, "final": worse})


def test_report_prints_the_numbers(bench, known, tmp_path):
    settings, runs, results = known
    record = {
        "settings": {},
        "prepared": {
            "num_train": 1437,
            "num_test": 360,
            "seconds": 1.0,
            "reliability": {"reliability": 0.9, "correlation": 0.82, "method": "split-half"},
            "encoder_probes": {"grey pixels": {"dim": 256, "linear_probe": 0.96, "knn5": 0.97}},
        },
        "real_reference": _metrics(0.3, 1.0),
        "interval_strides": {"10%": 7},
        "runs": runs,
        "results": results,
        "command": "python benchmarks/quality_digits.py --test",
        "runtime_seconds": 60.0,
        "num_runs": len(runs),
        "num_runs_executed": len(runs),
        "jobs": 2,
        "threads_per_job": 1,
        "cpu_count": 2,
        "machine": "x86_64",
        "torch": "2.13.0",
        "run_seconds_total": 120.0,
    }
    text = bench.write_report(tmp_path, settings, record).read_text()
    assert "Runtime: **1.0 min**" in text
    assert "**Split-half reliability of the score: 0.900**" in text
    rows = {r[0]: r for r in _rows(text, "## Budget 10%")}
    assert rows["D2C interval"][2] == "2.250 ± 0.129"  # FD mean ± std
    steps = float(rows["D2C interval"][-2])
    assert steps == pytest.approx(np.median([10 ** (2 + 4 / (6 - 0.1 * s)) for s in range(4)]), abs=0.5)
    contrast = {r[0]: r for r in _rows(text, "Paired differences against random")}
    assert re.fullmatch(r"-1\.850 \[-\d\.\d{3}, -\d\.\d{3}\] \*", contrast["D2C interval"][1])
    assert "the regime check passes" in text
    assert "Not in this run (the issue's full grid has them)" in text and "budget 5%" in text


def _rows(text: str, heading: str) -> list[list[str]]:
    """The body rows of the first Markdown table after ``heading``."""
    lines = text.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    cells = [[cell.strip() for cell in row.strip("|").split("|")] for row in lines[start:end]]
    return cells[2:]  # header and separator off


# --------------------------------------------------------------------------------------
# --quick, end to end
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quick(bench, tmp_path_factory):
    root = tmp_path_factory.mktemp("quality")
    argv = ["--quick", "--output-dir", str(root / "report"), "--work-dir", str(root / "work")]
    assert bench.main(argv) == 0
    return root, argv


def test_quick_report_and_json(bench, quick):
    root, _ = quick
    text = (root / "report" / "quality_digits.md").read_text()
    assert "python benchmarks/quality_digits.py --quick --output-dir" in text
    names = [r[0] for r in _rows(text, "## Budget 10%")][:6]
    assert names == [
        "random",
        "D2C interval",
        "herding",
        "D2C interval + trained encoders",
        "D2C interval + class-constant control",
        "full train split",
    ]
    record = json.loads((root / "report" / "quality_digits.json").read_text())
    assert len(record["runs"]) == 6
    for run in record["runs"]:
        assert [c["step"] for c in run["curve"]] == [2, 4]
        assert set(run["final"]) == {"unguided_seed0", "unguided_seed1", "guided_seed0", "guided_seed1"}
        for values in run["final"].values():
            assert all(math.isfinite(values[k]) for k in bench.METRIC_KEYS)
    reliability = record["prepared"]["reliability"]
    assert reliability["method"] == "split-half" and -1.0 <= reliability["correlation"] <= 1.0
    assert "Split-half reliability of the score:" in text
    probes = record["prepared"]["encoder_probes"]
    assert set(probes) == {"grey pixels", "random encoder", "trained encoder"}
    for name in ("select", "attach"):
        assert (root / "report" / f"quality_digits_budget10pct_{name}.png").is_file()


def test_quick_resumes_from_the_cache(bench, quick):
    root, argv = quick
    first = json.loads((root / "report" / "quality_digits.json").read_text())
    assert bench.main(argv) == 0  # every run cached: nothing is trained again
    second = json.loads((root / "report" / "quality_digits.json").read_text())
    assert second["num_runs_executed"] == 0
    assert second["results"] == first["results"]


def test_a_work_dir_refuses_other_settings(bench, quick):
    root, _ = quick
    other = replace(bench.QUICK, samples_per_class=8)
    with pytest.raises(SystemExit, match="other settings"):
        bench.run_all(other, root / "work")


def test_bad_arguments_are_refused(bench):
    for argv in (
        ["--quick"],
        ["--budgets", "5"],
        ["--select", "nope"],
        ["--calibrate"],
        ["--widths", "64"],
        ["--attach-modes", "none"],
    ):
        with pytest.raises(SystemExit):
            bench.parse_args(argv)
    only = bench.settings_from_args(
        bench.parse_args(["--select", "random", "--attach-modes", "class_constant"])
    )
    assert [a.key for a in bench.arms_for(only)] == [
        "random",
        "random+class_constant",
        "interval",
        "interval+class_constant",
    ]
    assert any("random encoders" in c for c in bench.cut_from_grid(only))
    args = bench.parse_args(["--steps", "800", "--seeds", "3", "4", "--select", "min", "--no-ablation"])
    settings = bench.settings_from_args(args)
    assert settings.sit.max_train_steps == 800 and settings.sit.validation_steps == 50
    assert settings.seeds == (3, 4) and settings.select == ("min",) and not settings.attach_ablation
    calibrate = bench.settings_from_args(bench.parse_args(["--calibrate", "--widths", "64", "96"]))
    specs = bench.run_specs(calibrate)
    assert {(s.arm.key, s.width) for s in specs} == {
        ("random", 64),
        ("full", 64),
        ("random", 96),
        ("full", 96),
    }


def test_eval_steps_are_log_spaced(bench):
    assert bench.Settings().eval_steps() == [375, 750, 1125, 1875, 2625, 4125, 6000]
