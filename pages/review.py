"""Review step: the most suspicious samples by any detector, as a grid to judge."""

import streamlit as st

from pruning_core.pipeline import score_columns
from ui import state
from ui.gallery import show_gallery

st.title("Review")
dataset = state.require_dataset()
table = state.require_scores(dataset)
cols = score_columns(table.frame, table.infos)
default = cols.index("clip.label_alignment") if "clip.label_alignment" in cols else 0
c1, c2 = st.columns([3, 1])
detector = c1.selectbox("Order by detector", cols, index=default, help="most suspicious first")
count = c2.number_input("Samples", min_value=8, max_value=400, value=48, step=8)
info = table.infos[detector]
st.caption(f"{detector}: {info.description} ({info.suspicious} = suspicious)")
order = table.frame[detector].sort_values(ascending=info.suspicious == "low", kind="stable").index[: int(count)]
caption = ["label", detector] + [c for c in ("clip.suggested_label",) if c in table.frame]
show_gallery(dataset, order, frame=table.frame, columns=8, caption_cols=caption)
