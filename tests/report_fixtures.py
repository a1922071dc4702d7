"""A demo-like scored dataset for the report tests: mislabel flags, duplicate groups, image-quality scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cache.store import ResultStore
from pruning_core.image_quality import QualityConfig
from pruning_core.scoring.pipeline import image_quality_score_table
from pruning_core.scoring.score_info import ScoreInfo
from pruning_core.scoring.score_table import DATASET_SETTING, ScoreTable
from review_fixtures import make_scored_dataset


def make_report_table(root: Path, n: int = 60):
    """The Overview test fixture (rows 0, 5, 10, ... CLIP flips, every other one with a low label alignment), two
    near-duplicate groups, one dark image (row 7), and CleanVision's scores of every image."""
    dataset, manifest, table = make_scored_dataset(root / "data", n=n)
    dark = root / "data" / "images" / "img_007.png"
    from PIL import Image

    Image.fromarray((np.asarray(Image.open(dark)) * 0.2).astype(np.uint8)).save(dark)
    from pruning_core.data.datasets import load_dataset

    dataset = load_dataset(manifest)
    row = np.arange(n)
    noise = np.random.default_rng(0).normal(0.0, 0.08, n)
    group = np.full(n, -1)
    group[[0, 3]], group[[1, 4, 8]] = 0, 1
    frame = table.frame.assign(**{
        "clip.zero_shot_margin": np.where(row % 5 == 0, 0.9, 0.0),
        "clip.label_alignment": np.where(row % 10 == 0, -0.1, np.where(row % 5 == 0, 0.25, 0.5)) + noise,
        "clip.duplicate_group": group})
    infos = {**table.infos, "clip.zero_shot_margin": ScoreInfo("clip.zero_shot_margin", "margin", "high"),
             "clip.label_alignment": ScoreInfo("clip.label_alignment", "alignment", "low")}
    settings = {DATASET_SETTING: {"fingerprint": dataset.fingerprint, "name": dataset.name},
                "clip": {"dup_threshold": 0.95, "k": 10}}
    quality = image_quality_score_table(dataset, QualityConfig(), ResultStore(root / "store"))
    return dataset, manifest, ScoreTable(frame, infos, settings=settings).merged(quality)
