"""Edit a fact: choose a fact, a new target and a method; see what the edit does, and what else it changed."""

import streamlit as st

from app import render, share, ui, widgets
from editcore import service

st.title("Edit a fact")

# Coming from the Compare page ("details"): pre-fill the widgets once, then run from the cache.
prefill = st.session_state.pop("edit_prefill", None)
if prefill:
    for k, v in prefill["widgets"].items():
        st.session_state[k] = v

# A shared link (?src=free&prompt=…&method=rome&hp=…) seeds the form once per session.
from_link = share.restore("edit")

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
scan_on, scan_catalog, scan_texts = widgets.impact_options("edit")
c1, c2, c3, c4 = st.columns([1, 1, 3, 1])
run = c1.button("Run edit", key="edit_run", type="primary") or bool(prefill)
c2.button("Stop", key="edit_stop", help="Interrupts the running edit; the model is restored.")
quick = widgets.quick_toggle("edit", c3)
params = share.state(lm.name, spec, method, overrides, quick, scan_on, scan_catalog)
share.write(params)
with c4.popover("🔗 Copy link", help="A link to this form (and, once computed, its result)"):
    st.caption("Opening this link fills in the same form and shows the result when it is cached. The icon at the "
               "box's right copies it.")
    st.code(share.link(params), language=None, wrap_lines=True)

if st.session_state.get("edit_stop") and not run:
    st.warning("Stopped. The model was restored; nothing was kept.")
# What the form asks for now; the result on show remembers the form it came from.
form = {"model": lm.name, "spec": spec, "method": method, "overrides": overrides, "quick": quick}
pool = {"catalog": scan_catalog, "texts": scan_texts}
if from_link and not run and spec is not None and overrides is not None and "edit_result" not in st.session_state:
    cached = ui.call(service.cached_edit, lm, spec, method, overrides, quick)
    if cached is not None:
        st.session_state["edit_result"], st.session_state["edit_result_form"] = cached, form
        st.session_state["edit_impact"] = ui.call(service.impact_cached, lm, cached, **pool) if scan_on else None

view = None
if run and ready and spec is not None and overrides is not None:
    with ui.status_box(f"Editing with {method}") as progress:
        view = render.ResultView()
        result = ui.call(service.run_edit, lm, spec, method, overrides, progress, quick=quick, on_stage=view.show)
        view.show("views", result)  # a result from the cache had no stages
        st.session_state["edit_result"] = result  # a failed run must not leave the previous result on show
        st.session_state["edit_result_form"] = form
        st.session_state["edit_impact"] = None
        if result is not None and scan_on:
            st.session_state["edit_impact"] = ui.call(
                service.impact_scan, lm, result, progress=progress,
                on_chunk=lambda v: view.show_impact(v, final=False), **pool)

result = st.session_state.get("edit_result")
if result is None:
    st.info("Choose a fact, a new target and a method, then press **Run edit**.")
    st.stop()

ui.stale_caption(st.session_state.get("edit_result_form"), form, "Run edit")
if view is None:
    view = render.ResultView()
    view.show("views", result)
scan = st.session_state.get("edit_impact")
if scan and scan.get("edit_key") == result.get("key"):
    view.show_impact(service.impact_view(scan["rows"], len(scan["rows"]), True), scan)
elif scan_on:
    with view.slots["impact"].container():
        st.subheader("Impact scan: what else did this edit change?", help=render.IMPACT_HELP)
        if st.button("Scan now", key="edit_scan_now", help="Scans the pool for this result."):
            with ui.status_box("Impact scan") as progress:
                scan = ui.call(service.impact_scan, lm, result, progress=progress, **pool)
            st.session_state["edit_impact"] = scan
            st.rerun()
        st.caption("Not scanned for this result yet.")
