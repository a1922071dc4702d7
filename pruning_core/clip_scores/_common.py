"""Small helpers shared by the CLIP score modules: tensors on a device, normalisation, block sizes, progress."""

from __future__ import annotations

import time
from typing import Optional, Union

import numpy as np
import torch

from pruning_core.runtime.devices import CPU_KNN_BLOCK_BYTES, device_policy, resolve_device
from pruning_core.runtime.progress import Progress, ProgressCallback

ArrayLike = Union[np.ndarray, torch.Tensor]

DEFAULT_BLOCK_BYTES = CPU_KNN_BLOCK_BYTES
"""Target size of one similarity block (rows x base) in bytes: bounded memory whatever N is.  The CPU's
size; :func:`knn_block_bytes` gives a device's own (larger on a GPU: fewer, longer matmuls)."""

PROGRESS_INTERVAL_S = 0.25
"""At most this often a blocked pass forwards its progress: a GPU finishes blocks far faster than a page redraws."""


def device_of(device: Union[str, torch.device]) -> torch.device:
    return device if isinstance(device, torch.device) else resolve_device(device)


def to_tensor(x: ArrayLike, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A tensor on ``device``; numpy arrays are converted without an extra host copy when possible.

    A read-only array (a memory-mapped cache entry) is copied: a tensor sharing its memory would
    be writable, so torch warns, and an in-place op could corrupt the mapping.  ``torch.tensor``
    copies straight to ``device``, so the copy costs nothing extra on a GPU.
    """
    if isinstance(x, torch.Tensor):
        return x.to(device=device, dtype=dtype)
    x = np.ascontiguousarray(x)
    if not x.flags.writeable:
        return torch.tensor(x, dtype=dtype, device=device)
    return torch.as_tensor(x, dtype=dtype, device=device)


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Float32 rows scaled to unit L2 norm (an all-zero row stays zero): the form CLIP embeddings take."""
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """Row-wise L2 normalisation; cached embeddings already are, but raw features then work too."""
    return torch.nn.functional.normalize(x, dim=-1, eps=1e-12)


def knn_block_bytes(device: Union[str, torch.device]) -> int:
    """The device policy's similarity block size for ``device`` (see :func:`pruning_core.runtime.devices.decide`)."""
    return device_policy(device_of(device)).knn_block_bytes


def throttled(progress: Optional[ProgressCallback], interval_s: float = PROGRESS_INTERVAL_S,
              clock=time.monotonic) -> Optional[ProgressCallback]:
    """``progress`` forwarding the first report, the last (``done == total``) and at most one per ``interval_s``."""
    if progress is None:
        return None
    last = [float("-inf")]

    def forward(p: Progress) -> None:
        now = clock()
        if p.done >= p.total or now - last[0] >= interval_s:
            last[0] = now
            progress(p)

    return forward


def rows_per_block(n_cols: int, block_bytes: int = DEFAULT_BLOCK_BYTES, bytes_per_item: int = 4) -> int:
    """How many query rows fit one ``rows x n_cols`` float block within ``block_bytes`` (at least 1)."""
    return max(1, int(block_bytes // max(1, n_cols * bytes_per_item)))


def as_label_ids(label_ids: ArrayLike, n: int) -> np.ndarray:
    ids = np.asarray(label_ids.cpu() if isinstance(label_ids, torch.Tensor) else label_ids).astype(np.int64, copy=False)
    if ids.shape != (n,):
        raise ValueError(f"label_ids must have shape ({n},), got {ids.shape}")
    return ids
