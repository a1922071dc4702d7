"""2-D maps of embeddings: an instant PCA preview and a UMAP (cached, because a 50,000-point fit takes seconds).

umap-learn compiles its numba kernels on first use in a process (about 20 s on 2 cores), so
:func:`warm_umap` exists to pay that in a background thread before anyone asks for a map, and
:func:`pca_coords` gives a map at once while the UMAP is computed.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from cache.steps import CachedStep, Computed
from cache.store import ResultStore
from pruning_core.runtime.progress import ProgressCallback, report
from pruning_core.data.arrays import read_matrix
from pruning_core.runtime.safety import check_in_workspace

PCA_DIMS = 50
"""UMAP runs on this many principal components of the unit-normalised embeddings: the neighbour
search is ~10x cheaper than on 512 dims, and euclidean distance between unit vectors ranks
neighbours as cosine does (bench/bench_map.py measures the time)."""
N_NEIGHBORS = 15
"""UMAP's neighbourhood size (umap-learn's default): local structure within a class, global layout kept."""
MIN_DIST = 0.1
"""How tightly UMAP packs neighbours (umap-learn's default): clusters read as clusters, points stay hoverable."""
UMAP_EPOCHS = 100
"""Optimisation epochs: umap-learn's default (200 above 10,000 points) takes 24.5 s on 50,000 x 512 on
2 cores, 100 epochs 15.1 s (bench/bench_map.py), inside the 20 s target; the layout is settled by then."""


def _valid_rows(embeddings: np.ndarray) -> np.ndarray:
    return ~np.isnan(embeddings).any(axis=1)


def _principal_components(x: np.ndarray, dims: int) -> np.ndarray:
    """The first ``dims`` principal-component scores of ``x`` (rows centred), via an SVD of the covariance."""
    x = x - x.mean(axis=0, keepdims=True)
    dims = min(dims, x.shape[1])
    _, vectors = np.linalg.eigh(x.T @ x)  # D x D: cheap for D = 512 whatever N is
    return (x @ vectors[:, ::-1][:, :dims]).astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def pca_coords(embeddings: np.ndarray) -> np.ndarray:
    """(N, 2) float32 map by the first two principal components (NaN rows stay NaN): a preview in well under a second."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    coords = np.full((len(embeddings), 2), np.nan, dtype=np.float32)
    valid = _valid_rows(embeddings)
    if valid.any():
        coords[valid] = _principal_components(_unit(embeddings[valid]), 2)
    return coords


def umap_coords(
    embeddings: np.ndarray,
    *,
    n_neighbors: int = N_NEIGHBORS,
    min_dist: float = MIN_DIST,
    seed: int = 0,
    pca_dims: Optional[int] = PCA_DIMS,
    n_epochs: Optional[int] = UMAP_EPOCHS,
) -> np.ndarray:
    """(N, 2) float32 coordinates; rows with missing embeddings (NaN) get NaN coordinates.

    Embeddings already in 2-D pass straight through, so a user's own layout is kept.
    ``pca_dims=None`` runs UMAP with the cosine metric on the full embeddings; ``n_epochs=None``
    is umap-learn's own default (200 epochs above 10,000 points, 500 below).
    """
    embeddings = np.asarray(embeddings, dtype=np.float32)
    coords = np.full((len(embeddings), 2), np.nan, dtype=np.float32)
    valid = _valid_rows(embeddings)
    if embeddings.shape[1] == 2:
        coords[valid] = embeddings[valid]
        return coords
    if valid.sum() < 3:
        raise ValueError("a map needs at least 3 samples with embeddings")
    import umap

    x = embeddings[valid]
    metric = "cosine"
    if pca_dims is not None and x.shape[1] > pca_dims:
        x, metric = _principal_components(_unit(x), pca_dims), "euclidean"
    reducer = umap.UMAP(
        n_neighbors=min(n_neighbors, int(valid.sum()) - 1),
        min_dist=min_dist,
        metric=metric,
        random_state=seed,
        n_jobs=1,
        n_epochs=n_epochs,
    )
    coords[valid] = reducer.fit_transform(x).astype(np.float32)
    return coords


def warm_umap() -> None:
    """Fit tiny UMAPs so numba compiles umap-learn's kernels now (once per process), not on a user's click.

    Below 4,096 points (the demo) umap-learn uses exact neighbours, compiled here with both
    metrics in ~15 s; pynndescent's kernels for larger data compile within their first fit,
    which runs in the background behind a PCA preview (warming them too takes ~60 s more,
    and the one background worker would make the demo's map wait for it; bench/bench_map.py).
    """
    points = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
    umap_coords(points, n_neighbors=5, n_epochs=5, pca_dims=None)
    umap_coords(points, n_neighbors=5, n_epochs=5, pca_dims=4)


def umap_step(fingerprint: str, source: dict, *, n_neighbors: int = N_NEIGHBORS, min_dist: float = MIN_DIST,
              seed: int = 0) -> CachedStep:
    """The cache step of a UMAP of this dataset's embedding ``source`` with these parameters."""
    return CachedStep("umap", fingerprint, {**source, "n_neighbors": n_neighbors, "min_dist": min_dist, "seed": seed,
                                            "pca_dims": PCA_DIMS, "n_epochs": UMAP_EPOCHS})


def cached_umap(
    embeddings: np.ndarray,
    store: ResultStore,
    *,
    fingerprint: str,
    source: dict,
    n_neighbors: int = N_NEIGHBORS,
    min_dist: float = MIN_DIST,
    seed: int = 0,
    progress: Optional[ProgressCallback] = None,
) -> np.ndarray:
    """UMAP of ``embeddings`` keyed by the dataset, where the embedding came from, and the parameters."""

    def fit() -> Computed:
        report(progress, "UMAP", 0, 1, f"{len(embeddings):,} points")
        coords = umap_coords(embeddings, n_neighbors=n_neighbors, min_dist=min_dist, seed=seed)
        report(progress, "UMAP", 1, 1)
        return Computed(arrays={"coords": coords})

    step = umap_step(fingerprint, source, n_neighbors=n_neighbors, min_dist=min_dist, seed=seed)
    return step.run(store, fit).array("coords")


# ----------------------------------------------------------------------------- embeddings a user brings
# The map can be drawn from any per-sample vectors: CLIP's (the app passes those), a manifest column
# of vectors, or a .npy file.  (The proxy's penultimate features would be a natural fourth, but
# proxy training keeps only per-epoch label statistics and logits, not features.)


def digest(embeddings: np.ndarray) -> str:
    """A short content hash of ``embeddings``: part of a UMAP's cache key when nothing else names them."""
    array = np.ascontiguousarray(embeddings, dtype=np.float32)
    return hashlib.blake2b(array.tobytes() + str(array.shape).encode(), digest_size=12).hexdigest()


def _as_vector(value: object) -> Optional[np.ndarray]:
    """``value`` as a 1-D float vector (a list/array, or a string such as "[0.1, 0.2]"), else None."""
    if isinstance(value, str):
        text = value.strip()
        if not (text.startswith("[") and text.endswith("]")):
            return None
        try:
            value = json.loads(text)
        except ValueError:
            return None
    if isinstance(value, (list, tuple, np.ndarray)):
        try:
            vector = np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError):
            return None
        return vector if vector.ndim == 1 and len(vector) >= 2 else None
    return None


def embedding_columns(samples: pd.DataFrame) -> list[str]:
    """Manifest columns whose first non-empty value is a vector of at least 2 numbers (checked fully on use)."""
    found = []
    for col in samples.columns:
        if col in ("path", "label", "caption") or samples[col].dtype.kind in "biufcmM":
            continue
        first = samples[col].dropna()
        if len(first) and _as_vector(first.iloc[0]) is not None:
            found.append(str(col))
    return found


def column_embeddings(samples: pd.DataFrame, col: str) -> np.ndarray:
    """(N, D) float32 from the manifest column ``col``; an empty cell is a NaN row (not drawn).

    Raises ValueError naming the column and the first bad row: every vector must have the same length.
    """
    vectors = [None if (v is None or (isinstance(v, float) and np.isnan(v))) else _as_vector(v)
               for v in samples[col].tolist()]
    lengths = {len(v) for v in vectors if v is not None}
    for row, (raw, vector) in enumerate(zip(samples[col].tolist(), vectors)):
        if vector is None and not (raw is None or (isinstance(raw, float) and np.isnan(raw))):
            raise ValueError(f"manifest column {col!r}: row {row} is not a list of numbers")
    if len(lengths) != 1:
        raise ValueError(f"manifest column {col!r}: vectors of different lengths {sorted(lengths)[:5]}")
    dim = lengths.pop()
    out = np.full((len(vectors), dim), np.nan, dtype=np.float32)
    for row, vector in enumerate(vectors):
        if vector is not None:
            out[row] = vector
    return out


def load_embedding_file(path: os.PathLike | str, n_rows: int, roots: Optional[Sequence] = None) -> np.ndarray:
    """(N, D) float32 from a ``.npy`` file inside the workspace, one row per sample in dataset order.

    Raises ValueError (its message is one line naming the file and the problem): outside the
    workspace, missing, not a .npy array, not numeric, not 2-D, the wrong number of rows, or
    fewer than 2 columns.  The file is memory-mapped, so only a valid one is read whole.
    """
    resolved = check_in_workspace(path, "embedding file", roots)
    array = read_matrix(resolved, "embedding file")
    if array.shape[1] < 2:
        raise ValueError(f"embedding file {resolved}: shape {array.shape}, expected (samples, dims >= 2)")
    if array.shape[0] != n_rows:
        raise ValueError(f"embedding file {resolved}: {array.shape[0]:,} rows for {n_rows:,} samples")
    return np.asarray(array, dtype=np.float32)
