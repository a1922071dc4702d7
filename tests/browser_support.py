"""Start the real app and a headless Chromium for end-to-end tests (skipped when either is missing)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parent.parent
SHOTS = Path(os.environ.get("PRUNESCOPE_SCREENSHOTS", "/tmp/prunescope-screenshots"))
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


def chromium_path() -> str:
    path = os.environ.get("PRUNESCOPE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        missing = "chromium is not installed (scripts/test.sh installs Debian's chromium)"
        if os.environ.get("CI") == "true":  # CI must run every real-browser test, never skip them
            pytest.fail(missing)
        pytest.skip(missing)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_app(cache_dir: Path, timeout: float = 90.0) -> Iterator[str]:
    """Run the app (as `prunescope app` does) on a free loopback port with its own result store; yield its URL."""
    port = free_port()
    env = {**os.environ, "PRUNESCOPE_CACHE": str(cache_dir), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "ui.launch", "--server.headless", "true",
           "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none"]
    log = open(cache_dir / f"streamlit-{port}.log", "w")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            try:
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"streamlit did not start: {(cache_dir / f'streamlit-{port}.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield url
    finally:
        stop_process(proc, log, timeout=10)


def stop_process(proc: subprocess.Popen, log, *, timeout: float) -> None:
    """Ask a server started by a test to stop, kill it after ``timeout`` seconds, and close its log."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@contextmanager
def browser_page(width: int = 1400, height: int = 1000):
    """A Playwright page in Debian's chromium (Playwright's own browser download is not possible here)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    executable = chromium_path()
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            yield page
        finally:
            browser.close()


def wait_idle(page, timeout: float = 240) -> None:
    """Until Streamlit's running indicator has been gone for a second."""
    deadline, quiet = time.time() + timeout, 0
    while time.time() < deadline:
        quiet = 0 if page.locator('[data-testid="stStatusWidget"]').count() else quiet + 1
        if quiet >= 4:
            return
        page.wait_for_timeout(250)
    raise TimeoutError("the app stayed busy")


def open_page(page, name: str) -> None:
    page.get_by_role("link", name=name).click()
    page.wait_for_timeout(300)
    wait_idle(page)


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"))


@contextmanager
def app_page(cache_dir: Path, name: str, *, height: int = 1300, fresh_reviews: bool = True):
    """A fresh server and browser opened on page ``name`` (with no reviewer decisions yet, by default)."""
    if fresh_reviews:
        (cache_dir / "reviews.sqlite").unlink(missing_ok=True)
    with running_app(cache_dir) as url, browser_page(height=height) as page:
        page.goto(url)
        wait_idle(page)
        open_page(page, name)
        yield page


MAP_IFRAME = 'iframe[title*="prunescope_map"]'  # the Explore map (ui/map_component)


def map_frame(page, timeout: float = 240_000):
    """The map component's frame once its points are drawn."""
    page.locator(MAP_IFRAME).first.wait_for(timeout=timeout)
    frame = next(f for f in page.frames if "prunescope_map" in f.url)
    frame.wait_for_function("window.mapReady", timeout=timeout)
    return frame


def isolated_point(frame) -> dict:
    """The screen position (inside the iframe) and row of the drawn point farthest from any other."""
    return frame.evaluate("""() => {
        const gd = document.getElementById('map'), fl = gd._fullLayout, pts = [];
        gd._fullData.forEach((t, c) => { for (let i = 0; i < t.x.length; i++)
            pts.push([fl.xaxis.l2p(t.x[i]) + fl.margin.l, fl.yaxis.l2p(t.y[i]) + fl.margin.t, c, i]); });
        let best = null, bestGap = -1;
        for (const p of pts) {
            let gap = Infinity;
            for (const q of pts) if (q !== p) gap = Math.min(gap, Math.hypot(p[0] - q[0], p[1] - q[1]));
            if (gap > bestGap) { bestGap = gap; best = p; }
        }
        return {x: best[0], y: best[1], row: window.mapRowAt(best[2], best[3]), gap: bestGap};
    }""")


def umap_frame(page):
    """The map's frame once the UMAP (not the PCA preview) is drawn and the page is idle."""
    map_frame(page)
    page.get_by_text("A PCA preview").wait_for(state="detached", timeout=240_000)
    wait_idle(page)
    return map_frame(page)
