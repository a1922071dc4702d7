"""Explore step: a UMAP map of the CLIP image embeddings, coloured by any score; lasso to look."""

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

from pruning_core.pipeline import clip_embeddings, score_columns
from pruning_core.projection import cached_umap
from ui import state
from ui.gallery import show_gallery

MAX_POINTS = 60_000

st.title("Explore")
dataset = state.require_dataset()
table = state.require_scores(dataset)
config = state.clip_config()

embeddings = clip_embeddings(dataset, config, state.store())
holder = st.container()
coords = cached_umap(
    embeddings.image,
    state.store(),
    fingerprint=dataset.fingerprint,
    source={"embedding": "clip-image", **embeddings.identity},
    progress=state.StreamlitProgress(holder),
)

options = ["label", *score_columns(table.frame, table.infos)]
default = options.index("clip.label_alignment") if "clip.label_alignment" in options else 0
colour = st.selectbox("Colour by", options, index=default)
frame = table.frame.assign(x=coords[:, 0], y=coords[:, 1])
shown = frame.dropna(subset=["x", "y"])
if len(shown) > MAX_POINTS:
    shown = shown.sample(MAX_POINTS, random_state=0)
    st.caption(f"Showing a random {MAX_POINTS:,} of {len(frame):,} points to keep the map responsive.")

hover = [c for c in ("path", "label", "caption") if c in shown]
fig = px.scatter(
    shown.reset_index(names="row"),
    x="x",
    y="y",
    color=colour,
    hover_data=["row", *hover],
    render_mode="webgl",
    color_continuous_scale="Viridis",
    height=620,
)
fig.update_traces(marker={"size": 4})
fig.update_layout(dragmode="lasso", margin={"l": 0, "r": 0, "t": 30, "b": 0}, xaxis_visible=False, yaxis_visible=False)
event = st.plotly_chart(fig, on_select="rerun", selection_mode=("lasso", "box"), key="umap", use_container_width=True)

points = (event or {}).get("selection", {}).get("points", []) if event else []
rows = pd.Index(sorted({int(p["customdata"][0]) for p in points if p.get("customdata")}))
st.subheader(f"Selection: {len(rows):,} samples" if len(rows) else "Lasso or box-select points to see them here")
if len(rows):
    sel = frame.loc[rows]
    st.dataframe(sel["label"].value_counts().rename("samples"), use_container_width=False)
    caption = ["label"] + ([colour] if colour != "label" else [])
    show_gallery(dataset, rows[:48], frame=frame, columns=8, caption_cols=caption)
    if len(rows) > 48:
        st.caption(f"First 48 of {len(rows):,} shown.")
    st.session_state["explore_selection"] = np.asarray(rows)
