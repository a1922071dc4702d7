"""k-NN scores and the adapter fit before and after issue 10, side by side in one process.

    python bench/bench_knn_adapter.py --threads 2                      # N=50,000, D=512, random
    python bench/bench_knn_adapter.py --threads 2 --data clip-like --skip-old
    python bench/bench_knn_adapter.py --threads 2 --skip-old --skip-graph --skip-adapter --repeat 2
    python bench/bench_knn_adapter.py --threads 2 --data clip-like --skip-old --skip-graph --skip-adapter --scores --repeat 2

* k-NN scores: the two passes :func:`clip_scores` makes (same-class k=10 for diversity, all-pairs
  k=32 for outlier and duplicates) through the blocked torch k-NN the library used before (kept here
  alone, as the reference), through faiss's exact ``IndexFlatIP`` (``KnnConfig(symmetric=False)``)
  and through the half-matrix self-search the library now uses (bf16 screen where the CPU has it);
  then how many rows get the same neighbour set, how many rows the screen sent back to exact
  search, and the HNSW graph forced on (``approx_min_rows=0``): time and recall against exact.
* Adapter: ``ClipAdapter.fit`` (linear, 5 epochs) as it was before (unfused AdamW, torch's threads)
  and as it is now (fused AdamW, ``FIT_CPU_THREADS``), after one throw-away fit that pays the first
  optimizer's one-off ``torch._dynamo`` import.

``--data random``: isotropic unit vectors, the cost of real embeddings but the worst case for a
graph (every point is nearly equidistant from every other).  ``clip-like``: a shared direction,
10 classes and 500 modes under strong noise (mean cosine about 0.37, nearest neighbour about 0.73),
closer to what CLIP gives.  The machine is shared, so compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pruning_core.clip_scores import ClipAdapter, KnnConfig, knn, knn_scores, unit_rows  # noqa: E402
from pruning_core.clip_scores.neighbors import mean_distance  # noqa: E402
from pruning_core.clip_scores.adapter import FIT_CPU_THREADS  # noqa: E402


def make_embeddings(kind: str, n: int, dim: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    if kind == "random":
        return unit_rows(rng.normal(size=(n, dim))), labels
    shared = unit_rows(rng.normal(size=dim))
    centres = unit_rows(rng.normal(size=(classes, dim)))
    modes = unit_rows(rng.normal(size=(500, dim)))
    x = shared + 0.8 * centres[labels] + 0.6 * modes[rng.integers(0, 500, n)] + 0.9 * unit_rows(rng.normal(size=(n, dim)))
    return unit_rows(x), labels


def torch_blocked_knn(x: np.ndarray, k: int, groups: np.ndarray | None = None,
                      block_bytes: int = 256 * 2**20) -> np.ndarray:
    """Neighbour indices from the blocked torch search the library used before faiss (the reference).

    Query rows in blocks of ``rows x N`` similarities, each block reduced by ``torch.topk``, self
    masked to -inf; same-group searches class by class.
    """
    xt = torch.nn.functional.normalize(torch.as_tensor(x, dtype=torch.float32), dim=-1)
    out = np.full((len(x), k), -1, dtype=np.int64)
    parts = [np.arange(len(x))] if groups is None else [np.flatnonzero(groups == g) for g in np.unique(groups)]
    for rows_of in parts:
        q = xt[torch.as_tensor(rows_of)]
        m = q.shape[0]
        kk = min(k, m - 1)
        step = max(1, block_bytes // (m * 4))
        for s in range(0, m, step):
            sim = q[s : s + step] @ q.T
            r = torch.arange(sim.shape[0])
            sim[r, r + s] = float("-inf")
            out[rows_of[s : s + step], :kk] = rows_of[torch.topk(sim, kk, dim=1).indices.numpy()]
    return out


def same_sets(x: np.ndarray, a: np.ndarray, b: np.ndarray, tie: float = 1e-5) -> tuple[float, float]:
    """Fraction of rows whose neighbour sets are equal, and of those where every swapped neighbour
    ties (cosine within ``tie``, float64) with the last one both searches agree on: float rounding
    in two BLAS libraries orders such ties differently."""
    differ = np.flatnonzero(~np.all(np.sort(a, axis=1) == np.sort(b, axis=1), axis=1))
    ties = 0
    for r in differ:
        swapped = np.setxor1d(a[r], b[r])
        sims = x[swapped].astype(np.float64) @ x[r].astype(np.float64)
        ties += int(np.ptp(sims) <= tie)
    return 1 - len(differ) / len(a), ties / max(len(differ), 1)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each row's true neighbours found (rows of the same width)."""
    hit = (found[:, :, None] == truth[:, None, :]).any(axis=1)
    return float(hit.mean())


@contextlib.contextmanager
def unfused_adamw():
    """The adapter's optimizer as it was: AdamW's per-tensor loop instead of the fused kernel."""
    real = torch.optim.AdamW

    def old(params, **kw):
        kw.pop("fused", None)
        return real(params, **kw)

    torch.optim.AdamW = old
    try:
        yield
    finally:
        torch.optim.AdamW = real


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--data", choices=["random", "clip-like"], default="random")
    ap.add_argument("--threads", type=int, default=0, help="torch (and so faiss) CPU threads; 0 = torch default")
    ap.add_argument("--skip-old", action="store_true", help="leave out the 'before' k-NN and adapter rows")
    ap.add_argument("--skip-graph", action="store_true", help="leave out the forced HNSW row")
    ap.add_argument("--skip-adapter", action="store_true")
    ap.add_argument("--skip-knn", action="store_true", help="only the adapter rows")
    ap.add_argument("--adapter-epochs", type=int, default=5)
    ap.add_argument("--graph-ef-construction", type=int, default=KnnConfig.ef_construction,
                    help="efConstruction of the forced HNSW row (default: KnnConfig's)")
    ap.add_argument("--repeat", type=int, default=1, help="k-NN before/after pairs to run, alternating")
    ap.add_argument("--scores", action="store_true",
                    help="also time knn_scores (what the product runs: the all-pairs pass, diversity read from it)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    x, labels = make_embeddings(args.data, args.n, args.dim, args.classes)
    rows: list[tuple[str, float, str]] = []

    def timed(name: str, fn, note: str = ""):
        t = time.perf_counter()
        out = fn()
        rows.append((name, time.perf_counter() - t, note))
        print(f"{name}: {rows[-1][1]:.2f} s {note}", flush=True)
        return out

    exact = KnnConfig(approx_min_rows=10**12, symmetric=False)  # faiss IndexFlatIP, the full matrix
    half = KnnConfig(approx_min_rows=10**12)  # the half-matrix self-search (bf16 screen where the CPU has it)
    again: dict[str, int] = {}

    def self_search(k: int, groups, name: str):
        notes: list[str] = []
        out = knn(x, x, k, True, groups, device="cpu", config=half, progress=lambda p: notes.append(p.message))[1]
        counts = [int(m.group(1)) for m in map(re.compile(r"(\d+) rows searched again").search, notes) if m]
        again[name] = counts[-1] if counts else 0
        return out

    for rep in range(0 if args.skip_knn else args.repeat):  # the variants alternate: load hits them all
        new_div = timed("faiss exact: same-class k=10 (diversity)", lambda: knn(x, x, 10, True, labels, device="cpu", config=exact)[1])
        half_div = timed("half-matrix self-search: same-class k=10", lambda: self_search(10, labels, "same-class"))
        if not args.skip_old:
            old_div = timed("torch blocked (before): same-class k=10", lambda: torch_blocked_knn(x, 10, labels))
        new_all = timed("faiss exact: all-pairs k=32 (outlier + duplicates)", lambda: knn(x, x, 32, device="cpu", config=exact)[1])
        half_all = timed("half-matrix self-search: all-pairs k=32", lambda: self_search(32, None, "all-pairs"))
        if not args.skip_old:
            old_all = timed("torch blocked (before): all-pairs k=32", lambda: torch_blocked_knn(x, 32))
        if args.scores:
            cols, _ = timed("knn_scores: all-pairs k=32, diversity read from it (what the product runs)",
                            lambda: knn_scores(x, labels, k=10, dup_threshold=0.95, family="clip", device="cpu"))
            two_pass = mean_distance(knn(x, x, 10, True, labels, device="cpu", config=half)[0])
            print(f"  -> diversity vs the same-class pass: max |difference| "
                  f"{np.nanmax(np.abs(cols['clip.diversity'] - two_pass)):.2e}", flush=True)
    if not args.skip_knn:
        for name, a, b in (("same-class", half_div, new_div), ("all-pairs", half_all, new_all)):
            same, tied = same_sets(x, a, b)
            print(f"identical neighbour sets, half-matrix vs faiss exact, {name}: {same:.5f} of rows; the rest "
                  f"differ only by a tie (|cos difference| <= 1e-5): {tied:.3f} of them; rows searched again "
                  f"after the bf16 screen: {again[name]} of {args.n:,}", flush=True)
    if not (args.skip_old or args.skip_knn):
        for name, a, b in (("same-class", new_div, old_div), ("all-pairs", new_all, old_all)):
            same, tied = same_sets(x, a, b)
            print(f"identical neighbour sets, faiss exact vs before, {name}: {same:.5f} of rows; "
                  f"the rest differ only by a tie (|cos difference| <= 1e-5): {tied:.3f} of them", flush=True)
    if not (args.skip_graph or args.skip_knn):
        graph = KnnConfig(approx_min_rows=0, ef_construction=args.graph_ef_construction)
        notes: list[str] = []
        found = timed(f"faiss HNSW forced (efConstruction {graph.ef_construction}): all-pairs k=32",
                      lambda: knn(x, x, 32, device="cpu", config=graph, progress=lambda p: notes.append(p.message))[1])
        print(f"  -> {[m for m in notes if m][-1]}; recall against exact (all {args.n:,} rows, k=32): "
              f"{recall(found, new_all):.4f}", flush=True)
    if not args.skip_adapter:
        cls = unit_rows(np.random.default_rng(1).normal(size=(args.classes, args.dim)))
        timed("first optimizer of the process (imports torch._dynamo)",
              lambda: ClipAdapter(device="cpu").fit(x[:256], labels[:256], cls, epochs=1))
        def fit(**kw):
            return ClipAdapter(device="cpu").fit(x, labels, cls, epochs=args.adapter_epochs, **kw)

        for rep in range(args.repeat):
            new = timed(f"ClipAdapter.fit, {args.adapter_epochs} epochs (fused AdamW, {FIT_CPU_THREADS} thread)", fit)
            if not args.skip_old:
                with unfused_adamw():
                    old = timed(f"ClipAdapter.fit, {args.adapter_epochs} epochs (before: unfused, "
                                f"{torch.get_num_threads()} threads)", lambda: fit(cpu_threads=None))
        if not args.skip_old:
            print(f"loss histories, before vs now: {np.round(old.loss_history_, 5)} vs {np.round(new.loss_history_, 5)}")

    print(f"\nk-NN / adapter bench: N={args.n:,} D={args.dim} C={args.classes} data={args.data} "
          f"torch threads={torch.get_num_threads()} cores={os.cpu_count()} "
          f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, loadavg at end {open('/proc/loadavg').read().split()[:3]}")
    print(f"{'stage':<70} {'seconds':>8}")
    for name, sec, note in rows:
        print(f"{name:<70} {sec:>8.2f} {note}")


if __name__ == "__main__":
    main()
