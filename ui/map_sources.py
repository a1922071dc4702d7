"""Which embedding the Explore map is drawn from: CLIP, adapted CLIP, a manifest column or a user's .npy file.

Each source names itself with a small dict (part of the UMAP's cache key, so every embedding has
its own cached UMAP) and loads its vectors only when asked: with the UMAP cached, a rerun of the
page reads the 2-D coordinates and never the (N, D) embeddings.  The proxy's penultimate features
are not offered: proxy training keeps per-epoch label statistics and logits, not features.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd
import streamlit as st

from pruning_core.data.datasets import Dataset
from pruning_core.audit.projection import column_embeddings, digest, embedding_columns, load_embedding_file

CLIP = "CLIP image embeddings"
ADAPTED = "adapted CLIP image embeddings"
FILE = "a .npy file"
COLUMN = "manifest column: "


@dataclass(frozen=True)
class MapSource:
    """An embedding the map can be drawn from: ``source`` keys its UMAP; ``load()`` gives (N, D) float32."""

    name: str
    source: dict
    load: Callable[[], np.ndarray]


def choices(dataset: Dataset, has_clip: bool, adapter_epochs: int) -> list[str]:
    """The embeddings this dataset already has (CLIP, adapted CLIP, vector columns); the page adds "two
    scores" and, last, a .npy file the user names (never the default: it waits for a path)."""
    out = [CLIP] + ([ADAPTED] if adapter_epochs > 0 else []) if has_clip else []
    return [*out, *(COLUMN + c for c in embedding_columns(dataset.samples))]


def _clip_source(dataset: Dataset, adapted: bool) -> MapSource:
    from pruning_core.scoring.pipeline import clip_embeddings, fit_adapter
    from ui import state

    config, store = state.clip_config(), state.store()
    identity = config.identity()

    def load() -> np.ndarray:
        emb = clip_embeddings(dataset, config, store)
        if not adapted:
            return emb.image
        adapter = fit_adapter(dataset, emb, config, store)  # cached when the CLIP scores were computed with it
        out = adapter.transform_images(np.nan_to_num(emb.image))
        out[np.isnan(emb.image).any(axis=1)] = np.nan
        return out

    if not adapted:  # the same key compute_clip_scores pre-fits, so the first map is ready
        return MapSource(CLIP, {"embedding": "clip-image", **identity}, load)
    return MapSource(ADAPTED, {"embedding": "clip-adapted", **identity, "adapter_epochs": config.adapter_epochs,
                               "templates": list(config.templates or ())}, load)


@st.cache_resource(show_spinner=False, max_entries=2)
def _column(fingerprint: str, col: str, content: int, _samples: pd.DataFrame) -> tuple[np.ndarray, str]:
    vectors = column_embeddings(_samples, col)
    return vectors, digest(vectors)


@st.cache_resource(show_spinner=False, max_entries=2)
def _file(path: str, size: int, mtime_ns: int, n_rows: int) -> tuple[np.ndarray, str]:
    vectors = load_embedding_file(path, n_rows)
    return vectors, digest(vectors)


def resolve(name: str, dataset: Dataset, npy_path: str = "") -> MapSource:
    """The source called ``name``; ValueError (one line naming the file or column and the problem) if unusable."""
    if name in (CLIP, ADAPTED):
        return _clip_source(dataset, adapted=name == ADAPTED)
    if name.startswith(COLUMN):
        col = name[len(COLUMN):]
        content = int(pd.util.hash_pandas_object(dataset.samples[col].astype(str), index=False).sum())
        vectors, key = _column(dataset.fingerprint, col, content, dataset.samples)
        return MapSource(name, {"embedding": "column", "name": col, "digest": key}, lambda: vectors)
    if name == FILE:
        if not npy_path.strip():
            raise ValueError("name a .npy file: one row of numbers per sample, in the dataset's order")
        from pruning_core.runtime.safety import check_in_workspace

        resolved = check_in_workspace(npy_path.strip(), "embedding file")
        stat: Optional[os.stat_result] = resolved.stat() if resolved.is_file() else None
        vectors, key = _file(str(resolved), stat.st_size if stat else -1, stat.st_mtime_ns if stat else -1,
                             len(dataset.samples))
        return MapSource(f"{Path(resolved).name}", {"embedding": "file", "digest": key}, lambda: vectors)
    raise ValueError(f"unknown map source {name!r}")
