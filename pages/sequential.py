"""Sequential edits: many edits one after another; watch the model degrade."""

import threading

import streamlit as st

from app import charts, labels, ui, widgets
from editcore import service

st.title("Sequential edits")
st.caption("Edits are applied one after another, each computed on the already-edited model; every k edits "
           "the model is evaluated. The base model is restored when the run ends or is stopped. "
           f"[Definitions of the curves]({ui.definition_url('sequential')})")

SEQ_STOP = "seq_stop_requested"  # set by the Stop button, cleared by Run; read between two edits
SEQ_RUNNING = "seq_run_finished"  # threading.Event of this session's latest run, set once it has ended
STOP_WAIT_S = 600  # how long a page shown after Stop waits for the run to store its partial result


def _request_stop() -> None:
    st.session_state[SEQ_STOP] = True


def _clear_stop() -> None:
    st.session_state[SEQ_STOP] = False


lm = ui.current_lm()
methods = [m["name"] for m in (ui.call(service.list_methods) or [])]
if not methods:
    st.info("No editing method is installed yet.")
    st.stop()
c1, c2, c3, c4 = st.columns([3, 1, 1, 1])
# MEMIT is the method made for many edits; ROME where MEMIT is not installed.
default = next(([m] for m in ("memit", "rome") if m in methods), methods[:1])
chosen = widgets.trained_only(lm, c1.multiselect("Methods (overlaid)", methods, default=default, key="seq_methods"))
n_edits = c2.number_input("Edits", 1, service.SEQ_MAX_EDITS, 20, key="seq_n")
every = c3.number_input("Evaluate every k", 1, service.SEQ_MAX_EDITS, 5, key="seq_every")
seed = c4.number_input("Seed", 0, 10**6, 0, key="seq_seed")
sources = ["catalog"] + [f"benchmark:{b}" for b in (ui.call(service.benchmark_names) or [])]
c5, c6 = st.columns([3, 1])
source = c5.selectbox("Facts (drawn at random with the seed, one per subject)", sources, key="seq_source")
known = c6.checkbox("known by this model", key="seq_known")
b1, b2 = st.columns([1, 5])
run = b1.button("Run", key="seq_run", type="primary", on_click=_clear_stop)
b2.button("Stop", key="seq_stop", on_click=_request_stop,
          help="Stops after the edit in progress; what was measured so far is kept and shown.")

cfg = ui.call(service.sequential_config, chosen, int(n_edits), source, int(seed), min(int(every), int(n_edits)),
              st.session_state.get("seq_overrides"), known)
if cfg is None:
    st.stop()

# The status box goes above the charts, so the progress stays in view while the curves grow below it.
status_slot = st.container()
chart_slots = {key: st.empty() for key in labels.SEQ_CURVES}


draws = [0]  # live redraws replace the charts in place; each redraw needs fresh element keys


def draw(result: dict) -> None:
    draws[0] += 1
    # † marks a method whose run carries an EditScope adaptation of its paper (MEMIT on Gemma).
    runs = {f"{name} †" if r.get("adaptation") else name: r["points"] for name, r in result["runs"].items()}
    # Shielded: a click while a live chart is drawn must stop the run between edits, not abort it here.
    with ui.shield():
        for key, (label, log_y) in labels.SEQ_CURVES.items():
            if any(p.get(key) is not None for pts in runs.values() for p in pts):
                y_range = (0.0, 1.0) if key in labels.SEQ_RATE_CURVES else None
                chart_slots[key].plotly_chart(charts.curves(runs, key, label, log_y=log_y, y_range=y_range),
                                              key=f"seq_{key}_{draws[0]}")


if run:
    # A click (Stop) during the run reaches it as a stop/rerun request, not through Stop's on_click; the
    # box defers that request and reports it as ``interrupted`` (and with Streamlit's fast reruns the new
    # page run sets the Stop flag while this one still works), so the run ends after the current edit
    # and stores what it measured.
    finished = threading.Event()
    st.session_state[SEQ_RUNNING] = finished
    try:
        with status_slot, ui.status_box(f"{cfg['n_edits']} sequential edits", defer_interrupts=True) as progress:
            result = ui.call(service.sequential_run, lm, cfg, progress, draw,
                             lambda: progress.interrupted or bool(st.session_state.get(SEQ_STOP)))
            if result and any(r.get("stopped_after") is not None for r in result["runs"].values()):
                progress.mark("stopped")
    finally:
        finished.set()
else:
    # With fast reruns (Streamlit's default) the page runs again at once after a click, while the run it
    # interrupted finishes its edit: wait for it, or the result read below would be its previous state.
    pending = st.session_state.get(SEQ_RUNNING)
    if pending is not None and not pending.is_set():
        with st.spinner("stopping after the edit in progress…"):
            pending.wait(STOP_WAIT_S)
    result = ui.call(service.sequential_cached, lm, cfg)
    if result is None:
        st.info("Set up the run and press **Run**. Results are kept on disk, keyed by this configuration.")
        st.stop()
    st.caption("stored result for this configuration")
if result is None:
    st.stop()

draw(result)
for name, r in result["runs"].items():
    last = r["points"][-1] if r["points"] else {}
    evaluated, done = last.get("n_edits", 0), r.get("stopped_after")
    if r.get("complete"):
        state = "complete"
    elif done is None:  # stored by an older version that did not record the count
        state = f"stopped after {evaluated} evaluated edits"
    else:
        state = (f"stopped after {done} edit{'' if done == 1 else 's'}"
                 + (f" (last evaluated after {evaluated})" if done != evaluated else ""))
    st.markdown(f"**{ui.escape_md(name)}**: {state}; {r.get('edit_seconds', 0.0):.1f} s spent computing edits; "
                f"retention {ui.fmt(last.get('retention'))}, neighbourhood score "
                f"{ui.fmt(last.get('neighbourhood_score'))}")
