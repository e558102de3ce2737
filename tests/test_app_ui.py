"""app/ui.py helpers without a running app: how a status box ends, and how it defers a click."""

import pytest
from streamlit.runtime.scriptrunner_utils.exceptions import RerunException, StopException
from streamlit.runtime.scriptrunner_utils.script_requests import RerunData

from app import ui


class _Element:
    """Stands in for the progress bar and caption of a st.status box; raises what it is told to."""

    def __init__(self):
        self.raise_next: BaseException | None = None

    def progress(self, value):
        if self.raise_next is not None:
            exc, self.raise_next = self.raise_next, None
            raise exc
        return self

    def empty(self):
        return self

    def caption(self, text):
        return self


def test_a_click_during_deferring_work_is_held_until_the_work_ends():
    el = _Element()
    progress = ui.StatusProgress(el, defer_interrupts=True)
    click = RerunException(RerunData())
    el.raise_next = click
    progress("edit 2/4", 0.5)  # Streamlit raised the rerun here; the work goes on
    assert progress.interrupted and progress.deferred is click
    el.raise_next = RerunException(RerunData())
    with pytest.raises(RerunException):  # a second click aborts at once
        progress("edit 3/4", 0.75)


def test_a_stopped_run_keeps_going_to_its_clean_end_when_deferring():
    # With fastReruns a click stops this run (StopException at every drawing call) and starts a new one.
    el = _Element()
    progress = ui.StatusProgress(el, defer_interrupts=True)
    first = StopException()
    el.raise_next = first
    progress("edit 2/4", 0.5)
    el.raise_next = StopException()
    progress("edit 3/4", 0.75)  # still the same request: no abort mid-edit
    assert progress.deferred is first


def test_without_deferring_a_click_aborts_at_the_next_progress_report():
    el = _Element()
    progress = ui.StatusProgress(el, defer_interrupts=False)
    el.raise_next = RerunException(RerunData())
    with pytest.raises(RerunException):
        progress("edit 2/4", 0.5)
    assert not progress.interrupted


def test_status_box_reruns_after_deferred_work_and_says_stopped(monkeypatch):
    updates = []

    class Box(_Element):
        def update(self, **kw):
            updates.append(kw)

    monkeypatch.setattr(ui.st, "status", lambda label, expanded: Box())
    click = RerunException(RerunData())
    finished = []
    with pytest.raises(RerunException) as raised:
        with ui.status_box("4 sequential edits", defer_interrupts=True) as progress:
            with ui.shield():
                raise click
            finished.append(progress.interrupted)  # the work carried on to its clean end
    assert raised.value is click and finished == [True]
    assert updates == [{"label": "4 sequential edits — stopped", "state": "error", "expanded": False}]


@pytest.mark.parametrize("fails, label, state", [(False, "done", "complete"), (True, "failed", "error")])
def test_status_box_ends_failed_when_a_call_inside_failed(monkeypatch, fails, label, state):
    from editcore.errors import InputError

    updates = []

    class Box(_Element):
        def update(self, **kw):
            updates.append(kw)

    def service_fn():
        if fails:
            raise InputError("the subject is empty")
        return {"ok": True}

    monkeypatch.setattr(ui.st, "status", lambda label, expanded: Box())
    monkeypatch.setattr(ui.st, "error", lambda text: None)
    with ui.status_box("Editing") as _progress:
        out = ui.call(service_fn)
    assert (out is None) == fails
    assert updates == [{"label": f"Editing — {label}", "state": state, "expanded": False}]
