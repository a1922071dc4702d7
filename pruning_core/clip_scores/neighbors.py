"""k-nearest neighbours in cosine space (faiss) and the scores built on them.

Search is faiss's: exact inner product (``IndexFlatIP``, BLAS tiles, so the similarity matrix of N
images is never held whole) by default, and an HNSW graph once both the query and the base set have
``KnnConfig.approx_min_rows`` rows, where exact search grows as N^2.  The graph's recall is measured
on every call against exact search for a sample of queries; below ``KnnConfig.recall_target`` the
graph searches wider, and falls back to exact search when even that does not reach it (isotropic
data, where no graph helps).  With CUDA and a faiss build that has GPU support, the exact index runs
on the GPU at any size.  Queries go in blocks (``rows_per_block`` of the base) so progress and
cancel keep their granularity; same-class searches run class by class, C times cheaper.

* ``diversity_sds``: mean cosine distance to the k nearest SAME-CLASS neighbours (the SDS of
  CLIP-powered selection, our reading). Low = the sample is redundant within its class.
* ``outlier_score``: mean cosine distance to the k nearest neighbours of any class. High = outlier.
* ``near_duplicate_groups``: connected components of the graph "cosine >= threshold".
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, TypedDict, Union, Unpack

import faiss
import numpy as np
import torch

from pruning_core.clip_scores._common import (
    DEFAULT_BLOCK_BYTES,
    ArrayLike,
    as_label_ids,
    device_of,
    rows_per_block,
    unit_rows,
)
from pruning_core.runtime.progress import CancelToken, ProgressCallback, check, report


@dataclass(frozen=True)
class KnnConfig:
    """Which faiss index a k-NN search uses; the defaults are the measured ones (docs/benchmarks.md)."""

    approx_min_rows: int = 200_000
    """Exact search when the query set or the base set has fewer rows (a single query, a class, the
    demo, CIFAR-10); an HNSW graph from there on.  Exact search is BLAS-bound (N^2 x D) and the graph
    is not: at 50,000 x 512 on 2 cores exact took 14 s and a graph reaching 0.99 recall on CLIP-like
    data 47 s (docs/benchmarks.md).  Exact grows as N^2, the graph about as N log N, so they cross
    near 4x that size: an extrapolation, not a measurement."""
    hnsw_m: int = 32
    """Graph degree: recall per unit of search work rises with it, build time and memory too."""
    ef_construction: int = 80
    """Candidate list while the graph is built; at 40 the graph of CLIP-like 512-d data stayed
    below 0.99 recall even at ``max_ef_search``, at 80 it reached 0.995."""
    ef_search: int = 64
    """First candidate list of a search (at least k + 1); doubled while recall is short."""
    max_ef_search: int = 512
    """Widest search tried before falling back to exact search."""
    recall_target: float = 0.99
    """Least recall of the true k neighbours, measured against exact search, the graph must reach."""
    recall_sample: int = 256
    """Queries checked against exact search for that measurement (a few ms of exact search)."""
    threads: int = 0
    """faiss OpenMP threads during a search; 0 follows ``torch.get_num_threads()`` so one thread
    setting governs both libraries, and nothing is oversubscribed when faiss and torch share
    OpenMP's runtime (they do when torch is imported first).  Restored after each search."""


DEFAULT_KNN = KnnConfig()


class KnnOptions(TypedDict, total=False):
    """How a k-NN pass runs (not what it computes); the scores built on :func:`knn` pass these through.

    Defaults live in :func:`knn` alone: ``device="auto"``, ``block_bytes=DEFAULT_BLOCK_BYTES``,
    ``config=DEFAULT_KNN``.
    """

    device: Union[str, torch.device]
    block_bytes: int
    config: KnnConfig
    progress: Optional[ProgressCallback]
    cancel: Optional[CancelToken]


@contextlib.contextmanager
def _faiss_threads(config: KnnConfig) -> Iterator[None]:
    """faiss's OpenMP pool sized like torch's for the duration of a search, then restored."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(config.threads or torch.get_num_threads())
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _unit_float32(x: ArrayLike) -> np.ndarray:
    """A fresh C-contiguous float32 array of unit rows: what faiss takes, never a read-only memmap."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(unit_rows(np.asarray(x)))


Search = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]
"""``(queries, n) -> (similarities, indices)``: the n best base rows per query, best first."""


def _search_rows(search: Search, q: np.ndarray, own: Optional[np.ndarray], kk: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``kk`` best base rows for each query row; ``own`` (the rows' own base indices) excludes self.

    Self is searched for as one extra result and removed wherever it sits (an exact duplicate may
    tie with it and come first); when it is not among the results at all (more than kk exact
    copies), the last result goes instead.
    """
    if own is None:
        return search(q, kk)
    sim, idx = search(q, kk + 1)
    is_own = idx == own[:, None]
    drop = np.where(is_own.any(axis=1), is_own.argmax(axis=1), kk)
    keep = np.ones(idx.shape, dtype=bool)
    keep[np.arange(idx.shape[0]), drop] = False
    return sim[keep].reshape(-1, kk), idx[keep].reshape(-1, kk)


def _faiss_gpu(dev: torch.device) -> bool:
    """Whether faiss searches on the GPU: CUDA asked for and a faiss build with CUDA (faiss-gpu-*)."""
    return dev.type == "cuda" and faiss.get_num_gpus() > 0


def _exact_search(base: np.ndarray, dev: torch.device) -> Search:
    if dev.type == "cuda" and not _faiss_gpu(dev):  # pragma: no cover - needs a GPU
        return _matmul_search(base, dev)
    index = faiss.IndexFlatIP(base.shape[1])
    index.add(base)
    if _faiss_gpu(dev):  # pragma: no cover - needs faiss built with CUDA
        index = faiss.index_cpu_to_all_gpus(index)
    return index.search


def _matmul_search(base: np.ndarray, dev: torch.device) -> Search:
    """Exact inner-product search as one matrix product per query block on ``dev``.

    For a CUDA device with the CPU-only faiss build the requirements pin: the GPU still beats faiss on the
    host by far (all pairs of 300,000 x 512 rows in 2.9 s on an H200, docs/benchmarks.md).
    """
    b = torch.from_numpy(base).to(dev)

    def search(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        top = (torch.from_numpy(np.ascontiguousarray(queries)).to(dev) @ b.T).topk(k, dim=1)
        return top.values.cpu().numpy(), top.indices.cpu().numpy()

    return search


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each row's true neighbours that were found."""
    return float(np.mean([np.isin(t, f).mean() for f, t in zip(found, truth)])) if len(truth) else 1.0


def _graph_search(
    query: np.ndarray,
    base: np.ndarray,
    kk: int,
    exclude_self: bool,
    config: KnnConfig,
    exact: Search,
    cancel: Optional[CancelToken],
) -> tuple[Optional[Search], str]:
    """An HNSW search whose measured recall reaches ``config.recall_target`` (None: search exactly),
    and a line saying which and why, for the progress message.

    The graph is built in chunks so a cancel lands within one; the recall is measured on a fixed
    random sample of queries against ``exact``, widening ``efSearch`` until it holds.
    """
    graph = faiss.IndexHNSWFlat(base.shape[1], config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    graph.hnsw.efConstruction = config.ef_construction
    chunk = 8192
    for s in range(0, base.shape[0], chunk):
        check(cancel)
        graph.add(base[s : s + chunk])
    sample = np.sort(np.random.default_rng(0).choice(query.shape[0], min(config.recall_sample, query.shape[0]), replace=False))
    own = sample if exclude_self else None
    truth = _search_rows(exact, query[sample], own, kk)[1]
    ef = max(config.ef_search, kk + 1)
    while True:
        check(cancel)
        graph.hnsw.efSearch = ef
        got = _recall(_search_rows(graph.search, query[sample], own, kk)[1], truth)
        if got >= config.recall_target:
            return graph.search, f"HNSW graph, efSearch {ef}, measured recall {got:.3f}"
        if ef * 2 > max(config.max_ef_search, kk + 1):
            return None, f"exact (the HNSW graph reached recall {got:.3f} < {config.recall_target} at efSearch {ef})"
        ef *= 2


def _knn_group(
    q: np.ndarray,
    b: np.ndarray,
    k: int,
    exclude_self: bool,
    block_rows: int,
    config: KnnConfig,
    dev: torch.device,
    cancel: Optional[CancelToken],
    on_rows: Callable[[int, str], None],
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k cosine similarities of every row of ``q`` in ``b`` (both unit rows), block by block."""
    nq, m = q.shape[0], b.shape[0]
    kk = min(k, m - 1 if exclude_self else m)
    if kk <= 0 or nq == 0:
        return np.zeros((nq, 0), dtype=np.float32), np.zeros((nq, 0), dtype=np.int64)
    check(cancel)
    exact = _exact_search(b, dev)
    search, note = exact, "exact"
    if min(nq, m) >= config.approx_min_rows and dev.type != "cuda":  # exact on a GPU is fast at any size
        graph, note = _graph_search(q, b, kk, exclude_self, config, exact, cancel)
        search = graph or exact
    sims = np.empty((nq, kk), dtype=np.float32)
    idx = np.empty((nq, kk), dtype=np.int64)
    for s in range(0, nq, block_rows):
        check(cancel)
        e = min(nq, s + block_rows)
        own = np.arange(s, e) if exclude_self else None
        sims[s:e], idx[s:e] = _search_rows(search, q[s:e], own, kk)
        short = np.flatnonzero((idx[s:e] < 0).any(axis=1))  # a graph may come back with fewer than kk
        if len(short):
            sims[s + short], idx[s + short] = _search_rows(exact, q[s + short], None if own is None else own[short], kk)
        on_rows(e - s, note)
    return sims, idx


def knn(
    query: ArrayLike,
    base: ArrayLike,
    k: int,
    exclude_self: bool = True,
    same_group: Optional[ArrayLike] = None,
    *,
    query_group: Optional[ArrayLike] = None,
    block_size: Optional[int] = None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    config: KnnConfig = DEFAULT_KNN,
    device: Union[str, torch.device] = "auto",
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest rows of ``base`` for every row of ``query`` by cosine similarity.

    Returns ``(distances, indices)`` like sklearn: ``(Nq, k)`` float32 cosine distances
    ``1 - cos`` sorted ascending and ``(Nq, k)`` int64 row indices into ``base``.  Where fewer than
    ``k`` candidates exist (small groups) the tail is padded with distance NaN and index -1.

    ``exclude_self``: query row i IS base row i (query and base are the same set) and is not its
    own neighbour; pass False for a separate query set.  ``same_group``: one group id per base row
    (e.g. label ids); neighbours are then searched only within the query row's group,
    ``query_group`` (defaults to ``same_group`` when query is base).  ``block_size`` overrides
    the number of query rows per block (default: as many as fit ``block_bytes``); a block is the
    unit of progress and cancel.  ``config`` picks the index (exact below
    ``config.approx_min_rows``, see :class:`KnnConfig`).
    """
    if k < 0:
        raise ValueError("k must be >= 0")
    dev = device_of(device)
    q = _unit_float32(query)
    b = q if query is base else _unit_float32(base)
    nq, m = q.shape[0], b.shape[0]
    if exclude_self and nq != m:
        raise ValueError("exclude_self=True needs query and base to be the same set of rows")
    dist = np.full((nq, k), np.nan, dtype=np.float32)
    ind = np.full((nq, k), -1, dtype=np.int64)
    done = 0

    def on_rows(r: int, how: str = "") -> None:
        nonlocal done
        done += r
        report(progress, "k-NN", done, nq, how)

    if same_group is None:
        groups = [(None, None)]
    else:
        bg = as_label_ids(same_group, m)
        if query_group is None:
            if nq != m:
                raise ValueError("query_group is needed when query and base differ in length")
            qg = bg
        else:
            qg = as_label_ids(query_group, nq)
        groups = []
        for g in np.unique(qg):
            qi = np.flatnonzero(qg == g)
            bi = np.flatnonzero(bg == g)
            if exclude_self and not np.array_equal(qi, bi):  # pragma: no cover - guarded by nq == m
                raise ValueError("exclude_self with different query/base groups")
            groups.append((qi, bi))
    with _faiss_threads(config):
        for qi, bi in groups:
            qs = q if qi is None else q[qi]
            bs = b if qi is None else (qs if exclude_self else b[bi])
            rows = block_size or rows_per_block(bs.shape[0], block_bytes)
            v, i = _knn_group(qs, bs, k, exclude_self, rows, config, dev, cancel, on_rows)
            kk = v.shape[1]
            if kk == 0:
                on_rows(qs.shape[0])  # nothing to search (group of one, or k = 0): rows are done
                continue
            d = np.maximum(1.0 - v, 0.0)
            if qi is None:
                dist[:, :kk], ind[:, :kk] = d, i
            else:
                dist[qi, :kk], ind[qi, :kk] = d, bi[i]
    report(progress, "k-NN", nq, nq)
    return dist, ind


def mean_distance(dist: np.ndarray) -> np.ndarray:
    """Row means of k-NN distances, ignoring the NaN padding; NaN for a row with no neighbour."""
    valid = ~np.isnan(dist)
    cnt = valid.sum(axis=1)
    tot = np.where(valid, dist, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, tot / np.maximum(cnt, 1), np.nan).astype(np.float32)


def diversity_sds(img: ArrayLike, label_ids: ArrayLike, k: int, **options: Unpack[KnnOptions]) -> np.ndarray:
    """SDS ``(N,)``: mean cosine distance to the ``k`` nearest same-class neighbours. Low = redundant.

    A class with fewer than k+1 members uses the neighbours it has; a sample alone in its class
    has no neighbour and gets NaN (it is unique, not redundant; callers decide how to fill).
    """
    ids = as_label_ids(label_ids, int(img.shape[0]))
    return mean_distance(knn(img, img, k, True, ids, **options)[0])


def outlier_score(img: ArrayLike, k: int, **options: Unpack[KnnOptions]) -> np.ndarray:
    """``(N,)`` mean cosine distance to the ``k`` nearest neighbours among all samples. High = outlier."""
    return mean_distance(knn(img, img, k, True, **options)[0])


def groups_from_pairs(n: int, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Connected components of an undirected pair list -> (group id or -1, duplicate count).

    Groups are numbered 0, 1, ... in order of their lowest member index, so ids are deterministic.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n, n)).tocsr()
    _, comp = connected_components(graph, directed=False)
    sizes = np.bincount(comp)
    member_size = sizes[comp]
    # Order multi-member components by their first (lowest-index) member.
    _, first = np.unique(comp, return_index=True)
    multi = sizes > 1
    order = np.argsort(first[multi], kind="stable")
    new_id = np.full(len(sizes), -1, dtype=np.int64)
    new_id[np.flatnonzero(multi)[order]] = np.arange(int(multi.sum()), dtype=np.int64)
    group = new_id[comp]
    count = np.where(member_size > 1, member_size - 1, 0).astype(np.int64)
    return group, count


def near_duplicate_groups(
    img: ArrayLike,
    threshold: float,
    *,
    max_neighbors: int = 32,
    neighbors: Optional[tuple[np.ndarray, np.ndarray]] = None,
    **options: Unpack[KnnOptions],
) -> tuple[np.ndarray, np.ndarray]:
    """Near-duplicate groups: ``(group_id, dup_count)``, both ``(N,)`` int64.

    Two samples are linked when their cosine similarity is >= ``threshold``; groups are the
    connected components of these links (so A~B, B~C puts A, B, C together even if A !~ C).
    ``group_id`` is -1 for a sample with no near-duplicate; ``dup_count`` = group size - 1 (0 for none).

    Links come from each sample's ``max_neighbors`` nearest neighbours, which bounds memory when a
    dataset is massively duplicated; a larger duplicate set is still joined through its members'
    links.  ``neighbors``: a precomputed ``knn(img, img, K)`` result to reuse (its K columns are used).
    """
    n = int(img.shape[0])
    if neighbors is None:
        neighbors = knn(img, img, max_neighbors, True, **options)
    dist, ind = neighbors
    if dist.shape[0] != n:
        raise ValueError("precomputed neighbours do not match img")
    # dist = 1 - cos; small tolerance so an exact copy (cos rounding to 0.99999994) still counts at 1.0.
    linked = (ind >= 0) & (dist <= (1.0 - threshold) + 1e-6)
    rows = np.broadcast_to(np.arange(n)[:, None], ind.shape)[linked]
    return groups_from_pairs(n, rows, ind[linked])
