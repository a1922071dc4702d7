"""Dataset step: choose the demo, an image folder or a manifest, and see what validation found."""

import pandas as pd
import streamlit as st

from pruning_core.runtime.safety import UnsafeRequest
from ui import state
from ui.cache_panel import show_cache
from ui.gallery import show_gallery

st.title("Dataset")
source = state.current_source()
kinds = {"demo": "Built-in demo", "folder": "Image folder (root/<class>/<image>)", "manifest": "CSV / parquet manifest"}
kind = st.radio("Source", list(kinds), format_func=kinds.get, index=list(kinds).index(source.kind), horizontal=True)

if kind == "folder":
    path = st.text_input("Folder", value=source.path if source.kind == "folder" else "", placeholder="/data/my_images")
    chosen = state.DatasetSource("folder", path.strip())
elif kind == "manifest":
    path = st.text_input("Manifest (columns path,label[,caption])", value=source.path if source.kind == "manifest" else "")
    root = st.text_input("Root for relative paths (default: the manifest's folder)",
                         value=source.root if source.kind == "manifest" else "")
    chosen = state.DatasetSource("manifest", path.strip(), root.strip())
else:
    chosen = state.DatasetSource("demo")

if chosen != source:
    if st.button("Load dataset", type="primary", disabled=chosen.kind != "demo" and not chosen.path):
        try:
            state.check_source(chosen)
        except UnsafeRequest as exc:
            st.error(f"Not loaded: {exc}")
        else:
            state.set_source(chosen)
            st.rerun()
    if source.kind != chosen.kind or source.path != chosen.path:
        st.caption(f"Currently loaded: {kinds[source.kind]} {source.path}")

dataset = state.current_dataset()
if dataset is not None:
    report = dataset.report
    st.subheader(dataset.name)
    cols = st.columns(4)
    cols[0].metric("Samples", f"{len(dataset):,}")
    cols[1].metric("Classes", len(dataset.classes))
    cols[2].metric("Skipped", f"{report.n_skipped:,}")
    cols[3].metric("Captions", "yes" if dataset.has_captions else "no")
    (st.warning if report.n_skipped else st.success)(report.summary())
    if report.issues:
        with st.expander(f"Validation report ({len(report.issues)} issues)", expanded=report.n_skipped > 0):
            st.dataframe(report.as_frame(), hide_index=True, width="stretch")
    counts = dataset.samples["label"].value_counts().rename_axis("class").reset_index(name="samples")
    st.bar_chart(counts, x="class", y="samples", height=220)
    st.caption("A few samples")
    show_gallery(dataset, pd.Index(range(min(12, len(dataset)))), columns=12, caption_cols=["label"])

with st.expander("Cache (computed embeddings, scores, maps)"):
    show_cache(state.store())
