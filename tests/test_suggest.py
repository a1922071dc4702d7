"""Suggested labels (calibrated, combined), the fix strategy, bulk accept with batch undo, and relabels in manifests."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from pruning_core.audit.review import DecisionStore, default_review_path
from pruning_core.audit.suggest import (PROBABILITY_SOURCES, SUGGESTED_LABEL, SUGGESTION_CONFIDENCE,
                                        ChannelCalibratedExperts, accept_suggestions, confident_relabels,
                                        pending_suggestions, suggest_labels, with_suggestions)
from pruning_core.cli import main
from pruning_core.export.manifest import Manifest
from pruning_core.scoring.score_info import ScoreInfo
from pruning_core.scoring.score_table import ScoreTable
from pruning_core.selection import SelectionRecipe, run_recipe, strategy_relabels
from pruning_core.subset_training.evaluate import relabelled_ids
from review_fixtures import make_scored_dataset
from ui import state

REPO = Path(__file__).resolve().parent.parent
PROXY, CLIP = PROBABILITY_SOURCES["out-of-sample probabilities"], PROBABILITY_SOURCES["CLIP zero-shot"]


def noisy_problem(n: int = 3000, classes: int = 4, noise: float = 0.3, shift: float = 3.0, seed: int = 0):
    """True labels, noisy given labels and a model whose Bayes posterior is softmax(shift * logits)."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, classes, n)
    given = true.copy()
    flip = rng.random(n) < noise
    given[flip] = (true[flip] + rng.integers(1, classes, flip.sum())) % classes
    logits = rng.normal(0.0, 1.0, (n, classes))
    logits[np.arange(n), true] += shift
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return true, given, probs


def with_probs(frame: pd.DataFrame, prefix: str, probs: np.ndarray, classes) -> pd.DataFrame:
    return frame.assign(**{f"{prefix}{c}": probs[:, i] for i, c in enumerate(classes)})


def test_channel_calibration_recovers_the_true_temperature_despite_label_noise():
    # With these logits the posterior of the TRUE label is softmax(3 * logits) of the probs' logs (beta = 3).
    # Fitting to the 30 %-noisy given labels directly would flatten it; through the noise channel it must not.
    true, given, probs = noisy_problem()
    experts = ChannelCalibratedExperts().fit([probs], given)
    assert 2.5 < experts.betas_[0] < 3.5, experts.betas_
    q = experts.predict_proba([probs])
    sure = q.max(axis=1) >= 0.9
    assert sure.sum() > 1000 and (q.argmax(axis=1)[sure] == true[sure]).mean() >= 0.9


def test_uninformative_probabilities_fall_back_to_a_conservative_direct_fit():
    _, given, _ = noisy_problem(n=2000)
    useless = np.random.default_rng(3).dirichlet(np.ones(4), size=2000)  # no relation to any label
    experts = ChannelCalibratedExperts().fit([useless], given)
    assert not experts.through_channel_
    assert (experts.predict_proba([useless]).max(axis=1) < 0.9).all()


def test_suggestions_are_probabilities_and_the_combination_keeps_what_sources_agree_on():
    classes = ["a", "b", "c", "d"]
    true, given, proxy = noisy_problem(n=800, seed=1)
    _, _, clip = noisy_problem(n=800, seed=2, shift=1.5)
    frame = pd.DataFrame({"path": [f"x{i}" for i in range(800)], "label": np.asarray(classes)[given]})
    frame = with_probs(with_probs(frame, PROXY, proxy, classes), CLIP, clip, classes)
    out, settings = suggest_labels(frame)
    assert settings["sources"] == ["out-of-sample probabilities", "CLIP zero-shot"] and len(settings["betas"]) == 2
    confidence = out[SUGGESTION_CONFIDENCE].to_numpy()
    assert np.all((confidence >= 1 / len(classes) - 1e-9) & (confidence <= 1.0))
    agree = proxy.argmax(axis=1) == clip.argmax(axis=1)
    assert 50 < agree.sum() < 800  # both cases occur
    assert (out[SUGGESTED_LABEL].to_numpy()[agree] == np.asarray(classes)[proxy.argmax(axis=1)[agree]]).all()


def test_the_noise_posterior_is_the_suggestion_when_present_and_its_relabels_are_right():
    # 40 % of class 0 labelled 1 (a class-pair confusion) and a proxy that learned those noisy labels: the posterior
    # suggests the flips back to 0 and leaves every other label as given.  Confident learning estimates half the true
    # flip rate here, so the flips' posteriors sit just above one half (0.50-0.55), and none of the clean ones do.
    from test_noise_posterior import class_pair_noise

    from pruning_core.dynamics.noise import noise_scores

    classes = ["truck", "automobile", "cat", "dog"]
    given, true, probs = class_pair_noise(seed=2)
    frame = pd.DataFrame({"path": [f"x{i}" for i in range(len(given))], "label": np.asarray(classes)[given]})
    noise, _, _ = noise_scores(given, probs, classes, source="a test proxy")
    frame = with_probs(pd.concat([frame, noise], axis=1), PROXY, probs, classes)  # cleanlab's columns beside it
    out, settings = suggest_labels(frame)
    assert settings["sources"] == ["noise posterior"]
    suggested = out[SUGGESTED_LABEL].to_numpy()
    flipped = given != true
    assert (suggested[flipped] == "truck").mean() > 0.95
    assert (suggested[~flipped] == frame["label"].to_numpy()[~flipped]).mean() > 0.95
    confidence = out[SUGGESTION_CONFIDENCE].to_numpy()
    assert np.all((confidence >= 0.5 - 1e-9) & (confidence <= 1.0))  # the most probable of the two: at least half
    relabel = confident_relabels(pd.concat([frame, out], axis=1), 0.5)
    assert relabel.sum() > 0.9 * flipped.sum()
    assert suggest_labels(frame, "experts")[1]["sources"] == ["out-of-sample probabilities"]  # forced: the bench's
    with pytest.raises(ValueError, match="unknown suggestion method"):
        suggest_labels(frame, "vote")
    assert (suggested[relabel] == np.asarray(classes)[true[relabel]]).mean() >= 0.95


def fix_frame():
    """Ten samples: rows 0-2 confidently suggested another label, row 3 unsure, rows 4-9 agree with their label."""
    frame = pd.DataFrame({
        "path": [f"p{i}" for i in range(10)],
        "label": ["a", "b", "a", "b", "a", "b", "a", "b", "a", "b"],
        SUGGESTED_LABEL: ["b", "a", "b", "a", "a", "b", "a", "b", "a", "b"],
        SUGGESTION_CONFIDENCE: [0.99, 0.95, 0.91, 0.6, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9],
        # suspicion: rows 0-3 the most suspicious (flagged), then row 9 down to row 4
        "s.quality": [0.01, 0.02, 0.03, 0.04, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
    })
    return frame, {"s.quality": ScoreInfo("s.quality", "label quality", "low")}


def test_fix_relabels_confident_suggestions_and_drops_the_rest_of_the_flagged():
    frame, infos = fix_frame()
    recipe = SelectionRecipe(keep=7, strategy="fix", cps_params={"threshold": 0.9})
    mask = run_recipe(frame, infos, recipe)
    # rows 0-2 are fixed (kept, relabelled); row 3 (unsure) and the most suspicious of the rest (row 9) dropped
    assert frame["path"][mask].tolist() == ["p0", "p1", "p2", "p4", "p5", "p6", "p7"]
    assert strategy_relabels(frame, recipe, mask) == {"p0": "b", "p1": "a", "p2": "b"}
    drop_only = run_recipe(frame, infos, SelectionRecipe(keep=7, strategy="easiest"))
    assert not drop_only[:3].any() and drop_only[3]  # drop-only removes the three most suspicious instead
    assert strategy_relabels(frame, SelectionRecipe(keep=7, strategy="easiest"), drop_only) == {}
    # a higher threshold fixes fewer: row 2 (0.91) is dropped like any other flagged sample
    strict = SelectionRecipe(keep=7, strategy="fix", cps_params={"threshold": 0.95})
    strict_mask = run_recipe(frame, infos, strict)
    assert not strict_mask[2] and strategy_relabels(frame, strict, strict_mask) == {"p0": "b", "p1": "a"}
    # Evaluate trains the fixed labels: class ids read off the (label, id) pairs
    y = np.where(frame["label"] == "a", 0, 1)
    assert relabelled_ids(frame, y, strategy_relabels(frame, recipe, mask)).tolist() == [1, 0, 1, 1, 0, 1, 0, 1, 0, 1]


def test_bulk_accept_is_one_action_and_undo_action_reverts_exactly_it(tmp_path):
    frame, _ = fix_frame()
    store = DecisionStore(tmp_path / "reviews.sqlite")
    store.decide("fp", "p1", "remove")  # a reviewer's decision: never overwritten by a suggestion
    store.decide("fp", "p7", "keep")
    pending = pending_suggestions(frame, 0.9, store.latest("fp")["path"])
    assert pending["path"].tolist() == ["p0", "p2"]  # most confident first; p1 decided, p3 below 0.9
    recorded = accept_suggestions(store, "fp", pending, reviewer="ann", classes=["a", "b"])
    assert len(recorded) == 2
    history = store.history("fp")
    accepted = history[history["source"] == "suggestion"]
    assert accepted["action_id"].nunique() == 1 and len(accepted) == 2
    assert store.relabels("fp") == {"p0": "b", "p2": "b"}
    assert store.snapshot("fp")["relabel_sources"] == {"p0": "suggestion", "p2": "suggestion"}
    undone = store.undo_action("fp", reviewer="ann")
    assert sorted(d.path for d in undone) == ["p0", "p2"]
    assert store.relabels("fp") == {} and store.removed_paths("fp") == ["p1"]  # earlier decisions untouched
    assert set(store.latest("fp")["path"]) == {"p1", "p7"}


@pytest.fixture
def suggested(tmp_path, monkeypatch):
    """The review fixture's table with proxy probabilities: a third of the samples confidently of another class."""
    monkeypatch.setenv("PRUNESCOPE_CACHE", str(tmp_path / "cache"))
    dataset, manifest, table = make_scored_dataset(tmp_path / "data", n=60)
    classes = list(dataset.classes)
    labels = table.frame["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    wrong = np.arange(len(labels)) % 3 == 0
    target = np.where(wrong, (labels + 1) % len(classes), labels)
    probs = np.full((len(labels), len(classes)), 0.02)
    probs[np.arange(len(labels)), target] = 1.0
    frame = with_probs(table.frame, PROXY, probs / probs.sum(axis=1, keepdims=True), classes)
    table = with_suggestions(ScoreTable(frame, table.infos, settings=table.settings))
    return dataset, manifest, table, wrong


def test_a_replayed_manifest_reproduces_the_applied_relabels(suggested, tmp_path):
    dataset, _, table, wrong = suggested
    fixed = confident_relabels(table.frame, 0.9)
    assert (fixed == wrong).all()
    store = DecisionStore(default_review_path())
    store.decide(dataset.fingerprint, table.frame["path"][1], "relabel", new_label="fox", classes=dataset.classes)
    accept_suggestions(store, dataset.fingerprint, pending_suggestions(table.frame, 0.9, [])[:2],
                       classes=dataset.classes)
    review = store.snapshot(dataset.fingerprint)
    recipe = SelectionRecipe(keep=0.8, strategy="fix", cps_params={"threshold": 0.9})
    mask = run_recipe(table.frame, table.infos, recipe, review["removed"])
    manifest = Manifest.build(table, recipe, mask, scores_file="scores.parquet", review=review)
    sources = {e["source"] for e in manifest.relabelled.values()}
    assert sources == {"review", "suggestion", "strategy:fix"}
    assert manifest.relabelled[table.frame["path"][1]] == {"label": "fox", "source": "review"}

    again = Manifest.from_json(manifest.to_json())
    replayed = again.replay(table, "scores")
    assert (replayed == mask).all() and again.relabelled == manifest.relabelled
    out = again.selection_table(table.frame, replayed).set_index("path")
    for path, entry in manifest.relabelled.items():
        assert out.at[path, "label"] == entry["label"]
    kept_fixed = table.frame["path"][fixed & mask]
    assert (out.loc[kept_fixed, "label"] == table.frame.set_index("path").loc[kept_fixed, SUGGESTED_LABEL]).all()

    doc = json.loads(manifest.to_json())
    doc["relabelled"].popitem()
    with pytest.raises(ValueError, match="replay relabels"):
        Manifest.from_json(json.dumps(doc)).replay(table, "scores")


def test_cli_select_fix_applies_and_replays_relabels(suggested, tmp_path):
    _, _, table, wrong = suggested
    table.save(tmp_path / "scores.parquet")
    kept = tmp_path / "kept.csv"
    assert main(["select", str(tmp_path / "scores.parquet"), "--keep", "0.8", "--strategy", "fix",
                 "--fix-threshold", "0.9", "--out", str(kept)]) == 0
    rows = pd.read_csv(kept)
    relabelled = rows[rows["label"] != rows["original_label"]]
    assert len(relabelled) == int(wrong.sum())  # every confident suggestion is fixed and kept at 0.8
    doc = json.loads(kept.with_suffix(".manifest.json").read_text())
    assert doc["selection"]["cps_params"] == {"threshold": 0.9}
    assert {e["source"] for e in doc["relabelled"].values()} == {"strategy:fix"}
    again = tmp_path / "again.csv"
    assert main(["select", "--replay", str(kept.with_suffix(".manifest.json")), "--out", str(again)]) == 0
    assert again.read_bytes() == kept.read_bytes()


def test_review_page_bulk_accept_then_export_applies_it(suggested):
    dataset, manifest, table, wrong = suggested
    at = AppTest.from_file(str(REPO / "pages" / "review.py"), default_timeout=60)
    at.session_state[state.DATASET] = state.DatasetSource("manifest", str(manifest))
    at.session_state[state.TABLE] = table
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    accept = next(b for b in at.button if b.key == "review_suggest_accept")
    assert accept.label == f"Accept {int(wrong.sum())} suggestions"
    accept.click().run()
    store = DecisionStore()
    relabels = store.relabels(dataset.fingerprint)
    assert set(relabels) == set(table.frame["path"][wrong])
    assert set(store.history(dataset.fingerprint)["source"]) == {"suggestion"}

    export = AppTest.from_file(str(REPO / "pages" / "export.py"), default_timeout=60)
    export.session_state[state.DATASET] = state.DatasetSource("manifest", str(manifest))
    export.session_state[state.TABLE] = table
    export.session_state[state.RECIPE] = SelectionRecipe(keep=1.0, strategy="easiest")
    export.run()
    assert not export.exception, [e.value for e in export.exception]
    doc = json.loads(export.json[0].value)
    assert {p: e["label"] for p, e in doc["relabelled"].items()} == relabels
    assert any(f"suggestion {len(relabels)}" in c.value for c in export.caption)

    next(b for b in at.button if b.key == "review_undo_action").click().run()
    assert store.relabels(dataset.fingerprint) == {}
