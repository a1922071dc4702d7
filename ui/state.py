"""Streamlit glue shared by the pages: where the dataset and scores live between reruns.

Pages stay thin: they read the current dataset and score table from here and call
``pruning_core`` for everything else.  Heavy objects are cached per source with
``st.cache_resource`` and every computed result also lives in the persistent
``ResultStore``, so a rerun, a reload or a restart finds it again.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional

import pandas as pd
import streamlit as st

from cache.store import ResultStore
from pruning_core.runtime import executors
from pruning_core.data.datasets import Dataset, DatasetError, load_dataset
from pruning_core.data.ledger import LEDGER_FOLDER
from pruning_core.dynamics.config import DynamicsConfig
from pruning_core.audit.suggest import with_suggestions
from pruning_core.selection import SelectionPreview
from pruning_core.scoring.pipeline import ClipConfig, kept_work
from pruning_core.runtime.planner import DynamicsPlan, format_seconds
from pruning_core.runtime.progress import CancelToken, Cancelled, Progress, ProgressCallback
from pruning_core.runtime.safety import UnsafeRequest, check_in_workspace
from pruning_core.scoring.score_table import ScoreTable, base_table, score_columns
from pruning_core.selection import ScoreRanks, SelectionRecipe
from ui import review_state

DATASET = "dataset_source"
TABLE = "score_table"
CLIP = "clip_config"
RECIPE = "recipe"
PAGE_JOB = "page_job"
EXECUTOR = "executor"
_PRUNE_PREVIEWS = "_prune_previews"
"""The Prune page's score ranks and last previews; read and written only through the functions below."""
PRUNE_PREVIEWS_KEPT = 16
STOP_WAIT_S = 60.0
"""How long the run after a click waits for the interrupted job to stop (it checks between chunks)."""


@dataclass(frozen=True)
class DatasetSource:
    """What the user chose on the Dataset page; hashable so it keys the resource cache."""

    kind: str  # "demo" | "folder" | "manifest" | "container"
    path: str = ""
    root: str = ""
    format: str = ""
    """A container's format (``pruning_core.data.readers.FORMATS``); empty: detected from the path."""
    split: str = ""
    """The split audited when the data has several; empty: train (or the first)."""


@st.cache_resource(show_spinner=False)
def store() -> ResultStore:
    return ResultStore()


@st.cache_resource(show_spinner="Building the demo dataset and training its tiny CLIP (first run only)…")
def demo_assets():
    """The built-in demo; built once per machine (``prunescope demo`` or the start script do it ahead)."""
    from pruning_core.demo.dataset import ensure_demo

    return ensure_demo()


def check_source(source: DatasetSource) -> None:
    """Refuse (``UnsafeRequest``) a dataset whose folder, manifest or root lies outside the workspace roots.

    A browser user must not be able to list or display files of the server outside the folders its
    owner allowed (``$PRUNESCOPE_ROOTS``); a manifest's default root is its own folder.
    """
    if source.kind == "demo":
        return
    what = {"folder": "dataset folder", "container": "dataset"}.get(source.kind, "manifest")
    path = check_in_workspace(source.path, what)
    check_in_workspace(source.root or (path if source.kind != "manifest" else path.parent), "dataset root")


@st.cache_resource(show_spinner="Loading and validating the dataset…", max_entries=4)
def _load(source: DatasetSource) -> Dataset:
    ledger_dir = store().root / LEDGER_FOLDER  # files that decoded before are not decoded again
    if source.kind == "demo":
        return load_dataset(demo_assets().manifest, ledger_dir=ledger_dir)
    check_source(source)
    return load_dataset(source.path.strip(), root=Path(source.root).expanduser() if source.root else None,
                        format=source.format or None, split=source.split or None, ledger_dir=ledger_dir)


def other_split(split: str) -> Dataset:
    """Another split of the loaded data (Evaluate's held-out set): loaded and validated as the data is (cached)."""
    return _load(replace(current_source(), split=split))


def heldout_dataset(path: str) -> Dataset:
    """A held-out set the user typed (Evaluate): inside the workspace like any dataset, validated once (cached).

    The demo's own clean test set lives in the result store and is trusted as the demo is.
    """
    p = Path(path).expanduser()
    if current_source().kind == "demo" and p == demo_assets().test_manifest:
        return _load_trusted(str(p))
    return _load(DatasetSource("folder" if p.is_dir() else "manifest", str(p)))


@st.cache_resource(show_spinner="Loading and validating the held-out set…", max_entries=2)
def _load_trusted(manifest: str) -> Dataset:
    return load_dataset(Path(manifest))


def current_source() -> DatasetSource:
    return st.session_state.setdefault(DATASET, DatasetSource("demo"))


def set_source(source: DatasetSource) -> None:
    st.session_state[DATASET] = source
    st.session_state.pop(TABLE, None)
    st.session_state.pop(CLIP, None)
    publish_to_url()


# ----------------------------------------------------------------------------- the view in the URL
_URL_READ = "_url_read"
REVIEW_QUEUE = "review_queue_source"
"""The Review page's queue widget ("all" or "tag:<name>"): the part of the queue a link can name."""


def restore_from_url() -> None:
    """On a session's first run, open the view the URL names (a reload, or a link someone shared):
    the dataset (``dataset``, ``path``, ``root``, ``format``, ``split``), the Prune recipe (``recipe``, its JSON) and the
    Review queue (``queue``).  The score table comes back from the workspace (:func:`score_table`).
    A link's dataset is checked like a typed one when it is loaded (``check_source``)."""
    if st.session_state.get(_URL_READ):
        return
    st.session_state[_URL_READ] = True
    params = st.query_params
    if params.get("dataset") in ("demo", "folder", "manifest", "container") and DATASET not in st.session_state:
        st.session_state[DATASET] = DatasetSource(params["dataset"], params.get("path", ""), params.get("root", ""),
                                                  params.get("format", ""), params.get("split", ""))
    if params.get("recipe") and RECIPE not in st.session_state:
        try:
            recipe = SelectionRecipe(**json.loads(params["recipe"]))
            if not isinstance(recipe.strategy, str):  # keep is checked by SelectionRecipe itself
                raise ValueError("strategy must be a name")
            st.session_state[RECIPE] = recipe
        except (ValueError, TypeError) as exc:
            st.warning(f"The link's recipe was not used: {exc}")
    queue = params.get("queue", "")
    if queue == "all" or queue.startswith("tag:"):
        review_state.preset(REVIEW_QUEUE, queue)


def publish_to_url() -> None:
    """Write the current view into the URL's query parameters, so a reload or a shared link reopens it."""
    source = current_source()
    params = {"dataset": source.kind, "path": source.path, "root": source.root, "format": source.format,
              "split": source.split}
    recipe = st.session_state.get(RECIPE)
    if recipe is not None:
        params["recipe"] = json.dumps(recipe.as_dict(), separators=(",", ":"))
    queue = review_state.kept(REVIEW_QUEUE, "")
    if queue == "all" or queue.startswith("tag:"):
        params["queue"] = queue
    params = {k: v for k, v in params.items() if v}
    if dict(st.query_params) != params:
        st.query_params.from_dict(params)


def set_recipe(recipe: SelectionRecipe) -> None:
    """The recipe Prune publishes and Export reads; also in the URL."""
    st.session_state[RECIPE] = recipe
    publish_to_url()


def current_dataset() -> Optional[Dataset]:
    """The chosen dataset, or None after showing why it could not be loaded."""
    try:
        return _load(current_source())
    except (DatasetError, FileNotFoundError, UnsafeRequest) as exc:
        st.error(f"Could not load the dataset: {exc}")
        return None


def demo_clip_config(assets) -> ClipConfig:
    """The demo's own tiny CLIP, as the app scores the demo with it (tests read the same scores back)."""
    return ClipConfig(model=assets.clip_model, pretrained=str(assets.clip_checkpoint), batch_size=512)


def default_clip_config() -> ClipConfig:
    """The demo scores with its own tiny CLIP; other data defaults to a real ViT-B-32."""
    return demo_clip_config(demo_assets()) if current_source().kind == "demo" else ClipConfig()


def clip_config() -> ClipConfig:
    return st.session_state.get(CLIP) or default_clip_config()


def _workspace_table(dataset: Dataset) -> Path:
    """Where the last score table the app made for ``dataset`` is kept (by its fingerprint), for a reload."""
    return store().root / "workspace" / f"scores-{dataset.fingerprint[:16]}.parquet"


def score_table(dataset: Dataset) -> ScoreTable:
    """The scores computed so far this session, else the last ones the app made for this dataset (a reload
    or a shared link), else just the sample columns."""
    table = st.session_state.get(TABLE)
    if table is None and _workspace_table(dataset).is_file():
        try:
            table = st.session_state[TABLE] = ScoreTable.load(_workspace_table(dataset))
        except (OSError, ValueError):
            table = None  # a damaged workspace file: the scores are recomputed from the cache
    if table is None or len(table.frame) != len(dataset):
        table = base_table(dataset)
    return table


def set_score_table(dataset: Dataset, table: ScoreTable) -> None:
    st.session_state[TABLE] = table
    table.save(_workspace_table(dataset))


class StreamlitProgress:
    """A ``ProgressCallback`` drawing one progress bar per stage inside ``container``."""

    def __init__(self, container) -> None:
        self.container = container
        self.bars: dict[str, object] = {}
        self.started: dict[str, float] = {}
        self.ended: set[str] = set()

    def __call__(self, p: Progress) -> None:
        bar = self.bars.get(p.stage)
        if bar is None:
            bar = self.bars[p.stage] = self.container.progress(0.0, text=p.stage)
            self.started[p.stage] = time.monotonic()
        detail = f" — {p.message}" if p.message else ""
        elapsed = time.monotonic() - self.started[p.stage]
        if p.fraction >= 1:
            bar.progress(1.0, text=f"{p.stage}: done, {p.total:,} in {format_seconds(elapsed)}{detail}")
            self.ended.add(p.stage)  # its time is said: finish() must not restate it as the time to the job's end
            return
        self.ended.discard(p.stage)
        clock = f" · {format_seconds(elapsed)} elapsed"
        if p.fraction > 0:
            clock += f", about {format_seconds(elapsed * (1 - p.fraction) / p.fraction)} left"
        bar.progress(p.fraction, text=f"{p.stage}: {p.done:,} / {p.total:,}{detail}{clock}")

    def finish(self) -> None:
        """The job ended: every bar still open says done (a stage whose last report came before its end would
        otherwise keep saying "about 20 s left"); a stage that reported its end keeps the time it said then."""
        for stage, bar in self.bars.items():
            if stage in self.ended:
                continue
            bar.progress(1.0, text=f"{stage}: done in {format_seconds(time.monotonic() - self.started[stage])}")


def require_dataset() -> Dataset:
    """The current dataset, or stop the page with a pointer to the Dataset step."""
    dataset = current_dataset()
    if dataset is None:
        st.info("Choose a dataset on the **Dataset** page first.")
        st.stop()
    return dataset


def require_scores(dataset: Dataset) -> ScoreTable:
    table = auto_scores(dataset)
    if not table.infos:
        st.info("No scores yet: compute them on the **Score** page.")
        st.stop()
    return table


@dataclass(frozen=True)
class ScoredDataset:
    """What the pages after Score work on: the dataset, its score table and its score columns."""

    dataset: Dataset
    table: ScoreTable
    cols: list[str]

    @property
    def frame(self) -> pd.DataFrame:
        return self.table.frame


def require_scored_dataset() -> ScoredDataset:
    """The dataset and its scores, or stop the page with a pointer to the step that is missing."""
    dataset = require_dataset()
    table = require_scores(dataset)
    return ScoredDataset(dataset, table, score_columns(table.frame, table.infos))


def _table_key(table: ScoreTable) -> tuple:
    return id(table.frame), tuple(table.infos)


def _preview_key(recipe: SelectionRecipe, removed: list[str]) -> tuple:
    return repr(recipe), tuple(sorted(removed))


def _prune_previews(table: ScoreTable) -> Optional[dict]:
    """The preview cache of ``table``, or None when it was made for another score table."""
    cache = st.session_state.get(_PRUNE_PREVIEWS)
    return cache if cache is not None and cache["table"] == _table_key(table) else None


def score_ranks(table: ScoreTable) -> ScoreRanks:
    """One :class:`ScoreRanks` per score table: each score is ranked once, however often the recipe changes.

    A new score table starts a new cache, so ranks and previews of old scores are never reused.
    """
    cache = _prune_previews(table)
    if cache is None:
        cache = st.session_state[_PRUNE_PREVIEWS] = {"table": _table_key(table),
                                                     "ranks": ScoreRanks(table.frame, table.infos), "previews": {}}
    return cache["ranks"]


def prune_preview(table: ScoreTable, recipe: SelectionRecipe, removed: list[str]) -> Optional[SelectionPreview]:
    """The preview Prune computed for this recipe, reviewer removals and score table, if it is still kept.

    Export reads it so the subset it writes is the one the user saw, without selecting again.
    """
    cache = _prune_previews(table)
    return cache["previews"].get(_preview_key(recipe, removed)) if cache is not None else None


def keep_prune_preview(table: ScoreTable, recipe: SelectionRecipe, removed: list[str],
                       preview: SelectionPreview) -> None:
    """Remember a preview (the last ``PRUNE_PREVIEWS_KEPT`` or so), so moving a control back costs nothing."""
    score_ranks(table)  # starts the cache for this table if needed
    previews = st.session_state[_PRUNE_PREVIEWS]["previews"]
    if len(previews) > PRUNE_PREVIEWS_KEPT:
        previews.pop(next(iter(previews)))
    previews[_preview_key(recipe, removed)] = preview


def _replace_family(dataset: Dataset, new: ScoreTable) -> ScoreTable:
    """This session's table with ``new``'s columns replacing any earlier ones of the same names."""
    table = score_table(dataset)
    frame = table.frame.drop(columns=[c for c in new.frame.columns if c in table.frame.columns])
    infos = {n: i for n, i in table.infos.items() if n not in new.frame.columns}
    merged = ScoreTable(frame, infos, settings=table.settings).merged(new)  # keeps how the other families were made
    merged = with_suggestions(merged)  # the suggestions combine every probability source the table now has
    set_score_table(dataset, merged)
    return merged


def compute_clip_scores(
    dataset: Dataset, config: ClipConfig, progress: ProgressCallback, cancel: Optional[CancelToken] = None
) -> ScoreTable:
    """Run (or fetch from the store) the CLIP scores and add them to this session's table."""
    from pruning_core.scoring.pipeline import clip_score_table
    from ui.background import clip_umap_or_start

    table = _replace_family(dataset, clip_score_table(dataset, config, store(), progress=progress, cancel=cancel))
    clip_umap_or_start(dataset, config, store())  # embeddings are cached by now; the map is ready before Explore
    return table


def plan_dynamics(dataset: Dataset, config: DynamicsConfig, fixed: tuple[str, ...], grows: bool = False
                  ) -> DynamicsPlan:
    """The plan for ``config`` on this dataset, shown before the run (the first call measures the machine);
    ``grows`` for the recording run's (``pruning_core.runtime.planner.plan_dynamics``)."""
    from pruning_core.dynamics.probe import PROXY_PROBE
    from pruning_core.runtime.planner import plan_dynamics as plan
    from pruning_core.scoring.pipeline import decoding_seconds

    with st.spinner("Measuring this machine's training throughput (again when its load has changed)…"):
        return plan(config, len(dataset), num_classes=len(dataset.classes), budget_s=config.budget_s, fixed=fixed,
                    store=store(), probe=PROXY_PROBE, overhead_s=decoding_seconds(dataset, store()), grows=grows)


def plan_evaluation(dataset: Dataset, test: Optional[Dataset], config, strategies, keeps, fixed: tuple[str, ...],
                    clip: Optional[ClipConfig]):
    """The Evaluate grid's plan (proxy settings fitted to its time budget), shown before anything trains."""
    from pruning_core.subset_training.evaluate import plan_grid

    with st.spinner("Measuring this machine's training throughput (again when its load has changed)…"):
        return plan_grid(config, strategies=strategies, keeps=keeps, n_samples=len(dataset),
                         n_test=len(test) if test is not None else None, num_classes=len(dataset.classes),
                         fixed=fixed, clip=clip, store=store())


def compute_dynamics_scores(
    dataset: Dataset,
    config: DynamicsConfig,
    clip: Optional[ClipConfig],
    plan: Optional[DynamicsPlan],
    progress: ProgressCallback,
    cancel: Optional[CancelToken] = None,
) -> ScoreTable:
    """Run (or fetch) proxy training, dynamics scores and cleanlab issues; add them to the table."""
    from pruning_core.scoring.pipeline import dynamics_score_table

    from pruning_core.runtime.planner import check_run_rate

    table = dynamics_score_table(dataset, config, store(), clip=clip, progress=progress, cancel=cancel)
    if plan is not None:
        run = check_run_rate(plan, table.settings["dynamics"], store())
        table.settings["dynamics"]["plan"] = {**plan.as_dict(), "run": run}
    return _replace_family(dataset, table)


def compute_adapruner_scores(
    dataset: Dataset,
    ratio: float,
    config: DynamicsConfig,
    progress: ProgressCallback,
    cancel: Optional[CancelToken] = None,
) -> ScoreTable:
    """Learn (or fetch) the AdaPruner mask for ``ratio`` and add its column to the table."""
    from pruning_core.subset_training import adapruner_score_table

    return _replace_family(dataset, adapruner_score_table(dataset, ratio, config, store(), progress=progress,
                                                          cancel=cancel))


def compute_image_quality_scores(dataset: Dataset, progress: ProgressCallback,
                                 cancel: Optional[CancelToken] = None) -> ScoreTable:
    """Run (or fetch) CleanVision's image-quality scores at ``QualityConfig``'s thresholds; add them to the table."""
    from pruning_core.image_quality import QualityConfig
    from pruning_core.scoring.pipeline import image_quality_score_table

    return _replace_family(dataset, image_quality_score_table(dataset, QualityConfig(), store(), progress=progress,
                                                              cancel=cancel))


def compute_own_model_scores(dataset: Dataset, pred_probs, features, progress: ProgressCallback,
                             cancel: Optional[CancelToken] = None) -> ScoreTable:
    """Add the columns a user's own model gives (``cleanlab.*`` from ``pred_probs``, ``features.*`` from
    ``features``: checked ``own_model.UserArray`` s, either may be None) to the table, as ``score`` does."""
    from pruning_core.scoring.pipeline import own_model_score_table

    return _replace_family(dataset, own_model_score_table(dataset, pred_probs=pred_probs, features=features,
                                                          knn=clip_config(), progress=progress, cancel=cancel))


# ----------------------------------------------------------------------------- cancellable Score-page jobs

@dataclass(eq=False)
class PageJob:
    """A long page computation in flight (Score, Evaluate), kept in session state.

    Any click while a script runs (Cancel, Stop, another widget) starts a new run of the page at
    once, and the old run stops only at its next Streamlit call.  The new run finds the job here,
    cancels its token (so it stops at its next chunk, not at its next progress-bar update), waits
    for it to end, and says what the store kept, so the message is checked, not assumed.
    """

    name: str  # "CLIP scores" / "Dynamics scores": the message's subject
    kept: Callable[[], list[str]] = list
    """What an interrupted run left for the next one, read when it is reported (e.g. :func:`scoring_kept`)."""
    cancel: CancelToken = field(default_factory=CancelToken)
    ended: threading.Event = field(default_factory=threading.Event)
    settled: bool = False  # ended on its own (a result or an error): nothing to report as cancelled


def run_page_job(job: PageJob, compute: Callable[[ProgressCallback, CancelToken], object], container) -> None:
    """Run ``compute`` with progress bars and a Cancel button in ``container``.

    Errors propagate for the page to show; an interruption (a click's rerun, or ``Cancelled``
    from the token) leaves the job in session state for :func:`report_interrupted_job`.
    """
    st.session_state[PAGE_JOB] = job
    cancel_slot = container.empty()
    cancel_slot.button("Cancel", key="job_cancel", icon=":material/cancel:", on_click=job.cancel.cancel,
                       help="Stops after the chunk or fold in progress; finished ones are kept for the next run")
    try:
        with executors.using(executors.make_executor(st.session_state.get(EXECUTOR, "local"))):
            progress = StreamlitProgress(container)
            compute(progress, job.cancel)
        progress.finish()
    except Cancelled:
        pass  # the run the click started reports what was kept
    except Exception:
        _settle(job, cancel_slot)
        raise
    else:
        _settle(job, cancel_slot)
    finally:
        job.ended.set()


def _settle(job: PageJob, cancel_slot) -> None:
    """The job ended on its own (a result or an error): no Cancel button, nothing to report."""
    job.settled = True
    cancel_slot.empty()
    if st.session_state.get(PAGE_JOB) is job:
        del st.session_state[PAGE_JOB]


def report_interrupted_job() -> None:
    """If a click interrupted a page job: stop it for good, then say what the next run reuses."""
    job: Optional[PageJob] = st.session_state.get(PAGE_JOB)
    if job is None:
        return
    clicked = job.cancel.cancelled  # the Cancel button's callback ran just before this script
    job.cancel.cancel()  # whatever interrupted it, the old run is over: stop it at its next chunk
    if not job.ended.is_set():
        with st.spinner(f"Stopping {job.name}…"):
            job.ended.wait(STOP_WAIT_S)
    if not job.ended.is_set():
        st.warning(f"{job.name} is still stopping (it checks between chunks); reload the page in a moment.")
        return
    del st.session_state[PAGE_JOB]
    if not job.settled:
        st.warning(cancel_message(job.name, clicked, job.kept()), icon=":material/cancel:")


def scoring_kept(
    dataset: Dataset, clip: Optional[ClipConfig] = None, dynamics: Optional[DynamicsConfig] = None
) -> Callable[[], list[str]]:
    """A scoring job's ``kept``: what the store holds of its work (:func:`pruning_core.scoring.pipeline.kept_work`)."""
    return lambda: kept_work(dataset, store(), clip=clip, dynamics=dynamics)


def cancel_message(name: str, clicked: bool, kept: list[str]) -> str:
    """What a cancelled job leaves, as its ``kept`` reported it."""
    verb = "cancelled" if clicked else "interrupted"
    if not kept:
        return f"{name} {verb} — nothing was finished yet, so the next run starts from the beginning."
    listed = kept[0] if len(kept) == 1 else ", ".join(kept[:-1]) + " and " + kept[-1]
    return f"{name} {verb} — {listed} already computed are kept and the next run resumes from them."


def auto_scores(dataset: Dataset) -> ScoreTable:
    """The demo is scored on first sight (seconds with its tiny CLIP); other data waits for the Score page."""
    table = score_table(dataset)
    if not table.infos and current_source().kind == "demo":
        holder = st.empty()
        with holder.container():
            st.caption("Scoring the demo with its tiny CLIP…")
            progress = StreamlitProgress(st)
            table = compute_clip_scores(dataset, default_clip_config(), progress)
            progress.finish()
        holder.empty()
    return table


def executor_choice() -> None:
    """'Run on' this machine or the Ray cluster, offered only when one is reachable (Score, Evaluate).

    The choice lives in session state and :func:`run_page_job` runs the page's job on it; Ray then
    joins the cluster ``ray start`` runs here or the one ``$RAY_ADDRESS`` names.
    """
    if executors.ray_cluster_reachable():
        st.radio("Run on", list(executors.EXECUTORS), key=EXECUTOR, horizontal=True,
                 format_func={"local": "this machine", "ray": "the Ray cluster"}.get,
                 help="Folds, training runs and embedding batches become Ray tasks; results land in the same "
                      "cache (a path every worker can reach), so either choice resumes the other's work.")
