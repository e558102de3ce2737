"""Streamlit helpers shared by the pages: the shared model, the service-call wrapper, progress boxes,
safe text rendering and metric help.

Only this folder and ``pages/`` import streamlit; neither imports torch or transformers (the service
layer does the work).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import streamlit as st

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


def metric_help(key: str) -> str:
    label, text, anchor = METRIC_HELP.get(key, (key, "", key))
    return f"{text} [Definition](/{METHODS_PAGE}#{anchor})"


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
def call(fn: Callable, *args, where=None, **kwargs) -> Any:
    """Run a service function; user errors become an error box next to the widgets, anything else
    a short 'internal error' box (the traceback goes to the log, never to the page)."""
    target = where if where is not None else st
    try:
        return fn(*args, **kwargs)
    except EditScopeError as exc:
        target.error(str(exc))
    except Exception as exc:  # noqa: BLE001 - a bug must not put a traceback on the page
        log.exception("internal error in %s", getattr(fn, "__name__", fn))
        target.error(f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")
    return None


@contextlib.contextmanager
def status_box(label: str) -> Iterator[Callable[[str, float], None]]:
    """A ``st.status`` box with a progress bar; yields a ``progress(stage, fraction)`` callback.

    A click on any widget (e.g. the Stop button) makes Streamlit rerun the script, which interrupts the
    work at its next progress report; the service's scopes restore the model on the way out.
    """
    box = st.status(label, expanded=True)
    bar = box.progress(0.0)
    line = box.empty()
    state = {"failed": False}

    def progress(stage: str, frac: float) -> None:
        bar.progress(min(max(float(frac), 0.0), 1.0))
        line.caption(escape_md(stage))

    try:
        yield progress
    except BaseException:
        state["failed"] = True
        box.update(label=f"{label} — stopped", state="error", expanded=False)
        raise
    finally:
        if not state["failed"]:
            box.update(label=f"{label} — done", state="complete", expanded=False)


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


def fmt(v: float | None, digits: int = 3) -> str:
    return "—" if v is None else f"{v:.{digits}f}"
