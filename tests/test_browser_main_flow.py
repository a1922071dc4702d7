"""The main flow in a real browser: the app opens on the demo, scores it and shows the UMAP map."""

import pytest

from browser_support import browser_page, map_frame, running_app

pytestmark = pytest.mark.browser


def wait_for_text(page, text: str, timeout: float = 120_000) -> None:
    page.get_by_text(text, exact=False).first.wait_for(timeout=timeout)


def test_demo_dataset_score_explore(demo_assets, isolated_cache, tmp_path):
    with running_app(isolated_cache) as url, browser_page() as page:
        page.goto(url)
        wait_for_text(page, "Samples")  # the Dataset page opened on the built-in demo
        assert page.get_by_text("demo", exact=False).count() > 0

        page.get_by_role("link", name="Score").click()
        page.get_by_role("button", name="Compute CLIP scores").click()
        wait_for_text(page, "scores for")  # the success line; tables render on a canvas, not as DOM text

        page.get_by_role("link", name="Explore").click()
        frame = map_frame(page, timeout=180_000)
        assert frame.locator(".js-plotly-plot canvas").count() > 0
        page.screenshot(path=str(tmp_path / "explore.png"), full_page=True)
        assert not page.get_by_text("Traceback").count()


def test_cancel_stops_a_score_job_and_says_what_is_kept(demo_assets, isolated_cache):
    """Cancel is clicked while proxy training runs: the page stops the job and reports the kept work.

    Cancelling before the proxy-training record is saved keeps the test fast and its outcome the
    same on every run, even with a persistent ``$PRUNESCOPE_TEST_CACHE``.
    """
    with running_app(isolated_cache) as url, browser_page() as page:
        page.goto(url)
        wait_for_text(page, "Samples")
        page.get_by_role("link", name="Score").click()
        page.get_by_role("button", name="Compute dynamics scores").click()
        cancel = page.get_by_role("button", name="Cancel")
        cancel.wait_for(timeout=60_000)  # shown only while the job runs
        cancel.click()
        wait_for_text(page, "Dynamics scores cancelled —", timeout=90_000)
        message = page.get_by_text("Dynamics scores cancelled —").first.inner_text()
        assert "the next run" in message and "proxy-training record" not in message
        cancel.wait_for(state="detached", timeout=30_000)  # once the rerun ends, no job and no Cancel
        assert not page.get_by_text("Traceback").count()
        page.screenshot(path=str(isolated_cache / "score-cancelled.png"))


def test_a_bookmarked_page_opens_with_the_app_navigation(demo_assets, isolated_cache):
    """The first request to a fresh server is a deep link: it must still go through app.py's navigation."""
    with running_app(isolated_cache) as url, browser_page() as page:
        page.goto(f"{url}/evaluate")
        page.get_by_role("heading", name="Evaluate").wait_for(timeout=120_000)
        nav = page.get_by_test_id("stSidebarNav")
        nav.get_by_text("Dataset", exact=True).wait_for(timeout=30_000)
        assert nav.get_by_text("app", exact=True).count() == 0  # no file-name navigation
        assert page.get_by_text("audit and prune image datasets").count() == 1  # app.py's sidebar ran


def test_evaluate_shows_the_plan_then_curves_with_their_proxy(demo_assets, isolated_cache):
    """Evaluate on the demo with the CLIP probe: the plan before training, then bands, marks and the proxy's name."""
    with running_app(isolated_cache) as url, browser_page(height=1600) as page:
        page.goto(f"{url}/evaluate")
        page.get_by_role("heading", name="Evaluate").wait_for(timeout=120_000)
        proxy = page.get_by_test_id("stSelectbox").filter(has_text="Proxy")
        proxy.click()
        page.get_by_role("option", name="linear probe", exact=False).click()
        # the plan for the probe (the first one measures the machine); typing while that run is still going would be
        # overwritten by it, so the seed count is changed once the plan is there
        wait_for_text(page, "26 training runs of a linear probe on", timeout=180_000)
        seeds = page.get_by_role("spinbutton", name="Seeds", exact=True)
        seeds.fill("1")
        seeds.press("Enter")
        wait_for_text(page, "13 training runs of a linear probe on", timeout=180_000)  # the plan, before training
        assert page.locator(".js-plotly-plot").count() == 0
        page.get_by_role("button", name="Train and compare").click()
        wait_for_text(page, "Proxy: linear probe on", timeout=300_000)
        caption = page.get_by_text("Proxy: linear probe on", exact=False).first.inner_text()
        assert "training budget: equal steps" in caption and "mean over 1 seed," in caption
        assert "Not enough seeds to mark a difference" in caption  # one seed: no ★/◆ can mean anything
        page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
        assert page.locator(".js-plotly-plot").count() == 1
        assert not page.get_by_text("Traceback").count()
        page.screenshot(path=str(isolated_cache / "evaluate.png"), full_page=True)
