"""Compare methods: one fact, several methods, every metric side by side."""

import pandas as pd
import streamlit as st

from app import charts, labels, ui, widgets
from editcore import service

st.title("Compare methods")

lm = ui.current_lm()
spec = widgets.fact_picker("cmp", lm)
methods = [m["name"] for m in (ui.call(service.list_methods) or [])]
if not methods:
    st.info("No editing method is installed yet.")
    st.stop()
st.markdown("**Methods**")
cols = st.columns(len(methods))
chosen = [name for col, name in zip(cols, methods)
          if col.checkbox(name, value=name in ("rome", "memit", "ft_l"), key=f"cmp_m_{name}")]
chosen = widgets.trained_only(lm, chosen)
overrides = {name: widgets.hparam_editor("cmp", name, lm.name) for name in chosen}
c1, c2 = st.columns([1, 5])
run = c1.button("Compare", key="cmp_run", type="primary")
quick = widgets.quick_toggle("cmp", c2)

# What the form asks for now; the result on show remembers the form it came from.
form = {"model": lm.name, "spec": spec, "methods": chosen, "overrides": overrides, "quick": quick}
if run and spec is not None and all(v is not None for v in overrides.values()):
    with ui.status_box(f"Running {len(chosen)} methods") as progress:
        st.session_state["cmp_result"] = ui.call(service.compare_methods, lm, spec, chosen, overrides, progress,
                                                 quick=quick)
        st.session_state["cmp_result_form"] = form
result = st.session_state.get("cmp_result")
if not result:
    st.info("Choose a fact and some methods, then press **Compare**. Each run is cached, so the detailed "
            "view of a method opens instantly.")
    st.stop()

ui.stale_caption(st.session_state.get("cmp_result_form"), form, "Compare")

metrics = list(labels.SCORECARD)
# Three significant digits, as in the heatmap; a missing value is "—" (st.dataframe shows a missing number as
# "None", also through a Styler's na_rep), never a zero.
table = pd.DataFrame([{"method": charts.method_label(r), "preset": r.get("preset") or "—",
                       **{label: charts.fmt_sig(r.get(key)) for key, label, _h in metrics}} for r in result["rows"]])
st.dataframe(table, hide_index=True, key="cmp_table")
st.caption(ui.definitions_caption(key for key, _label, _h in metrics) + " · — : no value for this fact")
for r in result["rows"]:
    if r.get("adaptation"):
        st.caption(f"† {ui.escape_md(r['method'])}: EditScope adaptation — {ui.escape_md(r['adaptation'])}")
cached = [name for name, r in result["results"].items() if r.get("cached")]
if cached:
    st.caption(f"From the results cache, not recomputed: {', '.join(cached)} (Seconds are those of the run "
               "that computed them).")
if any((r.get("evaluation") or {}).get("quick") for r in result["results"].values()):
    st.caption("Quick evaluation: Fluency was not computed (— cells, not zeros).")
st.caption("Heatmap colour: within each row, green is the best method and red the worst (ties at the best "
           "value are all green); the cell text is the raw value.")
c1, c2 = st.columns(2)
with c1:
    st.plotly_chart(charts.compare_heatmap(result["rows"], metrics), key="cmp_heat")
with c2:
    rates = [m for m in metrics if m[0] in ("efficacy", "generalisation", "neighbourhood", "portability")]
    st.plotly_chart(charts.compare_radar(result["rows"], rates), key="cmp_radar")

st.markdown("**Detailed view of one method** (opens the Edit page with the same fact, method and settings)")
bcols = st.columns(max(len(result["rows"]), 1))
for col, row in zip(bcols, result["rows"]):
    if col.button(f"details: {row['method']}", key=f"cmp_detail_{row['method']}"):
        # Copy this page's fact and hyper-parameter widgets onto the Edit page's keys.
        copied = {"edit" + k[len("cmp"):]: v for k, v in st.session_state.items()
                  if isinstance(k, str) and k.startswith(widgets.copyable("cmp"))}
        copied["edit_method"] = row["method"]
        st.session_state["edit_prefill"] = {"widgets": copied}
        st.switch_page(ui.page("edit"))
