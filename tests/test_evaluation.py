"""Tests for d2c_hf.evaluation: known-answer metrics, image input, extractors, ADM npz, evaluate module."""

from __future__ import annotations

import logging
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from d2c_hf.evaluation import (
    CallableFeatureExtractor,
    DigitsFeatureExtractor,
    FIDInceptionV3,
    InceptionV3FeatureExtractor,
    UnreliableEstimateWarning,
    evaluate_samples,
    feature_statistics,
    fid_from_features,
    frechet_distance,
    inception_score,
    kid,
    load_fid_metric,
    load_reference_npz,
    mmd2_unbiased,
    precision_recall,
    save_npz,
    to_uint8_images,
)
from d2c_hf.evaluation.inception import resize_bilinear_tf1, tf1_bilinear_matrix
from d2c_hf.utils.images import pixels_to_tensor, tensor_to_pixels
from helpers_inception import random_inception_state_dict

METHODS = ("eigh", "sqrtm")


def _rotation(d: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q


# --------------------------------------------------------------------------------------
# Fréchet distance
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_fd_of_identical_sets_is_zero(method):
    x = np.random.default_rng(0).normal(size=(400, 12)) @ np.random.default_rng(1).normal(size=(12, 12))
    assert fid_from_features(x, x.copy(), method=method) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_fd_shifted_means_is_squared_mean_distance(method):
    q = _rotation(6, 0)
    sigma = q @ np.diag([3.0, 2.0, 1.0, 0.5, 0.1, 0.01]) @ q.T  # shared non-diagonal covariance
    mu1, mu2 = np.zeros(6), np.array([1.0, -2.0, 0.5, 0.0, 3.0, 1.0])
    assert frechet_distance(mu1, sigma, mu2, sigma, method=method) == pytest.approx(np.sum((mu1 - mu2) ** 2))


@pytest.mark.parametrize("method", METHODS)
def test_fd_diagonal_covariances_closed_form(method):
    s1, s2 = np.array([4.0, 1.0, 0.25, 9.0]), np.array([1.0, 1.0, 1.0, 0.01])
    expected = np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    assert frechet_distance(
        np.zeros(4), np.diag(s1), np.zeros(4), np.diag(s2), method=method
    ) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_fd_non_diagonal_near_singular_commuting(method):
    # same eigenbasis (non-diagonal), several eigenvalues ~0: FD = sum (sqrt l1 - sqrt l2)^2
    q = _rotation(8, 3)
    l1 = np.array([5.0, 2.0, 1.0, 1e-3, 1e-10, 0.0, 0.0, 0.0])
    l2 = np.array([1.0, 2.0, 4.0, 1e-12, 0.0, 0.0, 1e-9, 0.0])
    sigma1, sigma2 = q @ np.diag(l1) @ q.T, q @ np.diag(l2) @ q.T
    expected = np.sum((np.sqrt(l1) - np.sqrt(l2)) ** 2)
    value = frechet_distance(np.zeros(8), sigma1, np.zeros(8), sigma2, method=method)
    assert value == pytest.approx(expected, abs=1e-6)  # sqrt of round-off: ~d * sqrt(eps * ||sigma||)


@pytest.mark.parametrize("method", METHODS)
def test_fd_non_commuting_2x2_matches_closed_form(method):
    # for 2x2, tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)) when M = S1 S2 has non-negative eigenvalues
    rot = _rotation(2, 7)
    sigma1 = np.array([[2.0, 1.999], [1.999, 2.0]])  # near-singular, correlated
    sigma2 = rot @ np.diag([3.0, 0.05]) @ rot.T
    m = sigma1 @ sigma2
    tr_sqrt = np.sqrt(np.trace(m) + 2.0 * np.sqrt(np.linalg.det(m)))
    expected = np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_sqrt + 0.5**2
    value = frechet_distance(np.zeros(2), sigma1, np.array([0.5, 0.0]), sigma2, method=method)
    assert value == pytest.approx(expected, rel=1e-8)


def test_fd_sqrtm_fallbacks(monkeypatch):
    from scipy import linalg

    real_sqrtm = linalg.sqrtm
    calls = []

    def flaky_sqrtm(a):  # first call "fails" like a singular product: non-finite result
        calls.append(a.copy())
        return np.full_like(a, np.nan) if len(calls) == 1 else real_sqrtm(a)

    monkeypatch.setattr(linalg, "sqrtm", flaky_sqrtm)
    s1, s2 = np.diag([4.0, 1.0, 0.0]), np.diag([1.0, 1.0, 0.0])
    value = frechet_distance(np.zeros(3), s1, np.zeros(3), s2, method="sqrtm", eps=1e-6)
    np.testing.assert_allclose(calls[1], (s1 + 1e-6 * np.eye(3)) @ (s2 + 1e-6 * np.eye(3)))  # eps offset
    assert value == pytest.approx(1.0, abs=1e-5)

    monkeypatch.setattr(linalg, "sqrtm", lambda a: real_sqrtm(a) + 0.1j * np.eye(len(a)))
    with pytest.raises(ValueError, match="significant imaginary component"):
        frechet_distance(np.zeros(3), s1, np.zeros(3), s2, method="sqrtm")
    monkeypatch.setattr(linalg, "sqrtm", lambda a: real_sqrtm(a) + 1e-9j)
    assert frechet_distance(np.zeros(3), s1, np.zeros(3), s2, method="sqrtm") == pytest.approx(1.0)


def test_fd_methods_agree_on_random_statistics():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 20)), rng.normal(size=(300, 20)) @ rng.normal(size=(20, 20)) * 0.3 + 0.2
    assert fid_from_features(a, b, method="eigh") == pytest.approx(
        fid_from_features(a, b, method="sqrtm"), rel=1e-8
    )


def test_fid_from_features_recovers_gaussian_distance():
    rng = np.random.default_rng(0)
    q = _rotation(3, 1)
    cov_b = q @ np.diag([4.0, 1.0, 0.25]) @ q.T
    a = rng.normal(size=(20000, 3))
    b = rng.multivariate_normal([1.0, 0.0, -1.0], cov_b, size=20000)
    expected = 2.0 + 3.0 + np.trace(cov_b) - 2.0 * np.sum(np.sqrt([4.0, 1.0, 0.25]))
    assert fid_from_features(a, b) == pytest.approx(expected, abs=0.05)


def test_feature_statistics_matches_numpy_and_warns_when_undersampled():
    x = np.random.default_rng(0).normal(size=(50, 4))
    mu, sigma = feature_statistics(x)
    np.testing.assert_allclose(mu, x.mean(0))
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False))
    few = np.random.default_rng(1).normal(size=(10, 30))
    with pytest.warns(UnreliableEstimateWarning, match="10 samples in 30 dimensions"):
        _, singular = feature_statistics(few)
    assert np.linalg.matrix_rank(singular) == 9
    _, shrunk = feature_statistics(few, shrinkage="ledoit-wolf")
    assert np.linalg.matrix_rank(shrunk) == 30
    _, identity = feature_statistics(few, shrinkage=1.0)
    np.testing.assert_allclose(identity, np.eye(30) * np.trace(singular) / 30)
    with pytest.raises(ValueError, match="shrinkage"):
        feature_statistics(few, shrinkage="oas")


def test_metrics_reject_bad_feature_sets():
    x = np.zeros((5, 3))
    x[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"feats_a has a non-finite value \(nan\) at row 3, column 1"):
        fid_from_features(x, np.ones((5, 3)))
    with pytest.raises(ValueError, match="feats_a has 3 feature dimensions but feats_b has 4"):
        kid(np.ones((5, 3)), np.ones((5, 4)))
    with pytest.raises(ValueError, match="fake is empty"):
        precision_recall(np.ones((5, 3)), np.ones((0, 3)))
    with pytest.raises(ValueError, match="2-D"):
        fid_from_features(np.ones(3), np.ones((5, 3)))
    with pytest.raises(ValueError, match="not positive semi-definite"):
        frechet_distance(np.zeros(2), -np.eye(2), np.zeros(2), np.eye(2))


# --------------------------------------------------------------------------------------
# KID
# --------------------------------------------------------------------------------------


def _mmd2_brute_force(x, y, degree=3, coef0=1.0):
    gamma = 1.0 / x.shape[1]
    k = lambda a, b: (gamma * float(a @ b) + coef0) ** degree  # noqa: E731
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_unbiased_estimator_matches_brute_force():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(7, 3)) + 0.3
    assert mmd2_unbiased(x, y) == pytest.approx(_mmd2_brute_force(x, y), rel=1e-12)
    # one subset of all rows = a permutation of each set: the same value
    result = kid(x[:6], y[:6], num_subsets=1, subset_size=6)
    assert result.mean == pytest.approx(_mmd2_brute_force(x[:6], y[:6]), rel=1e-12)
    assert result.std == 0.0


def test_kid_near_zero_for_same_distribution_and_positive_for_shifted():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(600, 16)), rng.normal(size=(600, 16))
    same = kid(a, b, num_subsets=20, subset_size=200, seed=1)
    shifted = kid(a, b + 0.5, num_subsets=20, subset_size=200, seed=1)
    assert abs(same.mean) < 0.05 * shifted.mean
    assert shifted.mean > 10 * shifted.std
    assert kid(a, b, num_subsets=3, subset_size=50, seed=5) == kid(
        a, b, num_subsets=3, subset_size=50, seed=5
    )


def test_kid_caps_subset_size_with_warning():
    x = np.random.default_rng(0).normal(size=(30, 4))
    with pytest.warns(UnreliableEstimateWarning, match="subset_size=1000 exceeds the smaller feature set"):
        result = kid(x, x + 1, num_subsets=2)
    assert result.mean == pytest.approx(_mmd2_brute_force(x, x + 1), rel=1e-10)


# --------------------------------------------------------------------------------------
# precision / recall
# --------------------------------------------------------------------------------------


def test_precision_recall_self_and_disjoint():
    x = np.random.default_rng(0).normal(size=(200, 8))
    assert precision_recall(x, x) == (1.0, 1.0)
    assert precision_recall(x, x + 1000.0) == (0.0, 0.0)


@pytest.mark.parametrize("chunk_size", [1, 3, 1000])
def test_precision_recall_known_answer(chunk_size):
    real = np.arange(10, dtype=float)[:, None]  # k=1: every real ball has radius 1
    fake = np.array([[0.5], [100.0], [9.9]])  # 0.5 and 9.9 are inside; 100 is not
    # fake balls (k=1): 0.5 -> 9.4 (to 9.9), 100 -> 90.1, 9.9 -> 9.4: together they cover 0..9
    pr = precision_recall(real, fake, k=1, chunk_size=chunk_size)
    assert pr.precision == pytest.approx(2 / 3)
    assert pr.recall == 1.0
    small_fake = np.array([[0.0], [0.5]])  # balls of radius 0.5 around 0 and 0.5 cover the reals 0 and 1
    assert precision_recall(real, small_fake, k=1, chunk_size=chunk_size).recall == pytest.approx(2 / 10)
    with pytest.raises(ValueError, match="k=3 nearest neighbours need at least 4"):
        precision_recall(real, fake, k=3)


# --------------------------------------------------------------------------------------
# Inception Score
# --------------------------------------------------------------------------------------


def test_inception_score_bounds():
    uniform = np.full((100, 10), 0.1)
    assert inception_score(uniform).mean == pytest.approx(1.0)
    one_hot = np.eye(10)[np.arange(100) % 10]  # each split of 10 holds every class once
    result = inception_score(one_hot, splits=10)
    assert result.mean == pytest.approx(10.0) and result.std == pytest.approx(0.0, abs=1e-12)
    logits = np.where(one_hot > 0, 50.0, 0.0)  # confident logits -> ~K
    assert inception_score(logits, splits=5).mean == pytest.approx(10.0, rel=1e-6)
    assert inception_score(np.zeros((20, 7)), splits=2).mean == pytest.approx(1.0)  # equal logits = uniform
    with pytest.raises(ValueError, match="splits"):
        inception_score(uniform, splits=101)


# --------------------------------------------------------------------------------------
# image input
# --------------------------------------------------------------------------------------


def test_to_uint8_images_accepts_common_formats():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(3, 5, 6, 3), dtype=np.uint8)
    np.testing.assert_array_equal(to_uint8_images(pixels), pixels)
    np.testing.assert_array_equal(to_uint8_images([PILImage.fromarray(p) for p in pixels]), pixels)
    tensor = pixels_to_tensor(pixels)  # (B, 3, H, W) in [-1, 1]
    np.testing.assert_array_equal(to_uint8_images(tensor), tensor_to_pixels(tensor))
    np.testing.assert_array_equal(to_uint8_images(tensor.add(1).div(2)), pixels)  # [0, 1] floats
    grey = to_uint8_images(pixels[..., :1])
    assert grey.shape == (3, 5, 6, 3) and (grey == pixels[..., :1]).all()
    resized = to_uint8_images([PILImage.fromarray(pixels[0]), PILImage.new("L", (9, 9))], size=8)
    assert resized.shape == (2, 8, 8, 3)


def test_to_uint8_images_errors():
    images = [PILImage.new("RGB", (8, 8)), PILImage.new("RGB", (8, 8)), PILImage.new("RGB", (8, 9))]
    with pytest.raises(ValueError, match=r"images\[2\] is 9x8 \(HxW\) but images\[0\] is 8x8; pass size="):
        to_uint8_images(images)
    with pytest.raises(ValueError, match="found 4 .*RGBA"):
        to_uint8_images(np.zeros((2, 8, 8, 4), np.uint8))
    with pytest.raises(ValueError, match="image 1 has values in"):
        to_uint8_images(torch.tensor([0.0, 2.0]).view(2, 1, 1, 1).expand(2, 3, 4, 4))
    with pytest.raises(ValueError, match="empty"):
        to_uint8_images([])
    with pytest.raises(ValueError, match="ambiguous"):
        to_uint8_images(np.zeros((2, 8, 8), np.uint8))


# --------------------------------------------------------------------------------------
# extractors
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_extractor(digits):
    return DigitsFeatureExtractor.from_dataset(digits["train"])


def test_digits_classifier_and_feature_space(digits, digits_extractor):
    test = digits["test"]
    labels = np.asarray(test["label"])
    assert digits_extractor.class_accuracy(test["image"], labels) > 0.9
    train_feats = digits_extractor(digits["train"]["image"])
    test_feats = digits_extractor(test["image"])
    assert test_feats.shape == (len(test), 64)
    noise = np.random.default_rng(0).integers(0, 256, size=(len(test), 32, 32, 3), dtype=np.uint8)
    fd_test = fid_from_features(test_feats, train_feats)
    fd_noise = fid_from_features(digits_extractor(noise), train_feats)
    assert fd_test < 0.05 * fd_noise


def test_digits_extractor_save_load_and_determinism(digits_small, digits_extractor, tmp_path):
    images = digits_small.select(range(20))["image"]
    path = digits_extractor.save(tmp_path / "digits.safetensors")
    loaded = DigitsFeatureExtractor.load(path)
    np.testing.assert_array_equal(loaded(images), digits_extractor(images))
    np.testing.assert_array_equal(loaded.predict(images), digits_extractor.predict(images))
    labels = np.asarray(digits_small["label"])
    a = DigitsFeatureExtractor(hidden_size=8, max_iter=30).fit(digits_small["image"], labels)
    b = DigitsFeatureExtractor(hidden_size=8, max_iter=30).fit(digits_small["image"], labels)
    np.testing.assert_array_equal(a(images), b(images))
    with pytest.raises(RuntimeError, match="not fitted"):
        DigitsFeatureExtractor()(images)


def test_callable_extractor_batches_and_checks_output():
    calls = []

    def mean_colour(batch):
        calls.append(len(batch))
        return batch.reshape(len(batch), -1, 3).mean(axis=1)

    pixels = np.random.default_rng(0).integers(0, 256, size=(5, 4, 4, 3), dtype=np.uint8)
    feats = CallableFeatureExtractor(mean_colour, batch_size=2)(pixels)
    np.testing.assert_allclose(feats, pixels.reshape(5, -1, 3).mean(axis=1))
    assert calls == [2, 2, 1]
    as_tensor = CallableFeatureExtractor(lambda x: x.mean(dim=(2, 3)), input_format="tensor")(pixels)
    np.testing.assert_allclose(as_tensor, pixels.mean(axis=(1, 2)) / 127.5 - 1, atol=1e-5)
    with pytest.raises(ValueError, match="returned 1 rows for a batch of 5 images"):
        CallableFeatureExtractor(lambda x: np.zeros((1, 3)))(pixels)


# --------------------------------------------------------------------------------------
# Inception-v3
# --------------------------------------------------------------------------------------

# Spot checks of the public weight files' layout (torchvision Inception3 names, 1008-way fc).
PUBLIC_SHAPES = {
    "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
    "Conv2d_4a_3x3.bn.running_var": (192,),
    "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
    "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
    "Mixed_6e.branch7x7_2.conv.weight": (192, 192, 1, 7),
    "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
    "Mixed_7c.branch3x3dbl_1.conv.weight": (448, 2048, 1, 1),
    "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1),
    "fc.weight": (1008, 2048),
    "fc.bias": (1008,),
}


@pytest.fixture
def single_thread():
    """One intra-op thread: a 299x299 Inception pass is small, and on a busy 2-core machine two
    OpenMP threads spend most of their time waiting for each other (measured: 2.5x slower)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("inception") / "weights-inception-2015-12-05-6726825d.pth"
    torch.save(random_inception_state_dict(), path)
    return path


def test_inception_state_dict_layout_matches_public_weights():
    state = FIDInceptionV3().state_dict()
    keys = [k for k in state if not k.endswith("num_batches_tracked")]
    assert len(keys) == 472  # 94 conv+bn units x 5 tensors + fc weight and bias
    assert sum(state[k].numel() for k in keys if not k.split(".")[-1].startswith("running")) == 23_850_960
    for key, shape in PUBLIC_SHAPES.items():
        assert tuple(state[key].shape) == shape, key


def test_inception_loads_strictly_and_extracts(inception_weights, tmp_path, caplog, single_thread):
    with caplog.at_level(logging.WARNING, logger="d2c_hf.evaluation.inception"):
        extractor = InceptionV3FeatureExtractor.from_pretrained(inception_weights, device="cpu", batch_size=1)
    assert "the file name says sha256 6726825d" in caplog.text  # random weights: the hash differs
    loaded = extractor.model.state_dict()
    reference = torch.load(inception_weights, weights_only=True)
    assert all(torch.equal(loaded[k], v) for k, v in reference.items())
    images = np.random.default_rng(0).integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8)
    out = extractor.extract(images, ("pool", "spatial", "logits_unbiased", "logits"))
    assert out["pool"].shape == (2, 2048) and out["pool"].dtype == np.float32
    assert out["spatial"].shape == (2, 17 * 17 * 7) and out["logits"].shape == (2, 1008)
    np.testing.assert_allclose(
        out["logits_unbiased"], out["pool"] @ reference["fc.weight"].numpy().T, rtol=1e-4, atol=1e-4
    )
    with torch.no_grad():  # one batch of 2 vs two batches of 1: batching does not matter
        direct = extractor.model(torch.from_numpy(images).permute(0, 3, 1, 2).float())["pool"].numpy()
    np.testing.assert_allclose(out["pool"], direct, rtol=1e-5, atol=1e-6)
    # float [-1, 1] tensors map back to the same pixels, hence the same features
    np.testing.assert_allclose(extractor(pixels_to_tensor(images[:1])), direct[:1], rtol=1e-5, atol=1e-6)

    # a file without fc: features but no logits; safetensors works too
    from safetensors.torch import save_file

    no_fc = tmp_path / "no_fc.safetensors"
    save_file(random_inception_state_dict(with_fc=False), str(no_fc))
    headless = InceptionV3FeatureExtractor.from_pretrained(no_fc, device="cpu")
    assert headless(images[:1]).shape == (1, 2048)
    with pytest.raises(ValueError, match="no fc layer"):
        headless.logits(images[:1])


def test_inception_rejects_wrong_layouts(tmp_path):
    state = random_inception_state_dict()
    missing = dict(state)
    del missing["Mixed_6d.branch1x1.conv.weight"]
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(ValueError, match=r"1 missing keys \(first: \['Mixed_6d.branch1x1.conv.weight'\]\)"):
        InceptionV3FeatureExtractor.from_pretrained(tmp_path / "missing.pth")
    renamed = {f"blocks.{k}": v for k, v in state.items()}
    torch.save(renamed, tmp_path / "renamed.pth")
    with pytest.raises(ValueError, match="unexpected keys"):
        InceptionV3FeatureExtractor.from_pretrained(tmp_path / "renamed.pth")
    wrong = dict(state, **{"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 5, 5)})
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(
        ValueError, match=r"Conv2d_1a_3x3.conv.weight is \(32, 3, 5, 5\), expected \(32, 3, 3, 3\)"
    ):
        InceptionV3FeatureExtractor.from_pretrained(tmp_path / "wrong.pth")
    with pytest.raises(FileNotFoundError, match="Nothing is downloaded"):
        InceptionV3FeatureExtractor.from_pretrained(tmp_path / "absent.pth")


def test_tf1_bilinear_resize_and_fid_specific_pooling():
    # TF1 legacy sampling: out[i] = in at i * in/out, upper neighbour clamped at the border
    np.testing.assert_allclose(
        tf1_bilinear_matrix(2, 4).numpy(), [[1, 0], [0.5, 0.5], [0, 1], [0, 1]]
    )  # PyTorch's half-pixel bilinear would give [1, .75, .25, 0]-style weights
    x = torch.rand(1, 3, 299, 299, dtype=torch.float64)
    torch.testing.assert_close(resize_bilinear_tf1(x, (299, 299)), x)
    ramp = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 1, 2, 4)
    torch.testing.assert_close(
        resize_bilinear_tf1(ramp, (2, 8))[0, 0, 0], torch.tensor([0, 0.5, 1, 1.5, 2, 2.5, 3, 3])
    )

    from d2c_hf.evaluation.inception import _avg_pool_3x3

    ones = torch.ones(1, 1, 5, 5)
    torch.testing.assert_close(_avg_pool_3x3(ones), ones)  # padding excluded: corners stay 1, not 4/9
    model = FIDInceptionV3(num_classes=None)
    assert model.Mixed_7b.pool == "avg" and model.Mixed_7c.pool == "max"


# --------------------------------------------------------------------------------------
# ADM npz
# --------------------------------------------------------------------------------------


def test_npz_round_trip_in_adm_layout(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, size=(4, 6, 6, 3), dtype=np.uint8)
    path = save_npz(tmp_path / "samples", pixels_to_tensor(pixels), labels=[0, 1, 2, 3])
    assert path.name == "samples.npz"
    with np.load(path) as data:  # what guided-diffusion's evaluator reads
        assert sorted(data.files) == ["arr_0", "arr_1"]
        assert data["arr_0"].dtype == np.uint8 and data["arr_0"].shape == (4, 6, 6, 3)
        np.testing.assert_array_equal(data["arr_0"], pixels)
    batch = load_reference_npz(path)
    np.testing.assert_array_equal(batch.images, pixels)
    assert batch.labels.tolist() == [0, 1, 2, 3] and batch.statistics is None
    header_only = load_reference_npz(path, load_images=False)
    assert header_only.images is None and header_only.num_images == 4

    x = np.random.default_rng(1).normal(size=(50, 3))
    mu, sigma = feature_statistics(x)
    np.savez(tmp_path / "ref.npz", arr_0=pixels, mu=mu, sigma=sigma, mu_s=mu[:2], sigma_s=sigma[:2, :2])
    ref = load_reference_npz(tmp_path / "ref.npz")
    assert frechet_distance(*ref.statistics, mu, sigma) == pytest.approx(0.0, abs=1e-12)
    assert ref.mu_s.shape == (2,)
    np.savez(tmp_path / "stats_only.npz", mu=mu, sigma=sigma)
    assert load_reference_npz(tmp_path / "stats_only.npz").images is None


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        (
            {"images": np.zeros((2, 4, 4, 3), np.uint8)},
            r"not in the ADM evaluator layout .* found keys \['images'\]",
        ),
        ({"arr_0": np.zeros((2, 4, 4, 3), np.float32)}, "arr_0 has dtype float32, expected uint8"),
        ({"arr_0": np.zeros((2, 3, 4, 4), np.uint8)}, r"expected \(N, H, W, 3\) \(channel-first"),
        ({"mu": np.zeros(3)}, "has 'mu' or 'sigma' but not both"),
        ({"mu": np.zeros(3), "sigma": np.zeros((2, 2))}, r"expected \(d,\) and \(d, d\)"),
        ({"arr_0": np.zeros((2, 4, 4, 3), np.uint8), "arr_1": np.zeros(3, np.int64)}, "arr_1 .* expected"),
    ],
)
def test_load_reference_npz_layout_errors(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=message):
        load_reference_npz(tmp_path / "bad.npz")


def test_load_reference_npz_rejects_non_npz(tmp_path):
    np.save(tmp_path / "plain.npy", np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="not an .npz archive"):
        load_reference_npz(tmp_path / "plain.npy")
    assert not zipfile.is_zipfile(tmp_path / "plain.npy")


# --------------------------------------------------------------------------------------
# evaluate module and the suite
# --------------------------------------------------------------------------------------


def test_evaluate_metric_module_loads_offline_and_matches_library(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    metric = load_fid_metric(keep_in_memory=True)
    rng = np.random.default_rng(0)
    fake, real = rng.normal(size=(60, 5)), rng.normal(size=(60, 5)) * 1.5 + 0.3
    result = metric.compute(predictions=fake, references=real)
    assert set(result) == {"frechet_distance"}
    assert result["frechet_distance"] == pytest.approx(fid_from_features(fake, real), rel=1e-12)
    for start in range(0, 60, 20):  # streaming with add_batch gives the same value
        metric.add_batch(predictions=fake[start : start + 20], references=real[start : start + 20])
    assert metric.compute()["frechet_distance"] == pytest.approx(result["frechet_distance"], rel=1e-12)


def test_evaluate_samples_on_digits(digits, digits_extractor):
    test = digits["test"]
    real = to_uint8_images(digits["train"]["image"])
    labels = np.asarray(test["label"])
    good = evaluate_samples(
        test["image"],
        real,
        digits_extractor,
        classifier=digits_extractor,
        requested_labels=labels,
        kid_num_subsets=10,
    )
    assert set(good) == {
        "fd",
        "kid_mean",
        "kid_std",
        "precision",
        "recall",
        "class_accuracy",
        "num_fake",
        "num_real",
    }
    assert good["class_accuracy"] > 0.9 and good["precision"] > 0.8 and good["recall"] > 0.8
    assert good["num_fake"] == len(test) and good["num_real"] == len(real)
    shuffled = evaluate_samples(
        test["image"],
        None,
        digits_extractor,
        real_features=digits_extractor(real),
        classifier=digits_extractor,
        requested_labels=np.roll(labels, 1),
        kid_num_subsets=10,
    )
    assert shuffled["fd"] == pytest.approx(good["fd"]) and shuffled["class_accuracy"] < 0.3
    noise = np.random.default_rng(0).integers(0, 256, size=(100, 32, 32, 3), dtype=np.uint8)
    bad = evaluate_samples(noise, real, digits_extractor, kid_num_subsets=10)
    assert bad["fd"] > 20 * good["fd"] and bad["kid_mean"] > 20 * good["kid_mean"] and bad["precision"] < 0.1
    with pytest.raises(ValueError, match="requested_labels"):
        evaluate_samples(noise, real, digits_extractor, classifier=digits_extractor)
    # a plain callable works as an extractor (uint8 batches in)
    plain = evaluate_samples(
        noise, real, lambda x: x.reshape(len(x), 32, 32, 3)[:, ::4, ::4, 0].reshape(len(x), -1)
    )
    assert plain["fd"] > 0
