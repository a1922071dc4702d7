"""AppTest runs of the Overview page, the Review queue it sends, and the cache panel (small dataset, no model)."""

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from cache.store import ResultStore
from pruning_core.audit.review import DecisionStore
from pruning_core.data.datasets import load_dataset
from pruning_core.scoring.score_info import ScoreInfo
from pruning_core.scoring.score_table import ScoreTable
from review_fixtures import make_scored_dataset
from ui import review_state as rs
from ui import state

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def scored(tmp_path, monkeypatch):
    """The review fixture (60 rows) plus a zero-shot margin: rows 0, 5, 10, ... are flips (margin 0.9), and a
    label alignment that is low for every other flip (a wrong label) and middling for the rest (CLIP's mistakes)."""
    monkeypatch.setenv("PRUNESCOPE_CACHE", str(tmp_path / "cache"))
    dataset, manifest, table = make_scored_dataset(tmp_path / "data", n=60)
    row = np.arange(len(table.frame))
    noise = np.random.default_rng(0).normal(0.0, 0.08, len(row))
    alignment = np.where(row % 10 == 0, -0.1, np.where(row % 5 == 0, 0.25, 0.5)) + noise
    frame = table.frame.assign(**{"clip.zero_shot_margin": np.where(row % 5 == 0, 0.9, 0.0),
                                  "clip.label_alignment": alignment})
    infos = {**table.infos, "clip.zero_shot_margin": ScoreInfo("clip.zero_shot_margin", "margin", "high"),
             "clip.label_alignment": ScoreInfo("clip.label_alignment", "alignment", "low")}
    return dataset, manifest, ScoreTable(frame, infos)


def page(name: str, scored, **session) -> AppTest:
    _, manifest, table = scored
    at = AppTest.from_file(str(REPO / "pages" / f"{name}.py"), default_timeout=60)
    at.session_state[state.DATASET] = state.DatasetSource("manifest", str(manifest))
    at.session_state[state.TABLE] = table
    for key, value in session.items():
        at.session_state[key] = value
    return at


def test_overview_counts_open_flags_and_review_shows_exactly_the_sent_set(scored):
    dataset, _, table = scored
    flipped = table.frame.index[table.frame["clip.zero_shot_margin"] > 0.5]
    at = page("overview", scored).run()
    assert not at.exception
    metrics = {m.label: m for m in at.metric}
    assert metrics["Likely mislabelled"].delta == f"{len(flipped)} flagged · {len(flipped)} open"
    DecisionStore().decide(dataset.fingerprint, table.frame.at[flipped[0], "path"], "keep")
    at.run()
    assert {m.label: m for m in at.metric}["Likely mislabelled"].delta == \
        f"{len(flipped)} flagged · {len(flipped) - 1} open"
    sent = table.frame.loc[flipped[1:3], "path"].tolist()
    review = page("review", scored, **{rs.REVIEW_SET: ("a flip", tuple(sent)),
                                       rs.REVIEW_SOURCE: "set:a flip"}).run()
    assert not review.exception
    assert "0 of 2 reviewed" in review.get("progress")[0].proto.text


def test_overview_shows_an_estimate_with_its_interval_and_source_and_audits_a_random_sample(scored):
    dataset, _, table = scored
    flipped = table.frame.index[table.frame["clip.zero_shot_margin"] > 0.5]  # 12: 6 wrong labels, 6 CLIP mistakes
    at = page("overview", scored).run()
    assert not at.exception
    assert {m.label: m for m in at.metric}["Likely mislabelled"].value == "≈ 6"
    text = " ".join(m.value for m in at.markdown)
    assert "≈ 6 true (90% interval" in text and "two-component mixture of clip.label_alignment" in text
    assert any("cross-fitting" in c.value or "training dynamics" in c.value for c in at.caption)  # missing evidence
    at.number_input(key="audit_size").set_value(4).run()
    next(b for b in at.button if b.key == "audit_mislabelled").click().run()
    store = DecisionStore()
    picks = store.tagged(dataset.fingerprint, "audit:mislabelled")
    assert len(picks) == 4 and set(picks) <= set(table.frame.loc[flipped, "path"])
    assert at.session_state[rs.REVIEW_SET] == ("audit: Likely mislabelled", tuple(picks))
    for path in picks:
        store.decide(dataset.fingerprint, path, "remove")
    at = page("overview", scored).run()
    assert not at.exception
    text = " ".join(m.value for m in at.markdown)
    assert "reviewer verdicts on 4 random audit picks" in text
    assert {m.label: m for m in at.metric}["Likely mislabelled"].value == f"≈ {12 * 4.5 / 5:,.0f}"


def test_cache_panel_lists_and_clears_an_entry_a_step_or_all(scored):
    state.store.clear()  # the app's store is a process-wide resource: make it this test's cache
    store = ResultStore()
    store.save("a", arrays={"x": np.ones(250_000)}, meta={"step": "umap", "dataset": "toy"})
    store.save("b", arrays={"x": np.ones(3)}, meta={"step": "clip-scores", "dataset": "toy"})
    store.save("c", arrays={"x": np.ones(3)}, meta={"step": "clip-scores", "dataset": "other"})
    store.save("d", arrays={"x": np.ones(3)}, meta={"step": "images", "dataset": "toy"})
    at = page("dataset", scored).run()
    assert not at.exception

    def listed():
        return next(d.value for d in at.dataframe if "step" in d.value.columns).set_index("key")

    assert sorted(listed()["step"]) == ["clip-scores", "clip-scores", "images", "umap"]
    assert listed().at["c", "dataset"] == "other" and listed().at["a", "MB"] == pytest.approx(2.0, abs=0.01)
    at.multiselect(key="cache_entries").set_value(["c"]).run()
    next(b for b in at.button if b.key == "cache_clear_entries").click().run()
    assert not at.exception
    assert sorted(e.key for e in ResultStore().ls()) == ["a", "b", "d"] and sorted(listed().index) == ["a", "b", "d"]
    at.selectbox(key="cache_step").set_value("umap").run()
    next(b for b in at.button if b.key == "cache_clear_step").click().run()
    assert sorted(e.meta["step"] for e in ResultStore().ls()) == ["clip-scores", "images"]
    next(b for b in at.button if b.key == "cache_clear_all").click().run()
    assert not at.exception and ResultStore().ls() == [] and listed().empty


def test_overview_leaves_out_a_clip_that_does_not_fit_and_says_so(scored):
    dataset, manifest, table = scored
    wrong = {"cat": "dog", "dog": "fox", "fox": "cat"}
    unfit = ScoreTable(table.frame.assign(**{"clip.suggested_label": table.frame["label"].map(wrong)}), table.infos)
    at = page("overview", (dataset, manifest, unfit)).run()
    assert not at.exception
    warning = " ".join(w.value for w in at.warning)
    assert "Model does not fit this data" in warning and "agrees with 0.0% of the labels (chance 33.3%" in warning
    assert "Likely mislabelled" not in {m.label for m in at.metric}
    assert any(i.value.startswith("Unknown: no label evidence") for i in at.info)


@pytest.fixture
def with_groups(scored, tmp_path):
    """Two CLIP duplicate groups: rows 0 and 3 are the same file (a copy), rows 1 and 4 two different images."""
    _, manifest, table = scored
    root = manifest.parent
    (root / "images" / "img_003.png").write_bytes((root / "images" / "img_000.png").read_bytes())
    group = np.full(len(table.frame), -1)
    group[[0, 3]], group[[1, 4]] = 0, 1
    frame = table.frame.assign(**{"clip.duplicate_group": group})
    return load_dataset(manifest), manifest, ScoreTable(frame, table.infos, settings={"clip": {"dup_threshold": 0.95}})


def test_duplicate_panel_offers_one_click_remove_only_for_a_pixel_checked_copy(with_groups):
    dataset, _, table = with_groups
    at = page("overview", with_groups).run()
    assert not at.exception
    assert any("1 of 2 (raw count, 50%)" in c.value for c in at.caption)
    picker = at.selectbox(key="dup_group")
    assert "duplicate" in picker.format_func(0) and "check: pixels differ" in picker.format_func(1)
    picker.set_value(1).run()  # the look-alike pair: no one-click remove, only a way to review it
    assert not [b for b in at.button if b.key == "dup_resolve"] and [b for b in at.button if b.key == "dup_review"]

    at.selectbox(key="dup_group").set_value(0).run()
    next(b for b in at.button if b.key == "dup_resolve").click().run()
    store = DecisionStore()
    assert not at.exception and store.removed_paths(dataset.fingerprint) == ["images/img_003.png"]
    next(b for b in at.button if b.key == "dup_undo").click().run()
    assert store.latest(dataset.fingerprint).empty  # the keep and the remove undone together


@pytest.mark.labelstudio
def test_overview_sends_a_finding_to_label_studio(scored, label_studio):
    """The finding's samples become tasks; the detector's suggested label is the pre-annotation, its score the score."""
    from ui import labelstudio_panel as lsp

    dataset, _, table = scored
    flipped = table.frame.loc[table.frame["clip.zero_shot_margin"] > 0.5]
    at = page("overview", scored, **{lsp.URL: label_studio.url, lsp.TOKEN: label_studio.token,
                                     lsp.PROJECT: "overview finding"}).run()
    next(b for b in at.button if b.key == "ls_send_mislabelled").click().run()
    assert not at.exception and f"{len(flipped)} tasks created" in at.success[0].value
    project = next(p for p in label_studio.call("GET", "/api/projects")["results"] if p["title"] == "overview finding")
    tasks = label_studio.call("GET", f"/api/projects/{project['id']}/export",
                              params={"exportType": "JSON", "download_all_tasks": "true"})
    assert sorted(t["data"]["prunescope_id"] for t in tasks) == sorted(flipped["path"])
    predictions = {p["task"]: p for p in label_studio.call("GET", "/api/predictions", params={"project": project["id"]})}
    first = next(t for t in tasks if t["data"]["prunescope_id"] == flipped["path"].iloc[0])
    assert predictions[first["id"]]["result"][0]["value"]["choices"] == [flipped["clip.suggested_label"].iloc[0]]
    from pruning_core.audit.overview import overview

    detector = overview(table.frame, table.infos).finding("mislabelled").score  # the score that flagged them
    assert predictions[first["id"]]["score"] == pytest.approx(flipped[detector].iloc[0])
