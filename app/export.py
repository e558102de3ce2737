"""Charts as PNG files: plotly figures rendered by ``kaleido`` (v1), which drives a Chromium-family browser.

kaleido finds a browser through ``BROWSER_PATH``; EditScope points it at Debian's ``chromium`` (or another
Chromium on PATH) when the variable is not set. One browser process is started on the first export and kept
for the server's life (kaleido's sync server), so later exports take well under a second. Without kaleido or
a browser, :func:`status` says why and the page offers the HTML files only.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import threading

log = logging.getLogger("editscope.export")

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
SCALE = 2  # pixels per CSS pixel: sharp on slides and papers

_lock = threading.Lock()
_started = False


def _browser() -> str | None:
    path = os.environ.get("BROWSER_PATH")
    if path and os.path.isfile(path):
        return path
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


def status() -> tuple[bool, str]:
    """``(PNG export works, why not)``."""
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return False, "PNG export needs the kaleido package (pip install -r requirements.txt)"
    if _browser() is None:
        return False, "PNG export needs Chromium (Debian: apt-get install chromium) or BROWSER_PATH set to a Chrome"
    return True, ""


def _start() -> None:
    global _started
    import kaleido

    with _lock:
        if _started:
            return
        os.environ.setdefault("BROWSER_PATH", _browser() or "")
        kaleido.start_sync_server(silence_warnings=True)
        atexit.register(kaleido.stop_sync_server, silence_warnings=True)
        _started = True


def png(fig, width: int | None = None, height: int | None = None) -> bytes:
    """The figure as PNG bytes (its own layout size unless ``width``/``height`` are given)."""
    ok, why = status()
    if not ok:
        raise RuntimeError(why)
    _start()
    import kaleido

    opts = {"format": "png", "scale": SCALE}
    w = width or fig.layout.width or 1000
    h = height or fig.layout.height or 450
    opts.update(width=w, height=h)
    return kaleido.calc_fig_sync(fig, opts=opts)


def png_maker(fig):
    """A zero-argument callable for ``st.download_button(data=...)``: the PNG is rendered only when the
    button is clicked (on Streamlit's download thread), never on every rerun of the page."""

    def make() -> bytes:
        try:
            return png(fig)
        except Exception:  # noqa: BLE001 - a failed export must not take the page down; the log says why
            log.exception("PNG export failed")
            raise

    return make
