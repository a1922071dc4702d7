"""Map speed: UMAP of 50,000 x 512 embeddings under the candidate settings, and the first-use compile pause;
with ``--page N``, the server side of an Explore rerun at N points (a colour or selection change).

Synthetic CLIP-like embeddings (a mixture of 10 unit-norm clusters), so it runs anywhere.  Each
variant is fitted twice in the same process after the app's warm-up fit: the first fit of a metric
also compiles pynndescent for it (above 4,096 points), the second is the warm time; side by side,
so the ratios hold whatever the machine's load.

    python bench/bench_map.py --n 50000 --dim 512 --variants before,pca50,default
    python bench/bench_map.py --page 200000
    python bench/bench_map.py --browser 200000

``--page`` times what pages/explore.py calls once the UMAP is cached, on a synthetic score table
(10 classes, 8 scores, 5 % decided, a 20,000-point selection): reading the cached coordinates,
the decision column, the colour flags, the map payload, the JSON Streamlit sends for the
component, and the selection's rows; for three colourings (a score, the label, the decision),
then a hover rerun (no points resent).  Reports the median and max of ``--repeats`` runs, the
bytes sent and the process's peak RSS.  Wall time follows the machine's load; CPU time (one thread:
all of it runs on the script thread) is what the rerun costs on an idle core.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def clustered(n: int, dim: int, clusters: int = 10, seed: int = 0) -> np.ndarray:
    """Unit-norm points around ``clusters`` random centres, spread like CLIP image embeddings."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    x = centres[rng.integers(0, clusters, n)] + 1.2 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


VARIANTS = {
    "before": {"pca_dims": None, "n_epochs": None},  # the app before: cosine on 512 dims, umap's epochs
    "pca50": {"n_epochs": None},  # UMAP on 50 principal components, umap's epochs (200 above 10,000 points)
    "default": {},  # the default now: 50 principal components, 100 epochs
}


def synthetic_table(n: int, seed: int = 0):
    """A score table like the app's: path, label, 8 scores, a suggested label; and 5 % of rows decided."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    classes = np.array([f"class{c}" for c in range(10)])
    label = rng.integers(0, 10, n)
    frame = pd.DataFrame({"path": [f"img/{i:07d}.png" for i in range(n)], "label": classes[label]})
    for j in range(8):
        frame[f"score.s{j}"] = rng.standard_normal(n).astype(np.float32)
    frame["clip.suggested_label"] = np.where(rng.random(n) < 0.1, classes[rng.integers(0, 10, n)], frame["label"])
    decided = rng.choice(n, n // 20, replace=False)
    latest = pd.DataFrame({"path": frame["path"].to_numpy()[decided],
                           "action": rng.choice(["keep", "remove", "relabel"], len(decided))})
    return frame, latest


def page_update(n: int, repeats: int) -> None:
    """Time the server side of Explore reruns at ``n`` points (see the module docstring)."""
    import json
    import resource
    import statistics
    import tempfile

    import pandas as pd

    from cache.steps import Computed
    from cache.store import ResultStore
    from pruning_core.audit.projection import umap_step
    from pruning_core.audit.review import decision_column
    from ui.background import umap_or_start
    from ui.map_component import colour_flags, map_payload

    frame, latest = synthetic_table(n)
    x = clustered(n, 2, clusters=10)  # any 2-D layout: the map's cost does not depend on its shape
    store = ResultStore(tempfile.mkdtemp(prefix="bench-map-"))
    source = {"embedding": "bench"}
    umap_step("bench", source).run(store, lambda: Computed(arrays={"coords": x * 10}))
    selected = sorted(np.random.default_rng(1).choice(n, min(n, 20_000), replace=False).tolist())
    cols = [c for c in frame.columns if c.startswith("score.")]

    def rerun(colour: str) -> int:
        coords, _ = umap_or_start(lambda: None, store, fingerprint="bench", source=source)
        decision = decision_column(frame, latest)
        flags = colour_flags(frame, decision, {})
        payload = map_payload(coords[:, 0], coords[:, 1], frame.index.to_numpy(), frame["label"],
                              flags[colour]() if colour in flags else frame[colour], colour_title=colour,
                              categorical=colour in flags, axes_visible=False)
        sent = json.dumps({"data": payload, "hover": None, "selected": selected, "height": 620})
        rows = pd.Index(selected).intersection(frame.index)
        frame.loc[rows, "label"].value_counts()
        return len(sent)

    for colour in (cols[0], "label", "review decision"):
        seconds, cpu, size = [], [], 0
        for _ in range(repeats):
            t, c = time.perf_counter(), time.process_time()
            size = rerun(colour)
            seconds.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        print(f"{n:,} points, colour by {colour}: wall median {statistics.median(seconds):.3f} s (max {max(seconds):.3f}), "
              f"CPU median {statistics.median(cpu):.3f} s (max {max(cpu):.3f}), {size / 1e6:.1f} MB sent")
    seconds = []
    for _ in range(repeats):  # a hover: only the component's small args go out
        t = time.perf_counter()
        json.dumps({"data": None, "hover": {"row": 1, "uri": "", "alt": "", "text": ""}, "selected": selected,
                    "height": 620})
        seconds.append(time.perf_counter() - t)
    print(f"hover rerun (args only): median {statistics.median(seconds) * 1000:.1f} ms")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB; load average {os.getloadavg()}")


def browser(n: int) -> None:
    """First paint and a colour change of bench/map_app.py at ``n`` points in headless Chromium; the server's memory."""
    import subprocess
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from browser_support import browser_page, free_port, map_frame

    port = free_port()
    env = {**os.environ, "BENCH_MAP_POINTS": str(n), "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(Path(__file__).with_name("map_app.py")),
                               "--server.headless", "true", "--server.port", str(port), "--server.address", "127.0.0.1",
                               "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def rss() -> str:
        status = Path(f"/proc/{server.pid}/status").read_text()
        return ", ".join(line.replace("\t", " ").strip() for line in status.splitlines() if line.startswith(("VmRSS", "VmHWM")))

    try:
        import urllib.request

        for _ in range(120):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read()
                break
            except OSError:
                time.sleep(0.5)
        with browser_page(height=1000) as page:
            page.goto(f"http://127.0.0.1:{port}")
            frame = map_frame(page)  # the first visit also builds the synthetic table (cached): not timed
            for attempt in range(2):
                t = time.perf_counter()
                page.reload()
                frame = map_frame(page)
                print(f"{n:,} points: first paint after reload {time.perf_counter() - t:.2f} s")
            for colour in ("review decision", "score.s1", "label"):  # "label" is drawn first
                before = frame.evaluate("() => window.mapReady")
                t = time.perf_counter()
                page.get_by_test_id("stSelectbox").first.click()
                page.get_by_role("option", name=colour, exact=True).click()
                frame.wait_for_function(f"window.mapReady && window.mapReady !== '{before}'", timeout=120_000)
                print(f"colour -> {colour}: redrawn in the browser after {time.perf_counter() - t:.2f} s")
            print(f"streamlit server memory: {rss()}; load average {os.getloadavg()}")
    finally:
        server.terminate()
        server.wait(timeout=20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--variants", default="before,pca50,default")
    parser.add_argument("--page", type=int, default=0, help="time Explore's page update at this many points instead")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--browser", type=int, default=0,
                        help="time bench/map_app.py at this many points in headless Chromium instead")
    args = parser.parse_args()
    if args.browser:
        browser(args.browser)
        return
    if args.page:
        page_update(args.page, args.repeats)
        return
    from pruning_core.audit import projection
    x = clustered(args.n, args.dim)
    t = time.perf_counter()
    projection.warm_umap()
    print(f"numba compile (warm_umap, first use in this process): {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    projection.pca_coords(x)
    print(f"PCA preview of {args.n:,} x {args.dim}: {time.perf_counter() - t:.2f} s")
    for name in args.variants.split(","):
        options = VARIANTS[name]
        seconds = []
        for _ in range(2):  # the first fit of a metric also compiles pynndescent for it; the second is warm
            t = time.perf_counter()
            coords = projection.umap_coords(x, **options)
            seconds.append(time.perf_counter() - t)
        print(f"UMAP {name} {options}: first {seconds[0]:.1f} s, warm {seconds[1]:.1f} s, "
              f"finite {np.isfinite(coords).all()}")
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
