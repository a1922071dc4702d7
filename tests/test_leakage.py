"""Train/test leakage: planted exact and near copies are found, distinct images are not."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pandas as pd
from PIL import Image

from pruning_core.audit.leakage import EXACT, NEAR, LeakageConfig, find_leakage, leakage_pairs
from pruning_core.cli import main
from pruning_core.data.datasets import load_dataset
from tests.synthetic import write_image_folder


def smooth_images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """Photo-like images: random 4 x 4 colour grids enlarged smoothly (pixel noise alone would not survive a crop)."""
    rng = np.random.default_rng(seed)
    grids = rng.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8)
    return np.stack([np.asarray(Image.fromarray(g).resize((size, size), Image.BICUBIC)) for g in grids])


def near_copy(path, out) -> None:
    """Cropped by 2 px per side, resized to 40 px, re-encoded as JPEG at quality 70."""
    image = Image.open(path).convert("RGB")
    w, h = image.size
    buffer = io.BytesIO()
    image.crop((2, 2, w - 2, h - 2)).resize((40, 40), Image.BILINEAR).save(buffer, format="JPEG", quality=70)
    out.write_bytes(buffer.getvalue())


def planted(tmp_path):
    """A train folder of 40 images and a test folder of 30 other images plus 3 exact and 3 near copies."""
    images, labels = smooth_images(70, seed=4), np.arange(70) % 3
    train = write_image_folder(tmp_path / "train", images[:40], labels[:40])
    test = write_image_folder(tmp_path / "test", images[40:], labels[40:], prefix="own")
    sources = sorted(train.glob("*/*.png"))[:6]
    for i, src in enumerate(sources):
        (test / src.parent.name).mkdir(exist_ok=True)
        if i < 3:
            shutil.copyfile(src, test / src.parent.name / f"exact{i}.png")
        else:
            near_copy(src, test / src.parent.name / f"near{i}.jpg")
    return train, test, sources


def test_planted_copies_are_found_and_distinct_images_are_not(tmp_path):
    train_dir, test_dir, sources = planted(tmp_path)
    train, test = load_dataset(train_dir), load_dataset(test_dir)
    pairs = find_leakage(train, test, LeakageConfig())
    found = {row.test_id: (row.train_id, row.kind) for row in pairs.itertuples()}
    for i, src in enumerate(sources):
        test_id = f"{src.parent.name}/{'exact' if i < 3 else 'near'}{i}.{'png' if i < 3 else 'jpg'}"
        assert found[test_id] == (f"{src.parent.name}/{src.name}", EXACT if i < 3 else NEAR)
    assert len(found) == 6  # none of the 30 distinct test images
    assert (pairs.loc[pairs["kind"] == NEAR, "cosine"] >= LeakageConfig.threshold).all()


def test_exact_copies_need_no_embedding():
    pairs = leakage_pairs(["a", "b", "c"], ["x", "y"], np.array(["h1", "h2", "h1"]), np.array(["h9", "h1"]))
    assert sorted(pairs[["train_id", "test_id", "kind"]].itertuples(index=False)) == [("a", "y", EXACT), ("c", "y", EXACT)]


def test_cli_writes_the_pairs(tmp_path, capsys):
    train_dir, test_dir, _ = planted(tmp_path)
    out = tmp_path / "pairs.csv"
    assert main(["leakage", str(train_dir), str(test_dir), "--out", str(out)]) == 0
    pairs = pd.read_csv(out)
    assert list(pairs.columns) == ["train_id", "test_id", "cosine", "kind"]
    assert (pairs["kind"] == EXACT).sum() == 3 and (pairs["kind"] == NEAR).sum() == 3
    assert "6 of 36 test samples leak" in capsys.readouterr().out


def test_a_container_training_set_is_compared_in_place_and_the_pairs_are_cached(tmp_path, monkeypatch):
    # the same 40 training images as parquet rows (bytes read in place, ids "train.parquet#<row>"): the same 6 leaks,
    # then a second search is served by the cache (both fingerprints unchanged) without decoding or comparing
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cache.store import ResultStore
    from pruning_core.audit import leakage

    train_dir, test_dir, sources = planted(tmp_path)
    files = sorted(train_dir.glob("*/*.png"))
    table = pa.table({"image": pa.array([f.read_bytes() for f in files], pa.binary()),
                      "label": [f.parent.name for f in files]})
    pq.write_table(table, tmp_path / "train.parquet")
    train, test = load_dataset(tmp_path / "train.parquet"), load_dataset(test_dir)
    assert train.in_container
    store = ResultStore(tmp_path / "cache")
    pairs = find_leakage(train, test, LeakageConfig(), store=store)
    row_of = {f"{f.parent.name}/{f.name}": i for i, f in enumerate(files)}
    expected = {f"train.parquet#{row_of[f'{s.parent.name}/{s.name}']}" for s in sources}
    assert set(pairs["train_id"]) == expected and len(pairs) == 6
    assert sorted(pairs["kind"]) == [EXACT] * 3 + [NEAR] * 3

    def never(*args, **kwargs):
        raise AssertionError("recomputed instead of read from the cache")

    monkeypatch.setattr(leakage, "nearest_by_pixels", never)
    monkeypatch.setattr(leakage, "content_hashes", never)
    pd.testing.assert_frame_equal(find_leakage(train, test, LeakageConfig(), store=store), pairs)


def test_the_report_lists_the_leakage_of_every_other_split(tmp_path):
    # a split folder (train/ and test/): the report of the train split lists the test split's 6 copies, with both
    # sides' thumbnails, in JSON and in Markdown
    import json

    from pruning_core.scoring.score_table import base_table

    planted(tmp_path / "data")
    train = load_dataset(tmp_path / "data")
    assert train.split == "train" and "test" in train.splits
    scores = tmp_path / "scores.parquet"
    base_table(train).save(scores)
    out = tmp_path / "report.json"
    argv = ["--cache-dir", str(tmp_path / "cache"), "report", str(scores), "--data", str(tmp_path / "data")]
    assert main([*argv, "--out", str(out)]) == 0
    [finding] = json.loads(out.read_text())["pairs"]
    assert finding["title"] == "Train/test leakage: data:test (36 samples) copying data:train" and finding["count"] == 6
    assert all(p["a_thumbnail"].startswith("data:image/") and p["b_thumbnail"].startswith("data:image/")
               for p in finding["pairs"])
    assert main([*argv, "--out", str(tmp_path / "report.md")]) == 0
    assert "6 pairs (raw count)" in (tmp_path / "report.md").read_text()
