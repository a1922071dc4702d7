"""Prune step: choose how many samples to keep and by which strategy; the kept set updates live."""

import pandas as pd
import streamlit as st

from pruning_core.selection import STRATEGIES, SelectionRecipe, run_recipe
from pruning_core.pipeline import score_columns
from ui import state

st.title("Prune")
dataset = state.require_dataset()
table = state.require_scores(dataset)
cols = score_columns(table.frame, table.infos)

c1, c2, c3 = st.columns([2, 2, 1])
fraction = c1.slider("Keep fraction", min_value=0.05, max_value=1.0, value=0.8, step=0.01)
available = [s for s in STRATEGIES if s != "dyn_unc" or "dynamics.dyn_unc" in table.frame]
available = [s for s in available if s != "cps" or {"clip.label_alignment", "clip.diversity"} <= set(table.frame)]
strategy = c2.selectbox("Strategy", available, format_func=lambda s: f"{s} — {STRATEGIES[s]}")
balance = c3.toggle("Class balance", value=True)
defaults = ["clip.label_alignment"] if "clip.label_alignment" in cols else cols[:1]
chosen = st.multiselect("Scores combined (rank-normalised, equal weight)", cols, default=defaults)

recipe = SelectionRecipe(keep=float(fraction), strategy=strategy, weights={c: 1.0 for c in chosen} or None,
                         balance=balance)
try:
    mask = run_recipe(table.frame, table.infos, recipe)
except ValueError as exc:
    st.error(str(exc))
    st.stop()
st.session_state[state.RECIPE] = recipe

kept = table.frame[mask]
st.metric("Kept", f"{len(kept):,} of {len(table.frame):,}", delta=f"-{len(table.frame) - len(kept):,} removed")
per_class = pd.DataFrame({
    "kept": kept["label"].value_counts(),
    "removed": table.frame.loc[~mask, "label"].value_counts(),
}).fillna(0).astype(int).rename_axis("class")
st.bar_chart(per_class, height=260)
