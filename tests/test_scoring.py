"""Tests for d2c_hf.selection.scorer: the difficulty score, its adapters, common random numbers, the
datasets plumbing, and train_scorer."""

from __future__ import annotations

import copy
import io
import json
import logging

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Image, Value, load_from_disk
from diffusers import AutoencoderKL, DDPMScheduler, DiTTransformer2DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.modeling_utils import ModelMixin
from PIL import Image as PILImage

from d2c_hf.selection.denoisers import timestep_grid
from d2c_hf.selection.noise import pixel_keys, sample_noise, value_keys
from d2c_hf.selection.scorer import DifficultyScorer
from d2c_hf.selection.train_scorer import train_scorer
from d2c_hf.utils.images import pixels_to_tensor, preprocess_images

ATOL = 1e-6


# ------------------------------------------------------------------ fixtures and helpers


@pytest.fixture(scope="module")
def few(digits_small):
    return digits_small.select(range(24))


@pytest.fixture(scope="module")
def dit_scorer(local_hub):
    return DifficultyScorer.from_pretrained(local_hub.dit, batch_size=8)


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory):
    """A pixel-space DiT trained for 300 steps on the 16 px digits (about 20 s on 2 cores)."""
    out = tmp_path_factory.mktemp("trained") / "scorer"
    return train_scorer(
        digits["train"],
        out,
        resolution=16,
        num_steps=300,
        batch_size=64,
        learning_rate=3e-3,
        model_kwargs={"patch_size": 4},
    )


def _scores(dataset, column="difficulty") -> np.ndarray:
    return np.asarray(dataset.with_format("numpy")[column])


def _pixels_labels(dataset, resolution):
    pixels, _ = preprocess_images(dataset["image"], resolution)
    return pixels, np.asarray(dataset["label"])


def _png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


class TinyFlowModel(ModelMixin, ConfigMixin):
    """A small class-conditional velocity model with a diffusers config (stands in for SiT)."""

    @register_to_config
    def __init__(self, in_channels: int = 3, sample_size: int = 32, num_classes: int = 10):
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.label = torch.nn.Embedding(num_classes + 1, in_channels)
        self.time = torch.nn.Linear(1, in_channels)
        self.dropout_prob = 0.5
        self.seen_timesteps: list[torch.Tensor] = []

    def forward(self, hidden_states, timestep, class_labels, return_dict=True):
        self.seen_timesteps.append(timestep)
        if self.training:  # label dropout, like SiT in train mode
            drop = torch.rand(class_labels.shape) < self.dropout_prob
            class_labels = torch.where(drop, self.config.num_classes, class_labels)
        t = timestep.float().view(-1, 1)
        bias = (self.label(class_labels) + self.time(t))[:, :, None, None]
        out = self.conv(hidden_states) * (1 + t.view(-1, 1, 1, 1)) + bias
        return Transformer2DModelOutput(sample=out) if return_dict else (out,)


class SiTTransformer2DModel(TinyFlowModel):
    """Same model under the class name of d2c-hf's SiT: detected as a flow model by name."""


# ------------------------------------------------------------------ grid and common random numbers


def test_timestep_grid_is_bin_midpoints():
    assert timestep_grid(10, "epsilon").tolist() == list(range(50, 1000, 100))
    assert timestep_grid(4, "epsilon").tolist() == [125, 375, 625, 875]
    assert timestep_grid(3, "epsilon", num_train_timesteps=10).tolist() == [1, 5, 8]  # floor((i+.5)*10/3)
    assert timestep_grid(1, "epsilon").tolist() == [500]
    torch.testing.assert_close(timestep_grid(4, "flow"), torch.tensor([0.125, 0.375, 0.625, 0.875]))
    with pytest.raises(ValueError, match="num_timesteps"):
        timestep_grid(0, "epsilon")
    with pytest.raises(ValueError, match="exceeds"):
        timestep_grid(1001, "epsilon")


def test_noise_depends_only_on_seed_key_and_timestep():
    keys = np.array([3, 2**63 + 5, 11], dtype=np.uint64)
    noise = sample_noise(keys, seed=0, num_timesteps=4, shape=(2, 3, 3))
    assert noise.shape == (3, 4, 2, 3, 3) and noise.dtype == torch.float32
    # the same key in another batch position / batch gets the same noise
    torch.testing.assert_close(sample_noise(keys[[2, 0]], 0, 4, (2, 3, 3)), noise[[2, 0]], rtol=0, atol=0)
    assert not torch.equal(noise[0], noise[2])
    assert not torch.equal(noise[0, 0], noise[0, 1])  # timesteps get different noise
    assert not torch.equal(sample_noise(keys, 1, 4, (2, 3, 3)), noise)  # the seed matters
    assert abs(float(noise.mean())) < 0.2 and abs(float(noise.std()) - 1) < 0.2


def test_keys_are_content_hashes():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (3, 4, 4, 3), dtype=np.uint8)
    pixels[2] = pixels[0]
    keys = pixel_keys(pixels)
    assert keys.dtype == np.uint64 and keys[0] == keys[2] and keys[0] != keys[1]
    changed = pixels.copy()
    changed[0, 0, 0, 0] ^= 1
    assert pixel_keys(changed)[0] != keys[0]
    assert len(set(value_keys([7, "7", b"7"]).tolist())) == 3  # typed: 7 and "7" differ
    assert value_keys(["a", 7]).tolist() == value_keys(["a", 7]).tolist()
    with pytest.raises(ValueError, match="row 5"):
        value_keys([1, None], rows=[4, 5], column="id")


# ------------------------------------------------------------------ invariance (common random numbers)


def test_scores_do_not_depend_on_batch_size_order_or_chunking(local_hub, few):
    reference = _scores(DifficultyScorer.from_pretrained(local_hub.dit, batch_size=16).apply(few))
    assert reference.dtype == np.float32 and np.all(reference > 0) and np.unique(reference).size == len(few)
    for batch_size in (1, 3, 16):
        scorer = DifficultyScorer.from_pretrained(local_hub.dit, batch_size=batch_size)
        np.testing.assert_allclose(_scores(scorer.apply(few, batch_size=5)), reference, rtol=0, atol=ATOL)
    chunked = DifficultyScorer.from_pretrained(local_hub.dit, batch_size=16, max_forward_batch=7)
    np.testing.assert_allclose(_scores(chunked.apply(few)), reference, rtol=0, atol=ATOL)

    indexed = few.add_column("row", list(range(len(few))))
    shuffled = DifficultyScorer.from_pretrained(local_hub.dit, batch_size=4).apply(indexed.shuffle(seed=3))
    rows = np.asarray(shuffled["row"])
    assert not np.array_equal(rows, np.arange(len(few)))
    np.testing.assert_allclose(_scores(shuffled)[np.argsort(rows)], reference, rtol=0, atol=ATOL)
    shard = DifficultyScorer.from_pretrained(local_hub.dit).apply(few.shard(3, 1, contiguous=False))
    np.testing.assert_allclose(_scores(shard), reference[1::3], rtol=0, atol=ATOL)

    other_seed = _scores(DifficultyScorer.from_pretrained(local_hub.dit, seed=1).apply(few))
    assert np.abs(other_seed - reference).max() > 1e-3


def test_key_column_replaces_the_pixel_hash(local_hub, few):
    with_ids = few.add_column("id", [f"img{i}" for i in range(len(few))])
    scorer = DifficultyScorer.from_pretrained(local_hub.pixel_dit, key_column="id")
    by_id = _scores(scorer.apply(with_ids))
    by_pixels = _scores(DifficultyScorer.from_pretrained(local_hub.pixel_dit).apply(few))
    assert np.abs(by_id - by_pixels).max() > 1e-4
    reversed_ = scorer.apply(with_ids.select(range(len(few))[::-1]))
    np.testing.assert_allclose(_scores(reversed_)[::-1], by_id, rtol=0, atol=ATOL)
    assert scorer.config["key"] == {"column": "id"}


# ------------------------------------------------------------------ adapters against manual computations


@pytest.mark.parametrize("space", ["latent", "pixel"])
def test_epsilon_adapter_equals_manual_ddpm_computation(local_hub, digits_small, space):
    repo = local_hub.dit if space == "latent" else local_hub.pixel_dit
    scorer = DifficultyScorer.from_pretrained(repo, num_timesteps=4, seed=5)
    assert scorer.config["space"] == space
    pixels, labels = _pixels_labels(digits_small.select([7]), 32)
    _, per_t = scorer.score_pixels(pixels, labels)

    subfolder = {"subfolder": "transformer"} if space == "latent" else {}
    model = DiTTransformer2DModel.from_pretrained(repo, **subfolder).eval()
    x = pixels_to_tensor(pixels)
    with torch.no_grad():
        if space == "latent":
            vae = AutoencoderKL.from_pretrained(repo, subfolder="vae").eval()
            x = vae.encode(x).latent_dist.mean * vae.config.scaling_factor
            scheduler = DDPMScheduler.from_pretrained(repo, subfolder="scheduler")
        else:
            scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
        noise = sample_noise(pixel_keys(pixels), seed=5, num_timesteps=4, shape=x.shape[1:])[0]
        expected = []
        for i, t in enumerate([125, 375, 625, 875]):
            timestep = torch.tensor([t])
            x_t = scheduler.add_noise(x, noise[i : i + 1], timestep)
            out = model(x_t, timestep=timestep, class_labels=torch.tensor(labels)).sample
            expected.append(float(((out[:, : x.shape[1]] - noise[i : i + 1]) ** 2).mean()))
    np.testing.assert_allclose(per_t[0], expected, rtol=1e-5, atol=ATOL)
    assert scorer.learned_sigma is (space == "latent")


def test_learned_sigma_half_is_ignored(local_hub, few):
    model = DiTTransformer2DModel.from_pretrained(local_hub.dit, subfolder="transformer")
    pixels, labels = _pixels_labels(few.select(range(6)), 32)
    reference, _ = DifficultyScorer.from_pretrained(model, vae=local_hub.vae).score_pixels(pixels, labels)

    # proj_out_2 rows are laid out (p, q, channel): channels >= 4 are the sigma half
    channel = torch.arange(model.proj_out_2.out_features) % model.config.out_channels
    for half, changes in ((channel >= 4, False), (channel < 4, True)):
        perturbed = copy.deepcopy(model)
        with torch.no_grad():
            perturbed.proj_out_2.bias[half] += 3.0
        scores, _ = DifficultyScorer.from_pretrained(perturbed, vae=local_hub.vae).score_pixels(
            pixels, labels
        )
        assert bool(np.abs(scores - reference).max() > 0.1) == changes


def test_flow_adapter_equals_manual_computation(few):
    torch.manual_seed(0)  # test-side: weights of the tiny model
    model = TinyFlowModel().eval()
    with pytest.raises(ValueError, match="prediction_type='flow'"):
        DifficultyScorer.from_pretrained(model)
    scorer = DifficultyScorer.from_pretrained(model, prediction_type="flow", num_timesteps=5, seed=2)
    pixels, labels = _pixels_labels(few.select(range(3)), 32)
    model.seen_timesteps.clear()
    difficulty, per_t = scorer.score_pixels(pixels, labels)
    seen = torch.cat(model.seen_timesteps)
    assert seen.dtype == torch.float32 and sorted(set(seen.tolist())) == pytest.approx(
        [0.1, 0.3, 0.5, 0.7, 0.9]
    )

    x = pixels_to_tensor(pixels)
    noise = sample_noise(pixel_keys(pixels), seed=2, num_timesteps=5, shape=x.shape[1:])
    expected = np.zeros((3, 5))
    with torch.no_grad():
        for i, t in enumerate([0.1, 0.3, 0.5, 0.7, 0.9]):
            x_t = (1 - t) * x + t * noise[:, i]
            out = model(x_t, torch.full((3,), t), torch.tensor(labels)).sample
            expected[:, i] = ((out - (noise[:, i] - x)) ** 2).mean(dim=(1, 2, 3)).numpy()
    np.testing.assert_allclose(per_t, expected, rtol=1e-5, atol=ATOL)
    np.testing.assert_allclose(difficulty, expected.mean(1), rtol=1e-5, atol=ATOL)

    by_name = DifficultyScorer.from_pretrained(SiTTransformer2DModel().eval())  # detected by class name
    assert by_name.prediction_type == "flow" and by_name.config["noising"]["target"] == "velocity"


def test_model_in_train_mode_is_scored_in_eval_mode(local_hub, few):
    pixels, labels = _pixels_labels(few.select(range(16)), 32)
    reference, _ = DifficultyScorer.from_pretrained(local_hub.pixel_dit).score_pixels(pixels, labels)
    model = DiTTransformer2DModel.from_pretrained(local_hub.pixel_dit).train()  # label dropout on
    scorer = DifficultyScorer.from_pretrained(model)
    assert not model.training
    model.train()  # switched back by the caller: score_pixels must still score in eval mode
    for _ in range(2):  # 160 labels at p=0.1: dropout would change scores
        scores, _ = scorer.score_pixels(pixels, labels)
        np.testing.assert_allclose(scores, reference, rtol=0, atol=ATOL)

    torch.manual_seed(0)
    flow = TinyFlowModel().train()  # drops half the labels in train mode
    flow_scorer = DifficultyScorer.from_pretrained(flow, prediction_type="flow")
    first, _ = flow_scorer.score_pixels(pixels, labels)
    np.testing.assert_array_equal(flow_scorer.score_pixels(pixels, labels)[0], first)


# ------------------------------------------------------------------ spaces and layouts


def test_pixel_and_latent_space(local_hub, dit_scorer):
    config = dit_scorer.config
    assert config["space"] == "latent" and config["input_shape"] == [4, 8, 8]
    assert config["vae"]["sha256"] and config["scaling_factor"] == pytest.approx(0.18215)
    assert dit_scorer.resolution == 32 and dit_scorer.num_classes == 10
    assert config["noising"]["timesteps"] == list(range(50, 1000, 100))
    json.dumps(config)

    pixel = DifficultyScorer.from_pretrained(local_hub.pixel_dit)
    assert pixel.config["space"] == "pixel" and pixel.config["vae"] is None
    assert pixel.config["input_shape"] == [3, 32, 32] and not pixel.learned_sigma
    # an explicit VAE overrides the repo's own (here the same weights, loaded from their own folder)
    explicit = DifficultyScorer.from_pretrained(local_hub.dit, vae=local_hub.vae)
    assert explicit.config["vae"]["name_or_path"] == str(local_hub.vae)

    with pytest.raises(ValueError, match="takes 4 input channels but scores in pixel space"):
        DifficultyScorer.from_pretrained(local_hub.dit, vae="pixel")
    with pytest.raises(ValueError, match="takes 3 input channels but scores in the VAE's latent space"):
        DifficultyScorer.from_pretrained(local_hub.pixel_dit, vae=local_hub.vae)
    with pytest.raises(ValueError, match="built for 8x8"):
        DifficultyScorer.from_pretrained(local_hub.dit, resolution=64)
    with pytest.raises(ValueError, match="multiple of the VAE's downsampling factor 4"):
        DifficultyScorer.from_pretrained(local_hub.dit, resolution=30)
    with pytest.raises(ValueError, match="not a model folder"):
        DifficultyScorer.from_pretrained(local_hub.root)


def test_only_diffusers_and_d2c_classes_are_resolved_from_a_folder(tmp_path):
    TinyFlowModel().save_pretrained(tmp_path / "flow")
    with pytest.raises(ValueError, match="unsupported model class 'TinyFlowModel'.*load the model yourself"):
        DifficultyScorer.from_pretrained(tmp_path / "flow")
    model = TinyFlowModel.from_pretrained(tmp_path / "flow")
    assert DifficultyScorer.from_pretrained(model, prediction_type="flow").prediction_type == "flow"


def test_trained_scorer_layouts_load(trained, digits_small, local_hub, tmp_path):
    assert (trained / "transformer" / "config.json").is_file() and (trained / "scheduler").is_dir()
    record = json.loads((trained / "d2c_scorer.json").read_text())
    assert record["space"] == "pixel" and record["num_steps"] == 300 and record["class_names"][0] == "zero"
    scorer = DifficultyScorer.from_pretrained(trained)
    assert scorer.config["space"] == "pixel" and scorer.resolution == 16 and scorer.num_classes == 10

    latent = train_scorer(
        digits_small.select(range(40)), tmp_path / "latent", vae=local_hub.vae, num_steps=2, batch_size=8
    )
    assert (latent / "model_index.json").is_file() and (latent / "vae" / "config.json").is_file()
    latent_scorer = DifficultyScorer.from_pretrained(latent)
    assert latent_scorer.config["space"] == "latent" and latent_scorer.config["input_shape"] == [4, 8, 8]
    assert latent_scorer.resolution == 32 and not latent_scorer.learned_sigma
    assert np.all(_scores(latent_scorer.apply(digits_small.select(range(4)))) > 0)


def test_hub_dit_layout_loads(local_hub, few, tmp_path):
    """facebook/DiT-XL-2-256 names its transformer ``Transformer2DModel`` (remapped by diffusers) and
    ships a DDIMScheduler: the same weights must give the same scores."""
    import shutil

    repo = shutil.copytree(local_hub.dit, tmp_path / "DiT-XL-2-256")
    for path in (repo / "model_index.json", repo / "transformer" / "config.json"):
        path.write_text(path.read_text().replace('"DiTTransformer2DModel"', '"Transformer2DModel"'))
    assert (
        json.loads((repo / "scheduler" / "scheduler_config.json").read_text())["_class_name"]
        == "DDIMScheduler"
    )
    scorer = DifficultyScorer.from_pretrained(repo)
    assert type(scorer.model).__name__ == "DiTTransformer2DModel" and scorer.prediction_type == "epsilon"
    assert scorer.config["space"] == "latent" and scorer.config["noising"]["beta_schedule"] == "linear"
    subset = few.select(range(4))
    reference = _scores(DifficultyScorer.from_pretrained(local_hub.dit).apply(subset))
    np.testing.assert_array_equal(_scores(scorer.apply(subset)), reference)


def test_bf16_autocast(local_hub, few):
    pixels, labels = _pixels_labels(few.select(range(4)), 32)
    full = DifficultyScorer.from_pretrained(local_hub.dit)
    half = DifficultyScorer.from_pretrained(local_hub.dit, dtype="bf16")
    assert half.config["dtype"] == "bfloat16" and half.fingerprint != full.fingerprint
    assert next(half.model.parameters()).dtype == torch.float32  # weights stay, compute is autocast
    reference, _ = full.score_pixels(pixels, labels)
    scores, _ = half.score_pixels(pixels, labels)
    assert scores.dtype == np.float32 and not np.array_equal(scores, reference)
    np.testing.assert_allclose(scores, reference, rtol=0.05)


def test_scores_do_not_depend_on_the_number_of_processes(dit_scorer, few):
    import multiprocess

    subset = few.select(range(8))
    reference = _scores(dit_scorer.apply(subset))
    threads, method = torch.get_num_threads(), multiprocess.get_start_method(allow_none=True)
    try:
        torch.set_num_threads(2)
        multiprocess.set_start_method("fork", force=True)
        with pytest.raises(RuntimeError, match="set_start_method\\('spawn'\\)"):
            dit_scorer.apply(subset, num_proc=2)
        multiprocess.set_start_method("spawn", force=True)
        sharded = dit_scorer.apply(subset, num_proc=2, batch_size=3)
    finally:
        torch.set_num_threads(threads)
        multiprocess.set_start_method(method, force=True)
    np.testing.assert_allclose(_scores(sharded), reference, rtol=0, atol=ATOL)


# ------------------------------------------------------------------ the score means something


def test_trained_scorer_ranks_corrupted_and_mislabelled_images_harder(trained, digits):
    scorer = DifficultyScorer.from_pretrained(trained, batch_size=100)
    test = digits["test"].select(range(200))
    pixels, labels = _pixels_labels(test, 16)
    clean, _ = scorer.score_pixels(pixels, labels)

    rng = np.random.default_rng(0)
    flat = pixels.reshape(len(pixels), -1, 3)
    shuffled = np.stack([image[rng.permutation(len(image))] for image in flat]).reshape(pixels.shape)
    corrupted, _ = scorer.score_pixels(shuffled, labels)
    assert corrupted.mean() > 3 * clean.mean()
    assert (corrupted > clean).mean() > 0.95

    wrong_labels = (labels + rng.integers(1, 10, len(labels))) % 10
    mislabelled, _ = scorer.score_pixels(pixels, wrong_labels)
    assert mislabelled.mean() > clean.mean()
    assert (mislabelled > clean).mean() > 0.65


# ------------------------------------------------------------------ datasets plumbing


def test_fingerprint_tracks_what_changes_the_scores(local_hub, dit_scorer):
    same = DifficultyScorer.from_pretrained(local_hub.dit, batch_size=1, max_forward_batch=3)
    assert same.fingerprint == dit_scorer.fingerprint  # batching does not change the scores
    for changed in (
        DifficultyScorer.from_pretrained(local_hub.dit, seed=1),
        DifficultyScorer.from_pretrained(local_hub.dit, num_timesteps=5),
        DifficultyScorer.from_pretrained(local_hub.pixel_dit),
        DifficultyScorer.from_pretrained(local_hub.dit, return_per_timestep=True),
    ):
        assert changed.fingerprint != dit_scorer.fingerprint


def test_apply_on_disk_backed_dataset_hits_the_cache(dit_scorer, few, tmp_path, monkeypatch):
    few.save_to_disk(tmp_path / "ds")
    dataset = load_from_disk(tmp_path / "ds")
    first = dit_scorer.apply(dataset)
    assert first.cache_files[0]["filename"] != dataset.cache_files[0]["filename"]
    assert isinstance(first.features["image"], Image) and first.features["image"].decode  # restored

    def fail(*args, **kwargs):
        raise AssertionError("the cached result should have been loaded")

    monkeypatch.setattr(dit_scorer, "score_pixels", fail)
    second = dit_scorer.apply(load_from_disk(tmp_path / "ds"))
    assert second.cache_files == first.cache_files
    np.testing.assert_array_equal(_scores(second), _scores(first))


def test_per_timestep_column(local_hub, few):
    scorer = DifficultyScorer.from_pretrained(local_hub.dit, num_timesteps=6, return_per_timestep=True)
    out = scorer.apply(few.select(range(5)))
    feature = out.features["difficulty_per_timestep"]
    assert feature.length == 6 and feature.feature == Value("float32")
    per_t = np.asarray(out.with_format("numpy")["difficulty_per_timestep"])
    assert per_t.shape == (5, 6)
    np.testing.assert_allclose(per_t.mean(1), _scores(out), rtol=1e-6)


def test_iterable_dataset_gives_the_same_scores(dit_scorer, few):
    reference = _scores(dit_scorer.apply(few))
    streamed = dit_scorer.apply(few.to_iterable_dataset(num_shards=3), batch_size=5)
    assert streamed.features["difficulty"] == Value("float32")
    np.testing.assert_allclose([row["difficulty"] for row in streamed], reference, rtol=0, atol=ATOL)


def test_small_images_are_upsampled_with_one_warning(local_hub, few, caplog):
    small = Dataset.from_dict(
        {"image": [image.resize((16, 16)) for image in few.select(range(6))["image"]], "label": [1] * 6},
        features=Features({"image": Image(), "label": Value("int64")}),
    )
    scorer = DifficultyScorer.from_pretrained(local_hub.pixel_dit, batch_size=2)
    with caplog.at_level(logging.WARNING, logger="d2c_hf.selection.scorer"):
        out = scorer.apply(small)
    warnings = [r.getMessage() for r in caplog.records if "upsampled" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("6 of 6 images")
    assert np.all(_scores(out) > 0)


# ------------------------------------------------------------------ bad input


def test_bad_input_fails_before_any_forward_pass(local_hub, few, monkeypatch):
    scorer = DifficultyScorer.from_pretrained(local_hub.pixel_dit)

    def fail(*args, **kwargs):
        raise AssertionError("scored before the input was checked")

    monkeypatch.setattr(scorer, "score_pixels", fail)
    image_only = Features({"image": Image(), "label": Value("int64")})
    cases = [
        (few.remove_columns("label"), ValueError, "label_column='label' is not a column"),
        (few.rename_column("image", "img"), ValueError, "image_column='image' is not a column"),
        (few.cast_column("label", Value("float32")), TypeError, "expected ClassLabel"),
        (few.select([]), ValueError, "empty"),
        (
            Dataset.from_dict({"image": few["image"][:3], "label": [0, 10, 1]}, features=image_only),
            ValueError,
            "label 10 at row 1 but the scorer knows only 10 classes",
        ),
        (
            Dataset.from_dict({"image": few["image"][:3], "label": [0, 1, -1]}, features=image_only),
            ValueError,
            "negative label -1 at row 2",
        ),
        (
            Dataset.from_dict({"image": [few["image"][0], None], "label": [0, 1]}, features=image_only),
            ValueError,
            "missing image .None. at row 1",
        ),
        (
            few.cast_column("label", ClassLabel(names=[str(i) for i in range(12)])),
            ValueError,
            "has 12 classes .* the scorer knows only 10",
        ),
        (few.add_column("difficulty", [0.0] * len(few)), ValueError, "already has a 'difficulty' column"),
    ]
    for dataset, error, message in cases:
        with pytest.raises(error, match=message):
            scorer.apply(dataset)
    with pytest.raises(TypeError, match="Dataset or IterableDataset"):
        scorer.apply({"image": [], "label": []})


def test_undecodable_image_names_its_row(local_hub, few):
    pixels, _ = _pixels_labels(few.select(range(3)), 32)
    cells = [{"bytes": _png_bytes(p), "path": None} for p in pixels]
    cells.insert(2, {"bytes": b"definitely not an image", "path": None})
    dataset = Dataset.from_dict(
        {"image": cells, "label": [0, 1, 2, 3]},
        features=Features({"image": Image(), "label": Value("int64")}),
    )
    with pytest.raises(ValueError, match="could not decode the image at row 2"):
        DifficultyScorer.from_pretrained(local_hub.pixel_dit, batch_size=2).apply(dataset)


def test_bad_arguments(local_hub, dit_scorer):
    for kwargs, message in (
        ({"num_timesteps": 0}, "num_timesteps must be a positive integer"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"max_forward_batch": 0}, "max_forward_batch must be a positive integer"),
        ({"seed": -1}, "seed must be an integer"),
        ({"prediction_type": "v"}, "prediction_type must be one of"),
    ):
        with pytest.raises(ValueError, match=message):
            DifficultyScorer.from_pretrained(local_hub.dit, **kwargs)
    pixels = np.zeros((2, 32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="label 10 at row 1"):
        dit_scorer.score_pixels(pixels, [0, 10])
    with pytest.raises(ValueError, match=r"\(B, 32, 32, 3\) uint8"):
        dit_scorer.score_pixels(np.zeros((2, 16, 16, 3), np.uint8), [0, 1])
    with pytest.raises(TypeError, match="apply\\(\\) sets 'features'"):
        dit_scorer.apply(Dataset.from_dict({"x": [1]}), features=None)


# ------------------------------------------------------------------ train_scorer


def test_train_scorer_is_deterministic_local_and_atomic(digits_small, tmp_path, monkeypatch):
    data = digits_small.select(range(48))
    kwargs = dict(resolution=16, num_steps=3, batch_size=8, model_kwargs={"num_layers": 1})
    state = torch.get_rng_state()
    first = train_scorer(data, tmp_path / "a", **kwargs)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is neither seeded nor advanced
    torch.manual_seed(123)  # a different global state must not matter
    second = train_scorer(data, tmp_path / "b", **kwargs)
    third = train_scorer(data, tmp_path / "c", seed=1, **kwargs)
    weights = [
        DiTTransformer2DModel.from_pretrained(path, subfolder="transformer").state_dict()
        for path in (first, second, third)
    ]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])

    with pytest.raises(FileExistsError, match="not an empty folder"):
        train_scorer(data, first, **kwargs)

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(DDPMScheduler, "save_pretrained", broken_save)
    with pytest.raises(OSError, match="disk full"):
        train_scorer(data, tmp_path / "d", **kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]  # nothing half-written


def test_train_scorer_bad_input(digits_small, tmp_path):
    with pytest.raises(ValueError, match="num_steps must be a positive integer"):
        train_scorer(digits_small, tmp_path / "x", num_steps=0)
    with pytest.raises(ValueError, match="model_kwargs must not set"):
        train_scorer(digits_small, tmp_path / "x", model_kwargs={"in_channels": 4})
    with pytest.raises(ValueError, match="label_column='y' is not a column"):
        train_scorer(digits_small, tmp_path / "x", label_column="y")
    with pytest.raises(TypeError, match="needs a datasets.Dataset"):
        train_scorer(digits_small.to_iterable_dataset(), tmp_path / "x")
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------ what can be a scorer


def _tiny_unet(num_class_embeds):
    from diffusers import UNet2DModel

    torch.manual_seed(0)  # test-side seeding: a fixed tiny model
    return UNet2DModel(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=8,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        num_class_embeds=num_class_embeds,
    )


def test_a_class_conditional_unet_scores_like_a_ddpm_model(few, tmp_path):
    """UNet2DModel(num_class_embeds=...) is a class-conditional epsilon model: scored, from a folder too."""
    unet = _tiny_unet(10).eval()
    folder = tmp_path / "unet"
    unet.save_pretrained(folder)
    scorer = DifficultyScorer.from_pretrained(folder, batch_size=8, num_timesteps=3)
    assert scorer.prediction_type == "epsilon" and scorer.num_classes == 10
    pixels, labels = _pixels_labels(few.select(range(4)), 32)
    got, _ = scorer.score_pixels(pixels, labels)
    # by hand: DDPM noising with DiT's linear betas, eps target, the key's noise
    x0 = pixels_to_tensor(pixels)
    noise = sample_noise(pixel_keys(pixels), 0, 3, x0.shape[1:])
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0).float()
    steps = timestep_grid(3, "epsilon")
    expected = torch.zeros(4)
    with torch.no_grad():
        for i, t in enumerate(steps.tolist()):
            a = abar[t]
            x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise[:, i]
            eps = unet(x_t, torch.full((4,), t), class_labels=torch.as_tensor(labels)).sample
            expected += (eps - noise[:, i]).square().mean(dim=(1, 2, 3)) / 3
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-6)


def test_what_cannot_be_a_scorer_is_named_with_the_fix(local_hub, tmp_path):
    with pytest.raises(ValueError, match="is not class-conditional.*num_class_embeds"):
        DifficultyScorer(_tiny_unet(None))
    with pytest.raises(
        ValueError, match="AutoencoderKL, an autoencoder, not a diffusion denoiser: pass it as vae="
    ):
        DifficultyScorer.from_pretrained(local_hub.vae)
    scheduler = DDPMScheduler(prediction_type="sample")
    folder = tmp_path / "x0"
    _tiny_unet(10).save_pretrained(folder / "transformer")
    scheduler.save_pretrained(folder / "scheduler")
    with pytest.raises(ValueError, match="prediction_type='sample'"):
        DifficultyScorer.from_pretrained(folder)


def test_a_v_prediction_model_is_scored_against_the_velocity(few, tmp_path):
    """A scheduler declaring v_prediction makes the target v = sqrt(abar) eps - sqrt(1 - abar) x (by hand)."""
    unet = _tiny_unet(10).eval()
    folder = tmp_path / "v"
    unet.save_pretrained(folder / "transformer")
    DDPMScheduler(prediction_type="v_prediction").save_pretrained(folder / "scheduler")
    scorer = DifficultyScorer.from_pretrained(folder, num_timesteps=2)
    assert scorer.prediction_type == "v_prediction" and scorer.config["noising"]["target"] == "v"
    pixels, labels = _pixels_labels(few.select(range(3)), 32)
    got, _ = scorer.score_pixels(pixels, labels)
    x0 = pixels_to_tensor(pixels)
    noise = sample_noise(pixel_keys(pixels), 0, 2, x0.shape[1:])
    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0).float()
    expected = torch.zeros(3)
    with torch.no_grad():
        for i, t in enumerate([250, 750]):
            a = abar[t]
            x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise[:, i]
            v = a.sqrt() * noise[:, i] - (1 - a).sqrt() * x0
            out = unet(x_t, torch.full((3,), t), class_labels=torch.as_tensor(labels)).sample
            expected += (out - v).square().mean(dim=(1, 2, 3)) / 2
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.int8, torch.float64, "int8", "float64"])
def test_unsupported_dtypes_are_refused_not_run_in_float32(local_hub, dtype):
    with pytest.raises(ValueError, match="not supported|dtype must be one of"):
        DifficultyScorer.from_pretrained(local_hub.dit, dtype=dtype)
