"""The Explore map's data: embeddings a user brings (manifest column, .npy file) and the component's payload."""

import base64

import numpy as np
import pandas as pd
import pytest

from pruning_core.audit.projection import column_embeddings, embedding_columns, load_embedding_file
from pruning_core.audit.review import decision_column


def _decode(b64: str, dtype) -> np.ndarray:
    return np.frombuffer(base64.b64decode(b64), dtype=dtype)


def test_manifest_vector_columns_are_found_and_parsed():
    samples = pd.DataFrame({"path": ["a", "b", "c"], "label": ["x", "y", "x"], "weight": [1.0, 2.0, 3.0],
                            "note": ["hi", "there", "[not json"], "emb": ["[1, 2, 3]", None, "[4, 5.5, 6]"]})
    assert embedding_columns(samples) == ["emb"]
    out = column_embeddings(samples, "emb")
    assert out.shape == (3, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out[[0, 2]], [[1, 2, 3], [4, 5.5, 6]])
    assert np.isnan(out[1]).all()  # an empty cell is a row that is not drawn


@pytest.mark.parametrize("cells, problem", [(["[1, 2]", "[1, 2, 3]"], "different lengths"),
                                            (["[1, 2]", "oops"], "row 1 is not a list of numbers")])
def test_a_bad_manifest_column_is_one_line_naming_it(cells, problem):
    with pytest.raises(ValueError, match=rf"^manifest column 'emb': .*{problem}"):
        column_embeddings(pd.DataFrame({"emb": cells}), "emb")


def test_a_good_npy_file_loads(tmp_path):
    np.save(tmp_path / "e.npy", np.arange(12, dtype=np.float64).reshape(4, 3))
    out = load_embedding_file(tmp_path / "e.npy", 4, roots=[tmp_path])
    assert out.dtype == np.float32 and out.shape == (4, 3) and out[3, 2] == 11


@pytest.mark.parametrize("make, n, problem", [
    (lambda p: np.save(p, np.zeros((3, 4))), 4, "3 rows for 4 samples"),
    (lambda p: np.save(p, np.zeros(4)), 4, r"shape \(4,\)"),
    (lambda p: np.save(p, np.array([["a", "b"]] * 4)), 4, "is not numeric"),
    (lambda p: p.write_text("not numpy"), 4, "not a readable .npy array"),
    (lambda p: None, 4, "no such file"),
])
def test_a_bad_npy_file_is_one_line_naming_it(tmp_path, make, n, problem):
    path = tmp_path / "e.npy"
    make(path)
    with pytest.raises(ValueError, match=problem) as err:
        load_embedding_file(path, n, roots=[tmp_path])
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_an_npy_file_outside_the_workspace_is_refused(tmp_path):
    (tmp_path / "inside").mkdir()
    np.save(tmp_path / "e.npy", np.zeros((2, 2)))
    with pytest.raises(ValueError, match="outside the workspace"):
        load_embedding_file(tmp_path / "inside" / ".." / "e.npy", 2, roots=[tmp_path / "inside"])


def test_payload_puts_each_row_in_its_colour_and_drops_points_without_coordinates():
    from ui.map_component import map_payload

    x = np.array([0.0, 1.0, np.nan, 3.0], dtype=np.float32)
    rows = np.array([10, 11, 12, 13])
    labels = pd.Series(["cat", "dog", "cat", "dog"])
    colour = pd.Series(["keep", "remove", "keep", "undecided"])
    payload = map_payload(x, x, rows, labels, colour, colour_title="review decision", categorical=True,
                          palette={"keep": "#00ff00"})
    drawn = _decode(payload["rows"], np.int32)
    assert drawn.tolist() == [10, 11, 13] and payload["hidden"] == 1
    by_name = {t["name"]: drawn[_decode(t["pos"], np.int32)].tolist() for t in payload["traces"]}
    assert by_name == {"keep": [10], "remove": [11], "undecided": [13]}
    assert next(t for t in payload["traces"] if t["name"] == "keep")["color"] == "#00ff00"
    names = payload["label_names"]
    assert [names[c] for c in _decode(payload["label_codes"], np.int32)] == ["cat", "dog", "dog"]
    scored = map_payload(x, x, rows, labels, pd.Series([0.5, np.nan, 0.1, 0.9]), colour_title="s", categorical=False)
    value_trace = scored["traces"][-1]
    assert drawn[_decode(value_trace["pos"], np.int32)].tolist() == [10, 13]
    np.testing.assert_allclose(_decode(value_trace["values"], np.float32), [0.5, 0.9])
    assert scored["traces"][0]["name"] == "no value" and scored["version"] != payload["version"]


def test_decision_column_maps_each_path_to_its_latest_action():
    frame = pd.DataFrame({"path": ["a", "b", "c", "a2"]}, index=[5, 6, 7, 8])
    latest = pd.DataFrame({"path": ["c", "a"], "action": ["remove", "keep"]})
    out = decision_column(frame, latest)
    assert out.tolist() == ["keep", "undecided", "remove", "undecided"] and out.index.tolist() == [5, 6, 7, 8]


def test_a_hover_prefetches_the_nearest_drawn_points_hovered_first():
    from ui.map_component import hover_rows

    x = np.array([0.0, 10.0, 1.0, np.nan, 2.0, 0.5])
    y = np.zeros(6)
    rows = np.array([100, 101, 102, 103, 104, 105])
    assert hover_rows(x, y, rows, 100, k=3) == [100, 105, 102, 104]  # itself, then by distance; no NaN point
    assert hover_rows(x, y, rows, 101, k=10) == [101, 104, 102, 105, 100]  # never more than are drawn
    assert hover_rows(x, y, rows, 999) == [999]  # not on the map: only itself


def test_a_prefetch_request_serves_only_rows_of_the_table_in_the_order_asked_and_at_most_a_batch():
    import pandas as pd

    from ui.map_component import prefetch_rows

    rows = pd.Index([3, 5, 8, 13])
    assert prefetch_rows([8, 99, 3, "../etc/passwd", 5.0, 5.5, True, None], rows) == [8, 3, 5]
    assert prefetch_rows([13, 8, 5, 3], rows, limit=2) == [13, 8]
