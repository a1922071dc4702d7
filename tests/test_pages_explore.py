"""AppTest runs of the Explore page: the map drawn from a user's .npy file, and a bad file named in one line."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from pruning_core.scoring.pipeline import ClipConfig
from pruning_core.demo.tiny_clip import TINY_CLIP_NAME
from ui import map_sources, state

REPO = Path(__file__).resolve().parent.parent


def score_folder(root: Path, seed: int, **clip) -> tuple:
    """A 10-image folder under ``root``, its source, the CLIP config and its CLIP score table (computed
    through the Score page)."""
    rng = np.random.default_rng(seed)
    for cls in ("cat", "dog"):
        (root / "imgs" / cls).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / "imgs" / cls / f"{i}.png")
    source = state.DatasetSource("folder", str(root / "imgs"))
    config = ClipConfig(model=TINY_CLIP_NAME, pretrained="none", device="cpu", batch_size=4, **clip)
    score = AppTest.from_file(str(REPO / "pages" / "score.py"), default_timeout=120)
    score.session_state[state.DATASET], score.session_state[state.CLIP] = source, config
    score.run().button[0].click().run()
    return source, config, score.session_state[state.TABLE]


@pytest.fixture
def scored(tmp_path):
    return score_folder(tmp_path, seed=1)


def explore(source, config, table) -> AppTest:
    at = AppTest.from_file(str(REPO / "pages" / "explore.py"), default_timeout=120)
    at.session_state[state.DATASET], at.session_state[state.CLIP], at.session_state[state.TABLE] = source, config, table
    return at.run()


def test_the_map_can_be_drawn_from_a_users_npy_file(scored, tmp_path):
    at = explore(*scored)
    assert not at.exception
    assert map_sources.CLIP in at.selectbox(key="explore_map").options  # CLIP scores exist: CLIP is on offer
    at.selectbox(key="explore_map").select(map_sources.FILE).run()
    assert any("Name a .npy file" in i.value for i in at.info) and not at.error

    bad = tmp_path / "short.npy"
    np.save(bad, np.zeros((3, 4)))
    at.text_input(key="explore_npy").input(str(bad)).run()
    assert [e.value for e in at.error] == [f"embedding file {bad.resolve()}: 3 rows for 10 samples"]

    good = tmp_path / "layout.npy"
    np.save(good, np.arange(20, dtype=np.float32).reshape(10, 2))
    at.text_input(key="explore_npy").input(str(good)).run()
    assert not at.exception and not at.error
    assert any("All 10 points drawn (no thinning)" in c.value for c in at.caption)


def test_the_map_can_be_drawn_from_adapted_clip(tmp_path):
    """With an adapter fitted by the Score page, Explore offers its adapted embeddings and maps them."""
    at = explore(*score_folder(tmp_path, seed=2, adapter_epochs=1))
    at.selectbox(key="explore_map").select(map_sources.ADAPTED).run()
    assert not at.exception and not at.error
    assert any("All 10 points drawn" in c.value for c in at.caption)


def test_the_map_can_be_drawn_from_a_manifest_column_of_vectors(scored, tmp_path):
    _, config, _ = scored
    root = tmp_path / "imgs"
    paths = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    rows = [f'{p},{p.split("/")[0]},"[{i}, {i % 3}, {i * i % 7}]"' for i, p in enumerate(paths)]
    (tmp_path / "m.csv").write_text("path,label,emb\n" + "\n".join(rows) + "\n")
    source = state.DatasetSource("manifest", str(tmp_path / "m.csv"), str(root))
    score = AppTest.from_file(str(REPO / "pages" / "score.py"), default_timeout=120)
    score.session_state[state.DATASET], score.session_state[state.CLIP] = source, config
    score.run().button[0].click().run()
    at = explore(source, config, score.session_state[state.TABLE])
    assert map_sources.COLUMN + "emb" in at.selectbox(key="explore_map").options
    at.selectbox(key="explore_map").select(map_sources.COLUMN + "emb").run()
    assert not at.exception and not at.error
    assert any("All 10 points drawn" in c.value for c in at.caption)


def test_the_background_worker_yields_the_cores_to_the_page():
    """UMAP fits and the numba warm-up run at the lowest priority, their own threads too: a page's probe or training
    on the script thread is scheduled first (the thread policy cannot see threads of its own process)."""
    import os
    import threading

    from ui import background

    def priorities() -> tuple[int, int]:
        child: list[int] = []
        thread = threading.Thread(target=lambda: child.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
        thread.start()
        thread.join()
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id()), child[0]

    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert background.submit("test-priority", priorities).result(timeout=30) == (background.BACKGROUND_NICE,) * 2
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before  # the caller's own is untouched
