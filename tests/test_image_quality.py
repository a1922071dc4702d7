"""CleanVision's image-quality scores: every planted problem flagged by its own issue type, cached, cancellable,
an Overview finding per issue, and the CLI's ``--image-quality``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFilter

from cache.store import ResultStore
from pruning_core.audit.overview import overview
from pruning_core.data.datasets import load_image_folder
from pruning_core.image_quality import ISSUE_TEXT, QualityConfig, column, flagged, quality_scores
from pruning_core.runtime.progress import CancelToken, Cancelled
from pruning_core.scoring.pipeline import image_quality_score_table, image_quality_step
from pruning_core.scoring.score_table import ScoreTable, base_table

PLANTED = {  # file stem -> the issue type that must flag it
    "dark": "dark", "strip": "odd_aspect_ratio", "constant": "low_information", "grey": "grayscale",
    "grey16": "grayscale", "blurred": "blurry",
}
"""``blurred`` has a white 1-pixel frame: CleanVision's own edge statistic keeps PIL's unfiltered border and
calls it sharp; ours leaves the border out (``image_quality.blur_statistics``)."""


def _sharp(rng: np.random.Generator) -> np.ndarray:
    """A busy, mid-bright 32 x 32 image: random 4 x 4 blocks plus pixel noise (sharp edges everywhere)."""
    blocks = rng.integers(40, 216, size=(8, 8, 3)).repeat(4, 0).repeat(4, 1)
    return np.clip(blocks + rng.integers(-30, 30, size=(32, 32, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Path:
    """An image folder of 40 ordinary images and the planted ones (two classes)."""
    root = tmp_path_factory.mktemp("quality")
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir()
        for i in range(20):
            Image.fromarray(_sharp(rng)).save(root / c / f"ok_{i:02d}.png")
    sharp = _sharp(rng)
    Image.fromarray((sharp * 0.15).astype(np.uint8)).save(root / "a" / "dark.png")
    Image.fromarray(_sharp(rng)[:1].repeat(1, 0)[:, :32]).resize((50, 1)).save(root / "b" / "strip.png")
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(root / "b" / "constant.png")
    Image.fromarray(_sharp(rng)[..., 0]).save(root / "b" / "grey.png")  # mode L
    Image.fromarray(_sharp(rng)[..., 0].astype(np.uint16) * 257).save(root / "b" / "grey16.png")  # 16-bit grey
    blurred = np.asarray(Image.fromarray(_sharp(rng)).filter(ImageFilter.GaussianBlur(2))).copy()
    blurred[[0, -1]], blurred[:, [0, -1]] = 255, 255
    Image.fromarray(blurred).save(root / "a" / "blurred.png")
    return root


def _flags(frame: pd.DataFrame, paths: list[str]) -> dict[str, set[str]]:
    """file stem -> the issue types that flag it at the default thresholds."""
    thresholds = QualityConfig().thresholds()
    stems = [Path(p).stem for p in paths]
    out: dict[str, set[str]] = {s: set() for s in stems}
    for issue in ISSUE_TEXT:
        for stem in np.asarray(stems)[flagged(frame, issue, thresholds[issue])]:
            out[stem].add(issue)
    return out


def test_every_planted_image_is_flagged_by_its_own_issue(planted):
    dataset = load_image_folder(planted)
    frame, infos, settings = quality_scores(dataset.abspaths())
    flags = _flags(frame, dataset.samples["path"].tolist())
    for stem, issue in PLANTED.items():
        assert issue in flags[stem], (stem, flags[stem])
    assert "odd_size" in flags["strip"]  # 1 x 50 is also far from the typical 32 x 32
    ordinary = {s: f for s, f in flags.items() if s.startswith("ok_")}
    assert not any(f & {"dark", "light", "low_information", "odd_aspect_ratio", "odd_size", "grayscale", "blurry"}
                   for f in ordinary.values()), ordinary
    assert set(infos) == {column(i) for i in ISSUE_TEXT} and all(i.suspicious == "low" for i in infos.values())
    assert settings["thresholds"] == QualityConfig().thresholds()
    assert settings["library"].startswith("cleanvision ")


def test_flags_are_cleanvisions_own(planted):
    """Our ``score < threshold`` is exactly what CleanVision flags reading the same files itself (the 16-bit grey
    is left out: its own reader keeps mode I;16, which it neither counts as grayscale nor reads as 8-bit), but
    for ``blurry``, which is scored relative to contrast here."""
    from cleanvision import Imagelab

    paths = [p for p in load_image_folder(planted).abspaths() if p.stem != "grey16"]
    frame, _, _ = quality_scores(paths)
    lab = Imagelab(filepaths=[str(p) for p in paths], verbose=False)
    # blurry at CleanVision's own score and threshold (ours is relative to contrast)
    lab.find_issues({**QualityConfig().cleanvision_params(), "blurry": {}}, n_jobs=1, verbose=False)
    thresholds = QualityConfig().thresholds()
    for issue in ISSUE_TEXT:
        ours, theirs = flagged(frame, issue, thresholds[issue]), lab.issues[f"is_{issue}_issue"].to_numpy(dtype=bool)
        if issue == "blurry":
            # ours: the framed blurred image is blurry; CleanVision's absolute edge strength misses it and calls
            # the darkened (sharp, low-contrast) image and the 1 x 50 strip blurry instead
            differ = {p.stem: bool(a) for p, a, b in zip(paths, ours, theirs) if a != b}
            assert differ == {"blurred": True, "dark": False, "strip": False}, differ
        else:
            np.testing.assert_array_equal(ours, theirs, err_msg=issue)


def test_blur_is_judged_relative_to_the_images_contrast():
    """A sharp image is sharp at any contrast; a blurred flat shape of two grey levels is blurry (CleanVision's
    colour term called it sharp); a constant image has nothing to blur (low information is its finding)."""
    from pruning_core.image_quality import blur_statistics, blurry_scores

    rng = np.random.default_rng(1)
    sharp = _sharp(rng).astype(float)
    faint = Image.fromarray((128 + (sharp - 128) * 0.08).astype(np.uint8))  # ~10 grey levels of contrast
    shape = np.full((32, 32, 3), 40, np.uint8)
    shape[8:24, 10:26] = 200
    images = {"sharp": Image.fromarray(sharp.astype(np.uint8)), "faint": faint,
              "blurred": Image.fromarray(sharp.astype(np.uint8)).filter(ImageFilter.GaussianBlur(2)),
              "faint blurred": faint.filter(ImageFilter.GaussianBlur(2)),
              "shape": Image.fromarray(shape), "blurred shape": Image.fromarray(shape).filter(ImageFilter.GaussianBlur(2)),
              "constant": Image.new("RGB", (32, 32), (90, 120, 30))}
    stats = np.array([blur_statistics(im) for im in images.values()])
    blurry = dict(zip(images, blurry_scores(stats[:, 0], stats[:, 1]) < QualityConfig().blurry))
    assert blurry == {"sharp": False, "faint": False, "blurred": True, "faint blurred": True,
                      "shape": False, "blurred shape": True, "constant": False}, blurry


def test_step_is_cached_reports_progress_and_cancels(planted, tmp_path, monkeypatch):
    dataset = load_image_folder(planted)
    store = ResultStore(tmp_path / "store")
    cancel = CancelToken()
    cancel.cancel()
    with pytest.raises(Cancelled):
        image_quality_score_table(dataset, QualityConfig(), store, cancel=cancel)
    assert not image_quality_step(dataset, QualityConfig()).is_cached(store)
    seen = []
    table = image_quality_score_table(dataset, QualityConfig(), store, progress=seen.append)
    assert (seen[0].done, seen[-1].done, seen[-1].total) == (0, len(dataset), len(dataset))
    assert table.settings["image"]["thresholds"] == QualityConfig().thresholds()
    assert list(table.frame.index) == list(dataset.samples.index)

    import pruning_core.image_quality as iq

    monkeypatch.setattr(iq, "quality_scores", lambda *a, **k: pytest.fail("recomputed a cached step"))
    again = image_quality_score_table(dataset, QualityConfig(), store)
    pd.testing.assert_frame_equal(again.frame, table.frame)
    assert not image_quality_step(dataset, QualityConfig(dark=0.5)).is_cached(store)  # the parameters key it


def test_a_file_that_stopped_decoding_is_named(planted, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    good = sorted(planted.glob("a/ok_*.png"))[:3]
    with pytest.raises(ValueError, match="broken.png"):
        quality_scores([*good, bad])


def test_overview_findings_use_the_recorded_thresholds(planted, tmp_path):
    dataset = load_image_folder(planted)
    table = base_table(dataset).merged(image_quality_score_table(dataset, QualityConfig(), ResultStore(tmp_path / "s")))
    frame = table.frame
    decisions = pd.Series("undecided", index=frame.index)
    decisions[frame["path"].str.endswith("dark.png")] = "remove"
    ov = overview(frame, table.infos, decisions=decisions, scoring=table.settings)
    dark = ov.finding("dark images")
    assert (dark.count, dark.open, dark.threshold) == (1, 0, 0.32)
    assert dark.rule.startswith("image.dark < 0.32")
    assert frame.loc[dark.rows, "path"].str.endswith("dark.png").all()
    assert dark.estimate.summary()["estimated"] is None  # a raw count, precision [0, 1] until audited
    settings = {**table.settings, "image": {**table.settings["image"],
                                            "thresholds": {**QualityConfig().thresholds(), "dark": 0.0}}}
    assert overview(frame, table.infos, scoring=settings).finding("dark images").count == 0
    assert ov.finding("odd aspect ratios").count == 1 and ov.finding("grayscale images").count == 2


def test_cli_score_image_quality(planted, tmp_path):
    from pruning_core.cli import main

    out = tmp_path / "scores.parquet"
    assert main(["score", str(planted), "--no-clip", "--image-quality", "--out", str(out)]) == 0
    table = ScoreTable.load(out)
    assert {column(i) for i in ISSUE_TEXT} <= set(table.infos)
    assert table.settings["image"]["thresholds"]["blurry"] == QualityConfig.blurry
    strip = table.frame[table.frame["path"].str.endswith("strip.png")]
    assert float(strip["image.odd_aspect_ratio"].iloc[0]) == pytest.approx(1 / 50)
