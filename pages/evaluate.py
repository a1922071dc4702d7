"""Evaluate step: train the proxy on what each strategy keeps and compare held-out accuracy.

Every run is cached by its content (training split, exact subset, proxy settings), so reopening
the page or widening the grid only trains what is new, and a stopped grid resumes where it was.
"""

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from pruning_core.datasets import DatasetError, load_dataset
from pruning_core.pipeline import DynamicsConfig
from pruning_core.selection import STRATEGIES, SelectionRecipe, available_strategies
from pruning_core.subset_training import EvalConfig, evaluate_pruning, summarise
from pruning_core.subset_training.evaluate import TRAINING_MODES, consistency_column
from ui import state

RESULTS = "evaluate_results"
DEFAULT_KEEPS = [0.3, 0.5, 0.7, 0.9]

st.title("Evaluate")
st.caption("Which pruning choice keeps accuracy on *your* data? Each strategy's subset trains the same proxy "
           "for the same epochs; held-out accuracy is compared with training on everything and with random subsets.")
dataset = state.require_dataset()
state.report_interrupted_job()
state.executor_choice()
table = state.auto_scores(dataset)
# AdaPruner and dynamic pruning train their own masks per ratio, so they need no score column here
strategies = [s for s in available_strategies(table.frame, table.infos) if s != "adapruner"] + ["adapruner", "dynamic"]

with st.form("evaluate"):
    c1, c2 = st.columns([3, 2])
    chosen = c1.multiselect(
        "Strategies", strategies, default=[s for s in ("easiest", "ccs", "random") if s in strategies],
        format_func=lambda s: f"{s} — {STRATEGIES.get(s) or TRAINING_MODES[s]}",
        help="Full data is always trained as the reference. 'dynamic' picks a new subset every epoch "
             f"(label consistency from {consistency_column(table.frame) or 'none: difficulty only'}).",
    )
    keeps = c2.multiselect("Keep ratios", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9], default=DEFAULT_KEEPS)
    d1, d2, d3, d4, d5 = st.columns(5)
    epochs = d1.number_input("Epochs", min_value=1, max_value=200, value=16)
    width = d2.number_input("ResNet-9 width", min_value=4, max_value=128, value=64, help="64 = the original network")
    size = d3.number_input("Resolution", min_value=8, max_value=224, value=32)
    seeds = d4.number_input("Random seeds", min_value=1, max_value=10, value=3)
    device = d5.selectbox("Device", ["auto", "cpu", "cuda"])
    demo_test = state.demo_assets().test_manifest if state.current_source().kind == "demo" else None
    test_path = st.text_input(
        "Held-out set: a test folder or manifest (empty = hold out a stratified 20% of this dataset)",
        value=str(demo_test) if demo_test else "",
    )
    balance = st.checkbox("Class-balanced subsets", value=True)
    run = st.form_submit_button("Train and compare", type="primary", disabled=not strategies)


def run_grid(config: EvalConfig, test_path: str, finished: dict, progress, cancel) -> None:
    """The grid behind the form; ``finished`` counts saved runs, which is what a cancel keeps."""
    def tracked(p) -> None:
        if p.stage == "evaluate":
            finished.update(done=p.done, total=p.total)
        progress(p)

    test = load_dataset(test_path) if test_path else None
    results = evaluate_pruning(dataset, table, state.store(), strategies=chosen, keeps=keeps, config=config,
                               test=test, balance=balance, progress=tracked, cancel=cancel)
    st.session_state[RESULTS] = {"results": results, "balance": balance}


if run:
    config = EvalConfig(proxy=DynamicsConfig(epochs=int(epochs), width=int(width), image_size=int(size), folds=0,
                                             device=device), random_seeds=int(seeds))
    holder = st.container()
    finished: dict = {"done": 0, "total": 0}
    job = state.PageJob("The evaluation grid", kept=lambda: [f"{finished['done']} of {finished['total']} training runs"]
                        if finished["done"] else [])
    try:
        state.run_page_job(job, lambda progress, cancel: run_grid(config, test_path.strip(), finished, progress,
                                                                  cancel), holder)
    except (DatasetError, FileNotFoundError, ValueError) as exc:
        st.error(str(exc))

saved = st.session_state.get(RESULTS)
if saved is None:
    st.info("Choose strategies and ratios, then **Train and compare**. On a GPU a 16-epoch CIFAR-size run takes "
            "seconds; on a CPU keep the grid small (or lower width and epochs).")
    st.stop()

results: pd.DataFrame = saved["results"]
summary = summarise(results)
full = summary[summary["strategy"] == "full"]
fig = go.Figure()
for strategy, rows in summary[summary["strategy"] != "full"].groupby("strategy"):
    fig.add_trace(go.Scatter(
        x=rows["keep"], y=rows["accuracy"], mode="lines+markers", name=strategy,
        error_y={"type": "data", "array": rows["accuracy_std"], "visible": bool((rows["runs"] > 1).any())},
    ))
if not full.empty:
    fig.add_hline(y=float(full["accuracy"].iloc[0]), line_dash="dash",
                  annotation_text=f"full data {float(full['accuracy'].iloc[0]):.1%}",
                  annotation_position="bottom left")
fig.update_layout(xaxis_title="kept fraction", yaxis_title="held-out accuracy", yaxis_tickformat=".1%",
                  xaxis_tickformat=".0%", height=420, margin={"t": 30})
st.plotly_chart(fig, width="stretch")
st.caption(f"{len(results)} runs, {int(results['cached'].sum())} from the cache. Random: mean ± std over seeds.")
st.dataframe(summary, hide_index=True, width="stretch",
             column_config={"accuracy": st.column_config.NumberColumn(format="%.4f"),
                            "accuracy_std": st.column_config.NumberColumn(format="%.4f"),
                            "train_seconds": st.column_config.NumberColumn(format="%.1f")})

usable = available_strategies(table.frame, table.infos)
exportable = summary[summary["strategy"].isin(usable)].sort_values("accuracy", ascending=False)
if "adapruner" in set(summary["strategy"]) - set(usable):
    st.caption("To use AdaPruner's subset, learn its mask for the ratio you want on the **Score** page.")
if exportable.empty:
    st.stop()
options = list(zip(exportable["strategy"], exportable["keep"]))
pick = st.selectbox("Configuration to use", options, format_func=lambda o: (
    f"{o[0]} keeping {o[1]:.0%} — accuracy "
    f"{float(exportable[(exportable['strategy'] == o[0]) & np.isclose(exportable['keep'], o[1])]['accuracy'].iloc[0]):.2%}"))
if st.button("Use this configuration on Prune and Export", icon=":material/send:"):
    st.session_state[state.RECIPE] = SelectionRecipe(keep=float(pick[1]), strategy=pick[0], balance=saved["balance"])
    st.success(f"Recipe set: {pick[0]}, keep {pick[1]:.0%}. Open **Export** to download it, or **Prune** to adjust it.")
