"""Behaviour tests of pruning_core.clip_scores on synthetic clustered embeddings (CPU, fast)."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from pruning_core.clip_scores import (
    SCORE_INFOS,
    ClipAdapter,
    caption_alignment,
    class_text_embeddings,
    clip_scores,
    cps_optimize,
    cps_select,
    diversity_sds,
    knn,
    label_alignment,
    near_duplicate_groups,
    outlier_score,
    unit_rows,
    zero_shot,
)
from pruning_core.clip_scores.cps import duplicate_pairs
from pruning_core.runtime.progress import CancelToken, Cancelled

CLASSES = [f"class_{i}" for i in range(8)]


def make_data(n_per_class=80, c=8, d=32, noise=0.35, flip=0.1, seed=0):
    """Classes = Gaussian clusters on the sphere; text = class centre + a shared modality offset.

    Returns image embeddings, given (noisy) labels, true labels, class prompt embeddings, captions.
    """
    rng = np.random.default_rng(seed)
    centres = unit_rows(rng.normal(size=(c, d)))
    true = np.repeat(np.arange(c), n_per_class)
    img = unit_rows(centres[true] + noise * rng.normal(size=(len(true), d)) / np.sqrt(d) * 3)
    offset = unit_rows(rng.normal(size=d))
    text = unit_rows(centres + 0.6 * offset + 0.1 * rng.normal(size=(c, d)))
    given_ = true.copy()
    flipped = rng.choice(len(true), int(flip * len(true)), replace=False)
    given_[flipped] = (true[flipped] + rng.integers(1, c, len(flipped))) % c
    captions = unit_rows(img + 0.6 * offset + 0.15 * rng.normal(size=img.shape))
    return img, given_, true, text, captions


def hash_encode(prompts: list[str]) -> np.ndarray:
    """Deterministic pseudo text encoder: a seed per prompt string."""
    out = []
    for p in prompts:
        seed = int.from_bytes(hashlib.sha256(p.encode()).digest()[:8], "little")
        out.append(np.random.default_rng(seed).normal(size=16))
    return unit_rows(np.asarray(out))


# -- prompts --------------------------------------------------------------------------------------


def test_class_text_embeddings_average_of_normalised_templates():
    templates = ["a photo of a {}.", "a blurry photo of a {}."]
    emb = class_text_embeddings(["golden_retriever", "cat"], hash_encode, templates)
    assert emb.shape == (2, 16) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-6)
    raw = hash_encode(["a photo of a golden retriever.", "a blurry photo of a golden retriever."])
    np.testing.assert_allclose(emb[0], unit_rows(raw.mean(0)), atol=1e-6)
    with pytest.raises(ValueError):
        class_text_embeddings(["cat"], hash_encode, ["no placeholder"])


def test_class_text_embeddings_with_tiny_open_clip():
    open_clip = pytest.importorskip("open_clip")
    torch.manual_seed(0)
    model = open_clip.CLIP(
        embed_dim=32,
        vision_cfg=dict(image_size=32, layers=1, width=32, patch_size=8, head_width=16),
        text_cfg=dict(context_length=16, vocab_size=49408, width=32, heads=2, layers=1),
    ).eval()
    tok = open_clip.get_tokenizer("ViT-B-32", context_length=16)

    def encode(prompts: list[str]) -> np.ndarray:
        with torch.no_grad():
            return model.encode_text(tok(prompts), normalize=True).numpy()

    emb = class_text_embeddings(["cat", "dog", "airplane"], encode)
    assert emb.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


# -- alignment ------------------------------------------------------------------------------------


def test_label_alignment_and_zero_shot_find_mislabels():
    img, given_, true, text, _ = make_data()
    bad = given_ != true
    sas = label_alignment(img, given_, text, device="cpu")
    assert roc_auc_score(bad, -sas) >= 0.9
    zs = zero_shot(img, text, given_, device="cpu")
    np.testing.assert_allclose(zs.probs.sum(1), 1.0, atol=1e-5)
    assert roc_auc_score(bad, zs.margin) >= 0.9
    assert roc_auc_score(bad, -zs.confidence) >= 0.9
    # Suggested labels recover the true class for most mislabels; clean samples mostly agree.
    assert (zs.suggested[bad] == true[bad]).mean() >= 0.8
    assert zs.disagreement[bad].mean() >= 0.8 and zs.disagreement[~bad].mean() <= 0.1
    assert np.all(zs.margin >= 0) and np.all(zs.margin[zs.disagreement == 0] == 0)


def test_caption_alignment_flags_swapped_captions():
    img, _, true, _, captions = make_data(seed=1)
    rng = np.random.default_rng(1)
    swap = rng.choice(len(img), 40, replace=False)
    caps = captions.copy()
    caps[swap] = captions[np.roll(swap, 1)]  # each swapped caption belongs to another sample
    mismatched = np.zeros(len(img), bool)
    mismatched[swap] = true[swap] != true[np.roll(swap, 1)]
    scores = caption_alignment(img, caps, device="cpu")
    assert roc_auc_score(mismatched, -scores) >= 0.95


# -- neighbours -----------------------------------------------------------------------------------


def _brute_knn(q, b, k, exclude_self, q_group=None, b_group=None):
    sim = unit_rows(q.astype(np.float64)) @ unit_rows(b.astype(np.float64)).T
    if exclude_self:
        np.fill_diagonal(sim, -np.inf)
    if q_group is not None:
        sim[q_group[:, None] != b_group[None, :]] = -np.inf
    idx = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    val = np.take_along_axis(sim, idx, 1)
    return 1 - val, idx


@pytest.mark.parametrize("block_size", [1, 7, 64, None])
def test_blocked_knn_equals_brute_force(block_size):
    rng = np.random.default_rng(2)
    x = unit_rows(rng.normal(size=(150, 12)))
    dist, ind = knn(x, x, 5, block_size=block_size, device="cpu")
    bd, bi = _brute_knn(x, x, 5, True)
    np.testing.assert_array_equal(ind, bi)
    np.testing.assert_allclose(dist, bd, atol=1e-5)
    # separate query set, no self exclusion
    q = unit_rows(rng.normal(size=(40, 12)))
    dist, ind = knn(q, x, 4, exclude_self=False, block_size=block_size, device="cpu")
    bd, bi = _brute_knn(q, x, 4, False)
    np.testing.assert_array_equal(ind, bi)
    np.testing.assert_allclose(dist, bd, atol=1e-5)
    # same-group search
    g = rng.integers(0, 4, 150)
    dist, ind = knn(x, x, 3, same_group=g, block_size=block_size, device="cpu")
    bd, bi = _brute_knn(x, x, 3, True, g, g)
    np.testing.assert_array_equal(ind, bi)
    np.testing.assert_allclose(dist, bd, atol=1e-5)
    assert np.all(g[ind] == g[:, None])


def test_faiss_knn_equals_brute_force_with_duplicates_and_self_exclusion():
    """Exact copies tie with the row itself: self must still be dropped, the copies kept as neighbours."""
    rng = np.random.default_rng(11)
    x = unit_rows(rng.normal(size=(300, 16)))
    x[[6, 7]] = x[5]  # a triple of exact copies
    x[21] = x[20]
    dist, ind = knn(x, x, 4, block_size=37, device="cpu")
    bd, bi = _brute_knn(x, x, 4, True)
    assert not np.any(ind == np.arange(300)[:, None])
    np.testing.assert_allclose(dist, bd, atol=1e-5)
    assert set(ind[5, :2]) == {6, 7} and set(ind[6, :2]) == {5, 7} and ind[20, 0] == 21 and ind[21, 0] == 20
    np.testing.assert_allclose(dist[[5, 6, 7, 20, 21], 0], 0.0, atol=1e-6)
    # same neighbour sets wherever the k-th and (k+1)-th brute-force distances are not tied
    full_d, full_i = _brute_knn(x, x, 5, True)
    untied = full_d[:, 4] - full_d[:, 3] > 1e-5
    assert untied.sum() > 280
    for r in np.flatnonzero(untied):
        assert set(ind[r]) == set(full_i[r, :4])


def test_the_gpu_matmul_search_equals_faiss_exact():
    """The search a CUDA device uses with CPU-only faiss (run here on the CPU): faiss's exact answers."""
    from pruning_core.clip_scores.neighbors import _exact_search, _matmul_search

    rng = np.random.default_rng(3)
    base, queries = unit_rows(rng.normal(size=(500, 32))), unit_rows(rng.normal(size=(40, 32)))
    sims, idx = _matmul_search(base, torch.device("cpu"))(queries, 7)
    faiss_sims, faiss_idx = _exact_search(base, torch.device("cpu"))(queries, 7)
    np.testing.assert_allclose(sims, faiss_sims, atol=1e-5)
    np.testing.assert_array_equal(idx, faiss_idx)


def _clustered(n, d, modes, seed):
    rng = np.random.default_rng(seed)
    centres = unit_rows(rng.normal(size=(modes, d)))
    return unit_rows(centres[rng.integers(0, modes, n)] + 0.5 * unit_rows(rng.normal(size=(n, d))))


def test_graph_search_meets_its_recall_and_falls_back_to_exact(monkeypatch):
    """Above ``approx_min_rows`` an HNSW graph answers, with measured recall >= 0.99 against brute
    force; when a graph cannot reach the target the exact answer comes back unchanged."""
    import pruning_core.clip_scores.neighbors as nb

    used = []
    real = nb._graph_search
    monkeypatch.setattr(nb, "_graph_search", lambda *a, **kw: used.append(real(*a, **kw)) or used[-1])
    x = _clustered(3000, 24, 40, seed=12)
    cfg = nb.KnnConfig(approx_min_rows=1000)
    events = []
    dist, ind = knn(x, x, 10, config=cfg, device="cpu", progress=events.append)
    assert len(used) == 1 and used[0][0] is not None  # the graph answered
    assert events[-2].message.startswith("HNSW graph, efSearch")
    _, bi = _brute_knn(x, x, 10, True)
    recall = np.mean([np.isin(bi[r], ind[r]).mean() for r in range(len(x))])
    assert recall >= 0.99
    assert not np.any(ind == np.arange(len(x))[:, None])
    # isotropic 64-d data, a graph limited to a narrow search: recall 1.0 is out of reach -> exact
    y = unit_rows(np.random.default_rng(13).normal(size=(1500, 64)))
    strict = nb.KnnConfig(approx_min_rows=1000, hnsw_m=4, ef_search=11, max_ef_search=11, recall_target=1.0)
    dist, ind = knn(y, y, 10, config=strict, device="cpu", progress=events.append)
    assert used[-1][0] is None  # the graph was refused
    assert events[-2].message.startswith("exact (the HNSW graph reached recall")
    bd, bi = _brute_knn(y, y, 10, True)
    np.testing.assert_array_equal(ind, bi)
    np.testing.assert_allclose(dist, bd, atol=1e-5)


def test_rows_a_graph_leaves_short_are_searched_exactly(monkeypatch):
    """A graph search may return fewer than k results (index -1); those rows are redone exactly."""
    import pruning_core.clip_scores.neighbors as nb

    def short_graph(query, base, kk, exclude_self, config, exact, cancel):
        def search(q, n):
            sim, idx = exact(q, n)
            sim[::3, -1], idx[::3, -1] = -np.inf, -1
            return sim, idx
        return search, "HNSW graph (short)"

    monkeypatch.setattr(nb, "_graph_search", short_graph)
    x = unit_rows(np.random.default_rng(15).normal(size=(120, 8)))
    dist, ind = knn(x, x, 5, block_size=50, config=nb.KnnConfig(approx_min_rows=1), device="cpu")
    bd, bi = _brute_knn(x, x, 5, True)
    np.testing.assert_array_equal(ind, bi)
    np.testing.assert_allclose(dist, bd, atol=1e-5)


def test_knn_sizes_faiss_threads_like_torch_and_restores_them(monkeypatch):
    """faiss's OpenMP pool follows torch's thread count, or the config's; after the search both are
    as they were (imported after torch, faiss shares torch's OpenMP runtime, so a leaked setting
    would change torch's thread count too)."""
    import faiss

    import pruning_core.clip_scores.neighbors as nb

    seen = []
    real = nb._exact_search
    monkeypatch.setattr(nb, "_exact_search", lambda *a: seen.append(faiss.omp_get_max_threads()) or real(*a))
    q, b = unit_rows(np.random.default_rng(14).normal(size=(50, 8))), unit_rows(np.ones((3, 8)))
    torch_threads, faiss_threads = torch.get_num_threads(), faiss.omp_get_max_threads()
    knn(q, b, 2, exclude_self=False, device="cpu")
    knn(q, b, 2, exclude_self=False, device="cpu", config=nb.KnnConfig(threads=torch_threads + 1))
    assert seen == [torch_threads, torch_threads + 1]
    assert torch.get_num_threads() == torch_threads and faiss.omp_get_max_threads() == faiss_threads


def test_knn_pads_small_groups_and_tiny_blocks_bound_memory():
    x = unit_rows(np.random.default_rng(3).normal(size=(6, 8)))
    g = np.array([0, 0, 0, 1, 1, 2])
    dist, ind = knn(x, x, 3, same_group=g, device="cpu")
    # group 0 has only 2 others: the third slot is padded
    assert np.all(ind[:3, :2] >= 0) and np.all(ind[:3, 2] == -1) and np.isnan(dist[:3, 2]).all()
    assert np.all(ind[5] == -1)
    # a block budget smaller than one row still works (1 row per block)
    d2, i2 = knn(x, x, 2, block_bytes=1, device="cpu")
    d3, i3 = knn(x, x, 2, device="cpu")
    np.testing.assert_array_equal(i2, i3)
    sds = diversity_sds(x, g, 3, device="cpu")
    assert np.isnan(sds[5]) and np.isfinite(sds[:5]).all()


def test_near_duplicates_grouped_and_others_minus_one():
    rng = np.random.default_rng(4)
    x = unit_rows(rng.normal(size=(200, 32)))
    x[10] = unit_rows(x[3] + 0.01 * rng.normal(size=32))  # pair 3-10
    x[50] = unit_rows(x[40] + 0.01 * rng.normal(size=32))  # triple 40-50-60 (chain)
    x[60] = unit_rows(x[50] + 0.01 * rng.normal(size=32))
    x[99] = x[98]  # exact copy
    group, count = near_duplicate_groups(x, 0.95, device="cpu")
    planted = {3, 10, 40, 50, 60, 98, 99}
    assert group[3] == group[10] != -1
    assert group[40] == group[50] == group[60] != -1
    assert group[98] == group[99] != -1
    assert len({group[3], group[40], group[98]}) == 3
    others = np.array([i for i in range(200) if i not in planted])
    assert np.all(group[others] == -1) and np.all(count[others] == 0)
    assert count[3] == 1 and count[40] == 2 and count[99] == 1
    assert sorted(set(group[group >= 0])) == [0, 1, 2] and group[3] == 0  # numbered by first member


def test_sds_lower_for_planted_tight_cluster_and_outliers_high():
    img, given_, true, text, _ = make_data(flip=0.0, noise=0.2, seed=5)
    rng = np.random.default_rng(5)
    tight = np.flatnonzero(true == 2)[:20]
    img = img.copy()
    img[tight] = unit_rows(img[tight[0]] + 0.02 * rng.normal(size=(20, img.shape[1])))
    far = np.flatnonzero(true == 3)[:5]
    img[far] = unit_rows(rng.normal(size=(5, img.shape[1])))
    sds = diversity_sds(img, given_, 5, device="cpu")
    rest = np.setdiff1d(np.flatnonzero(true == 2), tight)
    assert sds[tight].max() < sds[rest].min()
    out = outlier_score(img, 5, device="cpu")
    assert out[far].min() > np.percentile(np.delete(out, far), 99)


# -- adapter --------------------------------------------------------------------------------------


@pytest.mark.parametrize("hidden", [0, 16])
def test_adapter_lowers_loss_keeps_auroc_and_roundtrips(hidden):
    img, given_, true, text, captions = make_data(seed=6)
    bad = given_ != true
    ad = ClipAdapter(hidden=hidden, device="cpu")
    # identity at init
    ad._build(img.shape[1], torch.device("cpu"))
    np.testing.assert_allclose(ad.transform_images(img), img, atol=1e-5)
    ad.fit(img, given_, text, captions_emb=captions if hidden else None, epochs=5, lr=1e-3, seed=0)
    assert len(ad.loss_history_) == 5 and ad.loss_history_[-1] < ad.loss_history_[0]
    zi, zt = ad.transform_images(img), ad.transform_text(text)
    np.testing.assert_allclose(np.linalg.norm(zi, axis=1), 1.0, atol=1e-5)
    base_auc = roc_auc_score(bad, -label_alignment(img, given_, text, device="cpu"))
    adapted_auc = roc_auc_score(bad, -label_alignment(zi, given_, zt, device="cpu"))
    assert adapted_auc >= base_auc - 0.005
    again = ClipAdapter.from_state_dict(ad.state_dict(), device="cpu")
    np.testing.assert_allclose(again.transform_images(img), zi, atol=1e-6)
    np.testing.assert_allclose(again.transform_text(text), zt, atol=1e-6)
    assert again.loss_history_ == pytest.approx(ad.loss_history_)


def test_adapter_loss_history_is_the_row_weighted_epoch_mean():
    """The per-epoch loss is summed on the device (no host sync per batch): with lr=0 the adapters
    stay the identity, so every epoch's figure must be the plain InfoNCE over all rows, the short
    last batch weighted by its size."""
    img, given_, _, text, _ = make_data(n_per_class=37, c=5)  # 185 rows: batches of 64, 64, 57
    ad = ClipAdapter(device="cpu").fit(img, given_, text, epochs=2, lr=0.0, batch_size=64, trim=0.0)
    logits = 100.0 * torch.as_tensor(img) @ torch.as_tensor(text).T
    expected = float(torch.nn.functional.cross_entropy(logits, torch.as_tensor(given_)))
    assert ad.loss_history_ == pytest.approx([expected, expected], rel=1e-5)


def test_adapter_fits_on_its_thread_count_and_restores_torchs(monkeypatch):
    """Small per-step ops on several OpenMP threads stall on a busy machine, so the fit runs on
    ``FIT_CPU_THREADS``; torch's own setting is back afterwards (also after an error)."""
    import pruning_core.clip_scores.adapter as adapter_mod

    seen = []
    real = adapter_mod._small_loss_mean
    monkeypatch.setattr(adapter_mod, "_small_loss_mean", lambda *a: seen.append(torch.get_num_threads()) or real(*a))
    img, given_, _, text, _ = make_data(n_per_class=10, c=3)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        ClipAdapter(device="cpu").fit(img, given_, text, epochs=1)
        assert set(seen) == {adapter_mod.FIT_CPU_THREADS} and torch.get_num_threads() == 2
        seen.clear()
        ClipAdapter(device="cpu").fit(img, given_, text, epochs=1, cpu_threads=None)
        assert set(seen) == {2}
        with pytest.raises(ValueError):
            ClipAdapter(device="cpu").fit(img, given_[:-1], text)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_adapter_cancel_and_unfitted():
    img, given_, _, text, _ = make_data(n_per_class=10)
    with pytest.raises(RuntimeError):
        ClipAdapter().transform_images(img)
    tok = CancelToken()
    tok.cancel()
    with pytest.raises(Cancelled):
        ClipAdapter(device="cpu").fit(img, given_, text, cancel=tok)


# -- CPS ------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(min_value=0, max_value=120),
    frac=st.floats(min_value=0.0, max_value=1.0),
    seed=st.integers(min_value=0, max_value=3),
    ties=st.booleans(),
    duplicates=st.booleans(),
)
def test_cps_mask_has_exactly_keep_true(n, frac, seed, ties, duplicates):
    rng = np.random.default_rng(seed)
    keep = int(round(frac * n))
    sas = rng.integers(0, 3, n).astype(float) if ties else rng.normal(size=n)
    sds = np.zeros(n) if ties else rng.normal(size=n)
    groups = rng.integers(-1, 4, n) if duplicates else None  # the pair term on, large groups
    mask = cps_select(sas, sds, keep, groups=groups, steps=25, device="cpu")
    assert mask.dtype == bool and mask.shape == (n,) and int(mask.sum()) == keep
    again = cps_select(sas, sds, keep, groups=groups, steps=25, device="cpu")
    np.testing.assert_array_equal(mask, again)  # deterministic, ties included


def test_cps_prefers_high_sas_and_diversity():
    rng = np.random.default_rng(7)
    sas = rng.normal(0.28, 0.03, 2000)
    sds = rng.normal(0.2, 0.05, 2000)
    res = cps_optimize(sas, sds, 600, device="cpu")
    m = res.mask
    assert m.sum() == 600
    assert sas[m].mean() > sas[~m].mean() and sds[m].mean() > sds[~m].mean()
    assert abs(res.optimizer_kept - 600) <= 100  # the penalty lands near s before the exact finish
    assert res.loss_history[-1] < res.loss_history[0]
    only_sas = cps_select(sas, sds, 600, alpha=0.0, device="cpu")
    top = np.zeros(2000, bool)
    top[np.argsort(-sas)[:600]] = True
    assert (only_sas & top).sum() >= 0.95 * 600
    with pytest.raises(ValueError):
        cps_select(sas, sds, 2001)
    with pytest.raises(ValueError, match="groups has 3 rows, the scores 2000"):
        cps_select(sas, sds, 600, groups=[0, 0, 1])
    # a group column read back as floats with gaps: NaN is "in no group", like -1
    assert duplicate_pairs(np.ones(4, bool), [0.0, np.nan, 0.0, np.nan]) == 1


def _duplicated_scores(n=1000, clusters=40, copies=5, seed=0):
    """SAS/SDS with ``clusters`` groups of ``copies`` near-identical samples among the best-scored ones,
    so a ranking keeps every copy; returns ``(sas, sds, groups)``."""
    rng = np.random.default_rng(seed)
    sas, sds = rng.normal(size=n), rng.normal(size=n)
    groups = np.full(n, -1)
    best = np.argsort(-(sas + sds))[: clusters * copies].reshape(clusters, copies)
    for g, members in enumerate(best):
        groups[members] = g
        sas[members] = sas[members[0]] + 0.01 * rng.normal(size=copies)
    return sas, sds, groups


def _best_with_pair_cost(combined, groups, keep, gamma):
    """The exact maximiser of ``sum(combined[kept]) - gamma * pairs``: within a group the j-th best copy
    adds ``combined - gamma * j``, gains that fall within each group, so the top ``keep`` gains are optimal."""
    gain = combined.copy()
    for g in np.unique(groups[groups >= 0]):
        members = np.flatnonzero(groups == g)
        gain[members[np.argsort(-combined[members])]] -= gamma * np.arange(len(members))
    best = np.zeros(len(combined), bool)
    best[np.argsort(-gain)[:keep]] = True
    return best


def test_cps_pair_cost_keeps_one_copy_where_the_weighted_top_k_keeps_all():
    """The near-duplicate pair term is what the optimiser adds over a sort: it reaches the exact optimum
    of the objective, which differs from the weighted top-k and keeps a fraction of its duplicate pairs."""
    sas, sds, groups = _duplicated_scores()
    keep, gamma = 300, 1.0
    res = cps_optimize(sas, sds, keep, groups=groups, gamma=gamma, device="cpu")
    top = np.zeros(len(sas), bool)
    top[np.argsort(-res.combined, kind="stable")[:keep]] = True

    def objective(mask):
        return res.combined[mask].sum() - gamma * duplicate_pairs(mask, groups)

    assert res.mask.sum() == keep and res.duplicate_pairs == duplicate_pairs(res.mask, groups)
    assert duplicate_pairs(top, groups) >= 300  # of 400: a ranking keeps (nearly) every copy
    assert (res.mask & ~top).sum() >= 50  # the freed places go to distinct samples
    assert res.duplicate_pairs <= duplicate_pairs(top, groups) / 4
    assert objective(res.mask) >= objective(top) + 100
    assert objective(res.mask) >= objective(_best_with_pair_cost(res.combined, groups, keep, gamma)) - 0.5
    # without the term (the paper's linear loss) the optimiser is the weighted top-k, nothing more
    np.testing.assert_array_equal(cps_select(sas, sds, keep, groups=groups, gamma=0.0, device="cpu"), top)


def test_cps_strategy_reads_the_duplicate_groups_of_the_table():
    from pruning_core.scoring.score_info import ScoreInfo
    from pruning_core.selection import select

    sas, sds, groups = _duplicated_scores(n=400, clusters=16)
    frame = pd.DataFrame({"path": [f"{i}.png" for i in range(400)], "label": ["a"] * 400,
                          "clip.label_alignment": sas, "clip.diversity": sds,
                          "clip.duplicate_group": groups})
    infos = {c: ScoreInfo(c, c, "low") for c in ("clip.label_alignment", "clip.diversity")}
    with_groups = select(frame, infos, 120, strategy="cps", cps_params={"steps": 100})
    without = select(frame.drop(columns=["clip.duplicate_group"]), infos, 120, strategy="cps",
                     cps_params={"steps": 100})
    assert with_groups.sum() == without.sum() == 120
    assert duplicate_pairs(with_groups, groups) <= duplicate_pairs(without, groups) / 4


# -- producer -------------------------------------------------------------------------------------


def test_clip_scores_table_and_infos():
    img, given_, true, text, captions = make_data(seed=8)
    img = img.copy()
    img[1] = img[0]
    events = []
    table, infos = clip_scores(img, given_, CLASSES, text, captions_emb=captions, k=5, dup_threshold=0.95, device="cpu",
                               progress=events.append)
    expected = {
        "clip.label_alignment", "clip.zero_shot_disagreement", "clip.zero_shot_margin",
        "clip.zero_shot_confidence", "clip.suggested_label", "clip.caption_alignment",
        "clip.diversity", "clip.outlier", "clip.duplicate_group", "clip.duplicate_count",
    }
    probs = {f"clip.zero_shot_prob.{c}" for c in CLASSES}  # annotations audit.suggest combines, not scores
    assert set(table.columns) == expected | probs and len(table) == len(img)
    assert set(infos) == expected - {"clip.suggested_label", "clip.duplicate_group"}
    np.testing.assert_allclose(table[sorted(probs, key=lambda c: list(CLASSES).index(c.rsplit(".", 1)[1]))]
                               .sum(axis=1), 1.0, rtol=1e-5)
    assert all(infos[k] is SCORE_INFOS[k] for k in infos)
    assert infos["clip.label_alignment"].suspicious == "low" and infos["clip.outlier"].suspicious == "high"
    assert set(table["clip.suggested_label"]) <= set(CLASSES)
    assert table["clip.duplicate_group"].iloc[0] == table["clip.duplicate_group"].iloc[1] >= 0
    assert table["clip.duplicate_count"].iloc[0] == 1
    bad = given_ != true
    assert roc_auc_score(bad, -table["clip.label_alignment"]) >= 0.9
    assert events[-1].done == events[-1].total == 5 and len({e.message for e in events}) >= 5
    no_caps, infos2 = clip_scores(img, given_, CLASSES, text, k=5, dup_threshold=0.95, device="cpu")
    assert "clip.caption_alignment" not in no_caps.columns and "clip.caption_alignment" not in infos2
    tok = CancelToken()
    tok.cancel()
    with pytest.raises(Cancelled):
        clip_scores(img, given_, CLASSES, text, k=5, dup_threshold=0.95, device="cpu", cancel=tok)


def test_read_only_memmapped_embeddings_score_without_a_torch_warning(tmp_path):
    """Cache entries are memory-mapped read-only; torch must not be handed (and warn about) them."""
    img, given_, _, text, _ = make_data(n_per_class=10, c=3, d=8)
    np.save(tmp_path / "img.npy", img)
    np.save(tmp_path / "ids.npy", given_.astype(np.int64))
    mapped_img = np.load(tmp_path / "img.npy", mmap_mode="r")
    mapped_ids = np.load(tmp_path / "ids.npy", mmap_mode="r")
    assert not mapped_img.flags.writeable and not mapped_ids.flags.writeable
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sas = label_alignment(mapped_img, mapped_ids, text, device="cpu")
        sds = diversity_sds(mapped_img, mapped_ids, 3, device="cpu")
    np.testing.assert_array_equal(sas, label_alignment(img, given_, text, device="cpu"))
    np.testing.assert_array_equal(sds, diversity_sds(img, given_, 3, device="cpu"))


def test_block_progress_is_throttled_but_ends_at_the_total():
    from pruning_core.clip_scores._common import throttled
    from pruning_core.runtime.progress import Progress

    now = [0.0]
    seen = []
    forward = throttled(seen.append, interval_s=1.0, clock=lambda: now[0])
    for done in range(1, 101):  # 100 blocks in 0.99 s: the first, one a second later, and the last
        now[0] = done / 100
        forward(Progress("k-NN", done, 100))
    assert [p.done for p in seen] == [1, 100]
    assert throttled(None) is None


def test_clip_scores_use_the_device_policys_blocks_and_a_throttled_knn_progress(monkeypatch):
    import pruning_core.clip_scores as cs
    from pruning_core.runtime.devices import CPU_KNN_BLOCK_BYTES

    img, given_, _, text, _ = make_data(seed=8)
    used, events = [], []
    real_knn = cs.knn

    def spy(*args, **kwargs):
        used.append(kwargs.get("block_bytes"))
        return real_knn(*args, **kwargs)

    monkeypatch.setattr(cs, "knn", spy)
    cs.clip_scores(img, given_, CLASSES, text, k=5, dup_threshold=0.95, device="cpu", progress=events.append)
    assert used == [CPU_KNN_BLOCK_BYTES]
    knn_events = [e for e in events if e.stage == "k-NN"]
    assert knn_events and knn_events[-1].done == knn_events[-1].total == len(img)


def test_cps_matches_torch_adam_and_never_imports_dynamo():
    """CPS's own Adam step is torch.optim.Adam's, number for number, without its first-use import of
    torch._dynamo (15-30 s of the Prune page's first CPS run on a loaded 2-core VM)."""
    import subprocess
    import sys

    script = (
        "import sys, numpy as np, torch\n"
        "from pruning_core.clip_scores.cps import _Adam\n"
        "rng = np.random.default_rng(0); target = torch.as_tensor(rng.normal(size=300), dtype=torch.float32)\n"
        "ours = torch.zeros(300, requires_grad=True)\n"
        "opt = _Adam(ours, lr=0.05)\n"
        "for _ in range(50):\n"
        "    ours.grad = None; ((ours - target) ** 3).abs().sum().backward(); opt.step()\n"
        "assert 'torch._dynamo' not in sys.modules, 'CPS imported torch._dynamo'\n"
        "theirs = torch.zeros(300, requires_grad=True); ref = torch.optim.Adam([theirs], lr=0.05)\n"
        "for _ in range(50):\n"
        "    ref.zero_grad(); ((theirs - target) ** 3).abs().sum().backward(); ref.step()\n"
        "assert torch.equal(ours, theirs), (ours - theirs).abs().max()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr[-2000:]
