"""The benchmark's input: any labelled image dataset, split into the training data and a held-out reference.

:func:`load_labelled_images` accepts a ``datasets.Dataset`` or ``DatasetDict``, a ``save_to_disk``
folder of either, an ``imagefolder`` (a folder of one sub-folder per class, optionally under split
folders), or ``"digits"`` (the bundled scikit-learn digits, :func:`d2c_hf.data.digits.load_digits_dataset`).
The image and label columns are named by the caller and checked before any work
(:func:`d2c_hf.data.inputs.prepare_dataset`: string labels are encoded).

The reference, against which generated images are scored, is never trained on: a held-out split of a
``DatasetDict`` (``reference_split``; by default ``test``, else ``validation``), else a per-class
``holdout`` fraction of the data drawn with a seed. :func:`to_resolution` then centre-crops and resizes
every image once (the ADM crop the library applies everywhere) to the benchmark's resolution, so the
scorer, the encoders, the selection, the training and the evaluator all see the same pixels.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["LabelledSplits", "load_labelled_images", "to_resolution"]

DIGITS = "digits"
REFERENCE_SPLITS = ("test", "validation")


@dataclass(frozen=True)
class LabelledSplits:
    """The training split and the held-out reference, both with columns ``image`` and ``label``.

    Attributes:
        train, reference: ``datasets.Dataset`` (``label`` is a ``ClassLabel``).
        class_names: one name per class id.
        identity: what names the data in the run record (source, splits, sizes, fingerprints).
    """

    train: Any
    reference: Any
    class_names: tuple[str, ...]
    identity: dict[str, Any]


def _open(source: Any, resolution: int) -> tuple[Any, str]:
    """The ``Dataset`` / ``DatasetDict`` behind ``source``, and a name for it."""
    from datasets import Dataset, DatasetDict, load_dataset, load_from_disk

    if isinstance(source, (Dataset, DatasetDict)):
        return source, f"in-memory {type(source).__name__}"
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            f"dataset must be a datasets.Dataset / DatasetDict, a folder or 'digits', got {type(source).__name__}"
        )
    if str(source) == DIGITS:
        from ..data.digits import load_digits_dataset

        # the 8x8 digits upsampled once, straight to the benchmark's resolution (as the demo does)
        return load_digits_dataset(image_size=max(8, resolution)), DIGITS
    path = Path(source).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"dataset {str(source)!r} is neither 'digits' nor a folder")
    if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
        return load_from_disk(str(path)), str(path.resolve())
    data = load_dataset("imagefolder", data_dir=str(path))
    return data, f"imagefolder {path.resolve()}"


def _holdout(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the held-out rows: ``round(fraction * n_c)`` per class (at least 1 where the class
    has 2 or more rows, never the whole class), drawn with ``np.random.default_rng([seed, c])``."""
    held = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        if len(rows) < 2:
            continue
        k = min(len(rows) - 1, max(1, int(np.floor(fraction * len(rows) + 0.5))))
        held[np.random.default_rng([seed, int(c)]).choice(rows, size=k, replace=False)] = True
    return held


def load_labelled_images(
    source: Any,
    *,
    image_column: str = "image",
    label_column: str = "label",
    split: str | None = None,
    reference_split: str | None = None,
    holdout: float = 0.2,
    seed: int = 0,
    resolution: int = 16,
) -> LabelledSplits:
    """Open ``source`` and return its training split and held-out reference (see the module docstring).

    Args:
        source: a ``Dataset`` / ``DatasetDict``, a ``save_to_disk`` folder, an ``imagefolder`` or ``"digits"``.
        image_column, label_column: the columns to read (renamed ``image`` and ``label``).
        split: the training split of a ``DatasetDict`` (default ``train``, or its only split).
        reference_split: the held-out split (default: ``test``, else ``validation``, if present).
        holdout: without a held-out split, the fraction of each class held out as the reference.
        seed: the holdout's seed.
        resolution: the benchmark's resolution (only ``"digits"`` reads it: it is built at that size).

    Raises:
        ValueError / TypeError / FileNotFoundError naming the column, split or argument.
    """
    from datasets import ClassLabel, DatasetDict, Value

    from ..data.inputs import prepare_dataset

    if not 0.0 < float(holdout) < 1.0:
        raise ValueError(f"holdout must lie in (0, 1), got {holdout!r}")
    data, name = _open(source, resolution)
    ref = None
    if isinstance(data, DatasetDict):
        names = list(data)
        train_name = split or ("train" if "train" in data else names[0] if len(names) == 1 else None)
        if train_name is None or train_name not in data:
            raise ValueError(f"split {split!r} is not a split of the dataset; splits: {names} (pass split=)")
        if reference_split is not None:
            if reference_split not in data:
                raise ValueError(
                    f"reference_split {reference_split!r} is not a split of the dataset; splits: {names}"
                )
            ref_name = reference_split
        else:
            ref_name = next((s for s in REFERENCE_SPLITS if s in data and s != train_name), None)
        train = data[train_name]
        ref = data[ref_name] if ref_name is not None else None
    else:
        if split is not None or reference_split is not None:
            raise ValueError(
                "split / reference_split name splits of a DatasetDict; this dataset is a single split"
            )
        train, train_name, ref_name = data, None, None
    train, info = prepare_dataset(train, image_column, label_column)
    train = train.select_columns([image_column, label_column])
    names = tuple(info.names)
    label_feature = ClassLabel(names=list(names))
    if ref is not None:
        if image_column not in ref.column_names or label_column not in ref.column_names:
            raise ValueError(
                f"the reference split {ref_name!r} lacks the column {image_column!r} or {label_column!r}; "
                f"its columns: {ref.column_names}"
            )
        ref_labels = ref.features[label_column]
        if isinstance(ref_labels, ClassLabel) and list(ref_labels.names) != list(names):
            raise ValueError(
                f"the reference split {ref_name!r} names its classes {ref_labels.names[:5]}..., the training split "
                f"{list(names)[:5]}...: the label ids would not mean the same classes"
            )
        if isinstance(ref_labels, Value) and ref_labels.dtype in ("string", "large_string"):
            # encode by the training split's names (an unknown name raises), not by the reference's own set
            ref = ref.cast_column(label_column, label_feature)
        ref, _ = prepare_dataset(ref, image_column, label_column, num_classes=info.num_classes)
        ref = ref.select_columns([image_column, label_column])

    def normalise(d: Any) -> Any:
        d = d.rename_columns({c: n for c, n in ((image_column, "image"), (label_column, "label")) if c != n})
        return d.cast_column("label", label_feature) if d.features["label"] != label_feature else d

    train = normalise(train)
    how = f"split {ref_name!r}" if ref is not None else f"a per-class holdout of {holdout:g} (seed {seed})"
    if ref is None:
        held = _holdout(np.asarray(train["label"]), float(holdout), seed)
        ref = train.select(np.flatnonzero(held).tolist())
        train = train.select(np.flatnonzero(~held).tolist())
    else:
        ref = normalise(ref)
    train_sizes = np.bincount(np.asarray(train["label"]), minlength=len(names))
    ref_sizes = np.bincount(np.asarray(ref["label"]), minlength=len(names))
    if (train_sizes == 0).any():
        missing = [names[c] for c in np.flatnonzero(train_sizes == 0)]
        raise ValueError(f"classes {missing} have no training image")
    identity = {
        "source": name,
        "train_split": train_name,
        "reference": how,
        "image_column": image_column,
        "label_column": label_column,
        "num_train": len(train),
        "num_reference": len(ref),
        "class_names": list(names),
        "train_class_sizes": train_sizes.tolist(),
        "reference_class_sizes": ref_sizes.tolist(),
        "train_fingerprint": getattr(train, "_fingerprint", None),
        "reference_fingerprint": getattr(ref, "_fingerprint", None),
    }
    logger.info(
        "benchmark data: %d training images, %d reference images (%s), %d classes",
        len(train),
        len(ref),
        how,
        len(names),
    )
    return LabelledSplits(train=train, reference=ref, class_names=names, identity=identity)


def to_resolution(dataset: Any, resolution: int) -> Any:
    """``dataset`` (columns ``image``, ``label``) with every image centre-cropped and resized to
    ``resolution`` px RGB once (:func:`d2c_hf.utils.images.dataset_pixels`), stored as PNG."""
    from datasets import Dataset, Features, Image
    from PIL import Image as PILImage

    from ..utils.images import dataset_pixels

    pixels = dataset_pixels(dataset, "image", resolution, what="the benchmark")
    features = Features({"image": Image(), "label": dataset.features["label"]})
    return Dataset.from_dict(
        {"image": [PILImage.fromarray(p) for p in pixels], "label": list(dataset["label"])}, features=features
    )
