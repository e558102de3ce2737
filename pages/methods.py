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
st.markdown("**Presets.** Methods with a *Reference preset* toggle (ROME, MEMIT, EMMET, PMET, AlphaEdit, FT, "
            "FT-L) run as their paper's released code does when it is on: ROME and the MEMIT family stop on the "
            "loss only, use the papers' context prefixes (the MEMIT family averages keys per context type) and statistics from the whole corpus given (a "
            "warning says when that is fewer tokens than the papers' 100,000 Wikipedia articles); FT trains as "
            "ROME's baseline (loss at the prompt's last token, no stop at top-1); fluency is sampled as ROME does. "
            "Off: EditScope's faster defaults. Every result records its preset; † marks a result that carries an "
            "EditScope adaptation of its paper (MEMIT's post-norm step on Gemma).")


def metric(anchor: str, title: str, text: str, reference: str, difference: str, latex: str | None = None) -> None:
    """One metric: its definition, the reference it follows and what still differs, one line each."""
    st.header(title, anchor=anchor)
    st.markdown(text)
    if latex:
        st.latex(latex)
    st.caption(f"Reference: {reference} · Difference: {difference}")


metric("efficacy", "Efficacy",
       "CounterFact **efficacy score** (ES): on the edit prompt $p$, the new target $o^*$ must be more likely than "
       "the true one $o^c$. P compares mean token negative log-likelihoods, as ROME's code does (the report also "
       "gives the product of token probabilities, the paper's text; they differ for multi-token targets). "
       "**EM**: $P(o^*) - P(o^c)$ with $P = e^{-\text{mean NLL}}$.",
       "Meng et al. 2022; kmeng01/rome `eval_utils_counterfact.test_batch_prediction`, `summarize.py`",
       "prompt and target are tokenised apart (ROME tokenises them together); ties count as failures",
       r"\mathrm{ES} = \mathbb{E}_p\,\mathbb{1}\left[\overline{\mathrm{NLL}}(o^c \mid p) > "
       r"\overline{\mathrm{NLL}}(o^* \mid p)\right]")
metric("generalisation", "Generalisation",
       "**Paraphrase score** (PS): the same comparison averaged over paraphrases of the edit prompt; **PM** its "
       "magnitude.", "Meng et al. 2022 (as ES)", "none beyond ES's")
metric("neighbourhood-score", "Neighbourhood score",
       "**Neighbourhood score** (NS): on prompts about *other* subjects that share the old answer, the old answer "
       "must still beat the new target; **NM** its magnitude. The CounterFact **Score** of a set of facts is the "
       "harmonic mean of the set's ES, PS and NS (each a fact's mean over its prompts, averaged over facts), not "
       "a mean of per-fact Scores.",
       "Meng et al. 2022; ROME's `summarize.py` (hmean of the dataset-level rates)", "none beyond ES's",
       r"\mathrm{NS} = \mathbb{E}_{n}\,\mathbb{1}\left[P(o^c \mid n) > P(o^* \mid n)\right],\qquad "
       r"\mathrm{Score} = \mathrm{H}(\mathrm{ES}, \mathrm{PS}, \mathrm{NS})")
metric("token-accuracy", "Token accuracy and token top-1",
       "EasyEdit's **token accuracy**: the share of the target's tokens that are the teacher-forced argmax. The "
       "bench's **token top-1** asks for all of them at once (greedy decoding starts with the target): a "
       "token-level measure, stricter than ES.",
       "Yao et al. 2023 / EasyEdit `compute_rewrite_quality`", "none")
metric("nkl", "NKL",
       "**Neighbourhood KL**: the KL divergence between the next-token distributions before and after the edit "
       "on each neighbourhood prompt, in nats. *Distracted* prompts prepend the edit sentence (\"The Louvre is "
       "located in London.\") to the neighbour prompt.",
       "Hoelscher-Obermaier et al. 2023 (CounterFact+), apartresearch/specificityplus",
       "EditScope reports the true KL in nats; divide by the vocabulary size for specificityplus' numbers",
       r"\mathrm{NKL}(n) = \sum_{w} P_\text{pre}(w \mid n)\,\log\frac{P_\text{pre}(w \mid n)}{P_\text{post}(w \mid n)}")
metric("portability", "Portability",
       "**Portability**: token accuracy (and greedy exact match) on probes that need the edited fact: "
       "**Subject-Replace** (an alias of the subject: the edit template with the alias, or zsRE's "
       "`alter_subject_question`), **Reverse-Relation** (zsRE's `inverse question`) and **One-Hop** (the "
       "`portability` New Question).",
       "Yao et al. 2023; EasyEdit `compute_portability_quality`", "greedy exact match is an extra EditScope view")
metric("locality", "Locality",
       "**Other-Attribution**: other attributes of the subject keep their argmax tokens (`unrelated_relation`); "
       "**Distract-Neighbour**: neighbour prompts after the edit sentence keep their answer (NS, argmax "
       "agreement); **Other-Task**: the downstream probes below, before vs after.",
       "Yao et al. 2023; EasyEdit `compute_locality_quality`", "none")
metric("fluency", "Fluency",
       "**Fluency**: ROME's weighted n-gram entropy of generated text; repetitive output has low entropy. "
       "*Reference* (the reference preset): every generation prompt, top-k 5 samples up to 100 tokens, entropy "
       "over prompt and text. *Quick* (the dashboard's default): 16 greedy tokens of two prompts.",
       "ROME `test_generation` / `n_gram_entropy`",
       "words are split by a regular expression (ROME: nltk's word_tokenize); the quick variant is not ROME's",
       r"H = \tfrac{1}{2}\left(\tfrac{2}{3} H_2 + \tfrac{4}{3} H_3\right),\qquad H_n = -\sum_{g} f(g)\log_2 f(g)")
metric("general", "General abilities",
       "Downstream probes before and after the edit, each with its standard error and that of the paired change: "
       "SST-2 sentiment (zero-shot instruction, the label with the higher likelihood), PIQA (length-normalised "
       "likelihood), GSM8K (worked solution, then the final number), NQ-open (closed-book exact match) and "
       "SAMSum (TL;DR, mean ROUGE-1/2/L); plus perplexity on held-out text. Real task files when present, else "
       "the freely licensed sets in `data/probes/`.",
       "Gu et al. 2024 (JasonForJoy/Model-Editing-Hurt), the survey's Figure 4",
       "sentiment compares label likelihoods (Gu et al. decode one token); NQ has no passage (Gu et al. add one)")
metric("time", "Time", "Wall-clock seconds to compute the edit (layer statistics included the first time), not "
       "the evaluation.", "—", "—")
metric("shifts", "Probability shifts",
       "- **Risers / fallers**: the tokens whose next-token log-probability changed most on subject, "
       "neighbourhood and unrelated prompts.\n- **Related words**: words tied to the new target (Big Ben, Thames "
       "for London) and to the old one, probability before vs after on the subject prompts.\n- **Bleed**: how "
       "often the new target became the top-1 next token on prompts where it should not.",
       "EditScope's own views (after the survey's Louvre → London example)", "no published counterpart")
metric("sequential", "Sequential editing",
       "- **Retention**: share of the edits made so far whose new target is still the top-1 prediction at every "
       "target token.\n- **Locality**: NS (ROME's convention) over a fixed set of neighbour prompts.\n- **Weight "
       "drift**: Frobenius norm of the sum of all applied weight changes.\n- **Perplexity / probe accuracy**: "
       "general abilities of the edited model (SST-2 and PIQA, 100 items each; standard error beside it).",
       "Gupta et al. 2024 (sequential collapse), Gu et al. 2024", "retention is token top-1, not ES")
metric("multihop", "Multi-hop (MQuAKE)",
       "**EW**: edits recalled from their cloze statement, pooled over all edits; **IW**: instances whose every new "
       "single hop is answered (edited hops as cloze, others as few-shot questions); **MH**: instances with any "
       "multi-hop question answered after few-shot (or chain-of-thought) demonstrations. Aliases count.",
       "Zhong et al. 2023, princeton-nlp/MQuAKE (prompt structure of `multihop-prompts.txt`)",
       "demonstrations are EditScope's own facts; one mixed single-hop set instead of one per relation")
metric("pitfalls", "Pitfalls",
       "Li et al. 2024 (ICLR). *θ* unedited, *θ′* after edit 1, *θ″* after edits 1 and 2.\n- **Conflict score** CS: "
       "share of cases where edit 2's fact beats edit 1's after both edits — *explicit* (edit 2's own fact; the "
       "default, as the released scripts) or *implicit* (what edit 2 implies for edit 1's query).\n- **Succ** "
       "(coverage): edit 2 alone beats edit 1's object.\n- **Conflict magnitude** CM: relative drop of edit 1's "
       "object probability caused by edit 2.\n- **Tied-fact damage** TFD: relative drop of the premise fact no edit "
       "touched (composite).\n- **RoundEdit**: edit o → o′ then back; **Succ** averages the two edits' success, "
       "**D** is the JS divergence over the subject's true objects, **IR** the share of other true objects whose "
       "probability fell, **FR** the share of cases with IR > 0.5.",
       "zjunlp/PitfallsKnowledgeEditing `evaluate_conflictedit.py`, `summarize.py`",
       "D is the true JS in nats (the code divides by the number of objects)",
       r"\mathrm{CM} = \frac{P_{\theta'}(o_1 \mid q_1) - P_{\theta''}(o_1 \mid q_1)}{P_{\theta'}(o_1 \mid q_1)}")

ui.rescroll_to_anchor()
