"""What a person waits for on the demo, in a real browser: a hover thumbnail and a keep-slider step.

    PYTHONPATH=. python bench/bench_page_latency.py [--cache ~/.cache/prunescope] [--repeats 5]

Starts the app on a free loopback port over a result store that holds the demo (built and scored once
by `bash scripts/start.sh`; a fresh store builds it first, which takes minutes), drives headless
Chromium, and prints, per repeat:

- hover: from the pointer coming to rest on a point to its thumbnail in the tooltip, for the map's most
  isolated point (the first hover in a region: one page rerun) and then its nearest neighbours (sent
  with that rerun) (issue 27's target: ≤ 400 ms on an idle machine);
- slider: from one ArrowLeft on Prune's "Keep fraction" to the kept count on the page changing
  (target ≤ 500 ms).

Run it on an idle machine and say the load (`uptime`) beside the figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from browser_support import (MAP_IFRAME, browser_page, isolated_point, open_page, running_app,  # noqa: E402
                             umap_frame, wait_idle)


NEAREST_JS = """([x0, y0, k]) => {
    const gd = document.getElementById('map'), fl = gd._fullLayout, pts = [];
    gd._fullData.forEach((t, c) => { for (let i = 0; i < t.x.length; i++) {
        const x = fl.xaxis.l2p(t.x[i]) + fl.margin.l, y = fl.yaxis.l2p(t.y[i]) + fl.margin.t;
        pts.push({x, y, row: window.mapRowAt(c, i), d: Math.hypot(x - x0, y - y0)}); } });
    return pts.sort((a, b) => a.d - b.d).slice(1, k + 1);
}"""


def hover_times(page, repeats: int) -> tuple[float, list[float]]:
    """Seconds from the pointer resting on a point to its thumbnail: the map's most isolated point (a
    cold hover: one page rerun), then ``repeats`` of its nearest neighbours, one after another."""
    frame = umap_frame(page)
    first = isolated_point(frame)
    box = page.locator(MAP_IFRAME).first.bounding_box()

    def rest_on(point: dict) -> float:
        page.mouse.move(5, 5)  # off the map: the tooltip goes
        frame.locator("#tip img.map-thumb").wait_for(state="hidden", timeout=30_000)
        page.mouse.move(box["x"] + point["x"] + 1, box["y"] + point["y"])
        page.mouse.move(box["x"] + point["x"], box["y"] + point["y"])  # rests here
        start = time.perf_counter()
        frame.locator(f'#tip img.map-thumb[data-row="{point["row"]}"]').wait_for(timeout=30_000)
        return time.perf_counter() - start

    cold = rest_on(first)
    wait_idle(page)
    return cold, [rest_on(p) for p in frame.evaluate(NEAREST_JS, [first["x"], first["y"], repeats])]


def slider_times(page, repeats: int) -> list[float]:
    """Seconds from one keyboard step of the keep slider to the kept count on the page changing, per step."""
    count = page.get_by_text(" of 2,395").first
    count.wait_for(timeout=120_000)
    times = []
    for _ in range(repeats):
        before = count.inner_text()
        page.get_by_role("slider", name="Keep fraction").focus()
        start = time.perf_counter()
        page.keyboard.press("ArrowLeft")
        page.wait_for_function("([t]) => ![...document.querySelectorAll('p,div,span')].some("
                               "e => e.childElementCount === 0 && e.textContent === t)", arg=[before], timeout=30_000)
        times.append(time.perf_counter() - start)
        wait_idle(page)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("PRUNESCOPE_CACHE", "~/.cache/prunescope")))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    cache = args.cache.expanduser()
    with running_app(cache) as url, browser_page(height=1300) as page:
        page.goto(url)
        wait_idle(page)
        open_page(page, "Explore")
        cold, nearby = hover_times(page, args.repeats)
        open_page(page, "Prune")
        slider = slider_times(page, args.repeats)
    print(f"hover thumbnail, a new region (one page rerun): {cold * 1000:.0f} ms")
    for name, times in (("hover thumbnail, the next points nearby", nearby), ("keep-slider step", slider)):
        print(f"{name}: median {statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms "
              f"({', '.join(f'{t * 1000:.0f}' for t in times)} ms)")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
