"""The shared report: one data source for JSON, Markdown and HTML, its JSON schema, and ``prunescope report``."""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest

from pruning_core.audit.overview import overview, report_dict
from pruning_core.audit.report import REPORT_SCHEMA, report_data, report_html, thumbnail_data_url
from pruning_core.cli import main
from report_fixtures import make_report_table
from review_fixtures import make_scored_dataset


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    return make_report_table(tmp_path_factory.mktemp("report"))


def _data(fixture, **kw):
    dataset, _, table = fixture
    ov = overview(table.frame, table.infos, scoring=table.settings)
    return ov, report_data(ov, table.frame, name=dataset.name,
                           thumbnail=lambda p: thumbnail_data_url(dataset.root / p), **kw)


def test_report_json_follows_its_schema_and_holds_the_overviews_numbers(fixture):
    ov, data = _data(fixture, pairs={"Train/test leakage": [{"a": "images/img_000.png", "b": "images/img_001.png",
                                                             "score": 0.97}]})
    jsonschema.validate(data, REPORT_SCHEMA)
    jsonschema.validate(json.loads(json.dumps(data, default=str)), REPORT_SCHEMA)
    same = json.loads(json.dumps(data, default=str))
    for f in same["findings"]:  # what the report adds to each finding: its headline and estimate in words
        assert f.pop("headline") and f.pop("estimate_text")
    assert {k: same[k] for k in report_dict(ov)} == json.loads(json.dumps(report_dict(ov), default=str))
    assert data["dataset"]["fingerprint"] == fixture[0].fingerprint
    assert data["duplicate_groups"]["total"] == 2
    assert [g["size"] for g in data["duplicate_groups"]["groups"]] == [3, 2]  # largest first
    assert all(m["thumbnail"].startswith("data:image/png;base64,") for g in data["duplicate_groups"]["groups"]
               for m in g["members"])
    assert data["pairs"][0]["count"] == 1 and data["pairs"][0]["pairs"][0]["b_thumbnail"].startswith("data:image/png")
    dark = next(f for f in data["findings"] if f["kind"] == "dark images")
    n_dark = int((fixture[2].frame["image.dark"] < 0.32).sum())  # the darkened image and the saturated blues
    assert n_dark >= 1 and (dark["count"], dark["threshold"], dark["headline"]) == (n_dark, 0.32, f"{n_dark} raw")
    for broken in ({"findings": [{"kind": "x"}]}, {"format": "other/1"}, {"samples": -1}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**copy.deepcopy(data), **broken}, REPORT_SCHEMA)


def test_html_is_laid_out_from_the_same_data_without_anything_external(fixture):
    _, data = _data(fixture, pairs={"Leak <b>": [{"a": "x.png", "b": "y.png", "score": None}]})
    page = report_html(data)
    for f in data["findings"]:
        assert f'data-kind="{f["kind"]}"' in page and f["estimate_text"].split(" (")[0] in page
    assert "Leak &lt;b&gt;" in page  # escaped, never markup
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert page.count('src="data:image/png;base64,') == 5  # 2 + 3 group members; the pair has no thumbnails


def test_cli_report_writes_each_format_and_refuses_what_it_should(fixture, tmp_path, capsys):
    dataset, manifest, table = fixture
    scores = tmp_path / "scores.parquet"
    table.save(scores)
    for suffix in ("html", "md", "json"):
        out = tmp_path / f"report.{suffix}"
        assert main(["report", str(scores), "--data", str(manifest), "--out", str(out)]) == 0
        assert out.stat().st_size > 0
    data = json.loads((tmp_path / "report.json").read_text())
    jsonschema.validate(data, REPORT_SCHEMA)
    n_dark = int((table.frame["image.dark"] < 0.32).sum())
    assert next(f for f in data["findings"] if f["kind"] == "dark images")["count"] == n_dark
    assert f"| Dark images | {n_dark} |" in (tmp_path / "report.md").read_text()
    # rerunning over its own report is fine; a file it did not write, a bad suffix and other data are refused
    assert main(["report", str(scores), "--out", str(tmp_path / "report.html")]) == 0
    notes = tmp_path / "notes.html"
    notes.write_text("<p>mine</p>")
    assert main(["report", str(scores), "--out", str(notes)]) == 2
    assert notes.read_text() == "<p>mine</p>"
    assert main(["report", str(scores), "--out", str(tmp_path / "report.txt")]) == 2
    _, other, _ = make_scored_dataset(tmp_path / "other", n=10)
    assert main(["report", str(scores), "--data", str(other), "--out", str(tmp_path / "r2.html")]) == 2
    err = capsys.readouterr().err
    assert "report.txt" in err or ".txt" in err
    assert "does not score the samples" in err
