"""Subset evaluation, dynamic pruning and AdaPruner on small synthetic data (CPU, seconds)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from hypothesis import given, settings
from hypothesis import strategies as st

from cache.store import ResultStore
from pruning_core.data.datasets import load_image_folder
from pruning_core.dynamics.config import DynamicsConfig
from pruning_core.runtime.planner import MIN_BATCH_SIZE, MIN_STEPS_PER_EPOCH
from pruning_core.scoring.score_info import ScoreInfo
from pruning_core.scoring.score_table import ScoreTable, base_table
from pruning_core.selection import ADAPRUNER_COLUMN, select
from pruning_core.subset_training import AdaPruner, train_on_subset, train_with_dynamic_pruning
from pruning_core.subset_training import evaluate as evaluate_mod
from pruning_core.subset_training.dynamic import epoch_subset, percentile_ranks
from pruning_core.subset_training.evaluate import (
    EvalConfig,
    best_configuration,
    evaluate_pruning,
    grid_runs,
    heldout_label_ids,
    marks_possible,
    summarise,
)
from pruning_core.subset_training.runs import BUDGETS, run_schedule
from synthetic import gaussian_embeddings, synthetic_images, write_image_folder

pytestmark = pytest.mark.usefixtures("one_thread")


IMG = dict(arch="resnet9", width=8, batch_size=32, device="cpu", seed=0, precision="auto")


def test_subset_training_reports_accuracy_and_cost():
    x, y, noisy = synthetic_images(n=300, noise=0.0, seed=2)
    tx, ty, _ = synthetic_images(n=120, noise=0.0, seed=3)
    keep = np.zeros(300, bool)
    keep[:150] = True
    run = train_on_subset(x, y, keep, test_x=tx, test_y=ty, epochs=6, budget="equal_steps", num_classes=3, **IMG)
    assert run.n_train == 150
    # equal steps: full data (300 at batch 16, the floor of 16 steps an epoch) takes 6 x 18 steps; so does the half
    assert run.meta["steps"] == 6 * (300 // 16) and run.meta["batch_size"] == 16
    assert run.samples_trained == run.meta["steps"] * 16
    assert run.heldout_probs.shape == (120, 3)
    assert run.accuracy > 0.8  # the three stripe classes are easy
    with pytest.raises(ValueError, match="empty"):
        train_on_subset(x, y, np.zeros(300, bool), epochs=1, budget="equal_steps", **IMG)


@settings(max_examples=200, deadline=None)
@given(n_full=st.integers(1, 200_000), keep=st.floats(0.01, 1.0), epochs=st.integers(1, 40),
       batch_exp=st.integers(4, 11), budget=st.sampled_from(list(BUDGETS)))
def test_no_run_is_step_starved_and_equal_steps_means_equal_steps(n_full, keep, epochs, batch_exp, budget):
    n = max(1, round(keep * n_full))
    schedule = run_schedule(n, n_full=n_full, epochs=epochs, batch_size=2 ** batch_exp, budget=budget)
    full = run_schedule(n_full, n_full=n_full, epochs=epochs, batch_size=2 ** batch_exp, budget=budget)
    assert 1 <= schedule.batch_size <= min(2 ** batch_exp, n)
    # the floor of steps per epoch, unless the batch is already at its minimum (or the subset smaller than it)
    assert schedule.steps_per_epoch >= MIN_STEPS_PER_EPOCH or schedule.batch_size == min(MIN_BATCH_SIZE, n)
    if budget == "equal_steps":
        assert schedule.total_steps == full.total_steps
    else:
        assert schedule.total_steps == epochs * schedule.steps_per_epoch
    assert full.total_steps == epochs * full.steps_per_epoch  # full data is the same run under both budgets


def test_equal_steps_runs_take_the_same_optimiser_steps_whatever_the_ratio():
    x, y, _ = synthetic_images(n=256, noise=0.0, seed=2)
    steps = {}
    for keep, budget in [(0.25, "equal_steps"), (0.5, "equal_steps"), (1.0, "equal_steps"), (0.25, "equal_epochs")]:
        mask = np.zeros(256, bool)
        mask[: int(256 * keep)] = True
        run = train_on_subset(x, y, mask, epochs=2, budget=budget, num_classes=3, **IMG)
        steps[keep, budget] = run.meta["steps"]
        assert run.samples_trained == run.meta["steps"] * run.meta["batch_size"]
    assert steps[0.25, "equal_steps"] == steps[0.5, "equal_steps"] == steps[1.0, "equal_steps"] == 2 * (256 // 16)
    assert steps[0.25, "equal_epochs"] == 2 * (64 // 16)  # 64 samples at the minimum batch: 4 steps an epoch


def _runs(groups: list[tuple[str, float, list[float]]]) -> pd.DataFrame:
    """Result rows of ``(strategy, keep, accuracies per seed)``, the shape ``evaluate_pruning`` returns."""
    return pd.DataFrame([{"strategy": strategy, "keep": keep, "seed": i, "n_train": 10, "accuracy": a, "steps": 5,
                          "batch_size": 2, "epochs": 1.0, "samples_trained": 10, "train_seconds": 1.0, "cached": False}
                         for strategy, keep, accs in groups for i, a in enumerate(accs)])


def test_significance_marks_come_from_a_welch_test_on_the_seeds_shown():
    summary = summarise(_runs([("full", 1.0, [0.60, 0.61, 0.59]), ("random", 0.5, [0.50, 0.52, 0.51]),
                               ("easiest", 0.5, [0.70, 0.71, 0.69]), ("ccs", 0.5, [0.52, 0.49, 0.55]),
                               ("hardest", 0.5, [0.9, 0.95])])).set_index("strategy")
    easiest, random, full = summary.loc["easiest"], summary.loc["random"], summary.loc["full"]
    assert easiest["accuracy_sem"] == pytest.approx(np.std([0.70, 0.71, 0.69], ddof=1) / np.sqrt(3))
    welch = stats.ttest_ind([0.70, 0.71, 0.69], [0.50, 0.52, 0.51], equal_var=False, alternative="greater")
    assert easiest["p_vs_random"] == pytest.approx(welch.pvalue)
    assert easiest["beats_random"] and easiest["beats_full"] and not random["beats_full"]
    assert not summary.loc["ccs", "beats_random"]  # 0.52 +- 0.03 vs 0.51 +- 0.01: within noise
    # 0.925 vs 0.51 on two seeds: far apart, but two runs cannot measure their own noise.
    assert np.isnan(summary.loc["hardest", "p_vs_random"]) and not summary.loc["hardest", "beats_random"]
    assert not full["beats_full"] and not random["beats_random"]
    assert marks_possible(summary) and not marks_possible(summarise(_runs([("full", 1.0, [0.6, 0.6]),
                                                                           ("random", 0.5, [0.5, 0.51])])))


@settings(max_examples=60, deadline=None)
@given(seeds=st.integers(1, 8), accuracies=st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3))
def test_identical_seeds_never_yield_a_mark(seeds: int, accuracies: list[float]):
    # Every seed of every cell gives the same accuracy (a deterministic proxy, a cached run):
    # however far apart the cells are, nothing measured the noise, so nothing is marked.
    full, random, easiest = accuracies
    summary = summarise(_runs([("full", 1.0, [full] * seeds), ("random", 0.5, [random] * seeds),
                               ("easiest", 0.5, [easiest] * seeds)]))
    assert not summary["beats_random"].any() and not summary["beats_full"].any()


def test_epoch_subset_prefers_unseen_then_hard_and_consistent_samples():
    gen = torch.Generator().manual_seed(0)
    loss = torch.tensor([0.1, 5.0, 2.0, float("inf"), 0.2, 3.0])
    consistency = percentile_ranks(torch.tensor([1.0, 0.0, 1.0, 1.0, 1.0, 1.0]))  # sample 1 looks mislabelled
    chosen = set(epoch_subset(loss, consistency, budget=3, explore=0.0, gen=gen).tolist())
    assert chosen == {3, 5, 2}  # unseen first, then the hardest consistent ones; 1 is dropped despite its loss
    without = set(epoch_subset(loss, None, budget=3, explore=0.0, gen=gen).tolist())
    assert without == {3, 1, 5}
    with_explore = epoch_subset(loss, consistency, budget=4, explore=0.25, gen=gen)
    assert len(set(with_explore.tolist())) == 4 and {3, 5, 2} <= set(with_explore.tolist())


def test_dynamic_pruning_costs_the_ratio_and_skips_inconsistent_samples():
    x, y, noisy = synthetic_images(n=320, noise=0.25, seed=4)
    tx, ty, _ = synthetic_images(n=120, noise=0.0, seed=5)
    run = train_with_dynamic_pruning(x, y, 0.5, consistency=(~noisy).astype(float), explore=0.0,
                                     test_x=tx, test_y=ty, epochs=4, budget="equal_steps", num_classes=3, **IMG)
    assert run.n_train == 160
    assert run.meta["steps"] == 4 * (320 // 16)  # equal steps: those of 4 full-data epochs at batch 16
    assert run.samples_trained == run.meta["steps"] * 16
    # an oracle consistency keeps every noisy sample out of every epoch, and unseen samples go
    # first, so exactly the clean ones are visited (240 clean > 160 per epoch)
    assert run.meta["visited_fraction"] == pytest.approx((~noisy).mean(), abs=1e-6)
    assert run.accuracy > 0.8


@pytest.mark.parametrize("precision, tolerance", [("fp32", 0.01), ("bf16", 0.02)])
@pytest.mark.parametrize("ratio", [0.2, 0.5, 0.8])
def test_adapruner_mask_lands_near_the_target(ratio, precision, tolerance):
    """Within 1 point in fp32; bf16 rounding moves where the mask freezes (0.213 at 0.2), so 2 points there."""
    x, y, noisy = gaussian_embeddings(n=2000, dim=16, classes=4, noise=0.2, seed=1)
    pruner = AdaPruner(ratio, arch="mlp", warmup_epochs=2, mask_epochs=8, batch_size=128, width=64, seed=0,
                       device="cpu", precision=precision).fit(x, y)
    assert pruner.mask_logits_.shape == (2000,)
    assert abs(pruner.kept_fraction_ - ratio) <= tolerance
    assert np.array_equal(pruner.mask_, pruner.mask_logits_ > 0)
    assert len(pruner.history_) == 8
    # the -log(CE) term takes weight off what is already easy: among correctly labelled samples,
    # the pruned ones sit closer to their class centre than the kept ones
    clean = ~noisy
    centres = np.stack([x[(y == c) & clean].mean(0) for c in range(4)])
    distance = np.linalg.norm(x - centres[y], axis=1)
    assert distance[clean & ~pruner.mask_].mean() < distance[clean & pruner.mask_].mean()


def test_adapruner_strategy_keeps_the_highest_logits_exactly():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"path": [f"{i}.png" for i in range(50)], "label": ["a", "b"] * 25,
                          ADAPRUNER_COLUMN: rng.normal(size=50)})
    infos = {ADAPRUNER_COLUMN: ScoreInfo(ADAPRUNER_COLUMN, "mask logit", "low")}
    mask = select(frame, infos, 20, strategy="adapruner")
    assert mask.sum() == 20
    assert frame[ADAPRUNER_COLUMN][mask].min() >= frame[ADAPRUNER_COLUMN][~mask].max()
    with pytest.raises(ValueError, match="needs score column"):
        select(frame.drop(columns=[ADAPRUNER_COLUMN]), {}, 20, strategy="adapruner")


# --------------------------------------------------------------------------- the evaluation grid


@pytest.fixture
def scored_folder(tmp_path):
    x, y, noisy = synthetic_images(n=150, noise=0.2, seed=6)
    dataset = load_image_folder(write_image_folder(tmp_path / "train", x, y))
    test = load_image_folder(write_image_folder(tmp_path / "test", *synthetic_images(n=60, noise=0.0, seed=7)[:2]))
    suspicion = pd.Series(noisy.astype(float), index=[f"c{label}/{i:05d}.png" for i, label in enumerate(y)])
    frame = base_table(dataset).frame
    frame["oracle.noise"] = suspicion.loc[frame["path"]].to_numpy()
    table = ScoreTable(frame, {"oracle.noise": ScoreInfo("oracle.noise", "injected noise", "high")})
    return dataset, test, table


CONFIG = EvalConfig(proxy=DynamicsConfig(epochs=2, image_size=16, width=8, batch_size=32, folds=0, device="cpu"),
                    seeds=2)


def test_grid_trains_each_cell_once_and_reuses_the_cache(scored_folder, tmp_path, monkeypatch):
    dataset, test, table = scored_folder
    store = ResultStore(tmp_path / "cache")
    seen = []
    results = evaluate_pruning(dataset, table, store, strategies=["easiest", "random", "dynamic"], keeps=[0.5, 1.0],
                               config=CONFIG, test=test, progress=seen.append)
    # full, and per ratio easiest, random and dynamic: each over 2 seeds
    assert len(results) == 2 * (1 + 2 * 3)
    assert (results.groupby(["strategy", "keep"]).size() == 2).all()
    assert results["accuracy"].between(0, 1).all()
    assert set(results.loc[results["keep"] == 0.5, "n_train"]) == {75}
    # keeping everything is the same subset as the full run, so it is not trained again
    assert results.loc[(results["keep"] == 1.0) & (results["strategy"] == "easiest"), "cached"].all()
    assert seen[-1].stage == "evaluate" and seen[-1].done == seen[-1].total == len(results)

    def no_training(*args, **kwargs):
        raise AssertionError("a cached cell was trained again")

    monkeypatch.setattr(evaluate_mod, "train_on_subset", no_training)
    monkeypatch.setattr(evaluate_mod, "train_with_dynamic_pruning", no_training)
    again = evaluate_pruning(dataset, table, store, strategies=["easiest", "random", "dynamic"], keeps=[0.5, 1.0],
                             config=CONFIG, test=test)
    assert again["cached"].all()
    pd.testing.assert_series_equal(again["accuracy"], results["accuracy"])

    summary = summarise(results)
    assert (summary["runs"] == 2).all()
    at_half = summary[(summary["keep"] == 0.5) & summary["strategy"].isin(["easiest", "random"])]
    best = best_configuration(results, keep=0.5)
    assert (best["strategy"], best["keep"]) == tuple(at_half.loc[at_half["accuracy"].idxmax(), ["strategy", "keep"]])


def test_best_configuration_is_the_highest_mean_pruning_choice():
    """A known answer: the best mean over seeds (not the best single run), among pruning strategies
    (full data is the reference, never the answer), at the asked ratio."""
    runs = {("full", 1.0): [0.99, 0.97], ("random", 0.5): [0.70, 0.72], ("easiest", 0.5): [0.80, 0.60],
            ("ccs", 0.5): [0.75, 0.73], ("easiest", 0.8): [0.90, 0.92], ("hardest", 0.8): [0.99, 0.50]}
    results = pd.DataFrame([{"strategy": s, "keep": k, "seed": i, "accuracy": a, "n_train": int(100 * k),
                             "steps": 10, "epochs": 1, "train_seconds": 1.0}
                            for (s, k), accs in runs.items() for i, a in enumerate(accs)])
    at_half = best_configuration(results, keep=0.5)
    assert (at_half["strategy"], at_half["keep"]) == ("ccs", 0.5) and at_half["accuracy"] == pytest.approx(0.74)
    overall = best_configuration(results)
    assert (overall["strategy"], overall["keep"]) == ("easiest", 0.8)
    with pytest.raises(ValueError, match="keep=0.3"):
        best_configuration(results, keep=0.3)


def test_grid_without_a_test_set_holds_out_a_stratified_split(scored_folder, tmp_path):
    dataset, _, table = scored_folder
    results = evaluate_pruning(dataset, table, ResultStore(tmp_path / "cache"), strategies=["easiest"], keeps=[0.5],
                               config=CONFIG)
    assert list(results["n_train"]) == [120, 120, 60, 60]  # 80% of 150 trains, half of it is kept; 2 seeds each


def test_grid_inputs_are_checked_with_clear_messages(scored_folder, tmp_path):
    dataset, test, table = scored_folder
    with pytest.raises(ValueError, match="unknown strategy 'best'"):
        grid_runs(["best"], [0.5], CONFIG)
    with pytest.raises(ValueError, match="fractions in"):
        grid_runs(["easiest"], [1.5], CONFIG)
    renamed = test.samples.assign(label=test.samples["label"].replace({"c0": "zebra"}))
    with pytest.raises(ValueError, match="zebra"):
        heldout_label_ids(type(test)(**{**test.__dict__, "samples": renamed}), dataset.classes)


def test_cli_evaluate_writes_curves_and_reruns_from_the_cache(scored_folder, tmp_path, capsys):
    from pruning_core.cli import main

    dataset, test, _ = scored_folder
    cache, scores, curves = tmp_path / "cli-cache", tmp_path / "scores.parquet", tmp_path / "curves.csv"
    common = ["--cache-dir", cache]
    assert main([str(a) for a in [*common, "score", dataset.root, "--no-clip", "--dynamics", "--epochs", 2,
                                  "--folds", 0, "--image-size", 16, "--adapruner", 0.5, "--device", "cpu",
                                  "--out", scores]]) == 0
    table = pd.read_parquet(scores)
    assert "adapruner.keep_logit" in table and "dynamics.aum" in table
    args = [*common, "evaluate", dataset.root, "--scores", scores, "--test", test.root, "--strategies",
            "easiest,adapruner,random", "--keep", "0.5", "--seeds", 1, "--epochs", 2, "--image-size", 16,
            "--width", 8, "--batch-size", 32, "--device", "cpu", "--out", curves]
    assert main([str(a) for a in args]) == 0
    first = pd.read_csv(curves)
    assert list(first["strategy"]) == ["full", "easiest", "adapruner", "random"]
    assert (first.loc[first["strategy"] != "full", "n_train"] == 75).all()
    assert main([str(a) for a in args]) == 0
    assert pd.read_csv(curves)["cached"].all()
    assert "4 from the cache" in capsys.readouterr().out
    wrong = [*common, "evaluate", test.root, "--scores", scores, "--out", curves, "--device", "cpu"]
    assert main([str(a) for a in wrong]) == 2
    assert "does not score this dataset" in capsys.readouterr().err


def test_evaluate_page_trains_the_grid_and_hands_a_recipe_to_export(tmp_path):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from ui import state

    x, y, _ = synthetic_images(n=90, noise=0.0, seed=8)
    folder = write_image_folder(tmp_path / "imgs", x, y)
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "pages" / "evaluate.py"), default_timeout=120)
    at.session_state[state.DATASET] = state.DatasetSource("folder", str(folder))
    at.run()
    assert not at.exception
    offered = [option.split(" — ")[0] for option in at.multiselect[0].options]
    assert offered == ["random", "adapruner", "dynamic"]  # no scores yet: only what needs no ranking
    at.multiselect[0].set_value(["random", "dynamic"])
    at.multiselect[1].set_value([0.5])
    for i, value in enumerate([1, 180, 1, 4, 16]):  # seeds, time budget, epochs, width, resolution
        at.number_input[i].set_value(value)
    at.selectbox[1].set_value("cpu")
    at.run()
    plan = next(box.value for box in at.info if "Plan:" in box.value)
    assert "3 training runs of a ResNet-9 width 4 at 16 px" in plan and "budget 3.0 min" in plan
    at.button[0].click().run()
    assert not at.exception
    results = at.session_state["evaluate_results"]["results"]
    assert list(results["strategy"]) == ["full", "random", "dynamic"]
    assert (results.loc[results["strategy"] != "full", "n_train"] == 36).all()  # half of the 80% split
    assert results["steps"].nunique() == 1  # equal steps: every run as many as full data
    assert len(at.get("plotly_chart")) == 1
    assert any("Proxy: ResNet-9 width 4 at 16 px; training budget: equal steps" in c.value for c in at.caption)
    at.button[1].click().run()  # "Use this configuration": random is the only exportable one
    recipe = at.session_state[state.RECIPE]
    assert recipe.strategy == "random" and recipe.keep == 0.5


def test_a_probe_on_clip_embeddings_evaluates_the_demo_above_chance(demo_assets, tmp_path):
    """The second evaluation model: a linear probe on the cached CLIP embeddings, named in the results."""
    from pruning_core.data.datasets import load_dataset
    from pruning_core.scoring.pipeline import ClipConfig

    dataset, test = load_dataset(demo_assets.manifest), load_dataset(demo_assets.test_manifest)
    clip = ClipConfig(model=demo_assets.clip_model, pretrained=str(demo_assets.clip_checkpoint), batch_size=512)
    config = EvalConfig(proxy=DynamicsConfig(arch="linear", epochs=4, folds=0, device="cpu"), seeds=2)
    results = evaluate_pruning(dataset, base_table(dataset), ResultStore(tmp_path / "cache"), strategies=["random"],
                               keeps=[0.5], config=config, test=test, clip=clip)
    assert results.attrs["proxy"] == f"linear probe on {demo_assets.clip_model} image embeddings"
    assert len(results) == 4 and results["steps"].nunique() == 1
    assert (results["accuracy"] > 3 / len(dataset.classes)).all()  # chance is 1/8
    with pytest.raises(ValueError, match="give a CLIP model"):
        evaluate_pruning(dataset, base_table(dataset), ResultStore(tmp_path / "cache"), strategies=["random"],
                         keeps=[0.5], config=config, test=test)
