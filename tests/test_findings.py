"""Findings you can trust: estimates with intervals and sources, audit verdicts, dynamics-only mislabels, model fitness."""

import json

import numpy as np
import pandas as pd
import pytest

from pruning_core.audit.estimates import mixture_estimate, precision_interval
from pruning_core.audit.fitness import FitnessConfig, clip_fits, proxy_fits
from pruning_core.audit.overview import (
    NO_OOS,
    audit_sample,
    overview,
    report_dict,
    report_markdown,
)
from pruning_core.dynamics.label_issues import confident_joint_counts, estimated_issue_count
from pruning_core.scoring.score_info import ScoreInfo

CLASSES = np.array(["ant", "bee", "cow", "dog"])


def _dynamics_frame(n: int = 400, flips: int = 40, hard: int = 80, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """A dynamics-only table: ``flips`` planted wrong labels (the proxy predicts the true class, AUM far below 0)
    and ``hard`` clean samples the proxy also gets wrong (AUM just below 0); no cleanlab, no CLIP."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, 4, n)
    label = true.copy()
    flipped = rng.choice(n, flips, replace=False)
    label[flipped] = (true[flipped] + rng.integers(1, 4, flips)) % 4
    wrong = label != true
    predicted = true.copy()
    clean = np.flatnonzero(~wrong)
    missed = rng.choice(clean, hard, replace=False)
    predicted[missed] = (true[missed] + 1) % 4
    aum = np.where(wrong, rng.normal(-3.0, 0.6, n), rng.normal(1.0, 0.5, n))
    aum[missed] = rng.normal(-0.6, 0.3, hard)
    loss = np.where(wrong, rng.normal(4.0, 0.7, n), rng.normal(0.4, 0.2, n))
    loss[missed] = rng.normal(1.6, 0.3, hard)
    frame = pd.DataFrame({"path": [f"img_{i}.png" for i in range(n)], "label": CLASSES[label],
                          "dynamics.aum": aum, "dynamics.final_loss": np.abs(loss),
                          "dynamics.predicted_label": CLASSES[predicted]})
    return frame, wrong


INFOS = {"dynamics.aum": ScoreInfo("dynamics.aum", "a", "low"),
         "dynamics.final_loss": ScoreInfo("dynamics.final_loss", "l", "high")}


def test_dynamics_only_mislabel_finding_estimates_the_planted_flips():
    frame, wrong = _dynamics_frame()
    ov = overview(frame, INFOS)
    mis = ov.finding("mislabelled")
    assert mis is not None and ov.mislabels.suggested == "dynamics.predicted_label"
    assert mis.count == 120 and set(np.flatnonzero(wrong)) <= set(mis.rows)  # 40 flips + 80 hard ones
    lo, hi = mis.estimate.count_interval
    assert lo <= wrong.sum() <= hi and abs(mis.estimate.count - 40) < 6, mis.estimate
    assert "dynamics.aum" in mis.estimate.source and "training dynamics" in mis.evidence
    assert NO_OOS in ov.evidence  # says cross-fitting is missing and how to get cleanlab's estimate
    # per-class quality from the same estimate: every class has flips, none reads 100 %
    true_quality = 1 - pd.Series(wrong).groupby(frame["label"].to_numpy()).mean()
    quality = ov.class_quality["label_quality"]
    assert (quality < 1.0).all() and np.allclose(quality.sort_index(), true_quality.sort_index(), atol=0.04)
    assert ov.flips.to_numpy().sum() == 120  # raw flagged counts, given x predicted


def test_a_proxy_at_chance_calibrates_nothing():
    frame, _ = _dynamics_frame()
    rng = np.random.default_rng(1)
    frame["dynamics.predicted_label"] = CLASSES[rng.integers(0, 4, len(frame))]
    assert not proxy_fits(frame).fits
    ov = overview(frame, INFOS)
    est = ov.finding("mislabelled").estimate
    assert np.isnan(est.precision) and (est.low, est.high) == (0.0, 1.0) and "does not fit" in est.source
    assert ov.class_quality["label_quality"].isna().all()


def test_mixture_estimate_covers_the_truth_and_names_its_source():
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.normal(-0.1, 0.15, 150), rng.normal(0.35, 0.08, 250)])
    est, q = mixture_estimate(values, source="test mixture")
    lo, hi = est.count_interval
    assert lo <= 150 <= hi and hi - lo < 60 and est.source == "test mixture"
    assert q[:150].mean() > 0.9 and q[150:].mean() < 0.1


def _clip_frame(n: int, agree_share: float, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 4, n)
    agree = rng.random(n) < agree_share
    suggested = np.where(agree, label, (label + rng.integers(1, 4, n)) % 4)
    alignment = np.where(agree, rng.normal(0.5, 0.05, n), rng.normal(0.1, 0.15, n))
    return pd.DataFrame({"path": [f"p{i}" for i in range(n)], "label": CLASSES[label],
                         "clip.suggested_label": CLASSES[suggested], "clip.label_alignment": alignment,
                         "clip.zero_shot_margin": np.where(agree, 0.0, 0.9)})


def test_fitness_fails_a_model_at_chance_and_passes_one_that_knows_the_classes():
    at_chance = _clip_frame(2000, 0.25)
    unfit = clip_fits(at_chance)
    assert not unfit.fits and unfit.skill == pytest.approx(0.0, abs=0.05) and "does not fit" in unfit.verdict
    good = clip_fits(_clip_frame(2000, 0.85))
    assert good.fits and good.skill > 0.7 and good.alignment_gap > 3
    # the dynamics' noise estimate lowers the ceiling: 80 % agreement with 20 % wrong labels is perfect
    assert clip_fits(_clip_frame(2000, 0.8), noise_rate=0.2).skill == pytest.approx(1.0, abs=0.05)
    # a dozen samples cannot condemn a model: the verdict tests the top of the agreement's interval
    assert clip_fits(_clip_frame(12, 0.5, seed=2)).fits
    assert not clip_fits(_clip_frame(2000, 0.85), config=FitnessConfig(min_skill=0.95)).fits


def test_an_unfit_clip_feeds_no_finding():
    infos = {"clip.zero_shot_margin": ScoreInfo("clip.zero_shot_margin", "m", "high")}
    ov = overview(_clip_frame(2000, 0.25), infos)
    assert ov.finding("mislabelled") is None and not ov.fitness.fits
    assert any("does not fit" in note for note in ov.evidence)
    fit = overview(_clip_frame(2000, 0.85), infos)
    assert fit.finding("mislabelled").score == "clip.label_alignment" and fit.fitness.fits


def test_only_random_audit_verdicts_give_the_interval():
    frame, wrong = _dynamics_frame()
    ov = overview(frame, INFOS)
    mis = ov.finding("mislabelled")
    decisions = pd.Series("undecided", index=frame.index)
    # a reviewer works down the ranked top first: the 30 lowest-AUM members, all true flips
    top = frame.loc[mis.rows].sort_values("dynamics.aum").index[:30]
    decisions[top] = np.where(wrong[top], "remove", "keep")
    ranked = overview(frame, INFOS, decisions=decisions, audited={"mislabelled": set()})
    assert ranked.finding("mislabelled").estimate.checked == 0  # the biased verdicts are not used
    picks = audit_sample(mis, frame, decisions, 30, seed=0)
    assert len(picks) == 30 and not set(picks) & set(frame.loc[top, "path"])  # undecided members only
    rows = frame.index[frame["path"].isin(picks)]
    decisions[rows] = np.where(wrong[rows], "relabel", "keep")
    audited = overview(frame, INFOS, decisions=decisions, audited={"mislabelled": set(picks)})
    est = audited.finding("mislabelled").estimate
    hits = int(wrong[rows].sum())
    assert est.checked == 30 and (est.low, est.high) == pytest.approx(precision_interval(hits, 30))
    assert est.flagged == mis.count and "30 random audit picks" in est.source


def test_cleanlab_flags_are_calibrated_when_the_cross_fitted_proxy_fits_and_its_count_is_evidence():
    rng = np.random.default_rng(0)
    n, c = 600, 3
    true = rng.integers(0, c, n)
    labels = true.copy()
    flip = rng.random(n) < 0.1
    labels[flip] = (true[flip] + 1) % c
    probs = np.full((n, c), 0.05)
    probs[np.arange(n), true] = 0.9
    recorded = estimated_issue_count(labels, probs, boots=20)
    assert recorded["low"] <= flip.sum() <= recorded["high"]
    assert abs(recorded["estimated_issues"] - flip.sum()) <= 5
    # a model that misses 30 clean samples too: their given-label probability is middling, a flip's is low
    predicted = probs.argmax(1)
    missed = rng.choice(np.flatnonzero(~flip), 30, replace=False)
    predicted[missed] = (labels[missed] + 2) % c
    given_p = np.where(flip, rng.uniform(0.01, 0.1, n), rng.uniform(0.7, 0.95, n))
    given_p[missed] = rng.uniform(0.3, 0.45, 30)
    frame = pd.DataFrame({"path": [f"p{i}" for i in range(n)], "label": labels.astype(str),
                          "cleanlab.is_issue": (predicted != labels).astype(np.int8),
                          "cleanlab.label_quality": given_p, "dynamics.suggested_label": predicted.astype(str)})
    ov = overview(frame, {}, scoring={"cleanlab": recorded})
    est = ov.finding("mislabelled").estimate
    assert "cleanlab.label_quality" in est.source and est.flagged == flip.sum() + 30
    assert est.count_interval[0] <= flip.sum() <= est.count_interval[1]
    assert any(f"confident joint counts {recorded['estimated_issues']:,}" in note for note in ov.evidence)
    # an out-of-sample proxy at chance calibrates nothing: raw count, the failed check quoted
    frame["dynamics.suggested_label"] = rng.integers(0, c, n).astype(str)
    frame["cleanlab.is_issue"] = (frame["dynamics.suggested_label"] != frame["label"]).astype(np.int8)
    weak = overview(frame, {}).finding("mislabelled").estimate
    assert np.isnan(weak.precision) and "cross-fitted proxy does not fit" in weak.source
    # with in-sample dynamics beside it, the finding falls back to them and says why cleanlab's flags are unused
    dyn, _ = _dynamics_frame()
    at_chance = CLASSES[rng.integers(0, 4, len(dyn))]
    both = overview(dyn.assign(**{"dynamics.suggested_label": at_chance, "cleanlab.label_quality": 0.5,
                                  "cleanlab.is_issue": (at_chance != dyn["label"]).astype(np.int8)}), INFOS)
    assert both.mislabels.suggested == "dynamics.predicted_label"
    assert any(note.startswith("cleanlab's flags are not used: the cross-fitted proxy does not fit")
               for note in both.evidence)


def test_reports_carry_the_estimates():
    frame, _ = _dynamics_frame()
    ov = overview(frame, INFOS, skipped={"corrupt image": 2})
    data = json.loads(json.dumps(report_dict(ov), allow_nan=False))  # strict JSON: no NaN for unknowns
    mis = next(f for f in data["findings"] if f["kind"] == "mislabelled")
    est = ov.finding("mislabelled").estimate
    assert mis["estimate"]["estimated"] == round(est.count, 1) and mis["estimate"]["source"] == est.source
    assert mis["estimate"]["precision_low"] <= mis["estimate"]["precision"] <= mis["estimate"]["precision_high"]
    unreadable = next(f for f in data["findings"] if f["kind"] == "unreadable")
    assert unreadable["estimate"]["estimated"] == 2.0 and unreadable["estimate"]["precision"] == 1.0
    assert NO_OOS in data["evidence"]
    md = report_markdown(ov, "toy")
    lo, hi = est.count_interval
    assert f"≈ {est.count:,.0f} true (90% interval {lo:,.0f}–{hi:,.0f}" in md and est.source in md
    bare = report_dict(overview(frame[["path", "label"]], {}))
    assert all(c["label_quality"] is None for c in bare["class_quality"])


def test_the_issue_count_bootstrap_counts_each_resample_as_cleanlab_does_on_the_copied_rows():
    from cleanlab.count import compute_confident_joint, num_label_issues

    rng = np.random.default_rng(3)
    n, c = 400, 4
    labels = rng.integers(0, c, n)
    logits = rng.normal(0, 1, (n, c))
    logits[np.arange(n), labels] += rng.choice([2.0, -1.0], n, p=[0.8, 0.2])
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    probs[:5] = 1.0 / c  # ties: no class confident or all of them
    # class 3's rows are confident in class 0 too (0.7 over class 0's threshold), so the larger
    # probability wins and class 3's diagonal is empty until cleanlab clips it to 1
    labels[labels == 3] = 2
    labels[-40:] = 3
    probs[-40:] = [0.7, 0.0, 0.0, 0.3]
    probs[labels == 0] = [0.6, 0.2, 0.1, 0.1]
    for _ in range(5):
        rows = rng.integers(0, n, n)
        weights = np.bincount(rows, minlength=n).astype(float)
        assert np.array_equal(confident_joint_counts(labels, probs, weights),
                              compute_confident_joint(labels[rows], probs[rows], calibrate=False))
    recorded = estimated_issue_count(labels, probs, boots=30, seed=7)
    draws = np.random.default_rng(7)
    copied = [num_label_issues(labels[r], probs[r], estimation_method="off_diagonal_calibrated")
              for r in (draws.integers(0, n, n) for _ in range(30))]
    assert (recorded["low"], recorded["high"]) == tuple(np.percentile(copied, [5, 95]))
