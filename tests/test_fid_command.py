"""`d2c fid` and d2c_hf.evaluation.fid: streamed sources, known answers, reference statistics, bad input."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from d2c_hf.cli import fid_main
from d2c_hf.cli import main as cli_main
from d2c_hf.evaluation import (
    InceptionV3FeatureExtractor,
    compute_metrics,
    feature_statistics,
    frechet_distance,
    inception_score,
    open_images,
    open_reference,
    precision_recall,
    save_npz,
)
from helpers_inception import random_inception_state_dict

pytestmark = pytest.mark.filterwarnings("ignore::d2c_hf.evaluation.UnreliableEstimateWarning")


class PixelExtractor:
    """A cheap stand-in with the Inception extractor's interface: deterministic functions of the pixels."""

    model = SimpleNamespace(has_logits=True)

    def __init__(self):
        self.calls = []

    def extract(self, images, outputs):
        self.calls.append(len(images))
        x = images.astype(np.float64) / 255.0
        pool = (
            x.reshape(len(x), 4, x.shape[1] // 4, 4, x.shape[2] // 4, 3).mean(axis=(2, 4)).reshape(len(x), -1)
        )
        out = {
            "pool": pool.astype(np.float32),
            "spatial": x[:, ::4, ::4, 0].reshape(len(x), -1).astype(np.float32),
            "logits_unbiased": (pool[:, :10] * 20.0).astype(np.float32),
        }
        return {name: out[name] for name in outputs}


def _images(n: int, seed: int, size: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def _folder(path, images) -> None:
    path.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(path / f"{i:04d}.png")


def test_streamed_sources_give_the_in_memory_metrics(tmp_path):
    fake, real = _images(23, 0), _images(17, 1) // 2
    save_npz(tmp_path / "fake.npz", fake)
    _folder(tmp_path / "real", real)
    extractor = PixelExtractor()
    result, computed = compute_metrics(
        open_images(tmp_path / "fake.npz"), open_reference(tmp_path / "real"), extractor,
        batch_size=5, is_split_size=10, progress=False,
    )  # fmt: skip
    assert set(extractor.calls) <= {5, 3, 2} and sum(extractor.calls) == 23 + 17  # batched, each image once
    f, r = (
        extractor.extract(fake, ("pool", "spatial", "logits_unbiased")),
        extractor.extract(real, ("pool", "spatial")),
    )
    expected_fid = frechet_distance(*feature_statistics(f["pool"]), *feature_statistics(r["pool"]))
    expected_sfid = frechet_distance(*feature_statistics(f["spatial"]), *feature_statistics(r["spatial"]))
    assert result["fid"] == pytest.approx(expected_fid, rel=1e-9) and result["fid"] > 1.0
    assert result["sfid"] == pytest.approx(expected_sfid, rel=1e-9)
    pr = precision_recall(r["pool"], f["pool"])
    assert (result["precision"], result["recall"]) == (pr.precision, pr.recall)
    # ADM's IS: consecutive parts of is_split_size (10, 10, 3), not 3 equal parts
    parts = [inception_score(f["logits_unbiased"][i : i + 10], splits=1).mean for i in (0, 10, 20)]
    assert result["inception_score"] == pytest.approx(np.mean(parts), rel=1e-9)
    assert result["inception_score"] != pytest.approx(inception_score(f["logits_unbiased"], splits=3).mean)
    assert (result["num_samples"], result["num_reference_images"]) == (23, 17)
    np.testing.assert_allclose(computed["mu"], r["pool"].astype(np.float64).mean(0), rtol=1e-6)


def test_reference_statistics_file_is_used_and_limits_the_metrics(tmp_path):
    fake, real = _images(12, 0), _images(12, 1)
    save_npz(tmp_path / "fake.npz", fake)
    extractor = PixelExtractor()
    r = extractor.extract(real, ("pool", "spatial"))
    mu, sigma = feature_statistics(r["pool"])
    np.savez(tmp_path / "stats.npz", mu=mu, sigma=sigma)  # FID statistics only: no sFID, no images for P/R
    extractor.calls.clear()
    result, computed = compute_metrics(
        open_images(tmp_path / "fake.npz"), open_reference(tmp_path / "stats.npz"), extractor, progress=False
    )
    assert set(result) >= {"fid", "inception_score"} and "sfid" not in result and "precision" not in result
    assert result["reference_statistics_from"]["fid"] == "file" and computed == {}
    assert sum(extractor.calls) == 12  # the reference images were never needed
    expected = frechet_distance(*feature_statistics(extractor.extract(fake, ("pool",))["pool"]), mu, sigma)
    assert result["fid"] == pytest.approx(expected, rel=1e-9)
    with pytest.raises(ValueError, match="pr: precision/recall need reference images"):
        compute_metrics(open_images(tmp_path / "fake.npz"), open_reference(tmp_path / "stats.npz"), extractor,
                        metrics=("fid", "pr"), progress=False)  # fmt: skip


def test_d2c_fid_command_with_inception(tmp_path, capsys):
    """The command end to end with (random) FID Inception weights and a folder reference: IS and
    precision/recall equal the in-memory computation, and the saved reference statistics are those of
    the reference features. (FID/sFID themselves are one Fréchet distance of 2048-d statistics each,
    ~10-20 s apiece on 2 cores: their plumbing is tested above with a cheap extractor.)"""
    weights = tmp_path / "weights.pth"
    torch.save(random_inception_state_dict(seed=1), weights)
    fake, real = _images(5, 0, size=32), _images(5, 1, size=40)
    save_npz(tmp_path / "samples.npz", fake)
    _folder(tmp_path / "real", real)
    stats = tmp_path / "ref_stats.npz"
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = cli_main([
            "fid", str(tmp_path / "samples.npz"), str(tmp_path / "real"), "--inception_weights", str(weights),
            "--metrics", "is", "pr", "--batch_size", "3", "--num_workers", "0", "--no_progress", "--device", "cpu",
            "--is_split_size", "5", "--save_reference_stats", str(stats), "--output", str(tmp_path / "fid.json"),
        ])  # fmt: skip
        inception = InceptionV3FeatureExtractor.from_pretrained(weights, device="cpu")
        f = inception.extract(fake, ("pool", "logits_unbiased"))
        r = inception.extract(real, ("pool",))
    finally:
        torch.set_num_threads(previous)
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result == json.loads((tmp_path / "fid.json").read_text())
    assert result["inception_score"] == pytest.approx(inception_score(f["logits_unbiased"], splits=1).mean)
    pr = precision_recall(r["pool"], f["pool"])
    assert (result["precision"], result["recall"]) == pytest.approx((pr.precision, pr.recall))
    assert result["inception"]["sha256"] and result["samples"]["num_images"] == 5
    assert result["reference"]["kind"] == "folder" and result["num_reference_images"] == 5
    saved = np.load(stats)
    assert sorted(saved.files) == ["mu", "sigma"]  # sFID was not requested: no spatial statistics
    np.testing.assert_allclose(saved["mu"], r["pool"].astype(np.float64).mean(0), rtol=1e-5, atol=1e-4)


def test_d2c_fid_bad_input_fails_before_any_network(tmp_path, monkeypatch):
    save_npz(tmp_path / "samples.npz", _images(4, 0))
    monkeypatch.delenv("D2C_INCEPTION_WEIGHTS", raising=False)
    with pytest.raises(ValueError, match="pass --inception_weights FILE"):
        fid_main([str(tmp_path / "samples.npz"), str(tmp_path / "samples.npz")])
    with pytest.raises(FileNotFoundError, match="Nothing is downloaded"):
        fid_main([str(tmp_path / "samples.npz"), str(tmp_path / "samples.npz"),
                  "--inception_weights", str(tmp_path / "absent.pth")])  # fmt: skip
    np.savez(tmp_path / "stats.npz", mu=np.zeros(3), sigma=np.eye(3))
    with pytest.raises(ValueError, match="sfid: the reference has neither mu_s/sigma_s nor images"):
        fid_main([str(tmp_path / "samples.npz"), str(tmp_path / "stats.npz"), "--metrics", "sfid",
                  "--inception_weights", str(tmp_path / "absent.pth")])  # fmt: skip
    np.savez(tmp_path / "chw.npz", arr_0=np.zeros((2, 3, 8, 8), np.uint8))
    with pytest.raises(ValueError, match=r"arr_0 is uint8 \(2, 3, 8, 8\); expected \(N, H, W, 3\)"):
        open_images(tmp_path / "chw.npz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no image files"):
        open_images(tmp_path / "empty")
    _folder(tmp_path / "mixed", [_images(1, 0, 16)[0], _images(1, 1, 16)[0], _images(1, 2, 12)[0]])
    source = open_images(tmp_path / "mixed")
    with pytest.raises(ValueError, match=r"0002.png is 12x12 \(HxW\) but .*0000.png is 16x16.*--resolution"):
        list(source.batches(2))
    cropped = open_images(tmp_path / "mixed", resolution=8)
    assert [b.shape for b in cropped.batches(2)] == [(2, 8, 8, 3), (1, 8, 8, 3)]
