"""The dashboard's charts and labels (app/charts.py, app/labels.py): plain rows in, plotly figures out."""

import json

from app import charts, labels
from editcore import service


def test_heatmap_colours_ties_at_the_best_green():
    rows = [{"method": "a", "efficacy": 1.0, "nkl": 0.2, "fluency": None},
            {"method": "b", "efficacy": 1.0, "nkl": 0.1, "fluency": None},
            {"method": "c", "efficacy": 0.5, "nkl": 0.1, "fluency": None}]
    metrics = [("efficacy", "Efficacy", True), ("nkl", "NKL", False), ("fluency", "Fluency", True)]
    z = [list(r) for r in charts.compare_heatmap(rows, metrics).data[0].z]
    assert z == [[1.0, 1.0, 0.0], [0.0, 1.0, 1.0], [None, None, None]]
    z = [list(r) for r in charts.compare_heatmap(rows[:2], metrics[:1]).data[0].z]
    assert z == [[1.0, 1.0]]  # every method tied: all best, not all worst


def test_rate_curves_are_drawn_on_a_fixed_axis():
    pts = {"memit": [{"n_edits": 5, "retention": 1.0}, {"n_edits": 10, "retention": 0.95}]}
    fig = charts.curves(pts, "retention", "Retention", y_range=(0.0, 1.0))
    lo, hi = fig.layout.yaxis.range
    assert lo < 0 < 0.95 < 1 < hi < 1.1
    assert charts.curves(pts, "retention", "Retention").layout.yaxis.range is None
    assert {"retention", "neighbourhood_score", "probe_accuracy"} <= labels.SEQ_RATE_CURVES


def test_chart_builders_take_plain_rows():
    fig = charts.nkl_bars([{"prompt": "A <b>x</b>", "kind": "plain", "nkl": 0.1,
                            "top_moved": [{"token": "<script>", "before": 0.1, "after": 0.3}]},
                           {"prompt": "B", "kind": "distracted", "nkl": 0.4, "top_moved": []}])
    assert len(fig.data) == 2
    assert "<script>" not in json.dumps([list(c) for c in fig.data[0].customdata])  # token text is escaped
    # The axis names the metric's direction (editcore.metrics.nkl: KL(P_post || P_pre)), as the impact scan does.
    assert fig.layout.yaxis.title.text.startswith("KL(post ‖ pre)")
    fig = charts.curves({"rome": [{"n_edits": 0, "retention": None}, {"n_edits": 5, "retention": 0.8}]},
                        "retention", "Retention")
    assert list(fig.data[0].x) == [5]
    assert "<html" in charts.to_html(fig)[:200].lower()


def test_risers_and_fallers_mark_a_leading_space():
    assert charts.token_label(" London") == "␣London" and charts.token_label("London") == "London"
    assert charts.token_label(" ") == "␣" and charts.token_label("\n") == "↵" and charts.token_label("") == "∅"
    fig = charts.shift_bars({"prompt": "p", "risers": [{"token": " London", "dlogp": 1.0},
                                                        {"token": "London", "dlogp": 0.5}],
                             "fallers": [{"token": " ", "dlogp": -1.0}]})
    assert list(fig.data[0].y) == ["␣London", "London"] and list(fig.data[1].y) == ["␣"]
    fig = charts.shift_bars({"prompt": "p", "risers": [{"token": "\ufffd", "dlogp": 1.0}],
                             "fallers": [{"token": "\ufffd", "dlogp": -1.0}, {"token": "\ufffd", "dlogp": -0.5}]})
    assert list(fig.data[0].y) + list(fig.data[1].y) == ["\ufffd", "\ufffd ·2", "\ufffd ·3"]  # never stacked


def test_labels_name_every_key_the_service_has():
    assert set(labels.PITFALL_SOURCES) == set(service.PITFALL_SOURCES)
    rows = {key for key, _label, _higher in labels.SCORECARD}
    assert rows <= set(service.scorecard({}))
    assert rows - {"seconds"} <= set(service.SCORECARD_FAMILY)  # every measured row can be "not computed"
