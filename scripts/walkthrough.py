"""A scripted "new user walk-through" of the EditScope dashboard (issue #7).

Serves the dashboard, drives it in headless Chromium over the DevTools protocol at 1280x800 the way a
first-time user would (typing, opening drop-downs, clicking), and writes screenshots, the page text and a
markdown log with timings and every problem it noticed:

    .venv/bin/python scripts/walkthrough.py --out reports/walkthrough          # the default model
    .venv/bin/python scripts/walkthrough.py --out /tmp/walk --tiny             # a tiny random model (dev)

Steps: (1) open the dashboard; (2) Edit page, Free-form: type a fact the catalog does not have (the Mona
Lisa → London), read the model's own answer and the neighbourhood built before the run, run ROME and time
each view as it appears (texts, scorecard, neighbour KL, the "Big Ben" view, the impact scan), then open
the run's shared link; (3) the catalog Louvre fact with London typed as its target; (4) Compare page: the
same fact with ROME, MEMIT and FT-L; (5) Sequential page: MEMIT, 20 edits, evaluated every 5;
(6) Guided tour: every step run once with a screenshot, then the whole tour again from the cache
(``--skip edit compare sequential`` walks the tour alone).

By default the server gets a fresh ``EDITSCOPE_HOME`` whose models, GGUF files, layer statistics, context
prefixes and impact-scan cache are links into ``~/.cache/editscope`` (what ``make run`` prepares), while the
results caches start empty, so every run is really computed and timed.
``--fresh-stats`` leaves out the statistics link too; ``--home DIR`` uses DIR as it is.

Only the standard library and ``websockets`` (the browser test's CDP client) are used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from cdp import CdpPage, free_port, wait_http  # noqa: E402  (the browser test's client; see tests/cdp.py)
WIDTH, HEIGHT = 1280, 800
# JS: the plain-text title of the plotly chart ``g``
TITLE = "String((g.layout && g.layout.title && (g.layout.title.text || g.layout.title)) || '').replace(/<[^>]+>/g, '')"
# JS: a button with this exact label is on the page
BUTTON = "[...document.querySelectorAll('button')].some(b => b.innerText.trim() === {!r})"


# ---- small helpers ---------------------------------------------------------------------------------
def md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


class Log:
    """Timings, recorded values, problems and screenshots of the walk, rendered to markdown at the end."""

    def __init__(self, out: Path):
        self.out = out
        self.t0 = time.time()
        self.steps: list[dict] = []  # {"name", "seconds", "ok", "note"}
        self.sections: list[tuple[str, list[str]]] = []  # heading, markdown lines
        self.problems: list[dict] = []  # {"where", "what", "shots"}
        self.data: dict = {}
        self.current = ""  # the step being walked (for problems found by shared helpers)

    def step(self, name: str, seconds: float, ok: bool = True, note: str = "") -> None:
        self.steps.append({"name": name, "seconds": round(seconds, 1), "ok": ok, "note": note})
        print(f"[{time.time() - self.t0:7.1f}s] {'ok ' if ok else 'FAIL'} {name}: {seconds:.1f} s {note}", flush=True)

    def section(self, heading: str) -> list[str]:
        lines: list[str] = []
        self.sections.append((heading, lines))
        return lines

    def problem(self, where: str, what: str, *shots: str) -> None:
        # The same finding on two pages is reported once per page, never twice on one.
        if any(p["where"] == where and p["what"] == what for p in self.problems):
            return
        self.problems.append({"where": where, "what": what, "shots": [s for s in shots if s]})
        print(f"  problem [{where}]: {what}", flush=True)


# ---- the DevTools protocol client ------------------------------------------------------------------
class Page(CdpPage):
    """The shared CDP page (``tests/cdp.py``) plus the few gestures a user makes: click, type, pick from a
    drop-down."""

    def __init__(self, ws, shots: Path):
        super().__init__(ws)
        self.shots = shots

    async def js(self, expr: str, check: bool = True):
        return await super().js(expr, check)

    async def main_text(self) -> str:
        try:
            return await self.js("(document.querySelector('[data-testid=stMain]') || document.body || {}).innerText"
                                 " || ''") or ""
        except RuntimeError:
            return ""

    async def wait_for(self, expr: str, timeout: float, what: str, every: float = 0.3):
        """Poll a JS expression until it is truthy; returns its value."""
        deadline = time.time() + timeout
        while True:
            try:
                v = await self.js(expr)
            except RuntimeError:  # the document is being replaced (navigation, rerun)
                v = None
            if v:
                return v
            if time.time() > deadline:
                raise TimeoutError(f"{what} (after {timeout:.0f} s); page says: {(await self.main_text())[:500]!r}")
            await asyncio.sleep(every)

    async def wait_text(self, needle: str, timeout: float) -> str:
        return await self.wait_for(f"(() => {{ const t = (document.querySelector('[data-testid=stMain]') || "
                                   f"document.body || {{}}).innerText || '';"
                                   f" return t.includes({json.dumps(needle)}) ? t : ''; }})()",
                                   timeout, f"text {needle!r}")

    async def settle(self, quiet: float = 1.0, timeout: float = 60) -> None:
        """Wait until Streamlit says the script is not running and the page text stopped changing."""
        deadline = time.time() + timeout
        last, since = None, time.time()
        while time.time() < deadline:
            running = await self.js("!!document.querySelector('[data-testid=stStatusWidget]')")
            text = await self.main_text()
            if text != last or running:
                last, since = text, time.time()
            elif time.time() - since >= quiet:
                return
            await asyncio.sleep(0.25)

    # gestures
    async def _center(self, find_js: str):
        """Scroll the element found by ``find_js`` (an expression) into view; its centre in the viewport."""
        return await self.js(f"(() => {{ const e = {find_js}; if (!e) return null;"
                             " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
                             " return [r.x + r.width / 2, r.y + r.height / 2]; })()")

    async def mouse_click(self, find_js: str, what: str, timeout: float = 20) -> None:
        deadline = time.time() + timeout
        while True:
            xy = await self._center(find_js)
            if xy:
                break
            if time.time() > deadline:
                raise TimeoutError(f"{what}: not on the page")
            await asyncio.sleep(0.3)
        await asyncio.sleep(0.15)  # scrollIntoView may animate
        xy = await self._center(find_js) or xy
        x, y = xy
        await self.send("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        await self.send("Input.dispatchMouseEvent", type="mousePressed", x=x, y=y, button="left", clickCount=1)
        await self.send("Input.dispatchMouseEvent", type="mouseReleased", x=x, y=y, button="left", clickCount=1)

    async def key(self, key: str, code: int) -> None:
        for kind in ("keyDown", "keyUp"):
            await self.send("Input.dispatchKeyEvent", type=kind, key=key, code=key, windowsVirtualKeyCode=code,
                            nativeVirtualKeyCode=code)

    async def type_into(self, label: str, text: str, enter: bool = True) -> None:
        """Click a text/number input by its label, replace its content by typing, press Enter."""
        find = f"document.querySelector('input[aria-label={json.dumps(label)}]')"
        await self.mouse_click(find, f"input {label!r}")
        await self.js(f"{find}.select()")
        await self.send("Input.insertText", text=text)
        if enter:
            await self.key("Enter", 13)

    @staticmethod
    def _options(label: str) -> str:
        """JS: the option elements of the open drop-down labelled ``label``."""
        return f"[...document.querySelectorAll('[role=listbox][aria-label={json.dumps(label)}] [role=option]')]"

    async def combo_options(self, label: str) -> list[str]:
        return await self.js(self._options(label) + ".map(o => o.innerText.trim())") or []

    async def combo_value(self, label: str) -> str | None:
        return await self.js(f"document.querySelector('input[aria-label={json.dumps(label)}]')?.value")

    async def open_combo(self, label: str) -> list[str]:
        await self.mouse_click(f"document.querySelector('input[aria-label={json.dumps(label)}]')",
                               f"drop-down {label!r}")
        try:
            await self.wait_for(self._options(label) + ".length > 0", 5, f"options of {label!r}")
        except TimeoutError:
            return []
        return await self.combo_options(label)

    async def choose(self, label: str, option: str, contains: bool = False) -> bool:
        """Open a drop-down and click the option with this text (or containing it); False if absent."""
        options = await self.open_combo(label)
        match = next((o for o in options if (option in o if contains else o == option)), None)
        if match is None:
            await self.key("Escape", 27)
            return False
        await self.mouse_click(self._options(label) + f".find(o => o.innerText.trim() === {json.dumps(match)})",
                               f"option {match!r}")
        await self.settle()
        return True

    async def click_button(self, label: str, timeout: float = 20) -> None:
        # The first line only: a popover's button adds its icon's name ("expand_more") on a line of its own.
        await self.mouse_click("[...document.querySelectorAll('button')]"
                               f".find(b => b.innerText.trim().split('\\n')[0].trim() === {json.dumps(label)})",
                               f"button {label!r}", timeout)

    async def click_label(self, text: str) -> None:
        """Click a radio option / checkbox by its visible label text."""
        await self.mouse_click("[...document.querySelectorAll('label')]"
                               f".find(l => l.innerText.trim() === {json.dumps(text)})", f"label {text!r}")
        await self.settle()

    async def checkbox(self, label: str, value: bool) -> None:
        find = f"document.querySelector('input[type=checkbox][aria-label={json.dumps(label)}]')"
        if bool(await self.js(f"{find}?.checked")) != value:
            await self.mouse_click(f"{find}?.closest('label')", f"checkbox {label!r}")
            await self.settle()

    async def scroll_to(self, needle: str, block: str = "start") -> bool:
        """Scroll the first heading/element whose own text is ``needle`` to the top of the viewport."""
        return bool(await self.js(
            "(() => { const e = [...document.querySelectorAll('[data-testid=stMain] h1, [data-testid=stMain] h2, "
            "[data-testid=stMain] h3, [data-testid=stMain] p, [data-testid=stMain] summary')]"
            f".find(x => x.innerText.trim().startsWith({json.dumps(needle)}));"
            f" if (!e) return false; e.scrollIntoView({{block: {json.dumps(block)}}}); return true; }})()"))

    async def scroll_top(self) -> None:
        await self.js("document.querySelector('[data-testid=stMain]')?.scrollTo(0, 0)")

    async def viewport(self, height: int) -> None:
        await self.send("Emulation.setDeviceMetricsOverride", width=WIDTH, height=height, deviceScaleFactor=1,
                        mobile=False)

    async def shot(self, name: str, full: bool = False) -> str:
        """Screenshot the viewport, or (``full``) the whole scrollable page: the viewport is made as tall
        as the main area's content for the capture (Streamlit scrolls an inner element, not the body)."""
        if full:
            h = await self.js("(() => { const m = document.querySelector('[data-testid=stMain]');"
                              " return m ? m.scrollHeight : document.body.scrollHeight; })()") or HEIGHT
            h = int(min(max(h, HEIGHT), 16000))
            await self.viewport(h)
            await asyncio.sleep(2.0)  # let the charts re-lay-out
            h2 = await self.js("document.querySelector('[data-testid=stMain]')?.scrollHeight") or h
            if h2 > h:
                await self.viewport(int(min(h2, 16000)))
                await asyncio.sleep(1.0)
        png = await self.screenshot()
        if full:
            await self.viewport(HEIGHT)
            await asyncio.sleep(1.0)
        self.shots.mkdir(parents=True, exist_ok=True)
        fname = f"{name}.png"
        (self.shots / fname).write_bytes(png)
        return fname

    # reading the page
    async def alerts(self) -> list[tuple[str, str]]:
        """(kind, text) of every alert box, exception and error-state status box on the page."""
        return await self.js(
            "[...document.querySelectorAll('[data-testid=stMain] [data-testid^=stAlertContent], "
            "[data-testid=stMain] [data-testid=stException]')].map(e => [e.dataset.testid.replace('stAlertContent', '')"
            ".toLowerCase(), e.innerText.trim().slice(0, 400)])") or []

    async def metrics(self) -> list[dict]:
        return await self.js(
            "[...document.querySelectorAll('[data-testid=stMain] [data-testid=stMetric]')].map(m => ({"
            "label: m.querySelector('[data-testid=stMetricLabel]')?.innerText.trim(),"
            "value: m.querySelector('[data-testid=stMetricValue]')?.innerText.trim(),"
            "delta: m.querySelector('[data-testid=stMetricDelta]')?.innerText.trim() || null}))") or []

    async def charts(self) -> list[dict]:
        """Title and traces (name, x, y, text) of every plotly chart: the numbers behind the pictures."""
        return await self.js(
            "[...document.querySelectorAll('[data-testid=stMain] .js-plotly-plot')].map(g => ({"
            f"title: {TITLE},"
            "traces: (g.data || []).map(t => ({name: t.name || '', type: t.type || '',"
            " x: Array.from(t.x || t.theta || []).slice(0, 60), y: Array.from(t.y || t.r || []).slice(0, 60),"
            " z: t.z ? Array.from(t.z).map(r => Array.from(r)) : undefined,"
            " text: t.text ? Array.from(t.text).slice(0, 60) : undefined}))}))") or []

    async def truncated(self) -> list[str]:
        """Texts cut off at this width (an ellipsis or hidden overflow with more text than room)."""
        return await self.js(
            "(() => { const out = []; for (const e of document.querySelectorAll('[data-testid=stMain] *')) {"
            " if (!e.innerText || e.children.length > 2) continue; const s = getComputedStyle(e);"
            " if ((s.textOverflow === 'ellipsis' || s.overflowX === 'hidden') && e.scrollWidth > e.clientWidth + 2"
            " && e.clientWidth > 0) out.push(e.innerText.trim().slice(0, 80)); }"
            " return [...new Set(out)]; })()") or []

    async def clipped_chart_text(self) -> list[str]:
        """Chart texts (titles, tick labels) that reach past the edge of their chart and are cut off."""
        return await self.js(
            "(() => { const out = [];"
            " for (const g of document.querySelectorAll('[data-testid=stMain] .js-plotly-plot')) {"
            " const svg = g.querySelector('svg.main-svg'); if (!svg) continue; const R = svg.getBoundingClientRect();"
            f" const title = {TITLE};"
            " const cut = [...g.querySelectorAll('text')].filter(t => { const r = t.getBoundingClientRect();"
            "  return r.width > 0 && (r.left < R.left - 1 || r.right > R.right + 1); }).map(t => t.textContent.trim());"
            " if (cut.length) out.push(`“${title.slice(0, 60)}”: ${[...new Set(cut)].slice(0, 6).join(' | ')}`); }"
            " return out; })()") or []

    async def horizontal_overflow(self) -> int:
        return await self.js("(() => { const m = document.querySelector('[data-testid=stMain]');"
                             " return m ? m.scrollWidth - m.clientWidth : 0; })()") or 0

    async def status_label(self, prefix: str) -> str | None:
        """The label of the st.status box that starts with ``prefix`` (e.g. 'Editing with rome')."""
        return await self.js(
            "(() => { const s = [...document.querySelectorAll('[data-testid=stMain] [data-testid=stExpander] summary')]"
            f".map(x => x.innerText.trim()).find(t => t.includes({json.dumps(prefix)}));"
            " return s ? s.replace(/^(check|error|close|stop|warning|expand_more|expand_less)\\s+/, '') : null; })()")

    async def progress_caption(self, prefix: str) -> str:
        return await self.js(
            "(() => { const d = [...document.querySelectorAll('[data-testid=stMain] [data-testid=stExpander]')]"
            f".find(x => (x.querySelector('summary')?.innerText || '').includes({json.dumps(prefix)}));"
            " if (!d) return ''; const bar = d.querySelector('[role=progressbar]');"
            " const pct = bar ? bar.getAttribute('aria-valuenow') : '';"
            " const cap = [...d.querySelectorAll('[data-testid=stCaptionContainer]')]"
            ".map(c => c.innerText.trim()).join(' ');"
            " return (pct ? pct + '% ' : '') + cap; })()") or ""


# ---- watching a long run ---------------------------------------------------------------------------
async def watch_run(p: Page, prefix: str, timeout: float, mid_shot: str | None, log: Log,
                    mid_after: float = 4.0, extra: tuple[str, str] | None = None) -> dict:
    """Wait for the status box ``prefix`` to end (— done / failed / stopped); record every progress
    message with its time, the longest stretch without a new message, and one screenshot mid-run."""
    t0 = time.time()
    timeline: list[tuple[float, str]] = []
    shot = None
    extra_shot = None
    label = None
    while time.time() - t0 < timeout:
        label = await p.status_label(prefix)
        cap = await p.progress_caption(prefix)
        if cap and (not timeline or timeline[-1][1] != cap):
            timeline.append((round(time.time() - t0, 1), cap))
        if label and re.search(r"—\s*(done|failed|stopped)", label):
            break
        if mid_shot and shot is None and time.time() - t0 > mid_after:
            shot = await p.shot(mid_shot)
            visible = await p.js(
                "(() => { const d = [...document.querySelectorAll('[data-testid=stMain] [data-testid=stExpander]')]"
                f".find(x => (x.querySelector('summary')?.innerText || '').includes({json.dumps(prefix)}));"
                " if (!d) return null; const r = d.getBoundingClientRect();"
                " return r.top < window.innerHeight && r.bottom > 0; })()")
            if visible is False:
                log.problem(log.current, f"while the run works, its progress box (“{prefix}…”) is below the fold "
                                         f"at {WIDTH}x{HEIGHT}: the screen shows no sign of progress without "
                                         "scrolling", shot)
        if extra and extra_shot is None and await p.js(extra[0]):
            await asyncio.sleep(1.0)
            extra_shot = await p.shot(extra[1])
        await asyncio.sleep(1.0)
    elapsed = time.time() - t0
    gaps = [(b[0] - a[0], a[1]) for a, b in zip(timeline, timeline[1:])]
    if timeline:
        gaps.append((elapsed - timeline[-1][0], timeline[-1][1]))
    longest = max(gaps, default=(elapsed, "(no progress message)"))
    outcome = "timeout"
    if label:
        m = re.search(r"—\s*(done|failed|stopped)", label)
        outcome = m.group(1) if m else "timeout"
    return {"seconds": elapsed, "outcome": outcome, "label": label, "timeline": timeline, "longest_gap": longest,
            "mid_shot": shot, "extra_shot": extra_shot}


def timeline_lines(run: dict, limit: int = 14) -> list[str]:
    tl = run["timeline"]
    if not tl:
        return ["- (no progress messages were seen)"]
    shown = tl if len(tl) <= limit else tl[: limit // 2] + [(None, "…")] + tl[-limit // 2:]
    return [f"- {'' if t is None else f'{t:6.1f} s'}  {md_escape(c)}" for t, c in shown]


async def check_page(p: Page, log: Log, where: str, shot: str) -> dict:
    """Errors and layout problems visible on the page now."""
    alerts = await p.alerts()
    for kind, text in alerts:
        if kind in ("error", "exception") or "internal error" in text or "Traceback" in text:
            log.problem(where, f"{kind} box on the page: “{text[:240]}”", shot)
    cut = await p.truncated()
    if cut:
        log.problem(where, f"text cut off at {WIDTH}x{HEIGHT}: " + "; ".join(f"“{c}”" for c in cut[:8]), shot)
    clipped = await p.clipped_chart_text()
    for c in clipped:
        log.problem(where, f"chart text cut off at the chart's edge at {WIDTH} px: {c}", shot)
    over = await p.horizontal_overflow()
    if over > 4:
        log.problem(where, f"the main area scrolls sideways by {over} px at {WIDTH} px width", shot)
    return {"alerts": alerts, "truncated": cut, "overflow": over}


def save_text(out: Path, name: str, text: str) -> str:
    (out / f"{name}.txt").write_text(text)
    return f"{name}.txt"


# ---- the walk ----------------------------------------------------------------------------------------
async def walk(cdp_port: int, app: str, args, log: Log) -> None:
    import websockets

    out = args.out
    targets = json.loads(wait_http(f"http://127.0.0.1:{cdp_port}/json/list", 20))
    ws_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
    async with websockets.connect(ws_url, max_size=256 * 2**20, ping_interval=None) as ws:
        p = Page(ws, out)
        await p.send("Page.enable")
        await p.send("Runtime.enable")
        await p.viewport(HEIGHT)
        for name, fn in (("edit", step_edit), ("compare", step_compare), ("sequential", step_sequential),
                         ("tour", step_tour)):
            if name in args.skip:
                continue
            t0 = time.time()
            log.current = name
            try:
                await fn(p, app, args, log)
            except Exception as exc:  # noqa: BLE001 - one failed step must not lose the others
                shot = await p.shot(f"{name}_FAILED")
                log.problem(name, f"the walk-through could not finish this step: {type(exc).__name__}: {exc}"[:600],
                            shot)
                log.step(f"{name} (failed)", time.time() - t0, ok=False, note=str(exc)[:200])
        js_errors = [e["params"].get("exceptionDetails", {}).get("text", "") for e in p.events
                     if e.get("method") == "Runtime.exceptionThrown"]
        log.data["browser_js_errors"] = js_errors
        if js_errors:
            log.problem("browser",
                        f"{len(js_errors)} uncaught JavaScript exception(s), e.g. “{js_errors[0][:200]}”")



TOUR_STEPS = 8


async def step_tour(p: Page, app: str, args, log: Log) -> None:
    """Guided tour: every step run once (a real search with real edits), a screenshot of each; then the
    whole tour again, which must come from the cache."""
    lines = log.section(f"Step 5: Guided tour, {args.tour_budget} facts per step, {args.tour_edits} edits in step 7")
    t = await open_page(p, f"{app}/tour", BUTTON.format("Run the whole tour"), args.load_timeout)
    log.step("open Tour page", t)
    await p.type_into("Facts to try per step", str(args.tour_budget))
    await p.settle()
    await p.type_into("Edits in step 7", str(args.tour_edits))
    await p.settle()
    first = await p.shot("20_tour_start")
    await check_page(p, log, "tour (start)", first)
    lines.append(f"The page opens on step 1 (`{first}`).")
    for n in range(1, TOUR_STEPS + 1):
        await p.click_button(f"Run step {n}")
        run = await watch_run(p, f"Step {n}:", args.edit_timeout, None, log)
        log.step(f"tour step {n} → status box ends ({run['outcome']})", run["seconds"], run["outcome"] == "done")
        await p.settle(1.5, 60)
        await asyncio.sleep(1.5)
        text = await p.main_text()
        save_text(args.out, f"2{n}_tour_step{n}", text)
        shot = await p.shot(f"2{n}_tour_step{n}", full=True)
        await check_page(p, log, f"tour step {n}", shot)
        verdict = next((ln for ln in text.splitlines() if ln.startswith(("Found on", "Not shown on", "This step needs"))),
                       "(no verdict line)")
        lines.append(f"- step {n}: {run['seconds']:.1f} s, “{md_escape(verdict[:300])}” (`{shot}`)")
        if run["outcome"] != "done":
            log.problem(f"tour step {n}", f"the run did not finish cleanly: status “{run['label']}”", shot)
        await p.click_button("Next step →")
        await p.settle()
    t0 = time.time()
    await p.click_button("Run the whole tour")
    run = await watch_run(p, f"Step {TOUR_STEPS}:", args.edit_timeout, None, log)
    await p.settle(1.5, 60)
    again = time.time() - t0
    log.step("tour: the whole tour again (from the cache)", again, run["outcome"] == "done")
    lines.append(f"Pressed **Run the whole tour** afterwards: all {TOUR_STEPS} steps back in **{again:.1f} s** "
                 "(every step from the results cache).")


async def open_page(p: Page, url: str, ready_js: str, timeout: float) -> float:
    """Navigate and wait until ``ready_js`` (the page's main control exists) and the page is quiet."""
    t0 = time.time()
    await p.send("Page.navigate", url=url)
    await p.wait_for(ready_js, timeout, f"{url} ready")
    await p.settle(1.0, timeout)
    return time.time() - t0


async def read_edit_result(p: Page) -> dict:
    text = await p.main_text()
    res: dict = {"text": text}
    m = re.search(r"P\(([^)]*)\): ([\d.—]+) → ([\d.—]+)(?: · P\(([^)]*)\): ([\d.—]+) → ([\d.—]+))?", text)
    if m:
        res["p_line"] = m.group(0)
    res["metrics"] = await p.metrics()
    res["charts"] = await p.charts()
    line = re.search(r"(CounterFact score[^\n]*)", text)
    res["score_line"] = line.group(1) if line else None
    bleed = re.search(r"(Bleed of the new target[^\n]*)", text)
    res["bleed"] = bleed.group(1) if bleed else None
    res["notes"] = [ln for ln in text.splitlines() if ln.startswith(("Quick evaluation:", "from the results cache"))]
    return res


def chart_summary(charts: list[dict]) -> list[str]:
    lines = []
    for c in charts:
        title = re.sub(r"<[^>]+>", "", c.get("title") or "") or "(untitled chart)"
        lines.append(f"- chart “{md_escape(title)}”")
        for t in c["traces"][:6]:
            if t.get("z") is not None:
                lines.append(f"  - heatmap: rows {t.get('y')}, columns {t.get('x')}, cells {t.get('text')}")
                continue
            xs, ys = t.get("x") or [], t.get("y") or []
            horizontal = bool(ys) and isinstance(ys[0], str)
            pairs = list(zip(ys, xs)) if horizontal else list(zip(xs, ys))
            def num(v):
                return f"{v:.3g}" if isinstance(v, (int, float)) else str(v)
            body = ", ".join(f"{md_escape(a)}: {num(b)}" for a, b in pairs[:10])
            lines.append(f"  - {md_escape(t.get('name') or t.get('type'))}: {body}{' …' if len(pairs) > 10 else ''}")
    return lines


def metric_lines(metrics: list[dict]) -> list[str]:
    if not metrics:
        return ["- (no scorecard metrics on the page)"]
    return ["| metric | value | change vs unedited |", "|---|---|---|"] + [
        f"| {md_escape(m['label'])} | {md_escape(m['value'])} | {md_escape(m['delta'] or '')} |" for m in metrics]


async def run_edit_and_record(p: Page, args, log: Log, tag: str, title: str, shots_prefix: str) -> dict:
    lines = log.section(title)
    before = await p.main_text()
    save_text(args.out, f"{shots_prefix}_form", before)
    form = await p.shot(f"{shots_prefix}_form")
    lines.append(f"Form before the run: `{form}`.")
    shown = re.search(r"^\S+ edit: (.*)$", before, re.M)
    if shown and "Result of the previous run" in before:
        lines.append(f"- the previous result (“{shown.group(1)}”) is marked as the previous run's")
    elif shown:
        log.problem(tag, f"before pressing Run edit, the page still shows the previous result (“{shown.group(1)}”) "
                         "under a form that now describes another edit; nothing marks it as stale", form)
    t0 = time.time()
    await p.click_button("Run edit")
    run = await watch_run(p, "Editing with", args.edit_timeout, f"{shots_prefix}_running", log)
    log.step(f"{tag}: Run edit → status box ends ({run['outcome']})", run["seconds"], run["outcome"] == "done")
    lines.append(f"Pressed **Run edit**; the status box ended “{md_escape(run['label'])}” "
                 f"after **{run['seconds']:.1f} s** "
                 f"(mid-run screenshot `{run['mid_shot']}`). Progress messages:")
    lines += timeline_lines(run)
    gap, msg = run["longest_gap"]
    if gap > 20:
        log.problem(tag, f"{gap:.0f} s without a new progress message while the page said “{msg}”", run["mid_shot"])
    if run["outcome"] != "done":
        shot = await p.shot(f"{shots_prefix}_failed")
        log.problem(tag, f"the edit did not finish cleanly: status “{run['label']}”", shot)
        lines.append(f"Outcome: **{run['outcome']}** (`{shot}`)")
        return {"run": run}
    t1 = time.time()
    try:
        await p.wait_text("Scorecard", 60)
        await p.wait_for("document.querySelectorAll('[data-testid=stMain] [data-testid=stMetric]').length >= 7", 30,
                         "the scorecard metrics")
    except TimeoutError as exc:
        log.problem(tag, f"no scorecard after the run: {exc}"[:300])
    await p.settle(1.5, 60)
    await asyncio.sleep(1.5)  # plotly draws after the text
    log.step(f"{tag}: result drawn after the status box closed", time.time() - t1)
    res = await read_edit_result(p)
    res["run"] = {k: v for k, v in run.items() if k != "timeline"} | {"timeline": run["timeline"]}
    res["seconds_total"] = time.time() - t0
    save_text(args.out, f"{shots_prefix}_result", res["text"])
    await p.scroll_top()
    top = await p.shot(f"{shots_prefix}_result_top")
    full = await p.shot(f"{shots_prefix}_result_full", full=True)
    res["checks"] = await check_page(p, log, tag, full)
    shifts = None
    if await p.scroll_to("Probability shifts"):
        await asyncio.sleep(1.0)
        shifts = await p.shot(f"{shots_prefix}_shifts")
    related = None
    find_related = (f"[...document.querySelectorAll('[data-testid=stMain] .js-plotly-plot')]"
                    f".find(g => {TITLE}.startsWith('Related words'))")
    if await p.js(f"!!{find_related}"):
        await p.js(f"{find_related}.scrollIntoView({{block: 'center'}})")
        await asyncio.sleep(1.0)
        related = await p.shot(f"{shots_prefix}_related_words")
    res["shots"] = {"top": top, "full": full, "shifts": shifts, "related": related}
    lines.append(f"Screenshots: top of the result `{top}`, whole page `{full}`, probability shifts `{shifts}`, "
                 f"related words `{related}`.")
    lines.append("")
    lines.append(f"- edit prompt line: **{md_escape(res.get('p_line') or '(no P(...) line found)')}**")
    if res.get("score_line"):
        lines.append(f"- {md_escape(res['score_line'])}")
    if res.get("bleed"):
        lines.append(f"- {md_escape(res['bleed'])}")
    for n in res["notes"]:
        lines.append(f"- note on the page: {md_escape(n)}")
    lines.append("")
    lines.append("Scorecard:")
    lines.append("")
    lines += metric_lines(res["metrics"])
    lines.append("")
    gen = re.search(r"before the edit\n+after the edit[^\n]*\n(.*?)\n+Scorecard", res["text"], re.S)
    if gen:
        lines.append("Before / after continuations (prompt, before, after), as the page shows them:")
        lines.append("")
        lines.append("```")
        lines += [ln for ln in gen.group(1).splitlines() if ln.strip()][:30]
        lines.append("```")
    lines.append("Charts (the numbers behind them):")
    lines += chart_summary(res["charts"])
    if "This evaluation has no probability-shift data." in res["text"]:
        log.problem(tag, "the probability-shift section says “This evaluation has no probability-shift data.” "
                         "(no risers/fallers, no related-words chart)", shifts or full)
    elif not related:
        log.problem(tag, "no related-words chart (the “Big Ben” view) on the result", shifts or full)
    if "This fact has no neighbourhood prompts, so there is no NKL." in res["text"]:
        log.problem(tag, "“This fact has no neighbourhood prompts, so there is no NKL.”: Neighbourhood score and "
                         "NKL stay empty for this fact", full)
    dashes = [m["label"] for m in res["metrics"] if m["value"] == "—" and m.get("delta") != "not computed"]
    if dashes:
        log.problem(tag, "scorecard shows “—” (measured, but no data for this fact) for: " + ", ".join(dashes),
                    top)
    return res


FREE = {"prompt": "The Mona Lisa hangs in a museum in the city of", "subject": "The Mona Lisa", "new": "London"}
PROMPT_LABEL = "Prompt (use {} for the subject, or write the subject out)"
# JS: the plotly chart whose title starts with the given text is drawn (has traces)
CHART_DRAWN = ("[...document.querySelectorAll('[data-testid=stMain] .js-plotly-plot')].some(g => "
               + TITLE + ".startsWith({title}) && (g.data || []).length > 0)")
METRICS_FILLED = ("(() => { const v = [...document.querySelectorAll('[data-testid=stMain] [data-testid=stMetricValue]')]"
                  ".map(e => e.innerText.trim()); return v.length >= 7 && !v.includes('…'); })()")


async def watch_stages(p: Page, prefix: str, stages: dict[str, str], timeout: float) -> dict:
    """From now (just after a click), the first time each JS condition in ``stages`` holds, the status box's
    progress messages and its end: what a user sees appear, and when."""
    t0 = time.time()
    seen: dict[str, float] = {}
    timeline: list[tuple[float, str]] = []
    label = None
    while time.time() - t0 < timeout:
        for name, cond in stages.items():
            if name not in seen:
                try:
                    if await p.js(cond):
                        seen[name] = round(time.time() - t0, 1)
                except RuntimeError:
                    pass
        cap = await p.progress_caption(prefix)
        if cap and (not timeline or timeline[-1][1] != cap):
            timeline.append((round(time.time() - t0, 1), cap))
        label = await p.status_label(prefix)
        if label and re.search(r"—\s*(done|failed|stopped)", label) and len(seen) == len(stages):
            break
        if label and re.search(r"—\s*(failed|stopped)", label):
            break
        await asyncio.sleep(0.25)
    m = re.search(r"—\s*(done|failed|stopped)", label or "")
    return {"seen": seen, "timeline": timeline, "label": label, "outcome": m.group(1) if m else "timeout",
            "seconds": time.time() - t0}


async def step_free_form(p: Page, app: str, args, log: Log) -> None:
    """A fact the catalog does not have, typed in: the model's own answer shown before the run, the
    neighbourhood built from the catalog, then the result as it arrives, the impact scan, and the link."""
    lines = log.section(f"Step 2a: Edit page, Free-form “{FREE['prompt']}” → {FREE['new']}")
    await p.click_label("Free-form")
    await p.wait_for("!!document.querySelector('input[aria-label=\"Subject\"]')", 20, "the free-form fields")
    vals = await p.js("Object.fromEntries([...document.querySelectorAll('[data-testid=stMain] input[type=text]')]"
                      ".map(i => [i.getAttribute('aria-label'), i.value]))")
    empty = await p.shot("02_free_form_empty")
    lines.append(f"Switched **Fact from** to Free-form (`{empty}`); its fields hold "
                 f"{json.dumps(vals, ensure_ascii=False)}.")
    if any(vals.get(k) for k in (PROMPT_LABEL, "Subject", "New target")):
        log.problem("edit (free-form)", "the free-form form opens with values already filled in", empty)
    t0 = time.time()
    await p.type_into(PROMPT_LABEL, FREE["prompt"])
    await p.settle()
    await p.type_into("Subject", FREE["subject"])
    await p.settle()
    await p.type_into("New target", FREE["new"])
    await p.wait_text("The unedited model continues", 60)
    await p.settle()
    log.step("free-form fields typed → model's answer and neighbours shown", time.time() - t0)
    text = await p.main_text()
    answer = re.search(r"The unedited model continues .*?current answer (\S+)", text)
    hood = await p.js("document.querySelector('textarea[aria-label^=\"Neighbourhood\"]')?.value") or ""
    relation = await p.combo_value("Relation (for the neighbourhood)")
    filled = await p.shot("03_free_form_filled")
    lines.append(f"Typed the prompt, “{FREE['subject']}” and the new target {FREE['new']}, leaving **Current answer** "
                 f"empty (`{filled}`).")
    lines.append(f"- before the run the page says: “{md_escape(answer.group(0) if answer else '(no model answer shown)')}”")
    lines.append(f"- relation: “{md_escape(relation)}”; neighbourhood box ({len(hood.splitlines())} lines):")
    lines += [f"  - {md_escape(ln)}" for ln in hood.splitlines()[:10]]
    if not hood.strip():
        log.problem("edit (free-form)", "no neighbourhood was built for the typed fact", filled)
    await p.choose("Method", "rome")
    stages = {"texts": "(document.querySelector('[data-testid=stMain]')?.innerText || '').includes('before the edit')",
              "scorecard": METRICS_FILLED,
              "neighbour KL chart": CHART_DRAWN.format(title=json.dumps("Neighbour KL")),
              "Big Ben view": CHART_DRAWN.format(title=json.dumps("Related words")),
              "impact scan (first chunk)": CHART_DRAWN.format(title=json.dumps("The ")),
              "impact scan (complete)": "(document.querySelector('[data-testid=stMain]')?.innerText || '')"
                                        ".includes('prompts scanned in')"}
    await p.click_button("Run edit")
    run = await watch_stages(p, "Editing with", stages, args.edit_timeout)
    seen = run["seen"]
    ok = run["outcome"] == "done"
    log.step("free-form ROME: Run edit → status box ends", run["seconds"], ok)
    for name in stages:
        log.step(f"free-form ROME: Run edit → {name} on the page", seen.get(name, float("nan")), name in seen)
    lines = log.section("Step 2b: the free-form ROME result, as it arrives")
    lines.append(f"Pressed **Run edit**; the status box ended “{md_escape(run['label'])}” after **{run['seconds']:.1f} s**. "
                 "Seconds from the click until each view was on the page:")
    lines.append("")
    lines.append("| view | seconds after Run edit | target |")
    lines.append("|---|---:|---|")
    targets = {"texts": "≤ 5", "scorecard": "≤ 5", "neighbour KL chart": "≤ 8", "Big Ben view": "≤ 8",
               "impact scan (complete)": "≤ 30 (all of it, the issue's done-when)"}
    for name in stages:
        v = seen.get(name)
        lines.append(f"| {name} | {'—' if v is None else f'{v:.1f}'} | {targets.get(name, '')} |")
    lines.append("")
    lines.append("Progress messages:")
    lines += timeline_lines(run)
    log.data["free_form"] = {"answer": answer.group(1) if answer else None, "relation": relation, "neighbours": hood,
                             "stages": seen, "run": run}
    for name, limit in (("texts", 5), ("scorecard", 5), ("neighbour KL chart", 8), ("Big Ben view", 8),
                        ("impact scan (complete)", 30)):
        if name not in seen:
            log.problem("edit (free-form)", f"{name}: never appeared")
        elif seen[name] > limit:
            log.problem("edit (free-form)", f"{name} took {seen[name]:.1f} s after Run edit (target ≤ {limit} s)")
    await p.settle(1.5, 60)
    await asyncio.sleep(1.5)
    res = await read_edit_result(p)
    save_text(args.out, "04_free_form_result", res["text"])
    await p.scroll_top()
    top = await p.shot("04_free_form_result_top")
    full = await p.shot("04_free_form_result_full", full=True)
    await check_page(p, log, "edit (free-form)", full)
    shots = {}
    for name, title in (("nkl", "Neighbour KL"), ("related", "Related words"), ("impact", "The "),
                        ("impact_hist", "KL over")):
        find = (f"[...document.querySelectorAll('[data-testid=stMain] .js-plotly-plot')]"
                f".find(g => {TITLE}.startsWith({json.dumps(title)}))")
        if await p.js(f"!!{find}"):
            await p.js(f"{find}.scrollIntoView({{block: 'start'}})")
            await asyncio.sleep(1.0)
            shots[name] = await p.shot(f"05_free_form_{name}")
    pngs = await p.js("[...document.querySelectorAll('button')].filter(b => b.innerText.includes('(PNG)')).length")
    lines.append(f"Screenshots: top `{top}`, whole page `{full}`, " + ", ".join(f"{k} `{v}`" for k, v in shots.items())
                 + f". PNG download buttons on the page: {pngs}.")
    lines.append("")
    lines.append(f"- edit prompt line: **{md_escape(res.get('p_line') or '(no P(...) line found)')}**")
    lines += metric_lines(res["metrics"])
    lines.append("")
    scan = re.search(r"\*?\*?(\d+)\*?\*? prompts scanned in ([\d.]+) s \((\d+) prompts/s\)[^\n]*", res["text"])
    if scan:
        lines.append(f"- impact scan line: {md_escape(scan.group(0))}")
        log.data["free_form"]["impact"] = {"prompts": int(scan.group(1)), "seconds": float(scan.group(2)),
                                          "per_second": int(scan.group(3))}
    lines.append("Charts (the numbers behind them):")
    lines += chart_summary(res["charts"])
    if not pngs:
        log.problem("edit (free-form)", "no PNG download buttons under the charts", full)

    # ---- the shared link: open it as someone else would
    lines = log.section("Step 2c: the run's link, opened in a fresh tab")
    await p.scroll_top()
    await p.click_button("🔗 Copy link")
    await asyncio.sleep(1.0)
    link = await p.js("(() => { const c = [...document.querySelectorAll('[data-testid=stPopoverBody] code, "
                      "[data-testid=stPopover] code, code')].map(e => e.innerText.trim()).find(t => t.includes('src=free'));"
                      " return c || null; })()")
    pop = await p.shot("05_free_form_copy_link")
    await p.key("Escape", 27)
    lines.append(f"**Copy link** shows `{md_escape(link or '(none)')}` (`{pop}`).")
    if link:
        t0 = time.time()
        # A navigation starts a new browser session of the app, as a colleague opening the link would.
        await p.send("Page.navigate", url=link)
        try:
            await p.wait_text("Scorecard", 120)
            await p.settle(1.5, 60)
            back = time.time() - t0
            log.step("shared link → form and cached result on the page", back)
            restored = await p.js("Object.fromEntries([...document.querySelectorAll('[data-testid=stMain] "
                                  "input[type=text]')].map(i => [i.getAttribute('aria-label'), i.value]))")
            shot = await p.shot("05_free_form_link_opened")
            lines.append(f"Opened the link: the form came back with {json.dumps(restored, ensure_ascii=False)} and "
                         f"the result from the cache after {back:.1f} s (`{shot}`), without pressing Run edit.")
        except TimeoutError as exc:
            shot = await p.shot("05_free_form_link_failed")
            log.problem("edit (free-form)", f"the shared link did not show the cached result: {exc}"[:300], shot)
    else:
        log.problem("edit (free-form)", "the Copy link popover shows no link", pop)


async def step_edit(p: Page, app: str, args, log: Log) -> None:
    lines = log.section("Step 1: open the dashboard")
    t = await open_page(p, f"{app}/", BUTTON.format("Run edit"), args.load_timeout)
    log.step("first page load (model loaded on first use)", t)
    first = await p.shot("01_edit_empty")
    model = await p.combo_value("Model")
    lines.append(f"Opened `{app}/`; the Edit page's form was ready after **{t:.1f} s** (includes loading "
                 f"`{model}`). Screenshot `{first}`.")
    run_visible = await p.js("(() => { const b = [...document.querySelectorAll('button')].find(x => x.innerText.trim()"
                             " === 'Run edit'); if (!b) return null; const r = b.getBoundingClientRect();"
                             " return r.bottom <= window.innerHeight; })()")
    lines.append(f"- **Run edit** visible without scrolling at {WIDTH}x{HEIGHT}: {run_visible}")
    await check_page(p, log, "edit (empty)", first)
    await step_free_form(p, app, args, log)
    if "catalog" in args.skip_edit:
        return
    t = await open_page(p, f"{app}/", BUTTON.format("Run edit"), args.load_timeout)
    await p.click_label("Catalog")
    await p.settle()

    # ---- search the catalog for the Louvre
    lines = log.section("Step 3a: Edit page, catalog search “louvre”, new target London")
    t0 = time.time()
    await p.type_into("Search the catalog", "louvre")
    await p.wait_for("(document.querySelector('input[aria-label=\"Fact\"]')?.value || '').includes('Louvre')", 30,
                     "the Louvre fact after searching")
    await p.settle()
    log.step("catalog search 'louvre' → fact selected", time.time() - t0)
    fact = await p.combo_value("Fact")
    shown_target = await p.combo_value("New target")
    fact_options = await p.open_combo("Fact")
    await p.key("Escape", 27)
    await p.settle(0.5)
    after_search = await p.shot("06_edit_search_louvre")
    options = await p.open_combo("New target")
    targets_shot = await p.shot("06_edit_new_target_options")
    await p.key("Escape", 27)
    await p.settle(0.5)
    lines.append(f"Typed “louvre” in **Search the catalog** + Enter. Facts offered: {fact_options}; selected "
                 f"“{md_escape(fact)}” (`{after_search}`).")
    lines.append(f"- the **New target** box shows “{md_escape(shown_target)}”; its drop-down offers {options} "
                 f"(`{targets_shot}`)")
    if shown_target and options and shown_target not in options:
        log.problem("edit", f"after the search switched the fact, the New target box still shows “{shown_target}”, "
                            f"a target of the previously selected fact (this fact offers {', '.join(options)}); "
                            f"for the Louvre “{shown_target}” is even the current answer", after_search)
    has_london = await p.choose("New target", "London")
    lines.append(f"- London offered as new target: **{has_london}**")
    typed_shot = None
    if not has_london:
        # What a user tries next: type it into the box.
        await p.mouse_click("document.querySelector('input[aria-label=\"New target\"]')", "New target")
        await p.js("document.querySelector('input[aria-label=\"New target\"]').select()")
        await p.send("Input.insertText", text="London")
        await asyncio.sleep(1.0)
        typed_opts = await p.combo_options("New target")
        typed_text = await p.js("(document.querySelector('[role=listbox][aria-label=\"New target\"]')?.innerText"
                                " || document.querySelector('[data-testid=stSelectboxVirtualDropdownEmpty], "
                                "[role=dialog], [data-baseweb=popover]')?.innerText || '').trim()")
        typed_shot = await p.shot("06_edit_typed_london")
        await p.key("Escape", 27)
        await p.settle(0.5)
        lines.append(f"- typing “London” into the New target box offers {typed_opts} "
                     f"(drop-down text “{md_escape(typed_text)}”) (`{typed_shot}`)")
        if any("London" in o for o in typed_opts):
            # The box takes a typed target (accept_new_options): Enter adds it.
            await p.type_into("New target", "London")
            await p.settle(1.0)
            has_london = (await p.combo_value("New target")) == "London"
            lines.append(f"- typed London accepted as new target: **{has_london}**")
        if not has_london:
            log.problem("edit", "README's headline example (Louvre → London, “do Big Ben or Thames rise?”) cannot be "
                                "picked from the catalog: the Louvre fact offers only "
                                f"{', '.join(options)} as new targets, "
                                "and the New target box does not take a typed value", targets_shot, typed_shot)
    log.data["edit_catalog"] = {"fact": fact, "fact_options": fact_options, "shown_target": shown_target,
                                "targets": options, "london": has_london}

    method_ok = await p.choose("Method", "rome")
    lines.append(f"- method set to rome: {method_ok}")
    res = await run_edit_and_record(p, args, log, "edit", "Step 3b: ROME edit, catalog Louvre → "
                                    f"{await p.combo_value('New target')}", "07_edit_catalog")
    log.data["edit_london"] = {k: v for k, v in res.items() if k != "text"}


async def step_compare(p: Page, app: str, args, log: Log) -> None:
    lines = log.section("Step 3: Compare page, ROME vs MEMIT vs FT-L")
    t = await open_page(p, f"{app}/compare", BUTTON.format("Compare"), args.load_timeout)
    log.step("open Compare page", t)
    # The same fact as the Edit step: the catalog Louvre fact when it offers London, else free-form.
    london = (log.data.get("edit_catalog") or {}).get("london")
    await p.type_into("Search the catalog", "louvre")
    await p.wait_for("(document.querySelector('input[aria-label=\"Fact\"]')?.value || '').includes('Louvre')", 30,
                     "the Louvre fact")
    await p.settle()
    if london:
        await p.choose("New target", "London")
        what = "catalog Louvre fact → London"
    elif args.compare_fact == "catalog":
        opts = await p.open_combo("New target")
        await p.key("Escape", 27)
        if opts:
            await p.choose("New target", opts[0])
        what = f"catalog Louvre fact → {await p.combo_value('New target')} (London is not offered)"
    else:
        await p.click_label("Free-form")
        await p.wait_for("!!document.querySelector('input[aria-label=\"Subject\"]')", 20, "the free-form fields")
        await p.click_button("Try an example")  # the form starts empty
        await p.settle()
        what = "Free-form example “The Louvre is located in the city of” → London"
    method_boxes = ("(() => { const r = document.querySelector("
                    "'[data-testid=stMain] input[type=checkbox][aria-label=rome]');"
                    " const row = r && r.closest('[data-testid=stHorizontalBlock]'); if (!row) return [];"
                    " return [...row.querySelectorAll('input[type=checkbox]')]"
                    ".map(i => [i.getAttribute('aria-label'), i.checked]); })()")
    methods = await p.js(method_boxes)
    lines.append(f"Fact: {what}. Method check-boxes as the page opens: {methods}.")
    for name, _checked in methods or []:
        await p.checkbox(name, name in ("rome", "memit", "ft_l"))
    methods = await p.js(method_boxes)
    form = await p.shot("07_compare_form")
    lines.append(f"Set to: {methods}. Form: `{form}`.")
    await check_page(p, log, "compare (form)", form)
    await p.click_button("Compare")
    run = await watch_run(p, "Running", args.edit_timeout * 3, "08_compare_running", log)
    log.step(f"compare: run → status box ends ({run['outcome']})", run["seconds"], run["outcome"] == "done")
    lines.append(f"Pressed **Compare**; the status box ended “{md_escape(run['label'])}” "
                 f"after **{run['seconds']:.1f} s** "
                 f"(`{run['mid_shot']}`). Progress messages:")
    lines += timeline_lines(run)
    gap, msg = run["longest_gap"]
    if gap > 20:
        log.problem("compare", f"{gap:.0f} s without a new progress message while the page said “{msg}”",
                    run["mid_shot"])
    if run["outcome"] != "done":
        shot = await p.shot("08_compare_failed")
        log.problem("compare", f"the comparison did not finish cleanly: status “{run['label']}”", shot)
    await p.settle(1.5, 60)
    await asyncio.sleep(2.0)
    text = await p.main_text()
    save_text(args.out, "09_compare_result", text)
    await p.scroll_top()
    top = await p.shot("09_compare_result_top")
    if await p.scroll_to("Definitions"):
        await p.js("document.querySelector('[data-testid=stMain]').scrollBy(0, -300)")
        await asyncio.sleep(1.0)
    table_shot = await p.shot("10_compare_table")
    full = await p.shot("11_compare_result_full", full=True)
    await check_page(p, log, "compare", full)
    charts = await p.charts()
    table = await read_dataframe(p)
    lines.append(f"Screenshots: `{top}`, table `{table_shot}`, whole page `{full}`.")
    lines.append("")
    if table:
        lines.append("Table (as read from the data grid):")
        lines.append("")
        lines.append("| " + " | ".join(md_escape(c) for c in table[0]) + " |")
        lines.append("|" + "---|" * len(table[0]))
        lines += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in table[1:]]
    else:
        lines.append("(the data grid's cells could not be read; see the heatmap's numbers below)")
    lines.append("")
    lines += chart_summary(charts)
    notes = [ln for ln in text.splitlines() if ln.startswith(("Quick evaluation:", "Definitions"))]
    lines += [f"- note on the page: {md_escape(n)}" for n in notes]
    log.data["compare"] = {"what": what, "run": run, "table": table, "charts": charts}
    heat = next((c for c in charts if any(t.get("z") is not None for t in c["traces"])), None)
    if heat:
        tr = next(t for t in heat["traces"] if t.get("z") is not None)
        empty = [str(r) for r, cells in zip(tr.get("y") or [], tr.get("text") or [])
                 if cells and all(c == "—" for c in cells)]
        quick = any(n.startswith("Quick evaluation:") for n in notes)
        empty = [f"{r} (not computed: Quick evaluation is on)" if r == "Fluency" and quick else r for r in empty]
        if empty:
            log.problem("compare", "rows that are “—” for every method: " + ", ".join(empty), top)


async def read_dataframe(p: Page) -> list[list[str]]:
    """The rows of the first st.dataframe (Glide data grid keeps an accessible table in the DOM)."""
    rows = await p.js(
        "(() => { const t = document.querySelector('[data-testid=stMain] [data-testid=stDataFrame] table');"
        " if (!t) return null; return [...t.querySelectorAll('tr')].map(r => [...r.querySelectorAll('th,td')]"
        ".map(c => c.innerText.trim())); })()")
    return [r for r in (rows or []) if any(r)]


async def step_sequential(p: Page, app: str, args, log: Log) -> None:
    lines = log.section(f"Step 4: Sequential page, MEMIT, {args.seq_edits} edits, evaluated every {args.seq_every}")
    t = await open_page(p, f"{app}/sequential", BUTTON.format("Run") + " && !!document.querySelector("
                        "'input[aria-label=\"Edits\"]')", args.load_timeout)
    log.step("open Sequential page", t)
    chosen = await p.js("(document.querySelector('[data-testid=stMain] [data-testid=stMultiSelect]')?.innerText || '')"
                        ".split('\\n').map(x => x.trim()).filter(x => x && x !== 'Methods (overlaid)')")
    n = await p.js("document.querySelector('input[aria-label=\"Edits\"]')?.value")
    k = await p.js("document.querySelector('input[aria-label=\"Evaluate every k\"]')?.value")
    lines.append(f"The page opens with methods {chosen}, Edits = {n}, Evaluate every k = {k}.")
    if chosen and [c.lower() for c in chosen] != ["memit"]:
        log.problem("sequential", f"the method picker opened with {chosen}, not MEMIT alone")
    if str(n) != str(args.seq_edits):
        await p.type_into("Edits", str(args.seq_edits))
        await p.settle()
    if str(k) != str(args.seq_every):
        await p.type_into("Evaluate every k", str(args.seq_every))
        await p.settle()
    form = await p.shot("12_sequential_form")
    await check_page(p, log, "sequential (form)", form)
    lines.append(f"Set Edits = {args.seq_edits}, Evaluate every k = {args.seq_every} (`{form}`).")
    await p.click_button("Run")
    run = await watch_run(p, "sequential edits", args.seq_timeout, "13_sequential_running", log,
                          mid_after=args.seq_mid_shot,
                          extra=("!!document.querySelector('[data-testid=stMain] .js-plotly-plot')",
                                 "14_sequential_first_curves"))
    log.step(f"sequential: run → status box ends ({run['outcome']})", run["seconds"], run["outcome"] == "done")
    lines.append(f"Pressed **Run**; the status box ended “{md_escape(run['label'])}” "
                 f"after **{run['seconds']:.1f} s** "
                 f"(mid-run screenshot `{run['mid_shot']}`, taken after {args.seq_mid_shot:.0f} s). Progress messages:")
    lines += timeline_lines(run, limit=30)
    if run["extra_shot"]:
        lines.append(f"First live curves on the page: `{run['extra_shot']}`.")
    starts = [(t, int(m.group(1))) for t, c in run["timeline"] if (m := re.search(r"edit (\d+)/\d+", c))]
    if len(starts) >= 2:
        per = [(b[0] - a[0]) / max(b[1] - a[1], 1) for a, b in zip(starts, starts[1:])]
        per.sort()
        lines.append(f"- time per edit as seen on the page (edit computation plus any evaluation in between): median "
                     f"{per[len(per) // 2]:.1f} s, range {per[0]:.1f}–{per[-1]:.1f} s")
    gap, msg = run["longest_gap"]
    if gap > 30:
        log.problem("sequential", f"{gap:.0f} s without a new progress message while the page said “{msg}”",
                    run["mid_shot"])
    if run["outcome"] == "timeout":
        shot = await p.shot("14_sequential_timeout_state")
        log.problem("sequential",
                    f"the run had not ended after {args.seq_timeout:.0f} s (the walk-through stopped waiting)", shot)
    elif run["outcome"] != "done":
        shot = await p.shot("14_sequential_failed_state")
        log.problem("sequential", f"the run did not finish cleanly: status “{run['label']}”", shot)
    await p.settle(1.5, 60)
    await asyncio.sleep(2.0)
    text = await p.main_text()
    save_text(args.out, "15_sequential_result", text)
    await p.scroll_top()
    top = await p.shot("15_sequential_result_top")
    full = await p.shot("16_sequential_result_full", full=True)
    await check_page(p, log, "sequential", full)
    charts = await p.charts()
    finals = [ln for ln in text.splitlines() if re.match(r"^\S+: (complete|stopped)", ln)]
    lines.append(f"Screenshots: `{top}`, whole page `{full}`.")
    lines.append("")
    lines += ([f"- final line on the page: **{md_escape(f)}**" for f in finals]
              or ["- (no final summary line on the page)"])
    lines.append("")
    lines.append("Curves (points: number of edits → value):")
    lines += chart_summary(charts)
    log.data["sequential"] = {"run": run, "finals": finals, "charts": charts}
    if not charts:
        log.problem("sequential", "no curves on the page after the run", full)
    # A curve that carries no information (e.g. only the value at 0 edits) is worth a note.
    for c in charts:
        ys = [y for t in c["traces"] for y in (t.get("y") or []) if isinstance(y, (int, float))]
        if ys and len(set(round(y, 9) for y in ys)) == 1:
            title = re.sub(r"<[^>]+>", "", c.get("title") or "")
            log.problem("sequential", f"the curve “{title}” is flat at {ys[0]:.3g} over the whole run", full)


# ---- main ------------------------------------------------------------------------------------------
def make_home(args) -> Path:
    if args.home:
        return Path(args.home)
    home = Path(tempfile.mkdtemp(prefix="editscope-walk-home-"))
    src = Path(os.environ.get("EDITSCOPE_HOME") or Path.home() / ".cache" / "editscope")
    if not args.tiny:
        # What `make run` leaves behind: the converted model, the layer statistics, ROME's context prefixes and
        # the impact scan's unedited side (the warmup step).
        links = ["models", "gguf"] + ([] if args.fresh_stats else ["stats", "context", "impact"])
        for name in links:
            if (src / name).exists():
                (home / name).symlink_to(src / name)
    elif not args.fresh_stats and args.tiny_stats_home:
        (home / "stats").symlink_to(Path(args.tiny_stats_home))
    return home


def render(log: Log, args, meta: dict) -> str:
    md = ["# EditScope: a new user's walk-through", ""]
    md.append(f"Generated by `scripts/walkthrough.py` on {time.strftime('%Y-%m-%d %H:%M')} "
              f"({meta['model']}, {WIDTH}x{HEIGHT}, headless Chromium, "
              f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
              f"{os.cpu_count()} CPU cores). Total wall time **{meta['total']:.0f} s**.")
    md.append("")
    md.append(f"Setup: {meta['setup']}")
    md.append("")
    md.append("## Timings")
    md.append("")
    md.append("| step | seconds | ok |")
    md.append("|---|---:|---|")
    md += [f"| {md_escape(s['name'])} | {s['seconds']:.1f} | {'yes' if s['ok'] else '**no**'} |" for s in log.steps]
    md.append("")
    md.append("## Problems a new user hits")
    md.append("")
    md.append("Found automatically by the script (error boxes, cut-off text, long silences, empty views); "
              "see `NOTES.md` for the reviewer's notes from the screenshots, when present.")
    md.append("")
    if not log.problems:
        md.append("- none found automatically")
    for i, pr in enumerate(log.problems, 1):
        shots = ", ".join(f"`{s}`" for s in pr["shots"])
        md.append(f"{i}. **{md_escape(pr['where'])}**: {pr['what']}" + (f" ({shots})" if shots else ""))
    md.append("")
    for heading, lines in log.sections:
        md.append(f"## {heading}")
        md.append("")
        md += lines
        md.append("")
    md.append("## Server log")
    md.append("")
    md += meta["server_log"]
    md.append("")
    return "\n".join(md)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "walkthrough")
    ap.add_argument("--tiny", action="store_true", help="use the tiny random test model (serves tests/tiny_app.py)")
    ap.add_argument("--home", help="EDITSCOPE_HOME to use as it is (default: a fresh one, see the module doc)")
    ap.add_argument("--fresh-stats", action="store_true", help="do not link the cached layer statistics")
    ap.add_argument("--tiny-stats-home", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--corpus", default=None,
                    help="EDITSCOPE_STATS_CORPUS for the server (default: unset, the bundled WikiText-2 excerpt)")
    ap.add_argument("--load-timeout", type=float, default=300)
    ap.add_argument("--edit-timeout", type=float, default=600)
    ap.add_argument("--seq-timeout", type=float, default=1800)
    ap.add_argument("--seq-edits", type=int, default=20)
    ap.add_argument("--seq-every", type=int, default=5)
    ap.add_argument("--seq-mid-shot", type=float, default=45,
                    help="seconds into the sequential run for its mid-run screenshot")
    ap.add_argument("--compare-fact", choices=("free", "catalog"), default="free",
                    help="when the catalog does not offer London: compare on the free-form example or on the "
                         "catalog Louvre fact's first target")
    ap.add_argument("--tour-budget", type=int, default=3, help="facts tried per tour step")
    ap.add_argument("--tour-edits", type=int, default=6, help="sequential edits in the tour's step 7")
    ap.add_argument("--skip", nargs="*", default=[], choices=("edit", "compare", "sequential", "tour"))
    ap.add_argument("--skip-edit", nargs="*", default=[], choices=("catalog",),
                    help="parts of the Edit step to leave out (the free-form edit always runs)")
    args = ap.parse_args()
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    for f in args.out.glob("*.png"):
        f.unlink()
    for f in args.out.glob("*.txt"):
        f.unlink()

    log = Log(args.out)
    home = make_home(args)
    port = args.port or free_port()
    env = {**os.environ, "EDITSCOPE_HOME": str(home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1"}
    env.pop("EDITSCOPE_STATS_CORPUS", None)
    if args.corpus:
        env["EDITSCOPE_STATS_CORPUS"] = args.corpus
    if args.tiny:
        env["EDITSCOPE_TEST_TINY_LAYERS"] = env.get("EDITSCOPE_TEST_TINY_LAYERS", "10")
    script = ROOT / "tests" / "tiny_app.py" if args.tiny else ROOT / "app" / "main.py"
    server_log = args.out / "server.log.tmp"
    t0 = time.time()
    with open(server_log, "wb") as slog:
        server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(script),
                                   "--server.port", str(port), "--server.headless", "true",
                                   "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
                                  cwd=ROOT, env=env, stdout=slog, stderr=subprocess.STDOUT, start_new_session=True)
    profile = Path(tempfile.mkdtemp(prefix="editscope-walk-chromium-"))
    browser = None
    try:
        health = wait_http(f"http://127.0.0.1:{port}/_stcore/health", 120).strip()
        log.step("server start (health check ok)", time.time() - t0, health == "ok")
        browser = subprocess.Popen([args.chromium, "--headless", "--no-sandbox", "--disable-gpu",
                                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                                    "--no-first-run", f"--user-data-dir={profile}", "--remote-debugging-port=0",
                                    f"--window-size={WIDTH},{HEIGHT}", "about:blank"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        active = profile / "DevToolsActivePort"
        deadline = time.time() + 30
        while not active.exists() and time.time() < deadline:
            time.sleep(0.2)
        cdp_port = int(active.read_text().split()[0])
        asyncio.run(walk(cdp_port, f"http://127.0.0.1:{port}", args, log))
    finally:
        for proc in (browser, server):
            if proc is None:
                continue
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        shutil.rmtree(profile, ignore_errors=True)

    text = server_log.read_text(errors="replace")
    server_lines = text.splitlines()
    tracebacks = text.count("Traceback")
    interesting = [ln for ln in server_lines if re.search(r"Traceback|ERROR|Error|WARNING|Warning", ln)]
    if tracebacks:
        log.problem("server", f"{tracebacks} traceback(s) in the server log (see the end of walkthrough.md)")
    log_md = [f"{len(server_lines)} lines, {tracebacks} traceback(s). Errors and warnings:", "", "```"]
    log_md += [ln[:300] for ln in interesting[:40]] or ["(none)"]
    log_md.append("```")
    if tracebacks:
        idx = text.find("Traceback")
        log_md += ["", "First traceback:", "", "```", text[idx: idx + 4000], "```"]
    if not args.home:
        shutil.rmtree(home, ignore_errors=True)
    setup = (f"server `streamlit run {script.relative_to(ROOT)}` with "
             + (f"EDITSCOPE_STATS_CORPUS={args.corpus}; " if args.corpus else "the default statistics corpus "
                "(the bundled WikiText-2 excerpt); ")
             + (f"EDITSCOPE_HOME={args.home} as it was" if args.home else
                "a fresh EDITSCOPE_HOME (empty results caches; " +
                ("models and GGUF linked from ~/.cache/editscope, layer statistics computed afresh"
                 if args.fresh_stats else "models, GGUF, layer statistics, context prefixes and the impact scan's "
                 "unedited side linked from ~/.cache/editscope, as `make run` leaves them") + ")")
             + ("; tiny random test model" if args.tiny else ""))
    meta = {"model": "tiny-gpt2 (tests/tiny_app.py)" if args.tiny else "gemma-3-270m (the default model)",
            "total": time.time() - log.t0, "setup": setup, "server_log": log_md}
    (args.out / "walkthrough.md").write_text(render(log, args, meta))
    (args.out / "walkthrough.json").write_text(json.dumps({"steps": log.steps, "problems": log.problems,
                                                           "data": log.data}, indent=1, default=str))
    server_log.rename(args.out / "server.log.txt")
    print(f"wrote {args.out / 'walkthrough.md'} ({len(log.problems)} problems)")
    return 0 if all(s["ok"] for s in log.steps) else 1


if __name__ == "__main__":
    sys.exit(main())
