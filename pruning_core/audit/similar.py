"""Similarity search: the samples nearest to one sample in an embedding, for "show me samples like this one".

One small function over the public k-NN of :mod:`pruning_core.clip_scores.neighbors` (the same
cosine neighbours the k-NN scores use), so re-pointing it at another index is a one-line change.
"""

from __future__ import annotations

import numpy as np

from pruning_core.clip_scores.neighbors import knn


def nearest_samples(embeddings: np.ndarray, row: int, k: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows nearest to ``row`` by cosine (itself and rows without an embedding left out).

    Returns ``(rows, cosine distances)``, nearest first.
    """
    embeddings = np.asarray(embeddings, dtype=np.float32)
    valid = ~np.isnan(embeddings).any(axis=1)
    if not valid[row]:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    candidates = np.flatnonzero(valid)
    dist, ind = knn(embeddings[row : row + 1], embeddings[candidates], min(k + 1, len(candidates)),
                    exclude_self=False, device="cpu")
    rows, dist = candidates[ind[0]], dist[0]
    keep = rows != row
    return rows[keep][:k], dist[keep][:k]
