"""The Ray executor on a local 2-CPU cluster gives the local executor's results, survives a killed
worker, and shares the local path's cache entries and resumable chunks.

Training is compared bit for bit: both sides train on one torch thread (Ray gives a 1-CPU task one
thread; the local side uses the ``one_thread`` fixture).  CLIP embeddings are compared to 1e-5:
the same images in the same batches, but the actor runs the model in another process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cache.store import ResultStore
from pruning_core.runtime import executors
from pruning_core.data.datasets import load_dataset
from pruning_core.dynamics.config import DynamicsConfig
from pruning_core.dynamics.crossfit import out_of_sample_probs
from pruning_core.scoring.pipeline import ClipConfig, score_dataset
from tests.synthetic import synthetic_images

LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""0 makes Ray bind a local cluster to the loopback address (ray._private.ray_constants.ENABLE_RAY_CLUSTER)."""
SMALL = 240
"""Demo samples the score tests use: the demo's first 240 rows keep the tests at seconds on 2 cores."""


@pytest.fixture(scope="module")
def ray_executor():
    """A fresh local Ray cluster with 2 CPUs on 127.0.0.1, no dashboard; shut down after the module.

    Ray turns 127.0.0.1 into the host's reachable address unless it is told this is no cluster
    (the variable Ray reads at import, before the import); workers get this checkout on their path
    and one OpenMP thread, like the local runs under ``one_thread`` (Ray gives a worker the caller's
    ``OMP_NUM_THREADS`` when it is set, and float sums over 2 threads differ in the last bits).
    """
    previous = os.environ.get(LOOPBACK_ONLY)
    os.environ[LOOPBACK_ONLY] = "0"
    import ray

    root = str(Path(__file__).resolve().parents[1])
    executor = executors.RayExecutor("local", num_cpus=2,
                                     runtime_env={"env_vars": {"PYTHONPATH": root, "HF_HUB_OFFLINE": "1",
                                                              "OMP_NUM_THREADS": "1"}})
    executor._ray()
    assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
    yield executor
    ray.shutdown()
    if previous is None:
        os.environ.pop(LOOPBACK_ONLY)
    else:
        os.environ[LOOPBACK_ONLY] = previous


@pytest.fixture(scope="module")
def small_demo(demo_assets, tmp_path_factory):
    """The demo's first rows as their own manifest (paths under the demo's root), and the demo's tiny CLIP."""
    manifest = tmp_path_factory.mktemp("small-demo") / "small.csv"
    pd.read_csv(demo_assets.manifest).head(SMALL).to_csv(manifest, index=False)
    clip = ClipConfig(model=demo_assets.clip_model, pretrained=str(demo_assets.clip_checkpoint), device="cpu",
                      batch_size=64)
    return load_dataset(manifest, root=Path(demo_assets.manifest).parent), clip


def _images(n: int = 240) -> tuple[np.ndarray, np.ndarray]:
    x, y, _ = synthetic_images(n=n, size=16)
    return x, y


TRAIN = DynamicsConfig(epochs=2, width=8, batch_size=64, device="cpu").trainer_options()


def test_crossfit_on_ray_equals_local_and_saves_each_fold(ray_executor, one_thread, tmp_path):
    x, y = _images()
    local = out_of_sample_probs(x, y, folds=3, fold_cache=tmp_path / "local", **TRAIN)
    with executors.using(ray_executor):
        remote = out_of_sample_probs(x, y, folds=3, fold_cache=tmp_path / "ray", **TRAIN)
    np.testing.assert_array_equal(remote, local)
    for k in range(3):
        np.testing.assert_array_equal(np.load(tmp_path / "ray" / f"fold{k}.npy"),
                                      np.load(tmp_path / "local" / f"fold{k}.npy"))


def _ray_fold_workers() -> list[int]:
    """Pids of Ray workers running a fold right now (Ray titles a busy worker 'ray::<task name>')."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes().startswith(b"ray::train_fold"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def test_a_killed_worker_is_retried_and_the_result_is_complete(ray_executor, one_thread, tmp_path):
    x, y = _images()
    killed: list[int] = []

    def kill_first_fold_worker() -> None:
        deadline = time.monotonic() + 60
        while not killed and time.monotonic() < deadline:
            pids = _ray_fold_workers()
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
            time.sleep(0.05)

    killer = threading.Thread(target=kill_first_fold_worker)
    killer.start()
    with executors.using(ray_executor):
        remote = out_of_sample_probs(x, y, folds=2, **TRAIN)
    killer.join()
    assert killed, "no fold worker was seen running, so none was killed"
    np.testing.assert_array_equal(remote, out_of_sample_probs(x, y, folds=2, **TRAIN))


def test_score_on_ray_equals_local(ray_executor, small_demo, one_thread, tmp_path):
    dataset, clip = small_demo
    dynamics = DynamicsConfig(epochs=2, folds=2, image_size=16, width=8, batch_size=64, device="cpu")
    local = score_dataset(dataset, ResultStore(tmp_path / "local"), clip=clip, dynamics=dynamics)
    with executors.using(ray_executor):
        remote = score_dataset(dataset, ResultStore(tmp_path / "ray"), clip=clip, dynamics=dynamics)
    assert list(remote.frame.columns) == list(local.frame.columns)
    assert any(c.startswith("cleanlab.") for c in local.frame) and any(c.startswith("clip.") for c in local.frame)
    for column in local.frame.columns:
        if column.startswith("clip.") and pd.api.types.is_float_dtype(local.frame[column]):
            # from the embeddings: same batches, another process
            np.testing.assert_allclose(remote.frame[column], local.frame[column], rtol=1e-4, atol=1e-5,
                                       err_msg=column)
        else:  # dynamics and cleanlab: one-thread training, bit for bit
            pd.testing.assert_series_equal(remote.frame[column], local.frame[column], check_exact=True)


def test_embedding_chunks_resume_across_executors(ray_executor, small_demo, tmp_path):
    """Chunks written by one executor are reused by the other: a cluster run resumes locally and back."""
    from pruning_core.embeddings.clip_model import load_clip
    from pruning_core.embeddings.encode import embed_images

    dataset, clip = small_demo
    encoder = load_clip(clip.model, clip.pretrained, device="cpu")
    paths = dataset.abspaths()
    reference, ok = embed_images(paths, encoder, chunk_dir=tmp_path / "local", chunk_size=80, batch_size=32)
    for first, then, name in ((ray_executor, executors.LOCAL, "ray-then-local"),
                              (executors.LOCAL, ray_executor, "local-then-ray")):
        chunks = tmp_path / name
        with executors.using(first):
            embed_images(paths, encoder, chunk_dir=chunks, chunk_size=80, batch_size=32)
        (chunks / "emb-00001.npy").unlink()  # as if the run was interrupted in its second chunk
        kept = (chunks / "emb-00000.npy").stat().st_mtime_ns
        with executors.using(then):
            emb, ok2 = embed_images(paths, encoder, chunk_dir=chunks, chunk_size=80, batch_size=32)
        assert (chunks / "emb-00000.npy").stat().st_mtime_ns == kept  # reused, not recomputed
        np.testing.assert_allclose(emb, reference, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(ok2, ok)


def test_evaluate_grid_on_ray_equals_local_and_shares_identical_runs(ray_executor, small_demo, one_thread, tmp_path):
    from pruning_core.scoring.score_table import base_table
    from pruning_core.subset_training.evaluate import EvalConfig, evaluate_pruning

    dataset, _ = small_demo
    config = EvalConfig(proxy=DynamicsConfig(epochs=1, image_size=16, width=4, batch_size=64, device="cpu", folds=0),
                        seeds=2)
    grid = dict(strategies=["random"], keeps=[0.5], config=config)
    local = evaluate_pruning(dataset, base_table(dataset), ResultStore(tmp_path / "local"), **grid)
    with executors.using(ray_executor):
        remote = evaluate_pruning(dataset, base_table(dataset), ResultStore(tmp_path / "ray"), **grid)
    columns = ["strategy", "keep", "seed", "n_train", "accuracy", "samples_trained"]
    pd.testing.assert_frame_equal(remote[columns], local[columns], check_exact=True)
    assert len(remote) == 4 and not remote["cached"].any()  # full and random, 2 seeds each

    # random at keep 1.0 keeps every sample, so it is the full-data run; on 2 CPUs both cells start at
    # once, and the second waits for the first's entry instead of training it again
    with executors.using(ray_executor):
        same = evaluate_pruning(dataset, base_table(dataset), ResultStore(tmp_path / "same"),
                                strategies=["random"], keeps=[1.0], config=replace(config, seeds=1))
    assert len(same) == 2 and same["cached"].sum() == 1 and same["accuracy"].nunique() == 1
    assert len(list((tmp_path / "same" / "entries").glob("subset-eval-*"))) == 1


def test_local_path_does_not_import_ray(tmp_path):
    code = (
        "import sys\n"
        "from tests.synthetic import synthetic_images\n"
        "from pruning_core.cli import build_parser\n"
        "from pruning_core.runtime import executors\n"
        "from pruning_core.dynamics.crossfit import out_of_sample_probs\n"
        "import pruning_core.subset_training, pruning_core.embeddings.encode, pruning_core.scoring.pipeline\n"
        "x, y, _ = synthetic_images(n=60, size=8)\n"
        "with executors.using(executors.make_executor('local')):\n"
        "    out_of_sample_probs(x, y, folds=2, arch='resnet9', epochs=1, width=4, device='cpu', seed=0, "
        "batch_size=512, precision='auto')\n"
        "assert 'ray' not in sys.modules, sorted(m for m in sys.modules if m.startswith('ray'))\n"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_score_page_offers_the_cluster_only_when_one_is_reachable(ray_executor, monkeypatch, tmp_path):
    from streamlit.testing.v1 import AppTest

    from pruning_core.demo.tiny_clip import TINY_CLIP_NAME
    from ui import state

    x, y = _images(12)
    folder = tmp_path / "imgs"
    from tests.synthetic import write_image_folder

    write_image_folder(folder, x, y)
    config = ClipConfig(model=TINY_CLIP_NAME, pretrained="none", device="cpu", batch_size=4)

    def score_page() -> AppTest:
        at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "pages" / "score.py"), default_timeout=120)
        at.session_state[state.DATASET] = state.DatasetSource("folder", str(folder))
        at.session_state[state.CLIP] = config
        return at.run()

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(executors, "ray_cluster_reachable", lambda: False)
    assert not [r for r in score_page().radio if r.label == "Run on"]
    monkeypatch.setattr(executors, "ray_cluster_reachable", lambda: True)
    at = score_page()
    at.radio(key=state.EXECUTOR).set_value("ray").run()
    at.button[0].click().run()  # "Compute CLIP scores" on the cluster
    assert not at.exception
    assert "clip.label_alignment" in at.session_state[state.TABLE].infos
    assert at.session_state[state.EXECUTOR] == "ray"


def test_cli_evaluate_on_ray_writes_the_local_runs(ray_executor, demo_assets, one_thread, tmp_path, capsys):
    from pruning_core.cli import main

    manifest = tmp_path / "small.csv"
    pd.read_csv(demo_assets.manifest).head(SMALL).to_csv(manifest, index=False)
    args = ["evaluate", str(manifest), "--root", str(Path(demo_assets.manifest).parent), "--strategies", "random", "--keep", "0.5", "--seeds", "1",
            "--epochs", "1", "--width", "4", "--image-size", "16", "--batch-size", "64", "--device", "cpu"]
    assert main(["--cache-dir", str(tmp_path / "a"), *args, "--out", str(tmp_path / "local.csv")]) == 0
    assert main(["--cache-dir", str(tmp_path / "b"), *args, "--out", str(tmp_path / "ray.csv"),
                 "--executor", "ray"]) == 0
    local, remote = pd.read_csv(tmp_path / "local.csv"), pd.read_csv(tmp_path / "ray.csv")
    pd.testing.assert_frame_equal(remote.drop(columns="train_seconds"), local.drop(columns="train_seconds"))
    assert main(["evaluate", str(manifest), "--out", str(tmp_path / "x.csv"), "--ray-address", "auto"]) == 2
    assert "--ray-address needs --executor ray" in capsys.readouterr().err


def test_cancel_on_ray_keeps_finished_folds_and_a_local_run_resumes(ray_executor, one_thread, tmp_path):
    from pruning_core.runtime.progress import Cancelled, CancelToken

    x, y = _images()
    cancel = CancelToken()

    def cancel_after_first_fold(p) -> None:
        if "done" in p.message:
            cancel.cancel()

    with executors.using(ray_executor), pytest.raises(Cancelled):
        out_of_sample_probs(x, y, folds=3, fold_cache=tmp_path, progress=cancel_after_first_fold, cancel=cancel,
                            **TRAIN)
    saved = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("fold*.npy")}
    assert 1 <= len(saved) < 3  # the finished fold was kept, the pending ones were cancelled
    resumed = out_of_sample_probs(x, y, folds=3, fold_cache=tmp_path, **TRAIN)
    assert all((tmp_path / name).stat().st_mtime_ns == t for name, t in saved.items())  # reused, not retrained
    np.testing.assert_array_equal(resumed, out_of_sample_probs(x, y, folds=3, **TRAIN))
