"""Streamlit glue for reviewer decisions: the shared DecisionStore, cached reads, keyboard shortcuts."""

from __future__ import annotations

import json
from typing import Callable, Sequence

import pandas as pd
import streamlit as st

from pruning_core.data.datasets import Dataset
from pruning_core.audit.review import BulkConfig, DecisionStore, decision_column, default_review_path

REVIEWER = "reviewer_name"
REVIEW_SOURCE = "review_source"  # "all", "tag:<name>" or "set:<name>": what another page sends to the queue
REVIEW_SET = "review_set"  # (name, paths) of a session-only queue sent from the Overview or a similarity search
ALL = "all"
BULK = BulkConfig()
_PENDING = "_bulk_pending"  # the key of the bulk button waiting for its confirmation


@st.cache_resource(show_spinner=False)
def _store(path: str) -> DecisionStore:
    return DecisionStore(path)


def decision_store() -> DecisionStore:
    """The store at the default location (``$PRUNESCOPE_CACHE/reviews.sqlite``), shared by all sessions."""
    return _store(str(default_review_path()))


@st.cache_data(show_spinner=False, max_entries=16)
def _latest(path: str, fingerprint: str, version: tuple) -> pd.DataFrame:
    return _store(path).latest(fingerprint)


def latest(dataset: Dataset) -> pd.DataFrame:
    """The current decision per sample; re-read only when the store changed (any tab, any process)."""
    store = decision_store()
    return _latest(str(store.path), dataset.fingerprint, store.version(dataset.fingerprint))


def decisions_for(dataset: Dataset, frame: pd.DataFrame) -> pd.Series:
    """Each row's current decision ('undecided' where none)."""
    return decision_column(frame, latest(dataset))


def removed_and_relabels(dataset: Dataset) -> tuple[list[str], dict[str, str]]:
    lat = latest(dataset)
    removed = lat.loc[lat["action"] == "remove", "path"].tolist()
    rel = lat[lat["action"] == "relabel"]
    return removed, dict(zip(rel["path"], rel["new_label"]))


def send_to_review(name: str, paths: Sequence[str]) -> None:
    """Open Review on exactly ``paths`` (a queue for this session only: nothing is written to the store)."""
    st.session_state[REVIEW_SET] = (name, tuple(str(p) for p in paths))
    st.session_state[REVIEW_SOURCE] = f"set:{name}"
    st.switch_page("pages/review.py")


def review_set() -> tuple[str, tuple[str, ...]] | None:
    """The session queue last sent to Review, if any."""
    return st.session_state.get(REVIEW_SET)


_REVIEWER_KEPT = "_" + REVIEWER
"""The reviewer's name outside the widget: it survives leaving the page (widget state does not)."""


def reviewer_input(container=None) -> str:
    """The reviewer's name (kept for the session; recorded with every decision)."""
    container = container or st.sidebar
    if REVIEWER not in st.session_state:
        st.session_state[REVIEWER] = reviewer_name()
    name = container.text_input("Reviewer", key=REVIEWER, placeholder="your name",
                                help="Stored with each decision you make")
    st.session_state[_REVIEWER_KEPT] = name
    return name.strip()


def reviewer_name() -> str:
    """The name last typed into :func:`reviewer_input`, for pages that record actions without showing it."""
    return st.session_state.get(_REVIEWER_KEPT, "")


def keyboard_shortcuts(keys: dict[str, str]) -> None:
    """Press a key to click the button whose label starts with the mapped text.

    Streamlit's own ``shortcut=`` reserves "r" (rerun) and "c", and the reviewer's keys
    are k/r/l/s/u, so a small script listens on the app document in the capture phase,
    ignores keys typed into inputs, clicks the button and stops the event so Streamlit's
    own "r = rerun" does not also fire.  The previous listener is replaced on each run,
    so a rerun never leaves two listeners clicking twice.
    """
    payload = json.dumps({k.lower(): v for k, v in keys.items()})
    marker = "prunescope-shortcuts"
    st.html(
        f"""<span id="{marker}" style="display:none"></span><script>
(() => {{
  const keys = {payload};
  const w = window;
  if (w.__prunescopeKeys) w.removeEventListener("keydown", w.__prunescopeKeys, true);
  w.__prunescopeKeys = (event) => {{
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    const t = event.target;
    const tag = (t && t.tagName || "").toLowerCase();
    if (tag === "input" || tag === "textarea" || tag === "select" || (t && t.isContentEditable)) return;
    const prefix = keys[(event.key || "").toLowerCase()];
    if (!prefix) return;
    // During a rerun Streamlit may still show the previous run's elements (marked stale):
    // prefer the fresh button.
    const matches = Array.from(document.querySelectorAll("button")).filter(
      (b) => (b.innerText || "").trim().startsWith(prefix) && !b.disabled);
    const fresh = matches.filter((b) => !b.closest('[data-stale="true"]'));
    const button = (fresh.length ? fresh : matches).pop();
    if (!button) return;
    event.preventDefault();
    event.stopImmediatePropagation();
    button.click();
  }};
  w.addEventListener("keydown", w.__prunescopeKeys, true);
}})();
</script>""",
        unsafe_allow_javascript=True,
    )


_KEPT = "_keep_"  # prefix of a widget value copied aside by ``keep``


def remember(key: str, default):
    """Initialise widget ``key`` from its last value on this page (Streamlit drops widget state on page change)."""
    if key not in st.session_state:
        st.session_state[key] = st.session_state.get(_KEPT + key, default)


def keep(*keys: str) -> None:
    """Copy widget values aside so ``remember`` finds them after a visit to another page."""
    for key in keys:
        if key in st.session_state:
            st.session_state[_KEPT + key] = st.session_state[key]


def kept(key: str, default=None):
    """The value ``keep`` last copied aside for widget ``key`` (what the page will show next)."""
    return st.session_state.get(_KEPT + key, default)


def preset(key: str, value) -> None:
    """The value widget ``key`` starts from on its page's next visit (a link's choice)."""
    st.session_state[_KEPT + key] = value


def bulk_button(container, label: str, key: str, n: int, run: Callable[[], str], **button_options) -> None:
    """A button for an action on ``n`` samples: it runs at once up to ``BulkConfig.confirm_above`` samples,
    above that a Confirm / Cancel pair (placed after the caller's row) asks first.  ``run`` records the
    action and returns the message shown."""

    def start() -> None:
        if n > BULK.confirm_above:
            st.session_state[_PENDING] = key
        else:
            st.toast(run())

    def confirm() -> None:
        st.session_state.pop(_PENDING, None)
        st.toast(run())

    container.button(label, key=key, on_click=start, **button_options)
    if st.session_state.get(_PENDING) == key:
        box = st.container(border=True)
        box.warning(f"**{label}** records a decision for {n:,} samples at once (one action: "
                    "'Undo the last action' reverts it). Go ahead?")
        c1, c2, _ = box.columns([1, 1, 4])
        c1.button("Confirm", key=f"{key}_confirm", type="primary", on_click=confirm)
        c2.button("Cancel", key=f"{key}_cancel", on_click=lambda: st.session_state.pop(_PENDING, None))


def undo_last_action(dataset: Dataset, container=None, *, key: str) -> None:
    """An "Undo the last action" button: reverts this reviewer's most recent action as a whole (every
    decision of a lasso removal or a resolved duplicate group in one step, ``DecisionStore.undo_action``)."""

    def undo() -> None:
        undone = decision_store().undo_action(dataset.fingerprint, reviewer=reviewer_name())
        st.toast(undo_message(undone))

    (container or st).button("Undo the last action", key=key, on_click=undo, icon=":material/undo:",
                             help="Reverts your most recent action as a whole: every decision it recorded.")


def undo_message(undone: Sequence) -> str:
    """What an ``undo_action`` did, in words (its decisions, or that there was nothing to undo)."""
    if not undone:
        return f"Nothing to undo for reviewer {reviewer_name() or '(anonymous)'}."
    if len(undone) == 1:
        return f"↩️ undid {undone[0].action} of {undone[0].path}"
    actions = ", ".join(sorted({d.action for d in undone}))
    return f"↩️ undid one action: {len(undone):,} decisions ({actions})"
