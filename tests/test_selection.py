import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pruning_core.scoring.score_info import ScoreInfo
from pruning_core.selection import (
    STRATEGIES,
    ScoreRanks,
    SelectionRecipe,
    Strategy,
    available_strategies,
    class_quotas,
    combined_score,
    keep_count,
    parse_keep,
    rank_normalise,
    run_recipe,
    select,
)

INFOS = {
    "clip.label_alignment": ScoreInfo("clip.label_alignment", "alignment", "low"),
    "dynamics.aum": ScoreInfo("dynamics.aum", "margin", "low"),
    "dynamics.dyn_unc": ScoreInfo("dynamics.dyn_unc", "dyn unc", "low"),
    "clip.diversity": ScoreInfo("clip.diversity", "diversity", "low"),
}


def make_frame(n: int, seed: int = 0, n_classes: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "path": [f"img/{i}.png" for i in range(n)],
            "label": rng.choice([f"c{j}" for j in range(n_classes)], size=n),
            "clip.label_alignment": rng.normal(size=n),
            "dynamics.aum": rng.normal(size=n),
            "dynamics.dyn_unc": rng.random(size=n),
            "clip.diversity": rng.random(size=n),
            "adapruner.keep_logit": rng.normal(size=n),
            "suggest.label": rng.choice([f"c{j}" for j in range(n_classes)], size=n),
            "suggest.confidence": rng.random(size=n),
        }
    )


def test_keep_count_fraction_and_count():
    assert keep_count(0.5, 10) == 5
    assert keep_count(1.0, 7) == 7
    assert keep_count(3, 10) == 3
    assert parse_keep("0.25") == 0.25 and parse_keep("400") == 400
    with pytest.raises(ValueError, match="dataset has 10"):
        keep_count(11, 10)
    with pytest.raises(ValueError, match="fraction"):
        keep_count(-0.5, 10)


def test_rank_normalise_orients_suspicious_high():
    values = np.array([3.0, 1.0, 2.0, np.nan])
    low = rank_normalise(values, "low")
    assert low[1] > low[2] > low[0]  # lowest alignment = most suspicious
    assert low[3] == 0.5
    high = rank_normalise(values, "high")
    assert high[0] > high[2] > high[1]


def test_easiest_drops_the_most_suspicious():
    frame = make_frame(100)
    mask = select(frame, INFOS, 90, strategy="easiest", weights={"clip.label_alignment": 1})
    dropped = frame.loc[~mask, "clip.label_alignment"]
    assert dropped.max() < frame.loc[mask, "clip.label_alignment"].min()


def test_weights_combine_scores():
    frame = make_frame(200)
    combined = combined_score(frame, INFOS, {"clip.label_alignment": 1, "dynamics.aum": 0})
    only = rank_normalise(frame["clip.label_alignment"].to_numpy(), "low")
    np.testing.assert_allclose(combined, only)
    with pytest.raises(ValueError, match="unknown score"):
        combined_score(frame, INFOS, {"nope.x": 1})


def test_balance_keeps_class_proportions():
    frame = make_frame(1000, n_classes=4)
    mask = select(frame, INFOS, 0.3, strategy="hardest", balance=True)
    expected = class_quotas(frame["label"].to_numpy(), 300)
    assert frame.loc[mask, "label"].value_counts().to_dict() == expected


def test_ccs_covers_the_score_range_and_cuts_the_hardest():
    frame = make_frame(2000)
    mask = select(frame, INFOS, 0.3, strategy="ccs", weights={"clip.label_alignment": 1}, ccs_beta=0.1)
    suspicion = combined_score(frame, INFOS, {"clip.label_alignment": 1})
    hardest = np.argsort(-suspicion)[:200]
    assert not mask[hardest].any()
    kept = suspicion[mask]
    # Evenly across strata: kept samples reach both ends of the remaining range.
    assert kept.min() < 0.1 and kept.max() > 0.8


def test_dyn_unc_keeps_highest_and_strategy_needs_its_column():
    frame = make_frame(50)
    mask = select(frame, INFOS, 10, strategy="dyn_unc")
    assert set(np.flatnonzero(mask)) == set(np.argsort(-frame["dynamics.dyn_unc"].to_numpy())[:10])
    with pytest.raises(ValueError, match="dynamics.dyn_unc"):
        select(frame.drop(columns="dynamics.dyn_unc"), INFOS, 10, strategy="dyn_unc")


def test_removed_samples_are_never_kept_and_shortfall_is_an_error():
    frame = make_frame(20)
    removed = np.zeros(20, dtype=bool)
    removed[:5] = True
    mask = select(frame, INFOS, 15, strategy="random", removed=removed)
    assert mask.sum() == 15 and not mask[:5].any()
    with pytest.raises(ValueError, match="only 15 remain"):
        select(frame, INFOS, 16, strategy="random", removed=removed)


def test_run_recipe_is_deterministic_and_uses_removed_paths():
    frame = make_frame(100)
    recipe = SelectionRecipe(keep=0.5, strategy="random", seed=3)
    a = run_recipe(frame, INFOS, recipe, removed_paths=["img/0.png"])
    b = run_recipe(frame, INFOS, recipe, removed_paths=["img/0.png"])
    np.testing.assert_array_equal(a, b)
    assert not a[0] and a.sum() == 50


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=300),
    frac=st.floats(min_value=0.0, max_value=1.0),
    strategy=st.sampled_from(list(STRATEGIES)),  # the registry, CPS included (few optimiser steps)
    balance=st.booleans(),
    n_removed=st.integers(min_value=0, max_value=50),
    seed=st.integers(min_value=0, max_value=10_000),
)
def test_every_strategy_keeps_exactly_k_and_never_a_removed_sample(n, frac, strategy, balance, n_removed, seed):
    frame = make_frame(n, seed=seed)
    removed = np.zeros(n, dtype=bool)
    removed[np.random.default_rng(seed).permutation(n)[: min(n_removed, n)]] = True
    k = int(frac * (~removed).sum())
    mask = select(frame, INFOS, k, strategy=strategy, balance=balance, removed=removed, seed=seed,
                  cps_params={"steps": 5})
    assert mask.sum() == k
    assert not (mask & removed).any()


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_registered_strategy_is_reachable_through_select(name):
    """Each registry entry, by name, keeps exactly k of the eligible samples, balanced or not."""
    frame = make_frame(90, seed=2)
    removed = np.zeros(90, dtype=bool)
    removed[::9] = True
    for k, balance in ((0, False), (1, True), (37, False), (37, True), (80, True)):
        mask = select(frame, INFOS, k, strategy=name, balance=balance, removed=removed, seed=5,
                      cps_params={"steps": 5})
        assert mask.sum() == k, (name, k, balance)
        assert not (mask & removed).any()


def test_select_runs_the_registered_pick(monkeypatch):
    """``select`` dispatches to the registry, so a new entry needs no other change."""
    last = Strategy("last", "keep the last k eligible samples", lambda group: np.arange(len(group.score))[-group.k:])
    monkeypatch.setitem(STRATEGIES, "last", last)
    frame = make_frame(20)
    removed = np.zeros(20, dtype=bool)
    removed[18] = True
    mask = select(frame, INFOS, 3, strategy="last", removed=removed)
    assert np.flatnonzero(mask).tolist() == [16, 17, 19]
    assert "last" in available_strategies(frame, {})


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_available_strategies_follow_each_strategys_columns(name):
    strategy = STRATEGIES[name]
    frame = make_frame(30)
    assert name in available_strategies(frame, INFOS)
    for column in strategy.columns:  # each column it is defined on is needed, by the list and by select
        assert name not in available_strategies(frame.drop(columns=column), INFOS)
        with pytest.raises(ValueError, match="needs score column"):
            select(frame.drop(columns=column), INFOS, 5, strategy=name)
    # with no score to combine, exactly the strategies that combine scores drop out
    assert (name in available_strategies(frame, {})) == (not strategy.uses_weights)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(min_value=4, max_value=200),  # keep=0.3 of fewer rounds to 0: refused
    strategy=st.sampled_from([name for name, s in STRATEGIES.items() if s.live]),  # on-demand ones: too slow here
    balance=st.booleans(),
    seed=st.integers(min_value=0, max_value=10_000),
    weight=st.floats(min_value=0.25, max_value=3.0),
)
def test_kept_ranks_give_the_same_subset_as_fresh_ranking(n, strategy, balance, seed, weight):
    """The Prune page reuses one ScoreRanks across reruns; that must never change a subset."""
    frame = make_frame(n, seed=seed)
    frame.loc[frame.index[::7], "dynamics.aum"] = np.nan
    ranks = ScoreRanks(frame, INFOS)
    for keep in (0.3, 0.8):  # the second call reuses the ranks the first one made
        recipe = SelectionRecipe(keep=keep, strategy=strategy, balance=balance, seed=seed,
                                 weights={"clip.label_alignment": 1.0, "dynamics.aum": weight})
        np.testing.assert_array_equal(run_recipe(frame, INFOS, recipe, ranks=ranks), run_recipe(frame, INFOS, recipe))
    np.testing.assert_array_equal(combined_score(frame, INFOS, ranks=ranks), combined_score(frame, INFOS))


def test_score_ranks_refuse_another_table():
    frame = make_frame(30)
    with pytest.raises(ValueError, match="another score table"):
        combined_score(frame.copy(), INFOS, ranks=ScoreRanks(frame, INFOS))


def test_class_quotas_sum_to_k_in_sorted_class_order():
    labels = np.array(["b", "a", "b", "c", "b", "a"], dtype=object)
    assert class_quotas(labels, 4) == {"a": 1, "b": 2, "c": 1}
    assert list(class_quotas(labels, 4)) == ["a", "b", "c"]
