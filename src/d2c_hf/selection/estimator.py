"""Select, the estimator's options: the timestep grid, the noise draws and the reliability probe, checked
without a model (light: the option classes and the CLI read these; the scorer computes with them).

The difficulty of an image is a Monte-Carlo estimate of the model's mean denoising error over timesteps;
see :class:`~d2c_hf.selection.scorer.DifficultyScorer` and ``docs/scoring.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..utils.checks import check_positive_int

MIDPOINTS, STRATIFIED = "midpoints", "stratified"
TIMESTEP_GRIDS = (MIDPOINTS, STRATIFIED)
#: rows a one-draw run re-scores with fresh noise to measure its reliability (ScoreOptions' default)
DEFAULT_PROBE_ROWS = 512
#: classes the probe spreads its rows over (fewer when the data has fewer)
PROBE_CLASSES = 8


def _is_tensor(value: Any) -> bool:
    """A ``torch.Tensor``, recognised without importing torch."""
    return type(value).__module__.startswith("torch") and hasattr(value, "tolist")


def check_estimator(
    num_timesteps: Any = None,
    timestep_grid: Any = "midpoints",
    num_draws: Any = 1,
    antithetic: Any = False,
    reliability_probe: Any = 0,
) -> tuple[int, str | tuple[float, ...]]:
    """Check the estimator's options without a model: ``(T, grid)``.

    Args:
        num_timesteps: T; ``None`` = 10, or the length of an explicit grid.
        timestep_grid: ``"midpoints"`` (the paper's evenly spaced bins), ``"stratified"`` (one random
            timestep in each of T equal bins, drawn per sample and draw) or an explicit sequence of
            timesteps (integers for epsilon models, times in [0, 1] for flow models).
        num_draws: independent noise draws per timestep (>= 1).
        antithetic: also use ``-eps`` for every draw (two forward passes per draw).
        reliability_probe: rows re-scored with fresh noise to measure the reliability of a one-draw score
            (0 = none).
    """
    from ..utils.checks import check_non_negative_int

    check_positive_int(num_draws, "num_draws")
    if not isinstance(antithetic, (bool, np.bool_)):
        raise ValueError(f"antithetic must be True or False, got {antithetic!r}")
    check_non_negative_int(reliability_probe, "reliability_probe")
    if isinstance(timestep_grid, str):
        if timestep_grid not in TIMESTEP_GRIDS:
            raise ValueError(
                f"timestep_grid must be one of {TIMESTEP_GRIDS} or a sequence of timesteps, got {timestep_grid!r}"
            )
        steps = 10 if num_timesteps is None else check_positive_int(num_timesteps, "num_timesteps")
        return steps, timestep_grid
    if not (isinstance(timestep_grid, (Sequence, np.ndarray)) or _is_tensor(timestep_grid)) or isinstance(
        timestep_grid, bytes
    ):
        raise ValueError(
            f"timestep_grid must be 'midpoints', 'stratified' or a sequence of timesteps, got {timestep_grid!r}"
        )
    values = []
    for t in list(np.asarray(timestep_grid, dtype=object).reshape(-1)):
        if (
            isinstance(t, (bool, np.bool_))
            or not isinstance(t, (int, float, np.integer, np.floating))
            or not np.isfinite(t)
        ):
            raise ValueError(f"timestep_grid must hold finite numbers, got {t!r} in {list(timestep_grid)}")
        if t < 0:
            raise ValueError(f"timestep_grid must hold non-negative timesteps, got {t!r}")
        values.append(float(t))
    if not values:
        raise ValueError("timestep_grid is empty; give at least one timestep")
    if len(set(values)) != len(values):
        raise ValueError(
            f"timestep_grid {list(timestep_grid)} repeats a timestep; use num_draws for more draws at each timestep"
        )
    if num_timesteps is not None and check_positive_int(num_timesteps, "num_timesteps") != len(values):
        raise ValueError(
            f"num_timesteps={num_timesteps} but timestep_grid lists {len(values)} timesteps; leave num_timesteps unset"
        )
    return len(values), tuple(values)


__all__ = [
    "DEFAULT_PROBE_ROWS",
    "MIDPOINTS",
    "PROBE_CLASSES",
    "STRATIFIED",
    "TIMESTEP_GRIDS",
    "check_estimator",
]
