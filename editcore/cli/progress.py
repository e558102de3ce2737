"""A terminal progress bar for long steps (model preparation, layer statistics)."""

from __future__ import annotations

import sys


class Bar:
    """``Bar()(stage, fraction)`` redraws one line on stderr; usable as a ``Progress`` callback."""

    def __init__(self, width: int = 30, stream=None):
        self.width = width
        self.stream = stream or sys.stderr
        self._last = None
        self._open = False  # a line is drawn and not ended yet

    def __call__(self, stage: str, frac: float) -> None:
        frac = min(max(frac, 0.0), 1.0)
        filled = int(round(frac * self.width))
        line = f"\r[{'#' * filled}{'.' * (self.width - filled)}] {frac:4.0%} {stage[:60]:<60}"
        if line != self._last:
            self.stream.write(line)
            self._last = line
            self._open = True
        if frac >= 1.0:
            self.close()
        self.stream.flush()

    def close(self) -> None:
        """End the bar's line (a step that stops early, e.g. a converged optimisation, never reports 100 %),
        so that what is printed next starts on a line of its own."""
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False
