"""Image-text agreement scores on cached CLIP embeddings.

* label alignment (SAS): cosine between an image and its given label's prompt embedding;
  low means the image does not look like its label (mislabelled, corrupted, off-distribution);
* zero-shot classification against all class prompts: the probability CLIP gives the given label,
  whether its top-1 disagrees, by how much, and which label it would suggest instead;
* caption alignment: cosine of an image and its own caption (low = likely mismatched pair).

All work is vectorised torch on the chosen device, in blocks over N so that memory stays bounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import torch

from pruning_core.clip_scores._common import (
    ArrayLike,
    as_label_ids,
    device_of,
    normalize,
    to_tensor,
)
from pruning_core.runtime.progress import CancelToken, check

_ROWS = 65_536
"""Rows per block for the row-wise scores: (rows x D) and (rows x C) floats, a few tens of MB."""


def label_alignment(
    img: ArrayLike,
    label_ids: ArrayLike,
    class_emb: ArrayLike,
    *,
    device: Union[str, torch.device] = "auto",
    cancel: Optional[CancelToken] = None,
) -> np.ndarray:
    """SAS ``(N,)`` float32: cos(image_i, prompt embedding of its given label y_i), in [-1, 1]."""
    dev = device_of(device)
    n = int(img.shape[0])
    ids = as_label_ids(label_ids, n)
    cls = normalize(to_tensor(class_emb, dev))
    if n and (ids.min() < 0 or ids.max() >= cls.shape[0]):
        raise ValueError("label_ids out of range of class_emb")
    out = np.empty(n, dtype=np.float32)
    for s in range(0, n, _ROWS):
        check(cancel)
        x = normalize(to_tensor(img[s : s + _ROWS], dev))
        y = to_tensor(ids[s : s + _ROWS], dev, torch.int64)
        out[s : s + len(x)] = (x * cls[y]).sum(dim=1).cpu().numpy()
    return out


@dataclass(frozen=True)
class ZeroShot:
    """Zero-shot classification of each image against all class prompts."""

    probs: np.ndarray
    """``(N, C)`` float32 softmax(temperature * cosine)."""
    suggested: np.ndarray
    """``(N,)`` int64 argmax class id (ties: the lowest id)."""
    confidence: Optional[np.ndarray] = None
    """``(N,)`` probability of the given label (low = suspicious); None without labels."""
    disagreement: Optional[np.ndarray] = None
    """``(N,)`` float32 1.0 where top-1 differs from the given label, else 0.0."""
    margin: Optional[np.ndarray] = None
    """``(N,)`` p[top-1] - p[given] >= 0; 0 when CLIP agrees, near 1 when it is sure of another class."""


def zero_shot(
    img: ArrayLike,
    class_emb: ArrayLike,
    label_ids: Optional[ArrayLike] = None,
    temperature: float = 100.0,
    *,
    device: Union[str, torch.device] = "auto",
    cancel: Optional[CancelToken] = None,
) -> ZeroShot:
    """Zero-shot probabilities; with ``label_ids`` also confidence, disagreement and margin.

    ``temperature`` multiplies the cosines before the softmax (CLIP's learned logit scale is 100).
    """
    dev = device_of(device)
    n = int(img.shape[0])
    cls = normalize(to_tensor(class_emb, dev))
    c = cls.shape[0]
    probs = np.empty((n, c), dtype=np.float32)
    for s in range(0, n, _ROWS):
        check(cancel)
        x = normalize(to_tensor(img[s : s + _ROWS], dev))
        probs[s : s + len(x)] = torch.softmax(temperature * (x @ cls.T), dim=1).cpu().numpy()
    suggested = probs.argmax(axis=1).astype(np.int64) if n else np.zeros(0, dtype=np.int64)
    if label_ids is None:
        return ZeroShot(probs=probs, suggested=suggested)
    ids = as_label_ids(label_ids, n)
    if n and (ids.min() < 0 or ids.max() >= c):
        raise ValueError("label_ids out of range of class_emb")
    rows = np.arange(n)
    conf = probs[rows, ids]
    top = probs[rows, suggested] if n else np.zeros(0, dtype=np.float32)
    return ZeroShot(
        probs=probs,
        suggested=suggested,
        confidence=conf.astype(np.float32),
        disagreement=(suggested != ids).astype(np.float32),
        margin=np.maximum(top - conf, 0.0).astype(np.float32),
    )


def caption_alignment(
    img: ArrayLike,
    cap_emb: ArrayLike,
    *,
    device: Union[str, torch.device] = "auto",
    cancel: Optional[CancelToken] = None,
) -> np.ndarray:
    """``(N,)`` float32 row-wise cos(image_i, caption_i); low = the caption likely belongs elsewhere."""
    if tuple(img.shape) != tuple(cap_emb.shape):
        raise ValueError(f"image and caption embeddings differ in shape: {tuple(img.shape)} vs {tuple(cap_emb.shape)}")
    dev = device_of(device)
    n = int(img.shape[0])
    out = np.empty(n, dtype=np.float32)
    for s in range(0, n, _ROWS):
        check(cancel)
        x = normalize(to_tensor(img[s : s + _ROWS], dev))
        t = normalize(to_tensor(cap_emb[s : s + _ROWS], dev))
        out[s : s + len(x)] = (x * t).sum(dim=1).cpu().numpy()
    return out
