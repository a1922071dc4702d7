"""AppTest run of the Overview's train/test leakage panel: pairs listed, either side removed as a decision."""

import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from streamlit.testing.v1 import AppTest

from pruning_core.audit.review import DecisionStore
from pruning_core.data.datasets import load_dataset
from review_fixtures import make_scored_dataset
from ui import leakage_panel, state

REPO = Path(__file__).resolve().parent.parent


def test_leakage_panel_lists_copies_and_removes_either_side(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNESCOPE_CACHE", str(tmp_path / "cache"))
    dataset, manifest, table = make_scored_dataset(tmp_path / "data", n=30)
    test_dir = tmp_path / "test"
    for i in range(2):  # exact copies of two training images
        (test_dir / "cat").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(dataset.root / f"images/img_{i:03d}.png", test_dir / "cat" / f"copy{i}.png")
    rng = np.random.default_rng(1)
    for i in range(3):  # distinct images
        grid = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        Image.fromarray(grid).resize((32, 32), Image.BICUBIC).save(test_dir / "cat" / f"own{i}.png")
    at = AppTest.from_file(str(REPO / "pages" / "overview.py"), default_timeout=60)
    at.session_state[state.DATASET] = state.DatasetSource("manifest", str(manifest))
    at.session_state[state.TABLE] = table
    at.run()
    assert not at.exception
    at.text_input(key=leakage_panel.TEST_PATH).set_value(str(test_dir)).run()
    next(b for b in at.button if b.key == "leakage_find").click().run()
    assert not at.exception
    text = " ".join(m.value for m in at.markdown)
    assert "train `images/img_000.png`" in text and "test `cat/copy0.png`" in text and "own" not in text
    assert any("2 of 5 test images (raw count)" in c.value for c in at.caption)
    next(b for b in at.button if b.key == "leak_train_0").click().run()
    store = DecisionStore()
    assert store.removed_paths(dataset.fingerprint) == ["images/img_000.png"]
    test = load_dataset(test_dir)
    next(b for b in at.button if b.key == "leak_test_1").click().run()
    assert store.removed_paths(test.fingerprint) == ["cat/copy1.png"]
    assert next(b for b in at.button if b.key == "leak_train_0").disabled
