"""Map speed: UMAP of 50,000 x 512 embeddings under the candidate settings, and the first-use compile pause.

Synthetic CLIP-like embeddings (a mixture of 10 unit-norm clusters), so it runs anywhere.  Each
variant is fitted twice in the same process after the app's warm-up fit: the first fit of a metric
also compiles pynndescent for it (above 4,096 points), the second is the warm time; side by side,
so the ratios hold whatever the machine's load.

    python bench/bench_map.py --n 50000 --dim 512 --variants before,pca50,default
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--variants", default="before,pca50,default")
    args = parser.parse_args()
    from pruning_core import projection

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
