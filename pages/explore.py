"""Explore step: a 2-D map of the samples coloured by a score or a flag; lasso to look, tag, review or export.

The map is a UMAP of the CLIP image embeddings when CLIP scores exist, or any two scores
against each other (no model needed).  Plotly hovers cannot show images, so hover gives the
label and scores and a lasso / box selection fills the gallery below with the images.
"""

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

from pruning_core.export import table_bytes
from ui import background
from ui import review_state as rs
from ui import state
from ui.gallery import show_gallery
from ui.similar import show_similar

MAX_POINTS = 60_000
MAX_HOVER_SCORES = 8
GALLERY = 48
DECISION_COLOURS = {"undecided": "#c8c8c8", "keep": "#2ca02c", "remove": "#d62728", "relabel": "#ff7f0e",
                    "skip": "#1f77b4"}
UMAP = "UMAP of CLIP image embeddings"
SCORES = "Two scores"

st.title("Explore")
scored = state.require_scored_dataset()
dataset, table, frame, cols = scored.dataset, scored.table, scored.frame, scored.cols
store = rs.decision_store()
fp = dataset.fingerprint

has_clip = any(c.startswith("clip.") for c in table.infos)
maps = ([UMAP] if has_clip else []) + [SCORES]
m1, m2, m3 = st.columns([2, 2, 2])
map_kind = m1.radio("Map", maps, horizontal=True, key="explore_map")
preview = None  # the background UMAP fit while a PCA preview is drawn
if map_kind == UMAP:
    from pruning_core.projection import pca_coords

    embeddings, coords, preview = background.clip_umap_or_start(dataset, state.clip_config(), state.store())
    x_label, y_label = "UMAP 1", "UMAP 2"
    if coords is None:
        coords = pca_coords(embeddings.image)
        x_label, y_label = "PCA 1", "PCA 2"
    x, y = coords[:, 0], coords[:, 1]
else:
    x_label = m2.selectbox("x", cols, index=0, key="explore_x")
    y_label = m3.selectbox("y", cols, index=min(1, len(cols) - 1), key="explore_y")
    x, y = frame[x_label].to_numpy(dtype=float), frame[y_label].to_numpy(dtype=float)

# ----------------------------------------------------------------------------- colour: a score or a flag
decision = rs.decisions_for(dataset, frame)
flags: dict[str, pd.Series] = {"label": frame["label"].astype(str), "review decision": decision}
if "clip.duplicate_group" in frame:
    group = frame["clip.duplicate_group"].fillna(-1).astype(int)
    sizes = group[group >= 0].value_counts()
    top = set(sizes.index[:12])
    flags["duplicate group"] = pd.Series(
        np.where(group < 0, "none", np.where(group.isin(top), "group " + group.astype(str), "other group")),
        index=frame.index)
for col, who in (("clip.suggested_label", "CLIP"), ("dynamics.suggested_label", "proxy")):
    if col in frame:
        flags[f"{who} disagrees with label"] = pd.Series(
            np.where(frame[col].astype(str) == frame["label"].astype(str), "agrees", "disagrees"), index=frame.index)
for tag in store.tags(fp):
    tagged = frame["path"].isin(set(store.tagged(fp, tag)))
    flags[f"tag: {tag}"] = pd.Series(np.where(tagged, tag, "untagged"), index=frame.index)

options = [*flags, *cols]
default = options.index("clip.label_alignment") if "clip.label_alignment" in options else 0
colour = st.selectbox("Colour by (a score, or a flag such as the review decision)", options, index=default,
                      key="explore_colour")

plot = pd.DataFrame({"row": frame.index, "x": x, "y": y, "label": frame["label"].astype(str)}, index=frame.index)
colour_col = colour
if colour in flags:
    colour_col = "flag: " + colour if colour == "label" else colour
    plot[colour_col] = flags[colour]
hover_scores = cols[:MAX_HOVER_SCORES]
if colour in cols and colour not in hover_scores:
    hover_scores = [colour, *hover_scores[:-1]]
for c in hover_scores:
    plot[c] = frame[c].to_numpy(dtype=float)

plot = plot.dropna(subset=["x", "y"])
if len(plot) > MAX_POINTS:
    plot = plot.sample(MAX_POINTS, random_state=0).sort_index()
    st.info(f"The map shows a random {MAX_POINTS:,} of {len(frame):,} points (thinned to stay responsive); "
            "selections, tags and exports act on the points shown.")
hidden = len(frame) - len(plot)
hover = {"row": True, "label": True, "x": False, "y": False, **{c: ":.3f" for c in hover_scores}}
kwargs: dict = {}
if colour == "review decision":
    kwargs["color_discrete_map"] = DECISION_COLOURS
fig = px.scatter(plot, x="x", y="y", color=colour_col, hover_data=hover, render_mode="webgl",
                 color_continuous_scale="Viridis" if table.infos.get(colour, None) is None
                 or table.infos[colour].suspicious == "high" else "Viridis_r",
                 labels={"x": x_label, "y": y_label}, height=620, **kwargs)
fig.update_traces(marker={"size": 4 if len(plot) > 5000 else 7})
fig.update_layout(dragmode="lasso", margin={"l": 0, "r": 0, "t": 30, "b": 0},
                  xaxis_visible=map_kind != UMAP, yaxis_visible=map_kind != UMAP, legend={"itemsizing": "constant"})
caption = "Hover shows the label and scores; lasso or box-select points to see their images below."
if colour in cols:
    caption += " Yellow = most suspicious."
if hidden and len(plot) <= MAX_POINTS and len(frame) <= MAX_POINTS:
    caption += f" {hidden:,} samples without coordinates are not drawn."
if len(cols) > MAX_HOVER_SCORES:
    caption += f" Hover lists {MAX_HOVER_SCORES} of {len(cols)} scores."
st.caption(caption)
if preview is not None:
    @st.fragment(run_every=1.0)
    def _swap_in_umap() -> None:
        """Poll the background fit; rerun the page (drawing the UMAP) as soon as it is cached."""
        if preview.done():
            if preview.exception() is None:
                st.rerun(scope="app")
            st.error(f"The UMAP failed: {preview.exception()}")
            return
        st.info("A PCA preview: the UMAP is being computed in the background and replaces it when ready.",
                icon=":material/hourglass_top:")

    _swap_in_umap()
event = st.plotly_chart(fig, on_select="rerun", selection_mode=("lasso", "box"), key="umap", width="stretch")

points = (event or {}).get("selection", {}).get("points", []) if event else []
rows = pd.Index(sorted({int(p["customdata"][0]) for p in points if p.get("customdata")}))
st.subheader(f"Selection: {len(rows):,} samples" if len(rows) else "Lasso or box-select points to see them here")
if len(rows):
    sel = frame.loc[rows]
    st.session_state["explore_selection"] = np.asarray(rows)
    a1, a2, a3 = st.columns([2, 1, 1], vertical_alignment="bottom")
    tag_name = a1.text_input("Tag name", value="explore selection", key="explore_tag_name")
    if a2.button("Tag selection", width="stretch"):
        added = store.tag(fp, sel["path"], tag_name, reviewer=rs.reviewer_name())
        st.toast(f"Tagged {added:,} new samples as '{tag_name.strip()}'")
    if a3.button("Send to review queue", type="primary", width="stretch"):
        store.tag(fp, sel["path"], tag_name, reviewer=rs.reviewer_name())
        st.session_state[rs.REVIEW_SOURCE] = f"tag:{tag_name.strip()}"
        st.switch_page("pages/review.py")
    st.download_button("Download selection (CSV)", table_bytes(sel.assign(decision=decision.loc[rows]), "csv"),
                       file_name="selection.csv", mime="text/csv", on_click="ignore")
    if st.toggle(f"Samples like row {rows[0]} (the first selected; nearest CLIP neighbours)", key="explore_similar_on"):
        show_similar(dataset, frame, rows[0], decision, score=colour if colour in cols else None, key="explore_similar")
    s1, s2 = st.columns([1, 3])
    s1.dataframe(sel["label"].value_counts().rename("samples"), width="stretch")
    with s2:
        shown_caption = ["label"] + ([colour] if colour in cols else [])
        show_gallery(dataset, rows[:GALLERY], frame=frame, columns=6, caption_cols=shown_caption)
        if len(rows) > GALLERY:
            st.caption(f"First {GALLERY} of {len(rows):,} shown.")
