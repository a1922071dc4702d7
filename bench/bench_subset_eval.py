"""Benchmark: does pruning a noisy CIFAR-10 keep (or gain) accuracy?  Accuracy-vs-ratio per strategy.

Trains the proxy on what each strategy keeps and scores it on the clean CIFAR-10 test folder,
through the same library calls as ``prunescope evaluate`` (every run cached)::

    # the issue's setting (GPU): all 50,000 images, 16 epochs, ResNet-9 width 64
    python bench/bench_subset_eval.py --manifest train_sym20.csv --keep 0.3,0.5,0.7,0.8,0.9
    # what 2 CPU cores can do: a stratified sample, 16 px, a narrow network
    python bench/bench_subset_eval.py --limit 4000 --test-limit 1000 --image-size 16 --width 16 \\
        --epochs 10 --folds 0 --keep 0.5,0.8 --device cpu

Scores come first (``dynamics.*`` from one proxy run, ``cleanlab.*`` when ``--folds`` >= 2); the
grid then trains full data, random (several seeds), each ``--strategies`` entry and dynamic
pruning.  Prints the summary table, wall times, full-data accuracy with the true labels of the same
sample (``--clean``: what the noise costs), and the issue's check: the best score-based strategy at
keep 0.8 against full data (target: >= +3 points on sym20).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cifar_data import DATA, unpack  # noqa: E402

from cache.store import ResultStore  # noqa: E402
from pruning_core.cli import parse_weights  # noqa: E402
from pruning_core.selection import default_weights  # noqa: E402
from pruning_core.data.datasets import from_frame  # noqa: E402
from pruning_core.scoring.detection import evaluate_scores  # noqa: E402
from pruning_core.dynamics.config import DynamicsConfig  # noqa: E402
from pruning_core.scoring.score_info import ScoreInfo  # noqa: E402
from pruning_core.scoring.score_table import ScoreTable, base_table  # noqa: E402
from pruning_core.scoring.pipeline import score_dataset  # noqa: E402
from pruning_core.subset_training.evaluate import EvalConfig, best_configuration, evaluate_pruning, summarise  # noqa: E402
from pruning_core.subset_training.evaluate import grid_batch_size  # noqa: E402
from pruning_core.subset_training.runs import BUDGETS  # noqa: E402


ORACLE = "truth.wrong_label"
"""The ground-truth column ``--oracle`` ranks by (known only in a benchmark)."""


def ratios(text: str) -> list[float]:
    """``"0.5,0.8"`` -> ``[0.5, 0.8]`` (``--keep`` and ``--oracle``)."""
    return [float(k) for k in text.split(",")]


def stratified(frame: pd.DataFrame, limit: int, seed: int) -> pd.DataFrame:
    """A class-stratified sample of ``limit`` rows.  Strata are the true classes when the manifest has them, so
    every noise manifest yields the same images (and the true-label ceiling is one cached run for all of them)."""
    if not limit or limit >= len(frame):
        return frame
    share = limit / len(frame)
    by = "true_label" if "true_label" in frame else "label"
    return frame.groupby(by, group_keys=False).sample(frac=share, random_state=seed).sort_index()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", default="train_sym20.csv")
    ap.add_argument("--root", default="/tmp/cifar", help="where the CIFAR-10 tarball is (or gets) unpacked")
    ap.add_argument("--limit", type=int, default=0, help="stratified training sample (0 = all 50,000)")
    ap.add_argument("--test-limit", type=int, default=0, help="stratified test sample (0 = all 10,000)")
    ap.add_argument("--strategies", default="easiest,ccs,dyn_unc,random,dynamic")
    ap.add_argument("--weights", default="",
                    help="score weights of easiest/hardest/ccs (default: the product's, selection.default_weights); "
                         "columns that were not computed are dropped")
    ap.add_argument("--keep", default="0.3,0.5,0.7,0.8,0.9")
    ap.add_argument("--epochs", type=int, default=16, help="the scoring proxy's epochs (dynamics and cross-fitting)")
    ap.add_argument("--eval-epochs", type=int, default=0,
                    help="full-data epochs of every evaluation run (0 = --epochs); under equal steps a subset gets "
                         "the same steps.  Literature evaluations train long enough for full noisy data to memorise")
    ap.add_argument("--eval-image-size", type=int, default=0,
                    help="working resolution of every evaluation run (0 = --image-size): the scoring proxy can be "
                         "larger than the model the subsets train, as a user scores once and trains many times")
    ap.add_argument("--eval-width", type=int, default=0, help="ResNet-9 width of every evaluation run (0 = --width)")
    ap.add_argument("--folds", type=int, default=4, help="cross-fitting folds for cleanlab scores (0 = skip)")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--seeds", type=int, default=3, help="runs per strategy and ratio")
    ap.add_argument("--train-budget", default="equal_steps", choices=list(BUDGETS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    ap.add_argument("--cache", default=None, help="result store (default: a fresh temporary one)")
    ap.add_argument("--out", default=None, help="write every run to this CSV")
    ap.add_argument("--oracle", default="",
                    help="keep ratios at which to also train the subset ranked by the ground truth (the samples whose "
                         "label is right first, class-balanced like the grid): what perfect detection would give")
    ap.add_argument("--clean", default="train_clean.csv",
                    help="manifest with the true labels: full-data training on the same sample gives the noise-free "
                         "reference ('' to skip)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    root = unpack(Path(args.root))
    manifest = Path(args.manifest) if Path(args.manifest).is_file() else DATA / args.manifest
    train = stratified(pd.read_csv(manifest), args.limit, args.seed)
    test_frame = pd.DataFrame({"path": sorted(str(p.relative_to(root)) for p in (root / "test").glob("*/*.jpg"))})
    test_frame["label"] = test_frame["path"].str.split("/").str[1]
    test_frame = stratified(test_frame, args.test_limit, args.seed)
    t0 = time.perf_counter()
    dataset = from_frame(train[["path", "label"]], root, name=f"cifar10-{manifest.stem}", check_images=False)
    test = from_frame(test_frame, root, name="cifar10-test", check_images=False)
    store = ResultStore(args.cache or tempfile.mkdtemp(prefix="prunescope-bench-"))
    proxy = DynamicsConfig(epochs=args.epochs, folds=args.folds, image_size=args.image_size, width=args.width,
                           batch_size=args.batch_size, seed=args.seed, device=args.device)
    table = score_dataset(dataset, store, dynamics=proxy)
    t_score = time.perf_counter() - t0
    weights = {name: w for name, w in (parse_weights(args.weights) or {}).items() if name in table.infos}
    print(f"{len(dataset):,} training images ({manifest.name}), {len(test):,} test images; "
          f"scores in {t_score:.1f}s; weights {weights or default_weights(table.frame, table.infos)}")
    if "true_label" in train:  # how well the scores the subsets are ranked by find the noise
        noisy = train.set_index("path").eval("label != true_label")
        detection = evaluate_scores(table.frame, table.infos, table.frame["path"].map(noisy).to_numpy(dtype=bool))
        print(detection[["score", "auroc", "average_precision", "f1"]].to_string(
            index=False, float_format=lambda v: f"{v:.4f}"))

    t1 = time.perf_counter()
    keeps = ratios(args.keep)
    # The grid's batch for the ceiling too, so that it trains exactly like the grid's full-data runs.
    evaluation = EvalConfig(proxy=replace(proxy, epochs=args.eval_epochs or args.epochs,
                                          image_size=args.eval_image_size or args.image_size,
                                          width=args.eval_width or args.width,
                                          batch_size=grid_batch_size(args.batch_size, keeps, len(dataset))),
                            seeds=args.seeds, budget=args.train_budget)
    ceiling = None
    if args.clean:  # first, so that a grid cut short still has its reference
        clean_labels = pd.read_csv(DATA / args.clean if not Path(args.clean).is_file() else args.clean)
        clean_frame = train[["path"]].merge(clean_labels[["path", "label"]], on="path", how="left")
        clean = from_frame(clean_frame, root, name=f"cifar10-{Path(args.clean).stem}", check_images=False)
        reference = evaluate_pruning(clean, base_table(clean), store, strategies=[], keeps=[], config=evaluation,
                                     test=test)
        ceiling = float(reference["accuracy"].mean())
        print(f"full data with clean labels ({args.clean}): {ceiling:.4f} ± {reference['accuracy'].std():.4f} "
              f"over {len(reference)} seeds, batch {int(reference['batch_size'].iloc[0])}, "
              f"{int(reference['steps'].iloc[0])} steps", flush=True)
    t2 = time.perf_counter()
    results = evaluate_pruning(dataset, table, store, strategies=args.strategies.split(","), keeps=keeps,
                               config=evaluation, test=test, weights=weights or None)
    print(f"grid: {len(results)} runs in {time.perf_counter() - t2:.1f}s "
          f"(training {results['train_seconds'].sum():.1f}s on {proxy.device})")
    if args.oracle and "true_label" in train:
        wrong = train.set_index("path").eval("label != true_label").astype(float)
        truth = table.merged(ScoreTable(pd.DataFrame({ORACLE: table.frame["path"].map(wrong).to_numpy()}),
                                        {ORACLE: ScoreInfo(ORACLE, "1 where the given label is wrong", "high")}))
        oracle = evaluate_pruning(dataset, truth, store, strategies=["easiest"], keeps=ratios(args.oracle),
                                  config=evaluation, test=test, weights={ORACLE: 1.0})
        results = pd.concat([results, oracle[oracle["strategy"] == "easiest"].assign(strategy="oracle")], ignore_index=True)
    if args.out:
        results.to_csv(args.out, index=False)
    summary = summarise(results)
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    full = float(summary.loc[summary["strategy"] == "full", "accuracy"].iloc[0])
    if ceiling is not None:
        print(f"ceiling (true labels) {ceiling:.4f}, full noisy data {full:.4f}")
        for _, row in summary[~summary["strategy"].isin(["full", "random", "dynamic"])].iterrows():
            print(f"{row['strategy']} keep {row['keep']:.1f}: {100 * (row['accuracy'] - full):+.2f} points vs full "
                  f"noisy data{' (Welch p = %.3f)' % row['p_vs_full'] if row['beats_full'] else ''}, "
                  + (f"{(row['accuracy'] - full) / (ceiling - full):.0%} of the gap to the ceiling" if ceiling > full
                     else "no gap to the ceiling"))
    print(f"grid and ceiling: {time.perf_counter() - t1:.1f}s; total {time.perf_counter() - t0:.1f}s")
    if (summary["keep"] == 0.8).any():
        best = best_configuration(results.query("strategy not in ['random', 'oracle']"), keep=0.8)
        print(f"keep 0.8: best strategy {best['strategy']} {best['accuracy']:.4f} vs full {full:.4f} "
              f"-> {100 * (best['accuracy'] - full):+.2f} points (target on sym20: >= +3)")


if __name__ == "__main__":
    main()
