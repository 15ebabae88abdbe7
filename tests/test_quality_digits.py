"""``benchmarks/quality_digits.py --quick``: a well-formed table, JSON and plot."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
from pathlib import Path

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


@pytest.fixture(scope="module")
def quick_output(bench, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("quality") / "report"
    assert bench.main(["--quick", "--output-dir", str(out)]) == 0
    return out


def _table_rows(text: str, heading: str) -> list[list[str]]:
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


def test_quick_report_has_a_well_formed_table(bench, quick_output):
    text = (quick_output / "quality_digits.md").read_text()
    assert "python benchmarks/quality_digits.py --quick --output-dir" in text  # the command
    assert re.search(r"Runtime: \*\*[\d.]+ min\*\*", text)
    rows = _table_rows(text, "## Budget 10%")
    header, separator, body = rows[0], rows[1], rows[2:]
    assert header == ["training set", "images", *[bench.METRIC_LABELS[k] for k in bench.METRIC_KEYS]]
    assert all(set(cell) <= set("-") for cell in separator)
    names = [row[0] for row in body]
    assert names == [
        "random",
        "D2C interval (select only)",
        "random + attach (attach only)",
        "D2C interval + attach (select + attach)",
        "full train split (reference)",
    ]
    for row in body:
        assert len(row) == len(header)
        images = int(row[1])
        assert images == (300 if row[0].startswith("full") else 30)  # quick: 300 rows; 10 % = 3 per class
        for cell in row[2:]:
            assert math.isfinite(float(cell))  # one seed: a plain number, no "± std"
    assert (quick_output / "quality_digits_budget10pct.png").is_file()
    assert "quality_digits_budget10pct.png" in text


def test_quick_json_holds_every_run(bench, quick_output):
    record = json.loads((quick_output / "quality_digits.json").read_text())
    cells = record["results"]["budgets"]["10%"]
    assert set(cells) == {"random", "interval", "random+attach", "interval+attach"}
    for cell in [*cells.values(), record["results"]["full"]]:
        (run,) = cell["runs"]  # one seed
        assert run["seed"] == 0
        assert [c["step"] for c in run["curve"]] == [2, 4]
        for key in bench.METRIC_KEYS:
            assert math.isfinite(run["final"][key])
            assert cell["cell"]["mean"][key] == run["final"][key]
            assert cell["cell"]["std"][key] == 0.0
    assert record["interval_strides"]["10%"] >= 1
    assert record["real_reference"]["class_accuracy"] > 0.9


def test_aggregate_mean_and_sample_std(bench):
    def run(fd, steps=(1, 2)):
        metrics = {k: fd for k in bench.METRIC_KEYS}
        return {"final": metrics, "num_images": 7, "curve": [{"step": s, **metrics} for s in steps]}

    cell = bench.aggregate([run(1.0), run(2.0), run(3.0)])
    assert cell["mean"]["fd"] == pytest.approx(2.0)
    assert cell["std"]["fd"] == pytest.approx(1.0)  # ddof = 1
    assert [c["step"] for c in cell["curve_mean"]] == [1, 2]
    assert cell["curve_std"][0]["fd"] == pytest.approx(1.0)


def test_bad_arguments_are_refused(bench):
    with pytest.raises(SystemExit):
        bench.parse_args(["--quick"])  # would overwrite docs/benchmarks
    with pytest.raises(SystemExit):
        bench.parse_args(["--budgets", "5"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--strategies", "nope"])
    args = bench.parse_args(["--steps", "40", "--seeds", "3", "4", "--strategies", "min", "--no-ablation"])
    settings = bench.settings_from_args(args)
    assert settings.sit.max_train_steps == 40 and settings.sit.validation_steps == 10
    assert settings.seeds == (3, 4) and settings.strategies == ("min",) and not settings.ablation
