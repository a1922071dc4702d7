"""The Explore map as a Streamlit component: plotly.js WebGL with a thumbnail on hover and lasso selection.

Why not ``st.plotly_chart``: its hover cannot show images.  Why not embedding-atlas: see the README's
dependency list (it brings 60 packages, an LLM/sentence-transformers stack among them, and its
selection comes back as SQL for DuckDB).  This component draws the same plotly.js scattergl, fed
compact base64 arrays instead of a figure JSON (so 200,000 points cost ~6 MB and no per-point hover
text), and asks the server for one thumbnail at a time when the pointer rests on a point, and, while
nobody waits on a hover, for batches of the thumbnails around the view's centre (:data:`PREFETCH_BATCH`).

Safety: thumbnails are made by the server for a *row of the dataset* (never a path from the browser)
and sent inline as data URIs (a prefetch names rows too); the component's folder holds only its page and plotly.js, which
Streamlit serves on its own loopback port (nothing from a CDN).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd

from pruning_core.data.datasets import Dataset
from ui.gallery import row_name

PAGE = Path(__file__).with_name("map_component") / "index.html"
THUMB_SIZE = 128
MAX_TRACES = 24
"""Categories beyond this many (by count) share one "other" colour: plotly's palettes repeat after 10-24 anyway."""
PALETTE = ["#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3", "#ff6692", "#b6e880", "#ff97ff",
           "#fecb52", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf", "#0d2a63", "#af0038", "#1616a7", "#620042"]
"""plotly's "Plotly" then "D3" qualitative colours (the ones px.scatter used before)."""
OTHER, MISSING = "#c8c8c8", "#e0e0e0"


@lru_cache(maxsize=1)
def _component():
    """Declare the component once per process, from a folder holding its page and the installed plotly.js.

    The folder is named by a hash of both files and written atomically, so processes share it and
    an upgrade of plotly or the page makes a new one.
    """
    import plotly
    import streamlit.components.v1 as components

    plotly_js = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    tag = hashlib.blake2b(PAGE.read_bytes() + plotly.__version__.encode(), digest_size=8).hexdigest()
    folder = Path(tempfile.gettempdir()) / f"prunescope-map-{tag}"
    if not (folder / "index.html").is_file():
        staging = Path(tempfile.mkdtemp(prefix="prunescope-map-", dir=folder.parent))
        shutil.copy(plotly_js, staging / "plotly.min.js")
        shutil.copy(PAGE, staging / "index.html")  # written last: its presence marks a complete folder
        try:
            os.replace(staging, folder)
        except OSError:  # another process made it first
            shutil.rmtree(staging, ignore_errors=True)
    return components.declare_component("prunescope_map", path=str(folder))


def _b64(array: np.ndarray, dtype) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype=dtype).tobytes()).decode("ascii")


def map_payload(
    x: np.ndarray,
    y: np.ndarray,
    rows: np.ndarray,
    labels: pd.Series,
    colour: pd.Series,
    *,
    colour_title: str,
    categorical: bool,
    palette: Optional[dict[str, str]] = None,
    reverse_scale: bool = False,
    x_label: str = "",
    y_label: str = "",
    axes_visible: bool = True,
) -> dict:
    """The points for the component: finite (x, y) only, one trace per colour category (or one coloured by value).

    ``rows`` are the frame's row ids (what a selection or a hover returns); ``labels`` and
    ``colour`` are aligned with them.  A numeric colour's NaN points go to a grey "no value" trace.
    """
    x, y = np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.float32)
    keep = np.isfinite(x) & np.isfinite(y)
    pos = np.flatnonzero(keep)
    codes, names = pd.factorize(labels.astype(str).to_numpy()[pos])
    traces: list[dict] = []
    payload = {"x": _b64(x[pos], np.float32), "y": _b64(y[pos], np.float32), "rows": _b64(np.asarray(rows)[pos], np.int32),
               "label_codes": _b64(codes, np.int32), "label_names": [str(n) for n in names],
               "colour_title": colour_title, "x_label": x_label, "y_label": y_label, "axes_visible": axes_visible,
               "marker_size": 4 if len(pos) > 5000 else 7, "traces": traces, "n": int(len(pos)),
               "hidden": int(len(x) - len(pos))}
    values = colour.to_numpy()[pos]
    if categorical:
        codes, names = pd.factorize(values.astype(str))
        counts = np.bincount(codes, minlength=len(names))
        order = np.argsort(-counts, kind="stable")
        shown = order[:MAX_TRACES] if len(names) > MAX_TRACES else sorted(range(len(names)), key=lambda k: names[k])
        palette = palette or {}
        for i, k in enumerate(shown):
            traces.append({"name": str(names[k]), "color": palette.get(str(names[k]), PALETTE[i % len(PALETTE)]),
                           "pos": _b64(np.flatnonzero(codes == k), np.int32)})
        if len(names) > len(shown):
            rest = np.flatnonzero(~np.isin(codes, shown))
            traces.append({"name": f"other ({len(names) - len(shown)} more)", "color": OTHER, "pos": _b64(rest, np.int32)})
        payload["other_categories"] = int(len(names) - len(shown))
    else:
        values = values.astype(np.float32)
        finite = np.isfinite(values)
        if (~finite).any():
            traces.append({"name": "no value", "color": MISSING, "pos": _b64(np.flatnonzero(~finite), np.int32)})
        traces.append({"name": colour_title, "pos": _b64(np.flatnonzero(finite), np.int32),
                       "values": _b64(values[finite], np.float32)})
        payload.update(colorscale="Viridis", reverse=reverse_scale,
                       cmin=float(values[finite].min()) if finite.any() else 0.0,
                       cmax=float(values[finite].max()) if finite.any() else 1.0)
    version = hashlib.blake2b(digest_size=12)
    for part in (payload["x"], payload["y"], payload["rows"], payload["label_codes"], *(t["pos"] for t in traces),
                 *(t.get("values", "") for t in traces),
                 json.dumps({k: v for k, v in payload.items() if k not in ("x", "y", "rows", "label_codes", "traces")},
                            sort_keys=True),
                 json.dumps([(t["name"], t.get("color")) for t in traces])):
        version.update(part.encode())
    payload["version"] = version.hexdigest()
    payload["coords_version"] = hashlib.blake2b((payload["x"] + payload["y"]).encode(), digest_size=8).hexdigest()
    return payload


def thumbnail_uri(dataset: Dataset, path: str, size: int = THUMB_SIZE) -> Optional[str]:
    """The sample's image as a JPEG data URI, long side ``size`` px (None when unreadable)."""
    from ui.gallery import image_for

    image = image_for(dataset, path, size)
    if image is None:
        return None
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def hover_detail(dataset: Dataset, frame: pd.DataFrame, row: int, scores: Sequence[str],
                 extra: Optional[pd.Series] = None) -> dict:
    """What the tooltip shows for one row: its thumbnail (made from the dataset's own file) and a line of text."""
    sample = frame.loc[row]
    lines = [f"{row_name(frame, row)} · {sample['label']}"]
    if extra is not None and row in extra.index:
        lines.append(f"{extra.name}: {extra.loc[row]}")
    lines += [f"{c} {sample[c]:.3f}" for c in scores if c in sample.index and pd.notna(sample[c])]
    return {"row": int(row), "uri": thumbnail_uri(dataset, str(sample["path"])), "alt": str(sample["path"]),
            "text": "\n".join(lines)}


HOVER_PREFETCH = 24
"""Thumbnails sent with each hover beyond the hovered point's own: its nearest points on the map, so the
next hovers around it show their image without another page rerun."""


def hover_rows(x: np.ndarray, y: np.ndarray, rows: np.ndarray, hovered: int, k: int = HOVER_PREFETCH) -> list[int]:
    """``hovered`` first, then the ``k`` rows drawn nearest to it (map distance; points without coordinates never)."""
    at = np.flatnonzero(rows == hovered)
    if not len(at):
        return [int(hovered)]
    distance = np.hypot(x - x[at[0]], y - y[at[0]])
    distance[~np.isfinite(distance)] = np.inf
    distance[at[0]] = -1.0  # the hovered point itself comes first
    nearest = np.argsort(distance, kind="stable")[: k + 1]
    return [int(rows[i]) for i in nearest if np.isfinite(distance[i])]


PREFETCH_BATCH = 200
"""Thumbnails one idle-time prefetch rerun sends: the browser asks for the points nearest the view's centre
that it has no thumbnail for, a batch at a time while the pointer is not waiting on a hover and nothing is
selected (the action bar below is then in use: no rerun may land between its clicks), so the first
hover in a region shows its image without a rerun (docs/benchmarks.md, "Hover thumbnails prefetched")."""
PREFETCH_LIMIT = 3000
"""Thumbnails a map prefetches at most (~3 KB each as a 128 px JPEG): the whole demo; on a larger map the
region around the view's centre, and hovers elsewhere ask as before."""


def prefetch_rows(asked: Sequence, rows: pd.Index, limit: int = PREFETCH_BATCH) -> list[int]:
    """The rows of an idle-time prefetch request that exist in ``rows``, in the order asked, at most ``limit``:
    the browser names rows, never paths, and the server makes each row's thumbnail from the dataset's own file."""
    wanted: list[int] = []
    for r in asked:
        if isinstance(r, (int, float)) and not isinstance(r, bool) and int(r) == r and int(r) in rows:
            wanted.append(int(r))
            if len(wanted) == limit:
                break
    return wanted


def scatter_map(payload: Optional[dict], *, hover: Optional[list[dict]], selected: Sequence[int], height: int, key: str,
                prefetch: bool = True) -> Optional[dict]:
    """Draw the map; returns ``{"selected": [rows], "hover": row, "prefetch": [rows], "seq", "need_points"}`` or
    None before any event.

    ``hover`` is a list of :func:`hover_detail` (the hovered row's first); the browser keeps every one it
    was sent for the life of the map, so a point it holds shows its image without asking again.

    ``payload=None`` keeps the points the browser already has (a hover rerun need not resend them).
    ``selected`` is the selection the page acts on: a remounted map (after visiting another page)
    starts from it rather than from nothing.  ``prefetch=False`` stops the idle-time thumbnail requests (while
    a page polls for something else, each would rerun it).
    """
    return _component()(data=payload, hover=hover, selected=list(selected), height=height, key=key, default=None,
                        prefetch_batch=PREFETCH_BATCH, prefetch_limit=PREFETCH_LIMIT if prefetch else 0)


def colour_flags(frame: pd.DataFrame, decision: pd.Series, tagged: dict[str, set]) -> dict[str, Callable[[], pd.Series]]:
    """The categorical colourings by name (label, review decision, duplicate group, given-vs-suggested
    disagreement, tags), each computed only when called: a rerun pays for the one it draws."""
    flags: dict[str, Callable[[], pd.Series]] = {"label": lambda: frame["label"].astype(str),
                                                 "review decision": lambda: decision}
    if "clip.duplicate_group" in frame:
        def duplicate_group() -> pd.Series:
            group = frame["clip.duplicate_group"].fillna(-1).astype(int)
            top = set(group[group >= 0].value_counts().index[:12])
            return pd.Series(np.where(group < 0, "none", np.where(group.isin(top), "group " + group.astype(str),
                                                                  "other group")), index=frame.index)

        flags["duplicate group"] = duplicate_group
    for col, who in (("clip.suggested_label", "CLIP"), ("dynamics.suggested_label", "proxy")):
        if col in frame:
            flags[f"{who} disagrees with label"] = lambda col=col: pd.Series(
                np.where(frame[col].astype(str) == frame["label"].astype(str), "agrees", "disagrees"), index=frame.index)
    for tag, paths in tagged.items():
        flags[f"tag: {tag}"] = lambda paths=paths, tag=tag: pd.Series(
            np.where(frame["path"].isin(paths), tag, "untagged"), index=frame.index)
    return flags
