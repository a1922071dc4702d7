"""AppTest of the Review page's learning queue: cold start, the refit, the estimate with its interval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from pruning_core.audit.queue import refit_log_path
from pruning_core.audit.review import DecisionStore
from review_fixtures import make_scored_dataset
from ui import state
from ui.review_queue import CONFIG

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def scored(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNESCOPE_CACHE", str(tmp_path / "cache"))  # a fresh reviews.sqlite per test
    return make_scored_dataset(tmp_path / "data")


def test_review_page_learns_and_shows_the_estimate_after_verdicts(scored):
    dataset, manifest, table = scored
    frame = table.frame
    problem = frame["label"] != frame["clip.suggested_label"]  # what the simulated reviewer calls a problem
    at = AppTest.from_file(str(REPO / "pages" / "review.py"), default_timeout=60)
    at.session_state[state.DATASET] = state.DatasetSource("manifest", str(manifest))
    at.session_state[state.TABLE] = table
    at.run()
    assert not at.exception
    assert any("Cold start" in c.value for c in at.caption)
    assert "Picked by: detector's order (cold start)" in [c.value for c in at.caption]

    # the cold start's verdicts (test.alignment: row 35 is the most suspicious, then 34, ...)
    store = DecisionStore()
    cold = list(range(35, 35 - CONFIG.refit_every, -1))
    for row in cold:
        store.decide(dataset.fingerprint, frame.at[row, "path"], "remove" if problem[row] else "keep",
                     source="queue:detector")
    at.run()
    assert not at.exception
    assert any("Refit on 20 verdicts" in c.value for c in at.caption)
    for _ in range(5):  # the learned order's own picks, answered through the page
        assert "Picked by: learned order" in [c.value for c in at.caption]
        row = int(next(c.value for c in at.caption if "in queue" in c.value).split("row ")[1].split(" ")[0])
        next(b for b in at.button if b.label == ("Remove (r)" if problem[row] else "Keep (k)")).click().run()
        assert not at.exception
    sources = store.history(dataset.fingerprint)["source"].tolist()
    assert sources == ["queue:detector"] * 20 + ["queue:model"] * 5

    metric = next(m for m in at.metric if m.label.startswith("Estimated precision of the next"))
    assert metric.value.endswith("%")
    interval = next(c.value for c in at.caption if "interval" in c.value and "verdicts on the model's picks" in c.value)
    assert "from 5 verdicts on the model's picks" in interval
    record = json.loads(refit_log_path(store.path).read_text().splitlines()[-1])
    assert record["fitted_on_verdicts"] == 20 and record["fingerprint"] == dataset.fingerprint
    assert "rank:test.alignment" in record["inputs"]
