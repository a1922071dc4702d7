"""Dataset step: choose the demo, an image folder, a manifest or a container read in place (parquet / arrow,
a save_to_disk folder, WebDataset shards), pick the split to audit, and see what validation found."""

from dataclasses import replace

import pandas as pd
import streamlit as st

from pruning_core.data.readers import CONTAINER_FORMATS, FORMATS
from pruning_core.runtime.safety import UnsafeRequest
from ui import state
from ui.cache_panel import show_cache
from ui.gallery import show_gallery

st.title("Dataset")
source = state.current_source()
kinds = {"demo": "Built-in demo", "folder": "Image folder (root/<class>/<image>, or train/ val/ test/ of them)",
         "manifest": "CSV / parquet manifest", "container": "Parquet / arrow / HF datasets / WebDataset shards"}
kind = st.radio("Source", list(kinds), format_func=kinds.get, index=list(kinds).index(source.kind), horizontal=True)

if kind == "folder":
    path = st.text_input("Folder", value=source.path if source.kind == "folder" else "", placeholder="/data/my_images")
    chosen = state.DatasetSource("folder", path.strip())
elif kind == "manifest":
    path = st.text_input("Manifest (columns path,label[,caption])", value=source.path if source.kind == "manifest" else "")
    root = st.text_input("Root for relative paths (default: the manifest's folder)",
                         value=source.root if source.kind == "manifest" else "")
    chosen = state.DatasetSource("manifest", path.strip(), root.strip())
elif kind == "container":
    path = st.text_input("File, folder or shard pattern (read in place, never unpacked)",
                         value=source.path if source.kind == "container" else "",
                         placeholder="/data/train.parquet · /data/hf_saved · /data/shards/name-{000000..000009}.tar")
    formats = ["", *CONTAINER_FORMATS]
    fmt = st.selectbox("Format", formats, index=formats.index(source.format) if source.format in formats else 0,
                       format_func=lambda f: FORMATS.get(f, "detect from the path"))
    chosen = state.DatasetSource("container", path.strip(), format=fmt)
else:
    chosen = state.DatasetSource("demo")

if replace(chosen, split="") != replace(source, split=""):
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
    if dataset.splits:
        picked = st.selectbox("Split to audit (the others stay available, e.g. as Evaluate's test set)",
                              dataset.splits, index=dataset.splits.index(dataset.split))
        if picked != dataset.split:
            state.set_source(replace(source, split=picked))
            st.rerun()
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
