"""Bad input, round three (issue 28, and the message items of issue 24): the 11 cases a rerun of the
corpus found partial or wrong, each with the outcome a new user must get.

Nothing silently wrong (a selection, a decision), nothing silently lost (a user's file), every message one
line naming its file and field, and exit code 2 for bad input.
"""

from __future__ import annotations

import errno
import json
import warnings

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pruning_core.cli import main
from pruning_core.data import datasets
from pruning_core.data.datasets import DatasetError, load_dataset
from pruning_core.data.ledger import LEDGER_FOLDER
from pruning_core.demo.tiny_clip import TINY_CLIP_NAME
from pruning_core.scoring.score_info import ScoreInfo
from pruning_core.scoring.score_table import ScoreTable


def run(*args) -> int:
    return main([str(a) for a in args])


def one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("prunescope: error: ") and "could not convert" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def _png(path, value=120, size=8):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path)


def two_score_table(path, n: int = 400) -> ScoreTable:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"path": [f"img/{i:04d}.png" for i in range(n)], "label": [("cat", "dog")[i % 2] for i in range(n)],
                          "t.align": rng.random(n), "t.outlier": rng.random(n)})
    infos = {"t.align": ScoreInfo("t.align", "agreement", "low"), "t.outlier": ScoreInfo("t.outlier", "outlier", "high")}
    table = ScoreTable(frame, infos, settings={"dataset": {"fingerprint": "fp"}})
    table.save(path)
    return table


# ----------------------------------------------------------------------------- wrong selection, exit 0

def test_huge_finite_weights_select_what_their_normalised_form_selects(tmp_path, capsys):
    scores = tmp_path / "s.parquet"
    two_score_table(scores)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "overflow encountered in add" fails the test
        assert run("select", scores, "--keep", "0.5", "--weights", "t.align=1e308,t.outlier=1e308",
                   "--out", tmp_path / "huge.csv") == 0
    assert run("select", scores, "--keep", "0.5", "--weights", "t.align=1,t.outlier=1", "--out", tmp_path / "one.csv") == 0
    assert run("select", scores, "--keep", "0.5", "--weights", "t.align=5e-324,t.outlier=5e-324",
               "--out", tmp_path / "tiny.csv") == 0
    kept = {name: set(pd.read_csv(tmp_path / f"{name}.csv")["path"]) for name in ("huge", "one", "tiny")}
    assert kept["huge"] == kept["one"] == kept["tiny"] and len(kept["one"]) == 200


# ----------------------------------------------------------------------------- a user's file overwritten

def test_select_refuses_to_replace_a_file_it_did_not_write(tmp_path, capsys):
    scores = tmp_path / "s.parquet"
    two_score_table(scores)
    notes = tmp_path / "notes.csv"
    notes.write_text("precious\n")
    assert run("select", scores, "--keep", "0.3", "--out", notes) == 2
    one_line_error(capsys, "notes.csv", "--overwrite")
    assert notes.read_text() == "precious\n" and not (tmp_path / "notes.manifest.json").exists()
    mine = tmp_path / "my.json"  # a user's JSON where the manifest would go
    mine.write_text('{"mine": 1}')
    assert run("select", scores, "--keep", "0.3", "--out", tmp_path / "k.csv", "--manifest", mine) == 2
    one_line_error(capsys, "my.json", "manifest")
    assert mine.read_text() == '{"mine": 1}' and not (tmp_path / "k.csv").exists()
    # PruneScope's own earlier outputs are replaced by a rerun; --overwrite replaces anything
    for _ in range(2):
        assert run("select", scores, "--keep", "0.3", "--out", tmp_path / "k.csv") == 0
    assert run("select", scores, "--keep", "0.3", "--out", notes, "--overwrite") == 0
    assert len(pd.read_csv(notes)) == 120


def test_validate_and_score_refuse_to_replace_a_users_file(tmp_path, capsys):
    _png(tmp_path / "d" / "cat" / "a.png")
    _png(tmp_path / "d" / "dog" / "b.png")
    issues = tmp_path / "issues.csv"
    issues.write_text("my own issue list\n")
    assert run("validate", tmp_path / "d", "--out", issues) == 2
    one_line_error(capsys, "issues.csv", "--overwrite")
    assert issues.read_text() == "my own issue list\n"
    report = tmp_path / "report.parquet"
    pd.DataFrame({"path": ["x"], "label": ["y"]}).to_parquet(report)  # a parquet without our sidecar
    before = report.read_bytes()
    assert run("score", tmp_path / "d", "--out", report, "--no-clip", "--dynamics") == 2
    one_line_error(capsys, "report.parquet", "--overwrite")
    assert report.read_bytes() == before
    assert run("validate", tmp_path / "d", "--out", tmp_path / "ours.json") == 0
    assert run("validate", tmp_path / "d", "--out", tmp_path / "ours.json") == 0  # an empty issues list of ours


# ----------------------------------------------------------------------------- dataset roots

@pytest.mark.parametrize("command", ["validate", "score"])
def test_a_dataset_root_that_is_a_symlink_to_slash_is_refused_before_any_walk(tmp_path, capsys, command):
    link = tmp_path / "rootlink"
    link.symlink_to("/", target_is_directory=True)
    assert run(command, link, "--out", tmp_path / ("o.csv" if command == "validate" else "o.parquet")) == 2
    one_line_error(capsys, "rootlink", "file system root")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\netc/hostname,a\n")
    assert run("validate", manifest, "--root", link, "--out", tmp_path / "o.csv") == 2
    one_line_error(capsys, "rootlink", "not a dataset")


def test_a_folder_walk_that_meets_mostly_non_images_stops_early(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "WALK_PATIENCE", 40)
    _png(tmp_path / "src" / "pkg" / "logo.png")
    for i in range(60):
        (tmp_path / "src" / "pkg" / f"m{i}.py").write_text("x = 1\n")
    with pytest.raises(DatasetError, match=r"stopped after 41 files, of which only 1 are images \(others: 40 \.py\)"):
        load_dataset(tmp_path / "src")
    for i in range(60):  # a dataset with one annotation file per image is a dataset
        _png(tmp_path / "d" / "cat" / f"{i}.png")
        (tmp_path / "d" / "cat" / f"{i}.xml").write_text("<a/>")
    assert len(load_dataset(tmp_path / "d")) == 60


# ----------------------------------------------------------------------------- messages that name file and field

def test_keep_that_is_not_a_number_names_the_flag(tmp_path, capsys):
    scores = tmp_path / "s.parquet"
    two_score_table(scores)
    assert run("select", scores, "--keep", "abc", "--out", tmp_path / "k.csv") == 2
    one_line_error(capsys, "--keep", "'abc' is not a number")


def test_keep_zero_is_refused_without_offering_zero(tmp_path, capsys):
    scores = tmp_path / "s.parquet"
    two_score_table(scores, n=20)
    assert run("select", scores, "--keep", "0", "--out", tmp_path / "k.csv") == 2
    err = one_line_error(capsys, "keep=0.0", "from 2 to 20")
    assert "from 0" not in err


def test_replay_manifest_with_a_keep_that_is_not_a_number_names_the_manifest(tmp_path, capsys):
    scores = tmp_path / "s.parquet"
    two_score_table(scores)
    assert run("select", scores, "--keep", "0.5", "--out", tmp_path / "k.csv") == 0
    manifest = tmp_path / "k.manifest.json"
    doc = json.loads(manifest.read_text())
    doc["selection"]["keep"] = "abc"
    manifest.write_text(json.dumps(doc))
    capsys.readouterr()
    assert run("select", "--replay", manifest, "--out", tmp_path / "again.csv") == 2
    one_line_error(capsys, "k.manifest.json", "selection", "keep 'abc' is not a number")
    doc["selection"]["keep"], doc["selection"]["weights"] = 0.5, {"t.align": "heavy"}
    manifest.write_text(json.dumps(doc))
    assert run("select", "--replay", manifest, "--out", tmp_path / "again.csv") == 2
    one_line_error(capsys, "k.manifest.json", "weight of t.align is not a finite number")


def test_a_score_column_of_text_is_refused_naming_file_column_and_row(tmp_path, capsys):
    scores = tmp_path / "s.parquet"
    table = two_score_table(scores, n=10)
    frame = table.frame.assign(**{"t.align": table.frame["t.align"].astype(object)})
    frame.loc[3, "t.align"] = "hello"
    frame.astype({"t.align": str}).to_parquet(scores)
    assert run("select", scores, "--keep", "0.5", "--out", tmp_path / "k.csv") == 2
    one_line_error(capsys, "s.parquet", "'t.align'", "row 4", "'hello'")


def test_numbers_written_as_text_in_a_score_column_are_read_with_a_note(tmp_path, capsys):
    scores = tmp_path / "s.parquet"
    table = two_score_table(scores, n=50)
    assert run("select", scores, "--keep", "0.5", "--out", tmp_path / "numbers.csv") == 0
    table.frame.astype({"t.align": str}).to_parquet(scores)  # '0.123...' text, same values
    capsys.readouterr()
    assert run("select", scores, "--keep", "0.5", "--out", tmp_path / "text.csv") == 0
    err = capsys.readouterr().err
    assert "note:" in err and "s.parquet" in err and "'t.align'" in err and "read as numbers" in err
    assert set(pd.read_csv(tmp_path / "text.csv")["path"]) == set(pd.read_csv(tmp_path / "numbers.csv")["path"])


def test_an_empty_sidecar_names_itself_and_the_score_columns_it_lacks(tmp_path, capsys):
    scores = tmp_path / "s.parquet"
    two_score_table(scores)
    scores.with_suffix(".json").write_text("{}")
    assert run("select", scores, "--keep", "0.5", "--out", tmp_path / "k.csv") == 2
    one_line_error(capsys, "s.json", "none of the 2 numeric <family>.<score> columns", "t.align", "description, suspicious")


def test_a_one_class_dataset_is_refused_before_the_throughput_probe(tmp_path, capsys, monkeypatch):
    from pruning_core.runtime import planner

    def probe(*args, **kwargs):
        raise AssertionError("the throughput probe ran")

    monkeypatch.setattr(planner, "plan_dynamics", probe)
    for i in range(4):
        _png(tmp_path / "d" / "cat" / f"{i}.png", value=10 * i)
    assert run("--cache-dir", tmp_path / "cache", "score", tmp_path / "d", "--out", tmp_path / "s.parquet",
               "--no-clip", "--dynamics") == 2
    one_line_error(capsys, str(tmp_path / "d"), "only one class ('cat'", "--dynamics", "at least 2 classes")
    assert not (tmp_path / "s.parquet").exists()


@pytest.mark.parametrize("failure", ["enospc", "short write"])
def test_a_full_disk_while_caching_is_one_line_naming_the_path(tmp_path, capsys, monkeypatch, failure):
    real_save = np.save

    def full_disk(file, array, *args, **kwargs):
        if hasattr(file, "write"):
            file.write(b"\x93NUMPY partial")  # half a file, then the disk is full
        if failure == "enospc":
            raise OSError(errno.ENOSPC, "No space left on device")
        raise OSError("153600 requested and 98176 written")  # numpy's own words for a short write

    for i in range(4):
        _png(tmp_path / "d" / ("cat", "dog")[i % 2] / f"{i}.png", value=40 * i)
    monkeypatch.setattr(np, "save", full_disk)
    cache = tmp_path / "cache"
    assert run("--cache-dir", cache, "score", tmp_path / "d", "--out", tmp_path / "s.parquet", "--clip-model",
               TINY_CLIP_NAME, "--clip-pretrained", "none", "--device", "cpu") == 2
    err = one_line_error(capsys, str(cache), "the disk is full", "free space")
    assert "requested and" not in err
    monkeypatch.setattr(np, "save", real_save)
    leftovers = [p for p in cache.rglob("*") if p.is_file() and p.suffix in (".npy", ".tmp", ".parquet")
                 and p.parent.name != LEDGER_FOLDER]  # the validation ledger was written whole before the disk filled
    assert leftovers == [] and not any((cache / "entries").iterdir())  # nothing half-written left readable
    assert not (tmp_path / "s.parquet").exists()


def test_manifest_urls_and_windows_paths_say_what_they_are(tmp_path):
    _png(tmp_path / "ok.png")
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"path": ["ok.png", "http://example.com/a.jpg", "s3://bucket/b.png", "C:\\data\\c.png",
                           "D:/data/d.png", "\\\\server\\share\\e.png"],
                  "label": ["a"] * 6}).to_csv(manifest, index=False)
    issues = load_dataset(manifest).report.as_frame().set_index("path")
    for url in ("http://example.com/a.jpg", "s3://bucket/b.png"):
        assert issues.at[url, "kind"] == "URL" and "download the files first" in issues.at[url, "reason"]
    for windows in ("C:\\data\\c.png", "D:/data/d.png", "\\\\server\\share\\e.png"):
        assert issues.at[windows, "kind"] == "Windows path" and "Windows path" in issues.at[windows, "reason"]


# ----------------------------------------------------------------------------- exit codes a script can trust

def test_missing_clip_weights_are_bad_input_exit_2(tmp_path, capsys):
    _png(tmp_path / "d" / "cat" / "a.png")
    _png(tmp_path / "d" / "dog" / "b.png")
    assert run("--cache-dir", tmp_path / "cache", "score", tmp_path / "d", "--out", tmp_path / "s.parquet",
               "--clip-model", TINY_CLIP_NAME, "--clip-pretrained", tmp_path / "missing.safetensors") == 2
    err = one_line_error(capsys, "missing.safetensors")
    assert "internal error" not in err


# ----------------------------------------------------------------------------- small

def test_a_folder_named_like_an_image_is_reported_in_folder_and_manifest_mode(tmp_path):
    _png(tmp_path / "d" / "cat" / "a.png")
    _png(tmp_path / "d" / "dog" / "b.png")
    (tmp_path / "d" / "cat" / "x.jpg").mkdir()
    manifest = tmp_path / "d" / "m.csv"
    pd.DataFrame({"path": ["cat/a.png", "dog/b.png", "cat/x.jpg"], "label": ["cat", "dog", "cat"]}).to_csv(manifest, index=False)
    from_folder = load_dataset(tmp_path / "d").report.as_frame().set_index("path")
    from_manifest = load_dataset(manifest).report.as_frame().set_index("path")
    for issues in (from_folder, from_manifest):
        assert issues.at["cat/x.jpg", "kind"] == "not an image" and "directory" in issues.at["cat/x.jpg", "reason"]


def test_text_embeddings_report_progress_per_batch(tmp_path):
    from cache.store import ResultStore
    from pruning_core.scoring.pipeline import ClipConfig, clip_embeddings

    for i in range(3):
        _png(tmp_path / "d" / f"c{i}" / "a.png", value=60 * i)
    dataset = load_dataset(tmp_path / "d")
    templates = tuple(f"a photo of a {{}}, take {t}." for t in range(200))  # 600 prompts: two batches of 512
    events = []
    clip_embeddings(dataset, ClipConfig(model=TINY_CLIP_NAME, pretrained="none", device="cpu", templates=templates),
                    ResultStore(tmp_path / "cache"), progress=events.append)
    ticks = [(e.done, e.total) for e in events if e.stage == "text embeddings"]
    assert ticks == [(0, 600), (512, 600), (600, 600)]


def test_a_device_this_machine_lacks_is_bad_input_exit_2(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same on a GPU machine
    _png(tmp_path / "d" / "cat" / "a.png")
    _png(tmp_path / "d" / "dog" / "b.png")
    assert run("--cache-dir", tmp_path / "cache", "score", tmp_path / "d", "--out", tmp_path / "s.parquet",
               "--clip-model", TINY_CLIP_NAME, "--clip-pretrained", "none", "--device", "cuda") == 2
    one_line_error(capsys, "--device cuda", "no CUDA GPU is visible")


def test_the_home_folder_is_refused_as_an_image_folder_but_not_as_a_manifests_root(tmp_path, monkeypatch):
    from pruning_core.runtime.safety import UnsafeRequest

    monkeypatch.setenv("HOME", str(tmp_path))
    _png(tmp_path / "cat" / "a.png")
    _png(tmp_path / "dog" / "b.png")
    with pytest.raises(UnsafeRequest, match="home folder"):
        load_dataset(tmp_path)
    manifest = tmp_path / "m.csv"  # a manifest in the home folder reads only the files it lists
    pd.DataFrame({"path": ["cat/a.png", "dog/b.png"], "label": ["cat", "dog"]}).to_csv(manifest, index=False)
    assert len(load_dataset(manifest)) == 2
