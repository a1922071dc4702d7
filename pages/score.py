"""Score step: compute CLIP scores (cached; resumable after a cancel) and see the score table."""

import streamlit as st

from pruning_core.clip_model import WeightsUnavailable
from pruning_core.pipeline import ClipConfig, score_columns
from ui import state

st.title("Score")
dataset = state.require_dataset()
config = state.clip_config()

with st.form("clip"):
    st.subheader("CLIP signals")
    c1, c2, c3, c4 = st.columns([2, 3, 1, 1])
    model = c1.text_input("open_clip model", value=config.model)
    pretrained = c2.text_input("Pretrained tag, local checkpoint path, or 'none'", value=config.pretrained or "none")
    device = c3.selectbox("Device", ["auto", "cpu", "cuda"], index=["auto", "cpu", "cuda"].index(config.device))
    batch = c4.number_input("Batch", min_value=1, max_value=4096, value=config.batch_size)
    adapter_epochs = st.number_input(
        "Adapter epochs (0 = score in CLIP's own space)", min_value=0, max_value=50, value=config.adapter_epochs,
        help="Fits small residual image/text adapters on your data and labels first (CLIP-powered selection, "
             "Yang et al.). Keep it short: your labels may be noisy.",
    )
    run = st.form_submit_button("Compute CLIP scores", type="primary")

if run:
    config = ClipConfig(model=model.strip(), pretrained=pretrained.strip(), device=device, batch_size=int(batch),
                        adapter_epochs=int(adapter_epochs))
    st.session_state[state.CLIP] = config
    holder = st.container()
    holder.caption("Leaving the page or pressing Stop cancels; finished chunks are kept and the next run resumes.")
    try:
        state.compute_clip_scores(dataset, config, state.StreamlitProgress(holder))
    except WeightsUnavailable as exc:
        st.error(f"{exc}\n\nThe rest of PruneScope (review, pruning, export) works without CLIP scores.")

table = state.score_table(dataset)
cols = score_columns(table.frame, table.infos)
if cols:
    st.success(f"{len(cols)} scores for {len(table.frame):,} samples.")
    st.dataframe(
        [{"score": c, "suspicious when": table.infos[c].suspicious, "meaning": table.infos[c].description} for c in cols],
        hide_index=True,
        use_container_width=True,
    )
    st.dataframe(table.frame.head(200), hide_index=True, use_container_width=True)
else:
    st.info("No scores yet. The demo uses its built-in tiny CLIP; for your data give an open_clip model and weights.")
