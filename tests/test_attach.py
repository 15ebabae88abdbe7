from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from datasets import ClassLabel, Dataset, Features, Image
from PIL import Image as PILImage

from d2c_hf.attach.attachers import (
    LatentEncoder,
    TextAttacher,
    VisualAttacher,
    class_prompts,
    clean_class_name,
)
from d2c_hf.attach.parts import parse_attach
from d2c_hf.utils.images import center_crop, pixels_to_tensor

IMAGENET_TSV = Path(__file__).parent / "data" / "imagenet1k_classes.tsv"


@pytest.fixture(scope="module")
def few_digits(digits_small):
    return digits_small.select(range(6))


def _crops(dataset, resolution: int) -> np.ndarray:
    return np.stack([center_crop(im, resolution) for im in dataset["image"]])


# ------------------------------------------------------------------ latents


def test_latents_equal_vae_posterior_mean_and_std(local_hub, few_digits):
    from diffusers import AutoencoderKL

    encoder = LatentEncoder.from_pretrained(local_hub.vae, resolution=32, batch_size=4)
    out = encoder.apply(few_digits)
    assert out.features["latents"].shape == (8, 8, 8) and out.features["latents"].dtype == "float16"
    assert isinstance(out.features["image"], Image) and out.features["image"].decode  # restored

    vae = AutoencoderKL.from_pretrained(local_hub.vae).eval()
    with torch.no_grad():
        dist = vae.encode(pixels_to_tensor(_crops(few_digits, 32))).latent_dist
    stored = torch.from_numpy(np.asarray(out.with_format("numpy", dtype=np.float16)["latents"]))
    torch.testing.assert_close(stored[:, :4], dist.mean.half(), rtol=0, atol=0)
    torch.testing.assert_close(stored[:, 4:], dist.std.half(), rtol=0, atol=0)
    assert not torch.equal(stored[:, 4:], stored[:, :4])

    config = encoder.config
    assert config["scaling_factor"] == vae.config.scaling_factor
    assert config["shift_factor"] == 0.0 and config["layout"] == "mean_std" and config["space"] == "latent"
    assert config["vae"]["sha256"]


def test_latent_encoder_reads_the_vae_of_a_pipeline_folder(local_hub, few_digits):
    direct = LatentEncoder.from_pretrained(local_hub.vae, resolution=32)
    from_pipeline = LatentEncoder.from_pretrained(local_hub.dit, resolution=32)
    assert from_pipeline.shape == direct.shape == (8, 8, 8)
    a = np.asarray(direct.apply(few_digits).with_format("numpy")["latents"])
    b = np.asarray(from_pipeline.apply(few_digits).with_format("numpy")["latents"])
    np.testing.assert_array_equal(a, b)


def test_pixel_space_latents_are_the_image_with_zero_std(few_digits):
    encoder = LatentEncoder.from_pretrained(None, resolution=32)
    out = encoder.apply(few_digits)
    stored = np.asarray(out.with_format("numpy", dtype=np.float16)["latents"])
    expected = pixels_to_tensor(_crops(few_digits, 32)).half().numpy()
    assert stored.shape == (6, 6, 32, 32)
    np.testing.assert_array_equal(stored[:, :3], expected)
    assert not stored[:, 3:].any()
    assert encoder.config["space"] == "pixel" and encoder.config["scaling_factor"] == 1.0


def test_latent_encoder_fingerprint_tracks_the_config(local_hub, few_digits):
    a = LatentEncoder.from_pretrained(local_hub.vae, resolution=32)
    b = LatentEncoder.from_pretrained(local_hub.vae, resolution=32)
    c = LatentEncoder.from_pretrained(local_hub.vae, resolution=64)
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert a.apply(few_digits)._fingerprint == b.apply(few_digits)._fingerprint


def test_latent_encoder_names_the_broken_row(local_hub):
    buf = io.BytesIO()
    PILImage.new("RGB", (32, 32), (10, 20, 30)).save(buf, format="PNG")
    good = {"bytes": buf.getvalue(), "path": None}
    bad = {"bytes": b"not an image", "path": None}
    ds = Dataset.from_dict(
        {"image": [good, good, bad, good], "label": [0, 1, 0, 1]},
        features=Features({"image": Image(), "label": ClassLabel(names=["a", "b"])}),
    )
    encoder = LatentEncoder.from_pretrained(local_hub.vae, resolution=32)
    with pytest.raises(ValueError, match="row 2"):
        encoder.apply(ds)
    with pytest.raises(ValueError, match="already has a 'latents' column"):
        encoder.apply(encoder.apply(ds.select([0, 1])))
    with pytest.raises(ValueError, match="image_column='picture'"):
        LatentEncoder(None, resolution=32, image_column="picture").apply(ds)
    with pytest.raises(ValueError, match="multiple of the VAE's downsampling factor 4"):
        LatentEncoder.from_pretrained(local_hub.vae, resolution=30)


# ------------------------------------------------------------------ visual tokens


@pytest.mark.parametrize("name, registers", [("dinov2", 0), ("dinov2_reg", 4)])
def test_visual_tokens_are_patch_tokens_without_cls_or_registers(local_hub, few_digits, name, registers):
    from transformers import AutoModel

    path = getattr(local_hub, name)
    attacher = VisualAttacher.from_pretrained(path, num_tokens=16, resolution=32, batch_size=4)
    assert attacher.input_size == 4 * 14 and attacher.num_prefix_tokens == 1 + registers
    # the checkpoint's own normalisation, not BitImageProcessor's CLIP defaults
    assert attacher.config["image_mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert attacher.config["image_std"] == pytest.approx([0.229, 0.224, 0.225])
    out = attacher.apply(few_digits)
    assert out.features["visual_embeds"].shape == (16, 32)
    stored = torch.from_numpy(np.asarray(out.with_format("numpy", dtype=np.float16)["visual_embeds"]))

    # reference, written independently: crop, x/255, normalise, bicubic resize, raw forward
    x = torch.from_numpy(_crops(few_digits, 32)).permute(0, 3, 1, 2).float() / 255.0
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
        1, 3, 1, 1
    )
    x = F.interpolate(x, size=(56, 56), mode="bicubic", align_corners=False)
    model = AutoModel.from_pretrained(path).eval()
    with torch.no_grad():
        hidden = model(pixel_values=x).last_hidden_state
    assert hidden.shape[1] == 1 + registers + 16
    # equal up to one float16 ulp (x * (1/255) vs x / 255, batch composition)
    torch.testing.assert_close(stored.float(), hidden[:, 1 + registers :], rtol=2e-3, atol=2e-3)
    assert not torch.allclose(stored.float(), hidden[:, :16].float(), atol=1e-2)  # CLS/registers not kept


def test_visual_attacher_checks_token_counts(local_hub):
    with pytest.raises(ValueError, match="not a perfect square"):
        VisualAttacher.from_pretrained(local_hub.dinov2, num_tokens=15)
    with pytest.raises(ValueError, match="yields 4 patch tokens .* num_tokens=16"):
        VisualAttacher.from_pretrained(local_hub.dinov2, num_tokens=16, input_size=28)
    bigger = VisualAttacher.from_pretrained(local_hub.dinov2, num_tokens=4, input_size=56)
    assert bigger.encoder_tokens == 16 and bigger.features["visual_embeds"].shape == (4, 32)

    from transformers import AutoModel

    model = AutoModel.from_pretrained(local_hub.dinov2)
    model.config._name_or_path = ""
    with pytest.raises(ValueError, match="pass image_mean= and image_std="):
        VisualAttacher.from_pretrained(model, num_tokens=16)
    loaded = VisualAttacher.from_pretrained(model, num_tokens=16, image_mean=(0.5,) * 3, image_std=(0.5,) * 3)
    assert loaded.config["image_mean"] == [0.5, 0.5, 0.5]


def test_visual_attacher_rejects_a_width_change(local_hub, few_digits):
    attacher = VisualAttacher.from_pretrained(local_hub.dinov2, num_tokens=16, resolution=32)
    attacher.hidden_size = 48  # what a swapped encoder would look like to the declared features
    with pytest.raises(ValueError, match="output width 32 differs from the declared 48"):
        attacher(few_digits[:2], indices=[0, 1])


# ------------------------------------------------------------------ class text


def _imagenet_names() -> list[str]:
    with open(IMAGENET_TSV, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert [int(r["label"]) for r in rows] == list(range(1000))
    return [r["name"] for r in rows]


def test_imagenet_prompts_are_unique():
    names = _imagenet_names()
    display, prompts = class_prompts(names, "a photo of a {}")
    assert len(set(prompts)) == 1000
    assert prompts[0] == "a photo of a tench"
    assert display[2] == "great white shark"
    assert (display[134], display[517]) == ("crane", "crane (2)")  # no synonym tells them apart
    assert (display[638], display[639]) == ("maillot", "tank suit")  # 639 has a second synonym
    assert (display[264], display[474]) == ("Cardigan Welsh corgi", "cardigan")  # case-only clash
    renamed = [i for i in range(1000) if display[i] != clean_class_name(names[i])]
    assert renamed == [264, 517, 639]

    numbered, _ = class_prompts(names, unique="number")
    assert (numbered[638], numbered[639], numbered[517]) == ("maillot", "maillot (2)", "crane (2)")
    with pytest.raises(ValueError, match=r"134: 'crane' / 517: 'crane'"):
        class_prompts(names, unique="error")


def test_class_names_must_be_present():
    with pytest.raises(ValueError, match="class 1 has no usable name"):
        class_prompts(["cat", " ", "dog"])
    with pytest.raises(ValueError, match="class 2 has no usable name"):
        class_prompts(["cat", "dog", None])
    with pytest.raises(ValueError, match=r"missing for 1 class id\(s\) \[1\] of 0..2"):
        class_prompts({0: "cat", 2: "dog"})
    assert class_prompts({1: "dog", 0: "cat"})[0] == ["cat", "dog"]
    with pytest.raises(ValueError, match="exactly one"):
        class_prompts(["cat"], "a photo")
    with pytest.raises(ValueError, match="exactly one"):
        class_prompts(["cat"], "{} and {}")


def test_text_attacher_stores_t5_embeddings(local_hub):
    from transformers import AutoTokenizer, T5EncoderModel

    attacher = TextAttacher.from_pretrained(local_hub.t5, max_length=16)
    table = attacher.encode_classes(["tench, Tinca tinca", "goldfish", "crane", "crane"])
    assert list(table["name"]) == ["tench", "goldfish", "crane", "crane (2)"]
    prompts = list(table["prompt"])
    assert prompts[0] == "a photo of a tench"
    assert list(table["label"]) == [0, 1, 2, 3]
    assert (
        table.features["text_embeds"].shape == (16, 16) and table.features["text_embeds"].dtype == "float16"
    )

    tokenizer = AutoTokenizer.from_pretrained(local_hub.t5)
    model = T5EncoderModel.from_pretrained(local_hub.t5).eval()
    tokens = tokenizer(prompts, padding="max_length", max_length=16, truncation=True, return_tensors="pt")
    with torch.no_grad():
        expected = model(**tokens).last_hidden_state.half()
    stored = torch.from_numpy(np.asarray(table.with_format("numpy", dtype=np.float16)["text_embeds"]))
    torch.testing.assert_close(stored, expected, rtol=0, atol=0)
    mask = np.asarray(table.with_format("numpy")["text_mask"])
    np.testing.assert_array_equal(mask, tokens["attention_mask"].numpy())
    assert mask[0].sum() == len(tokenizer("a photo of a tench")["input_ids"])  # "</s>" counted, padding not
    assert attacher.config["prompt_template"] == "a photo of a {}" and attacher.config["max_length"] == 16


def test_text_attacher_truncates_long_prompts_with_a_warning(local_hub, caplog):
    attacher = TextAttacher.from_pretrained(local_hub.t5, max_length=4)
    with caplog.at_level("WARNING", logger="d2c_hf.attach.attachers"):
        table = attacher.encode_classes(["tench", "great white shark"])
    assert "2 prompts are longer than max_length=4" in caplog.text
    assert np.asarray(table.with_format("numpy")["text_mask"]).tolist() == [[1, 1, 1, 1], [1, 1, 1, 1]]


def test_text_attacher_rejects_overflowing_embeddings(local_hub):
    attacher = TextAttacher.from_pretrained(local_hub.t5, max_length=8)
    original = attacher.text_encoder.forward

    def overflow(*args, **kwargs):
        out = original(*args, **kwargs)
        out.last_hidden_state[1] = 1e6  # beyond float16's 65504
        return out

    attacher.text_encoder.forward = overflow
    with pytest.raises(ValueError, match="text embedding of row 1 contains inf/NaN"):
        attacher.encode_classes(["tench", "goldfish"])


def test_parse_attach():
    assert parse_attach(("text", "latents")) == ("latents", "text")
    assert parse_attach("visual") == ("visual",)
    assert parse_attach(None) == ()
    with pytest.raises(ValueError, match=r"unknown attach part\(s\) \['depth'\]"):
        parse_attach(("latents", "depth"))


def test_apply_refuses_forked_workers_after_torch_ran(digits_small):
    """map(num_proc > 1) with the default fork start method would hang in torch's thread pool."""
    import multiprocess

    encoder = LatentEncoder(vae=None, resolution=8)
    threads, method = torch.get_num_threads(), multiprocess.get_start_method(allow_none=True)
    try:
        torch.set_num_threads(2)
        multiprocess.set_start_method("fork", force=True)
        with pytest.raises(RuntimeError, match=r"LatentEncoder.apply\(num_proc=2\).*spawn"):
            encoder.apply(digits_small, num_proc=2)
    finally:
        torch.set_num_threads(threads)
        multiprocess.set_start_method(method, force=True)
