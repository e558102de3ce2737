"""Portability (Yao et al. 2023, "Editing Large Language Models: Problems, Methods, and Opportunities",
§4.1; EasyEdit's ``compute_portability_quality``): does the edit carry over to facts it implies?

* Subject-Replace: the edit prompt with an alias of the subject (or the source's own question about the
  alias, zsRE's ``alter_subject_question``) must now give the new target;
* Reverse-Relation: the inverse question must give the subject (e.g. "The city where the Louvre is
  located, London, is home to which museum?" → Louvre; whatever the case's ``reverse`` probe states);
* One-Hop: a question whose answer follows from the new target (Louvre in London → "the country the
  Louvre is in" → United Kingdom); ``case.one_hop_for(target_new)``.

Two scores per probe, both on the model's current state:

* ``token_acc`` — EasyEdit's convention: mean over the answer's tokens of 1[argmax = answer token],
  teacher-forced after the prompt;
* ``exact`` — the greedy continuation (``max_new_tokens`` = answer length + 2) starts with the answer
  (normalised as in :mod:`.matching`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .. import text
from .matching import starts_with_answer
from .numeric import CI, ItemSummary, ci_of


@dataclass
class ProbeScore:
    prompt: str
    answer: str
    token_acc_pre: float
    token_acc_post: float
    exact_pre: bool
    exact_post: bool
    generated_post: str


@dataclass
class ProbeSet(ItemSummary):
    name: str
    probes: list[ProbeScore]
    token_acc: CI = ci_of(lambda p: p.token_acc_post)
    exact: CI = ci_of(lambda p: float(p.exact_post))
    token_acc_pre: CI = ci_of(lambda p: p.token_acc_pre)
    scoring: str = "token_acc: EasyEdit teacher-forced token accuracy; exact: greedy continuation starts with answer"
    items = "probes"


def score_probes(pre, post, name: str, probes: Sequence[tuple[str, str]]) -> ProbeSet:
    """Token accuracy (pre and post) and greedy exact match (pre and post) of each (prompt, answer)."""
    probes = list(probes)
    if not probes:
        return ProbeSet(name, [])
    prompts, answers = [p for p, _ in probes], [a for _, a in probes]
    a_pre, a_post = pre.pairs(prompts, answers), post.pairs(prompts, answers)
    n_new = max(len(text.target_ids(pre.lm.tokenizer, a)) for a in answers) + 2
    g_pre, g_post = pre.greedy(prompts, n_new), post.greedy(prompts, n_new)
    rows = [ProbeScore(p, a, x.token_acc, y.token_acc, starts_with_answer(gp, [a]), starts_with_answer(gq, [a]), gq)
            for p, a, x, y, gp, gq in zip(prompts, answers, a_pre, a_post, g_pre, g_post)]
    return ProbeSet(name, rows)


def portability_probes(case, target_new: str) -> dict[str, list[tuple[str, str]]]:
    """The three portability probe sets of a case (any of them may be empty)."""
    return {
        # Stated probes (zsRE) hold for the file's own new target only; aliases fill the edit template.
        "subject_replace": [(p.prompt, target_new) for p in case.subject_replace
                            if p.target is None or p.target == target_new]
        + [(case.prompt.format(alias), target_new) for alias in case.aliases],
        "reverse_relation": [(case.reverse.prompt, case.reverse.answer)] if case.reverse else [],
        "one_hop": [(p.prompt, p.answer) for p in case.one_hop_for(target_new)],
    }


def portability(pre, post, case, target_new: str) -> dict[str, ProbeSet]:
    return {k: score_probes(pre, post, k, v) for k, v in portability_probes(case, target_new).items()}
