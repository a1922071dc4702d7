"""The round trip against a real Label Studio server (one per session: the ``label_studio`` fixture).

Push a queue, annotate it through Label Studio's API as several annotators, pull, and check the decisions
and what ``select --decisions`` keeps; then the bad inputs, each one line and nothing recorded wrongly.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pruning_core.audit.review import DecisionStore
from pruning_core.cli import main
from pruning_core.labelstudio.tasks import UNUSABLE, label_config
from test_labelstudio import scored

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow]


def cli(*args: str) -> int:
    return main([str(a) for a in args])


def push_args(server, scores: Path, queue: Path, images: Path, project: str, token: str | None = None) -> list:
    return ["labelstudio", "push", scores, "--paths", queue, "--images", images, "--url", server.url,
            "--token", token or server.token, "--project", project]


def project_tasks(server, title: str) -> dict[str, int]:
    project = next(p for p in server.call("GET", "/api/projects")["results"] if p["title"] == title)
    export = server.call("GET", f"/api/projects/{project['id']}/export",
                         params={"exportType": "JSON", "download_all_tasks": "true"})
    return {t["data"]["prunescope_id"]: t["id"] for t in export}


def test_round_trip_two_annotators_then_select(label_studio, tmp_path, capsys):
    dataset, table, scores = scored(tmp_path, n=24)
    paths = table.frame["path"].tolist()
    queue = tmp_path / "queue.txt"
    queue.write_text("\n".join(paths[:10]))
    assert cli(*push_args(label_studio, scores, queue, tmp_path, "round trip")) == 0
    assert "10 tasks created" in capsys.readouterr().out
    assert cli(*push_args(label_studio, scores, queue, tmp_path, "round trip")) == 0  # again: nothing duplicated
    assert "0 tasks created, 0 updated, 10 unchanged" in capsys.readouterr().out
    ids = project_tasks(label_studio, "round trip")
    assert sorted(ids) == sorted(paths[:10])

    ana, bob, cy = 1, label_studio.add_user("bob@example.com"), label_studio.add_user("cy@example.com")
    given = dict(zip(table.frame["path"], table.frame["label"]))
    other = {p: next(c for c in dataset.classes if c != given[p]) for p in paths}
    verdicts = {}  # path -> (action, new label): what the annotators' majority says
    for p in paths[:4]:  # both agree: keep
        label_studio.annotate(ids[p], ana, given[p]); label_studio.annotate(ids[p], bob, given[p])
        verdicts[p] = ("keep", None)
    for p in paths[4:6]:  # both agree: another class
        label_studio.annotate(ids[p], ana, other[p]); label_studio.annotate(ids[p], bob, other[p])
        verdicts[p] = ("relabel", other[p])
    label_studio.annotate(ids[paths[6]], ana, UNUSABLE); label_studio.annotate(ids[paths[6]], bob, UNUSABLE)
    verdicts[paths[6]] = ("remove", None)
    p7 = paths[7]  # a conflict: ana keeps, bob and cy relabel: the majority relabels, ana is listed
    label_studio.annotate(ids[p7], ana, given[p7]); label_studio.annotate(ids[p7], bob, other[p7])
    label_studio.annotate(ids[p7], cy, other[p7])
    verdicts[p7] = ("relabel", other[p7])
    label_studio.annotate(ids[paths[8]], ana, "zebra")  # a class the dataset does not have: no decision

    reviews = tmp_path / "reviews.sqlite"
    pull = ["labelstudio", "pull", "--url", label_studio.url, "--token", label_studio.token, "--project", "round trip",
            "--decisions", reviews, "--scores", scores]
    assert cli(*pull) == 0
    out = capsys.readouterr().out
    assert "8 decisions recorded" in out and "1 with disagreeing annotators" in out
    assert f"conflict: {p7}: relabel → {other[p7]} by bob@example.com, cy@example.com (dissent: admin@example.com: " \
           f"{given[p7]})" in out
    assert "names unknown class 'zebra'" in out
    store = DecisionStore(reviews)
    latest = store.latest(dataset.fingerprint).set_index("path")
    got = {p: (r["action"], None if pd.isna(r["new_label"]) else r["new_label"]) for p, r in latest.iterrows()}
    assert got == verdicts
    assert latest.loc[paths[0], "reviewer"] == "admin@example.com, bob@example.com"

    # push-pull again: nothing lost, nothing duplicated
    assert cli(*push_args(label_studio, scores, queue, tmp_path, "round trip")) == 0
    assert cli(*pull) == 0
    assert "0 decisions recorded" in capsys.readouterr().out
    assert len(store.history(dataset.fingerprint)) == len(verdicts)

    # the kept list equals the one from the same verdicts given in the app
    app = DecisionStore(tmp_path / "app.sqlite")
    for p, (action, new_label) in verdicts.items():
        app.decide(dataset.fingerprint, p, action, new_label=new_label, reviewer="me", classes=dataset.classes)
    kept = {}
    for name, file in (("labelstudio", reviews), ("app", app.path)):
        assert cli("select", scores, "--keep", "0.75", "--decisions", file, "--out", tmp_path / f"{name}.csv") == 0
        kept[name] = pd.read_csv(tmp_path / f"{name}.csv")[["path", "label"]]
    assert paths[6] not in set(kept["labelstudio"]["path"])
    pd.testing.assert_frame_equal(kept["labelstudio"], kept["app"])


def test_bad_input_against_the_server(label_studio, tmp_path, capsys):
    dataset, table, scores = scored(tmp_path / "a", n=12)
    paths = table.frame["path"].tolist()
    queue = tmp_path / "queue.txt"
    queue.write_text("\n".join(paths[:3]))
    images = tmp_path / "a"

    def refused(code: int, text: str) -> None:
        err = capsys.readouterr().err
        assert code == 2 and text in err and len(err.strip().splitlines()) == 1, err

    refused(cli(*push_args(label_studio, scores, queue, images, "bad token", token="wrong")), "refused the token")

    label_studio.call("POST", "/api/projects", json={"title": "other classes",
                                                     "label_config": label_config(["cat", "dog", "wolf"])})
    refused(cli(*push_args(label_studio, scores, queue, images, "other classes")), "other classes than the dataset")
    assert project_tasks(label_studio, "other classes") == {}

    assert cli(*push_args(label_studio, scores, queue, images, "first dataset")) == 0
    changed = next(c for c in dataset.classes if c != table.frame.at[0, "suggest.label"])
    table.frame.at[0, "suggest.label"] = changed  # a new suggestion for one queued sample: that task is updated
    table.save(scores)
    assert cli(*push_args(label_studio, scores, queue, images, "first dataset")) == 0
    assert "0 tasks created, 1 updated, 2 unchanged" in capsys.readouterr().out
    project = next(p for p in label_studio.call("GET", "/api/projects")["results"] if p["title"] == "first dataset")
    predictions = label_studio.call("GET", "/api/predictions", params={"project": project["id"]})
    assert len(predictions) == 3 and changed in [p["result"][0]["value"]["choices"][0] for p in predictions]
    other, other_table, other_scores = scored(tmp_path / "b", n=15)  # another dataset, same paths
    refused(cli(*push_args(label_studio, other_scores, queue, tmp_path / "b", "first dataset")), "made for dataset")
    reviews = tmp_path / "reviews.sqlite"
    pull = ["labelstudio", "pull", "--url", label_studio.url, "--token", label_studio.token,
            "--project", "first dataset", "--decisions", reviews]
    refused(cli(*pull, "--scores", other_scores), "made for dataset")
    assert DecisionStore(reviews).fingerprints() == []

    ids = project_tasks(label_studio, "first dataset")
    label_studio.annotate(ids[paths[0]], 1, UNUSABLE)
    assert cli(*pull, "--scores", scores) == 0
    capsys.readouterr()
    label_studio.call("DELETE", f"/api/tasks/{ids[paths[0]]}")  # deleted in Label Studio: reported, decision kept
    assert cli(*pull, "--scores", scores) == 0
    out = capsys.readouterr().out
    assert f"task deleted in Label Studio; its earlier decision stays (undo it in Review): {paths[0]}" in out
    assert DecisionStore(reviews).removed_paths(dataset.fingerprint) == [paths[0]]
    assert len(DecisionStore(reviews).history(dataset.fingerprint)) == 1


def test_review_page_sends_the_queue_and_pulls_the_answers(label_studio, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from ui import labelstudio_panel as lsp
    from ui import state

    monkeypatch.setenv("PRUNESCOPE_CACHE", str(tmp_path / "cache"))  # the page's reviews.sqlite
    dataset, table, _ = scored(tmp_path / "data", n=12)
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "pages" / "review.py"), default_timeout=60)
    at.session_state[state.DATASET] = state.DatasetSource("manifest", str(tmp_path / "data" / "manifest.csv"))
    at.session_state[state.TABLE] = table
    at.session_state[lsp.URL], at.session_state[lsp.TOKEN] = label_studio.url, label_studio.token
    at.session_state[lsp.PROJECT] = "from the review page"
    at.run()
    next(b for b in at.button if b.key == "ls_send_queue").click().run()
    assert not at.exception and "12 tasks created" in at.success[0].value
    ids = project_tasks(label_studio, "from the review page")
    path = table.frame["path"][3]
    bob = label_studio.add_user("bob@example.com")
    label_studio.annotate(ids[path], 1, table.frame["label"][3])  # ana keeps; bob and cy: unusable
    label_studio.annotate(ids[path], bob, UNUSABLE)
    label_studio.annotate(ids[path], label_studio.add_user("cy@example.com"), UNUSABLE)
    next(b for b in at.button if b.key == "ls_pull").click().run()
    assert not at.exception and "1 decisions recorded" in at.success[0].value
    assert DecisionStore().removed_paths(dataset.fingerprint) == [path]
    listed = next(d.value for d in at.dataframe if "votes" in d.value)  # the conflict, every vote listed
    assert listed["path"].tolist() == [path]
    assert listed["votes"][0] == (f"admin@example.com: {table.frame['label'][3]}; bob@example.com: {UNUSABLE}; "
                                  f"cy@example.com: {UNUSABLE}")


def test_images_served_from_a_local_files_storage(label_studio, tmp_path, capsys):
    _, table, scores = scored(tmp_path, n=6)
    queue = tmp_path / "queue.txt"
    queue.write_text("\n".join(table.frame["path"][:2]))
    assert cli(*push_args(label_studio, scores, queue, tmp_path, "local files"), "--local-files",
               label_studio.files_root) == 0
    project = next(p for p in label_studio.call("GET", "/api/projects")["results"] if p["title"] == "local files")
    export = label_studio.call("GET", f"/api/projects/{project['id']}/export",
                               params={"exportType": "JSON", "download_all_tasks": "true"})
    url = export[0]["data"]["image"]
    assert url.startswith("/data/local-files/?d=") and not url.startswith("data:")
    # the storage the user configures (Settings → Cloud Storage → Local files): the images' folder
    label_studio.call("POST", "/api/storages/localfiles", json={"project": project["id"], "path": str(tmp_path),
                                                                "title": "images", "use_blob_urls": True})
    import requests

    served = requests.get(label_studio.url + url, headers={"Authorization": f"Token {label_studio.token}"}, timeout=30)
    assert served.status_code == 200
    assert served.content == (tmp_path / export[0]["data"]["prunescope_id"]).read_bytes()


def test_a_personal_access_token_works_too(label_studio, tmp_path, capsys):
    """Label Studio's default token kind (a JWT refresh token) is exchanged for an access token."""
    _, table, scores = scored(tmp_path, n=6)
    queue = tmp_path / "queue.txt"
    queue.write_text(table.frame["path"][0])
    personal = label_studio.call("POST", "/api/token/")["token"]
    assert personal.count(".") == 2
    assert cli(*push_args(label_studio, scores, queue, tmp_path, "personal token", token=personal)) == 0
    assert "1 tasks created" in capsys.readouterr().out
