"""Exports: kept + removed tables with relabels, path-safe image folders, manifests that replay exactly."""

import io
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pruning_core.cli import main as cli
from pruning_core.export.subset import (
    bundle_zip,
    export_folder,
    folder_layout,
    safe_name,
    selection_table,
    table_bytes,
)
from pruning_core.export.manifest import BUNDLE_SCORES, Manifest, kept_rows, table_sha256
from pruning_core.scoring.score_table import ScoreTable
from pruning_core.audit.review import DecisionStore
from pruning_core.selection import preview_selection
from pruning_core.scoring.score_info import ScoreInfo, sidecar_bytes
from pruning_core.selection import STRATEGIES, SelectionRecipe, run_recipe

CLASSES = ["cat", "dog", "fox"]


def scored(n: int, seed: int = 0) -> ScoreTable:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "path": [f"img/{i:04d}.png" for i in range(n)],
        "label": [CLASSES[i % 3] for i in range(n)],
        "clip.label_alignment": rng.random(n),
        "clip.diversity": rng.random(n),
        "dynamics.dyn_unc": rng.random(n),
        "dynamics.aum": rng.normal(size=n),
        "adapruner.keep_logit": rng.normal(size=n),
        "suggest.label": [CLASSES[i % 2] for i in range(n)],  # what the fix strategy relabels to
        "suggest.confidence": rng.random(n),
    })
    infos = {
        "clip.label_alignment": ScoreInfo("clip.label_alignment", "SAS", "low"),
        "clip.diversity": ScoreInfo("clip.diversity", "SDS", "low"),
        "dynamics.dyn_unc": ScoreInfo("dynamics.dyn_unc", "dyn unc", "high"),
        "dynamics.aum": ScoreInfo("dynamics.aum", "AUM", "low"),
        "adapruner.keep_logit": ScoreInfo("adapruner.keep_logit", "mask logit", "low"),
    }
    return ScoreTable(frame, infos)


def test_selection_table_applies_relabels_and_says_why_each_sample_went():
    table = scored(9)
    mask = np.array([1, 1, 1, 1, 0, 0, 0, 1, 1], dtype=bool)
    out = selection_table(table.frame, mask, removed_paths=["img/0004.png"], relabels={"img/0000.png": "fox"})
    assert list(out.columns[:5]) == ["path", "label", "original_label", "status", "removed_by"]
    assert out.loc[0, "label"] == "fox" and out.loc[0, "original_label"] == "cat"
    assert (out["label"] == out["original_label"]).sum() == 8
    assert out["status"].tolist().count("kept") == 6
    assert out.loc[4, "removed_by"] == "review" and out.loc[5, "removed_by"] == "selection"
    assert "clip.label_alignment" in out  # scores travel with the manifest
    for fmt, read in (("csv", pd.read_csv), ("parquet", pd.read_parquet), ("json", pd.read_json)):
        back = read(io.BytesIO(table_bytes(out, fmt)))
        assert len(back) == 9 and back.loc[0, "label"] == "fox"


@pytest.mark.parametrize("name", ["../../etc", "a/b", "..", ".hidden", "con", "", "naïve café", "x\x00y", "a\\b"])
def test_safe_name_never_escapes_its_folder(name):
    safe = safe_name(name, "label")
    assert safe and "/" not in safe and "\\" not in safe and "\x00" not in safe
    assert not safe.startswith(".") and safe not in (".", "..")


def test_folder_layout_is_unique_even_when_names_collide():
    frame = pd.DataFrame({
        "path": ["a/x.png", "b/x.png", "c/X.png", "d/y.png", "e/z.png"],
        "label": ["cat", "cat", "cat", "a/b", "a_b"],
    })
    dest = folder_layout(frame)
    assert dest.str.lower().is_unique
    assert dest[0].startswith("cat/x-") and dest[1].startswith("cat/x-")
    assert dest[3].split("/")[0] != dest[4].split("/")[0]  # two labels that sanitise alike stay apart
    assert all(".." not in d for d in dest)
    assert folder_layout(frame.iloc[::-1]).sort_index().equals(dest)  # independent of order


@pytest.mark.parametrize("mode", ["symlink", "copy"])
def test_export_folder_writes_the_image_folder_layout(tmp_path, mode):
    root = tmp_path / "data"
    for p in ("a/x.png", "b/x.png", "c/y.png"):
        (root / p).parent.mkdir(parents=True, exist_ok=True)
        (root / p).write_bytes(p.encode())
    frame = pd.DataFrame({"path": ["a/x.png", "b/x.png", "c/y.png"], "label": ["cat", "cat", "../dog"]})
    result = export_folder(frame, root, tmp_path / "out", mode=mode)
    files = sorted(p for p in (tmp_path / "out").rglob("*.png"))
    assert result.written == 3 and len(files) == 3
    assert {f.parent.name for f in files} == {"cat", "_dog"}  # "../dog" cannot climb out
    assert all((tmp_path / "out") in f.parents for f in files)
    assert sorted(f.read_bytes() for f in files) == sorted([b"a/x.png", b"b/x.png", b"c/y.png"])
    assert all(f.is_symlink() == (mode == "symlink") for f in files)
    index = pd.read_csv(tmp_path / "out" / "index.csv")
    assert len(index) == 3 and ("linked" if mode == "symlink" else "copied") in result.message()
    with pytest.raises(FileExistsError, match="not empty"):
        export_folder(frame, root, tmp_path / "out")
    with pytest.raises(ValueError, match="inside the dataset root"):
        export_folder(frame, root, root / "pruned")


def _save_scores(table: ScoreTable, path: Path) -> Path:
    table.save(path)
    return path


def test_cli_select_applies_review_decisions_and_replay_uses_the_snapshot(tmp_path):
    table = scored(60)
    scores = _save_scores(table, tmp_path / "scores.parquet")
    db = tmp_path / "reviews.sqlite"
    store = DecisionStore(db)
    by_alignment = table.frame.sort_values("clip.label_alignment", ascending=False)["path"].tolist()
    best, second = by_alignment[:2]  # the two surely kept by "easiest" on this score alone
    relabelled_from = table.frame.set_index("path").loc[second, "label"]
    new_label = next(c for c in CLASSES if c != relabelled_from)
    store.decide("fp", best, "remove")
    store.decide("fp", second, "relabel", new_label=new_label, classes=CLASSES)
    out = tmp_path / "kept.csv"
    assert cli(["select", str(scores), "--keep", "30", "--weights", "clip.label_alignment=1", "--decisions", str(db),
                "--out", str(out)]) == 0
    kept = pd.read_csv(out)
    assert len(kept) == 30 and best not in set(kept["path"])
    row = kept.set_index("path").loc[second]  # the relabelled sample is kept, with its new label
    assert row["label"] == new_label and row["original_label"] == relabelled_from
    assert (kept["label"] == kept["original_label"]).sum() == 29
    manifest = Manifest.read(out.with_suffix(".manifest.json"))
    assert manifest.removed == [best] and manifest.relabels == {second: new_label}

    store.undo("fp", path=best)  # later decisions must not change a replay
    store.decide("fp", by_alignment[2], "remove")
    again = tmp_path / "again.csv"
    assert cli(["select", "--replay", str(out.with_suffix(".manifest.json")), "--out", str(again)]) == 0
    assert again.read_bytes() == out.read_bytes()


def test_app_bundle_replays_to_the_identical_subset(tmp_path, monkeypatch):
    """What the Export page zips (manifest + scores + sidecar) is enough for `select --replay`."""
    table = scored(80, seed=3)
    recipe = SelectionRecipe(keep=0.5, strategy="ccs", weights={"dynamics.aum": 1.0, "clip.label_alignment": 2.0},
                             balance=True, seed=7)
    removed = list(table.frame["path"][:5])
    mask = run_recipe(table.frame, table.infos, recipe, removed)
    relabelled = table.frame["path"][mask].iloc[0]  # a kept sample: its new label must reach the kept list
    old_label = table.frame.set_index("path").loc[relabelled, "label"]
    new_label = next(c for c in CLASSES if c != old_label)
    manifest = Manifest.build(table, recipe, mask, scores_file=BUNDLE_SCORES,
                              review={"removed": removed, "relabels": {relabelled: new_label}})
    full = manifest.selection_table(table.frame, mask)
    data = bundle_zip({"selection.manifest.json": manifest.to_json().encode(),
                       BUNDLE_SCORES: table_bytes(table.frame, "parquet"),
                       "scores.json": sidecar_bytes(table.infos, table.settings),
                       "kept.csv": table_bytes(kept_rows(full), "csv")})
    zipfile.ZipFile(io.BytesIO(data)).extractall(tmp_path / "bundle")
    loaded = ScoreTable.load(tmp_path / "bundle" / BUNDLE_SCORES)
    assert table_sha256(loaded.frame, loaded.infos) == manifest.scores_sha256
    monkeypatch.chdir(tmp_path)  # the manifest's relative scores path resolves against its own folder
    assert cli(["select", "--replay", str(tmp_path / "bundle" / "selection.manifest.json"),
                "--out", str(tmp_path / "replayed.csv")]) == 0
    assert (tmp_path / "replayed.csv").read_bytes() == (tmp_path / "bundle" / "kept.csv").read_bytes()
    replayed = pd.read_csv(tmp_path / "replayed.csv").set_index("path")
    assert replayed.loc[relabelled, "label"] == new_label and replayed.loc[relabelled, "original_label"] == old_label
    assert not set(replayed.index) & set(removed)


STRATEGY_NAMES = list(STRATEGIES)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(min_value=6, max_value=80),
    strategy=st.sampled_from(STRATEGY_NAMES),
    balance=st.booleans(),
    removed_fraction=st.floats(min_value=0.0, max_value=0.5),
    keep_fraction=st.floats(min_value=0.0, max_value=1.0),
    seed=st.integers(min_value=0, max_value=1000),
)
def test_every_strategy_keeps_exactly_k_and_never_a_reviewer_removal(n, strategy, balance, removed_fraction,
                                                                     keep_fraction, seed):
    """Through the real path: decisions in SQLite -> removed_paths -> run_recipe -> export table."""
    table = scored(n, seed)
    rng = np.random.default_rng(seed)
    n_removed = int(removed_fraction * n)
    to_remove = list(rng.choice(table.frame["path"], size=n_removed, replace=False))
    with tempfile.TemporaryDirectory() as tmp:
        store = DecisionStore(Path(tmp) / "r.sqlite")
        for path in to_remove:
            store.decide("fp", path, "remove")
        others = sorted(set(table.frame["path"]) - set(to_remove))
        store.decide("fp", others[0], "relabel", new_label="fox", classes=CLASSES)
        removed, relabels = store.removed_paths("fp"), store.relabels("fp")
    k = int(keep_fraction * (n - n_removed))
    recipe = SelectionRecipe(keep=k, strategy=strategy, balance=balance, seed=seed,
                             cps_params={"steps": 10} if strategy == "cps" else None)  # exact k at any step count
    mask = run_recipe(table.frame, table.infos, recipe, removed)
    out = selection_table(table.frame, mask, removed_paths=removed, relabels=relabels)
    kept = out[out["status"] == "kept"]
    assert len(kept) == k
    assert not set(kept["path"]) & set(to_remove)
    assert (out.loc[out["path"].isin(to_remove), "removed_by"] == "review").all()
    preview = preview_selection(table.frame, table.infos, recipe, removed)
    assert preview.n_kept == k and preview.per_class["kept"].sum() == k
    assert preview.per_class["removed by review"].sum() == n_removed
    assert preview.hist_kept.sum() == k and preview.hist_removed.sum() == n - k
    assert not (preview.mask[preview.borderline_removed]).any() and preview.mask[preview.borderline_kept].all()


def test_preview_borderline_sits_at_the_cut():
    table = scored(200)
    recipe = SelectionRecipe(keep=100, strategy="easiest", weights={"clip.label_alignment": 1.0})
    p = preview_selection(table.frame, table.infos, recipe)
    kept_scores, removed_scores = p.combined[p.mask], p.combined[~p.mask]
    assert p.combined[p.borderline_kept].max() == kept_scores.max()
    assert p.combined[p.borderline_removed].min() == removed_scores.min()
