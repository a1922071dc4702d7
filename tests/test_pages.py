"""Streamlit AppTest runs of the Dataset and Score pages on a small image folder with a tiny CLIP."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from pruning_core.scoring.pipeline import ClipConfig
from pruning_core.demo.tiny_clip import TINY_CLIP_NAME
from ui import state

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(1)
    for cls in ("cat", "dog", "empty"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
    for cls in ("cat", "dog"):
        for i in range(5):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    (tmp_path / "imgs" / "dog" / "bad.jpg").write_bytes(b"this is not a jpeg")
    return tmp_path / "imgs"


def page(name: str, source: state.DatasetSource, **session) -> AppTest:
    at = AppTest.from_file(str(REPO / "pages" / f"{name}.py"), default_timeout=120)
    at.session_state[state.DATASET] = source
    for key, value in session.items():
        at.session_state[key] = value
    return at


def test_dataset_page_shows_the_validation_report(folder):
    at = page("dataset", state.DatasetSource("folder", str(folder))).run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Samples"] == "10" and metrics["Skipped"] == "1" and metrics["Classes"] == "2"
    assert any("1 skipped" in w.value for w in at.warning)
    report = at.dataframe[0].value
    assert report["path"].str.contains("bad.jpg").any()
    assert report["reason"].str.contains("no images").any()  # the empty class is named


def test_dataset_page_names_a_missing_folder(tmp_path):
    at = page("dataset", state.DatasetSource("folder", str(tmp_path / "nowhere"))).run()
    assert any("nowhere" in e.value for e in at.error)


def test_score_page_computes_clip_scores_with_a_tiny_model(folder):
    config = ClipConfig(model=TINY_CLIP_NAME, pretrained="none", device="cpu", batch_size=4)
    at = page("score", state.DatasetSource("folder", str(folder)), **{state.CLIP: config}).run()
    assert not at.exception
    assert at.number_input(key="clip_k").value == ClipConfig().k  # the settings' defaults are the config's
    assert at.number_input(key="clip_dup_threshold").value == ClipConfig().dup_threshold
    at.number_input(key="clip_k").set_value(3)
    at.number_input(key="clip_dup_threshold").set_value(0.99)
    at.button[0].click().run()  # "Compute CLIP scores" (the form's submit button)
    assert not at.exception
    assert any("scores for 10 samples" in s.value for s in at.success)
    table = at.session_state[state.TABLE]
    assert "clip.label_alignment" in table.infos and len(table.frame) == 10
    # how the scores were made reaches the sidecar and the manifest, beside the dataset they were made on
    assert table.settings["clip"]["model"] == TINY_CLIP_NAME and table.settings["clip"]["adapter_epochs"] == 0
    assert (at.session_state[state.CLIP].k, at.session_state[state.CLIP].dup_threshold) == (3, 0.99)
    assert (table.settings["clip"]["k"], table.settings["clip"]["dup_threshold"]) == (3, 0.99)  # for the manifest
    assert table.settings["dataset"]["fingerprint"]  # the base table's settings survive the new family


def test_score_page_explains_unavailable_weights(folder, tmp_path):
    config = ClipConfig(model="ViT-B-32", pretrained=str(tmp_path / "missing.pt"), device="cpu")
    at = page("score", state.DatasetSource("folder", str(folder)), **{state.CLIP: config}).run()
    at.button[0].click().run()
    assert any("checkpoint file not found" in e.value and "works without CLIP" in e.value for e in at.error)


def test_score_page_shows_the_plan_before_running_and_runs_it(folder):
    at = page("score", state.DatasetSource("folder", str(folder))).run()
    assert not at.exception
    plan_text = next(i.value for i in at.info if i.value.startswith("**Plan:**"))
    assert "budget 60 s" in plan_text and "about" in plan_text
    epochs = next(n for n in at.number_input if n.label == "Epochs")
    folds = next(n for n in at.number_input if n.label.startswith("Folds"))
    epochs.set_value(2)
    folds.set_value(0)
    at.run()
    plan_text = next(i.value for i in at.info if i.value.startswith("**Plan:**"))
    assert "2 epochs" in plan_text and "no cross-fitting" in plan_text  # what the user fixed, the rest planned
    next(b for b in at.button if b.label == "Compute dynamics scores").click().run()
    assert not at.exception
    table = at.session_state[state.TABLE]
    assert "dynamics.aum" in table.infos and "cleanlab.label_quality" not in table.infos
    settings = table.settings["dynamics"]
    assert settings["epochs"] == 2 and settings["plan"]["fixed"] == ["epochs", "folds"]
    assert settings["budget_s"] == 60.0


def test_score_page_refuses_one_class_before_the_throughput_probe(tmp_path, monkeypatch):
    def probe(*args, **kwargs):
        raise AssertionError("the throughput probe ran")

    monkeypatch.setattr(state, "plan_dynamics", probe)
    (tmp_path / "one" / "cat").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / "one" / "cat" / f"{i}.png")
    at = page("score", state.DatasetSource("folder", str(tmp_path / "one"))).run()
    assert not at.exception
    assert [e.value for e in at.error] == [f"{(tmp_path / 'one').resolve()}: only one class ('cat', 3 samples); dynamics "
                                           "scores and the AdaPruner mask train a classifier, which needs at least 2 classes"]
    assert next(b for b in at.button if b.label == "Compute dynamics scores").disabled


def test_score_page_says_whether_clip_fits_this_data_with_the_numbers(folder):
    from pruning_core.data.datasets import load_dataset
    from pruning_core.scoring.score_info import ScoreInfo
    from pruning_core.scoring.score_table import ScoreTable

    samples = load_dataset(folder).samples
    other = {"cat": "dog", "dog": "cat"}
    infos = {"clip.zero_shot_margin": ScoreInfo("clip.zero_shot_margin", "m", "high")}
    for suggested, verdict in ((samples["label"].map(other), "does not fit"), (samples["label"], "fits this data")):
        table = ScoreTable(samples.assign(**{"clip.suggested_label": suggested, "clip.zero_shot_margin": 0.9}), infos)
        at = page("score", state.DatasetSource("folder", str(folder)), **{state.TABLE: table}).run()
        assert not at.exception
        shown = [w.value for w in at.warning] + [c.value for c in at.caption]
        assert any(f"CLIP {verdict}" in text and "agrees with" in text and "chance 50.0%" in text
                   for text in shown), shown
