"""Label Studio round trip without a server: the labelling config, the tasks, the verdicts, and the file form.

The same code talks to a real server in tests/test_labelstudio_server.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pruning_core.audit.review import DecisionStore
from pruning_core.cli import main
from pruning_core.labelstudio.roundtrip import pull, read_export_file
from pruning_core.labelstudio.tasks import (FINGERPRINT_FIELD, ID_FIELD, UNUSABLE, LabelStudioError, config_classes,
                                            label_config, task_verdicts)
from review_fixtures import CLASSES, make_scored_dataset


def scored(root: Path, n: int = 12):
    """A small dataset and its score table (with a dataset fingerprint and calibrated suggestions), saved."""
    dataset, _, table = make_scored_dataset(root, n=n)
    table.frame["suggest.label"] = table.frame["clip.suggested_label"]
    table.frame["suggest.confidence"] = np.linspace(0.5, 0.99, n)
    table.settings = {"dataset": {"fingerprint": dataset.fingerprint, "name": dataset.name}}
    table.save(root / "scores.parquet")
    return dataset, table, root / "scores.parquet"


def annotation(ann_id: int, user: int, choice: str, when: str = "2026-12-05T10:00:00Z", **extra) -> dict:
    return {"id": ann_id, "completed_by": user, "updated_at": when, **extra,
            "result": [{"from_name": "verdict", "to_name": "image", "type": "choices", "value": {"choices": [choice]}}]}


def task(task_id: int, path: str, label: str, fp: str, *annotations: dict) -> dict:
    return {"id": task_id, "data": {"image": "x", "label": label, ID_FIELD: path, FINGERPRINT_FIELD: fp},
            "annotations": list(annotations)}


def test_label_config_offers_the_classes_and_unusable():
    xml = label_config(["cat", "dog & co"])
    assert config_classes(xml) == ["cat", "dog & co"]
    assert f'value="{UNUSABLE}"' in xml
    with pytest.raises(LabelStudioError, match="reserves"):
        label_config(["cat", UNUSABLE])


def test_verdicts_majority_tie_unknown_class_and_cancelled():
    users = {1: "ana", 2: "bob", 3: "cy"}
    tasks = [
        task(1, "a.png", "cat", "fp", annotation(1, 1, "cat")),                              # keep
        task(2, "b.png", "cat", "fp", annotation(2, 1, "dog"), annotation(3, 2, "dog"),
             annotation(4, 3, "cat")),                                                   # relabel, cy dissents
        task(3, "c.png", "cat", "fp", annotation(5, 1, UNUSABLE)),                           # remove
        task(4, "d.png", "cat", "fp", annotation(6, 1, "zebra")),                            # unknown: no vote
        task(5, "e.png", "cat", "fp", annotation(7, 1, "dog", "2026-12-05T09:00:00Z"),
             annotation(8, 2, "fox", "2026-12-05T11:00:00Z")),                              # tie: the later one
        task(6, "f.png", "cat", "fp", annotation(9, 1, "dog", was_cancelled=True)),          # skipped: no vote
    ]
    verdicts, problems = task_verdicts(tasks, CLASSES, users)
    got = {v.path: (v.action, v.new_label, v.reviewer, [d.annotator for d in v.dissent]) for v in verdicts}
    assert got == {"a.png": ("keep", None, "ana", []), "b.png": ("relabel", "dog", "ana, bob", ["cy"]),
                   "c.png": ("remove", None, "ana", []), "e.png": ("relabel", "fox", "bob", ["ana"])}
    assert len(problems) == 1 and "'zebra'" in problems[0] and "d.png" in problems[0]


def test_file_round_trip_records_once_updates_and_respects_the_app(tmp_path):
    dataset, table, scores = scored(tmp_path)
    fp = dataset.fingerprint
    p0, p1, p2 = table.frame["path"][:3]
    store = DecisionStore(tmp_path / "reviews.sqlite")
    tasks = [task(1, p0, "cat", fp, annotation(1, 1, "cat")), task(2, p1, "dog", fp, annotation(2, 1, "fox")),
             task(3, p2, "fox", fp, annotation(3, 1, UNUSABLE))]
    first = pull(store, "team A", tasks, dataset.classes)
    assert len(first.recorded) == 3
    latest = store.latest(fp).set_index("path")
    assert latest.loc[p0, "action"] == "keep" and latest.loc[p2, "action"] == "remove"
    assert (latest.loc[p1, "action"], latest.loc[p1, "new_label"]) == ("relabel", "fox")
    assert set(store.history(fp)["source"]) == {"labelstudio:team-A"}

    again = pull(store, "team A", tasks, dataset.classes)  # nothing new: nothing recorded
    assert again.recorded == [] and again.unchanged == 3 and len(store.history(fp)) == 3
    store.undo(fp, path=p2)  # a pulled decision undone in the app stays undone while its annotations do not change
    assert pull(store, "team A", tasks, dataset.classes).recorded == [] and p2 not in store.removed_paths(fp)
    store.decide(fp, p2, "remove", reviewer="me")  # (decided again in the app, as the annotators said)

    rows = len(store.history(fp))
    tasks[0]["annotations"].append(annotation(4, 2, "dog"))  # a second annotator, and a later one
    tasks[0]["annotations"].append(annotation(5, 3, "dog"))
    later = pull(store, "team A", tasks, dataset.classes)
    assert [v.path for v in later.recorded] == [p0] and len(store.history(fp)) == rows + 1
    assert store.relabels(fp)[p0] == "dog"

    store.decide(fp, p1, "keep", reviewer="me")  # decided in the app since: a changed annotation leaves it alone
    tasks[1]["annotations"][0] = annotation(2, 1, "cat", "2026-12-05T12:00:00Z")
    respected = pull(store, "team A", tasks, dataset.classes)
    assert respected.kept_from_app == [p1] and store.latest(fp).set_index("path").loc[p1, "action"] == "keep"

    deleted = pull(store, "team A", tasks[:2], dataset.classes)  # task 3 was deleted in Label Studio
    assert deleted.deleted == [p2] and store.latest(fp).set_index("path").loc[p2, "action"] == "remove"
    assert pull(store, "team A", tasks[:2], dataset.classes).deleted == []  # reported once


def test_pull_refuses_another_dataset_and_other_classes(tmp_path):
    dataset, table, _ = scored(tmp_path)
    store = DecisionStore(tmp_path / "reviews.sqlite")
    path = table.frame["path"][0]
    tasks = [task(1, path, "cat", "other-fingerprint", annotation(1, 1, "dog"))]
    with pytest.raises(LabelStudioError, match="made for dataset other-fingerprint"):
        pull(store, "p", tasks, dataset.classes, fingerprint=dataset.fingerprint)
    with pytest.raises(LabelStudioError, match="other classes"):
        pull(store, "p", tasks, dataset.classes, project_classes=["cat", "dog", "wolf"])
    assert store.fingerprints() == []


def test_cli_file_form(tmp_path, capsys):
    dataset, table, scores = scored(tmp_path)
    queue = tmp_path / "queue.txt"
    queue.write_text("\n".join(table.frame["path"][:4]))
    out = tmp_path / "tasks.json"
    assert main(["labelstudio", "push", str(scores), "--paths", str(queue), "--images", str(tmp_path),
                 "--to-file", str(out)]) == 0
    tasks = json.loads(out.read_text())
    assert [t["data"][ID_FIELD] for t in tasks] == list(table.frame["path"][:4])
    assert tasks[0]["data"]["image"].startswith("data:image/png;base64,")
    assert tasks[0]["data"][FINGERPRINT_FIELD] == dataset.fingerprint
    prediction = tasks[0]["predictions"][0]
    assert prediction["score"] == pytest.approx(0.5)
    assert prediction["result"][0]["value"]["choices"] == [table.frame["suggest.label"][0]]
    assert config_classes(out.with_suffix(".label_config.xml").read_text()) == list(dataset.classes)

    # Label Studio's export of that project: the tasks, each with one annotation choosing the suggestion
    export = [{**t, "id": i + 1, "annotations": [annotation(i + 1, 7, t["predictions"][0]["result"][0]["value"]
                                                            ["choices"][0])]} for i, t in enumerate(tasks)]
    exported = tmp_path / "export.json"
    exported.write_text(json.dumps(export))
    reviews = tmp_path / "reviews.sqlite"
    args = ["labelstudio", "pull", "--project", "offline", "--from-file", str(exported), "--scores", str(scores),
            "--decisions", str(reviews)]
    assert main(args) == 0 and "4 decisions recorded" in capsys.readouterr().out
    assert main(args) == 0 and "0 decisions recorded" in capsys.readouterr().out
    latest = DecisionStore(reviews).latest(dataset.fingerprint)
    assert len(latest) == 4 and set(latest["reviewer"]) == {"user 7"}
    assert read_export_file(exported)[0]["id"] == 1


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    _, table, scores = scored(tmp_path)
    queue = tmp_path / "queue.txt"
    queue.write_text(table.frame["path"][0])
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = main(["labelstudio", "push", str(scores), "--paths", str(queue), "--images", str(tmp_path),
                 "--url", f"http://127.0.0.1:{port}", "--token", "t", "--project", "p"])
    err = capsys.readouterr().err
    assert code == 2 and "unreachable" in err and len(err.strip().splitlines()) == 1
    bad = tmp_path / "export.json"
    bad.write_text('{"not": "a list"}')
    code = main(["labelstudio", "pull", "--project", "p", "--from-file", str(bad), "--scores", str(scores),
                 "--decisions", str(tmp_path / "r.sqlite")])
    err = capsys.readouterr().err
    assert code == 2 and "not a Label Studio JSON export" in err and len(err.strip().splitlines()) == 1
