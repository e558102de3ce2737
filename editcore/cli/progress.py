"""A terminal progress bar for long steps (model preparation, layer statistics)."""

from __future__ import annotations

import sys


class Bar:
    """``Bar()(stage, fraction)`` redraws one line on stderr; usable as a ``Progress`` callback."""

    def __init__(self, width: int = 30, stream=None):
        self.width = width
        self.stream = stream or sys.stderr
        self._last = None

    def __call__(self, stage: str, frac: float) -> None:
        frac = min(max(frac, 0.0), 1.0)
        filled = int(round(frac * self.width))
        line = f"\r[{'#' * filled}{'.' * (self.width - filled)}] {frac:4.0%} {stage[:60]:<60}"
        if line != self._last:
            self.stream.write(line)
            self._last = line
        if frac >= 1.0:
            self.stream.write("\n")
        self.stream.flush()
