"""``d2c demo``: the whole pipeline in ``--quick`` mode, and its output-folder rules."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from d2c_hf import demo
from d2c_hf.cli import main as cli_main
from d2c_hf.utils.files import replace_dir

EXPECTED_FILES = (
    "README.md",
    "metrics.md",
    "metrics.json",
    "curves.png",
    "selection.png",
    "grids/real.png",
    "grids/d2c.png",
    "grids/random_attach.png",
    "grids/random.png",
    "condensed/README.md",
    "condensed/d2c_info.json",
    "condensed/figures/difficulty.png",
    "random_attach/d2c_info.json",
    "random_subset/d2c_info.json",
    "models/scorer/d2c_scorer.json",
    "models/t5-stand-in/config.json",
    "models/dinov2-trained/config.json",
    "models/dinov2-trained/preprocessor_config.json",
    "models/dinov2-trained/d2c_encoder.json",
    "models/digits_extractor.safetensors",
)


@pytest.fixture(scope="module")
def demo_output(tmp_path_factory) -> Path:
    import random

    import rich.style  # noqa: F401 - draws from `random` once at import time; import it before the snapshot
    import torch

    out = tmp_path_factory.mktemp("demo") / "out"
    before = random.getstate(), torch.get_rng_state(), np.random.get_state()[1].copy()  # noqa: NPY002
    assert cli_main(["demo", "--quick", "--output-dir", str(out), "--seed", "0"]) == 0
    # library code never reseeds the caller's global RNGs (the training script it runs does, in-process)
    assert random.getstate() == before[0]
    assert torch.equal(torch.get_rng_state(), before[1])
    assert np.array_equal(np.random.get_state()[1], before[2])  # noqa: NPY002
    return out


def test_demo_writes_every_promised_file(demo_output):
    missing = [name for name in EXPECTED_FILES if not (demo_output / name).is_file()]
    assert not missing, f"missing from the demo folder: {missing}"
    # the staging folder was renamed into place: nothing hidden is left beside it
    assert not [p.name for p in demo_output.parent.iterdir() if p.name.startswith(".")]


def test_demo_readme_embeds_existing_files(demo_output):
    text = (demo_output / "README.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    grids = {"grids/real.png", "grids/d2c.png", "grids/random_attach.png", "grids/random.png"}
    assert grids | {"curves.png", "selection.png"} <= set(links)
    assert any(link.startswith("condensed/figures/") for link in links)
    for link in links:
        assert (demo_output / link).is_file(), link
    assert "stand-in" in text  # says that the T5 is an untrained stand-in
    assert "trained self-supervised" in text  # and that the vision encoder was trained by the demo
    assert "condensed/README.md" in text


def test_demo_metrics_are_finite_and_consistent(demo_output):
    record = json.loads((demo_output / "metrics.json").read_text())
    assert set(record["metrics"]) == {"D2C", "Random + Attach", "Random"}
    for name, values in record["metrics"].items():
        for key in demo.METRIC_KEYS:
            assert math.isfinite(values[key]), (name, key)
        assert 0.0 <= values["precision"] <= 1.0 and 0.0 <= values["recall"] <= 1.0
        assert 0.0 <= values["class_accuracy"] <= 1.0
        assert values["num_fake"] == 10 * demo.QUICK.samples_per_class
        assert values["num_real"] == 360  # the test split is the reference
        # the final metrics are the curve's last entry, at the last training step
        curve = record["curves"][name]
        assert [c["step"] for c in curve] == [3, 6]
        assert curve[-1]["fd"] == values["fd"]
    # real digits score far better than 6-step models: the metrics can tell them apart
    real = record["real_reference"]
    assert real["fd"] < min(v["fd"] for v in record["metrics"].values())
    assert real["class_accuracy"] > 0.9
    assert record["condensed_size"] == 10 * record["images_per_class"]
    table = (demo_output / "metrics.md").read_text()
    assert table.splitlines()[0].startswith("| training set | FD")
    assert "| D2C |" in table and "| Random + Attach |" in table and "| Random |" in table


def test_demo_condensed_sets(demo_output):
    from d2c_hf import CondensedDataset

    condensed = CondensedDataset.load(demo_output / "condensed")
    assert {"latents", "visual_embeds", "difficulty"} <= set(condensed.samples.column_names)
    assert "text_embeds" in condensed.classes.column_names
    assert condensed.info["selection"]["strategy"] == "interval"
    assert any("stand-in" in note for note in condensed.info["notes"])
    assert "stand-in" in (demo_output / "condensed" / "README.md").read_text()
    random_attach = CondensedDataset.load(demo_output / "random_attach")
    assert random_attach.info["selection"]["strategy"] == "random"
    assert "visual_embeds" in random_attach.samples.column_names
    assert "text_embeds" in random_attach.classes.column_names
    # both Attach sets carry the visual tokens of the vision encoder the demo trained
    for attached in (condensed, random_attach):
        assert attached.info["visual"]["encoder"]["name_or_path"].endswith("dinov2-trained")
    np.testing.assert_array_equal(random_attach.counts, condensed.counts)
    random_subset = CondensedDataset.load(demo_output / "random_subset")
    assert random_subset.info["selection"]["strategy"] == "random"
    assert len(random_subset) == len(condensed)  # same size
    assert "visual_embeds" not in random_subset.samples.column_names
    np.testing.assert_array_equal(random_subset.counts, condensed.counts)


def test_demo_grids_and_pipelines(demo_output):
    from d2c_hf import SiTPipeline

    tile = demo.GRID_TILE + 2 * demo.GRID_BORDER
    for name in ("real", "d2c", "random_attach", "random"):
        with Image.open(demo_output / "grids" / f"{name}.png") as image:
            assert image.size == (demo.QUICK.grid_per_class * tile, 10 * tile)
    record = json.loads((demo_output / "metrics.json").read_text())
    pipe = SiTPipeline.from_pretrained(str(demo_output / record["pipelines"]["D2C"]))
    assert pipe.transformer.config.text_embed_dim is not None  # trained with the DC-Embedding
    attached = SiTPipeline.from_pretrained(str(demo_output / record["pipelines"]["Random + Attach"]))
    assert attached.transformer.config.text_embed_dim is not None
    plain = SiTPipeline.from_pretrained(str(demo_output / record["pipelines"]["Random"]))
    assert plain.transformer.config.text_embed_dim is None


def test_demo_refuses_a_non_empty_folder(tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert cli_main(["demo", "--quick", "--output-dir", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_demo_missing_training_script_fails_before_work(tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        cli_main(["demo", "--quick", "--output-dir", str(out), "--train-script", str(tmp_path / "nope.py")])
        == 2
    )
    assert "train_sit.py" in capsys.readouterr().err
    assert not out.exists()


def test_demo_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    import d2c_hf.selection.train_scorer

    def broken(*args, **kwargs):
        raise RuntimeError("scorer exploded")

    monkeypatch.setattr(d2c_hf.selection.train_scorer, "train_scorer", broken)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="scorer exploded"):
        demo.run_demo(out, demo.QUICK)
    assert list(tmp_path.iterdir()) == []


def test_publish_dir_replaces_only_when_complete(tmp_path):
    target = tmp_path / "demo_output"
    target.mkdir()
    (target / "old.txt").write_text("old")
    staging = tmp_path / ".demo_output.tmp-1"
    staging.mkdir()
    (staging / "new.txt").write_text("new")
    demo.check_output_dir(target, overwrite=True)
    with pytest.raises(FileExistsError):
        demo.check_output_dir(target, overwrite=False)
    replace_dir(staging, target)
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo_output"]
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        demo.check_output_dir(afile, overwrite=True)


def test_demo_reports_the_score_reliability(demo_output):
    record = json.loads((demo_output / "metrics.json").read_text())
    rel = record["reliability"]
    assert rel["method"] == "split-half" and rel["details"]["num_draws"] == demo.QUICK.num_draws
    readme = (demo_output / "README.md").read_text()
    if rel["reliability"] is not None:
        assert f"score reliability {rel['reliability']:.2f}" in readme
    else:
        assert "reliability not measured" in readme
