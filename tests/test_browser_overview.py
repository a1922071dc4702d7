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


def test_flip_cell_reviews_exactly_its_samples_and_the_count_drops(demo_assets, isolated_cache):
    with app_page(isolated_cache, "Overview", height=1400) as page:
        key, n = first_flip_cell(page)
        _, given, suggested = key.split("_", 2)
        shot(page, "overview")
        page.locator(f".st-key-{key} button").first.click()
        page.get_by_text(f"0 of {n} reviewed").wait_for(timeout=60_000)  # exactly the cell's samples
        wait_idle(page)
        shot(page, "overview-review-queue")
        queue = page.get_by_test_id("stSelectbox").first.evaluate(
            "e => e.innerText + ' ' + Array.from(e.querySelectorAll('input')).map(i => i.value).join(' ')")
        assert f"{given} → {suggested} ({n})" in queue, queue  # the queue names the cell
        page.get_by_role("heading", name=f"Given label: {given}").wait_for()
        page.get_by_role("button", name="Remove (r)").last.click()
        page.get_by_text(f"1 of {n} reviewed").wait_for(timeout=30_000)
        wait_idle(page)
        shot(page, "overview-review")
        open_page(page, "Overview")
        page.locator(f".st-key-{key} button").first.wait_for(timeout=60_000)
        assert int(page.locator(f".st-key-{key}").first.inner_text().strip()) == n - 1


def test_duplicate_group_resolved_in_one_action(demo_assets, isolated_cache):
    with app_page(isolated_cache, "Overview", height=1400) as page:
        label = page.get_by_text(re.compile(r"Group \(\d+ of \d+ still open\)"))
        label.wait_for(timeout=240_000)
        before = int(re.search(r"\((\d+) of", label.inner_text()).group(1))
        page.locator(".st-key-dup_resolve button").first.scroll_into_view_if_needed()
        shot(page, "overview-duplicates")
        page.locator(".st-key-dup_resolve button").first.click()
        page.get_by_text(f"Group ({before - 1} of").wait_for(timeout=60_000)
        wait_idle(page)
        page.get_by_text(re.compile(r"Kept row \d+, removed \d+")).first.wait_for(timeout=10_000)

