"""The offline demo: generated dataset with known problems, and a tiny CLIP that can find them.

The build (dataset + tiny CLIP training) runs once per session through the shared
``demo_assets`` fixture; the quality bar below is what the CLIP-score features rely on.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, ImageFile

from pruning_core.demo import dataset as demo
from pruning_core.runtime.progress import CancelToken, Cancelled
from pruning_core.demo.tiny_clip import (
    TINY_CLIP_CONFIG,
    TINY_CLIP_NAME,
    create_tiny_clip,
    encode_text_truncated,
    preprocess_uint8,
    register_tiny_clip,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tables(demo_assets):
    return pd.read_csv(demo_assets.manifest, keep_default_na=False), pd.read_csv(
        demo_assets.ground_truth, keep_default_na=False
    )


def test_register_is_idempotent_and_tiny():
    import open_clip

    assert register_tiny_clip() == TINY_CLIP_NAME
    assert register_tiny_clip() == TINY_CLIP_NAME
    assert TINY_CLIP_NAME in open_clip.list_models()
    assert open_clip.get_model_config(TINY_CLIP_NAME) == TINY_CLIP_CONFIG
    model = create_tiny_clip(seed=0)
    n_params = sum(p.numel() for p in model.parameters())
    assert 3.0e6 < n_params < 3.8e6


def test_training_preprocessing_and_text_shortcut_match_open_clip():
    """Training's vectorised preprocessing and truncated text encoder equal open_clip's inference path."""
    import open_clip

    register_tiny_clip()
    model, _, val = open_clip.create_model_and_transforms(TINY_CLIP_NAME, pretrained=None)
    model.eval()
    images = demo.render_scenes(demo.sample_scenes(8, np.random.default_rng(3)))
    ours = preprocess_uint8(model, images)
    theirs = torch.stack([val(Image.fromarray(im)) for im in images])
    assert torch.allclose(ours, theirs, atol=1e-5)
    tokens = open_clip.get_tokenizer(TINY_CLIP_NAME)(["a photo of a star.", "a small red star on a plain blue background"])
    with torch.no_grad():
        assert torch.allclose(encode_text_truncated(model, tokens), model.encode_text(tokens), atol=1e-5)


def test_layout_counts_and_columns(demo_assets, tables):
    manifest, truth = tables
    assert demo_assets.clip_model == TINY_CLIP_NAME
    assert demo_assets.clip_checkpoint.is_file()
    assert demo_assets.manifest == demo_assets.root / demo.MANIFEST_NAME
    assert list(manifest.columns) == demo.MANIFEST_COLUMNS
    assert list(truth.columns) == demo.GROUND_TRUTH_COLUMNS
    assert len(manifest) == len(truth) == demo.N_DEMO_IMAGES
    assert (manifest.path == truth.path).all() and manifest.path.is_unique
    assert manifest.path.str.match(r"^images/img_\d{5}\.(png|jpg)$").all()
    assert all((demo_assets.root / p).is_file() for p in manifest.path)
    assert set(manifest.label) <= set(demo.CLASSES) and set(manifest.true_label) == set(demo.CLASSES)


def test_ground_truth_is_consistent(demo_assets, tables):
    manifest, truth = tables
    noisy = truth.label_noisy.astype(bool)
    assert (noisy == (manifest.label != manifest.true_label)).all()
    assert noisy.mean() == pytest.approx(demo.LABEL_NOISE_RATE, abs=0.01)
    assert (manifest.true_label == truth.true_label).all()
    mism = truth.caption_mismatched.astype(bool)
    assert (mism == ~manifest.caption_ok.astype(bool)).all()
    assert mism.mean() == pytest.approx(demo.CAPTION_MISMATCH_RATE, abs=0.01)
    # A mismatched caption names another class; a good one names the true class.
    names = manifest.apply(lambda r: f" {r.true_label} " in f" {r.caption} ", axis=1)
    assert names[~mism].all() and not names[mism].any()

    corrupted = truth.corrupted.astype(bool)
    assert corrupted.sum() == 5
    assert not (corrupted & (noisy | mism)).any()
    old = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # PIL's default; another module may have flipped it
    try:
        for p in truth.path[corrupted]:
            with pytest.raises(Exception):
                with Image.open(demo_assets.root / p) as im:
                    im.convert("RGB")
        modes = set()
        for p in truth.path[~corrupted]:
            with Image.open(demo_assets.root / p) as im:
                assert im.size == (32, 32)
                im.convert("RGB")
                modes.add(im.mode)
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = old
    assert {"RGB", "L", "P"} <= modes

    dups = truth[truth.duplicate_of != ""]
    assert len(dups) == demo.N_DUPLICATES
    assert set(dups.duplicate_of) <= set(truth.path) and not set(dups.duplicate_of) & set(dups.path)
    originals = truth.set_index("path").loc[dups.duplicate_of]
    assert (originals.true_label.to_numpy() == dups.true_label.to_numpy()).all()
    for p, q in zip(dups.path, dups.duplicate_of):
        a = np.asarray(Image.open(demo_assets.root / p).convert("RGB"), np.int16)
        b = np.asarray(Image.open(demo_assets.root / q).convert("RGB"), np.int16)
        assert np.abs(a - b).mean() < 12  # exact, or a light perturbation / JPEG re-encode


def test_clean_test_set(demo_assets, tables):
    """The held-out set: balanced, correctly labelled, readable, its own images, paths relative to ``root``."""
    from pruning_core.data.datasets import load_dataset

    manifest, _ = tables
    test = pd.read_csv(demo_assets.test_manifest, keep_default_na=False)
    assert demo_assets.test_manifest == demo_assets.root / demo.TEST_MANIFEST_NAME
    assert list(test.columns) == demo.TEST_MANIFEST_COLUMNS
    assert (test.label.value_counts() == demo.N_TEST_PER_CLASS).all() and set(test.label) == set(demo.CLASSES)
    assert test.path.str.match(r"^test/img_\d{5}\.png$").all() and test.path.is_unique
    assert (test.apply(lambda r: f" {r.label} " in f" {r.caption} ", axis=1)).all()
    for p in test.path:
        with Image.open(demo_assets.root / p) as im:
            assert im.mode == "RGB" and im.size == (32, 32)
    dataset = load_dataset(demo_assets.test_manifest)
    assert len(dataset) == len(test) and sorted(dataset.classes) == sorted(demo.CLASSES)


def test_dataset_generation_is_deterministic(demo_assets, tmp_path, tables):
    manifest, truth = tables
    again, truth2 = demo.write_demo_dataset(tmp_path / "again", seed=demo.DEMO_SEED)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "again" / demo.MANIFEST_NAME, keep_default_na=False), manifest)
    for p in manifest.path.sample(50, random_state=0):
        assert (tmp_path / "again" / p).read_bytes() == (demo_assets.root / p).read_bytes()
    other, _ = demo.write_demo_dataset(tmp_path / "other", seed=demo.DEMO_SEED + 1, n_images=200)
    assert not other.caption.equals(manifest.caption.iloc[:200].reset_index(drop=True))


def test_second_call_reuses(demo_assets):
    before = demo_assets.clip_checkpoint.stat().st_mtime_ns
    t0 = time.perf_counter()
    again = demo.ensure_demo(demo_assets.root.parent)
    assert time.perf_counter() - t0 < 2.0
    assert again == demo_assets
    assert demo_assets.clip_checkpoint.stat().st_mtime_ns == before


def test_cancel_leaves_nothing(tmp_path):
    token = CancelToken()
    seen = []

    def progress(p):
        seen.append(p)
        if p.stage == demo.IMAGES_STAGE and p.done > 0:
            token.cancel()

    with pytest.raises(Cancelled):
        demo.ensure_demo(tmp_path / "demo", progress=progress, cancel=token)
    assert not (tmp_path / "demo").exists()
    assert list(tmp_path.iterdir()) == []
    assert seen and seen[0].stage == demo.IMAGES_STAGE


ADAPTER_EPOCHS = 5
"""The adapter's default length (``ClipAdapter.fit``), what a user gets by asking for adapters."""


@pytest.fixture(scope="module")
def scored(demo_assets, tables):
    """The demo's ``clip.*`` scores through the app's pipeline (``load_clip`` -> open_clip's val transform on
    the files -> prompt ensembles -> ``clip_scores``), in CLIP's own space and after fitting adapters,
    with the ground truth aligned to the dataset's (readable) rows; plus the fitted adapter."""
    import dataclasses

    from cache.store import ResultStore
    from pruning_core.data.datasets import load_dataset
    from pruning_core.scoring.pipeline import ClipConfig, clip_embeddings, clip_score_table, fit_adapter

    manifest, truth = tables
    dataset = load_dataset(demo_assets.manifest)  # drops the 5 corrupted files
    rows = pd.Index(truth.path).get_indexer(dataset.samples.path)
    assert (rows >= 0).all() and len(rows) == len(truth) - truth.corrupted.astype(bool).sum()
    store = ResultStore()
    plain = ClipConfig(model=demo_assets.clip_model, pretrained=str(demo_assets.clip_checkpoint), device="cpu",
                       batch_size=512)
    adapted = dataclasses.replace(plain, adapter_epochs=ADAPTER_EPOCHS)
    frames = {cfg.adapter_epochs: clip_score_table(dataset, cfg, store).frame for cfg in (plain, adapted)}
    adapter = fit_adapter(dataset, clip_embeddings(dataset, adapted, store), adapted, store)
    return frames, truth.iloc[rows].reset_index(drop=True), manifest.iloc[rows].reset_index(drop=True), adapter


def _detection(frame: pd.DataFrame, truth: pd.DataFrame) -> dict[str, float]:
    from pruning_core.scoring.detection import detection_metrics

    return {
        "label": detection_metrics(frame["clip.label_alignment"], truth.label_noisy.astype(bool))["auroc"],
        "caption": detection_metrics(frame["clip.caption_alignment"], truth.caption_mismatched.astype(bool))["auroc"],
    }


def test_tiny_clip_finds_the_injected_problems(scored):
    frames, truth, manifest, _ = scored
    frame = frames[0]
    auroc = _detection(frame, truth)
    zero_shot = (frame["clip.suggested_label"] == manifest.true_label).mean()
    print(f"label-noise AUROC {auroc['label']:.3f}, caption AUROC {auroc['caption']:.3f}, zero-shot acc {zero_shot:.3f}")
    assert auroc["label"] >= 0.9
    assert auroc["caption"] >= 0.9
    assert zero_shot >= 0.7


def test_near_duplicates_at_the_default_threshold(scored):
    """``clip.duplicate_count`` at the default cosine 0.95 groups the injected copies with their originals
    and flags few others (before the tiny CLIP's instance term it flagged ~95% of the demo)."""
    from pruning_core.scoring.detection import detection_metrics

    frames, truth, _, _ = scored
    frame = frames[0]
    copies = truth.duplicate_of != ""
    in_pair = copies | truth.path.isin(truth.duplicate_of[copies])
    group = frame["clip.duplicate_group"].set_axis(truth.path)
    pairs = zip(truth.path[copies], truth.duplicate_of[copies])
    pairs_found = np.mean([group[p] >= 0 and group[p] == group[q] for p, q in pairs])
    count = frame["clip.duplicate_count"]
    m = detection_metrics(count, in_pair, suspicious="high", flagged=(count > 0).to_numpy())
    print(f"duplicates: {m['n_flagged']} flagged, precision {m['precision']:.3f}, recall {m['recall']:.3f}, "
          f"pairs grouped {pairs_found:.3f}")
    assert pairs_found >= 0.9
    assert m["precision"] >= 0.3


RANK_NOISE = 0.0005


def test_adapter_lowers_its_loss_without_hurting_detection(scored):
    """Adapters fitted on the noisy demo must learn (loss goes down) and must not blur the problems away."""
    frames, truth, _, adapter = scored
    assert len(adapter.loss_history_) == ADAPTER_EPOCHS
    assert adapter.loss_history_[-1] < adapter.loss_history_[0]
    before, after = _detection(frames[0], truth), _detection(frames[ADAPTER_EPOCHS], truth)
    print(f"AUROC before/after adapter: labels {before['label']:.4f} -> {after['label']:.4f}, "
          f"captions {before['caption']:.4f} -> {after['caption']:.4f}, loss {adapter.loss_history_}")
    # "Not lower" up to a few swapped pairs: the demo's tiny CLIP differs a little per build (thread
    # count), and with ~120 mismatched captions one AUROC standard error is ~0.002 at 0.999, so
    # RANK_NOISE (a quarter of that) still fails on any real loss.  Measured: 0.9891 -> 0.9900 and
    # 0.9976 -> 0.9977 on one build, 0.9852 -> 0.9864 and 0.99910 -> 0.99907 on another.
    assert after["label"] >= before["label"] - RANK_NOISE
    assert after["caption"] >= before["caption"] - RANK_NOISE


def test_tiny_clip_training_reports_every_batch_with_the_time_left_and_no_random_init_warning(caplog, one_thread):
    """First use trains the demo's CLIP: a bar that moves per batch, one line saying why, no alarming warning."""
    import logging

    from pruning_core.demo.tiny_clip import TRAINING_STAGE, train_tiny_clip

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(40, 32, 32, 3), dtype=np.uint8)
    seen = []
    with caplog.at_level(logging.WARNING):
        train_tiny_clip(images, [f"a photo of shape {i % 4}" for i in range(40)], epochs=2, batch_size=16,
                        progress=seen.append)
    assert [p.done for p in seen] == list(range(5)) and {p.total for p in seen} == {4}  # 2 epochs x 2 batches
    assert {p.stage for p in seen} == {TRAINING_STAGE} and "trains its own tiny one once" in seen[0].message
    assert all("left" in p.message and "epoch" in p.message for p in seen[1:-1])
    assert seen[-1].message.endswith(", done")  # a finished bar says so, not "about 0 s left"
    assert not [r for r in caplog.records if "No pretrained weights" in r.getMessage()]
