"""Selectors from D2C's successors, on one class's arrays (pure NumPy).

The registry entries ``stratified``, ``kmeans`` and ``alignment`` of
:data:`d2c_hf.selection.strategies.STRATEGIES` call these functions class by class; they are public so
that a single class can be selected, inspected or tested directly.

* :func:`stratified_ranks`: difficulty-*stratified* interval sampling, the centre rank of each of
  ``m`` equal strata of the difficulty order. It covers the whole difficulty range of a class (stride
  ``n / m``), unlike D2C's interval sampling, whose picks ``0, k, ..., (m-1)k`` never reach the
  hardest ranks when ``(m-1)k + 1 < n`` (an implicit hard cutoff).
* :func:`kmeans_nearest_order`: per-class k-means with ``k = m`` in a feature space, keeping the
  sample nearest each centroid (after Briq et al., "Data Pruning in Generative Diffusion Models",
  arXiv 2411.12523).
* :func:`alignment_order`: distribution alignment of the subset to the whole class in feature space
  by moment matching, built greedily and refined by swaps (in the spirit of GADC, "Geometry-Aware
  Dataset Condensation for Diffusion Model Training"); :func:`alignment_objective` is the objective.

All functions are deterministic: ties go to the lowest position, and the only random choice
(k-means++ seeding) draws from the generator it is given. The global NumPy RNG is never touched.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "alignment_objective",
    "alignment_order",
    "kmeans_fit",
    "kmeans_nearest_order",
    "stratified_ranks",
]


def _as_features(x: np.ndarray, name: str = "x") -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n rows, d dims), got shape {arr.shape}")
    return arr


def _check_budget(m: int, name: str = "m") -> int:
    if isinstance(m, (bool, np.bool_)) or not isinstance(m, (int, np.integer)) or m < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {m!r}")
    return int(m)


# --------------------------------------------------------------------------------------
# stratified interval sampling
# --------------------------------------------------------------------------------------


def stratified_ranks(n: int, m: int) -> np.ndarray:
    """The centre rank of each of ``m`` equal strata of ``n`` difficulty ranks.

    Rank ``r`` (0-based, easiest first) covers ``[r, r + 1)`` of the rank axis ``[0, n)``; stratum
    ``i`` is ``[i n / m, (i + 1) n / m)`` and its centre ``(i + 0.5) n / m`` falls in rank::

        r_i = floor((i + 0.5) * n / m) = ((2 i + 1) * n) // (2 m),   i = 0 .. m-1

    (exact integer arithmetic). The picks are spaced by the stride ``n / m`` (``floor`` or ``ceil`` of
    it), span the whole class with no cutoff, and are symmetric: ``r_{m-1-i} = n - 1 - r_i`` when
    ``(2 i + 1) n / (2 m)`` is not an integer (n = 10, m = 2 gives ranks 2 and 7, the middles of
    ranks 0-4 and 5-9). ``m = 1`` gives the median rank ``n // 2``; ``m >= n`` gives every rank.

    Args:
        n: class size (>= 0).
        m: budget (>= 0).

    Returns:
        ``(min(m, n),)`` int64 strictly increasing ranks in ``[0, n)``.
    """
    n, m = _check_budget(n, "n"), _check_budget(m)
    if m >= n:
        return np.arange(n, dtype=np.int64)
    i = np.arange(m, dtype=np.int64)
    return ((2 * i + 1) * n) // (2 * m)


# --------------------------------------------------------------------------------------
# k-means nearest to centroid
# --------------------------------------------------------------------------------------


def _sq_dists(x: np.ndarray, sq_norms: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """``(n, k)`` squared Euclidean distances, clipped at 0."""
    c_sq = np.einsum("ij,ij->i", centres, centres)
    return np.maximum(sq_norms[:, None] - 2.0 * (x @ centres.T) + c_sq[None, :], 0.0)


def _kmeans_pp(x: np.ndarray, sq_norms: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): positions of the ``k`` initial centres.

    The first centre is uniform; each next one is drawn with probability proportional to the squared
    distance to the nearest centre so far. When every remaining point coincides with a centre (fewer
    than ``k`` distinct points), the next centre is drawn uniformly from the rows not yet chosen.
    """
    n = x.shape[0]
    chosen = np.empty(k, dtype=np.int64)
    chosen[0] = rng.integers(n)
    d2 = _sq_dists(x, sq_norms, x[chosen[:1]])[:, 0]
    d2[chosen[0]] = 0.0
    for t in range(1, k):
        total = float(d2.sum())
        if total > 0.0:
            p = int(np.searchsorted(np.cumsum(d2), rng.random() * total, side="right"))
            p = min(p, n - 1)
            if d2[p] == 0.0:  # float round-off at the end of the cumulative sum
                p = int(np.flatnonzero(d2 > 0.0)[-1])
        else:
            free = np.setdiff1d(np.arange(n), chosen[:t])
            p = int(free[rng.integers(free.size)])
        chosen[t] = p
        np.minimum(d2, _sq_dists(x, sq_norms, x[p : p + 1])[:, 0], out=d2)
        d2[chosen[: t + 1]] = 0.0
    return chosen


def kmeans_fit(
    x: np.ndarray, k: int, seed: int | Sequence[int] | np.random.Generator = 0, max_iter: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """K-means: k-means++ seeding with ``np.random.default_rng(seed)`` (a ``Generator`` is used as is), then
    Lloyd iterations: assign every row to its nearest centroid (ties: lowest centroid index), move every
    centroid to the mean of its rows (a centroid that loses all its rows stays where it is), until the
    assignment no longer changes or ``max_iter`` iterations have run.

    Args:
        x: ``(n, d)`` real features, ``n >= k >= 1``.
        k: number of clusters.

    Returns:
        ``(assign (n,) int64, centres (k, d) float64)``. Cost: O(I n k d) time, O(n k) memory.
    """
    x = _as_features(x)
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= k <= n rows, got k={k} for n={n}")
    rng = np.random.default_rng(seed)
    sq_norms = np.einsum("ij,ij->i", x, x)
    centres = x[_kmeans_pp(x, sq_norms, k, rng)].copy()
    assign = np.full(n, -1, dtype=np.int64)
    for _ in range(int(max_iter)):
        new = np.argmin(_sq_dists(x, sq_norms, centres), axis=1)
        if np.array_equal(new, assign):
            break
        assign = new
        members = np.zeros((k, n))
        members[assign, np.arange(n)] = 1.0
        sums = members @ x  # (k, d) per-cluster sums: a BLAS product, ~10x faster than np.add.at
        counts = np.bincount(assign, minlength=k)
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None]
    else:
        logger.debug("k-means stopped after max_iter=%d Lloyd iterations before converging", max_iter)
    return assign, centres


def kmeans_nearest_order(
    x: np.ndarray,
    m: int,
    seed: int | Sequence[int] | np.random.Generator = 0,
    max_iter: int = 100,
) -> np.ndarray:
    """K-means with ``k = m`` on one class, keeping the sample nearest each centroid.

    1. **k-means++ seeding** with ``np.random.default_rng(seed)`` (a ``Generator`` is used as is);
    2. **Lloyd iterations**: assign every row to its nearest centroid (ties: lowest centroid index),
       move every centroid to the mean of its rows (a centroid that loses all its rows stays where
       it is), until the assignment no longer changes or ``max_iter`` iterations have run;
    3. **nearest samples**: the centroids are visited in increasing distance to their nearest row
       (ties: centroid index), and each keeps its nearest row not kept yet (ties: lowest position),
       so the ``m`` picks are distinct even when two centroids share a nearest row.

    Briq et al. (arXiv 2411.12523; code read: github.com/briqr/diffusion_data_pruning at commit
    2343e7efd3a6b6efc21a0685947fea15278bf74c, ``pruning_clustering.py`` and
    ``cluster_features_largemem.py``) cluster the *whole* dataset (e.g. 1000 clusters for ImageNet,
    random initial centres, a fixed 100 Lloyd iterations) and keep a fraction of every cluster
    nearest its centre. Here the clustering is per class with one cluster per kept image (class
    balance is then exact and the budget ``m`` is the number of clusters), seeded by k-means++ and
    run to convergence.

    Args:
        x: ``(n, d)`` real features of one class.
        m: number of picks (``min(m, n)`` are returned; ``m >= n`` returns every row in order).
        seed: seed (or generator) of the k-means++ draws.
        max_iter: the most Lloyd iterations (>= 1).

    Returns:
        ``(min(m, n),)`` distinct int64 positions into ``x``, in the order the centroids were visited.

    Cost: O(I n m d) time for I Lloyd iterations (one ``(n, d) @ (d, m)`` product each) plus O(n m d)
    seeding; O(n m) memory for the distances.
    """
    x = _as_features(x)
    m = _check_budget(m)
    if isinstance(max_iter, (bool, np.bool_)) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    n = x.shape[0]
    if m >= n:
        return np.arange(n, dtype=np.int64)
    if m == 0:
        return np.zeros(0, dtype=np.int64)
    _, centres = kmeans_fit(x, m, seed, max_iter)
    sq_norms = np.einsum("ij,ij->i", x, x)
    d2 = _sq_dists(x, sq_norms, centres)  # (n, m)
    visit = np.lexsort((np.arange(m), d2.min(axis=0)))
    taken = np.zeros(n, dtype=bool)
    out = np.empty(m, dtype=np.int64)
    for t, c in enumerate(visit):
        column = np.where(taken, np.inf, d2[:, c])
        p = int(np.argmin(column))
        out[t], taken[p] = p, True
    return out


# --------------------------------------------------------------------------------------
# distribution alignment (moment matching, greedy + swaps)
# --------------------------------------------------------------------------------------


def _moment_costs(
    sums: np.ndarray, sq_sums: np.ndarray, t: int, sigma: np.ndarray, std_weight: float
) -> np.ndarray:
    """The objective of subsets of size ``t`` given their (centred) coordinate sums ``(..., d)`` and
    sums of squares; the last axis is reduced."""
    mean = sums / t
    var = np.maximum(sq_sums / t - mean * mean, 0.0)
    cost = np.einsum("...j,...j->...", mean, mean)
    if std_weight:
        gap = np.sqrt(var) - sigma
        cost = cost + std_weight * np.einsum("...j,...j->...", gap, gap)
    return cost


class _AddOneCosts:
    """``J(S + {j})`` for every row ``j`` at once, from the centred coordinate sums ``s`` and sums of
    squares ``q`` of a subset ``S`` of ``t - 1`` rows (``t`` = the size after adding ``j``).

    With ``c_j`` the centred row, ``mean_j = (s + c_j) / t`` and ``var_j = (q + c_j^2) / t - mean_j^2``
    (per dimension)::

        J_j = ||mean_j||^2 + w (sum_d var_jd - 2 sum_d sigma_d sqrt(var_jd) + ||sigma||^2)

    The norms and sums are matrix-vector products; only the square roots need the ``(n, d)`` pass,
    done in two preallocated buffers (no temporaries per step).
    """

    def __init__(self, centred: np.ndarray, std_weight: float) -> None:
        self.c = centred
        self.c2 = centred * centred
        self.row_sq = self.c2.sum(axis=1)
        self.sigma = np.sqrt(self.c2.mean(axis=0))
        self.sigma_sq = float(self.sigma @ self.sigma)
        self.w = std_weight
        if std_weight:
            self.buf_a = np.empty_like(centred)
            self.buf_b = np.empty_like(centred)

    def __call__(self, s: np.ndarray, q: np.ndarray, t: int) -> np.ndarray:
        mean_sq = (float(s @ s) + 2.0 * (self.c @ s) + self.row_sq) / (t * t)
        if not self.w:
            return mean_sq
        total_var = (float(q.sum()) + self.row_sq) / t - mean_sq
        a, b = self.buf_a, self.buf_b
        np.add(self.c, s, out=a)
        np.multiply(a, a, out=a)
        a *= 1.0 / (t * t)  # mean_j^2 per dimension
        np.add(self.c2, q, out=b)
        b *= 1.0 / t
        np.subtract(b, a, out=b)
        np.maximum(b, 0.0, out=b)
        np.sqrt(b, out=b)  # sigma_S per dimension, for every candidate j
        return mean_sq + self.w * (total_var - 2.0 * (b @ self.sigma) + self.sigma_sq)


def alignment_objective(x: np.ndarray, subset: Sequence[int] | np.ndarray, std_weight: float = 1.0) -> float:
    """The moment-matching objective that :func:`alignment_order` minimises.

    With ``mu``, ``sigma`` the per-dimension mean and standard deviation of all ``n`` rows of ``x``
    and ``mu_S``, ``sigma_S`` those of the rows in ``subset`` (population moments, ``ddof = 0``, of the
    two empirical distributions)::

        J(S) = || mu_S - mu ||^2  +  std_weight * || sigma_S - sigma ||^2

    With ``std_weight = 1`` this is the squared 2-Wasserstein distance between the diagonal Gaussians
    fitted to the subset and to the class, in the units of the features squared (GADC's moment term,
    without its extra weight on the means). ``J >= 0``, and ``J = 0`` exactly when the subset has the
    class's mean and per-dimension spread. A one-row subset has ``sigma_S = 0``.

    Args:
        x: ``(n, d)`` real features of one class.
        subset: positions into ``x`` (at least one, distinct).
        std_weight: weight of the spread term (>= 0; 0 matches the mean only, as herding does).
    """
    x = _as_features(x)
    rows = np.asarray(subset, dtype=np.int64)
    if rows.ndim != 1 or rows.size == 0:
        raise ValueError("subset must be a non-empty 1-D sequence of positions")
    if np.unique(rows).size != rows.size:
        raise ValueError("subset must not repeat a position")
    std_weight = _check_std_weight(std_weight)
    centred = x - x.mean(axis=0)
    sigma = np.sqrt(np.mean(centred * centred, axis=0))
    part = centred[rows]
    return float(_moment_costs(part.sum(axis=0), (part * part).sum(axis=0), rows.size, sigma, std_weight))


def _check_std_weight(value: float) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"std_weight must be a non-negative number, got {value!r}")
    if not (np.isfinite(value) and value >= 0):
        raise ValueError(f"std_weight must be a finite number >= 0, got {value!r}")
    return float(value)


def alignment_order(x: np.ndarray, m: int, std_weight: float = 1.0, max_passes: int = 10) -> np.ndarray:
    """Distribution alignment of ``m`` rows of one class to the whole class, by moment matching.

    Minimises :func:`alignment_objective` ``J(S) = ||mu_S - mu||^2 + std_weight ||sigma_S - sigma||^2``
    over subsets of ``m`` rows:

    1. **greedy build**: ``S_0 = {}``, then for ``t = 1 .. m`` add the row ``j`` not in ``S`` that
       minimises ``J(S_{t-1} + {j})`` (the first pick is the row nearest the class mean);
    2. **swap refinement**: a *pass* visits the picked slots in order; for slot ``i`` it finds the
       unpicked row ``j`` minimising ``J(S - {S_i} + {j})`` and swaps when that lowers ``J`` by more
       than ``1e-12 * (1 + J)`` (round-off is not an improvement). Passes repeat until one makes no
       swap (``S`` is then a local optimum: no single swap lowers ``J``) or ``max_passes`` passes ran
       (``max_passes = 0``: greedy only).

    Ties go to the lowest position, so the result is deterministic (no seed is involved). All
    candidates of a step are scored at once from the running coordinate sums and sums of squares of the
    centred features (matrix-vector products and one in-place ``(n, d)`` square-root pass), so a step
    costs O(n d), not a re-evaluation of every candidate subset.

    After GADC (code read: github.com/2018cx/GADC at commit 61a1016adf3c4d327868bbdad82837aa4c3efb1d,
    ``selection/inception/select.py``), whose per-class objective adds to this moment term a
    one-sided partial entropic optimal-transport cost (Sinkhorn, O(m n) per candidate subset) and
    classifier terms (cross-entropy, a KL to the class's mean softmax), and whose refinement takes the
    best of all ``m (n - m)`` single swaps per iteration. Only the moment term is kept here: it needs
    no classifier and costs O(n d) per candidate step instead of a Sinkhorn solve per candidate.

    Args:
        x: ``(n, d)`` real features of one class.
        m: number of picks (``min(m, n)``; ``m >= n`` returns every row in order).
        std_weight: weight of the spread term (>= 0).
        max_passes: the most swap passes (>= 0).

    Returns:
        ``(min(m, n),)`` distinct int64 positions into ``x``: slot order (greedy order, with swapped
        slots replaced in place).

    Cost: O(m n d) for the greedy build and O(m n d) per swap pass (P passes: O((1 + P) m n d));
    O(n d) memory.
    """
    x = _as_features(x)
    m = _check_budget(m)
    std_weight = _check_std_weight(std_weight)
    if (
        isinstance(max_passes, (bool, np.bool_))
        or not isinstance(max_passes, (int, np.integer))
        or max_passes < 0
    ):
        raise ValueError(f"max_passes must be a non-negative integer, got {max_passes!r}")
    n = x.shape[0]
    if m >= n:
        return np.arange(n, dtype=np.int64)
    if m == 0:
        return np.zeros(0, dtype=np.int64)
    costs = _AddOneCosts(x - x.mean(axis=0), std_weight)  # J is translation invariant
    centred, squares = costs.c, costs.c2
    picked = np.zeros(n, dtype=bool)
    out = np.empty(m, dtype=np.int64)
    sums = np.zeros(x.shape[1])
    sq_sums = np.zeros(x.shape[1])
    current = np.inf
    for t in range(1, m + 1):
        cost = costs(sums, sq_sums, t)
        cost[picked] = np.inf
        p = int(np.argmin(cost))
        out[t - 1], picked[p] = p, True
        sums += centred[p]
        sq_sums += squares[p]
        current = float(cost[p])
    for _ in range(int(max_passes)):
        swapped = False
        for i in range(m):
            q = out[i]
            base, base_sq = sums - centred[q], sq_sums - squares[q]
            cost = costs(base, base_sq, m)
            cost[picked] = np.inf
            p = int(np.argmin(cost))
            if cost[p] < current - 1e-12 * (1.0 + current):
                out[i], picked[q], picked[p] = p, False, True
                sums, sq_sums = base + centred[p], base_sq + squares[p]
                current = float(cost[p])
                swapped = True
        if not swapped:
            break
    return out
