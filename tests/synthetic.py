"""Small synthetic datasets with known label noise, shared by the training tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def synthetic_images(n=240, size=16, noise=0.2, seed=0):
    """3 classes of procedural 16 px images (oriented stripes in class colours) + label noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    yy, xx = np.mgrid[0:size, 0:size] / size
    patterns = np.stack([np.sin(6 * xx), np.sin(6 * yy), np.sin(6 * (xx + yy))])
    colour = np.eye(3)[y] * 0.5 + 0.25
    img = patterns[y][..., None] * 0.4 * colour[:, None, None, :] + 0.5 + rng.normal(0, 0.15, (n, size, size, 3))
    img = (np.clip(img, 0, 1) * 255).astype(np.uint8)
    noisy = rng.random(n) < noise
    given = y.copy()
    given[noisy] = (y[noisy] + rng.integers(1, 3, noisy.sum())) % 3
    return img, given, noisy


def gaussian_embeddings(n=600, dim=16, classes=4, noise=0.2, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (classes, dim)) * 2.5
    y = rng.integers(0, classes, n)
    x = (centres[y] + rng.normal(0, 1, (n, dim))).astype(np.float32)
    noisy = rng.random(n) < noise
    given = y.copy()
    given[noisy] = (y[noisy] + rng.integers(1, classes, noisy.sum())) % classes
    return x, given, noisy


def write_image_folder(root: Path, images: np.ndarray, labels: np.ndarray, prefix: str = "") -> Path:
    """``root/<class>/<i>.png`` for every image; class names are ``c<label>``."""
    for i, (img, label) in enumerate(zip(images, labels)):
        folder = root / f"c{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"{prefix}{i:05d}.png")
    return root
