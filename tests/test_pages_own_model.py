"""AppTest: the Score page takes your own model's probabilities and embeddings as ``score --pred-probs/--features``
does (same columns, same one-line errors), and a file that fails a check changes nothing already computed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from streamlit.testing.v1 import AppTest

from pruning_core.audit.own_model import read_features, read_pred_probs
from pruning_core.audit.suggest import with_suggestions
from pruning_core.scoring.pipeline import ClipConfig, own_model_score_table
from review_fixtures import make_scored_dataset
from ui import own_model_panel, state

REPO = Path(__file__).resolve().parent.parent


def _probs(labels: np.ndarray, classes: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1, (len(labels), classes))
    logits[np.arange(len(labels)), labels] += 1.5
    return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


def _submit(at: AppTest, probs: str = "", features: str = "") -> AppTest:
    at.text_input(key=own_model_panel.PRED_PROBS).set_value(probs)
    at.text_input(key=own_model_panel.FEATURES).set_value(features)
    next(b for b in at.button if b.label == "Use my model's outputs").click().run()
    return at


def test_score_page_uses_your_models_outputs_as_the_cli_does(tmp_path):
    dataset, manifest, table = make_scored_dataset(tmp_path / "data", n=30)
    good, features, wrong = tmp_path / "probs.npy", tmp_path / "features.npy", tmp_path / "wrong.npy"
    np.save(good, _probs(dataset.label_ids, len(dataset.classes)))
    np.save(features, np.random.default_rng(1).normal(0, 1, (len(dataset), 6)))
    np.save(wrong, _probs(dataset.label_ids, len(dataset.classes))[:, :2])
    at = AppTest.from_file(str(REPO / "pages" / "score.py"), default_timeout=120)
    at.session_state[state.DATASET] = state.DatasetSource("manifest", str(manifest))
    at.session_state[state.TABLE] = table
    at.run()
    assert not at.exception

    _submit(at, str(good), str(features))
    assert not at.exception and not at.error
    scored = at.session_state[state.TABLE]
    cli = with_suggestions(table.merged(own_model_score_table(  # what `score --pred-probs --features` merges
        dataset, pred_probs=read_pred_probs(str(good), dataset), features=read_features(str(features), dataset),
        knn=ClipConfig())))
    assert {"cleanlab.label_quality", "cleanlab.is_issue", "features.outlier", "suggest.label",
            "test.alignment"} <= set(scored.frame.columns)  # the columns computed before are kept
    pd.testing.assert_frame_equal(scored.frame, cli.frame, check_like=True)
    assert scored.settings["cleanlab"]["pred_probs"]["file"] == str(good.resolve())

    _submit(at, str(wrong))
    assert [e.value for e in at.error] == [f"--pred-probs {wrong.resolve()}: 2 columns for 3 classes "
                                           f"(shape ({len(dataset)}, 2))"]
    after = at.session_state[state.TABLE]
    pd.testing.assert_frame_equal(after.frame, scored.frame)  # nothing already computed is lost
    assert after.settings == scored.settings

    _submit(at, features="/etc/hostname.npy")  # outside the workspace roots: refused before it is read
    assert len(at.error) == 1 and "outside the workspace" in at.error[0].value
