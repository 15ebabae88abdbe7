"""``d2c_hf.evaluation.comparison``: known answers for the run-comparison statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from d2c_hf.evaluation import (
    bootstrap_mean_ci,
    log_step_area,
    paired_difference,
    separation,
    steps_to_reach,
)


def test_steps_to_reach_interpolates_in_log_step():
    # 10 at step 100, 1 at step 1000: the threshold 5.5 is half-way, i.e. at 10 ** 2.5 steps
    assert steps_to_reach([100, 1000], [10.0, 1.0], 5.5) == pytest.approx(10**2.5)
    assert steps_to_reach([100, 1000, 2000], [10.0, 6.0, 2.0], 6.0) == pytest.approx(1000.0)
    assert steps_to_reach([100, 1000], [3.0, 1.0], 5.0) == 100.0  # already there at the first evaluation
    assert steps_to_reach([100, 1000], [10.0, 9.0], 5.0) is None  # never
    # the first crossing counts, even if the curve rises again
    assert steps_to_reach([1, 10, 100], [5.0, 1.0, 6.0], 2.0) == pytest.approx(10 ** (3 / 4))
    # higher is better (e.g. class accuracy)
    assert steps_to_reach([100, 1000], [0.2, 0.8], 0.5, lower_is_better=False) == pytest.approx(10**2.5)


def test_steps_to_reach_refuses_bad_curves():
    with pytest.raises(ValueError, match="increasing"):
        steps_to_reach([100, 100], [1.0, 2.0], 1.0)
    with pytest.raises(ValueError, match="length"):
        steps_to_reach([1, 2], [1.0], 1.0)
    with pytest.raises(ValueError, match="non-finite"):
        steps_to_reach([1, 2], [1.0, math.nan], 1.0)


def test_log_step_area_is_the_mean_over_log_step():
    assert log_step_area([10, 100, 1000], [4.0, 4.0, 4.0]) == pytest.approx(4.0)
    # linear in log-step from 3 to 1: the mean is 2
    assert log_step_area([10, 100, 1000], [3.0, 2.0, 1.0]) == pytest.approx(2.0)
    # two log-decades at 6 then one at 0 (trapezoids): (6*2 + 3*1) / 3
    assert log_step_area([1, 100, 1000], [6.0, 6.0, 0.0]) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="two evaluations"):
        log_step_area([10], [1.0])


def test_bootstrap_interval_brackets_the_mean_and_is_reproducible():
    x = [1.0, 2.0, 3.0, 4.0]
    low, high = bootstrap_mean_ci(x, seed=3)
    assert low < 2.5 < high
    assert 1.0 <= low and high <= 4.0
    assert (low, high) == bootstrap_mean_ci(x, seed=3)
    assert bootstrap_mean_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)
    assert bootstrap_mean_ci([5.0]) == (5.0, 5.0)
    # wider at higher confidence
    low99, high99 = bootstrap_mean_ci(x, confidence=0.99, seed=3)
    assert low99 <= low and high99 >= high
    # a large sample: close to the normal interval mean +- 1.96 sd / sqrt(n)
    rng = np.random.default_rng(0)
    big = rng.normal(size=2000)
    lo, hi = bootstrap_mean_ci(big, num_resamples=4000)
    half = 1.96 * big.std(ddof=1) / math.sqrt(len(big))
    assert lo == pytest.approx(big.mean() - half, abs=0.01)
    assert hi == pytest.approx(big.mean() + half, abs=0.01)


def test_paired_difference_pairs_by_seed():
    arm = {0: 1.0, 1: 2.0, 2: 3.0, 7: 100.0}
    reference = {0: 2.0, 1: 3.5, 2: 4.0}
    diff = paired_difference(arm, reference)
    assert diff.seeds == (0, 1, 2)  # seed 7 has no partner
    assert diff.differences == (-1.0, -1.5, -1.0)
    assert diff.mean == pytest.approx(-7 / 6)
    assert -1.5 <= diff.low <= diff.mean <= diff.high <= -1.0
    assert diff.excludes_zero
    mixed = paired_difference({0: 1.0, 1: -1.0}, {0: 0.0, 1: 0.0})
    assert not mixed.excludes_zero
    with pytest.raises(ValueError, match="no seed in common"):
        paired_difference({0: 1.0}, {1: 1.0})


def test_separation_in_pooled_standard_deviations():
    # means 4 and 1, each group's sd 1: 3 pooled standard deviations apart
    assert separation([3.0, 4.0, 5.0], [0.0, 1.0, 2.0]) == pytest.approx(3.0)
    assert separation([0.0, 1.0, 2.0], [3.0, 4.0, 5.0]) == pytest.approx(-3.0)
    assert separation([1.0, 1.0], [0.0, 0.0]) == math.inf
    assert math.isnan(separation([1.0, 1.0], [1.0, 1.0]))
    with pytest.raises(ValueError, match="two values"):
        separation([1.0], [0.0, 1.0])
