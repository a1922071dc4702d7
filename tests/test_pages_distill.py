"""AppTest run of the Evaluate page's "prune or distil" section on a finished (tiny) comparison."""

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
    rows = [{"option": o, "size": s, "seed": seed, "i2t@1": v, "i2t@5": v, "t2i@1": v, "t2i@5": v}
            for o, s, v in (("distilled", 6, 0.3), ("random", 6, 0.2), ("cleanest", 6, 0.25), ("all", 32, 0.5))
            for seed in (0, 1)]
    at = AppTest.from_function(section_script, default_timeout=60)
    at.session_state["dataset"] = SimpleNamespace(has_captions=True)
    at.session_state["test"] = SimpleNamespace(has_captions=True)
    at.session_state["distill_result"] = PruneOrDistil(pd.DataFrame(rows), {6: distilled}, inputs)
    at.run()
    assert not at.exception
    assert len(at.get("plotly_chart")) == 1
    shown = at.get("image")
    assert len(shown) == 6
    captions = [img.proto.imgs[0].caption for img in shown]
    assert all(c.startswith("class ") for c in captions)  # each image is labelled with a real caption
    assert set(at.dataframe[0].value["option"]) == {"distilled", "random", "cleanest", "all"}


def test_section_asks_for_captions_first():
    at = AppTest.from_function(section_script, default_timeout=60)
    at.session_state["dataset"] = SimpleNamespace(has_captions=False)
    at.session_state["test"] = None
    at.run()
    assert "no captions" in at.info[0].value
    assert not at.button
