"""DecisionStore: durable, undoable reviewer decisions shared by processes (SQLite WAL)."""

import subprocess
import sys
from pathlib import Path

import pytest

from pruning_core.audit.review import DecisionStore, ReviewError, decision_column, resolve_fingerprint

FP = "fp-1"
CLASSES = ["cat", "dog", "fox"]
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def store(tmp_path):
    return DecisionStore(tmp_path / "reviews.sqlite")


def test_wal_mode_and_default_location(tmp_path, monkeypatch, store):
    assert store.journal_mode.lower() == "wal"
    monkeypatch.setenv("PRUNESCOPE_CACHE", str(tmp_path / "cache"))
    assert DecisionStore().path == tmp_path / "cache" / "reviews.sqlite"


def test_latest_is_one_row_per_sample_and_undo_restores_the_previous_decision(store):
    store.decide(FP, "a.png", "keep", reviewer="ann")
    store.decide(FP, "b.png", "remove", reviewer="ann")
    store.decide(FP, "a.png", "relabel", new_label="dog", reviewer="ann", classes=CLASSES)
    latest = store.latest(FP).set_index("path")
    assert list(latest.index) == ["b.png", "a.png"]
    assert latest.loc["a.png", "action"] == "relabel" and latest.loc["a.png", "new_label"] == "dog"
    assert store.relabels(FP) == {"a.png": "dog"} and store.removed_paths(FP) == ["b.png"]

    undone = store.undo(FP, reviewer="ann")
    assert (undone.path, undone.action) == ("a.png", "relabel")
    assert store.latest(FP).set_index("path").loc["a.png", "action"] == "keep"  # the earlier decision is back
    assert store.relabels(FP) == {}
    store.undo(FP, reviewer="ann")  # b.png's removal
    store.undo(FP, reviewer="ann")  # a.png's keep
    assert store.latest(FP).empty and store.undo(FP, reviewer="ann") is None
    # append-only: every decision and every undo is still in the history
    assert list(store.history(FP)["action"]) == ["keep", "remove", "relabel", "undo", "undo", "undo"]


def test_undo_is_per_reviewer_and_per_sample(store):
    store.decide(FP, "a.png", "remove", reviewer="ann")
    store.decide(FP, "b.png", "remove", reviewer="bob")
    assert store.undo(FP, reviewer="ann").path == "a.png"
    assert store.removed_paths(FP) == ["b.png"]
    store.decide(FP, "c.png", "keep", reviewer="bob")
    assert store.undo(FP, path="b.png").path == "b.png"
    assert store.latest(FP)["path"].tolist() == ["c.png"]


def test_counts_for_the_progress_counter(store):
    for path, action in [("a", "keep"), ("b", "remove"), ("c", "skip"), ("d", "remove")]:
        store.decide(FP, path, action)
    store.decide("other", "a", "remove")
    assert store.counts(FP) == {"keep": 1, "remove": 2, "relabel": 0, "skip": 1, "decided": 4}
    assert store.counts(FP, paths=["a", "b", "zzz"])["decided"] == 2
    assert store.version(FP) != store.version("other")


def test_relabel_to_an_unknown_class_is_a_clear_error(store):
    with pytest.raises(ReviewError, match="unknown class 'wolf'.*cat, dog, fox"):
        store.decide(FP, "a.png", "relabel", new_label="wolf", classes=CLASSES)
    with pytest.raises(ReviewError, match="needs the new label"):
        store.decide(FP, "a.png", "relabel", classes=CLASSES)
    with pytest.raises(ReviewError, match="unknown action"):
        store.decide(FP, "a.png", "delete")
    assert store.latest(FP).empty


def test_two_stores_on_one_file_see_each_others_writes_and_survive_reopen(tmp_path):
    one, two = DecisionStore(tmp_path / "r.sqlite"), DecisionStore(tmp_path / "r.sqlite")
    one.decide(FP, "a.png", "remove", reviewer="tab1")
    assert two.removed_paths(FP) == ["a.png"]
    two.decide(FP, "b.png", "keep", reviewer="tab2")
    assert one.counts(FP)["decided"] == 2
    del one, two
    again = DecisionStore(tmp_path / "r.sqlite")
    assert set(again.latest(FP)["path"]) == {"a.png", "b.png"}


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    db = tmp_path / "r.sqlite"
    DecisionStore(db)
    script = (
        "import sys; from pruning_core.audit.review import DecisionStore\n"
        "s = DecisionStore(sys.argv[1])\n"
        "for i in range(150): s.decide('fp', f'{sys.argv[2]}-{i}.png', 'remove', reviewer=sys.argv[2])\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(db), name], cwd=REPO) for name in ("p1", "p2")]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    assert DecisionStore(db).counts("fp")["remove"] == 300


def test_tags_are_named_sets(store):
    assert store.tag(FP, ["a", "b"], "cluster 1") == 2
    assert store.tag(FP, ["b", "c"], "cluster 1") == 1  # idempotent per path
    assert store.tags(FP) == {"cluster 1": 3}
    assert store.tagged(FP, "cluster 1") == ["a", "b", "c"]
    assert store.untag(FP, "cluster 1", ["a"]) == 1
    with pytest.raises(ReviewError):
        store.tag(FP, ["a"], "  ")


def test_decision_column_and_fingerprint_resolution(store):
    import pandas as pd

    store.decide(FP, "a", "remove")
    store.decide("fp-2", "zzz", "keep")
    frame = pd.DataFrame({"path": ["a", "b"]})
    assert decision_column(frame, store.latest(FP)).tolist() == ["remove", "undecided"]
    assert resolve_fingerprint(store, frame["path"]) == FP  # fp-2 decided a path this table lacks
    assert resolve_fingerprint(store, ["q"]) is None
    store.decide("fp-3", "b", "keep")
    with pytest.raises(ReviewError, match="several datasets"):
        resolve_fingerprint(store, frame["path"])
    assert resolve_fingerprint(store, frame["path"], "fp-3") == "fp-3"


def test_decide_many(store):
    assert store.decide_many(FP, ["a", "b", "c"], "remove", reviewer="ann") == 3
    assert sorted(store.removed_paths(FP)) == ["a", "b", "c"]
    with pytest.raises(ReviewError):
        store.decide_many(FP, ["a"], "relabel", new_label="wolf", classes=CLASSES)


def test_undo_action_reverts_a_whole_bulk_action_and_nothing_before_it(store):
    store.decide(FP, "a", "keep", reviewer="ann")
    store.decide_many(FP, ["b", "c", "d"], "remove", reviewer="ann", source="map")
    store.decide(FP, "b", "keep", reviewer="ann")  # a later single decision on a sample of the batch
    assert [d.path for d in store.undo_action(FP, reviewer="ann")] == ["b"]  # the single one first
    undone = store.undo_action(FP, reviewer="ann")
    assert sorted(d.path for d in undone) == ["b", "c", "d"]
    assert store.latest(FP)[["path", "action"]].values.tolist() == [["a", "keep"]]
    history = store.history(FP)
    assert set(history.loc[history["action"] == "remove", "source"]) == {"map"}


def test_record_checks_every_item_before_writing(store):
    with pytest.raises(ReviewError, match="wolf"):
        store.record(FP, [("a", "relabel", "cat"), ("b", "relabel", "wolf")], classes=CLASSES)
    assert store.latest(FP).empty
    recorded = store.record(FP, [("a", "relabel", "cat"), ("b", "remove", None)], classes=CLASSES, source="suggestion")
    assert [d.action for d in recorded] == ["relabel", "remove"]
    assert len(store.undo_action(FP)) == 2 and store.latest(FP).empty


def test_a_store_written_before_action_ids_is_migrated(tmp_path):
    import sqlite3
    path = tmp_path / "old.sqlite"
    con = sqlite3.connect(path)
    con.executescript("""CREATE TABLE decisions (id INTEGER PRIMARY KEY AUTOINCREMENT, fingerprint TEXT NOT NULL,
        path TEXT NOT NULL, action TEXT NOT NULL, new_label TEXT, reviewer TEXT NOT NULL DEFAULT '',
        ts REAL NOT NULL, undoes INTEGER);
        INSERT INTO decisions (fingerprint, path, action, reviewer, ts) VALUES ('fp', 'x', 'remove', '', 1.0);
        INSERT INTO decisions (fingerprint, path, action, reviewer, ts) VALUES ('fp', 'y', 'remove', '', 2.0);""")
    con.commit()
    con.close()
    old = DecisionStore(path)
    assert [d.path for d in old.undo_action("fp")] == ["y"]  # no action id: one decision at a time
    assert old.latest("fp")["path"].tolist() == ["x"]


def test_a_full_disk_is_named_and_loses_nothing_already_recorded(tmp_path):
    from contextlib import contextmanager

    class FullDisk(DecisionStore):
        """A store whose file may not grow: SQLite's own SQLITE_FULL, as on a full disk."""

        @contextmanager
        def _connect(self):
            with super()._connect() as con:
                con.execute(f"PRAGMA max_page_count={con.execute('PRAGMA page_count').fetchone()[0]}")
                yield con

    DecisionStore(tmp_path / "r.sqlite").decide("fp", "a.png", "keep")
    store = FullDisk(tmp_path / "r.sqlite")
    items = [(f"{'x' * 200}/{i}.png", "remove", None) for i in range(2000)]
    with pytest.raises(ReviewError, match=r"r\.sqlite: the disk is full; nothing of this action was recorded"):
        store.record("fp", items)
    assert DecisionStore(tmp_path / "r.sqlite").latest("fp")["path"].tolist() == ["a.png"]
