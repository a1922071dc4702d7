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
