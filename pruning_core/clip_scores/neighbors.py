"""k-nearest neighbours in cosine space and the scores built on them.

Every score here searches a set against itself (``exclude_self``), and on the CPU that search is
:func:`_self_search`: exact, over only the tiles on and above the diagonal of the similarity matrix
(it is symmetric), each tile's rows and columns offered to faiss's C++ heap arrays.  Where the CPU
multiplies bf16 in hardware, the tiles are bf16 products (twice the fp32 rate) screened with a
proven error bound (:func:`screen_error`, :func:`screen_floor`), the candidates within it rescored
in fp32, and a row the screen cannot certify searched again exactly; a pilot of rows sizes the
screen to the data, and data too clustered for it (CLIP-like) runs the half matrix in fp32.
Other searches are faiss's: exact inner product (``IndexFlatIP``, BLAS tiles, so the similarity
matrix is never held whole) for a separate query set, and an HNSW graph once both the query and the
base set have ``KnnConfig.approx_min_rows`` rows, where exact search grows as N^2.  The graph's
recall is measured on every call against exact search for a sample of queries; below
``KnnConfig.recall_target`` the graph searches wider, and falls back to exact search when even that
does not reach it (isotropic data, where no graph helps).  With CUDA and a faiss build that has GPU
support, the exact index runs on the GPU at any size (a plain matrix product without it).  Blocks of
rows keep progress and cancel granular; same-class searches run class by class, C times cheaper.

* ``diversity_sds``: mean cosine distance to the k nearest SAME-CLASS neighbours (the SDS of
  CLIP-powered selection, our reading). Low = the sample is redundant within its class.
* ``outlier_score``: mean cosine distance to the k nearest neighbours of any class. High = outlier.
* ``near_duplicate_groups``: connected components of the graph "cosine >= threshold".
"""

from __future__ import annotations

import contextlib
import math
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
from pruning_core.runtime.devices import cpu_has_bf16
from pruning_core.runtime.progress import CancelToken, ProgressCallback, check, report


@dataclass(frozen=True)
class KnnConfig:
    """Which faiss index a k-NN search uses; the defaults are the measured ones (docs/benchmarks.md)."""

    approx_min_rows: int = 200_000
    """Exact search when the query set or the base set has fewer rows (a single query, a class, the
    demo, CIFAR-10); an HNSW graph from there on.  Exact search is BLAS-bound (N^2 x D) and the graph
    is not: at 50,000 x 512 on 2 cores exact took 14 s and a graph reaching 0.99 recall on CLIP-like
    data 47 s (docs/benchmarks.md).  Exact grows as N^2, the graph about as N log N, so they cross
    near 4x that size: an extrapolation, not a measurement.  (The half-matrix self-search, exact too,
    took 9 s there on random data: further out still.)"""
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
    symmetric: bool = True
    """A set searched against itself on the CPU (below ``approx_min_rows``) goes to the half-matrix
    search of :func:`_self_search`; False sends it to faiss's ``IndexFlatIP`` like any other exact
    search (the reference ``bench/bench_knn_adapter.py`` times it against)."""
    tile_rows: int = 2048
    """Rows per tile of the exact self-search (:func:`_self_search`): it computes only the tiles on and
    above the diagonal of the similarity matrix, a fraction (T + 1) / 2T of them for T row blocks, so
    smaller tiles save more of the product; but each tile is a few short parallel sections, and on a
    busy 2-core machine 2048 beat 1024 by 20 % at 50,000 rows (1024 by 4x over 512 at 20,000).  Also the unit
    of progress and cancel there (``block_size`` overrides it); at most ``block_bytes`` per tile."""
    bf16_screen: bool = True
    """On a CPU with bf16 hardware (:func:`~pruning_core.runtime.devices.cpu_has_bf16`), screen the
    self-search in bf16 (twice the fp32 GEMM rate) and rerank in fp32 within a proven error bound; off,
    or without the hardware, the self-search runs in fp32 throughout."""
    screen_width: Optional[int] = None
    """Candidates each row keeps from the bf16 screen (at least k).  None sizes it from a pilot
    (:func:`_screen_width`); a row whose kept candidates do not reach below the error margin under
    its k-th best is searched again exactly, so a fixed width (tests) trades bookkeeping for those.
    A fixed width screens whatever the set's size (``screen_min_rows``, ``screen_max_width``)."""
    screen_max_width: int = 160
    """Widest bf16 buffer worth it: past it the screen's heaps and rerank cost what the bf16 product
    saves, and the self-search runs in fp32.  The margin band is ~65 rows for k = 32 on random data
    (bf16 1.4x faster than fp32) but ~140 on CLIP-like data, where a 288-wide screen only tied fp32
    (50,000 x 512, 2 busy cores; ``bench/bench_knn_adapter.py``)."""
    screen_min_rows: int = 10_000
    """Smaller sets (a class of CIFAR-10) run in fp32: the bf16 product saves less there than the
    pilot, the error bound and the rerank cost (5,000 rows: fp32 0.75 s, bf16 0.9-1.1 s, faiss 0.9 s)."""
    pilot_rows: int = 256
    """Rows whose margin band is counted, against all rows, to size the screen (``screen_width=None``);
    fewer (N / 20, at least 64) in a small set, where they would be a large part of the work."""
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


BF16_ROUNDOFF = 2.0**-8
"""Unit roundoff of bf16 (8 significant bits, round to nearest): ``fl(y) = y / (1 + d)``, ``|d| <= 2^-8``."""
FP32_ROUNDOFF = 2.0**-24


def _screen_dtype(config: KnnConfig) -> torch.dtype:
    """bf16 where the config allows it and the CPU multiplies bf16 in hardware; fp32 otherwise."""
    return torch.bfloat16 if config.bf16_screen and cpu_has_bf16() else torch.float32


def screen_error(x: np.ndarray, xs: torch.Tensor, chunk: int = 8192) -> float:
    """``E0``: a bound on ``|p - s|`` for every pair of rows, where ``p`` is the bf16 screen's dot
    product before its output is rounded to bf16 and ``s`` the fp32 dot product the rerank computes.

    With ``a`` an fp32 row, ``h`` its bf16 rounding and ``e = a - h`` (computed exactly in float64):

    * inputs: ``a.b - h_a.h_b = h_a.e_b + e_a.h_b + e_a.e_b``, so by Cauchy-Schwarz
      ``|a.b - h_a.h_b| <= 2 nu r + r^2`` with ``nu = max ||h||`` and ``r = max ||e||`` over the rows
      (about 1 and 0.002 for unit rows: the measured ``r``, not the worst case ``2^-8``, so the
      bound is about half the textbook ``(2u + u^2) sum |a_i b_i|``);
    * the screen's accumulation: bf16 x bf16 products are exact in fp32 (8 + 8 significant bits
      <= 24) and oneDNN sums them in fp32 (AVX512-BF16 ``vdpbf16ps``), in any order: at most
      ``gamma_D sum |h_a_i h_b_i| <= gamma_D nu^2`` with ``gamma_D = D u32 / (1 - D u32)``,
      ``u32 = 2^-24``; denormals flushed to zero add at most ``D 2^-126``;
    * the rerank's fp32 dot product: ``|s - a.b| <= gamma_D mu^2``, ``mu = max ||a||``.

    ``tests/test_neighbors.py`` checks the bound against float64 on data, which would catch a
    backend that accumulated in bf16.  The norms are float64 sums, so a relative 1e-6 covers them.
    """
    d = x.shape[1]
    nu = r = mu = 0.0
    for s in range(0, x.shape[0], chunk):
        a = x[s : s + chunk].astype(np.float64)
        h = xs[s : s + chunk].double().numpy()
        nu = max(nu, float(np.linalg.norm(h, axis=1).max(initial=0.0)))
        r = max(r, float(np.linalg.norm(a - h, axis=1).max(initial=0.0)))
        mu = max(mu, float(np.linalg.norm(a, axis=1).max(initial=0.0)))
    gamma = d * FP32_ROUNDOFF / (1 - d * FP32_ROUNDOFF)
    return (2 * nu * r + r * r + gamma * (nu * nu + mu * mu) + d * 2.0**-126) * (1 + 1e-6)


def screen_floor(kth: np.ndarray, e0: float, u: float = BF16_ROUNDOFF) -> np.ndarray:
    """The screen value below which a candidate provably cannot beat a row's k-th best ``kth`` (screen values).

    A screen value ``v`` is ``p`` rounded to bf16, so ``|v - p| <= u |v|`` and the fp32 similarity
    ``s`` lies within ``f-(v) - E0 <= s <= f+(v) + E0`` with ``f+-(v) = v +- u|v|``, both increasing.
    The row's k best candidates have ``v >= kth``, so ``s >= kth - u|kth| - E0``.  A candidate with
    ``v < kth - M``, ``M = (2 E0 + 2u |kth|) / (1 - u)``, has
    ``s < kth - M + u|kth| + uM + E0 = kth - u|kth| - E0``: strictly below all k of them, so never in
    the exact top k.  The margin is about ``2 E0 + 2u|kth|``, 0.008 to 0.011 for unit rows.
    """
    return kth - (2 * e0 + 2 * u * np.abs(kth)) / (1 - u)


def _heaps(val: np.ndarray, ids: np.ndarray) -> "faiss.float_minheap_array_t":
    """faiss's min-heaps over the rows of ``(val, ids)`` (views kept alive by the caller): each keeps
    the largest values offered to its row, in C++, with one comparison per rejected value."""
    heaps = faiss.float_minheap_array_t()
    heaps.nh, heaps.k = val.shape
    heaps.val, heaps.ids = faiss.swig_ptr(val), faiss.swig_ptr(ids)
    return heaps


def _as_float32(t: torch.Tensor) -> np.ndarray:
    """A C-contiguous float32 array of ``t``; bf16 widened through its bits (the upper half of an fp32),
    a single-threaded numpy pass: torch's own conversion waits on its OpenMP team, several times
    slower per tile on a busy machine."""
    if t.dtype != torch.bfloat16:
        return np.ascontiguousarray(t.numpy())
    bits = t.contiguous().view(torch.int16).numpy().view(np.uint16)
    return np.left_shift(bits, 16, dtype=np.uint32).view(np.float32)


def _screen_width(xs: torch.Tensor, kk: int, e0: float, config: KnnConfig) -> int:
    """The buffer width the bf16 screen needs: the 99th percentile of the margin band (rows within
    :func:`screen_floor` of the k-th best) over ``config.pilot_rows`` rows searched in full, plus a
    quarter.  The band is a property of the data (dense clusters widen it), not of N alone."""
    n = xs.shape[0]
    size = min(config.pilot_rows, max(64, n // 20), n)  # at most ~5 % of the half matrix's work
    pilot = np.sort(np.random.default_rng(0).choice(n, size, replace=False))
    band = np.empty(len(pilot), dtype=np.int64)
    for s in range(0, len(pilot), 128):  # bounded memory; a smaller product repacks all of xs per call
        rows = pilot[s : s + 128]
        screen = _as_float32(xs[rows] @ xs.T)
        screen[np.arange(len(rows)), rows] = -np.inf
        kth = -np.partition(-screen, kk - 1, axis=1)[:, kk - 1]
        band[s : s + 128] = (screen >= screen_floor(kth, e0)[:, None]).sum(axis=1)
    return int(np.ceil(1.25 * np.quantile(band, 0.99)))


def _self_search(
    x: np.ndarray,
    kk: int,
    tile: int,
    config: KnnConfig,
    exact: Callable[[], Search],
    cancel: Optional[CancelToken],
    on_rows: Callable[[int, str, int], None],
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``kk`` of every row of ``x`` among the others (self excluded): the common case, a
    set searched against itself, in about half the work of ``IndexFlatIP``.

    The similarity matrix is symmetric, so only its tiles on and above the diagonal are computed:
    tile (I, J) offers its rows to row block I's heaps and, transposed, its columns to block J's
    (faiss's heap arrays, a comparison per value once a heap is full).  Row block I is complete
    once its row of tiles is done (the tiles left of the diagonal came earlier, as columns), so it
    is reported then, and cancel is checked between row blocks.

    With bf16 screening (:func:`_screen_dtype`) the products are bf16 and each heap keeps the
    best screen values, as many as :func:`_screen_width` finds the data needs (fp32 throughout when
    that is past ``config.screen_max_width``); a row block's candidates within the proven margin
    of :func:`screen_floor` are then rescored in fp32 and the top ``kk`` taken.  Exactness needs
    every candidate a row's heap dropped to lie below the floor, i.e. its last kept value does; a
    row where that fails (more near-ties than the width) is searched again with ``exact()`` and
    counted in ``on_rows``'s third argument.
    Without bf16 the tiles are fp32, the heaps ``kk`` wide, and their values are the result.
    """
    n = x.shape[0]
    xt = torch.from_numpy(x)
    xs, width, e0 = xt, kk, 0.0
    if _screen_dtype(config) == torch.bfloat16 and (n >= config.screen_min_rows or config.screen_width):
        xs = xt.bfloat16()
        e0 = screen_error(x, xs)
        width = min(max(config.screen_width or _screen_width(xs, kk, e0, config), kk), n - 1)
        if config.screen_width is None and width > config.screen_max_width:
            xs, width, e0 = xt, kk, 0.0
    screened = xs.dtype == torch.bfloat16
    val = np.empty((n, width), dtype=np.float32)
    ids = np.empty((n, width), dtype=np.int64)
    heaps = _heaps(val, ids)
    heaps.heapify()
    sims = np.empty((n, kk), dtype=np.float32)
    idx = np.empty((n, kk), dtype=np.int64)
    index: Optional[Search] = None  # built on the first row that needs it
    for s in range(0, n, tile):
        check(cancel)
        e = min(n, s + tile)
        for c in range(s, n, tile):
            ce = min(n, c + tile)
            # fp32, C-contiguous (matmul may hand back a transposed layout) and named: swig_ptr does
            # not keep its array alive, so a temporary would be freed before addn reads it.
            block = _as_float32(xs[s:e] @ xs[c:ce].T)
            if c == s:
                np.fill_diagonal(block, -np.inf)  # self is nobody's neighbour (never enters a heap)
            heaps.addn(ce - c, faiss.swig_ptr(block), c, s, e - s)
            if c > s:
                columns = torch.from_numpy(block).T.contiguous().numpy()
                heaps.addn(e - s, faiss.swig_ptr(columns), s, c, ce - c)
        _heaps(val[s:e], ids[s:e]).reorder()  # each row best first
        if not screened:
            sims[s:e], idx[s:e] = val[s:e], ids[s:e]
            on_rows(e - s, "exact (fp32, half the similarity matrix)")
            continue
        floor = screen_floor(val[s:e, kk - 1], e0)
        need = val[s:e] >= floor[:, None]  # a prefix of each row: the values are sorted
        w = int(need.sum(axis=1).max())
        cand = np.where(need[:, :w], ids[s:e, :w], -1)
        rescored = np.full(cand.shape, -np.inf, dtype=np.float32)  # faiss skips the -1 ids (or writes -inf)
        faiss.fvec_inner_products_by_idx(faiss.swig_ptr(rescored), faiss.swig_ptr(x[s:e]), faiss.swig_ptr(x),
                                         faiss.swig_ptr(cand), x.shape[1], e - s, w)
        top = torch.from_numpy(rescored).topk(kk, dim=1)
        sims[s:e], idx[s:e] = top.values.numpy(), np.take_along_axis(cand, top.indices.numpy(), axis=1)
        again = s + np.flatnonzero(val[s:e, -1] >= floor) if width < n - 1 else np.zeros(0, dtype=np.int64)
        if len(again):
            index = index or exact()
            sims[again], idx[again] = _search_rows(index, x[again], again, kk)
        on_rows(e - s, "exact (bf16 screen, fp32 rerank, half the similarity matrix)", len(again))
    return sims, idx


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
    block_rows: Optional[int],
    block_bytes: int,
    config: KnnConfig,
    dev: torch.device,
    cancel: Optional[CancelToken],
    on_rows: Callable[[int, str, int], None],
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k cosine similarities of every row of ``q`` in ``b`` (both unit rows), block by block.

    A set searched against itself on the CPU below ``config.approx_min_rows`` goes to
    :func:`_self_search` (tiles of ``block_rows`` or ``config.tile_rows``); otherwise faiss, in
    query blocks of ``block_rows`` or as many rows as fit ``block_bytes`` of similarities.
    """
    nq, m = q.shape[0], b.shape[0]
    kk = min(k, m - 1 if exclude_self else m)
    if kk <= 0 or nq == 0:
        return np.zeros((nq, 0), dtype=np.float32), np.zeros((nq, 0), dtype=np.int64)
    check(cancel)
    approx = min(nq, m) >= config.approx_min_rows and dev.type != "cuda"  # exact on a GPU is fast at any size
    if exclude_self and config.symmetric and not approx and dev.type != "cuda":
        tile = block_rows or min(config.tile_rows, math.isqrt(max(1, block_bytes // 4)))
        return _self_search(q, kk, tile, config, lambda: _exact_search(b, dev), cancel, on_rows)
    block_rows = block_rows or rows_per_block(m, block_bytes)
    exact = _exact_search(b, dev)
    search, note = exact, "exact"
    if approx:
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
    done = again = 0

    def on_rows(r: int, how: str = "", searched_again: int = 0) -> None:
        nonlocal done, again
        done += r
        again += searched_again
        report(progress, "k-NN", done, nq, f"{how}; {again} rows searched again" if again else how)

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
            v, i = _knn_group(qs, bs, k, exclude_self, block_size, block_bytes, config, dev, cancel, on_rows)
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


def diversity_sds(img: ArrayLike, label_ids: ArrayLike, k: int,
                  neighbors: Optional[tuple[np.ndarray, np.ndarray]] = None, **options: Unpack[KnnOptions]) -> np.ndarray:
    """SDS ``(N,)``: mean cosine distance to the ``k`` nearest same-class neighbours. Low = redundant.

    A class with fewer than k+1 members uses the neighbours it has; a sample alone in its class
    has no neighbour and gets NaN (it is unique, not redundant; callers decide how to fill).
    ``neighbors``: a precomputed all-pairs ``knn(img, img, K)`` to read them from
    (:func:`same_group_neighbors`); only the rows it cannot answer are searched.
    """
    ids = as_label_ids(label_ids, int(img.shape[0]))
    if neighbors is None:
        return mean_distance(knn(img, img, k, True, ids, **options)[0])
    return mean_distance(same_group_neighbors(img, ids, k, neighbors, **options)[0])


def same_group_neighbors(img: ArrayLike, groups: np.ndarray, k: int, neighbors: tuple[np.ndarray, np.ndarray],
                         **options: Unpack[KnnOptions]) -> tuple[np.ndarray, np.ndarray]:
    """``knn(img, img, k, True, groups)`` read from a precomputed all-pairs ``neighbors = knn(img, img, K)``.

    A row's K nearest overall hold its nearest same-group rows in order, so a row with at least ``k`` of
    them there (or whose list covers every other row) needs no search; the rest, few when groups are
    clusters (every row of CLIP-like data at K = 32, k = 10), are searched within their group.  Saves the
    second pass over the similarity matrix; equal to it but for ties (docs/benchmarks.md, "Diversity read
    from the all-pairs neighbours").
    """
    dist_all, ind_all = neighbors
    n = len(groups)
    same = (ind_all >= 0) & (groups[np.clip(ind_all, 0, None)] == groups[:, None])
    found = same.sum(axis=1)
    # each row's first k same-group columns, in distance order (a stable sort keeps the order within)
    order = np.argsort(~same, axis=1, kind="stable")[:, :k]
    dist = np.full((n, k), np.nan, dtype=np.float32)
    ind = np.full((n, k), -1, dtype=np.int64)
    take = np.take_along_axis(same, order, axis=1)
    dist[:, : order.shape[1]] = np.where(take, np.take_along_axis(dist_all, order, axis=1), np.nan)
    ind[:, : order.shape[1]] = np.where(take, np.take_along_axis(ind_all, order, axis=1), -1)
    complete = ind_all.shape[1] >= n - 1  # the list is every other row: what it holds is all there is
    search = np.flatnonzero(found < k) if not complete else np.zeros(0, dtype=np.int64)
    if len(search):
        x = _unit_float32(img)
        d, i = knn(x[search], x, k + 1, False, groups, query_group=groups[search], **options)
        # self sorted last, then the first k: where exact duplicates pushed self past the k + 1, those k are copies too
        keep = np.argsort(i == search[:, None], axis=1, kind="stable")[:, :k]
        dist[search], ind[search] = np.take_along_axis(d, keep, axis=1), np.take_along_axis(i, keep, axis=1)
    return dist, ind


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
