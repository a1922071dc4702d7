"""Prune page server-side update time: run_recipe + the live preview on 50,000 synthetic rows.

Usage: .venv/bin/python bench/bench_prune.py [--rows 50000] [--scores 10] [--repeats 5]

Each Prune-page rerun calls ``preview_selection`` once (it runs the recipe, then computes the
combined score, per-class counts, histograms and the borderline samples) with the
``ScoreRanks`` the page keeps per score table.  The target is <= 200 ms for 50,000 samples.
Prints one row per strategy and class-balance setting, with 2% of the samples removed by
reviewers (as the page always passes reviewer removals); ``run_recipe`` without kept ranks is
what one CLI ``select`` costs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pruning_core.selection import preview_selection  # noqa: E402
from pruning_core.scoring.score_info import ScoreInfo  # noqa: E402
from pruning_core.selection import ScoreRanks, SelectionRecipe, available_strategies, combined_score, run_recipe  # noqa: E402


def synthetic(rows: int, n_scores: int, classes: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "path": [f"images/{i:06d}.png" for i in range(rows)],
        "label": rng.choice([f"class_{c}" for c in range(classes)], size=rows),
    })
    names = ["clip.label_alignment", "clip.diversity", "dynamics.dyn_unc"]
    names += [f"bench.score_{i}" for i in range(n_scores - len(names))]
    infos = {}
    for i, name in enumerate(names):
        frame[name] = rng.normal(size=rows)
        infos[name] = ScoreInfo(name, "synthetic", "low" if i % 2 == 0 else "high")
    frame.loc[rng.choice(rows, size=rows // 100, replace=False), "bench.score_3"] = np.nan  # missing values too
    return frame, infos


def timed(fn, repeats: int) -> tuple[float, float]:
    fn()  # warm-up (imports, torch start for cps)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000, max(times) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--scores", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--strategies", default=None, help="comma-separated subset (default: all)")
    args = parser.parse_args()

    frame, infos = synthetic(args.rows, args.scores)
    removed = frame["path"].sample(frac=0.02, random_state=1).tolist()
    weights = {name: 1.0 for name in infos}
    strategies = available_strategies(frame, infos)

    if args.strategies:
        strategies = [s for s in args.strategies.split(",") if s in strategies]
    print(f"{args.rows:,} rows x {len(infos)} score columns, {len(removed):,} reviewer removals, keep 0.7, "
          f"median / max of {args.repeats} runs after one warm-up")
    t0 = time.perf_counter()
    ranks = ScoreRanks(frame, infos)  # the Prune page keeps one per score table
    combined_score(frame, infos, weights, ranks=ranks)  # ranks every column once
    print(f"ranking every score (once per score table, kept between reruns): {(time.perf_counter() - t0) * 1000:.1f} ms")
    header = f"{'strategy':10s} {'balance':7s} {'run_recipe ms':>14s} {'preview ms (page)':>18s} {'max ms':>8s}  <=200ms"
    print(header)
    for strategy in strategies:
        for balance in (False, True):
            recipe = SelectionRecipe(keep=0.7, strategy=strategy, weights=weights, balance=balance, seed=0)
            fresh = run_recipe(frame, infos, recipe, removed)
            kept_ranks = preview_selection(frame, infos, recipe, removed, ranks=ranks).mask
            assert np.array_equal(fresh, kept_ranks), f"{strategy}: kept ranks changed the subset"
            sel_ms, _ = timed(lambda: run_recipe(frame, infos, recipe, removed), args.repeats)
            pre_ms, pre_max = timed(lambda: preview_selection(frame, infos, recipe, removed, ranks=ranks), args.repeats)
            ok = "yes" if pre_ms <= 200 else "NO"
            print(f"{strategy:10s} {str(balance):7s} {sel_ms:14.1f} {pre_ms:18.1f} {pre_max:8.1f}  {ok}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
