"""The Score page's dynamics plan against its wall time, beside CPU-bound competitors, in a real browser.

    PYTHONPATH=. python bench/bench_score_page.py [--cache ~/.cache/prunescope] [--busy 1]

Issue 27's target: with one CPU-bound process competing for the 2 cores, the Score page's plan and the run's
wall time within 20 % of each other.  The demo's result store (built by `bash scripts/start.sh`) is copied
without its throughput probes and dynamics records (so the page probes again under the load and trains),
``--busy`` Python busy loops are started, the app runs on a free loopback port, and headless Chromium opens
the Score page with its defaults, reads the plan line ("about X for N samples (+ Y loading, probing and
decoding)"), clicks "Compute dynamics scores" and waits for the job to end (its Cancel button goes).  Wall = click
to that.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from browser_support import browser_page, open_page, running_app, wait_idle  # noqa: E402

KEPT_ENTRIES = ("clip-images-", "clip-scores-", "clip-texts-", "images-", "umap-")
"""Result-store entries copied from the demo's store: its CLIP work, not the probes or dynamics records."""


def seconds(text: str) -> float:
    """``format_seconds``'s text back to seconds ("53 s", "1.6 min")."""
    value, unit = text.split()
    return float(value) * (60 if unit == "min" else 1)


def copy_store(source: Path, target: Path) -> None:
    for name in ("demo", "workspace"):
        if (source / name).exists():
            shutil.copytree(source / name, target / name, symlinks=True)
    (target / "entries").mkdir()
    for entry in (source / "entries").iterdir():
        if entry.name.startswith(KEPT_ENTRIES):
            shutil.copytree(entry, target / "entries" / entry.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("PRUNESCOPE_CACHE", "~/.cache/prunescope")))
    parser.add_argument("--busy", type=int, default=1, help="CPU-bound competing processes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="prunescope-score-page-") as tmp:
        store = Path(tmp)
        copy_store(args.cache.expanduser(), store)
        competitors = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
        try:
            with running_app(store) as url, browser_page(height=1300) as page:
                page.goto(url)
                wait_idle(page)
                open_page(page, "Score")
                plan_box = page.get_by_text("Plan:").first
                plan_box.wait_for(timeout=300_000)
                plan = plan_box.locator("xpath=ancestor::div[@data-testid='stAlertContainer'][1]").inner_text()
                found = re.search(r"about ([\d.]+ (?:s|min)) for [\d,]+ samples(?: \(\+ ([\d.]+ (?:s|min)) loading)?", plan)
                planned = seconds(found.group(1)) + (seconds(found.group(2)) if found.group(2) else 0.0)
                start = time.perf_counter()
                page.get_by_role("button", name="Compute dynamics scores").click()
                cancel = page.get_by_role("button", name="Cancel")  # shown only while the job runs
                cancel.wait_for(timeout=60_000)
                cancel.wait_for(state="detached", timeout=900_000)
                wall = time.perf_counter() - start
                page.get_by_text("scores for").first.wait_for(timeout=60_000)
        finally:
            for proc in competitors:
                proc.kill()
    print(f"plan: {plan.strip()}")
    print(f"planned {planned:.0f} s, wall {wall:.1f} s (click to the job's end): wall / plan = {wall / planned:.2f}; "
          f"{args.busy} busy process(es), load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
