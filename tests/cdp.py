"""A minimal Chrome DevTools Protocol client, shared by the browser tests (``tests/test_browser*.py``) and the
walk-through script (``scripts/walkthrough.py``): a free port, waiting for an HTTP endpoint, a page
connection that sends commands and evaluates JavaScript, and (for the tests) a served dashboard with a
headless Chromium beside it. Each user adds its own gestures on top."""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float) -> str:
    """The body of ``url`` once it answers (polling every 0.3 s); TimeoutError after ``timeout`` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.read().decode()
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(url)


class CdpPage:
    """One page target over a ``websockets`` connection. Events that arrive while waiting for a reply are
    kept in ``events`` when they are console or exception reports (the walk-through lists them)."""

    KEEP_EVENTS = ("Runtime.exceptionThrown", "Log.entryAdded")

    def __init__(self, ws):
        self.ws = ws
        self.n = 0
        self.events: list[dict] = []

    async def send(self, method: str, **params):
        self.n += 1
        await self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(await self.ws.recv())
            if msg.get("id") == self.n:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if msg.get("method") in self.KEEP_EVENTS:
                self.events.append(msg)

    async def js(self, expr: str, check: bool = False):
        """The value of a JavaScript expression (promises awaited); ``check`` raises on a JS exception."""
        r = await self.send("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if check and "exceptionDetails" in r:
            raise RuntimeError(f"JS error: {r['exceptionDetails'].get('text')} in {expr[:120]!r}")
        return r.get("result", {}).get("value")

    async def text(self) -> str:
        return await self.js("document.body ? document.body.innerText : ''") or ""

    async def screenshot(self) -> bytes:
        """PNG bytes of the viewport."""
        data = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=False)
        return base64.b64decode(data["data"])


@contextlib.contextmanager
def dashboard(script: Path, env: dict, cwd: Path, width: int = 1280, height: int = 800):
    """``streamlit run script`` on a free port and a headless Chromium: ``(app url, DevTools port)``. Both
    stop when the block ends, and the server's output is checked for tracebacks then (AssertionError)."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(port),
                               "--server.headless", "true", "--browser.gatherUsageStats", "false",
                               "--server.fileWatcherType", "none"],
                              cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    profile = Path(tempfile.mkdtemp(prefix="editscope-chromium-"))
    browser = None
    out = ""
    try:
        assert wait_http(f"http://127.0.0.1:{port}/_stcore/health", 60).strip() == "ok"
        browser = subprocess.Popen([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                                    "--disable-background-networking", "--disable-component-update",
                                    "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                                    "--remote-debugging-port=0", f"--window-size={width},{height}", "about:blank"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        active = profile / "DevToolsActivePort"
        deadline = time.time() + 30
        # Chromium creates the file before it writes the port into it: wait for the content.
        while not (active.exists() and active.read_text().strip()) and time.time() < deadline:
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}", int(active.read_text().split()[0])
    finally:
        if browser is not None:
            browser.terminate()
            browser.wait(10)
        server.terminate()
        try:
            out = server.communicate(timeout=10)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(profile, ignore_errors=True)
    assert "Traceback" not in out, out[-3000:]


@contextlib.asynccontextmanager
async def connect(cdp_port: int, cls: type[CdpPage] = CdpPage, width: int = 1280, height: int = 800):
    """The browser's first page as a ``cls``, connected and sized ``width`` x ``height``."""
    import websockets

    targets = json.loads(wait_http(f"http://127.0.0.1:{cdp_port}/json/list", 20))
    ws_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
    async with websockets.connect(ws_url, max_size=64 * 2**20) as ws:
        page = cls(ws)
        await page.send("Page.enable")
        await page.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                        mobile=False)
        yield page
