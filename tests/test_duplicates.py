"""The pixel check of near-duplicate groups: copies pass, look-alikes and copies labelled apart are 'check'."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pruning_core.audit.duplicates import CHECK, DUPLICATE, check_groups, duplicate_groups, pass_share


def _scene(rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """A random blocky RGB image: two of these differ in pixels and colours."""
    blocks = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return np.kron(blocks, np.ones((size // 4, size // 4, 1), dtype=np.uint8))


def test_copies_pass_and_look_alikes_or_relabelled_copies_are_checked(tmp_path):
    rng = np.random.default_rng(0)
    a, b, c, d = (_scene(rng) for _ in range(4))
    noisy_a = np.clip(a.astype(np.int16) + rng.integers(-6, 7, a.shape), 0, 255).astype(np.uint8)
    images = [a, noisy_a, b, c, d, d, a, b]
    paths = []
    for i, img in enumerate(images):
        paths.append(tmp_path / f"{i}.jpg")
        Image.fromarray(img).save(paths[-1], quality=90)
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    paths.append(tmp_path / "broken.jpg")
    # group 0: a copy with noise, same label; 1: two different scenes CLIP put together;
    # 2: exact copies labelled apart; 3: a copy beside an unreadable file; row 7 in no group.
    groups = np.array([0, 0, 1, 1, 2, 2, 3, -1, 3])
    labels = np.array(["cat", "cat", "dog", "dog", "cat", "fox", "cat", "dog", "cat"], dtype=object)
    emb = np.eye(9, dtype=np.float32)
    emb[1] = emb[0] * 0.6 + emb[1] * 0.8  # group 0 at cosine 0.6, group 2 at 1, the others at 0
    emb[5] = emb[4]
    result = duplicate_groups(paths, groups, labels, emb).set_index("group")

    assert result.at[0, "verdict"] == DUPLICATE and result.at[0, "reason"] == ""
    assert result.at[1, "verdict"] == CHECK and "pixels differ" in result.at[1, "reason"]
    assert result.at[2, "verdict"] == CHECK and result.at[2, "reason"] == "labels differ"
    assert result.at[3, "verdict"] == CHECK and "could not be read" in result.at[3, "reason"]
    assert list(result.at[3, "rows"]) == [6, 8] and 7 not in np.concatenate(result["rows"].to_list())
    assert result["cosine"].to_numpy() == pytest.approx([1.0, 0.6, 0.0, 0.0], abs=1e-6)  # most similar first
    assert result.index.tolist() == [2, 0, 1, 3]
    assert pass_share(result.reset_index()) == 0.25


def test_without_embeddings_the_check_still_runs_and_cosine_is_unknown():
    rng = np.random.default_rng(1)
    thumbs = np.stack([_scene(rng, 16), _scene(rng, 16)])
    frame = check_groups(np.array([5, 5]), np.array(["a", "a"], dtype=object), thumbs, np.zeros(2, bool))
    assert frame.at[0, "verdict"] == CHECK and np.isnan(frame.at[0, "cosine"])
