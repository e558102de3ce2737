"""Real browser: serve the dashboard with a tiny model (tests/tiny_app.py), drive the Edit page in headless Chromium over the
DevTools protocol, and screenshot every page into reports/screenshots/."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from cdp import CdpPage, free_port, wait_http

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
# EDITSCOPE_SCREENSHOTS moves the screenshots elsewhere (e.g. while someone else works in reports/).
SHOTS = Path(os.environ.get("EDITSCOPE_SCREENSHOTS") or ROOT / "reports" / "screenshots")
pytestmark = pytest.mark.browser


class Page(CdpPage):
    """The shared CDP page plus what this test needs: read text, navigate, click, screenshot."""

    async def text(self) -> str:
        return await self.js("document.body ? document.body.innerText : ''") or ""

    async def wait_text(self, needle: str, timeout: float = 60, gone: str | None = None) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            t = await self.text()
            if needle in t and (gone is None or gone not in t):
                return t
            await asyncio.sleep(0.3)
        raise TimeoutError(f"{needle!r} did not appear; page says: {(await self.text())[:600]!r}")

    async def goto(self, url: str):
        await self.send("Page.navigate", url=url)

    async def click_button(self, label: str, timeout: float = 15) -> bool:
        # The script may still be rerunning (widgets re-mount); retry until the button is there.
        deadline = time.time() + timeout
        while time.time() < deadline:
            if await self._click(label):
                return True
            await asyncio.sleep(0.3)
        return False

    async def _click(self, label: str) -> bool:
        return await self.js(
            "(() => { const b = [...document.querySelectorAll('button')].find(x => x.innerText.trim() === "
            f"{json.dumps(label)}); if (b) {{ b.click(); return true; }} return false; }})()")

    async def shot(self, name: str):
        SHOTS.mkdir(parents=True, exist_ok=True)
        (SHOTS / f"{name}.png").write_bytes(await self.screenshot())


async def _drive(cdp_port: int, app: str) -> dict:
    import websockets

    targets = json.loads(wait_http(f"http://127.0.0.1:{cdp_port}/json/list", 20))
    ws_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
    seen = {}
    async with websockets.connect(ws_url, max_size=64 * 2**20) as ws:
        p = Page(ws)
        await p.send("Page.enable")
        await p.send("Emulation.setDeviceMetricsOverride", width=1280, height=800, deviceScaleFactor=1, mobile=False)
        # The Edit page is the default page (served at /); FT-L needs no layer statistics, which keeps
        # this test fast on a fresh machine.
        await p.goto(f"{app}/?method=ft_l&fact=P276:louvre")
        await p.wait_text("Run edit", 90)
        await p.shot("01_edit_form")
        assert await p.click_button("Run edit")
        await p.wait_text("Scorecard", 120)
        seen["edit"] = await p.wait_text("Neighbour KL", 30)
        # Metric labels are not part of innerText (they sit in tooltip wrappers); read the DOM's leaves.
        # Streamlit may still be re-mounting the scorecard when the heading is there: poll briefly.
        deadline = time.time() + 30
        while True:
            seen["metrics"] = await p.js("[...document.querySelectorAll('[data-testid=\"stMetric\"] *')]"
                                         ".filter(e => e.children.length === 0).map(e => e.textContent.trim())"
                                         ".filter(t => t.length > 0)")
            if "Seconds" in (seen["metrics"] or []) or time.time() > deadline:
                break
            await asyncio.sleep(0.5)
        # Metric labels are links to their definitions (resolved against the page's own URL).
        seen["metric_links"] = await p.js("[...document.querySelectorAll('[data-testid=\"stMetric\"] a')]"
                                          ".map(a => [a.textContent.trim(), a.href])")
        await asyncio.sleep(1.5)  # let plotly draw
        await p.shot("02_edit_result")
        await p.js("window.scrollTo(0, document.body.scrollHeight / 2)")
        await p.js("document.querySelector('section.main, [data-testid=\"stMain\"]')?.scrollTo(0, 1400)")
        await asyncio.sleep(1.0)
        await p.shot("03_edit_result_charts")
        for i, (path, needle) in enumerate([("compare", "Compare methods"), ("sequential", "Sequential edits"),
                                            ("pitfalls", "Pitfall benchmarks"), ("methods", "Neighbourhood score"),
                                            ("generate", "Generate")], start=4):
            await p.goto(f"{app}/{path}")
            seen[path] = await p.wait_text(needle, 60)
            await asyncio.sleep(1.0)
            await p.shot(f"{i:02d}_{path}")
        # Following a definition link: the Methods page opens scrolled to that metric's heading.
        await p.goto(f"{app}/methods#nkl")
        await p.wait_text("Neighbourhood score", 60)
        deadline = time.time() + 15
        while time.time() < deadline:
            seen["nkl_top"] = await p.js("document.getElementById('nkl')?.getBoundingClientRect().top")
            if seen["nkl_top"] is not None and seen["nkl_top"] < 300:
                break
            await asyncio.sleep(0.5)
    return seen


def test_dashboard_in_headless_chromium(tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (CI installs Debian's chromium; apt-get install chromium)")
    port = free_port()
    env = {**os.environ, "EDITSCOPE_TEST_TINY_LAYERS": "10",
           "EDITSCOPE_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "tests" / "tiny_app.py"),
                               "--server.port", str(port), "--server.headless", "true",
                               "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    profile = Path(tempfile.mkdtemp(prefix="editscope-chromium-"))
    browser = None
    try:
        assert wait_http(f"http://127.0.0.1:{port}/_stcore/health", 60).strip() == "ok"
        browser = subprocess.Popen([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                                    "--disable-background-networking", "--disable-component-update",
                                    "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                                    "--remote-debugging-port=0", "--window-size=1280,800", "about:blank"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        active = profile / "DevToolsActivePort"
        deadline = time.time() + 30
        while not active.exists() and time.time() < deadline:
            time.sleep(0.2)
        cdp_port = int(active.read_text().split()[0])
        seen = asyncio.run(_drive(cdp_port, f"http://127.0.0.1:{port}"))
    finally:
        if browser is not None:
            browser.terminate()
            browser.wait(10)
        server.terminate()
        try:
            out = server.communicate(timeout=10)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            server.kill()
            out = ""
        shutil.rmtree(profile, ignore_errors=True)
    assert "Traceback" not in out, out[-3000:]
    assert {"Efficacy", "Generalisation", "Neighbourhood score", "NKL", "Seconds"} <= set(seen["metrics"]), seen["metrics"]
    assert ["NKL", f"http://127.0.0.1:{port}/methods#nkl"] in seen["metric_links"], seen["metric_links"]
    assert len(seen["metric_links"]) == 7
    assert seen["nkl_top"] is not None and 0 <= seen["nkl_top"] < 300, seen["nkl_top"]  # scrolled to the heading
    assert "internal error" not in seen["edit"]
    assert "Page not found" not in seen["edit"]
    assert "Table 3 layout" not in seen["pitfalls"]  # nothing run there: the page waits for the user
    for name in ("02_edit_result", "04_compare", "08_generate"):
        assert (SHOTS / f"{name}.png").stat().st_size > 10_000
