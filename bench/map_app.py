"""A Streamlit page that draws the Explore map component on a synthetic table (``bench/bench_map.py --browser``).

It does per rerun what pages/explore.py does once the UMAP is cached (decision column, colour
flags, payload, points sent only when they changed), without needing a 200,000-image dataset.
"""

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]
from bench_map import clustered, synthetic_table  # noqa: E402
from pruning_core.audit.review import decision_column  # noqa: E402
from ui.map_component import colour_flags, map_payload, scatter_map  # noqa: E402

N = int(os.environ.get("BENCH_MAP_POINTS", "200000"))


@st.cache_resource
def data() -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    frame, latest = synthetic_table(N)
    return frame, latest, clustered(N, 2, clusters=10) * 10


frame, latest, coords = data()
flags = colour_flags(frame, decision_column(frame, latest), {})
colour = st.selectbox("Colour by", [*flags, *[c for c in frame.columns if c.startswith("score.")]], key="colour")
values = flags[colour]() if colour in flags else frame[colour]
payload = map_payload(coords[:, 0], coords[:, 1], frame.index.to_numpy(), frame["label"], values,
                      colour_title=colour, categorical=colour in flags, axes_visible=False)
events = st.session_state.get("map") or {}
send = events.get("need_points") or st.session_state.get("sent") != payload["version"]
events = scatter_map(payload if send else None, hover=None, selected=events.get("selected", []), height=620,
                     key="map") or {}
st.session_state["sent"] = payload["version"]
rows = pd.Index(events.get("selected", [])).intersection(frame.index)
st.write(f"Selection: {len(rows):,}")
if len(rows):
    st.dataframe(frame.loc[rows, "label"].value_counts())
