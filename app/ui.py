"""Streamlit helpers shared by the pages: the shared model, the service-call wrapper, progress boxes,
safe text rendering and metric help.

Only this folder and ``pages/`` import streamlit; neither imports torch or transformers (the service
layer does the work).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import streamlit as st
from streamlit.runtime.scriptrunner_utils.exceptions import RerunException, ScriptControlException

from editcore import service
from editcore.errors import EditScopeError

log = logging.getLogger("editscope.app")

MODEL_KEY = "model_name"
OTHER_MODEL = "other (local path or hub id)…"
METHODS_PAGE = "methods"  # url_path of the Methods & metrics page (anchors link into it)

PAGES_DIR = Path(__file__).resolve().parents[1] / "pages"
# url_path -> (file, title, icon); the order is the sidebar's.
PAGES = {
    # Material icons ship with Streamlit's own font; emoji would need a system emoji font.
    "edit": ("edit.py", "Edit a fact", ":material/edit:"),
    "compare": ("compare.py", "Compare methods", ":material/compare_arrows:"),
    "sequential": ("sequential.py", "Sequential edits", ":material/stacked_line_chart:"),
    "pitfalls": ("pitfalls.py", "Pitfall benchmarks", ":material/warning:"),
    "trace": ("trace.py", "Where is the fact?", ":material/location_searching:"),
    "tour": ("tour.py", "Guided tour", ":material/school:"),
    METHODS_PAGE: ("methods.py", "Methods & metrics", ":material/menu_book:"),
    "generate": ("generate.py", "Generate", ":material/chat:"),
}


def page(url_path: str):
    """The st.Page for one of our pages (the same definition the router uses, so switch_page finds it)."""
    file, title, icon = PAGES[url_path]
    return st.Page(PAGES_DIR / file, title=title, icon=icon, url_path=url_path, default=url_path == "edit")


# label, one-line help, anchor on the Methods & metrics page
METRIC_HELP: dict[str, tuple[str, str, str]] = {
    "efficacy": ("Efficacy", "Share of edit prompts where P(new) > P(old) after the edit (CounterFact ES).",
                 "efficacy"),
    "generalisation": ("Generalisation", "Same comparison on paraphrases of the edit prompt (CounterFact PS).",
                       "generalisation"),
    "neighbourhood": ("Neighbourhood score", "Share of neighbour prompts (other subjects) where P(old) > P(new) "
                      "still holds (CounterFact NS).", "neighbourhood-score"),
    "nkl": ("NKL", "KL divergence of the next-token distribution on neighbour prompts, before ‖ after "
            "(CounterFact+); lower is better.", "nkl"),
    "portability": ("Portability", "Accuracy on questions that need the edited fact plus one more hop.",
                    "portability"),
    "fluency": ("Fluency", "Weighted bi-/tri-gram entropy of generated text (ROME's measure); a drop means "
                "repetitive output.", "fluency"),
    "seconds": ("Seconds", "Wall-clock time to compute the edit (not the evaluation).", "time"),
}


# Streamlit scrolls to a URL's #anchor when that heading mounts; formulas typeset afterwards (KaTeX) can
# push the heading down again, so a page with formulas above its anchors scrolls once more after them.
# Constant script, no user text; the component's iframe shares the page's origin.
_RESCROLL = """<script>
const top_ = window.parent, id = decodeURIComponent(top_.location.hash.slice(1));
for (const ms of [400, 1200, 3000]) setTimeout(() => {
  const el = id && top_.document.getElementById(id);
  if (el && Math.abs(el.getBoundingClientRect().top) > 120) el.scrollIntoView();
}, ms);
</script>"""


def rescroll_to_anchor() -> None:
    """Scroll to the URL's #anchor again once the page's formulas are typeset (call at the page's end)."""
    import streamlit.components.v1 as components

    components.html(_RESCROLL, height=0)


def definition_url(anchor: str) -> str:
    """Link to a section of the Methods & metrics page (Streamlit scrolls to a heading's anchor on load).
    Relative, so that it also works when the app is served under a base path (``/<base>/methods``);
    links in markdown open in a new tab, which keeps the current page's result."""
    return f"{METHODS_PAGE}#{anchor}"


def metric_label(key: str) -> str:
    """A metric's label as a markdown link to its definition."""
    label, _text, anchor = METRIC_HELP.get(key, (key, "", key))
    return f"[{label}]({definition_url(anchor)})"


def metric_help(key: str) -> str:
    label, text, anchor = METRIC_HELP.get(key, (key, "", key))
    return f"{text} [Definition]({definition_url(anchor)})"


def definitions_caption(keys) -> str:
    """One line of links to the definitions of ``keys`` (for tables, whose headers cannot hold links)."""
    return "Definitions: " + " · ".join(metric_label(k) for k in keys)


# ---- the shared model ---------------------------------------------------------------------------
@st.cache_resource(show_spinner=False, max_entries=3)
def _shared_model(name: str):
    # One LM per model name for the whole server: every session reads it through lm.scope(), which
    # serialises edits with the model's lock.
    return service.load_model(name)


def model_name() -> str:
    return st.session_state.get(MODEL_KEY) or service.default_model()


def sidebar_model_picker() -> None:
    """Sidebar: built-in models plus a free text field for a local path / hub id."""
    choices = service.model_choices() + [OTHER_MODEL]
    # A shared link names its model (?model=…): it seeds the picker once per session. Only a model of the
    # picker: a link must not make the server load an arbitrary path or download a hub model.
    if not st.session_state.get("model_query_applied"):
        st.session_state["model_query_applied"] = True
        if st.query_params.get("model") in choices:
            st.session_state["model_choice"] = st.query_params["model"]
    with st.sidebar:
        st.markdown("### Model")
        choice = st.selectbox("Model", choices, index=0, key="model_choice",
                              help="Built-in models run offline; 'other' loads a local directory, "
                                   "a .gguf file or (online) a Hugging Face hub id.")
        if choice == OTHER_MODEL:
            typed = st.text_input("Path or hub id", key="model_path", placeholder="/path/to/model or org/name")
            st.session_state[MODEL_KEY] = typed.strip()
        else:
            st.session_state[MODEL_KEY] = choice


def current_lm(where=None):
    """The shared LM for the sidebar's model, or stop the page with a clear message."""
    name = model_name()
    if not name:
        st.info("Type a local model path or hub id in the sidebar.")
        st.stop()
    with st.spinner(f"loading {name} (first time only)…"):
        lm = call(_shared_model, name, where=where)
    if lm is None:
        st.stop()
    return lm


# ---- calling the service ------------------------------------------------------------------------
# The status box a service call runs in (if any), so that ``call`` can mark it failed or stopped.
_CURRENT_BOX: contextvars.ContextVar[StatusProgress | None] = contextvars.ContextVar("editscope_box", default=None)


def call(fn: Callable, *args, where=None, **kwargs) -> Any:
    """Run a service function; user errors become an error box next to the widgets, anything else
    a short 'internal error' box (the traceback goes to the log, never to the page). Returns None on
    failure, and marks the enclosing :func:`status_box` failed."""
    target = where if where is not None else st
    box = _CURRENT_BOX.get()
    try:
        return fn(*args, **kwargs)
    except EditScopeError as exc:
        if box is not None:
            box.mark("failed")
        target.error(str(exc))
    except Exception as exc:  # noqa: BLE001 - a bug must not put a traceback on the page
        log.exception("internal error in %s", getattr(fn, "__name__", fn))
        if box is not None:
            box.mark("failed")
        target.error(f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")
    return None


class StatusProgress:
    """The ``progress(stage, fraction)`` callback of a :func:`status_box`, plus its outcome.

    ``outcome`` is "done" until :meth:`mark` says "failed" or "stopped" (failed wins).

    With ``defer_interrupts`` a widget click during the work does not abort it at the next progress
    report; :attr:`interrupted` turns true instead, so a ``should_stop`` callback can end the work
    cleanly (e.g. between two sequential edits) and keep what it measured. A click reaches a running
    script in one of two ways: with Streamlit's default ``runner.fastReruns`` this run is told to stop
    (a StopException at every later drawing call) while a new run of the page starts at once; without
    it, this run gets the rerun request (a RerunException, once) and the new run waits for it. Either
    exception is raised again when the box closes.
    """

    def __init__(self, box, defer_interrupts: bool):
        self._bar = box.progress(0.0)
        self._line = box.empty()
        self._defer = defer_interrupts
        self.deferred: ScriptControlException | None = None
        self.outcome = "done"

    @property
    def interrupted(self) -> bool:
        return self.deferred is not None

    def mark(self, outcome: str) -> None:
        if outcome not in ("failed", "stopped"):
            raise ValueError(outcome)
        if self.outcome != "failed":
            self.outcome = outcome

    @contextlib.contextmanager
    def shield(self) -> Iterator[None]:
        """Drawing inside this block does not abort the work on a click (when deferring): Streamlit
        raises its stop/rerun request from whatever element is drawn next, so every drawing call made
        while the work runs (progress, live charts) has to go through here."""
        try:
            yield
        except ScriptControlException as exc:
            if not self._defer:
                raise
            # A second rerun request while the first is pending aborts at once (the user insists); a
            # stopped run raises StopException on every call, which is the same single request.
            if isinstance(exc, RerunException) and self.deferred is not None:
                raise
            if self.deferred is None:
                self.deferred = exc

    def __call__(self, stage: str, frac: float) -> None:
        with self.shield():
            self._bar.progress(min(max(float(frac), 0.0), 1.0))
            self._line.caption(escape_md(stage))


def shield() -> contextlib.AbstractContextManager:
    """:meth:`StatusProgress.shield` of the status box the code runs in (a no-op outside one)."""
    box = _CURRENT_BOX.get()
    return box.shield() if box is not None else contextlib.nullcontext()


_ENDINGS = {"done": ("done", "complete"), "failed": ("failed", "error"), "stopped": ("stopped", "error")}


@contextlib.contextmanager
def status_box(label: str, defer_interrupts: bool = False) -> Iterator[StatusProgress]:
    """A ``st.status`` box with a progress bar; yields a :class:`StatusProgress` callback.

    The box ends "complete" only when the work inside it succeeded: a :func:`call` that failed, a
    :meth:`StatusProgress.mark`, an exception or a Streamlit stop/rerun leave it in the "error" state
    with a label that says failed or stopped. A click on any widget (e.g. a Stop button) makes
    Streamlit rerun the script, which interrupts the work at its next progress report (unless
    ``defer_interrupts``); the service's scopes restore the model on the way out.
    """
    box = st.status(label, expanded=True)
    progress = StatusProgress(box, defer_interrupts)
    token = _CURRENT_BOX.set(progress)

    def close() -> None:
        word, state = _ENDINGS[progress.outcome]
        box.update(label=f"{label} — {word}", state=state, expanded=False)

    try:
        yield progress
    except BaseException as exc:
        # A Streamlit stop/rerun (not an Exception) interrupted the work; anything else is a failure.
        progress.mark("failed" if isinstance(exc, Exception) else "stopped")
        close()
        raise
    finally:
        _CURRENT_BOX.reset(token)
    if progress.interrupted:
        progress.mark("stopped")
    try:
        close()  # a stopped run raises its StopException again here
    finally:
        if progress.deferred is not None:
            raise progress.deferred  # the stop/rerun the click asked for, now that the work ended cleanly


# ---- safe text ----------------------------------------------------------------------------------
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~:$])")


def escape_md(text: str) -> str:
    """Escape markdown (and Streamlit's colour/emoji/latex syntax) so user text renders literally."""
    return _MD_SPECIAL.sub(r"\\\1", str(text)).replace("\n", " ")


def diff_markdown(segments: list[dict], colour: str = "orange") -> str:
    """Continuation text with changed words coloured; every piece of text is escaped first."""
    parts = []
    for seg in segments:
        text = escape_md(seg["text"])
        parts.append(f":{colour}[**{text}**]" if seg["changed"] else text)
    return " ".join(parts) if parts else "_(empty)_"


def stale_caption(result_form: dict | None, form: dict, button: str) -> bool:
    """Mark a result on show as stale when the form's current request differs from the one that produced
    it (``result_form``, stored next to the result). Returns whether it is stale."""
    if result_form is None or result_form == form:
        return False
    st.caption(f":orange[**Result of the previous run** (the form has changed since): press **{button}** "
               "for the current choice.]")
    return True


def fmt(v: float | None, digits: int = 3) -> str:
    return "—" if v is None else f"{v:.{digits}f}"
