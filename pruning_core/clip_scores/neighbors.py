"""Blocked k-nearest neighbours in cosine space and the scores built on them.

The similarity matrix of N images is never held whole: query rows are processed in blocks of
``rows x M`` floats (``DEFAULT_BLOCK_BYTES``, 256 MB, by default), each block reduced to its top-k
with ``torch.topk`` before the next one is computed.  Same-class searches run class by class, which
is also C times cheaper than masking a full search.

* ``diversity_sds``: mean cosine distance to the k nearest SAME-CLASS neighbours (the SDS of
  CLIP-powered selection, our reading). Low = the sample is redundant within its class.
* ``outlier_score``: mean cosine distance to the k nearest neighbours of any class. High = outlier.
* ``near_duplicate_groups``: connected components of the graph "cosine >= threshold".
"""

from __future__ import annotations

from typing import Optional, TypedDict, Union, Unpack

import numpy as np
import torch

from pruning_core.clip_scores._common import (
    DEFAULT_BLOCK_BYTES,
    ArrayLike,
    as_label_ids,
    device_of,
    normalize,
    rows_per_block,
    to_tensor,
)
from pruning_core.progress import CancelToken, ProgressCallback, check, report


class KnnOptions(TypedDict, total=False):
    """How a k-NN pass runs (not what it computes); the scores built on :func:`knn` pass these through.

    Defaults live in :func:`knn` alone: ``device="auto"``, ``block_bytes=DEFAULT_BLOCK_BYTES``.
    """

    device: Union[str, torch.device]
    block_bytes: int
    progress: Optional[ProgressCallback]
    cancel: Optional[CancelToken]


def _knn_dense(
    q: torch.Tensor,
    b: torch.Tensor,
    k: int,
    exclude_self: bool,
    block_rows: int,
    cancel: Optional[CancelToken],
    on_rows=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k cosine similarities of every row of ``q`` in ``b`` (both normalised), block by block."""
    nq, m = q.shape[0], b.shape[0]
    kk = min(k, m - 1 if exclude_self else m)
    vals = torch.empty((nq, max(kk, 0)), dtype=torch.float32, device=q.device)
    idx = torch.empty((nq, max(kk, 0)), dtype=torch.int64, device=q.device)
    if kk <= 0 or nq == 0:
        return vals, idx
    for s in range(0, nq, block_rows):
        check(cancel)
        e = min(nq, s + block_rows)
        sim = q[s:e] @ b.T
        if exclude_self:
            r = torch.arange(e - s, device=q.device)
            sim[r, r + s] = float("-inf")
        v, i = torch.topk(sim, kk, dim=1, largest=True, sorted=True)
        vals[s:e] = v
        idx[s:e] = i
        del sim
        if on_rows is not None:
            on_rows(e - s)
    return vals, idx


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
    the number of query rows per block (default: as many as fit ``block_bytes``).
    """
    if k < 0:
        raise ValueError("k must be >= 0")
    dev = device_of(device)
    q = normalize(to_tensor(query, dev))
    b = q if query is base else normalize(to_tensor(base, dev))
    nq, m = q.shape[0], b.shape[0]
    if exclude_self and nq != m:
        raise ValueError("exclude_self=True needs query and base to be the same set of rows")
    dist = np.full((nq, k), np.nan, dtype=np.float32)
    ind = np.full((nq, k), -1, dtype=np.int64)
    done = 0

    def on_rows(r: int) -> None:
        nonlocal done
        done += r
        report(progress, "k-NN", done, nq)

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
    for qi, bi in groups:
        if qi is None:
            qs, bs = q, b
        else:
            qs = q[torch.as_tensor(qi, device=dev)]
            bs = qs if exclude_self else b[torch.as_tensor(bi, device=dev)]
        rows = block_size or rows_per_block(bs.shape[0], block_bytes)
        v, i = _knn_dense(qs, bs, k, exclude_self, rows, cancel, on_rows)
        kk = v.shape[1]
        if kk == 0:
            on_rows(qs.shape[0])  # nothing to search (group of one, or k = 0): rows are done
            continue
        d_np = (1.0 - v).clamp_(min=0.0).cpu().numpy()
        i_np = i.cpu().numpy()
        if qi is None:
            dist[:, :kk] = d_np
            ind[:, :kk] = i_np
        else:
            dist[qi, :kk] = d_np
            ind[qi, :kk] = bi[i_np]
    report(progress, "k-NN", nq, nq)
    return dist, ind


def mean_distance(dist: np.ndarray) -> np.ndarray:
    """Row means of k-NN distances, ignoring the NaN padding; NaN for a row with no neighbour."""
    valid = ~np.isnan(dist)
    cnt = valid.sum(axis=1)
    tot = np.where(valid, dist, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, tot / np.maximum(cnt, 1), np.nan).astype(np.float32)


def diversity_sds(img: ArrayLike, label_ids: ArrayLike, k: int = 10, **options: Unpack[KnnOptions]) -> np.ndarray:
    """SDS ``(N,)``: mean cosine distance to the ``k`` nearest same-class neighbours. Low = redundant.

    A class with fewer than k+1 members uses the neighbours it has; a sample alone in its class
    has no neighbour and gets NaN (it is unique, not redundant; callers decide how to fill).
    """
    ids = as_label_ids(label_ids, int(img.shape[0]))
    return mean_distance(knn(img, img, k, True, ids, **options)[0])


def outlier_score(img: ArrayLike, k: int = 10, **options: Unpack[KnnOptions]) -> np.ndarray:
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
    threshold: float = 0.95,
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
