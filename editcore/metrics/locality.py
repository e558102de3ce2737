"""Locality (Yao et al. 2023, §4.2; EasyEdit's ``compute_locality_quality``): what must *not* change.

* Other-Attribution: other attributes of the edited subject (``case.attributes``, e.g. "The Louvre's
  director is …"). EasyEdit's score: teacher-force the locality prompt + its answer through both models and
  take the fraction of answer positions where the post-edit argmax token equals the pre-edit argmax token
  (``agreement``). Also shown: token accuracy of the stated answer before and after.
* Distract-Neighbour: neighbourhood prompts prefixed with the edit, ``"{edit prompt} {new}. " + n``
  (CounterFact+ / Yao et al.): NS = 1[P(true answer) > P(new target)] (strict; ties fail) and the same
  argmax agreement. NKL on these prompts is in :mod:`.nkl`.
* Other-Task: a downstream probe's accuracy before vs after — see :mod:`.general` (the report shows the
  pre/post pair for each probe).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .counterfact import DEFAULT_CONVENTION, case_neighbours, prefers
from .nkl import distracted_prompts
from .numeric import CI, ItemSummary, ci_of


@dataclass
class LocalityProbe:
    prompt: str
    answer: str
    agreement: float  # EasyEdit: fraction of positions where post argmax == pre argmax
    token_acc_pre: float
    token_acc_post: float
    keeps_answer: bool | None = None  # distract-neighbour: P(answer) > P(new target) post-edit


@dataclass
class LocalitySet(ItemSummary):
    name: str
    probes: list[LocalityProbe]
    convention: str = DEFAULT_CONVENTION
    agreement: CI = ci_of(lambda p: p.agreement)
    token_acc_pre: CI = ci_of(lambda p: p.token_acc_pre)
    token_acc_post: CI = ci_of(lambda p: p.token_acc_post)
    ns: CI = ci_of(lambda p: None if p.keeps_answer is None else float(p.keeps_answer))
    items = "probes"


def argmax_agreement(pre_argmax: Sequence[int], post_argmax: Sequence[int]) -> float:
    """EasyEdit's locality: mean over positions of 1[post argmax == pre argmax]."""
    if len(pre_argmax) != len(post_argmax) or not pre_argmax:
        raise ValueError("argmax sequences must be non-empty and of equal length")
    return sum(a == b for a, b in zip(pre_argmax, post_argmax)) / len(pre_argmax)


def locality_set(pre, post, name: str, probes: Sequence[tuple[str, str]], *, target_new: str | None = None,
                 convention: str = DEFAULT_CONVENTION) -> LocalitySet:
    probes = list(probes)
    if not probes:
        return LocalitySet(name, [], convention)
    prompts, answers = [p for p, _ in probes], [a for _, a in probes]
    s_pre, s_post = pre.pairs(prompts, answers), post.pairs(prompts, answers)
    keeps = [None] * len(probes)
    if target_new is not None:
        n_post = post.pairs(prompts, [target_new] * len(prompts))
        keeps = [prefers(a, b, convention) for a, b in zip(s_post, n_post)]
    rows = [LocalityProbe(p, a, argmax_agreement(x.argmax, y.argmax), x.token_acc, y.token_acc, k)
            for p, a, x, y, k in zip(prompts, answers, s_pre, s_post, keeps)]
    return LocalitySet(name, rows, convention)


def locality(pre, post, case, target_new: str, convention: str = DEFAULT_CONVENTION) -> dict[str, LocalitySet]:
    attrs = [(p.prompt, p.answer) for p in case.attributes]
    neigh = case_neighbours(case)
    if (case.distracting_neighbourhood and len(case.distracting_neighbourhood) == len(neigh)
            and target_new == case.target_new):
        dprompts = list(case.distracting_neighbourhood)
    else:
        dprompts = distracted_prompts(case.edit_prompt, target_new, [p for p, _ in neigh])
    distract = [(d, a) for d, (_, a) in zip(dprompts, neigh)]
    return {
        "other_attribution": locality_set(pre, post, "other_attribution", attrs, convention=convention),
        "distract_neighbour": locality_set(pre, post, "distract_neighbour", distract, target_new=target_new,
                                           convention=convention),
    }
