"""PNG images of the figures that ``reproduce`` and ``sequential`` write (``<name>.json`` beside each page).

    .venv/bin/python scripts/report_png.py reports/sequential-*.json      # writes reports/sequential-*.png

The HTML pages load plotly.js from its CDN, so offline they draw nothing; the PNG is the picture anyone can
open. Rendered by kaleido through the dashboard's exporter (it needs Chromium, as the PNG downloads do).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app import export  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("specs", nargs="+", type=Path, help="figure JSON files written beside the HTML pages")
    args = ap.parse_args()
    ok, why = export.status()
    if not ok:
        print(f"error: {why}", file=sys.stderr)
        return 1
    import plotly.graph_objects as go

    for path in args.specs:
        try:
            spec = json.loads(path.read_text(encoding="utf-8"))["figure"]
        except (OSError, ValueError, KeyError) as exc:
            print(f"error: {path} is not a figure file written by editcore ({exc})", file=sys.stderr)
            return 1
        out = path.with_suffix(".png")
        out.write_bytes(export.png(go.Figure(spec)))
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
