"""Guided tour: the pitfalls of knowledge editing, one step each, on the model in front of the class."""

import streamlit as st

from app import tour_render, ui
from editcore import service

st.title("Guided tour of the pitfalls")
st.caption("Eight steps through what goes wrong when a fact is edited (after the survey “Editing the Mind of "
           "Giants”, Hsueh et al. 2024). Each step edits facts from the catalog on this model until one shows the "
           "effect, and says so when none does. Results are cached: the second run of a step is instant.")

lm = ui.current_lm()
methods = [m["name"] for m in (ui.call(service.list_methods) or [])]
steps = ui.call(service.tour_steps) or []
if not methods or not steps:
    st.info("No editing method is installed yet.")
    st.stop()
by_id = {s["id"]: s for s in steps}
if st.session_state.get("tour_method") not in methods:
    st.session_state["tour_method"] = "rome" if "rome" in methods else methods[0]
c1, c2, c3 = st.columns([2, 1, 1])
method = c1.selectbox("Method that makes the edits", methods, key="tour_method",
                      help="ROME is the survey's running example; step 7 adds a weight-preserving method beside it.")
budget = int(c2.number_input("Facts to try per step", 1, 20, 4, key="tour_budget",
                             help="The search stops at the first case that shows the effect."))
n_edits = int(c3.number_input("Edits in step 7", 2, service.SEQ_MAX_EDITS, 10, key="tour_n_edits"))
overrides = st.session_state.get("tour_overrides")  # per method; set by tests for tiny models


def _next() -> None:
    ids = list(by_id)
    st.session_state["tour_step"] = ids[(ids.index(st.session_state["tour_step"]) + 1) % len(ids)]


chosen = st.radio("Step", list(by_id), key="tour_step", horizontal=True,
                  format_func=lambda i: f"{by_id[i]['number']}. {by_id[i]['title'].split(':')[0]}")
s = by_id[chosen]
st.header(f"{s['number']}. {s['title']}")
st.markdown(ui.escape_md(s["explain"]))
if s["needs"]:
    st.caption(f"Needs {ui.escape_md(s['needs'])}.")
b1, b2, b3 = st.columns([1, 1, 3])
run = b1.button(f"Run step {s['number']}", key="tour_run", type="primary")
run_all = b2.button("Run the whole tour", key="tour_run_all")
b3.button("Next step →", key="tour_next", on_click=_next)

results = st.session_state.setdefault("tour_results", {})
form = (lm.name, method, budget, n_edits, repr(overrides))
todo = list(by_id) if run_all else [chosen] if run else []
for sid in todo:
    with ui.status_box(f"Step {by_id[sid]['number']}: {by_id[sid]['title']}") as progress:
        results[(form, sid)] = ui.call(service.tour_step, lm, sid, method, overrides, budget, n_edits, progress)

res = results.get((form, chosen))
if res is None:
    res = ui.call(service.tour_cached, lm, chosen, method, overrides, budget, n_edits)
if res is None:
    st.info(f"Press **Run step {s['number']}** to search this model for a case that shows it "
            "(a first run computes real edits: from seconds to minutes on a CPU).")
    st.stop()
tour_render.step(res)
