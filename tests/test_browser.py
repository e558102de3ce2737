"""Real browser: serve the dashboard with a tiny model (tests/tiny_app.py), drive the Edit page in headless Chromium over the
DevTools protocol, and screenshot every page into reports/screenshots/."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest
from cdp import CHROMIUM, CdpPage, connect, dashboard

ROOT = Path(__file__).resolve().parents[1]
# EDITSCOPE_SCREENSHOTS moves the screenshots elsewhere (e.g. while someone else works in reports/).
SHOTS = Path(os.environ.get("EDITSCOPE_SCREENSHOTS") or ROOT / "reports" / "screenshots")
pytestmark = pytest.mark.browser


class Page(CdpPage):
    """The shared CDP page plus what this test needs: read text, navigate, click, screenshot."""

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


def _page(cdp_port: int):
    return connect(cdp_port, Page)


async def _drive(cdp_port: int, app: str) -> dict:
    seen = {}
    async with _page(cdp_port) as p:
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


def served(tmp_path):
    """The tiny-model dashboard and a headless Chromium: ``(app url, DevTools port)``."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (CI installs Debian's chromium; apt-get install chromium)")
    env = {**os.environ, "EDITSCOPE_TEST_TINY_LAYERS": "10",
           "EDITSCOPE_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return dashboard(ROOT / "tests" / "tiny_app.py", env, ROOT)


def test_dashboard_in_headless_chromium(tmp_path):
    with served(tmp_path) as (app, cdp_port):
        seen = asyncio.run(_drive(cdp_port, app))
    assert {"Efficacy", "Generalisation", "Neighbourhood score", "NKL", "Seconds"} <= set(seen["metrics"]), seen["metrics"]
    assert ["NKL", f"{app}/methods#nkl"] in seen["metric_links"], seen["metric_links"]
    assert len(seen["metric_links"]) == 7
    assert seen["nkl_top"] is not None and 0 <= seen["nkl_top"] < 300, seen["nkl_top"]  # scrolled to the heading
    assert "internal error" not in seen["edit"]
    assert "Page not found" not in seen["edit"]
    assert "Table 3 layout" not in seen["pitfalls"]  # nothing run there: the page waits for the user
    for name in ("02_edit_result", "04_compare", "08_generate"):
        assert (SHOTS / f"{name}.png").stat().st_size > 10_000


# JS: the data of the plotly chart whose title starts with the given text
# (Streamlit's theme wraps titles in <b>: the tags are cut before comparing.)
CHART = ("(() => {{ const g = [...document.querySelectorAll('.js-plotly-plot')].find(g => String((g.layout && "
         "g.layout.title && (g.layout.title.text || g.layout.title)) || '').replace(/<[^>]+>/g, '')"
         ".startsWith({title}));"
         " return g ? g.data.map(t => ({{name: t.name, x: t.x, y: t.y}})) : null; }})()")


async def _type(p: Page, label: str, value: str) -> None:
    """Type into a text input as a user does: focus, replace its text, press Enter (Streamlit commits then)."""
    sel = json.dumps(f"input[aria-label={json.dumps(label)}]")
    await p.js(f"(() => {{ const i = document.querySelector({sel}); i.focus(); i.select(); }})()")
    await p.send("Input.insertText", text=value)
    for kind in ("keyDown", "keyUp"):
        await p.send("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter", windowsVirtualKeyCode=13)
    await asyncio.sleep(0.8)


async def _drive_free_form(cdp_port: int, app: str) -> dict:
    seen = {}
    async with _page(cdp_port) as p:
        # FT-L: no layer statistics to compute on a fresh machine; cat=0: the scan's pool is the fact's own
        # prompts (the whole catalog's unedited side would be read first on this fresh home: minutes).
        await p.goto(f"{app}/?method=ft_l&cat=0")
        await p.wait_text("Run edit", 90)
        await p.js("[...document.querySelectorAll('label')].find(l => l.innerText.trim() === 'Free-form').click()")
        await p.wait_text("Try an example", 30)
        for label, value in (("Prompt (use {} for the subject, or write the subject out)", "The Louvre is located in"),
                             ("Subject", "The Louvre"), ("Current answer (empty: the model's own answer)", "Paris"),
                             ("New target", "London")):
            await _type(p, label, value)
        seen["form"] = await p.wait_text("neighbours built from the catalog", 60)
        await p.shot("09_free_form_form")
        assert await p.click_button("Run edit")
        # "prompts scanned in": the finished scan's line (while it runs the line says "N of M prompts scanned").
        seen["result"] = await p.wait_text("prompts scanned in", 300)
        deadline = time.time() + 30
        while time.time() < deadline:
            # Bring the chart into view: plotly draws a chart when it is on screen.
            await p.js("[...document.querySelectorAll('h3')].find(h => h.innerText.startsWith('Neighbour KL'))"
                       "?.scrollIntoView({block: 'start'})")
            seen["nkl"] = await p.js(CHART.format(title=json.dumps("Neighbour KL per prompt")))
            if seen["nkl"]:
                break
            await asyncio.sleep(0.5)
        seen["titles"] = await p.js("[...document.querySelectorAll('.js-plotly-plot')].map(g => String((g.layout && "
                                    "g.layout.title && (g.layout.title.text || g.layout.title)) || ''))")
        await asyncio.sleep(1.0)
        await p.shot("10_free_form_result")
        seen["impact"] = await p.js(CHART.format(title=json.dumps("The ")))
    return seen


def test_a_free_form_edit_end_to_end_in_headless_chromium(tmp_path):
    """Type a fact that is not a catalog fact's own, run it, and read the neighbour-KL chart the page drew."""
    with served(tmp_path) as (app, cdp_port):
        seen = asyncio.run(_drive_free_form(cdp_port, app))
    assert "internal error" not in seen["result"] and "no neighbourhood prompts" not in seen["result"]
    assert seen["nkl"], (seen["titles"], seen["result"][-1500:])
    plain = next(t for t in seen["nkl"] if t["name"] == "plain")
    distracted = next(t for t in seen["nkl"] if t["name"] == "distracted")
    assert any("Eiffel Tower" in x for x in plain["x"]), plain["x"]  # a catalog neighbour with the same answer
    assert len(plain["y"]) == len(distracted["y"]) >= 3
    assert all(isinstance(v, (int, float)) and v >= 0 for v in plain["y"] + distracted["y"])
    assert seen["impact"] and seen["impact"][0]["x"]  # the impact scan's most affected prompts
