"""The result store in the app: what is cached (size, step, dataset) and clearing entries, a step or everything.

The same store and the same operations as ``prunescope cache ls`` / ``clear [--step | --key]``.
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


def _clear(store: ResultStore, what: str, **which) -> None:
    """A button's callback: runs before the page, so the list below is drawn without the removed entries."""
    st.toast(f"Removed {store.clear(**which):,} {what}")
    for key in ("cache_entries", "cache_step"):  # choices that may no longer exist
        st.session_state.pop(key, None)


def show_cache(store: ResultStore) -> None:
    """List the entries and offer to clear chosen entries, one step's entries, or all of them."""
    entries = cache_frame(store)
    st.caption(f"{len(entries):,} entries, {entries['MB'].sum():,.1f} MB in `{store.root}`")
    st.dataframe(entries, hide_index=True, width="stretch",
                 column_config={"MB": st.column_config.NumberColumn(format="%.1f")})
    if entries.empty:
        return
    by_key = entries.set_index("key")
    e1, e2 = st.columns([5, 1], vertical_alignment="bottom")
    chosen = e1.multiselect("Entries", by_key.index.tolist(), key="cache_entries",
                            format_func=lambda k: f"{by_key.at[k, 'step']} · {by_key.at[k, 'dataset']} · "
                                                  f"{by_key.at[k, 'MB']:.1f} MB · {k[:12]}")
    e2.button("Clear chosen", key="cache_clear_entries", disabled=not chosen, width="stretch", on_click=_clear,
              args=(store, "entries"), kwargs={"keys": chosen})
    c1, c2, c3 = st.columns([4, 1, 1], vertical_alignment="bottom")
    step = c1.selectbox("Step", sorted(entries["step"].unique()), key="cache_step")
    c2.button(f"Clear {step}", key="cache_clear_step", width="stretch", on_click=_clear,
              args=(store, f"{step} entries"), kwargs={"step": step})
    c3.button("Clear all", key="cache_clear_all", width="stretch", on_click=_clear, args=(store, "entries"))
