"""Real browser: the "Where is the fact?" page in headless Chromium, a catalog fact traced before and after
an edit and a free-form fact, with screenshots (EDITSCOPE_SCREENSHOTS, default reports/screenshots/trace).

EDITSCOPE_TRACE_MODEL=gemma-3-270m serves the real default model instead of the tiny ones (minutes)."""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.parse
from pathlib import Path

import pytest
from cdp import CHROMIUM, CdpPage, connect, dashboard

ROOT = Path(__file__).resolve().parents[1]
SHOTS = Path(os.environ.get("EDITSCOPE_SCREENSHOTS") or ROOT / "reports" / "screenshots") / "trace"
MODEL = os.environ.get("EDITSCOPE_TRACE_MODEL", "")
pytestmark = pytest.mark.browser
# JS: the plain-text titles of the plotly charts on the page
TITLES = ("[...document.querySelectorAll('.js-plotly-plot')].map(g => String((g.layout && g.layout.title && "
          "(g.layout.title.text || g.layout.title)) || '').replace(/<[^>]+>/g, ''))")


class Page(CdpPage):
    async def wait_for(self, expr: str, timeout: float, what: str):
        deadline = time.time() + timeout
        while time.time() < deadline:
            v = await self.js(expr)
            if v:
                return v
            await asyncio.sleep(0.5)
        raise TimeoutError(f"{what}; page says: {(await self.text())[:800]!r}")

    async def click(self, selector_js: str, what: str, timeout: float = 30):
        await self.wait_for(f"(() => {{ const e = {selector_js}; if (e) {{ e.click(); return true; }} "
                            "return false; })()", timeout, what)

    async def button(self, label: str):
        await self.click(f"[...document.querySelectorAll('button')].find(b => b.innerText.trim() === "
                         f"{json.dumps(label)})", f"button {label!r}")

    async def charts(self, n: int, timeout: float) -> list[str]:
        """The chart titles once the script has finished and exactly ``n`` charts stayed on the page for 2 s
        (during a rerun the previous run's charts are still there)."""
        deadline = time.time() + timeout
        stable = None
        while time.time() < deadline:
            titles = await self.js(TITLES) or []
            running = await self.js("!!document.querySelector('[data-testid=stStatusWidget]')")
            if len(titles) == n and not running:
                stable = stable or time.time()
                if time.time() - stable >= 2.0:
                    return titles
            else:
                stable = None
            await asyncio.sleep(0.5)
        raise TimeoutError(f"{n} charts; page shows {await self.js(TITLES)}")

    async def scroll_to(self, text: str):
        await self.js(f"[...document.querySelectorAll('h2, h3, p, strong')].find(e => e.innerText.includes("
                      f"{json.dumps(text)}))?.scrollIntoView({{block: 'start'}})")
        await asyncio.sleep(1.0)

    async def scroll_chart(self, title: str):
        await self.js("[...document.querySelectorAll('.js-plotly-plot')].find(g => g.layout && g.layout.title && "
                      f"String(g.layout.title.text || g.layout.title) === {json.dumps(title)})"
                      "?.scrollIntoView({block: 'start'})")
        await asyncio.sleep(1.0)

    async def shot(self, name: str):
        SHOTS.mkdir(parents=True, exist_ok=True)
        (SHOTS / f"{name}.png").write_bytes(await self.screenshot())


async def _drive(cdp_port: int, app: str, method: str, wait: float) -> dict:
    seen: dict = {}
    async with connect(cdp_port, Page, 1280, 900) as p:
        await p.send("Page.navigate", url=f"{app}/trace?fact=P276:louvre&method={method}")
        await p.wait_for("document.body && document.body.innerText.includes('Where is the fact?')", 120, "the page")
        await p.button("Trace")
        seen["catalog"] = await p.charts(8, wait)
        seen["catalog_text"] = await p.text()
        await p.scroll_to("Before the edit")
        await p.shot("01_catalog_heatmaps")
        await p.scroll_chart("MLP output")
        await p.shot("02_catalog_heatmaps_lower")
        await p.scroll_to("Logit lens")
        await p.shot("03_catalog_logit_lens")
        # A free-form fact, from a link (the form itself starts empty).
        query = urllib.parse.urlencode({"prompt": "The Louvre is located in", "subject": "The Louvre",
                                        "old": "Paris", "new": "London", "method": method})
        await p.send("Page.navigate", url=f"{app}/trace?{query}")
        await p.wait_for("[...document.querySelectorAll('input')].some(i => i.value === 'The Louvre')", 120,
                         "the free-form fields")
        await asyncio.sleep(1.0)
        await p.button("Trace")
        await p.wait_for("document.body.innerText.includes('The Louvre is located in** →') || "
                         "[...document.querySelectorAll('strong')].some(s => s.innerText.startsWith('The Louvre is "
                         "located in') && !s.innerText.includes('city'))", wait, "the free-form result")
        seen["free"] = await p.charts(8, wait)
        seen["free_text"] = await p.text()
        await p.scroll_to("Before the edit")
        await p.shot("04_free_form_heatmaps")
        await p.scroll_to("Logit lens")
        await p.shot("05_free_form_logit_lens")
    return seen


def test_trace_page_in_headless_chromium(tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    real = bool(MODEL)
    env = {**os.environ, "EDITSCOPE_TEST_TINY_LAYERS": "4", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if not real:
        env["EDITSCOPE_HOME"] = str(tmp_path / "home")
    script = ROOT / "app" / "main.py" if real else ROOT / "tests" / "tiny_app.py"
    with dashboard(script, env, ROOT, 1280, 900) as (app, cdp_port):
        seen = asyncio.run(_drive(cdp_port, app, "rome" if real else "ft_l", 1800 if real else 300))
    for key in ("catalog", "free"):
        titles = seen[key]
        assert sorted(titles) == sorted(["Residual stream", "MLP output", "Attention output"] * 2
                                        + [t for t in titles if t.startswith("Lens: ")]), titles
        assert sum(t.startswith("Lens: ") for t in titles) == 2, titles
        assert "internal error" not in seen[f"{key}_text"]
    assert "After the" in seen["catalog_text"]
    for name in ("01_catalog_heatmaps", "03_catalog_logit_lens", "04_free_form_heatmaps"):
        assert (SHOTS / f"{name}.png").stat().st_size > 10_000
