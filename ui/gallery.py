"""Thumbnail grids: the one way every page shows images."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Callable, Optional, Sequence

import pandas as pd
import streamlit as st

from pruning_core.data.datasets import Dataset
from pruning_core.data.images import ImageError, ImageSource, load_rgb


@st.cache_data(show_spinner=False, max_entries=5000)
def _thumbnail(path: ImageSource, size: int):
    """Decoded and scaled once per image (file, or a member read in place) and size.

    Small images (CIFAR's 32 px) are enlarged with nearest-neighbour so their pixels stay
    crisp enough to judge; large ones are reduced with a smooth filter.
    """
    try:
        image = load_rgb(path)
    except (ImageError, OSError):
        return None
    from PIL import Image

    scale = size / max(image.size)
    resample = Image.NEAREST if scale >= 1 else Image.LANCZOS
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), resample)


def image_for(dataset: Dataset, path: str, size: int):
    """One sample's image scaled so its long side is ``size`` pixels (None if unreadable)."""
    return _thumbnail(_source(dataset, path), size)


def _source(dataset: Dataset, path: str) -> ImageSource:
    """What the thumbnail cache is keyed by: the file name as text, or the container member itself."""
    source = dataset.image_ref(path)
    return str(source) if isinstance(source, Path) else source


def breakable(name: str) -> str:
    """``name`` with a zero-width space after each ``.`` and ``_``: a narrow column wraps a score name such
    as ``clip.label_alignment`` between its parts, never inside a word ("label_align / ment")."""
    return name.replace(".", ".\u200b").replace("_", "_\u200b")


def whole_word(name: str) -> str:
    """HTML for a bold header in a narrow column: one line, cut with an ellipsis (full name on hover),
    never broken inside a word ("triang / le")."""
    text = html.escape(str(name))
    return (f'<div title="{text}" style="font-weight:600;white-space:nowrap;overflow:hidden;'
            f'text-overflow:ellipsis">{text}</div>')


def row_name(frame: pd.DataFrame, row: int) -> str:
    """How a sample is named to people: its row number and, beside it, its file name."""
    return f"row {row} · {Path(str(frame.at[row, 'path'])).name}"


def _format(col: str, value) -> str:
    """A caption part: a number with the score it is (``clip.outlier 0.412``), any other value as it is."""
    if isinstance(value, float):
        return f"{breakable(col)} {value:.3f}"
    return str(value)


def _caption(row: pd.Series, caption_cols: Sequence[str]) -> str:
    return " · ".join(_format(col, row[col]) for col in caption_cols if col in row.index)


def show_gallery(
    dataset: Dataset,
    indices: pd.Index,
    *,
    frame: pd.DataFrame | None = None,
    columns: int = 8,
    caption_cols: Sequence[str] = ("label",),
    size: int = 128,
    caption_fn: Optional[Callable[[pd.Series], str]] = None,
) -> None:
    """A grid of the given samples with a caption built from ``caption_cols`` of ``frame``."""
    frame = dataset.samples if frame is None else frame
    if len(indices) == 0:
        st.caption("Nothing to show.")
        return
    for start in range(0, len(indices), columns):
        row_cols = st.columns(columns)
        for col, idx in zip(row_cols, indices[start : start + columns]):
            row = frame.loc[idx]
            image = _thumbnail(_source(dataset, row["path"]), size)
            caption = caption_fn(row) if caption_fn is not None else _caption(row, caption_cols)
            with col:
                if image is None:
                    st.caption(f"⚠️ unreadable: {row['path']}")
                else:
                    st.image(image, caption=caption, width="stretch")
