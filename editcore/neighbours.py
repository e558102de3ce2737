"""A neighbourhood for any fact: the prompts that must *not* change when a typed-in fact is edited.

CounterFact (Meng et al. 2022) judges locality on prompts of the same relation whose subjects share the
edited fact's true object ("The Eiffel Tower is located in" → Paris, after editing the Louvre to London);
CounterFact+ (Hoelscher-Obermaier et al. 2023) adds the same prompts behind the edit itself ("The Louvre is
located in London. The Eiffel Tower is located in"), which the NKL and locality metrics build from these.
A free-form fact has neither, so they are built here from the catalog:

1. **the relation** is recognised from the prompt's template (the prompt with its subject cut out) by
   comparing it word by word with every template of every catalog relation (:func:`recognise_relation`);
   a relation whose facts include the old answer wins ties, and the user may choose one instead;
2. **same relation, same old answer**: the other catalog subjects of that relation whose true object is the
   old answer, put into the *typed* template (so the neighbours ask exactly what the edit prompt asks);
3. when there are fewer than :data:`MIN_SAME_ANSWER` of those, the relation's other subjects with their
   own answers (NS then asks whether *their* answer still beats the new target).

Nothing here reads a model; the old answer comes in already decided (typed, or the model's own). Every
neighbour carries where it came from, which the dashboard shows.
"""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import asdict, dataclass

from .cases.schema import answers_equal
from .catalog import load_catalog

MAX_NEIGHBOURS = 8
MIN_SAME_ANSWER = 3
MATCH_THRESHOLD = 0.55  # similarity (template_similarity) a template needs to name a relation
# ... or this much when the relation's facts include the old answer: "{} hangs in a museum in the city of" →
# Paris scores 0.53 against "{} stands in the city of", and Paris being a location answer settles it.
ANSWER_THRESHOLD = 0.5

SOURCE_SAME_ANSWER = "catalog: same relation, same answer"
SOURCE_SAME_RELATION = "catalog: same relation, its own answer"
SOURCE_USER = "typed by you"


@dataclass(frozen=True)
class Neighbour:
    prompt: str
    answer: str
    source: str
    fact_id: str = ""  # the catalog fact the subject comes from, if any

    def to_dict(self) -> dict:
        return asdict(self)


_FUNCTION_WORDS = frozenset("the a an of in on at to by for from with is was are were be been its it his her their "
                            "and or as that this which who whom there where when what".split())


def _stem(word: str) -> str:
    # Crude, but enough to pair "speaks" with "speaking" and "located" with "location".
    for suffix in ("ing", "ed", "es", "s", "ion"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def _words(template: str) -> list[str]:
    # "{}" stays one word, so the subject's place in the sentence counts.
    return [_stem(w) for w in re.findall(r"\{\}|[\w'-]+", template.casefold())]


def _content(words: list[str]) -> list[str]:
    return [w for w in words if w != "{}" and w not in _FUNCTION_WORDS]


def template_similarity(a: str, b: str) -> float:
    """How alike two templates are, 0..1: the mean of the word-level match ratio of all their words and of
    their content words (function words alone, as in "The capital of {} is" vs "The owner of {} is", do not
    make two relations alike: no shared content word scores 0)."""
    wa, wb = _words(a), _words(b)
    ca, cb = _content(wa), _content(wb)
    if not set(ca) & set(cb):
        return 0.0

    def ratio(x, y):
        return difflib.SequenceMatcher(a=x, b=y, autojunk=False).ratio()

    return 0.5 * ratio(wa, wb) + 0.5 * ratio(ca, cb)


@functools.lru_cache(maxsize=1)
def relation_templates() -> dict[str, dict]:
    """Every catalog relation: its readable name, its templates (the facts' prompt and the paraphrases with
    the subject cut out) and its facts, in catalog order."""
    out: dict[str, dict] = {}
    for c in load_catalog():
        if not c.relation_id:
            continue
        rel = out.setdefault(c.relation_id, {"name": c.relation, "templates": {}, "facts": []})
        rel["facts"].append(c)
        for t in (c.prompt, *(p.replace(c.subject, "{}", 1) for p in c.paraphrases if c.subject in p)):
            rel["templates"].setdefault(" ".join(t.split()), None)
    return out


def relation_choices() -> list[tuple[str, str]]:
    """(relation id, readable name) of every catalog relation, for a picker."""
    return [(rid, rel["name"]) for rid, rel in relation_templates().items()]


def recognise_relation(template: str, old_answer: str | None = None) -> list[dict]:
    """Catalog relations ranked by how well ``template`` (a prompt with ``{}`` for the subject) matches one
    of their templates: ``[{"relation", "name", "score", "template", "has_answer"}]``, best first, only those
    scoring at least :data:`MATCH_THRESHOLD` (:data:`ANSWER_THRESHOLD` for one whose facts include
    ``old_answer``). ``score`` is :func:`template_similarity` (1.0: the same
    words); a relation that lists ``old_answer`` among its facts' answers is ranked first
    among near-equal scores (within 0.1)."""
    if not _content(_words(template)):
        return []
    ranked = []
    for rid, rel in relation_templates().items():
        best, best_t = 0.0, ""
        for t in rel["templates"]:
            score = template_similarity(template, t)
            if score > best:
                best, best_t = score, t
        has = bool(old_answer) and best >= ANSWER_THRESHOLD and \
            any(answers_equal(c.target_true, old_answer) for c in rel["facts"])
        if best >= MATCH_THRESHOLD or has:
            ranked.append({"relation": rid, "name": rel["name"], "score": round(best, 3), "template": best_t,
                           "has_answer": has})
    # Similarity decides; the old answer settles near-ties ("located in" fits city and country alike).
    ranked.sort(key=lambda r: (-(r["score"] + (0.1 if r["has_answer"] else 0.0)), r["relation"]))
    return ranked


def catalog_answers(relation: str) -> list[str]:
    """The distinct true objects of a relation's catalog facts (to read a multi-word answer off a model's
    continuation, e.g. "New York City")."""
    rel = relation_templates().get(relation)
    return list(dict.fromkeys(c.target_true for c in rel["facts"])) if rel else []


def build_neighbourhood(template: str, subject: str, old_answer: str, relation: str | None,
                        limit: int = MAX_NEIGHBOURS) -> list[Neighbour]:
    """Neighbour prompts for the fact ``template.format(subject)`` → ``old_answer`` of ``relation`` (a
    catalog relation id; None or unknown: none). See the module docstring for the order."""
    rel = relation_templates().get(relation or "")
    if rel is None or "{}" not in template:
        return []
    others = [c for c in rel["facts"] if not answers_equal(c.subject, subject)]
    same = [c for c in others if answers_equal(c.target_true, old_answer)]
    picked = [(c, SOURCE_SAME_ANSWER) for c in same[:limit]]
    if len(picked) < MIN_SAME_ANSWER:
        # Spread over answers, so one object does not fill the list.
        rest, seen = [], set()
        for c in others:
            if c not in same and c.target_true.casefold() not in seen:
                seen.add(c.target_true.casefold())
                rest.append(c)
        picked += [(c, SOURCE_SAME_RELATION) for c in rest[:max(0, min(limit, MIN_SAME_ANSWER + 2) - len(picked))]]
    out, prompts = [], set()
    for c, source in picked:
        prompt = template.format(c.subject)
        if prompt.casefold() not in prompts:
            prompts.add(prompt.casefold())
            out.append(Neighbour(prompt, c.target_true, source, c.id))
    return out


def user_neighbours(rows) -> list[Neighbour]:
    """Neighbours from an edited list (``[{"prompt", "answer"[, "source"]}]``): blank prompts dropped,
    repeats kept once; a row keeps the source it came with (a built neighbour the user left in the list)."""
    out, seen = [], set()
    for r in rows or ():
        prompt = " ".join(str((r or {}).get("prompt") or "").split())
        if not prompt or prompt.casefold() in seen:
            continue
        seen.add(prompt.casefold())
        answer = " ".join(str(r.get("answer") or "").split())
        out.append(Neighbour(prompt, answer, str(r.get("source") or SOURCE_USER), str(r.get("fact_id") or "")))
    return out
