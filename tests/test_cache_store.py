import json
import os

import numpy as np
import pandas as pd
import pytest

from cache.steps import CachedStep, Computed
from cache.store import ResultStore, atomic_save_npy, atomic_write_bytes, make_key


def test_key_depends_on_every_input():
    base = make_key("clip-images", "fp1", {"model": "ViT-B-32", "k": 10})
    assert base == make_key("clip-images", "fp1", {"k": 10, "model": "ViT-B-32"})  # order-free
    assert base != make_key("clip-images", "fp2", {"model": "ViT-B-32", "k": 10})
    assert base != make_key("clip-images", "fp1", {"model": "ViT-B-32", "k": 11})
    assert base != make_key("umap", "fp1", {"model": "ViT-B-32", "k": 10})
    assert base.startswith("clip-images-")


def test_save_load_round_trip(tmp_path):
    store = ResultStore(tmp_path)
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    frame = pd.DataFrame({"path": ["a", "b"], "clip.x": [0.1, 0.2]})
    store.save("k1", arrays={"emb": arr}, frames={"scores": frame}, meta={"step": "demo-step"})
    entry = ResultStore(tmp_path).load("k1")  # a new process sees it
    np.testing.assert_array_equal(entry.array("emb"), arr)
    pd.testing.assert_frame_equal(entry.frame("scores"), frame)
    assert entry.meta["step"] == "demo-step" and entry.names() == ["emb", "scores"]


def test_a_cached_step_computes_once_and_records_how_it_was_made(tmp_path):
    store = ResultStore(tmp_path)
    step = CachedStep("demo", "fp", {"k": 3}, dataset="demo set")
    calls = []

    def compute():
        calls.append(1)
        return Computed(arrays={"a": np.ones(3)}, meta={"extra": 7})

    assert not step.is_cached(store)
    first = step.run(store, compute)
    again = CachedStep("demo", "fp", {"k": 3}).run(store, compute)  # the same inputs, built anew
    assert calls == [1] and again.key == first.key == make_key("demo", "fp", {"k": 3})
    assert step.is_cached(store) and not CachedStep("demo", "fp", {"k": 4}).is_cached(store)
    assert {k: again.meta[k] for k in ("step", "dataset", "fingerprint", "params", "extra")} == {
        "step": "demo", "dataset": "demo set", "fingerprint": "fp", "params": {"k": 3}, "extra": 7}
    np.testing.assert_array_equal(again.array("a"), np.ones(3))


def test_a_cached_step_recomputes_a_damaged_entry(tmp_path):
    store = ResultStore(tmp_path)
    step = CachedStep("demo", "fp", {})
    calls = []

    def compute():
        calls.append(1)
        return Computed(arrays={"a": np.arange(1000.0)})

    entry = step.run(store, compute)
    with open(entry.path / "a.npy", "r+b") as fh:  # a disk's damage: the file loses its tail
        fh.truncate(200)
    again = step.run(store, compute)
    assert calls == [1, 1] and len(list(store.quarantine_dir.iterdir())) == 1
    np.testing.assert_array_equal(again.array("a"), np.arange(1000.0))


def test_a_cached_step_reports_its_entry_or_its_chunks_and_drops_the_chunks_when_saved(tmp_path):
    store = ResultStore(tmp_path)
    step = CachedStep("demo", "fp", {}, label="the demo",
                      chunks=lambda folder: f"{len(list(folder.glob('*.npy')))} chunks" if any(folder.iterdir()) else None)
    assert step.kept(store) is None
    np.save(step.partial_dir(store) / "c0.npy", np.ones(2))
    assert step.kept(store) == "1 chunks"
    step.run(store, lambda: Computed(arrays={"a": np.ones(2)}))
    assert step.kept(store) == "the demo" and not (store.partial_root / step.key).exists()


def test_failed_save_leaves_no_entry(tmp_path):
    store = ResultStore(tmp_path)

    class Boom:
        def __array__(self, *args, **kwargs):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        store.save("k", arrays={"good": np.ones(2), "bad": Boom()})
    assert store.load("k") is None
    assert not any(p.name.startswith(".tmp") for p in store.entries_dir.iterdir())


def test_ls_and_clear_by_step(tmp_path):
    store = ResultStore(tmp_path)
    store.save("a", arrays={"x": np.ones(1)}, meta={"step": "umap"})
    store.save("b", arrays={"x": np.ones(1)}, meta={"step": "clip-images"})
    (store.partial_dir("c") / "chunk.npy").write_bytes(b"x")
    assert {e.key for e in store.ls()} == {"a", "b"}
    assert store.clear("umap") == 1
    assert [e.key for e in store.ls()] == ["b"]
    assert store.clear() == 1 and store.ls() == []
    assert not (tmp_path / "partial").exists()


def test_save_clears_partial_chunks(tmp_path):
    store = ResultStore(tmp_path)
    atomic_save_npy(store.partial_dir("k") / "emb-00000.npy", np.ones(3))
    store.save("k", arrays={"x": np.ones(1)})
    assert not (tmp_path / "partial" / "k").exists()


def test_atomic_writes_replace_whole_files(tmp_path):
    target = tmp_path / "sub" / "f.json"
    atomic_write_bytes(target, json.dumps({"v": 1}).encode())
    atomic_write_bytes(target, json.dumps({"v": 2}).encode())
    assert json.loads(target.read_text()) == {"v": 2}
    assert os.listdir(target.parent) == ["f.json"]
