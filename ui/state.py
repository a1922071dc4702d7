"""Streamlit glue shared by the pages: where the dataset and scores live between reruns.

Pages stay thin: they read the current dataset and score table from here and call
``pruning_core`` for everything else.  Heavy objects are cached per source with
``st.cache_resource`` and every computed result also lives in the persistent
``ResultStore``, so a rerun, a reload or a restart finds it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pandas as pd
import streamlit as st

from cache.store import ResultStore
from pruning_core.datasets import Dataset, DatasetError, load_dataset
from pruning_core.pipeline import ClipConfig, ScoreTable, base_table, score_columns
from pruning_core.progress import Progress

DATASET = "dataset_source"
TABLE = "score_table"
CLIP = "clip_config"
RECIPE = "recipe"


@dataclass(frozen=True)
class DatasetSource:
    """What the user chose on the Dataset page; hashable so it keys the resource cache."""

    kind: str  # "demo" | "folder" | "manifest"
    path: str = ""
    root: str = ""


@st.cache_resource(show_spinner=False)
def store() -> ResultStore:
    return ResultStore()


@st.cache_resource(show_spinner="Building the demo dataset and training its tiny CLIP (first run only)…")
def demo_assets():
    """The built-in demo; built once per machine (``prunescope demo`` or the start script do it ahead)."""
    from pruning_core.demo import ensure_demo

    return ensure_demo()


@st.cache_resource(show_spinner="Loading and validating the dataset…", max_entries=4)
def _load(source: DatasetSource) -> Dataset:
    if source.kind == "demo":
        return load_dataset(demo_assets().manifest)
    return load_dataset(Path(source.path).expanduser(), root=Path(source.root).expanduser() if source.root else None)


def current_source() -> DatasetSource:
    return st.session_state.setdefault(DATASET, DatasetSource("demo"))


def set_source(source: DatasetSource) -> None:
    st.session_state[DATASET] = source
    st.session_state.pop(TABLE, None)
    st.session_state.pop(CLIP, None)


def current_dataset() -> Optional[Dataset]:
    """The chosen dataset, or None after showing why it could not be loaded."""
    try:
        return _load(current_source())
    except (DatasetError, FileNotFoundError) as exc:
        st.error(f"Could not load the dataset: {exc}")
        return None


def default_clip_config() -> ClipConfig:
    """The demo scores with its own tiny CLIP; other data defaults to a real ViT-B-32."""
    if current_source().kind == "demo":
        assets = demo_assets()
        return ClipConfig(model=assets.clip_model, pretrained=str(assets.clip_checkpoint), batch_size=512)
    return ClipConfig()


def clip_config() -> ClipConfig:
    return st.session_state.get(CLIP) or default_clip_config()


def score_table(dataset: Dataset) -> ScoreTable:
    """The scores computed so far this session (or just the sample columns)."""
    table = st.session_state.get(TABLE)
    if table is None or len(table.frame) != len(dataset):
        table = base_table(dataset)
    return table


def set_score_table(table: ScoreTable) -> None:
    st.session_state[TABLE] = table


class StreamlitProgress:
    """A ``ProgressCallback`` drawing one progress bar per stage inside ``container``."""

    def __init__(self, container) -> None:
        self.container = container
        self.bars: dict[str, object] = {}

    def __call__(self, p: Progress) -> None:
        bar = self.bars.get(p.stage)
        if bar is None:
            bar = self.bars[p.stage] = self.container.progress(0.0, text=p.stage)
        detail = f" — {p.message}" if p.message else ""
        bar.progress(p.fraction, text=f"{p.stage}: {p.done:,} / {p.total:,}{detail}")


def require_dataset() -> Dataset:
    """The current dataset, or stop the page with a pointer to the Dataset step."""
    dataset = current_dataset()
    if dataset is None:
        st.info("Choose a dataset on the **Dataset** page first.")
        st.stop()
    return dataset


def require_scores(dataset: Dataset) -> ScoreTable:
    table = auto_scores(dataset)
    if not table.infos:
        st.info("No scores yet: compute them on the **Score** page.")
        st.stop()
    return table


@dataclass(frozen=True)
class ScoredDataset:
    """What the pages after Score work on: the dataset, its score table and its score columns."""

    dataset: Dataset
    table: ScoreTable
    cols: list[str]

    @property
    def frame(self) -> pd.DataFrame:
        return self.table.frame


def require_scored_dataset() -> ScoredDataset:
    """The dataset and its scores, or stop the page with a pointer to the step that is missing."""
    dataset = require_dataset()
    table = require_scores(dataset)
    return ScoredDataset(dataset, table, score_columns(table.frame, table.infos))


def _replace_family(dataset: Dataset, new: ScoreTable) -> ScoreTable:
    """This session's table with ``new``'s columns replacing any earlier ones of the same names."""
    table = score_table(dataset)
    frame = table.frame.drop(columns=[c for c in new.frame.columns if c in table.frame.columns])
    infos = {n: i for n, i in table.infos.items() if n not in new.frame.columns}
    merged = ScoreTable(frame, infos).merged(new)
    set_score_table(merged)
    return merged


def compute_clip_scores(dataset: Dataset, config: ClipConfig, progress) -> ScoreTable:
    """Run (or fetch from the store) the CLIP scores and add them to this session's table."""
    from pruning_core.pipeline import clip_score_table

    return _replace_family(dataset, clip_score_table(dataset, config, store(), progress=progress))


def compute_dynamics_scores(dataset: Dataset, config, clip: Optional[ClipConfig], progress) -> ScoreTable:
    """Run (or fetch) proxy training, dynamics scores and cleanlab issues; add them to the table."""
    from pruning_core.pipeline import dynamics_score_table

    return _replace_family(dataset, dynamics_score_table(dataset, config, store(), clip=clip, progress=progress))


def auto_scores(dataset: Dataset) -> ScoreTable:
    """The demo is scored on first sight (seconds with its tiny CLIP); other data waits for the Score page."""
    table = score_table(dataset)
    if not table.infos and current_source().kind == "demo":
        holder = st.empty()
        with holder.container():
            st.caption("Scoring the demo with its tiny CLIP…")
            table = compute_clip_scores(dataset, default_clip_config(), StreamlitProgress(st))
        holder.empty()
    return table
