"""Figures as plain plotly JSON (``{"data": [...], "layout": {...}}``) and a self-contained HTML page for
them. editcore never imports plotly (the UI's library); the dashboard turns a spec into a figure with
``plotly.graph_objects.Figure(spec)`` and the command line writes the page, which loads plotly.js.

Axes are chosen to be read correctly: shares span 0-1, other quantities start at 0, and the unedited value
is drawn as a dotted line, so a small wiggle is never drawn as a cliff."""

from __future__ import annotations

import html
import json
from pathlib import Path

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
PLOTLY_JS = "https://cdn.plot.ly/plotly-2.35.2.min.js"


def _domain(lo: float, hi: float) -> list[float]:
    """An axis domain inside [0, 1]: Grid's sums leave -5.6e-17 on its bottom row, which plotly refuses."""
    return [min(max(round(lo, 9), 0.0), 1.0), min(max(round(hi, 9), 0.0), 1.0)]


class Grid:
    """A rows x cols grid of panels in one figure; panel ``i`` counts row by row from 0."""

    def __init__(self, rows: int, cols: int, titles: list[str], title: str, width: int, height: int):
        self.rows, self.cols = rows, cols
        self.data: list[dict] = []
        self.layout: dict = {"title": {"text": title}, "width": width, "height": height, "template": "plotly_white",
                             "annotations": [], "shapes": [], "legend": {"orientation": "h", "y": -0.15}}
        gx, gy = 0.06, 0.14
        w, h = (1 - gx * (cols - 1)) / cols, (1 - gy * (rows - 1)) / rows
        for i, t in enumerate(titles):
            r, c = divmod(i, cols)
            x0, y1 = c * (w + gx), 1 - r * (h + gy)
            ax = "" if i == 0 else str(i + 1)
            self.layout[f"xaxis{ax}"] = {"domain": _domain(x0, x0 + w), "anchor": f"y{ax}", "title": {"text": "edits"}}
            self.layout[f"yaxis{ax}"] = {"domain": _domain(y1 - h, y1), "anchor": f"x{ax}"}
            self.layout["annotations"].append({"text": t, "x": x0 + w / 2, "y": y1 + 0.02, "xref": "paper",
                                               "yref": "paper", "showarrow": False, "xanchor": "center",
                                               "yanchor": "bottom"})

    @staticmethod
    def _ax(i: int) -> str:
        return "" if i == 0 else str(i + 1)

    def line(self, i: int, name: str, color: str, xs: list, ys: list, *, legend: bool,
             err: tuple[list, list] | None = None) -> None:
        ax = self._ax(i)
        trace = {"type": "scatter", "mode": "lines+markers", "x": xs, "y": ys, "name": name, "legendgroup": name,
                 "showlegend": legend, "line": {"color": color}, "xaxis": f"x{ax}", "yaxis": f"y{ax}"}
        if err is not None:
            trace["error_y"] = {"type": "data", "array": err[0], "arrayminus": err[1], "thickness": 1}
        self.data.append(trace)

    def reference(self, i: int, y: float, color: str) -> None:
        ax = self._ax(i)
        self.layout["shapes"].append({"type": "line", "xref": f"x{ax} domain", "yref": f"y{ax}", "x0": 0, "x1": 1,
                                      "y0": y, "y1": y, "line": {"dash": "dot", "color": color, "width": 1},
                                      "opacity": 0.6})

    def y_range(self, i: int, lo: float, hi: float) -> None:
        self.layout[f"yaxis{self._ax(i)}"]["range"] = [lo, hi]

    def spec(self) -> dict:
        return {"data": self.data, "layout": self.layout}


def write_figure(spec: dict, title: str, html_path: Path) -> dict:
    """The page at ``html_path`` and the bare spec beside it (``.json``, which ``scripts/report_png.py``
    renders as a PNG, since a page that loads plotly.js from its CDN draws nothing offline)."""
    html_path.write_text(html_page(spec, title), encoding="utf-8")
    json_path = html_path.with_suffix(".json")
    json_path.write_text(json.dumps({"title": title, "figure": spec}, allow_nan=False), encoding="utf-8")
    return {"html": html_path, "figure_json": json_path}


def html_page(spec: dict, title: str) -> str:
    """A page that draws ``spec`` with plotly.js (from its CDN); the data is embedded as JSON."""
    payload = json.dumps(spec, allow_nan=False).replace("</", "<\\/")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<script src='{PLOTLY_JS}'></script></head><body><div id='fig'></div>"
            f"<script>const spec = {payload}; Plotly.newPlot('fig', spec.data, spec.layout);</script>"
            "</body></html>")
