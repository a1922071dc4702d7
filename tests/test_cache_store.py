import json
import os

import numpy as np
import pandas as pd
import pytest

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


def test_get_or_compute_computes_once(tmp_path):
    store = ResultStore(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return {"a": np.ones(3)}, {}

    store.get_or_compute("k", compute)
    store.get_or_compute("k", compute)
    assert len(calls) == 1


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
