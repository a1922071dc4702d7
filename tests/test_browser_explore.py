"""The Explore map in a real browser on the demo: a PCA preview at once, the UMAP swapped in, a thumbnail on
hover (the hovered sample's own image), and a lasso selection that fills the actions below the map."""

import base64
import io
import time

import numpy as np
import pytest

from browser_support import (MAP_IFRAME, app_page, browser_page, isolated_point, map_frame, open_page, running_app, shot,
                             umap_frame, wait_idle)

pytestmark = pytest.mark.browser

def test_hovering_a_point_shows_its_own_thumbnail(demo_assets, isolated_cache):
    from PIL import Image

    from pruning_core.data.datasets import load_dataset
    from ui.map_component import PREFETCH_BATCH, THUMB_SIZE

    samples = load_dataset(demo_assets.manifest, root=demo_assets.root).samples
    with app_page(isolated_cache, "Explore", height=1300) as page:
        frame = umap_frame(page)
        # nothing hovered yet: the idle map has asked for thumbnails around its view on its own
        frame.wait_for_function(f"() => window.mapThumbs() >= {2 * PREFETCH_BATCH}", timeout=60_000)
        point = isolated_point(frame)
        box = page.locator(MAP_IFRAME).first.bounding_box()
        start = time.time()
        for dx in (3, 1, 0):  # plotly hovers on mouse movement
            page.mouse.move(box["x"] + point["x"] + dx, box["y"] + point["y"])
            page.wait_for_timeout(150)
        thumb = frame.locator(f'#tip img.map-thumb[data-row="{point["row"]}"]')
        thumb.wait_for(timeout=30_000)
        print(f"thumbnail shown {time.time() - start:.2f} s after the pointer arrived (0.45 s of it moving)")
        shot(page, "explore-hover")
        path = samples.loc[point["row"], "path"]
        assert thumb.get_attribute("alt") == path
        name = path.rsplit("/", 1)[-1]
        assert f"row {point['row']} · {name} · {samples.loc[point['row'], 'label']}" in frame.locator("#tip").inner_text()
        src = thumb.get_attribute("src")
        assert src.startswith("data:image/jpeg;base64,")  # inline: no file URL the browser could vary
        shown = np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB"), float)
        assert max(shown.shape[:2]) == THUMB_SIZE
        own = Image.open(demo_assets.root / path).convert("RGB")
        other = Image.open(demo_assets.root / samples.loc[(point["row"] + 1) % len(samples), "path"]).convert("RGB")

        def distance(image):
            return np.abs(np.asarray(image.resize(shown.shape[1::-1], Image.NEAREST), float) - shown).mean()

        assert distance(own) < 8 < distance(other), (distance(own), distance(other))


def test_lasso_selection_fills_the_actions_below_and_one_undo_reverts_the_removal(demo_assets, isolated_cache):
    from pruning_core.audit.review import BulkConfig, DecisionStore
    from pruning_core.data.datasets import load_dataset

    dataset = load_dataset(demo_assets.manifest)
    (isolated_cache / "reviews.sqlite").unlink(missing_ok=True)
    store = DecisionStore(isolated_cache / "reviews.sqlite")
    store.decide_many(dataset.fingerprint, dataset.samples["path"][::9], "keep")  # decisions the removal overrides
    store.decide(dataset.fingerprint, dataset.samples["path"][4], "relabel", new_label=dataset.classes[0],
                 classes=dataset.classes)
    columns = ["path", "action", "new_label"]
    before = store.latest(dataset.fingerprint)[columns].sort_values("path").reset_index(drop=True)
    with app_page(isolated_cache, "Explore", height=1300, fresh_reviews=False) as page:
        frame = umap_frame(page)
        box = page.locator(MAP_IFRAME).first.bounding_box()
        plot = frame.evaluate("() => { const s = document.querySelector('.nsewdrag').getBoundingClientRect();"
                              " return {x: s.x, y: s.y, w: s.width, h: s.height}; }")
        cx, cy = box["x"] + plot["x"] + plot["w"] / 2, box["y"] + plot["y"] + plot["h"] / 2
        r = min(plot["w"], plot["h"]) / 4
        page.mouse.move(cx - r, cy - r)
        page.mouse.down()
        for px, py in ((cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r), (cx - r, cy - r)):
            page.mouse.move(px, py, steps=8)
        page.mouse.up()
        heading = page.get_by_role("heading", name="Selection:")
        heading.wait_for(timeout=60_000)
        wait_idle(page)
        n = int(heading.inner_text().split(":")[1].split()[0].replace(",", ""))
        inside = frame.evaluate("""([x0, y0, r]) => { const gd = document.getElementById('map'), fl = gd._fullLayout;
            let n = 0; gd._fullData.forEach(t => { for (let i = 0; i < t.x.length; i++) {
                const px = fl.xaxis.l2p(t.x[i]) + fl.margin.l, py = fl.yaxis.l2p(t.y[i]) + fl.margin.t;
                if (Math.abs(px - x0) < r && Math.abs(py - y0) < r) n++; } }); return n; }""",
                                [cx - box["x"], cy - box["y"], r])
        shot(page, "explore-lasso")
        assert inside > 0 and abs(n - inside) <= 2 + inside // 100, (n, inside)  # the points inside the lasso
        page.get_by_role("button", name="Send to review queue").wait_for()
        assert page.get_by_test_id("stImage").count() >= min(n, 48)  # the gallery shows them
        page.get_by_role("button", name=f"Remove {n:,}").click()  # the action bar records a decision per sample
        if n > BulkConfig().confirm_above:  # a large selection asks first
            page.get_by_role("button", name="Confirm").click()
        page.get_by_text(f"Recorded {n:,} removals").wait_for(timeout=30_000)
        latest = store.latest(dataset.fingerprint)
        removed = latest[latest["action"] == "remove"]
        assert len(removed) == n and not set(removed["path"]) - set(dataset.samples["path"])
        assert len(set(removed["path"]) & set(before["path"])) > 0  # the removal overrode earlier decisions
        wait_idle(page)
        page.get_by_role("button", name="Undo the last action").click()  # the whole removal, in one step
        page.get_by_text(f"undid one action: {n:,} decisions").wait_for(timeout=30_000)
        after = store.latest(dataset.fingerprint)[columns].sort_values("path").reset_index(drop=True)
        assert after.equals(before), (len(after), len(before))
        open_page(page, "Dataset")  # the map's iframe goes; coming back, the new one asks for its points
        open_page(page, "Explore")
        assert map_frame(page, timeout=60_000).evaluate("() => window.mapRowAt(0, 0)") is not None
        page.get_by_role("heading", name="Lasso or box-select points to see them here").wait_for()  # as Streamlit
        # forgets a widget's value when its page is left, the selection starts afresh (map and page agree)


def test_explore_draws_a_preview_at_once_and_swaps_in_the_umap(demo_assets, isolated_cache):
    """No numba pause: with no UMAP cached, a fresh server shows a PCA preview, then the background UMAP."""
    from cache.store import ResultStore

    ResultStore(isolated_cache).clear("umap")
    with running_app(isolated_cache) as url, browser_page(height=1300) as page:
        page.goto(url)
        wait_idle(page)
        start = time.time()
        page.get_by_role("link", name="Explore").click()
        map_frame(page, timeout=60_000)
        first_paint = time.time() - start
        shot(page, "explore-preview")
        preview = page.get_by_text("A PCA preview").count()
        page.get_by_text("A PCA preview").wait_for(state="detached", timeout=240_000)
        map_frame(page, timeout=60_000)
        print(f"first paint {first_paint:.1f} s; UMAP in {time.time() - start:.1f} s; preview shown: {preview}")
        assert preview  # the map did not wait for the UMAP
    assert [e.meta["step"] for e in ResultStore(isolated_cache).ls()].count("umap") == 1  # fitted once, cached
