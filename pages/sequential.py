"""Sequential edits: many edits one after another; watch the model degrade."""

import streamlit as st

from app import ui
from editcore import charts, service

st.title("Sequential edits")
st.caption("Edits are applied one after another, each computed on the already-edited model; every k edits "
           "the model is evaluated. The base model is restored when the run ends or is stopped.")

lm = ui.current_lm()
methods = [m["name"] for m in (ui.call(service.list_methods) or [])]
if not methods:
    st.info("No editing method is installed yet.")
    st.stop()
c1, c2, c3, c4 = st.columns([3, 1, 1, 1])
chosen = c1.multiselect("Methods (overlaid)", methods, default=["rome"] if "rome" in methods else methods[:1],
                        key="seq_methods")
n_edits = c2.number_input("Edits", 1, service.SEQ_MAX_EDITS, 20, key="seq_n")
every = c3.number_input("Evaluate every k", 1, service.SEQ_MAX_EDITS, 5, key="seq_every")
seed = c4.number_input("Seed", 0, 10**6, 0, key="seq_seed")
sources = ["catalog"] + [f"benchmark:{b}" for b in (ui.call(service.benchmark_names) or [])]
c5, c6 = st.columns([3, 1])
source = c5.selectbox("Facts (drawn at random with the seed, one per subject)", sources, key="seq_source")
known = c6.checkbox("known by this model", key="seq_known")
b1, b2 = st.columns([1, 5])
run = b1.button("Run", key="seq_run", type="primary")
b2.button("Stop", key="seq_stop", help="Stops between edits; what was measured so far is kept.")

cfg = ui.call(service.sequential_config, chosen, int(n_edits), source, int(seed), min(int(every), int(n_edits)),
              st.session_state.get("seq_overrides"), known)
if cfg is None:
    st.stop()

chart_slots = {key: st.empty() for key in service.SEQ_CURVES}


draws = [0]  # live redraws replace the charts in place; each redraw needs fresh element keys


def draw(result: dict) -> None:
    draws[0] += 1
    runs = {name: r["points"] for name, r in result["runs"].items()}
    for key, (label, log_y) in service.SEQ_CURVES.items():
        if any(p.get(key) is not None for pts in runs.values() for p in pts):
            chart_slots[key].plotly_chart(charts.curves(runs, key, label, log_y=log_y), key=f"seq_{key}_{draws[0]}")


if run:
    with ui.status_box(f"{cfg['n_edits']} sequential edits") as progress:
        result = ui.call(service.sequential_run, lm, cfg, progress, draw)
else:
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
    state = "complete" if r.get("complete") else f"stopped after {last.get('n_edits', 0)} evaluated edits"
    st.markdown(f"**{ui.escape_md(name)}**: {state}; {r.get('edit_seconds', 0.0):.1f} s spent computing edits; "
                f"retention {ui.fmt(last.get('retention'))}, neighbourhood score "
                f"{ui.fmt(last.get('neighbourhood_score'))}")
