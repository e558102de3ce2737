"""Generate: the unedited model's greedy continuation of a prompt (the foundation's smoke test)."""

import streamlit as st

from app import ui
from editcore import service

st.title("Generate")
st.caption("Greedy continuation by the unedited model: a quick check that the model loads and talks.")

prompt = st.text_area("Prompt", value="The Louvre is located in", key="gen_prompt", height=80)
max_new = st.slider("New tokens", 1, 128, 24, key="gen_max_new")
go = st.button("Generate", key="gen_run", type="primary")

if not go:
    st.info("Type a prompt and press **Generate**.")
    st.stop()

lm = ui.current_lm()
with ui.status_box("Generating") as progress:
    out = ui.call(service.generate, lm, prompt, max_new, progress)
if out is None:
    st.stop()

st.markdown(f"{ui.escape_md(out['prompt'])} :blue[**{ui.escape_md(out['continuation'])}**]")
st.caption(f"{out['model']} · {out['seconds']:.2f} s")
