"""pruning_core.audit.overview: findings with their thresholds, class quality, flip matrix, reports; resolve_duplicates."""

import json

import numpy as np
import pandas as pd
import pytest

from pruning_core.audit.overview import (
    OverviewConfig,
    flip_rows,
    overview,
    report_dict,
    report_json,
    report_markdown,
    robust_threshold,
)
from pruning_core.audit.review import DecisionStore, resolve_duplicates
from pruning_core.scoring.score_info import ScoreInfo

INFOS = {
    "clip.zero_shot_margin": ScoreInfo("clip.zero_shot_margin", "m", "high"),
    "clip.outlier": ScoreInfo("clip.outlier", "o", "high"),
    "clip.caption_alignment": ScoreInfo("clip.caption_alignment", "c", "low"),
    "clip.duplicate_count": ScoreInfo("clip.duplicate_count", "d", "high"),
}


@pytest.fixture
def frame():
    """12 samples: rows 0-2 cat->dog flips (margin 0.9), row 3 a weak flip (0.2), row 4 dog->cat;
    row 5 a far outlier, row 6 a mismatched caption, rows 7-8 and 9-11 two duplicate groups."""
    n = 12
    labels = ["cat"] * 6 + ["dog"] * 6
    labels[4] = "dog"
    suggested = list(labels)
    margin = np.zeros(n)
    for r in (0, 1, 2):
        suggested[r], margin[r] = "dog", 0.9
    suggested[3], margin[3] = "dog", 0.2
    suggested[4], margin[4] = "cat", 0.8
    rng = np.random.default_rng(0)
    outlier = 0.3 + 0.01 * rng.standard_normal(n)
    outlier[5] = 0.9
    caption = 0.5 + 0.01 * rng.standard_normal(n)
    caption[6] = 0.0
    group = np.array([-1] * 7 + [0, 0, 1, 1, 1])
    return pd.DataFrame({"path": [f"img_{i}.png" for i in range(n)], "label": labels,
                         "clip.zero_shot_margin": margin, "clip.suggested_label": suggested,
                         "clip.outlier": outlier, "clip.caption_alignment": caption,
                         "clip.duplicate_group": group, "clip.duplicate_count": np.where(group >= 0, 1, 0)})


def test_each_finding_counts_the_rows_its_rule_names(frame):
    ov = overview(frame, INFOS, skipped={"corrupt image": 2}, scoring={"clip": {"k": 7, "dup_threshold": 0.95}})
    mis = ov.finding("mislabelled")
    assert sorted(mis.rows) == [0, 1, 2, 4]  # row 3's margin 0.2 is under the 0.5 threshold
    assert "0.5" in mis.rule
    assert list(ov.finding("outliers").rows) == [5] and ">" in ov.finding("outliers").rule
    assert list(ov.finding("caption mismatch").rows) == [6]
    dup = ov.finding("duplicates")
    assert dup.count == 5 and dup.groups == 2 and "0.95" in dup.rule and dup.threshold == 0.95
    assert "k = 7" in ov.finding("outliers").rule  # the k the outlier score averaged over
    assert ov.finding("outliers").threshold == pytest.approx(robust_threshold(frame["clip.outlier"], "high", 3.0))
    assert mis.threshold == 0.5
    assert ov.finding("unreadable").count == 2 and "corrupt image" in ov.finding("unreadable").rule
    lower = overview(frame, INFOS, config=OverviewConfig(mislabel_margin=0.1))
    assert sorted(lower.finding("mislabelled").rows) == [0, 1, 2, 3, 4]


def test_robust_threshold_follows_the_suspicious_side():
    values = np.array([1.0, 2.0, 3.0, 4.0, 5.0, np.nan])
    assert robust_threshold(values, "high", 1.0) == pytest.approx(3 + 1.4826)
    assert robust_threshold(values, "low", 2.0) == pytest.approx(3 - 2 * 1.4826)


def test_flip_matrix_and_cell_rows_shrink_with_decisions(frame):
    ov = overview(frame, INFOS)
    assert ov.flips.at["cat", "dog"] == 3 and ov.flips.at["dog", "cat"] == 1
    assert list(flip_rows(frame, ov.finding("mislabelled").rows, "clip.suggested_label", "cat", "dog")) == [0, 1, 2]
    decisions = pd.Series("undecided", index=frame.index)
    decisions[1] = "keep"
    decided = overview(frame, INFOS, decisions=decisions)
    assert decided.flips.at["cat", "dog"] == 2
    assert decided.finding("mislabelled").open == 3 and decided.finding("mislabelled").count == 4


def test_class_quality_is_unknown_without_a_calibrated_label_estimate(frame):
    """No label alignment to calibrate the CLIP rule, and no detector at all: quality unknown, never 100 %."""
    quality = overview(frame, INFOS).class_quality
    assert quality.at["cat", "flagged"] == 3 and quality.at["cat", "samples"] == 5
    assert quality["label_quality"].isna().all()
    bare = overview(frame[["path", "label"]], {}).class_quality
    assert bare["label_quality"].isna().all() and not (bare["label_quality"] == 1.0).any()


def test_cleanlab_issues_take_precedence_over_clip(frame):
    suggested = frame["label"].where(frame.index != 7, "cat")  # the cross-fitted proxy agrees but for row 7
    frame = frame.assign(**{"cleanlab.is_issue": np.eye(1, len(frame), 7, dtype=np.int8)[0],
                            "dynamics.suggested_label": suggested})
    ov = overview(frame, INFOS)
    assert list(ov.finding("mislabelled").rows) == [7] and ov.mislabels.suggested == "dynamics.suggested_label"


def test_reports_carry_the_numbers(frame):
    ov = overview(frame, INFOS, skipped={})
    data = json.loads(json.dumps(report_dict(ov)))
    assert data["samples"] == 12
    assert {"given": "cat", "suggested": "dog", "open": 3} in data["flips"]
    assert next(f for f in data["findings"] if f["kind"] == "mislabelled")["count"] == 4
    md = report_markdown(ov, "toy")
    assert "| cat | dog | 3 |" in md and "Likely mislabelled | 4 | 4 |" in md


def test_reports_carry_the_settings_the_numbers_depend_on(frame):
    """A report read later says at which thresholds and with which k-NN settings it was counted."""
    scoring = {"clip": {"k": 7, "dup_threshold": 0.9, "model": "ViT-B-32"}, "dataset": {"fingerprint": "abc"}}
    ov = overview(frame, INFOS, scoring=scoring, config=OverviewConfig(mislabel_margin=0.4, outlier_z=2.5))
    data = json.loads(report_json(ov))
    thresholds = data["settings"]["thresholds"]
    assert {k: thresholds[k] for k in ("mislabel_margin", "outlier_z", "caption_z")} == \
        {"mislabel_margin": 0.4, "outlier_z": 2.5, "caption_z": 3.0}
    assert thresholds["audit_size"] == 30 and thresholds["fitness"]["min_skill"] == 0.5
    assert data["settings"]["scoring"]["clip"] == scoring["clip"]
    by_kind = {f["kind"]: f for f in data["findings"]}
    assert by_kind["duplicates"]["threshold"] == 0.9 and by_kind["mislabelled"]["threshold"] == 0.4
    md = report_markdown(ov, "toy")
    for row in ("| thresholds.mislabel_margin | `0.4` |", "| thresholds.outlier_z | `2.5` |",
                "| scoring.clip.k | `7` |", "| scoring.clip.dup_threshold | `0.9` |"):
        assert row in md, md


def test_resolve_duplicates_keeps_one_and_removes_the_rest(tmp_path):
    store = DecisionStore(tmp_path / "r.sqlite")
    n = resolve_duplicates(store, "fp", "a.png", ["a.png", "b.png", "c.png"], reviewer="ann")
    latest = store.latest("fp").set_index("path")["action"]
    assert n == 3 and latest.to_dict() == {"a.png": "keep", "b.png": "remove", "c.png": "remove"}


def test_nearest_samples_are_the_cosine_neighbours_without_the_query():
    from pruning_core.audit.similar import nearest_samples

    emb = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.7, 0.3], [np.nan, np.nan]], dtype=np.float32)
    rows, dist = nearest_samples(emb, 0, k=3)
    assert rows.tolist() == [1, 3, 2] and np.all(np.diff(dist) >= 0)  # nearest first, NaN row and self left out
    assert len(nearest_samples(emb, 4, k=3)[0]) == 0


def test_pca_preview_and_umap_keep_missing_rows_missing():
    from pruning_core.audit.projection import pca_coords, umap_coords

    rng = np.random.default_rng(0)
    emb = rng.standard_normal((40, 16)).astype(np.float32)
    emb[3] = np.nan
    coords = pca_coords(emb)
    assert coords.shape == (40, 2) and np.isnan(coords[3]).all() and np.isfinite(np.delete(coords, 3, 0)).all()
    # the first component carries the most variance of the unit-normalised rows
    assert np.nanvar(coords[:, 0]) >= np.nanvar(coords[:, 1])
    layout = rng.standard_normal((10, 2)).astype(np.float32)
    assert np.array_equal(umap_coords(layout), layout)  # a user's own 2-D layout passes through
