"""Arrays a user brings (a model's probabilities, its embeddings): read, hashed, never trusted.

Only the reading lives here (floor 1): what the numbers must satisfy depends on what they are, and
that is checked by their users (``audit.own_model``, ``audit.projection``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np


def file_sha256(path: os.PathLike | str, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes: how the sidecar and the manifest name a file a user brought."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def array_sha256(values: np.ndarray) -> str:
    """Hex SHA-256 of an array's float64 values and shape (for vectors read from a manifest column)."""
    array = np.ascontiguousarray(values, dtype=np.float64)
    return hashlib.sha256(array.tobytes() + str(array.shape).encode()).hexdigest()


def read_matrix(path: os.PathLike | str, what: str) -> np.ndarray:
    """A numeric 2-D ``.npy`` array, memory-mapped (only a valid one is read whole).

    Raises ValueError on one line naming ``what``, the file and the problem: missing, not .npy, not
    readable without pickle, not numeric, not 2-D.
    """
    resolved = Path(path).expanduser().resolve()
    if resolved.suffix.lower() != ".npy":
        raise ValueError(f"{what} {resolved}: not a .npy file")
    if not resolved.is_file():
        raise ValueError(f"{what} {resolved}: no such file")
    try:
        array = np.load(resolved, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ValueError(f"{what} {resolved}: not a readable .npy array ({exc})") from None
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{what} {resolved}: dtype {array.dtype} is not numeric")
    if array.ndim != 2:
        raise ValueError(f"{what} {resolved}: shape {array.shape}, expected 2-D (samples, columns)")
    return array
