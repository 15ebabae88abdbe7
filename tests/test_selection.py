"""Tests for d2c_hf.selection.strategies: known answers for every strategy, determinism, the datasets
filter, and the error messages for bad input."""

from __future__ import annotations

import doctest
import json
import logging
import pickle
import re
import time
from pathlib import Path

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, List, Value
from datasets.fingerprint import Hasher

from d2c_hf.selection import strategies as selection
from d2c_hf.selection.strategies import (
    STRATEGIES,
    Selector,
    auto_interval,
    herding_order,
    images_per_class_from_ratio,
    k_center_greedy_order,
    moderate_order,
    paper_interval,
    select,
    select_indices,
)

DOCS = Path(__file__).resolve().parents[1] / "docs" / "selection.md"


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def ranks_of(scores: np.ndarray, labels: np.ndarray, c: int) -> np.ndarray:
    """Positions of class c sorted by (score, index): rank r is element r (written out
    with Python's sort, independently of the library's NumPy code)."""
    members = [i for i in range(len(labels)) if labels[i] == c]
    return np.array(sorted(members, key=lambda i: (scores[i], i)))


def blobs(seed: int = 0, n_per_blob: int = 200) -> np.ndarray:
    """One class made of three anisotropic 2-D Gaussian blobs: (3 n_per_blob, 2) float64."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [6.0, 1.0], [2.0, 5.0]])
    return np.concatenate([rng.normal(c, [1.0, 0.5], (n_per_blob, 2)) for c in centres])


def mean_error_curve(x: np.ndarray, order: np.ndarray) -> np.ndarray:
    """||mean of the first t picks - class mean|| for t = 1..len(order)."""
    mu = x.mean(axis=0)
    running = np.cumsum(x[order], axis=0) / np.arange(1, len(order) + 1)[:, None]
    return np.linalg.norm(running - mu, axis=1)


def herding_argmax(x: np.ndarray, m: int) -> np.ndarray:
    """DeepCore's herding, with its bug: argmax of the distance (the farthest point)."""
    mu, running = x.mean(axis=0), np.zeros(x.shape[1])
    available, out = np.ones(len(x), dtype=bool), []
    for t in range(1, m + 1):
        dist = np.linalg.norm(t * mu - running - x, axis=1)
        dist[~available] = -np.inf
        p = int(np.argmax(dist))
        out.append(p)
        available[p] = False
        running += x[p]
    return np.array(out)


def herding_criterion(x: np.ndarray, order: np.ndarray) -> bool:
    """The running mean converges like O(1/t): t * error(t) stays below the class's radius."""
    err = mean_error_curve(x, order)
    radius = np.linalg.norm(x - x.mean(axis=0), axis=1).max()
    return bool((err * np.arange(1, len(order) + 1)).max() <= radius)


def covering_radius(x: np.ndarray, subset: np.ndarray) -> float:
    d = np.linalg.norm(x[:, None, :] - x[subset][None, :, :], axis=2)
    return float(d.min(axis=1).max())


# the hand-computed interval example: 19 rows, 3 classes interleaved
HAND_LABELS = np.array([0, 1, 0, 2, 0, 1, 0, 0, 1, 2, 0, 1, 0, 1, 0, 1, 0, 1, 0])
HAND_SCORES = np.zeros(19)
HAND_SCORES[[0, 2, 4, 6, 7, 10, 12, 14, 16, 18]] = [0.5, 0.1, 0.5, 0.3, 0.1, 0.9, 0.5, 0.2, 0.7, 0.5]
HAND_SCORES[[1, 5, 8, 11, 13, 15, 17]] = [0.4, 0.4, 0.8, 0.05, 0.6, 0.4, 0.3]
HAND_SCORES[[3, 9]] = [0.2, 0.1]


# --------------------------------------------------------------------------------------
# interval
# --------------------------------------------------------------------------------------


def test_interval_hand_computed_with_ties_and_shortfall():
    # class 0 (n=10) by (score, index): 2, 7, 14, 6, 0, 4, 12, 18, 16, 10 -> ranks 0, 4, 8 = 2, 0, 16
    #   (rank 4 is the first of four rows tied at 0.5: the lowest index, row 0)
    # class 1 (n=7): 11, 17, 1, 5, 15, 13, 8; (3-1)*4+1 = 9 > 7 -> stride floor(6/2) = 3 -> 11, 5, 8
    # class 2 (n=2 < m=3): the whole class, 3 and 9
    result = select(HAND_SCORES, HAND_LABELS, images_per_class=3, interval=4)
    np.testing.assert_array_equal(result.indices, [0, 2, 3, 5, 8, 9, 11, 16])
    np.testing.assert_array_equal(result.strides, [4, 3, 1])
    np.testing.assert_array_equal(result.counts, [3, 3, 2])
    np.testing.assert_array_equal(result.class_sizes, [10, 7, 2])
    np.testing.assert_array_equal(result.shortfall, [1, 2])
    assert result.indices.dtype == np.int64 and result.total == 8
    assert result.params["interval"] == 4 and result.params["interval_requested"] == 4


def test_interval_equals_reference_ranks_on_random_data():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 6, 500)
    scores = rng.integers(0, 20, 500).astype(np.float32)  # many ties
    m, k = 7, 9
    result = select(scores, labels, images_per_class=m, interval=k)
    expected = []
    for c in range(6):
        ranked = ranks_of(scores, labels, c)
        stride = k if (m - 1) * k + 1 <= len(ranked) else (len(ranked) - 1) // (m - 1)
        expected.extend(ranked[: (m - 1) * stride + 1 : stride][:m])
        assert result.strides[c] == stride
    np.testing.assert_array_equal(result.indices, np.sort(expected))


def test_interval_auto_stride():
    # the paper's setting: m = 10 on 1300-image classes -> k = 96
    labels = np.repeat(np.arange(3), 1300)
    scores = np.random.default_rng(0).random(labels.size)
    result = select(scores, labels, images_per_class=10)
    assert result.params["interval"] == 96 and result.params["interval_requested"] == "auto"
    np.testing.assert_array_equal(result.strides, [96, 96, 96])
    np.testing.assert_array_equal(result.indices[:10], np.sort(ranks_of(scores, labels, 0)[::96][:10]))
    assert [auto_interval(m, 1300) for m in (10, 50, 100)] == [96, 17, 8]
    assert auto_interval(1, 1300) == 1
    # the reference size is the median class size
    labels = np.repeat(np.arange(3), [100, 1300, 1300])
    result = select(np.zeros(labels.size), labels, images_per_class=10)
    assert result.params["interval"] == 96 and result.params["auto_reference_class_size"] == 1300.0
    assert result.strides[0] == 11 and list(result.shortfall) == [0]  # floor(99 / 9)


def test_interval_paper_proportion():
    """interval="paper": k * m / n held at the paper's 96 * 10 / 1281.167, rounded half up."""
    assert paper_interval(10, 1281.167) == 96  # the paper's own setting, exactly
    # 960000 * 1300 / (1281167 * m): 97.41 -> 97, 19.48 -> 19, 9.74 -> 10
    assert [paper_interval(m, 1300) for m in (10, 50, 100)] == [97, 19, 10]
    assert paper_interval(1, 1300) == 1 and paper_interval(2, 1) == 1
    # digits-sized classes: 0.7493 * 144 / m for m = 2, 14, 29: 53.95 -> 54, 7.71 -> 8, 3.72 -> 4
    assert [paper_interval(m, 144) for m in (2, 14, 29)] == [54, 8, 4]
    # where "auto" and "paper" differ most: two picks, "auto" spans two thirds, "paper" 37 %
    assert auto_interval(2, 144) == 95
    # rounding half up, where the proportion lands on .5 exactly: 960000 / m for n = 1281167
    assert paper_interval(640000, 1281167) == 2 and paper_interval(384000, 1281167) == 3  # 1.5, 2.5
    labels = np.repeat(np.arange(3), [100, 144, 150])  # median 144
    scores = np.random.default_rng(5).random(labels.size)
    result = select(scores, labels, images_per_class=2, interval="paper")
    assert result.params["interval"] == 54 and result.params["interval_requested"] == "paper"
    assert result.params["auto_reference_class_size"] == 144.0
    np.testing.assert_array_equal(result.strides, [54, 54, 54])
    expected = [ranks_of(scores, labels, c)[[0, 54]] for c in range(3)]
    np.testing.assert_array_equal(result.indices, np.sort(np.concatenate(expected)))
    auto = select(scores, labels, images_per_class=2, interval="auto")
    assert auto.params["interval"] == 95 and auto.strides.tolist() == [95, 95, 95]
    # a class too small for the stride shrinks it as for any stride: 10 rows, m = 4 -> floor(9 / 3) = 3
    labels = np.repeat(np.arange(3), [10, 300, 300])
    result = select(np.arange(labels.size, dtype=float), labels, images_per_class=4, interval="paper")
    assert result.params["interval"] == 56  # 0.7493 * 300 / 4 = 56.2
    assert result.strides.tolist() == [3, 56, 56] and result.shortfall.tolist() == [0]


def test_interval_one_per_class_is_the_easiest():
    result = select(HAND_SCORES, HAND_LABELS, images_per_class=1, interval=50)
    np.testing.assert_array_equal(result.indices, [2, 9, 11])  # rank 0 of each class
    assert result.shortfall.size == 0


# --------------------------------------------------------------------------------------
# rank windows
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "kwargs", "first"),
    [
        ("min", {}, 0),
        ("max", {}, 9),
        ("medium", {}, 5),  # round(0.5 * 9) = 4.5 -> 5 (half up)
        ("window", {"position": 0.25}, 2),  # round(2.25) = 2
        ("window", {"position": 0.3}, 3),  # round(2.7) = 3
        ("window", {"position": 0.0}, 0),
        ("window", {"position": 1.0}, 9),
    ],
)
def test_rank_windows(strategy, kwargs, first):
    rng = np.random.default_rng(3)
    labels = np.repeat([0, 1], [12, 4])[rng.permutation(16)]
    scores = rng.permutation(16).astype(np.float64)
    result = select(scores, labels, images_per_class=3, strategy=strategy, **kwargs)
    expected = list(ranks_of(scores, labels, 0)[first : first + 3])
    start1 = {"min": 0, "max": 1, "medium": 1}.get(strategy, int(np.floor(kwargs.get("position", 0) + 0.5)))
    expected += list(ranks_of(scores, labels, 1)[start1 : start1 + 3])  # n=4: gap 1
    np.testing.assert_array_equal(result.indices, np.sort(expected))
    assert result.strides is None and result.shortfall.size == 0


def test_min_is_interval_with_stride_one():
    rng = np.random.default_rng(4)
    labels, scores = rng.integers(0, 5, 300), rng.random(300)
    np.testing.assert_array_equal(
        select_indices(scores, labels, images_per_class=8, strategy="min"),
        select_indices(scores, labels, images_per_class=8, interval=1),
    )


def test_small_class_is_kept_whole_by_every_strategy():
    rng = np.random.default_rng(5)
    labels = np.repeat([0, 1], [30, 2])
    scores, feats = rng.random(32), rng.normal(size=(32, 3))
    for name in STRATEGIES:
        kwargs = {"position": 0.5} if name == "window" else {}
        result = select(scores, labels, images_per_class=5, strategy=name, features=feats, **kwargs)
        np.testing.assert_array_equal(result.counts, [5, 2], err_msg=name)
        assert {30, 31} <= set(result.indices.tolist()), name
        assert 1 in result.shortfall, name


# --------------------------------------------------------------------------------------
# herding, k-center, moderate
# --------------------------------------------------------------------------------------


def test_herding_running_mean_approaches_class_mean_and_beats_random_and_argmax():
    x = blobs()
    t = 40
    ours = herding_order(x, t)
    buggy = herding_argmax(x, t)
    randoms = [np.random.default_rng(s).permutation(len(x))[:t] for s in range(20)]
    err_ours = mean_error_curve(x, ours).mean()
    err_random = np.mean([mean_error_curve(x, r).mean() for r in randoms])
    err_buggy = mean_error_curve(x, buggy).mean()
    assert err_ours < 0.25 * err_random
    assert err_ours < err_buggy
    # O(1/t) convergence: holds for herding, fails for the argmax version and for random picks
    assert herding_criterion(x, ours)
    assert not herding_criterion(x, buggy)
    assert not any(herding_criterion(x, r) for r in randoms)
    # select() runs the same greedy per class (normalize=False keeps the 2-D geometry)
    labels = np.repeat([1, 0], [len(x), 50])
    both = np.concatenate([x, np.random.default_rng(9).normal(size=(50, 2))])
    got = select(None, labels, images_per_class=t, strategy="herding", features=both, normalize=False)
    np.testing.assert_array_equal(got.indices[got.indices < len(x)], np.sort(ours))


def test_herding_is_prefix_consistent():
    x = blobs(1, 50)
    np.testing.assert_array_equal(herding_order(x, 10), herding_order(x, 25)[:10])


def test_k_center_farthest_point_and_covering_radius():
    x = blobs(2, 100)
    order = k_center_greedy_order(x, 12, first=7)
    assert order[0] == 7 and len(set(order.tolist())) == 12
    for t in range(1, 12):  # each pick is the farthest point from the picks before it
        dist = np.linalg.norm(x[:, None] - x[order[:t]][None], axis=2).min(axis=1)
        assert dist[order[t]] == pytest.approx(dist.max())
    # through select(): the seeded initial centre counts in the budget; radius beats random
    labels = np.zeros(len(x), dtype=np.int64)
    random_radii = [
        covering_radius(x, np.random.default_rng(s).choice(len(x), 12, replace=False)) for s in range(30)
    ]
    for seed in range(5):
        picked = select_indices(
            None, labels, images_per_class=12, strategy="kcenter", features=x, seed=seed, normalize=False
        )
        assert picked.size == 12
        radius = covering_radius(x, picked)
        assert radius < np.mean(random_radii)
        assert radius <= 2 * min(random_radii)  # greedy k-center is a 2-approximation


def test_k_center_with_duplicates_stays_unique():
    x = np.zeros((6, 2))
    x[3] = 1.0
    np.testing.assert_array_equal(k_center_greedy_order(x, 4, first=0), [0, 3, 1, 2])


def test_moderate_picks_the_median_distance():
    # points +-r on the x axis (r = 1..5) and the origin: coordinate-wise median = origin,
    # distances 0,1,1,...,5,5 with median 3.
    x = np.array([[0.0, 0.0]] + [[s * r, 0.0] for r in range(1, 6) for s in (1, -1)])
    np.testing.assert_array_equal(moderate_order(x, 2), [5, 6])  # r = 3
    # next: |r - 3| = 1 for r = 2 (rows 3, 4) and r = 4 (rows 7, 8): ties go to lower rows
    np.testing.assert_array_equal(moderate_order(x, 4), [5, 6, 3, 4])
    labels = np.zeros(len(x), dtype=np.int64)
    got = select_indices(None, labels, images_per_class=2, strategy="moderate", features=x, normalize=False)
    np.testing.assert_array_equal(got, [5, 6])
    # skewed: x = 0..5 and an outlier at 100 -> median 3 (the mean, 16.4, would be far off),
    # distances 3,2,1,0,1,2,97 with median 2: rows 1 and 5 (|r - 2| = 0), then rows 0, 2, 4
    x = np.array([[v, 0.0] for v in (0, 1, 2, 3, 4, 5, 100)])
    np.testing.assert_array_equal(moderate_order(x, 3), [1, 5, 0])


def test_feature_normalisation_option():
    # two directions, very different norms: normalised, the norm no longer matters
    x = np.array([[1.0, 0.0], [100.0, 0.0], [0.0, 1.0], [0.0, 2.0], [0.7, 0.7]])
    labels = np.zeros(5, dtype=np.int64)
    raw = select(None, labels, images_per_class=2, strategy="kcenter", features=x, normalize=False, seed=3)
    unit = select(None, labels, images_per_class=2, strategy="kcenter", features=x, seed=3)
    assert unit.params["kwargs"] == {"normalize": True}
    assert 1 in raw.indices  # the far point wins in raw Euclidean geometry
    assert not np.array_equal(raw.indices, unit.indices)


# --------------------------------------------------------------------------------------
# CCS
# --------------------------------------------------------------------------------------


def test_ccs_gives_every_class_its_own_budget():
    rng = np.random.default_rng(6)
    sizes = [200, 60, 8]  # the small class last: CCS's reference code would give every class 8
    labels = rng.permutation(np.repeat(np.arange(3), sizes))
    scores = rng.random(labels.size)
    result = select(scores, labels, images_per_class=10, strategy="ccs")
    np.testing.assert_array_equal(result.counts, [10, 10, 8])
    np.testing.assert_array_equal(np.bincount(labels[result.indices]), [10, 10, 8])
    np.testing.assert_array_equal(result.shortfall, [2])


def test_ccs_cutoff_strata_and_allocation():
    # one class: 3 easy rows in [0, 1), 60 in [9, 10), and 7 very hard rows that the 10 % cutoff removes
    rng = np.random.default_rng(7)
    scores = np.concatenate([rng.uniform(0, 1, 3), rng.uniform(9, 10, 60), rng.uniform(100, 101, 7)])
    labels = np.zeros(scores.size, dtype=np.int64)
    for seed in range(5):
        got = select_indices(scores, labels, images_per_class=10, strategy="ccs", num_strata=2, seed=seed)
        # 2 strata over [min, max] of the kept rows: 3 and 60 rows; allocation min(3, 10 // 2) = 3, then 7
        assert got.size == 10
        assert np.count_nonzero(got < 3) == 3
        assert np.count_nonzero((got >= 3) & (got < 63)) == 7
        assert not np.any(got >= 63)  # the hardest floor(0.1 * 70) = 7 rows are never chosen
    # with more strata the leftover of the small strata flows to the larger ones
    got = select(scores, labels, images_per_class=10, strategy="ccs", num_strata=50, cutoff=0.0)
    assert got.total == 10 and np.count_nonzero(got.indices >= 63) >= 1  # hard rows reachable without cutoff
    assert got.params["kwargs"] == {"cutoff": 0.0, "num_strata": 50}


def test_ccs_relaxes_the_cutoff_for_a_class_that_needs_its_rows():
    labels = np.zeros(10, dtype=np.int64)
    result = select(np.arange(10.0), labels, images_per_class=10, strategy="ccs")
    np.testing.assert_array_equal(result.indices, np.arange(10))
    np.testing.assert_array_equal(result.shortfall, [0])


def test_ccs_samples_uniformly_within_strata():
    labels = np.zeros(100, dtype=np.int64)
    scores = np.zeros(100)  # one stratum: CCS reduces to uniform sampling
    hits = np.zeros(100)
    for seed in range(400):
        hits[select_indices(scores, labels, images_per_class=10, strategy="ccs", cutoff=0.0, seed=seed)] += 1
    assert hits.sum() == 4000 and 20 < hits.min() and hits.max() < 65  # mean 40 per row


# --------------------------------------------------------------------------------------
# determinism and per-class independence
# --------------------------------------------------------------------------------------

ALL_CONFIGS = [
    ("interval", {"interval": 5}),
    ("random", {}),
    ("min", {}),
    ("max", {}),
    ("medium", {}),
    ("window", {"position": 0.3}),
    ("ccs", {"num_strata": 5}),
    ("herding", {}),
    ("kcenter", {}),
    ("moderate", {}),
    ("stratified", {}),
    ("kmeans", {}),
    ("alignment", {}),
]


@pytest.fixture(scope="module")
def mixed():
    rng = np.random.default_rng(8)
    labels = rng.permutation(np.repeat(np.arange(4), [70, 45, 90, 12]))
    scores = rng.integers(0, 30, labels.size).astype(np.float64)
    features = rng.normal(size=(labels.size, 5))
    return scores, labels, features


def test_registry_covers_the_configs():
    assert sorted(name for name, _ in ALL_CONFIGS) == sorted(STRATEGIES)
    for s in STRATEGIES.values():
        assert s.cost and s.summary and s.run.__doc__
        assert s.needs_scores != s.needs_features or s.name == "random"
    assert STRATEGIES["window"].required_options == ("position",)
    with pytest.raises(TypeError):
        STRATEGIES["mine"] = STRATEGIES["min"]  # read-only


@pytest.mark.parametrize(("strategy", "kwargs"), ALL_CONFIGS)
def test_deterministic_and_independent_of_other_classes(mixed, strategy, kwargs):
    scores, labels, features = mixed
    run = lambda s, y, f, **extra: select(  # noqa: E731
        s, y, images_per_class=10, strategy=strategy, features=f, num_classes=4, **kwargs, **extra
    )
    full = run(scores, labels, features, seed=11)
    np.testing.assert_array_equal(full.indices, run(scores, labels, features, seed=11).indices)
    np.testing.assert_array_equal(full.counts, [10, 10, 10, 10])
    for c in range(4):
        rows = np.flatnonzero(labels == c)  # keep only class c; its label stays c
        alone = run(scores[rows], labels[rows], features[rows], seed=11)
        mine = full.indices[labels[full.indices] == c]
        np.testing.assert_array_equal(rows[alone.indices], mine, err_msg=f"class {c}")
        assert alone.counts[c] == 10 and alone.counts.sum() == 10
    if STRATEGIES[strategy].uses_seed:
        assert not np.array_equal(full.indices, run(scores, labels, features, seed=12).indices)


def test_random_ignores_scores_and_reads_no_global_rng():
    # the legacy global RNG is used here on purpose: the library must neither read nor advance it
    saved = np.random.get_state()  # noqa: NPY002
    try:
        labels = np.repeat(np.arange(3), 40)
        np.random.seed(0)  # noqa: NPY002
        a = select_indices(None, labels, images_per_class=5, strategy="random", seed=3)
        np.random.seed(1)  # noqa: NPY002
        b = select_indices(np.arange(120.0), labels, images_per_class=5, strategy="random", seed=3)
        np.testing.assert_array_equal(a, b)
        state = np.random.get_state()[1].copy()  # noqa: NPY002
        select(None, labels, images_per_class=5, strategy="kcenter", features=np.ones((120, 2)))
        np.testing.assert_array_equal(state, np.random.get_state()[1])  # noqa: NPY002
    finally:
        np.random.set_state(saved)  # noqa: NPY002


# --------------------------------------------------------------------------------------
# budgets, result, logging
# --------------------------------------------------------------------------------------


def test_images_per_class_from_ratio():
    assert images_per_class_from_ratio(0.008, 1_281_167, 1000) == 10
    assert images_per_class_from_ratio(0.04, 1_281_167, 1000) == 51
    assert images_per_class_from_ratio(0.08, 1_281_167, 1000) == 102
    assert images_per_class_from_ratio(1e-6, 100, 10) == 1
    assert images_per_class_from_ratio(0.25, 100, 10) == 3  # 2.5 rounds half up
    labels = np.repeat(np.arange(4), 25)
    result = select(np.arange(100.0), labels, ratio=0.2, interval=1)
    assert result.images_per_class == 5 and result.total == 20 and result.params["ratio"] == 0.2


def test_ratio_is_a_fraction_of_the_rows_whatever_the_empty_classes():
    """2 of 10 label-space classes hold rows: ratio=0.5 keeps half the rows, not a tenth."""
    labels = np.repeat([3, 7], 50)
    result = select(np.arange(100.0), labels, ratio=0.5, num_classes=10, interval=1)
    assert result.images_per_class == 25 and result.total == 50
    assert result.realised_ratio == 0.5 and result.to_dict()["realised_ratio"] == 0.5
    assert "(50.00%)" in result.summary()


def test_result_to_dict_is_json_and_summary_is_logged(caplog):
    labels = np.repeat(np.arange(3), [20, 5, 1])
    with caplog.at_level(logging.INFO, logger="d2c_hf.selection.strategies"):
        result = select(np.arange(26.0), labels, images_per_class=3, interval=10, num_classes=4)
    record = json.loads(json.dumps(result.to_dict(include_indices=True)))
    assert record["counts"] == [3, 3, 1, 0] and record["class_sizes"] == [20, 5, 1, 0]
    assert record["strides"] == [9, 2, 1, 0] and record["shortfall"] == [0, 1, 2, 3]
    assert record["total"] == 7 and record["indices"] == result.indices.tolist()
    assert record["params"]["interval"] == 10 and record["params"]["seed"] == 0
    assert "indices" not in result.to_dict()
    text = caplog.text
    assert (
        "kept 7 of 26 rows" in text and "2 classes stride shrunk" in text and "2 classes gave fewer" in text
    )
    assert "1 of 4 classes have no rows" in text


def test_imagenet_scale_is_fast():
    rng = np.random.default_rng(0)
    sizes = np.full(1000, 1300)
    sizes[0], sizes[1:101], sizes[101] = 732, 1118, 1235  # 1,281,167 rows
    labels = rng.permutation(np.repeat(np.arange(1000), sizes))
    scores = rng.random(labels.size, dtype=np.float32)
    start = time.perf_counter()
    result = select(scores, labels, ratio=0.008)
    elapsed = time.perf_counter() - start
    assert labels.size == 1_281_167 and result.images_per_class == 10 and result.params["interval"] == 96
    assert result.total == 10_000 and result.shortfall.tolist() == [0] and result.strides[0] == 81
    assert elapsed < 5.0, f"interval selection over 1.28M rows took {elapsed:.1f} s"


# --------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------

LABELS = np.array([0, 0, 1, 1, 2, 2])
SCORES = np.arange(6.0)
FEATS = np.ones((6, 2))


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        (
            {"scores": [0.0, np.nan, 1.0, np.inf, 2.0, np.nan]},
            ValueError,
            r"scores must be finite; 3 are NaN or inf, the first at index 1",
        ),
        (
            {"scores": SCORES[:5]},
            ValueError,
            r"scores and labels must have the same length, got 5 scores and 6 labels",
        ),
        ({"scores": SCORES.reshape(2, 3)}, ValueError, r"scores must be 1-D"),
        ({"scores": None}, ValueError, r"scores are required"),
        ({"scores": np.array(["a"] * 6)}, TypeError, r"scores must hold real numbers"),
        (
            {"strategy": "herding", "features": FEATS[:4]},
            ValueError,
            r"features and labels must have the same length, got 4 rows and 6",
        ),
        (
            {"strategy": "random", "features": FEATS[:4]},
            ValueError,
            r"features and labels must have the same length",
        ),
        ({"strategy": "herding"}, ValueError, r"strategy 'herding' needs features: pass features="),
        ({"strategy": "kcenter", "features": np.ones(6)}, ValueError, r"features must be 2-D"),
        (
            {"strategy": "moderate", "features": np.where(np.eye(6, 2) > 0, np.nan, 1.0)},
            ValueError,
            r"features must be finite; row 0",
        ),
        ({"ratio": 0.0, "images_per_class": None}, ValueError, r"ratio must lie in \(0, 1\]"),
        ({"ratio": 1.5, "images_per_class": None}, ValueError, r"ratio must lie in \(0, 1\]"),
        ({"ratio": 0.5}, ValueError, r"exactly one of images_per_class .* or ratio"),
        ({"images_per_class": None}, ValueError, r"exactly one of images_per_class .* or ratio"),
        ({"images_per_class": 0}, ValueError, r"images_per_class must be an integer >= 1, got 0"),
        ({"images_per_class": 2.5}, ValueError, r"images_per_class must be an integer >= 1"),
        (
            {"labels": [0, 0, -1, 1, 2, 2]},
            ValueError,
            r"labels must be >= 0; 1 are negative, the first is -1 at index 2",
        ),
        (
            {"num_classes": 2},
            ValueError,
            r"labels must lie in \[0, num_classes=2\); 2 do not, the first is 2 at index 4",
        ),
        ({"labels": LABELS.astype(float)}, TypeError, r"labels must hold integer class ids"),
        ({"labels": []}, ValueError, r"labels is empty"),
        (
            {"strategy": "best"},
            ValueError,
            r"unknown strategy 'best'; known strategies: interval, random, min, max, window, medium, ccs, herding, kcenter, moderate",
        ),
        ({"interval": 0}, ValueError, r'interval must be "auto", "paper" or an integer stride >= 1, got 0'),
        ({"interval": "wide"}, ValueError, r"interval must be"),
        ({"strategy": "window", "position": 1.5}, ValueError, r"position must lie in \[0, 1\]"),
        ({"strategy": "window"}, TypeError, r"strategy 'window' needs the option position="),
        (
            {"strategy": "min", "position": 0.5},
            TypeError,
            r"strategy 'min' got unexpected option\(s\) position; it accepts: none",
        ),
        ({"strategy": "ccs", "cutoff": 1.0}, ValueError, r"cutoff .* must lie in \[0, 1\)"),
        ({"strategy": "ccs", "num_strata": 0}, ValueError, r"num_strata must be a positive integer"),
        (
            {"strategy": "herding", "features": FEATS, "normalize": "yes"},
            TypeError,
            r"normalize must be True or False",
        ),
        ({"seed": -1}, ValueError, r"seed must be a non-negative integer"),
    ],
)
def test_bad_input_errors(kwargs, error, pattern):
    call = {"scores": SCORES, "labels": LABELS, "images_per_class": 1, **kwargs}
    with pytest.raises(error, match=pattern):
        select(call.pop("scores"), call.pop("labels"), **call)


def test_ratio_helper_errors():
    with pytest.raises(ValueError, match="ratio must lie"):
        images_per_class_from_ratio(-0.1, 10, 2)
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        images_per_class_from_ratio(0.1, 10, 0)


# --------------------------------------------------------------------------------------
# the datasets filter
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def table():
    rng = np.random.default_rng(10)
    n = 150
    features = Features(
        {
            "id": Value("int64"),
            "label": ClassLabel(names=["a", "b", "c", "d", "e"]),  # "e" has no rows
            "difficulty": Value("float32"),
            "emb": List(Value("float32"), length=3),
        }
    )
    data = {
        "id": np.arange(n),
        "label": rng.integers(0, 4, n),
        "difficulty": rng.integers(0, 40, n).astype(np.float32),
        "emb": rng.normal(size=(n, 3)).astype(np.float32),
    }
    return Dataset.from_dict(data, features=features).shuffle(seed=0)  # a view with an indices mapping


def columns_of(ds: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    numpy = ds.with_format("numpy")
    return numpy["difficulty"][:], numpy["label"][:], np.stack(numpy["emb"][:])


@pytest.mark.parametrize(
    ("strategy", "kwargs"),
    [
        ("interval", {"interval": 3}),
        ("random", {"seed": 4}),
        ("ccs", {"num_strata": 4}),
        ("herding", {"feature_column": "emb"}),
    ],
)
def test_selector_filter_equals_select(table, strategy, kwargs):
    scores, labels, emb = columns_of(table)
    selector = Selector(strategy, images_per_class=6, **kwargs).fit(table)
    options = {k: v for k, v in kwargs.items() if k != "feature_column"}
    expected = select(
        scores, labels, images_per_class=6, strategy=strategy, features=emb, num_classes=5, **options
    )
    np.testing.assert_array_equal(selector.result_.indices, expected.indices)
    np.testing.assert_array_equal(selector.result_.counts, [6, 6, 6, 6, 0])  # num_classes from ClassLabel
    filtered = table.filter(selector, with_indices=True, batched=True, batch_size=16)
    reference = table.select(expected.indices)
    assert filtered["id"][:] == reference["id"][:] and len(filtered) == 24
    assert selector.select(table)["id"][:] == reference["id"][:]


def test_selector_reads_variable_length_vectors_and_non_batched_calls(table):
    flat = table.cast_column("emb", List(Value("float32")))
    a = Selector("kcenter", images_per_class=4, feature_column="emb", seed=2).fit(flat)
    b = Selector("kcenter", images_per_class=4, feature_column="emb", seed=2).fit(table)
    np.testing.assert_array_equal(a.result_.indices, b.result_.indices)
    kept = table.filter(b, with_indices=True)
    assert kept["id"][:] == table.select(b.result_.indices)["id"][:]


def test_selector_pickles_and_hashes_by_its_selection(table):
    a = Selector(images_per_class=3, interval=2).fit(table)
    b = pickle.loads(pickle.dumps(a))
    assert (
        b.result_.indices.tolist() == a.result_.indices.tolist()
        and b._config.strategy is STRATEGIES["interval"]
    )
    assert b({"label": table["label"][:4]}, [0, 1, 2, 3]) == a({"label": table["label"][:4]}, [0, 1, 2, 3])
    # datasets fingerprints the filter function: a different selection must give a different hash
    other = Selector(images_per_class=4, interval=2).fit(table)
    assert Hasher.hash(a) == Hasher.hash(b) != Hasher.hash(other)


def test_selector_errors(table):
    selector = Selector(images_per_class=2, interval=2)
    with pytest.raises(RuntimeError, match=r"not fitted: call selector.fit\(dataset\)"):
        selector({"label": [0]}, [0])
    with pytest.raises(AttributeError, match="result_ is set by fit"):
        _ = selector.result_
    selector.fit(table)
    longer = Dataset.from_dict({"label": np.zeros(len(table) + 5, dtype=np.int64)})
    with pytest.raises(ValueError, match=r"outside the 150 rows this Selector was fitted on"):
        longer.filter(selector, with_indices=True, batched=True)
    with pytest.raises(ValueError, match="is not the fitted one"):
        table.shuffle(seed=1).filter(selector, with_indices=True, batched=True)
    with pytest.raises(ValueError, match="has 100 rows but this Selector was fitted on 150"):
        selector.select(table.select(range(100)))
    with pytest.raises(ValueError, match="not the fitted dataset"):
        selector.select(table.shuffle(seed=1))
    with pytest.raises(ValueError, match=r"column\(s\) \['score'\] not in the dataset"):
        Selector(images_per_class=2, score_column="score").fit(table)
    with pytest.raises(ValueError, match="pass feature_column="):
        Selector("herding", images_per_class=2)
    with pytest.raises(ValueError, match="unknown strategy"):
        Selector("best", images_per_class=2)
    with pytest.raises(TypeError, match=r"needs a map-style datasets.Dataset, got DatasetDict: pick a split"):
        Selector(images_per_class=2).fit(DatasetDict({"train": table}))
    bad = table.map(lambda b: {"difficulty": [float("nan")] * len(b["id"])}, batched=True)
    with pytest.raises(ValueError, match=r"scores must be finite.*score='difficulty'"):
        Selector(images_per_class=2).fit(bad)
    missing = Dataset.from_dict({"label": [0, None, 1], "difficulty": [0.0, 1.0, 2.0]})
    with pytest.raises(ValueError, match=r"column 'label' \(labels\) has a missing value at row 1"):
        Selector(images_per_class=1).fit(missing)


# --------------------------------------------------------------------------------------
# documentation
# --------------------------------------------------------------------------------------


def test_docstring_examples():
    failures, _ = doctest.testmod(selection)
    assert failures == 0


def test_docs_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)
    assert len(blocks) >= 3
    namespace: dict = {}
    for block in blocks:  # the blocks build on each other, like a notebook
        exec(compile(block, str(DOCS), "exec"), namespace)
