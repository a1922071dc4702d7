"""Review and Prune/Export in a real browser on the demo (Playwright + Debian chromium); the Explore map's
hover and lasso are tests/test_browser_explore.py."""

import pandas as pd
import pytest

from browser_support import app_page, browser_page, open_page, running_app, shot, wait_idle

pytestmark = pytest.mark.browser


def test_review_decisions_survive_an_app_restart(demo_assets, isolated_cache):
    with app_page(isolated_cache, "Review") as page:
        page.get_by_text("0 of 500 reviewed").wait_for(timeout=60_000)
        page.get_by_role("heading", name="Review").first.click()  # focus the page, not an input
        page.keyboard.press("r")  # keyboard shortcut: remove
        page.get_by_text("1 of 500 reviewed").wait_for(timeout=30_000)
        wait_idle(page)
        page.get_by_role("button", name="Keep (k)").last.click()
        page.get_by_text("2 of 500 reviewed").wait_for(timeout=30_000)
        wait_idle(page)
        page.keyboard.press("u")  # undo the keep
        page.get_by_text("1 of 500 reviewed").wait_for(timeout=30_000)
        wait_idle(page)
        shot(page, "review")
    with running_app(isolated_cache) as url, browser_page(height=1300) as page:  # a fresh server process
        page.goto(url)
        wait_idle(page)
        open_page(page, "Review")
        page.get_by_text("1 of 500 reviewed").wait_for(timeout=60_000)
        page.get_by_text("remove 1").first.wait_for(timeout=10_000)


def test_keep_fraction_slider_sets_the_exported_rows(demo_assets, isolated_cache, tmp_path):
    (isolated_cache / "reviews.sqlite").unlink(missing_ok=True)
    with running_app(isolated_cache) as url, browser_page(height=1300) as page:
        page.goto(url)
        wait_idle(page)
        open_page(page, "Prune")
        page.get_by_text("1,916 of 2,395").wait_for(timeout=60_000)  # the default keep=0.80
        thumb = page.get_by_role("slider", name="Keep fraction")
        for _ in range(10):  # 0.80 -> 0.70 in 0.01 steps with the keyboard; each step reruns the page
            thumb.focus()
            page.keyboard.press("ArrowLeft")
            page.wait_for_timeout(150)
            wait_idle(page)
        page.get_by_text("1,916 of 2,395").wait_for(state="detached", timeout=60_000)
        wait_idle(page)
        n = int(page.get_by_text(" of 2,").first.inner_text().split(" of ")[0].replace(",", ""))
        shot(page, "prune")
        open_page(page, "Export")
        with page.expect_download() as info:
            page.get_by_role("button", name="Download kept manifest").click()
        target = tmp_path / "kept.csv"
        info.value.save_as(target)
        shot(page, "export")
    kept = pd.read_csv(target)
    assert len(kept) == n
    assert n == round(0.70 * 2395)  # the slider moved ten steps down from 0.80
