"""How much of a difficulty score is the image and how much is the noise draw: score reliability.

The difficulty is a Monte-Carlo estimate (a few random (timestep, noise) draws per image), and selection
only uses its **ranking within each class**. Its reliability is therefore measured as a within-class
rank correlation between two independent estimates of the same scores:

* **split-half** (free when the estimator has ``num_draws >= 2``): the draws are split into two
  independent halves (even and odd draw indices, ``h = floor(D / 2)`` draws each); the halves' scores are
  correlated within each class, and the Spearman–Brown formula predicts the reliability of the full
  estimate of ``D`` draws from that of ``h`` draws (length factor ``k = D / h``)::

      R = k r / (1 + (k - 1) r)

* **test-retest** (the probe, for ``num_draws == 1``): a few hundred rows are scored once more with fresh
  noise, and the correlation between the two full estimates is the reliability itself (``k = 1``).

The correlation is Spearman's (Pearson on average ranks) within each class, averaged over the classes
with weights equal to their number of rows. A class with fewer than 3 rows, or whose scores are constant
in either estimate, has no correlation: it is left out and named in ``skipped``. When no class is left,
the reliability is reported as not computable, with the reason, never as NaN.

A reliability R means that a fraction R of the within-class variance of the ranks is the image and
``1 - R`` the draw; two independent scorings of the same data then agree at about R. Near 0, interval
sampling over the scores is in effect random sampling (``docs/scoring.md``, *Reliability*).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

#: below this reliability scoring warns and the card says that the selection is close to random
DEFAULT_WARN_RELIABILITY = 0.5
#: rows of a class needed for a rank correlation
MIN_CLASS_ROWS = 3
RAISE_ADVICE = (
    "raise num_draws (noise draws per timestep; each doubling of the draws roughly halves the noise "
    "share 1 - R), or num_timesteps; a scorer trained longer is more reliable at the same cost"
)


class ReliabilityError(ValueError):
    """The score's reliability is below ``min_reliability`` (or could not be computed)."""


@dataclass(frozen=True)
class Reliability:
    """The reliability of a difficulty score (see the module docstring).

    Attributes:
        reliability: the estimate for the full score (Spearman–Brown corrected for split halves),
            ``None`` when it cannot be computed (``reason`` says why).
        correlation: the class-size weighted mean within-class Spearman correlation between the two
            estimates (the halves, or the two full estimates), ``None`` when not computable.
        method: ``"split-half"`` or ``"test-retest"``.
        length_factor: k of the Spearman–Brown formula (1 = no correction).
        num_rows, num_classes: rows and classes that entered the correlation.
        per_class: class id -> that class's corrected reliability.
        skipped: class id -> why it was left out (fewer than 3 rows, constant scores).
        reason: why the reliability is not computable (``None`` when it is).
        details: what the estimator was (draws, probe rows, ...), recorded with the report.
    """

    reliability: float | None
    correlation: float | None
    method: str
    length_factor: float
    num_rows: int
    num_classes: int
    per_class: dict[int, float] = field(default_factory=dict)
    skipped: dict[int, str] = field(default_factory=dict)
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def computable(self) -> bool:
        return self.reliability is not None

    @property
    def spread(self) -> dict[str, float] | None:
        """Min, quartiles and max of the per-class reliabilities (``None`` without classes)."""
        if not self.per_class:
            return None
        values = np.asarray(list(self.per_class.values()), np.float64)
        q = np.quantile(values, [0.0, 0.25, 0.5, 0.75, 1.0])
        return {k: float(v) for k, v in zip(("min", "q25", "median", "q75", "max"), q)}

    @property
    def draws_per_estimate(self) -> int | None:
        """Draws per timestep behind each of the two correlated estimates (``floor(D / 2)`` for split
        halves, ``D`` for test-retest), when the report records ``num_draws``."""
        draws = self.details.get("num_draws")
        if not draws:
            return None
        return int(draws) // 2 if self.method == "split-half" else int(draws)

    def predict(self, num_draws: int) -> float | None:
        """The Spearman–Brown prediction of the reliability with ``num_draws`` draws per timestep (same
        grid and options): ``k r / (1 + (k - 1) r)`` with ``k = num_draws / draws_per_estimate``."""
        per = self.draws_per_estimate
        if self.correlation is None or not per or self.correlation <= 0:
            return None
        return spearman_brown(self.correlation, num_draws / per)

    def draws_for(self, target: float) -> int | None:
        """The fewest draws per timestep predicted to reach ``target`` (``None`` if the correlation is not
        positive): ``ceil(h * target (1 - r) / (r (1 - target)))``."""
        per, r = self.draws_per_estimate, self.correlation
        if r is None or not per or r <= 0 or not 0 < target < 1:
            return None
        if r >= target:
            return per
        return max(1, math.ceil(per * target * (1 - r) / (r * (1 - target)) - 1e-9))

    def summary(self) -> str:
        """One line: ``reliability 0.83 (split-half, 4 draws: within-class Spearman 0.71, ...)``."""
        what = self.method
        if self.details.get("num_draws"):
            what += f", {self.details['num_draws']} draw(s) per timestep"
        if self.method == "test-retest" and self.details.get("probe_rows") is not None:
            what += ", probe rows re-scored with fresh noise"
        if not self.computable:
            return f"reliability not computable ({what}): {self.reason}"
        spread = self.spread
        text = (
            f"reliability {self.reliability:.3f} ({what}; within-class Spearman {self.correlation:.3f} over "
            f"{self.num_rows} rows in {self.num_classes} classes"
        )
        if spread and self.num_classes > 1:
            text += f", per class {spread['min']:.2f} to {spread['max']:.2f}"
        if self.skipped:
            text += f"; {len(self.skipped)} class(es) skipped"
        return text + ")"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record (``info["scoring"]["reliability"]``)."""
        return {
            "reliability": self.reliability,
            "correlation": self.correlation,
            "method": self.method,
            "length_factor": self.length_factor,
            "num_rows": self.num_rows,
            "num_classes": self.num_classes,
            "spread": self.spread,
            "per_class": {str(k): v for k, v in self.per_class.items()},
            "skipped": {str(k): v for k, v in self.skipped.items()},
            "reason": self.reason,
            "details": dict(self.details),
        }

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> Reliability:
        return cls(
            reliability=record.get("reliability"),
            correlation=record.get("correlation"),
            method=str(record.get("method", "split-half")),
            length_factor=float(record.get("length_factor", 1.0)),
            num_rows=int(record.get("num_rows", 0)),
            num_classes=int(record.get("num_classes", 0)),
            per_class={int(k): float(v) for k, v in (record.get("per_class") or {}).items()},
            skipped={int(k): str(v) for k, v in (record.get("skipped") or {}).items()},
            reason=record.get("reason"),
            details=dict(record.get("details") or {}),
        )


def not_computable(reason: str, method: str = "none", **details: Any) -> Reliability:
    """A report that says why there is no reliability (e.g. one draw and no probe)."""
    return Reliability(None, None, method, 1.0, 0, 0, reason=reason, details=details)


def spearman_brown(r: float, k: float) -> float:
    """The reliability of a test ``k`` times as long as one of reliability ``r``: ``k r / (1 + (k-1) r)``.

    A negative correlation (noise only) is returned as it is: the formula is meant for ``r >= 0``."""
    if k == 1 or r <= 0:
        return float(r)
    return float(k * r / (1.0 + (k - 1.0) * r))


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks ``0..n-1`` with ties given their average rank (``scipy.stats.rankdata`` minus one)."""
    from scipy.stats import rankdata

    return rankdata(values, method="average") - 1.0


def score_reliability(
    scores_a: Any,
    scores_b: Any,
    labels: Any,
    *,
    length_factor: float = 1.0,
    method: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> Reliability:
    """The within-class rank reliability of a score from two independent estimates of it.

    Args:
        scores_a, scores_b: ``(N,)`` two independent estimates of the same rows' scores (e.g. two scorings
            with different noise seeds, or the two halves of the draws). Rows where either is NaN are left
            out (e.g. rows a probe did not re-score).
        labels: ``(N,)`` integer class ids.
        length_factor: how many times more draws the full score has than each estimate: 1 when both are
            full estimates (test-retest), ``D / h`` for two halves of ``h`` of the ``D`` draws
            (Spearman–Brown; 2 for an even split).
        method: the name recorded (default ``"test-retest"`` for k = 1, else ``"split-half"``).
        details: extra fields recorded in the report.

    Returns:
        a :class:`Reliability`; classes with fewer than 3 rows or constant scores are skipped (named in
        ``skipped``), and if none is left the report says why (``reliability`` is ``None``).

    Cost: O(N log N) (one sort per class).
    """
    a = np.asarray(scores_a, dtype=np.float64).reshape(-1)
    b = np.asarray(scores_b, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if not (len(a) == len(b) == len(y)):
        raise ValueError(
            f"scores_a, scores_b and labels must have one value per row; got {len(a)}, {len(b)}, {len(y)}"
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"labels must be integers, got {y.dtype}")
    if not (isinstance(length_factor, (int, float)) and math.isfinite(length_factor) and length_factor >= 1):
        raise ValueError(f"length_factor must be a number >= 1, got {length_factor!r}")
    method = method or ("test-retest" if length_factor == 1 else "split-half")
    details = dict(details or {})
    keep = np.isfinite(a) & np.isfinite(b)
    a, b, y = a[keep], b[keep], y[keep]
    if len(a) == 0:
        reason = "no row has both estimates" if len(keep) else "no rows"
        return Reliability(None, None, method, float(length_factor), 0, 0, reason=reason, details=details)

    order = np.argsort(y, kind="stable")
    classes, starts, counts = np.unique(y[order], return_index=True, return_counts=True)
    per_class_r: dict[int, float] = {}
    weights: dict[int, int] = {}
    skipped: dict[int, str] = {}
    for c, start, n in zip(classes.tolist(), starts.tolist(), counts.tolist()):
        if n < MIN_CLASS_ROWS:
            skipped[c] = f"{n} row(s); a rank correlation needs at least {MIN_CLASS_ROWS}"
            continue
        rows = order[start : start + n]
        ra, rb = average_ranks(a[rows]), average_ranks(b[rows])
        ra -= ra.mean()
        rb -= rb.mean()
        denom = math.sqrt(float(ra @ ra) * float(rb @ rb))
        if denom == 0.0:
            skipped[c] = "constant scores in one estimate"
            continue
        per_class_r[c] = float(ra @ rb) / denom
        weights[c] = n
    if not per_class_r:
        reasons = sorted(set(skipped.values()))
        reason = "no class has a rank correlation (" + "; ".join(reasons) + ")"
        return Reliability(
            None, None, method, float(length_factor), 0, 0, skipped=skipped, reason=reason, details=details
        )
    total = sum(weights.values())
    r = sum(per_class_r[c] * weights[c] for c in per_class_r) / total
    return Reliability(
        reliability=spearman_brown(r, length_factor),
        correlation=float(r),
        method=method,
        length_factor=float(length_factor),
        num_rows=int(total),
        num_classes=len(per_class_r),
        per_class={c: spearman_brown(v, length_factor) for c, v in per_class_r.items()},
        skipped=skipped,
        details=details,
    )


# --------------------------------------------------------------------------------------
# from what the scorer stores: per-timestep errors of two estimates, (N, T, 2)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Standardization:
    """Per-timestep standardisation: each timestep's error z-scored over the dataset before averaging,
    ``difficulty = 1/T sum_i (e_i - mean_i) / std_i``, so that no timestep dominates the mean.

    Attributes:
        mean, std: ``(T,)`` the dataset statistics of the per-timestep errors (``std`` > 0; a timestep
            with constant errors gets std 1 and so contributes 0).
    """

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, per_timestep: np.ndarray) -> Standardization:
        """Statistics of ``(N, T)`` per-timestep errors (NaN rows ignored), in float64."""
        errors = np.asarray(per_timestep, np.float64)
        if errors.ndim != 2 or len(errors) == 0:
            raise ValueError(
                f"per-timestep errors must be a non-empty (N, T) array, got shape {errors.shape}"
            )
        mean = np.nanmean(errors, axis=0)
        std = np.nanstd(errors, axis=0)
        std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
        return cls(mean, std)

    def apply(self, per_timestep: np.ndarray) -> np.ndarray:
        """``(..., T)`` errors -> ``(...)`` float32 mean z-score."""
        z = (np.asarray(per_timestep, np.float64) - self.mean) / self.std
        return z.mean(axis=-1).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}


def reliability_from_halves(
    halves: np.ndarray,
    labels: np.ndarray,
    *,
    num_draws: int,
    standardization: Standardization | None = None,
    probe: bool = False,
    details: Mapping[str, Any] | None = None,
) -> Reliability:
    """The reliability from what the scorer stores: ``halves`` ``(N, T, 2)``, the per-timestep errors of
    two independent estimates (split halves of the draws, or with ``probe`` the estimate and a probe's
    fresh draw, NaN for rows the probe left out).

    The scores compared are ``halves[..., j].mean(-1)`` (or their standardised mean z-score, with the
    dataset's ``standardization``), so the reliability is that of the score selection uses.
    """
    halves = np.asarray(halves, np.float64)
    if halves.ndim != 3 or halves.shape[2] != 2:
        raise ValueError(f"halves must have shape (N, T, 2), got {halves.shape}")
    if standardization is None:
        a, b = halves[..., 0].mean(axis=1), halves[..., 1].mean(axis=1)
    else:
        a, b = standardization.apply(halves[..., 0]), standardization.apply(halves[..., 1])
    details = {"num_draws": int(num_draws), **dict(details or {})}
    if probe:
        return score_reliability(a, b, labels, length_factor=1.0, method="test-retest", details=details)
    half = num_draws // 2
    return score_reliability(
        a, b, labels, length_factor=num_draws / half, method="split-half", details=details
    )


def check_reliability(
    report: Reliability | None,
    *,
    warn_below: float | None = DEFAULT_WARN_RELIABILITY,
    min_reliability: float | None = None,
    where: str = "scoring",
) -> None:
    """The gate: log the reliability, warn when it is below ``warn_below`` and raise
    :class:`ReliabilityError` when it is below ``min_reliability`` (or cannot be computed while one is
    required)."""
    if report is None:
        if min_reliability is not None:
            raise ReliabilityError(
                f"min_reliability={min_reliability} was asked for but {where} computed no reliability; "
                "score with num_draws >= 2 or a reliability probe"
            )
        return
    logger.info("%s: %s", where, report.summary())
    if not report.computable:
        if min_reliability is not None:
            raise ReliabilityError(
                f"min_reliability={min_reliability} was asked for but the reliability is not computable: "
                f"{report.reason}"
            )
        if report.method != "none":  # measured, but too few rows or constant scores: worth a warning
            logger.warning("%s: %s", where, report.summary())
        return
    value = report.reliability
    if min_reliability is not None and value < min_reliability:
        raise ReliabilityError(
            f"the difficulty score's reliability is {value:.3f}, below min_reliability={min_reliability}: "
            f"the selection would be close to random. {RAISE_ADVICE[0].upper()}{RAISE_ADVICE[1:]} "
            "(docs/scoring.md, Reliability)"
        )
    if warn_below is not None and value < warn_below:
        logger.warning(
            "%s: the difficulty score's reliability is %.3f (below %.2f): the selection is close to random; %s%s "
            "(docs/scoring.md, Reliability)",
            where,
            value,
            warn_below,
            RAISE_ADVICE,
            projection(report),
        )


def projection(report: Reliability, target: float = 0.8) -> str:
    """``"; num_draws=12 is predicted to reach 0.8"`` (Spearman–Brown), or ``""`` when it cannot be said."""
    draws = report.draws_for(target)
    if draws is None or draws <= int(report.details.get("num_draws") or 0):
        return ""
    return f"; num_draws={draws} is predicted to reach {target}"


def check_threshold(value: Any, name: str) -> float | None:
    """``None`` or a number in ``[0, 1]`` (a reliability threshold), checked before any model loads."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 <= float(value) <= 1.0):
        raise ValueError(f"{name} must be a number in [0, 1] or None, got {value!r}")
    return float(value)


__all__ = [
    "DEFAULT_WARN_RELIABILITY",
    "Reliability",
    "ReliabilityError",
    "Standardization",
    "check_reliability",
    "check_threshold",
    "reliability_from_halves",
    "score_reliability",
    "spearman_brown",
]
