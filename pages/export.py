"""Export step: kept and removed samples (relabels applied), an image folder, and the replay manifest."""

from collections import Counter

import streamlit as st

from pruning_core.export.subset import bundle_zip, export_folder, table_bytes
from pruning_core.export.manifest import BUNDLE_SCORES, Manifest, kept_rows
from pruning_core.runtime.safety import check_in_workspace
from pruning_core.scoring.score_info import sidecar_bytes
from pruning_core.selection import SelectionRecipe, run_recipe
from ui import review_state as rs
from ui import state

MIME = {"csv": "text/csv", "parquet": "application/octet-stream", "json": "application/json"}

st.title("Export")
scored = state.require_scored_dataset()
dataset, table, frame = scored.dataset, scored.table, scored.frame
recipe = st.session_state.get(state.RECIPE)
if recipe is None:
    recipe = SelectionRecipe(keep=0.8, strategy="easiest", balance=True)
    st.info("No recipe from the **Prune** page yet: using the default (keep 80%, easiest, class-balanced).")
store = rs.decision_store()
snapshot = store.snapshot(dataset.fingerprint)
removed = snapshot["removed"]
cached = state.prune_preview(table, recipe, removed)
try:
    mask = cached.mask if cached is not None else run_recipe(frame, table.infos, recipe, removed)
except ValueError as exc:
    st.error(f"{exc}\n\nAdjust the recipe on the **Prune** page.")
    st.stop()
# The same manifest `prunescope select` writes for this recipe and these decisions; it also gives the tables.
manifest = Manifest.build(table, recipe, mask, scores_file=BUNDLE_SCORES, review=snapshot)
full = manifest.selection_table(frame, mask)
n_kept = int(mask.sum())
st.markdown(
    f"**{n_kept:,}** of {len(frame):,} samples kept by `{recipe.strategy}` at keep={recipe.keep}"
    f"{' (class-balanced)' if recipe.balance else ''}; "
    f"{int((full['removed_by'] == 'review').sum()):,} removed by reviewers, "
    f"{int((full['label'] != full['original_label']).sum()):,} relabelled (original label kept in `original_label`)."
)
if manifest.relabelled:  # the manifest says where each relabel came from; replay reproduces them
    by_source = Counter(entry["source"] for entry in manifest.relabelled.values())
    st.caption("Relabels applied, by source (raw counts): "
               + ", ".join(f"{source} {n:,}" for source, n in sorted(by_source.items())) + ".")

# ----------------------------------------------------------------------------- tables
st.subheader("Manifests")
c1, c2 = st.columns(2)
which = c1.radio("Rows", ["kept", "removed", "all (with a status column)"], horizontal=True, key="export_rows")
fmt = c2.radio("Format", ["csv", "parquet", "json"], horizontal=True, key="export_format")
rows = full if which.startswith("all") else kept_rows(full) if which == "kept" else full[full["status"] == which]
st.download_button(
    f"Download {which.split(' ')[0]} manifest ({len(rows):,} rows, {fmt})",
    lambda: table_bytes(rows, fmt),  # built on click, not on every rerun
    file_name=f"{which.split(' ')[0]}.{fmt}",
    mime=MIME[fmt],
    type="primary",
    on_click="ignore",
    key="download_manifest",
)
st.dataframe(rows.head(200), hide_index=True, width="stretch")
if len(rows) > 200:
    st.caption(f"First 200 of {len(rows):,} rows shown.")

# ----------------------------------------------------------------------------- reproducibility
st.subheader("Reproduce this subset")


def _bundle() -> bytes:
    """Everything replay needs, zipped on click: the manifest, the exact scores and their sidecar."""
    return bundle_zip({
        "selection.manifest.json": manifest.to_json().encode(),
        BUNDLE_SCORES: table_bytes(frame, "parquet"),
        "scores.json": sidecar_bytes(table.infos, table.settings),
        "kept.csv": table_bytes(kept_rows(full), "csv"),
        "removed.csv": table_bytes(full[full["status"] == "removed"], "csv"),
    })


r1, r2 = st.columns(2)
r1.download_button("Download reproducibility bundle (zip)", _bundle, file_name="prunescope-selection.zip",
                   mime="application/zip", on_click="ignore", key="download_bundle")
r2.download_button("Download manifest only (JSON)", lambda: manifest.to_json().encode(),
                   file_name="selection.manifest.json", mime="application/json", on_click="ignore",
                   key="download_recipe")
st.caption("Unzip and run `prunescope select --replay selection.manifest.json --out kept.csv`: it re-runs the "
           "selection on the bundled scores with the review decisions recorded here and refuses to write a "
           "subset that differs.")
with st.expander("Manifest"):
    st.json(manifest.to_dict(), expanded=1)

uploaded = st.file_uploader("Replay a manifest (from `prunescope select` or this page) on this session's scores",
                            type=["json"], key="replay_manifest")
if uploaded is not None:
    try:
        replayed = Manifest.from_json(uploaded.getvalue(), source=uploaded.name)
        replayed_mask = replayed.replay(table, "this session's scores", fingerprint=dataset.fingerprint,
                                        ranks=state.score_ranks(table))
    except ValueError as exc:
        st.error(f"Not replayed: {exc}")
    else:
        replayed_kept = kept_rows(replayed.selection_table(frame, replayed_mask))
        st.success(f"Replayed {uploaded.name}: the {len(replayed_kept):,} samples it recorded (same digest), "
                   f"with its {len(replayed.removed):,} reviewer removals and {len(replayed.relabels):,} relabels.")
        st.download_button("Download the replayed kept list (csv)", lambda: table_bytes(replayed_kept, "csv"),
                           file_name="kept.csv", mime=MIME["csv"], on_click="ignore", key="download_replayed")

# ----------------------------------------------------------------------------- image folder
st.subheader("Image folder")
st.caption("Writes the kept images as `<folder>/<label>/<file>` (relabels applied; names made path-safe and "
           "unique) plus `index.csv` mapping each source to its copy.")
f1, f2, f3 = st.columns([4, 1, 1], vertical_alignment="bottom")
out_dir = f1.text_input("Output folder (new or empty)", key="export_dir", placeholder="/data/pruned")
link_mode = f2.radio("As", ["copy"] if dataset.in_container else ["symlink", "copy"], key="export_mode",
                     help="images inside parquet / arrow / tar files are copied out as files" if dataset.in_container else None)
if f3.button("Write folder", disabled=not out_dir.strip(), width="stretch"):
    holder = st.container()
    try:
        target = check_in_workspace(out_dir.strip(), "output folder")
        kept = kept_rows(full)
        members = [dataset.image_ref(p) for p in kept["path"]] if dataset.in_container else None
        result = export_folder(kept, dataset.root, target, mode=link_mode, sources=members,
                               progress=state.StreamlitProgress(holder))
    except (OSError, ValueError) as exc:
        st.error(f"Nothing written: {exc}")
    else:
        st.success(f"Done: {result.message()}")
