"""Streamlit glue for the learning review queue (pruning_core.audit.queue): one queue per score table
and detector, the decisions it learns from, and the status line the Review page shows."""

from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd
import streamlit as st

from pruning_core.audit.queue import (LearningQueue, QueueConfig, QueuePlan, append_refit_record, live_decisions,
                                      pick_of, queue_features, refit_log_path, refit_record)
from pruning_core.audit.review import DecisionStore
from pruning_core.data.datasets import Dataset
from pruning_core.embeddings.clip_model import WeightsUnavailable
from pruning_core.scoring.score_table import ScoreTable
from ui import state

CONFIG = QueueConfig()
_QUEUE = "_learning_queue"
PICK_NOTES = {"detector": "detector's order (cold start)", "model": "learned order", "random": "🎲 random pick"}


def _embeddings(dataset: Dataset, frame: pd.DataFrame) -> Optional[np.ndarray]:
    """The image embeddings behind the k-NN scores, when this session can read them (None otherwise)."""
    from ui.similar import clip_image_embeddings

    try:
        return clip_image_embeddings(dataset, frame)
    except (WeightsUnavailable, FileNotFoundError, OSError):
        return None


def learning_queue(dataset: Dataset, table: ScoreTable, detector_order: np.ndarray, detector: str) -> LearningQueue:
    """One :class:`LearningQueue` per score table and detector for this session (features built once)."""
    key = (id(table.frame), tuple(table.infos), detector)
    kept = st.session_state.get(_QUEUE)
    if kept is None or kept[0] != key:
        features = queue_features(table.frame, table.infos, ranks=state.score_ranks(table),
                                  embeddings=_embeddings(dataset, table.frame), config=CONFIG)
        kept = st.session_state[_QUEUE] = (key, LearningQueue(features, detector_order, CONFIG))
    return kept[1]


def queue_decisions(store: DecisionStore, fingerprint: str, frame: pd.DataFrame) -> tuple[np.ndarray, list, list, int]:
    """(table positions, actions, picks, last decision id) of the current decisions, oldest first."""
    live = live_decisions(store.history(fingerprint))
    positions = pd.Index(frame["path"].astype(str)).get_indexer(live["path"].astype(str))
    live = live[positions >= 0]
    return (positions[positions >= 0], live["action"].tolist(), [pick_of(s) for s in live["source"]],
            int(live["id"].max()) if len(live) else 0)


def record_refit(store: DecisionStore, fingerprint: str, plan: QueuePlan, last_decision_id: int) -> None:
    """Log the model in force once per refit, beside the decisions (``reviews.queue.jsonl``)."""
    if plan.fitted_on > 0:
        append_refit_record(refit_log_path(store.path), refit_record(plan, fingerprint, CONFIG, last_decision_id))


def show_status(plan: QueuePlan) -> None:
    """The estimate of the next picks with its interval, how far the last refit moved the order, what the model uses."""
    c1, c2, c3 = st.columns([3, 3, 3])
    if plan.model is None:
        c1.metric(f"Precision of the next {CONFIG.estimate_window}", "—",
                  help=f"Shown after the first refit, at {CONFIG.refit_every} verdicts.")
        c2.caption(f"Cold start: the detector's order until {CONFIG.refit_every} verdicts "
                   f"({plan.verdicts} so far, a raw count).")
    else:
        est = plan.estimate
        if est is None:
            c1.metric(f"Precision of the next {CONFIG.estimate_window}", "—",
                      help="Needs verdicts on the learned order's own picks.")
        else:
            c1.metric(f"Estimated precision of the next {est.flagged}", f"{est.precision:.0%}",
                      help=f"{est.level:.0%} interval for the share of problems among the next {est.flagged} "
                           f"learned picks: {est.source}.")
            c1.caption(f"{est.level:.0%} interval {est.low:.0%}–{est.high:.0%} · "
                       f"from {est.checked} verdicts on the model's picks")
        moved = plan.moved
        c2.metric("Order moved at the last refit", f"{moved.new_in_next} of the next {moved.window} new",
                  help="Kendall's tau between the order before and after the last refit, over the undecided "
                       f"candidates: {moved.kendall_tau:.2f}")
        c2.caption(f"Refit on {plan.fitted_on} verdicts · next refit in {plan.next_refit_in} · "
                   f"Kendall τ {moved.kendall_tau:.2f}")
    hits, checked = plan.model_picks_confirmed
    pool = plan.pool_estimate
    pool_text = (f"{pool.precision:.0%} of them were problems ({pool.level:.0%} interval {pool.low:.0%}–"
                 f"{pool.high:.0%}, {pool.source}): the undecided pool's rate as sampled so far"
                 if pool is not None else "none decided yet")
    c3.caption(f"Model picks confirmed: {hits} of {checked} (raw count) · "
               f"every {CONFIG.random_every}th pick is random (🎲): {pool_text}")
    with st.expander("What the queue learns from"):
        st.caption(f"{CONFIG.model} model on {len(plan.inputs)} inputs: " + ", ".join(plan.inputs[:60])
                   + (" …" if len(plan.inputs) > 60 else "")
                   + ". Verdicts: remove / relabel = problem, keep = fine, skip = ignored. Each refit is "
                     "logged beside the decisions in reviews.queue.jsonl; each decision's source says which "
                     "pick it was (queue:detector / queue:model / queue:random).")
