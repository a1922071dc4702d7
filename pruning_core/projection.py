"""2-D maps of embeddings with UMAP, cached because a 50,000-point fit takes a minute on CPU."""

from __future__ import annotations

from typing import Optional

import numpy as np

from cache.store import ResultStore, make_key
from pruning_core.progress import ProgressCallback, report


def umap_coords(embeddings: np.ndarray, *, n_neighbors: int = 15, min_dist: float = 0.1, seed: int = 0) -> np.ndarray:
    """(N, 2) float32 coordinates; rows with missing embeddings (NaN) get NaN coordinates.

    Embeddings already in 2-D pass straight through, so a user's own layout is kept.
    """
    embeddings = np.asarray(embeddings, dtype=np.float32)
    coords = np.full((len(embeddings), 2), np.nan, dtype=np.float32)
    valid = ~np.isnan(embeddings).any(axis=1)
    if embeddings.shape[1] == 2:
        coords[valid] = embeddings[valid]
        return coords
    if valid.sum() < 3:
        raise ValueError("a map needs at least 3 samples with embeddings")
    import umap

    reducer = umap.UMAP(
        n_neighbors=min(n_neighbors, int(valid.sum()) - 1),
        min_dist=min_dist,
        metric="cosine",
        random_state=seed,
        n_jobs=1,
    )
    coords[valid] = reducer.fit_transform(embeddings[valid]).astype(np.float32)
    return coords


def cached_umap(
    embeddings: np.ndarray,
    store: ResultStore,
    *,
    fingerprint: str,
    source: dict,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    seed: int = 0,
    progress: Optional[ProgressCallback] = None,
) -> np.ndarray:
    """UMAP of ``embeddings`` keyed by the dataset, where the embedding came from, and the parameters."""
    params = {**source, "n_neighbors": n_neighbors, "min_dist": min_dist, "seed": seed}
    key = make_key("umap", fingerprint, params)
    entry = store.load(key)
    if entry is None:
        report(progress, "UMAP", 0, 1, f"{len(embeddings):,} points")
        coords = umap_coords(embeddings, n_neighbors=n_neighbors, min_dist=min_dist, seed=seed)
        entry = store.save(key, arrays={"coords": coords}, meta={"step": "umap", "fingerprint": fingerprint, "params": params})
        report(progress, "UMAP", 1, 1)
    return entry.array("coords")
