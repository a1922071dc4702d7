"""The Overview's train/test leakage panel: test images that are copies of training images, side by side.

The pairs come from ``pruning_core.audit.leakage.find_leakage`` (exact copies by SHA-256, near copies
by the aligned thumbnail correlation); removing either side is a reviewer decision recorded with
``DecisionStore.record`` (source ``leakage``): the training copy under this dataset's fingerprint, the
test copy under the test set's, so a later prune or a re-made test set can leave it out.
"""

from __future__ import annotations

from typing import Callable

import streamlit as st

from pruning_core.audit.leakage import EXACT, LeakageConfig, find_leakage, leakage_findings
from pruning_core.audit.report import thumbnail_data_url
from pruning_core.audit.review import DecisionStore
from pruning_core.data.datasets import Dataset
from ui import review_state as rs
from ui import state
from ui.gallery import image_for

TEST_PATH = "leakage_test_path"
ASKED = "leakage_asked"
SHOWN_PAIRS = 12
SOURCE = "leakage"


def _remove(store: DecisionStore, fingerprint: str, paths: list[str], what: str) -> str:
    store.record(fingerprint, [(p, "remove", None) for p in paths], reviewer=rs.reviewer_name(), source=SOURCE)
    return f"Removed {len(paths):,} {what}"


def show(dataset: Dataset, store: DecisionStore) -> None:
    """The panel: a test set to compare with, the pairs found, and a remove button for either side."""
    st.subheader("Train/test leakage")
    demo_test = state.demo_assets().test_manifest if state.current_source().kind == "demo" else None
    path = st.text_input("Test set: a folder or manifest to compare with this dataset", key=TEST_PATH,
                         value=str(demo_test) if demo_test else "",
                         help="Exact copies by SHA-256 of the file bytes; near copies (re-encoded, resized, cropped "
                              f"by up to {LeakageConfig.max_crop} px) by thumbnail correlation ≥ "
                              f"{LeakageConfig.threshold:g} at the best crop (measured on CIFAR-10: docs/benchmarks.md)")
    if not path:
        return
    if st.session_state.get(ASKED) != path:
        if st.button("Find leaked test images", key="leakage_find"):
            st.session_state[ASKED] = path
            st.rerun()
        return
    try:
        test = state.heldout_dataset(path)
    except (ValueError, OSError) as exc:
        st.error(" ".join(str(exc).split()))
        return
    with st.spinner("Looking for test images copied from the training set…"):
        pairs = find_leakage(dataset, test, LeakageConfig(), store=state.store())  # cached by both fingerprints
    if pairs.empty:
        st.success(f"No test image of {test.name} ({len(test):,}) is a copy of a training image.")
        return
    exact = int((pairs["kind"] == EXACT).sum())
    st.caption(f"{pairs['test_id'].nunique():,} of {len(test):,} test images (raw count) are copies of training images: "
               f"{exact:,} exact-copy pairs, {len(pairs) - exact:,} near copies. Removing the training copy keeps the "
               "test honest; removing the test copy is recorded under the test set's fingerprint.")
    train_paths = pairs["train_id"].drop_duplicates().tolist()
    rs.bulk_button(st, f"Remove all {len(train_paths):,} training copies", "leakage_remove_all", len(train_paths),
                   lambda: _remove(store, dataset.fingerprint, train_paths, "training copies"))
    removed_train = set(store.removed_paths(dataset.fingerprint))
    removed_test = set(store.removed_paths(test.fingerprint))
    for i, pair in enumerate(pairs.head(SHOWN_PAIRS).itertuples()):
        left, right, info = st.columns([1, 1, 2], vertical_alignment="center")
        for column, source, image_path in ((left, dataset, pair.train_id), (right, test, pair.test_id)):
            image = image_for(source, str(image_path), 120)
            if image is not None:
                column.image(image, width=120)
        info.markdown(f"**{pair.kind}** · correlation {pair.cosine:.3f}  \ntrain `{pair.train_id}`  \n"
                      f"test `{pair.test_id}`")
        b1, b2 = info.columns(2)
        b1.button("Remove training copy", key=f"leak_train_{i}", disabled=pair.train_id in removed_train,
                  on_click=lambda p=pair.train_id: st.toast(_remove(store, dataset.fingerprint, [p], "training copy")))
        b2.button("Remove test copy", key=f"leak_test_{i}", disabled=pair.test_id in removed_test,
                  on_click=lambda p=pair.test_id: st.toast(_remove(store, test.fingerprint, [p], "test copy")))
    if len(pairs) > SHOWN_PAIRS:
        st.caption(f"First {SHOWN_PAIRS} of {len(pairs):,} pairs shown (exact copies first, then by correlation).")


def report_leakage(dataset: Dataset) -> Callable[[bool], dict]:
    """What the report downloads list as leakage: a function of ``thumbnails`` (False for Markdown, which shows
    none) giving the pair findings of the test set the panel was asked for (``{}`` when none).

    The test set and the result store are resolved now, in the page's run: a deferred download's callable runs
    outside it, where the session state (the asked path) cannot be read.  The pairs come from the store, where
    the panel's search left them.
    """
    path = st.session_state.get(ASKED)
    tests = []
    if path:
        try:
            tests = [state.heldout_dataset(path)]
        except (ValueError, OSError):
            pass  # the panel itself says what is wrong with the path; the report goes out without it
    results = state.store()

    def findings(thumbnails: bool = True) -> dict:
        return leakage_findings(dataset, tests, store=results, thumbnail=thumbnail_data_url if thumbnails else None)
    return findings
