"""Charts of the causal-tracing reports: ``reports/trace_<model>.json`` (averaged trace) and
``reports/trace_localisation_<model>.json`` (localisation vs editing), written by ``python -m editcore trace
MODEL --localisation --out reports``, become ``reports/trace_<model>.html`` (plotly, opens offline) and
``reports/trace_<model>.png`` (the same page rendered by headless Chromium).

    .venv/bin/python scripts/trace_report.py gemma-3-270m smollm2-135m [--reports reports]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app import charts  # noqa: E402

CHROMIUM = "/usr/bin/chromium"


def page(model: str, folder: Path) -> str:
    avg = json.loads((folder / f"trace_{model}.json").read_text())
    loc_path = folder / f"trace_localisation_{model}.json"
    figs = [charts.trace_average(avg["summary"], kind) for kind in ("hidden", "mlp", "attn")]
    title = "Causal tracing averaged over known facts"
    if loc_path.is_file():
        title += " and localisation vs editing"
        loc = json.loads(loc_path.read_text())
        figs += [charts.localisation_layers(loc["per_layer"]), charts.localisation_scatter(loc["rows"], "rewrite"),
                 charts.localisation_scatter(loc["rows"], "neighbourhood")]
    parts = []
    for i, fig in enumerate(figs):
        fig.update_layout(width=1100)
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0)))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Causal tracing: {model}</title></head>"
            f"<body style='font-family: sans-serif'><h2>{title}: {model}</h2>"
            + "".join(parts) + "</body></html>")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--reports", default=str(ROOT / "reports"))
    args = ap.parse_args()
    folder = Path(args.reports)
    for model in args.models:
        html_path = folder / f"trace_{model}.html"
        html_path.write_text(page(model, folder))
        print(f"wrote {html_path}")
        if Path(CHROMIUM).exists():
            profile = tempfile.mkdtemp(prefix="editscope-chromium-")
            try:
                subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                                "--hide-scrollbars", "--window-size=1160,2400", "--virtual-time-budget=5000",
                                f"--screenshot={folder / f'trace_{model}.png'}", html_path.resolve().as_uri()],
                               check=True, capture_output=True, timeout=120)
                print(f"wrote {folder / f'trace_{model}.png'}")
            finally:
                shutil.rmtree(profile, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
