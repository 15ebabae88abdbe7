"""The rows a condense run reads: a :class:`Source` over a map-style or streaming dataset, and the batches
of it that ``DataLoader`` workers decode and crop (:class:`BatchStream`).

Worker ``w`` of ``W`` decodes batches ``w, w + W, ...``; the model process receives uint8 crops only
(pinned memory and ``non_blocking`` copies on CUDA). A streaming source is walked once per worker without
decoding the rows it does not own, and the walk stops after its last row.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils.checks import check_positive_int

#: ``--dataset digits``: scikit-learn's bundled handwritten digits (:func:`d2c_hf.data.digits.load_digits_dataset`)
DIGITS = "digits"
#: ``--dataset captioned-digits``: the same with captions (:func:`d2c_hf.data.captions.load_captioned_digits`)
CAPTIONED_DIGITS = "captioned-digits"


@dataclass
class Source:
    """The rows to process: ``data`` is a map-style ``Dataset`` or an ``IterableDataset`` whose image
    column is not decoded (``Image(decode=False)``), ``num_rows`` its length."""

    data: Any
    num_rows: int
    streaming: bool
    class_names: tuple[str, ...]
    label_feature: Any
    identity: dict[str, Any]
    image_column: str
    label_column: str | None  # None: a captioned source without labels
    key_column: str | None
    feature_column: str | None = None  # per-row selection features (herding, k-center, ...)
    caption_column: str | None = None  # a captioned source (text-to-image)

    def columns(self) -> list[str]:
        names = (
            self.image_column,
            self.label_column,
            self.key_column,
            self.feature_column,
            self.caption_column,
        )
        return list(dict.fromkeys(c for c in names if c))

    @property
    def feature_dtype(self) -> np.dtype | None:
        """The numpy dtype the feature column holds (what ``with_format("numpy")`` gives in memory)."""
        return None if self.feature_column is None else numpy_dtype(self.data.features[self.feature_column])


def numpy_dtype(feature: Any) -> np.dtype:
    """The numpy dtype of the values of a (nested) ``datasets`` feature: ``List(Value("float32"))`` ->
    float32."""
    while not hasattr(feature, "dtype") or getattr(feature, "dtype", None) == "list":
        inner = getattr(feature, "feature", None)
        if inner is None:
            raise TypeError(f"feature {feature!r} holds no numeric values")
        feature = inner
    return np.dtype(feature.dtype)


def open_source(
    dataset: str,
    *,
    split: str | None = None,
    streaming: bool = False,
    image_column: str = "image",
    label_column: str = "label",
    key_column: str | None = None,
    max_samples: int | None = None,
    num_rows: int | None = None,
    num_classes: int | None = None,
    feature_column: str | None = None,
    caption_column: str | None = None,
    with_labels: bool = True,
) -> Source:
    """Open ``dataset`` (``"digits"``, ``"captioned-digits"``, a ``save_to_disk`` folder, or a ``load_dataset``
    name/path) and check its columns before any model is loaded.

    ``split`` picks a split of a ``DatasetDict`` folder or a ``load_dataset`` dataset (default
    ``"train"``); a ``save_to_disk`` folder of one ``Dataset`` *is* one split, so a ``split`` that
    differs from the one it records is refused rather than ignored. Streaming needs the split's size
    (from the dataset's metadata, or ``num_rows``) so that shards can be assigned before reading; a
    ``save_to_disk`` folder or ``digits`` is streamed through ``to_iterable_dataset()`` (same row order).
    """
    from datasets import Dataset, DatasetDict, load_dataset, load_from_disk

    from ..data.captions import load_captioned_digits
    from ..data.digits import load_digits_dataset
    from ..utils.hub import check_reference

    path = Path(dataset).expanduser()
    if dataset == DIGITS:
        data, name = load_digits_dataset(), DIGITS
    elif dataset == CAPTIONED_DIGITS:
        data, name = load_captioned_digits(), CAPTIONED_DIGITS
    else:
        check_reference(dataset, "--dataset")
        local = path.is_dir()
        # a local folder is named by its absolute path, so that ./data and /abs/data resume the same run
        name = str(path.resolve()) if local else dataset
        if local and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file()):
            data = load_from_disk(str(path))
        else:
            data = load_dataset(dataset, split=split or "train", streaming=streaming)
    if isinstance(data, DatasetDict):
        split = split or "train"
        if split not in data:
            raise ValueError(f"split {split!r} is not a split of {dataset!r}; splits: {list(data)}")
        data = data[split]
    elif isinstance(data, Dataset) and split is not None:
        recorded = None if data.split is None else str(data.split)
        if recorded != split:  # one saved Dataset is one split: never record a split that was not read
            what = f"saved from split {recorded!r}" if recorded else "that records no split name"
            raise ValueError(
                f"{dataset!r} is a single Dataset (save_to_disk of one split) {what}, so split {split!r} cannot be "
                "read from it: drop the split option, or point at a DatasetDict folder that holds that split"
            )
    split = (
        split
        if split is not None
        else (str(data.split) if getattr(data, "split", None) is not None else None)
    )
    size = len(data) if isinstance(data, Dataset) else None
    if size is None:
        splits = getattr(data.info, "splits", None) or {}
        key = split or "train"
        size = splits[key].num_examples if key in splits and splits[key].num_examples else num_rows
        if size is None:
            raise ValueError(
                f"the size of the streaming split {key!r} of {dataset!r} is unknown: pass --num_rows N"
            )
    if max_samples is not None:
        max_samples = check_positive_int(max_samples, "max_samples")
        size = min(size, max_samples)
        data = data.select(range(size)) if isinstance(data, Dataset) else data.take(size)
    identity: dict[str, Any] = {"dataset": name, "split": split, "num_rows": int(size)}
    return source_from_dataset(
        data,
        identity,
        num_rows=size,
        streaming=streaming,
        image_column=image_column,
        label_column=label_column if with_labels else None,
        key_column=key_column,
        num_classes=num_classes,
        feature_column=feature_column,
        caption_column=caption_column,
    )


def source_from_dataset(
    data: Any,
    identity: Mapping[str, Any],
    *,
    num_rows: int | None = None,
    streaming: bool = False,
    image_column: str = "image",
    label_column: str | None = "label",
    key_column: str | None = None,
    num_classes: int | None = None,
    feature_column: str | None = None,
    caption_column: str | None = None,
) -> Source:
    """A :class:`Source` over an already-loaded ``Dataset`` / ``IterableDataset`` (columns checked);
    ``identity`` names it in the run config (add what identifies the data, e.g. a fingerprint). A captioned
    source (``caption_column``) has its captions checked (every row of a ``Dataset``, the feature of a stream)
    and needs no labels (``label_column=None``)."""
    from datasets import Dataset, Image, IterableDataset

    from ..data.inputs import ClassInfo, prepare_dataset

    size = len(data) if isinstance(data, Dataset) else num_rows
    if size is None:
        raise ValueError("pass num_rows for an IterableDataset")
    identity = {**identity, "num_rows": int(size)}
    if isinstance(data, Dataset):
        identity["fingerprint"] = data._fingerprint
    if caption_column is not None:
        from ..selection.captions import check_caption_column, check_caption_feature

        if isinstance(data, Dataset):
            check_caption_column(data, caption_column)
        else:
            check_caption_feature(data.features, caption_column)
    if label_column is not None:
        data, info = prepare_dataset(
            data,
            image_column,
            label_column,
            num_classes=None if isinstance(data, Dataset) else num_classes,
        )
    else:
        features = data.features or {}
        if image_column not in features or not isinstance(features[image_column], Image):
            raise ValueError(
                f"image_column={image_column!r} is not an image column of the dataset; columns: {list(features)}"
            )
        info = ClassInfo(num_classes=0, names=())
    if key_column is not None and key_column not in data.features:
        raise ValueError(f"key_column={key_column!r} is not a column; columns: {list(data.features)}")
    if feature_column is not None and feature_column not in data.features:
        raise ValueError(
            f"feature_column={feature_column!r} is not a column of the dataset; columns: {list(data.features)}"
        )
    label_feature = data.features[label_column] if label_column is not None else None
    names = (image_column, label_column, key_column, feature_column, caption_column)
    columns = list(dict.fromkeys(c for c in names if c))
    data = data.select_columns(columns)
    if data.features[image_column].decode:
        data = data.cast_column(image_column, Image(decode=False))
    if streaming and isinstance(data, Dataset):
        data = data.to_iterable_dataset()
    if isinstance(data, Dataset):
        data = data.with_format(None)
    return Source(
        data=data,
        num_rows=int(size),
        streaming=isinstance(data, IterableDataset),
        class_names=info.names,
        label_feature=label_feature,
        identity=identity,
        image_column=image_column,
        label_column=label_column,
        key_column=key_column,
        feature_column=feature_column,
        caption_column=caption_column,
    )


# --------------------------------------------------------------------------------------
# the data loader: decoding and cropping in worker processes
# --------------------------------------------------------------------------------------


def _image_bytes(value: Any) -> bytes:
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            return bytes(value["bytes"])
        if value.get("path"):
            return Path(value["path"]).read_bytes()
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    raise ValueError(f"unsupported image value {type(value).__name__}")


@dataclass
class BatchPrep:
    """What a worker does to one batch of raw rows (picklable for worker processes)."""

    image_column: str
    label_column: str
    key_column: str | None
    resolution: int
    num_classes: int
    skip_corrupt: bool
    keep_bytes: bool
    feature_column: str | None = None
    feature_dtype: Any = None
    caption_column: str | None = None  # a captioned source: the chosen caption of each row is returned
    caption_choice: str = "first"
    caption_seed: int = 0

    def __call__(self, rows: np.ndarray, raw: Mapping[str, list]) -> dict[str, Any]:
        from ..data.inputs import check_labels
        from ..selection.captions import choose_captions
        from ..selection.noise import pixel_keys, value_keys
        from ..utils.images import center_crop, decode_image

        keep, pixels, blobs, corrupt, upsampled = [], [], [], [], 0
        labels = raw[self.label_column] if self.label_column else None
        for i, (row, value) in enumerate(zip(rows.tolist(), raw[self.image_column])):
            if labels is not None and labels[i] is None:
                raise ValueError(f"column {self.label_column!r} has a missing label (None) at row {row}")
            try:
                image = decode_image(value, row)
                crop = center_crop(image, self.resolution)
            except Exception as err:
                if not self.skip_corrupt:
                    raise ValueError(
                        f"corrupt image in column {self.image_column!r} at row {row}: {err} "
                        "(pass --skip_corrupt to skip such rows)"
                    ) from err
                corrupt.append(row)
                continue
            upsampled += min(image.size) < self.resolution
            keep.append(i)
            pixels.append(crop)
            if self.keep_bytes:
                blobs.append(_image_bytes(value))
        r = self.resolution
        pixels_arr = np.stack(pixels) if pixels else np.zeros((0, r, r, 3), np.uint8)
        kept_rows = rows[keep]
        if labels is None:  # a captioned source without labels: its groups are assigned when scores merge
            y = np.zeros(len(keep), np.int64)
        else:
            y = check_labels(
                np.asarray([labels[i] for i in keep], dtype=np.int64),
                self.num_classes,
                self.label_column,
                rows=kept_rows,
            )
        if self.key_column:
            keys = value_keys([raw[self.key_column][i] for i in keep], kept_rows, self.key_column)
        else:
            keys = pixel_keys(pixels_arr)
        out = {
            "rows": torch.from_numpy(kept_rows.astype(np.int64)),
            "pixels": torch.from_numpy(pixels_arr),
            "labels": torch.from_numpy(y),
            "keys": torch.from_numpy(keys.view(np.int64)),  # torch has no uint64 collate; viewed back later
            "corrupt": torch.tensor(corrupt, dtype=torch.int64),
            "upsampled": int(upsampled),
        }
        if self.keep_bytes:
            out["bytes"] = blobs
        if self.caption_column:  # chosen as the scorer does: by the row's key (shard- and order-invariant)
            out["captions"] = choose_captions(
                [raw[self.caption_column][i] for i in keep],
                keys,
                choice=self.caption_choice,
                seed=self.caption_seed,
                column=self.caption_column,
                rows=kept_rows.tolist(),
            )
        if self.feature_column:
            values = [raw[self.feature_column][i] for i in keep]
            out["features"] = np.asarray(values, dtype=self.feature_dtype) if values else np.zeros((0, 0))
        return out


class BatchStream(torch.utils.data.IterableDataset):
    """The batches ``[(shard, rows), ...]`` of a rank, read and preprocessed in ``DataLoader`` workers.

    Worker ``w`` of ``W`` handles batches ``w, w + W, ...`` so the DataLoader's round-robin returns
    them in order. A map-style source is read by row index; a streaming source is walked once per
    worker without decoding the rows it does not own (and the walk stops after its last row).
    """

    def __init__(self, source: Source, batches: Sequence[tuple[int, np.ndarray]], prep: BatchPrep) -> None:
        self.source, self.batches, self.prep = source, list(batches), prep

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        mine = list(range(worker, len(self.batches), workers))
        reader = self._read_stream if self.source.streaming else self._read_map
        for j, raw in reader(mine):
            shard, rows = self.batches[j]
            out = self.prep(rows, raw)
            out["shard"], out["batch"] = shard, j
            yield out

    def _read_map(self, mine: list[int]) -> Iterator[tuple[int, dict[str, list]]]:
        data = self.source.data
        for j in mine:
            rows = self.batches[j][1]
            if len(rows) and rows[-1] - rows[0] + 1 == len(rows):  # contiguous: a slice is cheapest
                yield j, data[int(rows[0]) : int(rows[-1]) + 1]
            else:
                yield j, data[rows.tolist()]

    def _read_stream(self, mine: list[int]) -> Iterator[tuple[int, dict[str, list]]]:
        if not mine:
            return
        columns = self.source.columns()
        position = 0  # global row index of the next streamed row
        cursor = 0  # index into `mine`
        wanted = self.batches[mine[0]][1]
        got: dict[str, list] = {c: [] for c in columns}
        for chunk in self.source.data.iter(batch_size=256):
            n = len(chunk[columns[0]])
            while cursor < len(mine):
                first = np.searchsorted(wanted, position)
                last = np.searchsorted(wanted, position + n)
                for c in columns:
                    got[c].extend(chunk[c][int(wanted[k] - position)] for k in range(first, last))
                if len(got[columns[0]]) < len(wanted):
                    break  # the batch continues in the next chunk
                yield mine[cursor], got
                cursor += 1
                got = {c: [] for c in columns}
                if cursor < len(mine):
                    wanted = self.batches[mine[cursor]][1]
            if cursor >= len(mine):
                return
            position += n
        if cursor < len(mine):
            raise RuntimeError(
                f"the stream ended at row {position} but batch rows up to {int(wanted[-1])} were expected; "
                "num_rows is larger than the dataset"
            )


def make_loader(
    source: Source,
    batches: Sequence[tuple[int, np.ndarray]],
    prep: BatchPrep,
    num_workers: int,
    device: torch.device,
):
    return torch.utils.data.DataLoader(
        BatchStream(source, batches, prep),
        batch_size=None,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if num_workers else None,
        persistent_workers=False,
    )


def plan_batches(
    shard_rows: Mapping[int, np.ndarray], batch_size: int
) -> tuple[list[tuple[int, np.ndarray]], dict[int, int]]:
    """Cut each shard's rows into batches (never across shards): ``(batches, batches per shard)``."""
    batches, counts = [], {}
    for shard in sorted(shard_rows):
        rows = shard_rows[shard]
        parts = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
        batches += [(shard, part) for part in parts]
        counts[shard] = len(parts)
    return batches, counts
