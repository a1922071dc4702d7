"""Score step: CLIP and training-dynamics scores (cached; resumable after a cancel), and the score table."""

import streamlit as st

from pruning_core.audit.overview import clip_fitness
from pruning_core.data.datasets import DatasetError, check_trainable
from pruning_core.embeddings.clip_model import WeightsUnavailable
from pruning_core.runtime.devices import device_choices
from pruning_core.dynamics.config import DynamicsConfig
from pruning_core.dynamics.models import ARCHS
from pruning_core.scoring.pipeline import ClipConfig
from pruning_core.runtime.planner import DEFAULT_BUDGET_S
from pruning_core.scoring.score_table import score_columns
from ui import own_model_panel, state

st.title("Score")
dataset = state.require_dataset()
state.report_interrupted_job()
state.executor_choice()
config = state.clip_config()

with st.form("clip"):
    st.subheader("CLIP signals")
    c1, c2, c3, c4 = st.columns([2, 3, 1, 1])
    model = c1.text_input("open_clip model", value=config.model)
    pretrained = c2.text_input("Pretrained tag, local checkpoint path, or 'none'", value=config.pretrained or "none")
    choices = device_choices()
    device = c3.selectbox("Device", choices, index=choices.index(config.device) if config.device in choices else 0)
    batch = c4.number_input("Batch", min_value=1, max_value=4096, value=config.batch_size)
    adapter_epochs = st.number_input(
        "Adapter epochs (0 = score in CLIP's own space)", min_value=0, max_value=50, value=config.adapter_epochs,
        help="Fits small residual image/text adapters on your data and labels first (CLIP-powered selection, "
             "Yang et al.). Keep it short: your labels may be noisy.",
    )
    k1, k2 = st.columns(2)
    knn_k = k1.number_input("k nearest neighbours", min_value=1, max_value=1000, value=config.k, key="clip_k",
                            help="How many neighbours clip.outlier and clip.diversity average over.")
    dup_threshold = k2.number_input("Duplicate threshold (image cosine)", min_value=0.5, max_value=1.0, step=0.005,
                                    format="%.3f", value=float(config.dup_threshold), key="clip_dup_threshold",
                                    help="Two images at or above this cosine are near duplicates (one group).")
    run = st.form_submit_button("Compute CLIP scores", type="primary")

if run:
    config = ClipConfig(model=model.strip(), pretrained=pretrained.strip(), device=device, batch_size=int(batch),
                        adapter_epochs=int(adapter_epochs), k=int(knn_k), dup_threshold=float(dup_threshold))
    st.session_state[state.CLIP] = config
    holder = st.container()
    holder.caption("Cancel, Stop or leaving the page stops the run; finished chunks are kept and the next run resumes.")
    job = state.PageJob("CLIP scores", kept=state.scoring_kept(dataset, clip=config))
    try:
        state.run_page_job(job, lambda progress, cancel: state.compute_clip_scores(dataset, config, progress, cancel),
                            holder)
    except WeightsUnavailable as exc:
        st.error(f"{exc}\n\nThe rest of PruneScope (review, pruning, export) works without CLIP scores.")

st.subheader("Training-dynamics signals")
st.caption("Trains a small proxy on your labels and records every sample at every epoch "
           "(confidence, AUM, forgetting, EL2N, Dynamic Uncertainty); k-fold cross-fitting on the samples that "
           "run ranks cleanest gives out-of-sample probabilities for cleanlab's label issues and a second opinion "
           "for the noise score. No pretrained weights needed.")
full = DynamicsConfig()
d0, d1, d2, d3 = st.columns([2, 2, 1, 1])
budget = d0.number_input("Time budget (seconds)", min_value=5, max_value=24 * 3600, value=int(DEFAULT_BUDGET_S), step=10,
                         help="Settings you leave empty are planned to fit this, from a throughput measured on "
                              "this machine; the run stops when the budget is spent.")
arch = d1.selectbox("Proxy", list(ARCHS), index=ARCHS.index(full.arch), help="mlp/linear train on the CLIP embeddings")
window = d2.number_input("Dyn-Unc window", min_value=2, max_value=100, value=full.dynunc_window)
share = d3.number_input("Cross-fitting share", min_value=0.1, max_value=1.0, value=full.crossfit_share, step=0.1,
                        help="The share of each class, ranked cleanest by the recording run, that the cross-fitting "
                             "folds train on (1 = all of it)")
planned = "planned"
p1, p2, p3, p4, p5 = st.columns(5)
given = {
    "epochs": p1.number_input("Epochs", min_value=1, max_value=200, value=None, placeholder=planned),
    "folds": p2.number_input("Folds (0 = no cleanlab)", min_value=0, max_value=10, value=None, placeholder=planned),
    "image_size": p3.number_input("Resolution", min_value=8, max_value=224, value=None, placeholder=planned),
    "width": p4.number_input("Width", min_value=4, max_value=256, value=None, placeholder=planned,
                             help=f"ResNet-9 base width ({full.width} = the original)"),
    "batch_size": p5.number_input("Batch", min_value=8, max_value=4096, value=None, placeholder=planned),
}
given = {name: int(value) for name, value in given.items() if value is not None}
dyn_request = DynamicsConfig(arch=arch, dynunc_window=int(window), crossfit_share=float(share), device=device,
                             budget_s=float(budget), **given)
try:  # before the throughput probe: a proxy cannot train on one class
    check_trainable(dataset, dataset.root, "dynamics scores and the AdaPruner mask")
    plan = state.plan_dynamics(dataset, dyn_request, tuple(given), grows=True)
    (st.info if plan.fits else st.warning)(f"**Plan:** {plan.describe()}", icon=":material/schedule:")
except DatasetError as exc:
    plan = None
    st.error(str(exc))
run_dyn = st.button("Compute dynamics scores", type="primary", disabled=plan is None)

if run_dyn:
    dyn = plan.config
    holder = st.container()
    holder.caption("Cancel, Stop or leaving the page stops the run; finished folds are kept and the next run resumes.")
    probe_clip = state.clip_config() if arch != "resnet9" else None
    job = state.PageJob("Dynamics scores", kept=state.scoring_kept(dataset, clip=probe_clip, dynamics=dyn))
    try:
        state.run_page_job(
            job, lambda progress, cancel: state.compute_dynamics_scores(dataset, dyn, probe_clip, plan, progress, cancel),
            holder,
        )
    except (ValueError, WeightsUnavailable) as exc:
        st.error(str(exc))

st.subheader("Image quality")
st.caption("CleanVision (by the cleanlab team) scores every image for dark, light, low information, odd "
           "aspect ratio, odd size and grayscale, and PruneScope scores blur (CleanVision's edge strength relative "
           "to the image's contrast); each becomes an `image.*` score (low = the issue) and an Overview finding "
           "at its threshold. One core: 33 s for 50,000 CIFAR-10 images on an idle 2-core VM (docs/benchmarks.md).")
if st.button("Compute image-quality scores", type="primary"):
    holder = st.container()
    state.run_page_job(state.PageJob("Image-quality scores"),
                       lambda progress, cancel: state.compute_image_quality_scores(dataset, progress, cancel), holder)

own_model_panel.show(dataset)

with st.form("adapruner"):
    st.subheader("AdaPruner mask")
    st.caption("Learns a keep/drop weight per sample jointly with the proxy (Yang et al. 2023): a warm start on all "
               "data, then the mask is trained to keep the chosen fraction. Adds `adapruner.keep_logit` and the "
               "'adapruner' strategy on the Prune page. Uses the time budget above; settings left empty are planned.")
    ada_ratio = st.slider("Target kept fraction", min_value=0.05, max_value=0.95, value=0.8, step=0.05)
    run_ada = st.form_submit_button("Learn AdaPruner mask", type="primary", disabled=plan is None)

if run_ada:
    fixed_ada = {**given, "folds": 0}  # one training run, no cross-fitting
    ada_plan = state.plan_dynamics(dataset, DynamicsConfig(device=device, budget_s=float(budget), **fixed_ada),
                                   tuple(fixed_ada))
    st.info(f"**Plan:** {ada_plan.describe()}", icon=":material/schedule:")
    holder = st.container()
    job = state.PageJob("AdaPruner mask")
    state.run_page_job(
        job, lambda progress, cancel: state.compute_adapruner_scores(dataset, float(ada_ratio), ada_plan.config, progress,
                                                                      cancel),
        holder,
    )

table = state.score_table(dataset)
cols = score_columns(table.frame, table.infos)
if cols:
    st.success(f"{len(cols)} scores for {len(table.frame):,} samples.")
    for note in table.notes:
        st.warning(note)
    fit = clip_fitness(table.frame)
    if fit is not None:
        if fit.fits:
            st.caption(fit.verdict)
        else:
            st.warning(f"{fit.verdict} The CLIP scores stay here and on Explore for inspection; the Overview's "
                       "findings do not use them.", icon=":material/report:")
    st.dataframe(
        [{"score": c, "suspicious when": table.infos[c].suspicious, "meaning": table.infos[c].description} for c in cols],
        hide_index=True,
        width="stretch",
    )
    st.dataframe(table.frame.head(200), hide_index=True, width="stretch")
else:
    st.info("No scores yet. The demo uses its built-in tiny CLIP; for your data give an open_clip model and weights.")
