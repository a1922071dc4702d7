"""The half-matrix exact self-search of ``pruning_core.clip_scores.neighbors`` against float64 brute force.

Every search here must give the exact answer: the bf16 screen (forced on, whatever this CPU has) with
its error margin, rerank and re-search, and the fp32 half-matrix search.  Ties aside: neighbour
similarities are compared as sorted values, and neighbour sets where the k-th and (k+1)-th
brute-force similarities are more than 1e-6 apart.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pruning_core.clip_scores.neighbors as nb
from pruning_core.clip_scores import knn, unit_rows
from pruning_core.runtime.progress import CancelToken, Cancelled

SCREENS = {"bf16": nb.KnnConfig(screen_max_width=10**9, screen_min_rows=0), "fp32": nb.KnnConfig(bf16_screen=False)}
"""The bf16 screen at whatever width its pilot asks for, and fp32 throughout."""


@pytest.fixture(params=sorted(SCREENS))
def screen(request, monkeypatch) -> nb.KnnConfig:
    """Each screen in turn; bf16 is forced on so the screen is tested on any CPU."""
    monkeypatch.setattr(nb, "cpu_has_bf16", lambda: True)
    return SCREENS[request.param]


def _search(x, k, config, groups=None, notes=None, **kw):
    """``knn(x, x, k)`` and the number of rows the screen sent back to exact search."""
    notes = [] if notes is None else notes
    dist, ind = knn(x, x, k, True, groups, device="cpu", config=config, progress=lambda p: notes.append(p.message), **kw)
    again = [int(m.split(" rows searched again")[0].rsplit(" ", 1)[-1]) for m in notes if "rows searched again" in m]
    return dist, ind, (again[-1] if again else 0)


def assert_exact(x, k, dist, ind, groups=None):
    """``(dist, ind)`` is an exact k-NN answer of ``x`` against itself (self excluded, within groups)."""
    x64 = x.astype(np.float64)
    sim = x64 @ x64.T
    np.fill_diagonal(sim, -np.inf)
    if groups is not None:
        sim[groups[:, None] != groups[None, :]] = -np.inf
    order = np.sort(sim, axis=1)[:, ::-1]
    n = len(x)
    for r in range(n):
        avail = int(np.isfinite(order[r]).sum())
        kk = min(k, avail)
        assert np.all(ind[r, kk:] == -1) and np.all(np.isnan(dist[r, kk:])), f"row {r}: padding"
        got = ind[r, :kk]
        assert np.all(got >= 0) and r not in got and len(set(got)) == kk, f"row {r}: {got}"
        np.testing.assert_allclose(1 - dist[r, :kk], sim[r, got], atol=2e-6, err_msg=f"row {r}: distances")
        np.testing.assert_allclose(np.sort(sim[r, got])[::-1], order[r, :kk], atol=1e-6, err_msg=f"row {r}: similarities")
        if kk < avail and order[r, kk - 1] - order[r, kk] > 1e-6:
            assert set(got) == set(np.flatnonzero(sim[r] >= order[r, kk - 1])), f"row {r}: neighbour set"


def _clustered_with_copies(n, d, seed, noise=0.3):
    """Tight clusters, a fifth of the rows exact copies of others: many ties, many near-ties."""
    rng = np.random.default_rng(seed)
    centres = unit_rows(rng.normal(size=(max(1, n // 20), d)))
    x = unit_rows(centres[rng.integers(0, len(centres), n)] + noise * unit_rows(rng.normal(size=(n, d))))
    copies = rng.choice(n, n // 5, replace=False)
    x[copies] = x[rng.integers(0, n, len(copies))]
    return x


@pytest.mark.parametrize("kind", ["random", "clustered"])
def test_self_search_is_exact(screen, kind):
    rng = np.random.default_rng(0)
    x = unit_rows(rng.normal(size=(403, 48))) if kind == "random" else _clustered_with_copies(403, 48, 1)
    for k, block in ((1, None), (7, 64), (30, 100)):  # 403 rows: tiles that do not divide n
        dist, ind, _ = _search(x, k, screen, block_size=block)
        assert_exact(x, k, dist, ind)


def test_self_search_with_groups_and_k_beyond_a_group(screen):
    x = _clustered_with_copies(300, 16, 2)
    groups = np.random.default_rng(3).integers(0, 6, 300)
    groups[:3] = 7  # a group of three: k = 5 pads two columns
    groups[3] = 8  # a group of one: no neighbour at all
    dist, ind, _ = _search(x, 5, screen, groups, block_size=16)
    assert_exact(x, 5, dist, ind, groups)
    assert np.all(ind[:3, 2:] == -1) and np.all(ind[3] == -1) and np.all(np.isnan(dist[3]))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 90), d=st.integers(1, 20), k=st.integers(1, 12), tile=st.integers(1, 40),
       copies=st.booleans(), bf16=st.booleans(), seed=st.integers(0, 2**16))
def test_self_search_is_exact_for_any_shape(n, d, k, tile, copies, bf16, seed):
    x = _clustered_with_copies(n, d, seed) if copies else unit_rows(np.random.default_rng(seed).normal(size=(n, d)))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(nb, "cpu_has_bf16", lambda: True)
        dist, ind, _ = _search(x, k, nb.KnnConfig(bf16_screen=bf16, screen_width=k + 3), block_size=tile)
    assert_exact(x, k, dist, ind)


def test_rows_the_screen_cannot_certify_are_searched_again(monkeypatch):
    """Near-copies closer together than bf16 resolves: a buffer of k + 2 cannot reach below the margin,
    so those rows go back to exact search, and the answer is still exact."""
    monkeypatch.setattr(nb, "cpu_has_bf16", lambda: True)
    rng = np.random.default_rng(4)
    base = unit_rows(rng.normal(size=(40, 64)))
    x = unit_rows(np.repeat(base, 10, axis=0) + 0.02 * rng.normal(size=(400, 64)))  # cosines 0.96-0.99 within a clump
    dist, ind, again = _search(x, 4, nb.KnnConfig(screen_width=6), block_size=64)
    assert 0 < again <= 400
    assert_exact(x, 4, dist, ind)
    _, _, wide = _search(x, 4, nb.KnnConfig(screen_width=64), block_size=64)
    assert wide < again  # a wider buffer certifies more rows


def test_the_pilot_sizes_the_screen_and_wide_bands_run_in_fp32(monkeypatch):
    """The pilot's width holds the margin band of nearly every row (few re-searches); where the band is
    wider than ``screen_max_width`` (a clump of near-copies), or the set is small, the search runs in
    fp32, exact either way."""
    monkeypatch.setattr(nb, "cpu_has_bf16", lambda: True)
    x = unit_rows(np.random.default_rng(9).normal(size=(1500, 64)))
    notes = []
    dist, ind, again = _search(x, 8, nb.KnnConfig(screen_min_rows=1000), notes=notes, block_size=256)
    assert notes[-2].startswith("exact (bf16 screen") and again <= 15
    assert_exact(x, 8, dist, ind)
    clumps = _clustered_with_copies(400, 64, 10, noise=0.02)
    notes = []
    dist, ind, again = _search(clumps, 8, nb.KnnConfig(screen_max_width=12, screen_min_rows=0), notes=notes, block_size=64)
    assert notes[-2].startswith("exact (fp32") and again == 0
    assert_exact(clumps, 8, dist, ind)
    notes = []
    _search(x[:999], 8, nb.KnnConfig(screen_min_rows=1000), notes=notes)
    assert notes[-2].startswith("exact (fp32")


def test_the_screen_error_bound_holds_and_is_tight():
    """``screen_error`` + the output rounding bounds |bf16 product - fp32 product| on real pairs
    (a backend accumulating in bf16 would break it), and is far below the textbook worst case."""
    rng = np.random.default_rng(5)
    x = _clustered_with_copies(600, 512, 6, noise=0.05)  # near-duplicates: similarities near 1
    x = np.concatenate([x, unit_rows(rng.normal(size=(600, 512)))])
    xs = torch.from_numpy(x).bfloat16()
    e0 = nb.screen_error(x, xs)
    screen = (xs @ xs.T).float().numpy().astype(np.float64)
    exact = (torch.from_numpy(x) @ torch.from_numpy(x).T).numpy().astype(np.float64)
    err = np.abs(screen - exact)
    assert np.all(err <= e0 + nb.BF16_ROUNDOFF * np.abs(screen))
    assert err.max() > 0.2 * (e0 + nb.BF16_ROUNDOFF)  # the bound is not vacuous either
    assert e0 < 0.006  # measured rounding norms: about half of (2u + u^2) = 0.0078
    # the floor's promise: below it, the fp32 similarity is under that of the k-th best by the screen
    kth = np.sort(screen, axis=1)[:, -5]
    floor = nb.screen_floor(kth, e0)
    below = screen < floor[:, None]
    true_kth_lower = kth - nb.BF16_ROUNDOFF * np.abs(kth) - e0
    assert np.all(exact[below] < np.broadcast_to(true_kth_lower[:, None], exact.shape)[below])


def test_self_search_reports_progress_and_cancels(screen):
    x = unit_rows(np.random.default_rng(7).normal(size=(250, 8)))
    events = []
    knn(x, x, 3, device="cpu", config=screen, block_size=60, progress=events.append)
    done = [e.done for e in events]
    assert done == sorted(done) and done[-1] == 250 and 60 in done and 120 in done
    token = CancelToken()

    def cancel_after_first_block(p):
        if p.done >= 60:
            token.cancel()

    with pytest.raises(Cancelled):
        knn(x, x, 3, device="cpu", config=screen, block_size=60, progress=cancel_after_first_block, cancel=token)


def test_the_half_matrix_search_is_the_default_and_faiss_remains_the_reference(monkeypatch):
    """A set against itself goes to the half-matrix search; symmetric=False (and a separate query set)
    to faiss; both answers agree."""
    x = _clustered_with_copies(200, 24, 8)
    calls = []
    real = nb._self_search
    monkeypatch.setattr(nb, "_self_search", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    d_half, i_half = knn(x, x, 6, device="cpu")
    assert calls == [1]
    d_faiss, i_faiss = knn(x, x, 6, device="cpu", config=nb.KnnConfig(symmetric=False))
    knn(x[:20], x, 6, exclude_self=False, device="cpu")
    assert calls == [1]
    np.testing.assert_allclose(np.sort(d_half, axis=1), np.sort(d_faiss, axis=1), atol=2e-6)


@settings(max_examples=200, deadline=None)
@given(kth=st.floats(-1.0, 1.0), e0=st.floats(0.0, 0.01))
def test_the_screen_floor_is_sound_and_not_loose(kth, e0):
    """With screen values off by at most ``u|v| + E0`` each way: a candidate just under the floor is
    below the k-th best in every case, and one a tenth of the margin above it may not be."""
    u = nb.BF16_ROUNDOFF
    floor = float(nb.screen_floor(np.float64(kth), e0))
    worst_kth = kth - u * abs(kth) - e0  # the least the k-th best's true similarity can be
    v = floor - 1e-12  # just under (the bound is reached at the floor itself)
    assert v + u * abs(v) + e0 < worst_kth
    above = kth - 0.9 * (kth - floor)
    assert above + u * abs(above) + e0 >= worst_kth


@pytest.mark.parametrize("classes", [6, 40])  # clusters of ~50, and classes smaller than k + 1 (NaN padding)
@pytest.mark.parametrize("listed", [5, 12, 299])  # too short for most rows, enough for many, every other row
def test_same_class_neighbours_read_from_the_all_pairs_list_equal_a_same_class_search(classes, listed):
    from pruning_core.clip_scores.neighbors import same_group_neighbors

    rng = np.random.default_rng(classes + listed)
    x = rng.normal(size=(300, 16))
    x[[5, 9]] = x[7]  # exact duplicates: ties with the row itself
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    groups = rng.integers(0, classes, 300)
    read = same_group_neighbors(x, groups, 4, knn(x, x, listed, True, device="cpu"), device="cpu")
    searched = knn(x, x, 4, True, groups, device="cpu")
    np.testing.assert_allclose(read[0], searched[0], atol=1e-6)  # NaN where a class has fewer than 5 members
    assert ((read[1] == searched[1]) | np.isclose(read[0], searched[0], atol=1e-6)).all()  # the same rows but for ties
