"""The "samples like this one" panel shared by Review and Explore, and what else needs the k-NN scores'
embeddings on a page (the Overview's pixel-checked duplicate groups, with their cosine)."""

from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd
import streamlit as st

from pruning_core.embeddings.clip_model import WeightsUnavailable
from pruning_core.data.datasets import Dataset
from pruning_core.audit.similar import nearest_samples
from ui import review_state as rs
from ui.gallery import breakable, row_name, show_gallery

NEIGHBOURS = 8


def clip_image_embeddings(dataset: Dataset, frame: pd.DataFrame) -> Optional[np.ndarray]:
    """The image embeddings the k-NN scores were computed on, when CLIP scores exist (None otherwise).

    CLIP's own (the cached, memory-mapped array), or the adapted ones when the scores were made
    through a fitted adapter, so the neighbours shown are the ones behind ``clip.outlier`` and the
    duplicate groups.
    """
    if not any(c.startswith("clip.") for c in frame.columns):
        return None
    from pruning_core.scoring.pipeline import clip_embeddings
    from ui import state

    config = state.clip_config()
    if config.adapter_epochs > 0:
        return _adapted(dataset, dataset.fingerprint, config)
    return clip_embeddings(dataset, config, state.store()).image


def cached_image_embeddings(dataset: Dataset, frame: pd.DataFrame) -> Optional[np.ndarray]:
    """:func:`clip_image_embeddings` only when the image embeddings are already in the cache (None
    otherwise): a page that merely shows them must not start encoding the whole dataset."""
    from pruning_core.scoring.pipeline import clip_images_step
    from ui import state

    try:
        if not clip_images_step(dataset, state.clip_config().identity()).is_cached(state.store()):
            return None
        return clip_image_embeddings(dataset, frame)
    except WeightsUnavailable:
        return None


@st.cache_resource(show_spinner=False, max_entries=1)
def _adapted(_dataset: Dataset, fingerprint: str, config) -> np.ndarray:
    """CLIP image embeddings through the cached adapter of ``config`` (computed once per dataset and config);
    rows without an embedding stay NaN, so the search leaves them out."""
    from pruning_core.scoring.pipeline import clip_embeddings, fit_adapter
    from ui import state

    emb = clip_embeddings(_dataset, config, state.store())
    image = np.asarray(emb.image, dtype=np.float32)
    missing = np.isnan(image).any(axis=1)
    adapted = fit_adapter(_dataset, emb, config, state.store()).transform_images(np.nan_to_num(image))
    adapted[missing] = np.nan
    return adapted


def show_similar(dataset: Dataset, frame: pd.DataFrame, row: int, decisions: pd.Series,
                 score: Optional[str] = None, key: str = "similar") -> None:
    """The nearest neighbours of ``row`` with label, distance, ``score`` and decision; a button reviews them."""
    try:
        embeddings = clip_image_embeddings(dataset, frame)
    except WeightsUnavailable as exc:  # the session's CLIP settings name weights this machine lacks
        st.caption(f"Similarity search needs the CLIP embeddings, which cannot be made here: {exc}")
        return
    if embeddings is None:
        st.caption("Similarity search needs CLIP embeddings (Score page).")
        return
    rows, dist = nearest_samples(embeddings, int(row), NEIGHBOURS)
    near = frame.loc[rows].assign(distance=dist, decision=decisions.reindex(rows).to_numpy())

    def caption(r: pd.Series) -> str:
        value = f" · {breakable(score)} {r[score]:.3f}" if score and score in r.index else ""
        return f"{row_name(frame, r.name)} · {r['label']} · distance {r['distance']:.3f}{value} · {r['decision']}"

    show_gallery(dataset, near.index, frame=near, columns=NEIGHBOURS, caption_fn=caption)
    if st.button(f"Review these {len(rows)} with {row_name(frame, int(row))}", key=f"{key}_review_{row}"):
        rs.send_to_review(f"like row {row}", frame.loc[[int(row), *rows], "path"].tolist())


@st.cache_data(show_spinner="Checking the duplicate groups' pixels…", max_entries=4)
def _checked_groups(_dataset: Dataset, fingerprint: str, _frame: pd.DataFrame, groups_key: tuple,
                    _embeddings: Optional[np.ndarray], has_embeddings: bool) -> pd.DataFrame:
    """``duplicate_groups`` once per dataset and grouping (the group column's members are the key)."""
    from pruning_core.audit.duplicates import duplicate_groups

    return duplicate_groups(_dataset.image_refs(), _frame["clip.duplicate_group"].fillna(-1).to_numpy(),
                            _frame["label"].to_numpy(), _embeddings)


def checked_duplicate_groups(dataset: Dataset, frame: pd.DataFrame) -> pd.DataFrame:
    """The pixel-checked duplicate groups of the table (``audit.duplicates``), cosine where embeddings are cached."""
    embeddings = cached_image_embeddings(dataset, frame)
    group = frame["clip.duplicate_group"].fillna(-1).to_numpy()
    key = tuple(map(int, group[group >= 0])) + tuple(map(int, (group >= 0).nonzero()[0]))
    return _checked_groups(dataset, dataset.fingerprint, frame, key, embeddings, embeddings is not None)
