"""Every selection strategy, with its options and a feature column where it needs one, gives the same
subset in memory (condense() on a Dataset), through `d2c score` + `d2c select` (the sharded path, its
options rebuilt from the run record) and through condense() on a stream."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from datasets import Features, List, Value

from d2c_hf import STRATEGIES, condense
from d2c_hf.cli import score_main, select_main
from d2c_hf.selection.scorer import DifficultyScorer

ROWS, BATCH = 80, 8
#: the options each strategy is run with (defaults changed where it has any, so the record is exercised)
OPTIONS = {
    "window": {"position": 0.25},
    "ccs": {"cutoff": 0.2, "num_strata": 4},
    "herding": {"normalize": False},
    "kcenter": {"normalize": False},
    "moderate": {"normalize": False},
}


def _with_features(dataset):
    """A ``feat`` column (8 pooled pixel statistics per image, float32): features a user could have stored."""
    pixels = np.stack([np.asarray(image.convert("L"), np.float32) for image in dataset["image"]])
    blocks = pixels.reshape(len(pixels), 2, 16, 4, 8).mean(axis=(2, 4)).reshape(len(pixels), 8)
    features = Features({**dataset.features, "feat": List(Value("float32"), length=8)})
    return dataset.add_column("feat", blocks.tolist(), feature=features["feat"]).cast(features)


@pytest.fixture(scope="module")
def data(digits):
    return _with_features(digits["train"].select(range(ROWS)))


@pytest.fixture(scope="module")
def scored(local_hub, data):
    """The in-memory path's scores (DifficultyScorer.apply, as condense() in memory runs it)."""
    scorer = DifficultyScorer.from_pretrained(
        local_hub.dit, vae=str(local_hub.vae), resolution=32, batch_size=BATCH, num_timesteps=4
    )
    return scorer.apply(data)


@pytest.fixture(scope="module")
def work(local_hub, data, tmp_path_factory):
    """`d2c score` of the same rows, storing the feature column with the scores."""
    root = tmp_path_factory.mktemp("strategies")
    data.save_to_disk(str(root / "data"))
    out = root / "run"
    argv = ["--dataset", str(root / "data"), "--scorer", str(local_hub.dit), "--vae", str(local_hub.vae)]
    argv += [
        "--resolution",
        "32",
        "--batch_size",
        str(BATCH),
        "--shard_size",
        str(4 * BATCH),
        "--num_timesteps",
    ]
    argv += ["4", "--num_workers", "0", "--feature_column", "feat", "--output_dir", str(out), "--cpu"]
    assert score_main(argv) == 0
    return out


def _sharded(work: Path, strategy: str, options: dict) -> list[int]:
    argv = ["--output_dir", str(work), "--images_per_class", "3", "--strategy", strategy, "--seed", "3"]
    for name, value in options.items():
        argv += ["--strategy_option", f"{name}={json.dumps(value)}"]
    if STRATEGIES[strategy].needs_features:
        argv += ["--feature_column", "feat"]
    assert select_main(argv) == 0
    record = json.loads((work / "selection.json").read_text())
    assert record["options"]["strategy_options"] == options  # the record keeps what was asked
    return record["source_indices"]


def _in_memory(scored, strategy: str, options: dict, interval="auto", images_per_class=3) -> list[int]:
    kwargs = dict(options)
    if STRATEGIES[strategy].needs_features:
        kwargs["feature_column"] = "feat"
    condensed = condense(
        scored,
        images_per_class=images_per_class,
        strategy=strategy,
        seed=3,
        interval=interval,
        scorer=None,
        vae=None,
        attach=(),
        resolution=32,
        selection_kwargs=kwargs,
    )
    return np.asarray(condensed.samples["source_index"]).tolist()


def test_the_scores_of_both_paths_are_equal(scored, work):
    from d2c_hf.run.sharded import load_scores

    arrays = load_scores(work)
    np.testing.assert_array_equal(arrays["difficulty"], np.asarray(scored["difficulty"], np.float32))
    np.testing.assert_array_equal(arrays["features"], np.asarray(scored.with_format("numpy")["feat"]))


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_every_strategy_selects_the_same_rows_in_memory_and_sharded(scored, work, strategy):
    options = OPTIONS.get(strategy, {})
    in_memory = _in_memory(scored, strategy, options)
    assert len(in_memory) == 30
    assert _sharded(work, strategy, options) == in_memory


def test_the_paper_stride_selects_the_same_rows_in_memory_and_sharded(scored, work):
    in_memory = _in_memory(scored, "interval", {}, interval="paper", images_per_class=2)
    argv = ["--output_dir", str(work), "--images_per_class", "2", "--interval", "paper", "--seed", "3"]
    assert select_main(argv) == 0
    record = json.loads((work / "selection.json").read_text())
    assert record["source_indices"] == in_memory and len(in_memory) == 20
    params = record["result"]["params"]
    assert params["interval_requested"] == "paper" and params["auto_reference_class_size"] == 8.5
    assert params["interval"] == 3  # round(0.7493 * 8.5 / 2) = round(3.18); "auto" gives floor(2/3 * 7.5) = 5
    assert in_memory != _in_memory(scored, "interval", {}, images_per_class=2)


def test_a_streaming_condense_selects_by_a_feature_column_like_memory(local_hub, data, scored):
    kwargs = dict(scorer=str(local_hub.dit), vae=str(local_hub.vae), resolution=32, batch_size=BATCH)
    streamed = condense(
        data.to_iterable_dataset(),
        images_per_class=3,
        strategy="kcenter",
        seed=3,
        attach=(),
        num_timesteps=4,
        num_rows=ROWS,
        selection_kwargs={"feature_column": "feat", "normalize": False},
        **kwargs,
    )
    expected = _in_memory(scored, "kcenter", {"normalize": False})
    assert sorted(np.asarray(streamed.samples["source_index"]).tolist()) == sorted(expected)
    assert streamed.info["selection"]["feature_column"] == "feat"


def test_select_refuses_a_feature_column_the_scores_do_not_hold(work):
    with pytest.raises(ValueError, match=r"feature_column='other' was not stored with the scores.*'feat'"):
        select_main(
            [
                *("--output_dir", str(work), "--images_per_class", "3"),
                "--strategy",
                "herding",
                "--feature_column",
                "other",
            ]
        )
