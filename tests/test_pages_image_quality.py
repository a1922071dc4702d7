"""AppTest: the Score page adds CleanVision's image.* scores to the session's table, Explore offers them as colours
and the Overview lists a finding per issue type."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

from pruning_core.image_quality import ISSUE_TEXT, column
from test_pages_explore import REPO, explore, score_folder
from ui import state


def test_score_page_adds_image_quality_and_explore_colours_by_it(tmp_path):
    source, config, table = score_folder(tmp_path, seed=2)
    score = AppTest.from_file(str(REPO / "pages" / "score.py"), default_timeout=120)
    score.session_state[state.DATASET], score.session_state[state.CLIP] = source, config
    score.session_state[state.TABLE] = table
    score.run()
    next(b for b in score.button if b.label == "Compute image-quality scores").click().run()
    assert not score.exception
    scored = score.session_state[state.TABLE]
    assert {column(i) for i in ISSUE_TEXT} <= set(scored.infos)
    assert "clip.label_alignment" in scored.frame  # the CLIP family is kept beside the new one
    assert scored.settings["image"]["library"].startswith("cleanvision")

    at = explore(source, config, scored)
    assert not at.exception
    assert column("dark") in at.selectbox(key="explore_colour").options
    at.selectbox(key="explore_colour").select(column("blurry")).run()
    assert not at.exception

    overview = AppTest.from_file(str(REPO / "pages" / "overview.py"), default_timeout=120)
    overview.session_state[state.DATASET], overview.session_state[state.TABLE] = source, scored
    overview.run()
    assert not overview.exception
    assert {"Dark images", "Odd sizes", "Grayscale images"} <= {m.label for m in overview.metric}
    assert any(b.label.startswith("Review ") for b in overview.button)
