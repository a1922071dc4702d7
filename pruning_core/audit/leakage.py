"""Train/test leakage: test samples that are copies of training samples.

A test image that is also in the training set (byte for byte, or re-encoded, resized or cropped a
little) measures memory, not generalisation.  Two searches, over two sets of rows (so the Evaluate
test set, a dataset's own split, or any two arrays can be compared):

* **exact**: equal SHA-256 of the file bytes (no decoding, no threshold);
* **near**: each test row's best training match by similarity, flagged at or above
  :attr:`LeakageConfig.threshold`.  With no model (:func:`nearest_by_pixels`, the default): faiss
  k-NN on 8 x 8 thumbnails picks 5 candidates (:func:`pruning_core.clip_scores.neighbors.knn`, as
  every neighbour search), then the correlation of 16 x 16 thumbnails is taken at the best of every
  crop of up to 3 px a side, which is what re-encoding, resizing and a few-pixel crop leave intact.
  With an embedding (CLIP's, a user's ``--features``): plain cosine of the nearest training row
  (:func:`nearest_by_embedding`), at a threshold the caller chooses for that space.

Why pixels by default: the shipped tiny CLIP knows only the demo, and a real CLIP also pulls together
different photos of one thing; a plain thumbnail cosine misses most cropped copies (16 px: 11 of 100
at 0.95 on CIFAR-10) while the aligned correlation finds them (docs/benchmarks.md, "Train/test leakage").
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence

import numpy as np
import pandas as pd
import torch

from cache.steps import CachedStep, Computed
from pruning_core.clip_scores.neighbors import knn
from pruning_core.data.images import ImageSource, is_file_path, load_image_array, map_file_chunks
from pruning_core.runtime.progress import CancelToken, ProgressCallback

if TYPE_CHECKING:
    from cache.store import ResultStore
    from pruning_core.data.datasets import Dataset

PAIR_COLUMNS = ("train_id", "test_id", "cosine", "kind")
EXACT, NEAR = "exact", "near"


@dataclass(frozen=True)
class LeakageConfig:
    """How near copies are found in pixel space (defaults measured on CIFAR-10: docs/benchmarks.md, "Train/test leakage")."""

    threshold: float = 0.99
    """Correlation of the aligned thumbnails at or above which a test image is a near copy of a training image."""
    pixel_size: int = 16
    """Side of the thumbnails the aligned correlation compares (RGB)."""
    screen_size: int = 8
    """Side of the thumbnails whose cosine picks each test image's candidate training images (faiss k-NN)."""
    candidates: int = 5
    """Training images per test image checked with alignment (the planted copies' source is in the first 5)."""
    max_crop: int = 3
    """Pixels (at the decoded size) a copy may have lost on each side: every crop up to it is tried."""
    decode_size: int = 32
    """Side every image is decoded to before the thumbnails are made."""
    screen_floor: float = 0.98
    """Aligned correlation at ``screen_size`` below which a candidate is dropped before the finer check (or
    ``threshold``, when lower)."""


def content_hashes(sources: Sequence[ImageSource], *, progress: Optional[ProgressCallback] = None,
                   cancel: Optional[CancelToken] = None) -> np.ndarray:
    """Hex SHA-256 of every image's encoded bytes (a file's, or a container member's read in place), in order
    (threads: hashing releases the GIL)."""
    out = np.empty(len(sources), dtype=object)

    def work(start: int, stop: int) -> None:
        for i in range(start, stop):
            source = sources[i]
            data = Path(source).read_bytes() if is_file_path(source) else source.read_bytes()
            out[i] = hashlib.sha256(data).hexdigest()

    map_file_chunks(len(sources), work, chunk=512, workers=None, stage="content hashes", progress=progress,
                    cancel=cancel, thread_name="hash")
    return out


def _thumbnails(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 3 size^2) unit rows of area-averaged, mean-centred thumbnails: their cosine is a correlation."""
    small = torch.nn.functional.interpolate(images, size=(size, size), mode="area").flatten(1)
    small = small - small.mean(1, keepdim=True)
    return small / small.norm(dim=1, keepdim=True).clamp_min(1e-6)


def _crop_resize_matrices(source: int, out: int, max_crop: int) -> torch.Tensor:
    """((max_crop+1)^2 * out, source): area resizes of ``[l, source - r)`` to ``out`` px, for every l, r <= max_crop.

    Applied on both sides of an image (rows, then columns) they give every crop of up to ``max_crop``
    px per side, resized, in two matrix products.
    """
    rows = []
    for left in range(max_crop + 1):
        for right in range(max_crop + 1):
            edges = left + np.arange(out + 1) * (source - left - right) / out
            pixels = np.arange(source)[None, :]
            overlap = np.clip(np.minimum(edges[1:, None], pixels + 1) - np.maximum(edges[:-1, None], pixels), 0, None)
            rows.append(overlap / overlap.sum(axis=1, keepdims=True))
    return torch.tensor(np.concatenate(rows), dtype=torch.float32)


def aligned_correlation(train: torch.Tensor, test: torch.Tensor, size: int, max_crop: int,
                        batch: int = 256) -> np.ndarray:
    """Best correlation of each test image with every crop (up to ``max_crop`` px a side) of its train image.

    ``train``/``test``: (P, 3, S, S) float pairs.  A near copy is a crop of the original, resized and
    re-encoded: at the right crop its thumbnail equals the original's up to JPEG noise, while a plain
    thumbnail cosine drops with a shift of a pixel or two (docs/benchmarks.md).
    """
    resize = _crop_resize_matrices(train.shape[-1], size, max_crop)
    crops = resize.shape[0] // size
    out = np.empty(len(train), dtype=np.float32)
    for start in range(0, len(train), batch):
        a, t = train[start:start + batch], test[start:start + batch]
        target = _thumbnails(t, size).unsqueeze(-1)
        candidates = ((resize @ a) @ resize.T).reshape(len(a), 3, crops, size, crops, size)
        candidates = candidates.permute(0, 2, 4, 1, 3, 5).reshape(len(a), crops * crops, -1)
        candidates = candidates - candidates.mean(-1, keepdim=True)
        cosine = (candidates @ target).squeeze(-1) / candidates.norm(dim=-1).clamp_min(1e-6)
        out[start:start + batch] = cosine.max(dim=1).values.numpy()
    return out


def decode(sources: Sequence[ImageSource], config: LeakageConfig = LeakageConfig(), *,
           progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None) -> np.ndarray:
    """(N, S, S, 3) uint8: the images :func:`nearest_by_pixels` compares, decoded at ``config.decode_size``."""
    return load_image_array(sources, config.decode_size, progress=progress, cancel=cancel,
                            stage="decoding for leakage")[0]


def nearest_by_pixels(train_images: np.ndarray, test_images: np.ndarray, config: LeakageConfig = LeakageConfig(), *,
                      cancel: Optional[CancelToken] = None) -> tuple[np.ndarray, np.ndarray]:
    """Each test image's best training match and its aligned correlation, needing no model.

    ``train_images``/``test_images``: (N, S, S, 3) uint8 at ``config.decode_size`` (:func:`decode`, or the
    scoring's cached decode of a dataset).  Screen: the ``config.candidates`` nearest training thumbnails
    (``screen_size``, faiss k-NN).  Check: :func:`aligned_correlation` at ``screen_size``, then at
    ``pixel_size`` for candidates at or above ``screen_floor``.  Returns ``(train row, correlation)`` per
    test row (-1 and NaN: none kept).
    """
    def tensor(images: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(images)).permute(0, 3, 1, 2).float()

    train, test = tensor(train_images), tensor(test_images)
    n_test = len(test)
    best_row, best = np.full(n_test, -1, dtype=np.int64), np.full(n_test, np.nan, dtype=np.float32)
    if not len(train) or not n_test:
        return best_row, best
    k = min(config.candidates, len(train))
    _, ind = knn(_thumbnails(test, config.screen_size).numpy(), _thumbnails(train, config.screen_size).numpy(), k,
                 exclude_self=False, device="cpu", cancel=cancel)
    test_rows, train_rows = np.repeat(np.arange(n_test), k), ind.reshape(-1)
    coarse = aligned_correlation(train[train_rows], test[test_rows], config.screen_size, config.max_crop)
    keep = coarse >= min(config.screen_floor, config.threshold)  # a lower threshold widens the screen too
    test_rows, train_rows = test_rows[keep], train_rows[keep]
    fine = aligned_correlation(train[train_rows], test[test_rows], config.pixel_size, config.max_crop)
    order = np.argsort(-fine, kind="stable")  # best first, so np.unique's first index is each test row's best
    first = np.unique(test_rows[order], return_index=True)[1]
    best_row[test_rows[order][first]] = train_rows[order][first]
    best[test_rows[order][first]] = fine[order][first]
    return best_row, best


def nearest_by_embedding(train_emb: np.ndarray, test_emb: np.ndarray, *, cancel: Optional[CancelToken] = None
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Each test row's nearest training row by cosine of another embedding (CLIP's, a user's features)."""
    dist, ind = knn(test_emb, train_emb, 1, exclude_self=False, device="cpu", cancel=cancel)
    return ind[:, 0], (1.0 - dist[:, 0]).astype(np.float32)


def leakage_pairs(
    train_ids: Sequence[str],
    test_ids: Sequence[str],
    train_hashes: np.ndarray,
    test_hashes: np.ndarray,
    nearest: Optional[tuple[np.ndarray, np.ndarray]] = None,
    *,
    threshold: float = LeakageConfig.threshold,
) -> pd.DataFrame:
    """Every leaked test row as ``(train_id, test_id, cosine, kind)``, exact copies first, then by cosine.

    Exact: equal content hash (every training copy listed, cosine 1).  Near: ``nearest`` (each test
    row's best training row and its similarity, from :func:`nearest_by_pixels` or
    :func:`nearest_by_embedding`) at or above ``threshold``, for test rows with no exact copy.  A plain
    function over arrays, so any two sets can be compared.
    """
    train_ids, test_ids = np.asarray(train_ids, dtype=object), np.asarray(test_ids, dtype=object)
    by_hash = pd.DataFrame({"hash": train_hashes, "train": np.arange(len(train_hashes))})
    joined = pd.DataFrame({"hash": test_hashes, "test": np.arange(len(test_hashes))}).merge(by_hash, on="hash")
    frames = [pd.DataFrame({"train_id": train_ids[joined["train"].to_numpy()],
                            "test_id": test_ids[joined["test"].to_numpy()], "cosine": 1.0, "kind": EXACT})]
    if nearest is not None:
        rows, similarity = nearest
        near = (rows >= 0) & (np.nan_to_num(similarity, nan=-1.0) >= threshold)
        near[joined["test"].to_numpy()] = False
        found = np.flatnonzero(near)
        frames.append(pd.DataFrame({"train_id": train_ids[rows[found]], "test_id": test_ids[found],
                                    "cosine": similarity[found].astype(np.float64), "kind": NEAR})
                      .sort_values("cosine", ascending=False))
    return pd.concat(frames, ignore_index=True)[list(PAIR_COLUMNS)]


def leakage_step(train: "Dataset", test: "Dataset", config: LeakageConfig) -> CachedStep:
    """The cache step of :func:`find_leakage`: keyed by both datasets' fingerprints (which cover their bytes) and
    the settings, so the Overview panel, ``prunescope leakage`` and the report read one result."""
    return CachedStep("leakage", train.fingerprint, {"test": test.fingerprint, **asdict(config)}, dataset=train.name,
                      label="the leakage pairs")


def find_leakage(train: "Dataset", test: "Dataset", config: LeakageConfig = LeakageConfig(), *,
                 store: Optional["ResultStore"] = None, embeddings: Optional[tuple[np.ndarray, np.ndarray]] = None,
                 progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None) -> pd.DataFrame:
    """:func:`leakage_pairs` of two :class:`~pruning_core.data.datasets.Dataset` s, ids = their sample ids.

    Image folders, manifests and container datasets (parquet, tar shards: bytes read in place) alike.
    With a ``store`` the pairs are cached (:func:`leakage_step`) and the images are decoded through the
    dataset's cached decode (:func:`~pruning_core.data.datasets.decoded_images`, shared with scoring at
    the same size).  ``embeddings``: ``(train, test)`` rows of another embedding (CLIP's, the user's
    features) compared by plain cosine instead of :func:`nearest_by_pixels` (``config.threshold`` must
    then suit it); the caller owns those arrays, so that search is not cached.
    """
    from pruning_core.data.datasets import decoded_images

    def images(dataset: "Dataset") -> np.ndarray:
        if store is None:
            return decode(dataset.image_refs(), config, progress=progress, cancel=cancel)
        return decoded_images(dataset, config.decode_size, store, progress=progress, cancel=cancel)

    def compute() -> Computed:
        nearest = (nearest_by_embedding(*embeddings, cancel=cancel) if embeddings is not None
                   else nearest_by_pixels(images(train), images(test), config, cancel=cancel))
        pairs = leakage_pairs(train.samples["path"].astype(str).tolist(), test.samples["path"].astype(str).tolist(),
                              content_hashes(train.image_refs(), progress=progress, cancel=cancel),
                              content_hashes(test.image_refs(), progress=progress, cancel=cancel), nearest,
                              threshold=config.threshold)
        return Computed(frames={"pairs": pairs})

    if store is None or embeddings is not None:
        return compute().frames["pairs"]
    return leakage_step(train, test, config).run(store, compute).frame("pairs")


def leakage_findings(train: "Dataset", tests: Sequence["Dataset"], *, store: Optional["ResultStore"] = None,
                     thumbnail: Optional[Callable[[ImageSource], Optional[str]]] = None,
                     progress: Optional[ProgressCallback] = None) -> dict[str, list[dict]]:
    """The leakage of each of ``tests`` into ``train`` as a report's pair findings (``audit.report.pair_findings``):
    ``{title: [{"a": train id, "b": test id, "score": similarity, "a_thumbnail", "b_thumbnail"}, ...]}``.

    The one builder behind ``prunescope report`` and the Overview's downloads.  ``thumbnail`` renders each side from
    its own dataset; None (a Markdown report shows none) skips the encoding.
    """
    def picture(dataset: "Dataset", sample_id: str) -> Optional[str]:
        return thumbnail(dataset.image_ref(sample_id)) if thumbnail else None

    found: dict[str, list[dict]] = {}
    for test in tests:
        pairs = find_leakage(train, test, store=store, progress=progress)
        # a split's name carries the split (``data:test``)
        title = f"Train/test leakage: {test.name} ({len(test):,} samples) copying {train.name}"
        found[title] = [{"a": str(row.train_id), "b": str(row.test_id), "score": float(row.cosine),
                         "a_thumbnail": picture(train, str(row.train_id)), "b_thumbnail": picture(test, str(row.test_id))}
                        for row in pairs.itertuples()]
    return found
