"""Columnar reads and batched writes (``utils/columns.py``, ``utils/tables.py``, issue 23): the same arrays
and tables as ``datasets``' own row-by-row paths, for every kind of column they take."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import Array2D, ClassLabel, Dataset, Features, List, Sequence, Value

from d2c_hf.utils.columns import column_array, formatted_column
from d2c_hf.utils.tables import dataset_from_arrays, owned_file, read_saved_columns, save_owned, write_batches

RNG = np.random.default_rng(0)


def _cases():
    for dtype in ("float16", "float32", "float64", "int64", "uint8", "int32", "bool"):
        x = (RNG.standard_normal((7, 5)) * 3).astype(dtype)
        yield f"{dtype}-list", Features({"f": List(Value(dtype))}), x.tolist()
        yield f"{dtype}-fixed", Features({"f": List(Value(dtype), length=5)}), x.tolist()
        yield f"{dtype}-scalar", Features({"f": Value(dtype)}), x[:, 0].tolist()
    yield (
        "array2d",
        Features({"f": Array2D((2, 3), "float16")}),
        RNG.standard_normal((7, 2, 3)).astype("float16"),
    )
    yield "classlabel", Features({"f": ClassLabel(names=list("abc"))}), [0, 1, 2, 0, 1, 2, 2]
    yield "sequence", Features({"f": Sequence(Value("float32"))}), [[1.0, 2.0]] * 7
    # what the formatter itself reads (kept as before): ragged, missing values, strings, nested lists
    yield "ragged", Features({"f": List(Value("float32"))}), [[1.0, 2.0], [3.0]] + [[1.0]] * 5
    yield "missing", Features({"f": List(Value("float32"))}), [[1.0, 2.0], None] + [[1.0, 2.0]] * 5
    yield "string", Features({"f": Value("string")}), list("abcdefg")
    yield "nested", Features({"f": List(List(Value("float32")))}), [[[1.0], [2.0]]] * 7


@pytest.mark.parametrize(("name", "features", "values"), list(_cases()), ids=[c[0] for c in _cases()])
def test_formatted_column_is_what_the_numpy_formatter_gives(name, features, values):
    data = Dataset.from_dict({"f": values}, features=features)
    for view in (data, data.select([5, 2, 3]), data.select([]), data.shuffle(seed=0).select(range(4))):
        old = np.asarray(view.with_format("numpy", columns=["f"])[:]["f"])
        new = formatted_column(view, "f")
        assert (new.dtype, new.shape) == (old.dtype, old.shape)
        if old.dtype == object:
            assert all(np.array_equal(a, b) for a, b in zip(old, new))
        else:
            assert new.tobytes() == old.tobytes()


def test_column_array_keeps_the_stored_dtype_in_row_order():
    tokens = RNG.standard_normal((9, 3, 4)).astype(np.float16)
    data = Dataset.from_dict({"t": tokens}, features=Features({"t": Array2D((3, 4), "float16")}))
    order = [8, 0, 4]
    got = column_array(data.select(order), "t")
    assert got.dtype == np.float16 and got.tobytes() == tokens[order].tobytes()


def test_dataset_from_arrays_is_from_dict():
    features = Features(
        {
            "source_index": Value("int64"),
            "label": ClassLabel(names=["a", "b", "c"]),
            "difficulty": Value("float32"),
        }
    )
    columns = {
        "source_index": np.arange(50, dtype=np.int64),
        "label": RNG.integers(0, 3, 50),
        "difficulty": RNG.standard_normal(50).astype(np.float32),
    }
    new, old = dataset_from_arrays(columns, features), Dataset.from_dict(columns, features=features)
    assert new.features == old.features and new.data.table.equals(old.data.table)
    with pytest.raises(ValueError, match="'x' has shape"):
        dataset_from_arrays({"x": np.zeros((2, 2))}, Features({"x": List(Value("float64"), length=2)}))


def test_write_batches_is_one_table_of_every_batch(tmp_path):
    features = Features({"i": Value("int64"), "v": List(Value("float32"), length=2)})
    values = RNG.standard_normal((10, 2)).astype(np.float32)
    batches = ({"i": np.arange(a, min(a + 4, 10)), "v": values[a : a + 4]} for a in range(0, 10, 4))
    table = write_batches(tmp_path / "t.arrow", features, batches)
    assert table.features == features and len(table) == 10
    assert column_array(table, "v").tobytes() == values.tobytes()
    empty = write_batches(tmp_path / "e.arrow", features, iter([]))
    assert len(empty) == 0 and empty.features == features


def test_read_saved_columns_is_column_array_of_load_from_disk(tmp_path):
    """``load_scores`` reads the merged scores with pyarrow alone (no ``import datasets`` in ``d2c select``):
    the same arrays as ``column_array(load_from_disk(...))``, for one file or several, empty or not."""
    from datasets import concatenate_datasets, load_from_disk

    features = Features(
        {
            "source_index": Value("int64"),
            "label": ClassLabel(names=["a", "b", "c"]),
            "difficulty": Value("float32"),
            "difficulty_per_timestep": List(Value("float32"), length=3),
            "features": List(Value("float16"), length=4),
        }
    )
    n = 40
    columns = {
        "source_index": np.arange(n, dtype=np.int64),
        "label": RNG.integers(0, 3, n),
        "difficulty": RNG.standard_normal(n).astype(np.float32),
        "difficulty_per_timestep": RNG.standard_normal((n, 3)).astype(np.float32),
        "features": RNG.standard_normal((n, 4)).astype(np.float16),
    }
    whole = Dataset.from_dict(columns, features=features)
    names = [*features, "missing"]
    for name, data, shards in (
        ("one", whole, 1),
        ("three", concatenate_datasets([whole.select(range(0, 15)), whole.select(range(15, n))]), 3),
        ("empty", whole.select([]), 1),
    ):
        data.save_to_disk(str(tmp_path / name), num_shards=shards)
        got = read_saved_columns(tmp_path / name, names)
        expected = load_from_disk(str(tmp_path / name))
        assert sorted(got) == sorted(features)
        for column in features:
            want = column_array(expected, column)
            assert got[column].dtype == want.dtype and got[column].shape == want.shape, (name, column)
            assert got[column].tobytes() == want.tobytes(), (name, column)


def test_an_owned_scratch_table_is_moved_into_a_save_to_disk_folder_not_copied(tmp_path):
    """write_batches(owned=True) + save_owned: the scratch file becomes the folder's one data file (same inode, no
    second copy), load_from_disk reads the same table, and anything derived from it is saved the ordinary way."""
    import os

    from datasets import load_from_disk

    features = Features({"label": ClassLabel(names=["a", "b"]), "x": Array2D((2, 3), "float16")})
    rng = np.random.default_rng(0)
    batches = [
        {"label": rng.integers(0, 2, n), "x": rng.normal(size=(n, 2, 3)).astype(np.float16)} for n in (5, 7)
    ]
    scratch = tmp_path / ".scratch.arrow"
    table = write_batches(scratch, features, batches, owned=True)
    assert owned_file(table) == scratch and owned_file(table.select([0, 1])) is None
    assert owned_file(write_batches(tmp_path / "plain.arrow", features, batches)) is None
    inode = os.stat(scratch).st_ino
    save_owned(table, tmp_path / "saved")
    assert not scratch.exists() and [p.name for p in (tmp_path / "saved").glob("*.arrow")] == [
        "data-00000-of-00001.arrow"
    ]
    assert os.stat(tmp_path / "saved" / "data-00000-of-00001.arrow").st_ino == inode
    loaded = load_from_disk(str(tmp_path / "saved"))
    state = __import__("json").loads((tmp_path / "saved" / "state.json").read_text())
    assert loaded.features == features and state["_fingerprint"] == table._fingerprint
    assert loaded.data.table.equals(table.data.table)
    with pytest.raises(ValueError, match="save_owned needs"):
        save_owned(table, tmp_path / "again")  # the file has moved: not owned any more
