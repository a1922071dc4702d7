"""--pred-probs and --features: a user's own model's probabilities and embeddings, checked and used."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pruning_core.audit.own_model import check_features, check_pred_probs, in_sample_warning, load_user_array
from pruning_core.cli import main
from pruning_core.data.datasets import load_dataset
from pruning_core.scoring.pipeline import features_score_table, pred_probs_score_table
from tests.synthetic import synthetic_images, write_image_folder


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    images, labels, _ = synthetic_images(n=60, size=16)
    return load_dataset(write_image_folder(tmp_path_factory.mktemp("own") / "data", images, labels))


def noisy_probs(n: int, labels: np.ndarray, classes: int = 3, seed: int = 0) -> np.ndarray:
    """Out-of-sample-looking probabilities: mostly on the given label, sometimes on another."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1, (n, classes))
    logits[np.arange(n), labels] += 1.5
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


def score(dataset, tmp_path, *flags: str) -> int:
    return main(["--cache-dir", str(tmp_path / "cache"), "score", str(dataset.root), "--no-clip", *flags,
                 "--out", str(tmp_path / "s.parquet")])


@pytest.mark.parametrize("make, message", [
    (lambda p: p[:-1], "59 rows for 60 samples"),
    (lambda p: p[:, :2], "2 columns for 3 classes"),
    (lambda p: np.where(np.arange(p.size).reshape(p.shape) == 7, np.nan, p), "NaN/inf values (first in row 2)"),
    (lambda p: p * 1.01, "rows do not sum to 1 within 0.001"),
    (lambda p: np.log(p), "negative values"),
])
def test_bad_pred_probs_are_one_line_errors_naming_the_file(dataset, tmp_path, capsys, make, message):
    path = tmp_path / "probs.npy"
    np.save(path, make(noisy_probs(len(dataset), dataset.label_ids)))
    assert score(dataset, tmp_path, "--pred-probs", str(path)) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert str(path) in err and message in err


def test_in_sample_probabilities_warn(dataset, tmp_path, capsys):
    y = dataset.label_ids
    memorised = np.full((len(y), 3), 0.005)
    memorised[np.arange(len(y)), y] = 0.99
    assert in_sample_warning(y, memorised) is not None
    assert in_sample_warning(y, noisy_probs(len(y), y)) is None
    path = tmp_path / "memorised.npy"
    np.save(path, memorised)
    assert score(dataset, tmp_path, "--pred-probs", str(path)) == 0
    assert "look in-sample" in capsys.readouterr().err


def test_pred_probs_equal_cleanlab_run_directly(dataset, tmp_path):
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    y, probs = dataset.label_ids, noisy_probs(len(dataset), dataset.label_ids, seed=3)
    path = tmp_path / "probs.npy"
    np.save(path, probs)
    given = check_pred_probs(load_user_array(str(path), dataset.samples, "--pred-probs", dataset.classes), 3)
    table = pred_probs_score_table(dataset, given)
    np.testing.assert_array_equal(table.frame["cleanlab.is_issue"].to_numpy().astype(bool),
                                  find_label_issues(y, probs, filter_by="prune_by_noise_rate"))
    np.testing.assert_array_equal(table.frame["cleanlab.label_quality"], get_label_quality_scores(y, probs))
    assert table.settings["cleanlab"]["pred_probs"]["sha256"] == __import__("hashlib").sha256(path.read_bytes()).hexdigest()


def test_findings_name_the_users_model_not_the_proxy(dataset, tmp_path):
    from pruning_core.audit.overview import overview

    probs = noisy_probs(len(dataset), dataset.label_ids, seed=3)
    path = tmp_path / "probs.npy"
    np.save(path, probs)
    table = pred_probs_score_table(dataset, check_pred_probs(
        load_user_array(str(path), dataset.samples, "--pred-probs", dataset.classes), 3))
    ov = overview(table.frame.assign(label=dataset.samples["label"].to_numpy(), path=dataset.samples["path"].to_numpy()),
                  table.infos, scoring=table.settings)
    said = " ".join(ov.evidence) + (ov.mislabels.evidence if ov.mislabels is not None else "")
    assert "your model's out-of-sample probabilities" in said and "cross-fitted proxy" not in said


def test_table_file_is_aligned_on_its_path_column(dataset, tmp_path):
    probs = noisy_probs(len(dataset), dataset.label_ids)
    frame = pd.DataFrame(probs, columns=dataset.classes).assign(path=dataset.samples["path"])
    shuffled = frame.sample(frac=1.0, random_state=0)
    shuffled.to_csv(tmp_path / "probs.csv", index=False)
    got = load_user_array(str(tmp_path / "probs.csv"), dataset.samples, "--pred-probs", dataset.classes)
    np.testing.assert_allclose(got.values, probs)
    assert got.source["row_order"] == "aligned on path"
    shuffled.iloc[1:].to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(ValueError, match="1 samples have no row"):
        load_user_array(str(tmp_path / "short.csv"), dataset.samples, "--pred-probs", dataset.classes)


def test_features_give_the_knn_scores_of_clip_scores(dataset, tmp_path):
    from pruning_core.clip_scores import knn_scores, unit_rows

    rng = np.random.default_rng(1)
    vectors = rng.normal(0, 1, (len(dataset), 8))
    vectors[5] = vectors[4] * 3.0  # a duplicate (cosine 1) at another scale
    vectors[9] = 40 * rng.normal(0, 1, 8) + 100  # far from the rest
    path = tmp_path / "features.npy"
    np.save(path, vectors)
    features = check_features(load_user_array(str(path), dataset.samples, "--features"))
    table = features_score_table(dataset, features, k=5, dup_threshold=0.95)
    expected, _ = knn_scores(unit_rows(vectors), dataset.label_ids, k=5, dup_threshold=0.95, family="clip")
    for name in ("diversity", "outlier", "duplicate_group", "duplicate_count"):
        np.testing.assert_allclose(table.frame[f"features.{name}"], expected[f"clip.{name}"])
    assert table.frame["features.duplicate_group"][4] == table.frame["features.duplicate_group"][5] >= 0
    assert table.settings["features"]["sha256"] == __import__("hashlib").sha256(path.read_bytes()).hexdigest()
    np.save(path, np.where(np.arange(vectors.size).reshape(vectors.shape) == 3, np.inf, vectors))
    assert score(dataset, tmp_path, "--features", str(path)) == 2


def test_cli_records_both_files_in_the_sidecar(dataset, tmp_path):
    np.save(tmp_path / "p.npy", noisy_probs(len(dataset), dataset.label_ids))
    np.save(tmp_path / "f.npy", np.random.default_rng(0).normal(0, 1, (len(dataset), 4)))
    assert score(dataset, tmp_path, "--pred-probs", str(tmp_path / "p.npy"), "--features", str(tmp_path / "f.npy")) == 0
    settings = json.loads((tmp_path / "s.json").read_text())["settings"]
    assert settings["cleanlab"]["pred_probs"]["file"] == str(tmp_path / "p.npy")
    assert len(settings["features"]["sha256"]) == 64
    frame = pd.read_parquet(tmp_path / "s.parquet")
    assert {"cleanlab.label_quality", "suggest.label", "features.outlier"} <= set(frame.columns)
