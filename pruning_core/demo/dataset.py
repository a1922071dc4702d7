"""The offline demo: a procedural image dataset with known, injected problems, and a tiny CLIP.

A newcomer without internet should still get a real audit.  :func:`ensure_demo` draws a
few thousand 32×32 shape images (8 visually distinct classes, random colours, sizes,
positions, rotations and background textures), each with a class label and a natural
caption, then injects problems whose truth it records: label noise, mismatched captions,
corrupted files, near/exact duplicates, and a few grey/palette images.  It also trains the
built-in tiny CLIP (:mod:`pruning_core.demo.tiny_clip`) on a *separate*, clean set from the
same generator, playing the part of a CLIP pretrained on "the world" rather than on the
user's noisy data, so the demo's CLIP scores are meaningful.

Everything is generated on first use into the cache (``<cache>/demo/v<DEMO_VERSION>``),
built in a temporary directory and renamed into place; a completion marker written last
tells later calls to reuse it.  Nothing generated is committed.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from pruning_core.runtime.progress import CancelToken, ProgressCallback, check, report

DEMO_VERSION = 3
"""Bumped whenever the generator or the training changes what a build produces."""

DEMO_SEED = 0
IMAGE_SIZE = 32
N_DEMO_IMAGES = 2400
N_TEST_PER_CLASS = 60
N_TRAIN_PAIRS = 8000
TRAIN_EPOCHS = 5
TRAIN_BATCH_SIZE = 64
TRAIN_LR = 2e-3
TRAIN_INSTANCE_WEIGHT = 1.0
"""Weight of the image-vs-noisy-copy term (:func:`pruning_core.demo.tiny_clip.instance_loss`), which keeps
distinct images apart so the demo's near-duplicate score flags its real duplicates."""

LABEL_NOISE_RATE = 0.10
CAPTION_MISMATCH_RATE = 0.05
N_DUPLICATES = 20
N_GREY = 5
N_PALETTE = 5
JPEG_FRACTION = 0.15

IMAGES_STAGE = "demo images"
MANIFEST_NAME = "demo.csv"
TEST_MANIFEST_NAME = "test.csv"
GROUND_TRUTH_NAME = "ground_truth.csv"
CHECKPOINT_NAME = "tiny_clip.safetensors"
MARKER_NAME = "COMPLETE.json"

CLASSES: tuple[str, ...] = ("circle", "ring", "square", "diamond", "triangle", "star", "cross", "crescent")
"""Shapes chosen to stay distinct at 32 px (rotations are limited where a shape would turn into another)."""

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (40, 165, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 215, 40),
    "purple": (135, 55, 185),
    "orange": (245, 135, 25),
    "white": (240, 240, 240),
    "black": (25, 25, 25),
}
BACKGROUNDS: tuple[str, ...] = ("plain", "noisy", "striped", "gradient")
SIZES: dict[str, tuple[float, float]] = {"small": (6.5, 8.0), "medium": (8.5, 10.5), "large": (11.0, 13.0)}

MANIFEST_COLUMNS = ["path", "label", "caption", "true_label", "caption_ok"]
TEST_MANIFEST_COLUMNS = ["path", "label", "caption"]
GROUND_TRUTH_COLUMNS = ["path", "true_label", "label_noisy", "caption_mismatched", "corrupted", "duplicate_of"]


@dataclass(frozen=True)
class DemoAssets:
    """Where a finished demo lives: the dataset (root + manifest), its answers, a clean test set and the tiny CLIP.

    ``test_manifest`` lists held-out images (``path,label,caption``, paths relative to
    ``root`` like ``manifest``'s) with correct labels and no injected problems, so a model
    trained on a pruned subset of the noisy set can be scored on data nobody pruned.
    """

    root: Path
    manifest: Path
    ground_truth: Path
    test_manifest: Path
    clip_model: str
    clip_checkpoint: Path


# ----------------------------------------------------------------------------- drawing

_SS = 4  # supersampling factor for anti-aliased shape edges


def _polygon(n_or_pts, cx, cy, r, angle) -> list[tuple[float, float]]:
    if isinstance(n_or_pts, int):
        a = np.linspace(0, 2 * np.pi, n_or_pts, endpoint=False) - np.pi / 2
        pts = np.stack([np.cos(a), np.sin(a)], axis=1)
    else:
        pts = np.asarray(n_or_pts, dtype=np.float64)
    c, s = np.cos(angle), np.sin(angle)
    rot = pts @ np.array([[c, s], [-s, c]])
    return [(cx + r * x, cy + r * y) for x, y in rot]


def _star_points() -> np.ndarray:
    a = np.linspace(0, 2 * np.pi, 10, endpoint=False) - np.pi / 2
    rad = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
    return np.stack([rad * np.cos(a), rad * np.sin(a)], axis=1)


_STAR = _star_points()
_CROSS = np.array([(-0.3, -1), (0.3, -1), (0.3, -0.3), (1, -0.3), (1, 0.3), (0.3, 0.3), (0.3, 1),
                   (-0.3, 1), (-0.3, 0.3), (-1, 0.3), (-1, -0.3), (-0.3, -0.3)])
_SQUARE = np.array([(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)])
_DIAMOND = np.array([(0, -1.0), (0.55, 0), (0, 1.0), (-0.55, 0)])


def _shape_mask(shape: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of one shape on the 32×32 grid."""
    S = IMAGE_SIZE * _SS
    img = Image.new("L", (S, S), 0)
    d = ImageDraw.Draw(img)
    cx, cy, r = cx * _SS, cy * _SS, r * _SS
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif shape == "ring":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        ri = r * 0.55
        d.ellipse([cx - ri, cy - ri, cx + ri, cy + ri], fill=0)
    elif shape == "crescent":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        ox, oy = 0.5 * r * np.cos(angle), 0.5 * r * np.sin(angle)
        ri = r * 0.85
        d.ellipse([cx + ox - ri, cy + oy - ri, cx + ox + ri, cy + oy + ri], fill=0)
    elif shape == "square":
        d.polygon(_polygon(_SQUARE, cx, cy, r, angle), fill=255)
    elif shape == "diamond":
        d.polygon(_polygon(_DIAMOND, cx, cy, r, angle), fill=255)
    elif shape == "triangle":
        d.polygon(_polygon(3, cx, cy, r, angle), fill=255)
    elif shape == "star":
        d.polygon(_polygon(_STAR, cx, cy, r, angle), fill=255)
    elif shape == "cross":
        d.polygon(_polygon(_CROSS, cx, cy, r, angle), fill=255)
    else:  # pragma: no cover
        raise ValueError(shape)
    small = np.asarray(img, dtype=np.float32).reshape(IMAGE_SIZE, _SS, IMAGE_SIZE, _SS).mean(axis=(1, 3))
    return small / 255.0


_MAX_ROTATION = {"square": 0.3, "diamond": 0.3, "cross": 0.3}  # radians; others rotate freely


def _background(kind: str, colour: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A (32, 32, 3) float background of ``colour`` with the texture ``kind``."""
    base = np.broadcast_to(colour, (IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
    if kind == "plain":
        return base.copy()
    if kind == "noisy":
        return base + rng.normal(0, 16, size=(IMAGE_SIZE, IMAGE_SIZE, 1)).astype(np.float32)
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32)
    theta = rng.uniform(0, np.pi)
    proj = xx * np.cos(theta) + yy * np.sin(theta)
    if kind == "striped":
        period = rng.uniform(5, 8)
        stripe = (np.sin(2 * np.pi * proj / period + rng.uniform(0, 2 * np.pi)) > 0).astype(np.float32)
        return base * (0.8 + 0.2 * stripe[..., None])
    # gradient: from the colour to a darker shade across the image
    t = (proj - proj.min()) / max(1e-6, float(proj.max() - proj.min()))
    return base * (1.0 - 0.45 * t[..., None])


def _colour_distance(a: str, b: str) -> float:
    return float(np.linalg.norm(np.subtract(COLOURS[a], COLOURS[b])))


def sample_scenes(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Draw ``n`` scene descriptions (class, colours, size, texture, geometry), vectorised."""
    names = list(COLOURS)
    shape = rng.integers(len(CLASSES), size=n)
    fg = rng.integers(len(names), size=n)
    bg = rng.integers(len(names), size=n)
    # Re-draw backgrounds too close in colour to the shape, so every shape stays visible.
    for _ in range(20):
        bad = np.array([_colour_distance(names[f], names[b]) < 150 for f, b in zip(fg, bg)])
        if not bad.any():
            break
        bg[bad] = rng.integers(len(names), size=int(bad.sum()))
    size = rng.integers(len(SIZES), size=n)
    lo = np.array([SIZES[s][0] for s in SIZES])[size]
    hi = np.array([SIZES[s][1] for s in SIZES])[size]
    radius = rng.uniform(lo, hi)
    margin = radius + 1.0
    cx = rng.uniform(margin, IMAGE_SIZE - margin)
    cy = rng.uniform(margin, IMAGE_SIZE - margin)
    angle = rng.uniform(-np.pi, np.pi, size=n)
    return pd.DataFrame({
        "shape": np.asarray(CLASSES)[shape],
        "colour": np.asarray(names)[fg],
        "bg_colour": np.asarray(names)[bg],
        "background": np.asarray(BACKGROUNDS)[rng.integers(len(BACKGROUNDS), size=n)],
        "size": np.asarray(list(SIZES))[size],
        "radius": radius, "cx": cx, "cy": cy, "angle": angle,
        "render_seed": rng.integers(0, 2**31 - 1, size=n),
    })


def render_scene(scene) -> np.ndarray:
    """One scene (a row of :func:`sample_scenes`) as a uint8 (32, 32, 3) RGB array."""
    rng = np.random.default_rng(int(scene.render_seed))
    angle = float(scene.angle)
    limit = _MAX_ROTATION.get(scene.shape)
    if limit is not None:
        angle = float(np.clip(angle, -np.pi, np.pi)) / np.pi * limit
    bg = _background(scene.background, np.asarray(COLOURS[scene.bg_colour], np.float32), rng)
    fg = np.asarray(COLOURS[scene.colour], np.float32) + rng.normal(0, 8, size=3).astype(np.float32)
    alpha = _shape_mask(scene.shape, float(scene.cx), float(scene.cy), float(scene.radius), angle)[..., None]
    img = bg * (1 - alpha) + fg * alpha + rng.normal(0, 3, size=(IMAGE_SIZE, IMAGE_SIZE, 3))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def render_scenes(scenes: pd.DataFrame, *, progress: Optional[ProgressCallback] = None,
                  cancel: Optional[CancelToken] = None, stage: str = IMAGES_STAGE,
                  done_offset: int = 0, total: Optional[int] = None) -> np.ndarray:
    """Render many scenes into a uint8 (N, 32, 32, 3) array, reporting progress every 500."""
    out = np.empty((len(scenes), IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    total = len(scenes) if total is None else total
    for i, scene in enumerate(scenes.itertuples(index=False)):
        if i % 500 == 0:
            check(cancel)
            report(progress, stage, done_offset + i, total)
        out[i] = render_scene(scene)
    report(progress, stage, done_offset + len(scenes), total)
    return out


def caption_of(scene, *, with_colour: bool = True) -> str:
    """The natural caption of a scene: "a small red star on a striped green background"."""
    if with_colour:
        return f"a {scene.size} {scene.colour} {scene.shape} on a {scene.background} {scene.bg_colour} background"
    return f"a {scene.size} {scene.shape} on a {scene.background} background"


def training_captions(scene) -> list[str]:
    """Alternative texts for one training image: full captions, class prompts and partial descriptions."""
    from pruning_core.clip_scores.prompts import DEFAULT_TEMPLATES

    s = scene
    return [
        caption_of(s),
        caption_of(s, with_colour=False),
        f"a {s.colour} {s.shape}",
        f"a {s.size} {s.shape}",
        f"a {s.shape} on a {s.background} {s.bg_colour} background",
        # The app's own prompt ensemble, filled with the class: about 60% of the draws are
        # shape-only texts, which pushes the image tower to learn shape and not just colour.
        *(t.format(s.shape) for t in DEFAULT_TEMPLATES),
    ]


def make_training_pairs(n: int = N_TRAIN_PAIRS, seed: int = DEMO_SEED + 1, *,
                        progress: Optional[ProgressCallback] = None,
                        cancel: Optional[CancelToken] = None) -> tuple[np.ndarray, list[list[str]]]:
    """A clean, freshly generated image–caption set for the tiny CLIP (never the demo's own images)."""
    rng = np.random.default_rng([seed, 7919])
    scenes = sample_scenes(n, rng)
    images = render_scenes(scenes, progress=progress, cancel=cancel)
    return images, [training_captions(s) for s in scenes.itertuples(index=False)]


# ----------------------------------------------------------------------------- the noisy demo set

def _encode(img: np.ndarray, fmt: str, mode: str = "RGB") -> bytes:
    pil = Image.fromarray(img, "RGB")
    if mode == "L":
        pil = pil.convert("L")
    elif mode == "P":
        pil = pil.convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
    buf = io.BytesIO()
    if fmt == "jpg":
        pil.save(buf, format="JPEG", quality=95, subsampling=0)
    else:
        pil.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def write_demo_dataset(root: Path, *, n_images: int = N_DEMO_IMAGES, seed: int = DEMO_SEED,
                       progress: Optional[ProgressCallback] = None,
                       cancel: Optional[CancelToken] = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write ``root/images/*``, ``root/demo.csv``; return (manifest, ground truth) frames.

    Deterministic in ``seed``: the same seed gives byte-identical files and tables.
    Injected problems: ~10% label noise (another class), ~5% captions of a different-class
    image, 5 corrupted files (truncated JPEG header, truncated JPEG data, random bytes,
    empty file, truncated PNG), 20 exact or near duplicates, a few grey and palette PNGs.
    """
    rng = np.random.default_rng([seed, 104729])
    n = n_images
    n_dup = min(N_DUPLICATES, n // 10)
    n_corrupt = 5 if n >= 50 else 0
    scenes = sample_scenes(n, rng)

    # Duplicates: the last n_dup rows copy earlier originals; then everything is shuffled so
    # file order says nothing about duplicates or labels.
    originals = rng.choice(n - n_dup, size=n_dup, replace=False)
    dup_rows = np.arange(n - n_dup, n)
    src = np.arange(n)
    src[dup_rows] = originals
    scenes = scenes.iloc[src].reset_index(drop=True)
    order = rng.permutation(n)
    inv = np.empty(n, np.int64)
    inv[order] = np.arange(n)
    scenes = scenes.iloc[order].reset_index(drop=True)
    dup_of = np.full(n, -1, np.int64)
    dup_of[inv[dup_rows]] = inv[originals]

    images = render_scenes(scenes, progress=progress, cancel=cancel)
    near = inv[dup_rows][rng.random(n_dup) < 0.5]  # half of the copies get a small perturbation
    for i in near:
        noise = rng.integers(-6, 7, size=images[i].shape)
        images[i] = np.clip(images[i].astype(np.int16) + noise, 0, 255).astype(np.uint8)

    true_label = scenes["shape"].to_numpy().astype(object)
    captions = np.array([caption_of(s) for s in scenes.itertuples(index=False)], dtype=object)
    grey_cols = np.array([caption_of(s, with_colour=False) for s in scenes.itertuples(index=False)], dtype=object)

    # Special files: corrupted, grey, palette: drawn among non-duplicates, disjoint.
    candidates = rng.permutation(np.flatnonzero(dup_of < 0))
    corrupt = candidates[:n_corrupt]
    grey = candidates[n_corrupt:n_corrupt + N_GREY]
    palette = candidates[n_corrupt + N_GREY:n_corrupt + N_GREY + N_PALETTE]
    fmt = np.where(rng.random(n) < JPEG_FRACTION, "jpg", "png").astype(object)
    fmt[grey] = "png"
    fmt[palette] = "png"
    corrupt_kinds = ["truncated_jpeg_header", "truncated_jpeg_data", "random_bytes", "empty", "truncated_png"]
    for i, kind in zip(corrupt, corrupt_kinds):
        fmt[i] = "png" if kind in ("random_bytes", "truncated_png") else "jpg"
    captions[grey] = grey_cols[grey]

    # Label noise and caption mismatch among readable files.
    readable = np.setdiff1d(np.arange(n), corrupt)
    noisy = rng.choice(readable, size=int(round(LABEL_NOISE_RATE * n)), replace=False)
    label = true_label.copy()
    k = len(CLASSES)
    cls_idx = {c: i for i, c in enumerate(CLASSES)}
    shift = rng.integers(1, k, size=len(noisy))
    label[noisy] = [CLASSES[(cls_idx[true_label[i]] + s) % k] for i, s in zip(noisy, shift)]
    mismatched = rng.choice(readable, size=int(round(CAPTION_MISMATCH_RATE * n)), replace=False)
    new_captions = captions.copy()
    for i in mismatched:
        while True:
            j = int(rng.integers(n))
            if true_label[j] != true_label[i]:
                break
        new_captions[i] = captions[j]
    captions = new_captions

    paths = np.array([f"images/img_{i:05d}.{fmt[i]}" for i in range(n)], dtype=object)
    img_dir = root / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    corrupt_kind = dict(zip(corrupt.tolist(), corrupt_kinds))
    for i in range(n):
        if i % 500 == 0:
            check(cancel)
        if i in corrupt_kind:
            data = _corrupt_bytes(corrupt_kind[i], images[i], rng)
        else:
            mode = "L" if i in set(grey.tolist()) else "P" if i in set(palette.tolist()) else "RGB"
            data = _encode(images[i], fmt[i], mode)
        (root / paths[i]).write_bytes(data)

    is_noisy = np.zeros(n, bool)
    is_noisy[noisy] = True
    is_mis = np.zeros(n, bool)
    is_mis[mismatched] = True
    is_corrupt = np.zeros(n, bool)
    is_corrupt[corrupt] = True
    manifest = pd.DataFrame({
        "path": paths, "label": label, "caption": captions, "true_label": true_label, "caption_ok": ~is_mis,
    })
    truth = pd.DataFrame({
        "path": paths, "true_label": true_label, "label_noisy": is_noisy, "caption_mismatched": is_mis,
        "corrupted": is_corrupt, "duplicate_of": np.where(dup_of >= 0, paths[np.maximum(dup_of, 0)], ""),
    })
    manifest.to_csv(root / MANIFEST_NAME, index=False)
    return manifest, truth


def write_test_set(root: Path, *, n_per_class: int = N_TEST_PER_CLASS, seed: int = DEMO_SEED) -> pd.DataFrame:
    """Write ``root/test/*.png`` and ``root/test.csv`` (``path,label,caption``); return the manifest.

    A clean, class-balanced held-out set from the same generator as the demo images but its
    own random stream (so no scene is shared with the demo or the tiny CLIP's training set):
    true labels, matching captions, lossless RGB PNGs, no duplicates or corrupt files.
    """
    rng = np.random.default_rng([seed, 15485863])
    n = n_per_class * len(CLASSES)
    scenes = sample_scenes(n, rng)
    scenes["shape"] = rng.permutation(np.repeat(np.asarray(CLASSES), n_per_class))
    images = render_scenes(scenes)
    paths = [f"test/img_{i:05d}.png" for i in range(n)]
    (root / "test").mkdir(parents=True, exist_ok=True)
    for path, img in zip(paths, images):
        (root / path).write_bytes(_encode(img, "png"))
    manifest = pd.DataFrame({"path": paths, "label": scenes["shape"].to_numpy(),
                             "caption": [caption_of(s) for s in scenes.itertuples(index=False)]})
    manifest.to_csv(root / TEST_MANIFEST_NAME, index=False)
    return manifest


def _corrupt_bytes(kind: str, img: np.ndarray, rng: np.random.Generator) -> bytes:
    """Bytes PIL cannot decode (with its default ``LOAD_TRUNCATED_IMAGES = False``)."""
    if kind == "empty":
        return b""
    if kind == "random_bytes":
        return rng.integers(0, 256, size=600, dtype=np.uint8).tobytes()
    if kind == "truncated_png":
        data = _encode(img, "png")
        return data[: len(data) // 2]
    data = _encode(img, "jpg")
    if kind == "truncated_jpeg_header":
        return data[:120]  # inside the quantisation tables: not even the size is readable
    return data[: len(data) // 2]  # header intact, scan data cut: opens, fails on load


# ----------------------------------------------------------------------------- build / reuse

def _build_info(seed: int) -> dict:
    return {"version": DEMO_VERSION, "seed": seed, "n_images": N_DEMO_IMAGES,
            "n_test_per_class": N_TEST_PER_CLASS, "n_train_pairs": N_TRAIN_PAIRS,
            "epochs": TRAIN_EPOCHS, "batch_size": TRAIN_BATCH_SIZE, "lr": TRAIN_LR,
            "instance_weight": TRAIN_INSTANCE_WEIGHT}


def _is_complete(directory: Path, seed: int) -> bool:
    marker = directory / MARKER_NAME
    if not marker.is_file():
        return False
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    want = _build_info(seed)
    return all(info.get(k) == v for k, v in want.items())


def _assets(directory: Path) -> DemoAssets:
    from pruning_core.demo.tiny_clip import TINY_CLIP_NAME, register_tiny_clip

    register_tiny_clip()
    root = directory / "dataset"
    return DemoAssets(root=root, manifest=root / MANIFEST_NAME, ground_truth=directory / GROUND_TRUTH_NAME,
                      test_manifest=root / TEST_MANIFEST_NAME,
                      clip_model=TINY_CLIP_NAME, clip_checkpoint=directory / CHECKPOINT_NAME)


def default_demo_dir() -> Path:
    from cache.store import default_cache_dir

    return default_cache_dir() / "demo" / f"v{DEMO_VERSION}"


def ensure_demo(directory: Optional[Path] = None, *, seed: int = DEMO_SEED,
                progress: Optional[ProgressCallback] = None,
                cancel: Optional[CancelToken] = None) -> DemoAssets:
    """Return the demo's assets, generating them on first use (about a minute on 2 CPU cores).

    Layout of ``directory`` (default ``<cache>/demo/v<DEMO_VERSION>``)::

        dataset/demo.csv          manifest: path,label,caption,true_label,caption_ok
        dataset/images/img_*.png  flat folder (file names say nothing about labels)
        dataset/test.csv          clean held-out set: path,label,caption (paths relative to dataset/)
        dataset/test/img_*.png    its images (balanced classes, no injected problems)
        ground_truth.csv          path,true_label,label_noisy,caption_mismatched,corrupted,duplicate_of
        tiny_clip.safetensors     the tiny CLIP, for create_model_and_transforms(TINY_CLIP_NAME, pretrained=...)
        COMPLETE.json             written last; its presence means the rest is whole

    The build happens in a sibling temporary directory that is renamed into place, so a
    crash or a cancel never leaves a directory that looks complete.
    """
    directory = Path(directory) if directory is not None else default_demo_dir()
    if _is_complete(directory, seed):
        return _assets(directory)

    from pruning_core.demo.tiny_clip import save_checkpoint, train_tiny_clip

    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.parent / f".{directory.name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        t0 = time.perf_counter()
        n_total = N_DEMO_IMAGES + N_TRAIN_PAIRS
        stage_progress = _Offset(progress, IMAGES_STAGE, 0, n_total)
        manifest, truth = write_demo_dataset(tmp / "dataset", seed=seed, progress=stage_progress, cancel=cancel)
        truth.to_csv(tmp / GROUND_TRUTH_NAME, index=False)
        write_test_set(tmp / "dataset", seed=seed)
        train_images, train_captions = make_training_pairs(
            seed=seed + 1, progress=_Offset(progress, IMAGES_STAGE, N_DEMO_IMAGES, n_total), cancel=cancel)
        t_images = time.perf_counter() - t0
        model = train_tiny_clip(train_images, train_captions, epochs=TRAIN_EPOCHS, batch_size=TRAIN_BATCH_SIZE, lr=TRAIN_LR,
                                instance_weight=TRAIN_INSTANCE_WEIGHT, seed=seed, progress=progress, cancel=cancel)
        t_train = time.perf_counter() - t0 - t_images
        save_checkpoint(model, tmp / CHECKPOINT_NAME)
        info = {**_build_info(seed), "seconds_images": round(t_images, 2), "seconds_training": round(t_train, 2),
                "created": time.time()}
        (tmp / MARKER_NAME).write_text(json.dumps(info, indent=1))
        check(cancel)
        _install(tmp, directory, seed)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _assets(directory)


def _install(tmp: Path, directory: Path, seed: int) -> None:
    """Rename the finished ``tmp`` into ``directory``, replacing an incomplete or outdated one."""
    if directory.exists():
        if _is_complete(directory, seed):  # another process finished first; keep theirs
            return
        stale = directory.parent / f".{directory.name}.stale-{uuid.uuid4().hex[:12]}"
        try:
            os.rename(directory, stale)
        except FileNotFoundError:
            pass
        shutil.rmtree(stale, ignore_errors=True)
    try:
        os.rename(tmp, directory)
    except OSError:
        if not _is_complete(directory, seed):
            raise


class _Offset:
    """Re-map one sub-job's progress onto a shared stage (images of the demo set, then of the training set)."""

    def __init__(self, callback: Optional[ProgressCallback], stage: str, offset: int, total: int) -> None:
        self.callback, self.stage, self.offset, self.total = callback, stage, offset, total

    def __call__(self, p) -> None:
        report(self.callback, self.stage, self.offset + p.done, self.total, p.message)
