"""Do the demo's near-duplicate groups hold its injected copies? Before and after the pixel check.

Scores the built-in demo with its own tiny CLIP (cached after the first run), then counts, against the
demo's ground truth (``duplicate_of`` in ground_truth.csv), how many of the CLIP groups at the scoring's
cosine threshold contain an injected copy, and how many of the groups the Overview offers with a
one-click remove (``audit.duplicates``: thumbnails, colour histograms and labels agree) do.

    python bench/bench_duplicates.py [--threshold 0.95]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from cache.store import ResultStore
from pruning_core.audit.duplicates import DUPLICATE, duplicate_groups, pass_share
from pruning_core.data.datasets import load_dataset
from pruning_core.demo.dataset import ensure_demo
from pruning_core.scoring.pipeline import ClipConfig, clip_embeddings, clip_score_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threshold", type=float, default=ClipConfig().dup_threshold)
    args = parser.parse_args()

    assets = ensure_demo()
    dataset = load_dataset(assets.manifest)
    config = ClipConfig(model=assets.clip_model, pretrained=str(assets.clip_checkpoint), batch_size=512,
                        dup_threshold=args.threshold)
    store = ResultStore()
    frame = clip_score_table(dataset, config, store).frame
    image = clip_embeddings(dataset, config, store).image
    truth = pd.read_csv(assets.ground_truth, keep_default_na=False).set_index("path")
    paths = dataset.samples["path"].to_numpy()
    copies = set(truth.index[truth["duplicate_of"] != ""]) | set(truth["duplicate_of"][truth["duplicate_of"] != ""])
    injected = int((truth["duplicate_of"] != "").sum())

    start = time.perf_counter()
    groups = duplicate_groups(dataset.abspaths(), frame["clip.duplicate_group"].to_numpy(),
                              dataset.samples["label"].to_numpy(), image)
    seconds = time.perf_counter() - start
    holds_copy = np.array([len(set(paths[rows]) & copies) >= 2 for rows in groups["rows"]], dtype=bool)
    offered = (groups["verdict"] == DUPLICATE).to_numpy()
    members = int(groups["size"].sum())
    print(f"demo: {len(paths):,} images, {injected} injected copies, cosine threshold {args.threshold:g}")
    print(f"CLIP groups: {len(groups)} groups, {members} files flagged; {int(holds_copy.sum())} of {len(groups)} "
          f"hold an injected copy ({holds_copy.mean():.0%})")
    print(f"pass the pixel check (offered with one-click remove): {int(offered.sum())} of {len(groups)} "
          f"({pass_share(groups):.0%}); {int(holds_copy[offered].sum())} of them hold an injected copy "
          f"({holds_copy[offered].mean():.0%})")
    check = groups[~offered]
    print(f"flagged 'check': {len(check)} ({int(holds_copy[~offered].sum())} of them injected copies: "
          f"{(check['reason'] == 'labels differ').sum()} copies whose labels differ)")
    print(f"injected copies in an offered group: {int(holds_copy[offered].sum())} of {injected}; "
          f"in any group: {int(holds_copy.sum())} of {injected}")
    print(f"check time (decode {members} thumbnails + compare): {seconds:.2f} s")


if __name__ == "__main__":
    main()
