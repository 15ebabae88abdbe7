"""Select, the common random numbers of the score: every sample's noise is a function of its key.

The noise ``eps_i`` of draw d of a sample is slice ``i`` of one stream of N(0, 1) draws from a CPU
``torch.Generator`` seeded with ``blake2b(seed, key)`` for draw 0 and ``blake2b(seed, key, d)`` for draw
d >= 1; the key is a 64-bit blake2b hash of the sample's preprocessed pixels (or of a ``key_column`` value).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

# --------------------------------------------------------------------------------------
# common random numbers
# --------------------------------------------------------------------------------------


def _hash64(*parts: bytes) -> int:
    digest = hashlib.blake2b(digest_size=8)
    for part in parts:
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return int.from_bytes(digest.digest(), "little")


def pixel_keys(pixels: np.ndarray) -> np.ndarray:
    """Stable per-sample keys: a 64-bit blake2b hash of each image's preprocessed pixels.

    Args:
        pixels: ``(B, H, W, 3)`` uint8 (the centre crop the model sees).

    Returns:
        ``(B,)`` uint64. Identical pixels give identical keys whatever the row, split or process.
    """
    pixels = np.ascontiguousarray(pixels)
    shape = json.dumps(list(pixels.shape[1:])).encode()
    return np.array([_hash64(b"pixels", shape, image.tobytes()) for image in pixels], dtype=np.uint64)


def value_keys(values: Sequence[Any], rows: Sequence[int] | None = None, column: str = "key") -> np.ndarray:
    """Per-sample keys from a user's key column (ints, strings or bytes, e.g. an image id or path).

    Returns:
        ``(B,)`` uint64 hashes; ``None`` or other types raise, naming the row.
    """
    keys = np.empty(len(values), dtype=np.uint64)
    for i, value in enumerate(values):
        if isinstance(value, (bool, np.bool_)) or value is None:
            kind = None
        elif isinstance(value, (int, np.integer)):
            kind, data = b"int", str(int(value)).encode()
        elif isinstance(value, str):
            kind, data = b"str", value.encode("utf-8")
        elif isinstance(value, (bytes, bytearray)):
            kind, data = b"bytes", bytes(value)
        else:
            kind = None
        if kind is None:
            row = i if rows is None else rows[i]
            raise ValueError(
                f"key column {column!r} has {value!r} at row {row}; keys must be integers, strings or bytes"
            )
        keys[i] = _hash64(kind, data)
    return keys


def noise_seed(seed: int, key: int, draw: int = 0) -> int:
    """The CPU generator seed of one sample's noise draw: a 64-bit blake2b hash of ``(seed, key)`` for draw
    0 (the stream of every score computed with one draw) and of ``(seed, key, draw)`` for draw ``d >= 1``."""
    parts = [b"d2c-difficulty-noise", int(seed).to_bytes(8, "little"), int(key).to_bytes(8, "little")]
    if draw:
        parts.append(int(draw).to_bytes(8, "little"))
    return _hash64(*parts)


def sample_noise(
    keys: Sequence[int] | np.ndarray, seed: int, num_timesteps: int, shape: Sequence[int], draw: int = 0
) -> torch.Tensor:
    """Common random numbers: the noise of every (sample, timestep index) of one draw.

    Sample b gets ``torch.randn((T, *shape), generator=torch.Generator("cpu").manual_seed(noise_seed(seed,
    keys[b], draw)))``; timestep index i uses slice i. Generated on CPU so every device sees the same numbers.
    Draw 0 is the stream of a one-draw score; each further draw is a new, independent stream.

    Returns:
        ``(B, T, *shape)`` float32 on CPU.
    """
    keys = np.asarray(keys, dtype=np.uint64)
    out = torch.empty((len(keys), num_timesteps, *shape), dtype=torch.float32)
    generator = torch.Generator("cpu")
    for b, key in enumerate(keys.tolist()):
        generator.manual_seed(noise_seed(seed, key, draw))
        torch.randn((num_timesteps, *shape), generator=generator, out=out[b])
    return out


def sample_bin_offsets(
    keys: Sequence[int] | np.ndarray, seed: int, num_timesteps: int, draw: int
) -> torch.Tensor:
    """Stratified timesteps: a uniform offset in ``[0, 1)`` per (sample, timestep bin) of one draw, from a
    CPU generator seeded with ``blake2b("d2c-difficulty-timesteps", seed, key, draw)``.

    Returns:
        ``(B, T)`` float64 on CPU.
    """
    keys = np.asarray(keys, dtype=np.uint64)
    out = torch.empty((len(keys), num_timesteps), dtype=torch.float64)
    generator = torch.Generator("cpu")
    for b, key in enumerate(keys.tolist()):
        generator.manual_seed(
            _hash64(
                b"d2c-difficulty-timesteps",
                int(seed).to_bytes(8, "little"),
                int(key).to_bytes(8, "little"),
                int(draw).to_bytes(8, "little"),
            )
        )
        torch.rand((num_timesteps,), generator=generator, dtype=torch.float64, out=out[b])
    return out


def probe_draws(keys: Sequence[int] | np.ndarray, seed: int) -> np.ndarray:
    """``(B,)`` float64 in ``[0, 1)``: a row is in the reliability probe when this is below the probe's
    fraction (and its class is a probe class); a function of ``(seed, key)`` only."""
    keys = np.asarray(keys, dtype=np.uint64)
    return np.array(
        [
            _hash64(b"d2c-reliability-probe", int(seed).to_bytes(8, "little"), int(k).to_bytes(8, "little"))
            / 2.0**64
            for k in keys.tolist()
        ],
        dtype=np.float64,
    )
