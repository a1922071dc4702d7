"""Prune step: how many to keep, by which strategy and score weights; the kept set updates live.

Reviewer removals are never kept (they are excluded before the strategy picks), and what
the recipe does is previewed at once: kept per class, the combined score of kept vs
removed samples, and the samples on either side of the cut.
"""

import time
from contextlib import nullcontext as _nullcontext
from dataclasses import asdict, fields, replace

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from pruning_core.selection import preview_selection
from pruning_core.selection import STRATEGIES, SelectionRecipe, available_strategies, default_weights
from ui import review_state as rs
from ui import state
from ui.gallery import show_gallery

st.title("Prune")
scored = state.require_scored_dataset()
dataset, table, frame, cols = scored.dataset, scored.table, scored.frame, scored.cols
removed, relabels = rs.removed_and_relabels(dataset)
n = len(frame)
n_review = int(frame["path"].isin(set(removed)).sum())
eligible = n - n_review
previous = st.session_state.get(state.RECIPE)

available = available_strategies(frame, table.infos)

# ----------------------------------------------------------------------------- the recipe
max_fraction = float(np.floor(eligible / n * 100) / 100) if n else 1.0
prev_keep = previous.keep if previous is not None else 0.8
rs.remember("prune_mode", "count" if isinstance(prev_keep, int) else "fraction")
rs.remember("prune_fraction", min(max_fraction, float(prev_keep) if not isinstance(prev_keep, int) else 0.8))
rs.remember("prune_count", min(eligible, prev_keep if isinstance(prev_keep, int) else int(round(0.8 * n))))
rs.remember("prune_strategy", previous.strategy if previous is not None and previous.strategy in available
            else available[0])
rs.remember("prune_balance", previous.balance if previous is not None else True)
rs.remember("prune_seed", previous.seed if previous is not None else 0)
st.session_state["prune_fraction"] = min(st.session_state["prune_fraction"], max(0.01, max_fraction))
st.session_state["prune_count"] = min(st.session_state["prune_count"], eligible)
if st.session_state["prune_strategy"] not in available:
    st.session_state["prune_strategy"] = available[0]

c1, c2, c3, c4 = st.columns([1, 3, 3, 1], vertical_alignment="bottom")
mode = c1.radio("Keep by", ["fraction", "count"], key="prune_mode")
if mode == "fraction":
    keep = c2.slider("Keep fraction", min_value=0.01, max_value=max(0.01, max_fraction), step=0.01,
                     key="prune_fraction",
                     help=f"of all {n:,} samples; {n_review:,} removed by reviewers cannot be kept")
    keep = float(keep)
else:
    keep = int(c2.number_input("Keep count", min_value=0, max_value=eligible, step=100, key="prune_count"))
strategy = c3.selectbox("Strategy", available, key="prune_strategy",
                        format_func=lambda s: f"{s} — {STRATEGIES[s].description}")
chosen = STRATEGIES[strategy]
balance = c4.toggle("Class balance", key="prune_balance", help="keep each class in proportion to its size")

prev_weights = dict(previous.weights) if previous is not None and previous.weights else None
if prev_weights is None:
    prev_weights = default_weights(frame, table.infos)
with st.expander("Score weights for the combined score" + ("" if chosen.uses_weights
                                                           else f" (not used by {strategy})"),
                 expanded=chosen.uses_weights):
    st.caption("Each score is rank-normalised to [0, 1] with 1 = most suspicious (its own direction), then "
               "averaged with these weights. 0 leaves a score out.")
    weights = {}
    grid = st.columns(3)
    for i, c in enumerate(cols):
        key = f"prune_w_{c}"
        rs.remember(key, float(prev_weights.get(c, 0.0)))
        weights[c] = grid[i % 3].slider(c, min_value=0.0, max_value=3.0, step=0.25, key=key,
                                        help=f"{table.infos[c].description} ({table.infos[c].suspicious} = suspicious)")
    seeded = ", ".join(name for name, s in STRATEGIES.items() if s.uses_seed)
    seed = st.number_input(f"Seed ({seeded})", min_value=0, step=1, key="prune_seed")
    rs.keep(*(f"prune_w_{c}" for c in cols))
rs.keep("prune_mode", "prune_fraction", "prune_count", "prune_strategy", "prune_balance", "prune_seed")
strategy_settings = None
if chosen.settings is not None:  # e.g. CPS's alpha / beta: defaults from its config dataclass
    defaults = chosen.settings()
    before = dict(previous.cps_params or {}) if previous is not None and previous.strategy == strategy else {}
    boxes = st.columns(len(fields(defaults)) + 2)
    values = {}
    for box, f in zip(boxes, fields(defaults)):
        key = f"prune_{strategy}_{f.name}"
        rs.remember(key, float(before.get(f.name, getattr(defaults, f.name))))
        values[f.name] = box.number_input(f"{strategy.upper()} {f.metadata.get('label', f.name)}", min_value=0.0,
                                          key=key, help=f.metadata.get("help"))
        rs.keep(key)
    strategy_settings = asdict(replace(defaults, **values))
weights = {c: w for c, w in weights.items() if w > 0}
if not weights and chosen.uses_weights:
    st.error("Give at least one score a weight above 0.")
    st.stop()

recipe = SelectionRecipe(keep=keep, strategy=strategy, weights=weights or None, balance=balance, seed=int(seed),
                         cps_params=strategy_settings)

# Each score is ranked once per score table (on first use); the last previews are remembered, so
# moving a control back (or a rerun from elsewhere on the page) costs nothing.
t0 = time.perf_counter()
preview = state.prune_preview(table, recipe, removed)
if preview is None:
    run_label = f"Run {strategy.upper()} selection"
    if not chosen.live and not st.button(run_label, type="primary", help=f"{chosen.description}: seconds, not live"):
        st.info(f"{strategy.upper()} takes a few seconds per run, so it runs on demand: press **{run_label}**.")
        st.stop()
    try:
        with _nullcontext() if chosen.live else st.spinner("Selecting…"):
            preview = preview_selection(frame, table.infos, recipe, removed, ranks=state.score_ranks(table))
    except ValueError as exc:
        st.error(str(exc))
        st.stop()
    state.keep_prune_preview(table, recipe, removed, preview)
elapsed = time.perf_counter() - t0
state.set_recipe(recipe)

# ----------------------------------------------------------------------------- the preview
kept = preview.n_kept
m = st.columns(4)
m[0].metric("Kept", f"{kept:,} of {n:,}")
m[1].metric("Removed by the selection", f"{int((~preview.mask & ~preview.removed_by_review).sum()):,}")
m[2].metric("Removed by reviewers", f"{int(preview.removed_by_review.sum()):,}")
m[3].metric("Relabelled (applied on export)", f"{len(relabels):,}")
st.caption(f"Selection and preview computed in {elapsed * 1000:.0f} ms.")

left, right = st.columns(2)
per_class = preview.per_class
bar = go.Figure()
for name, colour in (("kept", "#2ca02c"), ("removed by selection", "#aaaaaa"), ("removed by review", "#d62728")):
    bar.add_bar(x=per_class.index.astype(str), y=per_class[name], name=name, marker_color=colour)
bar.update_layout(barmode="stack", height=320, margin={"l": 0, "r": 0, "t": 30, "b": 0}, title="Samples per class",
                  legend={"orientation": "h", "y": -0.2})
left.plotly_chart(bar, width="stretch", key="prune_classes")

centres = (preview.hist_edges[:-1] + preview.hist_edges[1:]) / 2
width = preview.hist_edges[1] - preview.hist_edges[0]
hist = go.Figure()
hist.add_bar(x=centres, y=preview.hist_kept, width=width, name="kept", marker_color="#2ca02c", opacity=0.7)
hist.add_bar(x=centres, y=preview.hist_removed, width=width, name="removed", marker_color="#d62728", opacity=0.6)
hist.update_layout(barmode="overlay", height=320, margin={"l": 0, "r": 0, "t": 30, "b": 0},
                   title="Combined score (1 = most suspicious)", legend={"orientation": "h", "y": -0.2},
                   xaxis_range=[0, 1])
right.plotly_chart(hist, width="stretch", key="prune_hist")

st.subheader("At the cut")
shown = frame.assign(**{"combined": preview.combined})
b1, b2 = st.columns(2)
with b1:
    st.caption("Kept, but nearest to being removed")
    show_gallery(dataset, frame.index[preview.borderline_kept], frame=shown, columns=4,
                 caption_cols=["label", "combined"])
with b2:
    st.caption("Removed, but nearest to being kept")
    show_gallery(dataset, frame.index[preview.borderline_removed], frame=shown, columns=4,
                 caption_cols=["label", "combined"])

if n_review:
    with st.expander(f"{n_review:,} samples removed by reviewers (always excluded)"):
        positions = np.flatnonzero(preview.removed_by_review)[:32]
        show_gallery(dataset, frame.index[positions], frame=frame, columns=8, caption_cols=["label"])
