import json
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pruning_core.cli import main
from pruning_core.scoring.score_table import ScoreTable
from pruning_core.demo.tiny_clip import TINY_CLIP_NAME


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    for cls, colour in (("red", (220, 30, 30)), ("blue", (30, 30, 220))):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i in range(6):
            img = np.clip(np.array(colour) + rng.integers(-20, 20, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(tmp_path / "data" / cls / f"{i}.png")
    (tmp_path / "data" / "red" / "broken.png").write_bytes(b"")
    return tmp_path / "data"


def run(*args):
    return main([str(a) for a in args])


def test_score_select_replay_and_cache(folder, tmp_path, capsys):
    cache = tmp_path / "cache"
    out = tmp_path / "scores.parquet"
    assert run("--cache-dir", cache, "score", folder, "--out", out, "--clip-model", TINY_CLIP_NAME,
               "--clip-pretrained", "none", "--device", "cpu") == 0
    table = ScoreTable.load(out)
    assert len(table.frame) == 12  # the empty file was skipped with a reason
    assert {"path", "label", "clip.label_alignment", "clip.diversity"} <= set(table.frame.columns)
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["clip.label_alignment"]["suspicious"] == "low"
    issues = pd.read_csv(out.with_suffix(".issues.csv"))
    assert issues["path"].str.contains("broken.png").any() and (issues["reason"] == "file is empty").any()

    kept = tmp_path / "kept.csv"
    assert run("select", out, "--keep", "0.5", "--strategy", "easiest", "--balance", "--out", kept) == 0
    kept_frame = pd.read_csv(kept)
    assert len(kept_frame) == 6 and kept_frame["label"].value_counts().to_dict() == {"red": 3, "blue": 3}

    manifest = json.loads((tmp_path / "kept.manifest.json").read_text())
    assert manifest["scoring"]["clip"]["model"] == TINY_CLIP_NAME and manifest["scoring"]["clip"]["weights"]
    assert manifest["scoring"]["dataset"]["fingerprint"] == table.settings["dataset"]["fingerprint"]
    assert manifest["scores"]["file"] == "scores.parquet"  # beside the manifest: the folder moves as one

    again = tmp_path / "again.csv"
    assert run("select", "--replay", tmp_path / "kept.manifest.json", "--out", again) == 0
    assert again.read_bytes() == kept.read_bytes()

    capsys.readouterr()
    assert run("--cache-dir", cache, "cache", "ls") == 0
    listing = capsys.readouterr().out
    assert "clip-images" in listing and "clip-scores" in listing
    assert run("--cache-dir", cache, "cache", "clear") == 0
    assert "removed 3 cache entries" in capsys.readouterr().out


def test_rescoring_hits_the_cache(folder, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    args = ("--cache-dir", cache, "score", folder, "--clip-model", TINY_CLIP_NAME, "--clip-pretrained", "none",
            "--device", "cpu")
    assert run(*args, "--out", tmp_path / "a.parquet") == 0

    import pruning_core.scoring.pipeline as pipeline

    def no_model(*a, **k):
        raise AssertionError("a cached result must not load the model again")

    monkeypatch.setattr(pipeline, "load_clip", no_model)
    assert run(*args, "--out", tmp_path / "b.parquet") == 0
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "a.parquet"), pd.read_parquet(tmp_path / "b.parquet"))


def test_errors_are_clear_and_exit_2(tmp_path, capsys):
    assert run("score", tmp_path / "nope.csv", "--out", tmp_path / "s.parquet") == 2
    assert "nope.csv" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("file,class\na.png,cat\n")
    assert run("score", bad, "--out", tmp_path / "s.parquet") == 2
    err = capsys.readouterr().err
    assert "path" in err and "label" in err
    assert run("select", tmp_path / "missing.parquet", "--keep", "0.5", "--out", tmp_path / "k.csv") == 2
    assert "score table not found" in capsys.readouterr().err


def test_adapter_scores_are_cached_separately(folder, tmp_path):
    cache = tmp_path / "cache"
    base = ("--cache-dir", cache, "score", folder, "--clip-model", TINY_CLIP_NAME, "--clip-pretrained", "none",
            "--device", "cpu")
    assert run(*base, "--out", tmp_path / "plain.parquet") == 0
    assert run(*base, "--adapter-epochs", "2", "--out", tmp_path / "adapted.parquet") == 0
    from cache.store import ResultStore

    steps = sorted(e.meta["step"] for e in ResultStore(cache).ls())
    assert steps == ["clip-adapter", "clip-images", "clip-scores", "clip-scores", "clip-texts"]
    plain = pd.read_parquet(tmp_path / "plain.parquet")["clip.label_alignment"]
    adapted = pd.read_parquet(tmp_path / "adapted.parquet")["clip.label_alignment"]
    assert not np.allclose(plain, adapted)


def test_dynamics_scores_from_the_cli(folder, tmp_path):
    cache = tmp_path / "cache"
    out = tmp_path / "dyn.parquet"
    assert run("--cache-dir", cache, "score", folder, "--no-clip", "--dynamics", "--epochs", "3", "--folds", "2",
               "--image-size", "16", "--device", "cpu", "--out", out) == 0
    table = ScoreTable.load(out)
    for col in ("dynamics.aum", "dynamics.dyn_unc", "dynamics.forgetting", "cleanlab.label_quality"):
        assert col in table.infos and table.frame[col].notna().all()
    assert set(table.frame["dynamics.suggested_label"]) <= {"red", "blue"}
    from cache.store import ResultStore

    def results() -> list[str]:  # the throughput probes of the planner are cached too, per machine
        return sorted(e.meta["step"] for e in ResultStore(cache).ls() if e.meta["step"] != "throughput-probe")

    assert results() == ["dynamics-oos", "dynamics-record", "images"]
    # Another Dyn-Unc window is derived from the cached records, without retraining.
    assert run("--cache-dir", cache, "score", folder, "--no-clip", "--dynamics", "--epochs", "3", "--folds", "2",
               "--image-size", "16", "--dynunc-window", "2", "--device", "cpu", "--out", out) == 0
    assert len(results()) == 3
    # The folds trained on the cleanest 60 % and the noise score averages their posterior with the record's;
    # another share retrains the folds only, keeping the record.
    averaged = table.settings["noise"]["averaged_with"]
    assert len(averaged) == 1 and "cleanest 60%" in table.infos["dynamics.noise_score"].description
    assert run("--cache-dir", cache, "score", folder, "--no-clip", "--dynamics", "--epochs", "3", "--folds", "2",
               "--image-size", "16", "--crossfit-share", "1", "--device", "cpu", "--out", out) == 0
    assert results() == ["dynamics-oos", "dynamics-oos", "dynamics-record", "images"]
    assert "cleanest" not in ScoreTable.load(out).infos["dynamics.noise_score"].description
    assert run("--cache-dir", cache, "score", folder, "--no-clip", "--dynamics", "--epochs", "3", "--folds", "2",
               "--image-size", "16", "--crossfit-share", "0.5", "--device", "cpu", "--out", out) == 0
    assert results() == ["dynamics-oos"] * 3 + ["dynamics-record", "images"]  # each share keys its own folds
    assert "cleanest 50%" in ScoreTable.load(out).infos["dynamics.noise_score"].description


def test_budgeted_dynamics_prints_its_plan_and_records_it(folder, tmp_path, capsys, monkeypatch):
    """`score --dynamics --budget` plans what was not given, says so first, and the sidecar and manifest keep it.

    Called from a long-running program (here: a process 1,000 s old), the budget starts with the call."""
    import time

    from pruning_core.runtime import planner

    monkeypatch.setattr(planner, "process_started", lambda: time.monotonic() - 1000.0)
    out = tmp_path / "scores.parquet"
    assert run("--cache-dir", tmp_path / "cache", "score", folder, "--out", out, "--no-clip", "--dynamics",
               "--budget", "30", "--width", "8", "--folds", "0", "--device", "cpu") == 0
    err = capsys.readouterr().err
    plan_line = next(line for line in err.splitlines() if line.startswith("plan: "))
    assert "width 8" in plan_line and "budget 30 s" in plan_line and "no cross-fitting" in plan_line
    settings = ScoreTable.load(out).settings["dynamics"]
    assert settings["width"] == 8 and settings["folds"] == 0 and settings["budget_s"] == 30.0
    assert settings["plan"]["fixed"] == ["folds", "width"] and settings["plan"]["estimate_s"] > 0
    assert settings["epochs_done"] == settings["epochs"]
    kept = tmp_path / "kept.csv"
    assert run("select", out, "--keep", "0.5", "--strategy", "easiest", "--out", kept) == 0
    manifest = json.loads((tmp_path / "kept.manifest.json").read_text())
    assert manifest["scoring"]["dynamics"]["plan"] == settings["plan"]


def test_an_older_clip_scores_entry_is_recomputed_not_reused(folder, tmp_path, monkeypatch):
    """The step's output schema is part of its key: an entry written before the columns changed is never served
    (an upgraded install would otherwise lack the zero-shot probabilities the suggestions read)."""
    from cache.store import ResultStore
    from pruning_core.scoring import pipeline

    cache = tmp_path / "cache"
    args = ("--cache-dir", cache, "score", folder, "--clip-model", TINY_CLIP_NAME, "--clip-pretrained", "none",
            "--device", "cpu", "--out", tmp_path / "s.parquet", "--overwrite")
    monkeypatch.setattr(pipeline, "CLIP_SCORES_SCHEMA", pipeline.CLIP_SCORES_SCHEMA - 1)  # what an older version wrote
    assert run(*args) == 0
    monkeypatch.undo()
    assert run(*args) == 0
    entries = [e for e in ResultStore(cache).ls() if e.meta["step"] == "clip-scores"]
    assert sorted(e.meta["params"]["schema"] for e in entries) == [pipeline.CLIP_SCORES_SCHEMA - 1,
                                                                  pipeline.CLIP_SCORES_SCHEMA]
    assert any(c.startswith("clip.zero_shot_prob.") for c in ScoreTable.load(tmp_path / "s.parquet").frame.columns)


def test_knn_k_and_duplicate_threshold_key_the_cache_and_reach_sidecar_and_manifest(folder, tmp_path, capsys):
    """--knn-k / --duplicate-threshold (defaults: ClipConfig's) make another cache entry, are recorded in the
    sidecar and travel into the select manifest; --cps-alpha/--cps-beta (defaults: CPSConfig's) into its recipe."""
    from cache.store import ResultStore
    from pruning_core.clip_scores.cps import CPSConfig
    from pruning_core.scoring.pipeline import ClipConfig

    cache = tmp_path / "cache"
    base = ("--cache-dir", cache, "score", folder, "--clip-model", TINY_CLIP_NAME, "--clip-pretrained", "none",
            "--device", "cpu")
    assert run(*base, "--out", tmp_path / "default.parquet") == 0
    assert run(*base, "--knn-k", "3", "--duplicate-threshold", "1", "--out", tmp_path / "k3.parquet") == 0
    assert sorted(e.meta["step"] for e in ResultStore(cache).ls()).count("clip-scores") == 2
    default, k3 = ScoreTable.load(tmp_path / "default.parquet"), ScoreTable.load(tmp_path / "k3.parquet")
    assert (default.settings["clip"]["k"], default.settings["clip"]["dup_threshold"]) == \
        (ClipConfig().k, ClipConfig().dup_threshold)
    assert (k3.settings["clip"]["k"], k3.settings["clip"]["dup_threshold"]) == (3, 1.0)
    assert k3.settings["dataset"]["fingerprint"] == default.settings["dataset"]["fingerprint"]
    assert not np.allclose(default.frame["clip.outlier"], k3.frame["clip.outlier"])
    assert k3.frame["clip.duplicate_count"].sum() < default.frame["clip.duplicate_count"].sum()  # fewer links

    kept = tmp_path / "kept.csv"
    assert run("select", tmp_path / "k3.parquet", "--keep", "6", "--strategy", "cps", "--cps-alpha", "0",
               "--out", kept) == 0
    manifest = json.loads((tmp_path / "kept.manifest.json").read_text())
    assert manifest["selection"]["cps_params"] == {**asdict(CPSConfig()), "alpha": 0.0}  # every setting recorded
    assert manifest["scoring"]["clip"]["k"] == 3 and manifest["scoring"]["clip"]["dup_threshold"] == 1.0
    by_alignment = k3.frame.nlargest(6, "clip.label_alignment")["path"]  # alpha 0: alignment alone decides
    assert set(pd.read_csv(kept)["path"]) == set(by_alignment)
    again = tmp_path / "again.csv"
    assert run("select", "--replay", tmp_path / "kept.manifest.json", "--out", again) == 0
    pd.testing.assert_frame_equal(pd.read_csv(again), pd.read_csv(kept))

    capsys.readouterr()
    assert run("select", tmp_path / "k3.parquet", "--keep", "6", "--cps-beta", "5", "--out", tmp_path / "e.csv") == 2
    assert "'easiest' has no such settings" in capsys.readouterr().err
    assert run("select", tmp_path / "k3.parquet", "--keep", "6", "--strategy", "cps", "--cps-alpha", "-1",
               "--out", tmp_path / "n.csv") == 2
    assert "alpha must be a finite number >= 0" in capsys.readouterr().err
    for bad in (("--knn-k", "0"), ("--duplicate-threshold", "1.5")):
        with pytest.raises(SystemExit):
            run(*base, *bad, "--out", tmp_path / "bad.parquet")


def test_cache_clear_one_entry_by_key(tmp_path, capsys):
    from cache.store import ResultStore

    store = ResultStore(tmp_path / "cache")
    for key, step in (("k1", "umap"), ("k2", "umap"), ("k3", "clip-scores")):
        store.save(key, arrays={"x": np.ones(2)}, meta={"step": step, "dataset": "toy"})
    assert run("--cache-dir", tmp_path / "cache", "cache", "clear", "--key", "k2", "--key", "k3") == 0
    assert "removed 2 cache entries" in capsys.readouterr().out
    assert [e.key for e in store.ls()] == ["k1"]
