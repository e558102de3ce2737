"""Where is the fact? Causal tracing and the logit lens of one fact, before and after an edit."""

import streamlit as st

from app import charts, ui, widgets
from editcore import service

st.title("Where is the fact?")
st.caption("Causal tracing (Meng et al. 2022): the subject's embeddings are noised, then one clean state at a time "
           "is put back. A dark cell is a (token, layer) whose clean state brings the answer back: there the fact "
           "is carried. Locate-then-edit methods assume it sits in mid-layer MLPs at the subject's last token; "
           "Hase et al. (2023) found that where a fact is located predicts poorly where editing works. The logit "
           "lens reads what every layer would predict if the model stopped there.")

# Links may carry the fact (?fact=P276:louvre, or a free-form ?prompt=…&subject=…) and the method (&method=rome);
# they seed the widgets once.
if not st.session_state.get("trace_query_applied"):
    st.session_state["trace_query_applied"] = True
    if st.query_params.get("fact"):
        st.session_state["trace_source"] = "Catalog"
        st.session_state["trace_fact"] = st.query_params["fact"]
    elif st.query_params.get("prompt"):  # a free-form fact: ?prompt=…&subject=…&old=…&new=…
        st.session_state["trace_source"] = "Free-form"
        for field in ("prompt", "subject", "old", "new"):
            st.session_state[f"trace_{field}"] = st.query_params.get(field, "")
    if st.query_params.get("method"):
        st.session_state["trace_method"] = st.query_params["method"]

info = ui.call(service.trace_settings_info)
if info is None:
    st.stop()
lm = ui.current_lm()
spec = widgets.fact_picker("trace", lm)
methods = [m["name"] for m in (ui.call(service.list_methods) or [])]
NO_EDIT = "no edit"
choices = methods + [NO_EDIT]
if st.session_state.get("trace_method") not in choices:
    st.session_state["trace_method"] = "rome" if "rome" in methods else choices[0]
c1, c2 = st.columns([1, 1])
method = c1.selectbox("Edit with", choices, key="trace_method",
                      help="The edited model is traced towards the new target, beside the unedited one.")
defaults = info["defaults"]
samples = c2.slider("Noise samples", 1, 16, defaults["samples"], key="trace_samples",
                    help=f"Noise draws averaged per restored state (the paper: {info['paper_samples']}). "
                         "Time grows with it.")
with st.expander("More trace settings"):
    c1, c2, c3 = st.columns(3)
    noise = c1.number_input("Noise (x embedding std)", 0.1, 100.0, float(defaults["noise"]), step=0.5,
                            key="trace_noise", help="The paper: 3 times the standard deviation of the embeddings.")
    window = int(c2.number_input("Window (layers, 0 = auto)", 0, 256, int(defaults["window"]), key="trace_window",
                                 help=f"MLP and attention states are restored over a window of layers around each "
                                      f"centre: the paper's {info['paper_window']} of 48; auto keeps that fraction "
                                      "of this model's depth."))
    seed = int(c3.number_input("Seed", 0, 10**6, int(defaults["seed"]), key="trace_seed"))
overrides = None if method == NO_EDIT else widgets.hparam_editor("trace", method, lm.name)
settings = {"samples": int(samples), "noise": float(noise), "window": window, "seed": seed}
run = st.button("Trace", key="trace_run", type="primary")

form = {"model": lm.name, "spec": spec, "method": method, "overrides": overrides, "settings": settings}
if run and spec is not None and (method == NO_EDIT or overrides is not None):
    with ui.status_box("Tracing") as progress:
        result = ui.call(service.trace_fact, lm, spec, None if method == NO_EDIT else method, overrides, settings,
                         progress)
    st.session_state["trace_result"] = result
    st.session_state["trace_result_form"] = form

result = st.session_state.get("trace_result")
if result is None:
    st.info("Choose a fact (and an edit), then press **Trace**. A trace of a 10-token prompt on Gemma-3-270M takes "
            "about half a minute on two CPU cores; results are cached.")
    st.stop()
ui.stale_caption(st.session_state.get("trace_result_form"), form, "Trace")

req = result["request"]
before, after = result["before"], result["after"]
tb = before["trace"]
st.markdown(f"**{ui.escape_md(result['prompt'])}** → old answer **{ui.escape_md(req['target_true'])}**, new target "
            f"**{ui.escape_md(req['target_new'])}**")
for w in result.get("warnings") or []:
    st.warning(w)
tr_any = after["trace"] if after else tb
st.caption(f"{tb['settings']['samples']} noise samples of {tb['settings']['noise']:g} x the embedding std "
           f"({tb['noise_std']:.3g}, measured on {ui.escape_md(tb['noise_corpus'].split(':')[0])}); MLP and "
           f"attention windows of {tr_any['kinds']['mlp']['window']} layers; answers are read at their first token. "
           f"Subject tokens are starred.")


def column_header(col, title: str, bundle: dict) -> None:
    tr = bundle["trace"]
    col.markdown(f"**{title}**")
    col.caption(f"P({ui.escape_md(tr['answer'])}) clean {tr['high']:.3g} · subject noised {tr['low']:.3g}"
                + (" · from the cache" if bundle.get("cached") else f" · traced in {tr['seconds']:.1f} s"))


cols = st.columns(2 if after else 1)
column_header(cols[0], "Before the edit", before)
if after:
    edit = after.get("edit") or {}
    layer = f" at layer {edit['layer']}" if edit.get("layer") is not None else ""
    column_header(cols[1], f"After the {result['method']['name']} edit{layer}", after)
    for w in edit.get("warnings") or []:
        cols[1].warning(w)
for kind in ("hidden", "mlp", "attn"):
    cols[0].plotly_chart(charts.trace_heatmap(tb, kind), key=f"trace_before_{kind}")
    if after:
        cols[1].plotly_chart(charts.trace_heatmap(after["trace"], kind), key=f"trace_after_{kind}")

st.subheader("Logit lens")
st.caption("Each layer's residual stream through the final norm and the unembedding: the probability of the old and "
           "the new target's first token if the model stopped there (solid: before the edit, dashed: after).")
c1, c2 = st.columns(2)
lens_after = after["lens"] if after else None
c1.plotly_chart(charts.logit_lens_chart(before["lens"], lens_after, "last"), key="trace_lens_last")
c2.plotly_chart(charts.logit_lens_chart(before["lens"], lens_after, "subject_last"), key="trace_lens_subject")

st.subheader("Average over known facts")
st.caption("The paper's summary: the average indirect effect of each kind of state per layer and token category, "
           "over catalog facts this model knows, and the ROME layer it suggests.")
c1, c2 = st.columns([1, 4])
n_facts = int(c1.number_input("Facts", 1, 50, 10, key="trace_summary_n"))
if c2.button("Average", key="trace_summary_run"):
    with ui.status_box(f"Tracing {n_facts} facts") as progress:
        st.session_state["trace_summary"] = ui.call(service.trace_summary, lm, n_facts, settings, progress)
summary = st.session_state.get("trace_summary")
if summary and summary.get("model") == lm.name:
    s, adv = summary["summary"], summary["advice"]
    c1, c2, c3 = st.columns(3)
    for col, kind in zip((c1, c2, c3), ("hidden", "mlp", "attn")):
        col.plotly_chart(charts.trace_average(s, kind), key=f"trace_avg_{kind}")
    lines = [f"Strongest MLP effect at the subject's last token in {s['strongest_mlp_at_subject_last']} of "
             f"{s['n_facts']} facts.",
             f"Suggested ROME layer (largest MLP effect at the subject's last token): **{adv['traced_layer']}**; "
             f"the rule for models without a sweep (a third of the way up): {adv['rule_layer']}"]
    if adv.get("shipped_layer") is not None:
        lines.append(f"shipped hyper-parameters: layer {adv['shipped_layer']}")
    if adv.get("sweep_best_layer") is not None:
        swept = ", ".join(f"{r['layer']} ({r['success']:.0%} success, NS {r['neighbourhood']:.2f})"
                          for r in adv["sweep"])
        lines.append(f"best layer of the committed sweep: {adv['sweep_best_layer']} (swept: {swept})")
    st.markdown(" · ".join(lines))
