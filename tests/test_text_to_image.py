"""Text-to-image condensation (issue 25, the condensation half): the caption-conditioned score against hand
computations for SD-style, PixArt-style and SD3-style models, its invariances, the k-means groups, and
condense() in memory == streaming == ``d2c condense`` on the captioned digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset, Features, Image, List, Value

from d2c_hf import CondensedDataset, TextDifficultyScorer, condense, load_captioned_digits
from d2c_hf.data.captions import caption_thresholds, describe_digit, measure_digits
from d2c_hf.selection.captions import choose_captions
from d2c_hf.selection.groups import assign_groups, default_num_groups
from d2c_hf.selection.noise import pixel_keys, sample_noise
from d2c_hf.utils.images import pixels_to_tensor, preprocess_images
from helpers_text2image import build_text_hub

ATOL = 1e-6


@pytest.fixture(scope="module")
def text_hub(tmp_path_factory):
    return build_text_hub(tmp_path_factory.mktemp("text_hub"))


@pytest.fixture(scope="module")
def captioned():
    return load_captioned_digits()


@pytest.fixture(scope="module")
def rows(captioned):
    return captioned["train"].select(range(24))


def _pixels(dataset, resolution=32):
    pixels, _ = preprocess_images(
        list(dataset.cast_column("image", Image(decode=False))["image"]), resolution
    )
    return pixels


# ------------------------------------------------------------------ the test bed


def test_captions_are_computed_from_measurable_content(captioned):
    train = captioned["train"]
    assert set(train.column_names) == {"image", "text", "label", "ink", "slant"}
    grey = np.stack([np.asarray(im) for im in train.select(range(40))["image"]])
    ink, slant = measure_digits(grey)
    np.testing.assert_allclose(ink, train["ink"][:40], rtol=1e-6)
    expected = describe_digit(train["label"][:40], ink, slant, caption_thresholds(32))
    assert train["text"][:40] == expected
    # the words follow the measurements: within a class, "thick" digits carry more ink than "thin" ones
    labels, words = np.asarray(train["label"]), np.asarray([t.split(",")[0] for t in train["text"]])
    ink_all = np.asarray(train["ink"])
    for c in range(10):
        assert (
            ink_all[(labels == c) & (words == "a thick")].min()
            > ink_all[(labels == c) & (words == "a thin")].max()
        )
    slanted = ["right-slanted" in t for t in train["text"]]
    assert np.mean(np.asarray(train["slant"])[slanted]) > np.mean(
        np.asarray(train["slant"])[np.logical_not(slanted)]
    )


# ------------------------------------------------------------------ scores against hand computations


def _ddpm_reference(x0, noise, timesteps, scheduler, call, target="epsilon"):
    per_t = []
    with torch.no_grad():
        for i, t in enumerate(timesteps):
            step = torch.full((len(x0),), t, dtype=torch.int64)
            x_t = scheduler.add_noise(x0, noise[:, i], step)
            out = call(x_t, step)[:, : x0.shape[1]]
            goal = noise[:, i] if target == "epsilon" else scheduler.get_velocity(x0, noise[:, i], step)
            per_t.append((out - goal).square().mean(dim=(1, 2, 3)))
    return torch.stack(per_t, dim=1).numpy()


def _latents(repo, pixels):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(repo, subfolder="vae").eval()
    with torch.no_grad():
        return vae.encode(pixels_to_tensor(pixels)).latent_dist.mean * vae.config.scaling_factor


@pytest.mark.parametrize("variant", ["sd", "sd_v"])
def test_sd_unet_score_equals_hand_computation(text_hub, rows, variant):
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    repo = getattr(text_hub, variant)
    scorer = TextDifficultyScorer.from_pretrained(repo, num_timesteps=3, seed=4, reliability_probe=0)
    assert scorer.family.name == "stable-diffusion"
    assert scorer.prediction_type == ("epsilon" if variant == "sd" else "v_prediction")
    subset = rows.select(range(3))
    pixels, captions = _pixels(subset), list(subset["text"])
    _, per_t = scorer.score_pixels(pixels, captions)

    pipe = StableDiffusionPipeline.from_pretrained(repo, safety_checker=None)
    embeds, _ = pipe.encode_prompt(captions, "cpu", 1, False)  # the pipeline's own prompt encoding
    scheduler = DDPMScheduler.from_pretrained(repo, subfolder="scheduler")
    x0 = _latents(repo, pixels)
    noise = sample_noise(pixel_keys(pixels), 4, 3, x0.shape[1:])
    expected = _ddpm_reference(
        x0,
        noise,
        [166, 500, 833],
        scheduler,
        lambda x_t, t: pipe.unet(x_t, t, encoder_hidden_states=embeds).sample,
        "epsilon" if variant == "sd" else "v",
    )
    np.testing.assert_allclose(per_t, expected, rtol=1e-5, atol=ATOL)


def test_pixart_score_equals_hand_computation(text_hub, rows):
    from diffusers import DDPMScheduler, PixArtAlphaPipeline

    scorer = TextDifficultyScorer.from_pretrained(text_hub.pixart, num_timesteps=2, seed=1, max_length=20)
    assert (scorer.family.name, scorer.learned_sigma) == ("pixart", True)
    subset = rows.select(range(3))
    pixels, captions = _pixels(subset), list(subset["text"])
    _, per_t = scorer.score_pixels(pixels, captions)

    pipe = PixArtAlphaPipeline.from_pretrained(text_hub.pixart)
    embeds, mask, _, _ = pipe.encode_prompt(
        captions, do_classifier_free_guidance=False, max_sequence_length=20
    )
    x0 = _latents(text_hub.pixart, pixels)
    noise = sample_noise(pixel_keys(pixels), 1, 2, x0.shape[1:])
    added = {"resolution": None, "aspect_ratio": None}
    expected = _ddpm_reference(
        x0,
        noise,
        [250, 750],
        DDPMScheduler.from_pretrained(text_hub.pixart, subfolder="scheduler"),
        lambda x_t, t: (
            pipe.transformer(
                x_t,
                encoder_hidden_states=embeds,
                encoder_attention_mask=mask,
                timestep=t,
                added_cond_kwargs=added,
            ).sample
        ),
    )
    np.testing.assert_allclose(per_t, expected, rtol=1e-5, atol=ATOL)


def test_sd3_flow_score_equals_hand_computation(text_hub, rows):
    from diffusers import StableDiffusion3Pipeline

    scorer = TextDifficultyScorer.from_pretrained(text_hub.sd3, num_timesteps=2, max_length=12)
    assert (scorer.family.name, scorer.prediction_type) == ("sd3", "flow")
    subset = rows.select(range(2))
    pixels, captions = _pixels(subset), list(subset["text"])
    _, per_t = scorer.score_pixels(pixels, captions)

    pipe = StableDiffusion3Pipeline.from_pretrained(text_hub.sd3)
    embeds, _, pooled, _ = pipe.encode_prompt(
        captions, None, None, device="cpu", do_classifier_free_guidance=False, max_sequence_length=12
    )
    x0 = _latents(text_hub.sd3, pixels)
    noise = sample_noise(pixel_keys(pixels), 0, 2, x0.shape[1:])
    expected = []
    with torch.no_grad():
        for i, t in enumerate([0.25, 0.75]):
            x_t = (1 - t) * x0 + t * noise[:, i]
            out = pipe.transformer(
                hidden_states=x_t,
                encoder_hidden_states=embeds,
                pooled_projections=pooled,
                timestep=torch.full((2,), 1000 * t),
            ).sample
            expected.append((out - (noise[:, i] - x0)).square().mean(dim=(1, 2, 3)))
    np.testing.assert_allclose(per_t, torch.stack(expected, 1).numpy(), rtol=1e-5, atol=ATOL)


# ------------------------------------------------------------------ invariances and groups


@pytest.mark.parametrize("family", ["sd", "pixart", "sd3"])
def test_loading_a_scorer_leaves_the_global_random_state_alone(text_hub, family):
    """diffusers' PixArt transformer draws default inits from the global RNG before its weights load: the loader
    keeps the caller's state (a library never moves the user's RNG)."""
    before = torch.get_rng_state()
    TextDifficultyScorer.from_pretrained(getattr(text_hub, family), reliability_probe=0)
    assert torch.equal(before, torch.get_rng_state())


def test_scores_do_not_depend_on_batch_size_order_or_processes(text_hub, rows):
    import multiprocess

    scorer = TextDifficultyScorer.from_pretrained(
        text_hub.pixart, num_timesteps=2, batch_size=5, num_groups=3
    )
    reference = scorer.apply(rows.select(range(10)))
    again = TextDifficultyScorer.from_pretrained(text_hub.pixart, num_timesteps=2, batch_size=3, num_groups=3)
    expected = np.asarray(reference["difficulty"])
    smaller = again.apply(rows.select(range(10)))
    np.testing.assert_allclose(np.asarray(smaller["difficulty"]), expected, rtol=0, atol=ATOL)
    assert smaller["group"] == reference["group"]  # the same rows in the same order: the same groups
    order = [7, 2, 9, 0, 4, 1, 8, 3, 6, 5]
    shuffled = again.apply(rows.select(range(10)).select(order))  # a score follows its row, not its place
    np.testing.assert_allclose(np.asarray(shuffled["difficulty"]), expected[order], rtol=0, atol=ATOL)
    other_seed = TextDifficultyScorer.from_pretrained(text_hub.pixart, num_timesteps=2, seed=1, num_groups=3)
    assert np.abs(np.asarray(other_seed.apply(rows.select(range(10)))["difficulty"]) - expected).max() > 1e-3
    method = multiprocess.get_start_method(allow_none=True)
    try:
        multiprocess.set_start_method("spawn", force=True)
        sharded = scorer.apply(rows.select(range(10)), num_proc=2, batch_size=4)
    finally:
        multiprocess.set_start_method(method, force=True)
    np.testing.assert_allclose(sharded["difficulty"], reference["difficulty"], rtol=0, atol=ATOL)
    assert sharded["group"] == reference["group"]


def test_kmeans_groups_are_deterministic_per_seed():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 6))
    features = np.concatenate([c + 0.05 * rng.normal(size=(30, 6)) for c in centres])[rng.permutation(120)]
    a, b = assign_groups(features, 4, seed=3), assign_groups(features, 4, seed=3)
    np.testing.assert_array_equal(a, b)
    assert a[0] == 0 and sorted(set(a.tolist())) == [0, 1, 2, 3]  # numbered by first appearance
    # well-separated clusters are found whatever the seed (as a partition)
    other = assign_groups(features, 4, seed=11)
    assert len(set(zip(a.tolist(), other.tolist()))) == 4
    # an unlucky seed on overlapping data gives another partition: the seed matters, and is recorded
    noisy = rng.normal(size=(200, 5))
    partitions = {tuple(assign_groups(noisy, 6, seed=s)) for s in range(4)}
    assert len(partitions) > 1
    assert default_num_groups(1437) == 27 and default_num_groups(82_783) == 100 and default_num_groups(1) == 1
    assert len(set(assign_groups(np.ones((5, 3)), 3, 0))) == 1  # fewer distinct rows than groups


def test_a_random_caption_is_keyed_like_the_noise():
    values = [["a", "b", "c", "d"], "only", ["x", "y"]]
    keys = np.array([11, 12, 13], np.uint64)
    first = choose_captions(values, keys, choice="first")
    assert first == ["a", "only", "x"]
    picks = choose_captions(values, keys, choice="random", seed=5)
    assert picks == choose_captions(values[::-1], keys[::-1], choice="random", seed=5)[::-1]
    draws = {
        tuple(
            choose_captions(
                [["a", "b", "c", "d"]] * 40, np.arange(40, dtype=np.uint64), choice="random", seed=s
            )
        )
        for s in (0, 1)
    }
    assert len(draws) == 2


# ------------------------------------------------------------------ condense: memory == streaming == d2c condense


def _condense_kwargs(text_hub, local_hub):
    return dict(
        images_per_class=2,
        caption_column="text",
        scorer=str(text_hub.pixart),
        text_encoder=str(text_hub.t5),
        attach=("latents", "caption"),
        num_groups=4,
        resolution=32,
        num_timesteps=2,
        batch_size=8,
        part_options={"caption": {"max_length": 12}},
    )


def test_condense_in_memory_equals_streaming_equals_cli(text_hub, local_hub, rows, tmp_path):
    from d2c_hf.cli import condense_main

    data = rows.select(range(16))
    kwargs = _condense_kwargs(text_hub, local_hub)
    memory = condense(data, **kwargs)
    assert memory.num_classes == 4 and memory.classes is None
    assert memory.samples.features["label"].names == ["group 0", "group 1", "group 2", "group 3"]
    assert {"caption", "caption_embeds", "caption_mask", "latents"} <= set(memory.samples.column_names)
    record = memory.info["text_to_image"]
    assert record["caption_column"] == "text" and record["groups"]["num_groups"] == 4
    assert record["groups"]["source"] == "caption_embeddings" and sum(record["groups"]["sizes"]) == 16
    assert record["max_length"] == 12 and record["text_encoder"]["class"] == "T5EncoderModel"
    source = np.asarray(memory.samples["source_index"])
    assert memory.samples["caption"] == [data["text"][int(i)] for i in source]
    arrays = memory.training_arrays()
    assert (
        arrays["caption_embeds"].shape == (len(memory), 12, 16)
        and arrays["caption_embeds"].dtype == torch.float16
    )
    assert arrays["caption_mask"].shape == (len(memory), 12) and arrays["caption_mask"].dtype == torch.int8

    stream = condense(data.to_iterable_dataset(), num_rows=16, **kwargs)
    folder = tmp_path / "data"
    data.save_to_disk(folder)
    argv = ["--dataset", str(folder), "--output_dir", str(tmp_path / "run"), "--caption_column", "text"]
    argv += [
        "--scorer",
        str(text_hub.pixart),
        "--text_encoder",
        str(text_hub.t5),
        "--attach",
        "latents",
        "caption",
    ]
    argv += ["--images_per_class", "2", "--num_groups", "4", "--resolution", "32", "--num_timesteps", "2"]
    argv += ["--batch_size", "8", "--shard_size", "8", "--num_workers", "0", "--cpu"]
    argv += ["--part_option", "caption.max_length=12"]
    assert condense_main(argv) == 0
    cli = CondensedDataset.load(tmp_path / "run" / "condensed")
    for other in (stream, cli):
        for column in ("source_index", "label", "difficulty", "caption"):
            assert other.samples[column] == memory.samples[column], column
        for column in ("caption_embeds", "caption_mask", "latents"):
            np.testing.assert_array_equal(
                other.training_arrays([column])[column], memory.training_arrays([column])[column]
            )
        assert other.info["text_to_image"]["groups"] == record["groups"]
        assert other.scores["label"] == memory.scores["label"]
        np.testing.assert_array_equal(other.scores["difficulty"], memory.scores["difficulty"])


def test_captioned_set_saves_loads_and_has_a_card(text_hub, local_hub, rows, tmp_path):
    data = rows.select(range(12))
    condensed = condense(
        data, **{**_condense_kwargs(text_hub, local_hub), "attach": ("caption",), "num_groups": 3}
    )
    saved = condensed.save_to_disk(tmp_path / "set")
    loaded = CondensedDataset.load(saved)
    assert loaded.info == condensed.info and loaded.samples["caption"] == condensed.samples["caption"]
    card = (saved / "README.md").read_text()
    assert "## Captions and groups" in card and condensed.samples["caption"][0] in card
    assert "caption groups" in card and "`caption_embeds`" in card
    assert "captions: column 'text'" in loaded.summary()
    hub = CondensedDataset.load(condensed.save_hub_folder(tmp_path / "hub"))
    assert hub.samples["caption"] == condensed.samples["caption"]


# ------------------------------------------------------------------ bad input, before any model loads


def _no_model_loads(monkeypatch):
    import d2c_hf.selection.text_denoisers as text_denoisers

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(text_denoisers, "load_text_model", refuse)


def test_bad_captions_are_named_before_any_model_loads(text_hub, local_hub, rows, monkeypatch):
    _no_model_loads(monkeypatch)
    kwargs = dict(images_per_class=1, scorer=str(text_hub.pixart), text_encoder=str(text_hub.t5))
    images = rows.select(range(4))["image"]

    def table(values, feature):
        return Dataset.from_dict(
            {"image": images, "text": values}, features=Features({"image": Image(), "text": feature})
        )

    with pytest.raises(ValueError, match="caption_column='caption' is not a column.*'text'"):
        condense(rows, caption_column="caption", **kwargs)
    with pytest.raises(ValueError, match="missing \\(None\\) or empty caption at row 2"):
        condense(table(["a", "b", None, "d"], Value("string")), caption_column="text", **kwargs)
    with pytest.raises(ValueError, match="missing \\(None\\) or empty caption at row 1"):
        condense(table(["a", "  ", "c", "d"], Value("string")), caption_column="text", **kwargs)
    with pytest.raises(ValueError, match="empty list of captions at row 3"):
        condense(table([["a"], ["b"], ["c"], []], List(Value("string"))), caption_column="text", **kwargs)
    with pytest.raises(ValueError, match="missing or empty caption in the list at row 0"):
        condense(
            table([["a", ""], ["b"], ["c"], ["d"]], List(Value("string"))), caption_column="text", **kwargs
        )
    with pytest.raises(TypeError, match="caption column 'text' has feature.*int64.*string"):
        condense(table([1, 2, 3, 4], Value("int64")), caption_column="text", **kwargs)
    with pytest.raises(TypeError, match="captions must be strings"):
        choose_captions(["a", 3], np.zeros(2, np.uint64), column="text", rows=[10, 11])


def test_scorer_and_data_kinds_must_match(text_hub, local_hub, rows, digits_small, monkeypatch):
    _no_model_loads(monkeypatch)
    with pytest.raises(ValueError, match="caption_column='text'.*scorer=.*is class-conditional"):
        condense(rows, images_per_class=1, caption_column="text", scorer=str(local_hub.dit))
    with pytest.raises(
        ValueError, match="is a text-to-image model and no caption_column was given.*caption_column="
    ):
        condense(digits_small, images_per_class=1, scorer=str(text_hub.pixart), attach=())
    with pytest.raises(ValueError, match="a captioned dataset has no classes: attach 'caption'"):
        condense(
            rows, images_per_class=1, caption_column="text", scorer=str(text_hub.pixart), attach=("text",)
        )
    with pytest.raises(
        ValueError, match="attach part 'caption' embeds each image's caption: name the caption column"
    ):
        condense(digits_small, images_per_class=1, scorer=str(local_hub.dit), attach=("caption",))
    with pytest.raises(ValueError, match="options of a captioned dataset: pass caption_column"):
        condense(digits_small, images_per_class=1, num_groups=3)
    with pytest.raises(ValueError, match="group_by must be one of"):
        condense(rows, images_per_class=1, caption_column="text", group_by="colour")
    from d2c_hf import DifficultyScorer

    with pytest.raises(ValueError, match="is a text-to-image model.*caption_column"):
        DifficultyScorer.from_pretrained(text_hub.pixart)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="is a class-conditional model.*DiT"):
        TextDifficultyScorer.from_pretrained(local_hub.dit)


def test_train_scorer_learns_a_caption_conditioned_scorer(captioned, text_hub, tmp_path):
    from diffusers import PixArtTransformer2DModel

    from d2c_hf import train_scorer
    from d2c_hf.selection.training_loop import init_transformer_weights

    data = captioned["train"].select(range(24))
    tiny = {"num_layers": 1, "num_attention_heads": 2, "attention_head_dim": 8}
    kwargs = dict(caption_column="text", text_encoder=text_hub.t5, num_steps=2, batch_size=8, resolution=16)
    folder = train_scorer(data, tmp_path / "scorer", model_kwargs=tiny, **kwargs)
    scorer = TextDifficultyScorer.from_pretrained(folder, num_timesteps=2)
    assert scorer.family.name == "pixart" and scorer.config["space"] == "pixel" and scorer.resolution == 16
    scores, _ = scorer.score_pixels(_pixels(data.select(range(4)), 16), list(data["text"][:4]))
    assert scores.shape == (4,) and np.all(np.isfinite(scores)) and np.all(scores > 0)
    # the initialisation covers every PixArt parameter from the local generator (the loop is the class kind's)
    config = dict(
        sample_size=4, in_channels=3, out_channels=3, caption_channels=16, cross_attention_dim=16, **tiny
    )
    models = [PixArtTransformer2DModel(**config) for _ in range(2)]
    for model in models:
        init_transformer_weights(model, torch.Generator().manual_seed(7))
    assert all(
        torch.equal(a, b) for a, b in zip(models[0].state_dict().values(), models[1].state_dict().values())
    )
    bad = data.map(lambda r, i: {"text": None if i == 5 else r["text"]}, with_indices=True)
    with pytest.raises(ValueError, match="caption column 'text' has a missing"):
        train_scorer(bad, tmp_path / "bad", **kwargs)
    assert not (tmp_path / "bad").exists()
