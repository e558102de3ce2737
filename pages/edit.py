"""Edit a fact: choose a fact, a new target and a method; see what the edit does."""

import streamlit as st

from app import render, ui, widgets
from editcore import service

st.title("Edit a fact")

# Coming from the Compare page ("details"): pre-fill the widgets once, then run from the cache.
prefill = st.session_state.pop("edit_prefill", None)
if prefill:
    for k, v in prefill["widgets"].items():
        st.session_state[k] = v

# Links may carry the fact and method (?fact=P276:louvre&method=rome); they seed the widgets once.
if not st.session_state.get("edit_query_applied"):
    st.session_state["edit_query_applied"] = True
    if st.query_params.get("fact"):
        st.session_state["edit_source"] = "Catalog"
        st.session_state["edit_fact"] = st.query_params["fact"]
    if st.query_params.get("method"):
        st.session_state["edit_method"] = st.query_params["method"]

lm = ui.current_lm()
spec = widgets.fact_picker("edit", lm)
methods = [m["name"] for m in (ui.call(service.list_methods) or [])]
if not methods:
    st.info("No editing method is installed yet.")
    st.stop()
if st.session_state.get("edit_method") not in methods:
    st.session_state["edit_method"] = "rome" if "rome" in methods else methods[0]
method = st.selectbox("Method", methods, key="edit_method")
ready = bool(widgets.trained_only(lm, [method]))
overrides = widgets.hparam_editor("edit", method, lm.name)
c1, c2, c3 = st.columns([1, 1, 4])
run = c1.button("Run edit", key="edit_run", type="primary") or bool(prefill)
c2.button("Stop", key="edit_stop", help="Interrupts the running edit; the model is restored.")
quick = widgets.quick_toggle("edit", c3)

if st.session_state.get("edit_stop") and not run:
    st.warning("Stopped. The model was restored; nothing was kept.")
# What the form asks for now; the result on show remembers the form it came from.
form = {"model": lm.name, "spec": spec, "method": method, "overrides": overrides, "quick": quick}
if run and ready and spec is not None and overrides is not None:
    with ui.status_box(f"Editing with {method}") as progress:
        result = ui.call(service.run_edit, lm, spec, method, overrides, progress, quick=quick)
    st.session_state["edit_result"] = result  # a failed run must not leave the previous result on show
    st.session_state["edit_result_form"] = form

result = st.session_state.get("edit_result")
if result is None:
    st.info("Choose a fact, a new target and a method, then press **Run edit**.")
    st.stop()

ui.stale_caption(st.session_state.get("edit_result_form"), form, "Run edit")
render.full(result)
