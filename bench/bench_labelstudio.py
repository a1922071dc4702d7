"""The Label Studio round trip against a real local server: correctness at 500 samples, push speed at 5,000.

1. Round trip of the first 500 demo samples: push (with the demo's suggestions as pre-annotations when a
   score table with ``suggest.label`` is given, else none), two annotators answer every task through the API
   (the first with the demo's true label, the second disagreeing on a random 10 %), pull; then push and pull
   again.  Prints the decisions recorded at each pull (every annotated task must land as exactly one decision;
   the second cycle must record nothing), and whether ``select --decisions`` keeps the same list as the same
   verdicts given in the app (``DecisionStore.decide``, as the Review page calls it).
2. Push of 5,000 tasks (data-URL images) to an empty project, timed, then the same push again (idempotent).

    python bench/bench_labelstudio.py                       # demo + /work/data/cifar10 (5,000 CIFAR images)
    python bench/bench_labelstudio.py --push-data DIR/train_clean.csv

Needs Label Studio in its own venv (scripts/setup_labelstudio.sh; ``$PRUNESCOPE_LABEL_STUDIO``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from labelstudio_support import running_label_studio  # noqa: E402
from pruning_core.audit.review import DecisionStore  # noqa: E402
from pruning_core.cli import main  # noqa: E402
from pruning_core.data.datasets import load_dataset  # noqa: E402
from pruning_core.demo.dataset import ensure_demo  # noqa: E402
from pruning_core.scoring.score_table import base_table  # noqa: E402


def cli(*args) -> None:
    code = main([str(a) for a in args])
    if code != 0:
        raise SystemExit(f"prunescope {' '.join(map(str, args))} exited {code}")


def timed(label: str, fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    print(f"{label}: {time.perf_counter() - start:.1f} s", flush=True)
    return out


def tasks_of(server, title: str) -> dict[str, int]:
    project = next(p for p in server.call("GET", "/api/projects")["results"] if p["title"] == title)
    export = server.call("GET", f"/api/projects/{project['id']}/export",
                         params={"exportType": "JSON", "download_all_tasks": "true"})
    return {t["data"]["prunescope_id"]: t["id"] for t in export}


def round_trip(server, work: Path, n: int) -> None:
    demo = ensure_demo()
    dataset = load_dataset(demo.manifest)
    table = base_table(dataset)
    scores = work / "demo.parquet"
    table.save(scores)
    truth = pd.read_csv(demo.manifest).set_index("path")["true_label"]
    queue_paths = table.frame["path"].astype(str).tolist()[:n]
    queue = work / "queue.txt"
    queue.write_text("\n".join(queue_paths))
    push = ["labelstudio", "push", scores, "--paths", queue, "--images", dataset.root, "--url", server.url,
            "--token", server.token, "--project", "demo round trip"]
    timed(f"push {n} demo tasks", cli, *push)
    ids = tasks_of(server, "demo round trip")
    bob = server.add_user("bob@example.com")
    rng = np.random.default_rng(0)
    given = dict(zip(table.frame["path"].astype(str), table.frame["label"].astype(str)))
    classes = list(dataset.classes)
    verdicts = {}

    def annotate() -> None:
        for path in queue_paths:
            first = str(truth.get(path, given[path]))
            second = rng.choice([c for c in classes if c != first]) if rng.random() < 0.1 else first
            server.annotate(ids[path], 1, first)
            server.annotate(ids[path], bob, str(second))  # the later one wins a 1:1 tie
            verdicts[path] = ("keep", None) if second == given[path] else ("relabel", str(second))

    timed(f"annotate {n} tasks x 2 annotators through the API", annotate)
    reviews = work / "reviews.sqlite"
    pull = ["labelstudio", "pull", "--url", server.url, "--token", server.token, "--project", "demo round trip",
            "--decisions", reviews, "--scores", scores]
    timed("pull", cli, *pull)
    store = DecisionStore(reviews)
    first = len(store.history(dataset.fingerprint))
    timed("push again", cli, *push)
    timed("pull again", cli, *pull)
    history = store.history(dataset.fingerprint)
    latest = store.latest(dataset.fingerprint).set_index("path")
    lost = [p for p in queue_paths if p not in latest.index]
    wrong = [p for p, (a, lab) in verdicts.items()
             if (latest.loc[p, "action"], None if pd.isna(latest.loc[p, "new_label"]) else latest.loc[p, "new_label"])
             != (a, lab)]
    duplicated = int(history["path"].duplicated().sum())
    print(f"decisions after pull 1: {first} for {n} annotated tasks; after push+pull 2: {len(history)}; "
          f"lost {len(lost)}, duplicated {duplicated}, differing from the annotators' majority {len(wrong)}")
    app = DecisionStore(work / "app.sqlite")
    for path, (action, new_label) in verdicts.items():
        app.decide(dataset.fingerprint, path, action, new_label=new_label, reviewer="app", classes=classes)
    kept = {}
    for name, file in (("labelstudio", reviews), ("app", app.path)):
        cli("select", scores, "--strategy", "random", "--keep", "0.8", "--decisions", file,
            "--out", work / f"{name}.csv")
        kept[name] = pd.read_csv(work / f"{name}.csv")[["path", "label"]]
    print(f"select --decisions kept lists equal: {kept['labelstudio'].equals(kept['app'])} "
          f"({len(kept['app'])} kept)")


def push_speed(server, work: Path, manifest: Path, n: int) -> None:
    rows = pd.read_csv(manifest).head(n)
    small = work / "push.csv"
    rows[["path", "label"]].to_csv(small, index=False)
    dataset = load_dataset(small, root=manifest.parent)
    table = base_table(dataset)
    scores = work / "push.parquet"
    table.save(scores)
    queue = work / "push.txt"
    queue.write_text("\n".join(table.frame["path"].astype(str)))
    push = ["labelstudio", "push", scores, "--paths", queue, "--images", dataset.root, "--url", server.url,
            "--token", server.token, "--project", f"push {n}"]
    timed(f"push {n} tasks (new project, data-URL images)", cli, *push)
    timed(f"push the same {n} again (nothing changes)", cli, *push)


def main_() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--round-trip", type=int, default=500)
    parser.add_argument("--push", type=int, default=5000)
    parser.add_argument("--push-data", type=Path, default=Path("/work/data/cifar10/train_clean.csv"))
    args = parser.parse_args()
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    with tempfile.TemporaryDirectory() as tmp, running_label_studio(Path(tmp)) as server:
        print(f"label-studio answered after {server.started_s:.0f} s")
        work = Path(tmp)
        round_trip(server, work, args.round_trip)
        push_speed(server, work, args.push_data, args.push)
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main_()
