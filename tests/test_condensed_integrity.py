"""A saved condensed dataset is read back as saved, or refused: damaged folders (a missing table, a
truncated file, rows changed after the save) and stale `datasets` cache entries for Hub-layout folders
(issue: two folders of the same name share `load_dataset`'s cache key) never load silently."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset, load_dataset

from d2c_hf.cli import main as cli_main
from d2c_hf.condensed.dataset import CondensedDataset
from d2c_hf.condensed.info import INFO_FILENAME, TABLES_KEY
from helpers_condensed import synthetic_condensed


def _selection(condensed: CondensedDataset, keep) -> CondensedDataset:
    """The same dataset with only the rows ``keep`` of its samples (another selection)."""
    return CondensedDataset(
        condensed.samples.select(keep), condensed.classes, condensed.info, scores=condensed.scores
    )


@pytest.fixture(scope="module")
def two_selections():
    base = synthetic_condensed(num_classes=5, per_class=4, total_per_class=40)
    return _selection(base, range(0, 20, 2)), _selection(base, range(1, 20, 2))


def _rows(condensed: CondensedDataset) -> list[int]:
    return [int(v) for v in condensed.samples["source_index"]]


@pytest.mark.parametrize("order", ["a_first", "b_first"])
def test_same_named_hub_folders_each_load_their_own_rows(two_selections, tmp_path, order):
    a, b = two_selections
    folder_a = a.save_hub_folder(tmp_path / "a" / "mydata")
    folder_b = b.save_hub_folder(tmp_path / "b" / "mydata")
    cache = str(tmp_path / "cache")
    pairs = [(folder_a, a), (folder_b, b)]
    if order == "b_first":
        pairs.reverse()
    for folder, expected in pairs:
        got = CondensedDataset.load(folder, cache_dir=cache)
        assert _rows(got) == _rows(expected)
        assert got.info == expected.info


def test_plain_load_dataset_of_same_named_folders_is_stale(two_selections, tmp_path):
    """The upstream behaviour the loader works around (if this starts failing, datasets fixed it:
    simplify CondensedDataset.load and the docs note)."""
    a, b = two_selections
    folder_a = a.save_hub_folder(tmp_path / "a" / "mydata")
    folder_b = b.save_hub_folder(tmp_path / "b" / "mydata")
    cache = str(tmp_path / "cache")
    first = load_dataset(str(folder_b), split="train", cache_dir=cache)["source_index"]
    second = load_dataset(str(folder_a), split="train", cache_dir=cache)["source_index"]
    assert list(first) == list(second) == _rows(b)


def test_hub_folder_rewritten_in_place_loads_the_new_rows(two_selections, tmp_path):
    a, b = two_selections
    folder = tmp_path / "mydata"
    cache = str(tmp_path / "cache")
    a.save_hub_folder(folder)
    assert _rows(CondensedDataset.load(folder, cache_dir=cache)) == _rows(a)
    shutil.rmtree(folder)
    b.save_hub_folder(folder)
    assert _rows(CondensedDataset.load(folder, cache_dir=cache)) == _rows(b)
    # the disk layout, rewritten with overwrite=True
    disk = tmp_path / "disk"
    a.save_to_disk(disk, card=False)
    b.save_to_disk(disk, overwrite=True, card=False)
    assert _rows(CondensedDataset.load(disk)) == _rows(b)


def test_the_info_records_each_table_and_round_trips(two_selections, tmp_path):
    a, _ = two_selections
    path = a.save_to_disk(tmp_path / "d", card=False)
    record = json.loads((path / INFO_FILENAME).read_text())[TABLES_KEY]
    assert set(record) == {"samples", "scores"}
    assert record["samples"]["num_rows"] == len(a.samples)
    assert record == a.tables_record()
    assert CondensedDataset.load(path).info == a.info  # the record is not part of .info


@pytest.mark.parametrize("layout", ["disk", "hub"])
@pytest.mark.parametrize("table", ["classes", "scores"])
def test_a_missing_table_is_named(local_hub, tmp_path, layout, table):
    base = synthetic_condensed(num_classes=3, per_class=2, total_per_class=10)
    classes = Dataset.from_dict({"label": [0, 1, 2], "name": ["a", "b", "c"]})
    condensed = CondensedDataset(base.samples, classes, {**base.info, "attach": ["text"]}, scores=base.scores)
    if layout == "disk":
        path = condensed.save_to_disk(tmp_path / "d", card=False)
    else:
        path = condensed.save_hub_folder(tmp_path / "d", card=False)
    shutil.rmtree(path / table)
    with pytest.raises(ValueError, match=rf"damaged: the '{table}' table \(\d+ rows\).*is missing"):
        CondensedDataset.load(path)


def test_old_folders_without_a_record_still_check_what_the_info_implies(tmp_path):
    base = synthetic_condensed(num_classes=3, per_class=2, total_per_class=10)
    classes = Dataset.from_dict({"label": [0, 1, 2], "name": ["a", "b", "c"]})
    info = {**base.info, "attach": ["text"], "counts": base.counts.tolist()}
    path = CondensedDataset(base.samples, classes, info, scores=base.scores).save_to_disk(
        tmp_path / "d", card=False
    )
    written = json.loads((path / INFO_FILENAME).read_text())
    del written[TABLES_KEY]
    (path / INFO_FILENAME).write_text(json.dumps(written))
    assert len(CondensedDataset.load(path)) == len(base)
    shutil.rmtree(path / "classes")
    with pytest.raises(ValueError, match="says class text was attached, but the classes table is missing"):
        CondensedDataset.load(path)


def test_rows_changed_after_the_save_are_refused(two_selections, tmp_path):
    a, b = two_selections
    path = a.save_hub_folder(tmp_path / "mydata", card=False)
    other = b.save_hub_folder(tmp_path / "other", card=False)
    for shard in (path / "data").glob("*.parquet"):
        shard.unlink()
    for shard in (other / "data").glob("*.parquet"):
        shutil.copy(shard, path / "data" / shard.name)
    with pytest.raises(ValueError, match="the 'samples' table read is not the one saved"):
        CondensedDataset.load(path)
    # fewer rows: named as a row count
    shutil.rmtree(path / "data")
    (path / "data").mkdir()
    CondensedDataset(a.samples.select(range(3)), info=a.info).samples.to_parquet(
        str(path / "data" / "train-00000-of-00001.parquet")
    )
    with pytest.raises(ValueError, match=r"'samples' table has 3 rows but its d2c_info.json records 10"):
        CondensedDataset.load(path)


def test_a_truncated_arrow_file_names_the_folder(two_selections, tmp_path):
    a, _ = two_selections
    path = a.save_to_disk(tmp_path / "d", card=False)
    arrow = next((path / "samples").glob("*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[:100])
    with pytest.raises(ValueError, match=rf"{path / 'samples'} cannot be read .*damaged"):
        CondensedDataset.load(path)


def test_info_cli_reports_a_damaged_folder(two_selections, tmp_path, capsys):
    a, _ = two_selections
    path = a.save_to_disk(tmp_path / "d", card=False)
    shutil.rmtree(path / "scores")
    assert cli_main(["info", str(path)]) == 2
    assert "the 'scores' table" in capsys.readouterr().err


def test_training_refuses_a_damaged_folder(local_hub, tmp_path):
    """train_sit.py reads --dataset through CondensedDataset.load, so it never trains on a damaged set."""
    import importlib.util

    script = Path(__file__).parents[1] / "examples" / "train_sit.py"
    spec = importlib.util.spec_from_file_location("train_sit_integrity", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    base = synthetic_condensed(num_classes=3, per_class=2, total_per_class=10)
    path = base.save_to_disk(tmp_path / "d", card=False)
    shutil.rmtree(path / "scores")
    args = module.parse_args(
        ["--dataset", str(path), "--output_dir", str(tmp_path / "out"), "--max_train_steps", "1"]
    )
    with pytest.raises(ValueError, match="the 'scores' table"):
        module.main(args)
    assert not (tmp_path / "out" / "checkpoint-1").exists()
    np.testing.assert_array_equal(CondensedDataset(base.samples).counts, base.counts)
