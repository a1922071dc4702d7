"""One manifest for the CLI and the Export page: same document, replays through either, refuses other scores."""

import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from pruning_core.cli import main
from pruning_core.export.subset import table_bytes
from pruning_core.export.manifest import BUNDLE_SCORES, MANIFEST_VERSION, Manifest, kept_rows, table_sha256
from pruning_core.scoring.score_table import ScoreTable, base_table
from pruning_core.audit.review import DecisionStore, default_review_path
from pruning_core.scoring.score_info import ScoreInfo, sidecar_bytes
from pruning_core.selection import SelectionRecipe, run_recipe
from review_fixtures import make_scored_dataset
from ui import state

REPO = Path(__file__).resolve().parent.parent
RECIPE = SelectionRecipe(keep=0.5, strategy="easiest", balance=True)
CLI_RECIPE = ["--keep", "0.5", "--strategy", "easiest", "--balance"]


def run(*args) -> int:
    return main([str(a) for a in args])


@pytest.fixture
def session(tmp_path, monkeypatch):
    """A scored dataset as the app holds it (settings of every family), its saved copy, and review decisions.

    One reviewer removal of a sample the recipe would keep, and one relabel of a sample it keeps.
    """
    monkeypatch.setenv("PRUNESCOPE_CACHE", str(tmp_path / "cache"))
    dataset, _, table = make_scored_dataset(tmp_path / "data")
    settings = {**base_table(dataset).settings,
                "clip": {"model": "ViT-B-32", "weights": "tag:laion2b_s34b_b79k", "adapter_epochs": 2, "k": 10},
                "dynamics": {"arch": "resnet9", "seed": 3, "epochs": 4, "plan": {"estimate_s": 12.5}}}
    table = ScoreTable(table.frame, table.infos, settings=settings)
    out = tmp_path / "out"
    out.mkdir()
    table.save(out / "scores.parquet")
    plain = run_recipe(table.frame, table.infos, RECIPE)
    kept_paths = table.frame["path"][plain].tolist()
    store = DecisionStore(default_review_path())
    store.decide(dataset.fingerprint, kept_paths[0], "remove")
    relabelled = kept_paths[1]
    old = table.frame.set_index("path").loc[relabelled, "label"]
    new = next(c for c in dataset.classes if c != old)
    store.decide(dataset.fingerprint, relabelled, "relabel", new_label=new, classes=dataset.classes)
    return {"dataset": dataset, "table": table, "out": out, "store": store, "relabelled": (relabelled, old, new),
            "removed": kept_paths[0]}


def export_page(session, table=None) -> AppTest:
    at = AppTest.from_file(str(REPO / "pages" / "export.py"), default_timeout=60)
    at.session_state[state.DATASET] = state.DatasetSource("manifest", str(session["dataset"].root / "manifest.csv"))
    at.session_state[state.TABLE] = table if table is not None else session["table"]
    at.session_state[state.RECIPE] = RECIPE
    return at.run()


def cli_select(session) -> Path:
    out = session["out"]
    assert run("select", out / "scores.parquet", *CLI_RECIPE, "--decisions", default_review_path(),
               "--out", out / "kept.csv") == 0
    return out / "kept.csv"


def undated(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "created_at"}


def test_cli_and_app_write_one_document_and_each_replays_the_other(session, tmp_path):
    kept_csv = cli_select(session)
    cli_doc = json.loads(kept_csv.with_suffix(".manifest.json").read_text())
    at = export_page(session)
    assert not at.exception, [e.value for e in at.exception]
    app_doc = json.loads(at.json[0].value)
    assert undated(cli_doc) == undated(app_doc)  # the same manifest, apart from when it was written
    assert cli_doc["manifest_version"] == MANIFEST_VERSION and cli_doc["created_at"]
    assert cli_doc["scoring"]["dataset"]["fingerprint"] == session["dataset"].fingerprint
    assert cli_doc["scoring"]["clip"]["weights"] == "tag:laion2b_s34b_b79k"  # from the score table's settings
    assert cli_doc["scoring"]["dynamics"]["plan"] == {"estimate_s": 12.5}
    assert cli_doc["review"]["removed"] == [session["removed"]]
    path, old, new = session["relabelled"]
    kept = kept_csv.read_bytes()
    row = next(line for line in kept.decode().splitlines() if path in line)
    assert f'"{new}","{old}","kept"' in row  # the relabelled sample is kept, with its new label

    # the app's manifest, beside the score table as the bundle holds them, replays through the CLI
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "selection.manifest.json").write_text(at.json[0].value)
    (bundle / BUNDLE_SCORES).write_bytes(table_bytes(session["table"].frame, "parquet"))
    (bundle / "scores.json").write_bytes(sidecar_bytes(session["table"].infos, session["table"].settings))
    assert run("select", "--replay", bundle / "selection.manifest.json", "--out", tmp_path / "from_app.csv") == 0
    assert (tmp_path / "from_app.csv").read_bytes() == kept

    # the CLI's manifest replays through the app: the page accepts it, and its code path gives the same bytes
    manifest_bytes = kept_csv.with_suffix(".manifest.json").read_bytes()
    at.file_uploader(key="replay_manifest").upload("kept.manifest.json", manifest_bytes, "application/json").run()
    assert not at.error, [e.value for e in at.error]
    n_kept = cli_doc["kept"]["count"]
    assert any(f"Replayed kept.manifest.json: the {n_kept} samples it recorded" in s.value for s in at.success)
    replayed = Manifest.from_json(manifest_bytes, "kept.manifest.json")
    mask = replayed.replay(session["table"], "this session's scores", fingerprint=session["dataset"].fingerprint)
    assert table_bytes(kept_rows(replayed.selection_table(session["table"].frame, mask)), "csv") == kept


def test_the_app_refuses_to_replay_a_manifest_of_other_scores(session):
    kept_csv = cli_select(session)
    frame = session["table"].frame.copy()
    frame.loc[3, "test.loss"] += 0.5
    at = export_page(session, ScoreTable(frame, session["table"].infos, settings=session["table"].settings))
    at.file_uploader(key="replay_manifest").upload("kept.manifest.json",
                                                    kept_csv.with_suffix(".manifest.json").read_bytes()).run()
    assert any(e.value.startswith("Not replayed: this session's scores: not the score table this manifest")
               for e in at.error), [e.value for e in at.error]
    assert not at.success


def test_round_trip_is_exact_and_the_json_stable(session):
    table = session["table"]
    mask = run_recipe(table.frame, table.infos, RECIPE)
    manifest = Manifest.build(table, RECIPE, mask, scores_file="scores.parquet",
                              review=session["store"].snapshot(session["dataset"].fingerprint))
    text = manifest.to_json()
    back = Manifest.from_json(text)
    assert back == manifest and back.created_at == manifest.created_at and back.to_json() == text
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True)
    assert manifest.versions["prunescope"] and manifest.versions["numpy"] == np.__version__


def test_the_content_hash_ignores_the_file_but_not_values_or_directions(session):
    table = session["table"]
    loaded = ScoreTable.load(session["out"] / "scores.parquet")
    assert table_sha256(loaded.frame, loaded.infos) == table_sha256(table.frame, table.infos)
    assert table_sha256(table.frame.set_axis(range(100, 100 + len(table.frame))), table.infos) == \
        table_sha256(table.frame, table.infos)  # the row index is not content
    flipped = {**table.infos, "test.loss": ScoreInfo("test.loss", "proxy loss", "low")}
    assert table_sha256(table.frame, flipped) != table_sha256(table.frame, table.infos)


def one_line_error(capsys, *needles: str) -> None:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("prunescope: error: "), err
    for needle in needles:
        assert needle in err, err


@pytest.mark.parametrize("change", ["value", "direction"])
def test_replay_refuses_a_score_table_that_differs(session, capsys, change):
    kept_csv = cli_select(session)
    table = session["table"]
    other = session["out"] / "other.parquet"
    if change == "value":
        frame = table.frame.copy()
        frame.loc[0, "test.alignment"] = 0.0
        ScoreTable(frame, table.infos, settings=table.settings).save(other)
    else:
        ScoreTable(table.frame, {**table.infos, "test.loss": ScoreInfo("test.loss", "proxy loss", "low")},
                   settings=table.settings).save(other)
    capsys.readouterr()
    assert run("select", "--replay", kept_csv.with_suffix(".manifest.json"), other,
               "--out", session["out"] / "again.csv") == 2
    one_line_error(capsys, "other.parquet", "not the score table this manifest was made from")
    assert not (session["out"] / "again.csv").exists()


def test_verify_names_another_dataset_and_replay_a_changed_result(session):
    table = session["table"]
    mask = run_recipe(table.frame, table.infos, RECIPE)
    manifest = Manifest.build(table, RECIPE, mask, scores_file="scores.parquet")
    with pytest.raises(ValueError, match=r"^scores\.parquet: scores of dataset other, the manifest names dataset"):
        manifest.verify(table, "scores.parquet", fingerprint="other")
    doc = json.loads(manifest.to_json())
    doc["kept"]["digest"] = "0" * 64  # as if the selection code had changed since
    with pytest.raises(ValueError, match="the selection code changed since it was written"):
        Manifest.from_json(json.dumps(doc), "m.json").replay(table, "scores.parquet")
    assert manifest.replay(table, "scores.parquet").tolist() == mask.tolist()
