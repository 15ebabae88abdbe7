"""Tests for d2c_hf.selection.successors and its registry entries (stratified, kmeans, alignment):
known answers on constructed classes, determinism, the condense() paths and the option errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, Features, List, Value

from d2c_hf import condense, select
from d2c_hf.selection.strategies import STRATEGIES, Selector, herding_order, select_indices
from d2c_hf.selection.successors import (
    alignment_objective,
    alignment_order,
    kmeans_nearest_order,
    stratified_ranks,
)
from helpers_condensed import with_difficulty

NEW = ("stratified", "kmeans", "alignment")


def ranks_of(scores: np.ndarray, labels: np.ndarray, c: int) -> np.ndarray:
    """Positions of class c sorted by (score, index), written with Python's sort."""
    members = [i for i in range(len(labels)) if labels[i] == c]
    return np.array(sorted(members, key=lambda i: (scores[i], i)))


def blob_class(centres: np.ndarray, n_per_blob: int, seed: int, spread: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(c, spread, (n_per_blob, centres.shape[1])) for c in centres])


# --------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------


def test_registry_entries():
    s, k, a = (STRATEGIES[name] for name in NEW)
    assert (s.needs_scores, s.needs_features, s.uses_seed, dict(s.options)) == (True, False, False, {})
    assert (k.needs_scores, k.needs_features, k.uses_seed) == (False, True, True)
    assert dict(k.options) == {"normalize": True, "max_iter": 100}
    assert (a.needs_scores, a.needs_features, a.uses_seed) == (False, True, False)
    assert dict(a.options) == {"normalize": True, "std_weight": 1.0, "max_passes": 10}
    assert list(STRATEGIES)[-3:] == list(NEW)


# --------------------------------------------------------------------------------------
# stratified
# --------------------------------------------------------------------------------------


def test_stratified_ranks_known_answers():
    assert stratified_ranks(10, 2).tolist() == [2, 7]  # the middles of ranks 0-4 and 5-9
    assert stratified_ranks(10, 3).tolist() == [1, 5, 8]  # centres 1.67, 5, 8.33
    assert stratified_ranks(7, 1).tolist() == [3]  # the median rank
    assert stratified_ranks(100, 4).tolist() == [12, 37, 62, 87]
    assert stratified_ranks(5, 5).tolist() == [0, 1, 2, 3, 4]
    assert stratified_ranks(3, 8).tolist() == [0, 1, 2]
    assert stratified_ranks(0, 3).tolist() == [] and stratified_ranks(4, 0).tolist() == []


def test_stratified_ranks_hit_every_stratum_centre():
    for n, m in ((size, m) for size in range(1, 60) for m in range(1, size + 1)):
        r = stratified_ranks(n, m)
        i = np.arange(m)
        # rank r_i holds the centre (2i + 1) n / 2m of stratum i: 2 m r_i <= (2i + 1) n < 2 m (r_i + 1)
        assert np.all(2 * m * r <= (2 * i + 1) * n) and np.all((2 * i + 1) * n < 2 * m * (r + 1)), (n, m)
        assert np.all(np.diff(r) >= n // m) and np.all(np.diff(r) <= -(-n // m)), (n, m)  # stride ~ n/m
        assert r[0] == n // (2 * m) and r[-1] >= n - 1 - n // (2 * m), (n, m)  # no cutoff at either end


def test_stratified_select_picks_the_defined_ranks_per_class():
    rng = np.random.default_rng(3)
    labels = rng.permutation(np.repeat(np.arange(4), [10, 37, 3, 64]))
    scores = rng.integers(0, 12, labels.size).astype(np.float32)  # many ties: broken by index
    result = select(scores, labels, images_per_class=5, strategy="stratified")
    expected = []
    for c in range(4):
        order = ranks_of(scores, labels, c)
        expected.extend(order[stratified_ranks(order.size, 5)])
    np.testing.assert_array_equal(result.indices, np.sort(expected))
    assert result.counts.tolist() == [5, 5, 3, 5] and result.shortfall.tolist() == [2]
    assert result.strides is None and result.params["kwargs"] == {}


def test_stratified_n10_m2_and_reaches_the_hard_end_where_interval_stops():
    labels = np.zeros(10, dtype=np.int64)
    scores = np.array([9.0, 3.0, 0.0, 7.0, 1.0, 8.0, 2.0, 6.0, 4.0, 5.0])  # rank r is at scores == r
    got = select_indices(scores, labels, images_per_class=2, strategy="stratified")
    np.testing.assert_array_equal(np.sort(scores[got]), [2.0, 7.0])
    # a long class: interval's auto stride leaves the hardest third unreachable, stratified does not
    labels = np.zeros(300, dtype=np.int64)
    scores = np.arange(300.0)
    interval = select(scores, labels, images_per_class=10)
    stratified = select(scores, labels, images_per_class=10, strategy="stratified")
    assert scores[interval.indices].max() < 200 and scores[stratified.indices].max() == 285
    assert stratified.indices.tolist() == list(range(15, 300, 30))


# --------------------------------------------------------------------------------------
# kmeans
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_kmeans_picks_one_point_per_blob_nearest_its_centre(seed):
    centres = np.array([[0.0, 0.0, 0.0], [8.0, 0.0, 0.0], [0.0, 8.0, 0.0], [0.0, 0.0, 8.0], [8.0, 8.0, 8.0]])
    x = blob_class(centres, n_per_blob=40, seed=seed)
    blob = np.repeat(np.arange(5), 40)
    got = kmeans_nearest_order(x, 5, seed=seed)
    assert sorted(blob[got].tolist()) == [0, 1, 2, 3, 4]  # one per blob
    for b in range(5):  # the member nearest the blob's mean (the converged centroid)
        rows = np.flatnonzero(blob == b)
        nearest = rows[np.argmin(np.linalg.norm(x[rows] - x[rows].mean(axis=0), axis=1))]
        assert nearest in got


def test_kmeans_through_select_two_classes_with_their_own_blobs():
    a = blob_class(np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]), 30, seed=1)
    b = blob_class(np.array([[50.0, 50.0], [60.0, 50.0], [50.0, 60.0]]), 25, seed=2)
    x = np.concatenate([a, b])
    labels = np.repeat([0, 1], [90, 75])
    blob = np.concatenate([np.repeat(np.arange(3), 30), 3 + np.repeat(np.arange(3), 25)])
    for seed in range(3):
        got = select_indices(
            None, labels, images_per_class=3, strategy="kmeans", features=x, seed=seed, normalize=False
        )
        assert sorted(blob[got].tolist()) == [0, 1, 2, 3, 4, 5]
        for k in range(6):
            rows = np.flatnonzero(blob == k)
            assert rows[np.argmin(np.linalg.norm(x[rows] - x[rows].mean(axis=0), axis=1))] in got


def test_kmeans_is_seeded_and_handles_duplicates_and_small_classes():
    x = np.random.default_rng(0).normal(size=(60, 4))  # no cluster structure: the seeding matters
    a, b = kmeans_nearest_order(x, 6, seed=1), kmeans_nearest_order(x, 6, seed=1)
    np.testing.assert_array_equal(a, b)
    assert len({tuple(sorted(kmeans_nearest_order(x, 6, seed=s).tolist())) for s in range(6)}) > 1
    dupes = np.repeat(np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), 4, axis=0)  # 3 distinct points
    got = kmeans_nearest_order(dupes, 5, seed=0)
    assert got.size == 5 and np.unique(got).size == 5
    assert {tuple(p) for p in dupes[got]} == {(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)}  # every point covered
    np.testing.assert_array_equal(kmeans_nearest_order(x[:4], 6), np.arange(4))
    one_step = kmeans_nearest_order(x, 6, seed=1, max_iter=1)
    assert one_step.size == 6 and np.unique(one_step).size == 6


# --------------------------------------------------------------------------------------
# alignment
# --------------------------------------------------------------------------------------


def test_alignment_objective_is_the_documented_formula():
    x = np.random.default_rng(5).normal(size=(30, 3)) * [1.0, 2.0, 0.5] + 4.0
    s = [3, 7, 11, 20]
    expected = np.sum((x[s].mean(0) - x.mean(0)) ** 2) + 0.5 * np.sum((x[s].std(0) - x.std(0)) ** 2)
    assert alignment_objective(x, s, std_weight=0.5) == pytest.approx(expected, rel=1e-12)
    assert alignment_objective(x, [2]) == pytest.approx(np.sum((x[2] - x.mean(0)) ** 2) + np.sum(x.var(0)))


def test_alignment_finds_the_unique_optimum_that_greedy_alone_misses():
    # 1-D class {-2, -1, 0, 1, 2, 5, -5}: mean 0, std sqrt(60/7) = 2.93. Among all 21 pairs, {-2, 2}
    # (mean 0, std 2) is the unique minimiser; greedy starts at 0 (nearest the mean) and stops at
    # {0, -2}; one swap pass replaces 0 by 2.
    x = np.array([[-2.0], [-1.0], [0.0], [1.0], [2.0], [5.0], [-5.0]])
    costs = {pair: alignment_objective(x, pair) for pair in itertools.combinations(range(7), 2)}
    best = min(costs, key=costs.get)
    assert best == (0, 4) and sorted(costs.values())[1] > costs[best] + 0.1
    assert sorted(alignment_order(x, 2, max_passes=0).tolist()) == [0, 2]
    assert sorted(alignment_order(x, 2).tolist()) == [0, 4]


def test_alignment_is_a_swap_local_optimum_better_than_random_subsets():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(14, 3)) * [1.0, 3.0, 0.3]
    m = 4
    got = alignment_order(x, m)
    j = alignment_objective(x, got)
    for i, p in itertools.product(range(m), np.setdiff1d(np.arange(14), got)):
        swapped = got.copy()
        swapped[i] = p
        assert alignment_objective(x, swapped) >= j - 1e-12  # no single swap improves
    every = np.array([alignment_objective(x, s) for s in itertools.combinations(range(14), m)])
    assert j <= np.quantile(every, 0.01)  # in the best 1 % of all 1001 subsets
    randoms = [alignment_objective(x, rng.choice(14, m, replace=False)) for _ in range(200)]
    assert j <= min(randoms)
    assert alignment_objective(x, alignment_order(x, m, max_passes=0)) >= j  # refinement never hurts


def test_alignment_with_std_weight_0_and_no_swaps_is_herding():
    x = np.random.default_rng(2).normal(size=(80, 6))
    np.testing.assert_array_equal(alignment_order(x, 12, std_weight=0.0, max_passes=0), herding_order(x, 12))


def test_alignment_matches_the_spread_that_herding_ignores():
    # a class with a tight core and a wide shell: herding's mean-only greedy takes the core, alignment
    # takes a subset whose spread matches the class
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.normal(0, 0.1, (100, 2)), rng.normal(0, 3.0, (100, 2))])
    herd = herding_order(x, 10)
    align = alignment_order(x, 10)
    assert alignment_objective(x, align) < 0.5 * alignment_objective(x, herd)
    assert np.all(np.abs(x[align].std(0) - x.std(0)) < 0.1 * x.std(0))


def test_one_pick_is_the_row_nearest_the_mean_and_constant_classes_give_the_first_rows():
    x = np.random.default_rng(9).normal(size=(50, 4))
    nearest = int(np.argmin(np.linalg.norm(x - x.mean(axis=0), axis=1)))
    assert alignment_order(x, 1).tolist() == [nearest] == herding_order(x, 1).tolist()
    assert kmeans_nearest_order(x, 1, seed=3).tolist() == [nearest]  # one cluster: the class mean
    same = np.ones((9, 3))
    assert alignment_order(same, 4).tolist() == [0, 1, 2, 3]  # every subset ties: lowest positions
    got = kmeans_nearest_order(same, 4, seed=0)
    assert np.unique(got).size == 4
    labels = np.zeros(9, dtype=np.int64)
    for strategy in ("kmeans", "alignment"):
        assert select(None, labels, images_per_class=4, strategy=strategy, features=same).total == 4


# --------------------------------------------------------------------------------------
# through select(), Selector and condense()
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mixed():
    rng = np.random.default_rng(8)
    labels = rng.permutation(np.repeat(np.arange(4), [70, 45, 90, 12]))
    scores = rng.normal(size=labels.size)
    features = rng.normal(size=(labels.size, 5)).astype(np.float32)
    return scores, labels, features


@pytest.mark.parametrize("strategy", NEW)
def test_select_equals_the_per_class_functions(mixed, strategy):
    scores, labels, features = mixed
    got = select(scores, labels, images_per_class=8, strategy=strategy, features=features, seed=5)
    expected = []
    for c in range(4):
        rows = np.flatnonzero(labels == c)
        x = features[rows].astype(np.float64)
        x = x / np.linalg.norm(x, axis=1, keepdims=True)  # normalize=True by default
        if strategy == "stratified":
            order = ranks_of(scores, labels, c)
            expected.extend(order[stratified_ranks(order.size, 8)])
        elif strategy == "kmeans":
            expected.extend(rows[kmeans_nearest_order(x, 8, seed=np.random.default_rng([5, c]))])
        else:
            expected.extend(rows[alignment_order(x, 8)])
    np.testing.assert_array_equal(got.indices, np.sort(expected))
    assert got.counts.tolist() == [8, 8, 8, 8] and got.params["strategy"] == strategy
    again = select(scores, labels, images_per_class=8, strategy=strategy, features=features, seed=5)
    np.testing.assert_array_equal(got.indices, again.indices)


def test_selector_on_a_dataset_equals_select(mixed):
    scores, labels, features = mixed
    ds = Dataset.from_dict(
        {"label": labels, "difficulty": scores, "emb": features},
        features=Features(
            {
                "label": ClassLabel(num_classes=4),
                "difficulty": Value("float64"),
                "emb": List(Value("float32"), 5),
            }
        ),
    )
    for strategy, options in [
        ("stratified", {}),
        ("kmeans", {"max_iter": 20}),
        ("alignment", {"max_passes": 2}),
    ]:
        fitted = Selector(strategy, images_per_class=6, feature_column="emb", seed=2, **options).fit(ds)
        expected = select(
            scores, labels, images_per_class=6, strategy=strategy, features=features, seed=2, **options
        )
        np.testing.assert_array_equal(fitted.result_.indices, expected.indices)
        assert fitted.result_.params["kwargs"] == expected.params["kwargs"]


@pytest.mark.parametrize("strategy", ["kmeans", "alignment"])
def test_condense_selects_with_feature_strategies(digits_small, strategy):
    features = np.random.default_rng(0).normal(size=(len(digits_small), 7)).astype(np.float32)
    labels = np.asarray(digits_small["label"])
    run = lambda source, **extra: condense(  # noqa: E731
        source, images_per_class=3, strategy=strategy, seed=4, scorer=None, vae=None, attach=(), **extra
    )
    expected = select(None, labels, images_per_class=3, strategy=strategy, features=features, seed=4)
    by_array = run(digits_small, selection_kwargs={"features": features, "normalize": False})
    plain = select(
        None, labels, images_per_class=3, strategy=strategy, features=features, seed=4, normalize=False
    )
    np.testing.assert_array_equal(np.asarray(by_array.samples["source_index"]), plain.indices)
    with_column = digits_small.add_column("emb", features.tolist())
    by_column = run(with_column, selection_kwargs={"feature_column": "emb"})
    np.testing.assert_array_equal(np.asarray(by_column.samples["source_index"]), expected.indices)
    assert by_column.info["selection"]["strategy"] == strategy and len(by_column) == 30
    again = run(with_column, selection_kwargs={"feature_column": "emb"})
    np.testing.assert_array_equal(np.asarray(again.samples["source_index"]), expected.indices)


def test_condense_selects_stratified_from_a_difficulty_column(digits_small):
    scored = with_difficulty(digits_small)
    out = condense(scored, images_per_class=4, strategy="stratified", scorer=None, vae=None, attach=())
    expected = select(np.asarray(scored["difficulty"]), np.asarray(scored["label"]), images_per_class=4,
                      strategy="stratified")  # fmt: skip
    np.testing.assert_array_equal(np.asarray(out.samples["source_index"]), expected.indices)
    assert out.info["selection"]["strategy"] == "stratified"


def test_condense_streams_with_stratified(local_hub, digits_small):
    rows = digits_small.select(range(50))
    options = dict(
        images_per_class=2,
        strategy="stratified",
        scorer=local_hub.dit,
        vae=local_hub.vae,
        attach=("latents",),
        resolution=32,
        batch_size=10,
    )
    in_memory = condense(rows, **options)
    streamed = condense(rows.to_iterable_dataset(), num_rows=50, **options)
    np.testing.assert_array_equal(
        np.asarray(streamed.samples["source_index"]), np.asarray(in_memory.samples["source_index"])
    )
    assert streamed.info["selection"]["strategy"] == in_memory.info["selection"]["strategy"] == "stratified"
    scores = np.asarray(in_memory.scores["difficulty"])
    expected = select(
        scores, np.asarray(in_memory.scores["label"]), images_per_class=2, strategy="stratified"
    )
    np.testing.assert_array_equal(np.asarray(in_memory.samples["source_index"]), expected.indices)


# --------------------------------------------------------------------------------------
# bad options
# --------------------------------------------------------------------------------------

FEATS = np.random.default_rng(0).normal(size=(6, 2))
LABELS = np.array([0, 0, 0, 1, 1, 1])


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"strategy": "kmeans", "max_iter": 0}, ValueError, r"max_iter must be a positive integer, got 0"),
        ({"strategy": "kmeans", "max_iter": 2.5}, ValueError, r"max_iter must be a positive integer"),
        (
            {"strategy": "alignment", "max_passes": -1},
            ValueError,
            r"max_passes must be a non-negative integer",
        ),
        (
            {"strategy": "alignment", "std_weight": -1.0},
            ValueError,
            r"std_weight must be a finite number >= 0",
        ),
        ({"strategy": "alignment", "std_weight": float("nan")}, ValueError, r"std_weight must be a finite"),
        ({"strategy": "alignment", "std_weight": "high"}, TypeError, r"std_weight must be a number >= 0"),
        (
            {"strategy": "kmeans", "std_weight": 1.0},
            TypeError,
            r"strategy 'kmeans' got unexpected option\(s\) std_weight; it accepts: normalize, max_iter",
        ),
        (
            {"strategy": "stratified", "normalize": True},
            TypeError,
            r"strategy 'stratified' got unexpected option\(s\) normalize; it accepts: none",
        ),
        ({"strategy": "kmeans", "features": None}, ValueError, r"strategy 'kmeans' needs features"),
        ({"strategy": "stratified", "scores": None}, ValueError, r"scores are required"),
        ({"strategy": "alignment", "normalize": 1}, TypeError, r"normalize must be True or False"),
    ],
)
def test_bad_options(kwargs, error, pattern):
    call = {"scores": np.arange(6.0), "labels": LABELS, "features": FEATS, "images_per_class": 2, **kwargs}
    with pytest.raises(error, match=pattern):
        select(call.pop("scores"), call.pop("labels"), **call)


def test_bad_options_are_refused_before_any_data(digits_small):
    with pytest.raises(ValueError, match="max_iter must be a positive integer"):
        Selector("kmeans", images_per_class=2, feature_column="emb", max_iter=0)
    with pytest.raises(ValueError, match="max_passes must be a non-negative integer"):
        condense(
            digits_small,
            images_per_class=2,
            strategy="alignment",
            scorer=None,
            vae=None,
            attach=(),
            selection_kwargs={"feature_column": "label", "max_passes": -2},
        )


def test_public_function_errors():
    with pytest.raises(ValueError, match=r"x must be 2-D"):
        kmeans_nearest_order(np.ones(5), 2)
    with pytest.raises(ValueError, match=r"max_iter must be a positive integer"):
        kmeans_nearest_order(FEATS, 2, max_iter=0)
    with pytest.raises(ValueError, match=r"m must be a non-negative integer"):
        alignment_order(FEATS, -1)
    with pytest.raises(ValueError, match=r"subset must not repeat a position"):
        alignment_objective(FEATS, [1, 1])
    with pytest.raises(ValueError, match=r"n must be a non-negative integer"):
        stratified_ranks(-3, 2)
