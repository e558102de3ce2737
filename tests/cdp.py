"""A minimal Chrome DevTools Protocol client, shared by the browser test (``tests/test_browser.py``) and the
walk-through script (``scripts/walkthrough.py``): a free port, waiting for an HTTP endpoint, and a page
connection that sends commands and evaluates JavaScript. Each user adds its own gestures on top."""

from __future__ import annotations

import base64
import json
import socket
import time
import urllib.request


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

    async def screenshot(self) -> bytes:
        """PNG bytes of the viewport."""
        data = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=False)
        return base64.b64decode(data["data"])
