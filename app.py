"""PruneScope: the Streamlit entry point (run with `prunescope app` or `streamlit run app.py`)."""

import streamlit as st

st.set_page_config(page_title="PruneScope", page_icon="✂️", layout="wide")

PAGES = [
    st.Page("pages/dataset.py", title="Dataset", icon="📁", default=True),
    st.Page("pages/score.py", title="Score", icon="🧮"),
    st.Page("pages/explore.py", title="Explore", icon="🗺️"),
    st.Page("pages/review.py", title="Review", icon="🔍"),
    st.Page("pages/prune.py", title="Prune", icon="✂️"),
    st.Page("pages/export.py", title="Export", icon="📦"),
]

navigation = st.navigation(PAGES)
st.sidebar.markdown("**PruneScope** — audit and prune image datasets")
navigation.run()
