"""Issue 29's folder test: does the Overview estimate the mislabels of a plain image folder it knows nothing about?

Builds an image folder of ``--n`` CIFAR-10 training images (stratified, fixed seed) in which ``--flips``
of them sit in a wrong class folder (a uniformly drawn other class; the ground truth stays in
``truth.csv`` beside the folder, never inside it), scores it with the default scoring
(``prunescope score DIR --dynamics``, the default budget), once without CLIP and once with the demo's
tiny CLIP passed the way the Score page passes a local checkpoint, and prints for each table the
fitness verdict, the "likely mislabelled" estimate against the truth and the per-class label quality.

    python bench/bench_folder_audit.py --work /tmp/folder-audit
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

CIFAR_TRAIN = Path("/work/data/cifar10/train")


def build_folder(source: Path, out: Path, n: int, flips: int, seed: int) -> pd.DataFrame:
    """Copy ``n`` images (n / classes per class) into ``out/images/<class>/``, ``flips`` of them under a wrong class.

    Returns the truth: ``path`` (relative to ``out/images``), ``label`` (the folder it sits in) and ``true_label``.
    """
    rng = np.random.default_rng(seed)
    classes = sorted(p.name for p in source.iterdir() if p.is_dir())
    per_class = n // len(classes)
    picks = [(c, f) for c in classes
             for f in rng.choice(sorted(p.name for p in (source / c).iterdir()), per_class, replace=False)]
    flipped = set(rng.choice(len(picks), flips, replace=False).tolist())
    rows = []
    images = out / "images"
    for i, (true, name) in enumerate(picks):
        label = true
        if i in flipped:
            label = classes[(classes.index(true) + rng.integers(1, len(classes))) % len(classes)]
        (images / label).mkdir(parents=True, exist_ok=True)
        dest = images / label / f"{true}_{name}"
        shutil.copyfile(source / true / name, dest)
        rows.append({"path": f"{label}/{true}_{name}", "label": label, "true_label": true})
    truth = pd.DataFrame(rows)
    truth.to_csv(out / "truth.csv", index=False)
    return truth


def score(images: Path, out: Path, extra: list[str]) -> float:
    """Run the CLI's default scoring (``score DIR --dynamics`` + ``extra``); returns its wall time."""
    repo = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(repo)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pruning_core.cli", "score", str(images), "--out", str(out), "--dynamics",
                    *extra], check=True, env=env)
    return time.perf_counter() - start


def audit(table_path: Path, truth: pd.DataFrame) -> dict:
    """The Overview of one score table, with each number beside what the ground truth says."""
    from pruning_core.audit.overview import overview
    from pruning_core.scoring.score_table import ScoreTable

    table = ScoreTable.load(table_path)
    frame = table.frame.assign(path=table.frame["path"].astype(str))
    true_label = truth.set_index("path")["true_label"].reindex(frame["path"]).to_numpy()
    wrong = true_label != frame["label"].astype(str).to_numpy()
    ov = overview(frame, table.infos, scoring=table.settings)
    out: dict = {"table": str(table_path), "samples": len(frame), "true_mislabelled": int(wrong.sum()),
                 "fitness": ov.fitness.summary() if ov.fitness is not None else None,
                 "evidence": ov.evidence}
    mis = ov.finding("mislabelled")
    if mis is not None:
        flagged = np.isin(frame.index, mis.rows)
        est = mis.estimate
        out["mislabelled"] = {"score": mis.score, "flagged": mis.count, "true_in_flagged": int((flagged & wrong).sum()),
                              "true_precision": round(float((flagged & wrong).sum() / max(mis.count, 1)), 4),
                              **est.summary()}
    quality = ov.class_quality
    out["class_quality"] = {str(k): (None if pd.isna(v) else round(float(v), 4))
                            for k, v in quality["label_quality"].items()}
    out["classes_at_100"] = int((quality["label_quality"] >= 1.0).sum())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, required=True, help="folder for the images, truth and score tables")
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--flips", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-clip", action="store_true", help="only the dynamics-only table")
    parser.add_argument("--score-args", default="", help="more `score` flags for both runs, e.g. the plan's "
                        "settings without a budget: '--budget 0 --epochs 8 --width 16 --folds 0 --proxy-batch-size 128'")
    parser.add_argument("--tag", default="", help="suffix of the score tables' names (one per --score-args)")
    args = parser.parse_args()
    truth_path = args.work / "truth.csv"
    if truth_path.is_file():
        truth = pd.read_csv(truth_path)
    else:
        truth = build_folder(CIFAR_TRAIN, args.work, args.n, args.flips, args.seed)
    runs = {"dynamics": ["--no-clip"]}
    more = args.score_args.split()
    if not args.skip_clip:
        from pruning_core.demo.dataset import ensure_demo

        demo = ensure_demo()
        runs["tiny-clip"] = ["--clip-model", demo.clip_model, "--clip-pretrained", str(demo.clip_checkpoint)]
    for name, extra in runs.items():
        table_path = args.work / f"scores-{name}{args.tag}.parquet"
        seconds = None
        if not table_path.is_file():
            seconds = score(args.work / "images", table_path, extra + more)
        result = {"run": name, "score_seconds": None if seconds is None else round(seconds, 1), **audit(table_path, truth)}
        print(json.dumps(result, indent=1))
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
