"""Comparing training runs: paired differences with bootstrap intervals, and metric-vs-step curves.

What a reviewer asks of "method A trains faster than method B", as small numpy functions:

* :func:`paired_difference`: runs of two arms that share a seed (same initialisation, same noise) are
  compared seed by seed; the mean of the per-seed differences with a percentile-bootstrap confidence
  interval over seeds.
* :func:`bootstrap_mean_ci`: that interval, for any sample.
* :func:`steps_to_reach`: how many training steps a metric-vs-step curve needs to reach a threshold
  (interpolated in log-step between evaluations).
* :func:`log_step_area`: the curve's mean over log-step (the area under metric vs ``log(step)``
  divided by the log-step range), one number that rewards being good early as well as late.
* :func:`separation`: the gap between two groups of runs in units of their pooled standard deviation.

Everything is deterministic (the bootstrap takes a seed) and touches no global state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "PairedDifference",
    "bootstrap_mean_ci",
    "log_step_area",
    "paired_difference",
    "separation",
    "steps_to_reach",
]


def _finite_1d(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or len(array) == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds non-finite values: {array.tolist()}")
    return array


def bootstrap_mean_ci(
    values: Sequence[float] | np.ndarray,
    *,
    confidence: float = 0.95,
    num_resamples: int = 10_000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean of ``values``.

    ``num_resamples`` resamples of ``len(values)`` draws with replacement; the interval is the
    ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of their means. With very few values
    (4 seeds) the bootstrap distribution is coarse (at most 35 distinct resamples) and the interval is
    narrower than a t-interval: read it as a description of the seeds, not as a guarantee.

    Returns:
        ``(low, high)``; both equal the value for a single value.
    """
    x = _finite_1d(values, "values")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if num_resamples < 1:
        raise ValueError(f"num_resamples must be >= 1, got {num_resamples}")
    if len(x) == 1:
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(num_resamples, len(x)))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


@dataclass(frozen=True)
class PairedDifference:
    """``arm - reference`` over shared seeds: the mean difference, its bootstrap interval, the per-seed values."""

    mean: float
    low: float
    high: float
    differences: tuple[float, ...]
    seeds: tuple[int, ...]
    confidence: float

    @property
    def excludes_zero(self) -> bool:
        """The interval lies entirely on one side of 0."""
        return self.low > 0.0 or self.high < 0.0


def paired_difference(
    arm: dict[int, float],
    reference: dict[int, float],
    *,
    confidence: float = 0.95,
    num_resamples: int = 10_000,
    seed: int = 0,
) -> PairedDifference:
    """Mean of the per-seed differences ``arm[s] - reference[s]`` over the seeds both have, with a
    percentile-bootstrap interval (:func:`bootstrap_mean_ci`).

    Args:
        arm, reference: ``{seed: metric}`` for the two arms (a seed fixes initialisation and noise).

    Raises:
        ValueError: no shared seed.
    """
    seeds = sorted(set(arm) & set(reference))
    if not seeds:
        raise ValueError(f"no seed in common: arm has {sorted(arm)}, reference has {sorted(reference)}")
    diffs = np.array([float(arm[s]) - float(reference[s]) for s in seeds])
    low, high = bootstrap_mean_ci(diffs, confidence=confidence, num_resamples=num_resamples, seed=seed)
    return PairedDifference(
        mean=float(diffs.mean()),
        low=low,
        high=high,
        differences=tuple(float(d) for d in diffs),
        seeds=tuple(int(s) for s in seeds),
        confidence=confidence,
    )


def _curve(steps: Sequence[float], values: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    s = _finite_1d(steps, "steps")
    v = _finite_1d(values, "values")
    if len(s) != len(v):
        raise ValueError(f"steps and values differ in length: {len(s)} vs {len(v)}")
    if (s <= 0).any() or (np.diff(s) <= 0).any():
        raise ValueError(f"steps must be positive and strictly increasing, got {s.tolist()}")
    return s, v


def steps_to_reach(
    steps: Sequence[float],
    values: Sequence[float],
    threshold: float,
    *,
    lower_is_better: bool = True,
) -> float | None:
    """The first training step at which a metric-vs-step curve reaches ``threshold``.

    Between two evaluations the curve is interpolated linearly in ``log(step)``: if it is above the
    threshold at ``s0`` (value ``v0``) and at or below it at ``s1`` (``v1``), the answer is
    ``exp(log s0 + f * (log s1 - log s0))`` with ``f = (v0 - threshold) / (v0 - v1)``. A curve already
    at the threshold at its first evaluation returns that step (nothing is known before it).

    Returns:
        the step (a float), or ``None`` if the curve never reaches the threshold.
    """
    s, v = _curve(steps, values)
    sign = 1.0 if lower_is_better else -1.0
    gap = sign * (v - float(threshold))  # <= 0: reached
    reached = np.flatnonzero(gap <= 0)
    if len(reached) == 0:
        return None
    i = int(reached[0])
    if i == 0:
        return float(s[0])
    f = gap[i - 1] / (gap[i - 1] - gap[i])
    return float(math.exp(math.log(s[i - 1]) + f * (math.log(s[i]) - math.log(s[i - 1]))))


def log_step_area(steps: Sequence[float], values: Sequence[float]) -> float:
    """The mean of a curve over log-step: ``integral v d(log s) / (log s_last - log s_first)`` (trapezoids).

    In the curve's own units (an FD for an FD curve); lower means better throughout training, with early
    and late evaluations weighted by how much log-step they span. Needs at least two evaluations.
    """
    s, v = _curve(steps, values)
    if len(s) < 2:
        raise ValueError("log_step_area needs at least two evaluations")
    x = np.log(s)
    area = float(np.sum((v[1:] + v[:-1]) / 2.0 * np.diff(x)))
    return area / float(x[-1] - x[0])


def separation(a: Sequence[float], b: Sequence[float]) -> float:
    """``(mean(a) - mean(b)) / pooled_std``, the pooled standard deviation over both groups (ddof 1 each).

    ``inf`` (with the sign of the gap) when both groups are constant and differ; ``nan`` when they are
    constant and equal. Needs at least two values per group.
    """
    x, y = _finite_1d(a, "a"), _finite_1d(b, "b")
    if len(x) < 2 or len(y) < 2:
        raise ValueError("separation needs at least two values in each group")
    pooled = math.sqrt(((len(x) - 1) * x.var(ddof=1) + (len(y) - 1) * y.var(ddof=1)) / (len(x) + len(y) - 2))
    gap = float(x.mean() - y.mean())
    if pooled == 0.0:
        return math.copysign(math.inf, gap) if gap else math.nan
    return gap / pooled
