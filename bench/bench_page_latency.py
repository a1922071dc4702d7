"""What a person waits for on the demo, in a real browser: a hover thumbnail and a keep-slider step.

    PYTHONPATH=. python bench/bench_page_latency.py [--cache ~/.cache/prunescope] [--repeats 5]

Starts the app on a free loopback port over a result store that holds the demo (built and scored once
by `bash scripts/start.sh`; a fresh store builds it first, which takes minutes), drives headless
Chromium, and prints, per repeat:

- prefetch: how many thumbnails the map holds once the page is idle (the idle-time prefetch,
  `ui/map_component.PREFETCH_BATCH` a rerun) and how long after the map was drawn it held them;
- hover: from the pointer coming to rest on a point to its thumbnail in the tooltip, for the map's most
  isolated point and the points nearest its four quadrants' centres (first hovers in regions nothing was hovered in yet) and then
  the isolated point's nearest neighbours (issue 27's target: ≤ 400 ms on an idle machine);
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


QUADRANTS_JS = """() => {
    const gd = document.getElementById('map'), fl = gd._fullLayout, pts = [];
    gd._fullData.forEach((t, c) => { for (let i = 0; i < t.x.length; i++)
        pts.push({x: fl.xaxis.l2p(t.x[i]) + fl.margin.l, y: fl.yaxis.l2p(t.y[i]) + fl.margin.t,
                  row: window.mapRowAt(c, i)}); });
    const w = fl.xaxis._length, h = fl.yaxis._length;
    return [[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]].map(([fx, fy]) => {
        const cx = fl.margin.l + fx * w, cy = fl.margin.t + fy * h;
        return pts.reduce((a, b) => (Math.hypot(b.x - cx, b.y - cy) < Math.hypot(a.x - cx, a.y - cy) ? b : a));
    });
}"""


def prefetched(frame, quiet_s: float = 3.0, timeout_s: float = 120.0) -> tuple[int, float]:
    """The thumbnails the map holds once their count has not grown for ``quiet_s``, and the seconds until
    it last grew (from this call, i.e. from the drawn, idle map)."""
    start = last_change = time.perf_counter()
    count = frame.evaluate("window.mapThumbs()")
    while time.perf_counter() - last_change < quiet_s and time.perf_counter() - start < timeout_s:
        time.sleep(0.1)
        now = frame.evaluate("window.mapThumbs()")
        if now != count:
            count, last_change = now, time.perf_counter()
    return count, last_change - start


def hover_times(page, repeats: int) -> tuple[int, float, list[float], list[float]]:
    """The prefetch (:func:`prefetched`), then seconds from the pointer resting on a point to its thumbnail:
    the map's most isolated point and the points nearest its four quadrants' centres (first hovers in new regions), then ``repeats``
    of the isolated point's nearest neighbours, one after another."""
    frame = umap_frame(page)
    held, filled_s = prefetched(frame)
    first = isolated_point(frame)
    box = page.locator(MAP_IFRAME).first.bounding_box()

    def rest_on(point: dict) -> float:
        page.mouse.move(5, 5)  # off the map: the tooltip goes
        frame.locator("#tip img.map-thumb").wait_for(state="hidden", timeout=30_000)
        page.mouse.move(box["x"] + point["x"] + 1, box["y"] + point["y"])
        page.mouse.move(box["x"] + point["x"], box["y"] + point["y"])  # rests here
        start = time.perf_counter()
        # the hovered point's thumbnail: plotly may pick a point drawn on top of the aimed one (same pixel)
        frame.locator("#tip img.map-thumb").wait_for(timeout=30_000)
        return time.perf_counter() - start

    cold = [rest_on(first)]
    for point in frame.evaluate(QUADRANTS_JS):
        wait_idle(page)
        cold.append(rest_on(point))
    wait_idle(page)
    return held, filled_s, cold, [rest_on(p) for p in frame.evaluate(NEAREST_JS, [first["x"], first["y"], repeats])]


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
        held, filled_s, cold, nearby = hover_times(page, args.repeats)
        open_page(page, "Prune")
        slider = slider_times(page, args.repeats)
    print(f"prefetch: {held:,} thumbnails held, the last received {filled_s:.1f} s after the map was idle")
    for name, times in (("hover thumbnail, first in a region (isolated point, then 4 quadrants)", cold),
                        ("hover thumbnail, the next points nearby", nearby), ("keep-slider step", slider)):
        print(f"{name}: median {statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms "
              f"({', '.join(f'{t * 1000:.0f}' for t in times)} ms)")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
