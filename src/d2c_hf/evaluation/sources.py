"""Image sets on disk, read in batches: an ADM ``.npz`` or a folder of image files.

FID-50K reads 50,000 images; :class:`ImageSource` streams them as ``(B, H, W, 3)`` uint8 batches so
that memory stays at one batch: ``arr_0`` of an ``.npz`` is read sequentially from the archive
(:func:`~d2c_hf.evaluation.adm.iter_npz_images`), and the files of a folder are decoded in
``DataLoader`` worker processes (``num_workers``), in sorted path order.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .adm import iter_npz_images, npz_images_shape

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def list_image_files(folder: str | os.PathLike) -> list[Path]:
    """Image files under ``folder`` (recursively, hidden entries skipped), sorted by relative path."""
    folder = Path(folder)
    files = [
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


class _FolderImages:
    """Map-style dataset: file ``i`` -> ``(H, W, 3)`` uint8 (picklable for DataLoader workers)."""

    def __init__(self, files: list[Path], resolution: int | None, size: tuple[int, int] | None) -> None:
        self.files, self.resolution, self.size = files, resolution, size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> np.ndarray:
        from ..utils.images import center_crop, decode_image, to_rgb

        path = self.files[index]
        try:
            image = to_rgb(decode_image({"bytes": None, "path": str(path)}, index))
        except Exception as err:
            raise ValueError(f"cannot decode image file {path}: {err}") from err
        if self.resolution is not None:
            return center_crop(image, self.resolution)
        pixels = np.asarray(image)
        if self.size is not None and pixels.shape[:2] != self.size:
            raise ValueError(
                f"{path} is {pixels.shape[0]}x{pixels.shape[1]} (HxW) but {self.files[0]} is "
                f"{self.size[0]}x{self.size[1]}: all images must share one size; pass a resolution "
                "(--resolution N: ADM centre crop to N x N) to crop them all"
            )
        return pixels


def _stack(items: list[np.ndarray]) -> np.ndarray:
    return np.stack(items)


@dataclass
class ImageSource:
    """A set of ``num_images`` RGB images of one size, read in batches with :meth:`batches`.

    Build it with :func:`open_images`. ``image_size`` is ``(H, W)`` of every image (after the
    centre crop, when ``resolution`` is set).
    """

    path: Path
    kind: str  # "npz" or "folder"
    num_images: int
    image_size: tuple[int, int]
    resolution: int | None = None
    files: list[Path] = field(default_factory=list, repr=False)

    def describe(self) -> dict:
        """What the source is, for provenance records."""
        out = {"path": str(self.path), "kind": self.kind, "num_images": self.num_images}
        out["image_size"] = list(self.image_size)
        if self.resolution is not None:
            out["center_crop"] = self.resolution
        return out

    def batches(self, batch_size: int, num_workers: int = 0) -> Iterator[np.ndarray]:
        """``(B, H, W, 3)`` uint8 batches in order (the last may be smaller)."""
        if self.kind == "npz":
            yield from iter_npz_images(self.path, batch_size)
            return
        import torch

        size = None if self.resolution is not None else self.image_size
        loader = torch.utils.data.DataLoader(
            _FolderImages(self.files, self.resolution, size),
            batch_size=batch_size,
            shuffle=False,
            num_workers=num_workers,
            collate_fn=_stack,
        )
        yield from loader


def open_images(path: str | os.PathLike, *, resolution: int | None = None) -> ImageSource:
    """Open an ADM-layout ``.npz`` (``arr_0``) or a folder of image files, checking it before any reading.

    Args:
        path: the ``.npz`` file or the folder (searched recursively; ``.png``, ``.jpg``, ...).
        resolution: folders only: ADM centre crop of every image to ``resolution`` x ``resolution``
            (:func:`d2c_hf.utils.images.center_crop`); without it, all images must share one size (the first
            that differs is named when it is read).

    Raises:
        FileNotFoundError: no such path. ValueError: an ``.npz`` not in the ADM layout, an empty folder,
        ``resolution`` with an ``.npz``.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    if path.is_file():
        if resolution is not None:
            raise ValueError(f"{path}: resolution (centre crop) applies to image folders, not to .npz files")
        num, height, width, _ = npz_images_shape(path)
        if num == 0:
            raise ValueError(f"{path}: arr_0 holds no images")
        return ImageSource(path, "npz", num, (height, width))
    files = list_image_files(path)
    if not files:
        raise ValueError(f"{path} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    if resolution is not None:
        if resolution < 1:
            raise ValueError(f"resolution must be a positive int, got {resolution}")
        size = (resolution, resolution)
    else:
        from PIL import Image

        with Image.open(files[0]) as first:
            size = (first.height, first.width)
    return ImageSource(path, "folder", len(files), size, resolution, files)
