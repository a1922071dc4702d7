"""Cleaned cross-fitting, read apart: what the recording run's posterior, the cleaned folds' and their average each find.

The product's dynamics step (``DynamicsConfig.crossfit_share``) trains its cross-fitting folds on the cleanest
share of each class by the recording run's noise score, and ``dynamics.noise_score`` averages the two noise
posteriors.  This bench scores a CIFAR-10 sample through the product (cached: the same store as
``bench_subset_eval.py`` reuses every run), reads both probability sets back from the cache and prints, for each
source alone, their average (the product) and a rank average: AUROC against the true labels, the wrong share of
the cleanest 50/60/70 %, and the relabels the posterior suggests at each threshold with the share that is right.

    python bench/bench_second_round.py --manifest train_sym40.csv --limit 10000 --cache /work/data/fixbench/cache
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_subset_eval import stratified  # noqa: E402
from cifar_data import DATA, unpack  # noqa: E402

from cache.store import ResultStore  # noqa: E402
from pruning_core.data.datasets import from_frame  # noqa: E402
from pruning_core.dynamics.config import DynamicsConfig  # noqa: E402
from pruning_core.dynamics.noise import noise_scores, softmax  # noqa: E402
from pruning_core.dynamics.trainer import TrainingRecord  # noqa: E402
from pruning_core.scoring.pipeline import dynamics_steps, score_dataset  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", default="train_sym40.csv")
    ap.add_argument("--root", default="/tmp/cifar")
    ap.add_argument("--limit", type=int, default=10000)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--share", type=float, default=DynamicsConfig.crossfit_share)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = unpack(Path(args.root))
    manifest = Path(args.manifest) if Path(args.manifest).is_file() else DATA / args.manifest
    train = stratified(pd.read_csv(manifest), args.limit, 0)
    dataset = from_frame(train[["path", "label"]], root, name=f"cifar10-{manifest.stem}", check_images=False)
    store = ResultStore(args.cache)
    config = DynamicsConfig(epochs=args.epochs, folds=args.folds, image_size=args.image_size, width=args.width,
                            batch_size=args.batch_size, seed=0, device="cpu", crossfit_share=args.share)
    table = score_dataset(dataset, store, dynamics=config)
    record_step, oos_step = dynamics_steps(dataset, config, None)
    entry = record_step.load(store)
    record_probs = softmax(TrainingRecord.from_arrays(entry, entry.meta).final_logits)
    oos_probs = oos_step.load(store).array("probs").astype(np.float64)
    y = dataset.label_ids
    ids = {c: i for i, c in enumerate(dataset.classes)}
    true = train.set_index("path").loc[dataset.samples["path"], "true_label"].map(ids).to_numpy()
    wrong = y != true
    print(f"{len(y):,} samples, {wrong.mean():.3f} wrong; share {args.share}")

    sources = {"record": [record_probs], "cleaned folds": [oos_probs], "average (product)": [record_probs, oos_probs]}
    scores = {}
    for name, probs in sources.items():
        frame, _, settings = noise_scores(y, probs, dataset.classes, source=name)
        scores[name] = frame
        print(f"{name}: estimated noise rate {settings['estimated_noise_rate']}")
    ranks = sum(pd.Series(scores[n]["dynamics.noise_score"]).rank().to_numpy() for n in ("record", "cleaned folds"))
    product = table.frame["dynamics.noise_score"].to_numpy()
    assert np.allclose(product, scores["average (product)"]["dynamics.noise_score"]), "the table is not the product's"
    n = len(y)
    for name, score in [*((k, f["dynamics.noise_score"].to_numpy()) for k, f in scores.items()), ("rank average", ranks)]:
        order = np.argsort(score, kind="stable")
        print(f"{name:18s} AUROC {roc_auc_score(wrong, score):.4f}; wrong in the cleanest 50/60/70 %: "
              + " / ".join(f"{wrong[order[:int(s * n)]].mean():.4f}" for s in (0.5, 0.6, 0.7)))
    for name, frame in scores.items():
        suggested = frame["dynamics.noise_suggested_label"].map(ids).to_numpy()
        confidence = frame["dynamics.noise_suggested_prob"].to_numpy()
        cells = []
        for t in (0.7, 0.8, 0.9, 0.95):
            picked = confidence >= t
            cells.append(f">= {t}: {picked.sum():,} ({np.mean(suggested[picked] == true[picked]):.3f} right)")
        print(f"{name:18s} relabels " + "; ".join(cells))


if __name__ == "__main__":
    main()
