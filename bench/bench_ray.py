"""Benchmark the Ray executor against the local one on the demo: scaling over workers and overhead.

    python bench/bench_ray.py                        # local, Ray with 1 worker, Ray with 2 workers
    python bench/bench_ray.py --epochs 4 --folds 4   # a heavier cross-fit

Two demo-sized jobs (the demo's 2,400 images): cross-fitting ``--folds`` ResNet-9 folds on the
decoded images, and the tiny CLIP's image embeddings.  Each runs with the local executor, then on
a fresh local Ray cluster of 1 and of 2 CPUs (one worker per CPU); every run starts from an empty
store, and the Ray start-up (``ray.init``) is timed apart.  All runs train on one torch thread
per worker, so the local run is the honest single-worker reference.  Results must agree (checked).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cache.store import ResultStore  # noqa: E402
from pruning_core.runtime import executors  # noqa: E402
from pruning_core.embeddings.clip_model import load_clip  # noqa: E402
from pruning_core.data.datasets import load_dataset  # noqa: E402
from pruning_core.demo.dataset import ensure_demo  # noqa: E402
from pruning_core.dynamics.crossfit import out_of_sample_probs  # noqa: E402
from pruning_core.embeddings.encode import embed_images  # noqa: E402
from pruning_core.data.datasets import decoded_images  # noqa: E402


def run_jobs(args, x, y, paths, encoder) -> dict:
    """Wall seconds of each job on the executor in use, and its results."""
    t0 = time.perf_counter()
    probs = out_of_sample_probs(x, y, folds=args.folds, arch="resnet9", epochs=args.epochs, width=args.width,
                                batch_size=128, seed=0, precision="auto", device="cpu")
    t1 = time.perf_counter()
    with tempfile.TemporaryDirectory() as chunks:
        emb, _ = embed_images(paths, encoder, chunk_dir=Path(chunks), chunk_size=600, batch_size=100, num_workers=0)
    t2 = time.perf_counter()
    return {"crossfit_s": t1 - t0, "embed_s": t2 - t1, "probs": probs, "emb": emb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--workers", default="1,2", help="Ray cluster sizes (CPUs) to time")
    args = parser.parse_args()

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # the clusters bind to 127.0.0.1 only
    import ray

    torch.set_num_threads(1)
    assets = ensure_demo()
    dataset = load_dataset(assets.manifest)
    with tempfile.TemporaryDirectory() as tmp:
        x = decoded_images(dataset, args.image_size, ResultStore(tmp))
    y = dataset.label_ids
    encoder = load_clip(assets.clip_model, str(assets.clip_checkpoint), device="cpu")
    paths = dataset.abspaths()
    print(f"demo: {len(y)} images; cross-fit {args.folds} folds x {args.epochs} epochs (ResNet-9 width "
          f"{args.width}, {args.image_size} px); embeddings: tiny CLIP", flush=True)

    rows = [("local", 0.0, run_jobs(args, x, y, paths, encoder))]
    root = str(Path(__file__).resolve().parents[1])
    for cpus in (int(w) for w in args.workers.split(",")):
        t0 = time.perf_counter()
        executor = executors.RayExecutor("local", num_cpus=cpus, runtime_env={"env_vars": {"PYTHONPATH": root}})
        executor._ray()
        start = time.perf_counter() - t0
        with executors.using(executor):
            rows.append((f"ray, {cpus} worker{'s' * (cpus > 1)}", start, run_jobs(args, x, y, paths, encoder)))
        ray.shutdown()

    reference = rows[0][2]
    print("| executor | ray.init s | cross-fit s | embeddings s | vs local (cross-fit / embeddings) |")
    print("| --- | --- | --- | --- | --- |")
    for name, start, r in rows:
        assert np.array_equal(r["probs"], reference["probs"]), f"{name}: cross-fit differs from local"
        assert np.allclose(r["emb"], reference["emb"], rtol=1e-4, atol=1e-5), f"{name}: embeddings differ"
        print(f"| {name} | {start:.1f} | {r['crossfit_s']:.1f} | {r['embed_s']:.1f} | "
              f"{r['crossfit_s'] / reference['crossfit_s']:.2f} / {r['embed_s'] / reference['embed_s']:.2f} |")


if __name__ == "__main__":
    main()
