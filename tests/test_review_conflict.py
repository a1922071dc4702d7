"""Two reviewers on one sample: the second click is not recorded over the first; the Review page shows the
other decision (who, what, when) and asks (issue 28)."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from pruning_core.audit.review import DecisionConflict, DecisionStore
from review_fixtures import make_scored_dataset
from ui import state

REPO = Path(__file__).resolve().parent.parent


def test_decide_with_a_stale_view_raises_the_other_decision_and_writes_nothing(tmp_path):
    store = DecisionStore(tmp_path / "r.sqlite")
    first = store.decide("fp", "a.png", "remove", reviewer="ann", expected=None)  # ann saw it undecided
    with pytest.raises(DecisionConflict) as caught:
        store.decide("fp", "a.png", "keep", reviewer="bob", expected=None)  # bob saw it undecided too
    assert caught.value.theirs.id == first.id and caught.value.theirs.reviewer == "ann"
    assert "remove by ann at" in str(caught.value) and "UTC" in str(caught.value)
    assert store.removed_paths("fp") == ["a.png"] and len(store.history("fp")) == 1
    mine = store.decide("fp", "a.png", "keep", reviewer="bob", expected=first.id)  # bob saw ann's and confirms
    assert store.latest("fp")["action"].tolist() == ["keep"]
    assert store.history("fp")["id"].tolist() == [first.id, mine.id]  # both stay in the history
    store.undo("fp", path="a.png")  # back to ann's remove
    with pytest.raises(DecisionConflict):
        store.decide("fp", "a.png", "skip", expected=mine.id)
    store.decide("fp", "a.png", "skip")  # scripts and bulk actions record without a view to check


@pytest.fixture
def scored(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNESCOPE_CACHE", str(tmp_path / "cache"))
    return make_scored_dataset(tmp_path / "data")


def tab(scored, reviewer: str) -> AppTest:
    _, manifest, table = scored
    at = AppTest.from_file(str(REPO / "pages" / "review.py"), default_timeout=60)
    at.session_state[state.DATASET] = state.DatasetSource("manifest", str(manifest))
    at.session_state[state.TABLE] = table
    at.run()
    at.text_input(key="reviewer_name").set_value(reviewer).run()
    return at


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def test_two_review_tabs_on_one_sample_show_the_conflict_and_ask(scored):
    dataset, _, _ = scored
    one, two = tab(scored, "ann"), tab(scored, "bob")  # both show the most suspicious sample, row 35
    button(one, "Remove (r)").click().run()
    button(two, "Keep (k)").click().run()  # tab two was not refreshed: it still shows row 35 undecided
    assert not two.exception
    store = DecisionStore()
    assert store.removed_paths(dataset.fingerprint) == ["images/img_035.png"]  # keep did not silently win
    warning = next(w.value for w in two.warning if "changed since you opened it" in w.value)
    assert "images/img_035.png" in warning and "remove by ann at" in warning and "UTC" in warning
    button(two, "Apply my keep anyway").click().run()
    latest = store.latest(dataset.fingerprint).set_index("path")
    assert latest.at["images/img_035.png", "action"] == "keep" and latest.at["images/img_035.png", "reviewer"] == "bob"
    assert store.history(dataset.fingerprint)["action"].tolist() == ["remove", "keep"]
    assert not any("changed since you opened it" in w.value for w in two.warning)
    # a second conflict, answered "keep theirs": nothing of this tab's is recorded
    assert "row 34" in next(c.value for c in two.caption if "in queue" in c.value)
    store.decide(dataset.fingerprint, "images/img_034.png", "relabel", new_label="cat", reviewer="cyd",
                 classes=dataset.classes)
    button(two, "Skip (s)").click().run()
    assert any("relabel → cat by cyd" in w.value for w in two.warning)
    button(two, "Keep theirs").click().run()
    assert not any("changed since you opened it" in w.value for w in two.warning)
    assert store.history(dataset.fingerprint)["action"].tolist() == ["remove", "keep", "relabel"]
