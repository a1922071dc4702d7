"""A small scored dataset for the Review / Explore / Prune / Export page tests (no model needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from pruning_core.data.datasets import load_dataset
from pruning_core.scoring.score_info import ScoreInfo
from pruning_core.scoring.score_table import ScoreTable

CLASSES = ("cat", "dog", "fox")


def make_scored_dataset(root: Path, n: int = 36, seed: int = 0):
    """``n`` tiny images in a flat folder, a manifest, and a ScoreTable with two scores of opposite direction."""
    rng = np.random.default_rng(seed)
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        label = CLASSES[i % len(CLASSES)]
        colour = np.array([(200, 40, 40), (40, 200, 40), (40, 40, 200)][i % 3], dtype=np.uint8)
        img = np.clip(colour + rng.integers(-30, 30, (12, 12, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(images / f"img_{i:03d}.png")
        rows.append({"path": f"images/img_{i:03d}.png", "label": label, "caption": f"a {label} number {i}"})
    manifest = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    dataset = load_dataset(manifest)
    frame = dataset.samples.copy()
    alignment = np.linspace(0.9, 0.1, n)  # row 0 least suspicious (low = suspicious)
    frame["test.alignment"] = alignment
    frame["test.loss"] = rng.random(n)
    frame["clip.suggested_label"] = [CLASSES[(i + 1) % 3] if i % 5 == 0 else CLASSES[i % 3] for i in range(n)]
    infos = {
        "test.alignment": ScoreInfo("test.alignment", "how well image and label agree", "low"),
        "test.loss": ScoreInfo("test.loss", "proxy loss", "high"),
    }
    return dataset, manifest, ScoreTable(frame, infos)
