"""Overview step: how healthy is the data, where are the problems, and which to look at first.

The numbers come from ``pruning_core.audit.overview`` (plain functions over the score table); this page
draws them and turns every count into a button that opens exactly those samples in Review.
Counts say how many flagged samples are still *open* (no decision yet), so reviewing shrinks them.
Each finding's headline is its estimated number of *true* problems with the 90 % interval and its
source; "Audit a random sample" sends random undecided members to Review (tagged ``audit:<kind>``)
so their verdicts replace the model's estimate.
"""

import json
from collections import Counter

import plotly.express as px
import streamlit as st

from pruning_core.audit.overview import (
    AUDIT_TAG_PREFIX,
    OverviewConfig,
    audit_sample,
    audit_tag,
    estimate_text,
    flip_rows,
    overview,
    report_json,
)
from pruning_core.audit.duplicates import DUPLICATE, pass_share
from pruning_core.audit.report import headline, render, thumbnail_data_url
from pruning_core.audit.review import resolve_duplicates
from ui import labelstudio_panel as lsp
from ui import review_state as rs
from ui import leakage_panel, state
from ui.gallery import image_for, row_name, whole_word
from ui.similar import checked_duplicate_groups

MAX_FLIP_CLASSES = 15
GROUP_COLUMNS = 6



def _cosine(value: float) -> str:
    return f"{value:.3f}" if value == value else "not at hand (no cached embeddings)"


st.title("Overview")
scored = state.require_scored_dataset()
dataset, table, frame = scored.dataset, scored.table, scored.frame
store = rs.decision_store()
decisions = rs.decisions_for(dataset, frame)
skipped = Counter(i.kind or i.reason for i in dataset.report.errors)
audited = {tag[len(AUDIT_TAG_PREFIX):]: set(store.tagged(dataset.fingerprint, tag))
           for tag in store.tags(dataset.fingerprint) if tag.startswith(AUDIT_TAG_PREFIX)}


@st.cache_data(show_spinner="Estimating the findings…", max_entries=8)
def _overview(frame_, _infos, decisions_, skipped_: dict, settings_json: str, audited_: tuple):
    """The overview, recomputed only when the scores, decisions or audit picks change (the estimates' mixture
    fits and bootstraps take seconds on large tables; ``_infos`` follows the frame's columns)."""
    return overview(frame_, _infos, decisions=decisions_, skipped=skipped_, scoring=json.loads(settings_json),
                    audited={kind: set(paths) for kind, paths in audited_})


ov = _overview(frame, table.infos, decisions, dict(skipped), json.dumps(table.settings, sort_keys=True, default=str),
               tuple(sorted((kind, tuple(sorted(paths))) for kind, paths in audited.items())))
paths = frame["path"]


def _audit(kind: str, title: str, n: int) -> None:
    """Tag ``n`` random undecided members of a finding as its audit picks and open them in Review."""
    finding = next(f for f in ov.findings if f.kind == kind)
    picks = audit_sample(finding, frame, decisions, n, already=audited.get(kind, ()))
    store.tag(dataset.fingerprint, picks, audit_tag(kind), reviewer=rs.reviewer_name())
    rs.send_to_review(f"audit: {title}", picks)


# ----------------------------------------------------------------------------- health summary
st.subheader(f"Health of {dataset.name}: {ov.n_samples:,} samples")
if ov.fitness is not None and not ov.fitness.fits:
    st.warning(f"**Model does not fit this data.** {ov.fitness.verdict} Its CLIP scores stay on the Score and "
               "Explore pages for inspection; no finding below uses them.", icon=":material/report:")
audit_n = st.number_input("Audit sample size", min_value=1, max_value=500, value=OverviewConfig.audit_size,
                          key="audit_size", help="Random undecided members one 'Audit' click sends to Review; "
                          "only verdicts on such random picks count towards a finding's estimate")
lsp.settings(dataset)
for f in ov.findings:
    c1, c2, c3 = st.columns([2, 5, 1.4], vertical_alignment="center")
    groups = f" in {f.groups:,} groups" if f.groups is not None else ""
    c1.metric(f.title, headline(f), delta=f"{f.count:,} flagged · {f.open:,} open" if f.kind != "unreadable" else None,
              delta_color="off", delta_arrow="off", help=f"score: {f.score}")
    c2.markdown(f"**{f.count:,}** flagged{groups} · {estimate_text(f.estimate)}  \n"
                f"flagged by `{f.rule}` · evidence: {f.evidence}")
    if f.kind == "unreadable":
        c3.caption("Listed on the **Dataset** page")
    else:
        if c3.button(f"Review {f.count:,}", key=f"review_{f.kind}", disabled=not f.count, width="stretch"):
            rs.send_to_review(f.title, paths.loc[f.rows].tolist())
        if c3.button("Audit a random sample", key=f"audit_{f.kind}", disabled=not f.open, width="stretch",
                     help="Verdicts on random picks give this finding's precision an unbiased interval"):
            _audit(f.kind, f.title, int(audit_n))
        lsp.send_button(c3, dataset, frame, dataset.fingerprint, paths.loc[f.rows].astype(str).tolist(),
                        key=f"ls_send_{f.kind}", detector=f.score, label="Send to Label Studio")
for note in ov.evidence:
    st.caption(f"Evidence: {note}")

# ----------------------------------------------------------------------------- label quality per class
quality = ov.class_quality.reset_index()
left, right = st.columns([2, 3], gap="large")
with left:
    st.subheader("Label quality per class")
    if quality["label_quality"].isna().all():
        st.info(f"Unknown: {ov.mislabels.estimate.source}" if ov.mislabels is not None else
                "Unknown: no label evidence (no fitting CLIP zero-shot, no training dynamics). "
                "Score the data to estimate it.")
    else:
        fig = px.bar(quality, x="label_quality", y="label", orientation="h", range_x=[0, 1],
                     height=60 + 28 * len(quality), hover_data=["samples", "flagged", "estimated"],
                     labels={"label_quality": "estimated share labelled right", "label": ""})
        fig.update_layout(margin={"l": 0, "r": 0, "t": 10, "b": 0}, yaxis={"autorange": "reversed"})
        st.plotly_chart(fig, width="stretch", key="class_quality")
        st.caption(f"1 − estimated mislabelled / samples; the estimate sums each flagged sample's probability of "
                   f"being mislabelled under `{ov.mislabels.rule}` ({ov.mislabels.evidence}).")

# ----------------------------------------------------------------------------- class-flip matrix
with right:
    st.subheader("Class flips (open, likely mislabelled)")
    flips = ov.flips
    if ov.mislabels is None or flips.empty:
        st.info("No open likely-mislabelled samples." if ov.mislabels is not None
                else "Needs CLIP zero-shot or cleanlab scores.")
    else:
        given = flips.sum(axis=1).sort_values(ascending=False).index[:MAX_FLIP_CLASSES]
        suggested = flips.sum(axis=0).sort_values(ascending=False).index[:MAX_FLIP_CLASSES]
        st.caption(f"Rows: given label · columns: suggested by `{ov.mislabels.suggested}`. "
                   "Click a count to review exactly those samples."
                   + (f" The {MAX_FLIP_CLASSES} classes with most flips are shown." if len(flips) > len(given)
                      or flips.shape[1] > len(suggested) else ""))
        flagged_open = ov.finding("mislabelled").rows
        flagged_open = flagged_open[(decisions.loc[flagged_open] == "undecided").to_numpy()]
        header = st.columns([1.3] + [1] * len(suggested))
        header[0].markdown("**given ↓ / suggested →**")
        for col, name in zip(header[1:], suggested):
            col.html(whole_word(name))
        for g in given:
            cells = st.columns([1.3] + [1] * len(suggested))
            cells[0].html(whole_word(g))
            for j, s in enumerate(suggested):
                n = int(flips.at[g, s]) if s in flips.columns else 0
                if not n:
                    cells[j + 1].markdown("·")
                    continue
                if cells[j + 1].button(str(n), key=f"flip_{g}_{s}", help=f"{n} labelled {g}, suggested {s}"):
                    rows = flip_rows(frame, flagged_open, ov.mislabels.suggested, g, s)
                    rs.send_to_review(f"{g} → {s}", paths.loc[rows].tolist())

# ----------------------------------------------------------------------------- report
d1, d2, d3, _ = st.columns([1, 1, 1, 3])
leakage = leakage_panel.report_leakage(dataset)
d1.download_button("Report (JSON)", report_json(ov), file_name="prunescope-overview.json", mime="application/json",
                   on_click="ignore")
d2.download_button("Report (Markdown)", key="report_md",
                   data=lambda: render(ov, frame, ".md", name=dataset.name,
                                       pairs=leakage(False)),
                   file_name="prunescope-overview.md", mime="text/markdown", on_click="ignore")
d3.download_button("Report to share (HTML)", key="report_html",  # built on click: it embeds thumbnails
                   data=lambda: render(ov, frame, ".html", name=dataset.name,
                                       thumbnail=lambda path: thumbnail_data_url(dataset.image_ref(path)),
                                       pairs=leakage(True)),
                   file_name="prunescope-report.html", mime="text/html", on_click="ignore",
                   help="One self-contained file: every finding with its count, threshold and estimate, per-class "
                        "quality, the flip matrix, duplicate groups with thumbnails, the settings and the dataset's "
                        "fingerprint. Opens offline in any browser.")

# ----------------------------------------------------------------------------- duplicate groups side by side
dup = ov.finding("duplicates")
if dup is not None and dup.count:
    st.subheader("Near-duplicate groups")
    groups = checked_duplicate_groups(dataset, frame)
    threshold = (table.settings.get("clip") or {}).get("dup_threshold")
    passed = int((groups["verdict"] == DUPLICATE).sum())
    at = threshold if threshold is not None else "the scoring threshold"
    st.caption(f"Groups of images whose CLIP cosine is at least {at}: {passed:,} of {len(groups):,} (raw count, "
               f"{pass_share(groups):.0%}) also agree in thumbnails, colours "
               "and labels and can be resolved in one click; the others are marked **check** (look-alikes, or copies "
               "labelled differently) and go to Review instead. Most similar first.")
    rs.undo_last_action(dataset, key="dup_undo")
    groups = groups[[(decisions.iloc[r] == "undecided").any() for r in groups["rows"]]].set_index("group")
    if groups.empty:
        st.success(f"All {dup.groups:,} groups have decisions.")
    else:
        gid = st.selectbox(f"Group ({len(groups):,} of {dup.groups:,} still open)", groups.index.tolist(),
                           key="dup_group", format_func=lambda g: (
                               f"group {g} · cosine {_cosine(groups.at[g, 'cosine'])} · {groups.at[g, 'size']} images · "
                               + ("duplicate" if groups.at[g, "verdict"] == DUPLICATE
                                  else f"check: {groups.at[g, 'reason']}")))
        chosen = groups.loc[gid]
        rows = frame.index[chosen["rows"]]
        cols = st.columns(GROUP_COLUMNS)
        for n, r in enumerate(rows):
            with cols[n % GROUP_COLUMNS]:
                image = image_for(dataset, str(frame.at[r, "path"]), 220)
                if image is not None:
                    st.image(image, width=220)
                st.caption(f"{row_name(frame, r)} · {frame.at[r, 'label']} · {decisions.at[r]}")
        st.caption(f"cosine {_cosine(chosen['cosine'])} · thumbnails differ by {chosen['pixel_distance']:.1f} "
                   f"of 255 · colour histograms by {chosen['colour_distance']:.2f}")
        if chosen["verdict"] == DUPLICATE:
            keep = st.radio("Keep", rows.tolist(), horizontal=True, key=f"dup_keep_{gid}",
                            format_func=lambda r: row_name(frame, r))

            def _resolve(keep_row: int = keep, group_rows: list[int] = rows.tolist()) -> str:
                n = resolve_duplicates(store, dataset.fingerprint, str(frame.at[keep_row, "path"]),
                                       paths.loc[group_rows].tolist(), reviewer=rs.reviewer_name())
                return f"Kept {row_name(frame, keep_row)}, removed {n - 1}"

            rs.bulk_button(st, "Keep the chosen one, remove the rest", "dup_resolve", len(rows), _resolve,
                           type="primary")
        else:
            st.warning(f"Check this group before removing anything: {chosen['reason']}.")
            if st.button(f"Review these {len(rows)}", key="dup_review"):
                rs.send_to_review(f"duplicate group {gid}", paths.loc[rows].tolist())

# ----------------------------------------------------------------------------- train/test leakage
leakage_panel.show(dataset, store)
