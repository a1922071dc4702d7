"""The view in the URL: a link's dataset and recipe are what the session starts from; a bad recipe is named."""

import json

from streamlit.testing.v1 import AppTest

from pruning_core.selection import SelectionRecipe
from ui import state


def _restore() -> None:
    """What app.py runs first (a script of its own: AppTest runs it in a fresh namespace)."""
    from ui import state

    state.restore_from_url()


def test_a_link_sets_the_dataset_and_recipe_and_a_bad_recipe_is_refused_in_one_line(tmp_path):
    recipe = SelectionRecipe(keep=123, strategy="easiest", weights={"clip.outlier": 2.0}, balance=True)
    at = AppTest.from_function(_restore, default_timeout=60)
    at.query_params.update({"dataset": "manifest", "path": str(tmp_path / "m.csv"),
                            "recipe": json.dumps(recipe.as_dict()), "queue": "tag:odd ones"})
    at.run()
    assert at.session_state[state.DATASET] == state.DatasetSource("manifest", str(tmp_path / "m.csv"))
    assert at.session_state[state.RECIPE] == recipe
    assert at.session_state["_keep_" + state.REVIEW_QUEUE] == "tag:odd ones"

    bad = AppTest.from_function(_restore, default_timeout=60)
    bad.query_params["recipe"] = json.dumps({"keep": "most", "strategy": "easiest"})
    bad.run()
    assert state.RECIPE not in bad.session_state
    assert [w.value for w in bad.warning] == ["The link's recipe was not used: keep 'most' is not a number (a fraction in (0, 1] or a count)"]
