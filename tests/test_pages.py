"""Streamlit AppTest runs of the Dataset and Score pages on a small image folder with a tiny CLIP."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from pruning_core.pipeline import ClipConfig
from pruning_core.tiny_clip import TINY_CLIP_NAME
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
    at.button[0].click().run()  # "Compute CLIP scores" (the form's submit button)
    assert not at.exception
    assert any("scores for 10 samples" in s.value for s in at.success)
    table = at.session_state[state.TABLE]
    assert "clip.label_alignment" in table.infos and len(table.frame) == 10


def test_score_page_explains_unavailable_weights(folder, tmp_path):
    config = ClipConfig(model="ViT-B-32", pretrained=str(tmp_path / "missing.pt"), device="cpu")
    at = page("score", state.DatasetSource("folder", str(folder)), **{state.CLIP: config}).run()
    at.button[0].click().run()
    assert any("checkpoint file not found" in e.value and "works without CLIP" in e.value for e in at.error)
