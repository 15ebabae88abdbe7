"""Select, groups instead of classes: what a captioned dataset is selected (and its score's reliability
measured) within.

Interval sampling, and every strategy, keeps a budget *per class*. A captioned dataset has no classes, so its
rows are grouped first and the groups play the classes' part everywhere (the budget per group, the selection,
the reliability within groups, the counts and the card). ``group_by`` says from what:

* ``"captions"`` (default): k-means on the caption features of the scorer's own text encoder (CLIP's pooled
  output for Stable Diffusion, the mean T5 hidden state for PixArt, the pooled CLIP projections for SD3), the
  same encoding the difficulty is conditioned on;
* ``"images"``: k-means on the image's clean scorer input (VAE latent or pixels) average-pooled to a 4 x 4 grid
  (``C * 16`` numbers: coarse layout and colour, free since the scorer computes it anyway);
* ``"label"``: an existing label column (``ClassLabel`` or integers), when the captioned data has classes.

k-means (:func:`~d2c_hf.selection.successors.kmeans_fit`: k-means++ seeding from ``numpy.random.default_rng(seed)``,
Lloyd iterations to convergence) runs on the rows' features scaled to unit length (cosine geometry, the usual
one for text and image embeddings), so the groups are a function of (features, number of groups, seed) only.
Group ids are then renumbered by first appearance in row order (group 0 holds row 0), and empty clusters are
dropped. The default number of groups is ``round(sqrt(N / 2))`` clipped to ``[1, 100]`` (the usual rule of
thumb; 27 for the 1,437 training digits, 100 for COCO's 82,783 images).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..utils.checks import check_positive_int

GROUP_BY = ("captions", "images", "label")
#: ``group_by`` -> the source recorded in ``info["text_to_image"]["groups"]``
GROUP_SOURCES = {"captions": "caption_embeddings", "images": "image_features", "label": "label"}
MAX_DEFAULT_GROUPS = 100
#: side of the pooled grid of ``group_by="images"``
IMAGE_FEATURE_GRID = 4


def check_group_options(group_by: Any, num_groups: Any) -> None:
    if group_by not in GROUP_BY:
        raise ValueError(f"group_by must be one of {GROUP_BY}, got {group_by!r}")
    if num_groups is not None:
        check_positive_int(num_groups, "num_groups")
        if group_by == "label":
            raise ValueError(
                "num_groups is for k-means groups; group_by='label' takes the label column's classes"
            )


def default_num_groups(num_rows: int) -> int:
    """``round(sqrt(num_rows / 2))`` clipped to ``[1, 100]``."""
    return int(min(MAX_DEFAULT_GROUPS, max(1, round(math.sqrt(max(num_rows, 0) / 2)))))


def group_names(num_groups: int) -> list[str]:
    """``["group 0", ..., "group k-1"]``: the ``ClassLabel`` names of the stored groups."""
    return [f"group {i}" for i in range(num_groups)]


def image_features(x0: Any) -> Any:
    """``(B, C, h, w)`` clean scorer inputs (a tensor) -> ``(B, C * 16)`` float32: the 4 x 4 average-pooled grid."""
    import torch.nn.functional as F

    return F.adaptive_avg_pool2d(x0.float(), IMAGE_FEATURE_GRID).flatten(1)


def assign_groups(features: np.ndarray, num_groups: int | None, seed: int) -> np.ndarray:
    """k-means groups of the rows (see the module docstring).

    Args:
        features: ``(N, D)`` real features, one row per dataset row.
        num_groups: k (``None``: :func:`default_num_groups`); more than the distinct rows gives fewer groups.
        seed: seed of the k-means++ draws.

    Returns:
        ``(N,)`` int64 group ids ``0..k'-1`` (``k' <= k``: empty clusters dropped), numbered by first appearance.

    Cost: O(I N k D) time (I Lloyd iterations), O(N D + N k) memory (float64).
    """
    from .successors import kmeans_fit

    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"group features must be a non-empty (N, D) array, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        row = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
        raise ValueError(f"the group features of row {row} are not finite")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norms > 0, norms, 1.0)
    k = default_num_groups(len(x)) if num_groups is None else check_positive_int(num_groups, "num_groups")
    distinct = len(np.unique(x, axis=0))
    assign, _ = kmeans_fit(x, min(k, distinct), seed)
    return renumber(assign)


def renumber(labels: np.ndarray) -> np.ndarray:
    """Group ids renumbered ``0..k'-1`` by first appearance in row order."""
    labels = np.asarray(labels, dtype=np.int64)
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first, kind="stable"), kind="stable")
    return order[inverse].astype(np.int64)


def group_record(
    group_by: str, groups: np.ndarray, names: Sequence[str], num_groups: int | None, seed: int
) -> dict[str, Any]:
    """``info["text_to_image"]["groups"]``: source, count, sizes, seed (and what was asked)."""
    sizes = np.bincount(np.asarray(groups, np.int64), minlength=len(names))
    return {
        "source": GROUP_SOURCES[group_by],
        "num_groups": len(names),
        "num_groups_requested": num_groups,
        "names": list(names),
        "sizes": sizes.astype(int).tolist(),
        "seed": int(seed),
        "method": "label column"
        if group_by == "label"
        else "k-means (k-means++ seeding, Lloyd) on unit-length features",
    }


__all__ = [
    "GROUP_BY",
    "GROUP_SOURCES",
    "IMAGE_FEATURE_GRID",
    "MAX_DEFAULT_GROUPS",
    "assign_groups",
    "check_group_options",
    "default_num_groups",
    "group_names",
    "group_record",
    "image_features",
    "renumber",
]
