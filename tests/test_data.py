from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Image, Value
from PIL import Image as PILImage

from d2c_hf.data.digits import load_digits_dataset
from d2c_hf.data.inputs import prepare_dataset
from d2c_hf.utils.images import (
    center_crop,
    decode_image,
    pixels_to_tensor,
    preprocess_images,
    tensor_to_pixels,
    to_rgb,
)


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(array, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def _dataset(labels, label_feature=None, images=None):
    images = images if images is not None else [np.full((8, 8, 3), i, np.uint8) for i in range(len(labels))]
    features = Features({"image": Image(), "label": label_feature or ClassLabel(num_classes=3)})
    return Dataset.from_dict(
        {"image": [PILImage.fromarray(a) if a is not None else None for a in images], "label": labels},
        features=features,
    )


# ------------------------------------------------------------------ digits


def test_load_digits_dataset_split_is_stratified_and_fixed(digits):
    train, test = digits["train"], digits["test"]
    assert len(train) + len(test) == 1797
    assert train.features["label"].names[3] == "three"
    assert isinstance(train.features["image"], Image)
    train_counts = np.bincount(train["label"], minlength=10)
    test_counts = np.bincount(test["label"], minlength=10)
    ratio = test_counts / (train_counts + test_counts)
    assert np.all(np.abs(ratio - 0.2) < 0.02)  # stratified
    image = train[0]["image"]
    assert image.size == (32, 32)
    again = load_digits_dataset(image_size=32)
    assert again["train"]["label"][:] == train["label"][:]
    assert np.array_equal(np.asarray(again["train"][5]["image"]), np.asarray(train[5]["image"]))


def test_load_digits_dataset_rejects_bad_arguments():
    with pytest.raises(ValueError, match="image_size"):
        load_digits_dataset(image_size=4)
    with pytest.raises(ValueError, match="test_size"):
        load_digits_dataset(test_size=1.5)


# ------------------------------------------------------------------ column checks


def test_prepare_dataset_accepts_classlabel_and_int(digits_small):
    ds, info = prepare_dataset(digits_small)
    assert info.num_classes == 10 and info.names[0] == "zero"
    ints = digits_small.cast_column("label", Value("int64"))
    _, info = prepare_dataset(ints)
    assert info.num_classes == 10 and info.names[9] == "9"


def test_prepare_dataset_encodes_strings_with_warning(caplog):
    ds = _dataset(["cat", "dog", "cat"], label_feature=Value("string"))
    with caplog.at_level("WARNING"):
        out, info = prepare_dataset(ds)
    assert "strings" in caplog.text
    assert info.names == ("cat", "dog")
    assert out["label"][:] == [0, 1, 0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"image_column": "img"}, "image_column='img' is not a column"),
        ({"label_column": "y"}, "label_column='y' is not a column"),
    ],
)
def test_prepare_dataset_missing_columns(digits_small, kwargs, match):
    with pytest.raises(ValueError, match=match):
        prepare_dataset(digits_small, **kwargs)


def test_prepare_dataset_bad_label_type_and_values():
    floats = _dataset([0.0, 1.0], label_feature=Value("float32"))
    with pytest.raises(TypeError, match="column 'label'"):
        prepare_dataset(floats)
    negative = _dataset([0, -1, 2], label_feature=Value("int64"))
    with pytest.raises(ValueError, match="negative label -1 at row 1"):
        prepare_dataset(negative)
    ok = _dataset([0, 1, 4], label_feature=Value("int64"))
    with pytest.raises(ValueError, match="5 classes .* knows only 3"):
        prepare_dataset(ok, num_classes=3)


def test_prepare_dataset_none_image_and_empty():
    images = [np.zeros((8, 8, 3), np.uint8), None, np.zeros((8, 8, 3), np.uint8)]
    with pytest.raises(ValueError, match="missing image .* at row 1"):
        prepare_dataset(_dataset([0, 1, 2], images=images))
    with pytest.raises(ValueError, match="empty"):
        prepare_dataset(_dataset([0, 1]).select([]))


def test_prepare_dataset_reports_rows_in_view_order():
    images = [None, np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8)]
    ds = _dataset([0, 1, 2], images=images).select([2, 1, 0])  # the None image is now row 2
    with pytest.raises(ValueError, match="at row 2"):
        prepare_dataset(ds)


def test_prepare_dataset_non_image_column():
    ds = Dataset.from_dict({"image": [[1, 2]], "label": [0]})
    with pytest.raises(TypeError, match="expected datasets.Image"):
        prepare_dataset(ds)


# ------------------------------------------------------------------ images


def test_decode_image_names_the_row():
    with pytest.raises(ValueError, match="row 7"):
        decode_image({"bytes": b"not an image", "path": None}, row=7)
    with pytest.raises(ValueError, match="None"):
        decode_image(None, row=3)
    image = decode_image({"bytes": _png(np.zeros((4, 5, 3), np.uint8)), "path": None})
    assert image.size == (5, 4)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "I", "F", "1"])
def test_to_rgb_handles_modes(mode):
    base = PILImage.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4, mode="L")
    if mode == "I;16":
        image = PILImage.fromarray(np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
        assert image.mode == "I;16"
    else:
        image = base.convert(mode)
    rgb = to_rgb(image)
    assert rgb.mode == "RGB" and rgb.size == (8, 8)
    arr = np.asarray(rgb)
    if mode in ("L", "I", "F", "I;16"):
        # grey levels are kept (16-bit rescaled to 8-bit, not clipped to white)
        assert arr[..., 0].max() > 200 and arr[..., 0].min() < 10


def test_to_rgb_composites_transparency_on_white():
    rgba = np.zeros((4, 4, 4), np.uint8)  # fully transparent black
    assert np.all(np.asarray(to_rgb(PILImage.fromarray(rgba, mode="RGBA"))) == 255)


def test_center_crop_matches_adm_rule():
    # 64x32 image: short side 32 == target -> no resize, crop the centre 32 columns
    arr = np.zeros((32, 64, 3), np.uint8)
    arr[:, 16:48] = 200
    out = center_crop(PILImage.fromarray(arr), 32)
    assert out.shape == (32, 32, 3) and np.all(out == 200)
    # large image: box-halved then bicubic; a constant image stays constant
    big = np.full((300, 500, 3), 77, np.uint8)
    assert np.all(center_crop(PILImage.fromarray(big), 64) == 77)
    # small images are upsampled
    assert center_crop(PILImage.fromarray(np.zeros((8, 8, 3), np.uint8)), 16).shape == (16, 16, 3)


def test_preprocess_and_tensor_round_trip():
    values = [{"bytes": _png(np.full((10, 12, 3), v, np.uint8)), "path": None} for v in (0, 255)]
    pixels, upsampled = preprocess_images(values, 16)
    assert pixels.shape == (2, 16, 16, 3) and upsampled == 2
    x = pixels_to_tensor(pixels)
    assert x.shape == (2, 3, 16, 16) and x.dtype == torch.float32
    assert torch.allclose(x[0], torch.full_like(x[0], -1.0)) and torch.allclose(x[1], torch.ones_like(x[1]))
    assert np.array_equal(tensor_to_pixels(x), pixels)
