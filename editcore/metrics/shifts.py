"""Probability shifts: what moved besides the edited fact (the "Louvre → London, and now Big Ben is in
Paris?" pitfall; cf. the ripple/side-effect analyses in Cohen et al. 2023 and Li et al. 2024).

Three views, all comparing the pre- and post-edit model on the same prompts:

(a) **Risers and fallers.** For each prompt (and per prompt group: subject, neighbourhood, unrelated) the
    tokens whose next-token log-probability changed most, Δ = log P_post(v) − log P_pre(v). A token is
    eligible only if P ≥ ``min_prob`` before *or* after the edit: otherwise tokens moving between 1e-12 and
    1e-9 (large Δ, no visible effect) would crowd the list. Group lists average Δ over the group's prompts.
(b) **Related words.** For words tied to the new target (Big Ben, Thames, British for London) and to the
    old one (Eiffel, Seine, French for Paris), the change of their teacher-forced multi-token probability
    (product over tokens) on the prompts that ask for the edited fact (edit prompt, paraphrases): mean
    Δ log P and mean P before/after. Words come from
    ``case.related_words(target)``, from the caller, or from :func:`suggest_related`.
(c) **Bleed.** How often the new target now appears where it should not: the fraction of neighbourhood and
    unrelated prompts where the new target's first token is the post-edit top-1 next token but was not
    the pre-edit top-1, and the mean rise of P(new target) (product) on those prompts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch

from .. import text
from .numeric import CI, bootstrap_ci, mean

# Prompts about nothing in particular: an edit that moves these has leaked far beyond its fact.
UNRELATED_PROMPTS = (
    "My favourite food is",
    "The weather today is",
    "The best way to learn a new language is",
    "Water boils at a temperature of",
    "To bake a loaf of bread you need",
    "The football match ended with a score of",
    "She opened the window and saw",
    "The most popular pet in the world is the",
)

SUGGEST_TEMPLATES = (
    "{} is famous for its",
    "The most famous thing about {} is the",
    "When people think of {}, they think of",
)

_STOP = frozenset("the a an and or of in on at to for with its it is was are be by as from that this his her "
                  "their our your my one two many most more very also not but all some any".split())


@dataclass
class TokenShift:
    token: str
    token_id: int
    p_pre: float
    p_post: float
    dlogp: float


@dataclass
class PromptShift:
    prompt: str
    group: str
    top_pre: str
    top_post: str
    risers: list[TokenShift]
    fallers: list[TokenShift]


@dataclass
class RelatedShift:
    word: str
    of: str  # "new" or "old": which target the word is related to
    source: str  # "case", "user" or "suggested"
    p_pre: float  # mean over the fact prompts
    p_post: float
    dlogp: CI  # mean over the fact prompts of Δ log P (nats)


@dataclass
class Bleed:
    prompts: list[str]
    became_top1: list[bool]
    p_new_pre: list[float]
    p_new_post: list[float]
    rate: CI = field(init=False)
    rise: CI = field(init=False)

    def __post_init__(self):
        self.rate = bootstrap_ci([float(b) for b in self.became_top1])
        self.rise = bootstrap_ci([b - a for a, b in zip(self.p_new_pre, self.p_new_post)])


@dataclass
class ShiftReport:
    target_new: str
    target_old: str
    min_prob: float
    prompts: list[PromptShift]
    groups: dict[str, dict[str, list[TokenShift]]]
    related: list[RelatedShift]
    bleed: Bleed

    def to_dict(self) -> dict:
        return asdict(self)

    def risers(self, group: str) -> list[str]:
        return [t.token for t in self.groups.get(group, {}).get("risers", [])]


def _decode(tok, i: int) -> str:
    return tok.decode([int(i)])


def top_shifts(lp_pre: torch.Tensor, lp_post: torch.Tensor, k: int, min_prob: float, tok
               ) -> tuple[list[TokenShift], list[TokenShift]]:
    """Top-``k`` risers and fallers of Δ log P between two ``[V]`` log-distributions (see module doc).

    Rows may also be ``[n, V]``: then Δ is averaged over rows and eligibility uses the max over rows.
    """
    pre = lp_pre.float().reshape(-1, lp_pre.shape[-1])
    post = lp_post.float().reshape(-1, lp_post.shape[-1])
    delta = (post - pre).mean(0)
    p_pre, p_post = pre.exp().mean(0), post.exp().mean(0)
    eligible = (pre.exp().amax(0) >= min_prob) | (post.exp().amax(0) >= min_prob)
    idx = torch.nonzero(eligible).flatten()
    if idx.numel() == 0:
        return [], []
    d = delta[idx]
    order = torch.argsort(d, descending=True)

    def pick(ids) -> list[TokenShift]:
        return [TokenShift(_decode(tok, int(i)), int(i), float(p_pre[i]), float(p_post[i]), float(delta[i]))
                for i in ids]

    ups = [idx[j] for j in order[:k].tolist() if d[j] > 0]
    downs = [idx[j] for j in order.flip(0)[:k].tolist() if d[j] < 0]
    return pick(ups), pick(downs)


def suggest_related(lm, target: str, k: int = 8, *, scorer=None) -> list[str]:
    """Words the *current* model associates with ``target``: the most likely next tokens (averaged over a
    few templates such as "{target} is famous for its") that decode to a word of ≥ 3 letters, excluding
    stop words and the target itself. One-token words only: an approximation of "related words" that
    needs no external resource. Call it on the unedited model."""
    from .scoring import Scorer

    scorer = scorer or Scorer(lm)
    lp = scorer.dists([t.format(target) for t in SUGGEST_TEMPLATES]).mean(0)
    banned = {w.casefold() for w in re.findall(r"\w+", target)}
    out: list[str] = []
    for i in torch.argsort(lp, descending=True)[:400].tolist():
        w = _decode(lm.tokenizer, i).strip()
        if len(w) >= 3 and w.isalpha() and w.casefold() not in _STOP and w.casefold() not in banned \
                and w not in out:
            out.append(w)
        if len(out) >= k:
            break
    return out


def related_words(case, target: str, extra: Sequence[str] = ()) -> list[tuple[str, str]]:
    """(word, source) for ``target``: the caller's words first, then the case's."""
    words = [(w, "user") for w in extra]
    if case is not None:
        words += [(w, "case") for w in case.related_words(target)]
    seen, out = set(), []
    for w, src in words:
        if w.strip() and w.casefold() not in seen:
            seen.add(w.casefold())
            out.append((w.strip(), src))
    return out


def probability_shifts(pre, post, *, subject_prompts: Sequence[str], neighbour_prompts: Sequence[str],
                       target_new: str, target_old: str, related_new: Sequence[tuple[str, str]] = (),
                       related_old: Sequence[tuple[str, str]] = (),
                       unrelated_prompts: Sequence[str] = UNRELATED_PROMPTS, k: int = 10,
                       min_prob: float = 1e-3, fact_prompts: Sequence[str] | None = None) -> ShiftReport:
    """All three views (see the module docstring) for one edit; ``pre``/``post`` are Scorers.
    Related words are scored on ``fact_prompts`` (default: all subject prompts)."""
    tok = pre.lm.tokenizer
    groups = {"subject": list(subject_prompts), "neighbourhood": list(neighbour_prompts),
              "unrelated": list(unrelated_prompts)}
    allp = [p for g in groups.values() for p in g]
    lp_pre, lp_post = pre.dists(allp), post.dists(allp)
    rows: list[PromptShift] = []
    group_lists: dict[str, dict[str, list[TokenShift]]] = {}
    at = 0
    for g, ps in groups.items():
        if not ps:
            continue
        a, b = lp_pre[at:at + len(ps)], lp_post[at:at + len(ps)]
        up, down = top_shifts(a, b, k, min_prob, tok)
        group_lists[g] = {"risers": up, "fallers": down}
        for j, p in enumerate(ps):
            u, d = top_shifts(a[j], b[j], k, min_prob, tok)
            rows.append(PromptShift(p, g, _decode(tok, int(a[j].argmax())), _decode(tok, int(b[j].argmax())), u, d))
        at += len(ps)

    related: list[RelatedShift] = []
    words = [(w, "new", s) for w, s in related_new] + [(w, "old", s) for w, s in related_old]
    sp = list(fact_prompts if fact_prompts is not None else subject_prompts)
    if words and sp:
        prompts = [p for _ in words for p in sp]
        targets = [w for w, _, _ in words for _ in sp]
        s_pre, s_post = pre.pairs(prompts, targets), post.pairs(prompts, targets)
        for i, (w, of, src) in enumerate(words):
            a, b = s_pre[i * len(sp):(i + 1) * len(sp)], s_post[i * len(sp):(i + 1) * len(sp)]
            related.append(RelatedShift(w, of, src, mean([x.prob for x in a]), mean([x.prob for x in b]),
                                        bootstrap_ci([y.logprob - x.logprob for x, y in zip(a, b)])))

    side = groups["neighbourhood"] + groups["unrelated"]
    first = text.target_ids(tok, target_new)[0]
    if side:
        n0 = len(groups["subject"])
        a, b = lp_pre[n0:], lp_post[n0:]
        became = ((b.argmax(-1) == first) & (a.argmax(-1) != first)).tolist()
        sa, sb = pre.pairs(side, [target_new] * len(side)), post.pairs(side, [target_new] * len(side))
        bleed = Bleed(side, became, [x.prob for x in sa], [x.prob for x in sb])
    else:
        bleed = Bleed([], [], [], [])
    return ShiftReport(target_new, target_old, min_prob, rows, group_lists, related, bleed)
