"""Batched, resumable CLIP image embeddings.

Images are decoded and preprocessed by DataLoader workers while the model runs, and the
result is written in fixed-size chunks: an interrupted or cancelled run keeps every
finished chunk and the next run starts at the first missing one.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset as TorchDataset

from cache.store import atomic_save_npy, read_chunk
from pruning_core.runtime import executors
from pruning_core.demo.tiny_clip import register_tiny_clip
from pruning_core.embeddings.clip_model import ClipEncoder, WeightsSource
from pruning_core.runtime.devices import device_policy
from pruning_core.data.images import ImageError, ImageSource, is_file_path, load_rgb
from pruning_core.runtime.progress import CancelToken, ProgressCallback, check, report


TEXT_BATCH = 512
"""Texts per ``encode_text`` call when progress is reported per batch."""


def batched_text_encoder(
    encode_text: Callable[[list[str]], np.ndarray],
    total: int,
    *,
    batch_size: int = TEXT_BATCH,
    stage: str = "text embeddings",
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
) -> Callable[[Sequence[str]], np.ndarray]:
    """``encode_text`` run one batch at a time: each batch is reported (``total`` texts over every call of
    the returned function) and a cancel is honoured between batches.  5,000 classes are 40,000 prompts:
    minutes on a CPU that one tick would hide."""
    done = 0

    def encode(texts: Sequence[str]) -> np.ndarray:
        nonlocal done
        parts = []
        for start in range(0, len(texts), batch_size):
            check(cancel)
            parts.append(np.asarray(encode_text(list(texts[start:start + batch_size])), dtype=np.float32))
            done += len(parts[-1])
            report(progress, stage, done, total)
        return np.concatenate(parts) if parts else np.asarray(encode_text([]), dtype=np.float32)
    return encode


class _ImageFiles(TorchDataset):
    """Decodes and preprocesses one file; a file that fails yields a blank image and ok=False."""

    def __init__(self, paths: Sequence[ImageSource], preprocess: Callable) -> None:
        self.paths = paths
        self.preprocess = preprocess
        self._blank: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return len(self.paths)

    def blank(self) -> torch.Tensor:
        """What a file that fails to decode yields (and the size of every preprocessed image)."""
        if self._blank is None:
            from PIL import Image

            self._blank = torch.zeros_like(self.preprocess(Image.new("RGB", (8, 8))))
        return self._blank

    def __getitem__(self, i: int) -> tuple[torch.Tensor, bool]:
        try:
            return self.preprocess(load_rgb(self.paths[i])), True
        except (ImageError, OSError):
            return self.blank(), False


def _as_source(item: ImageSource) -> ImageSource:
    """A batch item back as what ``load_rgb`` reads: file names travel as text, container members as themselves."""
    return Path(item) if is_file_path(item) else item


def decode_batch(paths: Sequence[ImageSource], preprocess: Callable) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch decoded in this process (what a pool worker's CLIP does with its rows)."""
    files = _ImageFiles(paths, preprocess)
    images, ok = zip(*(files[i] for i in range(len(files))))
    return torch.stack(images), torch.tensor(ok, dtype=torch.bool)


def clip_actor(source: WeightsSource, precision: str) -> Callable[[list], dict[str, np.ndarray]]:
    """The executor's actor factory for image embeddings: one CLIP per pool worker (on its GPU when it has one).

    Runs in the worker: the built-in tiny CLIP is registered there too, and the model loads at the
    driver's resolved ``precision`` so the embeddings are what the driver's cache key says.
    """
    register_tiny_clip()
    encoder = ClipEncoder(source, device="auto", precision=precision)

    def embed(paths: list) -> dict[str, np.ndarray]:
        images, ok = decode_batch([_as_source(p) for p in paths], encoder.preprocess)
        return {"emb": encoder.encode_image_batch(images).float().cpu().numpy(), "ok": ok.numpy()}

    return embed


def local_batches(paths: Sequence[ImageSource], encoder: ClipEncoder, *, batch_size: int,
                  num_workers: Optional[int]) -> Iterator[dict[str, torch.Tensor]]:
    """``{"emb", "ok"}`` per batch, decoded by DataLoader workers while the model runs here.

    Workers and prefetch come from the device policy: the CPUs this process may use, and batches in
    flight that fit /dev/shm (a worker hands each batch over through it; Docker's default 64 MB holds
    no 256-image batch of 224-px floats, so there the images are decoded in this process).
    """
    files = _ImageFiles(paths, encoder.preprocess)
    batch_bytes = batch_size * files.blank().numel() * files.blank().element_size()
    workers, prefetch = device_policy(encoder.device).loader(batch_bytes)
    if num_workers is not None:
        workers, prefetch = num_workers, prefetch or 1
    loader = DataLoader(
        files,
        batch_size=batch_size,
        num_workers=workers,
        pin_memory=encoder.device.type == "cuda",
        persistent_workers=False,
        prefetch_factor=prefetch if workers else None,
    )
    for images, ok in loader:
        yield {"emb": encoder.encode_image_batch(images).cpu(), "ok": ok}


CHUNK_SIZE = 4096
"""Images per saved chunk: what a cancelled embedding run can lose at most, and how resume counts."""


def _chunk_done(chunk_dir: Optional[Path], c: int) -> bool:
    return chunk_dir is not None and (chunk_dir / f"emb-{c:05d}.npy").is_file()


def cached_chunks(chunk_dir: Path, n: int, chunk_size: int = CHUNK_SIZE) -> tuple[int, int]:
    """(finished, total) chunks for ``n`` images: what a resumed :func:`embed_images` would reuse."""
    total = (n + chunk_size - 1) // chunk_size
    return sum(_chunk_done(chunk_dir, c) for c in range(total)), total


def embed_images(
    paths: Sequence[ImageSource],
    encoder: ClipEncoder,
    *,
    chunk_dir: Optional[Path] = None,
    chunk_size: int = CHUNK_SIZE,
    batch_size: int,
    num_workers: Optional[int] = None,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Embed every image; return (embeddings (N,D) float32 L2-normalised, ok (N,) bool).

    With ``chunk_dir`` finished chunks are saved there and reused on the next call, which
    is what makes a cancelled job resumable.  Rows whose file failed to decode are NaN.
    """
    n = len(paths)
    n_chunks = (n + chunk_size - 1) // chunk_size
    results: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for c in range(n_chunks):  # saved chunks; a damaged one is quarantined and embedded again
        if _chunk_done(chunk_dir, c):
            emb, ok = read_chunk(chunk_dir / f"emb-{c:05d}.npy"), read_chunk(chunk_dir / f"ok-{c:05d}.npy")
            rows = min(chunk_size, n - c * chunk_size)
            if emb is not None and ok is not None and len(emb) == len(ok) == rows:
                results[c] = (emb, ok)
    done = set(results)
    todo = [c for c in range(n_chunks) if c not in done]
    finished = sum(min(chunk_size, n - c * chunk_size) for c in done)
    report(progress, "image embeddings", finished, n, "resuming" if done else "")

    if todo:
        indices = [i for c in todo for i in range(c * chunk_size, min(n, (c + 1) * chunk_size))]
        batches = executors.current().map_batches(
            [str(paths[i]) if is_file_path(paths[i]) else paths[i] for i in indices], batch_size=batch_size,
            local=lambda items: local_batches([_as_source(p) for p in items], encoder, batch_size=batch_size,
                                              num_workers=num_workers),
            actor=functools.partial(clip_actor, encoder.source, encoder.precision))
        pending_emb: list[torch.Tensor] = []
        pending_ok: list[torch.Tensor] = []
        chunk_iter = iter(todo)
        current = next(chunk_iter)
        for batch in batches:
            check(cancel)
            batch_emb, ok = torch.as_tensor(batch["emb"]), torch.as_tensor(batch["ok"], dtype=torch.bool)
            pending_emb.append(batch_emb)
            pending_ok.append(ok)
            finished += len(ok)
            report(progress, "image embeddings", finished, n)
            # Flush every chunk that the buffered rows now complete.
            while current is not None and sum(len(o) for o in pending_ok) >= min(chunk_size, n - current * chunk_size):
                need = min(chunk_size, n - current * chunk_size)
                emb, oks = torch.cat(pending_emb), torch.cat(pending_ok)
                chunk_emb, chunk_ok = emb[:need].numpy(), oks[:need].numpy().astype(bool)
                chunk_emb[~chunk_ok] = np.nan
                pending_emb, pending_ok = [emb[need:]], [oks[need:]]
                if chunk_dir is not None:
                    atomic_save_npy(chunk_dir / f"ok-{current:05d}.npy", chunk_ok)
                    atomic_save_npy(chunk_dir / f"emb-{current:05d}.npy", chunk_emb)
                results[current] = (chunk_emb, chunk_ok)
                current = next(chunk_iter, None)

    if not results:
        return np.zeros((0, encoder.embed_dim), dtype=np.float32), np.zeros(0, dtype=bool)
    embeddings = np.concatenate([results[c][0] for c in range(n_chunks)]).astype(np.float32, copy=False)
    ok = np.concatenate([results[c][1] for c in range(n_chunks)])
    return embeddings, ok
