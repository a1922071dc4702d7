"""Cancelling a Score-page job: finished folds survive, the next run resumes, and the app says so truthfully."""

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from cache.store import ResultStore
from pruning_core.data.datasets import load_dataset
from pruning_core.dynamics.config import DynamicsConfig
from pruning_core.embeddings.encode import cached_chunks
from pruning_core.scoring.pipeline import ClipConfig, dynamics_score_table, kept_work, scoring_steps
from pruning_core.runtime.progress import CancelToken, Cancelled, Progress
from pruning_core.demo.tiny_clip import TINY_CLIP_NAME
from ui import state


@pytest.fixture
def dataset(tmp_path):
    rng = np.random.default_rng(2)
    for cls in ("cat", "dog", "fox"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    return load_dataset(tmp_path / "imgs")


CLIP = ClipConfig(model=TINY_CLIP_NAME, pretrained="none", device="cpu", batch_size=8)
PROBE = DynamicsConfig(arch="linear", epochs=3, folds=3, batch_size=4, device="cpu")


def test_a_cancel_between_folds_keeps_the_finished_ones_and_the_next_run_resumes(dataset, tmp_path):
    store = ResultStore(tmp_path / "cache")
    token = CancelToken()
    seen: list[Progress] = []

    def cancel_in_second_fold(p: Progress) -> None:
        seen.append(p)
        if p.stage == "cross-fit" and p.message.startswith("fold 2/"):
            token.cancel()  # what the Cancel button's callback does, mid-fold

    assert kept_work(dataset, store, clip=CLIP, dynamics=PROBE) == []
    with pytest.raises(Cancelled):
        dynamics_score_table(dataset, PROBE, store, clip=CLIP, progress=cancel_in_second_fold, cancel=token)
    assert kept_work(dataset, store, clip=CLIP, dynamics=PROBE) == [
        "the image embeddings", "the proxy-training record", "1 of 3 cross-fitting folds"]

    resumed: list[Progress] = []
    table = dynamics_score_table(dataset, PROBE, store, clip=CLIP, progress=resumed.append)
    assert "cleanlab.label_quality" in table.infos and len(table.frame) == len(dataset)
    messages = [p.message for p in resumed if p.stage == "cross-fit"]
    assert "fold 1/3 (cached)" in messages and not any(m.startswith("fold 1/3, epoch") for m in messages)
    assert kept_work(dataset, store, clip=CLIP, dynamics=PROBE) == [
        "the image embeddings", "the proxy-training record", "the cross-fitted probabilities"]


def test_a_cancel_during_proxy_training_keeps_exactly_the_finished_steps(dataset, tmp_path):
    """kept_work lists the steps the run finished, by the keys the run wrote, and nothing it did not finish."""
    store = ResultStore(tmp_path / "cache")
    token = CancelToken()

    def cancel_in_training(p: Progress) -> None:
        if p.stage == "train":
            token.cancel()

    with pytest.raises(Cancelled):
        dynamics_score_table(dataset, PROBE, store, clip=CLIP, progress=cancel_in_training, cancel=token)
    assert kept_work(dataset, store, clip=CLIP, dynamics=PROBE) == ["the image embeddings"]

    dynamics_score_table(dataset, PROBE, store, clip=CLIP)
    steps = scoring_steps(dataset, clip=CLIP, dynamics=PROBE)
    assert [s.step for s in steps] == ["clip-images", "dynamics-record", "dynamics-oos"]
    written = {entry.key for entry in store.ls()}
    assert {s.key for s in steps} <= written  # the keys kept_work reads are the ones the run wrote
    assert kept_work(dataset, store, clip=CLIP, dynamics=PROBE) == [
        "the image embeddings", "the proxy-training record", "the cross-fitted probabilities"]


def test_cached_chunks_counts_only_finished_embedding_chunks(tmp_path):
    np.save(tmp_path / "emb-00000.npy", np.zeros((2, 2)))
    np.save(tmp_path / "ok-00001.npy", np.ones(2, dtype=bool))  # its embeddings never landed: not finished
    assert cached_chunks(tmp_path, n=10, chunk_size=4) == (1, 3)


def test_cancel_message_lists_what_is_kept():
    assert state.cancel_message("CLIP scores", True, ["2 of 5 image-embedding chunks"]) == (
        "CLIP scores cancelled — 2 of 5 image-embedding chunks already computed are kept and the next run "
        "resumes from them.")
    assert "the decoded images and 1 of 4 cross-fitting folds already" in state.cancel_message(
        "Dynamics scores", True, ["the decoded images", "1 of 4 cross-fitting folds"])
    assert state.cancel_message("CLIP scores", False, []).startswith("CLIP scores interrupted — nothing was finished")


def _job_page() -> None:
    """A Score-like page: its job is interrupted the way a click's rerun interrupts it."""
    import streamlit as st

    from pruning_core.runtime.progress import Cancelled, Progress
    from ui import state

    state.report_interrupted_job()
    outcome = st.session_state.get("outcome")
    if st.button("Compute"):
        def compute(progress, cancel) -> None:
            progress(Progress("work", 1, 3))
            if outcome == "interrupted":
                raise Cancelled("stopped between chunks")
            if outcome == "error":
                raise ValueError("bad input")

        try:
            kept = st.session_state.get("kept")
            job = state.PageJob("Test scores", kept=(lambda: kept) if kept is not None else list)
            state.run_page_job(job, compute, st.container())
        except ValueError as exc:
            st.error(str(exc))


def _job_app(dataset, outcome: str, kept: list[str] | None = None) -> AppTest:
    at = AppTest.from_function(_job_page, default_timeout=60)
    at.session_state["dataset"] = dataset
    at.session_state["outcome"] = outcome
    if kept is not None:
        at.session_state["kept"] = kept
    return at.run()


def _warnings(at: AppTest) -> list[str]:
    return [w.value for w in at.warning]


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNESCOPE_CACHE", str(tmp_path / "cache"))
    state.store.clear()  # the cached ResultStore of another test points elsewhere
    yield
    state.store.clear()


def test_cancel_button_click_is_reported_as_cancelled(dataset, cache_dir):
    at = _job_app(dataset, "interrupted")
    at.button[0].click().run()
    assert state.PAGE_JOB in at.session_state and [b.label for b in at.button] == ["Compute", "Cancel"]
    at.button(key="job_cancel").click().run()  # its callback cancels the job's token before the page runs
    assert _warnings(at) == ["Test scores cancelled — nothing was finished yet, so the next run starts from the "
                             "beginning."]
    assert state.PAGE_JOB not in at.session_state
    at.run()
    assert _warnings(at) == []  # reported once


def test_a_rerun_without_the_button_is_reported_as_interrupted(dataset, cache_dir):
    at = _job_app(dataset, "interrupted")
    at.button[0].click().run()
    at.run()
    assert [w.split(" — ")[0] for w in _warnings(at)] == ["Test scores interrupted"]


@pytest.mark.parametrize("outcome", ["done", "error"])
def test_a_job_that_ends_on_its_own_is_not_reported_and_hides_cancel(dataset, cache_dir, outcome):
    at = _job_app(dataset, outcome)
    at.button[0].click().run()
    assert state.PAGE_JOB not in at.session_state
    assert [b.label for b in at.button] == ["Compute"]
    assert [e.value for e in at.error] == (["bad input"] if outcome == "error" else [])
    at.run()
    assert _warnings(at) == []


def test_a_job_can_say_itself_what_it_keeps(dataset, cache_dir):
    """The Evaluate page's grid keeps finished training runs, not scoring caches: its job says so."""
    at = _job_app(dataset, "interrupted", kept=["3 of 17 training runs"])
    at.button[0].click().run()
    at.button(key="job_cancel").click().run()
    assert _warnings(at) == ["Test scores cancelled — 3 of 17 training runs already computed are kept and the "
                             "next run resumes from them."]
