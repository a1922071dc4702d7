"""AppTest run of the Evaluate page's "prune or distil" section on a finished (tiny) comparison."""

import json
from types import SimpleNamespace

import numpy as np
from streamlit.testing.v1 import AppTest

from cache.store import ResultStore
from pruning_core.distill.compare import PruneOrDistil
from pruning_core.distill.job import distill_dataset
from pruning_core.distill.mdw import MDWConfig
from tests.test_distill import TINY, tiny_inputs


def section_script() -> None:
    import streamlit as st

    from ui import distill_panel

    distill_panel.render(st.session_state["dataset"], None, st.session_state["test"])


def test_section_draws_recall_by_size_and_the_distilled_pairs_with_their_nearest_captions(tmp_path, one_thread):
    import pandas as pd

    inputs = tiny_inputs()
    distilled = distill_dataset(inputs, MDWConfig(pairs=6, experts=1, iterations=2, **TINY),
                                ResultStore(tmp_path / "cache"), budget_s=3600)
    # Per seed: distilled beats random by 0.10 and 0.12, ties cleanest (+0.02, -0.02).
    recall = {"distilled": (0.30, 0.34), "random": (0.20, 0.239), "cleanest": (0.28, 0.36), "all": (0.5, 0.5)}
    rows = [{"option": o, "size": 32 if o == "all" else 6, "seed": seed, "i2t@1": v, "i2t@5": v, "t2i@1": v, "t2i@5": v}
            for o, values in recall.items() for seed, v in enumerate(values)]
    at = AppTest.from_function(section_script, default_timeout=60)
    at.session_state["dataset"] = SimpleNamespace(has_captions=True)
    at.session_state["test"] = SimpleNamespace(has_captions=True)
    at.session_state["distill_result"] = PruneOrDistil(pd.DataFrame(rows), {6: distilled}, inputs)
    at.run()
    assert not at.exception
    assert len(at.get("plotly_chart")) == 1
    figure = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert figure["layout"]["xaxis"]["tickvals"] == [6, 32]  # the axis names the sizes trained on
    shown = at.get("image")
    assert len(shown) == 6
    captions = [img.proto.imgs[0].caption for img in shown]
    assert all(c.startswith("class ") for c in captions)  # each image is labelled with a real caption
    assert set(at.dataframe[0].value["option"]) == {"distilled", "random", "cleanest", "all"}
    # Next to the figures: which settings made them (students' training, K, iterations done, budget) ...
    settings = next(c.value for c in at.caption if c.value.startswith("Each point"))
    assert "mean over 2 seeds" in settings and "300 SGD steps" in settings
    assert "K = 6: 2 matching iterations of at most 2 (reached its iteration cap" in settings
    # ... and whether the distilled set beat random / cleanest, with the spread of the paired difference.
    said = [m.value for m in at.markdown]
    assert ("- K = 6, i2t@1: distilled − random = +0.101 ± 0.001 (paired standard error, 2 seeds): the distilled "
            "set beats random (paired t-test, p < 0.05).") in said
    assert ("- K = 6, i2t@1: distilled − cleanest = +0.000 ± 0.020 (paired standard error, 2 seeds): the distilled "
            "set neither beats nor loses to cleanest (paired t-test at 5 %).") in said
    grid = next(c.value for c in at.caption if c.value.startswith("6 of 6 distilled pairs"))
    assert "K = 6: 2 matching iterations" in grid and "--pairs 6 --budget 3600 --out DIR" in grid


def test_section_asks_for_captions_first():
    at = AppTest.from_function(section_script, default_timeout=60)
    at.session_state["dataset"] = SimpleNamespace(has_captions=False)
    at.session_state["test"] = None
    at.run()
    assert "no captions" in at.info[0].value
    assert not at.button
