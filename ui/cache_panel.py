"""The result store in the app: what is cached (size, step, dataset) and clearing a step or everything.

The same store and the same two operations as ``prunescope cache ls`` / ``clear [--step]``.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from cache.store import ResultStore


def cache_frame(store: ResultStore) -> pd.DataFrame:
    """One row per finished entry, newest first."""
    return pd.DataFrame([{"step": e.meta.get("step", "?"), "dataset": e.meta.get("dataset", ""),
                          "MB": e.size_bytes / 1e6, "key": e.key} for e in store.ls()],
                        columns=["step", "dataset", "MB", "key"])


def show_cache(store: ResultStore) -> None:
    """List the entries and offer to clear one step's entries or all of them."""
    entries = cache_frame(store)
    st.caption(f"{len(entries):,} entries, {entries['MB'].sum():,.1f} MB in `{store.root}`")
    st.dataframe(entries, hide_index=True, width="stretch",
                 column_config={"MB": st.column_config.NumberColumn(format="%.1f")})
    if entries.empty:
        return
    c1, c2, c3 = st.columns([2, 1, 1], vertical_alignment="bottom")
    step = c1.selectbox("Step", sorted(entries["step"].unique()), key="cache_step")
    if c2.button(f"Clear {step}", key="cache_clear_step", width="stretch"):
        st.toast(f"Removed {store.clear(step):,} {step} entries")
        st.rerun()
    if c3.button("Clear all", key="cache_clear_all", width="stretch"):
        st.toast(f"Removed {store.clear():,} entries")
        st.rerun()
