"""The Score page's "Your model's outputs": a user's own class probabilities and embeddings, as on the CLI.

The files (or manifest columns) are read and checked by ``pruning_core.audit.own_model`` (the functions
behind ``prunescope score --pred-probs / --features``, so the page shows the CLI's one-line errors), only
inside the workspace roots the server's owner allowed (``runtime.safety.check_in_workspace``, as for
datasets), and scored by ``scoring.pipeline.own_model_score_table``: the columns ``score`` writes,
merged into this session's table like any other family.  A file that fails a check changes nothing.
"""

from __future__ import annotations

from typing import Optional

import streamlit as st

from pruning_core.audit.own_model import UserArray, named_file, read_features, read_pred_probs
from pruning_core.data.datasets import Dataset
from pruning_core.runtime.safety import check_in_workspace
from ui import state

PRED_PROBS = "own_pred_probs"
FEATURES = "own_features"


def _inside_workspace(spec: str, dataset: Dataset, what: str) -> None:
    """Refuse a file outside the workspace roots before anything reads it (a manifest column is the dataset's own)."""
    file = named_file(spec)
    if file is not None or spec not in dataset.samples.columns:
        check_in_workspace(file or spec, what)


def read(dataset: Dataset, pred_probs_spec: str, features_spec: str
         ) -> tuple[Optional[UserArray], Optional[UserArray]]:
    """The two inputs the user named (empty: not given), read and checked; ValueError on one line otherwise."""
    pred_probs = features = None
    if pred_probs_spec:
        _inside_workspace(pred_probs_spec, dataset, "probabilities file")
        pred_probs = read_pred_probs(pred_probs_spec, dataset)
    if features_spec:
        _inside_workspace(features_spec, dataset, "embeddings file")
        features = read_features(features_spec, dataset)
    return pred_probs, features


def show(dataset: Dataset) -> None:
    """The form, and on submit: read, check, score and merge (or one error line, the table untouched)."""
    with st.form("own_model"):
        st.subheader("Your model's outputs")
        st.caption("Already trained a model on this data? Its out-of-sample (cross-validated) class probabilities "
                   "give cleanlab's label issues and the suggested labels without training the proxy (they replace "
                   "the proxy's `cleanlab.*` columns); its embeddings give `features.outlier`, `features.diversity` "
                   "and `features.duplicate_*` (k-NN with the k and duplicate cosine above). Probabilities from a "
                   "model that trained on these very rows have memorised their labels, wrong ones included: "
                   "cleanlab then finds almost nothing.")
        c1, c2 = st.columns(2)
        probs_spec = c1.text_input("Class probabilities (like --pred-probs)", key=PRED_PROBS,
                                   placeholder="probs.npy, probs.parquet or a manifest column",
                                   help="A .npy (samples x classes) in the dataset's order, a .parquet/.csv with one "
                                        "column per class (aligned on its id or path column), or a manifest column")
        features_spec = c2.text_input("Embeddings (like --features)", key=FEATURES,
                                      placeholder="features.npy, features.parquet or a manifest column",
                                      help="A .npy (samples x dims) in the dataset's order, a .parquet/.csv (aligned "
                                           "on its id or path column), or a manifest column of vectors")
        run = st.form_submit_button("Use my model's outputs", type="primary")
    if not run:
        return
    try:
        pred_probs, features = read(dataset, probs_spec.strip(), features_spec.strip())
    except ValueError as exc:  # UnsafeRequest is one too
        st.error(" ".join(str(exc).split()))
        return
    if pred_probs is None and features is None:
        st.info("Name a probabilities file, an embeddings file or a manifest column.")
        return
    for given in (pred_probs, features):
        if given is not None:
            st.caption(f"{given.source['what']}: {given.source['row_order']}, sha256 {given.source['sha256'][:12]}…")
    state.run_page_job(state.PageJob("Your model's scores"),
                       lambda progress, cancel: state.compute_own_model_scores(dataset, pred_probs, features, progress,
                                                                               cancel), st.container())
