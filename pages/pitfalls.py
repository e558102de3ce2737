"""Pitfall benchmarks: knowledge conflicts and distortion (Li et al., ICLR 2024), for this model."""

import pandas as pd
import streamlit as st

from app import labels, ui
from editcore import service

st.title("Pitfall benchmarks")
st.caption("Li et al., \"Unveiling the Pitfalls of Knowledge Editing for Large Language Models\", ICLR 2024: "
           "ConflictEdit (two edits that contradict each other; Table 3) and RoundEdit (edit o → o' and back; "
           f"Table 4). Definitions on the [Methods & metrics]({ui.definition_url('pitfalls')}) page.")

lm = ui.current_lm()
methods = [m["name"] for m in (ui.call(service.list_methods) or [])]
if not methods:
    st.info("No editing method is installed yet.")
    st.stop()
sources = st.multiselect("Benchmarks", list(service.PITFALL_SOURCES), default=list(service.PITFALL_SOURCES)[:2],
                         key="pit_sources",
                         help="; ".join(f"{k}: {labels.PITFALL_SOURCES[k]}" for k in service.PITFALL_SOURCES))
path = ""
if any("public" in s for s in sources):
    path = st.text_input("Local path of the public files (folder for ConflictEdit, file for RoundEdit; empty: "
                         "the shared data folder)", key="pit_path")
c1, c2 = st.columns([3, 1])
chosen = c1.multiselect("Methods", methods, default=["rome"] if "rome" in methods else methods[:1], key="pit_methods")
n_cases = c2.number_input("Cases per benchmark (and conflict type)", 1, 200, 5, key="pit_n")
run = st.button("Run", key="pit_run", type="primary")

if run:
    with ui.status_box("Running pitfall benchmarks") as progress:
        st.session_state["pit_result"] = ui.call(service.pitfall_run, lm, sources, chosen, int(n_cases),
                                                 path.strip() or None, st.session_state.get("pit_overrides"), progress)
result = st.session_state.get("pit_result")
if not result:
    st.info("Choose benchmarks and methods, then press **Run**. Each edit pair is computed on this model; "
            "results are cached on disk.")
    st.stop()

published = result["published_gptj"]
st.subheader(f"Table 3 layout: knowledge conflict ({ui.escape_md(result['model'])})")
if result["table3"]:
    df = pd.DataFrame(result["table3"])
    df["published GPT-J (Li et al. 2024)"] = None
    st.dataframe(df, hide_index=True, key="pit_t3")
else:
    st.caption("no conflict benchmark in this run")
st.subheader(f"Table 4 layout: knowledge distortion ({ui.escape_md(result['model'])})")
if result["table4"]:
    df = pd.DataFrame(result["table4"])
    df["published GPT-J (Li et al. 2024)"] = None
    st.dataframe(df, hide_index=True, key="pit_t4")
else:
    st.caption("no round-trip benchmark in this run")
st.caption(f"Reference column: {ui.escape_md(published['note'])}. It is left empty on purpose rather than "
           "filled from memory. CS/Succ are rates (higher is better); CM, TFD, D, IR, FR: lower is better.")
