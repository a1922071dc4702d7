"""The shared HTML report in a real (headless) Chromium: it loads nothing but itself, and its numbers are the
Overview page's on the same scores and decisions."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from browser_support import browser_page, shot
from pruning_core.audit.review import DecisionStore
from pruning_core.cli import main
from report_fixtures import make_report_table
from ui import state

pytestmark = pytest.mark.browser
REPO = Path(__file__).resolve().parent.parent


def test_html_report_requests_nothing_and_shows_the_overviews_numbers(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNESCOPE_CACHE", str(tmp_path / "cache"))
    dataset, manifest, table = make_report_table(tmp_path)
    flagged = table.frame.index[table.frame["clip.zero_shot_margin"] > 0.5]
    reviews = DecisionStore()
    reviews.decide(dataset.fingerprint, table.frame.at[flagged[0], "path"], "keep")  # one fewer open

    at = AppTest.from_file(str(REPO / "pages" / "overview.py"), default_timeout=90)
    at.session_state[state.DATASET] = state.DatasetSource("manifest", str(manifest))
    at.session_state[state.TABLE] = table
    at.run()
    assert not at.exception
    shown = {m.label: (m.value, m.delta) for m in at.metric}
    assert "Dark images" in shown and "Near-duplicate groups" in shown

    scores, out = tmp_path / "scores.parquet", tmp_path / "report.html"
    table.save(scores)
    assert main(["report", str(scores), "--data", str(manifest), "--decisions", str(reviews.path),
                 "--out", str(out)]) == 0

    requests = []
    with browser_page(height=2200) as page:
        page.on("request", lambda r: requests.append(r.url))
        page.goto(out.as_uri())
        page.wait_for_load_state("networkidle")
        rows = page.locator("#findings tr[data-kind]").evaluate_all(
            "rows => rows.map(r => [r.cells[0].innerText, r.querySelector('.headline').innerText,"
            " r.querySelector('.count').innerText, r.querySelector('.open').innerText, r.dataset.kind])")
        samples = page.locator("#samples").inner_text()
        broken = page.locator("img").evaluate_all("imgs => imgs.filter(i => !i.complete || !i.naturalWidth).length")
        images = page.locator("img").count()
        shot(page, "report")
    assert requests == [out.as_uri()]  # the file itself and nothing else: no CSS, script, font or image fetched
    assert images >= 5 and broken == 0  # the duplicate groups' thumbnails are embedded and decode
    assert samples == f"{len(table.frame):,}"
    report = {title.split(" (")[0]: (headline, f"{count} flagged · {open_} open", kind)
              for title, headline, count, open_, kind in rows}
    for title, (value, delta) in shown.items():
        headline, flagged_open, kind = report[title]
        assert headline == value, title
        if kind != "unreadable":
            assert flagged_open == delta, title
    assert set(report) == set(shown)
    assert report["Likely mislabelled"][1] == f"{len(flagged)} flagged · {len(flagged) - 1} open"
