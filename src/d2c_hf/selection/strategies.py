"""Select: per-class subset selection from difficulty scores or features.

Pure functions, arrays in and indices out: no model and no dataset inside. The result of
:func:`select` is a :class:`SelectionResult` whose ``indices`` are sorted, unique ``int64``
positions into the input arrays, ready for ``datasets.Dataset.select``.

Every strategy works **per class**: class ``c``'s pick depends only on the rows of class ``c``,
the budget ``m`` (``images_per_class``), the stride ``k`` (interval) and ``(seed, c)``. Random
choices use ``np.random.default_rng([seed, c])``; the global NumPy RNG is never touched.

Strategies (see :data:`STRATEGIES` for the registry and each runner's docstring for the
definition and cost):

=============  ==========  ====================================================================
name           needs       keeps, per class (ranks are 0-based, easiest first)
=============  ==========  ====================================================================
``interval``   scores      D2C: ranks ``0, k, 2k, ..., (m-1)k`` of the difficulty order
``random``     labels      ``m`` rows uniformly without replacement
``min``        scores      the ``m`` easiest (ranks ``0 .. m-1``)
``max``        scores      the ``m`` hardest
``window``     scores      ``m`` contiguous ranks starting at ``round(q (n_c - m))``
``medium``     scores      ``window`` with ``q = 0.5`` (centred on the median difficulty)
``ccs``        scores      CCS per class: hard cutoff, equal-width strata, coverage allocation
``herding``    features    greedy: the running mean of the pick approaches the class mean
``kcenter``    features    greedy farthest-point (k-center) cover
``moderate``   features    Moderate-DS: distance to the class median closest to its median
``stratified`` scores      the centre rank of each of m equal difficulty strata (stride n_c / m)
``kmeans``     features    k-means with k = m, the row nearest each centroid (Briq et al.)
``alignment``  features    moment matching to the class (GADC-style): greedy build + swaps
=============  ==========  ====================================================================

Difficulty convention (method.md §1): the ``difficulty`` score is the positive mean
denoising loss, higher = harder, ascending order = easiest first. Ties are always broken by
row index (stable sorts), so results are reproducible bit for bit.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from ..utils.checks import check_non_negative_int, check_positive_int
from . import successors

logger = logging.getLogger(__name__)

__all__ = [
    "STRATEGIES",
    "SelectionResult",
    "Selector",
    "Strategy",
    "auto_interval",
    "herding_order",
    "images_per_class_from_ratio",
    "k_center_greedy_order",
    "moderate_order",
    "paper_interval",
    "select",
    "select_indices",
]

#: ``interval="auto"`` chooses k so that the m picks span about this fraction of a median-sized
#: class (the paper's k = 96 for m = 10 on 1300-image ImageNet classes spans 66.5 %).
AUTO_INTERVAL_SPAN = (2, 3)
#: ``interval="paper"`` keeps the paper's headline stride-to-budget proportion ``k * m / n``: k = 96 at
#: m = 10 images per class of ImageNet-1k, whose mean class size is 1,281,167 / 1000 images, as the
#: exact fraction ``(96 * 10 * 1000) / 1,281,167`` (about 0.749).
PAPER_INTERVAL_PROPORTION = (96 * 10 * 1000, 1_281_167)
INTERVAL_MODES = ("auto", "paper")


class _Required:
    """Marks a strategy option without a default."""

    def __repr__(self) -> str:
        return "<required>"


_REQUIRED = _Required()
_FINITE_CHECK_ROWS = 1 << 16  # rows per block when checking large feature arrays for NaN/inf


# --------------------------------------------------------------------------------------
# result
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SelectionResult:
    """What :func:`select` kept, and why.

    Attributes:
        indices: ``(M,)`` int64, sorted and unique positions into the input arrays.
        images_per_class: the per-class budget ``m``.
        counts: ``(C,)`` int64, rows actually kept per class (``min(m, n_c)`` for every
            strategy; an empty class gives 0).
        class_sizes: ``(C,)`` int64, rows per class in the input (``n_c``).
        strides: ``(C,)`` int64 realised interval stride per class (``interval`` only, else
            ``None``): ``k`` as resolved, smaller where the class was too small for it, 1 where
            the whole class was taken, 0 for an empty class.
        shortfall: ``(S,)`` int64 sorted class ids that did not get the nominal treatment: the
            stride was shrunk (``interval``), the hard cutoff was relaxed (``ccs``), or the
            class gave fewer than ``m`` rows (every strategy).
        strategy: the strategy name.
        params: JSON-able record of the call: ``strategy``, ``images_per_class``, ``ratio``,
            ``interval`` (resolved k, interval only), ``seed``, ``num_classes``, ``num_samples``
            and ``kwargs`` (the strategy options with their defaults filled in).
    """

    indices: np.ndarray
    images_per_class: int
    counts: np.ndarray
    class_sizes: np.ndarray
    strides: np.ndarray | None
    shortfall: np.ndarray
    strategy: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Number of rows kept (``len(indices)`` = ``counts.sum()``)."""
        return int(self.indices.size)

    @property
    def num_classes(self) -> int:
        return int(self.class_sizes.size)

    @property
    def realised_ratio(self) -> float:
        """The fraction of the input rows kept (``total / N``; 0 for an empty input)."""
        n = int(self.class_sizes.sum())
        return self.total / n if n else 0.0

    def to_dict(self, include_indices: bool = False) -> dict[str, Any]:
        """A JSON-able summary for dataset cards and provenance.

        Args:
            include_indices: also list the kept positions (large for big selections; the
                condensed dataset itself usually records which rows it holds).
        """
        out: dict[str, Any] = {
            "strategy": self.strategy,
            "params": self.params,
            "images_per_class": self.images_per_class,
            "num_classes": self.num_classes,
            "total": self.total,
            "counts": self.counts.tolist(),
            "class_sizes": self.class_sizes.tolist(),
            "strides": None if self.strides is None else self.strides.tolist(),
            "shortfall": self.shortfall.tolist(),
            "realised_ratio": self.realised_ratio,
        }
        if include_indices:
            out["indices"] = self.indices.tolist()
        return out

    def summary(self) -> str:
        """One line: strategy, budget, total and shortfall counts."""
        m = self.images_per_class
        k = f", k={self.params['interval']}" if self.strategy == "interval" else ""
        n = int(self.class_sizes.sum())
        fewer = int(np.count_nonzero(self.counts < m))
        reduced = int(self.shortfall.size) - fewer
        what = {"interval": "stride shrunk", "ccs": "cutoff relaxed"}.get(self.strategy)
        shortfall = f"{fewer} classes gave fewer than m={m}"
        if what is not None:
            shortfall = f"{reduced} classes {what}, " + shortfall
        return (
            f"selection {self.strategy!r} (m={m}{k}, seed={self.params.get('seed')}): kept {self.total} of "
            f"{n} rows ({self.realised_ratio:.2%}) in {self.num_classes} classes; shortfall: {shortfall}"
        )


# --------------------------------------------------------------------------------------
# budgets
# --------------------------------------------------------------------------------------


def images_per_class_from_ratio(ratio: float, num_samples: int, num_classes: int) -> int:
    """Per-class budget from a dataset fraction: ``m = max(1, round(ratio * N / C))``.

    ``C`` is the number of classes that have rows (:func:`select` passes that, so that classes of the
    label space with no rows do not dilute the budget).

    Rounds half up. ImageNet-1k: 1,281,167 images, 1000 classes: ratio 0.008 -> 10,
    0.04 -> 51, 0.08 -> 102 (pass ``images_per_class=50`` for the paper's 50K setting).
    """
    ratio = _check_ratio(ratio)
    check_positive_int(num_samples, "num_samples")
    check_positive_int(num_classes, "num_classes")
    return max(1, math.floor(ratio * int(num_samples) / int(num_classes) + 0.5))


def auto_interval(images_per_class: int, reference_class_size: float) -> int:
    """The ``interval="auto"`` stride: ``k = max(1, floor(2/3 * (n_ref - 1) / (m - 1)))``.

    The picks ``0, k, ..., (m-1)k`` then span about two thirds of a class of ``n_ref`` rows,
    the span of the paper's ImageNet setting (m = 10, k = 96, n = 1300). For 1300-image
    classes this gives k = 96 / 17 / 8 for m = 10 / 50 / 100 (the paper used 96 / 16 / 10).
    ``m == 1`` gives 1 (only rank 0 is kept anyway).
    """
    m = int(images_per_class)
    if m <= 1:
        return 1
    num, den = AUTO_INTERVAL_SPAN
    # n_ref is a median of integers (an integer or a half): 2 (n_ref - 1) is an exact integer.
    twice = round(2 * (float(reference_class_size) - 1.0))
    return max(1, (num * twice) // (2 * den * (m - 1)))


def paper_interval(images_per_class: int, reference_class_size: float) -> int:
    """The ``interval="paper"`` stride: the paper's stride-to-budget proportion, scaled to the data.

    The paper's headline setting keeps m = 10 images per class of ImageNet-1k (mean class size
    n = 1,281.167) with stride k = 96, i.e. ``k * m / n = 960 / 1281.167 = 0.749``: the stride is about
    three quarters of a class's share per pick. Kept at any class size and budget::

        k = max(1, round(960 / 1281.167 * n_ref / m))      (rounded half up; exact integer arithmetic)

    so 10 of 1,281.167 gives 96 and 10 of 1300 gives 97 (50 -> 19, 100 -> 10; the paper used 16 and
    10 there). The picks ``0, k, ..., (m-1)k`` then span about ``0.749 (m-1)/m`` of the class: 67 % at
    m = 10, 37 % at m = 2, where ``"auto"`` (two thirds of the class at every m) spans 66 %. ``m == 1``
    gives 1 (only rank 0 is kept anyway).
    """
    m = int(images_per_class)
    if m <= 1:
        return 1
    num, den = PAPER_INTERVAL_PROPORTION
    # n_ref is a median of integers (an integer or a half): 2 n_ref is an exact integer
    twice = round(2 * float(reference_class_size))
    # round(num * twice / (2 den m)) half up = floor((num * twice + den m) / (2 den m))
    return max(1, (num * twice + den * m) // (2 * den * m))


# --------------------------------------------------------------------------------------
# the problem handed to a strategy runner
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Problem:
    labels: np.ndarray  # (N,) int64, in [0, num_classes)
    scores: np.ndarray | None  # (N,) real, finite (strategies that need scores)
    features: np.ndarray | None  # (N, d) real, finite (strategies that need features)
    num_classes: int
    class_sizes: np.ndarray  # (C,) int64
    images_per_class: int
    seed: int
    interval: int | None  # resolved stride k (interval only)
    options: Mapping[str, Any]  # strategy options with defaults filled in


@dataclass(frozen=True, eq=False)
class _Picked:
    indices: np.ndarray  # (M,) int64 positions, any order
    counts: np.ndarray  # (C,) int64
    strides: np.ndarray | None  # (C,) int64 or None
    shortfall: np.ndarray  # (C,) bool


def _label_dtype(num_classes: int) -> type:
    # NumPy's stable sort is a radix sort for integers of 16 bits or less: ~2x faster here.
    return np.int16 if num_classes <= np.iinfo(np.int16).max else np.int64


def _group_by_class(problem: _Problem, by_score: bool) -> tuple[np.ndarray, np.ndarray]:
    """Order rows by (label, score, index) (``by_score``) or by (label, index).

    Returns ``order`` ``(N,)`` int64 and ``starts`` ``(C,)`` int64: class ``c``'s rows, in that
    order, are ``order[starts[c] : starts[c] + class_sizes[c]]``. Both sorts are stable, so
    equal scores keep index order.
    """
    labels = problem.labels.astype(_label_dtype(problem.num_classes))
    if by_score:
        scores = problem.scores
        if scores.dtype == np.float16:  # NumPy sorts float16 slowly; float32 is exact for it
            scores = scores.astype(np.float32)
        order = np.argsort(scores, kind="stable")
        order = order[np.argsort(labels[order], kind="stable")]
    else:
        order = np.argsort(labels, kind="stable")
    sizes = problem.class_sizes
    starts = np.cumsum(sizes) - sizes
    return order.astype(np.int64, copy=False), starts


def _gather_ranks(
    order: np.ndarray, starts: np.ndarray, first: np.ndarray, step: np.ndarray, counts: np.ndarray
) -> np.ndarray:
    """Vectorised over classes: rows at ranks ``first[c] + j * step[c]``, ``j < counts[c]``."""
    total = int(counts.sum())
    cls = np.repeat(np.arange(counts.size), counts)
    j = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    return order[starts[cls] + first[cls] + j * step[cls]]


# --------------------------------------------------------------------------------------
# score strategies (vectorised over classes)
# --------------------------------------------------------------------------------------


def _run_interval(problem: _Problem) -> _Picked:
    """D2C interval sampling.

    Per class, sort by difficulty ascending (ties by index) and keep ranks
    ``0, k, 2k, ..., (m-1)k``. Shortfall policy (method.md §1): if ``(m-1)k + 1 > n_c`` the
    class's stride shrinks to ``k_c = floor((n_c - 1) / (m - 1))`` (so the class still gives
    ``m`` rows); if ``n_c < m`` the whole class is kept. The hardest
    ``n_c - (m-1)k_c - 1`` rows are never reachable: an implicit hard cutoff.

    Cost: one O(N log N) stable sort for all classes, O(C m) gather; O(N) memory.
    """
    m, k = problem.images_per_class, problem.interval
    sizes = problem.class_sizes
    counts = np.minimum(sizes, m)
    strides = np.full(sizes.size, k, dtype=np.int64)
    shrunk = np.zeros(sizes.size, dtype=bool)
    if m > 1:
        shrunk = (sizes >= m) & ((m - 1) * k + 1 > sizes)
        strides[shrunk] = np.maximum(1, (sizes[shrunk] - 1) // (m - 1))
    small = sizes < m
    strides[small] = 1
    strides[sizes == 0] = 0
    order, starts = _group_by_class(problem, by_score=True)
    first = np.zeros(sizes.size, dtype=np.int64)
    indices = _gather_ranks(order, starts, first, strides, counts)
    return _Picked(indices, counts, strides, shrunk | small)


def _window(problem: _Problem, position: float) -> _Picked:
    m, sizes = problem.images_per_class, problem.class_sizes
    counts = np.minimum(sizes, m)
    # round half up, so that position 0.5 of an odd gap starts one rank after the middle
    first = np.floor(position * (sizes - counts) + 0.5).astype(np.int64)
    order, starts = _group_by_class(problem, by_score=True)
    indices = _gather_ranks(order, starts, first, np.ones_like(counts), counts)
    return _Picked(indices, counts, None, sizes < m)


def _run_window(problem: _Problem) -> _Picked:
    """A contiguous window of ``m`` difficulty ranks at relative position ``q``.

    Per class, sort by difficulty ascending (ties by index) and keep ranks
    ``[s, s + m)`` with ``s = round(q * (n_c - m))`` (half up); ``q = 0`` is ``min``,
    ``q = 1`` is ``max``, ``q = 0.5`` is ``medium``. Classes with ``n_c < m`` are kept whole.

    Option: ``position`` (q in [0, 1], required).
    Cost: O(N log N) time, O(N) memory.
    """
    return _window(problem, float(problem.options["position"]))


def _run_min(problem: _Problem) -> _Picked:
    """The ``m`` easiest rows of each class (ranks ``0 .. m-1``; ``interval`` with k = 1).

    Cost: O(N log N) time, O(N) memory.
    """
    return _window(problem, 0.0)


def _run_max(problem: _Problem) -> _Picked:
    """The ``m`` hardest rows of each class (ranks ``n_c - m .. n_c - 1``).

    Cost: O(N log N) time, O(N) memory.
    """
    return _window(problem, 1.0)


def _run_medium(problem: _Problem) -> _Picked:
    """``m`` contiguous ranks centred on the class's median difficulty (``window``, q = 0.5):
    ranks ``[s, s + m)`` with ``s = round((n_c - m) / 2)`` (half up).

    Cost: O(N log N) time, O(N) memory.
    """
    return _window(problem, 0.5)


def _run_random(problem: _Problem) -> _Picked:
    """Class-balanced uniform sampling without replacement.

    Per class, ``m`` distinct rows drawn uniformly with ``np.random.default_rng([seed, c])``
    from the class's rows in index order (scores are not used).

    Cost: O(N log C) grouping + O(C m) draws; O(N) memory.
    """
    m, sizes = problem.images_per_class, problem.class_sizes
    order, starts = _group_by_class(problem, by_score=False)
    picked = []
    for c in np.flatnonzero(sizes):
        n = int(sizes[c])
        rows = order[starts[c] : starts[c] + n]
        if n <= m:
            picked.append(rows)
        else:
            rng = np.random.default_rng([problem.seed, int(c)])
            picked.append(rows[rng.choice(n, size=m, replace=False)])
    return _Picked(_concat(picked), np.minimum(sizes, m), None, sizes < m)


def _ccs_class(
    sorted_scores: np.ndarray, m: int, cutoff: float, num_strata: int, rng: np.random.Generator
) -> tuple[np.ndarray, bool]:
    """CCS within one class. ``sorted_scores``: the class's scores, ascending (easiest first).

    Returns (ranks into ``sorted_scores``, whether the cutoff had to be relaxed).
    """
    n = sorted_scores.size
    take = min(m, n)
    keep = n - math.floor(cutoff * n)
    relaxed = keep < take
    keep = max(keep, take)  # never cut away rows the budget needs
    if take == keep:
        return np.arange(keep), relaxed
    s = sorted_scores[:keep].astype(np.float64)
    lo, hi = s[0], s[-1]
    if hi > lo:  # equal-width strata over [lo, hi], the last one closed
        strata = np.minimum(((s - lo) / (hi - lo) * num_strata).astype(np.int64), num_strata - 1)
    else:
        strata = np.zeros(keep, dtype=np.int64)
    population = np.bincount(strata, minlength=num_strata)
    # Coverage allocation: visit the non-empty strata from the least to the most populated;
    # each gets an equal share of what is left, capped by its population; leftovers flow on.
    # This always allocates exactly `take` rows (take <= keep).
    occupied = np.flatnonzero(population)
    visit = occupied[np.argsort(population[occupied], kind="stable")]
    budget = np.zeros(num_strata, dtype=np.int64)
    remaining = take
    for i, s_id in enumerate(visit):
        budget[s_id] = min(int(population[s_id]), remaining // (visit.size - i))
        remaining -= int(budget[s_id])
    # Uniform sampling without replacement inside each stratum: the `budget[s]` members with the
    # smallest random keys. (strata is non-decreasing, as the scores are sorted.)
    keys = rng.random(keep)
    ranks = np.lexsort((keys, strata))
    first_of_stratum = np.cumsum(population) - population
    rank_in_stratum = np.arange(keep) - first_of_stratum[strata[ranks]]
    return np.sort(ranks[rank_in_stratum < budget[strata[ranks]]]), relaxed


def _run_ccs(problem: _Problem) -> _Picked:
    """Coverage-centric coreset selection (Zheng et al., ICLR 2023), per-class variant.

    Per class, with the class's difficulty scores sorted ascending:

    1. hard cutoff: drop the hardest ``floor(cutoff * n_c)`` rows (relaxed, and the class
       reported in ``shortfall``, when fewer than ``m`` rows would remain);
    2. ``num_strata`` equal-width strata over ``[min, max]`` of the remaining difficulties
       (``stratum = min(floor(K (s - min) / (max - min)), K - 1)``);
    3. budget ``m`` to strata in increasing order of population: stratum ``i`` of the ``r``
       still unvisited gets ``min(|stratum|, floor(remaining / r))``, the leftover flows on;
    4. uniform sampling without replacement inside each stratum
       (``np.random.default_rng([seed, c])``).

    Every class has its own budget ``m`` and its own strata (the reference code gives every
    class the budget of the last class). Options: ``cutoff`` (default 0.1, in [0, 1)),
    ``num_strata`` (default 50). Cost: O(N log N) sort + O(N + C K log K); O(N) memory.
    """
    m, sizes = problem.images_per_class, problem.class_sizes
    cutoff, num_strata = float(problem.options["cutoff"]), int(problem.options["num_strata"])
    order, starts = _group_by_class(problem, by_score=True)
    sorted_scores = problem.scores[order]
    picked, relaxed = [], np.zeros(sizes.size, dtype=bool)
    for c in np.flatnonzero(sizes):
        lo, hi = int(starts[c]), int(starts[c] + sizes[c])
        rng = np.random.default_rng([problem.seed, int(c)])
        ranks, relaxed[c] = _ccs_class(sorted_scores[lo:hi], m, cutoff, num_strata, rng)
        picked.append(order[lo + ranks])
    return _Picked(_concat(picked), np.minimum(sizes, m), None, relaxed | (sizes < m))


# --------------------------------------------------------------------------------------
# feature strategies (one class at a time)
# --------------------------------------------------------------------------------------


def _as_class_features(features: np.ndarray, normalize: bool) -> np.ndarray:
    x = np.asarray(features, dtype=np.float64)
    if normalize:
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = x / np.maximum(norms, np.finfo(np.float64).tiny)
    return x


def herding_order(features: np.ndarray, m: int, normalize: bool = False) -> np.ndarray:
    """Kernel herding (Welling 2009; iCaRL exemplars) on one class, in selection order.

    With class mean ``mu`` and ``S_t`` the sum of the first ``t`` picks, step ``t = 1..m``
    picks the unpicked row closest to the point that would make the running mean exact::

        p_t = argmin_{i not picked} || t * mu - S_{t-1} - f_i ||_2

    (argmin: the nearest point; an argmax picks the farthest and drives the mean away).
    The running mean ``S_t / t`` then approaches ``mu`` at rate O(1/t). Ties go to the
    lowest position. Greedy, so the first ``t`` of an ``m``-pick equal a ``t``-pick.

    Args:
        features: ``(n, d)`` real array of one class.
        m: number of picks (``min(m, n)`` are returned).
        normalize: L2-normalise the rows first.

    Returns:
        ``(min(m, n),)`` int64 positions into ``features``, in selection order.

    Cost: O(m n d) time (one ``(n, d) @ (d,)`` product per step), O(n d) memory.
    """
    x = _as_class_features(features, normalize)
    n = x.shape[0]
    m = min(int(m), n)
    mean = x.mean(axis=0)
    sq_norms = np.einsum("ij,ij->i", x, x)
    running = np.zeros(x.shape[1])
    picked = np.zeros(n, dtype=bool)
    out = np.empty(m, dtype=np.int64)
    for t in range(1, m + 1):
        target = t * mean - running
        cost = sq_norms - 2.0 * (x @ target)  # = ||target - f_i||^2 - ||target||^2
        cost[picked] = np.inf
        p = int(np.argmin(cost))
        out[t - 1], picked[p] = p, True
        running += x[p]
    return out


def k_center_greedy_order(
    features: np.ndarray, m: int, first: int = 0, normalize: bool = False
) -> np.ndarray:
    """Greedy k-center (farthest-point) cover of one class (Sener & Savarese 2018), in order.

    Starts from the row ``first`` (counted in the budget), keeps ``delta_i`` = distance to the
    nearest picked row, and repeatedly picks ``argmax delta`` and updates
    ``delta_i <- min(delta_i, ||f_i - f_p||)``. Gives a 2-approximation of the minimal
    covering radius ``max_i min_{j in S} ||f_i - f_j||``. Ties go to the lowest position.

    Args:
        features: ``(n, d)`` real array of one class.
        m: number of picks including ``first`` (``min(m, n)`` are returned).
        first: position of the initial centre.
        normalize: L2-normalise the rows first.

    Returns:
        ``(min(m, n),)`` int64 positions into ``features``, in selection order.

    Cost: O(m n d) time; O(n) memory beyond the class's features (a running min-distance
    vector, not an ``(m, n)`` distance matrix).
    """
    x = _as_class_features(features, normalize)
    n = x.shape[0]
    m = min(int(m), n)
    if not 0 <= first < n:
        raise ValueError(f"first must lie in [0, {n}), got {first}")
    sq_norms = np.einsum("ij,ij->i", x, x)

    def sq_dist_to(p: int) -> np.ndarray:
        return np.maximum(sq_norms - 2.0 * (x @ x[p]) + sq_norms[p], 0.0)

    out = np.empty(m, dtype=np.int64)
    out[0] = first
    delta = sq_dist_to(first)  # squared distances: same argmax, no sqrt
    delta[first] = -np.inf  # picked rows are never picked again, even among duplicates
    for t in range(1, m):
        p = int(np.argmax(delta))
        out[t] = p
        np.minimum(delta, sq_dist_to(p), out=delta)
        delta[p] = -np.inf
    return out


def moderate_order(features: np.ndarray, m: int, normalize: bool = False) -> np.ndarray:
    """Moderate coreset (Xia et al., ICLR 2023) on one class.

    Distances to the class's coordinate-wise median ``med``: ``r_i = ||f_i - med||_2``; keep
    the ``m`` rows whose ``r_i`` is closest to the median distance, i.e. the smallest
    ``|r_i - median(r)|`` (ties by position). The reference code cuts a band of ranks around
    the median of ``r``; the two agree when ``r`` is symmetric about its median.

    Returns:
        ``(min(m, n),)`` int64 positions into ``features``, closest to the median distance first.

    Cost: O(n d) time (two medians by selection) + O(n log n) sort; O(n d) memory.
    """
    x = _as_class_features(features, normalize)
    distance = np.linalg.norm(x - np.median(x, axis=0), axis=1)
    deviation = np.abs(distance - np.median(distance))
    return np.argsort(deviation, kind="stable")[: min(int(m), x.shape[0])].astype(np.int64)


def _per_class_features(problem: _Problem, pick: Callable[[np.ndarray, int, int], np.ndarray]) -> _Picked:
    """Run ``pick(class_features, m, class_id) -> positions`` on every non-empty class."""
    m, sizes = problem.images_per_class, problem.class_sizes
    normalize = bool(problem.options["normalize"])
    order, starts = _group_by_class(problem, by_score=False)
    picked = []
    for c in np.flatnonzero(sizes):
        rows = order[starts[c] : starts[c] + sizes[c]]
        x = _as_class_features(problem.features[rows], normalize)
        picked.append(rows[pick(x, m, int(c))])
    return _Picked(_concat(picked), np.minimum(sizes, m), None, sizes < m)


def _run_herding(problem: _Problem) -> _Picked:
    """Herding per class (see :func:`herding_order`): the running mean of the picks
    approaches the class mean. Option: ``normalize`` (default True).

    Cost: O(m n_c d) per class, O(N m d) in all; O(n_c d) memory.
    """
    return _per_class_features(problem, lambda x, m, c: herding_order(x, m))


def _run_kcenter(problem: _Problem) -> _Picked:
    """Greedy k-center per class (see :func:`k_center_greedy_order`); the initial centre is
    drawn with ``np.random.default_rng([seed, c])`` and counts in the budget. Option:
    ``normalize`` (default True).

    Cost: O(m n_c d) per class; O(n_c d) memory for the class's features + O(n_c).
    """

    def pick(x: np.ndarray, m: int, c: int) -> np.ndarray:
        first = int(np.random.default_rng([problem.seed, c]).integers(x.shape[0]))
        return k_center_greedy_order(x, m, first=first)

    return _per_class_features(problem, pick)


def _run_moderate(problem: _Problem) -> _Picked:
    """Moderate-DS per class (see :func:`moderate_order`). Option: ``normalize`` (default True).

    Cost: O(n_c d + n_c log n_c) per class; O(n_c d) memory.
    """
    return _per_class_features(problem, lambda x, m, c: moderate_order(x, m))


def _run_stratified(problem: _Problem) -> _Picked:
    """Difficulty-stratified interval sampling (see :func:`successors.stratified_ranks`).

    Per class, sort by difficulty ascending (ties by index) and keep the ranks
    ``floor((i + 0.5) n_c / m)``, ``i = 0 .. m-1``: the centre of each of ``m`` equal strata, stride
    ``n_c / m``, covering the whole difficulty range (no cutoff). Classes with ``n_c < m`` are kept whole.

    Cost: O(N log N) time (the shared stable sort), O(N) memory.
    """
    m, sizes = problem.images_per_class, problem.class_sizes
    counts = np.minimum(sizes, m)
    order, starts = _group_by_class(problem, by_score=True)
    cls = np.repeat(np.arange(sizes.size), counts)
    j = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    ranks = ((2 * j + 1) * sizes[cls]) // (2 * counts[cls])  # = stratified_ranks(n_c, m), all classes
    return _Picked(order[starts[cls] + ranks], counts, None, sizes < m)


def _run_kmeans(problem: _Problem) -> _Picked:
    """Per-class k-means nearest-to-centroid (see :func:`successors.kmeans_nearest_order`): k = m,
    k-means++ seeding from ``np.random.default_rng([seed, c])``, Lloyd iterations to convergence or
    ``max_iter``, then the row nearest each centroid. Options: ``normalize`` (default True),
    ``max_iter`` (default 100).

    Cost: O(I n_c m d) per class for I Lloyd iterations; O(n_c (d + m)) memory.
    """
    max_iter = int(problem.options["max_iter"])

    def pick(x: np.ndarray, m: int, c: int) -> np.ndarray:
        rng = np.random.default_rng([problem.seed, c])
        return successors.kmeans_nearest_order(x, m, seed=rng, max_iter=max_iter)

    return _per_class_features(problem, pick)


def _run_alignment(problem: _Problem) -> _Picked:
    """Distribution alignment per class (see :func:`successors.alignment_order`): minimise
    ``||mu_S - mu_c||^2 + std_weight ||sigma_S - sigma_c||^2`` (per-dimension population mean and
    standard deviation of the subset and of the class), greedy build then swap passes. Options:
    ``normalize`` (default True), ``std_weight`` (default 1.0), ``max_passes`` (default 10).

    Cost: O((1 + P) m n_c d) per class for P swap passes; O(n_c d) memory.
    """
    std_weight, passes = float(problem.options["std_weight"]), int(problem.options["max_passes"])
    return _per_class_features(
        problem, lambda x, m, c: successors.alignment_order(x, m, std_weight=std_weight, max_passes=passes)
    )


def _concat(parts: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts).astype(np.int64, copy=False) if parts else np.zeros(0, dtype=np.int64)


# --------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Strategy:
    """A registered selection strategy.

    Attributes:
        name: registry key (``strategy=`` argument).
        summary: one line on what it keeps.
        needs_scores: reads the per-row difficulty ``scores``.
        needs_features: reads the per-row ``features`` ``(N, d)``.
        uses_seed: the result depends on ``seed``.
        cost: time and memory cost.
        options: the keyword options it accepts, with their defaults (options without a default,
            such as ``window``'s ``position``, are listed in :attr:`required_options`).
        run: the implementation (internal: takes the validated problem).
    """

    name: str
    summary: str
    needs_scores: bool
    needs_features: bool
    uses_seed: bool
    cost: str
    options: Mapping[str, Any]
    run: Callable[[_Problem], _Picked] = field(repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))

    @property
    def required_options(self) -> tuple[str, ...]:
        return tuple(k for k, v in self.options.items() if v is _REQUIRED)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        # pickled by name: unpickling returns the registered instance (and avoids pickling the
        # read-only options mapping, which the standard pickle cannot do)
        return _get_strategy, (self.name,)


_NORMALIZE = {"normalize": True}

#: name -> :class:`Strategy`. Read-only; the order is the order of the documentation.
STRATEGIES: Mapping[str, Strategy] = MappingProxyType(
    {
        s.name: s
        for s in (
            Strategy("interval", "D2C: ranks 0, k, 2k, ... of the difficulty order", True, False, False,
                     "O(N log N) time, O(N) memory", {}, _run_interval),
            Strategy("random", "m rows uniformly at random", False, False, True,
                     "O(N log C) time, O(N) memory", {}, _run_random),
            Strategy("min", "the m easiest rows", True, False, False,
                     "O(N log N) time, O(N) memory", {}, _run_min),
            Strategy("max", "the m hardest rows", True, False, False,
                     "O(N log N) time, O(N) memory", {}, _run_max),
            Strategy("window", "m contiguous difficulty ranks at relative position q", True, False, False,
                     "O(N log N) time, O(N) memory", {"position": _REQUIRED}, _run_window),
            Strategy("medium", "m contiguous ranks centred on the median difficulty", True, False, False,
                     "O(N log N) time, O(N) memory", {}, _run_medium),
            Strategy("ccs", "CCS per class: hard cutoff, equal-width strata, coverage allocation", True,
                     False, True, "O(N log N + C K log K) time, O(N) memory",
                     {"cutoff": 0.1, "num_strata": 50}, _run_ccs),
            Strategy("herding", "running mean of the picks approaches the class mean", False, True,
                     False, "O(N m d) time, O(max n_c d) memory", _NORMALIZE, _run_herding),
            Strategy("kcenter", "greedy farthest-point cover (k-center)", False, True, True,
                     "O(N m d) time, O(max n_c d) memory", _NORMALIZE, _run_kcenter),
            Strategy("moderate", "distance to the class median closest to its median", False, True,
                     False, "O(N d + N log N) time, O(max n_c d) memory", _NORMALIZE, _run_moderate),
            Strategy("stratified", "the centre rank of each of m equal difficulty strata", True, False,
                     False, "O(N log N) time, O(N) memory", {}, _run_stratified),
            Strategy("kmeans", "k-means with k = m per class, the row nearest each centroid", False, True,
                     True, "O(I N m d) time (I Lloyd iterations), O(max n_c (d + m)) memory",
                     {**_NORMALIZE, "max_iter": 100}, _run_kmeans),
            Strategy("alignment", "moment matching to the class: greedy build + swap passes", False, True,
                     False, "O((1 + P) N m d) time (P swap passes), O(max n_c d) memory",
                     {**_NORMALIZE, "std_weight": 1.0, "max_passes": 10}, _run_alignment),
        )
    }
)  # fmt: skip


# --------------------------------------------------------------------------------------
# argument checks (all run before any work)
# --------------------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_ratio(ratio: Any) -> float:
    if isinstance(ratio, (bool, np.bool_)) or not isinstance(ratio, (int, float, np.integer, np.floating)):
        raise TypeError(f"ratio must be a number in (0, 1], got {ratio!r}")
    if not 0.0 < float(ratio) <= 1.0:  # also rejects NaN
        raise ValueError(f"ratio must lie in (0, 1] (a fraction of the dataset), got {ratio!r}")
    return float(ratio)


def _get_strategy(strategy: Any) -> Strategy:
    if isinstance(strategy, Strategy):
        strategy = strategy.name
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; known strategies: {', '.join(STRATEGIES)}")
    return STRATEGIES[strategy]


def _check_options(strategy: Strategy, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(kwargs) - set(strategy.options))
    if unknown:
        accepted = ", ".join(strategy.options) or "none"
        raise TypeError(
            f"strategy {strategy.name!r} got unexpected option(s) {', '.join(unknown)}; it accepts: {accepted}"
        )
    options = {**strategy.options, **kwargs}
    for name in strategy.required_options:
        if options[name] is _REQUIRED:
            raise TypeError(f"strategy {strategy.name!r} needs the option {name}= (see its docstring)")
    if "position" in options:
        q = options["position"]
        if isinstance(q, (bool, np.bool_)) or not isinstance(q, (int, float, np.integer, np.floating)):
            raise TypeError(f"position must be a number in [0, 1], got {q!r}")
        if not 0.0 <= float(q) <= 1.0:
            raise ValueError(f"position must lie in [0, 1] (0 = easiest, 1 = hardest), got {q!r}")
        options["position"] = float(q)
    if "cutoff" in options:
        cut = options["cutoff"]
        if isinstance(cut, (bool, np.bool_)) or not isinstance(cut, (int, float, np.integer, np.floating)):
            raise TypeError(f"cutoff must be a number in [0, 1), got {cut!r}")
        if not 0.0 <= float(cut) < 1.0:
            raise ValueError(
                f"cutoff (fraction of the hardest rows dropped per class) must lie in [0, 1), got {cut!r}"
            )
        options["cutoff"] = float(cut)
    if "num_strata" in options:
        k = options["num_strata"]
        check_positive_int(k, "num_strata")
        options["num_strata"] = int(k)
    if "max_iter" in options:
        options["max_iter"] = check_positive_int(options["max_iter"], "max_iter")
    if "max_passes" in options:
        options["max_passes"] = check_non_negative_int(options["max_passes"], "max_passes")
    if "std_weight" in options:
        w = options["std_weight"]
        if isinstance(w, (bool, np.bool_)) or not isinstance(w, (int, float, np.integer, np.floating)):
            raise TypeError(f"std_weight must be a number >= 0, got {w!r}")
        if not (math.isfinite(float(w)) and float(w) >= 0.0):
            raise ValueError(f"std_weight must be a finite number >= 0, got {w!r}")
        options["std_weight"] = float(w)
    if "normalize" in options:
        if not isinstance(options["normalize"], (bool, np.bool_)):
            raise TypeError(f"normalize must be True or False, got {options['normalize']!r}")
        options["normalize"] = bool(options["normalize"])
    return options


@dataclass(frozen=True)
class _Config:
    """Validated, data-independent arguments (shared by :func:`select` and :class:`Selector`)."""

    strategy: Strategy
    images_per_class: int | None
    ratio: float | None
    interval: int | Literal["auto", "paper"]
    seed: int
    num_classes: int | None
    options: Mapping[str, Any]


def _check_config(
    strategy: Any,
    images_per_class: Any,
    ratio: Any,
    interval: Any,
    seed: Any,
    num_classes: Any,
    kwargs: Mapping[str, Any],
) -> _Config:
    strat = _get_strategy(strategy)
    options = _check_options(strat, kwargs)
    if (images_per_class is None) == (ratio is None):
        raise ValueError(
            "pass exactly one of images_per_class (the per-class budget m) or ratio (a fraction of the "
            f"dataset, turned into m = round(ratio * N / C)); got images_per_class={images_per_class!r}, "
            f"ratio={ratio!r}"
        )
    if images_per_class is not None and (not _is_int(images_per_class) or images_per_class < 1):
        raise ValueError(f"images_per_class must be an integer >= 1, got {images_per_class!r}")
    if ratio is not None:
        ratio = _check_ratio(ratio)
    if interval not in INTERVAL_MODES and (not _is_int(interval) or interval < 1):
        raise ValueError(f'interval must be "auto", "paper" or an integer stride >= 1, got {interval!r}')
    if interval != "auto" and strat.name != "interval":
        logger.warning("interval=%r is ignored by strategy %r", interval, strat.name)
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if num_classes is not None and (not _is_int(num_classes) or num_classes < 1):
        raise ValueError(f"num_classes must be a positive integer or None, got {num_classes!r}")
    return _Config(
        strategy=strat,
        images_per_class=None if images_per_class is None else int(images_per_class),
        ratio=ratio,
        interval=interval if interval in INTERVAL_MODES else int(interval),
        seed=int(seed),
        num_classes=None if num_classes is None else int(num_classes),
        options=options,
    )


def _check_labels(labels: Any, num_classes: int | None) -> tuple[np.ndarray, int]:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"labels must be 1-D (one class id per row), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("labels is empty: nothing to select from")
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"labels must hold integer class ids, got dtype {arr.dtype}")
    negative = np.flatnonzero(arr < 0)
    if negative.size:
        raise ValueError(
            f"labels must be >= 0; {negative.size} are negative, the first is {arr[negative[0]]} at index "
            f"{negative[0]} (unlabelled rows, such as ImageNet's test split with label -1, cannot be selected "
            "per class: drop them first)"
        )
    top = int(arr.max())
    if num_classes is None:
        num_classes = top + 1
    elif top >= num_classes:
        bad = np.flatnonzero(arr >= num_classes)
        raise ValueError(
            f"labels must lie in [0, num_classes={num_classes}); {bad.size} do not, the first is "
            f"{arr[bad[0]]} at index {bad[0]}"
        )
    return arr.astype(np.int64, copy=False), num_classes


def _check_real(name: str, arr: np.ndarray) -> None:
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")


def _check_scores(scores: Any, n: int) -> np.ndarray:
    if scores is None:
        raise ValueError("scores are required by this strategy (one difficulty value per row); got None")
    arr = np.asarray(scores)
    if arr.ndim != 1:
        raise ValueError(f"scores must be 1-D (one difficulty per row), got shape {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(
            f"scores and labels must have the same length, got {arr.shape[0]} scores and {n} labels"
        )
    _check_real("scores", arr)
    if np.issubdtype(arr.dtype, np.floating):
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            raise ValueError(
                f"scores must be finite; {bad.size} are NaN or inf, the first at index {bad[0]} "
                f"({arr[bad[0]]}): rescore or drop those rows"
            )
    return arr


def _check_features(features: Any, n: int, strategy: str) -> np.ndarray:
    if features is None:
        raise ValueError(
            f"strategy {strategy!r} needs features: pass features= as an (N, d) array (e.g. pooled "
            "embeddings of a vision encoder)"
        )
    arr = np.asarray(features)
    if arr.ndim != 2:
        raise ValueError(
            f"features must be 2-D (N rows, d dims), got shape {arr.shape}; pool or flatten per-token "
            "features to one vector per row"
        )
    if arr.shape[0] != n:
        raise ValueError(
            f"features and labels must have the same length, got {arr.shape[0]} rows and {n} labels"
        )
    _check_real("features", arr)
    if np.issubdtype(arr.dtype, np.floating):
        for start in range(0, n, _FINITE_CHECK_ROWS):  # in blocks: no (N, d) temporary
            bad = ~np.isfinite(arr[start : start + _FINITE_CHECK_ROWS]).all(axis=1)
            if bad.any():
                row = start + int(np.argmax(bad))
                raise ValueError(f"features must be finite; row {row} holds NaN or inf")
    return arr


def _check_length(name: str, values: Any, n: int) -> None:
    if values is not None and len(values) != n:
        raise ValueError(f"{name} and labels must have the same length, got {len(values)} and {n}")


# --------------------------------------------------------------------------------------
# public entry points
# --------------------------------------------------------------------------------------


def _select(config: _Config, scores: Any, labels: Any, features: Any) -> SelectionResult:
    strat = config.strategy
    labels, num_classes = _check_labels(labels, config.num_classes)
    n = labels.size
    if strat.needs_scores:
        scores = _check_scores(scores, n)
    else:
        _check_length("scores", scores, n)
        scores = None
    if strat.needs_features:
        features = _check_features(features, n, strat.name)
    else:
        _check_length("features", features, n)
        features = None

    sizes = np.bincount(labels, minlength=num_classes).astype(np.int64)
    if config.images_per_class is not None:
        m = config.images_per_class
    else:
        # C counts the classes that have rows: a ratio is a fraction of the data, not of the label space
        m = images_per_class_from_ratio(config.ratio, n, max(1, int(np.count_nonzero(sizes))))
    k, n_ref = None, None
    if strat.name == "interval":
        if config.interval in INTERVAL_MODES:
            n_ref = float(np.median(sizes[sizes > 0]))
            k = (auto_interval if config.interval == "auto" else paper_interval)(m, n_ref)
        else:
            k = config.interval
    empty = int(np.count_nonzero(sizes == 0))
    if empty:
        logger.warning(
            "%d of %d classes have no rows (they are reported in the shortfall)", empty, num_classes
        )

    problem = _Problem(labels, scores, features, num_classes, sizes, m, config.seed, k, config.options)
    picked = strat.run(problem)

    params: dict[str, Any] = {
        "strategy": strat.name,
        "images_per_class": m,
        "ratio": config.ratio,
        "seed": config.seed,
        "num_classes": num_classes,
        "num_samples": int(n),
        "kwargs": dict(config.options),
    }
    if strat.name == "interval":
        params["interval"] = int(k)
        params["interval_requested"] = config.interval
        if n_ref is not None:
            params["auto_reference_class_size"] = n_ref
    result = SelectionResult(
        indices=np.unique(picked.indices),
        images_per_class=m,
        counts=picked.counts.astype(np.int64),
        class_sizes=sizes,
        strides=picked.strides,
        shortfall=np.flatnonzero(picked.shortfall).astype(np.int64),
        strategy=strat.name,
        params=params,
    )
    if result.total != int(result.counts.sum()):  # an internal invariant, not a user error
        raise RuntimeError(
            f"strategy {strat.name!r} returned {result.total} unique rows but counts that sum to "
            f"{int(result.counts.sum())}; please report this as a bug"
        )
    logger.info(result.summary())
    return result


def select(
    scores: Sequence[float] | np.ndarray | None,
    labels: Sequence[int] | np.ndarray,
    *,
    images_per_class: int | None = None,
    ratio: float | None = None,
    strategy: str = "interval",
    interval: int | Literal["auto", "paper"] = "auto",
    features: np.ndarray | None = None,
    seed: int = 0,
    num_classes: int | None = None,
    **strategy_kwargs: Any,
) -> SelectionResult:
    """Select ``m`` rows per class with one of :data:`STRATEGIES`.

    Args:
        scores: ``(N,)`` real difficulty per row, higher = harder (needed by ``interval``,
            ``min``, ``max``, ``window``, ``medium``, ``ccs``, ``stratified``; may be ``None`` otherwise).
        labels: ``(N,)`` integer class ids in ``[0, C)``.
        images_per_class: the per-class budget ``m`` (exactly one of this and ``ratio``).
        ratio: a fraction of the dataset in ``(0, 1]``; ``m = max(1, round(ratio * N / C))``
            (see :func:`images_per_class_from_ratio`).
        strategy: a key of :data:`STRATEGIES`.
        interval: ``interval`` only: the stride ``k >= 1``, ``"auto"`` (:func:`auto_interval` of the
            median class size: the picks span two thirds of the class) or ``"paper"``
            (:func:`paper_interval`: the paper's stride-to-budget proportion, k = 96 at 10 of 1,281).
        features: ``(N, d)`` real features (``herding``, ``kcenter``, ``moderate``, ``kmeans``,
            ``alignment``).
        seed: non-negative integer; class ``c`` draws from ``np.random.default_rng([seed, c])``.
        num_classes: ``C``; default ``max(labels) + 1``. Classes without rows get 0 rows and
            appear in the shortfall.
        **strategy_kwargs: the strategy's options: ``position`` (``window``), ``cutoff`` and
            ``num_strata`` (``ccs``), ``normalize`` (feature strategies, default True: encoder
            embeddings are compared by direction, and their norms mostly track nuisances such
            as contrast; pass False for raw Euclidean geometry), ``max_iter`` (``kmeans``),
            ``std_weight`` and ``max_passes`` (``alignment``).

    Returns:
        a :class:`SelectionResult`; ``result.indices`` are sorted unique int64 positions.

    Raises:
        ValueError / TypeError: naming the offending argument, before any work is done.

    Example::

        >>> import numpy as np
        >>> scores = np.array([0.5, 0.1, 0.9, 0.3, 0.7, 0.2])
        >>> labels = np.array([0, 0, 0, 1, 1, 1])
        >>> select(scores, labels, images_per_class=2, interval=2).indices  # ranks 0 and 2
        array([1, 2, 4, 5])
    """
    config = _check_config(strategy, images_per_class, ratio, interval, seed, num_classes, strategy_kwargs)
    return _select(config, scores, labels, features)


def select_indices(
    scores: Sequence[float] | np.ndarray | None,
    labels: Sequence[int] | np.ndarray,
    *,
    images_per_class: int | None = None,
    ratio: float | None = None,
    strategy: str = "interval",
    interval: int | Literal["auto", "paper"] = "auto",
    features: np.ndarray | None = None,
    seed: int = 0,
    num_classes: int | None = None,
    **strategy_kwargs: Any,
) -> np.ndarray:
    """:func:`select` and return only the ``(M,)`` sorted unique int64 ``indices``."""
    return select(
        scores,
        labels,
        images_per_class=images_per_class,
        ratio=ratio,
        strategy=strategy,
        interval=interval,
        features=features,
        seed=seed,
        num_classes=num_classes,
        **strategy_kwargs,
    ).indices


# --------------------------------------------------------------------------------------
# datasets filter
# --------------------------------------------------------------------------------------


class Selector:
    """A :func:`select` that reads its inputs from a ``datasets.Dataset`` and works as a filter.

    ``fit`` reads the label (and score / feature) columns through Arrow, not Python lists, and
    keeps the :class:`SelectionResult` as ``result_``. The fitted selector is a batched
    filter function::

        selector = Selector("interval", images_per_class=10).fit(ds)
        sub = ds.filter(selector, with_indices=True, batched=True)   # == selector.select(ds)

    Both keep exactly the rows ``ds.select(select_indices(...))`` keeps, in dataset order;
    ``selector.select(ds)`` is faster (it writes no new Arrow file).

    Args:
        strategy, images_per_class, ratio, interval, seed, num_classes, **kwargs: as for
            :func:`select`; ``num_classes`` defaults to the label column's ``ClassLabel``.
        score_column: column of difficulty scores (strategies that need scores).
        label_column: column of integer class ids.
        feature_column: column of one feature vector per row (``herding``, ``kcenter``,
            ``moderate``): a fixed- or variable-length list of numbers.
    """

    def __init__(
        self,
        strategy: str = "interval",
        images_per_class: int | None = None,
        ratio: float | None = None,
        interval: int | Literal["auto", "paper"] = "auto",
        seed: int = 0,
        score_column: str = "difficulty",
        label_column: str = "label",
        feature_column: str | None = None,
        num_classes: int | None = None,
        **kwargs: Any,
    ) -> None:
        self._config = _check_config(strategy, images_per_class, ratio, interval, seed, num_classes, kwargs)
        if self._config.strategy.needs_features and feature_column is None:
            raise ValueError(
                f"strategy {self._config.strategy.name!r} needs features: pass feature_column= (a column "
                "holding one feature vector per row)"
            )
        self.strategy = self._config.strategy.name
        self.images_per_class = images_per_class
        self.ratio = ratio
        self.interval = interval
        self.seed = seed
        self.score_column = score_column
        self.label_column = label_column
        self.feature_column = feature_column
        self.num_classes = num_classes
        self.kwargs = dict(kwargs)
        self._keep: np.ndarray | None = None  # (N,) bool, set by fit
        self._labels: np.ndarray | None = None  # (N,) fitted labels, to recognise the dataset

    def __repr__(self) -> str:
        fitted = "unfitted" if self._keep is None else f"fitted on {self._keep.size} rows"
        budget = f"images_per_class={self.images_per_class}" if self.ratio is None else f"ratio={self.ratio}"
        return f"Selector(strategy={self.strategy!r}, {budget}, interval={self.interval!r}, seed={self.seed}; {fitted})"

    @property
    def result_(self) -> SelectionResult:
        """The :class:`SelectionResult` of the last :meth:`fit`."""
        if self._keep is None:
            raise AttributeError("result_ is set by fit(): call selector.fit(dataset) first")
        return self._result

    def fit(self, dataset: Any) -> Selector:
        """Read the columns of ``dataset`` (in its row order) and select. Returns ``self``."""
        _check_dataset(dataset, "fit")
        strat = self._config.strategy
        needed = [self.label_column]
        if strat.needs_scores:
            needed.append(self.score_column)
        if strat.needs_features:
            needed.append(self.feature_column)
        missing = [c for c in needed if c not in dataset.column_names]
        if missing:
            raise ValueError(
                f"column(s) {missing} not in the dataset (columns: {dataset.column_names}); set "
                "label_column= / score_column= / feature_column= to the right names"
            )
        table = dataset.with_format("arrow")
        labels = _read_column(table, self.label_column, "labels")
        scores = _read_column(table, self.score_column, "scores") if strat.needs_scores else None
        features = _read_column(table, self.feature_column, "features") if strat.needs_features else None

        config = self._config
        if config.num_classes is None:
            class_label = dataset.features[self.label_column]
            declared = getattr(class_label, "num_classes", None)  # ClassLabel
            if declared is not None:
                config = dataclasses.replace(config, num_classes=int(declared))
        try:
            result = _select(config, scores, labels, features)
        except (TypeError, ValueError) as err:
            raise type(err)(f"{err} (columns: label={self.label_column!r}, score={self.score_column!r}, "
                            f"feature={self.feature_column!r})") from err  # fmt: skip
        keep = np.zeros(labels.size, dtype=bool)
        keep[result.indices] = True
        self._result, self._keep = result, keep
        self._labels = labels.astype(_label_dtype(result.num_classes))
        return self

    def _check_fitted(self) -> tuple[np.ndarray, np.ndarray]:
        if self._keep is None or self._labels is None:
            raise RuntimeError("this Selector is not fitted: call selector.fit(dataset) before filtering")
        return self._keep, self._labels

    def __call__(self, batch: Any, indices: int | Sequence[int]) -> list[bool] | bool:
        """Filter function: ``ds.filter(selector, with_indices=True, batched=True)``.

        Args:
            batch: the batch (only its label column is read, to check that this is the dataset the
                selector was fitted on; with ``input_columns=`` the check is skipped).
            indices: the rows' positions in the dataset (a list, or an int when not batched).

        Returns:
            one bool per row: whether the row is selected.
        """
        keep, labels = self._check_fitted()
        single = _is_int(indices)
        idx = np.atleast_1d(np.asarray(indices, dtype=np.int64))
        if idx.size and (idx.min() < 0 or idx.max() >= keep.size):
            bad = int(idx[(idx < 0) | (idx >= keep.size)][0])
            raise ValueError(
                f"row {bad} is outside the {keep.size} rows this Selector was fitted on: the dataset being "
                "filtered is not the fitted one (another length); call fit() on it first"
            )
        if isinstance(batch, Mapping) and self.label_column in batch:
            seen = np.asarray(batch[self.label_column] if not single else [batch[self.label_column]])
            if seen.shape == idx.shape and np.issubdtype(seen.dtype, np.integer):
                differs = np.flatnonzero(seen != labels[idx])
                if differs.size:
                    i = differs[0]
                    raise ValueError(
                        f"row {idx[i]} has {self.label_column}={seen[i]} but the fitted dataset had "
                        f"{labels[idx[i]]} there: the dataset being filtered is not the fitted one (shuffled, "
                        "subset or another split); call fit() on it first"
                    )
        return bool(keep[idx[0]]) if single else keep[idx].tolist()

    def select(self, dataset: Any) -> Any:
        """``dataset.select(result_.indices)`` after checking it is the fitted dataset."""
        keep, labels = self._check_fitted()
        _check_dataset(dataset, "select")
        if len(dataset) != keep.size:
            raise ValueError(
                f"the dataset has {len(dataset)} rows but this Selector was fitted on {keep.size}; call fit() on it"
            )
        if self.label_column in dataset.column_names:
            now = _read_column(dataset.with_format("arrow"), self.label_column, "labels")
            differs = np.flatnonzero(now != labels)
            if differs.size:
                raise ValueError(
                    f"row {differs[0]} has {self.label_column}={now[differs[0]]} but the fitted dataset had "
                    f"{labels[differs[0]]}: this is not the fitted dataset; call fit() on it"
                )
        return dataset.select(self._result.indices)


def _check_dataset(dataset: Any, method: str) -> None:
    if not (hasattr(dataset, "with_format") and hasattr(dataset, "select") and hasattr(dataset, "__len__")):
        kind = type(dataset).__name__
        hint = (
            "pick a split (ds['train'])"
            if kind == "DatasetDict"
            else "for an IterableDataset, collect the columns and call select_indices"
        )
        raise TypeError(f"Selector.{method} needs a map-style datasets.Dataset, got {kind}: {hint}")


def _read_column(table_view: Any, column: str, what: str) -> np.ndarray:
    """One column of an Arrow-formatted dataset as a NumPy array, in the dataset's row order.

    Scalars give ``(N,)``; list columns (one vector per row) give ``(N, d)``.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    col = table_view[column]  # pa.ChunkedArray in the view's order (select/shuffle applied)
    if col.null_count:
        row = int(pc.index(pc.is_null(col), True).as_py())
        raise ValueError(f"column {column!r} ({what}) has a missing value at row {row}; drop or fix that row")
    arr = col.combine_chunks()
    kind = arr.type
    if pa.types.is_fixed_size_list(kind) or pa.types.is_list(kind) or pa.types.is_large_list(kind):
        lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
        if lengths.size and (lengths != lengths[0]).any():
            row = int(np.flatnonzero(lengths != lengths[0])[0])
            raise ValueError(
                f"column {column!r} ({what}) must hold vectors of one length; row 0 has {lengths[0]}, "
                f"row {row} has {lengths[row]}"
            )
        values = arr.flatten()  # honours slicing offsets
        if values.null_count:
            raise ValueError(f"column {column!r} ({what}) holds missing values inside its vectors")
        if pa.types.is_list(values.type) or pa.types.is_fixed_size_list(values.type):
            raise ValueError(
                f"column {column!r} ({what}) holds nested lists; store one flat vector per row (pool tokens)"
            )
        width = int(lengths[0]) if lengths.size else 0
        return values.to_numpy(zero_copy_only=False).reshape(len(arr), width)
    if pa.types.is_dictionary(kind):
        raise TypeError(f"column {column!r} ({what}) is dictionary-encoded; cast it to integers first")
    return arr.to_numpy(zero_copy_only=False)
