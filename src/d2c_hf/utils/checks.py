"""Argument checks shared by every public entry point: each names the argument and what it takes."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_positive_int(value: Any, name: str) -> int:
    """``value`` as an ``int`` if it is an integer >= 1, else ``ValueError`` naming ``name``."""
    if not _is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_non_negative_int(value: Any, name: str) -> int:
    """``value`` as an ``int`` if it is an integer >= 0, else ``ValueError`` naming ``name``."""
    if not _is_int(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def check_seed(value: Any, name: str = "seed") -> int:
    """A seed: an integer in ``[0, 2**64)``."""
    if not _is_int(value) or not 0 <= value < 2**64:
        raise ValueError(f"{name} must be an integer in [0, 2**64), got {value!r}")
    return int(value)


def check_positive_number(value: Any, name: str) -> float:
    """A finite number > 0."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    if not math.isfinite(float(value)) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def check_new_output_dir(value: str | os.PathLike) -> Path:
    """``value`` as a ``Path`` that does not exist yet or is an empty folder (a trainer's ``output_dir``)."""
    path = Path(value)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(f"output_dir={str(path)!r} exists and is not an empty folder; choose another")
    return path
