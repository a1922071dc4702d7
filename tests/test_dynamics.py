"""Training-dynamics core: hand-computed scores, trainer determinism, cross-fitting, cleanlab, metrics.

CPU only and small: the trainer runs single-threaded here (restored afterwards) because on a
shared 2-core machine two BLAS threads fighting other processes are several times slower.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from pruning_core.dynamics import (
    TrainingRecord,
    dynamic_uncertainty,
    dynamics_scores,
    fold_assignment,
    label_issue_scores,
    label_stats,
    out_of_sample_probs,
    train_and_record,
)
from pruning_core.dynamics import crossfit as crossfit_mod
from pruning_core.dynamics.config import DynamicsConfig
from pruning_core.scoring.detection import detection_metrics, evaluate_scores
from synthetic import gaussian_embeddings, synthetic_images

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- hand-computed scores

PROB = np.array([[0.9, 0.2, 0.6, 0.1], [0.8, 0.6, 0.3, 0.2], [0.7, 0.9, 0.5, 0.3]], dtype=np.float32)
MARGIN = np.array([[2.0, -1.0, 1.0, -3.0], [1.0, 0.5, -0.5, -2.0], [3.0, 2.0, 1.0, -1.0]], dtype=np.float32)


def tiny_record() -> TrainingRecord:
    el2n = np.array([[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8], [0.9, 1.0, 1.1, 1.2]], dtype=np.float32)
    return TrainingRecord(
        prob=PROB, margin=MARGIN, correct=MARGIN > 0, loss=-np.log(PROB), el2n=el2n,
        final_logits=np.zeros((4, 3), np.float32), labels=np.zeros(4, np.int64),
        record_idx=np.arange(4),
    )


def test_scores_match_hand_computation():
    frame, infos = dynamics_scores(tiny_record(), el2n_epoch=2, dynunc_window=2)
    assert set(frame.columns) == set(infos)
    np.testing.assert_allclose(frame["dynamics.confidence"], [0.8, 1.7 / 3, 1.4 / 3, 0.2], rtol=1e-6)
    # population std of (0.9, 0.8, 0.7) = sqrt(0.02 / 3)
    assert frame["dynamics.variability"][0] == pytest.approx(math.sqrt(0.02 / 3), rel=1e-5)
    np.testing.assert_allclose(frame["dynamics.aum"], [2.0, 0.5, 0.5, -2.0])
    # correct: s0 TTT, s1 FTT, s2 TFT (one forgetting), s3 FFF (never learned, no forgetting)
    assert frame["dynamics.forgetting"].tolist() == [0, 0, 1, 0]
    assert frame["dynamics.never_learned"].tolist() == [0, 0, 0, 1]
    np.testing.assert_allclose(frame["dynamics.el2n"], [0.5, 0.6, 0.7, 0.8], rtol=1e-6)
    np.testing.assert_allclose(frame["dynamics.final_loss"], -np.log([0.7, 0.9, 0.5, 0.3]), rtol=1e-5)
    # J=2, K=3: windows k = 0 .. K-J-1 = {0}: unbiased std of (p0, p1) = |p0 - p1| / sqrt(2)
    np.testing.assert_allclose(frame["dynamics.dyn_unc"], np.array([0.1, 0.4, 0.3, 0.1]) / math.sqrt(2), rtol=1e-5)
    directions = {k: v.suspicious for k, v in infos.items()}
    assert directions == {
        "dynamics.confidence": "low", "dynamics.variability": "low", "dynamics.aum": "low",
        "dynamics.forgetting": "high", "dynamics.never_learned": "high", "dynamics.el2n": "high",
        "dynamics.dyn_unc": "low", "dynamics.final_loss": "high",
    }


def test_predicted_label_names_the_last_epochs_argmax():
    record = tiny_record()
    record.final_logits[:] = [[0.0, 2.0, 1.0], [3.0, 0.0, 1.0], [0.0, 0.0, 5.0], [1.0, 4.0, 0.0]]
    frame, infos = dynamics_scores(record, dynunc_window=2, classes=["ant", "bee", "cow"])
    assert frame["dynamics.predicted_label"].tolist() == ["bee", "ant", "cow", "bee"]
    assert "dynamics.predicted_label" not in infos  # an annotation beside the scores, like clip.suggested_label
    assert "dynamics.predicted_label" not in dynamics_scores(record, dynunc_window=2)[0]
    with pytest.raises(ValueError, match="2 class names"):
        dynamics_scores(record, dynunc_window=2, classes=["ant", "bee"])


def test_dyn_unc_windows_and_short_run_fallback():
    # K <= J: one window over all K epochs (unbiased std), documented fallback
    frame, infos = dynamics_scores(tiny_record(), dynunc_window=DynamicsConfig().dynunc_window)  # J = 10 > K = 3
    np.testing.assert_allclose(frame["dynamics.dyn_unc"], PROB.astype(np.float64).std(axis=0, ddof=1), rtol=1e-5)
    assert "J=3" in infos["dynamics.dyn_unc"].description
    # K = 5, J = 2: windows k = 0, 1, 2 (K - J of them), mean of |p_k - p_{k+1}| / sqrt(2)
    p = np.array([[0.0], [1.0], [1.0], [0.5], [0.0]])
    u, j = dynamic_uncertainty(p, 2)
    assert j == 2
    assert u[0] == pytest.approx((1.0 + 0.0 + 0.5) / 3 / math.sqrt(2))
    u1, _ = dynamic_uncertainty(p[:1], 10)
    assert u1[0] == 0.0  # a single epoch has no spread


def test_label_stats_vectorised_values():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]])
    st = label_stats(logits, torch.tensor([0, 1]))
    p = torch.softmax(logits, 1)
    assert st["prob"][0] == pytest.approx(float(p[0, 0]))
    assert st["margin"].tolist() == pytest.approx([2.0, -2.0])
    assert st["correct"].tolist() == [True, False]
    assert st["loss"][1] == pytest.approx(-math.log(float(p[1, 1])), rel=1e-5)
    expected = torch.linalg.norm(p - torch.nn.functional.one_hot(torch.tensor([0, 1]), 3), dim=1)
    assert torch.allclose(st["el2n"], expected, atol=1e-6)


# --------------------------------------------------------------------------- trainer


def test_resnet9_trainer_is_deterministic_and_records_every_epoch():
    x, y, noisy = synthetic_images()
    kw = DynamicsConfig(arch="resnet9", epochs=3, batch_size=48, width=8, seed=3, device="cpu").trainer_options()
    seen = []
    a = train_and_record(x, y, progress=seen.append, **kw)
    b = train_and_record(torch.as_tensor(x), y, **kw)
    assert a.prob.shape == a.margin.shape == a.loss.shape == a.el2n.shape == (3, 240)
    assert a.correct.dtype == bool and a.prob.dtype == np.float32
    assert a.final_logits.shape == (240, 3)
    for name in TrainingRecord.ARRAY_FIELDS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert [p.done for p in seen] == [1, 2, 3]
    c = train_and_record(x, y, **{**kw, "seed": 4})
    assert not np.array_equal(a.prob, c.prob)
    # the last epoch's logits are the ones the last record row was computed from
    np.testing.assert_allclose(label_stats(torch.as_tensor(a.final_logits), torch.as_tensor(y))["prob"].numpy(),
                               a.prob[-1], rtol=1e-5, atol=1e-6)
    # round trip through the cache form
    r = TrainingRecord.from_arrays(a.to_arrays(), a.meta)
    np.testing.assert_array_equal(r.margin, a.margin)


def test_every_epoch_but_the_last_is_read_from_its_training_pass(monkeypatch):
    """Per-epoch rows come from the logits the training steps computed; the 40 samples the dropped last batch leaves
    out each epoch (240 in batches of 50) are evaluated alone; the whole set is evaluated once, after the last epoch."""
    from pruning_core.dynamics import trainer as trainer_mod

    x, y, _ = synthetic_images()
    passes: list[dict[int, torch.Tensor]] = []
    train_epoch, logits = trainer_mod.ProxyTrainer.train_epoch, trainer_mod.ProxyTrainer.logits

    def spying(self, *args, on_batch=None, **kw):
        seen: dict[int, torch.Tensor] = {}
        passes.append(seen)

        def both(b, out):
            seen.update((i, z.clone()) for i, z in zip(b.tolist(), out))
            on_batch(b, out)
        return train_epoch(self, *args, on_batch=both, **kw)

    evaluated = []
    monkeypatch.setattr(trainer_mod.ProxyTrainer, "train_epoch", spying)
    monkeypatch.setattr(trainer_mod.ProxyTrainer, "logits",
                        lambda self, idx=None, **kw: evaluated.append(idx.tolist()) or logits(self, idx, **kw))
    kw = DynamicsConfig(arch="resnet9", epochs=3, batch_size=50, width=8, seed=1, device="cpu").trainer_options()
    rec = train_and_record(x, y, **kw)
    assert [len(p) for p in passes] == [200, 200, 200]
    assert [len(e) for e in evaluated] == [40, 40, 240]
    for epoch in range(2):
        trained = sorted(passes[epoch])
        assert sorted(evaluated[epoch]) == sorted(set(range(240)) - set(trained))
        expected = label_stats(torch.stack([passes[epoch][i] for i in trained]), torch.as_tensor(y[trained]))
        for name in ("prob", "margin", "loss", "el2n"):
            np.testing.assert_allclose(getattr(rec, name)[epoch, trained], expected[name].numpy(), rtol=1e-5, atol=1e-6)
        assert (rec.loss[epoch] > 0).all()  # the left-out ones were evaluated, not left at zero
    last = label_stats(torch.as_tensor(rec.final_logits), torch.as_tensor(y))
    np.testing.assert_allclose(rec.margin[-1], last["margin"].numpy(), rtol=1e-5, atol=1e-6)


def test_the_folded_eval_model_computes_what_the_trained_model_computes_in_eval_mode():
    from pruning_core.dynamics.models import build_model, folded_for_eval

    torch.manual_seed(0)
    model = build_model("resnet9", 4, width=8).to(memory_format=torch.channels_last)
    with torch.no_grad():  # BatchNorm statistics and affine parameters away from their initial 0/1
        model(torch.randn(64, 3, 16, 16) * 3 + 1)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 2.0)
                module.bias.uniform_(-1.0, 1.0)
    x = torch.randn(32, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    folded = folded_for_eval(model)
    assert model.training, "folding must leave the trained model as it was"
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        expected = model.eval()(x)
        torch.testing.assert_close(folded(x), expected, rtol=1e-4, atol=1e-4)


def test_images_noise_is_found_by_in_sample_dynamics():
    x, y, noisy = synthetic_images(n=300, seed=1)
    config = DynamicsConfig(epochs=4, batch_size=50, width=8, seed=0, device="cpu")
    rec = train_and_record(x, y, **config.trainer_options())
    frame, infos = dynamics_scores(rec, dynunc_window=config.dynunc_window)
    res = evaluate_scores(frame, infos, noisy).set_index("score")
    assert res.loc["dynamics.aum", "auroc"] >= 0.85
    assert res.loc["dynamics.confidence", "auroc"] >= 0.85


@pytest.mark.slow
def test_dynamics_step_finds_the_demos_injected_label_noise(demo_assets, tmp_path):
    """The Score step's dynamics (pipeline.dynamics_score_table: decode, proxy training, scores,
    cross-fitting, cleanlab) on the demo, scored against its ground_truth.csv (10 % flipped labels).
    Small settings (ResNet-9 width 8 at 16 px, 6 epochs, 2 folds: ~15 s on one thread); a fresh store,
    so nothing comes from a cache."""
    from cache.store import ResultStore
    from pruning_core.data.datasets import load_dataset
    from pruning_core.dynamics.config import DynamicsConfig
    from pruning_core.scoring.pipeline import dynamics_score_table

    dataset = load_dataset(demo_assets.manifest)
    truth = pd.read_csv(demo_assets.ground_truth, keep_default_na=False).set_index("path")
    noisy = truth.loc[dataset.samples["path"], "label_noisy"].astype(bool).to_numpy()
    assert 0.08 <= noisy.mean() <= 0.12
    config = DynamicsConfig(epochs=6, width=8, image_size=16, batch_size=64, folds=2, device="cpu")
    table = dynamics_score_table(dataset, config, ResultStore(tmp_path / "cache"))
    auroc = evaluate_scores(table.frame, table.infos, noisy).set_index("score")["auroc"]
    assert auroc["dynamics.aum"] >= 0.9 and auroc["dynamics.confidence"] >= 0.9  # measured 0.955, 0.949
    assert auroc["cleanlab.label_quality"] >= 0.8  # out-of-sample, half the data per fold: 0.872
    # cleanlab's confident-joint count of wrong labels reaches the settings and the Overview's estimate
    recorded = table.settings["cleanlab"]
    print("cleanlab estimate", recorded, "true", int(noisy.sum()))
    assert recorded["low"] <= recorded["estimated_issues"] <= recorded["high"]
    from pruning_core.audit.overview import overview

    ov = overview(table.frame.assign(label=dataset.samples["label"].to_numpy()), table.infos, scoring=table.settings)
    assert any(f"confident joint counts {recorded['estimated_issues']:,}" in note for note in ov.evidence)
    # this small proxy agrees with 42 % of the labels out of sample (chance 12.5 %): too weak to calibrate
    # cleanlab's flags, so the finding rests on the in-sample dynamics (74 % agreement) through the noise
    # posterior, whose expected count of true mislabels among its flags holds
    finding = ov.finding("mislabelled")
    flagged_noisy = int(noisy[table.frame.index.get_indexer(finding.rows)].sum())
    print("noise posterior AUROC", auroc["dynamics.noise_score"], "flagged", finding.count, "truly noisy among them",
          flagged_noisy, "estimate", finding.estimate.count_interval)
    assert "noise posterior" in finding.estimate.source
    assert finding.estimate.count_interval[0] <= flagged_noisy <= finding.estimate.count_interval[1]
    assert auroc["dynamics.noise_score"] >= 0.9


def test_embedding_probe_deterministic_record_subset_and_heldout():
    x, y, _ = gaussian_embeddings(n=200)
    kw = dict(**DynamicsConfig(arch="mlp", epochs=3, batch_size=32, seed=0, device="cpu").trainer_options(),
              record_idx=[5, 7, 9], eval_x=x[:10])
    a = train_and_record(x, y, **kw)
    b = train_and_record(x, y, **kw)
    assert a.prob.shape == (3, 3) and a.labels.tolist() == list(y[[5, 7, 9]])
    np.testing.assert_array_equal(a.prob, b.prob)
    assert a.heldout_probs.shape == (10, 4)
    np.testing.assert_allclose(a.heldout_probs.sum(1), 1.0, rtol=1e-5)
    lin = train_and_record(x, y, **DynamicsConfig(arch="linear", epochs=2, device="cpu").trainer_options(),
                           record_idx=np.zeros(0, int))
    assert lin.prob.shape == (2, 0)


# --------------------------------------------------------------------------- cross-fitting


def test_crossfit_never_predicts_a_sample_with_a_model_that_saw_it(monkeypatch, tmp_path):
    n = 103
    y = np.arange(n) % 3
    x = np.arange(n, dtype=np.float32)[:, None]  # feature = sample index, so the fake can see ids
    calls = []

    def fake_train(x_tr, y_tr, *, eval_x, num_classes, **kw):
        train_ids = set(np.asarray(x_tr)[:, 0].astype(int).tolist())
        test_ids = np.asarray(eval_x)[:, 0].astype(int)
        calls.append((train_ids, test_ids))
        probs = np.full((len(test_ids), num_classes), 1.0 / num_classes, np.float32)
        return TrainingRecord(*(np.zeros((1, 0)),) * 5, np.zeros((0, num_classes)), np.zeros(0), np.zeros(0),
                              heldout_probs=probs)

    monkeypatch.setattr(crossfit_mod, "train_and_record", fake_train)
    probs = out_of_sample_probs(x, y, folds=4, arch="mlp", epochs=16, seed=0, fold_cache=tmp_path)
    assign = fold_assignment(y, 4, 0)
    assert len(calls) == 4 and probs.shape == (n, 3) and not np.isnan(probs).any()
    predicted = np.concatenate([t for _, t in calls])
    assert sorted(predicted.tolist()) == list(range(n))  # each sample predicted exactly once
    for k, (train_ids, test_ids) in enumerate(calls):
        assert train_ids.isdisjoint(test_ids.tolist())
        assert set(test_ids.tolist()) == set(np.flatnonzero(assign == k).tolist())
        assert train_ids == set(np.flatnonzero(assign != k).tolist())
    # stratified: every fold holds every class
    for k in range(4):
        assert set(y[assign == k]) == {0, 1, 2}

    # resume: finished folds are loaded, only the missing one is retrained
    (tmp_path / "fold2.npy").unlink()
    calls.clear()
    again = out_of_sample_probs(x, y, folds=4, arch="mlp", epochs=16, seed=0, fold_cache=tmp_path)
    assert len(calls) == 1 and set(calls[0][1].tolist()) == set(np.flatnonzero(assign == 2).tolist())
    np.testing.assert_array_equal(again, probs)


def test_cleaned_crossfit_trains_on_the_trusted_only_and_predicts_every_sample(monkeypatch):
    n = 90
    y = np.arange(n) % 3
    x = np.arange(n, dtype=np.float32)[:, None]  # feature = sample index, so the fake can see ids
    trusted = np.random.default_rng(0).random(n) < 0.6
    calls = []

    def fake_train(x_tr, y_tr, *, eval_x, num_classes, batch_size, **kw):
        calls.append((set(np.asarray(x_tr)[:, 0].astype(int).tolist()), np.asarray(eval_x)[:, 0].astype(int),
                      batch_size))
        return TrainingRecord(*(np.zeros((1, 0)),) * 5, np.zeros((0, num_classes)), np.zeros(0), np.zeros(0),
                              heldout_probs=np.full((len(eval_x), num_classes), 1 / num_classes, np.float32))

    monkeypatch.setattr(crossfit_mod, "train_and_record", fake_train)
    out_of_sample_probs(x, y, folds=3, arch="mlp", epochs=2, seed=0, trusted=trusted, batch_size=32)
    assign = fold_assignment(y, 3, 0)
    assert sorted(np.concatenate([t for _, t, _ in calls]).tolist()) == list(range(n))  # every sample, once
    for k, (train_ids, _, batch_size) in enumerate(calls):
        assert train_ids == set(np.flatnonzero((assign != k) & trusted).tolist())
        assert batch_size == 16  # ~36 samples: the smallest planned batch, not the 32 given for the whole set
    with pytest.raises(ValueError, match="trusted"):
        out_of_sample_probs(x, y, folds=3, arch="mlp", epochs=2, seed=0, trusted=trusted[:-1])


def test_cleanest_by_class_keeps_each_classes_share_of_its_lowest_scores():
    y = np.array([0] * 10 + [1] * 5)
    score = np.r_[np.arange(10)[::-1], [0.5, 0.1, 0.9, 0.3, 0.7]].astype(float)
    trusted = crossfit_mod.cleanest_by_class(score, y, 0.6)
    assert np.flatnonzero(trusted[:10]).tolist() == [4, 5, 6, 7, 8, 9]  # the 6 lowest of class 0
    assert np.flatnonzero(trusted[10:]).tolist() == [0, 1, 3]  # the 3 lowest of class 1
    assert crossfit_mod.cleanest_by_class(score, y, 1.0).all()
    with pytest.raises(ValueError, match="share"):
        crossfit_mod.cleanest_by_class(score, y, 0.0)


def test_cleaned_folds_stop_vouching_for_flipped_labels():
    """Fold models trained on the samples a first round ranks cleanest learn the classes, not the flips: the
    out-of-sample probability they give a mislabelled sample's given label falls."""
    x, y, noisy = gaussian_embeddings(n=800, noise=0.4, seed=1)
    train = DynamicsConfig(arch="mlp", epochs=12, batch_size=64, seed=0, device="cpu").trainer_options()
    classic = out_of_sample_probs(x, y, folds=4, **train)
    first_round = 1 - classic[np.arange(len(y)), y]
    cleaned = out_of_sample_probs(x, y, folds=4, trusted=crossfit_mod.cleanest_by_class(first_round, y, 0.6), **train)
    flipped = np.flatnonzero(noisy)
    given = {name: float(p[flipped, y[flipped]].mean()) for name, p in (("classic", classic), ("cleaned", cleaned))}
    assert given["cleaned"] < given["classic"] - 0.05, given


def test_out_of_sample_label_quality_finds_noise():
    x, y, noisy = gaussian_embeddings(n=600, noise=0.2, seed=0)
    probs = out_of_sample_probs(x, y, folds=4, **DynamicsConfig(arch="mlp", epochs=12, batch_size=64, seed=0,
                                                                device="cpu").trainer_options())
    assert probs.shape == (600, 4)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    frame, infos = label_issue_scores(y, probs, ["a", "b", "c", "d"])
    assert list(frame.columns) == ["cleanlab.label_quality", "cleanlab.is_issue", "dynamics.suggested_label",
                                   *(f"cleanlab.prob.{c}" for c in "abcd")]  # what audit.suggest calibrates
    np.testing.assert_array_equal(frame.filter(like="cleanlab.prob.").to_numpy(), probs)
    assert set(infos) == {"cleanlab.label_quality", "cleanlab.is_issue"}  # suggested_label is no score
    assert infos["cleanlab.label_quality"].suspicious == "low" and infos["cleanlab.is_issue"].suspicious == "high"
    assert set(frame["dynamics.suggested_label"]) <= {"a", "b", "c", "d"}
    assert set(frame["cleanlab.is_issue"].unique()) <= {0, 1}
    res = evaluate_scores(frame, infos, noisy).set_index("score")
    assert "dynamics.suggested_label" not in res.index
    assert res.loc["cleanlab.label_quality", "auroc"] >= 0.85
    assert res.loc["cleanlab.is_issue", "f1"] >= 0.6


# --------------------------------------------------------------------------- metrics


def test_detection_metrics_known_inputs():
    noisy = np.array([True, True, False, False, False])
    scores = np.array([0.1, 0.2, 0.8, 0.9, 0.7])  # low = suspicious, perfectly separated
    m = detection_metrics(scores, noisy, suspicious="low")
    assert m["auroc"] == 1.0 and m["average_precision"] == 1.0 and m["f1"] == 1.0 and m["n_flagged"] == 2
    rev = detection_metrics(scores, noisy, suspicious="high")
    assert rev["auroc"] == 0.0 and rev["f1"] == 0.0
    # explicit flagged set {0, 2, 3}: tp=1, precision 1/3, recall 1/2, F1 = 0.4
    flag = detection_metrics(scores, noisy, flagged=np.array([True, False, True, True, False]))
    assert flag["precision"] == pytest.approx(1 / 3) and flag["recall"] == 0.5 and flag["f1"] == pytest.approx(0.4)
    # a fraction: the 60% most suspicious = 3 lowest = {0, 1, 4}
    frac = detection_metrics(scores, noisy, flagged=0.6)
    assert frac["n_flagged"] == 3 and frac["recall"] == 1.0 and frac["precision"] == pytest.approx(2 / 3)
    # NaN scores rank as least suspicious; one-class ground truth gives NaN AUROC
    nan = detection_metrics(np.array([0.1, np.nan, 0.5, 0.6, 0.7]), noisy)
    assert nan["auroc"] == pytest.approx(3 / 6)  # sample 0 beats all 3 negatives, NaN sample 1 none
    assert math.isnan(detection_metrics(scores, np.zeros(5, bool))["auroc"])


def test_evaluate_scores_one_row_per_score():
    frame, infos = dynamics_scores(tiny_record(), dynunc_window=2)
    frame["note"] = ["x"] * 4  # an annotation column without ScoreInfo is skipped
    res = evaluate_scores(frame, infos, np.array([False, False, False, True]))
    assert list(res["score"]) == list(infos)
    row = res.set_index("score")
    assert row.loc["dynamics.aum", "auroc"] == 1.0
    assert row.loc["dynamics.never_learned", "f1"] == 1.0 and row.loc["dynamics.never_learned", "flagged_by"] == "value"
    assert isinstance(res, pd.DataFrame)
