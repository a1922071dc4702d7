"""A report to share: the Overview's numbers as JSON, and the same data as one self-contained HTML file.

One source: :func:`report_data` is :func:`overview.report_dict` (every finding with its count,
threshold and estimate, per-class quality, the flip matrix, the settings) plus what a colleague
needs to see the evidence: the dataset's fingerprint, the near-duplicate groups and any pair
findings (e.g. train/test leakage) with thumbnails embedded as ``data:`` URLs.  :func:`report_html`
only lays that dict out; it computes nothing, so the HTML, the JSON and the Overview page show the
same numbers.  The HTML has no script, no external stylesheet, font or image: it opens offline and
requests nothing but itself.  ``REPORT_SCHEMA`` is the JSON's schema (docs/report.md).
"""

from __future__ import annotations

import base64
import html
import io
import os
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from pruning_core.audit.overview import Finding, Overview, estimate_text, flat_settings, report_dict

if TYPE_CHECKING:
    from pruning_core.data.images import ImageSource

REPORT_FORMAT = "prunescope-report/1"
MAX_GROUPS = 30
"""Duplicate groups a report shows (largest first); the total is reported beside them."""
MAX_MEMBERS = 8
"""Members shown per duplicate group."""
THUMBNAIL_PX = 72

Thumbnail = Callable[[str], Optional[str]]
"""A sample's path -> its thumbnail as a ``data:`` URL (None: not at hand)."""


def headline(finding: Finding) -> str:
    """A finding's headline: the estimated true problems, or the raw count where nothing estimates them."""
    est = finding.estimate
    if est is None or est.precision != est.precision:  # NaN: uncalibrated
        return f"{finding.count:,} raw"
    return f"{est.count:,.0f}" if est.low == est.high else f"≈ {est.count:,.0f}"


def thumbnail_data_url(path: "ImageSource", size: int = THUMBNAIL_PX) -> Optional[str]:
    """A PNG thumbnail (longest side ``size``) of an image (a file or a container member) as a ``data:`` URL;
    None when it does not decode."""
    from pruning_core.data.images import ImageError, load_rgb

    try:
        im = load_rgb(path, draft_size=(size, size))
    except ImageError:
        return None
    im.thumbnail((size, size))
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _member(frame: pd.DataFrame, row: Any, thumbnail: Optional[Thumbnail]) -> dict:
    path = str(frame.at[row, "path"])
    return {"path": path, "label": str(frame.at[row, "label"]), "thumbnail": thumbnail(path) if thumbnail else None}


def duplicate_groups(frame: pd.DataFrame, thumbnail: Optional[Thumbnail] = None, *, max_groups: int = MAX_GROUPS,
                     max_members: int = MAX_MEMBERS) -> dict:
    """The near-duplicate groups of ``clip.duplicate_group``, largest first: how many, and the first ``max_groups``."""
    if "clip.duplicate_group" not in frame:
        return {"total": 0, "groups": []}
    group = frame["clip.duplicate_group"].fillna(-1).to_numpy(dtype=np.int64)
    ids, sizes = np.unique(group[group >= 0], return_counts=True)
    order = np.lexsort((ids, -sizes))[:max_groups]
    shown = []
    for gid, n in zip(ids[order], sizes[order]):
        rows = frame.index[group == gid][:max_members]
        shown.append({"group": int(gid), "size": int(n), "members": [_member(frame, r, thumbnail) for r in rows]})
    return {"total": int(len(ids)), "groups": shown}


def pair_findings(pairs: Optional[Mapping[str, Sequence[Mapping[str, Any]]]], thumbnail: Optional[Thumbnail] = None
                  ) -> list[dict]:
    """Findings that are lists of sample pairs (train/test leakage, ...): ``{title: [{"a", "b", "score"}, ...]}``.

    An item that brings its own ``a_thumbnail``/``b_thumbnail`` keeps it (a pair across two datasets, whose
    ``b`` the audited dataset's ``thumbnail`` cannot read); the others get ``thumbnail``'s.
    """
    def side(p: Mapping[str, Any], key: str) -> Optional[str]:
        if p.get(f"{key}_thumbnail") is not None:
            return str(p[f"{key}_thumbnail"])
        return thumbnail(str(p[key])) if thumbnail else None

    out = []
    for title, items in (pairs or {}).items():
        listed = [{"a": str(p["a"]), "b": str(p["b"]), "score": None if p.get("score") is None else float(p["score"]),
                   "a_thumbnail": side(p, "a"), "b_thumbnail": side(p, "b")} for p in items]
        out.append({"title": str(title), "count": len(listed), "pairs": listed})
    return out


def pairs_markdown(findings: Sequence[Mapping[str, Any]], shown: int = MAX_GROUPS) -> str:
    """The pair findings (:func:`pair_findings`) as Markdown sections: the count and the first ``shown`` pairs."""
    def similarity(score: Optional[float]) -> str:
        return "" if score is None else f"{score:.3f}"

    lines: list[str] = []
    for finding in findings:
        lines += ["", f"## {finding['title']}", "", f"{finding['count']:,} pairs (raw count)."]
        if finding["pairs"]:
            lines += ["", "| a | b | similarity |", "| --- | --- | --- |"]
            lines += [f"| `{p['a']}` | `{p['b']}` | {similarity(p['score'])} |" for p in finding["pairs"][:shown]]
    return "\n".join(lines) + ("\n" if lines else "")


def report_data(ov: Overview, frame: pd.DataFrame, *, name: str, thumbnail: Optional[Thumbnail] = None,
                pairs: Optional[Mapping[str, Sequence[Mapping[str, Any]]]] = None) -> dict:
    """Everything a shared report holds, as JSON-able data (valid against ``REPORT_SCHEMA``)."""
    data = report_dict(ov)
    for summary, finding in zip(data["findings"], ov.findings):
        summary["headline"] = headline(finding)
        summary["estimate_text"] = estimate_text(finding.estimate)
    dataset = dict((ov.settings.get("scoring") or {}).get("dataset") or {})
    return {"format": REPORT_FORMAT, "name": name,
            "dataset": {"name": dataset.get("name", name), "fingerprint": dataset.get("fingerprint")},
            **data, "duplicate_groups": duplicate_groups(frame, thumbnail), "pairs": pair_findings(pairs, thumbnail)}


_ESTIMATE = {"type": "object", "required": ["flagged", "estimated", "precision", "level", "source"],
             "properties": {"flagged": {"type": "integer"}, "estimated": {"type": ["number", "null"]},
                            "estimated_low": {"type": "number"}, "estimated_high": {"type": "number"},
                            "precision": {"type": ["number", "null"]}, "precision_low": {"type": "number"},
                            "precision_high": {"type": "number"}, "level": {"type": "number"},
                            "checked": {"type": "integer"}, "source": {"type": "string"}}}
_THUMB = {"type": ["string", "null"], "pattern": "^data:image/png;base64,"}
_MEMBER = {"type": "object", "required": ["path", "label", "thumbnail"],
           "properties": {"path": {"type": "string"}, "label": {"type": "string"}, "thumbnail": _THUMB}}
REPORT_SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "PruneScope report",
    "type": "object",
    "required": ["format", "name", "dataset", "samples", "settings", "findings", "evidence", "class_quality", "flips",
                 "duplicate_groups", "pairs"],
    "properties": {
        "format": {"const": REPORT_FORMAT},
        "name": {"type": "string"},
        "dataset": {"type": "object", "required": ["name", "fingerprint"],
                    "properties": {"name": {"type": "string"}, "fingerprint": {"type": ["string", "null"]}}},
        "samples": {"type": "integer", "minimum": 0},
        "settings": {"type": "object", "required": ["thresholds", "scoring"]},
        "findings": {"type": "array", "items": {
            "type": "object", "required": ["kind", "title", "score", "rule", "count", "open", "headline", "estimate_text"],
            "properties": {"kind": {"type": "string"}, "title": {"type": "string"}, "score": {"type": "string"},
                           "rule": {"type": "string"}, "count": {"type": "integer", "minimum": 0},
                           "open": {"type": "integer", "minimum": 0}, "groups": {"type": "integer"},
                           "threshold": {"type": "number"}, "estimate": _ESTIMATE, "evidence": {"type": "string"},
                           "headline": {"type": "string"}, "estimate_text": {"type": "string"}}}},
        "fitness": {"type": ["object", "null"]},
        "evidence": {"type": "array", "items": {"type": "string"}},
        "class_quality": {"type": "array", "items": {
            "type": "object", "required": ["label", "samples", "flagged", "estimated", "label_quality"],
            "properties": {"label": {"type": "string"}, "samples": {"type": "integer"}, "flagged": {"type": "integer"},
                           "estimated": {"type": ["number", "null"]},
                           "label_quality": {"type": ["number", "null"], "minimum": 0, "maximum": 1}}}},
        "flips": {"type": "array", "items": {
            "type": "object", "required": ["given", "suggested", "open"],
            "properties": {"given": {"type": "string"}, "suggested": {"type": "string"},
                           "open": {"type": "integer", "minimum": 1}}}},
        "duplicate_groups": {"type": "object", "required": ["total", "groups"], "properties": {
            "total": {"type": "integer", "minimum": 0},
            "groups": {"type": "array", "items": {
                "type": "object", "required": ["group", "size", "members"],
                "properties": {"group": {"type": "integer"}, "size": {"type": "integer", "minimum": 2},
                               "members": {"type": "array", "items": _MEMBER}}}}}},
        "pairs": {"type": "array", "items": {
            "type": "object", "required": ["title", "count", "pairs"],
            "properties": {"title": {"type": "string"}, "count": {"type": "integer"}, "pairs": {"type": "array", "items": {
                "type": "object", "required": ["a", "b", "score"],
                "properties": {"a": {"type": "string"}, "b": {"type": "string"}, "score": {"type": ["number", "null"]},
                               "a_thumbnail": _THUMB, "b_thumbnail": _THUMB}}}}}},
    },
}


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:3px 8px;vertical-align:top}
th{background:#f4f4f4;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:#666;font-size:.9em}.group{display:flex;flex-wrap:wrap;gap:8px;margin:.5em 0 1em}
figure{margin:0;width:84px;font-size:.75em;word-break:break-all}figure img{width:72px;height:72px;object-fit:contain;
background:#eee;image-rendering:pixelated}.pair{display:flex;gap:8px;align-items:center;margin:.3em 0}
.missing{display:inline-block;width:72px;height:72px;background:#eee}
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _img(url: Optional[str], alt: str) -> str:
    return f'<img src="{_e(url)}" alt="{_e(alt)}">' if url else '<span class="missing" title="no thumbnail"></span>'


def _figure(member: Mapping[str, Any]) -> str:
    return f'<figure>{_img(member["thumbnail"], member["path"])}<figcaption>{_e(member["path"])} · ' \
           f'{_e(member["label"])}</figcaption></figure>'


def _num(value: Any, fmt: str = ",") -> str:
    return "unknown" if value is None else format(value, fmt)


def report_html(data: Mapping[str, Any]) -> str:
    """The report dict (:func:`report_data`) as one self-contained HTML page (inline CSS, no script)."""
    out = [f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>PruneScope report: {_e(data["name"])}'
           f'</title><meta name="referrer" content="no-referrer"><style>{_CSS}</style></head><body>',
           f'<h1>PruneScope report: {_e(data["name"])}</h1>',
           f'<p><b id="samples">{data["samples"]:,}</b> samples · dataset fingerprint '
           f'<code id="fingerprint">{_e(data["dataset"]["fingerprint"])}</code></p>',
           '<h2>Findings</h2><table id="findings"><tr><th>finding</th><th>estimate</th><th>flagged</th><th>open</th>'
           '<th>threshold</th><th>estimated true problems</th><th>flagged by</th><th>evidence</th></tr>']
    for f in data["findings"]:
        groups = f' <span class="muted">({f["groups"]:,} groups)</span>' if "groups" in f else ""
        out.append(f'<tr data-kind="{_e(f["kind"])}"><td>{_e(f["title"])}{groups}</td>'
                   f'<td class="n headline">{_e(f["headline"])}</td><td class="n count">{f["count"]:,}</td>'
                   f'<td class="n open">{f["open"]:,}</td><td class="n">{_e(format(f["threshold"], ".4g") if "threshold" in f else "—")}</td>'
                   f'<td>{_e(f["estimate_text"])}</td><td><code>{_e(f["rule"])}</code></td>'
                   f'<td class="muted">{_e(f.get("evidence", ""))}</td></tr>')
    out.append("</table>")
    if data.get("fitness"):
        out.append(f'<p><b>Model fitness.</b> {_e(data["fitness"].get("verdict", ""))}</p>')
    if data["evidence"]:
        out.append("<h2>Evidence</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in data["evidence"]) + "</ul>")
    out.append('<h2>Label quality per class</h2><table id="class-quality"><tr><th>class</th><th>samples</th>'
               '<th>flagged</th><th>estimated mislabelled</th><th>label quality</th></tr>')
    out += [f'<tr data-label="{_e(c["label"])}"><td>{_e(c["label"])}</td><td class="n">{c["samples"]:,}</td>'
            f'<td class="n">{c["flagged"]:,}</td><td class="n">{_num(c["estimated"], ",.1f")}</td>'
            f'<td class="n">{_num(c["label_quality"], ".1%")}</td></tr>' for c in data["class_quality"]]
    out.append("</table>")
    out.append(_flips_html(data["flips"]))
    out.append(_groups_html(data["duplicate_groups"]))
    for finding in data["pairs"]:
        out.append(f'<h2>{_e(finding["title"])} ({finding["count"]:,} pairs, raw count)</h2>')
        out += [f'<div class="pair">{_figure({"path": p["a"], "label": "", "thumbnail": p["a_thumbnail"]})}'
                f'{_figure({"path": p["b"], "label": "", "thumbnail": p["b_thumbnail"]})}'
                f'<span class="muted">{"" if p["score"] is None else format(p["score"], ".3f")}</span></div>'
                for p in finding["pairs"]]
    out.append('<h2>Settings</h2><table id="settings"><tr><th>setting</th><th>value</th></tr>')
    out += [f"<tr><td>{_e(k)}</td><td><code>{_e(v)}</code></td></tr>" for k, v in flat_settings(data["settings"])]
    out.append("</table></body></html>")
    return "\n".join(out)


def _flips_html(flips: Sequence[Mapping[str, Any]]) -> str:
    """Given (rows) x suggested (columns) open flagged samples; raw counts."""
    head = "<h2>Class flips (open likely-mislabelled samples, raw counts)</h2>"
    if not flips:
        return head + "<p>No open likely-mislabelled samples.</p>"
    matrix = pd.DataFrame(flips).pivot_table(index="given", columns="suggested", values="open", aggfunc="sum",
                                             fill_value=0)
    rows = ['<table id="flips"><tr><th>given ↓ / suggested →</th>' + "".join(f"<th>{_e(c)}</th>" for c in matrix.columns)
            + "</tr>"]
    for given, values in matrix.iterrows():
        rows.append(f"<tr><th>{_e(given)}</th>" + "".join(
            f'<td class="n" data-given="{_e(given)}" data-suggested="{_e(s)}">{int(n) if n else "·"}</td>'
            for s, n in values.items()) + "</tr>")
    return head + "\n".join(rows) + "</table>"


def _groups_html(dup: Mapping[str, Any]) -> str:
    head = f'<h2>Near-duplicate groups (<span id="duplicate-groups">{dup["total"]:,}</span>, raw count)</h2>'
    if not dup["groups"]:
        return head + "<p>None found (or no CLIP duplicate scores).</p>"
    shown = f'<p class="muted">The {len(dup["groups"])} largest shown.</p>' if len(dup["groups"]) < dup["total"] else ""
    return head + shown + "".join(
        f'<div><b>group {g["group"]}</b> · {g["size"]} images<div class="group">'
        + "".join(_figure(m) for m in g["members"]) + "</div></div>" for g in dup["groups"])


REPORT_SUFFIXES = (".html", ".md", ".json")
_MARKS = {".html": "<h1>PruneScope report:", ".md": "# PruneScope overview:", ".json": f'"format": "{REPORT_FORMAT}"'}


def is_report(path: os.PathLike | str) -> bool:
    """Whether ``path`` is a report PruneScope wrote (so writing one over it is rerunning the same command)."""
    from pathlib import Path

    path = Path(path)
    try:
        return _MARKS.get(path.suffix.lower(), "\0") in path.read_text(errors="replace")[:4000]
    except OSError:
        return False


def render(ov: Overview, frame: pd.DataFrame, suffix: str, *, name: str, thumbnail: Optional[Thumbnail] = None,
           pairs: Optional[Mapping[str, Sequence[Mapping[str, Any]]]] = None) -> str:
    """The report as ``.html`` / ``.md`` / ``.json`` text: the CLI's ``report`` and the Overview's download."""
    import json

    from pruning_core.audit.overview import report_markdown

    if suffix == ".md":
        return report_markdown(ov, name) + pairs_markdown(pair_findings(pairs))
    if suffix not in REPORT_SUFFIXES:
        raise ValueError(f"a report is .html, .md or .json, not {suffix or 'a name without a suffix'}")
    data = report_data(ov, frame, name=name, thumbnail=thumbnail, pairs=pairs)
    return report_html(data) if suffix == ".html" else json.dumps(data, indent=2, default=str)
