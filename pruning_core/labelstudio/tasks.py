"""Label Studio's side of a review queue as plain data: the labelling config, the tasks, and the verdicts.

Why plain functions over JSON-able dicts: the same tasks go to a server (``client``) or into an import
file, and the same export comes back from a server or from a file a team downloaded, so one builder and
one reader serve both forms.  Nothing here talks to a network or a database.

A task carries the sample's PruneScope id (its path) and its dataset's fingerprint in ``data``; a
completed annotation is one choice among the dataset's classes plus :data:`UNUSABLE`, which reads as
keep (the given label), relabel (another class) or remove (unusable).  Several annotators on one task
vote: the majority is the decision, the others are kept as dissent.
"""

from __future__ import annotations

import base64
import mimetypes
import re
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

import pandas as pd

UNUSABLE = "not this dataset / unusable"
"""The extra choice beside the classes: the image does not belong in the dataset (a remove decision)."""
FROM_NAME, TO_NAME = "verdict", "image"
MODEL_VERSION = "prunescope"
ID_FIELD, FINGERPRINT_FIELD = "prunescope_id", "prunescope_fingerprint"
"""Task data keys: the sample's path (PruneScope's id) and its dataset's fingerprint."""
SUGGESTION_SOURCES = (("suggest.label", "suggest.confidence"), ("clip.suggested_label", None),
                      ("dynamics.suggested_label", None))
"""Where a pre-annotation comes from, best first: the calibrated suggestion (its confidence is the model
score), else a detector's own suggested label (scored by the queue's detector)."""


class LabelStudioError(ValueError):
    """Label Studio input PruneScope cannot use (a refused request, another dataset, other classes)."""


@dataclass(frozen=True)
class LabelStudioConfig:
    """How a queue travels to Label Studio (defaults live here only)."""

    embed_max_bytes: int = 64 * 2**20
    """Images embedded as data URLs, in total, above which push refuses and asks for a local-files storage
    (Label Studio keeps embedded images in its database)."""
    import_batch: int = 1000
    """Tasks per import request."""
    timeout_s: float = 120.0
    """Seconds one HTTP request may take."""


# ----------------------------------------------------------------------------- labelling config

def label_config(classes: Sequence[str]) -> str:
    """An image-classification config over ``classes`` plus :data:`UNUSABLE`, showing the given label."""
    if UNUSABLE in classes:
        raise LabelStudioError(f"a class is named {UNUSABLE!r}, the choice PruneScope reserves for unusable images")
    choices = "\n".join(f"    <Choice value={quoteattr(str(c))}/>" for c in [*classes, UNUSABLE])
    return (f'<View>\n  <Image name="{TO_NAME}" value="$image"/>\n  <Header value="Given label: $label"/>\n'
            f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single" showInline="true">\n{choices}\n'
            "  </Choices>\n</View>\n")


def config_classes(config: str) -> list[str]:
    """The classes a PruneScope labelling config offers (its choices less :data:`UNUSABLE`)."""
    try:
        root = ET.fromstring(config)
    except ET.ParseError as exc:
        raise LabelStudioError(f"the project's labelling config is not XML ({exc})") from None
    choices = next((c for c in root.iter("Choices") if c.get("name") == FROM_NAME), None)
    if choices is None:
        raise LabelStudioError(f"the project's labelling config has no <Choices name=\"{FROM_NAME}\">: it was not "
                               "made by PruneScope; push to a new project name")
    return [c.get("value", "") for c in choices.iter("Choice") if c.get("value") != UNUSABLE]


def check_classes(project: str, offered: Sequence[str], classes: Sequence[str]) -> None:
    """Refuse a project whose classes are not the dataset's: its verdicts would name other classes."""
    if sorted(offered) != sorted(map(str, classes)):
        extra, missing = sorted(set(offered) - set(classes)), sorted(set(classes) - set(offered))
        raise LabelStudioError(f"project {project!r} offers other classes than the dataset (only in the project: "
                               f"{', '.join(extra) or 'none'}; only in the dataset: {', '.join(missing) or 'none'})")


# ----------------------------------------------------------------------------- tasks

@dataclass(frozen=True)
class ImageSource:
    """Where a task's image comes from: embedded as a data URL, or a URL under a local-files storage.

    ``local_root`` None embeds ``images / path``; otherwise the URL is Label Studio's local-files URL of
    that file relative to ``local_root`` (the server's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT).
    """

    images: Path
    local_root: Optional[Path] = None

    def url(self, path: str) -> str:
        file = self.images / path
        if self.local_root is not None:
            return "/data/local-files/?d=" + quote(file.resolve().relative_to(self.local_root.resolve()).as_posix())
        kind = mimetypes.guess_type(file.name)[0] or "image/png"
        return f"data:{kind};base64,{base64.b64encode(file.read_bytes()).decode('ascii')}"

    def check(self, paths: Sequence[str], config: LabelStudioConfig) -> None:
        """Refuse missing images, files outside the local-files root, or too much to embed, before any upload."""
        missing = [p for p in paths if not (self.images / p).is_file()]
        if missing:
            raise LabelStudioError(f"{self.images}: {len(missing):,} queued images are not there (first: {missing[0]}); "
                                   "give --images the folder the score table's paths are relative to")
        if self.local_root is not None:
            root = self.local_root.resolve()
            outside = [p for p in paths if not (self.images / p).resolve().is_relative_to(root)]
            if outside:
                raise LabelStudioError(f"{self.images / outside[0]} is outside the local-files root {root}")
            return
        total = sum((self.images / p).stat().st_size for p in paths)
        if total * 4 / 3 > config.embed_max_bytes:
            raise LabelStudioError(f"{len(paths):,} images are {total / 2**20:.0f} MiB, too much to embed as data URLs "
                                   f"(limit {config.embed_max_bytes / 2**20:.0f} MiB); serve them from a local-files "
                                   "storage with --local-files ROOT (README: Label Studio)")


def suggestion_columns(frame: pd.DataFrame, detector: Optional[str]) -> tuple[Optional[str], Optional[str]]:
    """(suggested label column, its score column) the pre-annotations use; (None, None) without any."""
    for label, score in SUGGESTION_SOURCES:
        if label in frame:
            score = score if score in frame else (detector if detector in frame else None)
            return label, score
    return None, None


def build_tasks(frame: pd.DataFrame, fingerprint: str, images: ImageSource, *,
                detector: Optional[str] = None) -> list[dict]:
    """One Label Studio task per row of ``frame``: image, given label, id, fingerprint, and the suggestion."""
    label_col, score_col = suggestion_columns(frame, detector)
    tasks = []
    for values in frame.to_dict("records"):
        path = str(values["path"])
        task: dict = {"data": {TO_NAME: images.url(path), "label": str(values["label"]), ID_FIELD: path,
                               FINGERPRINT_FIELD: fingerprint}}
        suggested = values.get(label_col) if label_col else None
        if suggested is not None and not pd.isna(suggested):
            score = values.get(score_col) if score_col else None
            task["predictions"] = [prediction(str(suggested), None if score is None or pd.isna(score) else float(score))]
        tasks.append(task)
    return tasks


def prediction(choice: str, score: Optional[float]) -> dict:
    """A pre-annotation choosing ``choice``, with PruneScope's score as the model score."""
    out: dict = {"model_version": MODEL_VERSION,
                 "result": [{"from_name": FROM_NAME, "to_name": TO_NAME, "type": "choices",
                             "value": {"choices": [choice]}}]}
    if score is not None:
        out["score"] = score
    return out


# ----------------------------------------------------------------------------- verdicts

@dataclass(frozen=True)
class Vote:
    """One completed annotation: who chose what, when."""

    annotation_id: int
    annotator: str
    choice: str
    updated_at: str


@dataclass(frozen=True)
class TaskVerdict:
    """What a task's annotators decided: the majority's decision, and everyone's votes."""

    task_id: int
    path: str
    fingerprint: str
    action: str  # keep | relabel | remove
    new_label: Optional[str]
    reviewer: str
    """The annotators who voted for the decision, joined with ', '."""
    votes: tuple[Vote, ...]
    dissent: tuple[Vote, ...] = field(default=())
    """Votes for another verdict (a conflict between annotators), kept and listed."""

    @property
    def signature(self) -> str:
        """Changes when an annotation is added, changed or withdrawn: what a re-pull compares."""
        return ";".join(f"{v.annotation_id}@{v.updated_at}" for v in sorted(self.votes, key=lambda v: v.annotation_id))

    def describe(self) -> str:
        """``relabel → star by ana (bob: keep)``: the decision and, for a conflict, who dissented."""
        label = f" → {self.new_label}" if self.action == "relabel" else ""
        others = "; ".join(f"{v.annotator}: {verdict_name(v.choice)}" for v in self.dissent)
        return f"{self.path}: {self.action}{label} by {self.reviewer}" + (f" (dissent: {others})" if others else "")


def verdict_name(choice: str) -> str:
    return "unusable" if choice == UNUSABLE else choice


def _decision(choice: str, given: str) -> tuple[str, Optional[str]]:
    if choice == UNUSABLE:
        return "remove", None
    return ("keep", None) if choice == given else ("relabel", choice)


def _annotator(completed_by, users: Mapping[int, str]) -> str:
    if isinstance(completed_by, dict):  # some exports embed the user
        return str(completed_by.get("email") or completed_by.get("username") or f"user {completed_by.get('id')}")
    return users.get(completed_by, f"user {completed_by}")


def _choice(annotation: Mapping) -> Optional[str]:
    for item in annotation.get("result") or []:
        if item.get("from_name") == FROM_NAME and item.get("type") == "choices":
            chosen = (item.get("value") or {}).get("choices") or []
            return str(chosen[0]) if chosen else None
    return None


def task_verdicts(tasks: Iterable[Mapping], classes: Sequence[str], users: Mapping[int, str] | None = None
                  ) -> tuple[list[TaskVerdict], list[str]]:
    """The verdict of every task with a completed annotation, and one line per annotation or task left out.

    Cancelled (skipped) annotations and annotations without our choice are no vote; a choice naming a class
    the dataset does not have is left out with a line naming it.  Each annotator counts once (their latest
    annotation).  The majority verdict decides; on a tie, the most recently updated of the tied verdicts.
    """
    known = set(map(str, classes)) | {UNUSABLE}
    verdicts, problems = [], []
    for task in tasks:
        data = task.get("data") or {}
        path, fp = data.get(ID_FIELD), data.get(FINGERPRINT_FIELD)
        if not path or not fp:
            problems.append(f"task {task.get('id')}: no {ID_FIELD}/{FINGERPRINT_FIELD} in its data (not pushed by "
                            "PruneScope); left out")
            continue
        latest: dict[str, Vote] = {}
        for ann in task.get("annotations") or []:
            if ann.get("was_cancelled"):
                continue
            choice = _choice(ann)
            if choice is None:
                continue
            who = _annotator(ann.get("completed_by"), users or {})
            if choice not in known:
                problems.append(f"task {task.get('id')} ({path}): annotation {ann.get('id')} by {who} names unknown "
                                f"class {choice!r}; left out")
                continue
            vote = Vote(int(ann["id"]), who, choice, str(ann.get("updated_at") or ann.get("created_at") or ""))
            if who not in latest or (vote.updated_at, vote.annotation_id) > (latest[who].updated_at,
                                                                              latest[who].annotation_id):
                latest[who] = vote
        if not latest:
            continue
        votes = tuple(sorted(latest.values(), key=lambda v: v.annotation_id))
        verdicts.append(_majority(int(task["id"]), str(path), str(fp), str(data.get("label", "")), votes))
    return verdicts, problems


def _majority(task_id: int, path: str, fingerprint: str, given: str, votes: tuple[Vote, ...]) -> TaskVerdict:
    counts = Counter(v.choice for v in votes)
    top = max(counts.values())
    tied = {c for c, n in counts.items() if n == top}
    winner = max((v for v in votes if v.choice in tied), key=lambda v: (v.updated_at, v.annotation_id)).choice
    action, new_label = _decision(winner, given)
    reviewer = ", ".join(v.annotator for v in votes if v.choice == winner)
    return TaskVerdict(task_id, path, fingerprint, action, new_label, reviewer, votes,
                       tuple(v for v in votes if v.choice != winner))


def task_fingerprints(tasks: Iterable[Mapping]) -> set[str]:
    """The dataset fingerprints a project's tasks were pushed for."""
    return {str((t.get("data") or {}).get(FINGERPRINT_FIELD)) for t in tasks
            if (t.get("data") or {}).get(FINGERPRINT_FIELD)}


def check_fingerprint(project: str, tasks: Sequence[Mapping], fingerprint: Optional[str]) -> Optional[str]:
    """The one dataset a project's tasks belong to (None: no PruneScope task yet); refuses another or a mix."""
    found = task_fingerprints(tasks)
    if len(found) > 1:
        raise LabelStudioError(f"project {project!r} holds tasks of {len(found)} datasets ({', '.join(sorted(found))}); "
                               "PruneScope reads one dataset per project")
    have = next(iter(found), None)
    if fingerprint is not None and have is not None and have != fingerprint:
        raise LabelStudioError(f"project {project!r} was made for dataset {have}, not for dataset {fingerprint}; "
                               "use another project name")
    return have


_SAFE = re.compile(r"[^A-Za-z0-9_.:-]+")


def source_name(project: str) -> str:
    """The decisions' ``source``: ``labelstudio:<project>``."""
    return "labelstudio:" + _SAFE.sub("-", project.strip())
