"""The Evaluate page's "prune or distil" section: MDW's distilled pairs against pruning at the same size.

Glue only: widgets, the cancellable job and the drawing; the work is
:func:`pruning_core.distill.compare.prune_or_distil` (every distillation and training run cached).
"""

from __future__ import annotations

from typing import Optional

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from pruning_core.data.datasets import Dataset
from pruning_core.distill.compare import (ABLATION, METRICS, CompareConfig, PruneOrDistil, distilled_settings,
                                          paired_margins, prune_or_distil, summarise)
from pruning_core.distill.export import pairs_table, to_uint8
from pruning_core.distill.student import EVAL_MOMENTUM
from pruning_core.scoring.score_table import ScoreTable
from ui import state

RESULT = "distill_result"
GRID_SHOWN = 30


def recall_figure(summary: pd.DataFrame, metric: str) -> go.Figure:
    """Recall against the number of training pairs, one line per option (error bars: ±1 standard error)."""
    fig = go.Figure()
    options = list(dict.fromkeys(summary["option"]))
    for option, rows in summary.groupby("option", sort=False):
        rows = rows.sort_values("size")
        # Options at one size sit side by side (a few % apart on the log axis) so no error bar hides another.
        nudge = 1.04 ** (options.index(option) - (len(options) - 1) / 2)
        fig.add_trace(go.Scatter(x=rows["size"] * nudge, y=rows[metric], name=option, mode="lines+markers",
                                 customdata=rows["size"], hovertemplate="%{customdata:,} pairs: %{y:.1%}",
                                 error_y={"type": "data", "array": rows[f"{metric} se"].fillna(0.0)}))
    sizes = sorted(summary["size"].unique())  # ticks at the sizes trained on, not at a log axis's 2 … 9
    fig.update_layout(xaxis_title="training pairs", xaxis_type="log", yaxis_title=f"held-out {metric} recall",
                      xaxis={"tickvals": sizes, "ticktext": [f"{s:,}" for s in sizes]},
                      yaxis_tickformat=".0%", height=400, margin={"t": 30})
    return fig


def distilled_grid(result: PruneOrDistil, size: int) -> None:
    """The distilled images with their texts' nearest real captions (and how sure each pairing is)."""
    chosen = result.distilled[size]
    table = pairs_table(chosen, result.inputs)
    images = to_uint8(chosen.state.images)
    columns = st.columns(6)
    for i in range(min(GRID_SHOWN, len(images))):
        row = table.iloc[i]
        columns[i % 6].image(images[i], width="stretch",
                             caption=f"{row['nearest_caption_1']} (cos {row['nearest_cosine_1']:.2f}; "
                                     f"pairs with text {row['best_text']} at {row['confidence']:.0%})")
    st.caption(f"{min(GRID_SHOWN, len(images))} of {len(images)} distilled pairs ({distilled_settings(chosen)}). "
               f"Export the set with its manifest: `prunescope distill DATA --pairs {size} --budget "
               f"{chosen.meta['params']['budget_s']:g} --out DIR` (with the same CLIP it reads this set from the cache).")


VERDICTS = {"above": "beats {base} (paired t-test, p < 0.05)", "below": "loses to {base} (paired t-test, p < 0.05)",
            "within": "neither beats nor loses to {base} (paired t-test at 5 %)"}


def verdicts(result: PruneOrDistil, metric: str) -> list[str]:
    """One line per (size, baseline): the distilled set minus it, paired by seed, with its spread and the verdict."""
    lines = []
    margins = paired_margins(result.results, metric, "distilled", baselines=("random", "cleanest", ABLATION))
    for m in margins.itertuples():
        spread = f"± {m.se:.3f} (paired standard error" if m.seeds > 1 else "(no spread"
        lines.append(f"K = {m.size}, {metric}: distilled − {m.baseline} = {m.difference:+.3f} {spread}, "
                     f"{m.seeds} seeds): the distilled set {VERDICTS[m.verdict].format(base=m.baseline)}.")
    return lines


def settings_caption(result: PruneOrDistil, runs: int) -> str:
    """Which settings made every figure above: the students' training and each distilled set's run."""
    config = result.config
    sets = [distilled_settings(d) for d in (*result.distilled.values(), *result.ablations.values())]
    return (f"Each point: mean over {runs} seeds (bars ±1 standard error) of a fresh tiny CLIP trained for "
            f"{config.steps} SGD steps (batch ≤ {config.batch_size}, momentum {EVAL_MOMENTUM:g}; real pairs at lr "
            f"{config.real_lr:g}, a distilled set at its own step × {1 - EVAL_MOMENTUM:g}, learned or chosen on "
            "held-out pairs; fixed here), tested on the held-out set; "
            "'all' trains on every noisy pair. Distilled sets (other MDW settings at their defaults): "
            + "; ".join(sets) + ".")


def render(dataset: Dataset, table: ScoreTable, test: Optional[Dataset]) -> None:
    """The whole section; ``test`` is the page's clean held-out set (retrieval needs its captions)."""
    st.subheader("Prune or distil?")
    st.caption("MDW (Dang et al. 2025) distils noisy image–caption pairs into K synthetic ones. A fresh tiny CLIP "
               "trained on them is compared with K random pairs, the K pairs PruneScope ranks cleanest "
               "(caption alignment + diversity) and all pairs, by image↔text retrieval on the held-out set.")
    if not dataset.has_captions:
        st.info("This dataset has no captions: distillation needs image–caption pairs.")
        return
    if test is None or not test.has_captions:
        st.info("Give a held-out set with captions above (the demo's is filled in) to compare by retrieval.")
        return
    c1, c2, c3, c4 = st.columns([3, 2, 1, 2])
    sizes = c1.multiselect("Pairs (K)", [50, 100, 200, 400], default=[100])
    budget = c2.number_input("Seconds per distillation", min_value=60, max_value=24 * 3600, value=600, step=60,
                             help="Experts, the validation students and matching together; the run stops at this "
                                  "budget (planned first).")
    seeds = c3.number_input("Seeds per option", min_value=2, max_value=10, value=len(CompareConfig().seeds), key="distil_seeds")
    ablation = c4.checkbox("Also without correspondence learning", value=False,
                           help="MDW's ablation: a fixed diagonal pairing (doubles the distillation time)")
    if st.button("Distil and compare", disabled=not sizes):
        holder = st.container()
        job = state.PageJob("Distillation", kept=lambda: ["finished expert runs, the start's validation, a matching "
                                                          "checkpoint and training runs (rerun to resume)"])
        config = CompareConfig(seeds=tuple(range(int(seeds))))

        def compute(progress, cancel) -> None:
            st.session_state[RESULT] = prune_or_distil(
                dataset, test, state.clip_config(), table, state.store(), sizes=sizes, budget_s=float(budget),
                ablation=ablation, config=config, progress=progress, cancel=cancel)

        try:
            state.run_page_job(job, compute, holder)
        except ValueError as exc:
            st.error(str(exc))
    result: Optional[PruneOrDistil] = st.session_state.get(RESULT)
    if result is None:
        return
    summary = summarise(result.results)
    metric = st.radio("Recall", list(METRICS), horizontal=True, key="distil_metric")
    st.plotly_chart(recall_figure(summary, metric), width="stretch")
    st.caption(settings_caption(result, int(summary["runs"].max())))
    for line in verdicts(result, metric):
        st.markdown(f"- {line}")
    st.dataframe(summary, hide_index=True, width="stretch")
    size = st.selectbox("Distilled set to view", sorted(result.distilled), key="distil_view")
    distilled_grid(result, int(size))
