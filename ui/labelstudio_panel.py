"""Streamlit glue for the Label Studio round trip: the connection settings, send and pull buttons.

Everything they do is ``pruning_core.labelstudio``'s push and pull; the settings live in the session
(the token is never written anywhere), shared by the Review and Overview pages.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import pandas as pd
import streamlit as st

from pruning_core.audit.review import DecisionStore
from pruning_core.data.datasets import Dataset
from pruning_core.labelstudio.client import LabelStudio
from pruning_core.labelstudio.roundtrip import Ledger, fetch, pull, push, queue_frame
from pruning_core.labelstudio.tasks import ImageSource, LabelStudioError, source_name

URL, TOKEN, PROJECT, LOCAL_ROOT = "ls_url", "ls_token", "ls_project", "ls_local_root"
MESSAGE = "ls_message"


def settings(dataset: Dataset) -> None:
    """The server, token, project and image serving, in an expander (values kept for the session)."""
    st.session_state.setdefault(URL, os.environ.get("LABEL_STUDIO_URL", "http://127.0.0.1:8080"))
    st.session_state.setdefault(TOKEN, os.environ.get("LABEL_STUDIO_API_KEY", ""))
    st.session_state.setdefault(PROJECT, f"PruneScope {dataset.name}")
    st.session_state.setdefault(LOCAL_ROOT, "")
    with st.expander("Label Studio: send queues to annotators, bring their answers back"):
        c1, c2, c3 = st.columns(3)
        c1.text_input("Label Studio URL", key=URL)
        c2.text_input("Access token", key=TOKEN, type="password", help="Account & Settings → Access Token")
        c3.text_input("Project", key=PROJECT, help="created on the first send; sending again updates its tasks")
        st.text_input("Local-files document root (empty: embed images as data URLs)", key=LOCAL_ROOT,
                      help="Label Studio's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT, when it serves the images itself "
                           "(README: Label Studio)")
    message = st.session_state.pop(MESSAGE, None)
    if message:
        (st.error if message[0] == "error" else st.success)(message[1])


def _client() -> LabelStudio:
    return LabelStudio(st.session_state[URL], st.session_state[TOKEN])


def send_button(container, dataset: Dataset, frame: pd.DataFrame, fingerprint: str, paths: Sequence[str], *,
                key: str, detector: Optional[str] = None, label: Optional[str] = None) -> None:
    """A button that pushes ``paths`` (a queue, a finding) to the project set in :func:`settings`."""
    def _send() -> None:
        root = st.session_state.get(LOCAL_ROOT, "").strip()
        try:
            report = push(_client(), st.session_state[PROJECT], queue_frame(frame, paths), dataset.classes,
                          fingerprint, ImageSource(dataset.root, Path(root) if root else None),
                          dataset_name=dataset.name, detector=detector)
        except (LabelStudioError, OSError) as exc:
            st.session_state[MESSAGE] = ("error", str(exc))
            return
        st.session_state[MESSAGE] = ("ok", report.describe(st.session_state[PROJECT]))

    container.button(label or f"Send {len(paths):,} to Label Studio", key=key, on_click=_send,
                     disabled=not len(paths), width="stretch")


def pull_button(container, dataset: Dataset, store: DecisionStore, *, key: str) -> None:
    """A button that records the project's annotations as decisions (source ``labelstudio:<project>``)."""
    def _pull() -> None:
        project = st.session_state[PROJECT]
        try:
            tasks, project_classes, users = fetch(_client(), project)
            report = pull(store, project, tasks, dataset.classes, users=users, fingerprint=dataset.fingerprint,
                          project_classes=project_classes)
        except (LabelStudioError, OSError) as exc:
            st.session_state[MESSAGE] = ("error", str(exc))
            return
        st.session_state[MESSAGE] = ("ok", "  \n".join(report.lines()))

    container.button("Pull annotations from Label Studio", key=key, on_click=_pull, width="stretch")


def conflicts(dataset: Dataset, store: DecisionStore) -> None:
    """Samples whose Label Studio annotators disagreed: the majority decided, every vote is listed."""
    votes = Ledger(store).votes(source_name(""), dataset.fingerprint)
    if len(votes):
        st.caption(f"{len(votes):,} samples (raw count) where Label Studio annotators disagreed; the majority "
                   "(a tie: the latest) is the decision:")
        st.dataframe(votes, hide_index=True, width="stretch")
