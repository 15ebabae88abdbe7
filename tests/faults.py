"""Faults for the bad-input catalogue: a disk that fills up midway (ENOSPC), bytes flipped in place.

:func:`full_disk` makes every write of the process go through one byte budget: Python's ``open`` /
``io.open`` (what ``json``, ``zipfile`` / ``np.savez``, PIL, matplotlib, ``fsspec`` and so pyarrow's
Arrow and Parquet writers of ``datasets`` use), ``os.write``, and the writers that bypass Python's I/O
(``safetensors.torch.save_file``, ``torch.save`` to a path), which are routed through it. Once the budget is
spent, the write in progress is cut short (its first bytes land, as on a real full disk) and raises
``OSError(ENOSPC)``. :func:`count_written` measures what a successful run writes, to place the fault
midway.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import io
import os
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

_REAL_OPEN = io.open
_REAL_OS_WRITE = os.write


class _Budget:
    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.written = 0
        self.failures = 0

    def take(self, size: int) -> int:
        """How many of ``size`` bytes fit; the rest is refused."""
        allowed = int(max(0, min(size, self.limit - self.written)))
        self.written += allowed
        if allowed < size:
            self.failures += 1
        return allowed


_BUDGET: _Budget | None = None


def _enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class _BudgetFileIO(io.FileIO):
    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        allowed = _BUDGET.take(view.nbytes) if _BUDGET is not None else view.nbytes
        if allowed < view.nbytes:
            if allowed:
                super().write(view[:allowed])
            raise _enospc()
        return super().write(view)


def _open(file, mode="r", buffering=-1, encoding=None, errors=None, newline=None, closefd=True, opener=None):
    if isinstance(file, int) or not any(c in mode for c in "wax+"):
        return _REAL_OPEN(file, mode, buffering, encoding, errors, newline, closefd, opener)
    raw = _BudgetFileIO(file, mode.replace("b", "").replace("t", ""), closefd=closefd, opener=opener)
    if "b" in mode and buffering == 0:
        return raw
    buffer = io.BufferedRandom(raw) if "+" in mode else io.BufferedWriter(raw)
    if "b" in mode:
        return buffer
    return io.TextIOWrapper(
        buffer, encoding=encoding, errors=errors, newline=newline, line_buffering=buffering == 1
    )


def _os_write(fd: int, data) -> int:
    view = memoryview(data).cast("B")
    allowed = _BUDGET.take(view.nbytes) if _BUDGET is not None else view.nbytes
    if allowed < view.nbytes:
        if allowed:
            _REAL_OS_WRITE(fd, view[:allowed])
        raise _enospc()
    return _REAL_OS_WRITE(fd, view)


def _safetensors_save_file(tensors, filename, metadata=None):
    import safetensors.torch

    data = safetensors.torch.save(tensors, metadata=metadata)
    with _open(filename, "wb") as handle:
        handle.write(data)


_REAL_TORCH_SAVE = None


def _torch_save(obj, f, *args, **kwargs):
    if isinstance(f, (str, os.PathLike)):
        buffer = io.BytesIO()
        _REAL_TORCH_SAVE(obj, buffer, *args, **kwargs)
        with _open(f, "wb") as handle:
            handle.write(buffer.getvalue())
        return None
    return _REAL_TORCH_SAVE(obj, f, *args, **kwargs)


@contextlib.contextmanager
def _budget(limit: float) -> Iterator[_Budget]:
    global _BUDGET, _REAL_TORCH_SAVE
    import safetensors.torch
    import torch

    _REAL_TORCH_SAVE = torch.save
    budget = _Budget(limit)
    _BUDGET = budget
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(mock.patch.object(builtins, "open", _open))
            stack.enter_context(mock.patch.object(io, "open", _open))
            stack.enter_context(mock.patch.object(os, "write", _os_write))
            stack.enter_context(mock.patch.object(safetensors.torch, "save_file", _safetensors_save_file))
            stack.enter_context(mock.patch.object(torch, "save", _torch_save))
            yield budget
    finally:
        _BUDGET = None


@contextlib.contextmanager
def full_disk(after_bytes: float) -> Iterator[_Budget]:
    """The disk fills up once ``after_bytes`` more bytes are written: the next write is cut short and raises
    ``OSError(ENOSPC)`` (and so does every write after it, as long as the block runs)."""
    with _budget(after_bytes) as budget:
        yield budget


@contextlib.contextmanager
def count_written() -> Iterator[_Budget]:
    """Count the bytes the block writes (through the same paths :func:`full_disk` limits)."""
    with _budget(float("inf")) as budget:
        yield budget


def flip_bytes(path: Path, where: float = 0.5, count: int = 8) -> None:
    """Damage a file in place: invert ``count`` bytes at ``where`` (a fraction of its size); same size."""
    data = bytearray(Path(path).read_bytes())
    start = min(int(len(data) * where), max(0, len(data) - count))
    data[start : start + count] = bytes(b ^ 0xFF for b in data[start : start + count])
    Path(path).write_bytes(bytes(data))


def listing(folder: Path) -> dict[str, int] | None:
    """``{relative path: size}`` of everything under ``folder`` (hidden entries included), None if absent."""
    folder = Path(folder)
    if not folder.exists():
        return None
    return {
        str(p.relative_to(folder)): (p.stat().st_size if p.is_file() else -1)
        for p in sorted(folder.rglob("*"))
    }
