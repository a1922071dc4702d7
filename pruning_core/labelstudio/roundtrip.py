"""Push a review queue to Label Studio and pull its annotations back as recorded decisions.

Push is idempotent: tasks are matched by their PruneScope id (the sample's path), so pushing the same
queue again updates changed tasks (label, image, suggestion) and creates only samples not there yet.

Pull turns each task's verdict (``tasks.task_verdicts``: the annotators' majority) into one decision in
the :class:`~pruning_core.audit.review.DecisionStore` with source ``labelstudio:<project>``.  Which
annotations a decision came from is kept in the same SQLite file (table ``labelstudio_tasks``, one row per
project and task: its annotation ids and update times, and the decision id), so

- re-pulling unchanged annotations records nothing,
- a later or changed annotation records one new decision for the sample (the store is append-only: the
  new one is current, the old one stays in the history), never a second row for the same verdict,
- a sample decided in PruneScope since the last pull (or a pulled decision undone there) is not overwritten
  by unchanged annotations.

The same two steps run on files for servers PruneScope cannot reach: :func:`write_import_file` writes
Label Studio's JSON import (and the labelling config beside it), :func:`read_export_file` reads its JSON export.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Optional, Sequence

import pandas as pd

from pruning_core.audit.review import DecisionStore
from pruning_core.labelstudio.client import LabelStudio
from pruning_core.labelstudio.tasks import (ID_FIELD, MODEL_VERSION, ImageSource, LabelStudioConfig, LabelStudioError,
                                            TaskVerdict, build_tasks, check_classes, check_fingerprint, config_classes,
                                            label_config, source_name, task_verdicts)

_LEDGER = """
CREATE TABLE IF NOT EXISTS labelstudio_tasks (
    project     TEXT    NOT NULL,   -- the decisions' source: labelstudio:<project>
    task_id     INTEGER NOT NULL,
    fingerprint TEXT    NOT NULL,
    path        TEXT    NOT NULL,
    annotations TEXT    NOT NULL,   -- annotation id@updated_at;... the decision was made from
    votes       TEXT    NOT NULL,   -- JSON: every annotator's choice, the dissent included
    decision_id INTEGER,
    pulled_ts   REAL    NOT NULL,
    PRIMARY KEY (project, task_id)
);
"""


@dataclass(frozen=True)
class PushReport:
    project_id: Optional[int]
    created: int
    updated: int
    unchanged: int

    def describe(self, project: str) -> str:
        return (f"project {project!r}: {self.created:,} tasks created, {self.updated:,} updated, "
                f"{self.unchanged:,} unchanged (raw counts)")


@dataclass
class PullReport:
    """What one pull did; every count is a raw count of tasks."""

    recorded: list[TaskVerdict] = field(default_factory=list)
    unchanged: int = 0
    kept_from_app: list[str] = field(default_factory=list)
    """Samples decided in PruneScope since the last pull: their decision was left alone."""
    deleted: list[str] = field(default_factory=list)
    """Samples pulled before whose task is gone from the project: their decision stays."""
    problems: list[str] = field(default_factory=list)
    conflicts: list[TaskVerdict] = field(default_factory=list)
    """Tasks whose annotators disagree (the majority decided; the dissent is listed)."""

    def lines(self) -> list[str]:
        out = [f"{len(self.recorded):,} decisions recorded, {self.unchanged:,} tasks unchanged since the last pull, "
               f"{len(self.conflicts):,} with disagreeing annotators (raw counts)"]
        out += [f"conflict: {v.describe()}" for v in self.conflicts]
        out += [f"not overwritten (decided in PruneScope since the last pull): {p}" for p in self.kept_from_app]
        out += [f"task deleted in Label Studio; its earlier decision stays (undo it in Review): {p}"
                for p in self.deleted]
        return out + [f"warning: {p}" for p in self.problems]


# ----------------------------------------------------------------------------- push

def queue_frame(frame: pd.DataFrame, paths: Sequence[str]) -> pd.DataFrame:
    """The rows of ``frame`` for ``paths`` in queue order; a path the table does not have is refused."""
    index = pd.Index(frame["path"].astype(str))
    at = index.get_indexer(list(map(str, paths)))
    if (at < 0).any():
        missing = [p for p, i in zip(paths, at) if i < 0]
        raise LabelStudioError(f"{len(missing):,} queued paths are not in the score table (first: {missing[0]})")
    return frame.iloc[at]


def describe_project(name: str, fingerprint: str) -> str:
    return f"PruneScope review queue of dataset {name or '?'} (fingerprint {fingerprint})"


def push(client: LabelStudio, project: str, frame: pd.DataFrame, classes: Sequence[str], fingerprint: str,
         images: ImageSource, *, dataset_name: str = "", detector: Optional[str] = None) -> PushReport:
    """Create or update ``project`` with one task per row of ``frame``; idempotent (matched by path)."""
    images.check(frame["path"].astype(str).tolist(), client.config)
    found = client.find_project(project)
    existing: list[dict] = []
    predictions: dict[int, list[dict]] = {}
    if found is None:
        found = client.create_project(project, label_config(classes), describe_project(dataset_name, fingerprint))
    else:
        check_classes(project, config_classes(found.get("label_config", "")), classes)
        existing = client.export(found["id"])
        check_fingerprint(project, existing, fingerprint)
        for p in client.predictions(found["id"]):
            if p.get("model_version") == MODEL_VERSION:
                predictions.setdefault(int(p["task"]), []).append(p)
    tasks = build_tasks(frame, fingerprint, images, detector=detector)
    by_path = {str((t.get("data") or {}).get(ID_FIELD)): t for t in existing}
    new = [t for t in tasks if t["data"][ID_FIELD] not in by_path]
    created = client.import_tasks(found["id"], new) if new else 0
    updated = 0
    for task in tasks:
        old = by_path.get(task["data"][ID_FIELD])
        if old is None:
            continue
        changed = False
        if {k: old["data"].get(k) for k in task["data"]} != task["data"]:
            client.update_task(old["id"], {**old["data"], **task["data"]})
            changed = True
        ours = predictions.get(int(old["id"]), [])
        want = task.get("predictions", [])
        if [_prediction_key(p) for p in ours] != [_prediction_key(p) for p in want]:
            client.replace_predictions(old["id"], [int(p["id"]) for p in ours if "id" in p], want)
            changed = True
        updated += changed
    return PushReport(found["id"], created, updated, len(tasks) - len(new) - updated)


def _prediction_key(prediction: Mapping) -> tuple:
    choices = [tuple((r.get("value") or {}).get("choices") or ()) for r in prediction.get("result") or []]
    score = prediction.get("score")
    return tuple(choices), None if score is None else round(float(score), 6)


def write_import_file(path: Path, frame: pd.DataFrame, classes: Sequence[str], fingerprint: str,
                      images: ImageSource, *, detector: Optional[str] = None,
                      config: LabelStudioConfig = LabelStudioConfig()) -> Path:
    """Label Studio's JSON import for ``frame`` at ``path``, and its labelling config beside it (``.xml``)."""
    images.check(frame["path"].astype(str).tolist(), config)
    tasks = build_tasks(frame, fingerprint, images, detector=detector)
    xml = Path(path).with_suffix(".label_config.xml")
    Path(path).write_text(json.dumps(tasks), encoding="utf-8")
    xml.write_text(label_config(classes), encoding="utf-8")
    return xml


# ----------------------------------------------------------------------------- pull

def read_export_file(path: Path) -> list[dict]:
    """Tasks from a Label Studio JSON export file (a list of tasks with their annotations)."""
    try:
        tasks = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise LabelStudioError(f"{path}: not a Label Studio JSON export ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(tasks, list) or not all(isinstance(t, dict) and "data" in t for t in tasks):
        raise LabelStudioError(f"{path}: not a Label Studio JSON export (expected a list of tasks with 'data'); "
                               "export the project as JSON")
    return tasks


def fetch(client: LabelStudio, project: str) -> tuple[list[dict], list[str], dict[int, str]]:
    """A project's tasks, its classes (from the labelling config) and its users."""
    found = client.project(project)
    return client.export(found["id"]), config_classes(found.get("label_config", "")), client.users()


class Ledger:
    """Which annotations each pulled decision came from, in the decisions' SQLite file."""

    def __init__(self, store: DecisionStore) -> None:
        self.path = store.path
        with self._connect() as con:
            con.executescript(_LEDGER)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """One short-lived connection per call, committed and closed (like the DecisionStore's)."""
        con = sqlite3.connect(self.path, timeout=30.0)
        con.row_factory = sqlite3.Row
        try:
            with con:
                yield con
        finally:
            con.close()

    def rows(self, source: str) -> dict[int, sqlite3.Row]:
        with self._connect() as con:
            return {int(r["task_id"]): r for r in con.execute("SELECT * FROM labelstudio_tasks WHERE project = ?",
                                                               (source,))}

    def fingerprint(self, source: str) -> Optional[str]:
        with self._connect() as con:
            row = con.execute("SELECT fingerprint FROM labelstudio_tasks WHERE project = ? LIMIT 1", (source,)).fetchone()
        return None if row is None else str(row[0])

    def save(self, source: str, verdicts: Sequence[TaskVerdict], decision_ids: Mapping[str, Optional[int]]) -> None:
        now = time.time()
        with self._connect() as con:
            con.executemany(
                "INSERT OR REPLACE INTO labelstudio_tasks VALUES (?,?,?,?,?,?,?,?)",
                [(source, v.task_id, v.fingerprint, v.path, v.signature,
                  json.dumps([[x.annotation_id, x.annotator, x.choice, x.updated_at] for x in v.votes]),
                  decision_ids.get(v.path), now) for v in verdicts])

    def forget(self, source: str, task_ids: Sequence[int]) -> None:
        """Drop deleted tasks (reported once; their decisions stay in the store's history)."""
        with self._connect() as con:
            con.executemany("DELETE FROM labelstudio_tasks WHERE project = ? AND task_id = ?",
                            [(source, int(t)) for t in task_ids])

    def votes(self, source_prefix: str, fingerprint: str) -> pd.DataFrame:
        """Every pulled task of ``fingerprint`` whose annotators disagreed, with their votes (for the Review page)."""
        with self._connect() as con:
            rows = con.execute("SELECT project, path, votes FROM labelstudio_tasks WHERE fingerprint = ? "
                               "AND project LIKE ? ORDER BY project, path", (fingerprint, source_prefix + "%")).fetchall()
        out = [(r["project"], r["path"], "; ".join(f"{a}: {c}" for _, a, c, _ in json.loads(r["votes"])))
               for r in rows if len({c for *_, c, _ in json.loads(r["votes"])}) > 1]
        return pd.DataFrame(out, columns=["project", "path", "votes"])


def pull(store: DecisionStore, project: str, tasks: Sequence[Mapping], classes: Sequence[str], *,
         users: Optional[Mapping[int, str]] = None, fingerprint: Optional[str] = None,
         project_classes: Optional[Sequence[str]] = None) -> PullReport:
    """Record the verdicts of ``tasks`` as decisions (source ``labelstudio:<project>``); see the module docstring.

    ``fingerprint`` (the scored dataset, when known) must be the project's; ``project_classes`` (the labelling
    config's) must be ``classes``.  A project bound to another dataset by an earlier pull is refused too.
    """
    source = source_name(project)
    if project_classes is not None:
        check_classes(project, project_classes, classes)
    ledger = Ledger(store)
    have = check_fingerprint(project, tasks, fingerprint)
    bound = ledger.fingerprint(source)
    if have is not None and bound is not None and have != bound:
        raise LabelStudioError(f"project {project!r} was pulled into {store.path} for dataset {bound}; its tasks now "
                               f"belong to dataset {have}: use another project name")
    report = PullReport()
    verdicts, report.problems = task_verdicts(tasks, classes, users)
    report.conflicts = [v for v in verdicts if v.dissent]
    fp = have or bound or fingerprint
    if fp is None:
        return report
    before = ledger.rows(source)
    present = {int(t["id"]) for t in tasks if "id" in t}
    report.deleted = sorted(str(r["path"]) for task_id, r in before.items() if task_id not in present)
    current = store.latest(fp).set_index("path")
    todo, settled = [], {}
    for verdict in verdicts:
        last = before.get(verdict.task_id)
        if last is not None and last["annotations"] == verdict.signature:
            report.unchanged += 1
            continue
        ours = None if last is None else last["decision_id"]
        now = current.loc[verdict.path] if verdict.path in current.index else None
        if now is not None and int(now["id"]) != ours:  # a reviewer in PruneScope decided it since: theirs stands
            report.kept_from_app.append(verdict.path)
            settled[verdict.path] = (verdict, None)
        elif now is not None and (now["action"], None if pd.isna(now["new_label"]) else now["new_label"]) == (
                verdict.action, verdict.new_label):
            report.unchanged += 1  # new annotations, same verdict: the decision stands, the ledger learns them
            settled[verdict.path] = (verdict, ours)
        else:
            todo.append(verdict)
    ids = _record(store, fp, source, todo, classes)
    report.recorded = [v for v in todo if v.path in ids]
    ledger.save(source, todo, ids)
    ledger.save(source, [v for v, _ in settled.values()], {p: i for p, (_, i) in settled.items()})
    ledger.forget(source, [task_id for task_id in before if task_id not in present])
    return report


def _record(store: DecisionStore, fingerprint: str, source: str, verdicts: Sequence[TaskVerdict],
            classes: Sequence[str]) -> dict[str, int]:
    """One decision per verdict, grouped by reviewer (the store records one reviewer per action)."""
    ids: dict[str, int] = {}
    by_reviewer: dict[str, list[TaskVerdict]] = {}
    for verdict in verdicts:
        by_reviewer.setdefault(verdict.reviewer, []).append(verdict)
    for reviewer, group in by_reviewer.items():
        recorded = store.record(fingerprint, [(v.path, v.action, v.new_label) for v in group], reviewer=reviewer,
                                classes=classes, source=source)
        ids.update({d.path: d.id for d in recorded})
    return ids


def finding_paths(frame: pd.DataFrame, infos: Mapping, settings: Mapping, kind: str) -> tuple[list[str], str]:
    """The samples an Overview finding flags (its queue) and the score that flagged them."""
    from pruning_core.audit.overview import overview

    found = overview(frame, infos, scoring=settings)
    finding = found.finding(kind)
    if finding is None:
        kinds = ", ".join(f.kind for f in found.findings if len(f.rows)) or "none"
        raise LabelStudioError(f"--queue {kind!r}: no such finding for these scores (findings with samples: {kinds})")
    return frame.loc[finding.rows, "path"].astype(str).tolist(), finding.score
