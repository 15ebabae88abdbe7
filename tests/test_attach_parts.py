"""An Attach part from outside the package (one class, one registration) runs through condense() in memory
and streaming, `d2c condense`, save/load, the Hub layout and the card, with no edit inside the package."""

from __future__ import annotations

import json

import numpy as np
import pytest
from datasets import Array2D, Features

from d2c_hf import ATTACH_PARTS, AttachPart, CondensedDataset, condense, register_attach_part
from d2c_hf.cli import condense_main

ROWS = 40


class EdgeMap(AttachPart):
    """A user's own column: the gradient magnitude of each grey-scale crop (an edge map), times ``scale``."""

    name = "edges"
    column = "edge_map"
    description = "column 'edge_map': gradient magnitude of the grey-scale crop (a user's part)"

    def __init__(self, resolution: int, scale: float) -> None:
        self.resolution, self.scale = resolution, scale

    @classmethod
    def load(cls, options, context) -> EdgeMap:
        return cls(options.resolution, float(cls.part_options(options).get("scale", 1.0)))

    @property
    def config(self) -> dict:
        return {"resolution": self.resolution, "scale": self.scale, "storage_dtype": "float16"}

    @classmethod
    def features(cls, config):
        return Features({cls.column: Array2D((config["resolution"], config["resolution"]), "float16")})

    def compute(self, pixels: np.ndarray, rows) -> np.ndarray:
        grey = pixels.astype(np.float32).mean(axis=-1) / 255.0
        dy, dx = np.gradient(grey, axis=(1, 2))
        return (self.scale * np.hypot(dx, dy)).astype(np.float16)


@pytest.fixture
def edges():
    import d2c_hf.attach.parts as parts

    register_attach_part(EdgeMap)
    try:
        yield EdgeMap
    finally:
        del parts._REGISTRY["edges"]  # leave the registry as the package ships it


def _expected(dataset, rows: list[int], scale: float) -> np.ndarray:
    from d2c_hf.utils.images import preprocess_images

    pixels, _ = preprocess_images([dataset[int(r)]["image"] for r in rows], 32, rows=rows)
    return EdgeMap(32, scale).compute(pixels, rows)


def _edges(condensed) -> np.ndarray:
    """The stored column as float16, as written."""
    return np.asarray(condensed.samples.with_format("numpy", dtype="float16")["edge_map"])


def _options(hub):
    return dict(
        images_per_class=2,
        scorer=str(hub.pixel_dit),
        vae=None,
        attach=("latents", "edges"),
        resolution=32,
        batch_size=8,
        num_timesteps=3,
    )


def test_a_registered_part_runs_through_every_path(edges, local_hub, digits_small, tmp_path):
    data = digits_small.select(range(ROWS))
    assert "edges" in ATTACH_PARTS and ATTACH_PARTS["edges"] == EdgeMap.description

    # in memory, with the part's own option
    memory = condense(data, **_options(local_hub), part_options={"edges": {"scale": 2.0}})
    rows = np.asarray(memory.samples["source_index"]).tolist()
    got = _edges(memory)
    assert memory.samples.features["edge_map"] == Array2D((32, 32), "float16") and got.shape == (
        len(rows),
        32,
        32,
    )
    np.testing.assert_array_equal(got, _expected(data, rows, 2.0))
    assert memory.info["edges"] == {
        "resolution": 32,
        "scale": 2.0,
        "storage_dtype": "float16",
        "column": "edge_map",
        "description": EdgeMap.description,
    }
    assert memory.info["attach"] == ["latents", "edges"]

    # streaming (the sharded engine in this process): the same rows, the same arrays
    stream = condense(
        data.to_iterable_dataset(),
        num_rows=ROWS,
        **_options(local_hub),
        part_options={"edges": {"scale": 2.0}},
    )
    assert np.asarray(stream.samples["source_index"]).tolist() == rows
    np.testing.assert_array_equal(_edges(stream), got)
    assert stream.info["edges"] == memory.info["edges"]

    # d2c condense
    data.save_to_disk(str(tmp_path / "data"))
    argv = ["--dataset", str(tmp_path / "data"), "--scorer", str(local_hub.pixel_dit), "--vae", "pixel"]
    argv += ["--resolution", "32", "--batch_size", "8", "--shard_size", "8", "--num_timesteps", "3"]
    argv += ["--images_per_class", "2", "--attach", "latents", "edges", "--part_option", "edges.scale=2.0"]
    argv += ["--num_workers", "0", "--cpu", "--output_dir", str(tmp_path / "run")]
    assert condense_main(argv) == 0
    command = CondensedDataset.load(tmp_path / "run" / "condensed")
    assert np.asarray(command.samples["source_index"]).tolist() == rows
    np.testing.assert_array_equal(_edges(command), got)

    # save/load and the Hub layout keep the column and its record; the card describes it
    memory.save_to_disk(tmp_path / "saved")
    memory.save_hub_folder(tmp_path / "hub")
    for folder in (tmp_path / "saved", tmp_path / "hub"):
        loaded = CondensedDataset.load(folder)
        np.testing.assert_array_equal(_edges(loaded), got)
        assert loaded.info["edges"] == memory.info["edges"]
    card = (tmp_path / "saved" / "README.md").read_text()
    assert "`edge_map`" in card and EdgeMap.description in card


def test_a_saved_set_with_a_part_loads_without_it_registered(edges, local_hub, digits_small, tmp_path):
    import d2c_hf.attach.parts as parts

    condensed = condense(digits_small.select(range(ROWS)), **_options(local_hub))
    condensed.save_to_disk(tmp_path / "saved")
    del parts._REGISTRY["edges"]
    try:
        loaded = CondensedDataset.load(tmp_path / "saved")  # the data does not need the class
        assert "edge_map" in loaded.samples.column_names
        assert json.loads(json.dumps(loaded.info["edges"]))["column"] == "edge_map"
    finally:
        parts._REGISTRY["edges"] = EdgeMap


def test_registration_refuses_what_would_clash(edges, digits_small):
    class Twin(EdgeMap):
        name = "twin"

    with pytest.raises(ValueError, match="already registered"):
        register_attach_part(EdgeMap)
    with pytest.raises(ValueError, match="column 'edge_map' is already a column"):
        register_attach_part(Twin)
    with pytest.raises(ValueError, match=r"unknown attach part\(s\) \['edgez'\]"):
        condense(digits_small, images_per_class=1, attach=("edgez",))
    with pytest.raises(ValueError, match=r"part_options for \['visual'\], which are not attached"):
        condense(digits_small, images_per_class=1, attach=("edges",), part_options={"visual": {}})
