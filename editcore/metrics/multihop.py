"""Multi-hop consistency (MQuAKE; Zhong et al. 2023, "MQuAKE: Assessing Knowledge Editing in Language
Models via Multi-Hop Questions", §3.3), on the model *after all edits of an instance* are applied:

* EW, edit-wise success: fraction of the instance's edits whose cloze prompt ("{subject} was performed
  by") is answered with the edit's new target — the edits are recalled one by one;
* IW, instance-wise accuracy: 1 if *every* new single hop of the instance (``new_single_hops``) is
  answered with its answer (or an alias), else 0;
* MH, multi-hop accuracy: 1 if *any* of the instance's (usually 3) multi-hop questions is answered with
  the new answer or one of its aliases, else 0.

"Answered" means: the greedy continuation, normalised (:mod:`.matching`), starts with the answer.
Questions (text ending in "?") are asked as ``"Q: {question}\\nA:"`` — a zero-shot stand-in for MQuAKE's
few-shot prompt, so absolute MH on small models is low; cloze prompts are used as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .matching import starts_with_answer
from .numeric import CI, ItemSummary, ci_of


def ask(question: str) -> str:
    q = question.strip()
    return f"Q: {q}\nA:" if q.endswith("?") else q


@dataclass
class MultiHopOutcome:
    id: str
    edit_wise: list[bool]
    single_hops: list[bool]
    questions: list[bool]
    generated: list[str]

    @property
    def ew(self) -> float:
        return sum(self.edit_wise) / len(self.edit_wise) if self.edit_wise else 0.0

    @property
    def iw(self) -> bool:
        return bool(self.single_hops) and all(self.single_hops)

    @property
    def mh(self) -> bool:
        return any(self.questions)


def multihop_outcome(scorer, id: str, edits: Sequence[tuple[str, str]], single_hops: Sequence[tuple[str, Sequence[str]]],
                     questions: Sequence[str], answers: Sequence[str], max_new_tokens: int = 12) -> MultiHopOutcome:
    """``edits``: (cloze prompt, new target); ``single_hops``: (question or cloze, accepted answers);
    ``answers``: the new answer and its aliases. Reads the scorer's (edited) model state."""
    ew_prompts = [ask(p) for p, _ in edits]
    sh_prompts = [ask(q) for q, _ in single_hops]
    q_prompts = [ask(q) for q in questions]
    outs = scorer.greedy(ew_prompts + sh_prompts + q_prompts, max_new_tokens)
    a, b = len(ew_prompts), len(ew_prompts) + len(sh_prompts)
    ew = [starts_with_answer(o, [t]) for o, (_, t) in zip(outs[:a], edits)]
    sh = [starts_with_answer(o, ans) for o, (_, ans) in zip(outs[a:b], single_hops)]
    mh = [starts_with_answer(o, answers) for o in outs[b:]]
    return MultiHopOutcome(id, ew, sh, mh, outs[b:])


def multihop_case_outcome(scorer, case, max_new_tokens: int = 12) -> MultiHopOutcome:
    """Adapter from :class:`editcore.cases.MultiHopCase` (the edits must already be applied)."""
    return multihop_outcome(
        scorer, case.id,
        [(c.edit_prompt, c.target_new) for c in case.edits],
        [(p.prompt, [p.answer]) for p in case.new_single_hops],
        case.questions, [case.new_answer, *case.new_answer_aliases], max_new_tokens)


@dataclass
class MultiHopSummary(ItemSummary):
    outcomes: list[MultiHopOutcome]
    ew: CI = ci_of(lambda o: o.ew)
    iw: CI = ci_of(lambda o: float(o.iw))
    mh: CI = ci_of(lambda o: float(o.mh))
    matching: str = "greedy continuation starts with answer/alias (normalised); questions as 'Q: …\\nA:'"
