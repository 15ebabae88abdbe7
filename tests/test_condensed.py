from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict, Value, load_dataset

from d2c_hf.cli import info_main
from d2c_hf.cli import main as cli_main
from d2c_hf.condensed.dataset import CondensedDataset
from d2c_hf.condensed.info import FORMAT_VERSION, INFO_FILENAME
from d2c_hf.run.condense import condense
from d2c_hf.selection.strategies import select
from helpers_condensed import build_condensed, mean_brightness, synthetic_condensed, with_difficulty

HAS_SCORER = importlib.util.find_spec("d2c_hf.selection.scorer") is not None


@pytest.fixture(scope="module")
def condensed(local_hub, digits_small):
    """condense() with a precomputed difficulty (mean brightness), all three attach parts."""
    return build_condensed(local_hub, digits_small, images_per_class=3)


def _table(dataset):
    return dataset.flatten_indices().data.table if dataset._indices is not None else dataset.data.table


def _assert_same(a: CondensedDataset, b: CondensedDataset) -> None:
    assert _table(a.samples).equals(_table(b.samples))
    assert a.samples.features == b.samples.features
    assert _table(a.classes).equals(_table(b.classes))
    assert a.classes.features == b.classes.features
    assert _table(a.scores).equals(_table(b.scores))
    assert a.info == b.info


# ------------------------------------------------------------------ what condense() builds


def test_condense_selects_and_attaches(condensed, digits_small):
    samples = condensed.samples
    assert samples.column_names == [
        "image",
        "label",
        "source_index",
        "difficulty",
        "latents",
        "visual_embeds",
    ]
    assert samples.features["latents"].shape == (8, 8, 8)  # 32 px / VAE factor 4, mean|std of 4 channels
    assert samples.features["visual_embeds"].shape == (16, 32)  # (32 / 4 / patch 2)^2 tokens x DINOv2 width
    np.testing.assert_array_equal(condensed.counts, np.full(10, 3))

    # the rows are exactly what interval sampling picks from the difficulty column
    labels = np.asarray(digits_small["label"])
    expected = select(
        mean_brightness(digits_small), labels, images_per_class=3, interval=2, num_classes=10
    ).indices
    np.testing.assert_array_equal(np.asarray(samples["source_index"]), expected)
    source = digits_small.select(expected)
    assert [np.asarray(a).tolist() for a in samples["image"][:3]] == [
        np.asarray(b).tolist() for b in source["image"][:3]
    ]
    np.testing.assert_array_equal(np.asarray(samples["label"]), labels[expected])

    classes = condensed.classes
    assert list(classes["name"]) == list(digits_small.features["label"].names)
    assert classes["prompt"][3] == "a photo of a three"

    info = condensed.info
    assert info["format_version"] == FORMAT_VERSION
    assert info["budget"] == {"ratio": None, "images_per_class": 3, "total": 30}
    assert info["selection"]["strategy"] == "interval" and info["selection"]["interval"] == 2
    assert info["scoring"] == {"reused_column": True}
    assert info["latents"]["scaling_factor"] == pytest.approx(0.18215)
    assert info["visual"]["num_tokens"] == 16 and info["visual"]["num_prefix_tokens"] == 1
    assert info["text"]["prompt_template"] == "a photo of a {}"
    assert info["latents"]["vae"]["sha256"] and info["visual"]["encoder"]["sha256"]
    assert info["source"]["num_rows"] == len(digits_small) and len(condensed.scores) == len(digits_small)
    assert "datasets" in info["library_versions"]


def test_condense_checks_cheap_things_before_loading_models(digits_small):
    ds = with_difficulty(digits_small)
    missing = "no/such-model"  # would fail to load: every error below must come first
    kwargs = dict(scorer=missing, vae=missing, text_encoder=missing, vision_encoder=missing)
    with pytest.raises(ValueError, match=r"unknown attach part\(s\) \['depth'\]"):
        condense(ds, images_per_class=2, attach=("latents", "depth"), **kwargs)
    with pytest.raises(ValueError, match="exactly one of images_per_class"):
        condense(ds, **kwargs)
    with pytest.raises(ValueError, match="exactly one of images_per_class"):
        condense(ds, ratio=0.1, images_per_class=2, **kwargs)
    with pytest.raises(ValueError, match="unknown strategy 'best'"):
        condense(ds, images_per_class=2, strategy="best", **kwargs)
    with pytest.raises(ValueError, match="label_column='y' is not a column"):
        condense(ds, images_per_class=2, label_column="y", **kwargs)
    with pytest.raises(ValueError, match="class 4 has no usable name"):
        condense(
            ds, images_per_class=2, class_names=["a", "b", "c", "d", "", "f", "g", "h", "i", "j"], **kwargs
        )
    with pytest.raises(ValueError, match="class_names has 3 names but the dataset has 10"):
        condense(ds, images_per_class=2, class_names=["a", "b", "c"], **kwargs)
    with pytest.raises(ValueError, match="strategy 'interval' needs difficulty scores"):
        condense(digits_small, images_per_class=2, scorer=None, attach=(), vae=None)
    with pytest.raises(TypeError, match=r"\['num_timestep'\]"):  # a typo in a scorer option
        condense(digits_small, images_per_class=2, num_timestep=4, **kwargs)
    bare = ds.cast_column("label", Value("int64"))
    with pytest.raises(ValueError, match="pass class_names"):
        condense(bare, images_per_class=2, **kwargs)


def test_condense_takes_the_train_split_of_a_datasetdict(local_hub, digits_small):
    ds = with_difficulty(digits_small)
    out = condense(
        DatasetDict({"train": ds, "test": ds.select(range(20))}),
        ratio=0.1,
        scorer=None,
        vae=None,
        attach=("latents",),
        resolution=32,
        patch_size=2,
    )
    assert out.info["source"]["split"] == "train"
    assert out.info["budget"]["images_per_class"] == 2  # round(0.1 * 200 / 10)
    assert len(out) == 20 and out.classes is None
    assert out.samples.features["latents"].shape == (6, 32, 32)  # pixel space: image | zero std


def test_condense_random_baseline_needs_no_scorer(digits_small, tmp_path):
    out = condense(
        digits_small, images_per_class=2, strategy="random", seed=3, scorer=None, vae=None, attach=()
    )
    labels = np.asarray(digits_small["label"])
    expected = select(None, labels, images_per_class=2, strategy="random", seed=3, num_classes=10).indices
    np.testing.assert_array_equal(np.asarray(out.samples["source_index"]), expected)
    assert out.samples.column_names == ["image", "label", "source_index"] and out.scores is None
    assert "does not use difficulty scores" in out.info["scoring"]["skipped"]
    back = CondensedDataset.load(out.save_to_disk(tmp_path / "random"))  # the card copes without scores
    assert (tmp_path / "random" / "figures" / "montage.png").is_file()
    assert not (tmp_path / "random" / "figures" / "difficulty.png").exists()
    assert back.scores is None and len(back) == 20


@pytest.mark.skipif(not HAS_SCORER, reason="d2c_hf.selection.scorer not available yet")
def test_condense_end_to_end_with_the_dit_scorer(local_hub, digits_small, tmp_path):
    import time

    from datasets import load_from_disk

    from d2c_hf.selection.scorer import DifficultyScorer

    digits_small.save_to_disk(str(tmp_path / "digits"))
    on_disk = load_from_disk(str(tmp_path / "digits"))  # disk-backed: map results are cached
    options = dict(
        images_per_class=2,
        scorer=local_hub.dit,
        vae=local_hub.vae,
        text_encoder=local_hub.t5,
        vision_encoder=local_hub.dinov2_reg,
        resolution=32,
        batch_size=100,
    )
    start = time.perf_counter()
    out = condense(DatasetDict({"train": on_disk}), **options)
    assert time.perf_counter() - start < 60
    assert len(out) == 20 and "reused_column" not in out.info["scoring"]
    scoring = out.info["scoring"]
    assert scoring["num_timesteps"] == 10 and scoring["prediction_type"] == "epsilon"
    assert scoring["model"]["sha256"] and scoring["vae"]["sha256"]
    assert out.info["visual"]["num_prefix_tokens"] == 5  # CLS + 4 registers dropped
    scores = np.asarray(out.scores["difficulty"])
    assert np.all(np.isfinite(scores)) and np.all(scores > 0)
    labels = np.asarray(digits_small["label"])
    expected = select(scores, labels, images_per_class=2, num_classes=10).indices
    np.testing.assert_array_equal(np.asarray(out.samples["source_index"]), expected)
    np.testing.assert_array_equal(np.asarray(out.samples["difficulty"]), scores[expected])

    # a re-run hits the datasets cache: the scorer is never called again
    with mock.patch.object(DifficultyScorer, "__call__", side_effect=AssertionError("re-scored")):
        again = condense(on_disk, **options)
    np.testing.assert_array_equal(np.asarray(again.scores["difficulty"]), scores)

    # and a dataset that carries its scores is not re-scored at all (scorer=None)
    rescored = digits_small.add_column("difficulty", scores.tolist())
    reused = condense(rescored, images_per_class=2, scorer=None, vae=None, attach=())
    np.testing.assert_array_equal(np.asarray(reused.samples["source_index"]), expected)


# ------------------------------------------------------------------ save / load


def test_save_to_disk_round_trip_is_bitwise(condensed, tmp_path):
    path = condensed.save_to_disk(tmp_path / "d2c")
    assert (path / INFO_FILENAME).is_file() and (path / "README.md").is_file()
    back = CondensedDataset.load(path)
    _assert_same(condensed, back)
    assert back.class_names == condensed.class_names and back.num_classes == 10
    with pytest.raises(FileExistsError, match="overwrite=True"):
        condensed.save_to_disk(path)


def test_hub_folder_loads_with_load_dataset(condensed, tmp_path):
    folder = condensed.save_hub_folder(tmp_path / "hub")
    samples = load_dataset(str(folder), split="train")
    classes = load_dataset(str(folder), "classes", split="train")
    assert samples.features == condensed.samples.features
    assert _table(samples).equals(_table(condensed.samples))
    assert _table(classes).equals(_table(condensed.classes))
    _assert_same(condensed, CondensedDataset.load(folder))
    assert sorted(p.name for p in (folder / "data").iterdir()) == ["train-00000-of-00001.parquet"]
    with pytest.raises(FileExistsError, match="not an empty folder"):
        condensed.save_hub_folder(folder)


def test_hub_folder_shards_and_embeds_image_files(tmp_path, digits_small):
    # images stored as file paths must be embedded as bytes in the parquet shards
    files = []
    for i, image in enumerate(digits_small.select(range(4))["image"]):
        files.append(str(tmp_path / f"{i}.png"))
        image.save(files[-1])
    from datasets import Features, Image, Value

    samples = Dataset.from_dict(
        {"image": files, "label": [0, 1, 0, 1]},
        features=Features({"image": Image(), "label": Value("int64")}),
    )
    folder = CondensedDataset(samples, info={"num_classes": 2}).save_hub_folder(
        tmp_path / "hub", max_shard_size=1
    )
    assert len(list((folder / "data").glob("train-*.parquet"))) == 4
    for path in files:
        Path(path).unlink()
    back = load_dataset(str(folder), split="train").cast_column("image", Image(decode=False))
    assert all(cell["bytes"] for cell in back["image"])


def test_push_to_hub_uploads_a_loadable_folder(condensed, tmp_path):
    from huggingface_hub import HfApi

    uploaded = tmp_path / "uploaded"
    api = mock.create_autospec(HfApi, instance=True)

    def upload_folder(**kwargs):
        shutil.copytree(kwargs["folder_path"], uploaded)
        return "commit-info"

    api.upload_folder.side_effect = upload_folder
    result = condensed.push_to_hub("me/digits-d2c", private=True, api=api, commit_message="test upload")
    assert result == "commit-info"
    api.create_repo.assert_called_once_with(
        "me/digits-d2c", repo_type="dataset", exist_ok=True, private=True, token=None
    )
    kwargs = api.upload_folder.call_args.kwargs
    assert kwargs["repo_id"] == "me/digits-d2c" and kwargs["repo_type"] == "dataset"
    assert kwargs["commit_message"] == "test upload" and "data/*" in kwargs["delete_patterns"]
    assert not Path(kwargs["folder_path"]).exists()  # the staging folder is cleaned up
    samples = load_dataset(str(uploaded), split="train")
    classes = load_dataset(str(uploaded), "classes", split="train")
    assert len(samples) == len(condensed) and len(classes) == 10
    assert "me/digits-d2c" in (uploaded / "README.md").read_text()


def test_interrupted_save_keeps_the_previous_version(condensed, tmp_path):
    path = tmp_path / "d2c"
    condensed.save_to_disk(path, card=False)
    before = sorted(p.relative_to(path) for p in path.rglob("*"))
    newer = CondensedDataset(
        condensed.samples.select(range(5)), condensed.classes, {**condensed.info, "notes": ["v2"]}
    )
    original = Dataset.save_to_disk
    calls = []

    def failing_save(self, dataset_path, *args, **kwargs):
        calls.append(dataset_path)
        if len(calls) == 2:  # samples written, then the classes table fails
            raise OSError("disk full")
        return original(self, dataset_path, *args, **kwargs)

    with mock.patch.object(Dataset, "save_to_disk", failing_save), pytest.raises(OSError, match="disk full"):
        newer.save_to_disk(path, overwrite=True, card=False)
    assert len(calls) == 2 and Path(calls[0]).parent != path  # it wrote beside the target, not into it
    assert sorted(p.relative_to(path) for p in path.rglob("*")) == before
    _assert_same(condensed, CondensedDataset.load(path))
    assert [p.name for p in tmp_path.iterdir()] == ["d2c"]  # no staging folder left behind

    newer.save_to_disk(path, overwrite=True, card=False)
    reloaded = CondensedDataset.load(path)
    assert len(reloaded) == 5 and reloaded.info["notes"] == ["v2"]


def test_save_refuses_to_replace_a_folder_that_is_not_a_condensed_dataset(condensed, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="not a condensed dataset"):
        condensed.save_to_disk(folder, overwrite=True)
    assert (folder / "holiday.jpg").read_bytes() == b"x"


def test_load_errors_are_clear(condensed, tmp_path):
    with pytest.raises(FileNotFoundError, match="no condensed dataset"):
        CondensedDataset.load(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="'someone/missing' is not a local folder.*Hub dataset"):
        CondensedDataset.load("someone/missing")  # offline in the tests
    plain = tmp_path / "plain"
    condensed.samples.save_to_disk(str(plain))
    with pytest.raises(ValueError, match="not a condensed dataset.*load_from_disk"):
        CondensedDataset.load(plain)
    path = condensed.save_to_disk(tmp_path / "d2c", card=False)
    info = json.loads((path / INFO_FILENAME).read_text())
    info["format_version"] = 99
    (path / INFO_FILENAME).write_text(json.dumps(info))
    with pytest.raises(
        ValueError, match=f"format version 99.*reads format version {FORMAT_VERSION}.*upgrade"
    ):
        CondensedDataset.load(path)
    with pytest.raises(ValueError, match="format version 99"):
        CondensedDataset(condensed.samples, info={"format_version": 99})


def test_constructor_validates_tables(condensed):
    with pytest.raises(ValueError, match="one row per class id 0..C-1"):
        CondensedDataset(condensed.samples, condensed.classes.select([1, 0, 2, 3, 4, 5, 6, 7, 8, 9]))
    with pytest.raises(ValueError, match="outside \\[0, 5\\)"):
        CondensedDataset(condensed.samples, condensed.classes.select(range(5)))
    with pytest.raises(TypeError, match="JSON-serialisable"):
        CondensedDataset(condensed.samples, info={"model": object()})


# ------------------------------------------------------------------ training reads


def test_training_arrays_equal_the_slow_path(condensed):
    arrays = condensed.training_arrays()
    assert set(arrays) == {"latents", "labels", "visual_embeds", "text_embeds", "text_mask"}
    slow = condensed.samples.with_format("torch")[:]
    slow_classes = condensed.classes.with_format("torch")[:]
    assert arrays["latents"].dtype == torch.float16 and arrays["latents"].shape == (30, 8, 8, 8)
    assert arrays["visual_embeds"].dtype == torch.float16 and arrays["visual_embeds"].shape == (30, 16, 32)
    assert arrays["labels"].dtype == torch.int64
    assert arrays["text_embeds"].dtype == torch.float16 and arrays["text_embeds"].shape == (10, 16, 16)
    assert arrays["text_mask"].shape == (10, 16)
    assert torch.equal(arrays["latents"].float(), slow["latents"])  # the slow path upcasts to float32
    assert torch.equal(arrays["visual_embeds"].float(), slow["visual_embeds"])
    assert torch.equal(arrays["labels"], slow["label"])
    assert torch.equal(arrays["text_embeds"].float(), slow_classes["text_embeds"])
    assert torch.equal(arrays["text_mask"].long(), slow_classes["text_mask"].long())

    arrays["latents"][0] = 0  # an owned copy, not a view of the read-only memory map
    only = condensed.training_arrays(["labels", "difficulty"])
    assert set(only) == {"labels", "difficulty"} and only["difficulty"].dtype == torch.float32
    with pytest.raises(ValueError, match=r"\['depth'\] not available"):
        condensed.training_arrays(["depth"])


def test_training_arrays_follow_row_selections(condensed, tmp_path):
    back = CondensedDataset.load(condensed.save_to_disk(tmp_path / "d2c", card=False))
    order = [7, 0, 29, 3]
    subset = CondensedDataset(back.samples.select(order), back.classes, back.info)
    fast = subset.training_arrays(["latents", "labels"])
    slow = back.samples.with_format("torch")[order]
    assert torch.equal(fast["latents"].float(), slow["latents"])
    assert torch.equal(fast["labels"], slow["label"])


# ------------------------------------------------------------------ description


def test_info_cli_prints_a_summary(condensed, tmp_path, capsys):
    path = condensed.save_to_disk(tmp_path / "d2c", card=False)
    assert info_main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "30 rows, 10 classes" in out and "3/3/3" in out and "strategy='interval'" in out
    assert "latents [Array3D((8, 8, 8), float16)]" in out
    assert info_main([str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == condensed.info
    assert cli_main(["info", str(tmp_path / "nothing")]) == 2  # a user error: one line, exit status 2
    assert "no condensed dataset" in capsys.readouterr().err


def test_repr_and_names():
    synthetic = synthetic_condensed(num_classes=3, per_class=2, total_per_class=20)
    assert len(synthetic) == 6 and synthetic.num_classes == 3
    assert synthetic.class_names == ["class 0", "class 1", "class 2"]
    assert "num_rows=6" in repr(synthetic) and "images_per_class=2" in repr(synthetic)


# ------------------------------------------------------------------ streaming datasets

STREAM_ROWS = 50


def _stream_options(hub) -> dict:
    return dict(
        images_per_class=2,
        interval=2,
        scorer=hub.dit,
        vae=hub.vae,
        attach=("latents",),
        resolution=32,
        batch_size=10,
    )


@pytest.fixture(scope="module")
def map_style(local_hub, digits_small):
    """condense() on the map-style rows that the streaming tests stream."""
    return condense(digits_small.select(range(STREAM_ROWS)), **_stream_options(local_hub))


def _assert_same_selection(got: CondensedDataset, expected: CondensedDataset) -> None:
    g, e = got.samples.with_format("numpy"), expected.samples.with_format("numpy")
    for column in ("source_index", "label", "difficulty"):
        np.testing.assert_array_equal(g[column], e[column], err_msg=column)
    np.testing.assert_array_equal(
        got.scores.with_format("numpy")["difficulty"], expected.scores.with_format("numpy")["difficulty"]
    )
    assert got.info["budget"] == expected.info["budget"] and got.info["counts"] == expected.info["counts"]


def _manifest(work_dir, phase: str) -> dict:
    return json.loads((Path(work_dir) / phase / "manifest.json").read_text())


def test_condense_streams_an_iterable_dataset(local_hub, digits_small, map_style, tmp_path, monkeypatch):
    temp_root = tmp_path / "tmp"
    temp_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp_root))  # where the run's temporary folder goes
    stream = digits_small.select(range(STREAM_ROWS)).to_iterable_dataset()
    got = condense(stream, num_rows=STREAM_ROWS, **_stream_options(local_hub))
    assert list(temp_root.iterdir()) == []  # the shards' folder is gone ...
    _assert_same_selection(got, map_style)
    # ... and the result does not need it: arrays and images are in memory
    arrays = got.training_arrays(["latents", "labels"])
    expected = map_style.training_arrays(["latents"])["latents"]
    torch.testing.assert_close(arrays["latents"].float(), expected.float(), atol=2e-3, rtol=0)
    assert got.samples[0]["image"].size == (32, 32)
    assert got.info["source"]["num_rows"] == STREAM_ROWS and got.info["attach"] == ["latents"]


def test_condense_resumes_a_streaming_run_in_work_dir(local_hub, digits_small, map_style, tmp_path, caplog):
    digits_small.select(range(STREAM_ROWS)).to_parquet(str(tmp_path / "digits.parquet"))
    stream = load_dataset("parquet", data_files=str(tmp_path / "digits.parquet"), streaming=True)
    work_dir = tmp_path / "run"
    options = dict(num_rows=STREAM_ROWS, work_dir=work_dir, **_stream_options(local_hub))
    with caplog.at_level(logging.INFO, logger="d2c_hf"):
        first = condense(stream, **options)  # an IterableDatasetDict: its train split
    assert "IterableDatasetDict" in caplog.text and "condensing 'train'" in caplog.text
    assert first.info["source"]["split"] == "train"
    _assert_same_selection(first, map_style)
    assert _manifest(work_dir, "score")["computed_shards"] == 1
    again = condense(stream, **options)
    for phase in ("score", "attach"):
        manifest = _manifest(work_dir, phase)
        assert (manifest["computed_shards"], manifest["skipped_shards"]) == (0, 1), phase
    _assert_same_selection(again, map_style)
    with pytest.raises(ValueError, match=r"differing keys: .*seed"):
        condense(stream, **{**options, "seed": 1})


def test_condense_checks_a_streaming_dataset_before_loading_models(digits_small):
    stream = digits_small.to_iterable_dataset()
    missing = "no/such-model"  # would fail to load: every error below must come first
    kwargs = dict(scorer=missing, vae=missing, text_encoder=missing, vision_encoder=missing)
    sized = dict(kwargs, num_rows=200)
    with pytest.raises(ValueError, match=r"unknown attach part\(s\) \['depth'\]"):
        condense(stream, images_per_class=2, attach=("depth",), **sized)
    with pytest.raises(ValueError, match="size of the streaming dataset .* unknown.*num_rows=N"):
        condense(stream, images_per_class=2, **kwargs)
    with pytest.raises(TypeError, match="scorer is a loaded Linear.*Hub id or a local"):
        condense(stream, images_per_class=2, **{**sized, "scorer": torch.nn.Linear(1, 1)})
    with pytest.raises(ValueError, match="pass scorer="):
        condense(stream, images_per_class=2, **{**sized, "scorer": None})
    with pytest.raises(TypeError, match=r"only \['key_column', 'max_forward_batch'\].*\['num_timestep'\]"):
        condense(stream, images_per_class=2, num_timestep=4, **sized)
    with pytest.raises(
        ValueError, match=r"feature_column='x' is not a column"
    ):  # streams select by features too
        condense(stream, images_per_class=2, selection_kwargs={"feature_column": "x"}, **sized)
    with pytest.raises(ValueError, match="label_column='y' is not a column"):
        condense(stream, images_per_class=2, label_column="y", **sized)
    with pytest.raises(ValueError, match="class_names has 3 names but the dataset has 10"):
        condense(stream, images_per_class=2, class_names=["a", "b", "c"], **sized)
    bare = digits_small.cast_column("label", Value("int64")).to_iterable_dataset()
    with pytest.raises(ValueError, match="pass class_names"):
        condense(bare, images_per_class=2, **sized)
    with pytest.raises(ValueError, match="work_dir is for streaming datasets only"):
        condense(digits_small, images_per_class=2, work_dir="run", **kwargs)


def test_ratio_counts_only_the_classes_that_have_rows(digits):
    """2 of the 10 digit classes present: ratio=0.5 keeps half the rows (realised fraction recorded)."""
    two = digits["train"].filter(lambda label: label in (3, 7), input_columns="label")
    condensed = condense(with_difficulty(two), ratio=0.5, scorer=None, vae=None, attach=(), resolution=32)
    assert abs(len(condensed) / len(two) - 0.5) < 0.01
    assert condensed.info["selection"]["realised_ratio"] == len(condensed) / len(two)
    from d2c_hf.condensed.card import render_card

    assert f"| realised fraction | {len(condensed) / len(two):.2%} of the scored rows |" in render_card(
        condensed
    )


def test_a_realised_fraction_far_from_the_ratio_is_a_warning_with_the_reason(digits, caplog):
    """ratio=0.008 of 100 rows in 10 classes rounds to 0 per class, so 1 per class is kept (10 %): a warning that
    says the realised fraction and why; a ratio the rounding meets says nothing."""
    import logging

    rows = with_difficulty(digits["train"].select(range(100)))
    with caplog.at_level(logging.WARNING, logger="d2c_hf"):
        condensed = condense(rows, ratio=0.008, scorer=None, vae=None, attach=(), resolution=32)
    assert len(condensed) == 10
    assert "ratio=0.008 keeps 10 of 100 images, a realised fraction of 0.1" in caplog.text
    assert "at least 1 per class" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="d2c_hf"):
        condense(rows, ratio=0.2, scorer=None, vae=None, attach=(), resolution=32)
    assert "realised fraction" not in caplog.text
