"""The benchmark's figures (PNG, matplotlib's Agg backend, written beside the target and renamed):

* :func:`plot_map`: strategy x budget heat maps of the paired difference against random (FD, class
  accuracy, precision, recall), each cell holding the mean and its 95 % interval; blue is better than
  random in every panel.
* :func:`plot_curves`: one panel per metric against training step (log scale), one line per arm (mean
  over seeds, band +- std).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .evaluator import METRIC_KEYS

__all__ = ["plot_curves", "plot_map"]

METRIC_LABELS = {
    "fd": "FD ↓",
    "kid_mean": "KID ↓",
    "precision": "precision ↑",
    "recall": "recall ↑",
    "class_accuracy": "class acc. ↑",
}
#: the map's panels: (contrast key, title, lower is better)
MAP_PANELS = (
    ("fd/unguided", "ΔFD (↓ better)", True),
    ("class_accuracy/unguided", "Δclass accuracy (↑ better)", False),
    ("precision/unguided", "Δprecision (↑ better)", False),
    ("recall/unguided", "Δrecall (↑ better)", False),
)


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=90, metadata={"Software": None})
    plt.close(fig)
    os.replace(tmp, path)
    return path


def plot_map(path: Path, results: Mapping[str, Any], budget_labels: Sequence[str], title: str) -> Path:
    """Strategy x budget heat maps of the paired differences against random (see the module docstring)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(results["map"].values())
    width = 1.3 * max(2, len(budget_labels)) + 0.4
    height = 0.5 * max(2, len(rows)) + 1.0
    fig, axes = plt.subplots(2, 2, figsize=(2 * width + 3.2, 2 * height + 0.6), squeeze=False)
    for n, (key, panel_title, lower_better) in enumerate(MAP_PANELS):
        ax = axes[n // 2][n % 2]
        values = np.full((len(rows), len(budget_labels)), np.nan)
        texts = [["" for _ in budget_labels] for _ in rows]
        for i, row in enumerate(rows):
            for j, label in enumerate(budget_labels):
                entry = row["cells"].get(label, {}).get(key)
                if entry is None:
                    texts[i][j] = "—"
                    continue
                values[i, j] = entry["mean"]
                digits = 3
                star = "*" if len(entry["per_seed"]) > 1 and (entry["low"] > 0 or entry["high"] < 0) else ""
                texts[i][j] = (
                    f"{entry['mean']:+.{digits}f}{star}\n[{entry['low']:+.{digits}f}, "
                    f"{entry['high']:+.{digits}f}]"
                )
        finite = np.abs(values[np.isfinite(values)])
        vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
        cmap = "RdBu_r" if lower_better else "RdBu"  # blue = better than random
        ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=-vmax, vmax=vmax, aspect="auto")
        for i in range(len(rows)):
            for j in range(len(budget_labels)):
                strong = np.isfinite(values[i, j]) and abs(values[i, j]) > 0.6 * vmax
                ax.text(
                    j,
                    i,
                    texts[i][j],
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if strong else "black",
                )
        ax.set_xticks(range(len(budget_labels)))
        ax.set_xticklabels(budget_labels, fontsize=8)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([r["name"] for r in rows] if n % 2 == 0 else [], fontsize=8)
        ax.set_title(panel_title, fontsize=9)
        ax.set_xlabel("budget", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _log_step_axis(ax: Any) -> None:
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ax.set_xscale("log")
    low, high = ax.get_xlim()
    ticks = [m * 10**e for e in range(0, 8) for m in (1, 2, 5) if low <= m * 10**e <= high]
    ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())


def plot_curves(path: Path, title: str, cells: Mapping[str, Any]) -> Path:
    """One panel per metric, one line per arm (mean over seeds, +- std band), log-step x axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRIC_KEYS), figsize=(4.2 * len(METRIC_KEYS), 4.6), squeeze=False)
    for ax, metric in zip(axes[0], METRIC_KEYS):
        for key, cell in cells.items():
            curve = cell["summary"]["curve"]
            steps = np.array([c["step"] for c in curve])
            mean = np.array([c[metric]["mean"] for c in curve])
            std = np.array([c[metric]["std"] for c in curve])
            style = {"linestyle": "--", "color": "black"} if key == "full" else {}
            (line,) = ax.plot(steps, mean, marker="o", ms=3, label=cell["name"], **style)
            ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.12)
        if len({c["step"] for cell in cells.values() for c in cell["summary"]["curve"]}) > 1:
            _log_step_axis(ax)
        if metric == "fd":
            ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_ylabel(METRIC_LABELS[metric])
        ax.grid(alpha=0.3, which="both")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(
        handles, labels, loc="lower center", ncol=min(4, max(1, len(labels))), fontsize=8, frameon=False
    )
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.05 * math.ceil(len(labels) / 4) + 0.02, 1, 1))
    return _save(fig, path)
