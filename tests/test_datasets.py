"""Dataset loading and validation: every bad input is skipped with its reason, never a crash."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFile

from pruning_core.data.datasets import (
    Dataset,
    DatasetError,
    load_dataset,
    load_image_folder,
    load_manifest,
)
from pruning_core.data.images import ImageError, check_image, load_image_array, load_rgb
from pruning_core.runtime.progress import CancelToken, Cancelled, Progress

RNG = np.random.default_rng(0)


def save_img(path: Path, size=(12, 10), mode="RGB", fmt=None, seed=0) -> Path:
    """A small noisy image of ``mode``; noise makes JPEG truncation hit entropy data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    rgb = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
    if mode == "RGB":
        im = rgb
    elif mode == "I;16":
        im = Image.fromarray((rng.integers(0, 65536, (h, w))).astype(np.uint16))
    elif mode == "F":
        im = Image.fromarray(rng.random((h, w)).astype(np.float32), "F")
    elif mode == "P":
        im = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        im.info["transparency"] = 0
    else:
        im = rgb.convert(mode)
    kw = {"transparency": 0} if mode == "P" else {}
    im.save(path, format=fmt, **kw)
    return path


def make_folder(root: Path, per_class=3, classes=("cat", "dog")) -> Path:
    for c in classes:
        for i in range(per_class):
            save_img(root / c / f"{i}.png", seed=hash((c, i)) % 1000)
    return root


def write_manifest(root: Path, rows: list[dict], name="m.csv") -> Path:
    path = root / name
    frame = pd.DataFrame(rows)
    if name.endswith(".csv"):
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


def issues_by_row(ds: Dataset) -> dict:
    return {i.row: i for i in ds.report.issues if i.row is not None}


# --------------------------------------------------------------------------- images


@pytest.mark.parametrize(
    "mode,fmt,suffix",
    [
        ("CMYK", "JPEG", "jpg"),
        ("CMYK", "TIFF", "tif"),
        ("I;16", "PNG", "png"),
        ("I;16", "TIFF", "tif"),
        ("I", "TIFF", "tif"),
        ("F", "TIFF", "tif"),
        ("P", "PNG", "png"),
        ("P", "GIF", "gif"),
        ("L", "PNG", "png"),
        ("LA", "PNG", "png"),
        ("RGBA", "PNG", "png"),
        ("RGBA", "WEBP", "webp"),
        ("1", "BMP", "bmp"),
        ("RGB", "BMP", "bmp"),
    ],
)
def test_every_mode_loads_as_rgb_of_the_right_size(tmp_path, mode, fmt, suffix):
    path = save_img(tmp_path / f"x.{suffix}", size=(13, 7), mode=mode, fmt=fmt)
    assert check_image(path) is None
    im = load_rgb(path)
    assert im.mode == "RGB" and im.size == (13, 7)


def test_rgba_composites_on_white_and_16bit_is_scaled(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)  # fully transparent black
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    assert (np.asarray(load_rgb(tmp_path / "t.png")) == 255).all()
    grey = np.full((4, 4), 65535, np.uint16)
    Image.fromarray(grey).save(tmp_path / "g.png")
    assert (np.asarray(load_rgb(tmp_path / "g.png")) == 255).all()
    Image.fromarray(np.full((4, 4), 257 * 10, np.uint16)).save(tmp_path / "g2.png")
    assert (np.asarray(load_rgb(tmp_path / "g2.png")) == 10).all()


def test_bad_image_files_have_clear_reasons(tmp_path):
    good = save_img(tmp_path / "ok.jpg", size=(64, 64))
    data = good.read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "rand.jpg").write_bytes(RNG.bytes(3000))
    (tmp_path / "empty.jpg").write_bytes(b"")
    png = save_img(tmp_path / "ok.png", size=(64, 64))
    (tmp_path / "trunc.png").write_bytes(png.read_bytes()[:-200])
    expected = {
        "trunc.jpg": "corrupt or truncated image file",
        "trunc.png": "corrupt or truncated image file",
        "rand.jpg": "not an image file",
        "empty.jpg": "file is empty",
        "missing.jpg": "file not found",
    }
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    for name, reason in expected.items():
        assert check_image(tmp_path / name) == reason, name
        with pytest.raises(ImageError) as err:
            load_rgb(tmp_path / name)
        assert err.value.reason == reason and isinstance(err.value, ValueError)
        assert name in str(err.value)


def test_load_image_array_resizes_reports_progress_and_zero_fills_failures(tmp_path):
    paths = [save_img(tmp_path / f"{i}.png", size=(20 + i, 10), seed=i) for i in range(5)]
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    paths.insert(2, tmp_path / "bad.jpg")
    seen: list[Progress] = []
    arr, failed = load_image_array(paths, size=8, progress=seen.append, workers=2, chunk=2)
    assert arr.shape == (6, 8, 8, 3) and arr.dtype == np.uint8
    assert failed == {2: "not an image file"}
    assert not arr[2].any() and arr[0].any()
    assert seen[-1].done == seen[-1].total == 6
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        load_image_array(paths, size=8, cancel=token)


# --------------------------------------------------------------------------- image folder


def test_image_folder_basic_and_warnings(tmp_path):
    root = make_folder(tmp_path / "ds")
    (root / "readme.txt").write_text("hi")  # file directly under root
    (root / "cat" / "notes.txt").write_text("x")  # non-image file
    (root / "cat" / ".DS_Store").write_bytes(b"\0")  # hidden: silent
    save_img(root / "dog" / "UPPER.JPG")  # extensions are case-insensitive
    (root / "empty_class").mkdir()
    seen = []
    ds = load_image_folder(root, progress=seen.append)
    assert len(ds) == 7 and ds.classes == ["cat", "dog"]
    assert list(ds.samples.columns) == ["path", "label"]
    assert isinstance(ds.samples.index, pd.RangeIndex)
    assert "dog/UPPER.JPG" in set(ds.samples.path)
    assert ds.root == root.resolve() and ds.root.is_absolute()
    assert all(p.is_file() for p in ds.abspaths())
    np.testing.assert_array_equal(ds.label_ids, (ds.samples.label == "dog").astype(np.int64))
    reasons = {i.reason for i in ds.report.issues}
    assert "class 'empty_class' has no images" in reasons
    assert any("directly under the root" in r for r in reasons)
    assert any(i.path == "cat/notes.txt" and i.severity == "warning" for i in ds.report.issues)
    assert not any(".DS_Store" in (i.path or "") for i in ds.report.issues)
    assert ds.report.n_skipped == 0
    assert seen and seen[-1].done == seen[-1].total == 7


def test_image_folder_skips_corrupt_truncated_and_empty_files(tmp_path):
    root = make_folder(tmp_path / "ds")
    (root / "cat" / "rand.jpg").write_bytes(RNG.bytes(500))
    (root / "cat" / "empty.png").write_bytes(b"")
    jpg = save_img(tmp_path / "big.jpg", size=(64, 64)).read_bytes()
    (root / "dog" / "trunc.jpg").write_bytes(jpg[: len(jpg) // 2])
    ds = load_image_folder(root)
    assert len(ds) == 6
    by_path = {i.path: i for i in ds.report.errors}
    assert by_path["cat/rand.jpg"].reason == "not an image file"
    assert by_path["cat/empty.png"].reason == "file is empty"
    assert by_path["dog/trunc.jpg"].reason == "corrupt or truncated image file"
    assert ds.report.n_skipped == 3
    assert ds.report.summary() == "6 valid samples; 3 skipped: 1 empty file, 1 not an image, 1 corrupt image"
    assert set(ds.report.as_frame().columns) >= {"row", "path", "reason", "severity"}
    # check_images=False: only stat (empty file still caught), decode problems pass
    fast = load_image_folder(root, check_images=False)
    assert len(fast) == 8 and fast.report.n_skipped == 1


def test_image_folder_symlink_outside_root_is_skipped(tmp_path):
    root = make_folder(tmp_path / "ds")
    outside = save_img(tmp_path / "elsewhere" / "x.png")
    os.symlink(outside, root / "cat" / "link.png")
    os.symlink(tmp_path / "elsewhere", root / "linked_class")
    inside = root / "dog" / "0.png"
    os.symlink(inside, root / "cat" / "inner_link.png")  # inside the root: fine
    ds = load_image_folder(root)
    errs = {i.path: i.reason for i in ds.report.errors}
    assert "outside the dataset root" in errs["cat/link.png"]
    warnings = {i.path: (i.kind, i.reason) for i in ds.report.warnings}  # the folder link: one entry, not followed
    assert warnings["linked_class"] == ("outside root", "folder symlink leads outside the dataset root; not followed")
    assert not any("x.png" in str(i.path) for i in ds.report.issues)
    assert "cat/inner_link.png" in set(ds.samples.path)


def test_image_folder_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_image_folder(tmp_path / "nope")
    (tmp_path / "flat").mkdir()
    save_img(tmp_path / "flat" / "a.png")
    with pytest.raises(DatasetError, match="no images found.*no class folders"):
        load_image_folder(tmp_path / "flat")
    (tmp_path / "bad" / "c").mkdir(parents=True)
    (tmp_path / "bad" / "c" / "a.jpg").write_bytes(b"xx")
    with pytest.raises(DatasetError, match="no valid samples.*not an image file"):
        load_image_folder(tmp_path / "bad")


def test_single_class_warns(tmp_path):
    ds = load_image_folder(make_folder(tmp_path / "ds", classes=("only",)))
    assert len(ds) == 3 and any(i.kind == "single class" for i in ds.report.warnings)


# --------------------------------------------------------------------------- manifests


def test_manifest_bad_rows_are_skipped_with_row_numbers(tmp_path):
    root = make_folder(tmp_path / "ds")
    save_img(tmp_path / "outside.png")
    (root / "cat" / "rand.jpg").write_bytes(RNG.bytes(400))
    os.symlink(tmp_path / "outside.png", root / "cat" / "sym.png")
    rows = [
        {"path": "cat/0.png", "label": "cat", "true_label": "cat"},  # 1 ok
        {"path": "cat/missing.png", "label": "cat", "true_label": "cat"},  # 2 missing
        {"path": "cat/rand.jpg", "label": "cat", "true_label": "cat"},  # 3 corrupt
        {"path": "cat/1.png", "label": "", "true_label": "cat"},  # 4 empty label
        {"path": "./cat/0.png", "label": "dog", "true_label": "cat"},  # 5 duplicate of 1
        {"path": "../outside.png", "label": "cat", "true_label": "cat"},  # 6 escapes
        {"path": str(tmp_path / "outside.png"), "label": "cat", "true_label": "cat"},  # 7 abs outside
        {"path": str(root / "dog" / "0.png"), "label": "dog", "true_label": "dog"},  # 8 abs inside: ok
        {"path": "cat/sym.png", "label": "cat", "true_label": "cat"},  # 9 symlink outside
        {"path": "dog/1.png", "label": "dog", "true_label": "cat"},  # 10 ok
    ]
    ds = load_manifest(write_manifest(root, rows))
    by_row = issues_by_row(ds)
    assert sorted(by_row) == [2, 3, 4, 5, 6, 7, 9]
    assert by_row[2].reason == "file not found" and by_row[2].path == "cat/missing.png"
    assert by_row[3].reason == "not an image file"
    assert by_row[4].reason == "empty or missing label"
    assert by_row[5].reason == "duplicate of row 1 (labelled 'cat' there, 'dog' here)"
    assert "escapes the dataset root" in by_row[6].reason
    assert "absolute path is outside the dataset root" in by_row[7].reason
    assert "symlink points outside the dataset root" in by_row[9].reason
    assert all(i.severity == "error" for i in by_row.values())
    assert ds.samples.path.tolist() == ["cat/0.png", "dog/0.png", "dog/1.png"]
    assert list(ds.samples.columns) == ["path", "label", "true_label"]
    assert ds.samples.true_label.tolist() == ["cat", "dog", "cat"]  # extra column carried through
    assert ds.report.n_skipped == 7
    frame = ds.report.as_frame()
    assert frame[frame.severity == "error"].row.tolist() == [2, 3, 4, 5, 6, 7, 9]
    assert frame[frame.severity == "warning"].path.tolist() == ["cat"]  # one valid cat left: a single-sample class
    summary = ds.report.summary()
    assert summary.startswith("3 valid samples; 7 skipped: ")
    assert "1 missing file" in summary and "3 outside root" in summary and "1 duplicate path" in summary


def test_manifest_missing_columns_and_unreadable_files(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("file,class\na.jpg,cat\n")
    with pytest.raises(DatasetError) as err:
        load_manifest(bad)
    msg = str(err.value)
    assert "'path', 'label'" in msg and "found columns: 'file', 'class'" in msg
    (tmp_path / "semi.csv").write_text("path;label\na.jpg;cat\n")
    with pytest.raises(DatasetError, match="separator"):
        load_manifest(tmp_path / "semi.csv")
    with pytest.raises(DatasetError, match="does not exist"):
        load_manifest(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DatasetError, match="empty"):
        load_manifest(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("path,label\n")
    with pytest.raises(DatasetError, match="no data rows"):
        load_manifest(tmp_path / "header.csv")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DatasetError, match="could not be read as parquet"):
        load_manifest(tmp_path / "broken.parquet")
    (tmp_path / "latin.csv").write_bytes("path,label\ncaf\xe9.png,x\n".encode("latin-1"))
    with pytest.raises(DatasetError, match="not UTF-8"):
        load_manifest(tmp_path / "latin.csv")
    with pytest.raises(DatasetError, match="no valid samples.*row 1: a.jpg: file not found"):
        load_manifest(write_manifest(tmp_path, [{"path": "a.jpg", "label": "x"}], "only_missing.csv"))


def test_manifest_parquet_int_labels_captions_and_bom(tmp_path):
    root = make_folder(tmp_path / "ds")
    rows = [
        {"path": "cat/0.png", "label": 3, "caption": "a cat", "score": 0.5},
        {"path": "dog/0.png", "label": 10, "caption": None, "score": 1.5},
    ]
    ds = load_manifest(write_manifest(root, rows, "m.parquet"))
    assert ds.samples.label.tolist() == ["3", "10"] and ds.classes == ["10", "3"]
    assert ds.has_captions and ds.samples.caption.tolist() == ["a cat", ""]
    assert ds.samples.score.tolist() == [0.5, 1.5]
    assert any(i.kind == "empty caption" for i in ds.report.warnings)
    # CSV written by Excel: BOM, int labels with a gap, a class literally called "NA"
    (root / "x.csv").write_bytes(
        "\ufeffpath,label,note\ncat/0.png,1,NA\ncat/1.png,,\ndog/0.png,NA,ok\ncat/2.png,1,\n".encode()
    )
    ds = load_manifest(root / "x.csv")
    assert ds.samples.label.tolist() == ["1", "NA", "1"]
    assert ds.samples.note.isna().tolist() == [True, False, True]
    assert issues_by_row(ds)[2].reason == "empty or missing label"
    assert not ds.has_captions


def test_manifest_root_argument_and_dispatch(tmp_path):
    root = make_folder(tmp_path / "images")
    manifest = write_manifest(tmp_path, [{"path": "cat/0.png", "label": "cat"}, {"path": "dog/0.png", "label": "dog"}])
    ds = load_dataset(manifest, root=root)
    assert len(ds) == 2 and ds.root == root.resolve() and ds.name == "m"
    assert len(load_dataset(root)) == 6
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(DatasetError, match="neither a folder nor a manifest"):
        load_dataset(tmp_path / "x.txt")
    with pytest.raises(DatasetError, match="unsupported manifest type"):
        load_manifest(tmp_path / "x.txt")


def test_manifest_progress_and_cancel(tmp_path):
    root = make_folder(tmp_path / "ds", per_class=20)
    rows = [{"path": f"{c}/{i}.png", "label": c} for c in ("cat", "dog") for i in range(20)]
    manifest = write_manifest(root, rows)
    seen: list[Progress] = []
    load_manifest(manifest, progress=seen.append)
    assert seen[0].done == 0 and seen[-1].done == seen[-1].total == 40
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        load_manifest(manifest, cancel=token)


# --------------------------------------------------------------------------- fingerprint


def test_fingerprint_stable_and_sensitive(tmp_path):
    root = make_folder(tmp_path / "ds")
    rows = [{"path": f"{c}/{i}.png", "label": c} for c in ("cat", "dog") for i in range(3)]
    manifest = write_manifest(root, rows)
    fp = load_manifest(manifest).fingerprint
    assert fp == load_manifest(manifest).fingerprint
    assert len(fp) == 64 and int(fp, 16) >= 0
    # same in another process
    code = (
        "import sys; from pruning_core.data.datasets import load_manifest;"
        "print(load_manifest(sys.argv[1]).fingerprint)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(manifest)],
        capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1],
    )
    assert out.stdout.strip() == fp
    # a label change
    rows2 = [dict(r) for r in rows]
    rows2[0]["label"] = "dog"
    assert load_manifest(write_manifest(root, rows2, "m2.csv")).fingerprint != fp
    # a file change (content and mtime)
    time.sleep(0.01)
    save_img(root / "cat" / "0.png", size=(12, 11), seed=99)
    fp2 = load_manifest(manifest).fingerprint
    assert fp2 != fp
    # only the mtime changes
    st = (root / "cat" / "0.png").stat()
    os.utime(root / "cat" / "0.png", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert load_manifest(manifest).fingerprint != fp2


# --------------------------------------------------------------------------- real data


@pytest.mark.slow
def test_real_cifar_manifest(cifar_dir, cifar_manifests):
    ds = load_manifest(cifar_manifests / "train_sym20.csv", root=cifar_dir)
    assert len(ds) == 50_000 and len(ds.classes) == 10 and ds.report.n_skipped == 0
    assert list(ds.samples.columns) == ["path", "label", "true_label"]
    noisy = (ds.samples.label != ds.samples.true_label).mean()
    assert 0.15 < noisy < 0.25
    assert np.bincount(ds.label_ids, minlength=10).sum() == 50_000
    arr, failed = load_image_array(ds.abspaths()[:500], size=32)
    assert arr.shape == (500, 32, 32, 3) and not failed and arr.std() > 10


def test_small_images_are_decoded_on_one_thread_and_large_ones_on_several(tmp_path):
    from pruning_core.data.images import SMALL_IMAGE_BYTES, decode_workers, default_workers

    rng = np.random.default_rng(0)
    for name, side in (("small", 16), ("large", 96)):
        (tmp_path / name).mkdir()
        for i in range(5):
            Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(tmp_path / name / f"{i}.png")
    small = sorted(str(p) for p in (tmp_path / "small").iterdir())
    large = sorted(str(p) for p in (tmp_path / "large").iterdir())
    assert os.path.getsize(small[0]) < SMALL_IMAGE_BYTES < os.path.getsize(large[0])
    assert decode_workers(small) == 1
    assert decode_workers(large) == default_workers()
    assert decode_workers(small + [str(tmp_path / "missing.png")] * 100) == 1  # unreadable ones are left out


def test_a_file_that_decoded_before_is_not_decoded_again_until_it_changes(tmp_path, monkeypatch):
    import pruning_core.data.images as images_module

    root = make_folder(tmp_path / "data")
    ledger = tmp_path / "store" / "checked"
    real_check, real_small = images_module.check_image, images_module.decode_small
    decoded: list[str] = []
    monkeypatch.setattr(images_module, "check_image", lambda path, **kw: decoded.append(str(path)) or real_check(path, **kw))
    monkeypatch.setattr(images_module, "decode_small", lambda path: decoded.append(str(path)) or real_small(path))

    first = load_image_folder(root, ledger_dir=ledger, workers=1)
    assert len(decoded) == 6 and first.report.n_valid == 6
    decoded.clear()
    again = load_image_folder(root, ledger_dir=ledger, workers=1)
    assert decoded == [] and again.fingerprint == first.fingerprint  # all six stat-ed, none decoded

    broken = root / "dog" / "1.png"
    broken.write_bytes(broken.read_bytes()[:40])  # a new size (and mtime): decoded again, and caught
    later = load_image_folder(root, ledger_dir=ledger, workers=1)
    assert decoded == [str(broken)] and later.report.n_valid == 5
    decoded.clear()
    load_image_folder(root, ledger_dir=ledger, workers=1)
    assert decoded == [str(broken)]  # a failing file is never recorded: checked every time

    for entry in ledger.iterdir():
        entry.write_bytes(b"not a parquet file")  # a damaged ledger: every file is decoded, none wrongly trusted
    decoded.clear()
    assert load_image_folder(root, ledger_dir=ledger, workers=1).report.n_valid == 5 and len(decoded) == 6
    decoded.clear()
    load_image_folder(root, ledger_dir=ledger, workers=1)
    assert decoded == [str(broken)]  # and it was written afresh


def test_a_ledger_that_cannot_be_written_costs_only_the_next_load_its_decodes(tmp_path, caplog):
    root = make_folder(tmp_path / "data")
    blocked = tmp_path / "store-is-a-file"
    blocked.write_text("")  # the ledger's folder cannot be made here
    dataset = load_image_folder(root, ledger_dir=blocked / "checked", workers=1)
    assert dataset.report.n_valid == 6
    assert any("validation ledger" in r.getMessage() for r in caplog.records)


def test_the_pixels_a_load_kept_decode_to_what_the_files_decode_to(tmp_path, monkeypatch):
    """Small images keep the pixels the check decoded; the first decode resizes them, to the very array reading the
    files gives (32-px JPEGs at 16 px included, where a DCT-scaled draft would differ), and reads no file."""
    import pruning_core.data.datasets as datasets_module
    import pruning_core.data.images as images_module
    from pruning_core.data.datasets import decoded_images
    from cache.store import ResultStore

    root = tmp_path / "data"
    for i in range(6):
        save_img(root / ("cat" if i % 2 else "dog") / f"{i}.jpg", size=(32, 32), seed=i)
    save_img(root / "cat" / "wide.png", size=(40, 24), mode="P", seed=9)
    save_img(root / "dog" / "large.jpg", size=(96, 80), seed=10)  # larger than KEEP_PIXELS_MAX_SIDE: nothing kept
    dataset = load_image_folder(root, workers=1)
    kept = dict(zip(dataset.samples["path"], dataset.kept_pixels))
    assert kept["dog/large.jpg"] is None
    assert kept["cat/wide.png"].shape == (24, 40, 3) and kept["cat/1.jpg"].shape == (32, 32, 3)

    for size in (16, 24, 32):
        from_files, _ = load_image_array(dataset.image_refs(), size, workers=1)
        opened: list[str] = []
        real_load = images_module.load_rgb
        monkeypatch.setattr(images_module, "load_rgb", lambda path, **kw: opened.append(str(path)) or real_load(path, **kw))
        from_pixels = decoded_images(dataset, size, ResultStore(tmp_path / f"store{size}"))
        monkeypatch.setattr(images_module, "load_rgb", real_load)
        assert opened == [str(root / "dog" / "large.jpg")]
        np.testing.assert_array_equal(from_pixels, from_files)

    monkeypatch.setattr(datasets_module, "KEEP_PIXELS_MAX_BYTES", 5 * 32 * 32 * 3)  # six 32-px images do not fit
    assert load_image_folder(root, workers=1).kept_pixels is None


def test_files_are_requested_from_the_kernel_ahead_of_the_decoders_but_not_too_far(tmp_path, monkeypatch):
    import threading

    import pruning_core.data.images as images_module

    if not hasattr(os, "posix_fadvise"):
        pytest.skip("no posix_fadvise on this platform")  # macOS / Windows: read-ahead does nothing there
    files = [str(save_img(tmp_path / f"{i}.png", seed=i)) for i in range(10)]
    asked: list[str] = []
    lock = threading.Condition()
    real = os.posix_fadvise

    def record(fd, offset, length, advice):
        assert advice == os.POSIX_FADV_WILLNEED
        with lock:
            asked.append(os.readlink(f"/proc/self/fd/{fd}"))
            lock.notify_all()
        return real(fd, offset, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", record)
    monkeypatch.setattr(images_module, "READAHEAD_FILES", 4)
    ahead = images_module._Readahead(files)
    with lock:
        assert lock.wait_for(lambda: len(asked) == 4, timeout=5)
    time.sleep(0.2)
    assert asked == files[:4]  # waits for the decoders
    ahead.advance(3)
    with lock:
        assert lock.wait_for(lambda: len(asked) == 7, timeout=5)
    ahead.stop()
    ahead._thread.join(timeout=5)
    assert not ahead._thread.is_alive() and asked == files[:7]

    outside = save_img(tmp_path / "elsewhere" / "secret.png", seed=11)
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "x.png").symlink_to(outside)
    asked.clear()
    load_image_array([str(tmp_path / "linked" / "x.png")], 8)
    assert asked == []  # a symlink is not followed ahead of the check that refuses links out of the root

    given: list[list] = []

    class Recorded(images_module._Readahead):
        def __init__(self, paths):
            given.append(list(paths))
            super().__init__([])

    monkeypatch.setattr(images_module, "_Readahead", Recorded)
    load_image_array(files, 8)
    dataset = load_image_folder(make_folder(tmp_path / "data"), workers=1)
    assert given[0] == files  # the decode reads every file: every one is asked for
    assert sorted(given[1]) == sorted(str(p) for p in dataset.abspaths())  # and the check's too
    load_image_array(dataset.abspaths(), 8, pixels=dataset.kept_pixels)
    assert given[2] == []  # nothing to read: the load kept every image's pixels
