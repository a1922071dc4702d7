"""Decode any image file to 8-bit RGB, validate files cheaply, and decode many at once.

Datasets in the wild mix JPEG/PNG/TIFF/GIF/WebP files in every PIL mode (CMYK scans,
16-bit medical greys, palette GIFs with transparency, RGBA product shots).  Every model
in PruneScope wants 8-bit RGB, so all conversion lives here, in one place, with one
documented policy:

* transparency (RGBA, LA, PA, palette with a transparent index) is composited onto a
  **white** background (``WHITE``): that is how the image looks in the app and in a
  browser, and logos / product shots drawn on transparency stay visible;
* 16-bit greys (``I;16*``) are scaled by 1/257 so 65535 maps to 255 (a dark 16-bit image
  stays dark); 32-bit ``I`` and float ``F`` images are kept as is when they already fit
  0..255, scaled by 1/257 when they fit 0..65535 (``I``) or by 255 when they fit 0..1
  (``F``), and min-max stretched otherwise;
* EXIF orientation is applied, so a phone photo appears the way its owner sees it;
* multi-frame files (GIF, TIFF) contribute their first frame.

Truncated files are errors, never silently grey-filled: ``ImageFile.LOAD_TRUNCATED_IMAGES``
must stay ``False`` (it is PIL's default and this module never sets it).
"""

from __future__ import annotations

import io
import os
import struct
import threading
import zlib
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Callable, Optional, Protocol, Sequence, TypeVar, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pruning_core.runtime.progress import CancelToken, Cancelled, ProgressCallback, check, report

T = TypeVar("T")

WHITE = (255, 255, 255)
"""Background that transparent pixels are composited onto (see the module docstring)."""

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
"""File extensions (lower case) that the image-folder loader treats as images."""

# Reasons, shared with datasets.py so that reports group by them.
REASON_EMPTY = "file is empty"
REASON_NOT_IMAGE = "not an image file"
REASON_CORRUPT = "corrupt or truncated image file"
REASON_MISSING = "file not found"
REASON_TOO_LARGE = "image is too large to decode safely (decompression bomb limit)"

_PNG_VERIFY_ABOVE_PIXELS = 4_000_000
"""PNGs larger than this are checked with ``verify()`` (every chunk CRC, no inflate)."""

_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}


class Blob(Protocol):
    """An image stored inside a container (a tar shard's member, a parquet or arrow row).

    ``str(blob)`` is the sample's stable id (``shards/000003.tar#key``); ``read_bytes`` returns the encoded
    image, read in place (never unpacked to disk).  ``pathlib.Path`` has ``read_bytes`` too, but paths are
    opened as files so PIL can seek in them.
    """

    def read_bytes(self) -> bytes: ...


ImageSource = Union[str, os.PathLike, Blob]
"""Where one image is read from: a file, or a :class:`Blob` inside a container."""


def is_file_path(source: ImageSource) -> bool:
    """True for a file name (str / PathLike), False for a :class:`Blob`."""
    return isinstance(source, (str, os.PathLike))


class ImageError(ValueError):
    """An image file that cannot be decoded; ``reason`` is a short human message."""

    def __init__(self, path: os.PathLike | str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def _integer_to_l(arr: np.ndarray, sixteen_bit: bool) -> np.ndarray:
    arr = arr.astype(np.float64, copy=False)
    if sixteen_bit:
        return np.clip(np.rint(arr / 257.0), 0, 255).astype(np.uint8)
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if lo >= 0 and hi <= 255:
        return arr.astype(np.uint8)
    if lo >= 0 and hi <= 65535:
        return np.clip(np.rint(arr / 257.0), 0, 255).astype(np.uint8)
    return _stretch(arr)


def _float_to_l(arr: np.ndarray) -> np.ndarray:
    arr = np.nan_to_num(arr.astype(np.float64, copy=False), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if lo >= 0 and hi <= 1.0:
        return np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)
    if lo >= 0 and hi <= 255:
        return np.rint(arr).astype(np.uint8)
    return _stretch(arr)


def _stretch(arr: np.ndarray) -> np.ndarray:
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros(arr.shape, np.uint8)
    return np.clip(np.rint((arr - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def to_rgb(im: Image.Image, background: tuple[int, int, int] = WHITE) -> Image.Image:
    """Convert a decoded image of any mode to a new 8-bit RGB image (policy in module doc)."""
    mode = im.mode
    if mode == "RGB":
        return im.copy()
    if mode == "P":
        if "transparency" in im.info:
            im, mode = im.convert("RGBA"), "RGBA"
        else:
            return im.convert("RGB")
    if mode.startswith("I;16") or mode == "I":
        grey = _integer_to_l(np.asarray(im), sixteen_bit=mode.startswith("I;16"))
        return Image.fromarray(grey, "L").convert("RGB")
    if mode == "F":
        return Image.fromarray(_float_to_l(np.asarray(im)), "L").convert("RGB")
    if mode in _ALPHA_MODES:
        rgba = im.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(base, rgba).convert("RGB")
    if mode == "LAB":
        from PIL import ImageCms

        lab2srgb = ImageCms.buildTransform(
            ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB"
        )
        return ImageCms.applyTransform(im, lab2srgb)
    return im.convert("RGB")  # CMYK, YCbCr, HSV, L, 1, RGBX, ...


def _read_blob(blob: Blob) -> io.BytesIO:
    """A blob's bytes as a seekable file for PIL; unreadable or empty blobs are ImageErrors."""
    try:
        data = blob.read_bytes()
    except OSError as exc:
        raise ImageError(blob, f"cannot read ({exc.strerror or exc})") from None
    if not data:
        raise ImageError(blob, REASON_EMPTY)
    return io.BytesIO(data)


def _open_checked(path: ImageSource, size: Optional[int] = None) -> Image.Image:
    """``Image.open`` with the empty / missing / not-an-image cases turned into ImageError.

    ``size`` is the file size when the caller has already stat-ed the file (saves a stat).
    A :class:`Blob` is read into memory (container members are small and read in place).
    """
    if not is_file_path(path):
        target = _read_blob(path)
    elif size is None:
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            raise ImageError(path, REASON_MISSING) from None
        except OSError as exc:
            raise ImageError(path, f"cannot read file ({exc.strerror or exc})") from None
    if is_file_path(path):
        if size == 0:
            raise ImageError(path, REASON_EMPTY)
        target = path
    try:
        return Image.open(target)
    except UnidentifiedImageError:
        raise ImageError(path, REASON_NOT_IMAGE) from None
    except Image.DecompressionBombError:
        raise ImageError(path, REASON_TOO_LARGE) from None
    except IsADirectoryError:
        raise ImageError(path, "is a directory, not a file") from None
    except FileNotFoundError:
        raise ImageError(path, REASON_MISSING) from None
    except PermissionError:
        raise ImageError(path, "permission denied") from None
    except (OSError, SyntaxError, ValueError, struct.error, EOFError, zlib.error):
        raise ImageError(path, REASON_CORRUPT) from None


_DECODE_ERRORS = (OSError, SyntaxError, ValueError, struct.error, EOFError, IndexError, zlib.error)


def load_rgb(
    path: ImageSource,
    *,
    background: tuple[int, int, int] = WHITE,
    draft_size: Optional[tuple[int, int]] = None,
    keep_grey: bool = False,
) -> Image.Image:
    """Open, fully decode and convert ``path`` to an 8-bit RGB image.

    ``draft_size`` is a hint for callers that will downscale anyway: JPEGs larger than
    :data:`KEEP_PIXELS_MAX_SIDE` are then decoded at the smallest DCT scale (1/2, 1/4, 1/8) still at
    least that size, which is several times faster for large photos (smaller ones decode in full, so
    their pixels do not depend on whether they came from the file or from :func:`decode_small`).
    Raises :class:`ImageError` with a human ``reason``.
    """
    path = Path(path) if is_file_path(path) else path
    im = _open_checked(path)
    try:
        with im:
            if draft_size is not None and im.format == "JPEG" and max(im.size) > KEEP_PIXELS_MAX_SIDE:
                im.draft("RGB", draft_size)
            im.load()
            # JPEGs keep EXIF in info["exif"]; skip the (Python-side) EXIF parse when absent.
            if im.format != "JPEG" or "exif" in im.info:
                try:
                    im = ImageOps.exif_transpose(im) or im
                except Exception:  # a broken EXIF block must not lose a decodable image
                    pass
            return im if im.mode == "RGB" or (keep_grey and im.mode in GREY_MODES) else to_rgb(im, background)
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageError(path, REASON_TOO_LARGE) from None
    except MemoryError:
        raise ImageError(path, "not enough memory to decode this image") from None
    except _DECODE_ERRORS:
        raise ImageError(path, REASON_CORRUPT) from None


GREY_MODES = frozenset({"L", "1", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"})
"""Single-channel modes: :func:`load_native` keeps them grey (8-bit ``L``)."""


def load_native(path: ImageSource) -> Image.Image:
    """``path`` decoded at its own size, 8-bit grey (``L``) where the file stores one grey channel, else RGB.

    What image-quality checks read: size, aspect ratio and grey storage are properties of the file, so
    nothing is resized, and only the colour conversion of :func:`to_rgb` (its one policy) is applied.
    """
    im = load_rgb(path, keep_grey=True)
    return im if im.mode in ("RGB", "L") else to_rgb(im).convert("L")


def image_size(path: ImageSource) -> tuple[int, int]:
    """(width, height) from the header alone (nothing decoded); raises :class:`ImageError`."""
    with _open_checked(path) as im:
        return im.size


def check_image(path: ImageSource, *, size: Optional[int] = None) -> Optional[str]:
    """Return ``None`` if ``path`` decodes, else a short reason.  Cheap enough for 50k files.

    JPEGs are decoded at 1/8 scale: the whole entropy-coded stream is still read, so a
    truncated or corrupt file is caught, but the inverse DCT and colour work mostly vanish.
    Large PNGs (over 4 MP) use ``verify()``, which reads every chunk and checks its CRC
    without inflating pixels; everything else is decoded in full.  Only the first frame of
    animations is checked.  ``size``: the file size if already known (skips one stat).
    """
    try:
        im = _open_checked(path, size)
    except ImageError as exc:
        return exc.reason
    try:
        with im:
            if im.format == "JPEG":
                im.draft(None, (1, 1))
                im.load()
            elif im.format == "PNG" and im.width * im.height > _PNG_VERIFY_ABOVE_PIXELS:
                im.verify()
            else:
                im.load()
    except Image.DecompressionBombError:
        return REASON_TOO_LARGE
    except MemoryError:
        return "not enough memory to decode this image"
    except _DECODE_ERRORS:
        return REASON_CORRUPT
    return None


KEEP_PIXELS_MAX_SIDE = 64
"""Images no wider and no taller than this keep the pixels the first load's check decoded (at most 12 KB each, in
memory): the first decode at a working size resizes those instead of reading every file again."""


def decode_small(path: ImageSource) -> tuple[Optional[str], Optional[np.ndarray]]:
    """:func:`check_image` for a small file that decodes it in full: ``(reason, pixels)``.

    ``pixels`` is the image as :func:`load_rgb` gives it (uint8 H x W x 3) when it decodes and is no larger
    than :data:`KEEP_PIXELS_MAX_SIDE`, else None.  For a CIFAR-size JPEG a full decode costs little more
    than the check's 1/8-scale one, and keeping the pixels saves a second decode of every file."""
    try:
        im = load_rgb(path)
    except ImageError as exc:
        return exc.reason, None
    return None, np.asarray(im) if max(im.size) <= KEEP_PIXELS_MAX_SIDE else None


def _resize(im: Image.Image, size: int) -> Image.Image:
    if im.size == (size, size):
        return im
    # PIL's BILINEAR resize widens its kernel when downscaling, i.e. it antialiases;
    # reducing_gap first box-reduces by an integer factor, which is faster and as good.
    return im.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)


SMALL_IMAGE_BYTES = 6_000
"""Encoded size under which one decode thread beats several: opening and decoding a CIFAR-size JPEG
is ~90 us of mostly Python (PIL's header parsing and load loop) that holds the GIL, so threads queue
for it and each extra one slows the pool down (20,000 CIFAR-10 JPEGs at 32 px: 2.5 s on one thread,
4.1 s on four; 256 px JPEGs of ~7 KB are where threads start to pay; docs/benchmarks.md, "Fewer
threads for small images")."""


def default_workers() -> int:
    """Decode threads: PIL releases the GIL while decoding and resizing, so cores x 2 helps I/O."""
    from pruning_core.runtime.devices import affinity_cpus

    return max(1, min(16, affinity_cpus() * 2))


def spread_indices(n: int, sample: int) -> np.ndarray:
    """At most ``sample`` indices of ``range(n)``, evenly spaced from first to last (a sample that sees every part
    of a dataset sorted by class or folder)."""
    return np.unique(np.linspace(0, n - 1, min(sample, n)).astype(int))


def typical_bytes(sources: Sequence[ImageSource], sample: int = 32) -> int:
    """The median encoded size of ``sample`` evenly spaced ``sources`` (files stat-ed, blobs read);
    unreadable ones are left out, and 0 means none could be read."""
    picked = [sources[i] for i in spread_indices(len(sources), sample)]
    sizes = []
    for source in picked:
        try:
            sizes.append(os.stat(source).st_size if is_file_path(source) else len(source.read_bytes()))
        except (OSError, ValueError):
            continue
    return int(np.median(sizes)) if sizes else 0


def decode_workers(sources: Sequence[ImageSource]) -> int:
    """Threads for decoding ``sources``: one when they are small images (:data:`SMALL_IMAGE_BYTES`), where
    the GIL serialises the work anyway, else :func:`default_workers`."""
    if not sources:
        return 1
    return 1 if typical_bytes(sources) < SMALL_IMAGE_BYTES else default_workers()


READAHEAD_FILES = 2_048
"""How far ahead of the finished chunks :class:`_Readahead` asks for files (8 MB of CIFAR-size JPEGs)."""


class _Readahead:
    """Asks the kernel to read files ahead of the workers (``posix_fadvise(WILLNEED)``: asynchronous, no data
    copied into Python), at most :data:`READAHEAD_FILES` ahead, from one daemon thread.

    A first load meets files that are not in the page cache yet, and one decoding thread (small images) then
    waits for the disk file by file; read ahead, checking 50,000 cold CIFAR-10 JPEGs while decoding each in full
    took 11.1-11.9 s where the 1/8-scale check alone had taken 12.5-12.7 s (docs/benchmarks.md, "A first run's
    seconds").  Where ``posix_fadvise`` does not exist (macOS, Windows) this does nothing."""

    def __init__(self, paths: Sequence[ImageSource]) -> None:
        self.paths = [p for p in paths if is_file_path(p)] if hasattr(os, "posix_fadvise") else []
        self.done, self.stopped = 0, False
        self._wake = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="readahead", daemon=True)
        if self.paths:
            self._thread.start()

    def _run(self) -> None:
        for i, path in enumerate(self.paths):
            with self._wake:
                self._wake.wait_for(lambda: self.stopped or i < self.done + READAHEAD_FILES)
                if self.stopped:
                    return
            try:  # a symlink is never followed: it may point outside the dataset root (the check refuses those)
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            except OSError:
                continue  # the worker reports it
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            except OSError:
                pass
            finally:
                os.close(fd)

    def advance(self, done: int) -> None:
        with self._wake:
            self.done = done
            self._wake.notify()

    def stop(self) -> None:
        with self._wake:
            self.stopped = True
            self._wake.notify()


def map_file_chunks(
    n: int,
    work: Callable[[int, int], T],
    *,
    chunk: int,
    workers: Optional[int],
    stage: str,
    progress: Optional[ProgressCallback],
    cancel: Optional[CancelToken],
    thread_name: str,
    message: str = "",
    files: Sequence[ImageSource] = (),
) -> list[T]:
    """Run ``work(start, stop)`` over chunks of ``range(n)`` in a thread pool; the chunks' results in the
    order they finished.

    File work (stat, decode) releases the GIL, so threads use every core without copying the data.
    Progress is reported per finished chunk and ``cancel`` is checked between chunks (raises
    :class:`Cancelled`; chunks not started are dropped, and ``work`` should stop early on a cancel).
    ``files``: the files ``work`` reads, in chunk order (those it skips left out); the kernel is asked for them
    ahead (:class:`_Readahead`).
    """
    report(progress, stage, 0, n, message)
    if n == 0:
        return []
    check(cancel)
    results: list[T] = []
    bounds = [(s, min(s + chunk, n)) for s in range(0, n, chunk)]
    done = 0
    readahead = _Readahead(files)
    with ThreadPoolExecutor(max_workers=workers or default_workers(), thread_name_prefix=thread_name) as pool:
        pending = {pool.submit(work, s, e): e - s for s, e in bounds}
        try:
            while pending:
                finished, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for fut in finished:
                    results.append(fut.result())
                    done += pending.pop(fut)
                if finished:
                    readahead.advance(done)
                    report(progress, stage, done, n)
                check(cancel)
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise
        finally:
            readahead.stop()
    return results


def load_image_array(
    paths: Sequence[ImageSource],
    size: int,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
    workers: Optional[int] = None,
    *,
    chunk: int = 256,
    stage: str = "Decoding images",
    pixels: Optional[Sequence[Optional[np.ndarray]]] = None,
) -> tuple[np.ndarray, dict[int, str]]:
    """Decode and resize every file to ``size`` x ``size`` RGB in a thread pool.

    Returns ``(images, failed)``: ``images`` is uint8 ``(N, size, size, 3)``; ``failed`` maps
    the index of each image that could not be decoded to its reason (its slot stays zero).
    The whole image is resized without cropping (aspect ratio is not kept), so nothing a
    label depends on is cut away.  ``pixels[i]``, where given and not None, is image ``i`` already
    decoded (:func:`decode_small`): it is resized, not read again, to the same result.  Progress is
    reported per chunk of ``chunk`` files and ``cancel`` is checked between chunks (raises :class:`Cancelled`).
    """
    n = len(paths)
    out = np.zeros((n, size, size, 3), dtype=np.uint8)

    def work(start: int, stop: int) -> dict[int, str]:
        errors: dict[int, str] = {}
        for i in range(start, stop):
            if cancel is not None and cancel.cancelled:
                break
            try:
                kept = None if pixels is None else pixels[i]
                im = Image.fromarray(kept) if kept is not None else load_rgb(paths[i], draft_size=(size, size))
                out[i] = np.asarray(_resize(im, size))
            except ImageError as exc:
                errors[i] = exc.reason
        return errors

    failed: dict[int, str] = {}
    unread = paths if pixels is None else [p for p, kept in zip(paths, pixels) if kept is None]
    for errors in map_file_chunks(n, work, chunk=chunk, workers=workers or decode_workers(paths), stage=stage, progress=progress,
                                  cancel=cancel, thread_name="decode", files=unread):
        failed.update(errors)
    return out, dict(sorted(failed.items()))


__all__ = [
    "Blob",
    "IMAGE_EXTENSIONS",
    "ImageSource",
    "ImageError",
    "WHITE",
    "Cancelled",
    "check_image",
    "decode_small",
    "decode_workers",
    "default_workers",
    "image_size",
    "is_file_path",
    "load_image_array",
    "load_rgb",
    "spread_indices",
    "to_rgb",
]
