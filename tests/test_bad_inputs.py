"""The bad-input corpus: every malformed input, fault and unsafe request a new user can make, with its exact outcome.

Each case generates its own small input and asserts one of three outcomes: a skip with a recorded
reason, a one-line error naming the file with exit code 2, or a recompute. And that nothing
computed or decided before the fault is lost (score tables, decisions, cache entries stay).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cache.store import CacheEntryDamaged, ResultStore, atomic_save_npy
from pruning_core.cli import main
from pruning_core.data.datasets import load_dataset
from pruning_core.audit.review import DecisionStore
from pruning_core.runtime.safety import csv_safe
from pruning_core.scoring.score_info import ScoreInfo
from pruning_core.scoring.score_table import ScoreTable

INFOS = {"test.alignment": ScoreInfo("test.alignment", "agreement", "low")}


def run(*args) -> int:
    return main([str(a) for a in args])


def one_line_error(capsys, *needles: str) -> str:
    """The command's stderr is one line, 'prunescope: error: ...', containing every needle."""
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("prunescope: error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def write_scores(path, n: int = 20, *, fingerprint: str | None = "fp-a", labels=None) -> ScoreTable:
    frame = pd.DataFrame({"path": [f"img/{i:03d}.png" for i in range(n)],
                          "label": labels if labels is not None else [("cat", "dog")[i % 2] for i in range(n)],
                          "test.alignment": np.linspace(1.0, 0.0, n)})
    settings = {"dataset": {"fingerprint": fingerprint}} if fingerprint else {}
    table = ScoreTable(frame, INFOS, settings=settings)
    table.save(path)
    return table


@pytest.fixture
def scores(tmp_path):
    path = tmp_path / "scores.parquet"
    write_scores(path)
    return path


# ----------------------------------------------------------------------------- outputs never collide

@pytest.mark.parametrize("out", ["s.json", "s.csv", "s"])
def test_score_out_must_be_parquet_and_nothing_is_written(tmp_path, capsys, out):
    data = tmp_path / "m.csv"
    data.write_text("path,label\na.png,cat\n")
    assert run("score", data, "--out", tmp_path / out, "--no-clip", "--dynamics") == 2
    one_line_error(capsys, out, ".parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.csv"]


def test_select_never_overwrites_its_inputs(scores, tmp_path, capsys):
    before = {p: p.read_bytes() for p in (scores, scores.with_suffix(".json"))}
    assert run("select", scores, "--keep", "0.5", "--out", scores) == 2
    one_line_error(capsys, "scores.parquet", "input")
    assert run("select", scores, "--keep", "0.5", "--out", tmp_path / "k.csv", "--manifest", scores.with_suffix(".json")) == 2
    one_line_error(capsys, "scores.json", "input")
    assert run("select", scores, "--keep", "0.5", "--out", tmp_path / "k.json", "--manifest", tmp_path / "k.json") == 2
    one_line_error(capsys, "same file")
    assert {p: p.read_bytes() for p in before} == before
    assert not (tmp_path / "k.csv").exists() and not (tmp_path / "k.json").exists()


def test_validate_refuses_to_overwrite_the_manifest(tmp_path, capsys):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\na.png,cat\n")
    assert run("validate", manifest, "--out", manifest) == 2
    one_line_error(capsys, "m.csv")
    assert manifest.read_text() == "path,label\na.png,cat\n"


# ----------------------------------------------------------------------------- one-line errors

@pytest.mark.parametrize("sidecar, problem", [
    ("[1, 2]", "not a list"),
    ('{"test.alignment": {"description": "x", "suspicious": "low", "colour": "red"}}', "exactly the keys"),
    ('{"test.alignment": {"description": "x", "suspicious": "sideways"}}', "suspicious"),
    ('{"test.alignment": {"descr', "not valid JSON"),
    ("", "not valid JSON"),
])
def test_select_names_a_malformed_sidecar(scores, tmp_path, capsys, sidecar, problem):
    scores.with_suffix(".json").write_text(sidecar)
    assert run("select", scores, "--keep", "0.5", "--out", tmp_path / "k.csv") == 2
    one_line_error(capsys, "scores.json", problem.replace("not a list", "list"))


@pytest.mark.parametrize("drop", ["selection", "kept", "scores"])
def test_replay_names_a_manifest_missing_keys(scores, tmp_path, capsys, drop):
    assert run("select", scores, "--keep", "0.5", "--out", tmp_path / "k.csv") == 0
    manifest = tmp_path / "k.manifest.json"
    data = json.loads(manifest.read_text())
    del data[drop]
    manifest.write_text(json.dumps(data))
    capsys.readouterr()
    assert run("select", "--replay", manifest, "--out", tmp_path / "again.csv") == 2
    one_line_error(capsys, "k.manifest.json", drop)


def test_replay_names_a_manifest_that_is_not_json_or_has_a_bad_recipe(scores, tmp_path, capsys):
    manifest = tmp_path / "m.json"
    manifest.write_text("{not json")
    assert run("select", "--replay", manifest, "--out", tmp_path / "a.csv") == 2
    one_line_error(capsys, "m.json", "not valid JSON")
    assert run("select", scores, "--keep", "0.5", "--out", tmp_path / "k.csv") == 0
    data = json.loads((tmp_path / "k.manifest.json").read_text())
    data["selection"]["colour"] = 1
    manifest.write_text(json.dumps(data))
    capsys.readouterr()
    assert run("select", "--replay", manifest, "--out", tmp_path / "a.csv") == 2
    one_line_error(capsys, "m.json", "selection")


def test_replay_refuses_a_manifest_of_an_older_version(scores, tmp_path, capsys):
    """Manifests written before the one Manifest type (no manifest_version) are refused in one line."""
    manifest = tmp_path / "old.json"
    manifest.write_text(json.dumps({"selection": {"keep": 0.5, "strategy": "easiest"}, "kept_count": 1,
                                    "kept_digest": "x", "scores": {"path": str(scores), "sha256": "y"}}))
    assert run("select", "--replay", manifest, "--out", tmp_path / "a.csv") == 2
    one_line_error(capsys, "old.json", "manifest version 1 is unsupported")
    assert not (tmp_path / "a.csv").exists()


@pytest.mark.parametrize("columns", [["label", "test.alignment"], ["path", "test.alignment"]])
def test_select_names_a_scores_table_without_path_or_label(tmp_path, capsys, columns):
    path = tmp_path / "t.parquet"
    pd.DataFrame({"path": ["a"], "label": ["x"], "test.alignment": [0.5]})[columns].to_parquet(path)
    path.with_suffix(".json").write_text(json.dumps({"test.alignment": {"description": "d", "suspicious": "low"}}))
    assert run("select", path, "--keep", "1", "--out", tmp_path / "k.csv") == 2
    missing = ({"path", "label"} - set(columns)).pop()
    one_line_error(capsys, "t.parquet", repr(missing))


def test_select_names_a_corrupt_scores_table(scores, tmp_path, capsys):
    scores.write_bytes(scores.read_bytes()[:100])
    assert run("select", scores, "--keep", "0.5", "--out", tmp_path / "k.csv") == 2
    one_line_error(capsys, "scores.parquet", "not a readable score table")


def test_select_names_a_corrupt_decisions_database(scores, tmp_path, capsys):
    db = tmp_path / "reviews.sqlite"
    db.write_bytes(b"SQLite format 3\x00" + os.urandom(2000))
    assert run("select", scores, "--keep", "0.5", "--out", tmp_path / "k.csv", "--decisions", db) == 2
    one_line_error(capsys, "reviews.sqlite", "not a readable review decisions database")
    db.write_text("hello, not a database at all " * 100)
    assert run("select", scores, "--keep", "0.5", "--out", tmp_path / "k.csv", "--decisions", db) == 2
    one_line_error(capsys, "reviews.sqlite")


@pytest.mark.parametrize("flag, value, needle", [
    ("--weights", "test.alignment=nan", "not a finite number"),
    ("--weights", "test.alignment=inf", "not a finite number"),
    ("--weights", "test.alignment", "expected column=weight"),
    ("--keep", "0.0000001", "rounds to 0 samples"),
])
def test_bad_recipe_values_are_refused_before_anything_is_written(scores, tmp_path, capsys, flag, value, needle):
    args = {"--keep": "0.5", flag: value}
    assert run("select", scores, *[a for kv in args.items() for a in kv], "--out", tmp_path / "k.csv") == 2
    one_line_error(capsys, needle)
    assert not (tmp_path / "k.csv").exists() and not (tmp_path / "k.manifest.json").exists()


def test_nan_weights_are_refused_even_where_the_strategy_ignores_them(scores, tmp_path, capsys):
    assert run("select", scores, "--keep", "0.5", "--strategy", "random", "--weights", "test.alignment=nan",
               "--out", tmp_path / "k.csv") == 2
    one_line_error(capsys, "test.alignment", "not a finite number")
    assert not (tmp_path / "k.manifest.json").exists()


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(scores, tmp_path, capsys, monkeypatch):
    import pruning_core.selection as selection

    with pytest.raises(ValueError, match="rounds to 0"):  # with --debug a user error shows its traceback too
        run("--debug", "select", scores, "--keep", "0.0000001", "--out", tmp_path / "k.csv")

    def broken(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(selection, "run_recipe", broken)
    assert run("select", scores, "--keep", "0.5", "--out", tmp_path / "k.csv") == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "internal error: KeyError" in err and "--debug" in err
    with pytest.raises(KeyError):
        run("--debug", "select", scores, "--keep", "0.5", "--out", tmp_path / "k.csv")


# ----------------------------------------------------------------------------- decisions bound to their dataset

def _decide(db, fingerprint, *decisions):
    store = DecisionStore(db)
    for path, action, label in decisions:
        store.decide(fingerprint, path, action, new_label=label, classes=["cat", "dog", "fox"])
    return store


def test_decisions_of_another_dataset_are_refused_unless_asked(scores, tmp_path, capsys):
    db = tmp_path / "reviews.sqlite"
    store = _decide(db, "fp-OTHER", ("img/000.png", "remove", None), ("img/001.png", "remove", None),
                    ("elsewhere.png", "remove", None))
    history = store.history("fp-OTHER")
    out = tmp_path / "k.csv"
    assert run("select", scores, "--keep", "10", "--out", out, "--decisions", db) == 2
    one_line_error(capsys, "reviews.sqlite", "fp-OTHER", "fp-a", "2 of 3 decided paths match",
                   "--decisions-from-other-dataset")
    assert not out.exists()
    assert run("select", scores, "--keep", "10", "--out", out, "--decisions", db, "--decisions-from-other-dataset") == 0
    assert "2 of 3 decided paths match" in capsys.readouterr().err
    kept = pd.read_csv(out)
    assert len(kept) == 10 and not kept["path"].isin(["img/000.png", "img/001.png"]).any()
    pd.testing.assert_frame_equal(DecisionStore(db).history("fp-OTHER"), history)  # nothing decided is lost


def test_decisions_of_this_dataset_apply_without_a_flag(scores, tmp_path, capsys):
    db = tmp_path / "reviews.sqlite"
    _decide(db, "fp-OTHER", ("img/002.png", "remove", None))  # another dataset's, ignored
    _decide(db, "fp-a", ("img/000.png", "remove", None), ("img/001.png", "relabel", "cat"))
    out = tmp_path / "k.csv"
    assert run("select", scores, "--keep", "19", "--out", out, "--decisions", db) == 0
    kept = pd.read_csv(out).set_index("path")
    assert "img/000.png" not in kept.index and "img/002.png" in kept.index
    assert kept.at["img/001.png", "label"] == "cat" and kept.at["img/001.png", "original_label"] == "dog"


def test_relabel_to_a_class_the_dataset_does_not_have_is_refused(scores, tmp_path, capsys):
    db = tmp_path / "reviews.sqlite"
    _decide(db, "fp-a", ("img/003.png", "relabel", "fox"))  # fox is a class of the review, not of these scores
    assert run("select", scores, "--keep", "10", "--out", tmp_path / "k.csv", "--decisions", db) == 2
    one_line_error(capsys, "reviews.sqlite", "'fox'")
    assert not (tmp_path / "k.csv").exists()


# ----------------------------------------------------------------------------- CSV safety

FORMULAS = ['=HYPERLINK("http://evil.example","x")', "+1+1", "-2+3", "@SUM(A1)", "\tcat", "\rdog"]


def test_csv_exports_neutralise_formulas_and_parquet_json_keep_them(tmp_path):
    labels = FORMULAS + ["cat", "dog", "fox", "plain"]
    scores = tmp_path / "scores.parquet"
    write_scores(scores, n=len(labels), labels=labels)
    for suffix in ("csv", "parquet", "json"):
        assert run("select", scores, "--keep", "1.0", "--out", tmp_path / f"k.{suffix}") == 0
    as_csv = pd.read_csv(tmp_path / "k.csv", keep_default_na=False)  # a quoted CR stays inside its cell
    assert as_csv["label"].tolist() == ["'" + v for v in FORMULAS] + ["cat", "dog", "fox", "plain"]
    assert pd.read_parquet(tmp_path / "k.parquet")["label"].tolist() == labels
    assert pd.read_json(tmp_path / "k.json")["label"].tolist() == labels
    assert as_csv["test.alignment"].dtype == float  # numbers (negative ones too) stay numbers


def test_csv_safe_only_touches_text_cells_that_start_a_formula():
    frame = pd.DataFrame({"t": ["=1", "a=1", None, "-x", "ok"], "n": [-1.0, 2.0, 3.0, -4.0, 5.0],
                          "s": pd.Series(["@x", "y", "+z", "w", "v"], dtype="string")})
    safe = csv_safe(frame)
    assert safe["t"].tolist()[:2] + safe["t"].tolist()[3:] == ["'=1", "a=1", "'-x", "ok"] and pd.isna(safe["t"][2])
    assert safe["n"].tolist() == frame["n"].tolist()
    assert safe["s"].tolist() == ["'@x", "y", "'+z", "w", "v"]
    assert frame["t"].tolist()[0] == "=1"  # a copy: the caller's frame keeps its raw values


# ----------------------------------------------------------------------------- dataset inputs (skip with reason)

def _png(path, size=(8, 8), value=120):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), value, np.uint8)).save(path)


def test_validate_writes_the_issues_table_without_scoring(tmp_path, capsys):
    """The inputs that were always handled well stay so: each is one skip with its kind, nothing is computed."""
    root = tmp_path / "data"
    for i in range(3):
        _png(root / "ok" / f"{i}.png")
    (root / "ok" / "empty.png").write_bytes(b"")
    (root / "ok" / "fake.png").write_bytes(b"this is text")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(root / "ok" / "big.png")
    good = (root / "ok" / "big.png").read_bytes()
    (root / "ok" / "cut.png").write_bytes(good[: len(good) // 2])
    outside = tmp_path / "secret.png"
    _png(outside)
    (root / "ok" / "link.png").symlink_to(outside)
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"path": ["ok/0.png", "ok/1.png", "ok/2.png", "ok/empty.png", "ok/fake.png", "ok/cut.png",
                           "ok/missing.png", "ok/0.png", "ok/1.png", "../secret.png", str(outside), "ok/link.png",
                           "ok/2.png"],
                  "label": ["a", "b", "a", "a", "a", "a", "a", "a", "", "a", "a", "a", "a"]}).to_csv(manifest, index=False)
    cache = tmp_path / "cache"
    out = tmp_path / "issues.csv"
    assert run("--cache-dir", cache, "validate", manifest, "--root", root, "--out", out) == 0
    issues = pd.read_csv(out)
    kinds = dict(zip(issues["path"], issues["kind"]))
    assert kinds["ok/empty.png"] == "empty file" and kinds["ok/fake.png"] == "not an image"
    assert kinds["ok/cut.png"] == "corrupt image" and kinds["ok/missing.png"] == "missing file"
    assert kinds["../secret.png"] == "outside root" and kinds[str(outside)] == "outside root"
    assert kinds["ok/link.png"] == "outside root"
    assert set(issues["kind"]) >= {"duplicate path", "empty label"}
    assert "issues listed in" in capsys.readouterr().out
    assert not any((cache / "entries").glob("*")) if (cache / "entries").exists() else True  # nothing scored


def test_a_single_sample_class_is_named_before_scoring(tmp_path):
    for i in range(3):
        _png(tmp_path / "d" / "cat" / f"{i}.png")
    _png(tmp_path / "d" / "dog" / "only.png")
    issues = load_dataset(tmp_path / "d").report.as_frame()
    single = issues[issues["kind"] == "single-sample class"]
    assert single["path"].tolist() == ["dog"] and "cross-fitting" in single["reason"].iloc[0]


def test_decompression_bomb_is_its_own_kind(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # a 64 x 64 image is then more than twice the limit
    _png(tmp_path / "d" / "cat" / "bomb.png", size=(64, 64))
    _png(tmp_path / "d" / "cat" / "ok.png", size=(8, 8))
    dataset = load_dataset(tmp_path / "d")
    issues = dataset.report.as_frame()
    assert issues.set_index("path").at["cat/bomb.png", "kind"] == "image too large"
    assert "decompression bomb" in issues.set_index("path").at["cat/bomb.png", "reason"]
    assert dataset.samples["path"].tolist() == ["cat/ok.png"]


def test_folder_symlinks_out_of_the_root_are_one_skip_and_list_nothing_from_outside(tmp_path):
    secret = tmp_path / "private"
    for name in ("passwd", "shadow", "key.png"):
        (secret / "sub").mkdir(parents=True, exist_ok=True)
        (secret / name).write_bytes(b"secret")
    _png(secret / "sub" / "photo.png")
    root = tmp_path / "data"
    _png(root / "cat" / "a.png")
    _png(root / "dog" / "b.png")
    (root / "etcdir").symlink_to(secret, target_is_directory=True)  # a "class" that is really /etc
    (root / "cat" / "more").symlink_to(secret / "sub", target_is_directory=True)
    _png(root / "fox" / "inside" / "c.png")
    (root / "dog" / "alias").symlink_to(root / "fox" / "inside", target_is_directory=True)  # inside: not an error
    dataset = load_dataset(root)
    assert dataset.classes == ["cat", "dog", "fox"]
    assert sorted(dataset.samples["path"]) == ["cat/a.png", "dog/b.png", "fox/inside/c.png"]
    issues = dataset.report.as_frame()
    outside = issues[issues["kind"] == "outside root"]
    assert sorted(outside["path"]) == ["cat/more", "etcdir"]
    text = issues.to_csv()
    assert "passwd" not in text and "shadow" not in text and "photo" not in text and str(secret) not in text


# ----------------------------------------------------------------------------- self-healing cache

def _entry(store: ResultStore, key: str = "k"):
    arrays = {"emb": np.arange(4000, dtype=np.float32).reshape(100, 40)}
    frames = {"scores": pd.DataFrame({"path": [f"p{i}" for i in range(100)], "x.y": np.arange(100.0)})}
    return store.save(key, arrays=arrays, frames=frames, meta={"step": "test"}), arrays, frames


def _truncate(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[:keep] if keep >= 0 else data[:len(data) + keep])


DAMAGE = {
    "npy data truncated": lambda e: _truncate(e / "emb.npy", -10),
    "npy header truncated": lambda e: _truncate(e / "emb.npy", 40),
    "npy 0 bytes": lambda e: _truncate(e / "emb.npy", 0),
    "npy missing": lambda e: (e / "emb.npy").unlink(),
    "parquet truncated": lambda e: _truncate(e / "scores.parquet", -30),
    "meta truncated": lambda e: _truncate(e / "meta.json", 25),
    "meta 0 bytes": lambda e: _truncate(e / "meta.json", 0),
    "meta missing": lambda e: (e / "meta.json").unlink(),
    "meta a list": lambda e: (e / "meta.json").write_text("[]"),
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_a_damaged_entry_is_quarantined_logged_and_recomputed(tmp_path, caplog, damage):
    store = ResultStore(tmp_path)
    entry, arrays, frames = _entry(store)
    _entry(store, "other")  # an intact neighbour must survive
    DAMAGE[damage](entry.path)
    with caplog.at_level(logging.WARNING, logger="prunescope.cache"):
        assert store.load("k") is None
    assert str(entry.path) in caplog.text and "recomputed" in caplog.text
    quarantined = list(store.quarantine_dir.iterdir())
    assert len(quarantined) == 1 and quarantined[0].name.startswith("k-")
    again = store.save("k", arrays=arrays, frames=frames)  # what a step does after load returns None (test_cache_store)
    np.testing.assert_array_equal(again.array("emb"), arrays["emb"])
    pd.testing.assert_frame_equal(again.frame("scores"), frames["scores"])
    assert store.load("other") is not None and store.load("k") is not None


def test_entries_without_recorded_sizes_are_checked_by_their_headers(tmp_path):
    """Entries written before sizes were recorded: a truncated .npy is still caught without reading its data."""
    store = ResultStore(tmp_path)
    entry, _, _ = _entry(store)
    meta = json.loads((entry.path / "meta.json").read_text())
    del meta["files"]
    (entry.path / "meta.json").write_text(json.dumps(meta))
    assert store.load("k") is not None
    _truncate(entry.path / "emb.npy", -4)
    assert store.load("k") is None and len(list(store.quarantine_dir.iterdir())) == 1


def test_verify_finds_same_size_damage_by_checksum(tmp_path, capsys):
    store = ResultStore(tmp_path)
    entry, _, _ = _entry(store)
    _entry(store, "intact")
    chunk_dir = store.partial_dir("job")
    atomic_save_npy(chunk_dir / "emb-00000.npy", np.ones((4, 2), np.float32))
    atomic_save_npy(chunk_dir / "emb-00001.npy", np.ones((4, 2), np.float32))
    _truncate(chunk_dir / "emb-00001.npy", -3)
    data = bytearray((entry.path / "emb.npy").read_bytes())
    data[-1] ^= 0xFF  # one flipped byte: the size is right, the content is not
    (entry.path / "emb.npy").write_bytes(bytes(data))
    assert store.load("k") is not None  # the cheap check on every load cannot see it ...
    assert run("--cache-dir", tmp_path, "cache", "verify") == 3  # a script can tell that damage was found
    out = capsys.readouterr().out
    assert "2 entries and 2 partial chunks checked" in out and "2 damaged" in out  # ... verify does
    assert str(entry.path) in out and "checksum" in out and "emb-00001.npy" in out
    assert store.load("k") is None and store.load("intact") is not None
    assert (chunk_dir / "emb-00000.npy").is_file() and not (chunk_dir / "emb-00001.npy").exists()
    assert run("--cache-dir", tmp_path, "cache", "verify") == 0
    assert "all intact" in capsys.readouterr().out
    assert run("--cache-dir", tmp_path, "cache", "clear") == 0
    assert not store.quarantine_dir.exists()


def test_damage_seen_only_when_reading_moves_the_entry_aside(tmp_path):
    store = ResultStore(tmp_path)
    entry, _, _ = _entry(store)
    data = bytearray((entry.path / "emb.npy").read_bytes())
    data[8:12] = b"\x00\x00XX"  # a broken header of the right size
    (entry.path / "emb.npy").write_bytes(bytes(data))
    loaded = store.load("k")
    with pytest.raises(CacheEntryDamaged, match="rerun to recompute"):
        loaded.array("emb")
    assert store.load("k") is None and len(list(store.quarantine_dir.iterdir())) == 1


def test_a_damaged_crossfit_fold_is_retrained_and_the_others_kept(tmp_path, monkeypatch):
    from pruning_core.dynamics import crossfit as crossfit_mod
    from pruning_core.dynamics.trainer import TrainingRecord

    calls = []

    def fake_train(x_tr, y_tr, *, eval_x, num_classes, **kw):
        calls.append(len(eval_x))
        probs = np.tile(np.linspace(0.1, 0.9, num_classes, dtype=np.float32), (len(eval_x), 1))
        return TrainingRecord(*(np.zeros((1, 0)),) * 5, np.zeros((0, num_classes)), np.zeros(0), np.zeros(0),
                              heldout_probs=probs)

    monkeypatch.setattr(crossfit_mod, "train_and_record", fake_train)
    y = np.arange(60) % 3
    x = np.zeros((60, 2), np.float32)
    cache = tmp_path / "partial" / "oos-key"
    first = crossfit_mod.out_of_sample_probs(x, y, folds=3, arch="mlp", epochs=16, seed=0, fold_cache=cache)
    _truncate(cache / "fold1.npy", -5)
    calls.clear()
    again = crossfit_mod.out_of_sample_probs(x, y, folds=3, arch="mlp", epochs=16, seed=0, fold_cache=cache)
    assert len(calls) == 1  # folds 0 and 2 came from the cache
    np.testing.assert_array_equal(again, first)
    assert [p.name.split("-")[0] for p in (tmp_path / "quarantine").iterdir()] == ["fold1.npy"]


def test_a_damaged_embedding_chunk_is_embedded_again(tmp_path):
    import torch

    from pruning_core.embeddings.encode import embed_images

    class Encoder:  # the interface embed_images uses; the feature is the image's mean colour
        device = torch.device("cpu")
        embed_dim = 3
        source, precision = None, "fp32"  # what a pool worker would load (this test runs locally)

        def preprocess(self, image):
            return torch.as_tensor(np.asarray(image, np.float32).mean(axis=(0, 1)))

        def encode_image_batch(self, images):
            return torch.nn.functional.normalize(images, dim=-1)

    paths = []
    for i in range(10):
        paths.append(tmp_path / "img" / f"{i}.png")
        _png(paths[-1], value=20 * i)
    chunks = tmp_path / "partial" / "clip-images-x"
    first, ok = embed_images(paths, Encoder(), chunk_dir=chunks, chunk_size=4, batch_size=256, num_workers=0)
    _truncate(chunks / "emb-00001.npy", 0)
    again, ok_again = embed_images(paths, Encoder(), chunk_dir=chunks, chunk_size=4, batch_size=256, num_workers=0)
    np.testing.assert_array_equal(again, first)
    np.testing.assert_array_equal(ok_again, ok)
    assert np.load(chunks / "emb-00001.npy").shape == (4, 3)  # rewritten whole
    assert [p.name.split("-")[0] for p in (tmp_path / "quarantine").iterdir()] == ["emb"]


def test_sqlite_error_types_are_user_errors():
    from pruning_core.cli import USER_ERRORS

    assert issubclass(sqlite3.DatabaseError, USER_ERRORS)


def test_scoring_recomputes_a_damaged_embedding_entry_and_gives_the_same_table(tmp_path, capsys, caplog):
    from pruning_core.demo.tiny_clip import TINY_CLIP_NAME

    for i in range(6):
        _png(tmp_path / "d" / ("cat", "dog")[i % 2] / f"{i}.png", value=30 * i)
    cache = tmp_path / "cache"
    args = ("--cache-dir", cache, "score", tmp_path / "d", "--clip-model", TINY_CLIP_NAME, "--clip-pretrained", "none",
            "--device", "cpu")
    assert run(*args, "--out", tmp_path / "a.parquet") == 0
    (entry,) = (cache / "entries").glob("clip-images-*")
    _truncate(entry / "image.npy", -7)
    with caplog.at_level(logging.WARNING, logger="prunescope.cache"):
        assert run(*args, "--out", tmp_path / "b.parquet") == 0
    assert str(entry) in caplog.text
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "a.parquet"), pd.read_parquet(tmp_path / "b.parquet"))
    assert len(list((cache / "quarantine").iterdir())) == 1 and (entry / "image.npy").is_file()
