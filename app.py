"""PruneScope: the Streamlit entry point (run with `prunescope app`; plain `streamlit run app.py` works too, but
then a first visit that deep-links to a page gets Streamlit's legacy pages/ navigation: see ui/launch.py)."""

import streamlit as st

from ui import background, state

st.set_page_config(page_title="PruneScope", page_icon=":material/content_cut:", layout="wide")
background.warm_at_start()  # numba compiles umap-learn off the script thread, before anyone opens Explore

PAGES = [
    st.Page("pages/dataset.py", title="Dataset", icon=":material/folder_open:", default=True),
    st.Page("pages/overview.py", title="Overview", icon=":material/health_and_safety:"),
    st.Page("pages/score.py", title="Score", icon=":material/calculate:"),
    st.Page("pages/explore.py", title="Explore", icon=":material/scatter_plot:"),
    st.Page("pages/review.py", title="Review", icon=":material/fact_check:"),
    st.Page("pages/prune.py", title="Prune", icon=":material/content_cut:"),
    st.Page("pages/evaluate.py", title="Evaluate", icon=":material/monitoring:"),
    st.Page("pages/export.py", title="Export", icon=":material/download:"),
]

state.restore_from_url()  # a reload or a shared link opens the same dataset, recipe and queue
navigation = st.navigation(PAGES)
state.publish_to_url()
st.sidebar.markdown("**PruneScope** — audit and prune image datasets")
navigation.run()
