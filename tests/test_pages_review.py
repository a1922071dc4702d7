"""AppTest runs of the Review, Explore, Prune and Export pages on a small scored dataset (no model)."""

from pathlib import Path

import numpy as np

import pytest
from streamlit.testing.v1 import AppTest

from pruning_core.audit.review import DecisionStore
from pruning_core.scoring.score_info import ScoreInfo
from pruning_core.scoring.score_table import ScoreTable
from review_fixtures import make_scored_dataset
from ui import state

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def scored(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNESCOPE_CACHE", str(tmp_path / "cache"))  # a fresh reviews.sqlite per test
    return make_scored_dataset(tmp_path / "data")


def page(name: str, scored) -> AppTest:
    dataset, manifest, table = scored
    at = AppTest.from_file(str(REPO / "pages" / f"{name}.py"), default_timeout=60)
    at.session_state[state.DATASET] = state.DatasetSource("manifest", str(manifest))
    at.session_state[state.TABLE] = table
    return at


def position(at: AppTest) -> str:
    return next(c.value for c in at.caption if "in queue" in c.value)


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def test_review_queue_decisions_undo_and_progress(scored):
    dataset, _, table = scored
    at = page("review", scored).run()
    assert not at.exception
    # most suspicious first: test.alignment is "low = suspicious" and decreases with the row
    assert "`fox`" in at.markdown[0].value and "row 35" in position(at)
    at.text_input(key="reviewer_name").set_value("ann").run()
    button(at, "Remove (r)").click().run()
    store = DecisionStore()
    assert store.removed_paths(dataset.fingerprint) == ["images/img_035.png"]
    assert store.history(dataset.fingerprint)["reviewer"].tolist() == ["ann"]
    assert "1 of 36 reviewed" in at.get("progress")[0].proto.text
    assert "row 34" in position(at)  # the next undecided sample

    label_box = next(s for s in at.selectbox if s.key and s.key.startswith("relabel_to_"))
    label_box.set_value("cat").run()
    button(at, "Relabel (l)").click().run()
    assert store.relabels(dataset.fingerprint) == {"images/img_034.png": "cat"}

    button(at, "Undo (u)").click().run()
    assert store.relabels(dataset.fingerprint) == {}
    assert "row 34" in position(at) and "1 of 36 reviewed" in at.get("progress")[0].proto.text

    at.toggle(key="review_undecided").set_value(False).run()  # all samples, with a cursor
    assert not at.exception
    assert any(b.label == "Next ▶" for b in at.button)


def test_review_queue_from_a_tag_and_by_another_detector(scored):
    dataset, _, table = scored
    DecisionStore().tag(dataset.fingerprint, ["images/img_003.png", "images/img_007.png"], "odd ones")
    at = page("review", scored)
    at.session_state["review_source"] = "tag:odd ones"  # what Explore's "Send to review queue" sets
    at.run()
    assert not at.exception
    assert "0 of 2 reviewed" in at.get("progress")[0].proto.text
    at.selectbox(key="review_detector").set_value("test.loss").run()
    assert not at.exception


def test_explore_colours_by_flags_and_scores(scored):
    dataset, _, table = scored
    DecisionStore().decide(dataset.fingerprint, "images/img_001.png", "remove")
    at = page("explore", scored).run()
    assert not at.exception
    colour = at.selectbox(key="explore_colour")
    assert {"label", "review decision", "CLIP disagrees with label", "test.alignment"} <= set(colour.options)
    colour.set_value("review decision").run()
    import base64
    import json

    data = json.loads(at.get("component_instance")[0].proto.json_args)["data"]  # what the map component draws
    assert {t["name"] for t in data["traces"]} == {"undecided", "remove"}
    rows = np.frombuffer(base64.b64decode(data["rows"]), dtype=np.int32)
    removed = rows[np.frombuffer(base64.b64decode(next(t["pos"] for t in data["traces"] if t["name"] == "remove")),
                                 dtype=np.int32)]
    assert removed.tolist() == [1]  # the removed sample's row: what hover and selection report


def test_prune_preview_and_recipe(scored):
    dataset, _, table = scored
    store = DecisionStore()
    store.decide(dataset.fingerprint, "images/img_000.png", "remove")  # the least suspicious sample
    at = page("prune", scored).run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Removed by reviewers"] == "1" and metrics["Kept"] == "29 of 36"
    at.slider(key="prune_fraction").set_value(0.5).run()
    assert {m.label: m.value for m in at.metric}["Kept"] == "18 of 36"
    recipe = at.session_state[state.RECIPE]
    assert recipe.keep == 0.5
    at.slider(key="prune_w_test.loss").set_value(0.0).run()
    assert at.session_state[state.RECIPE].weights == {"test.alignment": 1.0}
    at.radio(key="prune_mode").set_value("count").run()
    at.number_input(key="prune_count").set_value(35).run()  # everything but the reviewer's removal
    assert {m.label: m.value for m in at.metric}["Kept"] == "35 of 36"


def test_export_page_counts_relabels_and_writes_a_folder(scored, tmp_path):
    dataset, _, table = scored
    store = DecisionStore()
    store.decide(dataset.fingerprint, "images/img_000.png", "remove")
    store.decide(dataset.fingerprint, "images/img_001.png", "relabel", new_label="fox", classes=dataset.classes)
    at = page("export", scored).run()
    assert not at.exception
    assert "1 removed by reviewers, 1 relabelled" in at.markdown[0].value
    at.text_input(key="export_dir").set_value(str(tmp_path / "pruned")).run()
    button(at, "Write folder").click().run()
    assert not at.exception and at.success, [e.value for e in at.error]
    files = list((tmp_path / "pruned").rglob("*.png"))
    assert len(files) == 29 and all(f.is_symlink() for f in files)
    assert (tmp_path / "pruned" / "fox" / "img_001.png").exists()  # relabel applied in the layout
    button(at, "Write folder").click().run()
    assert any("not empty" in e.value for e in at.error)


def test_export_uses_the_subset_prune_previewed(scored, monkeypatch):
    """Prune publishes its preview through ``ui.state``; Export reads it instead of selecting again."""
    at = page("prune", scored).run()
    at.slider(key="prune_fraction").set_value(0.5).run()
    assert not at.exception
    import pruning_core.selection

    def no_second_selection(*args, **kwargs):
        raise AssertionError("Export selected again instead of using the Prune preview")

    monkeypatch.setattr(pruning_core.selection, "run_recipe", no_second_selection)
    export = page("export", scored)
    for key, value in at.session_state.items():  # the same browser session moves on to Export
        export.session_state[key] = value
    export.run()
    assert not export.exception, [e.value for e in export.exception]
    assert export.markdown[0].value.startswith("**18** of 36 samples kept by `easiest` at keep=0.5")


def test_an_on_demand_strategy_waits_for_its_button(scored):
    """CPS is registered as not live: Prune offers it, and runs it only when asked."""
    dataset, manifest, table = scored
    rng = np.random.default_rng(0)
    frame = table.frame.assign(**{"clip.label_alignment": rng.random(len(table.frame)),
                                  "clip.diversity": rng.random(len(table.frame))})
    infos = {**table.infos, **{c: ScoreInfo(c, c, "low") for c in ("clip.label_alignment", "clip.diversity")}}
    at = page("prune", (dataset, manifest, ScoreTable(frame, infos))).run()
    at.selectbox(key="prune_strategy").set_value("cps").run()
    assert not at.exception
    assert not at.metric and any("runs on demand" in i.value for i in at.info)
    button(at, "Run CPS selection").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert {m.label: m.value for m in at.metric}["Kept"] == "29 of 36"
    from dataclasses import asdict

    from pruning_core.clip_scores.cps import CPSConfig

    assert at.number_input(key="prune_cps_alpha").value == CPSConfig().alpha  # defaults: the config's
    assert at.session_state[state.RECIPE].cps_params == asdict(CPSConfig())
    at.number_input(key="prune_cps_alpha").set_value(0.0).run()
    assert any("runs on demand" in i.value for i in at.info)  # another recipe: not previewed yet
    button(at, "Run CPS selection").click().run()
    assert at.session_state[state.RECIPE].cps_params == {**asdict(CPSConfig()), "alpha": 0.0}
    at.selectbox(key="prune_strategy").set_value("easiest").run()
    assert at.session_state[state.RECIPE].cps_params is None  # only the strategy that has settings records them


def test_the_reviewer_name_outlives_its_widget():
    """Overview and Explore record tags under the name typed on Review, after its widget is gone."""
    at = AppTest.from_string(
        "import streamlit as st\nfrom ui import review_state as rs\n"
        "if st.session_state.get('show_widget', True):\n    rs.reviewer_input()\n"
        "st.markdown(f'name={rs.reviewer_name()}')\n")
    at.run()
    at.text_input(key="reviewer_name").set_value("ann").run()
    at.session_state["show_widget"] = False  # another page: the widget and its state are gone
    at.run()
    assert not at.exception
    assert at.markdown[0].value == "name=ann"



def _image_captions(at: AppTest) -> list[str]:
    return [img.caption for el in at.get("image") for img in el.proto.imgs]


@pytest.fixture
def clip_space(scored, monkeypatch):
    """Random unit embeddings as the cached CLIP embeddings (distinct distances, unlike an untrained CLIP's)."""
    from pruning_core.scoring import pipeline
    dataset = scored[0]
    rng = np.random.default_rng(3)
    unit = lambda a: (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    emb = pipeline.ClipEmbeddings(image=unit(rng.standard_normal((len(dataset), 16))),
                                  image_ok=np.ones(len(dataset), bool),
                                  class_text=unit(rng.standard_normal((len(dataset.classes), 16))), captions=None,
                                  identity={"model": "fake", "weights": "random"})
    monkeypatch.setattr(pipeline, "clip_embeddings", lambda *a, **k: emb)
    state.store.clear()  # the app's store is a process-wide resource: make it this test's cache
    return emb


def test_similarity_search_from_review_and_its_grid_shows_the_knn_neighbours(scored, clip_space):
    """'Samples like this one' (single view) and 'like one of these' (the grid) show the nearest samples by
    cosine of the cached CLIP embeddings (the k-NN the scores use), with label, distance and decision,
    and a button that reviews exactly them."""
    from pruning_core.scoring.pipeline import ClipConfig
    from pruning_core.audit.similar import nearest_samples
    from ui import review_state as rs
    from ui.similar import NEIGHBOURS

    dataset, _, table = scored
    store = DecisionStore()
    at = page("review", scored)
    at.session_state[state.CLIP] = ClipConfig(model="fake")
    at.run()
    current = int(position(at).split("row ")[1].split(" ")[0])
    at.toggle(key="review_similar_on").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    rows, dist = nearest_samples(clip_space.image, current, NEIGHBOURS)
    assert len(set(np.round(dist, 3))) > NEIGHBOURS // 2  # distances that tell neighbours apart
    shown = _image_captions(at)[1 : 1 + NEIGHBOURS]  # after the sample itself, before the grid
    assert [c.split(" · ")[:4] for c in shown] == [[f"row {r}", Path(table.frame.at[r, "path"]).name,
                                                    table.frame.at[r, "label"], f"distance {d:.3f}"]
                                                   for r, d in zip(rows, dist)]
    assert all(c.endswith("undecided") for c in shown)

    store.decide(dataset.fingerprint, table.frame.at[rows[0], "path"], "remove")  # a neighbour's decision shows
    at.run()
    assert _image_captions(at)[1].endswith("remove")

    like = int(rows[-1])
    at.toggle(key="review_similar_on").set_value(False).run()
    at.selectbox(key="review_grid_like").set_value(like).run()
    assert not at.exception, [e.value for e in at.exception]
    rows, dist = nearest_samples(clip_space.image, like, NEIGHBOURS)
    shown = _image_captions(at)[-NEIGHBOURS:]
    assert [c.split(" · ")[3] for c in shown] == [f"distance {d:.3f}" for d in dist]
    button(at, f"Review these {NEIGHBOURS} with row {like} · {Path(table.frame.at[like, 'path']).name}").click().run()
    name, paths = at.session_state[rs.REVIEW_SET]
    assert paths == tuple(table.frame.loc[[like, *rows], "path"])


def test_similarity_search_uses_the_adapted_space_when_the_scores_did(scored, clip_space):
    """With adapter epochs the k-NN scores run on adapted embeddings; "samples like this one" searches there too."""
    from cache.store import ResultStore
    from pruning_core.scoring.pipeline import ClipConfig, fit_adapter
    from pruning_core.audit.similar import nearest_samples
    from ui.similar import NEIGHBOURS

    dataset, _, table = scored
    config = ClipConfig(model="fake", device="cpu", adapter_epochs=20)
    adapted = fit_adapter(dataset, clip_space, config, ResultStore()).transform_images(clip_space.image)
    at = page("review", scored)
    at.session_state[state.CLIP] = config
    at.run()
    current = int(position(at).split("row ")[1].split(" ")[0])
    expected = [f"distance {d:.3f}" for d in nearest_samples(adapted, current, NEIGHBOURS)[1]]
    assert expected != [f"distance {d:.3f}" for d in nearest_samples(clip_space.image, current, NEIGHBOURS)[1]]
    at.toggle(key="review_similar_on").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    assert [c.split(" · ")[3] for c in _image_captions(at)[1 : 1 + NEIGHBOURS]] == expected


def test_similarity_search_without_the_weights_says_why(scored, tmp_path):
    """Scores in the table but the session's CLIP weights absent here: a caption, not a crashed page."""
    from pruning_core.scoring.pipeline import ClipConfig

    at = page("review", scored)  # the fixture's table has a clip.* column
    at.session_state[state.CLIP] = ClipConfig(pretrained=str(tmp_path / "missing.pt"))
    at.run()
    at.toggle(key="review_similar_on").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("cannot be made here" in c.value for c in at.caption)


def test_explore_selection_gallery_is_most_suspicious_first_by_the_colour_score(scored):
    _, _, table = scored
    at = page("explore", scored)
    at.session_state["explore_map"] = "two scores"
    at.session_state["explore_colour"] = "test.loss"  # high = suspicious
    at.session_state["explore_map_events"] = {"selected": [3, 10, 7, 25, 0]}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    shown = [c for c in _image_captions(at) if "loss" in c]
    losses = table.frame.loc[[3, 10, 7, 25, 0], "test.loss"].sort_values(ascending=False)
    assert [c.split(" · ")[1] for c in shown] == [f"test.\u200bloss {v:.3f}" for v in losses]
    assert any("most suspicious by `test.loss` first" in c.value for c in at.caption)
