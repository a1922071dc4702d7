"""The Overview in a real browser on the demo: a flip-matrix cell opens exactly its samples in Review,
a decision there shrinks the cell, and a near-duplicate group is resolved in one click."""

import re

import pytest

from browser_support import app_page, open_page, shot, wait_idle

pytestmark = pytest.mark.browser


def first_flip_cell(page):
    """The first clickable flip-matrix cell: its key (given_suggested) and its count."""
    cell = page.locator('[class*="st-key-flip_"]').first
    cell.wait_for(timeout=240_000)
    key = re.search(r"st-key-(flip_\S+)", cell.get_attribute("class")).group(1)
    return key, int(cell.inner_text().strip())


def demo_scores(demo_assets, cache):
    """The demo's dataset and CLIP score table as the app computed them (read back from the result store)."""
    from cache.store import ResultStore
    from pruning_core.data.datasets import load_dataset
    from pruning_core.scoring.pipeline import base_table, clip_score_table
    from ui.state import demo_clip_config

    dataset = load_dataset(demo_assets.manifest)
    return dataset, base_table(dataset).merged(clip_score_table(dataset, demo_clip_config(demo_assets),
                                                                ResultStore(cache))).frame


def decisions(dataset, cache) -> dict[str, str]:
    """Path -> latest action in the app's decision store."""
    from pruning_core.audit.review import DecisionStore

    latest = DecisionStore(cache / "reviews.sqlite").latest(dataset.fingerprint)
    return dict(zip(latest["path"], latest["action"]))


def open_count(page) -> int:
    """The 'N open' under the Likely mislabelled metric."""
    metric = page.get_by_test_id("stMetric").filter(has_text="Likely mislabelled").first
    return int(re.search(r"([\d,]+) open", metric.inner_text()).group(1).replace(",", ""))


def test_flip_cell_reviews_exactly_its_samples_and_the_count_drops(demo_assets, isolated_cache):
    from pruning_core.audit.overview import flip_rows, mislabels

    with app_page(isolated_cache, "Overview", height=1400) as page:
        key, n = first_flip_cell(page)
        _, given, suggested = key.split("_", 2)
        open_before = open_count(page)
        dataset, frame = demo_scores(demo_assets, isolated_cache)
        mis = mislabels(frame)
        expected = frame.loc[flip_rows(frame, frame.index[mis.mask], mis.suggested, given, suggested), "path"]
        assert len(expected) == n  # the cell counts its samples (none decided yet)
        shot(page, "overview")
        page.locator(f".st-key-{key} button").first.click()
        page.get_by_text(f"0 of {n} reviewed").wait_for(timeout=60_000)  # exactly the cell's samples
        wait_idle(page)
        shot(page, "overview-review-queue")
        queue = page.get_by_test_id("stSelectbox").first.evaluate(
            "e => e.innerText + ' ' + Array.from(e.querySelectorAll('input')).map(i => i.value).join(' ')")
        assert f"{given} → {suggested} ({n})" in queue, queue  # the queue names the cell
        page.get_by_role("heading", name=f"Given label: {given}").wait_for()
        shown = page.get_by_test_id("stImageCaption").first.inner_text().split(" · ")[0]
        assert shown in set(expected), shown
        page.get_by_role("tab", name="Grid").click()
        captions = page.get_by_test_id("stImageCaption").filter(has_text=re.compile(r"row \d+ ·"))
        captions.first.wait_for(timeout=30_000)
        rows = {int(re.search(r"row (\d+) ·", t).group(1)) for t in captions.all_inner_texts()}
        assert set(frame.loc[sorted(rows), "path"]) == set(expected)  # the grid holds exactly the cell's samples
        shot(page, "overview-review-grid")
        page.get_by_role("tab", name="One at a time").click()
        page.get_by_role("button", name="Remove (r)").last.click()
        page.get_by_text(f"1 of {n} reviewed").wait_for(timeout=30_000)
        wait_idle(page)
        shot(page, "overview-review")
        assert decisions(dataset, isolated_cache) == {shown: "remove"}  # the sample shown, and only it
        open_page(page, "Overview")
        page.locator(f".st-key-{key} button").first.wait_for(timeout=60_000)
        shot(page, "overview-after")
        assert int(page.locator(f".st-key-{key}").first.inner_text().strip()) == n - 1
        assert open_count(page) == open_before - 1


def test_duplicate_group_resolved_in_one_action(demo_assets, isolated_cache):
    with app_page(isolated_cache, "Overview", height=1400) as page:
        label = page.get_by_text(re.compile(r"Group \(\d+ of \d+ still open\)"))
        label.wait_for(timeout=240_000)
        before = int(re.search(r"\((\d+) of", label.inner_text()).group(1))
        page.locator(".st-key-dup_resolve button").first.scroll_into_view_if_needed()
        shot(page, "overview-duplicates")
        chosen = page.get_by_test_id("stSelectbox").filter(has_text="still open").first.evaluate(
            "e => e.innerText + ' ' + Array.from(e.querySelectorAll('input')).map(i => i.value).join(' ')")
        gid = int(re.search(r"group (\d+) · cosine", chosen).group(1))
        assert "images · duplicate" in chosen, chosen  # the most similar group first: a pixel-checked copy
        page.locator(".st-key-dup_resolve button").first.click()
        page.get_by_text(f"Group ({before - 1} of").wait_for(timeout=60_000)
        wait_idle(page)
        page.get_by_text(re.compile(r"Kept row \d+ · \S+, removed \d+")).first.wait_for(timeout=10_000)
        shot(page, "overview-duplicates-resolved")
    dataset, frame = demo_scores(demo_assets, isolated_cache)
    members = frame.index[frame["clip.duplicate_group"] == gid]
    assert len(members) >= 2
    # one action, recorded as one decision per member: the first (the default choice) kept, the rest removed
    assert decisions(dataset, isolated_cache) == {frame.at[r, "path"]: "keep" if r == members[0] else "remove"
                                                 for r in members}

