"""Evaluate step: train a proxy on what each strategy keeps and compare held-out accuracy.

The plan (proxy, runs, ETA) is shown before anything trains; every run is cached by its content
(training split, exact subset, proxy settings, budget), so reopening the page or widening the grid
only trains what is new, and a stopped grid resumes where it was.
"""

from typing import Optional

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.colors import hex_to_rgb, qualitative

from pruning_core.data.datasets import Dataset, DatasetError
from pruning_core.dynamics.config import DynamicsConfig
from pruning_core.scoring.pipeline import ClipConfig
from pruning_core.selection import STRATEGIES, SelectionRecipe, available_strategies
from pruning_core.subset_training.evaluate import EvalConfig, GridPlan, evaluate_pruning, summarise
from pruning_core.subset_training.evaluate import (DEFAULT_KEEPS, DEFAULT_STRATEGIES, MARK_ALPHA, MIN_SEEDS_FOR_MARK,
                                                  TRAINING_MODES, consistency_column, marks_possible)
from pruning_core.subset_training.runs import BUDGETS
from ui import distill_panel, state

RESULTS = "evaluate_results"
COLOURS = qualitative.Plotly
PROXIES = {"resnet9": "ResNet-9 on the images (the dynamics proxy)",
           "linear": "linear probe on the CLIP embeddings (seconds on a CPU)"}

st.title("Evaluate")
st.caption("Which pruning choice keeps accuracy on *your* data? Each strategy's subset trains the same proxy; "
           "held-out accuracy is compared with training on everything and with random subsets, over several seeds.")
dataset = state.require_dataset()
state.report_interrupted_job()
state.executor_choice()
table = state.auto_scores(dataset)
# Strategies fitted per ratio (AdaPruner) and dynamic pruning train their own masks, so they need no score column here
fitted = [name for name, s in STRATEGIES.items() if s.fitted_per_ratio]
strategies = [s for s in available_strategies(table.frame, table.infos) if s not in fitted] + fitted + ["dynamic"]
defaults = EvalConfig()

c1, c2 = st.columns([3, 2])
chosen = c1.multiselect(
    "Strategies", strategies, default=[s for s in DEFAULT_STRATEGIES if s in strategies],
    format_func=lambda s: f"{s} — {STRATEGIES[s].description if s in STRATEGIES else TRAINING_MODES[s]}",
    help="Full data is always trained as the reference. 'dynamic' picks a new subset every epoch "
         f"(label consistency from {consistency_column(table.frame) or 'none: difficulty only'}).",
)
keeps = c2.multiselect("Keep ratios", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9], default=list(DEFAULT_KEEPS))
b1, b2, b3, b4 = st.columns([3, 3, 1, 2])
arch = b1.selectbox("Proxy", list(PROXIES), format_func=PROXIES.get)
budget_mode = b2.radio("Training budget", list(BUDGETS), format_func=lambda b: b.replace("_", " "),
                       horizontal=True, help="\n\n".join(f"**{k.replace('_', ' ')}**: {v}" for k, v in BUDGETS.items()))
seeds = b3.number_input("Seeds", min_value=1, max_value=10, value=defaults.seeds,
                        help="Every strategy runs once per seed (subset and training seed): the bands and the "
                             f"significance marks come from these runs (a mark needs at least {MIN_SEEDS_FOR_MARK}).")
time_budget = b4.number_input("Time budget (seconds)", min_value=5, max_value=24 * 3600,
                              value=int(defaults.time_budget_s), step=30,
                              help="Proxy settings you leave empty are planned so the whole grid fits this, "
                                   "from a throughput measured on this machine.")
with st.expander("Proxy settings (empty = planned)"):
    planned = "planned"
    p1, p2, p3, p4, p5 = st.columns(5)
    given = {
        "epochs": p1.number_input("Epochs", min_value=1, max_value=200, value=None, placeholder=planned,
                                  help="Of full-data training; the budget says what a subset gets."),
        "width": p2.number_input("ResNet-9 width", min_value=4, max_value=128, value=None, placeholder=planned,
                                 help=f"{DynamicsConfig().width} = the original network"),
        "image_size": p3.number_input("Resolution", min_value=8, max_value=224, value=None, placeholder=planned),
        "batch_size": p4.number_input("Batch", min_value=8, max_value=4096, value=None, placeholder=planned,
                                      help="Of full-data training; a small subset's batch shrinks so every epoch "
                                           "keeps a floor of optimiser steps."),
    }
    device = p5.selectbox("Device", ["auto", "cpu", "cuda"])
given = {name: int(value) for name, value in given.items() if value is not None}
demo_test = state.demo_assets().test_manifest if state.current_source().kind == "demo" else None
own_test = "test" in dataset.splits and dataset.split != "test" and st.checkbox(
    "Held-out set: this data's own test split", value=True)
test_path = "" if own_test else st.text_input(
    f"Held-out set: a test folder or manifest (empty = hold out a stratified {defaults.holdout:.0%} of this dataset)",
    value=str(demo_test) if demo_test else "",
).strip()
balance = st.checkbox("Class-balanced subsets", value=True)


config = EvalConfig(proxy=DynamicsConfig(arch=arch, device=device, folds=0, **given), budget=budget_mode,
                    seeds=int(seeds), time_budget_s=float(time_budget))
clip: Optional[ClipConfig] = state.clip_config() if config.is_probe else None
test: Optional[Dataset] = None
try:
    test = state.other_split("test") if own_test else state.heldout_dataset(test_path) if test_path else None
    plan: Optional[GridPlan] = state.plan_evaluation(dataset, test, config, chosen, keeps, tuple(given), clip)
except (DatasetError, FileNotFoundError, ValueError) as exc:
    st.error(str(exc))
    plan = None
if plan is not None:
    (st.info if plan.fits else st.warning)(f"**Plan:** {plan.describe()}", icon=":material/schedule:")
run = st.button("Train and compare", type="primary", disabled=plan is None or not chosen or not keeps)


def run_grid(plan: GridPlan, test: Optional[Dataset], finished: dict, progress, cancel) -> None:
    """The grid behind the button; ``finished`` counts saved runs, which is what a cancel keeps."""
    def tracked(p) -> None:
        if p.stage == "evaluate":
            finished.update(done=p.done, total=p.total)
        progress(p)

    results = evaluate_pruning(dataset, table, state.store(), strategies=chosen, keeps=keeps, config=plan.config,
                               test=test, clip=clip, balance=balance, progress=tracked, cancel=cancel)
    st.session_state[RESULTS] = {"results": results, "balance": balance}


if run and plan is not None:
    holder = st.container()
    finished: dict = {"done": 0, "total": 0}
    job = state.PageJob("The evaluation grid", kept=lambda: [f"{finished['done']} of {finished['total']} training runs"]
                        if finished["done"] else [])
    try:
        state.run_page_job(job, lambda progress, cancel: run_grid(plan, test, finished, progress, cancel), holder)
    except (DatasetError, FileNotFoundError, ValueError) as exc:
        st.error(str(exc))

with st.expander("Prune or distil? (image–caption data)", expanded=dataset.has_captions):
    distill_panel.render(dataset, table, test)

saved = st.session_state.get(RESULTS)
if saved is None:
    st.info("Choose strategies and ratios, check the plan, then **Train and compare**.")
    st.stop()

results: pd.DataFrame = saved["results"]
summary = summarise(results)


def accuracy_figure(summary: pd.DataFrame) -> go.Figure:
    """Mean accuracy per strategy with a ±1 std band; ★ beats random, ◆ beats full data (Welch t-test)."""
    fig = go.Figure()
    full = summary[summary["strategy"] == "full"]
    if not full.empty:
        mean, std = float(full["accuracy"].iloc[0]), float(full["accuracy_std"].iloc[0])
        fig.add_hrect(y0=mean - std, y1=mean + std, line_width=0, fillcolor="grey", opacity=0.15)
        fig.add_hline(y=mean, line_dash="dash", annotation_text=f"full data {mean:.1%}",
                      annotation_position="bottom left")
    for i, (strategy, rows) in enumerate(summary[summary["strategy"] != "full"].groupby("strategy", sort=False)):
        colour = COLOURS[i % len(COLOURS)]
        line = {"color": colour}
        fig.add_trace(go.Scatter(x=rows["keep"], y=rows["accuracy"] + rows["accuracy_std"], mode="lines",
                                 line={"width": 0}, showlegend=False, hoverinfo="skip", legendgroup=strategy))
        fig.add_trace(go.Scatter(x=rows["keep"], y=rows["accuracy"] - rows["accuracy_std"], mode="lines",
                                 line={"width": 0}, fill="tonexty", showlegend=False, hoverinfo="skip",
                                 legendgroup=strategy, fillcolor="rgba({}, {}, {}, 0.18)".format(*hex_to_rgb(colour))))
        fig.add_trace(go.Scatter(x=rows["keep"], y=rows["accuracy"], mode="lines+markers", name=strategy,
                                 legendgroup=strategy, line=line))
        for column, symbol, what in (("beats_random", "star", "beats random"), ("beats_full", "diamond", "beats full")):
            marked = rows[rows[column]]
            if not marked.empty:
                fig.add_trace(go.Scatter(x=marked["keep"], y=marked["accuracy"], mode="markers", showlegend=False,
                                         legendgroup=strategy, hovertext=f"{strategy} {what}", hoverinfo="text",
                                         marker={"symbol": symbol, "size": 14, "line": {"width": 1}, **line}))
    fig.update_layout(xaxis_title="kept fraction", yaxis_title="held-out accuracy", yaxis_tickformat=".0%",
                      xaxis_tickformat=".0%", height=440, margin={"t": 30})
    return fig


st.plotly_chart(accuracy_figure(summary), width="stretch")
seeds_shown = int(summary["runs"].max())
marks = (f"★ beats random at that ratio, ◆ beats full data: one-sided Welch t-test, p < {MARK_ALPHA:g}, "
         f"at least {MIN_SEEDS_FOR_MARK} seeds a side." if marks_possible(summary) else
         f"Not enough seeds to mark a difference: a mark needs at least {MIN_SEEDS_FOR_MARK} seeds a side.")
st.caption(f"Proxy: {results.attrs.get('proxy', 'unknown')}; training budget: "
           f"{results.attrs.get('budget', '?').replace('_', ' ')}. Lines: mean over {seeds_shown} "
           f"seed{'s' if seeds_shown > 1 else ''}, bands ±1 std. {marks} "
           f"{len(results)} runs, {int(results['cached'].sum())} from the cache.")
st.dataframe(summary, hide_index=True, width="stretch",
             column_config={"accuracy": st.column_config.NumberColumn(format="%.4f"),
                            "accuracy_std": st.column_config.NumberColumn(format="%.4f"),
                            "accuracy_sem": st.column_config.NumberColumn(format="%.4f"),
                            "epochs": st.column_config.NumberColumn(format="%.1f"),
                            "train_seconds": st.column_config.NumberColumn(format="%.1f")})

usable = available_strategies(table.frame, table.infos)
exportable = summary[summary["strategy"].isin(usable)].sort_values("accuracy", ascending=False)
for name in sorted(set(summary["strategy"]).intersection(fitted) - set(usable)):
    st.caption(f"To use {name}'s subset, learn its scores ({', '.join(STRATEGIES[name].columns)}) for the ratio "
               "you want on the **Score** page.")
if exportable.empty:
    st.stop()
options = list(zip(exportable["strategy"], exportable["keep"]))
pick = st.selectbox("Configuration to use", options, format_func=lambda o: (
    f"{o[0]} keeping {o[1]:.0%} — accuracy "
    f"{float(exportable[(exportable['strategy'] == o[0]) & np.isclose(exportable['keep'], o[1])]['accuracy'].iloc[0]):.2%}"))
if st.button("Use this configuration on Prune and Export", icon=":material/send:"):
    state.set_recipe(SelectionRecipe(keep=float(pick[1]), strategy=pick[0], balance=saved["balance"]))
    st.success(f"Recipe set: {pick[0]}, keep {pick[1]:.0%}. Open **Export** to download it, or **Prune** to adjust it.")
