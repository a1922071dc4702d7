"""Regenerate the README's Evaluate figure: the demo's default grid, from the CLI and then on the page.

    python bench/evaluate_figure.py --cache /tmp/prunescope-figure [--out docs/evaluate.png]

1. ``prunescope score demo`` (CLIP scores, what the app computes on the demo by itself);
2. ``prunescope evaluate demo --scores ...`` with every Evaluate default (strategies easiest, ccs and
   random, keep 0.3/0.5/0.7/0.9, 2 seeds, equal steps, planned to the default time budget): prints the
   plan, the summary table the README caption is written from, and the wall time;
3. the app on the same result store, in headless chromium: Evaluate -> Train and compare (every run
   comes from step 2's cache, the plan reuses its throughput probe) -> a screenshot of the chart.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from browser_support import browser_page, running_app  # noqa: E402


def prunescope(cache: Path, *args: str) -> None:
    cmd = [sys.executable, "-m", "pruning_core.cli", "--cache-dir", str(cache), *args]
    print("$", " ".join(cmd[3:]), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO, env={**os.environ, "PRUNESCOPE_CACHE": str(cache)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, required=True, help="result store shared by the CLI and the app")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "evaluate.png")
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    scores = args.cache / "demo-scores.parquet"
    prunescope(args.cache, "score", "demo", "--out", str(scores))
    t0 = time.perf_counter()
    prunescope(args.cache, "evaluate", "demo", "--scores", str(scores), "--out", str(args.cache / "curves.csv"))
    print(f"evaluate (defaults) wall: {time.perf_counter() - t0:.1f} s", flush=True)

    with running_app(args.cache, timeout=180) as url, browser_page(width=1300, height=1600) as page:
        page.goto(f"{url}/evaluate")
        page.get_by_role("button", name="Train and compare").wait_for(timeout=300_000)
        page.get_by_text("Plan:", exact=False).first.wait_for(timeout=300_000)
        page.get_by_role("button", name="Train and compare").click()
        page.get_by_text("Proxy:", exact=False).first.wait_for(timeout=600_000)
        page.wait_for_timeout(2000)
        chart = page.locator(".js-plotly-plot").first
        chart.scroll_into_view_if_needed()
        chart.screenshot(path=str(args.out))
        print(page.get_by_text("Proxy:", exact=False).first.inner_text())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
