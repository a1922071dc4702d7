"""Explore step: a 2-D map of the samples coloured by a score or a flag; hover for the image, lasso to act.

The map is a UMAP of an embedding (CLIP, adapted CLIP, a manifest column of vectors or a .npy
file; each UMAP cached) or any two scores against each other (no model needed).  It is drawn by
ui/map_component (plotly.js WebGL, every point, a thumbnail on hover); a lasso / box selection
fills the gallery and the tag / review / export actions below.
"""

import pandas as pd
import streamlit as st

from pruning_core.export.subset import table_bytes
from ui import background, map_sources
from ui import review_state as rs
from ui import state
from ui.gallery import row_name, show_gallery
from ui.map_component import colour_flags, hover_detail, hover_rows, map_payload, prefetch_rows, scatter_map
from ui.similar import show_similar

MAX_HOVER_SCORES = 8
GALLERY = 48
MAP_HEIGHT = 620
DECISION_COLOURS = {"undecided": "#c8c8c8", "keep": "#2ca02c", "remove": "#d62728", "relabel": "#ff7f0e",
                    "skip": "#1f77b4"}
SCORES = "two scores"
MAP_KEY = "explore_map_events"
SENT = "_explore_map_sent"  # the version of the points the browser has
ASKED = "_explore_map_asked"  # the event in which a remounted map last asked for its points
PREFETCHED = "_explore_map_prefetched"  # the event whose prefetch request was last answered

st.title("Explore")
scored = state.require_scored_dataset()
dataset, table, frame, cols = scored.dataset, scored.table, scored.frame, scored.cols
store = rs.decision_store()
fp = dataset.fingerprint

has_clip = any(c.startswith("clip.") for c in table.infos)
maps = [*map_sources.choices(dataset, has_clip, state.clip_config().adapter_epochs), SCORES, map_sources.FILE]
m1, m2, m3 = st.columns([2, 2, 2])
map_kind = m1.selectbox("Map of", maps, key="explore_map")
preview = None  # the background UMAP fit while a PCA preview is drawn
if map_kind == SCORES:
    x_label = m2.selectbox("x", cols, index=0, key="explore_x")
    y_label = m3.selectbox("y", cols, index=min(1, len(cols) - 1), key="explore_y")
    x, y = frame[x_label].to_numpy(dtype=float), frame[y_label].to_numpy(dtype=float)
else:
    npy = ""
    if map_kind == map_sources.FILE:
        npy = m2.text_input(".npy file (one row per sample, in the dataset's order)", key="explore_npy")
        if not npy.strip():
            st.info("Name a .npy file inside the workspace: one row of numbers per sample, in the dataset's order "
                    "(2 columns are drawn as they are; more are mapped by UMAP).")
            st.stop()
    try:
        source = map_sources.resolve(map_kind, dataset, npy)
    except ValueError as exc:
        st.error(str(exc))
        st.stop()
    coords, preview = background.umap_or_start(source.load, state.store(), fingerprint=fp, source=source.source)
    x_label, y_label = "UMAP 1", "UMAP 2"
    if coords is None:
        from pruning_core.audit.projection import pca_coords

        coords = pca_coords(source.load())
        x_label, y_label = "PCA 1", "PCA 2"
    x, y = coords[:, 0], coords[:, 1]

# ----------------------------------------------------------------------------- colour: a score or a flag
decision = rs.decisions_for(dataset, frame)
flags = colour_flags(frame, decision, {tag: set(store.tagged(fp, tag)) for tag in store.tags(fp)})
options = [*flags, *cols]
default = options.index("clip.label_alignment") if "clip.label_alignment" in options else 0
colour = st.selectbox("Colour by (a score, or a flag such as the review decision)", options, index=default,
                      key="explore_colour")
info = table.infos.get(colour)
colour_values = flags[colour]().rename(colour) if colour in flags else frame[colour]
payload = map_payload(
    x, y, frame.index.to_numpy(), frame["label"], colour_values,
    colour_title=colour, categorical=colour in flags,
    palette=DECISION_COLOURS if colour == "review decision" else None,
    reverse_scale=info is not None and info.suspicious != "high",
    x_label=x_label, y_label=y_label, axes_visible=map_kind == SCORES)
hover_scores = cols[:MAX_HOVER_SCORES]
if colour in cols and colour not in hover_scores:
    hover_scores = [colour, *hover_scores[:-1]]

caption = (f"All {payload['n']:,} points drawn (no thinning). Hover a point to see its image; "
           "lasso or box-select points to act on them below.")
if colour in cols:
    caption += " Yellow = most suspicious."
if payload["hidden"]:
    caption += f" {payload['hidden']:,} samples without coordinates are not drawn."
if payload.get("other_categories"):
    caption += f" The {payload['other_categories']:,} rarest '{colour}' values share the grey 'other' colour."
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
else:
    st.container()  # holds the preview notice's place: the map keeps its position (and its iframe) when the UMAP lands


# A hover or a selection reruns the page; the points go to the browser only when they changed (or a
# remounted map asks for them), so a hover costs the page script and a few thumbnails (the hovered point's and
# its neighbours', which then show without a rerun), not a 6 MB resend.  While nobody waits on a hover the map
# asks for batches of thumbnails around its view (answered once per request), so most first hovers need no rerun.
# (Not a fragment: Streamlit remounts a component inside a fragment on every full run, losing zoom.)
events = st.session_state.get(MAP_KEY) or {}
detail_rows: list[int] = []
if events.get("hover") is not None and int(events["hover"]) in frame.index:  # the hovered point and its neighbours
    detail_rows = hover_rows(x, y, frame.index.to_numpy(), int(events["hover"]))
if events.get("prefetch") and events.get("seq") != st.session_state.get(PREFETCHED):
    st.session_state[PREFETCHED] = events.get("seq")
    detail_rows += prefetch_rows(events["prefetch"], frame.index)
extra = colour_values if colour in flags and colour != "label" else None
hover = [hover_detail(dataset, frame, row, hover_scores, extra) for row in dict.fromkeys(detail_rows)] or None
asked = events.get("need_points") and events.get("seq") != st.session_state.get(ASKED)
if asked:
    st.session_state[ASKED] = events.get("seq")
send = asked or st.session_state.get(SENT) != payload["version"]
events = scatter_map(payload if send else None, hover=hover, selected=events.get("selected", []), height=MAP_HEIGHT,
                     key=MAP_KEY, prefetch=preview is None) or {}  # not while the preview's fragment polls
st.session_state[SENT] = payload["version"]
selected = [int(r) for r in events.get("selected", [])]
rows = pd.Index(selected).intersection(frame.index)
st.subheader(f"Selection: {len(rows):,} samples" if len(rows) else "Lasso or box-select points to see them here")
if len(rows):
    sel = frame.loc[rows]
    a1, a2, a3, a4, a5 = st.columns([2, 1, 1, 1, 1], vertical_alignment="bottom")
    tag_name = a1.text_input("Tag name", value="explore selection", key="explore_tag_name")
    sel_paths = sel["path"].tolist()
    rs.bulk_button(a2, "Tag selection", "explore_tag", len(rows), width="stretch",
                   run=lambda: f"Tagged {store.tag(fp, sel_paths, tag_name, reviewer=rs.reviewer_name()):,} new "
                               f"samples as '{tag_name.strip()}'")
    def _remove() -> str:
        n = store.decide_many(fp, sel_paths, "remove", reviewer=rs.reviewer_name(), source="explore")
        return f"Recorded {n:,} removals: they are never kept by Prune or Export"

    rs.bulk_button(a3, f"Remove {len(rows):,}", "explore_remove", len(rows), _remove, width="stretch",
                   help="Record a 'remove' decision for every selected sample (Review shows and can change each)")
    rs.undo_last_action(dataset, a5, key="explore_undo")
    if a4.button("Send to review queue", type="primary", width="stretch"):
        store.tag(fp, sel["path"], tag_name, reviewer=rs.reviewer_name())
        st.session_state[rs.REVIEW_SOURCE] = f"tag:{tag_name.strip()}"
        st.switch_page("pages/review.py")
    st.download_button("Download selection (CSV)", lambda: table_bytes(sel.assign(decision=decision.loc[rows]), "csv"),
                       file_name="selection.csv", mime="text/csv", on_click="ignore")  # made on click, not every rerun
    if st.toggle(f"Samples like {row_name(frame, rows[0])} (the first selected; nearest CLIP neighbours)",
                 key="explore_similar_on"):
        show_similar(dataset, frame, rows[0], decision, score=colour if colour in cols else None, key="explore_similar")
    s1, s2 = st.columns([1, 3])
    s1.dataframe(sel["label"].value_counts().rename("samples"), width="stretch")
    with s2:
        shown_caption = ["label"] + ([colour] if colour in cols else [])
        if colour in cols:  # the score the map is coloured by, most suspicious first (NaN last)
            order = frame.loc[rows, colour].sort_values(ascending=info is None or info.suspicious != "high",
                                                        na_position="last", kind="stable").index
        else:
            order = rows
        show_gallery(dataset, order[:GALLERY], frame=frame, columns=6, caption_cols=shown_caption)
        shown = f"most suspicious by `{colour}` first" if colour in cols else "in row order"
        st.caption(f"First {GALLERY} of {len(rows):,} shown, {shown}." if len(rows) > GALLERY
                   else f"{len(rows):,} shown, {shown}.")
