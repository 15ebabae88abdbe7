"""``d2c demo --text --quick``: the text-to-image route end to end (captioned digits -> caption-conditioned scorer
-> condense with caption_column -> random baselines -> text-conditioned SiT via examples/train_sit.py -> prompts ->
caption-following metrics), and what it leaves behind."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from d2c_hf import demo_text
from d2c_hf.cli import main as cli_main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def text_demo(tmp_path_factory) -> Path:
    import random

    import rich.style  # noqa: F401 - draws from `random` once at import time; import it before the snapshot
    import torch

    out = tmp_path_factory.mktemp("demo_text") / "out"
    before = random.getstate(), torch.get_rng_state()
    assert cli_main(["demo", "--text", "--quick", "--output-dir", str(out), "--seed", "0"]) == 0
    assert random.getstate() == before[0] and torch.equal(torch.get_rng_state(), before[1])
    return out


def test_text_demo_report_and_sets(text_demo):
    from d2c_hf.condensed.dataset import CondensedDataset

    record = json.loads((text_demo / "metrics.json").read_text())
    assert record["mode"] == "quick" and record["num_prompts"] == demo_text.TEXT_QUICK.max_prompts
    sizes = record["set_sizes"]
    assert len(set(sizes.values())) == 1  # the baselines have the D2C set's size (same groups, same budget)
    for name in ("D2C", "Random + Attach", "Random"):
        values = record["metrics"][name]
        assert all(math.isfinite(values[k]) for k in ("class_accuracy", "weight_accuracy", "fd"))
        assert 0.0 <= values["caption_accuracy"] <= values["class_accuracy"] <= 1.0
    own = record["references"]["captioned images"]
    assert own["weight_accuracy"] > 0.95 and own["slant_accuracy"] > 0.95
    sets = {name: CondensedDataset.load(text_demo / folder) for name, folder in (
        ("D2C", "condensed"), ("Random + Attach", "random_attach"), ("Random", "random_subset"))}  # fmt: skip
    assert sets["D2C"].info["selection"]["strategy"] == "interval"
    assert sets["Random"].info["selection"]["strategy"] == "random"
    for name, condensed in sets.items():
        columns = condensed.samples.column_names
        assert {"caption", "caption_embeds", "caption_mask", "latents"} <= set(columns), name
        assert ("visual_embeds" in columns) == (name != "Random"), name
    readme = (text_demo / "README.md").read_text()
    for link in re.findall(r"\]\(([^)]+\.png)\)", readme):
        assert (text_demo / link).is_file(), link


def test_text_demo_pipelines_sample_from_prompts(text_demo):
    import torch

    from d2c_hf import SiTPipeline

    record = json.loads((text_demo / "metrics.json").read_text())
    pipe = SiTPipeline.from_pretrained(text_demo / record["pipelines"]["D2C"])
    assert pipe.is_text_conditioned and pipe.transformer.config.z_dims  # REPA projector on the visual tokens
    pipe.set_progress_bar_config(disable=True)
    images = pipe(
        prompt=demo_text.grid_prompts()[:2], num_inference_steps=2, generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images  # fmt: skip
    assert np.asarray(images).shape == (2, 16, 16, 3)
    random_run = SiTPipeline.from_pretrained(text_demo / record["pipelines"]["Random"])
    assert not random_run.transformer.config.z_dims  # no visual tokens: no projector
