"""Thumbnail grids: the one way every page shows images."""

from __future__ import annotations

from typing import Sequence

import pandas as pd
import streamlit as st

from pruning_core.datasets import Dataset
from pruning_core.images import ImageError, load_rgb


@st.cache_data(show_spinner=False, max_entries=5000)
def _thumbnail(path: str, size: int):
    """Decoded and upscaled once per path; small images (CIFAR's 32 px) are enlarged to be judged."""
    try:
        image = load_rgb(path)
    except (ImageError, OSError):
        return None
    from PIL import Image

    scale = size / max(image.size)
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.NEAREST)


def _caption(row: pd.Series, caption_cols: Sequence[str]) -> str:
    parts = []
    for col in caption_cols:
        value = row[col]
        parts.append(f"{value:.3f}" if isinstance(value, float) else str(value))
    return " · ".join(parts)


def show_gallery(
    dataset: Dataset,
    indices: pd.Index,
    *,
    frame: pd.DataFrame | None = None,
    columns: int = 8,
    caption_cols: Sequence[str] = ("label",),
    size: int = 128,
) -> None:
    """A grid of the given samples with a caption built from ``caption_cols`` of ``frame``."""
    frame = dataset.samples if frame is None else frame
    if len(indices) == 0:
        st.caption("Nothing to show.")
        return
    root = dataset.root
    for start in range(0, len(indices), columns):
        row_cols = st.columns(columns)
        for col, idx in zip(row_cols, indices[start : start + columns]):
            row = frame.loc[idx]
            image = _thumbnail(str(root / row["path"]), size)
            with col:
                if image is None:
                    st.caption(f"⚠️ unreadable: {row['path']}")
                else:
                    st.image(image, caption=_caption(row, caption_cols), use_container_width=True)
