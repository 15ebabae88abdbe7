"""The benchmark's statistics: run records in, numbers out (pure, deterministic).

* :func:`summarise`: mean and std over seeds of the final metrics (unguided and guided, each the mean
  over the sampling seeds), the curves, the steps to reach random's final FD, the FD curve's mean over
  log-step.
* :func:`contrast`: paired differences ``arm - random`` over the seeds both have, with percentile-bootstrap
  95 % intervals (:func:`d2c_hf.evaluation.paired_difference`).
* :func:`regime`: does data matter at all in this setting? The full split against random at the largest
  budget, in pooled seed standard deviations, judged on the final evaluation (as v2 of the digits
  benchmark): more than 3, and the full split's class accuracy at least 0.8 of the classifier's own
  accuracy on real reference images. The same final gap at every budget (``by_budget``) shows where along
  the budgets the amount of data stops mattering.
* :func:`verdicts`: what the FD map says, read off its intervals: per budget the arms better / worse than
  random / not resolved and the lowest mean difference, and the arms never worse than random and better at
  two or more budgets.
* :func:`analyse`: everything the report shows, tolerant of a grid still running (cells without runs
  are left out; contrasts use the seeds both arms have).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .evaluator import METRIC_KEYS
from .settings import FULL_SPLIT, RANDOM, BenchmarkSettings

__all__ = [
    "CONTRAST_METRICS",
    "analyse",
    "arm_contrast",
    "contrast",
    "evaluator_spread",
    "final_metrics",
    "per_seed",
    "regime",
    "regime_row",
    "summarise",
    "verdicts",
]

CONTRAST_METRICS = (
    ("fd", "unguided"),
    ("kid_mean", "unguided"),
    ("precision", "unguided"),
    ("recall", "unguided"),
    ("class_accuracy", "unguided"),
    ("fd_log_area", "unguided"),
    ("fd", "guided"),
    ("class_accuracy", "guided"),
)
#: the regime check: the full split ahead of random by more than this many pooled seed std ...
REGIME_SEPARATION = 3.0
#: ... and its class accuracy at least this fraction of the classifier's accuracy on real reference images
REGIME_CLASS_ACCURACY = 0.8


def final_metrics(run: Mapping[str, Any], mode: str) -> dict[str, float]:
    """``mode`` "unguided" / "guided": the mean over sampling seeds of the last-step metrics."""
    entries = [v for k, v in run["final"].items() if k.startswith(f"{mode}_seed")]
    return {k: float(np.mean([e[k] for e in entries])) for k in METRIC_KEYS}


def _mean_std(values: Sequence[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}


def _curve_steps(run: Mapping[str, Any]) -> list[int]:
    return [c["step"] for c in run["curve"]]


def evaluator_spread(runs: Iterable[Mapping[str, Any]], mode: str = "unguided") -> dict[str, float]:
    """The evaluator's own standard deviation per metric: the same model sampled with two noise seeds,
    ``sqrt(mean over runs of (m_a - m_b)^2 / 2)``; ``nan`` without two sampling seeds. Runs that share
    another run's training are counted once."""
    squares: dict[str, list[float]] = {k: [] for k in METRIC_KEYS}
    for run in runs:
        if run.get("shared_with"):
            continue
        entries = [v for k, v in sorted(run["final"].items()) if k.startswith(f"{mode}_seed")]
        if len(entries) >= 2:
            for k in METRIC_KEYS:
                squares[k].append((entries[0][k] - entries[1][k]) ** 2 / 2)
    return {k: float(math.sqrt(np.mean(v))) if v else math.nan for k, v in squares.items()}


def summarise(runs: Sequence[Mapping[str, Any]], threshold: float | None) -> dict[str, Any]:
    """Mean and std over seeds of the final metrics, the curves, the steps to reach ``threshold`` (random's
    final FD) and the FD curve's mean over log-step."""
    from ..evaluation import log_step_area, steps_to_reach

    out: dict[str, Any] = {
        "num_images": runs[0]["num_images"],  # per-class counts are fixed by the budget: the same every seed
        "seeds": [r["seed"] for r in runs],
        "shared_with": sorted({r["shared_with"].split("-seed")[0] for r in runs if r.get("shared_with")}),
    }
    for mode in ("unguided", "guided"):
        finals = [final_metrics(r, mode) for r in runs]
        out[mode] = {k: _mean_std([f[k] for f in finals]) for k in METRIC_KEYS}
    steps = _curve_steps(runs[0])
    out["curve"] = [
        {"step": step, **{k: _mean_std([r["curve"][i][k] for r in runs]) for k in METRIC_KEYS}}
        for i, step in enumerate(steps)
    ]
    if len(steps) > 1:
        areas = [log_step_area(_curve_steps(r), [c["fd"] for c in r["curve"]]) for r in runs]
        out["fd_log_area"] = {**_mean_std(areas), "per_seed": dict(zip(out["seeds"], areas))}
    if threshold is not None:
        reach = [steps_to_reach(_curve_steps(r), [c["fd"] for c in r["curve"]], threshold) for r in runs]
        reached = [s for s in reach if s is not None]
        complete = len(reached) == len(reach)
        out["steps_to_threshold"] = {
            "threshold": threshold,
            "per_seed": dict(zip(out["seeds"], reach)),
            "reached": len(reached),
            "median": float(np.median(reached)) if complete else None,
            "mean": float(np.mean(reached)) if complete else None,
        }
    return out


def per_seed(runs: Sequence[Mapping[str, Any]], metric: str, mode: str = "unguided") -> dict[int, float]:
    """``{seed: value}``; ``metric`` is a metric key or ``"fd_log_area"``."""
    from ..evaluation import log_step_area

    if metric == "fd_log_area":
        return {r["seed"]: log_step_area(_curve_steps(r), [c["fd"] for c in r["curve"]]) for r in runs}
    return {r["seed"]: final_metrics(r, mode)[metric] for r in runs}


def contrast(
    arm_runs: Sequence[Mapping[str, Any]], ref_runs: Sequence[Mapping[str, Any]], *, seed: int = 0
) -> dict[str, Any]:
    """Paired differences ``arm - reference`` (bootstrap 95 % intervals) for every contrast metric, over
    the seeds both have (``{}`` when they share none)."""
    from ..evaluation import paired_difference

    if not {r["seed"] for r in arm_runs} & {r["seed"] for r in ref_runs}:
        return {}
    out = {}
    for metric, mode in CONTRAST_METRICS:
        if metric == "fd_log_area" and len(arm_runs[0]["curve"]) < 2:
            continue
        d = paired_difference(per_seed(arm_runs, metric, mode), per_seed(ref_runs, metric, mode), seed=seed)
        out[f"{metric}/{mode}"] = {
            "mean": d.mean,
            "low": d.low,
            "high": d.high,
            "per_seed": list(d.differences),
            "seeds": list(d.seeds),
        }
    return out


def regime_row(
    step: int, random_metrics: Sequence[Mapping[str, float]], full_metrics: Sequence[Mapping[str, float]]
) -> dict[str, Any]:
    """FD and class accuracy of random and of the full split (one metrics dict per seed), and their FD gap
    in pooled seed standard deviations (``None`` with fewer than two seeds)."""
    from ..evaluation import separation

    row: dict[str, Any] = {"step": step}
    for name, metrics in (("random", random_metrics), ("full", full_metrics)):
        fd = [m["fd"] for m in metrics]
        row[f"fd_{name}"] = float(np.mean(fd))
        row[f"fd_{name}_std"] = float(np.std(fd, ddof=1)) if len(fd) > 1 else 0.0
        row[f"class_accuracy_{name}"] = float(np.mean([m["class_accuracy"] for m in metrics]))
    two = min(len(random_metrics), len(full_metrics)) > 1
    row["separation"] = (
        separation([m["fd"] for m in random_metrics], [m["fd"] for m in full_metrics]) if two else None
    )
    return row


def _final_gap(
    random_runs: Sequence[Mapping[str, Any]], full_runs: Sequence[Mapping[str, Any]]
) -> dict[str, Any] | None:
    """:func:`regime_row` of the final evaluation (the mean over sampling seeds), on the seeds both have
    (``None`` when they share none)."""
    seeds = {r["seed"] for r in random_runs} & {r["seed"] for r in full_runs}
    if not seeds:
        return None
    random_runs = [r for r in random_runs if r["seed"] in seeds]
    full_runs = [r for r in full_runs if r["seed"] in seeds]
    row = regime_row(
        full_runs[0]["curve"][-1]["step"],
        [final_metrics(r, "unguided") for r in random_runs],
        [final_metrics(r, "unguided") for r in full_runs],
    )
    return {**row, "seeds": sorted(seeds)}


def regime(
    random_runs: Sequence[Mapping[str, Any]],
    full_runs: Sequence[Mapping[str, Any]],
    reference_accuracy: float,
) -> dict[str, Any]:
    """The regime check (see the module docstring): per checkpoint, and on the final evaluation (the
    tables' measurement: the mean over sampling seeds), with its verdict."""
    seeds = sorted({r["seed"] for r in random_runs} & {r["seed"] for r in full_runs})
    random_runs = [r for r in random_runs if r["seed"] in seeds]
    full_runs = [r for r in full_runs if r["seed"] in seeds]
    if not seeds:
        return {}
    checkpoints = [
        regime_row(point["step"], [r["curve"][i] for r in random_runs], [r["curve"][i] for r in full_runs])
        for i, point in enumerate(full_runs[0]["curve"])
    ]
    final = _final_gap(random_runs, full_runs)
    needed = REGIME_CLASS_ACCURACY * reference_accuracy
    sep = final["separation"]
    final["passes"] = bool(
        sep is not None and sep > REGIME_SEPARATION and final["class_accuracy_full"] >= needed
    )
    final["class_accuracy_needed"] = needed
    final["seeds"] = seeds
    return {"checkpoints": checkpoints, "final": final}


def analyse(
    settings: BenchmarkSettings, runs: Sequence[Mapping[str, Any]], reference_accuracy: float
) -> dict[str, Any]:
    """Group the run records by (budget, arm) and compute every table's and figure's numbers."""
    by_cell: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for run in runs:
        by_cell.setdefault((run["budget_label"], run["arm"]), []).append(run)
    for cell in by_cell.values():
        cell.sort(key=lambda r: r["seed"])
    full_runs = by_cell.get(("full", FULL_SPLIT.key), [])
    results: dict[str, Any] = {
        "evaluator_spread": {mode: evaluator_spread(runs, mode) for mode in ("unguided", "guided")},
        "budgets": {},
        "map": {},
    }
    largest = None
    for budget in settings.budgets:
        label = budget.label
        random_runs = by_cell.get((label, RANDOM.key), [])
        threshold = float(np.mean([r["curve"][-1]["fd"] for r in random_runs])) if random_runs else None
        cells: dict[str, Any] = {}
        for arm in (*settings.arms, FULL_SPLIT):
            arm_runs = full_runs if arm == FULL_SPLIT else by_cell.get((label, arm.key), [])
            if not arm_runs:
                continue
            cell = {"name": arm.name, "summary": summarise(arm_runs, threshold)}
            if arm != RANDOM and random_runs:
                cell["vs_random"] = contrast(arm_runs, random_runs)
            cells[arm.key] = cell
        results["budgets"][label] = {"threshold_fd": threshold, "cells": cells}
        if random_runs and (largest is None or np.mean([r["num_images"] for r in random_runs]) > largest[1]):
            largest = (label, float(np.mean([r["num_images"] for r in random_runs])), random_runs)
    for arm in settings.arms:
        if arm == RANDOM:
            continue
        row = {}
        for budget in settings.budgets:
            cell = results["budgets"][budget.label]["cells"].get(arm.key, {})
            if cell.get("vs_random"):
                row[budget.label] = {
                    k: cell["vs_random"][k]
                    for k in (
                        "fd/unguided",
                        "class_accuracy/unguided",
                        "precision/unguided",
                        "recall/unguided",
                    )
                }
        results["map"][arm.key] = {"name": arm.name, "cells": row}
    if largest is not None and full_runs:
        check = regime(largest[2], full_runs, reference_accuracy)
        if check:
            # the same gap at every budget: where along the budgets the amount of data stops mattering
            gaps = {
                b.label: _final_gap(by_cell.get((b.label, RANDOM.key), []), full_runs)
                for b in settings.budgets
            }
            by_budget = {label: gap for label, gap in gaps.items() if gap is not None}
            results["regime"] = {"budget": largest[0], **check, "by_budget": by_budget}
    results["verdicts"] = verdicts(results, [b.label for b in settings.budgets])
    return results


def verdicts(
    results: Mapping[str, Any], budget_labels: Sequence[str], key: str = "fd/unguided", min_seeds: int = 2
) -> dict[str, Any]:
    """What the map says about ``key`` (a lower-is-better paired difference, arm - random), read off its
    intervals: an arm is *better* than random at a budget when its 95 % interval lies below 0, *worse* when
    it lies above, *not resolved* otherwise or with fewer than ``min_seeds`` paired seeds.

    Returns:
        ``{"metric", "min_seeds", "budgets": {label: {"better", "worse", "unresolved", "lowest"}},
        "never_worse_better_twice"}``: arm keys in map order; ``lowest`` lists the arms whose mean difference is
        the smallest (arms that kept the same subsets tie exactly) with its ``mean``/``low``/``high``/``per_seed``, or is
        ``None`` when no arm's mean is below random's; ``never_worse_better_twice`` the arms that are worse at
        no budget they were measured at and better at two or more.
    """
    out: dict[str, Any] = {"metric": key, "min_seeds": min_seeds, "budgets": {}}
    counts: dict[str, dict[str, int]] = {arm: {"better": 0, "worse": 0} for arm in results["map"]}
    for label in budget_labels:
        calls: dict[str, Any] = {"better": [], "worse": [], "unresolved": [], "lowest": None}
        measured = {
            arm: row["cells"][label][key]
            for arm, row in results["map"].items()
            if key in row["cells"].get(label, {})
        }
        for arm, entry in measured.items():
            if len(entry["per_seed"]) < min_seeds:
                call = "unresolved"
            else:
                call = "better" if entry["high"] < 0 else "worse" if entry["low"] > 0 else "unresolved"
            calls[call].append(arm)
            if call in counts[arm]:
                counts[arm][call] += 1
        if measured:
            lowest = min(e["mean"] for e in measured.values())
            if lowest < 0:
                tied = [arm for arm, e in measured.items() if e["mean"] == lowest]
                first = measured[tied[0]]
                calls["lowest"] = {"arms": tied, **{k: first[k] for k in ("mean", "low", "high", "per_seed")}}
        out["budgets"][label] = calls
    out["never_worse_better_twice"] = [a for a, c in counts.items() if c["worse"] == 0 and c["better"] >= 2]
    return out


def arm_contrast(
    results: Mapping[str, Any], arm: str, reference: str, key: str = "fd/unguided", *, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Two arms of a finished report compared directly, budget by budget: ``arm - reference`` per seed (each
    arm's paired difference against random, so random's own value cancels), with a bootstrap interval.

    Args:
        results: ``record["results"]`` of a report (``NAME.json``).
        arm, reference: arm keys as in the report (``"alignment"``, ``"interval:paper"``, ...).

    Returns:
        ``{budget: {"mean", "low", "high", "per_seed", "seeds"}}`` for the budgets where both arms have a
        contrast against random on a shared seed.
    """
    from ..evaluation import paired_difference

    def values(cells: Mapping[str, Any], name: str, other: str) -> dict[int, float]:
        is_random = name == RANDOM.key  # random against itself: 0 on every seed the other arm shares with it
        e = cells.get(other if is_random else name, {}).get("vs_random", {}).get(key)
        if not e:
            return {}
        return dict(zip(e["seeds"], [0.0] * len(e["seeds"]) if is_random else e["per_seed"]))

    out = {}
    for label, block in results["budgets"].items():
        a, b = values(block["cells"], arm, reference), values(block["cells"], reference, arm)
        if not set(a) & set(b):
            continue
        d = paired_difference(a, b, seed=seed)
        out[label] = {"mean": d.mean, "low": d.low, "high": d.high, "per_seed": list(d.differences),
                      "seeds": list(d.seeds)}  # fmt: skip
    return out
