"""``.npz`` files in the layout of the ADM evaluator (openai/guided-diffusion ``evaluations/evaluator.py``).

The evaluator that REPA, SiT and DiT report with reads a *sample batch* ``.npz`` holding
``arr_0``: ``(N, H, W, 3)`` uint8 images, and a *reference batch* ``.npz`` (e.g.
``VIRTUAL_imagenet256_labeled.npz``) holding ``arr_0`` reference images (used for precision
and recall) plus precomputed Inception statistics ``mu``/``sigma`` (pool3, FID) and
``mu_s``/``sigma_s`` (spatial, sFID). guided-diffusion's sampler also stores the class labels
as ``arr_1``.

At FID-50K scale (50,000 images of 256x256 = 9.8 GB) nothing here needs the whole array in memory:
:func:`iter_npz_images` streams ``arr_0`` in batches, and :func:`save_npz_batches` writes a sample
batch from an iterable of batches, atomically.
"""

from __future__ import annotations

import contextlib
import os
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from .images import ImagesArg, to_uint8_images

_STAT_PAIRS = (("mu", "sigma"), ("mu_s", "sigma_s"))


@dataclass
class ReferenceBatch:
    """Contents of an ADM reference (or sample) batch.

    Attributes:
        images: ``(N, H, W, 3)`` uint8, or ``None`` if the file has no ``arr_0`` (or it was
            not loaded).
        num_images: rows of ``arr_0`` (read from its header even when not loaded), else 0.
        mu, sigma: ``(d,)``/``(d, d)`` pool3 statistics, if stored.
        mu_s, sigma_s: spatial (sFID) statistics, if stored.
        labels: ``(N,)`` integer labels from ``arr_1``, if stored.
    """

    images: np.ndarray | None = None
    num_images: int = 0
    mu: np.ndarray | None = None
    sigma: np.ndarray | None = None
    mu_s: np.ndarray | None = None
    sigma_s: np.ndarray | None = None
    labels: np.ndarray | None = None

    def __repr__(self) -> str:
        def describe(value: np.ndarray | None) -> str:
            return "None" if value is None else f"array{value.shape}"

        fields = ("images", "mu", "sigma", "mu_s", "sigma_s", "labels")
        parts = [f"num_images={self.num_images}"] + [
            f"{name}={describe(getattr(self, name))}" for name in fields
        ]
        return f"ReferenceBatch({', '.join(parts)})"

    @property
    def statistics(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(mu, sigma)`` if stored, for :func:`frechet_distance`."""
        return None if self.mu is None else (self.mu, self.sigma)


def save_npz(path: str | os.PathLike, images: ImagesArg, labels: Any = None) -> Path:
    """Write ``images`` as an ADM sample batch: ``arr_0`` = ``(N, H, W, 3)`` uint8.

    Evaluate it with the standard evaluator::

        python evaluations/evaluator.py VIRTUAL_imagenet256_labeled.npz samples.npz

    Args:
        path: output file; ``.npz`` is appended when missing (as ``np.savez`` does).
        images: any :func:`to_uint8_images` input; all images must share one size.
        labels: optional ``(N,)`` integer class labels, stored as ``arr_1``.

    Returns:
        The path written.
    """
    pixels = to_uint8_images(images)
    arrays = {"arr_0": pixels}
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (len(pixels),) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"labels must be {len(pixels)} integers (one per image), got shape {labels.shape}, dtype {labels.dtype}"
            )
        arrays["arr_1"] = labels.astype(np.int64)
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    from ..utils.files import atomic_write

    return atomic_write(path, lambda handle: np.savez(handle, **arrays))  # never a partial file under path


def _read_header(handle: IO[bytes], name: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` of the ``.npy`` stream at ``handle``, leaving it at the data."""
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(handle)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(handle)
    raise ValueError(f"{name}: .npy format version {version} is not supported (write it with np.savez)")


def _member_header(archive: zipfile.ZipFile, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of ``name.npy`` inside an ``.npz`` without reading its data."""
    with archive.open(f"{name}.npy") as handle:
        try:
            shape, _, dtype = _read_header(handle, name)
        except ValueError:  # format 3.0 (utf-8 field names) has no public header reader: read the array
            with archive.open(f"{name}.npy") as again:
                array = np.lib.format.read_array(again, allow_pickle=False)
            shape, dtype = array.shape, array.dtype
    return tuple(shape), dtype


def npz_images_shape(path: str | os.PathLike) -> tuple[int, int, int, int]:
    """``(N, H, W, 3)`` of ``arr_0`` in an ADM-layout ``.npz``, read from its header only.

    Raises:
        ValueError: not an ``.npz``, no ``arr_0``, or ``arr_0`` not ``(N, H, W, 3)`` uint8 (C order).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not an .npz archive (np.savez output)")
    with zipfile.ZipFile(path) as archive:
        if "arr_0.npy" not in archive.namelist():
            raise ValueError(f"{path} has no arr_0 (images); found {sorted(archive.namelist())}")
        with archive.open("arr_0.npy") as handle:
            shape, fortran, dtype = _read_header(handle, f"{path}:arr_0")
    if len(shape) != 4 or shape[-1] != 3 or dtype != np.uint8 or fortran:
        raise ValueError(
            f"{path}: arr_0 is {dtype} {tuple(shape)}{' (Fortran order)' if fortran else ''}; expected "
            "(N, H, W, 3) uint8 images in C order, as save_npz writes them"
        )
    return tuple(int(v) for v in shape)  # type: ignore[return-value]


def iter_npz_images(path: str | os.PathLike, batch_size: int) -> Iterator[np.ndarray]:
    """Stream ``arr_0`` of an ADM-layout ``.npz`` as ``(B, H, W, 3)`` uint8 batches (the last may be smaller).

    Reads the zip member sequentially, so memory stays at one batch whatever ``N`` is (``np.load``
    would read all 9.8 GB of a 50K x 256² sample batch at once). Works for compressed archives too.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    num, height, width, channels = npz_images_shape(path)
    row = height * width * channels
    with zipfile.ZipFile(path) as archive, archive.open("arr_0.npy") as handle:
        _read_header(handle, f"{path}:arr_0")
        for start in range(0, num, batch_size):
            count = min(batch_size, num - start)
            data = bytearray(count * row)  # writable, so torch.from_numpy can share it
            with damaged_npz(path):  # the member's CRC-32 (written by np.savez) is checked on its last read
                got = handle.readinto(data)
            if got != count * row:
                raise ValueError(f"{path}: arr_0 ends after {start + got // row} of {num} images")
            yield np.frombuffer(data, np.uint8).reshape(count, height, width, channels)


@contextlib.contextmanager
def damaged_npz(path: str | os.PathLike) -> Iterator[None]:
    """Turn ``zipfile``'s CRC error on reading an ``.npz`` member (bytes changed in place since it was
    written) into a ``ValueError`` naming the file."""
    try:
        yield
    except zipfile.BadZipFile as err:
        raise ValueError(
            f"{path} is damaged: {err} (its content differs from what was written); restore it or write it again"
        ) from err


def save_npz_batches(
    path: str | os.PathLike,
    batches: Iterable[Any],
    num_images: int,
    image_shape: tuple[int, int],
    labels: Any = None,
) -> Path:
    """Write an ADM sample batch from an iterable of image batches, streaming and atomically.

    The archive is what ``np.savez(path, arr_0=images, arr_1=labels)`` writes (uncompressed members),
    but ``images`` is never materialised: each batch is checked and appended to the ``arr_0`` member,
    so memory stays at one batch. The file appears (``os.replace``) only once complete; a failure
    leaves no partial ``path``.

    Args:
        path: output ``.npz`` file.
        batches: ``(B, H, W, 3)`` uint8 arrays (any :func:`to_uint8_images` input per batch), in order.
        num_images: the total ``N``; a different total raises.
        image_shape: ``(H, W)``.
        labels: optional ``(N,)`` integer labels, stored as ``arr_1``.
    """
    from ..utils.files import atomic_write

    height, width = (int(v) for v in image_shape)
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (num_images,) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"labels must be {num_images} integers, got shape {labels.shape}, dtype {labels.dtype}"
            )
        labels = labels.astype(np.int64)
    header = {
        "descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
        "fortran_order": False,
        "shape": (int(num_images), height, width, 3),
    }

    def write(handle: IO[bytes]) -> None:
        written = 0
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            with archive.open("arr_0.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array_header_1_0(member, header)
                for i, batch in enumerate(batches):
                    pixels = batch if isinstance(batch, np.ndarray) and batch.dtype == np.uint8 else None
                    pixels = to_uint8_images(batch, name=f"batch {i}") if pixels is None else pixels
                    if pixels.ndim != 4 or pixels.shape[1:] != (height, width, 3):
                        raise ValueError(
                            f"batch {i} has shape {pixels.shape}; expected (B, {height}, {width}, 3) uint8"
                        )
                    if written + len(pixels) > num_images:
                        raise ValueError(f"the batches hold more than num_images={num_images} images")
                    member.write(np.ascontiguousarray(pixels).tobytes())
                    written += len(pixels)
            if written != num_images:
                raise ValueError(f"the batches held {written} images, expected num_images={num_images}")
            if labels is not None:
                with archive.open("arr_1.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, labels, allow_pickle=False)

    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    return atomic_write(path, write)


def load_reference_npz(path: str | os.PathLike, *, load_images: bool = True) -> ReferenceBatch:
    """Read an ADM-layout ``.npz``: ``arr_0`` images and/or ``mu``/``sigma`` statistics.

    Args:
        path: the ``.npz`` file.
        load_images: ``False`` checks ``arr_0``'s header but does not read the pixels (a
            10k x 256² reference batch is 2 GB; FID only needs ``mu``/``sigma``).

    Raises:
        ValueError: not an ``.npz``; neither ``arr_0`` nor ``mu``/``sigma``; ``arr_0`` not
            ``(N, H, W, 3)`` uint8 (channel-first or float arrays are named as such);
            ``mu`` without ``sigma`` or inconsistent shapes; ``arr_1`` not one integer per image.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not an .npz archive (np.savez output); the ADM evaluator expects one")
    with zipfile.ZipFile(path) as archive:
        keys = sorted(n[: -len(".npy")] for n in archive.namelist() if n.endswith(".npy"))
        headers = {key: _member_header(archive, key) for key in keys}
    layout = "arr_0 (N, H, W, 3) uint8 images and/or mu (d,) + sigma (d, d) statistics"
    if "arr_0" not in headers and "mu" not in headers:
        raise ValueError(f"{path} is not in the ADM evaluator layout ({layout}); found keys {keys}")

    batch = ReferenceBatch()
    if "arr_0" in headers:
        shape, dtype = headers["arr_0"]
        if len(shape) != 4 or shape[-1] != 3:
            hint = " (channel-first? transpose to (N, H, W, 3))" if len(shape) == 4 and shape[1] == 3 else ""
            raise ValueError(f"{path}: arr_0 has shape {shape}, expected (N, H, W, 3){hint}")
        if dtype != np.uint8:
            raise ValueError(
                f"{path}: arr_0 has dtype {dtype}, expected uint8 pixels in [0, 255]; re-save it with save_npz"
            )
        if shape[0] == 0:
            raise ValueError(f"{path}: arr_0 holds no images (shape {shape})")
        batch.num_images = shape[0]

    with np.load(path, allow_pickle=False) as data, damaged_npz(path):
        if "arr_0" in headers and load_images:
            batch.images = data["arr_0"]
        for mu_key, sigma_key in _STAT_PAIRS:
            if (mu_key in headers) != (sigma_key in headers):
                raise ValueError(f"{path} has {mu_key!r} or {sigma_key!r} but not both; found keys {keys}")
            if mu_key not in headers:
                continue
            mu, sigma = data[mu_key], data[sigma_key]
            if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
                raise ValueError(
                    f"{path}: {mu_key} has shape {mu.shape} and {sigma_key} {sigma.shape}; expected (d,) and (d, d)"
                )
            if not (np.issubdtype(mu.dtype, np.floating) and np.issubdtype(sigma.dtype, np.floating)):
                raise ValueError(
                    f"{path}: {mu_key}/{sigma_key} must be floating point, got {mu.dtype}/{sigma.dtype}"
                )
            setattr(batch, mu_key, mu.astype(np.float64))
            setattr(batch, sigma_key, sigma.astype(np.float64))
        if "arr_1" in headers:
            labels = data["arr_1"]
            if labels.shape != (batch.num_images,) or not np.issubdtype(labels.dtype, np.integer):
                raise ValueError(
                    f"{path}: arr_1 (labels) has shape {labels.shape}, dtype {labels.dtype}; expected "
                    f"({batch.num_images},) integers"
                )
            batch.labels = labels
    return batch
