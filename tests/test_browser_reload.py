"""A reload (or a shared link) opens the same view: the dataset and the Prune recipe live in the URL."""

import pytest
from playwright.sync_api import expect

from browser_support import app_page, open_page, wait_idle

pytestmark = pytest.mark.browser


def test_reload_on_prune_keeps_the_dataset_and_the_recipe(demo_assets, isolated_cache):
    with app_page(isolated_cache, "Prune") as page:
        page.get_by_role("heading", name="At the cut").wait_for(timeout=240_000)  # the demo, scored
        open_page(page, "Dataset")  # the same files as a manifest: a dataset the default would not pick
        page.get_by_text("CSV / parquet manifest").click()
        page.get_by_label("Manifest (columns path,label[,caption])").fill(str(demo_assets.manifest))
        page.get_by_label("Manifest (columns path,label[,caption])").press("Enter")
        wait_idle(page)
        page.get_by_role("button", name="Load dataset").click()
        wait_idle(page)
        open_page(page, "Prune")
        page.get_by_text("count", exact=True).click()
        wait_idle(page)
        page.get_by_label("Keep count").fill("1234")
        page.get_by_label("Keep count").press("Enter")
        page.get_by_text("Kept1,234 of").or_(page.get_by_text("1,234 of")).first.wait_for(timeout=60_000)
        wait_idle(page)
        assert "recipe=" in page.url and "dataset=manifest" in page.url

        page.reload()
        wait_idle(page)
        page.get_by_role("heading", name="At the cut").wait_for(timeout=240_000)
        wait_idle(page)  # on a busy machine the first render after a reload can come before the URL's recipe is read
        expect(page.get_by_label("Keep count")).to_have_value("1234", timeout=30_000)  # the recipe came back
        open_page(page, "Dataset")
        assert page.get_by_label("Manifest (columns path,label[,caption])").input_value() == str(demo_assets.manifest)
        assert page.get_by_text("Currently loaded").count() == 0  # the loaded dataset is the manifest, not the demo
