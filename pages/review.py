"""Review step: flagged samples one at a time, decided with buttons or keys k / r / l / s / u.

The queue is the most suspicious samples by any detector (its ScoreInfo says which end is
suspicious), optionally limited to a tag sent from Explore.  Every decision is committed to
the DecisionStore at once, so a closed tab or a restarted server loses nothing.
"""


import numpy as np
import pandas as pd
import streamlit as st

from pruning_core.audit.review import UNCHECKED, DecisionConflict, ReviewError, Seen
from pruning_core.audit.suggest import (SUGGESTED_LABEL, SUGGESTION_CONFIDENCE, SUGGESTION_SETTING, FixConfig,
                                        accept_suggestions, pending_suggestions)
from pruning_core.data.images import ImageError, image_size
from pruning_core.selection import default_detector
from ui import labelstudio_panel as lsp
from ui import review_state as rs
from ui import review_queue as rq
from ui import state
from ui.gallery import breakable, image_for, row_name, show_gallery
from ui.similar import show_similar

SUGGESTIONS = {"clip.suggested_label": "CLIP zero-shot", "dynamics.suggested_label": "proxy model"}
ICONS = {"keep": "✅", "remove": "🗑️", "relabel": "🏷️", "skip": "⏭️", "undecided": "·"}
IMAGE_SIZE = 400
REVIEW_CONFLICT = "review_conflict"  # (DecisionConflict, my action, my new label, my source) while the page asks

st.title("Review")
scored = state.require_scored_dataset()
dataset, table, frame, cols = scored.dataset, scored.table, scored.frame, scored.cols
store = rs.decision_store()
fp = dataset.fingerprint
reviewer = rs.reviewer_input()

# ----------------------------------------------------------------------------- the queue
tags = store.tags(fp)
sent = rs.review_set()  # sent from the Overview (a finding, a flip cell) or a similarity search
sources = [rs.ALL] + [f"tag:{t}" for t in tags] + ([f"set:{sent[0]}"] if sent else [])
requested = st.session_state.pop(rs.REVIEW_SOURCE, None)  # sent from Explore or the Overview
if requested in sources:
    st.session_state["review_queue_source"] = requested
    st.session_state["review_pos"] = 0
rs.remember("review_queue_source", rs.ALL)
if st.session_state["review_queue_source"] not in sources:
    st.session_state["review_queue_source"] = rs.ALL
first_detector = default_detector(cols)
rs.remember("review_detector", first_detector)
if st.session_state["review_detector"] not in cols:
    st.session_state["review_detector"] = first_detector
rs.remember("review_size", min(500, len(frame)))
rs.remember("review_undecided", True)

rs.remember("review_learning", True)

c1, c2, c3, c4, c5 = st.columns([2, 3, 1.2, 1.4, 1.4])
source = c1.selectbox("Queue", sources, key="review_queue_source",
                      format_func=lambda s: "All samples" if s == rs.ALL else
                      f"Tag: {s[4:]} ({tags[s[4:]]:,})" if s.startswith("tag:") else f"{s[4:]} ({len(sent[1]):,})")
detector = c2.selectbox("Order by detector (most suspicious first)", cols, key="review_detector",
                        format_func=lambda c: f"{c} ({table.infos[c].suspicious} = suspicious)")
size = c3.number_input("Queue size", min_value=1, max_value=len(frame), step=50, key="review_size")
only_undecided = c4.toggle("Only undecided", key="review_undecided")
learning = c5.toggle("Learn from verdicts", key="review_learning",
                     help=f"Refit a small model on your verdicts every {rq.CONFIG.refit_every} and re-order what is "
                          f"undecided; until then, and with this off, the detector's order.")
rs.keep("review_queue_source", "review_detector", "review_size", "review_undecided", "review_learning")
state.publish_to_url()  # the queue is part of the view a reload or a shared link reopens

info = table.infos[detector]
st.caption(f"**{detector}**: {info.description}")
ranked = frame[detector].sort_values(ascending=info.suspicious == "low", kind="stable", na_position="last").index
order = ranked
if source != rs.ALL:
    members = set(store.tagged(fp, source[4:]) if source.startswith("tag:") else sent[1])
    order = order[frame.loc[order, "path"].isin(members).to_numpy()]
picks = pd.Series("review", index=frame.index)  # how each queue entry was picked: its decision's source
if learning:
    learner = rq.learning_queue(dataset, table, frame.index.get_indexer(ranked), detector)
    rows, actions, row_picks, last_id = rq.queue_decisions(store, fp, frame)
    plan = learner.plan(rows, actions, row_picks, candidates=frame.index.get_indexer(order), length=int(size))
    rq.record_refit(store, fp, plan, last_id)
    rq.show_status(plan)
    candidates = set(order)
    decided_rows = [r for r in frame.index[rows] if r in candidates]
    queue = pd.Index(decided_rows + frame.index[plan.rows].tolist())[: max(int(size), len(decided_rows))]
    picks.loc[frame.index[plan.rows]] = [f"queue:{p}" for p in plan.picks]
else:
    queue = order[: int(size)]
decisions = rs.decisions_for(dataset, frame.loc[queue])
decided = decisions != "undecided"
n_done = int(decided.sum())

p1, p2 = st.columns([4, 1])
p1.progress(n_done / max(1, len(queue)), text=f"**{n_done:,} of {len(queue):,} reviewed**")
totals = store.counts(fp)
p2.caption("In the whole dataset: " + " · ".join(f"{a} {totals[a]:,}" for a in ("keep", "remove", "relabel", "skip")))


# ----------------------------------------------------------------------------- actions
def _decide(path: str, action: str, label_key: str | None = None, seen: Seen = UNCHECKED,
            source: str = "review") -> None:
    _record(path, action, st.session_state.get(label_key) if label_key else None, seen, source)


def _record(path: str, action: str, new_label: str | None, seen: Seen, source: str = "review") -> None:
    """Record the decision unless another reviewer decided this sample since ``seen``: then ask (REVIEW_CONFLICT)."""
    name = st.session_state.get(rs.REVIEWER, "").strip()
    st.session_state.pop(REVIEW_CONFLICT, None)
    try:
        store.decide(fp, path, action, new_label=new_label, reviewer=name, classes=dataset.classes, expected=seen,
                     source=source)
    except DecisionConflict as exc:
        st.session_state[REVIEW_CONFLICT] = (exc, action, new_label, source)
        return
    except ReviewError as exc:
        st.session_state["review_message"] = ("error", str(exc))
        return
    st.session_state["review_message"] = ("ok", f"{ICONS[action]} {action}" + (f" → {new_label}" if new_label else "")
                                          + f": {path}")
    if not st.session_state.get("review_undecided"):
        st.session_state["review_pos"] = st.session_state.get("review_pos", 0) + 1


def _undo(queue_paths: list[str]) -> None:
    """Undo this reviewer's last action as a whole (one decision here; a whole lasso removal or resolved
    duplicate group made on another page) and go back to the first sample it touched."""
    name = st.session_state.get(rs.REVIEWER, "").strip()
    undone = store.undo_action(fp, reviewer=name)
    if not undone:
        st.session_state["review_message"] = ("error", f"Nothing to undo for reviewer {name or '(anonymous)'}.")
        return
    st.session_state["review_message"] = ("ok", rs.undo_message(undone))
    back = [queue_paths.index(d.path) for d in undone if d.path in queue_paths]
    if back:
        st.session_state["review_pos"] = min(back)


def _move(step: int) -> None:
    st.session_state["review_pos"] = st.session_state.get("review_pos", 0) + step


message = st.session_state.pop("review_message", None)
if message:
    (st.error if message[0] == "error" else st.toast)(message[1])
conflict = st.session_state.get(REVIEW_CONFLICT)
if conflict:  # another reviewer decided this sample after this page showed it: both decisions stay in the history
    exc, mine, mine_label, mine_source = conflict
    st.warning(f"⚠️ {exc}. Apply your **{mine}**{f' → {mine_label}' if mine_label else ''} anyway, or keep theirs?")
    k1, k2, _ = st.columns([2, 2, 4])
    k1.button(f"Apply my {mine} anyway", key="review_conflict_mine", on_click=_record,
              args=(exc.path, mine, mine_label, exc.theirs.id if exc.theirs else None, mine_source))
    k2.button("Keep theirs", key="review_conflict_theirs", on_click=st.session_state.pop, args=(REVIEW_CONFLICT,))

single, grid = st.tabs(["One at a time", "Grid"])
queue_paths = frame.loc[queue, "path"].tolist()

with single:
    if only_undecided:
        pending = queue[~decided.to_numpy()]
        current = pending[0] if len(pending) else None
        position = queue.get_loc(current) if current is not None else None
    else:
        position = int(np.clip(st.session_state.get("review_pos", 0), 0, max(0, len(queue) - 1)))
        st.session_state["review_pos"] = position
        current = queue[position] if len(queue) else None

    if current is None:
        st.success(f"All {len(queue):,} samples in this queue are reviewed. "
                   "Turn off **Only undecided** to revisit them, or enlarge the queue.")
        st.button("Undo (u)", on_click=_undo, args=(queue_paths,), key="undo_done")
    else:
        row = frame.loc[current]
        path = str(row["path"])
        left, right = st.columns([5, 6], gap="medium")
        with left:
            image = image_for(dataset, path, IMAGE_SIZE)
            if image is None:
                st.warning(f"⚠️ unreadable image: {path}")
            else:
                try:
                    w, h = image_size(dataset.image_ref(path))
                    note = f" · shown ×{IMAGE_SIZE / max(w, h):.1f}" if max(w, h) < IMAGE_SIZE else ""
                    size_note = f"{w}×{h} px{note}"
                except (OSError, ImageError):
                    size_note = ""
                st.image(image, caption=f"{path} · {size_note}", width=IMAGE_SIZE)
        with right:
            pick = rq.PICK_NOTES.get(picks[current].removeprefix("queue:"))
            st.caption(f"#{position + 1:,} in queue · {row_name(frame, current)}")
            if pick:
                st.caption(f"Picked by: {pick}")
            st.markdown(f"### Given label: `{row['label']}`")
            for col, who in SUGGESTIONS.items():
                if col in frame and pd.notna(row[col]):
                    agree = str(row[col]) == str(row["label"])
                    st.markdown(f"{who} suggests **`{row[col]}`** " + ("(agrees)" if agree else "⚠️ *disagrees*"))
            if "caption" in frame and pd.notna(row.get("caption")):
                st.markdown(f"Caption: *{row['caption']}*")
            now = decisions.get(current, "undecided")
            if now != "undecided":
                lat = rs.latest(dataset)
                rec = lat[lat["path"] == path].iloc[-1]
                extra = f" → `{rec['new_label']}`" if rec["action"] == "relabel" else ""
                by = f" by {rec['reviewer']}" if rec["reviewer"] else ""
                st.info(f"Current decision: {ICONS[now]} **{now}**{extra}{by}")
            values = frame.loc[current, cols].astype(float)
            suspicious_than = []
            for c in cols:
                column = frame[c].to_numpy(dtype=float)
                v = values[c]
                worse = (column > v) if table.infos[c].suspicious == "low" else (column < v)
                suspicious_than.append(np.nan if np.isnan(v) else worse.sum() / max(1, (~np.isnan(column)).sum()))
            scores = pd.DataFrame({"score": cols, "value": values.to_numpy(),
                                   "more suspicious than": np.asarray(suspicious_than) * 100,
                                   "suspicious": [table.infos[c].suspicious for c in cols]})
            st.dataframe(scores, hide_index=True, width="stretch",
                         column_config={"value": st.column_config.NumberColumn(format="%.3f"),
                                        "more suspicious than": st.column_config.ProgressColumn(
                                            format="%.0f%%", min_value=0, max_value=100)})

        others = [c for c in dataset.classes if c != str(row["label"])] or list(dataset.classes)
        suggestion = next((str(row[c]) for c in SUGGESTIONS if c in frame and str(row[c]) in others), others[0])
        label_key = f"relabel_to_{current}"
        shown = rs.latest(dataset).set_index("path")["id"].get(path)  # the decision this page shows (None: undecided)
        seen = None if shown is None else int(shown)
        b = st.columns([1, 1, 2, 1, 1, 1, 1])
        picked_by = picks[current]  # which pick brought this sample (queue:detector / model / random)
        b[0].button("Keep (k)", on_click=_decide, args=(path, "keep", None, seen, picked_by), type="primary",
                    width="stretch")
        b[1].button("Remove (r)", on_click=_decide, args=(path, "remove", None, seen, picked_by), width="stretch")
        b[2].selectbox("Relabel to", others, index=others.index(suggestion), key=label_key,
                       label_visibility="collapsed")
        b[3].button("Relabel (l)", on_click=_decide, args=(path, "relabel", label_key, seen, picked_by), width="stretch")
        b[4].button("Skip (s)", on_click=_decide, args=(path, "skip", None, seen, picked_by), width="stretch")
        b[5].button("Undo (u)", on_click=_undo, args=(queue_paths,), width="stretch")
        if not only_undecided:
            b[6].button("Next ▶", on_click=_move, args=(1,), shortcut="Right", disabled=position >= len(queue) - 1,
                        width="stretch")
        if st.toggle("Samples like this one (nearest CLIP neighbours)", key="review_similar_on"):
            show_similar(dataset, frame, current, rs.decisions_for(dataset, frame), score=detector, key="review_similar")
        st.caption("Keys: **k** keep · **r** remove · **l** relabel to the chosen class · **s** skip · **u** undo"
                   + ("" if only_undecided else " · **←/→** previous / next"))
        if not only_undecided:
            st.button("◀ Previous", on_click=_move, args=(-1,), shortcut="Left", disabled=position == 0)
    rs.keyboard_shortcuts({"k": "Keep (k)", "r": "Remove (r)", "l": "Relabel (l)", "s": "Skip (s)", "u": "Undo (u)"})

with grid:
    n_grid = st.slider("Show the top", min_value=8, max_value=min(200, max(8, len(queue))), value=min(48, len(queue)),
                       step=8, key="review_grid_n")
    top = queue[:n_grid]
    top_decisions = decisions.loc[top]

    def _grid_caption(r: pd.Series) -> str:
        value = r[detector]
        return f"{ICONS[top_decisions[r.name]]} {row_name(frame, r.name)} · {r['label']} · {breakable(detector)} {value:.3f}"

    show_gallery(dataset, top, frame=frame, columns=8, caption_fn=_grid_caption)
    like = st.selectbox("Samples like one of these (nearest CLIP neighbours)", [None, *top.tolist()],
                        key="review_grid_like",
                        format_func=lambda r: "choose a sample…" if r is None
                        else f"{row_name(frame, r)} · {frame.at[r, 'label']}")
    if like is not None:
        show_similar(dataset, frame, like, rs.decisions_for(dataset, frame), score=detector, key="review_grid_similar")

# ----------------------------------------------------------------------------- Label Studio
lsp.settings(dataset)
l1, l2 = st.columns(2)
lsp.send_button(l1, dataset, frame, fp, queue_paths, key="ls_send_queue", detector=detector,
                label=f"Send this queue ({len(queue_paths):,}) to Label Studio")
lsp.pull_button(l2, dataset, store, key="ls_pull")
lsp.conflicts(dataset, store)

with st.expander("Recent decisions"):
    history = store.history(fp).tail(50).iloc[::-1]
    if len(history):
        history = history.assign(time=pd.to_datetime(history["ts"], unit="s").dt.strftime("%Y-%m-%d %H:%M:%S"))
        st.dataframe(history[["time", "path", "action", "new_label", "reviewer"]], hide_index=True, width="stretch")
    else:
        st.caption("No decisions yet.")

# ----------------------------------------------------------------------------- suggestions
with st.expander("Suggestions: accept confident relabels in one step"):
    if SUGGESTED_LABEL not in frame:
        st.caption("No suggested labels: they come from training dynamics (the noise posterior), out-of-sample "
                   "probabilities (cross-fitting, or your own model's) and CLIP's zero-shot probabilities. Compute "
                   "any of them on the **Score** page.")
    else:
        made = table.settings.get(SUGGESTION_SETTING) or {}
        st.caption(f"Suggested label and its calibrated probability, from {' × '.join(made.get('sources', []))} "
                   f"({made.get('calibration', '')}). "
                   "Accepted suggestions are relabel decisions like any other (source `suggestion`).")
        rs.remember("review_suggest_threshold", FixConfig.threshold)  # the fix strategy's default: one calibrated bar
        threshold = st.slider("Accept suggestions with a probability of at least", 0.5, 1.0, step=0.01,
                              key="review_suggest_threshold")
        rs.keep("review_suggest_threshold")
        pending = pending_suggestions(frame, threshold, rs.latest(dataset)["path"])
        expected = float(pending[SUGGESTION_CONFIDENCE].sum())
        st.markdown(f"**{len(pending):,}** undecided samples (raw count) have a different suggested label at "
                    f"≥ {threshold:.2f}; by their calibrated probabilities about {expected:,.0f} of them are right.")
        st.dataframe(pending.head(200), hide_index=True, width="stretch")

        def _accept() -> str:
            recorded = accept_suggestions(store, fp, pending, reviewer=reviewer, classes=dataset.classes)
            return f"🏷️ relabelled {len(recorded):,} samples to their suggestions (one action)"

        b1, b2 = st.columns(2)
        rs.bulk_button(b1, f"Accept {len(pending):,} suggestions", "review_suggest_accept", len(pending), _accept,
                       type="primary", disabled=not len(pending))
        rs.undo_last_action(dataset, b2, key="review_undo_action")
