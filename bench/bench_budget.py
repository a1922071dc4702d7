"""Quality per minute of the budgeted dynamics step, end to end, as a user runs it.

Each run is a fresh ``prunescope score DATA --no-clip --dynamics --budget B`` in its own process with an
empty result store (the demo's files are copied in, so only the demo build is skipped; images are
decoded and the throughput probe runs as on first use).  Prints wall seconds, the plan the CLI chose,
and the noise-detection AUROC of every dynamics/cleanlab score against the ground truth::

    python bench/bench_budget.py demo --budgets 60                      # the demo target (<= 90 s, AUROC >= 0.98)
    python bench/bench_budget.py train_sym20.csv --budgets 60,120,300,900   # CIFAR-10, all 50,000 images
    python bench/bench_budget.py train_sym40.csv --budgets 0 --checkouts /tmp/old . \
        --extra="--image-size 24 --epochs 8 --folds 0 --width 16 --proxy-batch-size 256"   # fixed settings, two commits

CIFAR manifests are read from ``$PRUNESCOPE_CIFAR_SHARED`` (``bench/cifar_data.py``) and unpacked
to ``--cifar-root``; the noise is ``label != true_label``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cifar_data import DATA, unpack  # noqa: E402

from pruning_core.scoring.detection import evaluate_scores  # noqa: E402
from pruning_core.scoring.score_table import ScoreTable  # noqa: E402


def noise_truth(data: str, cifar_root: Path) -> tuple[list[str], pd.Series, Path]:
    """(CLI arguments naming the data, noisy flag by path, demo folder to seed the store with)."""
    if data == "demo":
        from pruning_core.demo.dataset import ensure_demo

        assets = ensure_demo()
        truth = pd.read_csv(assets.ground_truth)
        return ["demo"], truth.set_index("path")["label_noisy"].astype(bool), Path(assets.root).parents[1]
    manifest = Path(data) if Path(data).is_file() else DATA / data
    frame = pd.read_csv(manifest)
    return ([str(manifest), "--root", str(unpack(cifar_root))],
            (frame["label"] != frame["true_label"]).set_axis(frame["path"]), None)


def run(args_data: list[str], budget: float, demo_dir: Path | None, threads: int, seed: int = 0,
        checkout: Path = Path("."), extra: tuple[str, ...] = ()) -> tuple[float, str, ScoreTable]:
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        if demo_dir is not None:
            shutil.copytree(demo_dir, cache / "demo")
        out = Path(tmp) / "scores.parquet"
        env = {**os.environ, "PRUNESCOPE_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads),
               "PYTHONPATH": str(checkout.resolve())}
        cmd = [sys.executable, "-m", "pruning_core.cli", "score", *args_data, "--no-clip", "--dynamics",
               "--budget", str(budget), "--seed", str(seed), "--out", str(out), *extra]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=checkout)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-2000:])
        plan = next((line for line in proc.stderr.replace("\r", "\n").splitlines() if line.startswith("plan: ") and "about" in line), "?")
        return wall, plan, ScoreTable.load(out)


def report(budget: float, seed: int, wall: float, plan: str, table: ScoreTable, noisy: pd.Series,
           checkout: Path = Path(".")) -> None:
    """One run's wall time, plan, notes and the AUROC of every score against the ground truth."""
    truth = noisy.reindex(table.frame["path"]).to_numpy()
    metrics = evaluate_scores(table.frame, table.infos, truth).sort_values("auroc", ascending=False)
    best = metrics.iloc[0]
    print(f"\n{checkout}: budget {budget:.0f} s, seed {seed}: wall {wall:.1f} s, best AUROC {best['auroc']:.4f} "
          f"({best['score']}); load {os.getloadavg()[0]:.2f}")
    print(f"  {plan}")
    for note in table.notes:
        print(f"  note: {note}")
    print(metrics[["score", "auroc", "average_precision", "f1"]].to_string(index=False, float_format="%.4f"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", help="'demo' or a CIFAR-10 manifest (train_sym20.csv, ...)")
    ap.add_argument("--budgets", default="60", help="comma list of --budget seconds")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seeds", default="0", help="comma list of proxy seeds (--seed), each budget run once per seed")
    ap.add_argument("--cifar-root", type=Path, default=Path(os.environ.get("PRUNESCOPE_CIFAR_DIR", "/tmp/cifar")))
    ap.add_argument("--checkouts", type=Path, nargs="+", default=[Path(".")],
                    help="run each budget and seed in each of these checkouts, one after the other")
    ap.add_argument("--extra", default="", help="further `prunescope score` arguments (fixed settings), one string")
    args = ap.parse_args()
    data_args, noisy, demo_dir = noise_truth(args.data, args.cifar_root)
    print(f"{args.data}: {len(noisy):,} samples, {noisy.mean():.1%} noisy; load {os.getloadavg()[0]:.2f}")
    extra = tuple(args.extra.split())
    for budget in [float(b) for b in args.budgets.split(",")]:
        for seed in [int(s) for s in args.seeds.split(",")]:
            for checkout in args.checkouts:
                report(budget, seed, *run(data_args, budget, demo_dir, args.threads, seed, checkout, extra), noisy,
                       checkout)


if __name__ == "__main__":
    main()
