"""The learning review queue against the best single detector, with a simulated reviewer (issue 21).

    python bench/bench_review_loop.py demo                                      # ~/.cache/prunescope/demo-scores.parquet
    python bench/bench_review_loop.py /work/data/scores-asym40.parquet --seeds 10

The reviewer answers from ``true_label``: a sample whose given label is wrong is relabelled (a
problem), any other is kept.  The static baseline reviews in the order of the single detector that
finds the noise best (chosen with the truth, by AUROC: the strongest static order there is); the
learning queue starts from that same order (its cold start) and refits every ``refit_every``
verdicts (:class:`pruning_core.audit.queue.QueueConfig`).  After 200 / 500 / 1,000 verdicts it
prints the precision of the next 500 (the static order's next 500; the learning queue's next 500
as shown, random picks included, and its next 500 model picks), the page's estimate of the next 50
model picks against their realised precision, and over all seeds (each draws other random picks)
how often the 90 % interval held the realised value.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pruning_core.audit.queue import LearningQueue, QueueConfig, queue_features  # noqa: E402
from pruning_core.scoring.detection import evaluate_scores  # noqa: E402
from pruning_core.scoring.score_table import ScoreTable, score_columns  # noqa: E402

DEMO_SCORES = Path("~/.cache/prunescope/demo-scores.parquet").expanduser()


def best_detector(table: ScoreTable, noisy: np.ndarray) -> tuple[str, np.ndarray]:
    """The score column with the highest AUROC against the truth, and its order (most suspicious first)."""
    frame = table.frame
    metrics = evaluate_scores(frame, {c: table.infos[c] for c in score_columns(frame, table.infos)}, noisy)
    name = str(metrics.sort_values("auroc", ascending=False)["score"].iloc[0])
    values = frame[name].to_numpy(dtype=float)
    order = pd.Series(values).sort_values(ascending=table.infos[name].suspicious == "low", kind="stable",
                                          na_position="last").index.to_numpy()
    return name, order


def simulate(queue: LearningQueue, noisy: np.ndarray, checkpoints: list[int], ahead: int) -> list[dict]:
    """Review block by block (one plan per refit block, answered in order); measure at each checkpoint."""
    rows: list[int] = []
    picks: list[str] = []
    out = []
    block = queue.config.refit_every
    for checkpoint in checkpoints:
        while len(rows) < checkpoint:
            plan = queue.plan(rows, np.where(noisy[rows], "relabel", "keep"), picks,
                              length=min(block, checkpoint - len(rows)))
            rows += plan.rows.tolist()
            picks += plan.picks.tolist()
        plan = queue.plan(rows, np.where(noisy[rows], "relabel", "keep"), picks, length=ahead)
        model_rows = plan.rows[plan.picks != "random"]
        window = queue.config.estimate_window
        truth = float(noisy[model_rows[:window]].mean())
        est = plan.estimate
        out.append({"verdicts": checkpoint, "shown": float(noisy[plan.rows].mean()),
                    "model_picks": float(noisy[model_rows[:ahead]].mean()),
                    "estimate": est.precision if est else np.nan, "low": est.low if est else np.nan,
                    "high": est.high if est else np.nan, "truth_next": truth,
                    "raw_mean_prediction": float(plan.problem_probability[model_rows[:window]].mean()),
                    "moved_new": plan.moved.new_in_next if plan.moved else np.nan,
                    "random_share": float(np.mean(np.asarray(picks) == "random"))})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scores", help="score table (.parquet with its .json sidecar) with a true_label column, or 'demo'")
    ap.add_argument("--verdicts", default="200,500,1000")
    ap.add_argument("--ahead", type=int, default=500, help="the 'next N' whose precision is compared")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--model", default=QueueConfig.model)
    ap.add_argument("--refit-every", type=int, default=QueueConfig.refit_every)
    ap.add_argument("--evidence-window", type=int, default=QueueConfig.evidence_window)
    args = ap.parse_args()
    path = DEMO_SCORES if args.scores == "demo" else Path(args.scores)
    table = ScoreTable.load(path)
    frame = table.frame
    if "true_label" not in frame:
        sys.exit(f"{path}: no true_label column: the simulated reviewer answers from it")
    noisy = (frame["label"].astype(str) != frame["true_label"].astype(str)).to_numpy()
    checkpoints = [int(v) for v in args.verdicts.split(",")]
    name, order = best_detector(table, noisy)
    print(f"{path.name}: {len(frame):,} samples, {noisy.mean():.1%} noisy; best single detector {name}; "
          f"model {args.model}; load {os.getloadavg()[0]:.2f}")
    base = QueueConfig(model=args.model, refit_every=args.refit_every, evidence_window=args.evidence_window)
    features = queue_features(frame, table.infos, config=base)
    print(f"inputs ({len(features.names)}): {', '.join(features.names[:12])}{' …' if len(features.names) > 12 else ''}")
    static = {v: float(noisy[order[v:v + args.ahead]].mean()) for v in checkpoints}
    results = []
    started = time.perf_counter()
    for seed in range(args.seeds):
        queue = LearningQueue(features, order, replace(base, seed=seed))
        for row in simulate(queue, noisy, checkpoints, args.ahead):
            results.append({"seed": seed, **row})
    seconds = time.perf_counter() - started
    res = pd.DataFrame(results)
    res["covered"] = (res["low"] <= res["truth_next"]) & (res["truth_next"] <= res["high"])
    res["error"] = res["estimate"] - res["truth_next"]
    summary = res.groupby("verdicts").agg(
        shown=("shown", "mean"), model_picks=("model_picks", "mean"), estimate=("estimate", "mean"),
        truth_next=("truth_next", "mean"), mean_abs_error=("error", lambda e: e.abs().mean()),
        bias=("error", "mean"), coverage=("covered", "mean"), raw_prediction=("raw_mean_prediction", "mean"),
        moved_new=("moved_new", "mean"))
    summary.insert(0, "static", pd.Series(static))
    summary.insert(3, "gain_points", 100 * (summary["shown"] - summary["static"]))
    print(f"precision of the next {args.ahead} (mean over {args.seeds} seeds) and the estimate of the next "
          f"{base.estimate_window} model picks:")
    print(summary.to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"coverage of the 90 % interval over all {len(res)} checkpoints: {res['covered'].mean():.1%}; "
          f"{seconds:.0f} s for {args.seeds} seeds; load at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
