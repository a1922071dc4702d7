"""The noise posterior (``dynamics.noise_score``): finds class-pair flips the loss cannot, and is a fixed function."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from pruning_core.dynamics.noise import (NOISE_SCORE, believed_transition, confusion_structure, mislabel_posterior,
                                         noise_scores, noise_transition)
from pruning_core.scoring.score_table import ScoreTable
from pruning_core.selection import default_detector, default_weights, select


def class_pair_noise(seed: int = 0, n_per_class: int = 600, rate: float = 0.4):
    """Four classes; 40 % of class 0 labelled 1 (a truck -> automobile confusion), classes 2 and 3 untouched but
    with a third of their samples *hard* (the proxy is torn between 2 and 3).  The probabilities are those of a proxy that
    learned the noisy labels well: a true-0 image is 0 with 1 - rate and 1 with rate, whatever its given label."""
    rng = np.random.default_rng(seed)
    true = np.repeat(np.arange(4), n_per_class)
    given = true.copy()
    flip = (true == 0) & (rng.random(len(true)) < rate)
    given[flip] = 1
    noisy_posterior = np.eye(4)
    noisy_posterior[0] = [1 - rate, rate, 0, 0]
    probs = noisy_posterior[true]
    hard = np.flatnonzero((true >= 2) & (rng.random(len(true)) < 1 / 3))
    sure = rng.uniform(0.3, 0.5, len(hard))  # clean but hard: the proxy half believes the other untouched class
    probs[hard, true[hard]] = sure
    probs[hard, 5 - true[hard]] = 1 - sure
    probs = 0.95 * probs + 0.05 * rng.dirichlet(np.ones(4), len(true))
    return given, true, probs


def test_the_posterior_finds_class_pair_flips_that_the_loss_confuses_with_hard_samples():
    given, true, probs = class_pair_noise()
    noisy = given != true
    wrong, suggested = mislabel_posterior(given, probs)
    loss = -np.log(probs[np.arange(len(given)), given])
    assert roc_auc_score(noisy, loss) < 0.92  # hard clean samples and clean class-0 images look as bad (0.90)
    assert roc_auc_score(noisy, wrong) > 0.97
    assert (suggested[noisy] == 0).mean() > 0.95  # the flips are suggested back to their true class
    # the estimated transition recovers the planted confusion from the labels alone (no ground truth)
    trans = noise_transition(given, probs)
    off = trans - np.diag(np.diag(trans))
    assert np.unravel_index(off.argmax(), off.shape) == (0, 1) and off[0, 1] > 0.15  # confident learning: 0.20
    assert off[1:].max() < 0.05
    assert wrong.min() >= 0 and wrong.max() <= 1  # a probability


def test_under_uniform_noise_the_posterior_ranks_as_the_given_labels_probability():
    rng = np.random.default_rng(1)
    c, eps = 5, 0.3
    trans = np.full((c, c), eps / (c - 1)) + np.eye(c) * (1 - eps - eps / (c - 1))
    probs = rng.dirichlet(np.ones(c), 500) @ trans  # what a proxy of labels with this noise learns
    given = rng.integers(0, c, 500)
    wrong, _ = mislabel_posterior(given, probs, transition=trans)
    p_given = probs[np.arange(500), given]
    assert pd.Series(wrong).rank().corr(pd.Series(-p_given).rank()) == pytest.approx(1.0, abs=1e-4)  # EM: 50 steps


def test_the_posterior_believes_the_estimated_confusion_only_as_far_as_it_is_structured():
    c = 10
    uniform = np.full((c, c), 0.4 / 9)
    np.fill_diagonal(uniform, 0.6)
    pairs = np.eye(c)
    pairs[[0, 2, 4], [0, 2, 4]], pairs[[0, 2, 4], [1, 3, 5]] = 0.6, 0.4
    assert confusion_structure(uniform) == pytest.approx(0.0, abs=1e-12) and confusion_structure(pairs) > 0.9
    assert believed_transition(pairs)[1] == 1.0 and np.array_equal(believed_transition(pairs)[0], pairs)
    # an estimate that reads a proxy's own confusion as noise (one pair a little above uniform noise) is
    # believed as uniform noise at its overall rate: the posterior then ranks exactly as the loss does
    bent = uniform.copy()
    bent[3, 5] += 0.05
    bent[3, 3] -= 0.05
    believed, weight = believed_transition(bent)
    assert weight == 0.0 and np.allclose(believed[~np.eye(c, dtype=bool)], believed[0, 1])
    rng = np.random.default_rng(2)
    probs = rng.dirichlet(np.ones(c), 400) @ believed
    given_ = rng.integers(0, c, 400)
    wrong, _ = mislabel_posterior(given_, probs, believed)
    loss = -np.log(probs[np.arange(400), given_])
    assert pd.Series(wrong).rank().corr(pd.Series(loss).rank()) == pytest.approx(1.0, abs=1e-4)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_the_score_is_a_fixed_function_of_its_inputs_whatever_the_row_order(seed):
    given_, _, probs = class_pair_noise(seed=seed, n_per_class=60)
    wrong, suggested = mislabel_posterior(given_, probs)
    again, suggested_again = mislabel_posterior(given_.copy(), probs.copy())
    np.testing.assert_array_equal(wrong, again)
    np.testing.assert_array_equal(suggested, suggested_again)
    order = np.random.default_rng(seed).permutation(len(given_))
    shuffled, suggested_shuffled = mislabel_posterior(given_[order], probs[order])
    np.testing.assert_allclose(shuffled, wrong[order], atol=1e-9)
    np.testing.assert_array_equal(suggested_shuffled, suggested[order])


def test_noise_scores_columns_and_defaults_prefer_it():
    given, true, probs = class_pair_noise()
    frame, infos, recorded = noise_scores(given, probs, ["truck", "automobile", "cat", "ship"], source="a test proxy")
    assert recorded["structure_weight"] == 1.0 and recorded["transition"]["classes"][0] == "truck"
    assert infos[NOISE_SCORE].suspicious == "high" and "a test proxy" in infos[NOISE_SCORE].description
    assert (frame["dynamics.noise_suggested_label"][given != true] == "truck").mean() > 0.95
    # the Review queue and the weighted strategies start from it when it is there
    table = frame.assign(**{"clip.label_alignment": probs[np.arange(len(given)), given],
                            "label": np.array(["truck", "automobile", "cat", "ship"])[given],
                            "path": [f"{i}.png" for i in range(len(given))]})
    clip_info = {"clip.label_alignment": infos[NOISE_SCORE].__class__("clip.label_alignment", "x", "low")}
    all_infos = {**clip_info, **infos}
    assert default_detector(all_infos) == NOISE_SCORE and default_detector(clip_info) == "clip.label_alignment"
    assert default_weights(table, all_infos) == {NOISE_SCORE: 1.0}
    kept = select(table, all_infos, 0.8, strategy="easiest")
    noisy = given != true
    assert (~kept[noisy]).mean() > 0.95  # easiest's default drops the flips first (20 % dropped, 9 % flipped)
    ScoreTable(table.drop(columns=["label", "path"]), all_infos)  # a valid score table
