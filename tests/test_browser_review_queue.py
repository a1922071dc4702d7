"""The learning review queue, bulk accept of suggestions and their export, in a real browser on the demo."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from browser_support import app_page, open_page, shot, wait_idle
from pruning_core.audit.queue import refit_log_path
from pruning_core.audit.review import DecisionStore
from pruning_core.data.datasets import load_dataset
from ui.review_queue import CONFIG

pytestmark = pytest.mark.browser

QUEUE_CAPTION = re.compile(r"^#[\d,]+ in queue · row \d+ · ")


def _answer(page, truth: pd.DataFrame, reviewed: int) -> None:
    """Give the shown sample the simulated reviewer's verdict (remove what the demo mislabelled, keep the rest)."""
    caption = page.get_by_text(QUEUE_CAPTION).first.inner_text()
    noisy = bool(truth.at["images/" + caption.split(" · ")[-1], "label_noisy"])
    page.get_by_role("heading", name="Review").first.click()  # focus the page, not an input
    page.keyboard.press("r" if noisy else "k")
    page.get_by_text(f"{reviewed} of 500 reviewed").wait_for(timeout=30_000)
    wait_idle(page)


def test_verdicts_refit_the_queue_then_bulk_accept_is_exported(demo_assets, isolated_cache, tmp_path):
    truth = pd.read_csv(demo_assets.ground_truth).set_index("path")
    with app_page(isolated_cache, "Review") as page:
        page.get_by_text("0 of 500 reviewed").wait_for(timeout=120_000)
        page.get_by_text("Cold start").first.wait_for(timeout=30_000)  # "Learn from verdicts" is on by default
        assert not page.get_by_text("Estimated precision of the next").count()
        for reviewed in range(1, CONFIG.refit_every + 1):
            _answer(page, truth, reviewed)
        page.get_by_text(f"Refit on {CONFIG.refit_every} verdicts").first.wait_for(timeout=60_000)
        for reviewed in range(CONFIG.refit_every + 1, CONFIG.refit_every + 6):  # the learned order's own picks
            _answer(page, truth, reviewed)
        page.get_by_text("Estimated precision of the next").first.wait_for(timeout=30_000)
        shot(page, "review-learning")

        page.get_by_text("Suggestions: accept confident relabels in one step").click()
        wait_idle(page)
        pending = int(page.get_by_text(re.compile(r"undecided samples \(raw count\) have a different suggested"))
                      .first.inner_text().split(" ")[0].replace(",", ""))
        assert pending > 0, "the demo's CLIP zero-shot suggestions should reach the default threshold"
        page.get_by_role("button", name=f"Accept {pending:,} suggestions").click()
        if pending > 25:  # BulkConfig.confirm_above: asks once
            page.get_by_role("button", name="Confirm").click()
        wait_idle(page)
        page.get_by_text(re.compile(r"relabelled [\d,]+ samples to their suggestions")).first.wait_for(timeout=30_000)
        shot(page, "review-bulk-accept")

        open_page(page, "Export")
        with page.expect_download() as info:
            page.get_by_role("button", name="Download manifest only (JSON)").click()
        manifest = json.loads(info.value.path().read_text())

    fingerprint = load_dataset(demo_assets.manifest).fingerprint
    store = DecisionStore(isolated_cache / "reviews.sqlite")
    history = store.history(fingerprint)
    sources = history["source"].tolist()
    cold = sources[:CONFIG.refit_every]  # the cold start: the detector's order, every 10th pick random
    assert cold.count("queue:random") == CONFIG.refit_every // CONFIG.random_every
    assert cold.count("queue:detector") == CONFIG.refit_every - cold.count("queue:random")
    assert "queue:model" in sources[CONFIG.refit_every:CONFIG.refit_every + 5]  # then the model's picks
    assert sources.count("suggestion") == pending and history["action_id"][history["source"] == "suggestion"].nunique() == 1
    log = [json.loads(line) for line in refit_log_path(isolated_cache / "reviews.sqlite").read_text().splitlines()]
    assert log[0]["fitted_on_verdicts"] == CONFIG.refit_every
    accepted = store.relabels(fingerprint)
    exported = {path: entry["label"] for path, entry in manifest["relabelled"].items()}
    assert {p: accepted[p] for p in exported} == exported and len(exported) >= 1
    assert {e["source"] for e in manifest["relabelled"].values()} <= {"suggestion", "review"}
