"""Dataset formats read in place: parquet / arrow tables (HF save_to_disk and parquet export), WebDataset
shards, split folders and split columns; ids, fingerprints, validation, decoding and the CLI on them."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pruning_core.cli import main
from pruning_core.data.datasets import DatasetError, decoded_images, load_dataset
from pruning_core.data.images import load_image_array
from pruning_core.data.readers import detect_format
from pruning_core.demo.tiny_clip import TINY_CLIP_NAME
from pruning_core.scoring.score_table import ScoreTable

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220)}


def pixels(i: int, label: str) -> np.ndarray:
    """A 16 px image of its class's colour, brightened per index so every image differs."""
    return np.clip(np.array(COLOURS[label]) + 3 * i, 0, 255).astype(np.uint8)[None, None].repeat(16, 0).repeat(16, 1)


def encoded(i: int, label: str, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels(i, label)).save(out, fmt)
    return out.getvalue()


LABELS = ["red", "blue"] * 4


def write_parquet(path: Path, images: list[bytes], labels: list) -> Path:
    pq.write_table(pa.table({"image": pa.array(images, pa.binary()), "label": labels}), path, row_group_size=3)
    return path


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_shard(path: Path, samples: list[tuple[str, dict[str, bytes]]], tar_format: int = tarfile.PAX_FORMAT) -> Path:
    with tarfile.open(path, "w", format=tar_format) as tar:
        for key, members in samples:
            for ext, data in members.items():
                add_member(tar, f"{key}.{ext}", data)
    return path


def issue_of(dataset, path: str) -> pd.Series:
    frame = dataset.report.as_frame()
    hit = frame[frame["path"] == path]
    assert len(hit) == 1, frame
    return hit.iloc[0]


# --------------------------------------------------------------------------- parquet / arrow


def test_parquet_rows_are_ids_and_bad_rows_are_one_line_each(tmp_path):
    images = [encoded(i, lab) for i, lab in enumerate(LABELS)]
    images[2] = b""  # empty bytes
    whole = encoded(4, "red", "JPEG")
    images[4] = whole[:len(whole) - 40]  # a JPEG cut short
    labels = list(LABELS)
    labels[6] = None  # empty label
    path = write_parquet(tmp_path / "x.parquet", images, labels)
    assert detect_format(str(path)) == "table"
    dataset = load_dataset(path)
    assert dataset.in_container and dataset.root == tmp_path.resolve()
    assert dataset.samples["path"].tolist() == [f"x.parquet#{i}" for i in (0, 1, 3, 5, 7)]
    assert dataset.samples["label"].tolist() == ["red", "blue", "blue", "blue", "blue"]
    assert issue_of(dataset, "x.parquet#2")[["reason", "kind"]].tolist() == ["image bytes are empty", "empty image"]
    assert issue_of(dataset, "x.parquet#4")["kind"] == "corrupt image"
    assert issue_of(dataset, "x.parquet#6")["kind"] == "empty label"
    assert dataset.report.n_skipped == 3


def test_parquet_manifest_of_paths_is_still_a_manifest(tmp_path):
    Image.fromarray(pixels(0, "red")).save(tmp_path / "a.png")
    Image.fromarray(pixels(0, "blue")).save(tmp_path / "b.png")
    pd.DataFrame({"path": ["a.png", "b.png"], "label": ["red", "blue"]}).to_parquet(tmp_path / "m.parquet")
    assert detect_format(str(tmp_path / "m.parquet")) == "manifest"
    dataset = load_dataset(tmp_path / "m.parquet")
    assert not dataset.in_container and dataset.samples["path"].tolist() == ["a.png", "b.png"]


def test_decoding_reads_the_members_pixels(tmp_path, isolated_cache):
    from cache.store import ResultStore

    path = write_parquet(tmp_path / "x.parquet", [encoded(i, lab) for i, lab in enumerate(LABELS)], LABELS)
    dataset = load_dataset(path)
    expected = np.stack([pixels(i, lab) for i, lab in enumerate(LABELS)])
    decoded, failed = load_image_array(dataset.image_refs(), 16)
    assert failed == {} and np.array_equal(decoded, expected)
    cached = decoded_images(dataset, 16, ResultStore(tmp_path / "store"))  # the dynamics step's decoding
    assert np.array_equal(cached, expected)


def test_ids_and_fingerprint_are_stable_across_reloads_and_follow_the_bytes(tmp_path):
    images = [encoded(i, lab) for i, lab in enumerate(LABELS)]
    path = write_parquet(tmp_path / "x.parquet", images, LABELS)
    first, again = load_dataset(path), load_dataset(path)
    assert first.samples["path"].tolist() == again.samples["path"].tolist()
    assert first.fingerprint == again.fingerprint
    changed = list(images)
    changed[5] = encoded(40, "blue")  # one image's bytes differ, every id and label the same
    write_parquet(path, changed, LABELS)
    reloaded = load_dataset(path)
    assert reloaded.samples["path"].tolist() == first.samples["path"].tolist()
    assert reloaded.fingerprint != first.fingerprint
    assert np.array_equal(load_image_array(reloaded.image_refs()[5:6], 16)[0][0], pixels(40, "blue"))


def hf_dataset(n: int = 8):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["blue", "red"])})
    rows = {"image": [{"bytes": encoded(i, lab), "path": None} for i, lab in enumerate(LABELS[:n])],
            "label": [["blue", "red"].index(lab) for lab in LABELS[:n]]}
    return datasets.Dataset.from_dict(rows, features=features)


def test_hf_save_to_disk_folder_and_dataset_dict(tmp_path):
    import datasets

    one = tmp_path / "one"
    hf_dataset().save_to_disk(str(one))
    assert detect_format(str(one)) == "hf-disk"
    dataset = load_dataset(one)
    assert dataset.samples["label"].tolist() == LABELS  # ClassLabel ids become their names
    assert dataset.samples["path"].iat[3] == "data-00000-of-00001.arrow#3"
    assert np.array_equal(load_image_array(dataset.image_refs(), 16)[0][3], pixels(3, "blue"))

    both = tmp_path / "both"
    datasets.DatasetDict({"train": hf_dataset(), "test": hf_dataset(4)}).save_to_disk(str(both))
    train, test = load_dataset(both), load_dataset(both, split="test")
    assert (train.split, train.splits, len(train)) == ("train", ("train", "test"), 8)
    assert (test.split, len(test)) == ("test", 4) and test.samples["path"].iat[0] == "test/data-00000-of-00001.arrow#0"
    with pytest.raises(DatasetError, match="no split 'val'; it has test, train"):
        load_dataset(both, split="val")


def test_hf_parquet_export_folder_by_split(tmp_path):
    (tmp_path / "data").mkdir()
    hf_dataset().to_parquet(str(tmp_path / "data" / "train-00000-of-00001.parquet"))
    hf_dataset(4).to_parquet(str(tmp_path / "data" / "test-00000-of-00001.parquet"))
    assert detect_format(str(tmp_path)) == "table"
    train, test = load_dataset(tmp_path), load_dataset(tmp_path, split="test")
    assert train.samples["label"].tolist() == LABELS and train.splits == ("train", "test")
    assert test.samples["path"].tolist() == [f"data/test-00000-of-00001.parquet#{i}" for i in range(4)]


# --------------------------------------------------------------------------- WebDataset shards


def shard_samples(start: int, n: int) -> list[tuple[str, dict[str, bytes]]]:
    return [(f"s{i:04d}", {"png": encoded(i, LABELS[i % 8]), "cls": LABELS[i % 8].encode()})
            for i in range(start, start + n)]


def test_shards_by_brace_pattern_keep_shard_and_key(tmp_path):
    write_shard(tmp_path / "d-000000.tar", shard_samples(0, 4))
    write_shard(tmp_path / "d-000001.tar", shard_samples(4, 4))
    pattern = str(tmp_path / "d-{000000..000001}.tar")
    assert detect_format(pattern) == "webdataset"
    dataset = load_dataset(pattern)
    assert dataset.samples["path"].tolist()[3:5] == ["d-000000.tar#s0003", "d-000001.tar#s0004"]
    assert dataset.samples["label"].tolist() == LABELS and dataset.report.issues == []
    assert np.array_equal(load_image_array(dataset.image_refs(), 16)[0][6], pixels(6, "red"))
    assert load_dataset(tmp_path).samples["path"].tolist() == dataset.samples["path"].tolist()  # the folder too


def test_shards_written_by_the_webdataset_library(tmp_path):
    webdataset = pytest.importorskip("webdataset")
    with webdataset.ShardWriter(str(tmp_path / "w-%06d.tar"), maxcount=5, verbose=0) as sink:
        for i, lab in enumerate(LABELS):
            sink.write({"__key__": f"sample{i:03d}", "png": encoded(i, lab), "cls": ["blue", "red"].index(lab)})
    dataset = load_dataset(str(tmp_path / "w-{000000..000001}.tar"))
    assert dataset.samples["path"].tolist()[4:6] == ["w-000000.tar#sample004", "w-000001.tar#sample005"]
    assert dataset.samples["label"].tolist() == [str(["blue", "red"].index(lab)) for lab in LABELS]
    assert dataset.report.issues == []
    expected = np.stack([pixels(i, lab) for i, lab in enumerate(LABELS)])
    assert np.array_equal(load_image_array(dataset.image_refs(), 16)[0], expected)


@pytest.mark.parametrize("tar_format", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_long_member_names_in_pax_and_gnu_headers(tmp_path, tar_format):
    from pruning_core.data.readers.shards import _fast_members, _tarfile_members

    long_key = "deep/" * 30 + "k0"  # over ustar's 100 + 155 characters: a PAX header, or a GNU long name
    shard = write_shard(tmp_path / "d-000000.tar", [(long_key, {"png": encoded(0, "red"), "cls": b"red"}),
                                                    ("k1", {"png": encoded(1, "blue"), "cls": b"blue"})], tar_format)
    listed, end, error = _tarfile_members(shard)
    assert _fast_members(memoryview(shard.read_bytes())) == (listed, end) and error is None
    dataset = load_dataset(tmp_path)
    assert dataset.samples["path"].tolist() == [f"d-000000.tar#{long_key}", "d-000000.tar#k1"]
    assert np.array_equal(load_image_array(dataset.image_refs(), 16)[0][1], pixels(1, "blue"))


def test_truncated_shard_keeps_what_comes_before_the_cut(tmp_path):
    write_shard(tmp_path / "d-000000.tar", shard_samples(0, 4))
    cut = write_shard(tmp_path / "d-000001.tar", shard_samples(4, 4))
    data = cut.read_bytes()
    cut.write_bytes(data[:len(data) // 2])  # the shard ends inside a sample
    dataset = load_dataset(tmp_path)
    problems = dataset.report.as_frame()
    truncated = problems[problems["kind"] == "truncated shard"]
    assert truncated["path"].tolist() == ["d-000001.tar"] and "truncated shard" in truncated["reason"].iat[0]
    kept = dataset.samples["path"].tolist()
    assert kept[:4] == [f"d-000000.tar#s{i:04d}" for i in range(4)] and "d-000001.tar#s0004" in kept
    assert "d-000001.tar#s0007" not in kept


def test_shard_duplicate_keys_empty_labels_and_bad_bytes(tmp_path):
    samples = shard_samples(0, 4)
    samples[1][1]["cls"] = b"  "  # empty label
    samples[2][1]["png"] = b"not an image at all"
    samples.append(("s0000", {"png": encoded(9, "red"), "cls": b"red"}))  # the key again in the same shard
    samples.append(("s0009", {"cls": b"red"}))  # a key with no image member
    write_shard(tmp_path / "d-000000.tar", samples)
    dataset = load_dataset(tmp_path)
    assert dataset.samples["path"].tolist() == ["d-000000.tar#s0000", "d-000000.tar#s0003"]
    assert issue_of(dataset, "d-000000.tar#s0001")["kind"] == "empty label"
    assert issue_of(dataset, "d-000000.tar#s0002")["kind"] == "not an image"
    frame = dataset.report.as_frame()
    dup = frame[frame["kind"] == "duplicate key"]
    assert dup["path"].tolist() == ["d-000000.tar#s0000"] and "duplicate of" in dup["reason"].iat[0]
    assert issue_of(dataset, "d-000000.tar#s0009")["kind"] == "no image member"


def test_shard_fingerprint_follows_one_members_bytes(tmp_path):
    write_shard(tmp_path / "d-000000.tar", shard_samples(0, 4))
    before = load_dataset(tmp_path).fingerprint
    assert load_dataset(tmp_path).fingerprint == before
    samples = shard_samples(0, 4)
    samples[2][1]["png"] = encoded(50, "red")
    write_shard(tmp_path / "d-000000.tar", samples)
    assert load_dataset(tmp_path).fingerprint != before


def test_shard_json_labels_and_txt_captions(tmp_path):
    write_shard(tmp_path / "d-000000.tar", [
        (f"k{i}", {"jpg": encoded(i, lab, "JPEG"), "json": json.dumps({"label": lab}).encode(),
                   "txt": f"a {lab} square".encode()}) for i, lab in enumerate(LABELS)])
    dataset = load_dataset(tmp_path)
    assert dataset.samples["label"].tolist() == LABELS
    assert dataset.samples["caption"].iat[1] == "a blue square"


# --------------------------------------------------------------------------- splits


def test_split_folders_and_split_column(tmp_path):
    for split, n in (("train", 4), ("test", 2)):
        for lab in COLOURS:
            (tmp_path / "d" / split / lab).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(pixels(i, lab)).save(tmp_path / "d" / split / lab / f"{i}.png")
    root = tmp_path / "d"
    assert detect_format(str(root)) == "splits"
    train, test = load_dataset(root), load_dataset(root, split="test")
    assert (train.split, train.splits, len(train)) == ("train", ("train", "test"), 8)
    assert (test.name, len(test)) == ("d:test", 4)
    with pytest.raises(DatasetError, match="no split 'val'"):
        load_dataset(root, split="val")

    manifest = pd.DataFrame({"path": [f"{s}/red/0.png" for s in ("train", "test")] + ["train/blue/0.png"],
                             "label": ["red", "red", "blue"], "split": ["train", "test", "train"]})
    manifest.to_csv(root / "m.csv", index=False)
    by_column = load_dataset(root / "m.csv")
    assert by_column.samples["path"].tolist() == ["train/red/0.png", "train/blue/0.png"]
    assert by_column.splits == ("train", "test")
    assert load_dataset(root / "m.csv", split="test").samples["path"].tolist() == ["test/red/0.png"]


# --------------------------------------------------------------------------- the CLI


def run(*args) -> int:
    return main([str(a) for a in args])


def test_validate_and_score_a_parquet_through_the_cli(tmp_path, capsys):
    images = [encoded(i, lab) for i, lab in enumerate(LABELS * 2)]
    images[3] = b""
    path = write_parquet(tmp_path / "tiny.parquet", images, LABELS * 2)
    assert run("validate", path, "--out", tmp_path / "issues.csv") == 0
    issues = pd.read_csv(tmp_path / "issues.csv")
    assert issues[["path", "kind"]].values.tolist() == [["tiny.parquet#3", "empty image"]]

    out = tmp_path / "scores.parquet"
    assert run("--cache-dir", tmp_path / "cache", "score", path, "--out", out, "--clip-model", TINY_CLIP_NAME,
               "--clip-pretrained", "none", "--device", "cpu", "--image-quality") == 0
    table = ScoreTable.load(out)
    assert table.frame["path"].tolist() == [f"tiny.parquet#{i}" for i in range(16) if i != 3]
    assert table.frame["image.dark"].notna().all()  # image quality reads the members in place too
    # every member was decoded and embedded: a member that failed would be a zero vector, aligned 0 like the others
    assert table.frame["clip.label_alignment"].nunique() == len(table.frame)

    kept = tmp_path / "kept.csv"
    assert run("select", out, "--keep", "0.5", "--out", kept) == 0
    assert set(pd.read_csv(kept)["path"]) <= set(table.frame["path"])
    again = tmp_path / "again.csv"
    assert run("select", "--replay", tmp_path / "kept.manifest.json", "--out", again) == 0
    assert again.read_bytes() == kept.read_bytes()


def test_dynamics_on_shards_through_the_cli(tmp_path):
    write_shard(tmp_path / "d-000000.tar", shard_samples(0, 6))
    write_shard(tmp_path / "d-000001.tar", shard_samples(6, 6))
    out = tmp_path / "dyn.parquet"
    assert run("--cache-dir", tmp_path / "cache", "score", tmp_path / "d-{000000..000001}.tar", "--no-clip",
               "--dynamics", "--epochs", "2", "--folds", "2", "--image-size", "16", "--device", "cpu",
               "--out", out) == 0
    table = ScoreTable.load(out)
    assert table.frame["path"].tolist()[5:7] == ["d-000000.tar#s0005", "d-000001.tar#s0006"]
    assert table.frame["dynamics.aum"].notna().all()


def test_bad_format_requests_are_one_line_and_exit_2(tmp_path, capsys):
    path = write_parquet(tmp_path / "x.parquet", [encoded(i, lab) for i, lab in enumerate(LABELS)], LABELS)
    assert run("validate", path, "--split", "test", "--out", tmp_path / "i.csv") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "x.parquet" in err and "split" in err
    assert run("validate", tmp_path / "missing-{000000..000003}.tar", "--out", tmp_path / "i.csv") == 2
    assert "missing-000000.tar: shard not found" in capsys.readouterr().err


# --------------------------------------------------------------------------- the Dataset page


def test_dataset_page_reads_shards_in_place_and_switches_split(tmp_path):
    import datasets
    from streamlit.testing.v1 import AppTest

    from ui import state

    def page(source: state.DatasetSource) -> AppTest:
        at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "pages" / "dataset.py"), default_timeout=120)
        at.session_state[state.DATASET] = source
        return at.run()

    write_shard(tmp_path / "d-000000.tar", shard_samples(0, 4))
    at = page(state.DatasetSource("container", str(tmp_path / "d-{000000..000000}.tar")))
    assert not at.exception
    assert {m.label: m.value for m in at.metric}["Samples"] == "4"
    assert len(at.get("image")) == 4 and not any("unreadable" in c.value for c in at.caption)  # thumbnails in place

    both = tmp_path / "hf"
    datasets.DatasetDict({"train": hf_dataset(), "test": hf_dataset(4)}).save_to_disk(str(both))
    at = page(state.DatasetSource("container", str(both)))
    assert {m.label: m.value for m in at.metric}["Samples"] == "8"
    split = next(s for s in at.selectbox if s.label.startswith("Split to audit"))
    assert split.options == ["train", "test"] and split.value == "train"
    split.set_value("test").run()
    assert at.session_state[state.DATASET].split == "test"
    assert {m.label: m.value for m in at.metric}["Samples"] == "4"


def test_exporting_a_container_subset_copies_the_members_bytes(tmp_path):
    from pruning_core.export.subset import export_folder

    images = [encoded(i, lab) for i, lab in enumerate(LABELS)]
    (tmp_path / "data").mkdir()
    dataset = load_dataset(write_parquet(tmp_path / "data" / "x.parquet", images, LABELS))
    kept = dataset.samples.iloc[[1, 4]]
    with pytest.raises(ValueError, match="only be copied"):
        export_folder(kept, dataset.root, tmp_path / "linked", sources=[dataset.image_ref(p) for p in kept["path"]])
    result = export_folder(kept, dataset.root, tmp_path / "out", mode="copy",
                           sources=[dataset.image_ref(p) for p in kept["path"]])
    assert (tmp_path / "out" / "blue" / "x.parquet-1.png").read_bytes() == images[1]
    assert (tmp_path / "out" / "red" / "x.parquet-4.png").read_bytes() == images[4]
    assert pd.read_csv(result.index_file)["source"].tolist() == ["x.parquet#1", "x.parquet#4"]


def test_an_image_folder_with_a_stray_archive_stays_an_image_folder(tmp_path):
    for lab in COLOURS:
        (tmp_path / lab).mkdir()
        Image.fromarray(pixels(0, lab)).save(tmp_path / lab / "0.png")
    write_shard(tmp_path / "backup.tar", shard_samples(0, 2))
    assert detect_format(str(tmp_path)) == "folder"
    assert load_dataset(tmp_path).samples["path"].tolist() == ["blue/0.png", "red/0.png"]
    assert detect_format(str(tmp_path / "backup.tar")) == "webdataset"


def test_evaluate_page_holds_out_the_datas_own_test_split(tmp_path):
    from streamlit.testing.v1 import AppTest

    from ui import state

    for split, n in (("train", 6), ("test", 3)):
        for lab in COLOURS:
            (tmp_path / "d" / split / lab).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(pixels(i, lab)).save(tmp_path / "d" / split / lab / f"{i}.png")
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "pages" / "evaluate.py"), default_timeout=180)
    at.session_state[state.DATASET] = state.DatasetSource("folder", str(tmp_path / "d"))
    at.run()
    assert not at.exception
    own = next(c for c in at.checkbox if c.label == "Held-out set: this data's own test split")
    assert own.value and not any(t.label.startswith("Held-out set: a test folder") for t in at.text_input)
    assert not at.error and any(i.value.startswith("**Plan:**") for i in at.info)  # planned with the test split
    own.uncheck().run()
    assert any(t.label.startswith("Held-out set: a test folder") for t in at.text_input)
