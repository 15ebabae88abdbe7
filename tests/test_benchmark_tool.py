"""``d2c benchmark`` (d2c_hf.benchmark): its parts on known inputs, and the quick mode end to end on a
generated dataset that is not the digits (12 px colour images, other class names, uneven classes)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value
from PIL import Image as PILImage

from d2c_hf.benchmark import QUICK, Arm, BenchmarkSettings, Budget
from d2c_hf.benchmark.analysis import analyse, arm_contrast, contrast, regime, verdicts
from d2c_hf.benchmark.data import load_labelled_images
from d2c_hf.benchmark.evaluator import class_allocation
from d2c_hf.benchmark.settings import FULL_SPLIT, run_specs
from d2c_hf.cli import benchmark_main
from d2c_hf.evaluation.probes import LinearProbe, PixelMLPProbe

SHAPES = ("circle", "square", "cross")
SIZES = (22, 14, 9)  # uneven classes


def _shape_images(rng: np.random.Generator, kind: int, n: int, side: int = 20) -> list[PILImage.Image]:
    """Colour images of one shape per class, with jittered position, size and colour."""
    yy, xx = np.mgrid[:side, :side]
    out = []
    for _ in range(n):
        cy, cx = rng.uniform(7, 13, size=2)
        r = rng.uniform(3, 6)
        if kind == 0:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        elif kind == 1:
            mask = (np.abs(yy - cy) <= r) & (np.abs(xx - cx) <= r)
        else:
            mask = (np.abs(yy - cy) <= 1.2) | (np.abs(xx - cx) <= 1.2)
        colour = rng.uniform(120, 255, size=3)
        image = np.zeros((side, side, 3)) + rng.uniform(0, 40, size=3)
        image[mask] = colour
        out.append(
            PILImage.fromarray(np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8))
        )
    return out


@pytest.fixture(scope="module")
def shapes_dataset():
    """45 colour images at 20 px in three classes of 22, 14 and 9, under the columns ``picture`` / ``kind``."""
    rng = np.random.default_rng(0)
    images, labels = [], []
    for kind, n in enumerate(SIZES):
        images += _shape_images(rng, kind, n)
        labels += [kind] * n
    features = Features({"picture": Image(), "kind": ClassLabel(names=list(SHAPES)), "note": Value("string")})
    return Dataset.from_dict(
        {"picture": images, "kind": labels, "note": ["x"] * len(labels)}, features=features
    )


# --------------------------------------------------------------------------------------
# settings
# --------------------------------------------------------------------------------------


def test_arms_parse_and_print_back():
    assert Arm.parse("interval") == Arm("interval")
    paper = Arm.parse("interval:paper")
    assert paper.interval == "paper" and paper.key == "interval:paper" and "paper" in paper.name
    assert Arm.parse("interval:7").interval == 7
    aligned = Arm.parse("alignment:std_weight=0.5,max_passes=0")
    assert dict(aligned.options) == {"std_weight": 0.5, "max_passes": 0}
    assert Arm.parse(aligned.key) == aligned and aligned.needs_features and not aligned.needs_scores
    assert Arm.parse("window:position=0.25").slug == "window-position_0_25"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("best", "unknown strategy 'best'"),
        ("herding:paper", "not name=value"),
        ("interval:wide", "interval must be"),
        ("window", "position"),
        ("ccs:cutoff=2", "cutoff"),
    ],
)
def test_bad_arms_are_refused(text, match):
    with pytest.raises((ValueError, TypeError), match=match):
        Arm.parse(text)


def test_budgets_and_settings_are_checked():
    assert Budget(images_per_class=2).label == "2/class" and Budget(ratio=0.1).label == "10%"
    assert Budget(ratio=0.125).slug == "ratio12_5pct"
    for bad in ({}, {"images_per_class": 2, "ratio": 0.1}, {"images_per_class": 0}, {"ratio": 1.0}):
        with pytest.raises(ValueError):
            Budget(**bad)
    with pytest.raises(ValueError, match="must include 'random'"):
        BenchmarkSettings(arms=(Arm("interval"),))
    with pytest.raises(ValueError, match="arms repeat"):
        BenchmarkSettings(arms=(Arm("random"), Arm.parse("random")))
    with pytest.raises(ValueError, match="not a multiple of the patch size"):
        BenchmarkSettings(resolution=18)
    with pytest.raises(ValueError, match="seeds"):
        BenchmarkSettings(seeds=(0, 0))


def test_runs_are_seed_major_with_the_full_split_last():
    settings = replace(QUICK, seeds=(0, 1), budgets=(Budget(images_per_class=1), Budget(ratio=0.2)))
    tags = [s.tag for s in run_specs(settings)]
    assert tags[:7] == [
        "ipc1-random-seed0", "ipc1-interval-seed0", "ipc1-herding-seed0",
        "ratio20pct-random-seed0", "ratio20pct-interval-seed0", "ratio20pct-herding-seed0", "full-full-seed0",
    ]  # fmt: skip
    assert tags[7] == "ipc1-random-seed1" and len(tags) == 14
    # the digits benchmark v2's checkpoints
    assert BenchmarkSettings().with_steps(6000).eval_steps() == [375, 750, 1125, 1875, 2625, 4125, 6000]


# --------------------------------------------------------------------------------------
# data and evaluator
# --------------------------------------------------------------------------------------


def test_the_holdout_is_per_class_and_seeded(shapes_dataset):
    data = load_labelled_images(
        shapes_dataset, image_column="picture", label_column="kind", holdout=0.2, seed=3
    )
    # round(0.2 * n) per class: 4, 3, 2
    assert data.identity["reference_class_sizes"] == [4, 3, 2]
    assert data.identity["train_class_sizes"] == [18, 11, 7]
    assert data.class_names == SHAPES and data.train.column_names == ["image", "label"]
    again = load_labelled_images(
        shapes_dataset, image_column="picture", label_column="kind", holdout=0.2, seed=3
    )
    assert again.reference["label"] == data.reference["label"]
    assert np.array_equal(np.asarray(again.reference["image"][0]), np.asarray(data.reference["image"][0]))
    with pytest.raises(ValueError, match="'shape'"):
        load_labelled_images(shapes_dataset, image_column="picture", label_column="shape")


def test_a_held_out_split_is_the_reference(shapes_dataset):
    d = shapes_dataset.rename_columns({"picture": "image", "kind": "label"})
    rows = np.arange(len(d))
    both = DatasetDict({"train": d.select(rows[rows % 3 > 0]), "validation": d.select(rows[rows % 3 == 0])})
    data = load_labelled_images(both)
    assert data.identity["reference"] == "split 'validation'" and len(data.reference) == 15
    with pytest.raises(ValueError, match="reference_split 'test'"):
        load_labelled_images(both, reference_split="test")


def test_class_allocation_follows_the_reference_mix():
    labels = np.repeat(np.arange(3), [36, 35, 1])
    alloc = class_allocation(labels, 3, 300)
    assert alloc.sum() == 300 and alloc.tolist() == [150, 146, 4]  # 150.0, 145.83, 4.17
    assert class_allocation(np.repeat(np.arange(2), 5), 2, 7).tolist() == [4, 3]  # a tie goes to class 0


def test_pixel_probe_fits_colour_and_reloads(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 60, size=(40, 12, 12, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(2), 20)
    images[labels == 1, ..., 0] += 150  # class 1 is red
    probe = PixelMLPProbe(image_size=4, hidden_size=8, max_iter=300).fit(images, labels)
    assert probe.grey is False and probe(images).shape == (40, 8)
    assert probe.class_accuracy(images, labels) == 1.0
    loaded = PixelMLPProbe.load(probe.save(tmp_path / "p.safetensors"))
    np.testing.assert_array_equal(loaded(images), probe(images))
    grey = np.repeat(images[..., :1], 3, axis=-1)
    assert PixelMLPProbe(image_size=4, hidden_size=8, max_iter=50).fit(grey, labels).grey is True


def test_linear_probe_on_features(tmp_path):
    rng = np.random.default_rng(1)
    centres = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    labels = np.repeat(np.arange(3), 10)
    x = centres[labels] + rng.normal(0, 0.3, size=(30, 2))

    def extractor(images):
        return x[np.asarray(images)]

    probe = LinearProbe(extractor).fit(np.arange(30), labels)
    np.testing.assert_array_equal(probe.predict(np.arange(30)), labels)
    loaded = LinearProbe.load(probe.save(tmp_path / "l.safetensors"), extractor)
    np.testing.assert_array_equal(loaded.predict(np.arange(30)), labels)


# --------------------------------------------------------------------------------------
# statistics on known run records
# --------------------------------------------------------------------------------------


def _run(arm, budget, seed, fd, acc=0.9):
    metrics = {"fd": fd, "kid_mean": fd / 10, "precision": 0.5, "recall": 0.5, "class_accuracy": acc}
    curve = [{"step": 10, **{**metrics, "fd": fd + 1}}, {"step": 20, **metrics}]
    return {
        "tag": f"{budget}-{arm}-seed{seed}", "arm": arm, "budget_label": budget, "seed": seed, "num_images": 6,
        "shared_with": None, "curve": curve,
        "final": {"unguided_seed0": metrics, "unguided_seed1": {**metrics, "fd": fd + 0.2},
                  "guided_seed0": metrics, "guided_seed1": metrics},
    }  # fmt: skip


def test_contrasts_and_the_regime_check_on_known_runs():
    settings = replace(QUICK, seeds=(0, 1, 2), budgets=(Budget(images_per_class=2),))
    random = [_run("random", "2/class", s, fd) for s, fd in enumerate((2.0, 2.2, 2.4))]
    herding = [_run("herding", "2/class", s, fd) for s, fd in enumerate((1.5, 1.8, 2.1))]
    full = [_run("full", "full", s, fd, acc=0.95) for s, fd in enumerate((1.0, 1.05, 1.1))]
    d = contrast(herding, random)["fd/unguided"]
    assert d["per_seed"] == pytest.approx([-0.5, -0.4, -0.3]) and d["mean"] == pytest.approx(-0.4)
    assert d["low"] == pytest.approx(-0.5) and d["high"] == pytest.approx(-0.3)  # 3 seeds: the extremes
    check = regime(random, full, reference_accuracy=1.0)
    # final FD = mean of the two sampling seeds: random 2.1, 2.3, 2.5; full 1.1, 1.15, 1.2
    assert check["final"]["fd_random"] == pytest.approx(2.3) and check["final"]["passes"]
    assert not regime(random, full, reference_accuracy=1.2)["final"]["passes"]  # 0.95 < 0.8 x 1.2
    results = analyse(settings, [*random, *herding, *full], reference_accuracy=1.0)
    assert results["map"]["herding"]["cells"]["2/class"]["fd/unguided"]["mean"] == pytest.approx(-0.4)
    assert results["map"]["interval"]["cells"] == {}  # no run yet: left out, not invented
    assert results["regime"]["budget"] == "2/class"
    gap = results["regime"]["by_budget"]["2/class"]  # the same final gap, per budget
    assert (
        gap["fd_random"] == pytest.approx(2.3)
        and gap["fd_full"] == pytest.approx(1.15)
        and gap["seeds"] == [0, 1, 2]
    )
    assert results["evaluator_spread"]["unguided"]["fd"] == pytest.approx(0.2 / np.sqrt(2))
    assert FULL_SPLIT.key in results["budgets"]["2/class"]["cells"]
    assert results["verdicts"]["budgets"]["2/class"]["better"] == ["herding"]  # -0.4 [-0.5, -0.3]


def _cell(*per_seed: float) -> dict:
    d = np.asarray(per_seed)
    return {"fd/unguided": {"mean": float(d.mean()), "low": float(d.min()), "high": float(d.max()),
                            "per_seed": list(per_seed)}}  # fmt: skip


def test_verdicts_read_the_map_off_its_intervals():
    results = {"map": {
        "steady": {"name": "steady", "cells": {"a": _cell(-1, -2), "b": _cell(-0.5, -0.1), "c": _cell(-0.2, 0.3)}},
        "twin": {"name": "twin", "cells": {"a": _cell(-1, -2), "b": _cell(0.1, 0.2), "c": _cell(-0.3, -0.4)}},
        "lonely": {"name": "lonely", "cells": {"a": _cell(-5.0), "c": _cell(-0.1, -0.2)}},
        "bad": {"name": "bad", "cells": {"a": _cell(1, 2), "b": _cell(0.5, 0.7), "c": _cell(0.1, 0.2)}},
    }}  # fmt: skip
    v = verdicts(results, ["a", "b", "c", "d"])
    a, b, c = (v["budgets"][k] for k in "abc")
    assert a["better"] == ["steady", "twin"] and a["worse"] == ["bad"]
    assert a["unresolved"] == ["lonely"]  # one seed decides nothing, whatever its size ...
    # ... but its mean is still shown
    assert a["lowest"]["arms"] == ["lonely"] and a["lowest"]["mean"] == -5.0
    assert b["better"] == ["steady"] and b["worse"] == ["twin", "bad"]
    assert c["lowest"]["arms"] == ["twin"] and c["unresolved"] == ["steady"]
    assert v["budgets"]["d"] == {"better": [], "worse": [], "unresolved": [], "lowest": None}
    # steady: better at a and b, never worse; twin is worse at b; lonely better only once
    assert v["never_worse_better_twice"] == ["steady"]
    results["map"]["twin"]["cells"]["a"] = _cell(-1.5, -1.5)  # the same mean as steady's: a tie, both named
    assert verdicts(results, ["a"])["budgets"]["a"]["lowest"]["arms"] == ["lonely"]
    del results["map"]["lonely"]
    assert verdicts(results, ["a"])["budgets"]["a"]["lowest"]["arms"] == ["steady", "twin"]
    only_worse = {"map": {"bad": results["map"]["bad"]}}
    assert verdicts(only_worse, ["a"])["budgets"]["a"]["lowest"] is None  # nothing beats random


def test_two_arms_compared_directly_seed_by_seed():
    def vs_random(seeds, diffs):
        return {"vs_random": {"fd/unguided": {"seeds": seeds, "per_seed": diffs}}}

    results = {"budgets": {
        "a": {"cells": {"random": {}, "x": vs_random([0, 1, 2], [-1.0, -2.0, -3.0]),
                        "y": vs_random([0, 1, 2], [0.5, 0.0, -1.0])}},
        "b": {"cells": {"random": {}, "x": vs_random([0, 1], [-1.0, -1.0]), "y": vs_random([1, 2], [1.0, 1.0])}},
        "c": {"cells": {"random": {}, "x": vs_random([0], [-1.0])}},  # y not run at c
    }}  # fmt: skip
    d = arm_contrast(results, "x", "y")
    assert d["a"]["per_seed"] == pytest.approx([-1.5, -2.0, -2.0]) and d["a"]["mean"] == pytest.approx(
        -11 / 6
    )
    assert d["b"]["seeds"] == [1] and d["b"]["per_seed"] == pytest.approx([-2.0])  # only the shared seed
    assert "c" not in d
    flipped = arm_contrast(results, "y", "x")
    assert flipped["a"]["mean"] == pytest.approx(11 / 6)
    # random as either side: the other arm's own paired difference
    assert arm_contrast(results, "random", "x")["c"]["per_seed"] == pytest.approx([1.0])
    assert arm_contrast(results, "x", "random")["a"]["mean"] == pytest.approx(-2.0)


# --------------------------------------------------------------------------------------
# quick mode end to end, on data that is not the digits
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quick_run(shapes_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    shapes_dataset.save_to_disk(str(root / "shapes"))
    argv = [
        "--dataset", str(root / "shapes"), "--image_column", "picture", "--label_column", "kind",
        "--quick", "--resolution", "12", "--strategies", "random", "interval:paper", "min", "kmeans",
        "--images_per_class", "1", "--samples_per_class", "4", "--threads", "1",
        "--work_dir", str(root / "work"), "--output_dir", str(root / "out"), "--name", "shapes",
    ]  # fmt: skip
    assert benchmark_main(argv) == 0
    return root, argv


def test_quick_mode_reports_a_dataset_that_is_not_the_digits(quick_run):
    root, _ = quick_run
    record = json.loads((root / "out" / "shapes.json").read_text())
    assert record["data"]["class_names"] == list(SHAPES)
    assert record["data"]["train_class_sizes"] == [18, 11, 7]
    assert record["num_runs"] == record["num_runs_done"] == 5  # 4 arms x 1 budget + the full split
    runs = {r["tag"]: r for r in record["runs"]}
    assert runs["ipc1-random-seed0"]["class_counts"] == [1, 1, 1]
    assert runs["full-full-seed0"]["num_images"] == 36
    # one image per class: the paper stride and min both keep the easiest image: trained once, shared
    assert runs["ipc1-min-seed0"]["shared_with"] == "ipc1-interval-paper-seed0"
    assert record["num_trained"] == 4
    evaluator = record["prepared"]["evaluator"]
    assert evaluator["kind"] == "pixels" and "colour" in evaluator["what"]
    text = (root / "out" / "shapes.md").read_text()
    for needle in ("## The map", "D2C interval (paper's stride proportion)", "## Budget 1/class", "circle, square, cross",
                   "## The regime check", "d2c benchmark --dataset", "## What the intervals say", "`ipc1-min-seed0` = `ipc1-interval-paper-seed0`"):  # fmt: skip
        assert needle in text
    for figure in ("shapes_map.png", "shapes_ipc1_curves.png"):
        assert (root / "out" / figure).stat().st_size > 1000


def test_a_ratio_budget_plans_per_class_counts_on_uneven_classes(quick_run):
    """The plan of a ratio budget on the prepared data (no training): round(0.3 * 36 / 3) = 4 per class."""
    from d2c_hf.benchmark.prepare import load_prepared_arrays
    from d2c_hf.benchmark.runs import plan

    root, _ = quick_run
    arrays = load_prepared_arrays(root / "work")
    settings = replace(QUICK, arms=(Arm("random"), Arm.parse("interval:paper"), Arm("min"), Arm("kmeans")),
                       budgets=(Budget(ratio=0.3),), resolution=12)  # fmt: skip
    planned = {p.spec.tag: p for p in plan(settings, arrays)}
    for tag in ("ratio30pct-random-seed0", "ratio30pct-kmeans-seed0", "ratio30pct-interval-paper-seed0"):
        assert np.bincount(arrays["train_labels"][planned[tag].indices]).tolist() == [4, 4, 4]
    # four of a class: the paper's stride (round(0.749 * 11 / 4) = 2) no longer keeps what min keeps
    assert planned["ratio30pct-min-seed0"].digest != planned["ratio30pct-interval-paper-seed0"].digest
    assert planned["full-full-seed0"].indices.tolist() == list(range(36))


def test_compare_arms_script_on_a_report(quick_run):
    root, _ = quick_run
    script = Path(__file__).parents[1] / "benchmarks" / "compare_arms.py"
    report = str(root / "out" / "shapes.json")
    done = subprocess.run([sys.executable, script, report, "kmeans", "min"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "| budget | kmeans - min: fd/unguided | seeds |" in done.stdout and "| 1/class |" in done.stdout
    wrong = subprocess.run([sys.executable, script, report, "kmeans", "nope"], capture_output=True, text=True)
    assert wrong.returncode == 2 and "no arm 'nope'" in wrong.stderr and "'kmeans'" in wrong.stderr


def test_quick_mode_resumes_and_refuses_other_settings(quick_run):
    root, argv = quick_run
    assert benchmark_main(argv) == 0
    record = json.loads((root / "out" / "shapes.json").read_text())
    assert record["num_runs_executed"] == 0 and record["num_runs_done"] == 5
    with pytest.raises(ValueError, match=r"holds runs of other settings \['sit'\]"):
        benchmark_main([*argv, "--steps", "6"])


def test_encoder_evaluators_trained_and_named(shapes_dataset, tmp_path):
    """evaluator="encoder" trains a tiny DINOv2 on the training split (+ a logistic probe); a folder names an
    encoder to use the same way; both reload from their folder and score images of the benchmark's size."""
    from d2c_hf.benchmark.data import to_resolution
    from d2c_hf.benchmark.evaluator import build_evaluator, load_evaluator

    data = load_labelled_images(shapes_dataset, image_column="picture", label_column="kind")
    train = to_resolution(data.train, 12)
    pixels = np.stack([np.asarray(im) for im in train["image"]])
    labels = np.asarray(train["label"])
    kwargs = {"train_dataset": train, "probe_size": 8, "num_tokens": 9, "resolution": 12, "encoder_steps": 2}
    record = build_evaluator("encoder", pixels, labels, tmp_path / "trained", **kwargs)
    assert record["kind"] == "encoder" and record["dim"] == 64 and 0.0 <= record["train_accuracy"] <= 1.0
    evaluator = load_evaluator(tmp_path / "trained", num_tokens=9, resolution=12)
    assert evaluator.features(pixels[:5]).shape == (5, 64)
    assert set(evaluator.classifier.predict(pixels[:5])) <= {0, 1, 2}
    named = build_evaluator(
        str(tmp_path / "trained" / "encoder"), pixels, labels, tmp_path / "named", **kwargs
    )
    assert named["kind"] == "named encoder" and str(tmp_path / "trained" / "encoder") in named["what"]
    again = load_evaluator(tmp_path / "named", num_tokens=9, resolution=12)
    np.testing.assert_allclose(again.features(pixels[:5]), evaluator.features(pixels[:5]))
    with pytest.raises(FileNotFoundError, match="neither 'pixels', 'encoder' nor a folder"):
        build_evaluator(str(tmp_path / "missing"), pixels, labels, tmp_path / "x", **kwargs)


def test_string_labels_of_a_reference_are_encoded_by_the_training_names(shapes_dataset):
    d = shapes_dataset.rename_columns({"picture": "image"})
    names = np.asarray(SHAPES)[np.asarray(d["kind"])].tolist()
    d = d.remove_columns("kind").add_column("label", names)  # plain strings
    rows = np.arange(len(d))
    train = d.select(rows[rows % 3 > 0])
    reference = d.select([i for i in rows if i % 3 == 0 and names[i] != "circle"])  # no circle at all
    data = load_labelled_images(DatasetDict({"train": train, "test": reference}))
    assert data.class_names == ("circle", "cross", "square")  # sorted by the encoding of the training split
    expected = [data.class_names.index(names[i]) for i in rows if i % 3 == 0 and names[i] != "circle"]
    assert data.reference["label"] == expected and 0 not in expected
    other = reference.cast_column("label", ClassLabel(names=["square", "cross", "circle"]))
    with pytest.raises(ValueError, match="would not mean the same classes"):
        load_labelled_images(DatasetDict({"train": train.cast_column("label", ClassLabel(names=list(SHAPES))),
                                          "test": other}))  # fmt: skip
