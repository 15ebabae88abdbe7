"""``train_vision_encoder``: a self-supervised tiny DINOv2 that ``VisualAttacher`` and ``AutoModel`` load
like any Hub checkpoint; its objective's parts; its input checks."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from d2c_hf import VisualAttacher, train_vision_encoder
from d2c_hf.attach.train_encoder import ENCODER_INFO_FILE, nt_xent, patchify, random_affine, tiny_dinov2

TINY = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}


@pytest.fixture(scope="module")
def digits16():
    from d2c_hf.data.digits import load_digits_dataset

    return load_digits_dataset(image_size=16)["train"].select(range(64))


@pytest.fixture(scope="module")
def trained(digits16, tmp_path_factory):
    out = tmp_path_factory.mktemp("encoder") / "enc"
    train_vision_encoder(
        digits16, out, num_tokens=16, num_steps=3, batch_size=16, seed=1, config_overrides=TINY
    )
    return out


def test_the_folder_loads_through_the_public_paths(trained, digits16):
    from transformers import AutoImageProcessor, AutoModel

    model = AutoModel.from_pretrained(trained)
    assert type(model).__name__ == "Dinov2Model"
    assert model.config.hidden_size == 16 and model.config.image_size == 16 and model.config.patch_size == 4
    processor = AutoImageProcessor.from_pretrained(trained)
    assert list(processor.image_mean) == pytest.approx([0.485, 0.456, 0.406])
    attacher = VisualAttacher.from_pretrained(str(trained), num_tokens=16, resolution=16)
    assert (attacher.num_tokens, attacher.hidden_size, attacher.input_size) == (16, 16, 16)
    assert attacher.num_prefix_tokens == 1  # the CLS token is dropped, the 16 patches kept
    out = attacher.apply(digits16.select(range(5)))
    assert np.asarray(out["visual_embeds"]).shape == (5, 16, 16)
    record = json.loads((trained / ENCODER_INFO_FILE).read_text())
    assert record["labels_used"] is False and record["num_rows"] == 64 and record["num_steps"] == 3
    assert all(math.isfinite(entry["loss"]) for entry in record["loss_curve"])


def test_mean_patch_features_are_the_mean_of_the_stored_tokens(trained, digits16, monkeypatch):
    """Read columnar and averaged in float32 chunks: bitwise the float32 mean over each image's stored
    float16 tokens (what the numpy formatter and one ``mean`` over the whole column gave)."""
    from d2c_hf.attach import train_encoder

    monkeypatch.setattr(train_encoder, "MEAN_CHUNK_ROWS", 7)  # several chunks, the last one short
    data = digits16.select(range(20))
    means = train_encoder.mean_patch_features(trained, data, num_tokens=16, resolution=16)
    tokens = VisualAttacher.from_pretrained(str(trained), num_tokens=16, resolution=16).apply(data)
    whole = np.asarray(tokens.with_format("numpy")["visual_embeds"], dtype=np.float32).mean(axis=1)
    assert means.dtype == np.float32 and means.shape == (20, 16)
    assert means.tobytes() == whole.tobytes()


def test_training_changes_the_weights_and_is_deterministic(trained, digits16, tmp_path):
    from safetensors.torch import load_file

    again = tmp_path / "again"
    rng_before = torch.get_rng_state()
    train_vision_encoder(
        digits16, again, num_tokens=16, num_steps=3, batch_size=16, seed=1, config_overrides=TINY
    )
    assert torch.equal(torch.get_rng_state(), rng_before)  # the global RNG is left as it was
    first, second = load_file(trained / "model.safetensors"), load_file(again / "model.safetensors")
    assert all(torch.equal(first[k], second[k]) for k in first)
    # the same seed with no training = the initial weights: training moved them
    from transformers import Dinov2Model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        initial = Dinov2Model(tiny_dinov2(16, **TINY)).state_dict()
    assert not torch.equal(
        initial["embeddings.patch_embeddings.projection.weight"],
        first["embeddings.patch_embeddings.projection.weight"],
    )


def test_objective_parts_have_known_answers():
    # NT-Xent: identical, well-separated pairs give a loss near 0; swapped pairs a large one
    z = torch.eye(4) * 10
    assert nt_xent(z, z, temperature=0.1).item() < 1e-3
    assert nt_xent(z, z.roll(1, 0), temperature=0.1).item() > 10
    # patchify: row-major p x p patches, channels last, DINOv2's token order
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    patches = patchify(x, 2)
    assert patches.shape == (2, 4, 12)
    assert torch.equal(patches[0, 1].reshape(2, 2, 3).permute(2, 0, 1), x[0, :, 0:2, 2:4])
    # the identity affine (no shift, zoom or rotation) leaves an image unchanged
    g = torch.Generator().manual_seed(0)
    img = torch.rand(3, 1, 8, 8)
    assert torch.allclose(random_affine(img, g, shift=0.0, scale=0.0, degrees=0.0), img, atol=1e-5)
    assert not torch.allclose(random_affine(img, g, shift=0.2, scale=0.1, degrees=10.0), img, atol=1e-3)


def test_bad_input_is_refused_before_training(digits16, tmp_path):
    with pytest.raises(ValueError, match="perfect square"):
        train_vision_encoder(digits16, tmp_path / "a", num_tokens=15)
    with pytest.raises(ValueError, match="mask_ratio"):
        train_vision_encoder(digits16, tmp_path / "b", mask_ratio=1.0)
    with pytest.raises(ValueError, match="image_column='img'"):
        train_vision_encoder(digits16, tmp_path / "c", image_column="img")
    with pytest.raises(ValueError, match="augment has unknown keys"):
        train_vision_encoder(digits16, tmp_path / "d", augment={"flip": 1.0})
    with pytest.raises(ValueError, match="image_size"):
        train_vision_encoder(digits16, tmp_path / "e", config_overrides={"image_size": 32})
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("keep")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        train_vision_encoder(digits16, tmp_path / "taken")
    with pytest.raises(TypeError, match="datasets.Dataset"):
        train_vision_encoder(digits16.to_iterable_dataset(), tmp_path / "f")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # nothing half-written
