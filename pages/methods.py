"""Methods & metrics: what each editing method does and how each number on the other pages is defined."""

import streamlit as st

from app import ui
from editcore import service

st.title("Methods & metrics")
st.caption("Short definitions in EditScope's own words; the formulas follow the cited papers. Every metric "
           "label elsewhere links to its section here.")

st.header("Editing methods", anchor="methods")
# Every registered method describes itself (editcore.methods.base.MethodInfo), so a new one appears here.
_CATEGORY = {"fine-tuning": "Fine-tuning", "locate-then-edit": "Locate, then edit", "meta-learning":
             "Meta-learning (a trained editor)", "memory-based": "Memory-based (weights untouched)",
             "prompting": "Prompting (weights untouched)"}
_methods = ui.call(service.list_methods) or []
for category, title in _CATEGORY.items():
    group = [m for m in _methods if m["category"] == category]
    if not group:
        continue
    st.subheader(title)
    for m in group:
        traits = ["changes weights" if m["changes_weights"] else "leaves weights untouched",
                  "stacks sequential edits" if m["sequential"] else "one edit at a time",
                  "batches several facts" if m["batched"] else "one fact per edit"]
        st.markdown(f"**{m['title']}** ({m['reference']}) · {', '.join(traits)}")
        st.markdown(m["summary"])
        if m["adaptation"]:
            st.caption(f"EditScope adaptation: {m['adaptation']}")
st.latex(r"\text{ROME:}\quad \hat W = W + \frac{(v_* - W k_*)\,(C^{-1}k_*)^\top}{(C^{-1}k_*)^\top k_*}")

st.header("Efficacy", anchor="efficacy")
st.markdown("CounterFact **efficacy score** (ES): on the edit prompt $p$, the new target $o^*$ must be more "
            "likely than the true one $o^c$. Multi-token targets use the product of teacher-forced token "
            "probabilities.")
st.latex(r"\mathrm{ES} = \mathbb{E}_p\,\mathbb{1}\left[P(o^* \mid p) > P(o^c \mid p)\right]")
st.header("Generalisation", anchor="generalisation")
st.markdown("**Paraphrase score** (PS): the same comparison averaged over paraphrases of the edit prompt.")
st.header("Neighbourhood score", anchor="neighbourhood-score")
st.markdown("**Neighbourhood score** (NS): on prompts about *other* subjects that share the old answer, the "
            "old answer must still beat the new target.")
st.latex(r"\mathrm{NS} = \mathbb{E}_{n}\,\mathbb{1}\left[P(o^c \mid n) > P(o^* \mid n)\right]")
st.markdown("The CounterFact **score** is the harmonic mean of ES, PS and NS.")
st.header("NKL", anchor="nkl")
st.markdown("**Neighbourhood KL** (Hoelscher-Obermaier et al. 2023, CounterFact+): the KL divergence between the "
            "next-token distributions before and after the edit on each neighbourhood prompt, in nats. "
            "*Distracted* prompts prepend the edit sentence (\"The Louvre is located in London.\") to the neighbour "
            "prompt, which exposes edits that fire on any mention of the new target.")
st.latex(r"\mathrm{NKL}(n) = \sum_{w} P_\text{pre}(w \mid n)\,\log\frac{P_\text{pre}(w \mid n)}{P_\text{post}(w \mid n)}")
st.header("Portability", anchor="portability")
st.markdown("**Portability** (Yao et al. 2023): token accuracy on questions that need the edited fact plus one "
            "more step (one-hop), a different name for the subject, or the reversed relation.")
st.header("Fluency", anchor="fluency")
st.markdown("**Fluency**: ROME's weighted n-gram entropy of generated text; repetitive output has low entropy.")
st.latex(r"H = \tfrac{2}{3} H_2 + \tfrac{4}{3} H_3,\qquad H_n = -\sum_{g} f(g)\log_2 f(g)")
st.header("Time", anchor="time")
st.markdown("Wall-clock seconds to compute the edit (layer statistics included the first time), not the "
            "evaluation.")
st.header("Probability shifts", anchor="shifts")
st.markdown("- **Risers / fallers**: the tokens whose next-token log-probability changed most on subject, "
            "neighbourhood and unrelated prompts.\n"
            "- **Related words**: words tied to the new target (Big Ben, Thames for London) and to the old one "
            "(Eiffel Tower, Seine for Paris), probability before vs after on the subject prompts.\n"
            "- **Bleed**: how often the new target became the top-1 next token on prompts where it should not.")
st.header("Sequential editing", anchor="sequential")
st.markdown("- **Retention**: share of the edits made so far whose new target is still the top-1 prediction at "
            "every target token (teacher-forced).\n"
            "- **Locality**: neighbourhood score over a fixed set of neighbour prompts of all facts in the run.\n"
            "- **Weight drift**: Frobenius norm of the sum of all applied weight changes.\n"
            "- **Perplexity / probe accuracy**: general abilities of the edited model, when the metrics provide "
            "them.")
st.header("Pitfalls", anchor="pitfalls")
st.markdown("Li et al. 2024 (ICLR). *θ* unedited, *θ′* after edit 1, *θ″* after edits 1 and 2.\n"
            "- **Conflict score** CS: share of cases where what edit 2 implies beats edit 1's object after both "
            "edits.\n"
            "- **Conflict magnitude** CM: relative drop of edit 1's object probability caused by edit 2.\n"
            "- **Tied-fact damage** TFD: relative drop of the premise fact that no edit touched (composite).\n"
            "- **RoundEdit**: edit o → o′ then back; **Succ** averages the two edits' success, **D** is the JS "
            "divergence between the distributions over the subject's true objects before and after the round "
            "trip, **IR** the share of other true objects whose probability fell, **FR** the share of cases "
            "with IR > 0.5.")
st.latex(r"\mathrm{CM} = \frac{P_{\theta'}(o_1 \mid q_1) - P_{\theta''}(o_1 \mid q_1)}{P_{\theta'}(o_1 \mid q_1)}")

ui.rescroll_to_anchor()
