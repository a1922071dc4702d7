"""The learning review queue (pruning_core.audit.queue): cold start, re-ranking, random picks, the estimate."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from pruning_core.audit.queue import (LearningQueue, QueueConfig, append_refit_record, live_decisions, next_precision,
                                      pick_of, queue_features, refit_log_path, refit_record)
from pruning_core.audit.review import DecisionStore
from pruning_core.scoring.score_info import ScoreInfo

N = 400
CLASSES = ("ant", "bee", "cow", "dog")


def noisy_table(seed: int = 0) -> tuple[pd.DataFrame, dict, np.ndarray]:
    """Problems are exactly the ``bee`` rows with a high loss; the detector (loss) ranks every class alike."""
    rng = np.random.default_rng(seed)
    label = np.array(CLASSES)[np.arange(N) % 4]
    loss = rng.random(N)
    frame = pd.DataFrame({"path": [f"img_{i:03d}.png" for i in range(N)], "label": label,
                          "test.loss": loss, "test.noise": rng.random(N)})
    infos = {"test.loss": ScoreInfo("test.loss", "proxy loss", "high"),
             "test.noise": ScoreInfo("test.noise", "an uninformative score", "high")}
    problem = (label == "bee") & (loss > 0.5)
    return frame, infos, problem


def detector_order(frame: pd.DataFrame) -> np.ndarray:
    return np.argsort(-frame["test.loss"].to_numpy(), kind="stable")


def review(queue: LearningQueue, problem: np.ndarray, verdicts: int, candidates=None):
    """A reviewer who answers from the truth, ``verdicts`` picks in the queue's order."""
    rows: list[int] = []
    picks: list[str] = []
    while len(rows) < verdicts:
        plan = queue.plan(rows, np.where(problem[rows], "remove", "keep"), picks, candidates=candidates,
                          length=min(queue.config.refit_every, verdicts - len(rows)))
        rows += plan.rows.tolist()
        picks += plan.picks.tolist()
    return rows, picks


def test_cold_start_is_the_detectors_order():
    frame, infos, problem = noisy_table()
    order = detector_order(frame)
    queue = LearningQueue(queue_features(frame, infos), order, QueueConfig(random_share=0.0))
    plan = queue.plan([], [], [], length=N)
    assert plan.model is None and plan.estimate is None
    assert (plan.picks == "detector").all() and plan.rows.tolist() == order.tolist()
    decided = order[:7].tolist()  # 7 verdicts: still below the first refit
    plan = queue.plan(decided, ["keep"] * 7, ["detector"] * 7, length=50)
    assert plan.model is None and plan.rows.tolist() == order[7:57].tolist()

    # with random picks, every other pick is still the detector's next one
    queue = LearningQueue(queue_features(frame, infos), order, QueueConfig())
    plan = queue.plan([], [], [], length=50)
    ranked = plan.rows[plan.picks == "detector"]
    assert ranked.tolist() == [r for r in order if r not in set(plan.rows[plan.picks == "random"])][:len(ranked)]


def test_refit_moves_a_sample_whose_features_match_the_verdicts_up():
    frame, infos, problem = noisy_table()
    order = detector_order(frame)
    config = QueueConfig(random_share=0.0)
    queue = LearningQueue(queue_features(frame, infos), order, config)
    # a bee with a middling loss: deep in the detector's order, yet like every problem the reviewer confirms
    target = int(next(r for r in order[150:] if problem[r]))
    rows, picks = review(queue, problem, 40)
    assert target not in rows
    plan = queue.plan(rows, np.where(problem[rows], "remove", "keep"), picks, length=N)
    before = int(np.flatnonzero(order[~np.isin(order, rows)] == target)[0])
    after = int(np.flatnonzero(plan.rows == target)[0])
    assert plan.fitted_on == 40 and (plan.picks == "model").all()
    assert before >= 100 and after < 40, (before, after)
    assert plan.moved is not None and plan.moved.new_in_next > 0
    # precision of the next 50: the learned order beats the detector's
    assert problem[plan.rows[:50]].mean() > problem[order[~np.isin(order, rows)][:50]].mean() + 0.2


def test_random_picks_are_marked_and_left_out_of_the_models_precision_claim():
    frame, infos, problem = noisy_table()
    order = detector_order(frame)
    config = QueueConfig(random_share=0.1, refit_every=20)
    queue = LearningQueue(queue_features(frame, infos), order, config)
    rows, picks = review(queue, problem, 80)
    picks = np.asarray(picks)
    assert (picks[np.arange(80) % 10 == 9] == "random").all() and (picks[np.arange(80) % 10 != 9] != "random").all()
    actions = np.where(problem[rows], "remove", "keep")
    plan = queue.plan(rows, actions, picks, length=60)
    assert (plan.picks[(80 + np.arange(60)) % 10 == 9] == "random").all()
    own = picks == "model"
    assert plan.model_picks_confirmed == (int(problem[np.asarray(rows)[own]].sum()), int(own.sum()))
    assert plan.estimate is not None and plan.estimate.checked == min(own.sum(), config.recent_window)
    assert f"spans the last {own.sum()} picks" in plan.estimate.source  # every model pick, none of the random ones

    # flip every random pick's verdict: the model's claim (estimate, confirmed count) must not move
    flipped = actions.copy()
    flipped[picks == "random"] = np.where(actions[picks == "random"] == "remove", "keep", "remove")
    queue_flipped = LearningQueue(queue.features, order, config)
    evidence, predicted, observed = queue_flipped.prequential(np.asarray(rows), np.where(flipped == "remove", 1, 0),
                                                               picks, config.evidence_window)
    assert not np.isin(evidence, np.asarray(rows)[picks == "random"]).any()
    flipped_plan = queue_flipped.plan(rows, flipped, picks, length=60)
    assert flipped_plan.model_picks_confirmed == plan.model_picks_confirmed
    assert flipped_plan.estimate.checked == plan.estimate.checked
    assert flipped_plan.estimate.source.startswith(plan.estimate.source.split(",")[0])
    # ... while the pool's rate (the random picks' own claim) does
    assert flipped_plan.pool_estimate.precision != plan.pool_estimate.precision


def test_next_precision_is_the_recent_rate_times_the_predicted_drop():
    est = next_precision(np.full(50, 0.4), np.full(100, 0.8), np.r_[np.ones(60), np.zeros(40)])
    assert est.precision == pytest.approx((60.5 / 101) * 0.5)
    assert est.low < est.precision < est.high and est.checked == 100
    wide = next_precision(np.full(50, 0.4), np.full(10, 0.8), np.r_[np.ones(6), np.zeros(4)])
    assert wide.high - wide.low > est.high - est.low  # fewer verdicts: a wider interval


def test_decisions_record_their_pick_and_refits_are_logged(tmp_path):
    store = DecisionStore(tmp_path / "reviews.sqlite")
    store.decide("fp", "a.png", "keep", source="queue:model")
    store.decide("fp", "b.png", "remove", source="queue:random")
    store.decide("fp", "c.png", "remove")
    store.undo("fp")
    live = live_decisions(store.history("fp"))
    assert live["path"].tolist() == ["a.png", "b.png"]
    assert [pick_of(s) for s in live["source"]] == ["model", "random"] and pick_of("review") == "other"

    frame, infos, problem = noisy_table()
    queue = LearningQueue(queue_features(frame, infos), detector_order(frame), QueueConfig(random_share=0.0))
    rows, picks = review(queue, problem, 20)
    plan = queue.plan(rows, np.where(problem[rows], "remove", "keep"), picks)
    log = refit_log_path(store.path)
    record = refit_record(plan, "fp", queue.config, 20)
    assert append_refit_record(log, record) and not append_refit_record(log, record)  # once per refit
    line = json.loads(log.read_text().splitlines()[0])
    assert line["fitted_on_verdicts"] == 20 and "rank:test.loss" in line["inputs"] and line["model"]["model"] == "logistic"


def test_features_carry_labels_suggestions_pairs_and_embedding_components():
    frame, infos, _ = noisy_table()
    frame["clip.suggested_label"] = np.where(np.arange(N) % 7 == 0, "cow", frame["label"])
    features = queue_features(frame, infos, embeddings=np.random.default_rng(0).normal(size=(N, 16)),
                              config=replace(QueueConfig(), embedding_components=3))
    names = list(features.names)
    assert names[:2] == ["rank:test.loss", "rank:test.noise"]
    assert {"label=bee", "clip.suggested_label=cow", "clip.suggested_label:disagrees",
            "clip.suggested_label:pair=ant→cow", "embedding:pc3"} <= set(names)
    pair = features.values[:, names.index("clip.suggested_label:pair=ant→cow")]
    assert pair.sum() == ((frame["label"] == "ant") & (np.arange(N) % 7 == 0)).sum()
    top = features.values[np.argmax(frame["test.loss"]), names.index("rank:test.loss")]
    assert top == 1.0  # rank 1 = most suspicious


def test_next_precision_follows_a_drift_in_the_latest_picks_and_spans_both_windows():
    """The top of the order used up: the last 25 picks hit far less often than the 75 before them."""
    predicted = np.full(100, 0.8)
    observed = np.r_[np.ones(75), np.r_[np.ones(5), np.zeros(20)]]
    whole = next_precision(np.full(50, 0.8), predicted, observed)
    drift = next_precision(np.full(50, 0.8), predicted, observed, recent=25)
    assert drift.precision == pytest.approx(5.5 / 26) and whole.precision == pytest.approx(80.5 / 101)
    assert drift.low < drift.precision < whole.low <= whole.high <= drift.high  # the span of both windows
    assert drift.checked == 25 and "spans the last 100 picks" in drift.source
    assert next_precision(np.full(50, 0.8), predicted, observed, recent=100) == whole  # one window: unchanged
